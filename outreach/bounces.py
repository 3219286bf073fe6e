"""Bounces and complaints: attribute what `bounce_parser` read to a delivery we sent, and
apply the policy (only a missing or disabled address, or a domain that does not exist,
suppresses at once; temporary and other permanent failures after a run of campaigns;
complaints always; policy rejections never).

Anyone can send mail to the bounce domain, so nothing here believes a message on its word.
A failure counts only when it is about a delivery we sent: found by its VERP address
(bounces+TOKEN@DOMAIN, signed), else by the original Message-ID of a stored delivery. The
failing address must be the delivery's recipient. Everything else is "not ours" and changes
nothing.

An installation without a bounce domain gets its bounces at the From mailbox, where anyone
can write, and many quote nothing of the original: there a report that names only an address
that received a delivery in the last 30 days is recorded (its event says `attribution:
address`) and listed for staff ("named by address only"), but on its own it suppresses
nothing and changes no delivery. It counts only with more evidence: as one campaign of a run
(`failure_run`) that also holds a failure named by our VERP address or Message-ID, which no
outsider can write. With a bounce domain every message we send carries its own VERP address,
so a report that names only an address is not about mail of ours at all.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import hashlib
import mailbox
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import timedelta
from email.message import Message
from pathlib import Path
from typing import IO, Any

from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from outreach.bounce_parser import (
    MAX_FAILURES,
    Failure,
    Parsed,
    is_auto_reply,
    parse_message,
    shape_refusal,
    verp_token_of,
)
from outreach.errors import UserError
from outreach.events import record_event
from outreach.failures import about_us, receiving_domain
from outreach.fields import normalise_email
from outreach.models import Contact, Delivery, Event, utcnow
from outreach.printable import counted, one_line
from outreach.suppressions import recipient_of, suppress
from outreach.tokens import InvalidToken, Tokens
from outreach.unsubscribe import unsubscribe

MAX_MESSAGE_BYTES = 10 * 1024 * 1024
RECENT = timedelta(days=30)


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
    # Failures named by their address only (no bounce domain): recorded, not believed alone.
    unconfirmed: list[str] = field(default_factory=list)
    malformed: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # over MAX_MESSAGE_BYTES
    truncated: list[str] = field(default_factory=list)  # over MAX_FAILURES recipients

    def as_json(self) -> dict[str, Any]:
        """Every count, and the messages that needed a word of their own, for a script."""
        return {
            "messages": self.messages,
            "hard": self.hard,
            "soft": self.soft,
            "policy": self.policy,
            "other": self.other,
            "complaints": self.complaints,
            "unsubscribes": self.unsubscribes,
            "suppressed": self.suppressed,
            "duplicates": self.duplicates,
            "not_ours": self.not_ours,
            "auto_replies": self.auto_replies,
            "delivered": self.delivered,
            "not_bounces": self.not_bounces,
            "unreadable": self.unreadable,
            "unconfirmed": self.unconfirmed,
            "malformed": self.malformed,
            "refused": self.refused,
            "truncated": self.truncated,
        }

    def notes(self) -> list[str]:
        """One line for each message that needs a word of its own."""
        return (
            [f"refused {line}" for line in self.refused]
            + [f"skipped malformed message {line}" for line in self.malformed]
            + [f"unreadable bounce {line}" for line in self.unreadable]
            + [f"named by address only: {line}" for line in self.unconfirmed]
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
                (len(self.unconfirmed), "named by address only"),
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
            f"{len(self.unreadable)} unreadable, "
            f"{len(self.unconfirmed)} named by address only (not suppressed), "
            f"{self.not_bounces} not bounces, "
            f"{len(self.malformed)} malformed, {len(self.refused)} refused"
        )


def _dedupe_key(kind: str, fingerprint: str, subject: str) -> str:
    """One event per message and address, without the address in clear (`contacts forget`
    must be able to leave it nowhere)."""
    digest = hashlib.sha256(f"{fingerprint}:{subject}".encode()).hexdigest()[:40]
    return f"{kind}:{digest}"


def _dedupe_key_0_1(kind: str, fingerprint: str, address: str) -> str:
    """The key outreach 0.1.0 stored for the same event (the address in clear), so that a
    message ingested before the upgrade is not counted again after it."""
    return f"{kind}:{fingerprint}:{address}"[:255]


class Ingester:
    def __init__(
        self, session: Session, tokens: Tokens, bounce_domain: str | None, soft_limit: int
    ) -> None:
        self.session, self.tokens = session, tokens
        self.bounce_domain, self.soft_limit = bounce_domain, soft_limit
        self.report = IngestReport()
        self.parsed = 0  # messages parsed: once each, whatever their recipients

    def ingest(self, raw: bytes, source: str, envelope_to: str | None = None) -> None:
        """Read one message and act on it; `envelope_to` is the SMTP recipient when we
        received it ourselves. Database errors propagate (the caller retries later)."""
        self.ingest_for(raw, source, [envelope_to])

    def ingest_for(self, raw: bytes, source: str, recipients: Sequence[str | None]) -> None:
        """Read one message, once, and act on it for each of its SMTP recipients (None: not
        received by us; its headers name the VERP address, if any)."""
        self.report.messages += 1
        source = one_line(source, 300)
        if len(raw) > MAX_MESSAGE_BYTES:
            self.report.refused.append(f"{source}: larger than {MAX_MESSAGE_BYTES // 2**20} MB")
            return
        shape = shape_refusal(raw)
        if shape is not None:
            self.report.refused.append(f"{source}: {shape}, not read")
            return
        try:
            msg = email.message_from_bytes(raw, policy=email.policy.compat32)
            self.parsed += 1
            rest = [r for r in recipients if not self._mailto_unsubscribe(msg, raw, r)]
            if not rest:
                return
            parsed = parse_message(msg, raw, self.bounce_domain, rest[0])
        except OperationalError:
            raise  # the database, not the message: the caller retries
        except Exception as exc:
            self.report.malformed.append(f"{source}: {type(exc).__name__}: {one_line(exc, 200)}")
            return
        if parsed.truncated:
            self.report.truncated.append(source)
        for envelope_to in rest:
            if envelope_to != rest[0]:
                token = verp_token_of(msg, self.bounce_domain, envelope_to=envelope_to)
                parsed = replace(parsed, verp_token=token)
            self._act(parsed, source)

    def _act(self, parsed: Parsed, source: str) -> None:
        """What one reading of a message changes, for the delivery its VERP token names."""
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
            delivery, contact = attributed
            if reference is None:  # by the failing address alone
                self._unconfirmed(parsed, failure, delivery, contact, source)
            else:
                self._record(parsed, failure, delivery, contact)

    def _mailto_unsubscribe(self, msg: Message, raw: bytes, envelope_to: str | None) -> bool:
        """The List-Unsubscribe mailto: (unsubscribe+TOKEN@DOMAIN) lands here too."""
        if msg.get_content_type() == "multipart/report":
            return False  # a bounce of a message that was sent to that address
        token = verp_token_of(msg, self.bounce_domain, "unsubscribe", envelope_to)
        if token is None:
            return False
        if is_auto_reply(msg):
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
        # As the one-click of the same message: its topic, or everything when it has none.
        if unsubscribe(self.session, found, "mailto").changed:
            self.report.unsubscribes += 1
        else:
            self.report.duplicates += 1
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
        earlier_key: str | None = None,
    ) -> bool:
        """Record an event once: the same message ingested again counts as a duplicate,
        also when an earlier release recorded it under `earlier_key`."""
        seen = earlier_key is not None and self.session.scalar(
            select(Event.id).where(Event.dedupe_key == earlier_key)
        )
        recorded = not seen and record_event(
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

    def _event(
        self,
        parsed: Parsed,
        failure: Failure,
        delivery: Delivery,
        contact: Contact,
        **extra: Any,
    ) -> bool:
        """The failure's event, once per message and address; False for a duplicate."""
        address = contact.email
        kind = "complaint" if failure.kind == "complaint" else "bounce"
        return self._add_event(
            kind,
            delivery,
            contact.id,
            dedupe_key=_dedupe_key(kind, parsed.fingerprint, address),
            earlier_key=_dedupe_key_0_1(kind, parsed.fingerprint, address),
            data={
                "kind": failure.kind,
                "status": failure.status,
                "address": address,
                "domain": receiving_domain(address),
                "diagnostic": one_line(failure.diagnostic or "", 500),
                "action": failure.action,
                **extra,
            },
        )

    def _unconfirmed(
        self, parsed: Parsed, failure: Failure, delivery: Delivery, contact: Contact, source: str
    ) -> None:
        """A failure named by its address alone (no bounce domain): recorded and listed, no
        delivery changed; it may complete a run that a believed failure is part of."""
        if not self._event(parsed, failure, delivery, contact, attribution="address"):
            return
        status = f" {failure.status}" if failure.status else ""
        self.report.unconfirmed.append(
            f"{source}: {contact.email} ({failure.kind}{status}) about delivery {delivery.id}; "
            "recorded, not suppressed: no VERP address or Message-ID of ours confirms it"
        )
        if failure.kind in RUN_KINDS:
            self._run_up(contact, delivery)

    def _record(
        self, parsed: Parsed, failure: Failure, delivery: Delivery, contact: Contact
    ) -> None:
        address = contact.email
        if not self._event(parsed, failure, delivery, contact):
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
            self._run_up(contact, delivery)
        elif failure.kind == "policy":
            self.report.policy += 1  # our sending's fault: counted by domain, never suppressed
        else:
            self.report.other += 1
            if not about_us(failure.status):
                self._run_up(contact, delivery)

    def _run_up(self, contact: Contact, delivery: Delivery) -> None:
        """Suppress after `soft_limit` campaigns in a row failed, one of them confirmed."""
        run, confirmed = failure_run(self.session, contact.id)
        if run >= self.soft_limit and confirmed:
            detail = f"failures in {run} campaigns in a row"
            self._suppress(contact.email, "bounced", delivery, detail)

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


# Failures that count toward a run: temporary ones, and permanent ones that say neither that
# the address is gone nor that we were refused (a bare 550, "permanent error", a DNS server
# that did not answer for days). Policy rejections are ours to fix and never count.
RUN_KINDS = ("soft", "other", "hard")


def _in_run(data: dict[str, Any]) -> tuple[bool, bool]:
    """Whether a bounce event counts toward a run, and whether it was believed on its own
    (named our delivery) rather than by its address alone."""
    kind, unconfirmed = data.get("kind"), data.get("attribution") == "address"
    if kind == "other" and about_us(data.get("status")):
        return False, False
    if kind in ("soft", "other") or (unconfirmed and kind == "hard"):
        return True, not unconfirmed
    return False, False


def failure_run(session: Session, contact_id: int) -> tuple[int, bool]:
    """Campaigns in a row (newest first) whose message to this contact failed (soft, other,
    or a report named by address alone), and whether any of those failures named our
    delivery by VERP address or Message-ID. A delivery that went out with no failure since
    ends the run."""
    session.flush()
    failed: dict[int, bool] = {}  # campaign -> confirmed
    for campaign_id, data in session.execute(
        select(Event.campaign_id, Event.data).where(
            Event.contact_id == contact_id, Event.kind == "bounce"
        )
    ):
        counts, confirmed = _in_run(data or {})
        if counts and campaign_id is not None:
            failed[campaign_id] = failed.get(campaign_id, False) or confirmed
    streak, confirmed = 0, False
    for campaign_id, state in session.execute(
        select(Delivery.campaign_id, Delivery.state)
        .where(Delivery.contact_id == contact_id, Delivery.state.in_(("sent", "bounced")))
        .order_by(Delivery.sent_at.desc())
    ):
        if campaign_id in failed:
            streak += 1
            confirmed = confirmed or failed[campaign_id]
        elif state == "sent" and streak:
            break  # delivered fine after the earlier failures: they no longer count
    return streak, confirmed


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
