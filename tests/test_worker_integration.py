"""Guarantees shown with real `outreach worker` processes, a real SMTP server and real
databases and queues: nothing lost on a crash, exactly once across workers."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from outreach.db import writer_sessionmaker
from outreach.lifecycle import pause, resume, send_campaign
from outreach.pipeline import CHECK_SECONDS, OUTCOMES_PER_COMMIT
from outreach.suppressions import suppress
from outreach.tasks import enqueuer
from tests.conftest import REDIS_URL
from tests.sending_helpers import contacts_csv, current, project_with, settings_for
from tests.smtp_server import SmtpServer, start_server
from tests.workers import Worker, wait_done, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = start_server(stall_seconds=2.0)
    yield server
    server.stop()


def queue_url(tmp_path: Path, backend: str) -> str:
    if backend == "redis":
        if not REDIS_URL:
            pytest.skip("Redis tests need OUTREACH_TEST_REDIS_URL (CI sets it)")
        import redis

        redis.Redis.from_url(REDIS_URL).flushdb()
        return REDIS_URL
    return f"sqlite:///{tmp_path / 'queue.db'}"


def start(path: Path, settings, session: Session) -> None:  # type: ignore[no-untyped-def]
    session.commit()
    send_campaign(path, settings, session, enqueuer(settings))


def test_sigkill_mid_campaign_loses_nothing(
    session: Session, db_url: str, tmp_path: Path, smtp: SmtpServer
) -> None:
    n, threads = 300, 2
    settings = settings_for(
        db_url,
        tmp_path,
        smtp_url=smtp.url,
        queue_url=queue_url(tmp_path, "sqlite"),
        lease_seconds=2,
        batch_size=20,
        rate=Settings_rate("150/s"),
    )
    path = project_with(tmp_path, session, csv=contacts_csv(n))
    start(path, settings, session)
    log = tmp_path / "worker.log"
    with Worker(settings, log, threads) as first:
        wait_for(lambda: len(smtp.handler.received) >= n // 3, 60, "a third to be sent", log)
        first.kill()
    at_kill = len(smtp.handler.received)
    assert at_kill < n, "the worker finished before it could be killed"
    # The crash bound: what the server has but the database does not is at most
    # OUTCOMES_PER_COMMIT messages per sending thread.
    unrecorded = at_kill - current(settings).counts["sent"]
    assert 0 <= unrecorded <= threads * OUTCOMES_PER_COMMIT
    with Worker(settings, log, threads) as second:
        status = wait_done(settings, 90, log)
        assert second.terminate() == 0
    assert status.state == "done" and status.counts["sent"] == n
    received = smtp.handler.by_recipient()
    assert set(received) == {f"person{i}@example.org" for i in range(n)}
    duplicates = sum(c - 1 for c in received.values())
    # Only messages sent but not yet recorded at the kill may arrive twice.
    assert duplicates <= unrecorded <= threads * OUTCOMES_PER_COMMIT


def test_real_worker_retries_and_fails_as_it_should(
    session: Session, db_url: str, tmp_path: Path, smtp: SmtpServer
) -> None:
    n = 60
    settings = settings_for(
        db_url,
        tmp_path,
        smtp_url=smtp.url,
        queue_url=queue_url(tmp_path, "sqlite"),
        retry_delay=0.3,
    )
    path = project_with(tmp_path, session, csv=contacts_csv(n))
    h = smtp.handler
    for i in range(0, 10):
        h.rule(f"person{i}@example.org", "reply", "451 4.7.1 greylisted", times=1)
    for i in range(10, 15):
        h.rule(f"person{i}@example.org", "reply", "550 5.1.1 no such user")
    for i in range(15, 20):
        h.rule(f"person{i}@example.org", "drop", times=1)
    h.rule("person20@example.org", "stall", times=1)
    start(path, settings, session)
    log = tmp_path / "worker.log"
    with Worker(settings, log, 2) as worker:
        status = wait_done(settings, 90, log)
        worker.terminate()
    assert status.state == "done"
    assert status.counts["sent"] == n - 5 and status.counts["failed"] == 5
    assert sum(status.counts.values()) == n
    received = h.by_recipient()
    assert all(received[f"person{i}@example.org"] == 1 for i in [*range(10), *range(15, n)])


def test_sigterm_releases_claims_and_pause_resume_and_unsubscribe(
    session: Session, db_url: str, tmp_path: Path, smtp: SmtpServer
) -> None:
    n = 200
    settings = settings_for(
        db_url,
        tmp_path,
        smtp_url=smtp.url,
        queue_url=queue_url(tmp_path, "sqlite"),
        rate=Settings_rate("40/s"),
        batch_size=50,
    )
    path = project_with(tmp_path, session, csv=contacts_csv(n))
    start(path, settings, session)
    log = tmp_path / "worker.log"
    late = "person199@example.org"
    with Worker(settings, log, 2) as worker:
        wait_for(lambda: len(smtp.handler.received) >= 20, 30, "sending to start", log)
        # A writing session: the test's own reads without the write lock, and SQLite refuses
        # to turn that read into a write once a worker has written meanwhile.
        with writer_sessionmaker(db_url)() as writer:
            suppress(writer, late, "unsubscribed")
            writer.commit()
        assert worker.terminate() == 0
    after_stop = current(settings)
    assert after_stop.counts["sending"] == 0, "claims must be released on SIGTERM"
    assert after_stop.counts["queued"] > 0
    with Worker(settings, log, 2) as worker:
        wait_for(
            lambda: len(smtp.handler.received) >= after_stop.counts["sent"] + 20,
            30,
            "sending to continue",
            log,
        )
        # A writing session, as the CLI uses: the test's own reads without the write lock, and
        # SQLite refuses to turn such a read into a write once a worker has written meanwhile.
        with writer_sessionmaker(db_url)() as writer:
            pause(writer, "news")
        wait_for(lambda: current(settings).counts["sending"] == 0, 15, "claims released", log)
        paused_at = len(smtp.handler.received)
        import time

        time.sleep(1.5)
        assert len(smtp.handler.received) <= paused_at + 2
        with writer_sessionmaker(db_url)() as writer:
            resume(writer, "news", enqueuer(settings), settings)
        status = wait_done(settings, 60, log)
        worker.terminate()
    assert status.state == "done"
    assert status.counts["skipped"] == 1 and status.counts["sent"] == n - 1
    assert smtp.handler.count_for(late) == 0
    assert max(smtp.handler.by_recipient().values()) == 1


def Settings_rate(text: str):  # type: ignore[no-untyped-def]
    from outreach.config import parse_rate

    return parse_rate(text)


@pytest.mark.parametrize("backend", ["redis"])
def test_three_workers_share_one_campaign_exactly_once(
    request: pytest.FixtureRequest, tmp_path: Path, smtp: SmtpServer, backend: str
) -> None:
    db_url = request.getfixturevalue("pg_url")
    from tests.conftest import _truncate

    _truncate(db_url)
    from outreach.db import reader_sessionmaker

    n = int(os.environ.get("OUTREACH_TEST_SCALE_N", "3000"))
    settings = settings_for(
        db_url,
        tmp_path,
        smtp_url=smtp.url,
        queue_url=queue_url(tmp_path, backend),
        rate=Settings_rate("0"),
        batch_size=50,
        lease_seconds=5,
    )
    with reader_sessionmaker(db_url)() as session:
        path = project_with(tmp_path, session, csv=contacts_csv(n))
        start(path, settings, session)
    logs = [tmp_path / f"worker{i}.log" for i in range(3)]
    workers = [Worker(settings, log, 2) for log in logs]
    try:
        status = wait_done(settings, 240, logs[0])
    finally:
        for w in workers:
            w.terminate()
    assert status.state == "done" and status.counts["sent"] == n
    received = smtp.handler.by_recipient()
    assert len(received) == n and max(received.values()) == 1
    # every worker process did part of the work
    import re

    for log in logs:
        sent = sum(int(m) for m in re.findall(r": (\d+) sent by this task", log.read_text()))
        assert sent > 0, f"{log.name} sent nothing"


def test_scale_out_a_killed_worker_is_covered_by_the_others(
    request: pytest.FixtureRequest, tmp_path: Path, smtp: SmtpServer
) -> None:
    """Separate worker processes, as on separate machines, against PostgreSQL and Redis."""
    db_url = request.getfixturevalue("pg_url")
    from tests.conftest import _truncate

    _truncate(db_url)
    from outreach.db import reader_sessionmaker

    n, threads = 1500, 2
    settings = settings_for(
        db_url,
        tmp_path,
        smtp_url=smtp.url,
        queue_url=queue_url(tmp_path, "redis"),
        rate=Settings_rate("400/s"),
        batch_size=25,
        lease_seconds=3,
    )
    with reader_sessionmaker(db_url)() as session:
        path = project_with(tmp_path, session, csv=contacts_csv(n))
        start(path, settings, session)
    logs = [tmp_path / f"machine{i}.log" for i in range(3)]
    workers = [Worker(settings, log, threads) for log in logs]
    try:
        wait_for(lambda: len(smtp.handler.received) >= n // 4, 60, "a quarter sent", logs[0])
        workers[0].kill()
        killed_at = len(smtp.handler.received)
        status = wait_done(settings, 120, logs[1])
    finally:
        for w in workers[1:]:
            w.terminate()
    assert killed_at < n
    assert status.state == "done" and status.counts["sent"] == n
    received = smtp.handler.by_recipient()
    assert len(received) == n  # everyone, including what the killed worker had claimed
    # At most what the killed worker had sent but not yet recorded (the crash bound).
    assert sum(c - 1 for c in received.values()) <= threads * OUTCOMES_PER_COMMIT


def test_cancel_while_a_real_worker_sends_skips_everything_unsent(
    session: Session, db_url: str, tmp_path: Path, smtp: SmtpServer
) -> None:
    from outreach.lifecycle import cancel, list_campaigns

    n = 200
    settings = settings_for(
        db_url,
        tmp_path,
        smtp_url=smtp.url,
        queue_url=queue_url(tmp_path, "sqlite"),
        rate=Settings_rate("40/s"),
        batch_size=50,
    )
    path = project_with(tmp_path, session, csv=contacts_csv(n))
    start(path, settings, session)
    log = tmp_path / "worker.log"
    with Worker(settings, log, 2) as worker:
        wait_for(lambda: len(smtp.handler.received) >= 20, 30, "sending to start", log)
        with writer_sessionmaker(db_url)() as writer:
            cancelled = cancel(writer, "news")
        assert cancelled.in_flight > 0, "the worker held a batch when it was cancelled"
        wait_for(lambda: current(settings).counts["sending"] == 0, 15, "the worker to let go", log)
        assert worker.process.poll() is None
        assert worker.terminate() == 0
    status = current(settings)
    counts = status.counts
    assert status.state == "cancelled" and status.eta_seconds is None
    assert counts["queued"] == counts["deferred"] == 0
    assert counts["sent"] + counts["skipped"] + counts["failed"] + counts["bounced"] == n
    assert counts["sent"] == len(smtp.handler.received) < n
    with writer_sessionmaker(db_url)() as reader:
        [(_, listed)] = list_campaigns(reader)
    assert listed["queued"] + listed["deferred"] == 0


def test_a_worker_keeps_running_when_the_outbox_cannot_be_written(
    session: Session, db_url: str, tmp_path: Path
) -> None:
    outbox = tmp_path / "outbox-is-a-file"
    outbox.write_text("a file where the folder should be\n")
    settings = settings_for(
        db_url,
        tmp_path,
        outbox=outbox,
        queue_url=queue_url(tmp_path, "sqlite"),
        pause_after_failures=5,
        # Deferred rows stay deferred until the pause: with the usual 0.05 s they were
        # claimed again and given back as queued, and the count below depended on timing.
        retry_delay=60,
    )
    path = project_with(tmp_path, session, csv=contacts_csv(40))
    start(path, settings, session)
    log = tmp_path / "worker.log"
    with Worker(settings, log, 2) as worker:
        wait_done(settings, 30, log)
        # The other thread notices the pause within a second and gives its batch back.
        wait_for(lambda: current(settings).counts["sending"] == 0, 15, "claims released", log)
        assert worker.process.poll() is None, "the worker must keep running"
        assert worker.terminate() == 0
    status = current(settings)
    assert status.state == "paused"
    assert "consecutive relay failures" in status.reason and "Not a directory" in status.reason
    assert status.counts["sending"] == 0 and status.counts["sent"] == 0
    assert status.counts["deferred"] >= 5
    assert "Traceback" not in log.read_text()


def _outreach(settings, *args: str, **extra: str):  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    from tests.workers import worker_env

    return subprocess.run(
        [sys.executable, "-m", "outreach", *args],
        env=worker_env(settings, **extra),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_workers_beat_and_the_health_check_sees_them(
    session: Session, db_url: str, tmp_path: Path
) -> None:
    import json
    import socket

    settings = settings_for(db_url, tmp_path, queue_url=queue_url(tmp_path, "sqlite"))
    path = project_with(tmp_path, session, csv=contacts_csv(3))
    start(path, settings, session)
    # Nothing has ever beaten here: the check fails, and says which host it looked for.
    before = _outreach(settings, "worker", "--check")
    assert before.returncode == 1
    assert socket.gethostname() in before.stderr
    assert len(before.stderr.strip().splitlines()) == 1 and "Traceback" not in before.stderr
    log = tmp_path / "worker.log"
    with Worker(settings, log, 2) as worker:
        wait_for(
            lambda: _outreach(settings, "worker", "--check").returncode == 0,
            30,
            "the worker's first heartbeat",
            log,
            interval=0.5,
        )
        ok = _outreach(settings, "worker", "--check")
        assert "alive" in ok.stdout
        wait_done(settings, 30, log)
        doc = json.loads(_outreach(settings, "campaigns", "status", "news", "--json").stdout)
        assert doc["workers"]["alive"] == 1
        assert worker.terminate() == 0
    after = _outreach(settings, "worker", "--check")
    assert after.returncode == 1, after.stdout


def test_a_worker_killed_with_sigkill_is_not_alive_a_moment_later(
    session: Session, db_url: str, tmp_path: Path
) -> None:
    """Its row stays (it could not remove it), but on this host a gone process is gone at
    once: neither `worker --check` nor `campaigns status` waits for the beat to age."""
    import json

    settings = settings_for(db_url, tmp_path, queue_url=queue_url(tmp_path, "sqlite"))
    path = project_with(tmp_path, session, csv=contacts_csv(3))
    start(path, settings, session)
    log = tmp_path / "worker.log"
    with Worker(settings, log, 2) as worker:
        wait_for(
            lambda: _outreach(settings, "worker", "--check").returncode == 0,
            30,
            "the worker's first heartbeat",
            log,
            interval=0.5,
        )
        worker.kill()
    dead = _outreach(settings, "worker", "--check")
    assert dead.returncode == 1 and "no worker on" in dead.stderr
    doc = json.loads(_outreach(settings, "campaigns", "status", "news", "--json").stdout)
    assert doc["workers"]["alive"] == 0


def test_ctrl_c_stops_a_worker_as_cleanly_as_sigterm(
    session: Session, db_url: str, tmp_path: Path, smtp: SmtpServer
) -> None:
    import signal

    settings = settings_for(
        db_url,
        tmp_path,
        smtp_url=smtp.url,
        queue_url=queue_url(tmp_path, "sqlite"),
        rate=Settings_rate("40/s"),
        batch_size=50,
    )
    path = project_with(tmp_path, session, csv=contacts_csv(200))
    start(path, settings, session)
    log = tmp_path / "worker.log"
    with Worker(settings, log, 2) as worker:
        wait_for(lambda: len(smtp.handler.received) >= 20, 30, "sending to start", log)
        worker.process.send_signal(signal.SIGINT)
        assert worker.process.wait(timeout=30) == 0
    stopped = current(settings)
    assert stopped.counts["sending"] == 0, "claims must be given back on Ctrl-C"
    assert stopped.counts["sent"] == len(smtp.handler.received)


def test_an_unsubscribe_reaches_messages_already_claimed_within_a_second(
    session: Session, db_url: str, tmp_path: Path, smtp: SmtpServer
) -> None:
    """A worker looks a batch's suppressions up when it claims it, and again at most
    CHECK_SECONDS before each message goes: an address suppressed while its delivery sits
    in a claimed batch is skipped if its turn comes later than that."""
    n, rate = 100, 20
    settings = settings_for(
        db_url,
        tmp_path,
        smtp_url=smtp.url,
        queue_url=queue_url(tmp_path, "sqlite"),
        rate=Settings_rate(f"{rate}/s"),
        batch_size=n,  # the whole campaign is one claimed batch
    )
    path = project_with(tmp_path, session, csv=contacts_csv(n))
    start(path, settings, session)
    log = tmp_path / "worker.log"
    with Worker(settings, log, 1) as worker:
        wait_for(lambda: len(smtp.handler.received) >= 10, 30, "sending to start", log)
        assert current(settings).counts["queued"] == 0, "the batch is claimed"
        # One thread sends in order at `rate` a second: this one's turn comes two
        # seconds from now, twice the bound.
        target = len(smtp.handler.received) + int(2 * CHECK_SECONDS * rate)
        late = f"person{target}@example.org"
        with writer_sessionmaker(db_url)() as writer:
            suppress(writer, late, "unsubscribed")
            writer.commit()
        status = wait_done(settings, 60, log)
        assert worker.terminate() == 0
    assert smtp.handler.count_for(late) == 0
    assert status.counts["skipped"] == 1 and status.counts["sent"] == n - 1
