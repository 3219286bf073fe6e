"""Suppressions: addresses that are never mailed, for whatever reason."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from outreach.errors import NotFound, UserError
from outreach.fields import normalise_email
from outreach.models import (
    SUPPRESSION_REASONS,
    Campaign,
    Contact,
    Delivery,
    Suppression,
    SystemRecipient,
    utcnow,
)

# A stronger reason is never replaced by a weaker one: an unsubscribe does not hide a bounce.
PRECEDENCE = {"forgotten": 4, "complained": 3, "bounced": 2, "unsubscribed": 1, "manual": 1}


def _address(email: str) -> str:
    try:
        return normalise_email(email)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _addresses(emails: Iterable[str], nothing_done: str) -> list[str]:
    """Every argument normalised, or one error naming all the bad ones: a command given
    several addresses changes none of them when any is wrong."""
    emails = list(emails)
    addresses, problems = [], []
    for email in emails:
        try:
            addresses.append(normalise_email(email))
        except ValueError as exc:
            problems.append(str(exc))
    if problems:
        raise UserError("; ".join(problems) + (f"; {nothing_done}" if len(emails) > 1 else ""))
    return list(dict.fromkeys(addresses))


def forgotten_message(row: Suppression) -> str:
    return f"{row.email} was forgotten on {row.created_at:%Y-%m-%d}"


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
            existing.created_at = utcnow()  # "since" belongs to the reason
        return existing
    row = Suppression(email=address, reason=reason, detail=detail, campaign_id=campaign_id)
    session.add(row)
    session.flush()
    return row


def suppress_all(
    session: Session, emails: Iterable[str], reason: str, *, detail: str | None = None
) -> list[Suppression]:
    """Suppress several addresses, or none when any of them is not an address."""
    return [
        suppress(session, address, reason, detail=detail)
        for address in _addresses(emails, "nothing suppressed")
    ]


def _liftable(session: Session, address: str, only_reason: str | None = None) -> Suppression:
    existing = session.scalar(select(Suppression).where(Suppression.email == address))
    if existing is None:
        raise NotFound(f"{address} is not suppressed")
    if existing.reason == "forgotten":
        raise UserError(
            f"{forgotten_message(existing)}: it is never mailed again, so its suppression stays"
        )
    if only_reason and existing.reason != only_reason:
        raise UserError(f"{address} is suppressed as {existing.reason}, which stays")
    return existing


def unsuppress(session: Session, email: str, *, only_reason: str | None = None) -> Suppression:
    """Lift a suppression; with only_reason, only when it is for that reason. A forgotten
    address stays suppressed: forgetting promises it is never mailed again."""
    existing = _liftable(session, _address(email), only_reason)
    session.delete(existing)
    session.flush()
    return existing


def unsuppress_all(session: Session, emails: Iterable[str]) -> list[Suppression]:
    """Lift several suppressions, or none when any of them cannot be lifted."""
    addresses = _addresses(emails, "nothing lifted")
    rows = []
    for address in addresses:
        try:
            rows.append(_liftable(session, address))
        except UserError as exc:
            if len(addresses) == 1:
                raise
            raise type(exc)(f"{exc}; nothing lifted") from None
    for row in rows:
        session.delete(row)
    session.flush()
    return rows


def is_suppressed(session: Session, email: str) -> bool:
    return session.scalar(select(Suppression.id).where(Suppression.email == email)) is not None


def _listing(session: Session, reason: str | None) -> list[tuple[Suppression, str | None]]:
    """Oldest first, each with the name of the campaign that caused it."""
    query = (
        select(Suppression, Campaign.name)
        .outerjoin(Campaign, Campaign.id == Suppression.campaign_id)
        .order_by(Suppression.created_at, Suppression.email)
    )
    if reason:
        query = query.where(Suppression.reason == reason)
    return [(row, campaign) for row, campaign in session.execute(query)]


def list_suppressions(session: Session, reason: str | None = None) -> list[Suppression]:
    return [row for row, _ in _listing(session, reason)]


def suppressions_as_json(session: Session, reason: str | None = None) -> list[dict[str, Any]]:
    """The list as a script reads it: whole values, times in ISO 8601."""
    return [
        {
            "email": row.email,
            "reason": row.reason,
            "since": row.created_at.isoformat(),
            "detail": row.detail,
            "campaign": campaign,
        }
        for row, campaign in _listing(session, reason)
    ]


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


@dataclass
class DeliveryRecipient:
    """Whom a delivery went to, as an unsubscribe of it must know: its contact, or for a
    system message (a confirmation, a notice) the address its `SystemRecipient` row holds,
    and that row's contact if it has one. `email` is None once the address was erased."""

    delivery: Delivery
    campaign: Campaign
    contact: Contact | None
    email: str | None


def recipient_of(session: Session, delivery_id: int) -> DeliveryRecipient | None:
    """The recipient of a delivery (one query, as a link or mail names it); None if the
    delivery is gone."""
    row = session.execute(
        select(Delivery, Contact, Campaign, SystemRecipient)
        .outerjoin(Contact, Contact.id == Delivery.contact_id)
        .outerjoin(SystemRecipient, SystemRecipient.delivery_id == Delivery.id)
        .join(Campaign, Campaign.id == Delivery.campaign_id)
        .where(Delivery.id == delivery_id)
    ).first()
    if row is None:
        return None
    delivery, contact, campaign, system = row
    if contact is None and system is not None and system.contact_id is not None:
        contact = session.get(Contact, system.contact_id)
    email = contact.email if contact else system.email if system else None
    return DeliveryRecipient(delivery, campaign, contact, email)
