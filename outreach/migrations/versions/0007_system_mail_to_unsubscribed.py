"""system campaigns say in their stored definition whether they may mail an unsubscribed
address

A system campaign's definition now carries `mails_unsubscribed` (a confirmation asked for,
the result of one's own withdrawal), which the worker reads instead of looking the kind up
by name. Definitions stored before lack it and would read as False until the next message
of that kind rebuilt them: a queued or deferred withdrawal notice would be skipped as
"suppressed (unsubscribed)". A data migration; the downgrade leaves the key (earlier
revisions ignore it).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# outreach.system_mail.KINDS as of this revision: campaign name -> to_unsubscribed.
TO_UNSUBSCRIBED = {
    "_confirmation": True,
    "_consent-notice": False,
    "_result-consent": False,
    "_result-withdrawal": True,
}


def upgrade() -> None:
    conn = op.get_bind()
    campaigns = sa.table(
        "campaigns",
        sa.column("id"),
        sa.column("name"),
        sa.column("definition", sa.JSON().with_variant(JSONB(), "postgresql")),
    )
    rows = conn.execute(
        sa.select(campaigns.c.id, campaigns.c.name, campaigns.c.definition).where(
            campaigns.c.name.in_(list(TO_UNSUBSCRIBED))
        )
    )
    for row in rows.all():
        definition = dict(row.definition or {})
        if "mails_unsubscribed" in definition:
            continue
        definition["mails_unsubscribed"] = TO_UNSUBSCRIBED[row.name]
        conn.execute(
            sa.update(campaigns).where(campaigns.c.id == row.id).values(definition=definition)
        )


def downgrade() -> None:
    pass
