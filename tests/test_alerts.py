"""deploy/alerts.sql, run with psql as the guide's cron line runs it: silent while all is well,
one line per problem otherwise."""

from __future__ import annotations

import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session

from outreach.models import Campaign, Delivery, utcnow
from tests.conftest import ROOT
from tests.sending_helpers import project_with, send, settings_for

ALERTS = ROOT / "deploy" / "alerts.sql"


def alerts(url: str) -> list[str]:
    # psql takes the libpq form of the test database's URL (schema in its options).
    libpq = url.replace("postgresql+psycopg://", "postgresql://", 1)
    result = subprocess.run(
        ["psql", libpq, "-Atq", "-v", "ON_ERROR_STOP=1"],
        stdin=ALERTS.open("rb"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


@pytest.fixture
def pg(db_url: str) -> str:
    if not db_url.startswith("postgresql"):
        pytest.skip("deploy/alerts.sql is for the PostgreSQL of the compose stack")
    if shutil.which("psql") is None:
        pytest.fail("psql comes with PostgreSQL; install postgresql-client")
    return db_url


def test_alerts_are_silent_while_all_is_well_and_name_each_problem(
    pg: str, session: Session, tmp_path: Path
) -> None:
    settings = settings_for(pg, tmp_path)
    path = project_with(tmp_path, session)
    send(path, settings, session)
    session.execute(update(Campaign).values(state="sending"))
    session.commit()
    assert alerts(pg) == []

    # Nobody sends what is due.
    session.execute(update(Delivery).values(next_attempt_at=utcnow() - timedelta(hours=1)))
    session.commit()
    assert alerts(pg) == [
        "stalled: news has 3 deliveries due for over 15 minutes; are the workers running?"
    ]

    # The relay fails: deliveries deferred, then the campaign pauses itself.
    session.execute(
        update(Delivery).values(state="deferred", next_attempt_at=utcnow() + timedelta(hours=1))
    )
    session.execute(
        update(Campaign).values(state="paused", state_reason="10 relay failures in a row")
    )
    session.commit()
    assert alerts(pg) == [
        "paused: news (10 relay failures in a row)",
        "failing: news has 3 deferred and 0 failed of 3 deliveries",
    ]

    # Sent at last, but the list bounces.
    session.execute(update(Delivery).values(state="bounced"))
    session.execute(update(Campaign).values(state="done", state_reason=None))
    session.commit()
    assert alerts(pg) == ["bouncing: news has 3 bounced of 3 sent"]
