"""Suppressions from the command line: forgotten stays forgotten, every argument is checked
before anything is changed, and lists a script can read."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from outreach.contacts import describe, forget, import_csv
from outreach.errors import NotFound, UserError
from outreach.models import Suppression, utcnow
from outreach.suppressions import is_suppressed, suppress, unsuppress
from tests.conftest import write

CONTACTS = (
    "email,name,organisation,country,language,tags,region\n"
    "mayor@suwon.example.org,김수진,수원특례시,KR,ko,newsletter;climate,east-asia\n"
    "intl@makati.example.com,Maria Santos,Makati,PH,en,,south-east-asia\n"
)


def lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.strip()]


def test_a_forgotten_address_cannot_be_unsuppressed(session: Session, tmp_path: Path) -> None:
    import_csv(session, write(tmp_path / "c.csv", CONTACTS))
    forget(session, "mayor@suwon.example.org")
    session.commit()
    with pytest.raises(UserError, match=r"was forgotten on .* never mailed again"):
        unsuppress(session, "Mayor@Suwon.example.org")
    assert is_suppressed(session, "mayor@suwon.example.org")


def test_forgetting_a_suppressed_address_dates_it_from_the_forgetting(
    session: Session, tmp_path: Path
) -> None:
    import_csv(session, write(tmp_path / "c.csv", CONTACTS))
    suppress(session, "mayor@suwon.example.org", "bounced", detail="550 5.1.1")
    long_ago = utcnow() - timedelta(days=400)
    session.execute(update(Suppression).values(created_at=long_ago))
    forget(session, "mayor@suwon.example.org")
    session.commit()
    doc = describe(session, "mayor@suwon.example.org")
    assert doc["forgotten"] is True
    assert doc["forgotten_at"][:10] == utcnow().date().isoformat()
    assert set(doc) == {"email", "forgotten", "forgotten_at"}  # nothing else is known


def test_show_of_an_address_without_contact_says_why(session: Session) -> None:
    with pytest.raises(NotFound, match=r"^no contact nobody@example\.org$"):
        describe(session, "nobody@example.org")
    suppress(session, "bounced@example.org", "bounced")
    with pytest.raises(NotFound, match=r"no contact bounced@example\.org; .* suppressed \(bounced"):
        describe(session, "bounced@example.org")


def test_cli_forgotten_address(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert run_cli("init").exit_code == 0
    write(tmp_path / "c.csv", CONTACTS)
    assert run_cli("contacts", "import", "c.csv").exit_code == 0
    assert run_cli("contacts", "forget", "mayor@suwon.example.org", "--yes").exit_code == 0
    today = utcnow().date().isoformat()

    shown = run_cli("contacts", "show", "mayor@suwon.example.org")
    assert shown.exit_code == 0, shown.output
    assert lines(shown.output) == [
        f"mayor@suwon.example.org was forgotten on {today}: its personal data is erased "
        "and it is never mailed again"
    ]
    as_json = run_cli("contacts", "show", "mayor@suwon.example.org", "--json")
    doc = json.loads(as_json.output)
    assert doc["forgotten"] is True and doc["forgotten_at"].startswith(today)

    refused = run_cli("suppressions", "remove", "mayor@suwon.example.org")
    assert refused.exit_code == 1
    assert lines(refused.output) == [
        f"error: mayor@suwon.example.org was forgotten on {today}: it is never mailed again, "
        "so its suppression stays"
    ]
    listed = json.loads(run_cli("suppressions", "list", "--json").output)
    assert [(s["email"], s["reason"]) for s in listed] == [("mayor@suwon.example.org", "forgotten")]
    again = run_cli("contacts", "forget", "mayor@suwon.example.org", "--yes")
    assert again.exit_code == 1 and "was forgotten on" in again.output


def test_cli_add_checks_every_address_before_suppressing_any(run_cli) -> None:  # type: ignore[no-untyped-def]
    assert run_cli("init").exit_code == 0
    result = run_cli("suppressions", "add", "a@example.org", "Bad Address", "b@example.org")
    assert result.exit_code == 1
    out = lines(result.output)
    assert len(out) == 1 and "'Bad Address'" in out[0] and "nothing suppressed" in out[0]
    assert "Traceback" not in result.output
    assert json.loads(run_cli("suppressions", "list", "--json").output) == []
    two_bad = run_cli("suppressions", "add", "x@", "a@example.org", "@y")
    assert two_bad.exit_code == 1 and len(lines(two_bad.output)) == 1
    assert "'x@'" in two_bad.output and "'@y'" in two_bad.output
    ok = run_cli("suppressions", "add", "a@example.org", "B@Example.org", "--note", "by phone")
    assert ok.exit_code == 0, ok.output
    assert lines(ok.output) == [
        "a@example.org: suppressed (manual)",
        "b@example.org: suppressed (manual)",
    ]


def test_cli_remove_checks_every_address_before_lifting_any(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert run_cli("init").exit_code == 0
    write(tmp_path / "c.csv", CONTACTS)
    assert run_cli("contacts", "import", "c.csv").exit_code == 0
    assert run_cli("suppressions", "add", "a@example.org").exit_code == 0
    assert run_cli("contacts", "forget", "intl@makati.example.com", "--yes").exit_code == 0
    for args in (
        ("a@example.org", "intl@makati.example.com"),
        ("a@example.org", "not suppressed@"),
        ("a@example.org", "never@example.org"),
    ):
        result = run_cli("suppressions", "remove", *args)
        assert result.exit_code == 1, args
        assert len(lines(result.output)) == 1, result.output
        assert "nothing lifted" in result.output
    assert {s["email"] for s in json.loads(run_cli("suppressions", "list", "--json").output)} == {
        "a@example.org",
        "intl@makati.example.com",
    }
    assert run_cli("suppressions", "remove", "A@example.org").exit_code == 0


def test_suppressions_list_json_is_whole(run_cli) -> None:  # type: ignore[no-untyped-def]
    assert run_cli("init").exit_code == 0
    long = "a.very.long.local.part.that.a.table.would.cut@" + "sub." * 12 + "example.org"
    note = "asked by phone on 3 March; " * 8
    assert run_cli("suppressions", "add", long, "--note", note).exit_code == 0
    assert run_cli("suppressions", "add", "b@example.org", "--reason", "bounced").exit_code == 0
    result = run_cli("suppressions", "list", "--json")
    assert result.exit_code == 0
    doc = json.loads(result.output)
    assert doc == [
        {
            "email": long,
            "reason": "manual",
            "since": doc[0]["since"],
            "detail": note,
            "campaign": None,
        },
        {
            "email": "b@example.org",
            "reason": "bounced",
            "since": doc[1]["since"],
            "detail": None,
            "campaign": None,
        },
    ]
    assert doc[0]["since"].endswith("+00:00")
    only = json.loads(run_cli("suppressions", "list", "--json", "--reason", "bounced").output)
    assert [s["email"] for s in only] == ["b@example.org"]


def test_contacts_show_json(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert run_cli("init").exit_code == 0
    write(tmp_path / "c.csv", CONTACTS)
    assert run_cli("contacts", "import", "c.csv").exit_code == 0
    assert run_cli("suppressions", "add", "mayor@suwon.example.org").exit_code == 0
    result = run_cli("contacts", "show", "Mayor@Suwon.example.org", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["email"] == "mayor@suwon.example.org" and doc["forgotten"] is False
    assert doc["name"] == "김수진" and doc["organisation"] == "수원특례시"
    assert doc["country"] == "KR" and doc["language"] == "ko"
    assert doc["tags"] == ["climate", "newsletter"]
    assert doc["attributes"] == {"region": "east-asia"}
    assert doc["suppression"]["reason"] == "manual"
    assert doc["history"] == []
    for key in ("created_at", "updated_at", "consent", "consent_at", "membership", "city"):
        assert key in doc
    plain = run_cli("contacts", "show", "intl@makati.example.com", "--json")
    assert json.loads(plain.output)["suppression"] is None
    missing = run_cli("contacts", "show", "nobody@example.org", "--json")
    assert missing.exit_code == 1 and "no contact nobody@example.org" in missing.output


def test_the_suppression_of_a_forgotten_address_keeps_no_detail(
    session: Session, tmp_path: Path
) -> None:
    """The suppression a forgotten address keeps has no detail that could identify it."""
    import_csv(session, write(tmp_path / "c.csv", CONTACTS))
    suppress(session, "mayor@suwon.example.org", "manual", detail="김수진 asked by phone")
    forget(session, "mayor@suwon.example.org")
    session.commit()
    row = session.scalar(select(Suppression))
    assert row is not None and row.detail == "erased on request"
