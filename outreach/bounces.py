"""Bounces and complaints: parse what comes back, attribute it to a delivery, and apply the
policy (hard bounces suppress at once, soft ones after a run, complaints always).

A message is attributed, in order, by its VERP address (bounces+TOKEN@DOMAIN), by the
original Message-ID found in the returned headers, or by the failing address (RFC 3464 DSNs
are read here; the many non-standard formats are left to flufl.bounce).
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import mailbox
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from email.utils import getaddresses, parseaddr
from pathlib import Path
from typing import IO, Any

import flufl.bounce
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from outreach.errors import UserError
from outreach.fields import normalise_email
from outreach.models import Contact, Delivery, Event, utcnow
from outreach.suppressions import suppress
from outreach.tokens import InvalidToken, Tokens

_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_MESSAGE_ID = re.compile(r"^Message-ID:\s*(<[^>\s]+>)", re.I | re.M)


@dataclass
class Failure:
    address: str
    kind: str  # "hard", "soft" or "complaint"
    status: str | None = None
    diagnostic: str | None = None
    action: str | None = None


@dataclass
class Parsed:
    failures: list[Failure]
    message_id: str | None  # the original message's, from the returned headers
    verp_token: str | None
    fingerprint: str


def _is_soft(status: str | None, action: str | None) -> bool:
    if action and action.lower() == "delayed":
        return True
    if status is None:
        return False
    # 4.x.x is temporary; 5.2.2 (mailbox full) is a full mailbox, not a missing one.
    return status.startswith("4.") or status == "5.2.2"


def _text_of(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if isinstance(payload, bytes):
        return payload.decode(part.get_content_charset() or "utf-8", "replace")
    if isinstance(payload, str):
        return payload
    return ""


def _original_message_id(msg: Message) -> str | None:
    own = (msg.get("Message-ID") or "").strip()
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype == "message/rfc822":
            inner = part.get_payload()
            if isinstance(inner, list) and inner:
                mid = inner[0].get("Message-ID")
                if mid:
                    return str(mid).strip()
        elif ctype in ("text/rfc822-headers", "text/rfc822-header"):
            found = _MESSAGE_ID.search(_text_of(part))
            if found:
                return found.group(1)
    # Non-standard bounces quote the original headers in their text.
    for part in msg.walk():
        if part.get_content_maintype() == "text":
            for found in _MESSAGE_ID.finditer(_text_of(part)):
                if found.group(1) != own:
                    return found.group(1)
    return None


def _verp_token(msg: Message, bounce_domain: str | None, local: str = "bounces") -> str | None:
    """The token of a bounces+TOKEN@DOMAIN (or unsubscribe+TOKEN@DOMAIN) recipient."""
    if not bounce_domain:
        return None
    pattern = re.compile(rf"{local}\+([A-Za-z0-9_.\-]+)@{re.escape(bounce_domain)}", re.I)
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


def _dsn_failures(msg: Message) -> list[Failure]:
    failures = []
    for part in msg.walk():
        if part.get_content_type() != "message/delivery-status":
            continue
        blocks = part.get_payload()
        if not isinstance(blocks, list):
            continue
        for block in blocks[1:] if len(blocks) > 1 else blocks:
            # Original-Recipient is the address we sent to; Final-Recipient may be a rewrite.
            recipient = block.get("Original-Recipient") or block.get("Final-Recipient")
            if not recipient:
                continue
            address = parseaddr(str(recipient).split(";", 1)[-1].strip())[1]
            action = (block.get("Action") or "").strip().lower() or None
            if action not in (None, "failed", "delayed"):
                continue  # delivered, relayed, expanded: not a failure
            status_field = str(block.get("Status") or "")
            found = _STATUS.search(status_field)
            status = ".".join(found.groups()) if found else None
            diagnostic = " ".join(str(block.get("Diagnostic-Code") or "").split()) or None
            kind = "soft" if _is_soft(status, action) else "hard"
            failures.append(Failure(address, kind, status, diagnostic, action))
    return failures


def _arf_failures(msg: Message) -> list[Failure] | None:
    """An ARF feedback report (RFC 5965): the recipient complained."""
    if (
        msg.get_content_type() != "multipart/report"
        or (msg.get_param("report-type") or "").lower() != "feedback-report"
    ):
        return None
    addresses: list[str] = []
    for part in msg.walk():
        if part.get_content_type() == "message/feedback-report":
            payload = part.get_payload()
            blocks = payload if isinstance(payload, list) else []
            for block in blocks:
                for field_name in ("Original-Rcpt-To", "Removal-Recipient"):
                    addresses += [a for _, a in getaddresses(block.get_all(field_name) or [])]
        elif part.get_content_type() in ("message/rfc822", "text/rfc822-headers") and not addresses:
            inner = part.get_payload()
            headers = inner[0] if isinstance(inner, list) and inner else None
            if headers is not None:
                addresses += [a for _, a in getaddresses(headers.get_all("To") or [])]
            else:
                found = re.search(r"^To:\s*(.+)$", _text_of(part), re.M | re.I)
                if found:
                    addresses.append(parseaddr(found.group(1))[1])
    return [Failure(a, "complaint") for a in dict.fromkeys(a for a in addresses if a)]


def _heuristic_failures(msg: Message, known: set[str]) -> list[Failure]:
    """The non-standard formats (qmail, Exchange, Yahoo, …), through flufl.bounce."""
    try:
        temporary, permanent = flufl.bounce.all_failures(msg)
    except Exception:
        return []
    found = [(a, "hard") for a in sorted(permanent)]
    found += [(a, "soft") for a in sorted(temporary) if a not in permanent]
    failures = [
        Failure(a.decode("ascii", "replace"), kind)
        for a, kind in found
        if a.decode("ascii", "replace").lower() not in known
    ]
    if failures:
        text = " ".join(_text_of(p) for p in msg.walk() if p.get_content_maintype() == "text")
        status = _STATUS.search(text)
        for failure in failures:
            failure.status = ".".join(status.groups()) if status else None
            failure.diagnostic = " ".join(text.split())[:300] or None
    return failures


def parse(raw: bytes, bounce_domain: str | None = None) -> Parsed | None:
    """What a bounce or complaint says; None when the message is neither."""
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    fingerprint = hashlib.sha256(raw).hexdigest()[:32]
    failures = _arf_failures(msg)
    if failures is None:
        failures = _dsn_failures(msg)
    if not any(f.kind == "complaint" for f in failures):
        failures += _heuristic_failures(msg, {f.address.lower() for f in failures})
    token = _verp_token(msg, bounce_domain)
    if not failures and token is None:
        return None
    return Parsed(failures, _original_message_id(msg), token, fingerprint)


@dataclass
class IngestReport:
    messages: int = 0
    hard: int = 0
    soft: int = 0
    complaints: int = 0
    unsubscribes: int = 0
    suppressed: int = 0
    duplicates: int = 0
    unattributed: int = 0
    not_bounces: int = 0
    malformed: list[str] = field(default_factory=list)


class Ingester:
    def __init__(
        self, session: Session, tokens: Tokens, bounce_domain: str | None, soft_limit: int
    ) -> None:
        self.session, self.tokens = session, tokens
        self.bounce_domain, self.soft_limit = bounce_domain, soft_limit
        self.report = IngestReport()

    def ingest(self, raw: bytes, source: str) -> None:
        self.report.messages += 1
        try:
            if self._mailto_unsubscribe(raw):
                return
            parsed = parse(raw, self.bounce_domain)
        except Exception as exc:
            self.report.malformed.append(f"{source}: {exc}")
            return
        if parsed is None:
            self.report.not_bounces += 1
            return
        delivery = self._delivery(parsed)
        failures = parsed.failures
        if not failures and delivery is not None:
            # A VERP bounce we could not read: the address is the delivery's own.
            contact = (
                self.session.get(Contact, delivery.contact_id) if delivery.contact_id else None
            )
            if contact is not None:
                failures = [Failure(contact.email, "hard", None, "unreadable bounce to VERP")]
        for failure in failures:
            self._record(parsed, failure, delivery)

    def _mailto_unsubscribe(self, raw: bytes) -> bool:
        """The List-Unsubscribe mailto: (unsubscribe+TOKEN@DOMAIN) lands here too."""
        msg = email.message_from_bytes(raw, policy=email.policy.compat32)
        if msg.get_content_type() == "multipart/report":
            return False  # a bounce of a message that was sent to that address
        token = _verp_token(msg, self.bounce_domain, local="unsubscribe")
        if token is None:
            return False
        try:
            delivery_id = self.tokens.verify("bounce", token)
        except InvalidToken:
            self.report.unattributed += 1
            return True
        delivery = self.session.get(Delivery, delivery_id) if isinstance(delivery_id, int) else None
        contact = (
            self.session.get(Contact, delivery.contact_id)
            if delivery is not None and delivery.contact_id
            else None
        )
        if delivery is None or contact is None:
            self.report.unattributed += 1
            return True
        fingerprint = hashlib.sha256(raw).hexdigest()[:32]
        try:
            with self.session.begin_nested():
                self.session.add(
                    Event(
                        kind="unsubscribe",
                        campaign_id=delivery.campaign_id,
                        delivery_id=delivery.id,
                        contact_id=contact.id,
                        dedupe_key=f"unsubscribe:{fingerprint}",
                        data={"method": "mailto"},
                    )
                )
        except IntegrityError:
            self.report.duplicates += 1
            return True
        suppress(
            self.session,
            contact.email,
            "unsubscribed",
            campaign_id=delivery.campaign_id,
            detail="mailto unsubscribe",
        )
        self.report.unsubscribes += 1
        return True

    def _delivery(self, parsed: Parsed) -> Delivery | None:
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
                select(Delivery).where(Delivery.message_id == parsed.message_id)
            )
        return None

    def _record(self, parsed: Parsed, failure: Failure, delivery: Delivery | None) -> None:
        try:
            address = normalise_email(failure.address)
        except ValueError:
            self.report.unattributed += 1
            return
        contact = self.session.scalar(select(Contact).where(Contact.email == address))
        if delivery is not None and contact is not None and delivery.contact_id != contact.id:
            delivery = None  # the failing address is not this delivery's recipient
        if delivery is None and contact is not None:
            delivery = self.session.scalar(
                select(Delivery)
                .where(Delivery.contact_id == contact.id, Delivery.state.in_(("sent", "bounced")))
                .order_by(Delivery.sent_at.desc())
                .limit(1)
            )
        if contact is None and delivery is None:
            self.report.unattributed += 1
        kind = "complaint" if failure.kind == "complaint" else "bounce"
        event = Event(
            kind=kind,
            campaign_id=delivery.campaign_id if delivery else None,
            delivery_id=delivery.id if delivery else None,
            contact_id=contact.id if contact else None,
            dedupe_key=f"{kind}:{parsed.fingerprint}:{address}"[:255],
            data={
                "kind": failure.kind,
                "status": failure.status,
                "address": address,
                "diagnostic": (failure.diagnostic or "")[:500],
                "action": failure.action,
            },
        )
        try:
            with self.session.begin_nested():
                self.session.add(event)
        except IntegrityError:
            self.report.duplicates += 1
            return
        if failure.kind == "complaint":
            self.report.complaints += 1
            suppress(
                self.session,
                address,
                "complained",
                campaign_id=event.campaign_id,
                detail="feedback loop report",
            )
            self.report.suppressed += 1
            return
        if delivery is not None and delivery.state == "sent" and failure.action != "delayed":
            self.session.execute(
                update(Delivery)
                .where(Delivery.id == delivery.id)
                .values(
                    state="bounced",
                    updated_at=utcnow(),
                    last_code=_code(failure.status),
                    last_text=(failure.diagnostic or "bounced")[:500],
                )
            )
        if failure.kind == "hard":
            self.report.hard += 1
            suppress(
                self.session,
                address,
                "bounced",
                campaign_id=event.campaign_id,
                detail=f"{failure.status or ''} {failure.diagnostic or ''}".strip()[:500],
            )
            self.report.suppressed += 1
        else:
            self.report.soft += 1
            if contact is not None and soft_streak(self.session, contact.id) >= self.soft_limit:
                suppress(
                    self.session,
                    address,
                    "bounced",
                    campaign_id=event.campaign_id,
                    detail=f"{self.soft_limit} soft bounces in a row",
                )
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

            yield str(path), path.read_bytes(), done
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
        yield "stdin", stdin.read(), None
        return
    path = Path(source)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    yield str(path), path.read_bytes(), None


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
