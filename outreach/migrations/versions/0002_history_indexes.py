"""history indexes: a contact's events by kind, campaign and time, for history segments

Replaces ix_events_contact_id, which is a prefix of the new index.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index(
            "ix_events_history", ["contact_id", "kind", "campaign_id", "created_at"], unique=False
        )
        batch_op.drop_index(batch_op.f("ix_events_contact_id"))


def downgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_events_contact_id"), ["contact_id"], unique=False)
        batch_op.drop_index("ix_events_history")
