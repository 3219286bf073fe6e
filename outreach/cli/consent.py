"""`outreach consent`: what Korean law asks of a sender of advertising."""

from __future__ import annotations

import click

from outreach.cli.app import App, console, pass_app
from outreach.printable import counted


@click.group()
def consent() -> None:
    """What Korean law asks of a sender of advertising: the two-yearly consent notices.

    \b
    Example:
      outreach consent notices --dry-run
    """


@consent.command("notices")
@click.option("--dry-run", is_flag=True, help="Count who is due; queue nothing.")
@pass_app
def consent_notices(app: App, dry_run: bool) -> None:
    """Queue the consent notice (Network Act Art. 50(8)) for every opted-in contact whose
    consent, or last notice, is two years old or more.

    The notice names the sender, the date and content of the consent and how to withdraw,
    in the contact's language. Each contact gets it once per period, however often this
    runs; the worker runs it daily when OUTREACH_CONSENT_NOTICES is true.

    \b
    Example:
      outreach consent notices --dry-run && outreach consent notices
    """
    from outreach.consent import queue_notices
    from outreach.subscriptions import load_config, system_sender
    from outreach.tasks import Nudger

    app.database()  # in the wrong folder, say that first
    sender = system_sender(app.settings, load_config(app.settings))
    with app.session() as session:
        run = queue_notices(session, sender, dry_run=dry_run)
    langs = ", ".join(f"{k} {v}" for k, v in sorted(run.languages.items())) or "none"
    if dry_run:
        console.print(
            f"dry run: {counted(run.queued, 'consent notice')} due (languages: {langs}); "
            "nothing was queued",
            soft_wrap=True,
        )
        return
    Nudger(app.settings)(run.campaign_id)
    console.print(
        f"{counted(run.queued, 'consent notice')} queued (languages: {langs}); "
        "`outreach worker` sends them",
        soft_wrap=True,
    )
