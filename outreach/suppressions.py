"""Suppressions: addresses that are never mailed, for whatever reason."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from outreach.errors import NotFound, UserError
from outreach.fields import normalise_email
from outreach.models import SUPPRESSION_REASONS, Suppression

# A stronger reason is never replaced by a weaker one: an unsubscribe does not hide a bounce.
PRECEDENCE = {"forgotten": 4, "complained": 3, "bounced": 2, "unsubscribed": 1, "manual": 1}


def _address(email: str) -> str:
    try:
        return normalise_email(email)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def suppress(
    session: Session,
    email: str,
    reason: str,
    *,
    detail: str | None = None,
    campaign_id: int | None = None,
) -> Suppression:
    if reason not in SUPPRESSION_REASONS:
        raise UserError(
            f"unknown reason {reason!r}; choose one of {', '.join(SUPPRESSION_REASONS)}"
        )
    address = _address(email)
    existing = session.scalar(select(Suppression).where(Suppression.email == address))
    if existing is not None:
        if PRECEDENCE[reason] > PRECEDENCE[existing.reason]:
            existing.reason, existing.detail = reason, detail
            existing.campaign_id = campaign_id or existing.campaign_id
        return existing
    row = Suppression(email=address, reason=reason, detail=detail, campaign_id=campaign_id)
    session.add(row)
    session.flush()
    return row


def unsuppress(session: Session, email: str, *, only_reason: str | None = None) -> Suppression:
    """Lift a suppression; with only_reason, only when it is for that reason."""
    address = _address(email)
    existing = session.scalar(select(Suppression).where(Suppression.email == address))
    if existing is None:
        raise NotFound(f"{address} is not suppressed")
    if only_reason and existing.reason != only_reason:
        raise UserError(f"{address} is suppressed as {existing.reason}, which stays")
    session.delete(existing)
    session.flush()
    return existing


def is_suppressed(session: Session, email: str) -> bool:
    return session.scalar(select(Suppression.id).where(Suppression.email == email)) is not None


def list_suppressions(session: Session, reason: str | None = None) -> list[Suppression]:
    query = select(Suppression).order_by(Suppression.created_at, Suppression.email)
    if reason:
        query = query.where(Suppression.reason == reason)
    return list(session.scalars(query))


def suppress_if_new(
    session: Session,
    email: str,
    reason: str,
    *,
    detail: str | None = None,
    campaign_id: int | None = None,
) -> bool:
    """Suppress unless already suppressed, race-free (two identical requests at once both
    succeed, one of them inserts); True when this call added the suppression."""
    from sqlalchemy.dialects import postgresql, sqlite

    from outreach.models import utcnow

    address = _address(email)
    dialect = session.get_bind().dialect.name
    insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(Suppression)
    result = session.execute(
        insert.values(
            email=address,
            reason=reason,
            detail=detail,
            campaign_id=campaign_id,
            created_at=utcnow(),
        )
        .on_conflict_do_nothing(index_elements=["email"])
        .returning(Suppression.id)
    )
    return result.first() is not None
