"""`outreach suppressions`: addresses never to be mailed."""

from __future__ import annotations

import click

from outreach.cli.app import App, console, pass_app, print_table
from outreach.printable import json_document


@click.group()
def suppressions() -> None:
    """List, add and remove suppressed addresses.

    \b
    Example:
      outreach suppressions add noreply@example.org --reason manual
    """


@suppressions.command("list")
@click.option(
    "--reason", type=click.Choice(["unsubscribed", "bounced", "complained", "manual", "forgotten"])
)
@click.option("--json", "as_json", is_flag=True, help="One JSON array, for scripts.")
@pass_app
def suppressions_list(app: App, reason: str | None, as_json: bool) -> None:
    """List suppressed addresses, oldest first.

    \b
    Example:
      outreach suppressions list --reason bounced --json
    """

    from outreach.suppressions import suppressions_as_json

    with app.reader() as session:
        listed = suppressions_as_json(session, reason)
    if as_json:
        click.echo(json_document(listed))
        return
    rows = [
        [s["email"], s["reason"], s["since"][:16].replace("T", " "), s["detail"]] for s in listed
    ]
    print_table(f"{len(rows)} suppressed", ["email", "reason", "since", "detail"], rows)


@suppressions.command("add")
@click.argument("emails", nargs=-1, required=True)
@click.option(
    "--reason",
    default="manual",
    show_default=True,
    type=click.Choice(["unsubscribed", "bounced", "complained", "manual"]),
)
@click.option("--note", help="Why, for the next person who reads the list.")
@pass_app
def suppressions_add(app: App, emails: tuple[str, ...], reason: str, note: str | None) -> None:
    """Suppress addresses: they are never mailed, even when imported again.

    When any argument is not an address, nothing is suppressed.

    \b
    Example:
      outreach suppressions add a@example.org b@example.org --note "asked by phone"
    """
    from outreach.suppressions import suppress_all

    with app.session() as session:
        rows = suppress_all(session, emails, reason, detail=note)
        done = [f"{row.email}: suppressed ({row.reason})" for row in rows]
    for line in done:
        console.print(line, soft_wrap=True)


@suppressions.command("remove")
@click.argument("emails", nargs=-1, required=True)
@pass_app
def suppressions_remove(app: App, emails: tuple[str, ...]) -> None:
    """Lift suppressions, e.g. after an address bounced by mistake.

    A forgotten address stays suppressed. When any argument cannot be lifted, none is.

    \b
    Example:
      outreach suppressions remove mayor@example.org
    """
    from outreach.suppressions import unsuppress_all

    with app.session() as session:
        rows = unsuppress_all(session, emails)
        done = [f"{row.email}: no longer suppressed (was {row.reason})" for row in rows]
    for line in done:
        console.print(line, soft_wrap=True)
