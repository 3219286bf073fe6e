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
