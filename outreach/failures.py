"""What a delivery failure means for the address: one reading of SMTP replies and DSN
statuses, shared by bounce ingestion and the SMTP transport.

- ``hard``: the address does not exist or is disabled (RFC 3463 X.1.x about the recipient,
  X.2.1, or "user unknown" wording under a generic code such as 5.0.0 or a bare 550), or its
  domain does not exist ("Host or domain name not found"). Only these suppress at once.
- ``soft``: temporary (4.x.x) or a full mailbox (5.2.2); a run of them suppresses.
- ``policy``: the receiving system refused *us* — SPF/DKIM/DMARC (Gmail's 5.7.26,
  Microsoft's 5.7.515), spam content, a blocked IP. Our problem, never the recipient's.
- ``other``: a permanent failure that says neither (a bare 550, routing loops, "Host not
  found, try again" after days of retries, …); a run of them over campaigns suppresses,
  except those about our own message or sender (`about_us`: too big, content, our address).
"""

from __future__ import annotations

import re
from typing import Literal

FailureKind = Literal["hard", "soft", "policy", "other"]

_ENHANCED = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_FAILED = re.compile(r"(?<![\d.])([45])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
# Addresses and host names are not words: "nospam@…" or "mx.spamfilter.example.com" say
# nothing about why a message was refused.
_NAMES = re.compile(r"\S+@\S+|(?<![\w.-])[\w-]+\.[\w-]+(?:\.[\w-]+)+(?![\w-])")
_BASIC = re.compile(r"^\s*(?:[a-z]+;\s*)?([245]\d\d)(?:[\s-]|$)", re.I)

# Wording of a refusal that is about the sender, its IP or the content, not the recipient.
_POLICY = re.compile(
    r"spam|junk mail|bulk mail|black ?list|block ?list|deny ?list|blocked|spamhaus|spamcop|"
    r"barracuda|sorbs|dnsbl|\brbl\b|reputation|\bspf\b|\bdkim\b|\bdmarc\b|unauthenticated|"
    r"authentication (?:failed|required|level)|not authori[sz]ed|policy|virus|malware|"
    r"phishing|content rejected|rejected (?:due to|because of|for) content|"
    r"relay(?:ing)? (?:denied|not permitted|access denied)|rate limit|unsolicited|"
    r"too many (?:connections|messages|mails|emails)|(?<!not )listed (?:at|on|in|by)|"
    r"reverse dns|\bptr\b|not accepting mail from",
    re.I,
)

# Wording that says the address does not exist or no longer takes mail.
_UNKNOWN = re.compile(
    r"user unknown|unknown user|unknown recipient|recipient unknown|unknown (?:local ?part|"
    r"mailbox|address|alias)|(?:mailbox|address|addressee) unknown|no such (?:user|mailbox|"
    r"recipient|address|account|person)|does(?: not|n't|n’t) exist|not exist|no mailbox|"
    r"mailbox (?:not found|unavailable|does not exist|is (?:disabled|inactive|closed))|"
    r"(?:user|recipient|address|account|mailbox) (?:was |is )?not found|"
    r"(?:could ?n[o']?t|cannot|can't) be found|invalid (?:recipient|mailbox|address|user)|"
    r"not a valid (?:mailbox|user|recipient|address)|unrouteable address|"
    r"(?:account|mailbox|user|address)(?: has been| is|'s)? (?:disabled|deactivated|closed|"
    r"inactive|suspended|expired|terminated|deleted|removed|discontinued)|"
    r"no longer (?:active|available|in use|valid|exists|receiv)|"
    r"(?:doesn't|does not) have an? .{0,40}account|no mailbox here by that name|"
    r"unknown or illegal alias|not (?:a )?known user|(?:user|recipient|address) not known|"
    r"not our customer|bad destination mailbox|invalid (?:final delivery )?userid|"
    r"(?:recipient|user|addressee)(?: name)? (?:is |was )?not recognized|"
    r"not listed in (?:the )?(?:\w+ )?directory|no matches to nameserver query|"
    r"does not have a final (?:e-?mail )?delivery point|n'existe pas|existiert nicht|"
    r"no existe|non esiste|"
    r"존재하지 않는|없는 (?:사용자|계정|주소)",
    re.I,
)

# Wording that says the recipient's domain does not exist (DNS answered "no such name"): no
# address there can receive mail. "Host not found, try again" is a DNS server that did not
# answer (a temporary failure that outlived the retries), and a refusal of our own sender's
# domain ("Sender address rejected: Domain not found") is about us.
_NO_DOMAIN = re.compile(
    r"host or domain name not found|domain (?:name )?(?:not found|does(?: not|n't) exist)|"
    r"no such domain|unknown host|host not found(?!,? try again)|nxdomain|"
    r"unrouteable (?:mail )?domain|domain (?:is )?(?:unknown|invalid)",
    re.I,
)
_OUR_SIDE = re.compile(r"sender|mail from|helo|ehlo|client host|reverse", re.I)

_FULL = re.compile(r"(?:mailbox|mail ?folder|inbox) (?:is )?full|quota|insufficient storage", re.I)


def enhanced_status(text: str | None) -> str | None:
    """The first RFC 3463 status (5.1.1) in a text, if any."""
    found = _ENHANCED.search(text or "")
    return ".".join(found.groups()) if found else None


def classify(status: str | int | None, text: str | None = None) -> FailureKind:
    """Read an enhanced status ("5.7.26"), a reply code (550) or neither, with the reply or
    diagnostic text, as hard, soft, policy or other."""
    text = text or ""
    enhanced = enhanced_status(str(status)) if status is not None else None
    if enhanced is None:
        found = _FAILED.search(text)
        enhanced = ".".join(found.groups()) if found else None
    klass: str | None
    if enhanced is not None:
        klass, subject, detail = enhanced.split(".")
    else:
        code: str | None = str(status) if isinstance(status, int) else None
        if code is None:
            basic = _BASIC.search(str(status or "")) or _BASIC.search(text)
            code = basic.group(1) if basic else None
        klass, subject, detail = (code[0] if code else None), "0", "0"
    if klass == "2":
        return "other"  # a success is no failure at all; callers skip those before asking
    if klass == "4":
        return "soft"
    if subject == "7":
        return "policy"
    if subject == "1" and detail != "0":
        # X.1.7 and X.1.8 are about our sender address, not the recipient's.
        return "other" if detail in ("7", "8") else "hard"
    if (subject, detail) == ("2", "1"):
        return "hard"
    if (subject, detail) == ("2", "2"):
        return "soft"  # mailbox full: it exists
    if subject == "4" and _no_domain(text):
        return "hard"  # X.4.4 "unable to route": no such domain
    if detail != "0" and enhanced is not None:
        return "other"  # a specific status that is about neither the address nor us
    # A generic code (5.0.0, 5.1.0, 5.x.0, a bare 550, or none): the wording decides, and a
    # refusal that mentions policy is read as one even if it also says "user unknown".
    text = _NAMES.sub(" ", text)
    if _POLICY.search(text):
        return "policy"
    if _UNKNOWN.search(text) or _no_domain(text):
        return "hard"
    if _FULL.search(text):
        return "soft"
    return "other"


def _no_domain(text: str) -> bool:
    return bool(_NO_DOMAIN.search(text)) and not _OUR_SIDE.search(text)


# Permanent failures that are about our message or our sender, not the recipient: our
# sender address (X.1.7, X.1.8), the message's size (X.3.4) or content (X.6.x).
_ABOUT_US = re.compile(r"^5\.(?:1\.[78]|3\.4|6\.\d+)$")


def about_us(status: str | None) -> bool:
    """An "other" failure that is about our message or sender: never counted against the
    recipient's address."""
    return bool(status and _ABOUT_US.match(status))


def receiving_domain(address: str) -> str:
    """The domain part of an address, lower-cased: the receiving system policy reports name."""
    return address.rpartition("@")[2].strip().lower().rstrip(".>")
