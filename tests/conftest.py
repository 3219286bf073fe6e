"""Shared fixtures: one parametrised database fixture runs every storage test on SQLite and,
when OUTREACH_TEST_POSTGRES_URL is set, on PostgreSQL too."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from outreach.db import engine_for, upgrade
from outreach.models import Base

POSTGRES_URL = os.environ.get("OUTREACH_TEST_POSTGRES_URL")
REDIS_URL = os.environ.get("OUTREACH_TEST_REDIS_URL")
ROOT = Path(__file__).resolve().parent.parent


def _require(url: str | None, name: str, check: object) -> None:
    """A service named by the environment must answer: CI sets these and must not skip."""
    if url is None:
        return
    try:
        check()  # type: ignore[operator]
    except Exception as exc:
        pytest.exit(f"{name} is set to {url} but cannot be reached: {exc}", returncode=3)


def pytest_sessionstart(session: pytest.Session) -> None:
    def pg() -> None:
        with create_engine(POSTGRES_URL).connect() as conn:  # type: ignore[arg-type]
            conn.execute(text("SELECT 1"))

    def redis() -> None:
        import redis as redis_lib

        redis_lib.Redis.from_url(REDIS_URL).ping()  # type: ignore[arg-type]

    _require(POSTGRES_URL, "OUTREACH_TEST_POSTGRES_URL", pg)
    _require(REDIS_URL, "OUTREACH_TEST_REDIS_URL", redis)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    upgrade(f"sqlite:///{path}")
    engine_for(f"sqlite:///{path}").dispose()
    return path


def _pg_url_with_schema(schema: str) -> str:
    assert POSTGRES_URL is not None
    base = POSTGRES_URL.replace("postgresql://", "postgresql+psycopg://", 1)
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}"


@pytest.fixture(scope="session")
def pg_url(worker_id: str) -> Iterator[str]:
    """A schema of our own per test process, migrated once."""
    if not POSTGRES_URL:
        pytest.skip("PostgreSQL tests need OUTREACH_TEST_POSTGRES_URL (CI sets it)")
    schema = f"t_{worker_id}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(POSTGRES_URL.replace("postgresql://", "postgresql+psycopg://", 1))
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    url = _pg_url_with_schema(schema)
    upgrade(url)
    yield url
    engine_for(url).dispose()
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


@pytest.fixture(scope="session")
def worker_id() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


def _truncate(url: str) -> None:
    tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
    with engine_for(url).begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> str:
    """A migrated, empty database on each backend."""
    if request.param == "sqlite":
        path = tmp_path / "outreach.db"
        shutil.copy(sqlite_template, path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("pg_url")
    _truncate(url)
    return url


@pytest.fixture
def sqlite_url(tmp_path: Path, sqlite_template: Path) -> str:
    path = tmp_path / "outreach.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def session(db_url: str) -> Iterator[Session]:
    """The test's own session; it reads without locking, so helpers that open sessions of
    their own (as workers do) are not blocked by it. Commit it before such helpers write."""
    from outreach.db import reader_sessionmaker

    with reader_sessionmaker(db_url)() as s:
        yield s


@pytest.fixture
def run_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Invoke the CLI in-process with a clean OUTREACH_* environment, in tmp_path."""
    for name in list(os.environ):
        if name.startswith("OUTREACH_") and not name.startswith("OUTREACH_TEST_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)

    def run(*args: str, env: dict[str, str] | None = None, input: str | None = None) -> Result:
        from outreach.cli import cli

        runner = CliRunner()
        return runner.invoke(cli, list(args), env=env or {}, input=input, catch_exceptions=True)

    return run


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path
