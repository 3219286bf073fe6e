"""A contact's history: its deliveries, the events that followed them, the topics it joined
and left, and erasing the address from that history when the contact is forgotten."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import String, cast, or_, select
from sqlalchemy.orm import Session

from outreach.models import Campaign, ConsentRecord, Delivery, Event

# What a forgotten address becomes in stored text: the rest of an SMTP reply stays readable.
ERASED = "[forgotten]"
# An event and the consent record written with it in one transaction.
SAME_MOMENT = timedelta(seconds=5)


@dataclass
class Entry:
    at: datetime
    campaign: str
    what: str
    detail: str

    def as_json(self) -> dict[str, str]:
        return {
            "at": self.at.isoformat(),
            "campaign": self.campaign,
            "what": self.what,
            "detail": self.detail,
        }


def contact_history(session: Session, contact_id: int) -> list[Entry]:
    """What happened to a contact, oldest first."""
    entries: list[Entry] = []
    deliveries = session.execute(
        select(Delivery, Campaign.name)
        .join(Campaign, Campaign.id == Delivery.campaign_id)
        .where(Delivery.contact_id == contact_id)
    )
    for delivery, campaign in deliveries:
        detail = " ".join(str(x) for x in (delivery.last_code, delivery.last_text) if x)
        what = f"delivery {delivery.state}"
        if delivery.state == "bounced" and delivery.sent_at is not None:
            # Accepted when it was sent and returned later: the bounce is an entry of its
            # own at its time (its event), with the diagnostic.
            what, detail = "delivery sent", "accepted by the receiving server; bounced later"
        entries.append(Entry(delivery.sent_at or delivery.updated_at, campaign, what, detail))
    events = session.execute(
        select(Event, Campaign.name)
        .outerjoin(Campaign, Campaign.id == Event.campaign_id)
        .where(Event.contact_id == contact_id)
    )
    through_messages: list[tuple[str, str, datetime]] = []
    for event, campaign in events:
        data = dict(event.data or {})
        what = event.kind
        topic = data.pop("topic", None) if event.kind in TOPIC_EVENTS else None
        if topic is not None:
            what = f"{TOPIC_EVENTS[event.kind]} topic {topic}"
            through_messages.append((TOPIC_EVENTS[event.kind], str(topic), event.created_at))
        detail = ", ".join(f"{k}={v}" for k, v in sorted(data.items()))
        entries.append(Entry(event.created_at, campaign or "", what, detail))
    entries += _topic_records(session, contact_id, through_messages)
    entries.sort(key=lambda e: e.at)
    return entries


# A topic left or joined through a message's link is an event of that message's campaign.
TOPIC_EVENTS = {"unsubscribe": "left", "resubscribe": "joined"}


def _topic_records(
    session: Session, contact_id: int, through_messages: list[tuple[str, str, datetime]]
) -> list[Entry]:
    """Topics joined and left otherwise (an import's topics_left, the subscribe form): their
    consent record is all there is. Those made through a message's link are its events
    already (recorded in the same transaction, a moment apart)."""
    entries = []
    for record in session.scalars(
        select(ConsentRecord).where(
            ConsentRecord.contact_id == contact_id, ConsentRecord.topic.is_not(None)
        )
    ):
        if any(
            kind == record.kind and topic == record.topic and abs(at - record.at) < SAME_MOMENT
            for kind, topic, at in through_messages
        ):
            continue
        detail = ", ".join(
            f"{k}={v}"
            for k, v in (("source", record.source), ("version", record.text_version))
            if v
        )
        entries.append(Entry(record.at, "", f"{record.kind} topic {record.topic}", detail))
    return entries


def _spellings(address: str) -> list[str]:
    """The address as stored, and with its domain in the other IDNA form, as a relay may
    quote it either way."""
    local, _, domain = address.rpartition("@")
    forms = {address}
    try:
        other = (
            domain.encode("ascii").decode("idna")
            if domain.isascii()
            else domain.encode("idna").decode("ascii")
        )
        forms.add(f"{local}@{other}")
    except UnicodeError:
        pass
    return sorted(forms, key=len, reverse=True)


def scrubber(address: str) -> Callable[[Any], Any]:
    pattern = re.compile("|".join(re.escape(f) for f in _spellings(address)), re.IGNORECASE)

    def scrub(value: Any) -> Any:
        if isinstance(value, str):
            return pattern.sub(ERASED, value)
        if isinstance(value, dict):
            return {scrub(k): scrub(v) for k, v in value.items()}
        if isinstance(value, list):
            return [scrub(v) for v in value]
        return value

    return scrub


def erase_address(session: Session, contact_id: int, address: str) -> None:
    """Remove the address from everything stored about the contact's deliveries and events
    (and from events about the address that no contact was found for), keeping every row so
    campaign counts stay as they were. Call before deleting the contact, while its deliveries
    still point to it."""
    scrub = scrubber(address)
    delivery_ids = []
    # Campaigns before deliveries, in id order, as a worker recording outcomes (and release)
    # takes them: the reverse order could deadlock with a worker whose pause reason names
    # this address.
    spellings = _spellings(address)
    named = or_(*(Campaign.state_reason.icontains(s, autoescape=True) for s in spellings))
    campaigns = select(Campaign.id).where(
        or_(
            Campaign.id.in_(select(Delivery.campaign_id).where(Delivery.contact_id == contact_id)),
            named,
        )
    )
    session.execute(campaigns.order_by(Campaign.id).with_for_update(key_share=True))
    # Locked: a worker recording an outcome for one of them waits, then sees the contact gone.
    held = select(Delivery).where(Delivery.contact_id == contact_id).with_for_update()
    for delivery in session.scalars(held):
        delivery_ids.append(delivery.id)
        if delivery.last_text:
            delivery.last_text = scrub(delivery.last_text)
    mentions = [
        condition
        for spelling in _spellings(address)
        # SQLite keeps JSON as text with non-ASCII escaped; PostgreSQL prints it as it is.
        for text in {spelling, json.dumps(spelling)[1:-1]}
        for condition in (
            Event.dedupe_key.icontains(text, autoescape=True),
            cast(Event.data, String).icontains(text, autoescape=True),
        )
    ]
    ours = or_(Event.contact_id == contact_id, Event.delivery_id.in_(delivery_ids))
    # Events of other contacts are about them; only unattributed ones can be about this one.
    for event in session.scalars(
        select(Event).where(or_(ours, Event.contact_id.is_(None) & or_(*mentions)))
    ):
        mine = event.contact_id == contact_id or event.delivery_id in delivery_ids
        if mine or (event.dedupe_key and scrub(event.dedupe_key) != event.dedupe_key):
            # Even a hash of the address would tie this event back to the address the
            # suppression list keeps; once forgotten, no bounce is attributed to it again.
            event.dedupe_key = None
        if event.data:
            event.data = scrub(event.data)
    for campaign in session.scalars(select(Campaign).where(named)):
        campaign.state_reason = scrub(campaign.state_reason)
    session.flush()
