"""Races a review found in the sending core, each against a real SMTP server and both
databases: a batch that outlasts its lease, a pause between fast batches, a send that adds
recipients while a worker finishes, a bounce of a system message, a cancel during a retry,
and a worker with many threads."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from outreach import store
from outreach.config import parse_rate
from outreach.contacts import import_csv
from outreach.db import size_pools, writer_sessionmaker
from outreach.lifecycle import cancel, finish_if_done, pause
from outreach.models import Delivery, Suppression
from outreach.pipeline import Sender
from outreach.tasks import requeue_expired, run_sweep
from outreach.transport import transport_for
from tests.conftest import write
from tests.sending_helpers import (
    campaign_id,
    contacts_csv,
    current,
    project_with,
    send,
    settings_for,
)
from tests.smtp_server import SmtpServer, start_server


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = start_server()
    yield server
    server.stop()


def run_senders(settings, cid: int, threads: int) -> list[str]:  # type: ignore[no-untyped-def]
    """`threads` senders working the campaign until it is done, as a worker's threads do."""
    transport = transport_for(settings)
    errors: list[str] = []

    def sender() -> None:
        try:
            while True:
                outcome = Sender(settings, transport).run(cid)
                if outcome.wake_at is None:
                    return
                time.sleep(0.2)
        except Exception as exc:  # reported by the test, not lost in a thread
            errors.append(f"{type(exc).__name__}: {exc}"[:200])

    workers = [threading.Thread(target=sender) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    transport.close()
    return errors


def test_a_batch_that_outlasts_its_lease_is_never_sent_twice(
    session: Session, db_url: str, tmp_path: Path, smtp: SmtpServer
) -> None:
    """Four threads share 4/s with a 2 s lease: each batch would take twice its lease. What
    a sender has not sent by half its lease goes back; another worker's lease watch never
    hands anyone a message that is still being sent."""
    settings = settings_for(
        db_url, tmp_path, smtp_url=smtp.url, rate=parse_rate("4/s"), lease_seconds=2.0
    )
    path = project_with(tmp_path, session, csv=contacts_csv(24))
    send(path, settings, session)
    cid = campaign_id(session)
    watching = threading.Event()

    def lease_watch() -> None:  # what every worker process does once a second
        while not watching.wait(1.0):
            requeue_expired(settings, lambda _cid: None)

    watch = threading.Thread(target=lease_watch)
    watch.start()
    try:
        assert run_senders(settings, cid, 4) == []
    finally:
        watching.set()
        watch.join()
    assert current(settings).counts["sent"] == 24
    assert max(smtp.handler.by_recipient().values()) == 1 and len(smtp.handler.received) == 24


def test_a_pause_stops_fast_batches_within_a_second(
    session: Session, db_url: str, tmp_path: Path, smtp: SmtpServer
) -> None:
    """Batches that each take less than a second still see a pause at their start."""
    settings = settings_for(db_url, tmp_path, smtp_url=smtp.url, rate=parse_rate("0"), batch_size=5)
    path = project_with(tmp_path, session, csv=contacts_csv(300))
    send(path, settings, session)
    cid = campaign_id(session)
    transport = transport_for(settings)
    sender = threading.Thread(target=lambda: Sender(settings, transport).run(cid))
    sender.start()
    deadline = time.monotonic() + 30
    while len(smtp.handler.received) < 10 and time.monotonic() < deadline:
        time.sleep(0.005)
    with writer_sessionmaker(db_url)() as writer:
        pause(writer, "news")
    time.sleep(1.2)
    a_second_later = len(smtp.handler.received)
    sender.join(timeout=30)
    transport.close()
    assert len(smtp.handler.received) == a_second_later < 300
    assert current(settings).state == "paused"


def test_a_send_that_adds_recipients_while_a_worker_finishes(
    session: Session, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`send` again adds a new contact to a sending campaign while a worker that has run
    dry closes it: the campaign must stay open for the new delivery (PostgreSQL lets the
    worker's count miss rows not yet committed)."""
    settings = settings_for(db_url, tmp_path)
    path = project_with(tmp_path, session)
    send(path, settings, session)
    cid = campaign_id(session)
    with writer_sessionmaker(db_url)() as writer:  # everything so far is sent
        writer.execute(update(Delivery).values(state="sent"))
        writer.commit()
    import_csv(session, write(tmp_path / "more.csv", "email,language\nnew@example.org,en\n"))
    session.commit()
    finishing: list[threading.Thread] = []
    snapshot = store.snapshot

    def snapshot_while_a_worker_finishes(s, c, where):  # type: ignore[no-untyped-def]
        added = snapshot(s, c, where)  # the real snapshot; then a worker finishes meanwhile

        def finish() -> None:
            with writer_sessionmaker(db_url)() as w:
                finish_if_done(w, cid)
                w.commit()

        finishing.append(threading.Thread(target=finish))
        finishing[-1].start()
        time.sleep(0.5)
        return added

    monkeypatch.setattr(store, "snapshot", snapshot_while_a_worker_finishes)
    assert send(path, settings, session).added == 1
    for thread in finishing:
        thread.join(timeout=40)
    run_sweep(settings, lambda _cid: None)
    status = current(settings)
    assert (status.state, status.counts["queued"]) == ("sending", 1)


def test_a_hard_bounce_of_a_system_message_suppresses(
    session: Session, db_url: str, tmp_path: Path, smtp: SmtpServer
) -> None:
    """A confirmation to a mistyped address has no contact: it is no forgotten one."""
    from outreach.subscriptions import system_sender
    from outreach.system_mail import queue

    settings = settings_for(
        db_url, tmp_path, from_="CityNet <news@citynet-ap.org>", smtp_url=smtp.url
    )
    smtp.handler.rule("nobody@example.org", "reply", "550 5.1.1 <nobody@example.org>: unknown")
    cid, _ = queue(
        session,
        "confirmation",
        system_sender(settings, None),
        email="nobody@example.org",
        name=None,
        language="en",
        variables={"confirm_url": "https://mail.example.org/confirm/abc"},
    )
    session.commit()
    assert run_senders(settings, cid, 1) == []
    session.commit()
    assert session.scalar(select(Suppression.reason)) == "bounced"
    assert "[forgotten]" not in (session.scalar(select(Delivery.last_text)) or "")


def test_a_retry_the_cancelled_campaign_will_never_make_is_skipped(
    session: Session, db_url: str, tmp_path: Path, smtp: SmtpServer
) -> None:
    """A message deferred while the campaign was being cancelled ends skipped, so the
    counts add up at once, not at the next minute's sweep."""
    settings = settings_for(db_url, tmp_path, smtp_url=smtp.url, retry_delay=60)
    path = project_with(tmp_path, session, csv=contacts_csv(5))
    for i in range(5):
        smtp.handler.rule(f"person{i}@example.org", "reply", "451 4.3.0 try later")
    send(path, settings, session)
    cid = campaign_id(session)
    transport = transport_for(settings)
    sender = threading.Thread(target=lambda: Sender(settings, transport).run(cid))
    sender.start()
    deadline = time.monotonic() + 30
    while not smtp.handler.attempts and time.monotonic() < deadline:
        time.sleep(0.001)
    with writer_sessionmaker(db_url)() as writer:
        cancel(writer, "news")
    sender.join(timeout=30)
    transport.close()
    counts = current(settings).counts
    assert counts["deferred"] == 0 and counts["skipped"] == 5


def test_a_worker_with_many_threads_has_a_connection_for_each(
    session: Session, db_url: str, tmp_path: Path, smtp: SmtpServer
) -> None:
    """`outreach worker -w 12`: twelve senders at once (paced, so that all of them hold
    their connections together), none waiting for the pool."""
    settings = settings_for(
        db_url, tmp_path, smtp_url=smtp.url, rate=parse_rate("60/s"), batch_size=10
    )
    path = project_with(tmp_path, session, csv=contacts_csv(240))
    send(path, settings, session)
    cid = campaign_id(session)
    session.close()
    size_pools(12)  # as the worker command does with --workers 12
    try:
        assert run_senders(settings, cid, 12) == []
    finally:
        size_pools(4)
    assert current(settings).counts["sent"] == 240
