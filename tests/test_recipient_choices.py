"""What a recipient sets on their own preferences page wins over a re-import of the
office's spreadsheet, unless staff say --override-recipient-choices; a dry run lists which
rows change which fields."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from outreach.contacts import describe, get_contact, import_csv
from outreach.models import Contact, Delivery
from outreach.tokens import Tokens
from outreach.web import create_app
from tests.conftest import write
from tests.project import CONTACTS
from tests.sending_helpers import drain, project_with, send, settings_for

SECRET = "_6FuslupQUggb0oT5JRL-5S1KOu2C5jSHsLnhjAj"
# The office's spreadsheet as it was, imported again: Kim still says ko.
OFFICE = CONTACTS


@pytest.fixture
def chose_english(session: Session, db_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    """Kim (ko in the office's file) switched to English on her preferences page."""
    settings = settings_for(db_url, tmp_path, secret_key=SECRET)
    path = project_with(tmp_path, session)
    send(path, settings, session)
    drain(settings, session)
    delivery = session.scalar(
        select(Delivery.id)
        .join(Contact, Contact.id == Delivery.contact_id)
        .where(Contact.email == "kim@suwon.example.org")
    )
    session.commit()
    client = create_app(settings).test_client()
    token = Tokens(SECRET).sign("preferences", delivery)
    saved = client.post(f"/p/{token}", data={"action": "language", "language": "en"})
    assert saved.status_code == 200
    session.commit()
    return settings, tmp_path


def test_the_preferences_page_records_the_recipients_choice(
    chose_english, session: Session
) -> None:  # type: ignore[no-untyped-def]
    kim = get_contact(session, "kim@suwon.example.org")
    assert kim.language == "en"
    assert kim.language_chosen_at is not None
    shown = describe(session, "kim@suwon.example.org")
    assert shown["language_chosen_at"] == kim.language_chosen_at.isoformat()


def test_a_reimport_keeps_what_the_recipient_chose(chose_english, session: Session) -> None:  # type: ignore[no-untyped-def]
    _, tmp_path = chose_english
    office = OFFICE.replace("김수진,", "김수진 과장,")  # and the office renamed her
    result = import_csv(session, write(tmp_path / "again.csv", office))
    assert result.written and not result.errors
    assert (result.updated, result.unchanged, result.kept) == (1, 2, 1)
    kim = get_contact(session, "kim@suwon.example.org")
    assert (kim.name, kim.language) == ("김수진 과장", "en")
    assert kim.language_chosen_at is not None
    # The same file once more: nothing to write, her choice kept again.
    again = import_csv(session, write(tmp_path / "again.csv", office))
    assert (again.updated, again.unchanged, again.kept) == (0, 3, 1)
    assert get_contact(session, "kim@suwon.example.org").language == "en"


def test_an_empty_cell_does_not_clear_the_recipients_choice(
    chose_english, session: Session
) -> None:  # type: ignore[no-untyped-def]
    _, tmp_path = chose_english
    office = OFFICE.replace("KR,ko,full", "KR,,full")
    result = import_csv(session, write(tmp_path / "empty.csv", office))
    assert result.kept == 1
    assert get_contact(session, "kim@suwon.example.org").language == "en"


def test_staff_can_override_the_recipients_choice(chose_english, session: Session) -> None:  # type: ignore[no-untyped-def]
    _, tmp_path = chose_english
    result = import_csv(
        session, write(tmp_path / "again.csv", OFFICE), override_recipient_choices=True
    )
    assert (result.updated, result.kept) == (1, 0)
    kim = get_contact(session, "kim@suwon.example.org")
    # The file's value, and no longer the recipient's choice: the next import may change it.
    assert kim.language == "ko" and kim.language_chosen_at is None


def test_dry_run_lists_the_rows_and_fields_that_change(chose_english, session: Session) -> None:  # type: ignore[no-untyped-def]
    _, tmp_path = chose_english
    office = (
        OFFICE.replace("Maria Santos,Makati", "Maria Santos,Makati City")
        + "new@busan.example.org,박지훈,부산광역시,KR,ko,associate\n"
    )
    result = import_csv(session, write(tmp_path / "dry.csv", office), dry_run=True)
    assert not result.written
    assert (result.created, result.updated, result.unchanged, result.kept) == (1, 1, 2, 1)
    by_line = {change.line: change for change in result.changes}
    assert set(by_line) == {2, 3, 5}  # kim (kept), maria (changed), the new contact
    assert by_line[3].fields == {"organisation": ("Makati", "Makati City")}
    assert by_line[2].fields == {} and by_line[2].kept == {"language": ("en", "ko")}
    assert by_line[5].new
    assert get_contact(session, "kim@suwon.example.org").language == "en"
    assert get_contact(session, "maria@makati.example.com").organisation == "Makati"


def test_cli_says_how_many_rows_kept_a_recipients_choice(chose_english, run_cli) -> None:  # type: ignore[no-untyped-def]
    settings, tmp_path = chose_english
    env = {"OUTREACH_DATABASE_URL": settings.database_url}
    write(tmp_path / "office.csv", OFFICE)
    dry = run_cli("contacts", "import", "office.csv", "--dry-run", env=env)
    assert dry.exit_code == 0, dry.output
    assert "1 kept a recipient's own choice" in dry.output
    assert "kim@suwon.example.org" in dry.output and "language" in dry.output
    assert "--override-recipient-choices" in dry.output
    done = run_cli("contacts", "import", "office.csv", env=env)
    assert done.exit_code == 0, done.output
    assert "imported. 3 rows: 0 new, 0 updated, 3 unchanged, 0 invalid" in done.output
    assert "1 kept a recipient's own choice (language, set on their preferences page" in done.output
    as_json = run_cli("contacts", "import", "office.csv", "--dry-run", "--json", env=env)
    doc = json.loads(as_json.output)
    assert doc["kept_recipient_choices"] == 1 and doc["written"] is False
    (kim,) = [c for c in doc["changes"] if c["email"] == "kim@suwon.example.org"]
    assert kim["line"] == 2
    assert kim["kept"] == {"language": {"recipient": "en", "file": "ko"}}
    override = run_cli("contacts", "import", "office.csv", "--override-recipient-choices", env=env)
    assert override.exit_code == 0 and "1 updated" in override.output


def test_the_override_option_is_explained(run_cli) -> None:  # type: ignore[no-untyped-def]
    shown = run_cli("contacts", "import", "--help")
    assert "--override-recipient-choices" in shown.output
    assert "preferences page" in shown.output


def test_dry_run_table_of_changes(session: Session, tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    assert run_cli("init").exit_code == 0
    write(
        tmp_path / "a.csv", "email,name,country\nkim@example.org,Kim,KR\nlee@example.org,Lee,KR\n"
    )
    assert run_cli("contacts", "import", "a.csv").exit_code == 0
    write(
        tmp_path / "b.csv",
        "email,name,country\nkim@example.org,Kim Sujin,JP\nlee@example.org,Lee,KR\n",
    )
    dry = run_cli("contacts", "import", "b.csv", "--dry-run")
    assert dry.exit_code == 0, dry.output
    lines = [line for line in dry.output.splitlines() if "kim@example.org" in line]
    assert any("name" in line and "Kim Sujin" in line for line in lines), dry.output
    assert any("country" in line and "JP" in line for line in lines), dry.output
    assert "lee@example.org" not in dry.output  # unchanged rows are not listed


def test_migration_0009_down_and_up_keeps_every_contact(db_url: str) -> None:
    """Going back to 0008 drops only the note that the recipient chose; contacts, their
    language, tags and deliveries stay."""
    from alembic import command
    from sqlalchemy import inspect, text

    from outreach.db import alembic_config, engine_for, upgrade

    with engine_for(db_url).begin() as conn:
        conn.execute(
            text(
                "INSERT INTO contacts (id, email, language, language_chosen_at, attributes, "
                "created_at, updated_at) VALUES (1, 'kim@example.org', 'en', :t, '{}', :t, :t)"
            ),
            {"t": "2026-01-01 00:00:00"},
        )
        conn.execute(text("INSERT INTO contact_tags (contact_id, tag) VALUES (1, 'newsletter')"))
    command.downgrade(alembic_config(db_url), "0008")
    with engine_for(db_url).connect() as conn:
        assert conn.execute(text("SELECT email, language FROM contacts")).one() == (
            "kim@example.org",
            "en",
        )
        assert conn.execute(text("SELECT count(*) FROM contact_tags")).scalar() == 1
        columns = [c["name"] for c in inspect(conn).get_columns("contacts")]
        assert "language_chosen_at" not in columns
    upgrade(db_url)
    with engine_for(db_url).connect() as conn:
        assert conn.execute(text("SELECT language_chosen_at FROM contacts")).scalar() is None
