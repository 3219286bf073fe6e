from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from outreach.db import check_schema, current_revision, engine_for, head_revision, upgrade
from outreach.errors import UserError
from outreach.models import Base


def test_upgrade_from_empty_and_models_match(db_url: str) -> None:
    # db_url is already migrated from empty by the fixture; a second upgrade is a no-op.
    upgrade(db_url)
    assert current_revision(db_url) == head_revision()
    with engine_for(db_url).connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(ctx, Base.metadata) == []


def test_fresh_sqlite_from_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new.db'}"
    with pytest.raises(UserError, match="run `outreach init` first"):
        check_schema(url)
    upgrade(url)
    check_schema(url)
    tables = set(inspect(engine_for(url)).get_table_names())
    assert {
        "contacts",
        "contact_tags",
        "suppressions",
        "campaigns",
        "campaign_variants",
        "deliveries",
        "events",
        "rate_limits",
        "alembic_version",
    } <= tables
    with engine_for(url).connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_init_command(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = run_cli("init")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "outreach.db").exists()
    assert f"schema {head_revision()}" in result.output
    again = run_cli("init")
    assert again.exit_code == 0


def test_commands_refuse_an_uninitialised_database(run_cli) -> None:  # type: ignore[no-untyped-def]
    result = run_cli("suppressions", "list")
    assert result.exit_code != 0
    assert "run `outreach init` first" in result.output
    assert "Traceback" not in result.output


def test_downgrading_keeps_what_points_at_contacts(db_url: str) -> None:
    """Going back below 0004 drops two contact columns; on SQLite a table rebuild would
    drop the table with foreign keys on, deleting every tag and detaching every delivery."""
    from sqlalchemy import text

    with engine_for(db_url).begin() as conn:
        conn.execute(
            text(
                "INSERT INTO contacts (id, email, attributes, created_at, updated_at) "
                "VALUES (1, 'kim@example.org', '{}', :t, :t)"
            ),
            {"t": "2026-01-01 00:00:00"},
        )
        conn.execute(text("INSERT INTO contact_tags (contact_id, tag) VALUES (1, 'newsletter')"))
        conn.execute(
            text(
                "INSERT INTO campaigns (id, name, state, definition, expressions, created_at, "
                "updated_at) VALUES (1, 'news', 'done', '{}', '[]', :t, :t)"
            ),
            {"t": "2026-01-01 00:00:00"},
        )
        conn.execute(
            text(
                "INSERT INTO deliveries (id, campaign_id, contact_id, state, attempts, "
                "next_attempt_at, created_at, updated_at) VALUES (1, 1, 1, 'sent', 1, :t, :t, :t)"
            ),
            {"t": "2026-01-01 00:00:00"},
        )
    from alembic import command

    from outreach.db import alembic_config

    command.downgrade(alembic_config(db_url), "0003")
    with engine_for(db_url).connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM contact_tags")).scalar() == 1
        assert conn.execute(text("SELECT contact_id FROM deliveries")).scalar() == 1
    upgrade(db_url)


def test_system_campaigns_stored_before_0007_keep_mailing_the_unsubscribed(db_url: str) -> None:
    """A withdrawal notice queued before the upgrade must still go to the address that has
    just unsubscribed: the definition gets the key the worker now reads."""
    import json

    from alembic import command
    from sqlalchemy import text

    from outreach.db import alembic_config

    command.downgrade(alembic_config(db_url), "0006")
    names = ["_confirmation", "_consent-notice", "_result-consent", "_result-withdrawal", "news"]
    with engine_for(db_url).begin() as conn:
        for number, name in enumerate(names, 1):
            conn.execute(
                text(
                    "INSERT INTO campaigns (id, name, state, definition, expressions, "
                    "created_at, updated_at) VALUES (:id, :name, 'sending', :d, '[]', :t, :t)"
                ),
                {"id": number, "name": name, "d": json.dumps({"system": True}), "t": "2026-01-01"},
            )
    upgrade(db_url)
    with engine_for(db_url).connect() as conn:
        stored = {
            name: definition if isinstance(definition, dict) else json.loads(definition)
            for name, definition in conn.execute(text("SELECT name, definition FROM campaigns"))
        }
    assert {n: d.get("mails_unsubscribed") for n, d in stored.items()} == {
        "_confirmation": True,
        "_consent-notice": False,
        "_result-consent": False,
        "_result-withdrawal": True,
        "news": None,
    }


def test_downgrading_below_topics_keeps_every_consent_record(db_url: str) -> None:
    """0008 → 0007: the consent record of a topic stays, naming its topic in its source; the
    topics left go (0007 knows no topics), and the contact and its other records stay."""
    from alembic import command
    from sqlalchemy import text

    from outreach.db import alembic_config

    t = "2026-01-01 00:00:00"
    with engine_for(db_url).begin() as conn:
        conn.execute(
            text(
                "INSERT INTO contacts (id, email, attributes, created_at, updated_at) "
                "VALUES (1, 'kim@example.org', '{}', :t, :t)"
            ),
            {"t": t},
        )
        conn.execute(
            text(
                "INSERT INTO topics_left (contact_id, topic, at, source) VALUES (1, 'events', :t, 'one-click')"
            ),
            {"t": t},
        )
        for kind, topic, source in (
            ("opt-in", None, "form"),
            ("left", "events", "one-click"),
            ("joined", "newsletter", None),
        ):
            conn.execute(
                text(
                    "INSERT INTO consents (contact_id, kind, at, source, recorded_at, topic) "
                    "VALUES (1, :kind, :t, :source, :t, :topic)"
                ),
                {"kind": kind, "t": t, "source": source, "topic": topic},
            )
    command.downgrade(alembic_config(db_url), "0007")
    with engine_for(db_url).connect() as conn:
        rows = conn.execute(text("SELECT kind, source FROM consents ORDER BY id")).all()
        assert [tuple(r) for r in rows] == [
            ("opt-in", "form"),
            ("left", "topic events: one-click"),
            ("joined", "topic newsletter: "),
        ]
        assert "topics_left" not in inspect(conn).get_table_names()
        assert conn.execute(text("SELECT count(*) FROM contacts")).scalar() == 1
    upgrade(db_url)
    with engine_for(db_url).connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM consents")).scalar() == 3
