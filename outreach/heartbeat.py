"""Worker heartbeats: every `outreach worker` process writes, every two seconds, that it is
alive. `campaigns status` and `outreach health` read them to tell "nobody is sending" from
"sending slowly", and `outreach worker --check` to give a container health check something
to ask.

A beat is one small write every BEAT_SECONDS from a thread of its own, never one per message.
A worker on this host is alive only while its process is (a `kill -9` shows at once); one on
another host while it beat within ALIVE_SECONDS.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from outreach.db import writer_sessionmaker
from outreach.models import WorkerBeat, utcnow

log = logging.getLogger("outreach.heartbeat")

BEAT_SECONDS = 2.0
# A worker of another host not heard from for this long is taken for gone (seven missed
# beats: a busy database or a short pause of the process is not death).
ALIVE_SECONDS = 15.0
# Rows of workers that died without saying so are kept this long, then dropped.
KEEP = timedelta(days=1)
START_HINT = "start `outreach worker`"


def this_process() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: it exists
    return True


def is_alive(row: WorkerBeat, now: datetime, within: float = ALIVE_SECONDS) -> bool:
    """A worker beat within `within` seconds and, on this host, its process still runs."""
    if row.seen_at < now - timedelta(seconds=within):
        return False
    return row.host != socket.gethostname() or _running(row.pid)


def beat(session: Session, name: str, *, threads: int, now: datetime | None = None) -> None:
    """Record that the worker process `name` (host:pid) is alive. The caller commits."""
    now = now or utcnow()
    moved = session.execute(
        update(WorkerBeat)
        .where(WorkerBeat.name == name)
        .values(seen_at=now, threads=threads)
        .execution_options(synchronize_session=False)
    )
    if not moved.rowcount:  # type: ignore[attr-defined]
        host, _, pid = name.rpartition(":")
        session.add(
            WorkerBeat(
                name=name, host=host, pid=int(pid), threads=threads, started_at=now, seen_at=now
            )
        )
        session.flush()


def stopped(session: Session, name: str) -> None:
    """A worker that stops cleanly says so: it is not alive any more."""
    session.execute(delete(WorkerBeat).where(WorkerBeat.name == name))


def prune(session: Session, now: datetime | None = None) -> None:
    session.execute(delete(WorkerBeat).where(WorkerBeat.seen_at < (now or utcnow()) - KEEP))


def ago(delta: timedelta) -> str:
    """A time span as a person says it: "5 minutes", "1 hour", "40 seconds"."""
    n, unit = max(0, int(delta.total_seconds())), "second"
    for name, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if n >= size:
            n, unit = n // size, name
            break
    return f"{n} {unit}" + ("" if n == 1 else "s")


@dataclass(frozen=True)
class Workers:
    """What the heartbeats say about the workers of this installation."""

    alive: int
    last_seen: datetime | None
    now: datetime

    def note(self) -> str | None:
        """Why nothing moves, when no worker is alive."""
        if self.alive:
            return None
        if self.last_seen is None:
            return f"no worker has been seen — {START_HINT}"
        return f"no worker has been seen for {ago(self.now - self.last_seen)} — {START_HINT}"

    def as_json(self) -> dict[str, Any]:
        return {
            "alive": self.alive,
            "last_seen": self.last_seen.isoformat() if self.last_seen else None,
        }


def workers(session: Session, now: datetime | None = None) -> Workers:
    now = now or utcnow()
    recent = session.scalars(
        select(WorkerBeat).where(WorkerBeat.seen_at >= now - timedelta(seconds=ALIVE_SECONDS))
    ).all()
    last = session.scalar(select(func.max(WorkerBeat.seen_at)))
    return Workers(sum(1 for row in recent if is_alive(row, now)), last, now)


@dataclass(frozen=True)
class HostCheck:
    host: str
    alive: list[WorkerBeat]
    last_seen: datetime | None
    within: float
    now: datetime

    @property
    def ok(self) -> bool:
        return bool(self.alive)

    def message(self) -> str:
        if self.alive:
            newest = max(w.seen_at for w in self.alive)
            names = ", ".join(sorted(w.name for w in self.alive))
            return (
                f"ok: {len(self.alive)} worker process(es) alive on {self.host} ({names}); "
                f"last beat {ago(self.now - newest)} ago"
            )
        last = "never" if self.last_seen is None else f"{ago(self.now - self.last_seen)} ago"
        return (
            f"no worker on {self.host} has beaten in the last {self.within:.0f} s (last: "
            f"{last}); {START_HINT}, or see its log"
        )


def check_host(
    session: Session, host: str, within: float = ALIVE_SECONDS, now: datetime | None = None
) -> HostCheck:
    """The workers of one host (a container's hostname) that beat within `within` seconds."""
    now = now or utcnow()
    rows = list(session.scalars(select(WorkerBeat).where(WorkerBeat.host == host)))
    alive = [w for w in rows if is_alive(w, now, within)]
    last = max((w.seen_at for w in rows), default=None)
    return HostCheck(host, alive, last, within, now)


class Heartbeat:
    """Beats for this process from a thread of its own until `stop`, which removes the row."""

    def __init__(self, database_url: str, threads: int, interval: float = BEAT_SECONDS) -> None:
        self.session_factory = writer_sessionmaker(database_url)
        self.threads, self.interval = threads, interval
        self.name = this_process()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="outreach-heartbeat", daemon=True)
        # When a beat was last written (time.monotonic()): the worker's self-check reads it.
        self.written = 0.0
        self._failing = False

    def first(self) -> None:
        """The first beat, written at once (it raises when the database does not answer)."""
        with self.session_factory() as session:
            prune(session)
            beat(session, self.name, threads=self.threads)
            session.commit()
        self.written = time.monotonic()

    def start(self) -> None:
        """Beat from now on (after `first`)."""
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                with self.session_factory() as session:
                    beat(session, self.name, threads=self.threads)
                    session.commit()
                self.written = time.monotonic()
                if self._failing:
                    log.info("heartbeat written again")
                self._failing = False
            except Exception as exc:  # a database hiccup must not stop the worker
                if not self._failing:  # one line when it starts failing, not one a beat
                    log.warning("heartbeat not written: %s", " ".join(str(exc).split())[:300])
                self._failing = True

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.interval + 5)
        try:
            with self.session_factory() as session:
                stopped(session, self.name)
                session.commit()
        except Exception as exc:
            log.warning("heartbeat row not removed: %s", exc)
