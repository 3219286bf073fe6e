"""Bounces and complaints: parse what comes back, attribute it to a delivery we sent, and
apply the policy (only a missing or disabled address suppresses at once, temporary failures
after a run, complaints always; policy rejections never).

Anyone can send mail to the bounce domain, so nothing here believes a message on its word.
A failure counts only when it is about a delivery we sent: found by its VERP address
(bounces+TOKEN@DOMAIN, signed), else by the original Message-ID of a stored delivery. Only
an installation without a bounce domain, whose bounces reach the From mailbox and often
quote nothing of the original, also believes the failing address alone when it received a
delivery in the last 30 days; with a bounce domain every message we send carries its own
VERP address, so a report that names only an address (which anyone can write to postmaster@)
is not about mail of ours. The failing address must be the delivery's recipient.
Everything else is "not ours" and changes nothing.
RFC 3464 DSNs and ARF reports are read here; the many non-standard formats are left to
flufl.bounce.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import hashlib
import logging
import mailbox
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from email.message import Message
from email.utils import getaddresses, parseaddr
from pathlib import Path
from typing import IO, Any, Literal

import flufl.bounce
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from outreach import consent
from outreach.errors import UserError
from outreach.events import record_event
from outreach.failures import classify, enhanced_status, receiving_domain
from outreach.fields import normalise_email
from outreach.models import Contact, Delivery, Event, utcnow
from outreach.printable import counted, one_line
from outreach.suppressions import recipient_of, suppress
from outreach.tokens import InvalidToken, Tokens

MAX_MESSAGE_BYTES = 10 * 1024 * 1024
MAX_FAILURES = 100  # failing recipients read from one message; ours name exactly one
# Beyond these a message is not guessed at: no mail system's bounce has that many parts or
# that much text, and tens of thousands of tiny parts take flufl.bounce seconds each.
MAX_PARTS = 100
MAX_TEXT_BYTES = 1 << 20
RECENT = timedelta(days=30)

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


def _verp_token(
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


def _is_auto_reply(msg: Message) -> bool:
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
        verp_token=_verp_token(msg, bounce_domain, envelope_to=envelope_to),
        fingerprint=hashlib.sha256(raw).hexdigest()[:32],
        subject=one_line(_header(msg, "Subject"), 200),
    )
    complaints = _arf_failures(msg)
    if complaints is not None:
        parsed.failures, parsed.nature = complaints, "complaint"
        return parsed
    if _is_auto_reply(msg):
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


@dataclass
class IngestReport:
    messages: int = 0
    hard: int = 0
    soft: int = 0
    policy: int = 0
    other: int = 0
    complaints: int = 0
    unsubscribes: int = 0
    suppressed: int = 0
    duplicates: int = 0
    not_ours: int = 0  # failing addresses that are not the recipient of a delivery of ours
    auto_replies: int = 0
    delivered: int = 0  # delivery reports that report no failure (relayed, delivered, …)
    not_bounces: int = 0
    unreadable: list[str] = field(default_factory=list)  # VERP hits with no readable failure
    malformed: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # over MAX_MESSAGE_BYTES
    truncated: list[str] = field(default_factory=list)  # over MAX_FAILURES recipients

    def notes(self) -> list[str]:
        """One line for each message that needs a word of its own."""
        return (
            [f"refused {line}" for line in self.refused]
            + [f"skipped malformed message {line}" for line in self.malformed]
            + [f"unreadable bounce {line}" for line in self.unreadable]
            + [f"read only the first {MAX_FAILURES} recipients of {x}" for x in self.truncated]
        )

    def brief(self) -> str:
        """Only what happened, for a log line per message."""
        parts = [
            f"{n} {label}"
            for n, label in (
                (self.hard, "hard bounce"),
                (self.soft, "soft bounce"),
                (self.policy, "policy rejection"),
                (self.other, "other failure"),
                (self.complaints, "complaint"),
                (self.unsubscribes, "unsubscribe"),
                (self.suppressed, "suppressed"),
                (self.duplicates, "already seen"),
                (self.not_ours, "not ours"),
                (self.auto_replies, "auto-reply"),
                (self.delivered, "delivery report without a failure"),
                (len(self.unreadable), "unreadable"),
                (self.not_bounces, "not a bounce"),
                (len(self.malformed), "malformed"),
                (len(self.refused), "refused"),
            )
            if n
        ]
        return ", ".join(parts) or "nothing to do"

    def summary(self) -> str:
        return (
            f"{counted(self.messages, 'message')}: {counted(self.hard, 'hard bounce')}, "
            f"{self.soft} soft, {counted(self.policy, 'policy rejection')}, "
            f"{counted(self.other, 'other failure')}, {counted(self.complaints, 'complaint')}, "
            f"{counted(self.unsubscribes, 'unsubscribe')} by mail, "
            f"{counted(self.suppressed, 'address', 'addresses')} suppressed, "
            f"{self.duplicates} already seen, {self.not_ours} not ours, "
            f"{counted(self.auto_replies, 'auto-reply', 'auto-replies')}, "
            f"{counted(self.delivered, 'delivery report')} without a failure, "
            f"{len(self.unreadable)} unreadable, {self.not_bounces} not bounces, "
            f"{len(self.malformed)} malformed, {len(self.refused)} refused"
        )


def _dedupe_key(kind: str, fingerprint: str, subject: str) -> str:
    """One event per message and address, without the address in clear (`contacts forget`
    must be able to leave it nowhere)."""
    digest = hashlib.sha256(f"{fingerprint}:{subject}".encode()).hexdigest()[:40]
    return f"{kind}:{digest}"


class Ingester:
    def __init__(
        self, session: Session, tokens: Tokens, bounce_domain: str | None, soft_limit: int
    ) -> None:
        self.session, self.tokens = session, tokens
        self.bounce_domain, self.soft_limit = bounce_domain, soft_limit
        self.report = IngestReport()

    def ingest(self, raw: bytes, source: str, envelope_to: str | None = None) -> None:
        """Read one message and act on it; `envelope_to` is the SMTP recipient when we
        received it ourselves. Database errors propagate (the caller retries later)."""
        self.report.messages += 1
        source = one_line(source, 300)
        if len(raw) > MAX_MESSAGE_BYTES:
            self.report.refused.append(f"{source}: larger than {MAX_MESSAGE_BYTES // 2**20} MB")
            return
        try:
            msg = email.message_from_bytes(raw, policy=email.policy.compat32)
            if self._mailto_unsubscribe(msg, raw, envelope_to):
                return
            parsed = parse_message(msg, raw, self.bounce_domain, envelope_to)
        except OperationalError:
            raise  # the database, not the message: the caller retries
        except Exception as exc:
            self.report.malformed.append(f"{source}: {type(exc).__name__}: {one_line(exc, 200)}")
            return
        if parsed.truncated:
            self.report.truncated.append(source)
        if parsed.nature == "auto-reply":
            self.report.auto_replies += 1
            return
        if parsed.nature == "delivered":
            self.report.delivered += 1
            return
        reference = self._delivery(parsed)
        if parsed.nature == "nothing":
            if parsed.verp_token is not None and reference is not None:
                self._unreadable(parsed, reference, source)
            elif parsed.unreadable:
                self.report.malformed.append(
                    f"{source}: not readable as a bounce ({parsed.unreadable})"
                )
            else:
                self.report.not_bounces += 1
            return
        for failure in parsed.failures:
            attributed = self._attribute(failure, reference)
            if attributed is None:
                self.report.not_ours += 1
                continue
            self._record(parsed, failure, *attributed)

    def _mailto_unsubscribe(self, msg: Message, raw: bytes, envelope_to: str | None) -> bool:
        """The List-Unsubscribe mailto: (unsubscribe+TOKEN@DOMAIN) lands here too."""
        if msg.get_content_type() == "multipart/report":
            return False  # a bounce of a message that was sent to that address
        token = _verp_token(msg, self.bounce_domain, "unsubscribe", envelope_to)
        if token is None:
            return False
        if _is_auto_reply(msg):
            self.report.auto_replies += 1
            return True  # a vacation reply asks for nothing
        try:
            delivery_id = self.tokens.verify("bounce", token)
        except InvalidToken:
            self.report.not_ours += 1
            return True
        # A system message (a confirmation, a notice) has no contact of its own: its address
        # is the one to unsubscribe, as the /u/ link of the same message does.
        found = recipient_of(self.session, delivery_id) if isinstance(delivery_id, int) else None
        if found is None or found.email is None:
            self.report.not_ours += 1
            return True
        delivery, contact = found.delivery, found.contact
        fingerprint = hashlib.sha256(raw).hexdigest()[:32]
        if not self._add_event(
            "unsubscribe",
            delivery,
            contact.id if contact else None,
            dedupe_key=f"unsubscribe:{fingerprint}",
            data={"method": "mailto"},
        ):
            return True
        suppress(
            self.session,
            found.email,
            "unsubscribed",
            campaign_id=delivery.campaign_id,
            detail="mailto unsubscribe",
        )
        if contact is not None:
            consent.record(self.session, contact, "withdrawn", source="mailto")
        self.report.unsubscribes += 1
        return True

    def _delivery(self, parsed: Parsed) -> Delivery | None:
        """The delivery a message names itself: by VERP token, else by original Message-ID."""
        if parsed.verp_token:
            try:
                delivery_id = self.tokens.verify("bounce", parsed.verp_token)
            except InvalidToken:
                delivery_id = None
            if isinstance(delivery_id, int):
                found = self.session.get(Delivery, delivery_id)
                if found is not None:
                    return found
        if parsed.message_id:
            return self.session.scalar(
                select(Delivery).where(Delivery.message_id == parsed.message_id[:255]).limit(1)
            )
        return None

    def _attribute(
        self, failure: Failure, reference: Delivery | None
    ) -> tuple[Delivery, Contact] | None:
        """The delivery of ours this failure is about, and its recipient; None if none."""
        address = None
        if failure.address is not None:
            try:
                address = normalise_email(failure.address)
            except ValueError:
                return None
        if reference is not None:
            contact = (
                self.session.get(Contact, reference.contact_id) if reference.contact_id else None
            )
            if contact is None or (address is not None and contact.email != address):
                return None  # the failing address is not this delivery's recipient
            return reference, contact
        if address is None or self.bounce_domain:
            return None
        row = self.session.execute(
            select(Delivery, Contact)
            .join(Contact, Contact.id == Delivery.contact_id)
            .where(
                Contact.email == address,
                Delivery.state.in_(("sent", "bounced")),
                Delivery.sent_at >= utcnow() - RECENT,
            )
            .order_by(Delivery.sent_at.desc())
            .limit(1)
        ).first()
        return (row[0], row[1]) if row is not None else None

    def _add_event(
        self,
        kind: str,
        delivery: Delivery,
        contact_id: int | None,
        *,
        dedupe_key: str,
        data: dict[str, Any],
    ) -> bool:
        """Record an event once: the same message ingested again counts as a duplicate."""
        recorded = record_event(
            self.session,
            kind,
            campaign_id=delivery.campaign_id,
            delivery_id=delivery.id,
            contact_id=contact_id,
            data=data,
            dedupe_key=dedupe_key,
        )
        if not recorded:
            self.report.duplicates += 1
        return recorded

    def _unreadable(self, parsed: Parsed, delivery: Delivery, source: str) -> None:
        """A reply to a VERP address that names no failure: kept for the record only."""
        if self._add_event(
            "bounce",
            delivery,
            delivery.contact_id,
            dedupe_key=_dedupe_key("bounce", parsed.fingerprint, f"delivery {delivery.id}"),
            data={"kind": "unreadable", "subject": parsed.subject},
        ):
            self.report.unreadable.append(
                f"{source}: a reply to the VERP address of delivery {delivery.id} names no "
                "failure; recorded, nothing suppressed"
            )

    def _record(
        self, parsed: Parsed, failure: Failure, delivery: Delivery, contact: Contact
    ) -> None:
        address = contact.email
        kind = "complaint" if failure.kind == "complaint" else "bounce"
        if not self._add_event(
            kind,
            delivery,
            contact.id,
            dedupe_key=_dedupe_key(kind, parsed.fingerprint, address),
            data={
                "kind": failure.kind,
                "status": failure.status,
                "address": address,
                "domain": receiving_domain(address),
                "diagnostic": one_line(failure.diagnostic or "", 500),
                "action": failure.action,
            },
        ):
            return
        if failure.kind == "complaint":
            self.report.complaints += 1
            self._suppress(address, "complained", delivery, "feedback loop report")
            return
        if delivery.state == "sent" and failure.action != "delayed":
            self._mark_bounced(delivery, failure)
        if failure.kind == "hard":
            self.report.hard += 1
            detail = f"{failure.status or ''} {failure.diagnostic or ''}"
            self._suppress(address, "bounced", delivery, one_line(detail, 500))
        elif failure.kind == "soft":
            self.report.soft += 1
            if soft_streak(self.session, contact.id) >= self.soft_limit:
                detail = f"{self.soft_limit} soft bounces in a row"
                self._suppress(address, "bounced", delivery, detail)
        elif failure.kind == "policy":
            self.report.policy += 1  # our sending's fault: counted by domain, never suppressed
        else:
            self.report.other += 1

    def _mark_bounced(self, delivery: Delivery, failure: Failure) -> None:
        self.session.execute(
            update(Delivery)
            .where(Delivery.id == delivery.id)
            .values(
                state="bounced",
                updated_at=utcnow(),
                last_code=_code(failure.status),
                last_text=one_line(failure.diagnostic or "bounced", 500),
            )
        )

    def _suppress(self, address: str, reason: str, delivery: Delivery, detail: str) -> None:
        suppress(self.session, address, reason, campaign_id=delivery.campaign_id, detail=detail)
        self.report.suppressed += 1


def _code(status: str | None) -> int | None:
    return {"4": 450, "5": 550}.get(status[0]) if status else None


def soft_streak(session: Session, contact_id: int) -> int:
    """Campaigns in a row (newest first) whose message to this contact soft-bounced; a
    delivery that went out with no bounce since ends the run."""
    session.flush()
    bounced_campaigns = {
        campaign_id
        for campaign_id, data in session.execute(
            select(Event.campaign_id, Event.data).where(
                Event.contact_id == contact_id, Event.kind == "bounce"
            )
        )
        if (data or {}).get("kind") == "soft"
    }
    streak = 0
    for campaign_id, state in session.execute(
        select(Delivery.campaign_id, Delivery.state)
        .where(Delivery.contact_id == contact_id, Delivery.state.in_(("sent", "bounced")))
        .order_by(Delivery.sent_at.desc())
    ):
        if campaign_id in bounced_campaigns:
            streak += 1
        elif state == "sent" and streak:
            break  # delivered fine after the earlier soft bounces: they no longer count
        elif state == "sent":
            continue  # the newest messages may simply not have bounced yet
    return streak


class DatabaseUnavailable(UserError):
    """The database cannot be reached: a transient failure, so a sending MTA must keep the
    message and try again rather than drop it."""

    exit_code = 75  # EX_TEMPFAIL (sysexits.h): what MTAs read as "retry later"


def _unavailable(url: str, exc: OperationalError) -> DatabaseUnavailable:
    from outreach.db import safe_url

    return DatabaseUnavailable(
        f"cannot reach the database {safe_url(url)}: {one_line(exc.orig or exc, 300)}; "
        "the message was not stored (try again later)"
    )


@contextmanager
def database_session(url: str, *, check: bool = True) -> Iterator[Session]:
    """A session for ingesting, with an unreachable database (now or midway) reported as
    DatabaseUnavailable. Committing is the caller's business."""
    from outreach.db import check_schema, ping, sqlite_file, writer_sessionmaker

    missing = sqlite_file(url)
    if missing is not None and missing.parent.is_dir() and not missing.is_file():
        # The wrong folder, or no `outreach init` yet: the operator's to fix, and asking
        # SQLite would leave an empty database behind. (A folder that is not there at all
        # is an unreachable database below: an MTA retries.)
        check_schema(url)
    try:
        ping(url)
    except OperationalError as exc:
        raise _unavailable(url, exc) from None
    if check:
        check_schema(url)
    session = writer_sessionmaker(url)()
    try:
        yield session
    except OperationalError as exc:
        with contextlib.suppress(OperationalError):
            session.rollback()
        raise _unavailable(url, exc) from None
    finally:
        with contextlib.suppress(OperationalError):
            session.close()


def _read_capped(stream: IO[bytes]) -> bytes:
    """At most one byte over the limit (enough to refuse the message); the rest is read and
    dropped, so a sending MTA is not cut off mid-pipe."""
    data = stream.read(MAX_MESSAGE_BYTES + 1)
    while stream.read(1 << 20):
        pass
    return data


def messages_from(
    source: str | None,
    *,
    mbox: Path | None = None,
    maildir: Path | None = None,
    stdin: IO[bytes] | None = None,
) -> Iterator[tuple[str, bytes, Any]]:
    """(name, raw bytes, done callback) for every message of the source."""
    if maildir is not None:
        new, cur = maildir / "new", maildir / "cur"
        if not new.is_dir():
            raise UserError(f"{maildir} is not a Maildir (no new/ folder)")
        cur.mkdir(exist_ok=True)
        for path in sorted(p for p in new.iterdir() if p.is_file() and not p.name.startswith(".")):

            def done(path: Path = path) -> None:
                # The Maildir convention for "seen": move to cur/ with the S flag.
                os.replace(path, cur / f"{path.name.split(':')[0]}:2,S")

            with path.open("rb") as file:
                yield str(path), _read_capped(file), done
        return
    if mbox is not None:
        if not mbox.is_file():
            raise UserError(f"{mbox}: no such file")
        box = mailbox.mbox(str(mbox), create=False)
        for index, key in enumerate(box.iterkeys()):
            yield f"{mbox}#{index + 1}", box.get_bytes(key), None
        return
    if source in (None, "-"):
        assert stdin is not None
        yield "stdin", _read_capped(stdin), None
        return
    path = Path(source)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    with path.open("rb") as file:
        yield str(path), _read_capped(file), None


def ingest(
    session: Session,
    tokens: Tokens,
    bounce_domain: str | None,
    soft_limit: int,
    messages: Iterator[tuple[str, bytes, Any]],
) -> IngestReport:
    ingester = Ingester(session, tokens, bounce_domain, soft_limit)
    for name, raw, done in messages:
        ingester.ingest(raw, name)
        session.commit()
        if done is not None:
            done()  # only once its outcome is stored: a crash re-reads, never loses
    return ingester.report
