"""Releases: a version, the schema revision it belongs to, and going back to an earlier
release's schema keeping every row it can hold (issue 20, items 1 and 2)."""

from __future__ import annotations

import json
import tomllib
from datetime import UTC, datetime
from typing import Any

from alembic import command
from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Text,
    inspect,
    text,
)

from outreach import __version__
from outreach.db import alembic_config, current_revision, engine_for, head_revision, upgrade
from outreach.releases import chain, plan_downgrade, release_of, releases, status
from tests.conftest import ROOT

AT = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def test_the_version_is_0_3_0_everywhere(run_cli) -> None:  # type: ignore[no-untyped-def]
    result = run_cli("--version")
    assert result.output.strip() == "outreach, version 0.3.0"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["project"]["version"] == __version__ == "0.3.0"


def test_every_revision_belongs_to_exactly_one_release() -> None:
    order = chain()
    assert order[0] == "0001" and order[-1] == head_revision()
    known = releases()
    assert [r.version for r in known][:2] == ["0.1.0", "0.2.0"]
    assert known[-1].version == __version__ and known[-1].revision == head_revision()
    positions = [order.index(r.revision) for r in known]
    assert positions == sorted(positions), "releases must follow the migration history"
    versions = [tuple(int(p) for p in r.version.split(".")) for r in known]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)
    owners = {revision: release_of(revision) for revision in order}
    assert all(owner is not None for owner in owners.values())
    # Each release owns the revisions after the previous release's, up to its own.
    previous = -1
    for release, position in zip(known, positions, strict=True):
        for revision in order[previous + 1 : position + 1]:
            assert owners[revision] == release, revision
        previous = max(previous, position)
    assert release_of("9999") is None
    # The changelog has a section per release that names its schema revision.
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    for release in known[:-1]:
        assert f"## {release.version} " in changelog and f"schema {release.revision}" in changelog
    assert f"## {__version__} " in changelog


def test_db_status_names_the_release_and_what_this_version_expects(run_cli) -> None:  # type: ignore[no-untyped-def]
    assert run_cli("db", "status").exit_code == 1  # no database yet: one line, none made
    assert run_cli("init").exit_code == 0
    result = run_cli("db", "status", "--json")
    assert result.exit_code == 0, result.output
    found = json.loads(result.output)
    assert found["revision"] == head_revision() and found["current"] is True
    assert found["release"] == release_of(head_revision()).version  # type: ignore[union-attr]
    assert found["version"] == "0.3.0"
    from outreach.config import Settings

    db_url = Settings.load().database_url
    command.downgrade(alembic_config(db_url), "0001")
    engine_for(db_url).dispose()
    old = run_cli("db", "status")
    assert old.exit_code == 1
    assert "schema 0001, release 0.1.0" in old.output and "run `outreach init`" in old.output
    with engine_for(db_url).begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    newer = run_cli("db", "status")
    assert newer.exit_code == 1 and "does not know" in newer.output
    assert len(newer.output.strip().splitlines()) == 1 and "Traceback" not in newer.output


def _value(column: Any, n: int) -> Any:
    """A plausible value of a column's type for the n-th filler row."""
    kind = column.type
    if column.name == "email":
        return f"filler{n}@example.org"
    if column.name == "state":
        return {"deliveries": "queued", "campaigns": "sending"}.get(column.table.name, "done")
    if isinstance(kind, DateTime):
        return AT
    if isinstance(kind, Boolean):
        return False
    if isinstance(kind, Integer):
        return n
    if isinstance(kind, Float):
        return 1.0
    if isinstance(kind, JSON):
        return {}
    if isinstance(kind, String | Text):
        return f"v{n}"
    raise AssertionError(f"no filler for {column.table.name}.{column.name} ({kind})")


def fill_every_table(url: str) -> dict[str, int]:
    """A row in every table of the database's schema, every column filled (foreign keys
    point at each table's row 1); returns the row count of each table."""
    meta = MetaData()
    engine = engine_for(url)
    meta.reflect(engine)
    with engine.begin() as conn:
        for table in meta.sorted_tables:
            if table.name == "alembic_version":
                continue
            row = {
                column.name: 1 if column.foreign_keys else _value(column, 1)
                for column in table.columns
            }
            conn.execute(table.insert().values(**row))
    with engine.connect() as conn:
        return {
            t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()
            for t in inspect(conn).get_table_names()
            if t != "alembic_version"
        }


def _counts(url: str) -> dict[str, int]:
    with engine_for(url).connect() as conn:
        return {
            t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()
            for t in inspect(conn).get_table_names()
            if t != "alembic_version"
        }


def test_every_migration_goes_down_and_up_again_with_rows_in_every_table(db_url: str) -> None:
    """Each revision's downgrade runs with a row in every table and every column filled,
    keeps every row of every table the older schema has, and upgrading again works."""
    filled = fill_every_table(db_url)
    assert all(filled.values()), f"a table the filler left empty: {filled}"
    order = chain()
    for older in reversed(order[:-1]):
        before = _counts(db_url)
        command.downgrade(alembic_config(db_url), older)
        engine_for(db_url).dispose()
        after = _counts(db_url)
        assert current_revision(db_url) == older
        assert {t: before[t] for t in after} == after, f"rows lost going down to {older}"
    assert set(_counts(db_url)) >= {"contacts", "deliveries", "suppressions", "events"}
    upgrade(db_url)
    assert current_revision(db_url) == head_revision()
    assert all(_counts(db_url)[t] == filled[t] for t in ("contacts", "suppressions", "events"))


def test_downgrade_to_0_1_0_says_what_it_cannot_keep_and_keeps_the_rest(
    db_url: str, run_cli
) -> None:  # type: ignore[no-untyped-def]
    filled = fill_every_table(db_url)
    plan = plan_downgrade(db_url, "0.1.0")
    assert plan.target.revision == "0001" and not plan.noop
    joined = "\n".join(plan.losses)
    for table in ("consents", "consent_notices", "subscriptions", "system_recipients", "workers"):
        assert f"1 row of {table} (release 0.1.0 has no such table)" in joined
    assert "1 value of contacts.consent_source" in joined
    assert "1 system message (confirmations, notices) not yet sent" in joined
    assert " of contacts " not in joined and " of suppressions " not in joined
    result = run_cli("db", "downgrade", "0.1.0", input="n\n", env={"OUTREACH_DATABASE_URL": db_url})
    assert result.exit_code == 1 and "nothing changed" in result.output
    assert current_revision(db_url) == head_revision()
    for line in plan.losses:
        assert line in result.output
    result = run_cli("db", "downgrade", "v0.1.0", "--yes", env={"OUTREACH_DATABASE_URL": db_url})
    assert result.exit_code == 0, result.output
    assert "emptied the queue of 0 tasks" in result.output
    engine_for(db_url).dispose()
    assert current_revision(db_url) == "0001"
    counts = _counts(db_url)
    for table in ("contacts", "contact_tags", "suppressions", "campaigns", "deliveries", "events"):
        assert counts[table] == filled[table], table
    with engine_for(db_url).connect() as conn:
        skipped = conn.execute(text("SELECT state, last_text FROM deliveries WHERE id = 1")).one()
    assert skipped.state == "skipped" and "release without system messages" in skipped.last_text
    again = run_cli("db", "downgrade", "0.1.0", env={"OUTREACH_DATABASE_URL": db_url})
    assert again.exit_code == 0 and "nothing to do" in again.output
    newer = run_cli("db", "downgrade", "0.2.0", env={"OUTREACH_DATABASE_URL": db_url})
    assert newer.exit_code == 1 and "0.2.0 is newer" in newer.output
    assert len(newer.output.strip().splitlines()) == 1
    unknown = run_cli("db", "downgrade", "0.9.1", env={"OUTREACH_DATABASE_URL": db_url})
    assert unknown.exit_code == 1 and "unknown release '0.9.1'" in unknown.output
    assert len(unknown.output.strip().splitlines()) == 1
    upgrade(db_url)
    assert status(db_url).current
