"""topics: what each contact left, topic consent records, topics chosen on the form

`topics_left` holds the topics of campaigns/topics.yaml a contact does not receive; consent
records get the topic a "joined" or "left" is about; a subscribe request keeps the topics
ticked on the form until it is confirmed.

The downgrade keeps every consent record (an earlier revision has no topic column, so a
topic's record names its topic in its source) and drops what an earlier revision cannot
hold: which topics contacts left (they then receive every campaign again, as that revision
knows no topics) and the topics ticked on requests still waiting for their confirmation.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-12
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "topics_left",
        sa.Column("contact_id", BIG_ID, nullable=False),
        sa.Column("topic", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(length=300), nullable=True),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
            name=op.f("fk_topics_left_contact_id_contacts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("contact_id", "topic", name=op.f("pk_topics_left")),
    )
    # Added in place (SQLite can add a column without rebuilding the table).
    with op.batch_alter_table("consents", schema=None, recreate="never") as batch_op:
        batch_op.add_column(sa.Column("topic", sa.String(length=64), nullable=True))
    with op.batch_alter_table("subscriptions", schema=None, recreate="never") as batch_op:
        batch_op.add_column(sa.Column("topics", JSON, nullable=True))


def downgrade() -> None:
    consents = sa.table("consents", sa.column("topic", sa.String), sa.column("source", sa.String))
    # The record stays; its topic moves into its source, which an earlier revision shows.
    prefix = sa.literal("topic ") + consents.c.topic + sa.literal(": ")
    op.execute(
        consents.update()
        .where(consents.c.topic.is_not(None))
        .values(source=sa.func.substr(prefix + sa.func.coalesce(consents.c.source, ""), 1, 300))
    )
    # Not rebuilt: on SQLite a rebuild drops the old table, and with foreign keys on that
    # would delete rows pointing at it (SQLite 3.35+ drops columns in place).
    with op.batch_alter_table("subscriptions", schema=None, recreate="never") as batch_op:
        batch_op.drop_column("topics")
    with op.batch_alter_table("consents", schema=None, recreate="never") as batch_op:
        batch_op.drop_column("topic")
    op.drop_table("topics_left")
