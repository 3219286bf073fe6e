"""What every command shares: the settings, the database sessions, the consoles that
print data safely, and one-line errors."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from outreach.config import Settings
from outreach.errors import FileErrors, UserError
from outreach.printable import printable

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


class PrintableConsole(Console):
    """A console whose text is printed through `printable`: names, subjects, file names and
    error lines carry data (a CSV header, a contact field), and no escape sequence in them
    may reach the terminal. Tables and Text are made printable where they are built."""

    def print(self, *objects: Any, **kwargs: Any) -> None:
        super().print(*(printable(o) if isinstance(o, str) else o for o in objects), **kwargs)


# No markup and no emoji codes: user text ("include: [a, b]", "[TEST ko]", ":smile:") must
# print as it is.
console = PrintableConsole(highlight=False, markup=False, emoji=False)
err_console = PrintableConsole(stderr=True, highlight=False, markup=False, emoji=False)
# Wide enough that no table is ever cut to fit: what a file or a program reads has no width.
PIPED_WIDTH = 100_000


def whole_when_piped() -> None:
    """Output to a file or another program is never wrapped at 80 columns, and no table cell
    is cut with …: scripts parse it and people paste it into tickets. At a terminal, rich
    fits it to the window as usual."""
    for stream in (console, err_console):
        if not stream.is_terminal:
            stream.soft_wrap = True
            stream.width = PIPED_WIDTH


def labelled(label: str, style: str, text: object) -> Text:
    return Text.assemble((label, style), " ", printable(text))


class App:
    """Lazily loaded settings, shared by every command of one invocation."""

    def __init__(self) -> None:
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = Settings.load()
        return self._settings

    def database(self, *, check: bool = True) -> str:
        from outreach.db import check_schema

        url = self.settings.database_url
        if check:
            check_schema(url)
        return url

    @contextmanager
    def session(self) -> Iterator[Session]:
        """The one way commands open the database: committed on success, else rolled back."""
        from outreach.db import session_scope

        with session_scope(self.database()) as session:
            yield session

    @contextmanager
    def reader(self) -> Iterator[Session]:
        """For commands that only read: on SQLite it never takes the write lock."""
        from outreach.db import reader_sessionmaker

        with reader_sessionmaker(self.database())() as session:
            yield session

    @contextmanager
    def optional_session(self, warn: str | None = None) -> Iterator[Session | None]:
        """A reading session when the database is initialised, else None (file-only checks);
        with `warn`, why there is none is printed as a warning ending with `warn`."""
        from outreach.db import check_schema

        try:
            check_schema(self.settings.database_url)
        except UserError as exc:
            if warn:
                err_console.print(labelled("warning:", "yellow", f"{exc}; {warn}"), soft_wrap=True)
            yield None
            return
        with self.reader() as session:
            yield session


pass_app = click.make_pass_decorator(App, ensure=True)


class OutreachGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except FileErrors as exc:
            for error in exc.errors:
                err_console.print(labelled("error:", "red", error), soft_wrap=True)
            sys.exit(exc.exit_code)
        except UserError as exc:
            err_console.print(labelled("error:", "red", exc), soft_wrap=True)
            sys.exit(exc.exit_code)


def confirmed(yes: bool, question: str, refusal: str) -> bool:
    """Whether to go on with something that cannot be undone: --yes, or a "y" typed at a
    terminal. Not at a terminal (a script, cron) without --yes, one line saying what to add
    instead of click's bare "Aborted!"."""
    if yes:
        return True
    if not sys.stdin.isatty():
        raise UserError(f"{refusal}: not at a terminal, so nobody can answer; pass --yes")
    return click.confirm(question)


def print_table(title: str | None, columns: list[str], rows: list[list[Any]]) -> None:
    # Cells and titles are stored text (contact fields, bounce diagnostics): no escapes.
    table = Table(title=None if title is None else printable(title), show_lines=False)
    for column in columns:
        table.add_column(printable(column))
    for row in rows:
        table.add_row(*("" if v is None else printable(v) for v in row))
    console.print(table)


def minute(iso: str | None) -> str | None:
    """An ISO 8601 UTC time from a JSON document, to the minute, for a table."""
    return f"{iso[:16].replace('T', ' ')} UTC" if iso else iso


# One spelling of the option for every command that reads segments.
segments_file_option = click.option(
    "--segments-file",
    type=click.Path(path_type=Path),
    default=Path("campaigns/segments.yaml"),
    show_default=True,
    help="The segments file.",
)
