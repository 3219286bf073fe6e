"""The welcome message: a campaign file marked `welcome: true`, with no audience. Sending it
(`outreach campaigns send campaigns/welcome.yaml`) stores it as the welcome message and
mails nobody; from then on each newly confirmed subscriber gets it once, in their language,
through the worker like any campaign (one delivery per contact, so never twice)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from outreach.campaigns import load_campaign
from outreach.config import Settings
from outreach.errors import UserError
from outreach.lifecycle import finish_if_done, send_campaign
from outreach.models import Campaign, Delivery, utcnow
from outreach.system_mail import reopen


def is_welcome(path: Path) -> bool:
    try:
        return load_campaign(path).spec.welcome
    except UserError:
        return False  # send reports what is wrong with the file


@dataclass
class Installed:
    campaign: str
    languages: list[str]
    replaced: list[str]


def install(path: Path, settings: Settings, session: Session) -> Installed:
    """Validate and store the welcome message; it replaces any earlier one."""
    spec = load_campaign(path)
    if not spec.spec.welcome:
        raise UserError(f"{path}: not marked welcome: true")
    send_campaign(path, settings, session, None)
    campaign = session.scalar(select(Campaign).where(Campaign.name == spec.name))
    assert campaign is not None
    replaced = []
    for other in session.scalars(select(Campaign).where(Campaign.id != campaign.id)):
        if (other.definition or {}).get("welcome"):
            other.definition = {**other.definition, "welcome": False}
            replaced.append(other.name)
    campaign.definition = {**campaign.definition, "welcome": True}
    campaign.updated_at = utcnow()
    finish_if_done(session, campaign.id)
    session.commit()
    languages = sorted(v.language for v in campaign.variants)
    return Installed(campaign.name, languages, replaced)


def welcome_campaign(session: Session) -> int | None:
    """The campaign stored as the welcome message, if any (the latest installed)."""
    for campaign_id, definition in session.execute(
        select(Campaign.id, Campaign.definition)
        .where(Campaign.state.in_(("draft", "sending", "done", "paused")))
        .order_by(Campaign.updated_at.desc())
    ):
        if (definition or {}).get("welcome"):
            return int(campaign_id)
    return None


def queue_welcome(session: Session, contact_id: int) -> int | None:
    """A welcome delivery for a new subscriber, once ever; returns the campaign to nudge."""
    campaign_id = welcome_campaign(session)
    if campaign_id is None:
        return None
    now = utcnow()
    dialect = session.get_bind().dialect.name
    insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(Delivery)
    added = session.execute(
        insert.values(
            campaign_id=campaign_id,
            contact_id=contact_id,
            state="queued",
            attempts=0,
            next_attempt_at=now,
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=["campaign_id", "contact_id"])
        .returning(Delivery.id)
    ).first()
    if added is None:
        return None
    reopen(session, campaign_id)
    return campaign_id
