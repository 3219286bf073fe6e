"""Consent: each contact's consent and its history, and what Korean law asks of a sender.

- Every consent (kind, time, source, text version) is a `ConsentRecord`; the contact's own
  `consent*` columns hold the latest. Withdrawals (unsubscribes) are recorded too.
- Topics (`topics`): a contact receives every topic until they leave it. Leaving one adds a
  `TopicLeft` row, joining again removes it; each is a consent record of its own ("left",
  "joined", with the topic), so what a person chose, when, how and on which wording is kept.
- Network Act Art. 50(8): a sender of advertising confirms each recipient's consent every
  two years. `queue_notices` mails a notice to every opted-in contact whose consent, or last
  notice, is two years old, once per contact and period (`ConsentNotice` is unique per
  contact and due date); the worker can run it daily (OUTREACH_CONSENT_NOTICES).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, exists, func, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from outreach.compose import resolve_language
from outreach.i18n import languages
from outreach.models import (
    CONSENTS,
    ConsentNotice,
    ConsentRecord,
    Contact,
    Delivery,
    Subscription,
    SystemRecipient,
    TopicLeft,
    utcnow,
)
from outreach.segments import not_suppressed

NOTICE_YEARS = 2
# Pending subscribe requests (and their personal data) are kept this long, then purged.
REQUEST_DAYS = 8


def record(
    session: Session,
    contact: Contact,
    kind: str,
    *,
    source: str,
    at: datetime | None = None,
    version: str | None = None,
) -> ConsentRecord:
    """A consent given (the contact's consent becomes it) or withdrawn."""
    at = at or utcnow()
    if kind in CONSENTS:
        contact.consent, contact.consent_at = kind, at
        contact.consent_source, contact.consent_version = source, version
    return _add_record(session, contact.id, kind, source, version, at)


def leave_topic(
    session: Session,
    contact_id: int,
    topic: str,
    *,
    source: str,
    version: str | None = None,
    at: datetime | None = None,
) -> tuple[bool, datetime]:
    """The contact stops receiving `topic`: whether this call changed that (two requests at
    once: one of them), and since when it holds. Recorded as a consent record "left"."""
    at = at or utcnow()
    dialect = session.get_bind().dialect.name
    insert_ = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(TopicLeft)
    added = session.execute(
        insert_.values(contact_id=contact_id, topic=topic, at=at, source=source[:300])
        .on_conflict_do_nothing(index_elements=["contact_id", "topic"])
        .returning(TopicLeft.topic)
    ).first()
    if added is None:
        since = session.scalar(
            select(TopicLeft.at).where(TopicLeft.contact_id == contact_id, TopicLeft.topic == topic)
        )
        return False, since or at
    _add_record(session, contact_id, "left", source, version, at, topic)
    return True, at


def leave_topics(
    session: Session,
    leaves: list[tuple[str, list[str]]],
    *,
    source: str,
    at: datetime | None = None,
) -> int:
    """Topics left by address (an import's topics_left column); addresses with no contact
    (a forgotten one) are passed over. Returns how many were newly left."""
    added = 0
    for start in range(0, len(leaves), 1000):
        chunk = leaves[start : start + 1000]
        ids = dict(
            session.execute(
                select(Contact.email, Contact.id).where(Contact.email.in_([e for e, _ in chunk]))
            ).all()
        )
        for email, topics in chunk:
            for topic in topics:
                if email in ids:
                    added += leave_topic(session, ids[email], topic, source=source, at=at)[0]
    return added


def join_topic(
    session: Session,
    contact_id: int,
    topic: str,
    *,
    source: str,
    version: str | None = None,
    at: datetime | None = None,
    chosen: bool = False,
) -> bool:
    """The contact receives `topic` again; True when they had left it. `chosen`: the person
    chose it (the subscribe form), which is recorded even when they had not left it."""
    at = at or utcnow()
    removed = session.execute(
        delete(TopicLeft)
        .where(TopicLeft.contact_id == contact_id, TopicLeft.topic == topic)
        .returning(TopicLeft.topic)
    ).first()
    if removed is not None or chosen:
        _add_record(session, contact_id, "joined", source, version, at, topic)
    return removed is not None


def _add_record(
    session: Session,
    contact_id: int,
    kind: str,
    source: str,
    version: str | None,
    at: datetime,
    topic: str | None = None,
) -> ConsentRecord:
    row = ConsentRecord(
        contact_id=contact_id,
        kind=kind,
        topic=topic,
        at=at,
        source=source[:300],
        text_version=version,
    )
    session.add(row)
    session.flush()
    return row


def record_current(session: Session, contact_ids: Iterable[int]) -> None:
    """A record for each contact whose current consent is not yet in its history (an import
    that brought a new consent or date); the same consent imported again adds nothing."""
    ids = list(contact_ids)
    if not ids:
        return
    same = exists().where(
        ConsentRecord.contact_id == Contact.id,
        ConsentRecord.kind == Contact.consent,
        ConsentRecord.at == Contact.consent_at,
    )
    query = select(
        Contact.id,
        Contact.consent,
        Contact.consent_at,
        func.coalesce(Contact.consent_source, "import"),
        Contact.consent_version,
        Contact.updated_at,
    ).where(
        Contact.id.in_(ids),
        Contact.consent.is_not(None),
        Contact.consent_at.is_not(None),
        ~same,
    )
    session.execute(
        insert(ConsentRecord).from_select(
            ["contact_id", "kind", "at", "source", "text_version", "recorded_at"], query
        )
    )


@dataclass
class Step:
    at: datetime
    what: str
    source: str
    version: str | None
    topic: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "what": self.what,
            "topic": self.topic,
            "source": self.source,
            "version": self.version,
        }


def history(session: Session, contact_id: int) -> list[Step]:
    """Consents, withdrawals, topics joined and left, and consent notices of a contact,
    oldest first."""
    steps = [
        Step(
            r.at,
            f"{r.kind} topic {r.topic}" if r.topic else r.kind,
            r.source or "",
            r.text_version,
            r.topic,
        )
        for r in session.scalars(
            select(ConsentRecord)
            .where(ConsentRecord.contact_id == contact_id)
            .order_by(ConsentRecord.at, ConsentRecord.id)
        )
    ]
    for notice, state in session.execute(
        select(ConsentNotice, Delivery.state)
        .outerjoin(Delivery, Delivery.id == ConsentNotice.delivery_id)
        .where(ConsentNotice.contact_id == contact_id)
    ):
        steps.append(
            Step(notice.created_at, "notice", f"Art. 50(8) notice ({state or 'gone'})", None)
        )
    steps.sort(key=lambda s: s.at)
    return steps


def _years_later(at: datetime, years: int) -> datetime:
    try:
        return at.replace(year=at.year + years)
    except ValueError:  # 29 February
        return at.replace(year=at.year + years, day=28)


@dataclass
class NoticeRun:
    due: int = 0
    queued: int = 0
    languages: dict[str, int] = field(default_factory=dict)
    campaign_id: int | None = None
    dry_run: bool = False
    # Who gets (or, in a dry run, would get) a notice: email, language, consent and due dates.
    recipients: list[dict[str, str]] = field(default_factory=list)


def due_notices(session: Session, now: datetime | None = None) -> list[tuple[Contact, datetime]]:
    """Opted-in, mailable contacts whose consent, or last notice, is two years old or more,
    with the date each notice fell due."""
    now = now or utcnow()
    last_notice = (
        select(func.max(ConsentNotice.created_at))
        .where(ConsentNotice.contact_id == Contact.id)
        .correlate(Contact)
        .scalar_subquery()
    )
    rows = session.execute(
        select(Contact, last_notice)
        .where(
            Contact.consent == "opt-in",
            Contact.consent_at.is_not(None),
            # A superset by days (leap years), narrowed by the calendar below.
            Contact.consent_at <= now - timedelta(days=365 * NOTICE_YEARS - 1),
            not_suppressed(),
        )
        .order_by(Contact.id)
    ).all()
    out = []
    for contact, notified in rows:
        if notified is not None and notified.tzinfo is None:
            notified = notified.replace(tzinfo=UTC)
        assert contact.consent_at is not None
        anchor = max(contact.consent_at, notified) if notified else contact.consent_at
        due = _years_later(anchor, NOTICE_YEARS)
        if due <= now:
            out.append((contact, due))
    return out


def queue_notices(
    session: Session, sender: Any, *, dry_run: bool = False, now: datetime | None = None
) -> NoticeRun:
    """Queue the consent notice for every contact it is due for; commits unless a dry run.
    A notice already queued for a contact and due date (by another run) is skipped."""
    from outreach.system_mail import queue

    run = NoticeRun(dry_run=dry_run)
    due = due_notices(session, now)
    run.due = len(due)
    available = set(languages())
    for contact, when in due:
        language = contact.language
        # Counted as written: a contact's "ko-KR" gets the Korean notice, "fr" the default.
        written_in = resolve_language(language, available, "en")
        listed = {
            "email": contact.email,
            "name": contact.name or "",
            "language": written_in,
            "consent_date": contact.consent_at.isoformat() if contact.consent_at else "",
            "due": when.isoformat(),
        }
        if dry_run:
            run.queued += 1
            run.languages[written_in] = run.languages.get(written_in, 0) + 1
            run.recipients.append(listed)
            continue
        try:
            with session.begin_nested():
                notice = ConsentNotice(contact_id=contact.id, due=when)
                session.add(notice)
        except IntegrityError:
            continue
        assert contact.consent_at is not None
        campaign_id, delivery_id = queue(
            session,
            "consent-notice",
            sender,
            email=contact.email,
            name=contact.name,
            language=language,
            contact_id=contact.id,
            variables={"consent_date": contact.consent_at.date().isoformat()},
        )
        notice.delivery_id = delivery_id
        run.campaign_id = campaign_id
        run.recipients.append(listed)
        run.queued += 1
        run.languages[written_in] = run.languages.get(written_in, 0) + 1
    if dry_run:
        session.rollback()
    else:
        session.commit()
    return run


def erase(session: Session, email: str) -> None:
    """Forgetting an address: its pending requests and the addresses of its system messages
    go too (their deliveries stay, counted, as erased)."""
    session.execute(delete(Subscription).where(Subscription.email == email))
    session.execute(delete(SystemRecipient).where(SystemRecipient.email == email))
