"""consent records, consent notices, subscribe requests, system messages' recipients

Contacts get the source and text version of their consent.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("consent_source", sa.String(length=300), nullable=True))
        batch_op.add_column(sa.Column("consent_version", sa.String(length=64), nullable=True))

    op.create_table(
        "consents",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("contact_id", BIG_ID, nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(length=300), nullable=True),
        sa.Column("text_version", sa.String(length=64), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
            name=op.f("fk_consents_contact_id_contacts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consents")),
    )
    with op.batch_alter_table("consents", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_consents_contact_id"), ["contact_id"], unique=False)

    op.create_table(
        "consent_notices",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("contact_id", BIG_ID, nullable=False),
        sa.Column("due", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivery_id", BIG_ID, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
            name=op.f("fk_consent_notices_contact_id_contacts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["deliveries.id"],
            name=op.f("fk_consent_notices_delivery_id_deliveries"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consent_notices")),
        sa.UniqueConstraint("contact_id", "due", name=op.f("uq_consent_notices_contact_id")),
    )

    op.create_table(
        "subscriptions",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("name", sa.String(length=300), nullable=True),
        sa.Column("organisation", sa.String(length=300), nullable=True),
        sa.Column("language", sa.String(length=35), nullable=False),
        sa.Column("text_version", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("contact_id", BIG_ID, nullable=True),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
            name=op.f("fk_subscriptions_contact_id_contacts"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subscriptions")),
    )
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_subscriptions_email_created", ["email", "created_at"], unique=False
        )

    op.create_table(
        "system_recipients",
        sa.Column("delivery_id", BIG_ID, nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("name", sa.String(length=300), nullable=True),
        sa.Column("language", sa.String(length=35), nullable=True),
        sa.Column("contact_id", BIG_ID, nullable=True),
        sa.Column(
            "variables",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
            name=op.f("fk_system_recipients_contact_id_contacts"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["deliveries.id"],
            name=op.f("fk_system_recipients_delivery_id_deliveries"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("delivery_id", name=op.f("pk_system_recipients")),
    )
    with op.batch_alter_table("system_recipients", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_system_recipients_email"), ["email"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_system_recipients_contact_id"), ["contact_id"], unique=False
        )


# Messages of system campaigns (confirmations, notices) that are not sent yet: their
# recipient lives in system_recipients, which earlier revisions do not have.
_WAITING = sa.text(
    "SELECT d.id FROM deliveries d JOIN system_recipients r ON r.delivery_id = d.id "
    "WHERE d.state IN ('queued', 'deferred', 'sending')"
)


def losses(conn: sa.Connection) -> list[str]:
    """What `outreach db downgrade` says before undoing this revision."""
    waiting = len(conn.execute(_WAITING).all())
    if not waiting:
        return []
    return [
        f"{waiting} system message{'s' if waiting != 1 else ''} (confirmations, notices) not "
        "yet sent: an earlier release cannot send them, so they are skipped"
    ]


def downgrade() -> None:
    # Without their recipient an earlier release would skip them as "the contact was
    # erased"; say why instead.
    waiting = [row.id for row in op.get_bind().execute(_WAITING)]
    deliveries = sa.table(
        "deliveries",
        sa.column("id"),
        sa.column("state"),
        sa.column("last_text"),
        sa.column("lease_until"),
        sa.column("worker"),
    )
    for start in range(0, len(waiting), 500):
        op.execute(
            sa.update(deliveries)
            .where(deliveries.c.id.in_(waiting[start : start + 500]))
            .values(
                state="skipped",
                lease_until=None,
                worker=None,
                last_text="not sent: the schema went back to a release without system messages",
            )
        )
    op.drop_table("system_recipients")
    op.drop_table("subscriptions")
    op.drop_table("consent_notices")
    op.drop_table("consents")
    # Not rebuilt: on SQLite a rebuild drops the old table, and with foreign keys on that
    # deletes every tag and detaches every delivery and event (SQLite 3.35+ drops columns).
    with op.batch_alter_table("contacts", schema=None, recreate="never") as batch_op:
        batch_op.drop_column("consent_version")
        batch_op.drop_column("consent_source")
