"""`outreach db`: which release the database's schema belongs to, and going back to an
earlier release's schema."""

from __future__ import annotations

import json
import sys

import click

from outreach.cli.app import App, console, err_console, labelled, pass_app
from outreach.config import Settings
from outreach.errors import UserError
from outreach.printable import counted


@click.group()
def db() -> None:
    """The database's schema: its release, and going back to an earlier one.

    \b
    Example:
      outreach db status
    """


@db.command("status")
@click.option("--json", "as_json", is_flag=True, help="One JSON object, for scripts.")
@pass_app
def db_status(app: App, as_json: bool) -> None:
    """Print the schema revision, the release it belongs to, and whether this outreach
    expects another. Exit 0 when the schema is the one this outreach expects, 1 otherwise
    (an upgrade with `outreach init` is due, or a newer release made the database).

    \b
    Example:
      outreach db status --json
    """
    from outreach.releases import status

    found = status(app.settings.database_url)
    if as_json:
        console.print(json.dumps(found.as_json()), soft_wrap=True)
    else:
        for line in found.lines():
            console.print(line, soft_wrap=True)
    if not found.current:
        sys.exit(1)


def empty_queue(settings: Settings) -> str:
    """The queue's tasks are this release's, which an earlier one cannot read (it would log
    an error for each); they only nudge workers, so they go: the older worker's sweep finds
    all the work in the database."""
    from outreach.tasks import UNREACHABLE, QueueUnavailable, reachable_queue

    try:
        storage = reachable_queue(settings).huey.storage
        n = storage.queue_size() + storage.schedule_size()
        storage.flush_queue()
        storage.flush_schedule()
    except (QueueUnavailable, *UNREACHABLE) as exc:
        return (
            f"the queue was left as it is ({' '.join(str(exc).split())[:200]}); the older "
            "worker logs an error for each task of this release it finds there, and loses "
            "nothing"
        )
    return f"emptied the queue of {counted(n, 'task')} (the older worker's sweep finds the work)"


@db.command("downgrade")
@click.argument("version")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_app
def db_downgrade(app: App, version: str, yes: bool) -> None:
    """Take the schema back to an earlier release's, keeping every row it can hold.

    What the older schema cannot hold (tables and columns it does not have, messages only
    this release can send) is counted, one line each, before anything changes. Stop every
    worker, the web service and the bounce receiver first; then run the older release on
    the database. `outreach init` of this release upgrades it again.

    \b
    Example:
      outreach db downgrade 0.1.0 --yes
    """
    from outreach.releases import downgrade, plan_downgrade

    plan = plan_downgrade(app.settings.database_url, version)
    if plan.noop:
        console.print(
            f"the schema is already release {plan.target.version}'s ({plan.target.revision}); "
            "nothing to do",
            soft_wrap=True,
        )
        return
    for line in plan.losses:
        err_console.print(labelled("not kept:", "yellow", line), soft_wrap=True)
    if not plan.losses:
        console.print(f"release {plan.target.version}'s schema holds every row", soft_wrap=True)
    question = (
        f"Take the schema from release {plan.source.version} ({plan.from_revision}) back to "
        f"{plan.target.version} ({plan.target.revision})?"
    )
    if not yes and not click.confirm(question):
        raise UserError("nothing changed")
    for line in downgrade(plan):
        err_console.print(labelled("not kept:", "yellow", line), soft_wrap=True)
    console.print(empty_queue(app.settings), soft_wrap=True)
    console.print(
        f"the schema is release {plan.target.version}'s ({plan.target.revision}); run "
        f"outreach {plan.target.version} on it, or `outreach init` of a later release to "
        "upgrade again",
        soft_wrap=True,
    )
