"""Stored text reaches the terminal without control characters or escape sequences."""

from __future__ import annotations

import pytest

from outreach.printable import one_line, printable


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("plain text, 한국어", "plain text, 한국어"),
        ("\x1b[2Jcleared", "cleared"),
        ("\x1b[31mred\x1b[0m", "red"),
        ("\x1b]0;new window title\x07after", "after"),
        ("\x1b]8;;https://evil.example/\x1b\\link\x1b]8;;\x1b\\", "link"),
        ("\x9b31mred", "red"),
        ("over\rwrite", "overwrite"),
        ("bell\x07 and \x00nul", "bell and nul"),
        ("\u202eevil\u202c", "evil"),
        ("keep\ttabs\nand lines", "keep\ttabs\nand lines"),
    ],
)
def test_printable(raw: str, shown: str) -> None:
    assert printable(raw) == shown


def test_one_line() -> None:
    assert one_line("a\n  b\x1b[1m\r\nc", 4) == "a b "


def test_the_cli_printers_strip_escapes(run_cli, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`contacts show` prints fields that anyone filling in a form may have typed."""
    from tests.conftest import write

    write(tmp_path / "c.csv", "email,name,city\nkim@example.org,Kim,Suwon\n")
    assert run_cli("init").exit_code == 0
    assert run_cli("contacts", "import", str(tmp_path / "c.csv")).exit_code == 0
    # Import refuses control characters; a row stored before it did, or written by another
    # tool, can still hold them.
    from sqlalchemy import update

    from outreach.db import session_scope
    from outreach.models import Contact

    with session_scope(f"sqlite:///{tmp_path / 'outreach.db'}") as session:
        session.execute(update(Contact).values(name="Kim\x1b[2J", city="Su\x1b]0;x\x07won"))
    shown = run_cli("contacts", "show", "kim@example.org")
    assert shown.exit_code == 0, shown.output
    assert "\x1b" not in shown.output and "\x07" not in shown.output
    assert "Kim" in shown.output and "Suwon" in shown.output
    missing = run_cli("contacts", "show", "\x1b[2Jnobody@example.org")
    assert missing.exit_code != 0 and "\x1b" not in missing.output


def test_import_errors_name_a_hostile_header_without_its_escapes(run_cli, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A column name is data too: the error lines of `contacts import` that quote it must
    not clear the screen or retitle the window."""
    from tests.conftest import write

    header = "email,\x1b]0;pwned\x07note\x1b[2J\n"
    write(tmp_path / "c.csv", header + "kim@example.org,bad\x01value\n")
    assert run_cli("init").exit_code == 0
    result = run_cli("contacts", "import", "c.csv")
    assert result.exit_code == 1
    assert "c.csv:2:" in result.output and "control character" in result.output
    for char in "\x1b\x07\x01":
        assert char not in result.output, repr(result.output)


def test_emoji_codes_in_data_print_as_written(run_cli, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import write

    write(tmp_path / "c.csv", "email,name,:smile:\nkim@example.org,:thumbs_up: Kim,:fire:\n")
    assert run_cli("init").exit_code == 0
    assert run_cli("contacts", "import", "c.csv").exit_code == 0
    shown = run_cli("contacts", "show", "kim@example.org")
    assert ":thumbs_up: Kim" in shown.output and ":fire:" in shown.output, shown.output
    assert "attributes.:smile:" in shown.output
    noted = run_cli("suppressions", "add", "kim@example.org", "--note", ":skull: asked")
    assert noted.exit_code == 0
    assert ":skull: asked" in run_cli("suppressions", "list").output


def test_a_preview_subject_from_stored_data_is_printable(run_cli, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import update

    from outreach.db import session_scope
    from outreach.models import Contact
    from tests.project import make_project

    make_project(tmp_path)
    assert run_cli("init").exit_code == 0
    assert run_cli("contacts", "import", "contacts.csv").exit_code == 0
    with session_scope(f"sqlite:///{tmp_path / 'outreach.db'}") as session:
        session.execute(update(Contact).values(name="Kim\x1b]0;pwned\x07 :smile:"))
    result = run_cli(
        "campaigns", "preview", "campaigns/news.yaml", "--contact", "maria@makati.example.com"
    )
    assert result.exit_code == 0, result.output
    assert "News for Kim :smile:" in result.output
    assert "\x1b" not in result.output and "\x07" not in result.output
