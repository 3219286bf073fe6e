"""contacts remember when the recipient chose their language on their preferences page

`contacts.language_chosen_at`: an import keeps a language the recipient chose themselves,
unless staff pass --override-recipient-choices. The downgrade drops the column (the
languages stay; only the note that the recipient chose them goes).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("language_chosen_at", sa.DateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    # Not rebuilt: on SQLite a rebuild drops the old table, and with foreign keys on that
    # would delete every tag and detach every delivery (see 0004).
    with op.batch_alter_table("contacts", schema=None, recreate="never") as batch_op:
        batch_op.drop_column("language_chosen_at")
