"""Events: what happened to a delivery after it was queued — clicks, opens, bounces,
complaints, unsubscribes. Every part of the system records them through `record_event`."""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from outreach.models import EVENT_KINDS, Event


def record_event(
    session: Session,
    kind: str,
    *,
    campaign_id: int | None = None,
    delivery_id: int | None = None,
    contact_id: int | None = None,
    data: dict[str, Any] | None = None,
    dedupe_key: str | None = None,
) -> bool:
    """Add one event to the session. With a dedupe_key, an event already recorded under the
    same key makes this a no-op that returns False (ingesting a bounce twice counts it once)."""
    if kind not in EVENT_KINDS:
        raise ValueError(f"unknown event kind {kind!r}")
    event = Event(
        kind=kind,
        campaign_id=campaign_id,
        delivery_id=delivery_id,
        contact_id=contact_id,
        data=data or {},
        dedupe_key=dedupe_key,
    )
    if dedupe_key is None:
        session.add(event)
        return True
    try:
        with session.begin_nested():
            session.add(event)
    except IntegrityError:
        return False
    return True
