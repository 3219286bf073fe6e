"""Campaign lifecycle: send (validate, snapshot, queue), test sends, pause, resume, cancel,
status. The worker does the sending; this module decides what there is to send."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from outreach import store
from outreach.campaigns import (
    SAMPLE_CONTACT,
    compile_campaign,
    load_campaign,
    validate_campaign,
)
from outreach.campaigns import (
    Campaign as CampaignFile,
)
from outreach.config import Settings
from outreach.errors import ConfigError, FileErrors, NotFound, UserError
from outreach.fields import normalise_email
from outreach.messages import MessageBuilder
from outreach.models import Campaign, CampaignVariant, Delivery, utcnow
from outreach.pipeline import secret_for
from outreach.render import personalise
from outreach.segments import audience
from outreach.tokens import Links, Tokens
from outreach.transport import SendFailure, transport_for

MAX_TASKS = 32
Enqueue = Callable[[int, int], None]  # (campaign id, how many tasks)


@dataclass
class SendResult:
    campaign: str
    state: str
    added: int
    total: int
    dry_run: bool = False
    languages: dict[str, int] = field(default_factory=dict)
    send_at: datetime | None = None


def _check_secret(settings: Settings) -> None:
    if settings.smtp_url and not settings.secret_key:
        raise ConfigError(
            "OUTREACH_SECRET_KEY is not set; a send over SMTP needs it to sign unsubscribe "
            "links. Set it to a long random string (the same for `serve` and every worker)"
        )


def tasks_for(added: int, settings: Settings) -> int:
    return max(1, min(MAX_TASKS, math.ceil(added / settings.batch_size)))


def send_campaign(
    path: Path,
    settings: Settings,
    session: Session,
    enqueue: Enqueue | None,
    *,
    dry_run: bool = False,
) -> SendResult:
    """Validate, snapshot the audience into deliveries and queue the work.

    Sending a campaign again adds only contacts new to its audience; nobody is mailed twice.
    """
    _check_secret(settings)
    report = validate_campaign(path, settings, session)
    if not report.ok:
        raise FileErrors(report.errors)
    spec = load_campaign(path)
    existing = session.scalar(select(Campaign).where(Campaign.name == spec.name))
    if existing is not None and existing.state == "cancelled":
        raise UserError(
            f"campaign {spec.name} was cancelled; give the file a new name: to send it again"
        )
    include, exclude = _segments(spec)
    where = audience(include, exclude)
    languages = set(report.languages) | {spec.spec.default_language}
    compiled = compile_campaign(
        spec, languages & spec.languages() or {spec.spec.default_language}, settings
    )
    now = utcnow()
    send_at = spec.spec.send_at
    definition = {
        "from": spec.sender(settings),
        "reply_to": spec.spec.reply_to,
        "default_language": spec.spec.default_language,
        "nonce": compiled.nonce,
        "tracking": spec.spec.tracking.model_dump(),
        "advertising": spec.spec.advertising,
        "template": spec.spec.template,
        "audience": spec.spec.audience.model_dump(),
    }
    campaign = existing or Campaign(name=spec.name, state="draft")
    campaign.source_path = str(path)
    campaign.definition = definition
    campaign.expressions = compiled.expressions
    campaign.rate = spec.rate.per_second if spec.rate and not spec.rate.unlimited else None
    campaign.send_at = send_at
    campaign.updated_at = now
    session.add(campaign)
    session.flush()
    session.query(CampaignVariant).filter_by(campaign_id=campaign.id).delete()
    for language, variant in compiled.variants.items():
        session.add(
            CampaignVariant(
                campaign_id=campaign.id,
                language=language,
                subject=variant.subject,
                html=variant.html,
                text=variant.text,
            )
        )
    added = store.snapshot(session, campaign.id, where)
    # A finished campaign sent again only reopens when its audience gained someone.
    if campaign.state in ("draft", "scheduled") or (campaign.state == "done" and added):
        if send_at is not None and send_at > now:
            campaign.state = "scheduled"
        else:
            campaign.state = "sending"
            campaign.started_at = campaign.started_at or now
            campaign.finished_at = None
    total = (
        session.scalar(
            select(func.count()).select_from(Delivery).where(Delivery.campaign_id == campaign.id)
        )
        or 0
    )
    result = SendResult(spec.name, campaign.state, added, total, dry_run, report.languages, send_at)
    if dry_run:
        session.rollback()
        return result
    campaign_id, state = campaign.id, campaign.state
    session.commit()
    if state == "sending" and added and enqueue is not None:
        enqueue(campaign_id, tasks_for(added, settings))
    return result


def _segments(spec: CampaignFile) -> tuple[list[Any], list[Any]]:
    from outreach.campaigns import audience_of

    include, exclude, errors = audience_of(spec)
    if errors:
        raise FileErrors(errors)
    return include, exclude


def send_test(path: Path, settings: Settings, session: Session | None, to: str) -> list[str]:
    """One rendered copy per language to `to`, straight through the transport."""
    _check_secret(settings)
    try:
        address = normalise_email(to)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    report = validate_campaign(path, settings, session)
    if not report.ok:
        raise FileErrors(report.errors)
    spec = load_campaign(path)
    compiled = compile_campaign(spec, spec.languages(), settings)
    personaliser = compiled.personaliser()
    links = Links(settings.base_url, Tokens(secret_for(settings)))
    builder = MessageBuilder(spec.sender(settings), reply_to=spec.spec.reply_to)
    transport = transport_for(settings)
    sent = []
    try:
        for language, variant in sorted(compiled.variants.items()):
            contact = {**SAMPLE_CONTACT, "email": address, "language": language}
            urls = links.variables(0)
            rendered = personalise(personaliser, variant, {"contact": contact, **urls})
            envelope = builder.build(
                to_name=None,
                to_address=address,
                subject=f"[TEST {language}] {rendered.subject}",
                html=rendered.html,
                text=rendered.text,
                unsubscribe_url=urls["unsubscribe_url"],
                message_id=builder.new_message_id(0),
            )
            try:
                transport.send(envelope, f"{spec.name}-test")
            except SendFailure as exc:
                raise UserError(f"test message ({language}) to {address} failed: {exc}") from None
            sent.append(language)
    finally:
        transport.close()
    return sent


def get_campaign(session: Session, name: str) -> Campaign:
    campaign = session.scalar(select(Campaign).where(Campaign.name == name))
    if campaign is None:
        known = ", ".join(session.scalars(select(Campaign.name).order_by(Campaign.name))) or "none"
        raise NotFound(f"no campaign {name!r} has been sent (known: {known})")
    return campaign


def pause(session: Session, name: str, reason: str = "paused by hand") -> Campaign:
    campaign = get_campaign(session, name)
    if campaign.state not in ("sending", "scheduled"):
        raise UserError(
            f"campaign {name} is {campaign.state}; only a sending or scheduled "
            "campaign can be paused"
        )
    campaign.state, campaign.state_reason, campaign.updated_at = "paused", reason, utcnow()
    session.commit()
    return campaign


def resume(session: Session, name: str, enqueue: Enqueue | None, settings: Settings) -> Campaign:
    campaign = get_campaign(session, name)
    if campaign.state != "paused":
        raise UserError(f"campaign {name} is {campaign.state}, not paused")
    now = utcnow()
    campaign.state = "scheduled" if campaign.send_at and campaign.send_at > now else "sending"
    campaign.state_reason, campaign.updated_at = None, now
    # Deliveries deferred by the relay trouble that paused it may go again at once.
    session.query(Delivery).filter(
        Delivery.campaign_id == campaign.id, Delivery.state == "deferred"
    ).update({"next_attempt_at": now}, synchronize_session=False)
    pending = store.counts(session, campaign.id)
    session.commit()
    if campaign.state == "sending" and enqueue is not None:
        enqueue(campaign.id, tasks_for(pending["queued"] + pending["deferred"], settings))
    return campaign


def cancel(session: Session, name: str) -> tuple[Campaign, int]:
    campaign = get_campaign(session, name)
    if campaign.state in ("done", "cancelled"):
        raise UserError(f"campaign {name} is already {campaign.state}")
    campaign.state, campaign.updated_at = "cancelled", utcnow()
    campaign.state_reason = "cancelled by hand"
    skipped = store.skip_remaining(session, campaign.id, "campaign cancelled")
    session.commit()
    return campaign, skipped


@dataclass
class Status:
    name: str
    state: str
    reason: str | None
    counts: dict[str, int]
    total: int
    per_minute: float
    eta_seconds: float | None
    send_at: datetime | None

    def as_json(self) -> dict[str, Any]:
        return {
            "campaign": self.name,
            "state": self.state,
            "reason": self.reason,
            "deliveries": self.counts,
            "total": self.total,
            "sent_last_minute": self.per_minute,
            "eta_seconds": None if self.eta_seconds is None else round(self.eta_seconds),
            "send_at": self.send_at.isoformat() if self.send_at else None,
        }


def status(session: Session, name: str) -> Status:
    campaign = get_campaign(session, name)
    counts = store.counts(session, campaign.id)
    since = utcnow() - timedelta(seconds=60)
    recent = (
        session.scalar(
            select(func.count())
            .select_from(Delivery)
            .where(Delivery.campaign_id == campaign.id, Delivery.sent_at >= since)
        )
        or 0
    )
    remaining = counts["queued"] + counts["deferred"] + counts["sending"]
    eta = remaining / (recent / 60) if recent and remaining else (0.0 if not remaining else None)
    session.commit()
    return Status(
        campaign.name,
        campaign.state,
        campaign.state_reason,
        counts,
        sum(counts.values()),
        float(recent),
        eta,
        campaign.send_at,
    )


def list_campaigns(session: Session) -> list[tuple[Campaign, dict[str, int]]]:
    out = []
    for campaign in session.scalars(select(Campaign).order_by(Campaign.created_at)):
        out.append((campaign, store.counts(session, campaign.id)))
    return out


def due_scheduled(session: Session) -> list[int]:
    """Scheduled campaigns whose time has come become `sending`."""
    now = utcnow()
    ids = list(
        session.scalars(
            select(Campaign.id).where(Campaign.state == "scheduled", Campaign.send_at <= now)
        )
    )
    for campaign_id in ids:
        campaign = session.get(Campaign, campaign_id)
        assert campaign is not None
        campaign.state, campaign.started_at, campaign.updated_at = "sending", now, now
    session.commit()
    return ids


def active_campaigns(session: Session) -> list[int]:
    return list(session.scalars(select(Campaign.id).where(Campaign.state == "sending")))


def wait_until_done(session_factory: Callable[[], Session], name: str, timeout: float) -> Status:
    deadline = time.monotonic() + timeout
    while True:
        with session_factory() as session:
            current = status(session, name)
        if current.state in ("done", "cancelled", "paused") or time.monotonic() > deadline:
            return current
        time.sleep(0.2)
