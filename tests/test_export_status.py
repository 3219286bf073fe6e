"""Exports say who left: status columns (suppressed, reason, since), --exclude-suppressed
for a mail merge, and an export imported back (a backup) keeps everyone who left suppressed."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import openpyxl
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from outreach.contacts import export_file, export_to_string, import_csv
from outreach.models import Contact, Suppression
from outreach.segments import not_suppressed
from outreach.suppressions import is_suppressed, suppress
from tests.conftest import write

CONTACTS = (
    "email,name,country,language,region\n"
    "kim@suwon.example.org,김수진,KR,ko,east-asia\n"
    "left@makati.example.com,Maria Santos,PH,en,south-east-asia\n"
    "gone@yokohama.example.com,Sato Haruka,JP,ja,east-asia\n"
)


@pytest.fixture
def some_left(session: Session, tmp_path: Path) -> Session:
    import_csv(session, write(tmp_path / "c.csv", CONTACTS))
    suppress(session, "left@makati.example.com", "unsubscribed")
    suppress(session, "gone@yokohama.example.com", "bounced", detail="550 5.1.1")
    session.commit()
    return session


def rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_an_export_says_who_is_suppressed_why_and_since_when(some_left: Session) -> None:
    text = export_to_string(some_left)
    header = text.splitlines()[0].split(",")
    assert header[-4:] == ["suppressed", "suppressed_reason", "suppressed_since", "region"]
    by_email = {row["email"]: row for row in rows(text)}
    assert by_email["kim@suwon.example.org"]["suppressed"] == "no"
    assert by_email["kim@suwon.example.org"]["suppressed_reason"] == ""
    assert by_email["kim@suwon.example.org"]["suppressed_since"] == ""
    left = by_email["left@makati.example.com"]
    assert (left["suppressed"], left["suppressed_reason"]) == ("yes", "unsubscribed")
    since = some_left.scalar(
        select(Suppression.created_at).where(Suppression.email == "left@makati.example.com")
    )
    assert since is not None and left["suppressed_since"] == since.isoformat(timespec="seconds")
    assert by_email["gone@yokohama.example.com"]["suppressed_reason"] == "bounced"


def test_exclude_suppressed_is_the_list_for_a_mail_merge(some_left: Session) -> None:
    text = export_to_string(some_left, not_suppressed())
    assert [row["email"] for row in rows(text)] == ["kim@suwon.example.org"]


def test_an_export_imports_back_unchanged_without_new_attributes(
    some_left: Session, tmp_path: Path
) -> None:
    exported = write(tmp_path / "backup.csv", export_to_string(some_left))
    result = import_csv(some_left, exported)
    assert result.unchanged == 3 and not result.errors
    assert result.attribute_columns == ["region"]  # the status columns are not attributes
    kim = some_left.scalar(select(Contact).where(Contact.email == "kim@suwon.example.org"))
    assert kim is not None and kim.attributes == {"region": "east-asia"}


def test_a_backup_imported_into_an_empty_database_keeps_who_left_suppressed(
    some_left: Session, tmp_path: Path, sqlite_template: Path
) -> None:
    """Restoring an export must never mail the people who left."""
    import shutil

    from outreach.db import reader_sessionmaker

    backup = write(tmp_path / "backup.csv", export_to_string(some_left))
    shutil.copy(sqlite_template, tmp_path / "fresh.db")
    with reader_sessionmaker(f"sqlite:///{tmp_path / 'fresh.db'}")() as fresh:
        dry = import_csv(fresh, backup, dry_run=True)
        assert dry.newly_suppressed == 2
        result = import_csv(fresh, backup)
        assert result.created == 3 and result.newly_suppressed == 2
        assert is_suppressed(fresh, "left@makati.example.com")
        assert is_suppressed(fresh, "gone@yokohama.example.com")
        assert not is_suppressed(fresh, "kim@suwon.example.org")
        reasons = dict(fresh.execute(select(Suppression.email, Suppression.reason)).all())
        assert reasons["gone@yokohama.example.com"] == "bounced"
        # And an import never lifts a suppression: "no" in the file changes nothing.
        lifted = backup.read_text(encoding="utf-8").replace(",yes,unsubscribed,", ",no,,")
        import_csv(fresh, write(tmp_path / "lifted.csv", lifted))
        assert is_suppressed(fresh, "left@makati.example.com")


def test_bad_status_cells_are_reported_on_their_line(session: Session, tmp_path: Path) -> None:
    path = write(
        tmp_path / "s.csv",
        "email,suppressed,suppressed_reason,suppressed_since\n"
        "a@example.org,perhaps,,\n"
        "b@example.org,yes,forgotten,\n"
        "c@example.org,yes,bounced,last week\n",
    )
    result = import_csv(session, path)
    reasons = {e.line: e.reason for e in result.errors}
    assert "suppressed 'perhaps': write yes or no" in reasons[2]
    assert "suppressed_reason 'forgotten'" in reasons[3] and "unsubscribed" in reasons[3]
    assert "suppressed_since 'last week'" in reasons[4]
    assert not result.written


def test_xlsx_export_has_the_status_columns(some_left: Session, tmp_path: Path) -> None:
    export_file(some_left, tmp_path / "c.xlsx")
    sheet = openpyxl.load_workbook(tmp_path / "c.xlsx").active
    assert sheet is not None
    header = [cell.value for cell in sheet[1]]
    assert "suppressed" in header and "suppressed_reason" in header
    values = {row[0]: row for row in sheet.iter_rows(min_row=2, values_only=True)}
    assert values["left@makati.example.com"][header.index("suppressed")] == "yes"


def test_cli_export_exclude_suppressed(
    some_left: Session, run_cli, tmp_path: Path, db_url: str
) -> None:  # type: ignore[no-untyped-def]
    env = {"OUTREACH_DATABASE_URL": db_url}
    everyone = run_cli("contacts", "export", env=env)
    assert everyone.exit_code == 0 and "left@makati.example.com" in everyone.output
    merge = run_cli("contacts", "export", "--exclude-suppressed", "-o", "merge.csv", env=env)
    assert merge.exit_code == 0, merge.output
    written = (tmp_path / "merge.csv").read_text(encoding="utf-8")
    assert "kim@suwon.example.org" in written and "left@" not in written and "gone@" not in written
    assert "1 contact written to merge.csv (2 suppressed left out)" in merge.output
    shown = run_cli("contacts", "export", "--help")
    assert "--exclude-suppressed" in shown.output and "mail merge" in shown.output
