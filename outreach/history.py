"""A contact's history: its deliveries and the events that followed them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from outreach.models import Campaign, Delivery, Event


def contact_history(session: Session, contact_id: int) -> list[list[Any]]:
    """Rows of (when, campaign, what, detail), oldest first."""
    rows: list[list[Any]] = []
    deliveries = session.execute(
        select(Delivery, Campaign.name)
        .join(Campaign, Campaign.id == Delivery.campaign_id)
        .where(Delivery.contact_id == contact_id)
    )
    for delivery, campaign in deliveries:
        detail = " ".join(str(x) for x in (delivery.last_code, delivery.last_text) if x)
        rows.append(
            [
                delivery.sent_at or delivery.updated_at,
                campaign,
                f"delivery {delivery.state}",
                detail,
            ]
        )
    events = session.execute(
        select(Event, Campaign.name)
        .outerjoin(Campaign, Campaign.id == Event.campaign_id)
        .where(Event.contact_id == contact_id)
    )
    for event, campaign in events:
        detail = ", ".join(f"{k}={v}" for k, v in sorted((event.data or {}).items()))
        rows.append([event.created_at, campaign or "", event.kind, detail])
    rows.sort(key=lambda r: r[0])
    return [[f"{r[0]:%Y-%m-%d %H:%M}", *r[1:]] for r in rows]
