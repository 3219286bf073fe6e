"""The worker's periodic housekeeping for subscriptions and system messages, and the daily
consent notices (Network Act Art. 50(8)) when OUTREACH_CONSENT_NOTICES is on."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from huey import crontab
from sqlalchemy import and_, delete, exists, select
from sqlalchemy.orm import Session

from outreach.config import Settings
from outreach.consent import REQUEST_DAYS, queue_notices
from outreach.db import writer_sessionmaker
from outreach.models import Campaign, Delivery, RateLimit, Subscription, utcnow
from outreach.subscriptions import load_config, system_sender
from outreach.system_mail import KINDS, reopen
from outreach.welcome import welcome_campaign

log = logging.getLogger("outreach.housekeeping")


def maintain(session: Session, now: datetime | None = None) -> None:
    """Housekeeping for the worker: purge old subscribe requests and client counters, and
    reopen a system campaign (or the welcome message) that finished while a message was being
    added to it."""
    now = now or utcnow()
    session.execute(
        delete(Subscription).where(Subscription.created_at < now - timedelta(days=REQUEST_DAYS))
    )
    session.execute(
        delete(RateLimit).where(
            RateLimit.key.like("subscribe:%"), RateLimit.tat < now.timestamp() - 86400
        )
    )
    names = [kind.campaign for kind in KINDS.values()]
    welcome = welcome_campaign(session)
    stalled = session.scalars(
        select(Campaign.id).where(
            Campaign.name.in_(names) | (Campaign.id == (welcome or 0)),
            Campaign.state == "done",
            exists().where(
                and_(
                    Delivery.campaign_id == Campaign.id, Delivery.state.in_(("queued", "deferred"))
                )
            ),
        )
    ).all()
    for campaign_id in stalled:
        reopen(session, campaign_id)
    session.commit()


def register_periodic(huey: Any, settings: Settings) -> dict[str, Any]:
    """The worker's periodic consent tasks: housekeeping every ten minutes, and the consent
    notices once a day when OUTREACH_CONSENT_NOTICES is on. Returns them by name."""

    @huey.periodic_task(crontab(minute="*/10"), name="outreach.consent_maintenance")
    def consent_maintenance() -> None:
        with writer_sessionmaker(settings.database_url)() as session:
            maintain(session)

    if not settings.consent_notices:
        return {"maintenance": consent_maintenance}

    @huey.periodic_task(crontab(hour="1", minute="17"), name="outreach.consent_notices")
    def consent_notices() -> None:
        with writer_sessionmaker(settings.database_url)() as session:
            sender = system_sender(settings, load_config(settings))
            run = queue_notices(session, sender)
        # The sweep, every minute, starts sending them.
        log.info("consent notices: %d queued", run.queued)

    return {"maintenance": consent_maintenance, "notices": consent_notices}
