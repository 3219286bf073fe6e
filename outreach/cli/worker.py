"""`outreach worker`: the worker that renders and sends."""

from __future__ import annotations

import sys

import click

from outreach.cli.app import App, console, pass_app
from outreach.errors import UserError


@click.command()
@click.option(
    "--workers",
    "-w",
    default=4,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Sending threads per process (each with its own SMTP connection).",
)
@click.option(
    "--processes",
    "-p",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Worker processes; more than one uses more CPU cores.",
)
@click.option(
    "--check",
    is_flag=True,
    help="Start nothing: exit 0 if a worker on this host has beaten recently, else 1 "
    "(a health check for docker compose or systemd).",
)
@click.option(
    "--within",
    default=15.0,
    show_default=True,
    type=click.FloatRange(min=1),
    metavar="SECONDS",
    help="With --check: how recent the last heartbeat must be.",
)
@click.option(
    "--wait",
    default=120.0,
    show_default=True,
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="At start, how long to wait for the database and the queue (one line a minute) "
    "before exiting with status 75 (EX_TEMPFAIL) for a supervisor to start it again.",
)
@click.option(
    "--self-check",
    "self_check",
    default=60.0,
    show_default=True,
    type=click.FloatRange(min=1),
    metavar="SECONDS",
    help="Stop cleanly and exit 75 when the heartbeat cannot be written or the queue does "
    "not answer for this long, so that compose or systemd starts a fresh worker.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    metavar="PORT",
    help="Serve the figures of `outreach health` for Prometheus at "
    "http://127.0.0.1:PORT/metrics (this host only; with --processes, the first process).",
)
@pass_app
def worker(
    app: App,
    workers: int,
    processes: int,
    check: bool,
    within: float,
    wait: float,
    self_check: float,
    metrics_port: int | None,
) -> None:
    """Run the worker (Huey consumer) that renders and sends queued campaigns.

    Run as many as you like, on as many machines as you like, against the same database
    and queue. SIGTERM or Ctrl-C stops it cleanly: the message in hand is finished and the
    rest of its claims go back to the queue, where a running worker takes them within a
    second. One process (the default) uses one CPU core; see docs/operations.md, "How many
    workers", before starting more. Every worker process writes a heartbeat to the
    database every 2 seconds; `campaigns status` and `outreach health` show when none is
    alive, and `--check` tells whether this host's workers are (exit 0) or not (exit 1): a
    process that is gone counts at once, a beat older than --within seconds too.

    A database or queue that does not answer at start (a restart during a deploy) is
    waited for, one line a minute, for --wait seconds; then the worker exits 75
    (EX_TEMPFAIL), never with a traceback.

    \b
    Example:
      OUTREACH_SMTP_URL=smtp://relay:587 OUTREACH_SECRET_KEY=… outreach worker -p 2 -w 4
      outreach worker --check --within 15
      outreach worker --metrics-port 9464
    """
    if check:
        import socket

        from outreach.heartbeat import check_host

        with app.reader() as session:
            result = check_host(session, socket.gethostname(), within)
        if not result.ok:
            raise UserError(result.message())
        console.print(result.message(), soft_wrap=True)
        return
    from outreach.db import size_pools
    from outreach.tasks import run_processes, run_worker, wait_for_services

    size_pools(workers)  # before any connection: every sending thread gets its own
    app.settings.require_secret_key("`outreach worker`")
    if processes > 1:
        wait_for_services(app.settings, wait)  # one line, not one a process
        extra = ["--wait", str(wait), "--self-check", str(self_check)]
        sys.exit(run_processes(processes, workers, extra, metrics_port))
    run_worker(app.settings, workers, wait, self_check, metrics_port)
