"""Campaign lifecycle: send (validate, snapshot, queue), test sends, pause, resume, cancel,
status. The worker does the sending; this module decides what there is to send.

A campaign's state changes only through `transition`, which knows the allowed moves:

    draft ─▶ scheduled ─▶ sending ─▶ done
                 │  ▲        │ ▲       │ (sent again with new recipients: reopened)
                 ▼  │        ▼ │       ▼
                 paused ◀────┘ │     sending
    any but done ─▶ cancelled  └── resume
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Integer, func, select, update
from sqlalchemy.orm import Session

from outreach import schedule, store
from outreach.campaigns import CampaignFile, load_campaign
from outreach.compiler import CompiledCampaign
from outreach.compose import NO_DELIVERY, SAMPLE_CONTACT, Composer, Recipient, calendar_parts
from outreach.config import Settings
from outreach.errors import FileErrors, NotFound, UserError
from outreach.fields import mailable_email
from outreach.heartbeat import Workers, workers
from outreach.messages import MessageBuilder
from outreach.models import Campaign, CampaignVariant, Delivery, utcnow
from outreach.render import CompiledVariant, RenderError, contact_variables
from outreach.schedule import Group
from outreach.segments import Segment, audience, audience_of
from outreach.tokens import links_for
from outreach.transport import SendFailure, transport_for
from outreach.validate import Validation, validate_campaign

MAX_TASKS = 32
Enqueue = Callable[[int, int], None]  # (campaign id, how many tasks)

# The state a campaign may move to, and the states it may move there from.
TRANSITIONS: dict[str, frozenset[str]] = {
    "scheduled": frozenset({"draft", "done", "paused"}),
    "sending": frozenset({"draft", "scheduled", "done", "paused"}),
    "paused": frozenset({"sending", "scheduled"}),
    "cancelled": frozenset({"draft", "scheduled", "sending", "paused"}),
    "done": frozenset({"sending"}),
}
UNFINISHED = ("draft", "scheduled", "sending", "paused")


def transition(
    session: Session,
    campaign_id: int,
    to: str,
    *,
    reason: str | None = None,
    only_from: tuple[str, ...] | None = None,
) -> bool:
    """Move a campaign to state `to` if its current state allows it; one guarded UPDATE,
    so two processes racing (a worker finishing, a person pausing) cannot both win.
    Returns whether it moved. The caller commits."""
    allowed = TRANSITIONS[to]
    if only_from is not None:
        allowed = allowed & frozenset(only_from)
    now = utcnow()
    values: dict[str, Any] = {"state": to, "state_reason": reason, "updated_at": now}
    if to == "sending":
        values["started_at"] = func.coalesce(Campaign.started_at, now)
        values["finished_at"] = None
    elif to in ("done", "cancelled"):
        values["finished_at"] = now
    result = session.execute(
        update(Campaign)
        .where(Campaign.id == campaign_id, Campaign.state.in_(allowed))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def _moved(session: Session, campaign: Campaign, to: str, **kw: Any) -> bool:
    moved = transition(session, campaign.id, to, **kw)
    session.refresh(campaign)
    return moved


@dataclass
class SendResult:
    campaign: str
    state: str
    added: int
    total: int
    dry_run: bool = False
    languages: dict[str, int] = field(default_factory=dict)
    send_at: datetime | None = None
    # validate's warnings: what recipients will see (languages without a variant, …).
    warnings: list[str] = field(default_factory=list)
    # With send_at {local: …} or a window: the deliveries waiting, by zone and due time.
    schedule: list[Group] = field(default_factory=list)


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
    # The worker signs every link with it: refuse now rather than fail every delivery.
    settings.require_secret_key("`campaigns send`")
    validation = _validated(path, settings, session)
    spec = load_campaign(path)
    campaign = _campaign_row(session, spec)
    # Validation compiled every variant: those are what the workers get, so a contact who
    # changes language after the send is written to in theirs.
    compiled = _compiled(validation)
    _store_compiled(session, campaign, spec, compiled, settings)
    if validation.topic is not None:  # see Campaign.topic
        topic = {"topic": validation.topic.name, "topic_as_sent": validation.topic.as_sent()}
        campaign.definition = {**campaign.definition, **topic}
    include, exclude = _segments(spec, session)
    added = store.snapshot(session, campaign.id, audience(include, exclude, topic=campaign.topic))
    timing = spec.timing
    groups: list[Group] = []
    if timing.per_zone:
        # Each recipient's due time in their zone; the campaign starts with the first.
        schedule.apply(session, campaign.id, timing, settings.timezone, utcnow())
        groups = schedule.groups(session, campaign.id, settings.timezone)
        if timing.local is not None:
            campaign.send_at = min((g.at for g in groups), default=None)
    _open(session, campaign, added)
    total = store.total(session, campaign.id)
    # As the file writes it (its own offset), not as stored (UTC).
    result = SendResult(
        spec.name,
        campaign.state,
        added,
        total,
        dry_run,
        validation.languages,
        spec.send_at,
        validation.warnings,
        groups,
    )
    if dry_run:
        session.rollback()
        return result
    campaign_id, state = campaign.id, campaign.state
    # Sent again, a sending campaign is queued again even without new recipients: that is
    # how work a lost or unreachable queue never got is handed to the workers.
    waiting = added or (store.pending(session, campaign_id) if state == "sending" else 0)
    session.commit()
    if state == "sending" and waiting and enqueue is not None:
        enqueue(campaign_id, tasks_for(waiting, settings))
    return result


def _validated(path: Path, settings: Settings, session: Session | None) -> Validation:
    validation = validate_campaign(path, settings, session)
    if not validation.ok:
        raise FileErrors(validation.errors)
    return validation


def _campaign_row(session: Session, spec: CampaignFile) -> Campaign:
    # Held until send commits: a worker finishing the campaign meanwhile (finish_if_done)
    # waits, then sees the new deliveries instead of closing the campaign over them.
    existing = session.scalar(select(Campaign).where(Campaign.name == spec.name).with_for_update())
    if existing is not None and existing.state == "cancelled":
        raise UserError(
            f"campaign {spec.name} was cancelled; give the file a new name: to send it again"
        )
    return existing or Campaign(name=spec.name, state="draft")


def _compiled(validation: Validation) -> CompiledCampaign:
    assert validation.compiled is not None  # a campaign without errors was compiled
    return validation.compiled


def _store_compiled(
    session: Session,
    campaign: Campaign,
    spec: CampaignFile,
    compiled: CompiledCampaign,
    settings: Settings,
) -> None:
    """The compiled messages and the campaign file as sent: workers need only the database."""
    campaign.source_path = str(spec.path)
    campaign.definition = {
        "from": spec.sender(settings),
        # Only with a from: per language; the worker builds each language's From from it.
        "from_by_language": spec.senders(settings, set(compiled.variants)),
        "reply_to": spec.spec.reply_to,
        "default_language": spec.spec.default_language,
        "nonce": compiled.nonce,
        "tracking": spec.spec.tracking.model_dump(),
        "advertising": spec.spec.advertising,
        "template": spec.spec.template,
        "audience": spec.spec.audience.model_dump(),
        **spec.timing.as_definition(),
    }
    invitation = spec.invitation(settings)
    if invitation is not None:
        campaign.definition["event"] = invitation.to_json()
    campaign.expressions = compiled.expressions
    campaign.rate = spec.rate.per_second if spec.rate and not spec.rate.unlimited else None
    campaign.send_at = spec.send_at
    campaign.updated_at = utcnow()
    session.add(campaign)
    session.flush()
    replace_variants(session, campaign.id, compiled.variants)


def replace_variants(
    session: Session, campaign_id: int, variants: dict[str, CompiledVariant]
) -> None:
    """A campaign's compiled messages, one per language, in place of those it had."""
    session.query(CampaignVariant).filter_by(campaign_id=campaign_id).delete()
    for language, variant in variants.items():
        session.add(
            CampaignVariant(
                campaign_id=campaign_id,
                language=language,
                subject=variant.subject,
                html=variant.html,
                text=variant.text,
            )
        )


def _open(session: Session, campaign: Campaign, added: int) -> None:
    """Start (or schedule) the campaign; a finished one reopens only for new recipients."""
    if campaign.state == "done" and not added:
        return
    if campaign.state not in ("draft", "scheduled", "done"):
        return  # sending or paused: the new deliveries join the work in hand
    later = campaign.send_at is not None and campaign.send_at > utcnow()
    _moved(session, campaign, "scheduled" if later else "sending")


def _segments(spec: CampaignFile, session: Session) -> tuple[list[Segment], list[Segment]]:
    include, exclude, errors = audience_of(spec, session)
    if errors:
        raise FileErrors(errors)
    return include, exclude


def send_test(
    path: Path,
    settings: Settings,
    session: Session | None,
    to: str,
    contact: str | None = None,
) -> list[str]:
    """One rendered copy per language to `to`, straight through the transport; with
    `contact` (an address in the database), one copy as that contact would get it: their
    data, their language."""
    links = links_for(settings, "a test send")
    try:
        address = mailable_email(to)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    as_contact = None
    if contact is not None:
        if session is None:
            raise UserError("--contact needs the database; run `outreach init` and import contacts")
        from outreach.contacts import get_contact

        as_contact = contact_variables(get_contact(session, contact))
    compiled = _compiled(_validated(path, settings, session))
    spec = load_campaign(path)

    def builder(language: str) -> MessageBuilder:
        return MessageBuilder(spec.sender(settings, language), reply_to=spec.spec.reply_to)

    composer = Composer(
        compiled.variants,
        spec.spec.default_language,
        compiled.personaliser(),
        links,
        builder(spec.spec.default_language),
        builders={language: builder(language) for language in compiled.variants},
        calendars=calendar_parts(spec.invitation(settings), compiled.variants),
    )
    if as_contact is not None:
        language = composer.language_for(Recipient(NO_DELIVERY, address, None, as_contact))
        copies = [(language, as_contact)]  # their data as they would read it; To: `to`
    else:
        copies = [
            (language, {**SAMPLE_CONTACT, "email": address, "language": language})
            for language in sorted(compiled.variants)
        ]
    transport = transport_for(settings)
    sent = []
    try:
        for language, variables in copies:
            recipient = Recipient(NO_DELIVERY, address, None, variables)
            try:
                composed = composer.compose(
                    recipient, language, subject_prefix=f"[TEST {language}] "
                )
            except RenderError as exc:
                raise UserError(
                    f"{contact or address} would get no message: {exc.message}"
                ) from None
            try:
                transport.send(composed.envelope, f"{spec.name}-test")
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
    if not _moved(session, campaign, "paused", reason=reason):
        raise UserError(
            f"campaign {name} is {campaign.state}; only a sending or scheduled "
            "campaign can be paused"
        )
    session.commit()
    return campaign


def pause_for_relay(session: Session, campaign_id: int, reason: str) -> bool:
    """The worker's pause: only a campaign that is still sending (a person may have paused
    or cancelled it meanwhile, and that stands)."""
    moved = transition(session, campaign_id, "paused", reason=reason, only_from=("sending",))
    session.commit()
    return moved


def resume(session: Session, name: str, enqueue: Enqueue | None, settings: Settings) -> Campaign:
    campaign = get_campaign(session, name)
    if campaign.state != "paused":
        raise UserError(f"campaign {name} is {campaign.state}, not paused")
    now = utcnow()
    later = campaign.send_at is not None and campaign.send_at > now
    if not _moved(session, campaign, "scheduled" if later else "sending"):
        raise UserError(f"campaign {name} is {campaign.state}, not paused")
    # Deliveries deferred by the relay trouble that paused it may go again at once.
    session.query(Delivery).filter(
        Delivery.campaign_id == campaign.id, Delivery.state == "deferred"
    ).update({"next_attempt_at": now}, synchronize_session=False)
    pending = store.counts(session, campaign.id)
    session.commit()
    if campaign.state == "sending" and enqueue is not None:
        enqueue(campaign.id, tasks_for(pending["queued"] + pending["deferred"], settings))
    return campaign


@dataclass
class Cancelled:
    campaign: Campaign
    skipped: int  # queued or deferred, skipped now
    in_flight: int  # held by workers: sent if in hand, else skipped as they are given back


def cancel(session: Session, name: str) -> Cancelled:
    campaign = get_campaign(session, name)
    if not _moved(session, campaign, "cancelled", reason="cancelled by hand"):
        raise UserError(f"campaign {name} is already {campaign.state}")
    skipped = store.skip_remaining(session, campaign.id, store.CANCELLED)
    in_flight = store.counts(session, campaign.id)["sending"]
    session.commit()
    return Cancelled(campaign, skipped, in_flight)


def finish_if_done(session: Session, campaign_id: int) -> bool:
    """A sending campaign with nothing left to do becomes `done`."""
    # Waits for a `send` adding deliveries to this campaign (it holds the row), then counts.
    session.execute(select(Campaign.id).where(Campaign.id == campaign_id).with_for_update())
    if store.active(session, campaign_id):
        return False
    return transition(session, campaign_id, "done")


def due_scheduled(session: Session) -> list[int]:
    """Scheduled campaigns whose time has come become `sending`."""
    ids = list(
        session.scalars(
            select(Campaign.id).where(Campaign.state == "scheduled", Campaign.send_at <= utcnow())
        )
    )
    started = [cid for cid in ids if transition(session, cid, "sending")]
    session.commit()
    return started


def start_if_due(session: Session, campaign_id: int) -> bool:
    """A scheduled campaign whose send_at has come becomes `sending` (for the task the sweep
    set to wake at that second); whether this call started it."""
    due = session.scalar(
        select(Campaign.id).where(
            Campaign.id == campaign_id, Campaign.state == "scheduled", Campaign.send_at <= utcnow()
        )
    )
    started = due is not None and transition(session, campaign_id, "sending")
    session.commit()
    return started


def starting_soon(session: Session, until: datetime) -> list[tuple[int, datetime]]:
    """Scheduled campaigns that start before `until`, with when."""
    rows = session.execute(
        select(Campaign.id, Campaign.send_at).where(
            Campaign.state == "scheduled", Campaign.send_at <= until
        )
    ).all()
    return [(cid, at) for cid, at in rows if at is not None]


def active_campaigns(session: Session) -> list[int]:
    return list(session.scalars(select(Campaign.id).where(Campaign.state == "sending")))


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
    workers: Workers
    # Why nothing will move, when that is so: no worker alive for a campaign with work left.
    note: str | None = None
    # Deliveries not due yet (send_at {local: …}, a window), by zone and due time.
    waiting: list[Group] = field(default_factory=list)

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
            "workers": self.workers.as_json(),
            "note": self.note,
            "schedule": schedule.by_time(self.waiting),
        }


# The send rate behind the time left: each message sent in the last RATE_HORIZON seconds
# counts exp(-age / RATE_TAU), so the time left follows the last minutes' rate instead of
# jumping as groups of outcomes enter and leave a one-minute window. Read per RATE_BUCKET
# seconds: one GROUP BY, at most RATE_HORIZON / RATE_BUCKET rows.
RATE_TAU = 120.0
RATE_HORIZON = 600
RATE_BUCKET = 5


def _epoch_bucket(session: Session) -> Any:
    if session.get_bind().dialect.name == "postgresql":
        return func.floor(func.extract("epoch", Delivery.sent_at) / RATE_BUCKET)
    return func.cast(func.strftime("%s", Delivery.sent_at), Integer) / RATE_BUCKET


def send_rate(session: Session, campaign: Campaign, now: datetime) -> float:
    """Messages per second, exponentially weighted (time constant RATE_TAU): the same
    history gives the same rate, so every `status` agrees with the last."""
    bucket = _epoch_bucket(session)
    since = now - timedelta(seconds=RATE_HORIZON)
    if campaign.started_at is not None:
        since = max(since, campaign.started_at)
    counts = session.execute(
        select(bucket, func.count())
        .where(
            Delivery.campaign_id == campaign.id,
            Delivery.sent_at >= since,
            Delivery.sent_at <= now,
        )
        .group_by(bucket)
    ).all()
    lived = (now - since).total_seconds()
    if lived <= 0:
        return 0.0
    weighted = 0.0
    for number, n in counts:
        age = max(now.timestamp() - (float(number) + 0.5) * RATE_BUCKET, 0.0)
        weighted += n * math.exp(-age / RATE_TAU)
    # What a steady rate of one message a second would weigh over the same time.
    return weighted / (RATE_TAU * (1 - math.exp(-lived / RATE_TAU)))


def status(
    session: Session, name: str, now: datetime | None = None, default_zone: str = "Asia/Seoul"
) -> Status:
    """`default_zone` (OUTREACH_TIMEZONE): the zone of contacts whose own and country's are
    unknown, to show which zone a waiting group is in."""
    campaign = get_campaign(session, name)
    counts = store.counts(session, campaign.id)
    now = now or utcnow()
    recent = store.sent_since(session, campaign.id, now - timedelta(seconds=60))
    rate = send_rate(session, campaign, now)
    seen = workers(session, now)
    definition = campaign.definition or {}
    waiting: list[Group] = []
    if definition.get("send_at_local") or definition.get("window"):
        waiting = [
            g for g in schedule.groups(session, campaign.id, default_zone, now) if not g.at_once
        ]
    session.commit()
    remaining = counts["queued"] + counts["deferred"] + counts["sending"]
    waits = campaign.state in ("sending", "scheduled") and remaining > 0
    note = seen.note() if waits else None
    eta: float | None = None
    if campaign.state == "done" or (campaign.state == "sending" and not remaining):
        eta = 0.0
    elif campaign.state == "sending" and rate > 0 and note is None:
        eta = remaining / rate
    return Status(
        campaign.name,
        campaign.state,
        campaign.state_reason,
        counts,
        sum(counts.values()),
        float(recent),
        eta,
        campaign.send_at,
        seen,
        note,
        waiting,
    )


def list_campaigns(session: Session) -> list[tuple[Campaign, dict[str, int]]]:
    out = []
    for campaign in session.scalars(select(Campaign).order_by(Campaign.created_at)):
        out.append((campaign, store.counts(session, campaign.id)))
    return out


def listed_as_json(campaign: Campaign, counts: dict[str, int]) -> dict[str, Any]:
    """One campaign of `campaigns list --json`."""

    def when(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {
        "campaign": campaign.name,
        "state": campaign.state,
        "reason": campaign.state_reason,
        "deliveries": counts,
        "total": sum(counts.values()),
        "created_at": when(campaign.created_at),
        "send_at": when(campaign.send_at),
        "started_at": when(campaign.started_at),
        "finished_at": when(campaign.finished_at),
    }


def wait_until_done(session_factory: Callable[[], Session], name: str, timeout: float) -> Status:
    deadline = time.monotonic() + timeout
    while True:
        with session_factory() as session:
            current = status(session, name)
        if current.state in ("done", "cancelled", "paused") or time.monotonic() > deadline:
            return current
        time.sleep(0.2)
