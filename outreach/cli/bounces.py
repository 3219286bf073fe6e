"""`outreach bounces`: bounces and complaints, read from files or received over SMTP."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from outreach.cli.app import App, console, err_console, pass_app
from outreach.errors import UserError
from outreach.printable import json_document, printable


@click.group()
def bounces() -> None:
    """Read bounce messages and complaints, and act on them.

    \b
    Example:
      outreach bounces ingest --maildir /var/mail/bounces
    """


@bounces.command("ingest")
@click.argument("source", required=False)
@click.option("--mbox", type=click.Path(path_type=Path), help="Read every message of an mbox.")
@click.option(
    "--maildir",
    type=click.Path(path_type=Path),
    help="Read new/ of a Maildir; processed messages move to cur/.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object of counts, for scripts.")
@pass_app
def bounces_ingest(
    app: App, source: str | None, mbox: Path | None, maildir: Path | None, as_json: bool
) -> None:
    """Ingest bounces (RFC 3464 DSNs, common non-standard formats, VERP) and ARF complaints.

    Only failures of mail we sent to that address count (by VERP address or original
    Message-ID); the rest is reported as not ours. Without OUTREACH_BOUNCE_DOMAIN, a report
    that names only an address mailed in the last 30 days is recorded and listed ("named by
    address only"), never suppressing on its own. An address or domain that does not exist
    suppresses at once; temporary and other permanent failures after
    OUTREACH_SOFT_BOUNCE_LIMIT campaigns in a row; a complaint always. Policy rejections
    (SPF/DKIM/DMARC, spam, blocked IP) and auto-replies never suppress.
    Ingesting the same message twice counts it once. SOURCE is a file, or - for standard
    input, so an MTA alias can pipe into it: when the database cannot be reached it exits
    75 (EX_TEMPFAIL) and the MTA tries again later.

    \b
    Example:
      outreach bounces ingest --maildir ~/Maildir/bounces
      # /etc/aliases:  bounces: "|/opt/outreach/.venv/bin/outreach bounces ingest -"
    """
    from outreach.bounces import database_session, ingest, messages_from
    from outreach.tokens import tokens_for

    if sum(x is not None for x in (source, mbox, maildir)) != 1:
        raise UserError("give exactly one of FILE, -, --mbox FILE or --maildir DIR")
    settings = app.settings
    stream = messages_from(source, mbox=mbox, maildir=maildir, stdin=sys.stdin.buffer)
    tokens = tokens_for(settings, "`bounces ingest`")
    with database_session(settings.database_url) as session:
        report = ingest(
            session,
            tokens,
            settings.bounce_domain,
            settings.soft_bounce_limit,
            stream,
        )
    if as_json:
        click.echo(json_document(report.as_json()))
        return
    for note in report.notes():
        err_console.print(printable(note), soft_wrap=True)
    console.print(report.summary(), soft_wrap=True)


@bounces.command("receive")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=2525, show_default=True, type=int, help="Port to listen on.")
@pass_app
def bounces_receive(app: App, host: str, port: int) -> None:
    """Receive bounces, complaints and mailto: unsubscribes over SMTP, and ingest each
    message as `bounces ingest` does.

    Accepts only bounces+TOKEN@ and unsubscribe+TOKEN@ (with a valid token), postmaster@
    and abuse@ at OUTREACH_BOUNCE_DOMAIN; refuses other recipients with 550, messages over
    2 MB with 552, messages of more pieces than any bounce with 554, and answers 451 (the
    sender retries) while the database cannot be reached, too many messages wait to be
    stored (20 in all, 5 from one client) or arrive at once (4 in all, 1 from one client),
    or one waited 30 s. Connections (100 in all) and messages per client (an IPv4 address,
    an IPv6 /64) are limited. Point the bounce
    domain's MX record at this host, port 25. Stops cleanly on SIGTERM.

    \b
    Example:
      OUTREACH_BOUNCE_DOMAIN=bounce.citynet-ap.org outreach bounces receive --host 0.0.0.0 --port 25
    """
    from outreach.bounce_receiver import serve
    from outreach.tokens import tokens_for

    settings = app.settings
    if not settings.bounce_domain:
        raise UserError(
            "OUTREACH_BOUNCE_DOMAIN is not set: say which domain's bounces to receive "
            "(the domain of the bounces+TOKEN@ Return-Path)"
        )
    serve(
        settings,
        tokens_for(settings, "`bounces receive`"),
        host,
        port,
        log=lambda line: console.print(printable(line), soft_wrap=True),
    )
