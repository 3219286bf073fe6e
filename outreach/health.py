"""Is sending healthy? One look at the database, the queue and the outside doors, for cron
and monitors (`outreach health`): a line per problem, nothing when all is well.

Each check names its threshold and why. The figures it reads are also what `metrics`
exposes to Prometheus.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from outreach.config import Settings
from outreach.heartbeat import ago, workers
from outreach.models import Campaign, Delivery, Event, utcnow
from outreach.printable import counted

# Gmail's bulk sender guidelines: keep the spam rate Postmaster Tools reports under 0.3%
# (Yahoo says the same). A complaint we receive through a feedback loop is that signal.
COMPLAINT_RATE = 0.003
# Amazon SES puts an account under review at a 5% bounce rate (its "sending review
# process" FAQ), the clearest published line. Bounced as `campaigns report` counts it:
# bounced of sent + bounced (a temporary failure is retried, not a bounce).
BOUNCE_RATE = 0.05
# A campaign counts as recent for the rates while it sends and for a week after.
RECENT = timedelta(days=7)
# Rates over fewer messages than this say little (and the thresholds are the providers'
# for volume), so they are not judged.
MIN_SENT = 100
# Due work that waits this long while a worker is alive: something is stuck.
STUCK = timedelta(minutes=15)
# A scheduled campaign that has not started this long after its time.
LATE = timedelta(minutes=5)
# A claim this long past its lease: its worker died and no live one gave it back.
LEASE_GRACE = timedelta(minutes=1)
# More deferred than this share of a recent campaign: a relay or a receiving domain in
# trouble (deferred deliveries are retried, but pile up first).
DEFERRED_RATE = 0.05
# Policy rejections (5.7.x) in this window: authentication or reputation trouble.
POLICY_WINDOW = timedelta(hours=24)


@dataclass(frozen=True)
class Problem:
    check: str
    message: str
    campaign: str | None = None

    def line(self) -> str:
        return f"{self.check}: {self.message}"

    def as_json(self) -> dict[str, Any]:
        return {"check": self.check, "campaign": self.campaign, "message": self.message}


@dataclass
class Figures:
    """What the database says, for the checks and for Prometheus."""

    workers_alive: int = 0
    last_heartbeat: datetime | None = None
    deliveries: dict[str, int] = field(default_factory=dict)
    campaigns: dict[str, int] = field(default_factory=dict)
    due: int = 0
    oldest_due: datetime | None = None
    events: dict[str, int] = field(default_factory=dict)
    last_sent: datetime | None = None


@dataclass
class Health:
    problems: list[Problem] = field(default_factory=list)
    figures: Figures | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "problems": [p.as_json() for p in self.problems]}


@dataclass(frozen=True)
class Limits:
    bounce_rate: float = BOUNCE_RATE
    complaint_rate: float = COMPLAINT_RATE
    min_sent: int = MIN_SENT


def _pct(rate: float) -> str:
    return f"{rate * 100:.2g}%"


def _by(session: Session, column: Any) -> dict[str, int]:
    """Rows counted by one column's value."""
    return {
        str(value): int(n)
        for value, n in session.execute(select(column, func.count()).group_by(column))
    }


def figures(session: Session, now: datetime) -> Figures:
    seen = workers(session, now)
    found = Figures(workers_alive=seen.alive, last_heartbeat=seen.last_seen)
    found.deliveries = {
        state: int(n)
        for state, n in session.execute(
            select(Delivery.state, func.count()).group_by(Delivery.state)
        )
    }
    found.campaigns = {
        state: int(n)
        for state, n in session.execute(
            select(Campaign.state, func.count()).group_by(Campaign.state)
        )
    }
    due = session.execute(
        select(func.count(), func.min(Delivery.next_attempt_at))
        .join(Campaign, Campaign.id == Delivery.campaign_id)
        .where(
            Campaign.state == "sending",
            Delivery.state.in_(("queued", "deferred")),
            Delivery.next_attempt_at <= now,
        )
    ).one()
    found.due, found.oldest_due = int(due[0]), due[1]
    found.events = {
        kind: int(n)
        for kind, n in session.execute(select(Event.kind, func.count()).group_by(Event.kind))
    }
    found.last_sent = session.scalar(select(func.max(Delivery.sent_at)))
    return found


def _dead_man(session: Session, found: Figures, now: datetime) -> list[Problem]:
    late = session.scalar(
        select(func.count())
        .select_from(Campaign)
        .where(Campaign.state == "scheduled", Campaign.send_at <= now)
    )
    claimed = found.deliveries.get("sending", 0)
    if found.workers_alive or not (found.due or late or claimed):
        return []
    work = []
    if found.due:
        work.append(f"{counted(found.due, 'delivery', 'deliveries')} due")
    if late:
        work.append(f"{counted(int(late or 0), 'scheduled campaign')} due to start")
    if claimed:
        work.append(f"{claimed} held by a worker that is gone")
    seen = (
        "no worker has ever been seen"
        if found.last_heartbeat is None
        else f"no worker has been seen for {ago(now - found.last_heartbeat)}"
    )
    return [Problem("no-worker", f"{', '.join(work)} and {seen}: start `outreach worker`")]


def _campaigns(session: Session, found: Figures, now: datetime) -> list[Problem]:
    problems = []
    for name, reason in session.execute(
        select(Campaign.name, Campaign.state_reason)
        .where(Campaign.state == "paused")
        .order_by(Campaign.name)
    ):
        problems.append(Problem("paused", f"{name} ({reason or 'no reason recorded'})", name))
    for name, send_at in session.execute(
        select(Campaign.name, Campaign.send_at)
        .where(Campaign.state == "scheduled", Campaign.send_at < now - LATE)
        .order_by(Campaign.name)
    ):
        if found.workers_alive:  # else the dead-man line says it
            started = ago(now - send_at) if send_at else "some time"
            problems.append(Problem("late", f"{name} was to start {started} ago", name))
    if found.workers_alive:
        for name, n, oldest in session.execute(
            select(Campaign.name, func.count(), func.min(Delivery.next_attempt_at))
            .join(Delivery, Delivery.campaign_id == Campaign.id)
            .where(
                Campaign.state == "sending",
                Delivery.state.in_(("queued", "deferred")),
                Delivery.next_attempt_at < now - STUCK,
            )
            .group_by(Campaign.name)
            .order_by(Campaign.name)
        ):
            problems.append(
                Problem(
                    "stuck",
                    f"{name} has {counted(n, 'delivery', 'deliveries')} due for "
                    f"{ago(now - oldest)} while a worker is alive: see the workers' log",
                    name,
                )
            )
    for name, n in session.execute(
        select(Campaign.name, func.count())
        .join(Delivery, Delivery.campaign_id == Campaign.id)
        .where(Delivery.state == "sending", Delivery.lease_until < now - LEASE_GRACE)
        .group_by(Campaign.name)
        .order_by(Campaign.name)
    ):
        problems.append(
            Problem(
                "lease",
                f"{name} has {counted(n, 'delivery', 'deliveries')} in `sending` past their "
                "lease: their worker died and no live worker gave them back",
                name,
            )
        )
    return problems


def _rates(session: Session, now: datetime, limits: Limits) -> list[Problem]:
    """Bounce, complaint and deferral rates of the campaigns of the last week."""
    recent = or_(Campaign.state.in_(("sending", "paused")), Campaign.finished_at >= now - RECENT)
    sent = func.count().filter(Delivery.state.in_(("sent", "bounced")))
    rows = session.execute(
        select(
            Campaign.id,
            Campaign.name,
            sent,
            func.count().filter(Delivery.state == "bounced"),
            func.count().filter(Delivery.state == "deferred"),
            func.count(),
        )
        .join(Delivery, Delivery.campaign_id == Campaign.id)
        .where(recent)
        .group_by(Campaign.id, Campaign.name)
        .order_by(Campaign.name)
    ).all()
    if not rows:
        return []
    ids = [row[0] for row in rows]
    complaints_of = {
        cid: int(n)
        for cid, n in session.execute(
            select(Event.campaign_id, func.count())
            .where(Event.campaign_id.in_(ids), Event.kind == "complaint")
            .group_by(Event.campaign_id)
        )
    }
    problems = []
    for cid, name, n_sent, bounces, deferred, total in rows:
        complaints = complaints_of.get(cid, 0)
        if n_sent >= limits.min_sent and complaints > limits.complaint_rate * n_sent:
            problems.append(
                Problem(
                    "complaints",
                    f"{name}: {counted(complaints, 'complaint')} of {n_sent} sent ("
                    f"{_pct(complaints / n_sent)}; Gmail's limit is {_pct(limits.complaint_rate)})",
                    name,
                )
            )
        if n_sent >= limits.min_sent and bounces > limits.bounce_rate * n_sent:
            problems.append(
                Problem(
                    "bounces",
                    f"{name}: {bounces} bounced of {n_sent} sent ({_pct(bounces / n_sent)}; "
                    f"over {_pct(limits.bounce_rate)}): clean the list before the next campaign",
                    name,
                )
            )
        if total >= limits.min_sent and deferred > DEFERRED_RATE * total:
            problems.append(
                Problem(
                    "deferred",
                    f"{name}: {deferred} of {total} deliveries deferred (a relay or a receiving "
                    "domain refuses for now)",
                    name,
                )
            )
    return problems


def _policy(session: Session, now: datetime) -> list[Problem]:
    policy = Event.data["kind"].as_string() == "policy"
    domain = Event.data["domain"].as_string()
    problems = []
    for name, where, n in session.execute(
        select(Campaign.name, domain, func.count())
        .join(Campaign, Campaign.id == Event.campaign_id)
        .where(Event.kind == "bounce", policy, Event.created_at >= now - POLICY_WINDOW)
        .group_by(Campaign.name, domain)
        .order_by(Campaign.name, domain)
    ):
        problems.append(
            Problem(
                "policy",
                f"{name}: {counted(n, 'policy rejection')} (5.7.x) from "
                f"{where or 'a receiving domain'} in the last 24 hours: authentication (SPF, "
                "DKIM, DMARC) or reputation; see docs/operations.md, the runbook",
                name,
            )
        )
    return problems


def check_database(session: Session, limits: Limits, now: datetime | None = None) -> Health:
    """Every check that reads the database."""
    now = now or utcnow()
    found = figures(session, now)
    problems = _dead_man(session, found, now)
    problems += _campaigns(session, found, now)
    problems += _rates(session, now, limits)
    problems += _policy(session, now)
    return Health(problems, found)


def check_web(url: str, timeout: float = 5.0) -> Problem | None:
    """The web service's /healthz answers 200 (it asks the database too)."""
    import urllib.error
    import urllib.request

    target = url.rstrip("/") + "/healthz"
    try:
        with urllib.request.urlopen(target, timeout=timeout) as answer:
            if answer.status == 200:
                return None
            why = f"answered {answer.status}"
    except urllib.error.HTTPError as exc:
        why = f"answered {exc.code}"
    except (OSError, ValueError) as exc:
        why = " ".join(str(getattr(exc, "reason", exc)).split())[:200]
    return Problem("web", f"{target} does not answer: {why}")


def check_bounces(address: str, timeout: float = 5.0) -> Problem | None:
    """The bounce receiver greets over SMTP (HOST:PORT)."""
    import smtplib

    host, _, port = address.rpartition(":")
    try:
        with smtplib.SMTP(host or "127.0.0.1", int(port or 25), timeout=timeout) as smtp:
            code, _ = smtp.noop()
            if code == 250:
                return None
            why = f"answered {code} to NOOP"
    except (OSError, smtplib.SMTPException, ValueError) as exc:
        why = " ".join(str(exc).split())[:200] or type(exc).__name__
    return Problem("bounce-receiver", f"the bounce receiver at {address} does not answer: {why}")


def check(
    settings: Settings,
    limits: Limits | None = None,
    web: str | None = None,
    bounces: str | None = None,
) -> Health:
    """Everything: the database (and what it holds), the queue, the configured doors."""
    from outreach.db import DatabaseUnavailable, check_schema, reader_sessionmaker
    from outreach.errors import UserError
    from outreach.tasks import QueueUnavailable, reachable_queue

    health = Health()
    try:
        check_schema(settings.database_url)
    except DatabaseUnavailable as exc:
        health.problems.append(Problem("database", " ".join(str(exc).split())))
    except UserError as exc:
        health.problems.append(Problem("database", str(exc)))
    else:
        with reader_sessionmaker(settings.database_url)() as session:
            found = check_database(session, limits or Limits())
        health.problems += found.problems
        health.figures = found.figures
    try:
        reachable_queue(settings, "nothing is sent until it answers")
    except QueueUnavailable as exc:
        health.problems.append(Problem("queue", str(exc).split("; nothing")[0]))
    for problem in (check_web(web) if web else None, check_bounces(bounces) if bounces else None):
        if problem is not None:
            health.problems.append(problem)
    return health
