"""The sending pipeline: claim a batch and look up its suppressions, then for each delivery
a few small named steps.

    suppressed? -> compose (`compose`) -> wait for a rate slot (`ratelimit`)
    -> still sending and still not suppressed? (looked up again at most CHECK_SECONDS ago)
    -> send (`transport`) -> record the outcome (`store`), committed in groups

Temporary and permanent failures are handled apart (as in Mailman's outgoing runner).

A thread commits its outcomes in groups: one transaction per OUTCOMES_PER_COMMIT messages
instead of one each, which was most of the database's work and, on SQLite, had the threads
and processes queueing for its one write lock. A group is committed before it grows past
that, before the thread waits (for a rate slot, a claim, the end of its batch) and once it is
COMMIT_SECONDS old, so a worker killed at any moment can have sent, but not recorded, at
most OUTCOMES_PER_COMMIT messages per sending thread.

Two runs of failures stop a campaign, since they are about us and would hit every recipient
alike: failures of the relay itself (refused connections, 421, timeouts, and any error the
transport cannot classify — a full disk under the outbox, say), and policy rejections (5.7.x:
SPF/DKIM/DMARC, content, our IP's reputation). Neither ever suppresses an address.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from outreach import store
from outreach.compose import Prepared, Recipient, UnsafeLink, prepare
from outreach.config import Settings
from outreach.db import DriverConnection, engine_for, writer_sessionmaker
from outreach.events import record_event
from outreach.failures import receiving_domain
from outreach.lifecycle import finish_if_done, pause_for_relay
from outreach.messages import Envelope, UnmailableAddress
from outreach.models import Campaign, Delivery, SystemRecipient, utcnow
from outreach.printable import one_line
from outreach.ratelimit import Limit, Pacer
from outreach.schedule import Timing, hold_outside_window
from outreach.suppressions import suppress
from outreach.tokens import links_for
from outreach.transport import PermanentFailure, TemporaryFailure, Transport

log = logging.getLogger("outreach.pipeline")
# How stale the campaign's state and a batch's suppressions may be when a message goes: an
# unsubscribe or a pause takes effect within this long.
CHECK_SECONDS = 1.0
# The crash bound (see above): messages a thread may have sent without their outcome committed.
OUTCOMES_PER_COMMIT = 16
COMMIT_SECONDS = 0.25
# A campaign's state, read at least once a batch: built once (see store._LOAD).
_STATE = select(Campaign.state).where(Campaign.id == bindparam("id"))


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


@dataclass
class Outcome:
    sent: int = 0
    wake_at: datetime | None = None
    stopped: bool = False
    released: int = 0  # claims given back unsent (a stop, a pause, a cancel)


@dataclass
class Sender:
    """Works one campaign until nothing is claimable, the campaign stops, or we are stopped."""

    settings: Settings
    transport: Transport
    stop: threading.Event = field(default_factory=threading.Event)
    worker: str = field(default_factory=worker_name)
    relay_failures: int = 0
    policy_failures: int = 0
    campaign_id: int = field(default=0, init=False)
    topic: str | None = field(default=None, init=False)  # whoever left it is skipped

    def __post_init__(self) -> None:
        self.session_factory = writer_sessionmaker(self.settings.database_url)
        self.engine = engine_for(self.settings.database_url)
        # Reads are one statement each. On PostgreSQL they run in autocommit: one round trip
        # a read, not three (BEGIN, the read, ROLLBACK), and each statement sees the latest
        # committed data either way (READ COMMITTED).
        reads = (
            {"sqlite_deferred": True}
            if self.engine.dialect.name == "sqlite"
            else {"isolation_level": "AUTOCOMMIT"}
        )
        self.reader = self.engine.execution_options(**reads)
        self.unrecorded: list[dict[str, Any]] = []  # outcomes not yet committed, oldest first
        self.unrecorded_since = 0.0
        self.claimed_at = 0.0  # when the batch in hand was claimed (see its lease)
        self.links = links_for(self.settings, "a worker")

    def run(self, campaign_id: int) -> Outcome:
        outcome = Outcome()
        # Connections held for the run: no pool checkout (and pre-ping) per transaction.
        with (
            self.engine.connect() as conn,
            Session(bind=conn, expire_on_commit=False) as session,
            self.reader.connect() as self.reader_conn,
            DriverConnection(self.engine) as self.outcomes_conn,
        ):
            try:
                self._run(session, campaign_id, outcome)
            finally:
                # However the task ends, what it sent is on record.
                self._record()
        return outcome

    def _run(self, session: Session, campaign_id: int, outcome: Outcome) -> None:
        campaign = session.get(Campaign, campaign_id)
        if campaign is None or campaign.state != "sending":
            return
        self.campaign_id, self.topic = campaign_id, campaign.topic
        prepared = prepare(session, campaign, self.settings, self.links)
        limits = [Limit("global", self.settings.rate.per_second)]
        if prepared.rate:
            limits.append(Limit(f"campaign:{campaign_id}", prepared.rate))
        pacer = Pacer(self.session_factory, limits)
        lease = self.settings.lease_seconds
        slowest = min((lim.per_second for lim in limits if lim.per_second > 0), default=0)
        batch = self.settings.batch_size
        if slowest:
            # A claim must be sent well within its lease, or another worker would resume it.
            batch = max(1, min(batch, int(slowest * lease / 2)))
        window = Timing.from_definition(campaign.definition or {}).window
        session.commit()
        while not self.stop.is_set():
            self.claimed_at = time.monotonic()
            ids = store.claim(session, campaign_id, self.worker, batch, lease)
            if not ids and store.release_expired(session, campaign_id):
                # Claims of a worker that died: resumed once the queue has run dry (the
                # worker's LeaseWatch gives them back within a second anyway).
                ids = store.claim(session, campaign_id, self.worker, batch, lease)
            if ids and window is not None:  # a delivery goes only while its window is open
                kept = hold_outside_window(
                    session, campaign_id, ids, self.worker, window, self.settings.timezone
                )
                if not kept:
                    session.commit()
                    continue  # each held one is due later now: claim the next ones
                ids = kept
            session.commit()
            if not ids:
                finish_if_done(session, campaign_id)
                outcome.wake_at = store.next_wake(session, campaign_id)
                session.commit()
                return
            recipients = self._load(ids)
            sent_all = self._send_batch(session, prepared, pacer, recipients, outcome)
            # Before the next claim: `finish_if_done` must see every outcome.
            self._record()
            if not sent_all:
                return
        outcome.stopped = True

    # Reads go through a connection of their own that never takes SQLite's write lock (a
    # writer session's BEGIN IMMEDIATE would, and keep other processes' commits waiting),
    # each in a transaction ended at once (one left open would stall SQLite's WAL).

    def _campaign_state(self, campaign_id: int) -> str | None:
        try:
            return self.reader_conn.scalar(_STATE, {"id": campaign_id})
        finally:
            self.reader_conn.rollback()

    def _load(self, ids: list[int]) -> list[Recipient]:
        try:
            return store.load(self.reader_conn, ids)
        finally:
            self.reader_conn.rollback()

    def _suppressed(self, prepared: Prepared, recipients: list[Recipient]) -> dict[str, str]:
        """Addresses of the batch that must not get this campaign's message, with why. (A
        subscription's confirmation still goes to a person's own unsubscribe.)"""
        try:
            emails = [r.email for r in recipients if r.email]
            found = store.suppressed(self.reader_conn, emails, self.topic)
        finally:
            self.reader_conn.rollback()
        return {e: why for e, why in found.items() if prepared.blocked_by(why)}

    def _send_batch(
        self,
        session: Session,
        prepared: Prepared,
        pacer: Pacer,
        recipients: list[Recipient],
        outcome: Outcome,
    ) -> bool:
        """Send a claimed batch; False when the campaign stopped or we were stopped (the
        rest of the batch is given back)."""
        # The claim does not look at the campaign: a pause or cancel since the last look stops
        # this batch too, however quickly batches follow each other.
        if self._campaign_state(prepared.campaign_id) != "sending":
            self._release(session, recipients, outcome)
            return False
        checked = time.monotonic()
        suppressed = self._suppressed(prepared, recipients)
        for index, recipient in enumerate(recipients):
            if self.stop.is_set():
                self._release(session, recipients[index:], outcome)
                outcome.stopped = True
                return False
            held_back = self._held_back(recipient, suppressed)
            if held_back is not None:
                self._skip(recipient, held_back)
                continue
            composed = self._compose(prepared, recipient)
            if composed is None:
                continue
            pacer.wait(len(recipients) - index, before_sleep=self._record)
            # The crash bound: with the one about to go, never more than OUTCOMES_PER_COMMIT
            # messages sent and not on record.
            if (
                len(self.unrecorded) >= OUTCOMES_PER_COMMIT
                or time.monotonic() - self.unrecorded_since > COMMIT_SECONDS
            ):
                self._record()
            # Leases are not renewed: what this batch has not sent by half its lease goes back
            # (and is claimed afresh) before another worker could take it over and send it
            # too. One message's SMTP exchange (its timeout, 30 s) fits in the other half.
            if time.monotonic() - self.claimed_at > self.settings.lease_seconds / 2:
                self._release(session, recipients[index:], outcome)
                return True
            # Last before the message goes, so nothing stands between the look-up and it.
            if time.monotonic() - checked > CHECK_SECONDS:
                checked = time.monotonic()
                if self._campaign_state(prepared.campaign_id) != "sending":
                    self._release(session, recipients[index:], outcome)
                    return False
                suppressed = self._suppressed(prepared, recipients[index:])
                held_back = self._held_back(recipient, suppressed)
                if held_back is not None:
                    self._skip(recipient, held_back)
                    continue
            self._send(session, prepared, recipient, composed, outcome)
            if self._paused():
                self._release(session, recipients[index + 1 :], outcome)
                return False
        return True

    def _paused(self) -> bool:
        limit = self.settings.pause_after_failures
        return self.relay_failures >= limit or self.policy_failures >= limit

    def _release(self, session: Session, recipients: list[Recipient], outcome: Outcome) -> None:
        if recipients:
            ids = [r.delivery_id for r in recipients]
            store.release(session, self.campaign_id, ids, self.worker)
            session.commit()
            outcome.released += len(ids)

    def _finish(self, recipient: Recipient, state: str, **outcome: object) -> None:
        """Note an outcome; it is committed with its group (see OUTCOMES_PER_COMMIT)."""
        if not self.unrecorded:
            self.unrecorded_since = time.monotonic()
        self.unrecorded.append(
            store.outcome(
                recipient.delivery_id,
                self.worker,
                state,
                address=recipient.email,
                **outcome,  # type: ignore[arg-type]
            )
        )

    def _record(self) -> None:
        """Commit the outcomes noted so far, in one transaction."""
        if self.unrecorded:
            with self.outcomes_conn.transaction() as tx:
                store.record(tx, self.unrecorded, self.campaign_id)
            self.unrecorded = []

    def _held_back(self, recipient: Recipient, suppressed: dict[str, str]) -> str | None:
        """The per-message checks, against the batch's look-ups (`suppressed`, at most
        CHECK_SECONDS old when the message goes): why this recipient gets no message, as
        its skipped delivery will say, or None."""
        if recipient.email is None:
            return "the contact was erased"
        if recipient.email in suppressed:
            return f"suppressed ({suppressed[recipient.email]})"
        return None

    def _skip(self, recipient: Recipient, why: str) -> None:
        self._finish(recipient, "skipped", attempted=False, text=why)

    def _compose(self, prepared: Prepared, recipient: Recipient) -> tuple[str, Envelope] | None:
        """The message's language and envelope; None when it cannot be made (recorded)."""
        composer = prepared.composer
        language = composer.language_for(recipient)
        try:
            return language, composer.compose(recipient, language).envelope
        except (UnsafeLink, UnmailableAddress) as exc:
            # A recipient's own value would have made a link that is not http(s) or mailto,
            # or the address needs SMTPUTF8: this delivery fails with the reason; the
            # others go on.
            self._finish(recipient, "failed", language=language, text=exc.message)
        except Exception as exc:
            message = getattr(exc, "message", None) or str(exc)
            self._finish(recipient, "failed", language=language, text=f"render error: {message}")
        return None

    def _send(
        self,
        session: Session,
        prepared: Prepared,
        recipient: Recipient,
        composed: tuple[str, Envelope],
        outcome: Outcome,
    ) -> None:
        language, envelope = composed
        try:
            accepted = self.transport.send(envelope, prepared.name)
        except TemporaryFailure as exc:
            self._temporary(session, prepared, recipient, exc, envelope.message_id, language)
            return
        except PermanentFailure as exc:
            self._permanent(session, prepared, recipient, exc, envelope.message_id, language)
            return
        except Exception as exc:
            failure = self._unclassified(exc)
            self._temporary(session, prepared, recipient, failure, envelope.message_id, language)
            return
        self.relay_failures = self.policy_failures = 0
        outcome.sent += 1
        self._finish(
            recipient,
            "sent",
            code=accepted.code,
            text=accepted.text[:500],
            message_id=envelope.message_id,
            language=language,
        )

    def _unclassified(self, exc: Exception) -> TemporaryFailure:
        """An error the transport could not say anything about (a full or read-only disk
        under the outbox, a bug): the relay's failure, retried later; a run of them pauses
        the campaign with this text as the reason, and the worker goes on."""
        log.warning(
            "campaign %s: the transport failed: %s: %s",
            self.campaign_id,
            type(exc).__name__,
            exc,
            exc_info=log.isEnabledFor(logging.DEBUG),
        )
        try:  # a connection in an unknown state is not reused
            self.transport.close()
        except Exception as close_error:
            log.debug("closing the transport failed too: %s", close_error)
        return TemporaryFailure(None, one_line(f"{type(exc).__name__}: {exc}", 500), relay=True)

    def _permanent(
        self,
        session: Session,
        prepared: Prepared,
        recipient: Recipient,
        exc: PermanentFailure,
        message_id: str,
        language: str,
    ) -> None:
        self.relay_failures = 0
        policy = exc.policy
        self.policy_failures = self.policy_failures + 1 if policy else 0
        self._finish(
            recipient,
            "failed",
            code=exc.code,
            text=exc.text,
            message_id=message_id,
            language=language,
        )
        if not (policy or exc.hard_bounce) or not recipient.email:
            return
        # What follows reads and writes beside the delivery: its outcome is on record first.
        self._record()
        forgotten = self._forgotten(session, recipient)
        text = store.erased(exc.text, recipient.email) if forgotten else exc.text
        contact_id = None if forgotten else recipient.contact_id
        if policy:
            # Refused for who we are or what we sent: never the address's fault.
            record_event(
                session,
                "bounce",
                campaign_id=prepared.campaign_id,
                delivery_id=recipient.delivery_id,
                contact_id=contact_id,
                data={
                    "kind": "policy",
                    "code": exc.code,
                    "text": one_line(text, 500),
                    "domain": receiving_domain(recipient.email),
                    "source": "smtp",
                },
            )
        else:
            if not forgotten:  # a forgotten address is suppressed for good already
                suppress(
                    session,
                    recipient.email,
                    "bounced",
                    campaign_id=prepared.campaign_id,
                    detail=f"{exc.code} {exc.text}"[:500],
                )
            record_event(
                session,
                "bounce",
                campaign_id=prepared.campaign_id,
                delivery_id=recipient.delivery_id,
                contact_id=contact_id,
                data={"kind": "hard", "code": exc.code, "text": text, "source": "smtp"},
            )
        session.commit()
        if policy and self.policy_failures >= self.settings.pause_after_failures:
            reason = (
                f"paused after {self.policy_failures} consecutive policy rejections (the "
                "receiving systems refused our mail: SPF, DKIM or DMARC, content, or our IP's "
                f"reputation); last: {exc.code} {one_line(text, 300)} "
                f"({receiving_domain(recipient.email)}). Fix it, then "
                f"`outreach campaigns resume {prepared.name}`"
            )
            pause_for_relay(session, prepared.campaign_id, reason)
            log.error("campaign %s: %s", prepared.name, reason)

    def _forgotten(self, session: Session, recipient: Recipient) -> bool:
        """Whether the recipient was forgotten since its batch was loaded: the delivery has
        lost its contact and (a system message's) its recipient row. Both rows are held
        (PostgreSQL: FOR SHARE) until the caller commits, so a `forget` either finished
        before and is seen here, or waits and then erases what is written now."""
        contact_id = session.scalar(
            select(Delivery.contact_id)
            .where(Delivery.id == recipient.delivery_id)
            .with_for_update(read=True)
        )
        if contact_id is not None:
            return False
        system = session.scalar(
            select(SystemRecipient.delivery_id)
            .where(SystemRecipient.delivery_id == recipient.delivery_id)
            .with_for_update(read=True)
        )
        return system is None

    def _temporary(
        self,
        session: Session,
        prepared: Prepared,
        recipient: Recipient,
        exc: TemporaryFailure,
        message_id: str,
        language: str,
    ) -> None:
        attempts = recipient.attempts + 1
        self.policy_failures = 0
        if exc.relay:
            self.relay_failures += 1
        if attempts >= self.settings.max_attempts:
            self._finish(
                recipient,
                "failed",
                code=exc.code,
                text=f"gave up after {attempts} attempts: {exc.text}",
                message_id=message_id,
                language=language,
            )
        else:
            delay = self.settings.retry_delay * (2 ** (attempts - 1))
            self._finish(
                recipient,
                "deferred",
                code=exc.code,
                text=exc.text,
                message_id=message_id,
                language=language,
                retry_at=utcnow() + timedelta(seconds=delay),
            )
        if self.relay_failures >= self.settings.pause_after_failures:
            reason = (
                f"paused after {self.relay_failures} consecutive relay failures; last: "
                f"{one_line(exc, 500)}. Fix the relay, then "
                f"`outreach campaigns resume {prepared.name}`"
            )
            pause_for_relay(session, prepared.campaign_id, reason)
            log.error("campaign %s: %s", prepared.name, reason)
