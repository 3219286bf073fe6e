"""Real `outreach worker` processes for integration tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from outreach.config import Settings
from outreach.lifecycle import Status
from tests.sending_helpers import current


def worker_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("OUTREACH_") or k.startswith("OUTREACH_TEST_")
    }
    env.update(
        {
            "OUTREACH_DATABASE_URL": settings.database_url,
            "OUTREACH_QUEUE_URL": settings.queue_url,
            "OUTREACH_SECRET_KEY": settings.secret_key
            or "_6FuslupQUggb0oT5JRL-5S1KOu2C5jSHsLnhjAj",
            "OUTREACH_RATE": "0" if settings.rate.unlimited else f"{settings.rate.per_second}/s",
            "OUTREACH_RETRY_DELAY": str(settings.retry_delay),
            "OUTREACH_MAX_ATTEMPTS": str(settings.max_attempts),
            "OUTREACH_LEASE_SECONDS": str(settings.lease_seconds),
            "OUTREACH_BATCH_SIZE": str(settings.batch_size),
            "OUTREACH_OUTBOX": str(settings.outbox),
            "OUTREACH_POSTAL_ADDRESS": settings.postal_address or "Seoul",
        }
    )
    if settings.smtp_url:
        env["OUTREACH_SMTP_URL"] = settings.smtp_url
    env.update(extra)
    return env


class Worker:
    def __init__(self, settings: Settings, log: Path, threads: int = 2, **extra: str) -> None:
        self.log = log
        self.process = subprocess.Popen(
            [sys.executable, "-m", "outreach", "worker", "--workers", str(threads)],
            env=worker_env(settings, **extra),
            stdout=subprocess.DEVNULL,
            stderr=log.open("ab"),
            cwd=log.parent,
        )

    def terminate(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def wait_for(
    predicate: Callable[[], bool],
    timeout: float,
    what: str,
    log: Path | None = None,
    interval: float = 0.1,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    raise AssertionError(f"timed out waiting for {what}\n{tail}")


def wait_done(
    settings: Settings, timeout: float, log: Path | None = None, name: str = "news"
) -> Status:
    wait_for(
        lambda: current(settings, name).state in ("done", "paused", "cancelled"),
        timeout,
        f"campaign {name} to finish",
        log,
    )
    return current(settings, name)
