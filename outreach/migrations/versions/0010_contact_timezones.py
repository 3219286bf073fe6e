"""contacts have a time zone

`contacts.timezone`: the IANA zone a contact reads their mail in, for `send_at: {local: …}`
and sending windows; empty, the zone of their country when it keeps one, else
OUTREACH_TIMEZONE. The downgrade drops the column (the contacts stay; only their zones go).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("timezone", sa.String(length=64), nullable=True))


def downgrade() -> None:
    # Not rebuilt: on SQLite a rebuild drops the old table, and with foreign keys on that
    # would delete every tag and detach every delivery (see 0004).
    with op.batch_alter_table("contacts", schema=None, recreate="never") as batch_op:
        batch_op.drop_column("timezone")
