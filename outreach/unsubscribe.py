"""Unsubscribing through a message: what it does, the same whichever way it came — the
unsubscribe page, a mail client's one-click POST (RFC 8058), or the `mailto:` address of
List-Unsubscribe (read by `bounces`).

A message of a campaign with a topic is left for that topic only: its one-click, its
mailto: and the page's default button stop that topic and keep every other coming. Leaving
everything (the page's other button, or any message without a topic: system mail, a
campaign sent without one) suppresses the address, as every unsubscribe did before topics.
Either way the event, the consent record and — where the installation advertises — the
result notice (Network Act Art. 50(7)) follow, once: doing it again changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from outreach import consent
from outreach.events import record_event
from outreach.models import Campaign, Contact, Suppression, utcnow
from outreach.suppressions import DeliveryRecipient, is_suppressed, suppress_if_new
from outreach.topics import Topic

if TYPE_CHECKING:
    from outreach.config import Settings
    from outreach.subscriptions import SubscribeConfig

# How each way is written down: (the event's method, the suppression's detail, the consent
# record's source), as they were before topics.
METHODS = {
    "one-click": ("one-click", "one-click", "one-click"),
    "page": ("page", "unsubscribe page", "unsubscribe page"),
    "mailto": ("mailto", "mailto unsubscribe", "mailto"),
}


@dataclass(frozen=True)
class Unsubscribed:
    """What an unsubscribe did: the topic left (None: everything), whether this request
    changed anything, since when it holds, and a system campaign to nudge (the notice)."""

    topic: Topic | None
    changed: bool
    since: datetime
    nudge: int | None = None


def topic_of(campaign: Campaign) -> Topic | None:
    """A campaign's topic as it was named when sent."""
    name = campaign.topic
    if name is None:
        return None
    sent = Topic.from_sent((campaign.definition or {}).get("topic_as_sent"))
    return sent if sent is not None and sent.name == name else Topic(name, {})


def unsubscribe(
    session: Session,
    recipient: DeliveryRecipient,
    method: str,
    *,
    everything: bool = False,
    subscribe: SubscribeConfig | None = None,
    settings: Settings | None = None,
) -> Unsubscribed:
    """Leave the message's topic, or everything, in the caller's transaction (the caller
    commits). `subscribe` and `settings` are for the result notice; without them none is
    queued."""
    assert recipient.email is not None, "an erased address has nothing to leave"
    event_method, detail, source = METHODS[method]
    contact, campaign = recipient.contact, recipient.campaign
    # A system message's recipient may be no contact: only the address can be suppressed.
    topic = None if everything or contact is None else topic_of(campaign)
    at = utcnow()
    if topic is not None:
        assert contact is not None
        changed, since = consent.leave_topic(
            session, contact.id, topic.name, source=source, version=topic.version, at=at
        )
    else:
        changed = suppress_if_new(
            session, recipient.email, "unsubscribed", campaign_id=campaign.id, detail=detail
        )
        since = (
            session.scalar(
                select(Suppression.created_at).where(Suppression.email == recipient.email)
            )
            or at
        )
        if changed and contact is not None:
            consent.record(session, contact, "withdrawn", source=source, at=at)
        # Imported here: subscriptions reads topics, whose leaving is this module's.
        from outreach.subscriptions import declined

        # Even when the address had left before: a "no" to a confirmation stops strangers
        # from having more confirmations sent to it.
        declined(session, recipient.email, campaign)
    if not changed:
        return Unsubscribed(topic, False, since)
    data = {"method": event_method}
    if topic is not None:
        data["topic"] = topic.name
    record_event(
        session,
        "unsubscribe",
        campaign_id=campaign.id,
        delivery_id=recipient.delivery.id,
        contact_id=contact.id if contact else None,
        data=data,
    )
    nudge = None
    if contact is not None and settings is not None:
        nudge = _result_notice(session, contact, topic, subscribe, settings, at)
    return Unsubscribed(topic, True, since, nudge)


def _result_notice(
    session: Session,
    contact: Contact,
    topic: Topic | None,
    subscribe: SubscribeConfig | None,
    settings: Settings,
    at: datetime,
) -> int | None:
    """The result by mail, where the installation advertises (Art. 50(7)): of leaving
    everything, or a topic (named in the person's language); the campaign to nudge."""
    from outreach import system_mail
    from outreach.subscriptions import system_sender

    if subscribe is None or not subscribe.spec.advertising:
        return None
    variables = {"result_date": at.date().isoformat()}
    if topic is not None:
        # Whoever had left everything before was told then, and hears nothing more from us.
        if is_suppressed(session, contact.email):
            return None
        variables["topic"] = topic.title_in(contact.language)
    campaign_id, _ = system_mail.queue(
        session,
        "result-withdrawal" if topic is None else "result-topic",
        system_sender(settings, subscribe),
        email=contact.email,
        name=contact.name,
        language=contact.language,
        contact_id=contact.id,
        variables=variables,
    )
    return campaign_id
