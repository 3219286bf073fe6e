"""The sending pipeline: claim a batch, then for each delivery a few small named steps.

    check the campaign is still sending -> check suppression -> render -> assemble
    -> wait for a rate slot -> send -> record the outcome

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

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from outreach import store
from outreach.campaigns import resolve_language
from outreach.config import Settings
from outreach.db import AutocommitConnection, engine_for, writer_sessionmaker
from outreach.messages import DkimKey, Envelope, MessageBuilder
from outreach.models import Campaign, CampaignVariant, Event, utcnow
from outreach.ratelimit import Limit, Pacer
from outreach.render import CompiledVariant, Personaliser, personalise
from outreach.suppressions import suppress
from outreach.tokens import Links, Tokens
from outreach.transport import PermanentFailure, TemporaryFailure, Transport

log = logging.getLogger("outreach.pipeline")
STATE_CHECK_SECONDS = 1.0
DEV_SECRET = "outreach-development-key-not-for-real-mail"


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


def secret_for(settings: Settings) -> str:
    return settings.secret_key or DEV_SECRET


@dataclass
class Prepared:
    """Everything per campaign that recipients share: built once, reused for every batch."""

    campaign_id: int
    name: str
    version: datetime
    variants: dict[str, CompiledVariant]
    default_language: str
    personaliser: Personaliser
    builder: MessageBuilder
    rate: float | None


_prepared: dict[int, Prepared] = {}
_prepared_lock = threading.Lock()


def prepare(session: Session, campaign: Campaign, settings: Settings) -> Prepared:
    with _prepared_lock:
        cached = _prepared.get(campaign.id)
        if cached is not None and cached.version == campaign.updated_at:
            return cached
    variants = {
        v.language: CompiledVariant(v.language, v.subject, v.html, v.text)
        for v in session.scalars(
            select(CampaignVariant).where(CampaignVariant.campaign_id == campaign.id)
        )
    }
    definition = campaign.definition
    dkim = None
    if settings.dkim_key_file and settings.dkim_selector:
        domain = definition["from"].rpartition("@")[2].strip(">").strip()
        dkim = DkimKey.load(settings.dkim_key_file, settings.dkim_selector, domain)
    builder = MessageBuilder(
        definition["from"],
        reply_to=definition.get("reply_to"),
        bounce_domain=settings.bounce_domain,
        dkim=dkim,
        extra_headers={"Feedback-ID": f"{campaign.name}:outreach"},
    )
    prepared = Prepared(
        campaign.id,
        campaign.name,
        campaign.updated_at,
        variants,
        definition["default_language"],
        Personaliser(list(campaign.expressions), definition["nonce"]),
        builder,
        campaign.rate,
    )
    with _prepared_lock:
        _prepared[campaign.id] = prepared
    return prepared


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
        self.links = Links(self.settings.base_url, Tokens(secret_for(self.settings)))

    def run(self, campaign_id: int) -> Outcome:
        outcome = Outcome()
        # The per-message path is two single statements on an autocommit driver connection:
        # a Session's bookkeeping would cost more than the statements themselves.
        with AutocommitConnection(self.engine) as self.conn, self.session_factory() as session:
            campaign = session.get(Campaign, campaign_id)
            if campaign is None or campaign.state != "sending":
                return outcome
            prepared = prepare(session, campaign, self.settings)
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
                    store.finish_if_done(session, campaign_id)
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
        recipients: list[store.Recipient],
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

    def _release(self, session: Session, recipients: list[store.Recipient]) -> None:
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
        recipient: store.Recipient,
        remaining: int,
        outcome: Outcome,
    ) -> None:
        delivery_id = recipient.delivery_id
        if recipient.email is None:
            self._finish(delivery_id, "skipped", attempted=False, text="the contact was erased")
            return
        # Autocommit: no transaction stays open across rendering, pacing and SMTP.
        reason = store.suppression_reason(self.conn, recipient.email)
        if reason is not None:
            self._finish(delivery_id, "skipped", attempted=False, text=f"suppressed ({reason})")
            return
        language = resolve_language(
            recipient.variables.get("language"), set(prepared.variants), prepared.default_language
        )
        try:
            envelope = self._assemble(prepared, recipient, language)
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

    def _assemble(
        self, prepared: Prepared, recipient: store.Recipient, language: str
    ) -> Envelope:
        delivery_id = recipient.delivery_id
        urls = self.links.variables(delivery_id)
        rendered = personalise(
            prepared.personaliser,
            prepared.variants[language],
            {"contact": recipient.variables, **urls},
        )
        builder = prepared.builder
        bounce_token = (
            self.links.tokens.sign("bounce", delivery_id) if self.settings.bounce_domain else None
        )
        assert recipient.email is not None
        return builder.build(
            to_name=recipient.name,
            to_address=recipient.email,
            subject=rendered.subject,
            html=rendered.html,
            text=rendered.text,
            unsubscribe_url=urls["unsubscribe_url"],
            message_id=builder.new_message_id(delivery_id),
            bounce_token=bounce_token,
        )

    def _permanent(
        self,
        session: Session,
        prepared: Prepared,
        recipient: store.Recipient,
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
            session.add(
                Event(
                    kind="bounce",
                    campaign_id=prepared.campaign_id,
                    delivery_id=recipient.delivery_id,
                    contact_id=recipient.contact_id,
                    data={"kind": "hard", "code": exc.code, "text": exc.text, "source": "smtp"},
                )
            )
            session.commit()

    def _temporary(
        self,
        session: Session,
        prepared: Prepared,
        recipient: store.Recipient,
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
            session.execute(
                update(Campaign)
                .where(Campaign.id == prepared.campaign_id, Campaign.state == "sending")
                .values(state="paused", state_reason=reason, updated_at=utcnow())
            )
            session.commit()
            log.error("campaign %s: %s", prepared.name, reason)
