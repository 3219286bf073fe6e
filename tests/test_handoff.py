"""Hand-offs without a stall: claims a worker gives back, or leaves behind when it dies, are
taken up by a live worker at once, not at the next minute's sweep or at the lease's end."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy.orm import Session

from outreach import store
from outreach.config import parse_rate
from outreach.lifecycle import send_campaign
from outreach.tasks import enqueuer, requeue_expired
from tests.sending_helpers import campaign_id, contacts_csv, current, project_with, settings_for
from tests.smtp_server import Handler, SmtpServer, free_port, start_server
from tests.workers import Worker, wait_for


class SlowHandler(Handler):
    """Accepts every message after a pause: a worker sending to it is slow."""

    pause = 0.25

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        await asyncio.sleep(self.pause)
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def fast() -> Iterator[SmtpServer]:
    server = start_server()
    yield server
    server.stop()


@pytest.fixture
def slow() -> Iterator[SmtpServer]:
    handler = SlowHandler()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)  # type: ignore[arg-type]
    controller.start()
    server = SmtpServer(handler, controller, port, f"smtp://127.0.0.1:{port}?tls=none&timeout=5")
    yield server
    server.stop()


def alive_workers(db_url: str) -> int:
    from outreach.db import reader_sessionmaker
    from outreach.heartbeat import workers

    with reader_sessionmaker(db_url)() as session:
        return workers(session).alive


@pytest.mark.integration
def test_a_stopped_worker_hands_its_claims_to_an_idle_one_at_once(
    session: Session, db_url: str, tmp_path: Path, fast: SmtpServer, slow: SmtpServer
) -> None:
    n = 30
    # One batch holds the whole campaign, and leases last long: only a hand-off can help.
    settings = settings_for(
        db_url,
        tmp_path,
        smtp_url=fast.url,
        queue_url=f"sqlite:///{tmp_path / 'queue.db'}",
        rate=parse_rate("0"),
        batch_size=100,
        lease_seconds=120,
    )
    path = project_with(tmp_path, session, csv=contacts_csv(n))
    session.commit()
    send_campaign(path, settings, session, enqueuer(settings))
    log_a, log_b = tmp_path / "a.log", tmp_path / "b.log"
    with Worker(settings, log_a, 1, OUTREACH_SMTP_URL=slow.url) as a:
        wait_for(lambda: len(slow.handler.received) >= 3, 30, "A to be sending", log_a)
        with Worker(settings, log_b, 2) as b:
            # B is up (it beats) and idle: A holds every delivery, so B's start-up sweep
            # found nothing to claim.
            wait_for(lambda: alive_workers(db_url) == 2, 30, "B's heartbeat", log_b)
            time.sleep(1.0)
            assert not fast.handler.received
            assert a.terminate() == 0
            stopped = time.monotonic()
            sent_by_a = len(slow.handler.received)
            assert sent_by_a < n, "A finished before it was stopped"
            # The sweep runs a minute after B started and the leases end in two minutes:
            # finishing within seconds means A's hand-off woke B.
            wait_for(lambda: current(settings).state == "done", 10, "B to finish", log_b)
            took = time.monotonic() - stopped
            assert b.terminate() == 0
    status = current(settings)
    assert status.counts["sent"] == n
    assert len(fast.handler.received) == n - sent_by_a
    received = slow.handler.by_recipient() + fast.handler.by_recipient()
    assert set(received) == {f"person{i}@example.org" for i in range(n)}
    assert max(received.values()) == 1
    assert took < 10


def test_expired_claims_are_given_back_and_a_worker_is_nudged(
    session: Session, db_url: str, tmp_path: Path
) -> None:
    settings = settings_for(db_url, tmp_path)
    path = project_with(tmp_path, session)
    session.commit()
    send_campaign(path, settings, session, None)
    cid = campaign_id(session)
    from outreach.db import writer_sessionmaker

    with writer_sessionmaker(db_url)() as writer:
        assert len(store.claim(writer, cid, "a-worker-that-died", 10, lease=0.05)) == 3
        writer.commit()
    nudged: list[int] = []
    # Still within the lease: nothing to do.
    assert requeue_expired(settings, nudged.append) == [] and nudged == []
    time.sleep(0.1)
    assert requeue_expired(settings, nudged.append) == [cid]
    assert nudged == [cid]
    counts = current(settings).counts
    assert counts["queued"] == 3 and counts["sending"] == 0
