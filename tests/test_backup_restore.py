"""The backup and restore commands of docs/operations.md, run as written (less the `docker
compose exec -T postgres` in front) against a real PostgreSQL: a restore over a database that
moved on since the dump brings back exactly the dump, suppressions included, and a restore
into a new, empty database works as well."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select, text

from outreach.db import check_schema, engine_for, reader_sessionmaker
from outreach.models import Contact, Suppression
from tests.conftest import POSTGRES_URL, ROOT

pytestmark = pytest.mark.integration

GUIDE = ROOT / "docs" / "operations.md"


def documented(tool: str) -> list[str]:
    """The options of the guide's `docker compose exec -T postgres TOOL …` line, without the
    user, database and redirections that belong to the compose stack."""
    match = re.search(rf"docker compose exec -T postgres {tool} (.+?)[<>]", GUIDE.read_text())
    assert match is not None, f"docs/operations.md has no {tool} line"
    words = shlex.split(match.group(1))
    options = []
    skip = False
    for word in words:
        if skip:
            skip = False
        elif word in ("-U", "-d"):
            skip = True
        elif word != "outreach":
            options.append(word)
    return options


@pytest.fixture
def databases() -> Iterator[dict[str, str]]:
    if not POSTGRES_URL:
        pytest.skip("PostgreSQL tests need OUTREACH_TEST_POSTGRES_URL (CI sets it)")
    if shutil.which("pg_dump") is None or shutil.which("pg_restore") is None:
        pytest.fail("pg_dump and pg_restore come with PostgreSQL; install postgresql-client")
    server = POSTGRES_URL.rsplit("/", 1)[0]
    names = {role: f"outreach_restore_{role}_{uuid.uuid4().hex[:8]}" for role in ("live", "new")}
    admin = create_engine(
        server.replace("postgresql://", "postgresql+psycopg://", 1) + "/postgres",
        isolation_level="AUTOCOMMIT",
    )
    with admin.connect() as conn:
        for name in names.values():
            conn.execute(text(f"CREATE DATABASE {name}"))
    urls = {role: f"{server}/{name}" for role, name in names.items()}
    yield urls
    for url in urls.values():
        engine_for(url.replace("postgresql://", "postgresql+psycopg://", 1)).dispose()
    with admin.connect() as conn:
        for name in names.values():
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    admin.dispose()


def outreach(url: str, *args: str, cwd: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTREACH_")}
    env["OUTREACH_DATABASE_URL"] = url.replace("postgresql://", "postgresql+psycopg://", 1)
    result = subprocess.run(
        [sys.executable, "-m", "outreach", *args], env=env, cwd=cwd, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def state(url: str) -> tuple[int, list[str]]:
    url = url.replace("postgresql://", "postgresql+psycopg://", 1)
    check_schema(url)  # the restored schema is one the app accepts
    with reader_sessionmaker(url)() as session:
        contacts = session.scalar(select(func.count()).select_from(Contact)) or 0
        suppressed = list(session.scalars(select(Suppression.email).order_by(Suppression.email)))
    engine_for(url).dispose()
    return contacts, suppressed


def test_restore_brings_back_the_dump_over_a_live_database_and_into_an_empty_one(
    databases: dict[str, str], tmp_path: Path
) -> None:
    live = databases["live"]
    outreach(live, "init", cwd=tmp_path)
    outreach(live, "contacts", "import", str(ROOT / "examples" / "contacts.csv"), cwd=tmp_path)
    outreach(live, "suppressions", "add", "asked@example.org", cwd=tmp_path)
    before = state(live)
    dump = tmp_path / "outreach.dump"
    subprocess.run(["pg_dump", *documented("pg_dump"), "-d", live, "-f", str(dump)], check=True)

    # The database moves on after the dump; then something goes wrong and it is restored.
    outreach(live, "suppressions", "remove", "asked@example.org", cwd=tmp_path)
    (tmp_path / "more.csv").write_text("email\nlater@example.org\n", encoding="utf-8")
    outreach(live, "contacts", "import", str(tmp_path / "more.csv"), cwd=tmp_path)
    assert state(live) != before

    restore = ["pg_restore", *documented("pg_restore")]
    assert "--clean" in restore and "--if-exists" in restore
    for url in (live, databases["new"]):
        result = subprocess.run([*restore, "-d", url, str(dump)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        assert state(url) == before
    assert "asked@example.org" in before[1]
