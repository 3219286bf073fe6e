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
    default=60.0,
    show_default=True,
    type=click.FloatRange(min=1),
    metavar="SECONDS",
    help="With --check: how recent the last heartbeat must be.",
)
@pass_app
def worker(app: App, workers: int, processes: int, check: bool, within: float) -> None:
    """Run the worker (Huey consumer) that renders and sends queued campaigns.

    Run as many as you like, on as many machines as you like, against the same database
    and queue. SIGTERM or Ctrl-C stops it cleanly: the message in hand is finished and the
    rest of its claims go back to the queue, where a running worker takes them within a
    second. One process (the default) uses one CPU core; see docs/operations.md, "How many
    workers", before starting more. Every worker process writes a heartbeat to the
    database every few seconds; `campaigns status` shows when none is alive, and `--check`
    tells whether this host's workers are (exit 0) or not (exit 1).

    \b
    Example:
      OUTREACH_SMTP_URL=smtp://relay:587 OUTREACH_SECRET_KEY=… outreach worker -p 2 -w 4
      outreach worker --check --within 60
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
    from outreach.tasks import reachable_queue, run_processes, run_worker

    size_pools(workers)  # before any connection: every sending thread gets its own
    app.database()
    app.settings.require_secret_key("`outreach worker`")
    if processes > 1:
        reachable_queue(app.settings, "the worker did not start")  # one line, not one each
        sys.exit(run_processes(processes, workers))
    run_worker(app.settings, workers)
