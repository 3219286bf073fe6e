"""The Huey queue: tasks that drive the sending pipeline, and the `outreach worker` consumer.

The database is the source of truth for what is left to send; a task only says "work on
campaign N". So a lost task loses nothing: the periodic sweep (every minute, and at every
worker start) re-queues any campaign with claimable or abandoned deliveries, and starts
scheduled campaigns whose time has come.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huey import Huey, MemoryHuey, RedisHuey, SqliteHuey, crontab

from outreach.config import Settings
from outreach.db import writer_sessionmaker

log = logging.getLogger("outreach.tasks")


class _StopSignal:
    """What tells running senders to give their claims back: the consumer's own stop flag
    once `outreach worker` runs, a plain event otherwise (tests, in-process use)."""

    def __init__(self) -> None:
        self.event: threading.Event = threading.Event()


STOP = _StopSignal()


def make_queue(settings: Settings) -> Queue:
    url = settings.queue_url
    name = "outreach"
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///") :])
        path.parent.mkdir(parents=True, exist_ok=True)
        huey: Huey = SqliteHuey(name, filename=str(path), results=False, utc=True)
    elif url.startswith(("redis://", "rediss://")):
        huey = RedisHuey(name, url=url, results=False, utc=True)
    else:
        huey = MemoryHuey(name, results=False, utc=True)
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

        outcome = Sender(settings, transport, stop=STOP.event).run(campaign_id)
        log.info("campaign %s: %d sent by this task", campaign_id, outcome.sent)
        if outcome.wake_at is not None and not outcome.stopped:
            send_campaign.schedule((campaign_id,), eta=outcome.wake_at)

    @huey.periodic_task(crontab(minute="*"), name="outreach.sweep")
    def sweep() -> None:
        run_sweep(settings, send_campaign)

    from outreach.consent import register_periodic

    register_periodic(huey, settings)  # housekeeping; the consent notices when enabled
    return Queue(huey, send_campaign, sweep)


def run_sweep(settings: Settings, send_campaign: Any) -> None:
    from outreach import store
    from outreach.lifecycle import active_campaigns, due_scheduled, finish_if_done, tasks_for

    with writer_sessionmaker(settings.database_url)() as session:
        started = due_scheduled(session)
        for campaign_id in active_campaigns(session):
            store.release_expired(session, campaign_id)
            counts = store.counts(session, campaign_id)
            session.commit()
            pending = counts["queued"] + counts["deferred"] + counts["sending"]
            if pending:
                n = tasks_for(counts["queued"], settings) if campaign_id in started else 1
                for _ in range(n):
                    send_campaign(campaign_id)
            elif finish_if_done(session, campaign_id):
                session.commit()


def enqueuer(settings: Settings) -> Any:
    """A function that queues n tasks for a campaign, for `send` and `resume`."""
    queue = make_queue(settings)

    def enqueue(campaign_id: int, n: int) -> None:
        for _ in range(n):
            queue.send_campaign(campaign_id)

    return enqueue


def run_worker(settings: Settings, workers: int) -> None:
    """Run the Huey consumer until SIGTERM or SIGINT, then release in-flight claims."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    queue = make_queue(settings)
    # SIGTERM (docker stop, systemd) is huey's graceful signal: senders finish the message
    # in hand, give their other claims back to the queue, and the consumer waits for them.
    consumer = queue.huey.create_consumer(
        workers=workers,
        worker_type="thread",
        periodic=True,
        check_worker_health=True,
        scheduler_interval=1,
        graceful_signal="TERM",
    )
    STOP.event = consumer.stop_flag
    # Ctrl-C means the same: turn it into the graceful signal (a second one stops at once).
    signal.signal(signal.SIGINT, lambda _signum, _frame: os.kill(os.getpid(), signal.SIGTERM))
    queue.sweep()  # resume whatever a previous worker left, now
    consumer.run()


def run_processes(processes: int, threads: int) -> int:
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
            ]
        )
        for _ in range(processes)
    ]

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    return max(child.wait() for child in children)
