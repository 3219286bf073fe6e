"""Engines, sessions and migrations.

SQLite is tuned for several processes at once (WAL, a busy timeout, and BEGIN IMMEDIATE so
that a read-then-write transaction never fails on upgrading its lock); PostgreSQL is used as is.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from outreach.errors import UserError

MIGRATIONS = Path(__file__).parent / "migrations"


class DatabaseUnavailable(UserError):
    """The database does not answer (down, restarting, unreachable): worth trying again."""


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event decide how transactions start.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        # Writers take the write lock up front, so a read-then-write transaction waits its
        # turn instead of failing when it upgrades; readers (reader_session) do not block.
        if conn.get_execution_options().get("sqlite_deferred"):
            conn.exec_driver_sql("BEGIN")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")


# Sending threads a process runs. Each holds up to four pooled connections while it sends (its
# session, a reader, the outcome writer, a rate-limit reservation); the pools are sized for
# them, plus the process's own (lease watch, heartbeat), so no thread waits for a connection.
_sending_threads = 4


def size_pools(threads: int) -> None:
    """Size every connection pool of this process for `threads` sending threads (the
    worker's --workers); engines made before are let go."""
    global _sending_threads
    if threads == _sending_threads:
        return
    _sending_threads = threads
    for cached in (engine_for, writer_sessionmaker, reader_sessionmaker):
        cached.cache_clear()


@lru_cache(maxsize=8)
def engine_for(url: str) -> Engine:
    """One engine (and connection pool) per URL and process."""
    size = 4 * _sending_threads + 4
    if url.startswith("sqlite"):
        # An in-memory database lives in one connection: its pool takes no size.
        pool = {} if sqlite_file(url) is None else {"pool_size": size, "max_overflow": 10}
        engine = create_engine(
            url, connect_args={"timeout": 30, "check_same_thread": False}, **pool
        )
        _sqlite_setup(engine)
    else:
        engine = create_engine(url, pool_pre_ping=True, pool_size=size, max_overflow=10)
    return engine


@lru_cache(maxsize=8)
def writer_sessionmaker(url: str) -> sessionmaker[Session]:
    """Sessions that may write: on SQLite each transaction takes the write lock up front."""
    return sessionmaker(engine_for(url), expire_on_commit=False)


@lru_cache(maxsize=8)
def reader_sessionmaker(url: str) -> sessionmaker[Session]:
    """Sessions for reading: on SQLite they never hold the write lock."""
    engine = engine_for(url)
    return sessionmaker(engine.execution_options(sqlite_deferred=True), expire_on_commit=False)


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A session that commits on success and rolls back on any error."""
    session = writer_sessionmaker(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Create or migrate the database to the newest schema."""
    from alembic import command

    try:
        command.upgrade(alembic_config(url), revision)
    except OperationalError as exc:
        raise DatabaseUnavailable(
            f"cannot reach the database {safe_url(url)}: {exc.orig}"
        ) from None


def current_revision(url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine_for(url).connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return head


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite database URL; None for other databases and in-memory SQLite."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database).absolute()


def check_schema(url: str) -> None:
    """Refuse to run against a database that `outreach init` has not brought up to date.
    Never creates one: SQLite would make an empty file just by being asked."""
    path = sqlite_file(url)
    if path is not None and not path.is_file():
        here = Path.cwd().resolve()
        if path.resolve().parent == here:
            raise UserError(
                f"no outreach database here: {path} does not exist, so this folder ({here}) "
                "is not an outreach folder. cd to the folder you ran `outreach init` in, set "
                "OUTREACH_DATABASE_URL, or run `outreach init` first to make one here"
            )
        raise UserError(
            f"no outreach database at {path} (OUTREACH_DATABASE_URL, or database_url in "
            "outreach.toml): correct it, or run `outreach init` first to create it there"
        )
    try:
        revision = current_revision(url)
    except OperationalError as exc:
        raise DatabaseUnavailable(
            f"cannot reach the database {safe_url(url)}: {exc.orig}"
        ) from None
    if revision is None:
        raise UserError(f"the database {safe_url(url)} is empty; run `outreach init` first")
    if revision != head_revision():
        raise UserError(
            f"the database {safe_url(url)} is at schema {revision}, this outreach needs "
            f"{head_revision()}; run `outreach init` to migrate it"
        )


def safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def ping(url: str) -> None:
    with engine_for(url).connect() as conn:
        conn.execute(text("SELECT 1"))


class RawStatement:
    """A statement compiled once per dialect and run straight on the driver.

    SQLAlchemy's per-call statement building, cache-key generation and parameter handling
    cost more than the database's own work on the hot paths (bulk loads, a delivery's
    outcome). Bind processors still run, so datetimes and JSON are stored exactly as the
    ORM stores them.
    """

    def __init__(self, stmt: Any, keys: list[str] | None = None) -> None:
        self.stmt = stmt
        self.keys = keys
        self._compiled: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {}

    def _compile(self, dialect: Any) -> tuple[str, dict[str, Any], dict[str, Any]]:
        cached = self._compiled.get(dialect.name)
        if cached is None:
            named = dialect
            if dialect.name == "sqlite":
                from sqlalchemy.dialects import sqlite

                named = sqlite.dialect(paramstyle="named")
            compiled = self.stmt.compile(dialect=named, column_keys=self.keys)
            processors = {}
            for name, bind in compiled.binds.items():
                proc = bind.type.dialect_impl(dialect).bind_processor(dialect)
                if proc is not None:
                    processors[name] = proc
            # Values fixed in the statement itself (constants, NULLs) travel as parameters too.
            fixed = {
                name: bind.value
                for name, bind in compiled.binds.items()
                if not bind.required
                and bind.callable is None
                and (self.keys is None or name not in self.keys)
            }
            cached = (compiled.string, processors, fixed)
            self._compiled[dialect.name] = cached
        return cached

    def execute(self, conn: Any, params: dict[str, Any] | list[dict[str, Any]]) -> Any:
        sql, params = self._prepare(conn.dialect, params)
        return conn.exec_driver_sql(sql, params)

    def execute_many(self, tx: DriverTransaction, rows: list[dict[str, Any]]) -> None:
        """executemany on a driver transaction (see DriverTransaction)."""
        sql, prepared = self._prepare(tx.dialect, rows)
        tx.cursor.executemany(sql, prepared)

    def _prepare(self, dialect: Any, params: Any) -> tuple[str, Any]:
        sql, processors, fixed = self._compile(dialect)
        rows = params if isinstance(params, list) else [params]
        if fixed:
            rows = [{**fixed, **row} for row in rows]
            params = rows if isinstance(params, list) else rows[0]
        if processors:
            memo: dict[tuple[str, Any], Any] = {}
            for row in rows:  # converted in place: callers hand over rows built for the call
                for name, proc in processors.items():
                    value = row.get(name)
                    if value is None:
                        continue
                    if isinstance(value, dict | list):
                        row[name] = proc(value)
                        continue
                    key = (name, value)
                    if key not in memo:
                        memo[key] = proc(value)
                    row[name] = memo[key]
        return sql, params if isinstance(params, list) else rows[0]


@dataclass
class DriverTransaction:
    """A transaction on a driver connection: what RawStatement.execute_many runs on."""

    cursor: Any
    dialect: Any


class DriverConnection:
    """A pooled driver connection held for a while (a sender's run), for a hot path that
    writes groups of rows with RawStatement, where a Connection's bookkeeping, and a pool
    checkout with its pre-ping for every transaction, would cost more than the statement."""

    def __init__(self, engine: Engine) -> None:
        self.dialect = engine.dialect
        self._pooled = engine.raw_connection()
        dbapi = self._pooled.dbapi_connection
        assert dbapi is not None
        self.dbapi: Any = dbapi

    @contextmanager
    def transaction(self) -> Iterator[DriverTransaction]:
        """One transaction, committed when the block ends well and rolled back otherwise.
        On SQLite the write lock is taken up front, as writer sessions take it."""
        cursor = self.dbapi.cursor()
        try:
            if self.dialect.name == "sqlite":  # the driver is in autocommit (see _sqlite_setup)
                cursor.execute("BEGIN IMMEDIATE")
            yield DriverTransaction(cursor, self.dialect)
            self.dbapi.commit()
        except BaseException:
            self.dbapi.rollback()
            raise
        finally:
            cursor.close()

    def close(self) -> None:
        self._pooled.close()

    def __enter__(self) -> DriverConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def bulk_execute(conn: Any, stmt: Any, rows: list[dict[str, Any]]) -> None:
    """executemany of one statement over many rows, compiled once (see RawStatement)."""
    if rows:
        RawStatement(stmt, list(rows[0])).execute(conn, rows)
