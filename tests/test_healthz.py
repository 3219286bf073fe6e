"""`/healthz` says whether this web process can do its job: reach the database."""

from __future__ import annotations

from pathlib import Path

from outreach.web import create_app
from tests.sending_helpers import settings_for


def test_healthz_answers_ok_with_the_database(sqlite_url: str, tmp_path: Path) -> None:
    response = create_app(settings_for(sqlite_url, tmp_path)).test_client().get("/healthz")
    assert response.status_code == 200 and response.get_data(as_text=True) == "ok\n"


def test_healthz_fails_when_the_database_is_unreachable(tmp_path: Path) -> None:
    # Nothing listens on port 1: the process is alive but could not record an unsubscribe.
    unreachable = "postgresql+psycopg://postgres@127.0.0.1:1/outreach?connect_timeout=2"
    response = create_app(settings_for(unreachable, tmp_path)).test_client().get("/healthz")
    assert response.status_code == 503
    assert "database" in response.get_data(as_text=True)
