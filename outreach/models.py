"""The tables: contacts, suppressions, campaigns, deliveries, events.

Designed up front for the sending, web and bounce parts: a delivery row is the unit of work
and of accounting, an event is anything that happened to one afterwards.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Portable JSON, stored as JSONB on PostgreSQL.
JSONType = JSON().with_variant(JSONB(), "postgresql")
# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit key.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out, also on SQLite which stores them naive."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use an aware datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


# Values users see; kept here so the CLI, schemas and queries share one list.
MEMBERSHIPS = ("full", "associate", "prospective", "partner", "none")
CONSENTS = ("opt-in", "existing-relationship", "public-contact")
SUPPRESSION_REASONS = ("unsubscribed", "bounced", "complained", "manual", "forgotten")
DELIVERY_STATES = ("queued", "sending", "sent", "deferred", "failed", "skipped", "bounced")
CAMPAIGN_STATES = ("draft", "scheduled", "sending", "paused", "cancelled", "done")
EVENT_KINDS = ("sent", "unsubscribe", "resubscribe", "click", "open", "bounce", "complaint")


class Contact(Base):
    __tablename__ = "contacts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str | None] = mapped_column(String(300))
    organisation: Mapped[str | None] = mapped_column(String(300))
    organisation_type: Mapped[str | None] = mapped_column(String(64), index=True)
    city: Mapped[str | None] = mapped_column(String(200))
    country: Mapped[str | None] = mapped_column(String(2), index=True)
    language: Mapped[str | None] = mapped_column(String(35), index=True)
    membership: Mapped[str | None] = mapped_column(String(20), index=True)
    consent: Mapped[str | None] = mapped_column(String(32))
    # IANA zone (Asia/Seoul); None: the country's zone when it keeps one, else
    # OUTREACH_TIMEZONE (see zones.contact_zone).
    timezone: Mapped[str | None] = mapped_column(String(64))
    consent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Where the current consent came from (form, an import file, by hand) and, for the
    # subscribe form, the version of the consent text the person agreed to.
    consent_source: Mapped[str | None] = mapped_column(String(300))
    consent_version: Mapped[str | None] = mapped_column(String(64))
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # When the recipient chose their language on their own preferences page: an import
    # keeps it unless staff override (see contacts.RECIPIENT_CHOICES).
    language_chosen_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    tags: Mapped[list[ContactTag]] = relationship(
        back_populates="contact",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="ContactTag.tag",
    )
    # The topics of campaigns/topics.yaml the contact does not receive.
    left_topics: Mapped[list[TopicLeft]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True, order_by="TopicLeft.topic"
    )

    @property
    def tag_names(self) -> list[str]:
        return [t.tag for t in self.tags]


class ContactTag(Base):
    __tablename__ = "contact_tags"

    contact_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True
    )
    tag: Mapped[str] = mapped_column(String(100), primary_key=True)
    contact: Mapped[Contact] = relationship(back_populates="tags")

    # Segment queries look contacts up by tag.
    __table_args__ = (Index("ix_contact_tags_tag_contact", "tag", "contact_id"),)


class Suppression(Base):
    """An address that must never be mailed, whether or not a contact row exists."""

    __tablename__ = "suppressions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    reason: Mapped[str] = mapped_column(String(20))
    detail: Mapped[str | None] = mapped_column(Text)
    campaign_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("campaigns.id", ondelete="SET NULL"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Campaign(Base):
    __tablename__ = "campaigns"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    state: Mapped[str] = mapped_column(String(16), default="draft", index=True)
    source_path: Mapped[str | None] = mapped_column(Text)
    # The validated campaign file as sent: workers need nothing but the database.
    definition: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # Per-recipient expressions of the compiled templates, by marker number.
    expressions: Mapped[list[str]] = mapped_column(JSONType, default=list)
    send_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    rate: Mapped[float | None] = mapped_column(Float)
    state_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    variants: Mapped[list[CampaignVariant]] = relationship(
        back_populates="campaign", cascade="all, delete-orphan", passive_deletes=True
    )

    @property
    def topic(self) -> str | None:
        """The topic of `campaigns/topics.yaml` the campaign was sent under: its one-click
        unsubscribe leaves that topic, and whoever left it is not mailed. None: no topic
        (system mail, or a campaign sent without one), whose unsubscribe leaves everything."""
        found = (self.definition or {}).get("topic")
        return found if isinstance(found, str) else None

    def tracks(self, kind: str) -> bool:
        """Whether the campaign as sent tracks "opens" or "clicks" (not stated: no, as the
        compiler adds no pixel and rewrites no link then)."""
        return bool(((self.definition or {}).get("tracking") or {}).get(kind))


class CampaignVariant(Base):
    """One language's compiled message: MJML compiled once, recipients filled in later."""

    __tablename__ = "campaign_variants"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(BigId, ForeignKey("campaigns.id", ondelete="CASCADE"))
    language: Mapped[str] = mapped_column(String(35))
    subject: Mapped[str] = mapped_column(Text)
    html: Mapped[str] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text)
    campaign: Mapped[Campaign] = relationship(back_populates="variants")

    __table_args__ = (UniqueConstraint("campaign_id", "language"),)


class Delivery(Base):
    """One message of one campaign to one contact: the unit of work and of accounting."""

    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(BigId, ForeignKey("campaigns.id", ondelete="CASCADE"))
    # SET NULL: a forgotten contact leaves the campaign's counts intact.
    contact_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("contacts.id", ondelete="SET NULL"), index=True
    )
    state: Mapped[str] = mapped_column(String(10), default="queued")
    language: Mapped[str | None] = mapped_column(String(35))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # When the delivery may next be claimed: queue time for queued, retry time for deferred.
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # A claim: which worker holds it ("sending") and until when; an expired lease is resumed.
    worker: Mapped[str | None] = mapped_column(String(100))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_code: Mapped[int | None] = mapped_column(Integer)
    last_text: Mapped[str | None] = mapped_column(Text)
    message_id: Mapped[str | None] = mapped_column(String(255), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        UniqueConstraint("campaign_id", "contact_id"),
        # Claims: the next due deliveries of a campaign in a state.
        # Claims read it in order, one state at a time (see store.claim): no sort.
        Index("ix_deliveries_claim", "campaign_id", "state", "next_attempt_at", "id"),
    )


class Event(Base):
    """Something that happened to a delivery or contact: click, open, bounce, unsubscribe…"""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    campaign_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("campaigns.id", ondelete="SET NULL")
    )
    delivery_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("deliveries.id", ondelete="SET NULL"), index=True
    )
    contact_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("contacts.id", ondelete="SET NULL")
    )
    data: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # Makes ingesting the same bounce twice a no-op.
    dedupe_key: Mapped[str | None] = mapped_column(String(255), unique=True)

    __table_args__ = (
        Index("ix_events_campaign_kind", "campaign_id", "kind"),
        # A contact's history (segments' EXISTS probes, contacts show, soft-bounce streaks):
        # kind and campaign are checked inside the index, the window on its last column.
        Index("ix_events_history", "contact_id", "kind", "campaign_id", "created_at"),
    )


class RateLimit(Base):
    """Shared send-rate state (GCRA): the theoretical arrival time per limiter key."""

    __tablename__ = "rate_limits"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    tat: Mapped[float] = mapped_column(Float, default=0.0)


class WorkerBeat(Base):
    """A running `outreach worker` process, as it last reported itself: the heartbeat that
    `campaigns status` and `worker --check` read. A cleanly stopped worker removes its row."""

    __tablename__ = "workers"

    name: Mapped[str] = mapped_column(String(300), primary_key=True)  # host:pid
    host: Mapped[str] = mapped_column(String(255), index=True)
    pid: Mapped[int] = mapped_column(Integer)
    threads: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


# A consent record's kinds: the three consents, and a withdrawal (an unsubscribe); and for
# one topic (`topic` set), joining it or leaving it.
CONSENT_RECORD_KINDS = (*CONSENTS, "withdrawn", "joined", "left")


class ConsentRecord(Base):
    """One step of a contact's consent history: given (by the form, an import, by hand) or
    withdrawn. The contact's `consent*` columns hold the latest; these keep the proof."""

    __tablename__ = "consents"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    contact_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("contacts.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    source: Mapped[str | None] = mapped_column(String(300))
    text_version: Mapped[str | None] = mapped_column(String(64))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Set for a topic's "joined" or "left"; None for the contact's consent as a whole.
    topic: Mapped[str | None] = mapped_column(String(64))


class TopicLeft(Base):
    """A topic of `campaigns/topics.yaml` a contact does not receive: they left it (or did
    not choose it on the subscribe form). A contact receives every other topic; joining
    again deletes the row. Its consent records keep the history."""

    __tablename__ = "topics_left"

    contact_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True
    )
    topic: Mapped[str] = mapped_column(String(64), primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    source: Mapped[str | None] = mapped_column(String(300))


class ConsentNotice(Base):
    """A consent notice (Network Act Art. 50(8)) queued for a contact. `due` is when it fell
    due (two years after the consent or the previous notice): one notice per contact and due
    date, so running the command twice, or from two places at once, mails nobody twice."""

    __tablename__ = "consent_notices"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    contact_id: Mapped[int] = mapped_column(BigId, ForeignKey("contacts.id", ondelete="CASCADE"))
    due: Mapped[datetime] = mapped_column(UTCDateTime)
    delivery_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("deliveries.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (UniqueConstraint("contact_id", "due"),)


class Subscription(Base):
    """A request from the subscribe form, waiting for its confirmation link to be used."""

    __tablename__ = "subscriptions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    name: Mapped[str | None] = mapped_column(String(300))
    organisation: Mapped[str | None] = mapped_column(String(300))
    language: Mapped[str] = mapped_column(String(35))
    text_version: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    contact_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("contacts.id", ondelete="SET NULL")
    )
    # The topics the person ticked, when the form offered topics (None: it offered none).
    topics: Mapped[list[str] | None] = mapped_column(JSONType)

    # The per-address daily limit counts an address's recent requests.
    __table_args__ = (Index("ix_subscriptions_email_created", "email", "created_at"),)


class SystemRecipient(Base):
    """Whom a message of a system campaign (a confirmation, a notice) is for. Such a delivery
    has no contact of its own (a confirmation goes to someone who is not one yet), so the
    address and the message's own values live here."""

    __tablename__ = "system_recipients"

    delivery_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("deliveries.id", ondelete="CASCADE"), primary_key=True
    )
    email: Mapped[str] = mapped_column(String(320), index=True)
    name: Mapped[str | None] = mapped_column(String(300))
    language: Mapped[str | None] = mapped_column(String(35))
    contact_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("contacts.id", ondelete="SET NULL"), index=True
    )
    variables: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
