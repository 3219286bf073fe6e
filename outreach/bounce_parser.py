"""What a bounce, complaint or auto-reply says, read from the message alone: RFC 3464
delivery reports and ARF complaints here, the many non-standard formats through
flufl.bounce, and the VERP token or original Message-ID that may tie it to mail of ours.
Nothing here touches the database or believes the message: `bounces` decides what counts.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from email.message import Message
from email.utils import getaddresses, parseaddr
from typing import Literal

import flufl.bounce

from outreach.failures import classify, enhanced_status
from outreach.printable import one_line

MAX_FAILURES = 100  # failing recipients read from one message; ours name exactly one
# Looked at before a message is parsed at all: the email package makes an object of every
# MIME part and of every block of a delivery-status part, and reads every header line one by
# one, so a message of many tiny pieces costs far more than its size says (790,000 blocks in
# 7.8 MB took half a minute and 450 MB). A bounce of ours has a handful of parts, a block per
# recipient and a quoted message of a few thousand lines; these are far above that.
MAX_LINES = 50_000
MAX_BLANK_LINES = 2_000  # a delivery-status block, or a paragraph, ends with one
MAX_BOUNDARY_LINES = 500  # lines that start with "--": MIME boundaries
# Beyond these a message is not guessed at: no mail system's bounce has that many parts or
# that much text, and tens of thousands of tiny parts take flufl.bounce seconds each.
MAX_PARTS = 100
MAX_TEXT_BYTES = 1 << 20

# flufl.bounce logs a traceback for every detector that trips over a message (one without a
# From header, say) and re-raises; we report such a message in one line of our own.
_flufl_log = logging.getLogger("flufl.bounce")
_flufl_log.addHandler(logging.NullHandler())
_flufl_log.propagate = False

_MESSAGE_ID = re.compile(r"^Message-ID:\s*(<[^>\s]+>)", re.I | re.M)
_ADDRESS = re.compile(r"[^\s<>()\"',;:]+@[^\s<>()\"',;:]+")

# Signs of a report from a mail system rather than a person: DSNs carry Auto-Submitted too
# (RFC 3464), so that header alone does not make a message a vacation reply.
_DAEMON = re.compile(
    r"^(?:mailer[-_.]?daemon|postmaster|mail[-_.]?delivery[-_.]?(?:system|subsystem)?|mdaemon"
    r"|mail[-_.]?administrator)$",
    re.I,
)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|delivery (?:status notification|failure|failed|has failed|problem|report)|"
    r"returned mail|failure notice|mail delivery failed|non[- ]?delivery|delivery notification|"
    r"could not be delivered|mail system error",
    re.I,
)
_OUT_OF_OFFICE = re.compile(
    r"out of (?:the )?office|automatic reply|auto[- ]?(?:matic )?(?:reply|response|responder)|"
    r"autoreply|vacation|on leave|away from (?:the )?office|abwesenheit|absence|"
    r"부재\s*중|자동\s*(?:응답|회신|답장)|휴가",
    re.I,
)
# Where a non-standard bounce starts quoting the returned message: nothing below it is the
# receiving system's own words.
_QUOTE_START = re.compile(
    r"^.*(?:below (?:this|the next) line is a copy|copy of the (?:first part of the )?message|"
    r"original message follows|original message headers|----- ?original message ?-----|"
    r"unsent message below|message header follows|returned (?:mail|message) follows|"
    r"start of returned message|message text follows|your message reads).*$",
    re.I | re.M,
)

Kind = Literal["hard", "soft", "policy", "other", "complaint"]


@dataclass
class Failure:
    address: str | None  # None: an ARF report that redacts it (the delivery's recipient)
    kind: Kind
    status: str | None = None
    diagnostic: str | None = None
    action: str | None = None


@dataclass
class Parsed:
    failures: list[Failure]
    message_id: str | None  # the original message's, from the returned headers
    verp_token: str | None
    fingerprint: str
    # failures, a complaint, an auto-reply, a DSN that reports only successful deliveries,
    # or nothing readable at all
    nature: Literal["failures", "complaint", "auto-reply", "delivered", "nothing"] = "failures"
    truncated: bool = False  # more than MAX_FAILURES recipients; the rest were not read
    unreadable: str | None = None  # why flufl.bounce could not read it
    subject: str = ""


def _text_of(part: Message) -> str:
    try:
        payload = part.get_payload(decode=True)
    except Exception:
        return ""
    if isinstance(payload, bytes):
        charset = part.get_content_charset() or "utf-8"
        try:
            return payload.decode(charset, "replace")
        except LookupError:
            return payload.decode("utf-8", "replace")
    if isinstance(payload, str):
        return payload
    return ""


def _own_parts(msg: Message) -> Iterator[Message]:
    """The parts of a message without descending into an attached original."""
    yield msg
    if msg.get_content_maintype() == "message":
        return
    payload = msg.get_payload()
    if isinstance(payload, list):
        for part in payload:
            if isinstance(part, Message):
                yield from _own_parts(part)


def _own_text(msg: Message, limit: int = 20_000) -> str:
    """What the reporting system wrote, up to where it quotes the returned message."""
    texts = [
        _text_of(p)
        for p in _own_parts(msg)
        if p.get_content_maintype() == "text"
        and p.get_content_type() not in ("text/rfc822-headers", "text/rfc822-header")
    ]
    text = "\n".join(texts)[:limit]
    cut = _QUOTE_START.search(text)
    return text[: cut.start()] if cut else text


def _around(text: str, address: str) -> str:
    """The words a non-standard bounce says about one address: from the start of the line
    that names it to a few lines on."""
    at = text.lower().find(address.lower())
    if at < 0:
        return text[:1500]
    start = text.rfind("\n", 0, at) + 1
    return text[start : at + len(address) + 500]


def _first_message(part: Message) -> Message | None:
    """The attached message (or first block of fields) of a message/* part."""
    payload = part.get_payload()
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        return payload[0]
    return None


def _original_message_id(msg: Message) -> str | None:
    own = (msg.get("Message-ID") or "").strip()
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype == "message/rfc822":
            inner = _first_message(part)
            if inner is not None and inner.get("Message-ID"):
                return str(inner.get("Message-ID")).strip()
        elif ctype in ("text/rfc822-headers", "text/rfc822-header"):
            found = _MESSAGE_ID.search(_text_of(part))
            if found:
                return found.group(1)
        elif ctype == "message/delivery-status":
            fields = _first_message(part)
            if fields is not None and fields.get("X-Original-Message-ID"):
                return str(fields.get("X-Original-Message-ID")).strip()
    # Non-standard bounces quote the original headers in their text.
    for part in msg.walk():
        if part.get_content_maintype() == "text":
            for found in _MESSAGE_ID.finditer(_text_of(part)[:200_000]):
                if found.group(1) != own:
                    return found.group(1)
    return None


def verp_token_of(
    msg: Message,
    bounce_domain: str | None,
    local: str = "bounces",
    envelope_to: str | None = None,
) -> str | None:
    """The token of a bounces+TOKEN@DOMAIN (or unsubscribe+TOKEN@DOMAIN) recipient: the
    SMTP envelope's when we received the message ourselves, else the delivering MTA's
    headers."""
    if not bounce_domain:
        return None
    pattern = re.compile(rf"{local}\+([A-Za-z0-9_.\-]+)@{re.escape(bounce_domain)}", re.I)
    if envelope_to is not None:
        found = pattern.fullmatch(envelope_to.strip("<> "))
        return found.group(1) if found else None
    for header in (
        "Delivered-To",
        "X-Original-To",
        "Envelope-To",
        "X-Envelope-To",
        "To",
        "Return-Path",
    ):
        for value in msg.get_all(header) or []:
            found = pattern.search(str(value))
            if found:
                return found.group(1)
    return None


def _header(msg: Message, name: str) -> str:
    """A header's text, RFC 2047 encoded words decoded ("=?utf-8?b?…?=" subjects)."""
    value = msg.get(name)
    if value is None:
        return ""
    try:
        return str(make_header(decode_header(str(value))))
    except (HeaderParseError, UnicodeError, LookupError):
        return str(value)


def _is_report(msg: Message) -> bool:
    """Does the message come from a mail system (a bounce) rather than a person?"""
    if msg.get_content_type() == "multipart/report" or msg.get("X-Failed-Recipients"):
        return True
    if "failure" in str(msg.get("Auto-Submitted") or "").lower():
        return True
    name, address = parseaddr(str(msg.get("From") or ""))
    if not address or _DAEMON.match(address.rpartition("@")[0]):
        return True
    if re.search(r"mail delivery|delivery subsystem|postmaster", name, re.I):
        return True
    return bool(_BOUNCE_SUBJECT.search(_header(msg, "Subject")))


def is_auto_reply(msg: Message) -> bool:
    """An RFC 3834 automatic response (vacation, out of office) from a person's mailbox."""
    if _is_report(msg):
        return False
    submitted = str(msg.get("Auto-Submitted") or "").strip().lower()
    if submitted and not submitted.startswith("no"):
        return True
    if msg.get("X-Autoreply") or msg.get("X-Autorespond") or msg.get("X-Autoresponse"):
        return True
    if str(msg.get("Precedence") or "").strip().lower() == "auto_reply":
        return True
    return bool(_OUT_OF_OFFICE.search(_header(msg, "Subject")))


def _dsn_failures(msg: Message) -> tuple[int, list[Failure], bool]:
    """RFC 3464: (recipients reported, the failures among them, whether some went unread)."""
    seen = 0
    failures: list[Failure] = []
    own_text: str | None = None
    for part in msg.walk():
        if part.get_content_type() != "message/delivery-status":
            continue
        blocks = part.get_payload()
        if not isinstance(blocks, list):
            continue
        for block in blocks[1:] if len(blocks) > 1 else blocks:
            if not isinstance(block, Message):
                continue
            # Original-Recipient is the address we sent to; Final-Recipient may be a rewrite.
            recipient = block.get("Original-Recipient") or block.get("Final-Recipient")
            if not recipient:
                continue
            if seen == MAX_FAILURES:
                return seen, failures, True
            seen += 1
            address = parseaddr(str(recipient).split(";", 1)[-1].strip())[1]
            # "failed (Bad destination mailbox address)": the word, not the comment
            action = (re.findall(r"[a-z]+", str(block.get("Action") or "").lower()) or [None])[0]
            if action not in (None, "failed", "delayed") or not address:
                continue  # delivered, relayed, expanded: not a failure
            status = enhanced_status(str(block.get("Status") or ""))
            diagnostic = one_line(block.get("Diagnostic-Code") or "", 500) or None
            if action == "delayed":
                kind: Kind = "soft"
            else:
                if not diagnostic and own_text is None:
                    own_text = _own_text(msg)
                kind = classify(status, diagnostic or _around(own_text or "", address))
            failures.append(Failure(address, kind, status, diagnostic, action))
    return seen, failures, False


def _arf_failures(msg: Message) -> list[Failure] | None:
    """An ARF feedback report (RFC 5965): the recipient complained. Many feedback loops
    redact the address; the report then names the delivery by Message-ID only."""
    if (
        msg.get_content_type() != "multipart/report"
        or str(msg.get_param("report-type") or "").lower() != "feedback-report"
    ):
        return None
    addresses: list[str] = []
    for part in msg.walk():
        if part.get_content_type() == "message/feedback-report":
            payload = part.get_payload()
            blocks = payload if isinstance(payload, list) else []
            for block in blocks:
                if not isinstance(block, Message):
                    continue
                for field_name in ("Original-Rcpt-To", "Removal-Recipient"):
                    addresses += [a for _, a in getaddresses(block.get_all(field_name) or [])]
        elif part.get_content_type() in ("message/rfc822", "text/rfc822-headers") and not addresses:
            headers = _first_message(part)
            if headers is not None:
                addresses += [a for _, a in getaddresses(headers.get_all("To") or [])]
            else:
                found = re.search(r"^To:\s*(.+)$", _text_of(part), re.M | re.I)
                if found:
                    addresses.append(parseaddr(found.group(1))[1])
    named = [a for a in dict.fromkeys(addresses) if "@" in a][:MAX_FAILURES]
    if not named:
        return [Failure(None, "complaint")]
    return [Failure(a, "complaint") for a in named]


def _too_big_to_guess(msg: Message) -> str | None:
    """Why the heuristics must not read a message, if they must not."""
    text = 0
    for parts, part in enumerate(msg.walk(), 1):
        if parts > MAX_PARTS:
            return f"more than {MAX_PARTS} MIME parts"
        if part.get_content_maintype() == "text":
            payload = part.get_payload()
            text += len(payload) if isinstance(payload, str) else 0
            if text > MAX_TEXT_BYTES:
                return f"more than {MAX_TEXT_BYTES >> 20} MB of text"
    return None


def _heuristic_failures(msg: Message) -> tuple[list[Failure], bool, str | None]:
    """The non-standard formats (qmail, Exchange, Yahoo, …), through flufl.bounce:
    (failures, whether some went unread, why it could not read the message)."""
    try:
        temporary, permanent = flufl.bounce.all_failures(msg)
    except Exception as exc:
        # One of its detectors choked on the message, which ends the whole scan.
        why = f"{type(exc).__name__}: {one_line(exc, 120)}"
        return [], False, f"no bounce format could be read; flufl.bounce failed with {why}"
    found = [(a, True) for a in sorted(permanent)]
    found += [(a, False) for a in sorted(temporary) if a not in permanent]
    truncated = len(found) > MAX_FAILURES
    text = _own_text(msg) if found else ""
    failures = []
    for raw_address, permanent_failure in found[:MAX_FAILURES]:
        address = raw_address.decode("ascii", "replace")
        words = _around(text, address)
        status = enhanced_status(words)
        kind: Kind = classify(status, words) if permanent_failure else "soft"
        failures.append(Failure(address, kind, status, one_line(words, 300) or None))
    return failures, truncated, None


def shape_refusal(raw: bytes) -> str | None:
    """Why a message is not parsed at all, if it must not be: counted in the raw bytes
    (a few passes at C speed over at most 10 MB), before any object is made."""
    lines = raw.count(b"\n")
    if lines > MAX_LINES:
        return f"more than {MAX_LINES:,} lines"
    blank = raw.count(b"\n\n") + raw.count(b"\n\r\n")
    if blank > MAX_BLANK_LINES:
        return f"more than {MAX_BLANK_LINES:,} blank lines (parts or delivery-status blocks)"
    if raw.count(b"\n--") > MAX_BOUNDARY_LINES:
        return f"more than {MAX_BOUNDARY_LINES} MIME boundaries"
    return None


def parse(raw: bytes, bounce_domain: str | None = None) -> Parsed:
    """What a bounce, complaint or auto-reply says."""
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    return parse_message(msg, raw, bounce_domain)


def parse_message(
    msg: Message, raw: bytes, bounce_domain: str | None, envelope_to: str | None = None
) -> Parsed:
    parsed = Parsed(
        failures=[],
        message_id=_original_message_id(msg),
        verp_token=verp_token_of(msg, bounce_domain, envelope_to=envelope_to),
        fingerprint=hashlib.sha256(raw).hexdigest()[:32],
        subject=one_line(_header(msg, "Subject"), 200),
    )
    complaints = _arf_failures(msg)
    if complaints is not None:
        parsed.failures, parsed.nature = complaints, "complaint"
        return parsed
    if is_auto_reply(msg):
        parsed.nature = "auto-reply"
        return parsed
    reported, failures, parsed.truncated = _dsn_failures(msg)
    if not reported:
        # No standard report to trust: only then do the heuristics look at the text.
        parsed.unreadable = _too_big_to_guess(msg)
        if parsed.unreadable is None:
            failures, parsed.truncated, parsed.unreadable = _heuristic_failures(msg)
    parsed.failures = failures
    if not failures:
        parsed.nature = "delivered" if reported else "nothing"
    return parsed
