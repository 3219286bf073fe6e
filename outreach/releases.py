"""Releases and their schemas: which release of outreach a database's schema belongs to, and
going back to an earlier release's schema without losing what it can hold.

Each release is a version and the Alembic revision its schema ends at. Earlier releases are
fixed here; the release being made is this package's version at the head of the migrations
it ships, so a migration added for it needs no change in this file. A revision belongs to the
first release whose revision is it or comes after it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, column, create_engine, func, inspect, select, table

from outreach import __version__
from outreach.db import (
    alembic_config,
    current_revision,
    engine_for,
    head_revision,
    safe_url,
    sqlite_file,
)
from outreach.errors import UserError
from outreach.printable import counted

# (version, the schema revision it shipped with), oldest first. Append a line when a
# release is made: its version, and the head revision of the commit that is released.
EARLIER: tuple[tuple[str, str], ...] = (
    ("0.1.0", "0001"),  # commit 5b62dd8
    ("0.2.0", "0007"),  # commit de549ba
)


@dataclass(frozen=True)
class Release:
    version: str
    revision: str


def releases() -> list[Release]:
    """Every release, oldest first; the last is this one."""
    return [Release(v, r) for v, r in EARLIER] + [Release(__version__, head_revision())]


def _script() -> Any:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://"))


def chain() -> list[str]:
    """Every revision this package ships, oldest first (the history is one line)."""
    return [s.revision for s in reversed(list(_script().walk_revisions()))]


def release_of(revision: str) -> Release | None:
    """The release a revision belongs to; None for a revision this package does not ship
    (a newer release made the database)."""
    order = chain()
    if revision not in order:
        return None
    position = order.index(revision)
    for release in releases():
        if order.index(release.revision) >= position:
            return release
    return None  # pragma: no cover - the last release is at the head


def find(version: str) -> Release:
    for release in releases():
        if release.version == version.removeprefix("v"):
            return release
    known = ", ".join(r.version for r in releases())
    raise UserError(f"unknown release {version!r}; the releases are {known}")


@dataclass(frozen=True)
class SchemaStatus:
    url: str
    revision: str | None
    release: Release | None
    expected: Release

    @property
    def current(self) -> bool:
        return self.revision == self.expected.revision

    def lines(self) -> list[str]:
        where = safe_url(self.url)
        if self.revision is None:
            return [f"{where}: empty (no schema); run `outreach init` to create it"]
        if self.release is None:
            return [
                f"{where}: schema {self.revision}, which outreach {__version__} does not know: "
                "a newer release made it; run that release, or its `outreach db downgrade "
                f"{__version__}`"
            ]
        head = f"{where}: schema {self.revision}, release {self.release.version}"
        if self.current:
            return [f"{head}; outreach {__version__} expects this schema"]
        return [
            f"{head}; outreach {__version__} expects {self.expected.revision}: run "
            "`outreach init` to upgrade"
        ]

    def as_json(self) -> dict[str, Any]:
        return {
            "database": safe_url(self.url),
            "revision": self.revision,
            "release": self.release.version if self.release else None,
            "expected_revision": self.expected.revision,
            "version": __version__,
            "current": self.current,
        }


def status(url: str) -> SchemaStatus:
    """What schema the database is at. Never creates a database."""
    from sqlalchemy.exc import OperationalError

    path = sqlite_file(url)
    if path is not None and not path.is_file():
        raise UserError(f"no outreach database at {path}; run `outreach init` to create it")
    try:
        revision = current_revision(url)
    except OperationalError as exc:
        raise UserError(f"cannot reach the database {safe_url(url)}: {exc.orig}") from None
    return SchemaStatus(url, revision, release_of(revision) if revision else None, releases()[-1])


@dataclass
class Plan:
    """A downgrade worked out before anything changes: where from and to, and what the
    older schema cannot hold, one line each."""

    url: str
    source: Release
    target: Release
    from_revision: str
    losses: list[str] = field(default_factory=list)

    @property
    def noop(self) -> bool:
        return self.from_revision == self.target.revision


def _columns(conn: Connection) -> dict[str, set[str]]:
    found = inspect(conn)
    return {
        name: {c["name"] for c in found.get_columns(name)}
        for name in found.get_table_names()
        if name != "alembic_version"
    }


def schema_of(revision: str) -> dict[str, set[str]]:
    """The tables and columns of a revision, from migrating an empty in-memory database."""
    from alembic import command

    engine = create_engine("sqlite://")
    try:
        with engine.begin() as conn:
            config = alembic_config("sqlite://")
            config.attributes["connection"] = conn
            command.upgrade(config, revision)
            return _columns(conn)
    finally:
        engine.dispose()


def _count(conn: Connection, name: str, column_name: str | None = None) -> int:
    """Rows of a table, or its rows with a value in a column."""
    counted = func.count() if column_name is None else func.count(column(column_name))
    return int(conn.execute(select(counted).select_from(table(name))).scalar_one())


def _hooks(from_revision: str, to_revision: str) -> list[Callable[[Connection], list[str]]]:
    """The `losses(conn)` functions of the migrations a downgrade undoes: what a migration's
    downgrade changes beyond dropping tables and columns, said before it is done."""
    script = _script()
    hooks = []
    for revision in script.iterate_revisions(from_revision, to_revision):
        if revision.revision == to_revision:
            continue
        hook = getattr(revision.module, "losses", None)
        if hook is not None:
            hooks.append(hook)
    return hooks


def plan_downgrade(url: str, version: str) -> Plan:
    target = find(version)
    now = status(url)
    if now.revision is None:
        raise UserError(f"{safe_url(url)} has no schema yet; nothing to downgrade")
    if now.release is None:
        raise UserError(now.lines()[0])
    order = chain()
    if order.index(target.revision) > order.index(now.revision):
        raise UserError(
            f"the database is at release {now.release.version} (schema {now.revision}); "
            f"{target.version} is newer: upgrade with `outreach init` of {target.version}"
        )
    plan = Plan(url, now.release, target, now.revision)
    if plan.noop:
        return plan
    kept = schema_of(target.revision)
    with engine_for(url).connect() as conn:
        present = _columns(conn)
        for name in sorted(present):
            if name not in kept:
                n = _count(conn, name)
                if n:
                    plan.losses.append(
                        f"{counted(n, 'row')} of {name} (release {target.version} has no such "
                        "table)"
                    )
                continue
            for column in sorted(present[name] - kept[name]):
                n = _count(conn, name, column)
                if n:
                    plan.losses.append(
                        f"{counted(n, 'value')} of {name}.{column} (release {target.version} "
                        "has no such column)"
                    )
        for hook in _hooks(now.revision, target.revision):
            plan.losses.extend(hook(conn))
        conn.rollback()
    return plan


def downgrade(plan: Plan) -> list[str]:
    """Take the schema back as planned. Returns a line for every table that lost rows it
    kept before (none, unless a migration's downgrade deletes some)."""
    from alembic import command

    if plan.noop:
        return []
    kept = schema_of(plan.target.revision)
    with engine_for(plan.url).connect() as conn:
        before = {name: _count(conn, name) for name in _columns(conn) if name in kept}
        conn.rollback()
    command.downgrade(alembic_config(plan.url), plan.target.revision)
    engine_for(plan.url).dispose()
    removed = []
    with engine_for(plan.url).connect() as conn:
        for name, n in sorted(before.items()):
            after = _count(conn, name)
            if after < n:
                removed.append(f"{counted(n - after, 'row')} of {name} removed by the downgrade")
        conn.rollback()
    return removed
