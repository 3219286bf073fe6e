"""The sending pipeline: claim a batch, then for each delivery a few small named steps.

    check the campaign is still sending -> check suppression -> compose (`compose`)
    -> wait for a rate slot (`ratelimit`) -> send (`transport`) -> record the outcome (`store`)

Temporary and permanent failures are handled apart (as in Mailman's outgoing runner). Each
outcome is committed as soon as it is known, so a worker killed at any moment can have
sent, but not recorded, at most the one message it was sending.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from outreach import store
from outreach.compose import Prepared, Recipient, prepare
from outreach.config import Settings
from outreach.db import AutocommitConnection, engine_for, writer_sessionmaker
from outreach.events import record_event
from outreach.lifecycle import finish_if_done, pause_for_relay
from outreach.models import Campaign, utcnow
from outreach.ratelimit import Limit, Pacer
from outreach.suppressions import suppress
from outreach.system_mail import may_mail_anyway
from outreach.tokens import links_for
from outreach.transport import PermanentFailure, TemporaryFailure, Transport

log = logging.getLogger("outreach.pipeline")
STATE_CHECK_SECONDS = 1.0


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


@dataclass
class Outcome:
    sent: int = 0
    wake_at: datetime | None = None
    stopped: bool = False


@dataclass
class Sender:
    """Works one campaign until nothing is claimable, the campaign stops, or we are stopped."""

    settings: Settings
    transport: Transport
    stop: threading.Event = field(default_factory=threading.Event)
    worker: str = field(default_factory=worker_name)
    relay_failures: int = 0

    def __post_init__(self) -> None:
        self.session_factory = writer_sessionmaker(self.settings.database_url)
        self.engine = engine_for(self.settings.database_url)
        self.links = links_for(self.settings, "a worker")

    def run(self, campaign_id: int) -> Outcome:
        outcome = Outcome()
        # The per-message path is two single statements on an autocommit driver connection:
        # a Session's bookkeeping would cost more than the statements themselves.
        with AutocommitConnection(self.engine) as self.conn, self.session_factory() as session:
            campaign = session.get(Campaign, campaign_id)
            if campaign is None or campaign.state != "sending":
                return outcome
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
            session.commit()
            while not self.stop.is_set():
                store.release_expired(session, campaign_id)
                ids = store.claim(session, campaign_id, self.worker, batch, lease)
                session.commit()
                if not ids:
                    finish_if_done(session, campaign_id)
                    outcome.wake_at = store.next_wake(session, campaign_id)
                    session.commit()
                    return outcome
                recipients = store.load(session, ids)
                session.commit()
                if not self._send_batch(session, prepared, pacer, recipients, outcome):
                    return outcome
            outcome.stopped = True
            return outcome

    def _campaign_state(self, session: Session, campaign_id: int) -> str | None:
        state = session.scalar(select(Campaign.state).where(Campaign.id == campaign_id))
        session.commit()
        return state

    def _send_batch(
        self,
        session: Session,
        prepared: Prepared,
        pacer: Pacer,
        recipients: list[Recipient],
        outcome: Outcome,
    ) -> bool:
        checked = time.monotonic()
        for index, recipient in enumerate(recipients):
            if self.stop.is_set():
                self._release(session, recipients[index:])
                outcome.stopped = True
                return False
            if time.monotonic() - checked > STATE_CHECK_SECONDS:
                checked = time.monotonic()
                if self._campaign_state(session, prepared.campaign_id) != "sending":
                    self._release(session, recipients[index:])
                    return False
            self._deliver(session, prepared, pacer, recipient, len(recipients) - index, outcome)
            if self.relay_failures >= self.settings.pause_after_failures:
                self._release(session, recipients[index + 1 :])
                return False
        return True

    def _release(self, session: Session, recipients: list[Recipient]) -> None:
        store.release(session, [r.delivery_id for r in recipients], self.worker)
        session.commit()

    def _finish(self, delivery_id: int, state: str, **outcome: object) -> None:
        """Record an outcome and commit it at once: the crash window is one message."""
        store.record(self.conn, delivery_id, self.worker, state, **outcome)  # type: ignore[arg-type]

    def _deliver(
        self,
        session: Session,
        prepared: Prepared,
        pacer: Pacer,
        recipient: Recipient,
        remaining: int,
        outcome: Outcome,
    ) -> None:
        delivery_id = recipient.delivery_id
        if recipient.email is None:
            self._finish(delivery_id, "skipped", attempted=False, text="the contact was erased")
            return
        # Autocommit: no transaction stays open across rendering, pacing and SMTP.
        reason = store.suppression_reason(self.conn, recipient.email)
        if reason is not None and not may_mail_anyway(prepared.name, reason):
            self._finish(delivery_id, "skipped", attempted=False, text=f"suppressed ({reason})")
            return
        composer = prepared.composer
        language = composer.language_for(recipient)
        try:
            envelope = composer.compose(recipient, language).envelope
        except Exception as exc:
            message = getattr(exc, "message", None) or str(exc)
            self._finish(delivery_id, "failed", language=language, text=f"render error: {message}")
            return
        pacer.wait(remaining)
        try:
            accepted = self.transport.send(envelope, prepared.name)
        except TemporaryFailure as exc:
            self._temporary(session, prepared, recipient, exc, envelope.message_id, language)
            return
        except PermanentFailure as exc:
            self._permanent(session, prepared, recipient, exc, envelope.message_id, language)
            return
        self.relay_failures = 0
        outcome.sent += 1
        self._finish(
            delivery_id,
            "sent",
            code=accepted.code,
            text=accepted.text[:500],
            message_id=envelope.message_id,
            language=language,
        )

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
        self._finish(
            recipient.delivery_id,
            "failed",
            code=exc.code,
            text=exc.text,
            message_id=message_id,
            language=language,
        )
        if exc.hard_bounce and recipient.email:
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
                contact_id=recipient.contact_id,
                data={"kind": "hard", "code": exc.code, "text": exc.text, "source": "smtp"},
            )
            session.commit()

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
        if exc.relay:
            self.relay_failures += 1
        if attempts >= self.settings.max_attempts:
            self._finish(
                recipient.delivery_id,
                "failed",
                code=exc.code,
                text=f"gave up after {attempts} attempts: {exc.text}",
                message_id=message_id,
                language=language,
            )
        else:
            delay = self.settings.retry_delay * (2 ** (attempts - 1))
            self._finish(
                recipient.delivery_id,
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
                f"{exc}. Fix the relay, then `outreach campaigns resume {prepared.name}`"
            )
            pause_for_relay(session, prepared.campaign_id, reason)
            log.error("campaign %s: %s", prepared.name, reason)
