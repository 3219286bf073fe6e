"""`outreach consent`: what Korean law asks of a sender of advertising."""

from __future__ import annotations

import click

from outreach.cli.app import App, console, pass_app, print_table
from outreach.printable import counted, json_document


@click.group()
def consent() -> None:
    """What Korean law asks of a sender of advertising: the two-yearly consent notices.

    \b
    Example:
      outreach consent notices --dry-run
    """


@consent.command("notices")
@click.option("--dry-run", is_flag=True, help="Count who is due; queue nothing.")
@click.option("--list", "listed", is_flag=True, help="List each contact who gets (would get) one.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object, for scripts.")
@pass_app
def consent_notices(app: App, dry_run: bool, listed: bool, as_json: bool) -> None:
    """Queue the consent notice (Network Act Art. 50(8)) for every opted-in contact whose
    consent, or last notice, is two years old or more.

    The notice names the sender, the date and content of the consent and how to withdraw,
    in the contact's language. Each contact gets it once per period, however often this
    runs; the worker runs it daily when OUTREACH_CONSENT_NOTICES is true. --list names
    every contact it goes to (with --dry-run: would go to).

    \b
    Example:
      outreach consent notices --dry-run --list && outreach consent notices
    """
    from outreach.consent import queue_notices
    from outreach.reports import local
    from outreach.subscriptions import load_config, system_sender
    from outreach.tasks import Nudger

    app.database()  # in the wrong folder, say that first
    sender = system_sender(app.settings, load_config(app.settings))
    with app.session() as session:
        run = queue_notices(session, sender, dry_run=dry_run)
    if not dry_run:
        Nudger(app.settings)(run.campaign_id)
    if as_json:
        doc = {
            "dry_run": dry_run,
            "due": run.due,
            "queued": run.queued,
            "languages": run.languages,
            "recipients": run.recipients,
        }
        click.echo(json_document(doc))
        return
    langs = ", ".join(f"{k} {v}" for k, v in sorted(run.languages.items())) or "none"
    if listed and run.recipients:
        zone = app.settings.zone
        print_table(
            "would get a consent notice" if dry_run else "consent notices queued",
            ["email", "name", "language", "consented", "due"],
            [
                [r["email"], r["name"], r["language"], local(r["consent_date"], zone)[:10],
                 local(r["due"], zone)[:10]]
                for r in run.recipients
            ],
        )  # fmt: skip
    if dry_run:
        console.print(
            f"dry run: {counted(run.queued, 'consent notice')} due (languages: {langs}); "
            "nothing was queued" + ("" if listed or not run.queued else " (--list names them)"),
            soft_wrap=True,
        )
        return
    console.print(
        f"{counted(run.queued, 'consent notice')} queued (languages: {langs}); "
        "`outreach worker` sends them",
        soft_wrap=True,
    )
