"""The Huey queue: tasks that drive the sending pipeline, and the `outreach worker` consumer.

The database is the source of truth for what is left to send; a task only says "work on
campaign N". So a lost task loses nothing: the periodic sweep (every minute, and at every
worker start) re-queues any campaign with claimable or abandoned deliveries, and starts
scheduled campaigns whose time has come.

Work that turns up while every worker is idle wakes one within a second: idle consumers look
at the queue every WAKE_SECONDS at most; a sender that gives claims back (stopped, paused)
queues a task for them; and every worker process looks each second for claims whose lease ran
out (their worker died) and queues them again (`LeaseWatch`).
"""

from __future__ import annotations

import logging
import signal
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from huey import Huey, MemoryHuey, RedisHuey, SqliteHuey, crontab
from huey.exceptions import HueyException
from redis.exceptions import RedisError

from outreach.config import Settings, mask_password
from outreach.db import writer_sessionmaker
from outreach.errors import UserError

log = logging.getLogger("outreach.tasks")
# The longest an idle consumer thread waits before it looks at the queue again (a Redis
# queue answers at once; a SQLite queue is polled).
WAKE_SECONDS = 0.5

# What a queue that cannot be reached raises: Redis down or refusing us, a SQLite queue file
# that cannot be created or opened.
UNREACHABLE = (RedisError, sqlite3.Error, OSError)


class QueueUnavailable(UserError):
    """The queue (OUTREACH_QUEUE_URL) cannot be reached."""


class _DropsEarlierTasks:
    """A queue that drops tasks it has no function for, with one line per kind, instead of
    huey's traceback for each. Earlier releases registered the same tasks under another
    module (`outreach.queue.outreach.send_campaign` in 0.1.0), and a rolling upgrade may
    still have an old process queueing them. Dropping loses nothing: a task only says "work
    on campaign N", and the sweep finds every piece of work in the database."""

    serializer: Any
    storage: Any

    def deserialize_task(self, data: bytes) -> Any:
        try:
            return super().deserialize_task(data)  # type: ignore[misc]
        except HueyException:
            name = str(self.serializer.deserialize(data).name)
            if name not in _dropped:
                _dropped.add(name)
                log.warning(
                    "dropped %s from the queue, and will drop any more of them: a task of "
                    "another release; nothing is lost (the sweep queues the work again)",
                    name,
                )
            return None

    def dequeue(self) -> Any:
        while True:  # past the dropped ones at once, not one idle wait each
            try:
                data = self.storage.dequeue()
            except UNREACHABLE as exc:
                self._unreachable(exc)
                return None
            if data is None:
                return None
            task = self.deserialize_task(data)
            if task is not None:
                return task

    def read_schedule(self, timestamp: Any = None) -> list[Any]:
        try:
            tasks = super().read_schedule(timestamp)  # type: ignore[misc]
        except UNREACHABLE as exc:
            self._unreachable(exc)
            return []
        return [t for t in tasks if t is not None]

    def _unreachable(self, exc: BaseException) -> None:
        """The queue went away while the worker runs: one line a minute instead of a
        traceback for every poll, and a pause instead of a busy loop; the worker's
        self-check decides when to give up."""
        import time

        now = time.monotonic()
        if now >= _quiet_until[0]:
            _quiet_until[0] = now + 60
            log.warning("the queue does not answer: %s", " ".join(str(exc).split())[:300])
        time.sleep(1.0)


_quiet_until = [0.0]
# The kinds of task dropped so far by this process: each is said once.
_dropped: set[str] = set()


class _Sqlite(_DropsEarlierTasks, SqliteHuey):
    pass


class _Redis(_DropsEarlierTasks, RedisHuey):
    pass


class _Memory(_DropsEarlierTasks, MemoryHuey):
    pass


def _unreachable(settings: Settings, exc: BaseException, consequence: str) -> QueueUnavailable:
    reason = " ".join(str(exc).split()).rstrip(".") or type(exc).__name__
    return QueueUnavailable(
        f"cannot reach the queue {mask_password(settings.queue_url)} (OUTREACH_QUEUE_URL): "
        f"{reason}. Start it, or point OUTREACH_QUEUE_URL at one that runs; {consequence}"
    )


class _StopSignal:
    """What tells running senders to give their claims back: the consumer's own stop flag
    once `outreach worker` runs, a plain event otherwise (tests, in-process use)."""

    def __init__(self) -> None:
        self.event: threading.Event = threading.Event()


STOP = _StopSignal()


def make_queue(settings: Settings) -> Queue:
    """The queue, not yet connected to (Huey connects on first use)."""
    url = settings.queue_url
    name = "outreach"
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///") :])
        if not path.parent.is_dir():
            # A typo here would otherwise make a queue no worker ever reads.
            raise QueueUnavailable(
                f"OUTREACH_QUEUE_URL {mask_password(url)}: the folder {path.parent} does not "
                "exist; correct the path (the default is outreach-queue.db beside the database)"
            )
        huey: Huey = _Sqlite(name, filename=str(path), results=False, utc=True)
    elif url.startswith(("redis://", "rediss://")):
        huey = _Redis(name, url=url, results=False, utc=True)
    else:
        huey = _Memory(name, results=False, utc=True)
    return _register(huey, settings)


@dataclass
class Queue:
    """A Huey instance with outreach's two tasks registered on it."""

    huey: Huey
    send_campaign: Any
    sweep: Any


def _register(huey: Huey, settings: Settings) -> Queue:
    from outreach.transport import transport_for

    transport = transport_for(settings)

    @huey.task(name="outreach.send_campaign")
    def send_campaign(campaign_id: int) -> None:
        from outreach.pipeline import Sender

        # Woken at its send_at: the campaign starts now, with the tasks a whole campaign
        # gets (this one among them).
        for _ in range(start_if_due(settings, campaign_id) - 1):
            send_campaign(campaign_id)
        outcome = Sender(settings, transport, stop=STOP.event).run(campaign_id)
        log.info("campaign %s: %d sent by this task", campaign_id, outcome.sent)
        if outcome.released:
            # Claims given back (this worker stops, or the campaign was paused and may be
            # resumed already): whoever is idle takes them now, not at the next sweep.
            send_campaign(campaign_id)
        elif outcome.wake_at is not None and not outcome.stopped:
            send_campaign.schedule((campaign_id,), eta=outcome.wake_at)

    @huey.periodic_task(crontab(minute="*"), name="outreach.sweep")
    def sweep() -> None:
        run_sweep(settings, send_campaign)

    from outreach.housekeeping import register_periodic

    register_periodic(huey, settings)  # housekeeping; the consent notices when enabled
    return Queue(huey, send_campaign, sweep)


def reachable_queue(settings: Settings, consequence: str = "nothing was changed") -> Queue:
    """The queue, after making sure it answers: commands that queue work ask before they
    change anything, so that an unreachable queue leaves everything as it was."""
    try:
        queue = make_queue(settings)
        queue.huey.pending_count()
    except UNREACHABLE as exc:
        raise _unreachable(settings, exc, consequence) from None
    return queue


# How far ahead the sweep (every minute) sets tasks to wake at the second work becomes due:
# beyond the next sweep, with a margin for a sweep that runs late.
SOON = timedelta(seconds=75)


def start_if_due(settings: Settings, campaign_id: int) -> int:
    """Start a scheduled campaign whose send_at has come; the tasks it should get (0: it was
    not scheduled, or not due yet, or another task started it)."""
    from outreach import store
    from outreach.lifecycle import start_if_due as start
    from outreach.lifecycle import tasks_for

    with writer_sessionmaker(settings.database_url)() as session:
        if not start(session, campaign_id):
            return 0
        queued = store.counts(session, campaign_id)["queued"]
        session.commit()
    return tasks_for(queued, settings)


def run_sweep(settings: Settings, send_campaign: Any) -> None:
    """Queue work that is due, and set a task to wake at the second for work that becomes due
    before the next sweep (a scheduled campaign's send_at, a group of `send_at: {local: …}`,
    a window's opening, a retry): nothing starts early, nothing waits for the next minute.
    Work due later is left for a later sweep, so waiting work queues nothing meanwhile."""
    from outreach import store
    from outreach.lifecycle import (
        active_campaigns,
        due_scheduled,
        finish_if_done,
        starting_soon,
        tasks_for,
    )
    from outreach.models import utcnow

    with writer_sessionmaker(settings.database_url)() as session:
        store.settle_cancelled(session)
        session.commit()
        started = due_scheduled(session)
        for campaign_id in active_campaigns(session):
            store.release_expired(session, campaign_id)
            counts = store.counts(session, campaign_id)
            wake = store.next_wake(session, campaign_id)
            session.commit()
            pending = counts["queued"] + counts["deferred"] + counts["sending"]
            now = utcnow()
            if pending:
                if campaign_id in started:
                    for _ in range(tasks_for(counts["queued"], settings)):
                        send_campaign(campaign_id)
                elif wake is None or wake <= now:
                    send_campaign(campaign_id)
                elif wake <= now + SOON:
                    send_campaign.schedule((campaign_id,), eta=wake)
            elif finish_if_done(session, campaign_id):
                session.commit()
        for campaign_id, at in starting_soon(session, utcnow() + SOON):
            send_campaign.schedule((campaign_id,), eta=at)
        session.commit()


def enqueuer(settings: Settings) -> Callable[[int, int], None]:
    """A function that queues n tasks for a campaign, for `send` and `resume`; made only
    when the queue answers (else QueueUnavailable, before anything is changed)."""
    queue = reachable_queue(settings)

    def enqueue(campaign_id: int, n: int) -> None:
        # Called once the deliveries are committed: the database holds the work, the queue
        # only nudges the workers, so losing the queue now loses nothing.
        try:
            for _ in range(n):
                queue.send_campaign(campaign_id)
        except UNREACHABLE as exc:
            raise _unreachable(
                settings,
                exc,
                "the deliveries are stored: run the same command again once it answers, or "
                "start a worker that can reach it",
            ) from None

    return enqueue


# A worker that cannot reach its database or queue at start waits this long by default
# (`--wait`), saying so once a minute, then exits with EX_TEMPFAIL for its supervisor.
START_WAIT = 120.0
EX_TEMPFAIL = 75
# A running worker that cannot write its heartbeat or reach its queue for this long
# (`--self-check`) stops cleanly and exits EX_TEMPFAIL, so that its supervisor (compose's
# restart policy, systemd's Restart=) starts a fresh one, which waits for them at start.
SELF_CHECK_SECONDS = 60.0


class NotReachable(UserError):
    """The database or the queue did not answer in time: a supervisor should start the
    worker again later (EX_TEMPFAIL)."""

    exit_code = EX_TEMPFAIL


def _temporary() -> tuple[type[BaseException], ...]:
    from sqlalchemy.exc import InterfaceError, OperationalError

    from outreach.db import DatabaseUnavailable

    return (DatabaseUnavailable, QueueUnavailable, OperationalError, InterfaceError, *UNREACHABLE)


def _why(settings: Settings, exc: BaseException) -> str:
    if isinstance(exc, UserError):
        return " ".join(str(exc).split()).split(". Start it")[0].split("; ")[0]
    reason = " ".join(str(getattr(exc, "orig", None) or exc).split())[:300]
    if isinstance(exc, UNREACHABLE):
        return f"cannot reach the queue {mask_password(settings.queue_url)}: {reason}"
    from outreach.db import safe_url

    return f"cannot reach the database {safe_url(settings.database_url)}: {reason}"


T = TypeVar("T")


def when_reachable(
    settings: Settings, wait: float, attempt: Callable[[], T], say: Callable[[str], None]
) -> T:
    """`attempt()`, tried again while the database or the queue does not answer: one line
    at the first failure and one a minute, NotReachable (exit 75) after `wait` seconds."""
    import time

    deadline = time.monotonic() + wait
    next_line, delay = 0.0, 0.5
    while True:
        try:
            return attempt()
        except _temporary() as exc:
            now, why = time.monotonic(), _why(settings, exc)
            if now >= deadline:
                raise NotReachable(
                    f"{why}; gave up after {wait:.0f} s (--wait): exiting with status "
                    f"{EX_TEMPFAIL} (EX_TEMPFAIL) for a supervisor to start the worker again"
                ) from None
            if now >= next_line:
                say(f"{why}; the worker waits for it (up to {deadline - now:.0f} s more)")
                next_line = now + 60
            time.sleep(min(delay, max(0.0, deadline - now)))
            delay = min(delay * 2, 5.0)


def _configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)


def wait_for_services(settings: Settings, wait: float) -> None:
    """The database answers with this release's schema and the queue answers (for
    `--processes`, before the children start)."""
    from outreach.db import check_schema

    def ready() -> None:
        check_schema(settings.database_url)
        reachable_queue(settings)

    _configure_logging()
    when_reachable(settings, wait, ready, log.warning)


def run_worker(
    settings: Settings,
    workers: int,
    wait: float = START_WAIT,
    self_check: float = SELF_CHECK_SECONDS,
    metrics_port: int | None = None,
) -> None:
    """Run the Huey consumer until SIGTERM or SIGINT, then release in-flight claims.
    Beats (see `heartbeat`) while it runs; waits for the database and the queue at start."""
    from outreach.db import check_schema
    from outreach.heartbeat import Heartbeat

    _configure_logging()
    heartbeat = Heartbeat(settings.database_url, workers)

    def start() -> Queue:
        check_schema(settings.database_url)
        queue = reachable_queue(settings, "the worker did not start")
        heartbeat.first()
        queue.sweep()  # resume whatever a previous worker left, now
        return queue

    queue = when_reachable(settings, wait, start, log.warning)
    # SIGTERM (docker stop, systemd) is huey's graceful signal: senders finish the message
    # in hand, give their other claims back to the queue, and the consumer waits for them.
    consumer = queue.huey.create_consumer(
        workers=workers,
        worker_type="thread",
        periodic=True,
        check_worker_health=True,
        scheduler_interval=1,
        max_delay=WAKE_SECONDS,
        graceful_signal="TERM",
    )
    STOP.event = consumer.stop_flag
    heartbeat.start()
    watch = LeaseWatch(settings, queue.send_campaign)
    watch.start()
    check = SelfCheck(queue, heartbeat, self_check)
    check.start()
    if metrics_port:
        from outreach.health import check as health_check
        from outreach.metrics import serve

        serve(metrics_port, lambda: health_check(settings))
        log.info("figures for Prometheus at http://127.0.0.1:%d/metrics", metrics_port)
    try:
        consumer.run()
        # Ctrl-C is huey's immediate stop, which for threads only sets the stop flag and
        # returns: wait, as for SIGTERM, until the senders have given their claims back.
        consumer.stop(graceful=True)
    finally:
        check.stop()
        watch.stop()
        heartbeat.stop()
    if check.failed:
        raise NotReachable(check.failed)


class SelfCheck:
    """The worker's own health: its heartbeat written and its queue answering. After
    `limit` seconds of either failing it says why in one line and stops the worker as
    SIGTERM does; `run_worker` then exits EX_TEMPFAIL."""

    def __init__(self, queue: Queue, heartbeat: Any, limit: float, interval: float = 1.0) -> None:
        self.queue, self.heartbeat, self.limit, self.interval = queue, heartbeat, limit, interval
        self.failed: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="outreach-self-check", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        import os
        import time

        queue_ok = time.monotonic()
        while not self._stop.wait(self.interval):
            now = time.monotonic()
            try:
                self.queue.huey.storage.queue_size()
                queue_ok = now
            except UNREACHABLE:
                pass
            if now - self.heartbeat.written > self.limit:
                self.failed = f"no heartbeat written for {self.limit:.0f} s (the database)"
            elif now - queue_ok > self.limit:
                self.failed = f"the queue has not answered for {self.limit:.0f} s"
            if self.failed:
                self.failed += (
                    f": the worker stopped itself (--self-check), exit status {EX_TEMPFAIL} "
                    "for a supervisor to start a fresh one"
                )
                log.error("self-check failed: %s", self.failed)
                os.kill(os.getpid(), signal.SIGTERM)
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.interval + 5)


def requeue_expired(settings: Settings, send_campaign: Callable[[int], Any]) -> list[int]:
    """Claims of sending campaigns whose lease ran out go back to the queue, and a task is
    queued for each such campaign; returns their ids."""
    from outreach import store
    from outreach.db import reader_sessionmaker

    with reader_sessionmaker(settings.database_url)() as session:
        expired = store.expired_claims(session)
    if not expired:
        return []
    with writer_sessionmaker(settings.database_url)() as session:
        for campaign_id in expired:
            store.release_expired(session, campaign_id)
        session.commit()
    for campaign_id in expired:
        send_campaign(campaign_id)
    return expired


class LeaseWatch:
    """Looks every `interval` seconds for claims whose worker died, from a thread of its own."""

    def __init__(
        self, settings: Settings, send_campaign: Callable[[int], Any], interval: float = 1.0
    ) -> None:
        self.settings, self.send_campaign, self.interval = settings, send_campaign, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="outreach-leases", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                for campaign_id in requeue_expired(self.settings, self.send_campaign):
                    log.info("campaign %s: expired claims given back to the queue", campaign_id)
            except Exception as exc:  # a database or queue hiccup must not stop the worker
                log.warning("looking for expired claims failed: %s", exc)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 5)


def run_processes(
    processes: int, threads: int, extra: list[str] | None = None, metrics_port: int | None = None
) -> int:
    """Run several single-process workers as children; signals are passed on to them."""
    import subprocess
    import sys

    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "outreach",
                "worker",
                "--processes",
                "1",
                "--workers",
                str(threads),
                *(extra or []),
                *(["--metrics-port", str(metrics_port)] if metrics_port and n == 0 else []),
            ]
        )
        for n in range(processes)
    ]

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    return max(child.wait() for child in children)


class Nudger:
    """Tells the worker there is new work, after the commit: one Huey task per campaign.
    Losing a nudge loses nothing (the worker's sweep finds the deliveries within a minute),
    so a queue that cannot be reached is logged, not shown to the person."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._enqueue: Any = None

    def __call__(self, *campaign_ids: int | None) -> None:
        ids = sorted({cid for cid in campaign_ids if cid is not None})
        if not ids:
            return
        try:
            if self._enqueue is None:
                self._enqueue = enqueuer(self.settings)
            for campaign_id in ids:
                self._enqueue(campaign_id, 1)
        except Exception as exc:  # the queue is a nudge; the database holds the work
            log.warning("could not nudge the worker (the sweep will pick it up): %s", exc)
