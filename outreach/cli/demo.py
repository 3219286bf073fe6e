"""`outreach demo`: the whole path into an outbox, in a folder of its own."""

from __future__ import annotations

from pathlib import Path

import click

from outreach.cli.app import App, console, pass_app
from outreach.cli.campaigns import status_view


@click.command()
@click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path),
    default=Path("demo"),
    show_default=True,
    help="An empty folder for the demo's database and outbox.",
)
@pass_app
def demo(app: App, directory: Path) -> None:
    """Set up, import the example contacts, and send the example newsletter to an outbox.

    Everything happens in a folder of its own, with a worker the demo starts and stops;
    no real person is mailed. The example files come with the package, so it runs in any
    folder. Its last lines are commands to paste into a shell as they are.

    \b
    Example:
      outreach demo --dir /tmp/outreach-demo
    """
    from outreach.db import reader_sessionmaker
    from outreach.demo import CAMPAIGN, next_commands, run_demo
    from outreach.lifecycle import status

    settings = run_demo(directory, lambda line: console.print(line, soft_wrap=True))
    with reader_sessionmaker(settings.database_url)() as session:
        console.print(status_view(status(session, CAMPAIGN)))
    files = sorted((settings.outbox / CAMPAIGN).glob("*.eml"))
    console.print(
        f"{len(files)} messages are in {settings.outbox / CAMPAIGN}, e.g. "
        f"{files[0] if files else 'none'}",
        soft_wrap=True,
    )
    console.print("Try it, in a shell (each line as it is):")
    for command in next_commands(directory):
        console.print(f"  {command}", soft_wrap=True)
