"""The delivery store: snapshots, claims and outcomes, each one SQL statement.

A delivery is claimed by setting it `sending` with a worker name and a lease; a claim whose
lease expired (its worker died) is released back to `queued` and claimed again, so a crash
loses nothing. Outcomes are recorded only by the worker that still holds the claim.

A claim given back to a cancelled campaign (by its worker, or because its lease expired)
becomes `skipped`, never `queued`: nothing would ever send it, and the campaign's counts must
add up once the workers have let go.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Integer,
    String,
    Table,
    Text,
    and_,
    bindparam,
    case,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from outreach.compose import Recipient
from outreach.db import DriverTransaction, RawStatement
from outreach.models import (
    DELIVERY_STATES,
    Campaign,
    Contact,
    ContactTag,
    Delivery,
    Suppression,
    SystemRecipient,
    TopicLeft,
    UTCDateTime,
    utcnow,
)
from outreach.render import CONTACT_COLUMNS, column_variables

ACTIVE = ("queued", "deferred", "sending")
CLAIMABLE = ("queued", "deferred")
CANCELLED = "campaign cancelled"
_table = cast(Table, Delivery.__table__)


def snapshot(session: Session, campaign_id: int, where: ColumnElement[bool]) -> int:
    """One delivery per contact of the audience not yet in this campaign, in one statement
    (INSERT … SELECT); returns how many were added."""
    now = utcnow()
    already = exists().where(Delivery.campaign_id == campaign_id, Delivery.contact_id == Contact.id)
    query = select(
        literal(campaign_id),
        Contact.id,
        literal("queued"),
        literal(0),
        literal(now, Delivery.next_attempt_at.type),
        literal(now, Delivery.created_at.type),
        literal(now, Delivery.updated_at.type),
    ).where(where, ~already)
    add = insert(Delivery).from_select(
        [
            "campaign_id",
            "contact_id",
            "state",
            "attempts",
            "next_attempt_at",
            "created_at",
            "updated_at",
        ],
        query,
    )
    if session.get_bind().dialect.name == "postgresql":
        # psycopg reports no row count for INSERT … SELECT through SQLAlchemy: the statement
        # counts what it added itself, rather than two counts of the campaign around it.
        added = add.returning(Delivery.id).cte("added")
        return session.scalar(select(func.count()).select_from(added)) or 0
    return session.execute(add).rowcount or 0  # type: ignore[attr-defined]


def _given_back() -> dict[str, Any]:
    """The values of a claim given back unsent: queued again, or skipped if its campaign has
    been cancelled meanwhile (read in the same statement, so no cancel slips in between)."""
    cancelled = (
        select(Campaign.state).where(Campaign.id == Delivery.campaign_id).scalar_subquery()
        == "cancelled"
    )
    return {
        "state": case((cancelled, "skipped"), else_="queued"),
        "last_text": case((cancelled, CANCELLED), else_=Delivery.last_text),
        "worker": None,
        "lease_until": None,
        "updated_at": utcnow(),
    }


def release_expired(session: Session, campaign_id: int) -> int:
    """Claims whose worker stopped renewing them go back to the queue."""
    result = session.execute(
        update(Delivery)
        .where(
            Delivery.campaign_id == campaign_id,
            Delivery.state == "sending",
            Delivery.lease_until < utcnow(),
        )
        .values(**_given_back())
        .execution_options(synchronize_session=False)
    )
    return result.rowcount or 0  # type: ignore[attr-defined]


def expired_claims(session: Session) -> list[int]:
    """The sending campaigns that have claims whose lease ran out (their worker died)."""
    return list(
        session.scalars(
            select(Delivery.campaign_id)
            .where(
                Delivery.campaign_id.in_(select(Campaign.id).where(Campaign.state == "sending")),
                Delivery.state == "sending",
                Delivery.lease_until < utcnow(),
            )
            .distinct()
        )
    )


def settle_cancelled(session: Session) -> int:
    """What cancelled campaigns still have to send, or had claimed by workers that died,
    becomes skipped (the sweep's safety net for claims given back while a cancel ran)."""
    now = utcnow()
    result = session.execute(
        update(Delivery)
        .where(
            Delivery.campaign_id.in_(select(Campaign.id).where(Campaign.state == "cancelled")),
            or_(
                Delivery.state.in_(CLAIMABLE),
                and_(Delivery.state == "sending", Delivery.lease_until < now),
            ),
        )
        .values(state="skipped", last_text=CANCELLED, worker=None, lease_until=None, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount or 0  # type: ignore[attr-defined]


def _claim_statement() -> RawStatement:
    due = (
        select(_table.c.id)
        .where(
            _table.c.campaign_id == bindparam("p_campaign"),
            _table.c.state == bindparam("p_state", type_=String),
            _table.c.next_attempt_at <= bindparam("p_now", type_=UTCDateTime()),
        )
        .order_by(_table.c.next_attempt_at, _table.c.id)
        .limit(bindparam("p_n", type_=Integer))
        .with_for_update(skip_locked=True)
    )
    return RawStatement(
        update(_table)
        .where(_table.c.id.in_(due.scalar_subquery()))
        .values(
            state="sending",
            worker=bindparam("p_worker", type_=String),
            lease_until=bindparam("p_lease_until", type_=UTCDateTime()),
            updated_at=bindparam("p_now", type_=UTCDateTime()),
        )
        .returning(_table.c.id)
    )


_CLAIM = _claim_statement()


def claim(session: Session, campaign_id: int, worker: str, n: int, lease: float) -> list[int]:
    """Claim up to n due deliveries: retries that are due, then the queue, each oldest first;
    concurrent claimers never overlap. One state at a time, so each is read in the order of
    the claim index (campaign, state, due time, id): no claim sorts the whole campaign."""
    now = utcnow()
    conn = session.connection()
    claimed: list[int] = []
    for state in ("deferred", "queued"):
        params = {
            "p_campaign": campaign_id,
            "p_state": state,
            "p_now": now,
            "p_n": n - len(claimed),
            "p_worker": worker,
            "p_lease_until": now + timedelta(seconds=lease),
        }
        claimed += [row[0] for row in _CLAIM.execute(conn, params)]
        if len(claimed) >= n:
            break
    return sorted(claimed)


_contacts = cast(Table, Contact.__table__)
# A batch's deliveries with their contacts, and the contacts' tags: built once, not per
# batch (building and caching a statement with a hundred ids cost more than running it).
_LOAD = (
    select(
        Delivery.id,
        Delivery.attempts,
        _contacts.c.id,
        # Only what templates see: every other column (dates) costs its conversion.
        *(_contacts.c[name] for name in CONTACT_COLUMNS),
    )
    .outerjoin(_contacts, _contacts.c.id == Delivery.contact_id)
    .where(Delivery.id.in_(bindparam("ids", expanding=True)))
    .order_by(Delivery.id)
)
_TAGS = (
    select(ContactTag.contact_id, ContactTag.tag)
    .where(ContactTag.contact_id.in_(bindparam("ids", expanding=True)))
    .order_by(ContactTag.tag)
)


def load(db: Session | Connection, ids: list[int]) -> list[Recipient]:
    """The contacts of a claimed batch, with their tags, in two queries. Plain tuples, not
    ORM objects or Rows read by name: a batch is read once and never changed, and the
    identity map cost more than the query."""
    conn = db.connection() if isinstance(db, Session) else db  # Core, not the ORM's loading
    rows = conn.execute(_LOAD, {"ids": ids}).all()
    contact_ids = [row[2] for row in rows if row[2] is not None]
    tags: dict[int, list[str]] = {}
    if contact_ids:
        for cid, tag in conn.execute(_TAGS, {"ids": contact_ids}).all():
            tags.setdefault(cid, []).append(tag)
    out = []
    for delivery_id, attempts, contact_id, *columns in rows:
        if contact_id is None:  # the contact was erased
            out.append(Recipient(delivery_id, None, None, {}, attempts))
            continue
        variables = column_variables(tuple(columns), tags.get(contact_id, []))
        email, name = columns[0], columns[1]
        out.append(Recipient(delivery_id, email, name, variables, attempts, contact_id))
    if len(contact_ids) < len(rows):  # system messages (confirmations, notices) or erased
        out = _system_recipients(conn, out)
    return out


def _system_recipients(conn: Connection, recipients: list[Recipient]) -> list[Recipient]:
    """A system message (a confirmation, a notice) has no contact: its address and values
    are in its SystemRecipient row."""
    missing = [r.delivery_id for r in recipients if r.email is None]
    table = cast(Table, SystemRecipient.__table__)
    found = {
        row.delivery_id: row
        for row in conn.execute(select(table).where(table.c.delivery_id.in_(missing)))
    }
    out = []
    for recipient in recipients:
        row = found.get(recipient.delivery_id)
        if recipient.email is not None or row is None:
            out.append(recipient)  # a contact's, or an erased one's
            continue
        variables = {
            **(row.variables or {}),
            "email": row.email,
            "name": row.name,
            "language": row.language,
        }
        attempts = recipient.attempts
        out.append(
            Recipient(
                recipient.delivery_id, row.email, row.name, variables, attempts, row.contact_id
            )
        )
    return out


_emails: BindParameter[list[str]] = bindparam("emails", expanding=True)
_topic = bindparam("topic", type_=String)
_SUPPRESSED = select(Suppression.email, Suppression.reason).where(Suppression.email.in_(_emails))
# With a campaign's topic, those of the batch who left it too: a probe of the topics-left key
# per contact of the batch (found by address), so the plan does not hang on statistics,
# which a join's does (a seq scan, 20-30 ms on PostgreSQL with 10,000 rows not yet analysed).
# Both built once, as the batch load (`_LOAD`): the worker asks at least once a batch.
_SUPPRESSED_OR_LEFT = _SUPPRESSED.union_all(
    select(Contact.email, literal("left topic ") + _topic).where(
        Contact.email.in_(_emails),
        select(TopicLeft.topic)
        .where(TopicLeft.contact_id == Contact.id, TopicLeft.topic == _topic)
        .scalar_subquery()
        .is_not(None),
    )
)


def suppressed(conn: Connection, emails: list[str], topic: str | None = None) -> dict[str, str]:
    """The suppression reason of each of `emails` that is suppressed, in one query; with a
    campaign's topic, those who left it too (in the same query), as "left topic NAME"."""
    if not emails:
        return {}
    if topic is None:
        rows = conn.execute(_SUPPRESSED, {"emails": emails})
    else:
        rows = conn.execute(_SUPPRESSED_OR_LEFT, {"emails": emails, "topic": topic})
    found: dict[str, str] = {}
    for email, reason in rows:
        if found.get(str(email)) in (None, f"left topic {topic}"):  # a suppression says more
            found[str(email)] = str(reason)
    return found


_p_state = bindparam("p_state", type_=String)
# A retry the campaign will never make: it was cancelled while this message was on its way.
_given_up = and_(
    _p_state == "deferred",
    select(Campaign.state).where(Campaign.id == _table.c.campaign_id).scalar_subquery()
    == "cancelled",
)
# A contact forgotten while its message was on its way has no contact_id any more (nor, for
# a system message, its recipient row): its address must not come back with the reply.
_erased = and_(
    _table.c.contact_id.is_(None),
    ~exists().where(SystemRecipient.delivery_id == _table.c.id),
)
# One statement for every outcome; optional values keep the stored ones when NULL. Only the
# worker that still holds the claim writes it.
_RECORD = RawStatement(
    update(_table)
    .where(
        _table.c.id == bindparam("p_id"),
        _table.c.worker == bindparam("p_worker"),
        _table.c.state == "sending",
    )
    .values(
        state=case((_given_up, "skipped"), else_=_p_state),
        worker=None,
        lease_until=None,
        updated_at=bindparam("p_now", type_=UTCDateTime()),
        last_code=bindparam("p_code", type_=Integer),
        last_text=case(
            (_given_up, CANCELLED),
            (_erased, bindparam("p_erased_text", type_=Text)),
            else_=bindparam("p_text", type_=Text),
        ),
        attempts=_table.c.attempts + bindparam("p_inc", type_=Integer),
        message_id=func.coalesce(bindparam("p_message_id", type_=String), _table.c.message_id),
        language=func.coalesce(bindparam("p_language", type_=String), _table.c.language),
        sent_at=func.coalesce(bindparam("p_sent_at", type_=UTCDateTime()), _table.c.sent_at),
        next_attempt_at=func.coalesce(
            bindparam("p_retry_at", type_=UTCDateTime()), _table.c.next_attempt_at
        ),
    )
)


def outcome(
    delivery_id: int,
    worker: str,
    state: str,
    *,
    code: int | None = None,
    text: str | None = None,
    message_id: str | None = None,
    language: str | None = None,
    attempted: bool = True,
    retry_at: datetime | None = None,
    address: str | None = None,
) -> dict[str, Any]:
    """One delivery's outcome, as `record` writes it.

    `address` is the recipient's: if the contact is forgotten before this lands, it is
    erased from `text` as `contacts forget` erases it from what was stored before."""
    now = utcnow()
    return {
        "p_id": delivery_id,
        "p_worker": worker,
        "p_state": state,
        "p_now": now,
        "p_code": code,
        "p_text": text,
        "p_erased_text": erased(text, address),
        "p_inc": 1 if attempted else 0,
        "p_message_id": message_id,
        "p_language": language,
        "p_sent_at": now if state == "sent" else None,
        "p_retry_at": retry_at,
    }


# PostgreSQL reads the campaign's state in _RECORD as of the statement's start: a cancel
# not yet committed would be missed, and its own skipping would miss this deferral, leaving
# a retry nobody makes. Holding the campaign row (as `release` does) orders the two.
_HOLD_CAMPAIGN = RawStatement(
    select(Campaign.id).where(Campaign.id == bindparam("p_campaign")).with_for_update(read=True)
)


def record(tx: DriverTransaction, outcomes: list[dict[str, Any]], campaign_id: int) -> None:
    """Write outcomes (see `outcome`) of one campaign in the caller's transaction, one
    statement for all. Each is written only if its worker still holds the claim."""
    if not outcomes:
        return
    if tx.dialect.name != "sqlite" and any(o["p_state"] == "deferred" for o in outcomes):
        _HOLD_CAMPAIGN.execute_many(tx, [{"p_campaign": campaign_id}])
    _RECORD.execute_many(tx, outcomes)


def erased(text: str | None, address: str | None) -> str | None:
    """`text` without `address` (in any of its spellings), as `contacts forget` leaves it."""
    if not text or not address:
        return text
    local = address.rpartition("@")[0].lower()
    if local not in text.lower():  # the common case, without building a pattern
        return text
    from outreach.history import scrubber

    return str(scrubber(address)(text))


def release(session: Session, campaign_id: int, ids: list[int], worker: str) -> None:
    """Give claimed, unsent deliveries back (pause, shutdown, cancel): to the queue, or as
    skipped when the campaign was cancelled. The caller commits."""
    if not ids:
        return
    # PostgreSQL: wait for a cancel in progress (or make it wait), so that its skipping of
    # queued rows and this return of claimed ones cannot miss each other.
    session.execute(
        select(Campaign.id).where(Campaign.id == campaign_id).with_for_update(read=True)
    )
    session.execute(
        update(Delivery)
        .where(Delivery.id.in_(ids), Delivery.worker == worker, Delivery.state == "sending")
        .values(**_given_back())
        .execution_options(synchronize_session=False)
    )


def counts(session: Session, campaign_id: int) -> dict[str, int]:
    found = dict(
        session.execute(
            select(Delivery.state, func.count())
            .where(Delivery.campaign_id == campaign_id)
            .group_by(Delivery.state)
        ).all()
    )
    return {state: int(found.get(state, 0)) for state in DELIVERY_STATES}


def next_wake(session: Session, campaign_id: int) -> datetime | None:
    """When something in this campaign next becomes claimable: a retry or a lease's end."""
    retry = session.scalar(
        select(func.min(Delivery.next_attempt_at)).where(
            Delivery.campaign_id == campaign_id, Delivery.state.in_(CLAIMABLE)
        )
    )
    lease = session.scalar(
        select(func.min(Delivery.lease_until)).where(
            Delivery.campaign_id == campaign_id, Delivery.state == "sending"
        )
    )
    times = [t for t in (retry, lease) if t is not None]
    if not times:
        return None
    from outreach.models import UTCDateTime

    fixed = [UTCDateTime().process_result_value(t, session.get_bind().dialect) for t in times]
    return min(t for t in fixed if t is not None)


def total(session: Session, campaign_id: int) -> int:
    return (
        session.scalar(
            select(func.count()).select_from(Delivery).where(Delivery.campaign_id == campaign_id)
        )
        or 0
    )


def active(session: Session, campaign_id: int) -> int:
    """Deliveries still to be sent or being sent."""
    return (
        session.scalar(
            select(func.count())
            .select_from(Delivery)
            .where(Delivery.campaign_id == campaign_id, Delivery.state.in_(ACTIVE))
        )
        or 0
    )


def sent_since(session: Session, campaign_id: int, since: datetime) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(Delivery)
            .where(Delivery.campaign_id == campaign_id, Delivery.sent_at >= since)
        )
        or 0
    )


def skip_remaining(session: Session, campaign_id: int, reason: str) -> int:
    """On cancel: what was still to send is accounted for as skipped."""
    result = session.execute(
        update(Delivery)
        .where(Delivery.campaign_id == campaign_id, Delivery.state.in_(CLAIMABLE))
        .values(state="skipped", last_text=reason, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return result.rowcount or 0  # type: ignore[attr-defined]


def pending(session: Session, campaign_id: int) -> int:
    """Deliveries waiting for a worker: queued, or deferred until a retry."""
    return (
        session.scalar(
            select(func.count())
            .select_from(Delivery)
            .where(Delivery.campaign_id == campaign_id, Delivery.state.in_(CLAIMABLE))
        )
        or 0
    )
