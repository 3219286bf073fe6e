"""The `outreach` command: a thin adapter over the Python API, one module per command
group."""

from __future__ import annotations

from pathlib import Path

import click

from outreach import __version__
from outreach.cli.app import App, OutreachGroup, console, pass_app, whole_when_piped
from outreach.cli.bounces import bounces
from outreach.cli.campaigns import campaigns
from outreach.cli.consent import consent
from outreach.cli.contacts import contacts
from outreach.cli.db import db
from outreach.cli.demo import demo
from outreach.cli.health import health
from outreach.cli.segments import segments
from outreach.cli.serve import serve
from outreach.cli.suppressions import suppressions
from outreach.cli.worker import worker


@click.group(cls=OutreachGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="outreach")
def cli() -> None:
    """CityNet's newsletter and outreach mailer.

    Campaigns are YAML files, emails are MJML + Jinja2 templates, a worker sends them and
    every delivery is tracked. Configuration comes from OUTREACH_* variables (see README).

    \b
    Example:
      outreach init && outreach contacts import examples/contacts.csv
    """
    whole_when_piped()


@cli.command()
@pass_app
def init(app: App) -> None:
    """Create the database, or migrate it to the newest schema.

    Safe to run again: an up-to-date database is left as it is. When no secret key is
    configured (OUTREACH_SECRET_KEY or outreach.toml), one is generated into
    ./outreach.toml, where every command started in this folder finds it.

    \b
    Example:
      OUTREACH_DATABASE_URL=sqlite:///outreach.db outreach init
    """
    from outreach import secretkey
    from outreach.db import head_revision, safe_url, upgrade

    settings = app.settings
    if settings.secret_key:
        settings.require_secret_key("outreach")
    url = settings.database_url
    upgrade(url)
    console.print(
        f"database {safe_url(url)} is at schema {head_revision()} (release {__version__})"
    )
    if not settings.secret_key:
        toml = Path("outreach.toml")
        secretkey.store(toml)
        console.print(
            f"generated a secret key into {toml.resolve()}; keep that file private and out "
            "of git, and never change the key (links in sent mail would stop working)",
            soft_wrap=True,
        )


cli.add_command(contacts)
cli.add_command(suppressions)
cli.add_command(segments)
cli.add_command(consent)
cli.add_command(campaigns)
cli.add_command(worker)
cli.add_command(demo)
cli.add_command(serve)
cli.add_command(bounces)
cli.add_command(db)
cli.add_command(health)


def main() -> None:
    cli(prog_name="outreach")
