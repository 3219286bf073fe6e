"""one spelling per address: every stored address with its domain in the ASCII form

Addresses were stored with an internationalised domain as typed (kim@수원.kr) or in its
ASCII form (kim@xn--9p4bi0g.kr), so one mailbox could be two contacts and escape its own
suppression. Every table that stores an address gets `local@ascii-domain`. Where both
spellings were stored: suppressions keep the stronger reason, subscribe requests keep the
newer, and contacts keep the older row, into which the duplicate is merged first — its
consent records, events, tags, consent notices and deliveries (where the kept contact has
none for that campaign) move over, and fields the kept row lacks are filled from it. A data migration: the downgrade leaves the
addresses as they are (the ASCII form is valid for every earlier revision).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-10
"""

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from email_validator import EmailNotValidError, validate_email

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# outreach.suppressions.PRECEDENCE as of this revision: a migration must not change its
# outcome when the code changes later.
PRECEDENCE = {"forgotten": 4, "complained": 3, "bounced": 2, "unsubscribed": 1, "manual": 1}


def _table(name: str, key: str, *columns: str) -> sa.TableClause:
    return sa.table(name, sa.column(key), sa.column("email"), *(sa.column(c) for c in columns))


def _ascii(address: str) -> str | None:
    """What outreach.fields.normalise_email stores from this revision on; None for a value
    that is not an address (left as it is)."""
    try:
        checked = validate_email(address, check_deliverability=False)
    except EmailNotValidError:
        return None
    return f"{checked.local_part}@{checked.ascii_domain}".lower()


def _groups(
    conn: sa.Connection, table: sa.TableClause, key: str, *columns: str
) -> dict[str, list[Any]]:
    """Rows whose address is not in its stored form, with every row already under that
    form, by the form: only addresses with a non-ASCII character can be in another."""
    moved: dict[str, list[Any]] = defaultdict(list)
    picked = [table.c[key], table.c.email, *(table.c[c] for c in columns)]
    for row in conn.execute(sa.select(*picked)):
        if not row.email.isascii():
            target = _ascii(row.email)
            if target is not None and target != row.email:
                moved[target].append(row)
    targets = list(moved)
    for start in range(0, len(targets), 500):
        chunk = targets[start : start + 500]
        for row in conn.execute(sa.select(*picked).where(table.c.email.in_(chunk))):
            moved[row.email].append(row)
    return moved


def _settle(
    conn: sa.Connection,
    table: sa.TableClause,
    key: str,
    groups: dict[str, list[Any]],
    keep: Any,
    merge: Any = None,
) -> None:
    """In each group, keep the row `keep` picks under the ASCII form and delete the others
    (first, so that the unique address is free), after `merge(conn, winner, losers)`."""
    for target, rows in groups.items():
        winner = keep(rows)
        losers = [row_key for row_key in (getattr(r, key) for r in rows) if row_key != winner]
        if losers:
            if merge is not None:
                merge(conn, winner, losers)
            conn.execute(sa.delete(table).where(table.c[key].in_(losers)))
        conn.execute(sa.update(table).where(table.c[key] == winner).values(email=target))


def _oldest(rows: list[Any]) -> Any:
    return min(rows, key=lambda r: (r.created_at, r.id)).id


def _newest(rows: list[Any]) -> Any:
    return max(rows, key=lambda r: (r.created_at, r.id)).id


def _strongest(rows: list[Any]) -> Any:
    """The stronger reason; of two as strong, the older."""
    return min(rows, key=lambda r: (-PRECEDENCE.get(r.reason, 0), r.created_at, r.id)).id


# A contact's own fields, filled in the kept row from a duplicate where the kept one is empty.
FIELDS = (
    "name",
    "organisation",
    "organisation_type",
    "city",
    "country",
    "language",
    "membership",
    "consent",
    "consent_at",
    "consent_source",
    "consent_version",
)


def _merge_contacts(conn: sa.Connection, winner: int, losers: list[int]) -> None:
    """Move what belongs to the duplicates over to the kept contact, so that deleting them
    (ON DELETE CASCADE / SET NULL) loses neither proof of consent nor history."""
    contacts = sa.table("contacts", sa.column("id"), *(sa.column(f) for f in FIELDS))
    kept = conn.execute(sa.select(contacts).where(contacts.c.id == winner)).one()
    fill: dict[str, Any] = {}
    for row in conn.execute(sa.select(contacts).where(contacts.c.id.in_(losers))):
        for name in FIELDS:
            if getattr(kept, name) is None and name not in fill and getattr(row, name) is not None:
                fill[name] = getattr(row, name)
    if fill:
        conn.execute(sa.update(contacts).where(contacts.c.id == winner).values(**fill))
    for name in ("events", "consents", "subscriptions", "system_recipients"):
        table = sa.table(name, sa.column("contact_id"))
        conn.execute(
            sa.update(table).where(table.c.contact_id.in_(losers)).values(contact_id=winner)
        )
    # Where the kept contact already has the row (a tag, a campaign's delivery, a notice of
    # the same date), the duplicate's stays with it and goes (tags, notices) or keeps its
    # counts without a contact (a delivery).
    for name, unique in (
        ("contact_tags", "tag"),
        ("deliveries", "campaign_id"),
        ("consent_notices", "due"),
    ):
        table = sa.table(name, sa.column("contact_id"), sa.column(unique))
        for loser in losers:  # one at a time: two duplicates may hold the same one
            taken = sa.select(table.c[unique]).where(table.c.contact_id == winner)
            conn.execute(
                sa.update(table)
                .where(table.c.contact_id == loser, table.c[unique].not_in(taken.scalar_subquery()))
                .values(contact_id=winner)
            )


def upgrade() -> None:
    conn = op.get_bind()

    contacts = _table("contacts", "id", "created_at")
    groups = _groups(conn, contacts, "id", "created_at")
    _settle(conn, contacts, "id", groups, _oldest, merge=_merge_contacts)

    suppressions = _table("suppressions", "id", "reason", "created_at")
    groups = _groups(conn, suppressions, "id", "reason", "created_at")
    _settle(conn, suppressions, "id", groups, _strongest)

    # Requests are not unique by address: only an address under two spellings is settled,
    # to its newest request (the link the person most likely still has).
    subscriptions = _table("subscriptions", "id", "created_at")
    for target, rows in _groups(conn, subscriptions, "id", "created_at").items():
        if len({r.email for r in rows}) > 1:
            _settle(conn, subscriptions, "id", {target: rows}, _newest)
        else:
            ids = [r.id for r in rows]
            conn.execute(
                sa.update(subscriptions).where(subscriptions.c.id.in_(ids)).values(email=target)
            )

    # One row per message: nothing to settle, only the spelling.
    recipients = _table("system_recipients", "delivery_id")
    for target, rows in _groups(conn, recipients, "delivery_id").items():
        ids = [r.delivery_id for r in rows]
        conn.execute(
            sa.update(recipients).where(recipients.c.delivery_id.in_(ids)).values(email=target)
        )


def downgrade() -> None:
    pass  # the ASCII spelling is a valid address for every earlier revision
