"""A worker started while its database or queue does not answer waits for it, one line a
minute, then exits 75 (EX_TEMPFAIL) for its supervisor; a running worker that loses them
stops itself the same way; tasks an earlier release left in the queue are dropped with one
line each kind (issue 26, item 4; issue 20, items 3 and 4). Real `outreach worker`
processes, a real redis-server."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from huey import SqliteHuey
from huey.registry import Message
from sqlalchemy import func, select

from outreach.db import reader_sessionmaker
from outreach.models import WorkerBeat
from tests.sending_helpers import settings_for
from tests.smtp_server import free_port
from tests.workers import wait_for, worker_env


def _worker(settings, log: Path, *args: str) -> subprocess.Popen[bytes]:  # type: ignore[no-untyped-def]
    return subprocess.Popen(
        [sys.executable, "-m", "outreach", "worker", "--workers", "1", *args],
        env=worker_env(settings),
        stdout=subprocess.DEVNULL,
        stderr=log.open("ab"),
        cwd=log.parent,
    )


def _alive(settings) -> int:  # type: ignore[no-untyped-def]
    with reader_sessionmaker(settings.database_url)() as session:
        return int(session.scalar(select(func.count()).select_from(WorkerBeat)) or 0)


def test_a_database_that_does_not_answer_is_waited_for_then_exit_75(tmp_path: Path) -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/outreach"
    settings = settings_for(url, tmp_path, queue_url=f"sqlite:///{tmp_path / 'queue.db'}")
    log = tmp_path / "worker.log"
    started = time.monotonic()
    process = _worker(settings, log, "--wait", "3")
    assert process.wait(timeout=60) == 75
    assert time.monotonic() - started >= 3
    lines = log.read_text().strip().splitlines()
    assert "Traceback" not in log.read_text()
    assert len(lines) == 2, lines
    assert "cannot reach the database" in lines[0] and "waits for it" in lines[0]
    assert lines[1].startswith("error: cannot reach the database") and "(EX_TEMPFAIL)" in lines[1]


@pytest.fixture
def redis_port(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A port for a redis-server the test starts (and stops) itself."""
    port = free_port()
    servers: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        servers.append(
            subprocess.Popen(
                [
                    "redis-server",
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(tmp_path),
                ],
                stdout=subprocess.DEVNULL,
            )
        )

    yield port, start, servers
    for server in servers:
        server.kill()
        server.wait(timeout=10)


def test_a_worker_started_before_its_queue_waits_and_a_lost_queue_stops_it_with_75(
    sqlite_url: str, tmp_path: Path, redis_port
) -> None:  # type: ignore[no-untyped-def]
    port, start_redis, servers = redis_port
    settings = settings_for(sqlite_url, tmp_path, queue_url=f"redis://127.0.0.1:{port}/0")
    log = tmp_path / "worker.log"
    # Long enough that a heartbeat (every 2 s) late on a loaded machine does not trip it
    # first: what stops the worker is the queue.
    worker = _worker(settings, log, "--wait", "60", "--self-check", "8")
    try:
        wait_for(lambda: "waits for it" in log.read_text(), 30, "the waiting line", log)
        assert _alive(settings) == 0
        start_redis()
        wait_for(lambda: _alive(settings) == 1, 30, "the worker to start", log)
        assert worker.poll() is None
        servers[0].kill()  # the queue goes away under a running worker
        servers[0].wait(timeout=10)
        assert worker.wait(timeout=60) == 75
    finally:
        if worker.poll() is None:
            worker.kill()
    text = log.read_text()
    assert "Traceback" not in text, text
    assert text.count("waits for it") == 1
    assert text.count("self-check failed: the queue has not answered for 8 s") == 1
    assert _alive(settings) == 0  # it stopped cleanly: its heartbeat row is gone


def test_tasks_an_earlier_release_queued_are_dropped_with_one_line_each_kind(
    sqlite_url: str, tmp_path: Path
) -> None:
    """0.1.0 registered its tasks in `outreach.queue`; what it left in a SQLite queue is
    written here byte for byte as its huey wrote it."""
    queue = tmp_path / "queue.db"
    old = SqliteHuey("outreach", filename=str(queue), results=False, utc=True)
    for n in range(30):
        name = (
            "outreach.queue.outreach.send_campaign" if n % 10 else "outreach.queue.outreach.sweep"
        )
        message = Message(str(uuid.uuid4()), name, None, 0, 0, None, (1,) if n % 10 else (), {})
        old.storage.enqueue(old.serializer.serialize(message), 0)
    assert old.pending_count() == 30
    settings = settings_for(sqlite_url, tmp_path, queue_url=f"sqlite:///{queue}")
    log = tmp_path / "worker.log"
    worker = _worker(settings, log)
    try:
        wait_for(lambda: _alive(settings) == 1, 30, "the worker to start", log)
        wait_for(lambda: old.storage.queue_size() == 0, 30, "the old tasks to go", log)
        time.sleep(1)
    finally:
        worker.terminate()
        assert worker.wait(timeout=30) == 0
    text = log.read_text()
    assert "Traceback" not in text, text
    dropped = [line for line in text.splitlines() if "dropped" in line]
    assert len(dropped) == 2, dropped
    assert any("outreach.queue.outreach.send_campaign" in line for line in dropped)
    assert any("outreach.queue.outreach.sweep" in line for line in dropped)
