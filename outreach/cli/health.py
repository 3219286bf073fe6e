"""`outreach health`: is sending healthy? For cron, monitors and Prometheus."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from outreach.cli.app import App, console, pass_app


@click.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object, for scripts.")
@click.option(
    "--web",
    metavar="URL",
    help="Also ask the web service: URL/healthz must answer 200 (e.g. OUTREACH_BASE_URL).",
)
@click.option(
    "--bounces",
    metavar="HOST:PORT",
    help="Also ask the bounce receiver (`outreach bounces receive`) over SMTP.",
)
@click.option(
    "--prometheus",
    type=click.Path(path_type=Path, dir_okay=False),
    metavar="FILE",
    help="Also write the figures in Prometheus' text format to FILE (for node_exporter's "
    "textfile collector: a *.prom file in its directory).",
)
@click.option(
    "--bounce-rate",
    default=0.05,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Bounced share of a recent campaign's sent messages that is a problem (Amazon "
    "SES reviews an account at 5%).",
)
@click.option(
    "--complaint-rate",
    default=0.003,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Complaints per message sent that is a problem (Gmail's limit: 0.3%).",
)
@pass_app
def health(
    app: App,
    as_json: bool,
    web: str | None,
    bounces: str | None,
    prometheus: Path | None,
    bounce_rate: float,
    complaint_rate: float,
) -> None:
    """Check that sending is healthy: quiet and exit 0 when it is, else one line per
    problem and exit 1.

    Problems: work is due and no worker is alive (a dead-man check), a campaign paused,
    late or stuck, deliveries in `sending` past their lease, a recent campaign's bounce,
    complaint or deferral rate over the providers' limits, policy rejections in the last
    24 hours, the database or the queue unreachable, and with --web and --bounces the web
    service or the bounce receiver not answering. Works on SQLite and PostgreSQL; reads
    only. See docs/operations.md, "Health and alerts".

    \b
    Example:
      outreach health --web https://mail.citynet-ap.org --bounces 127.0.0.1:25
      outreach health --json --prometheus /var/lib/node_exporter/textfile/outreach.prom
    """
    from outreach.health import Health, Limits, check

    limits = Limits(bounce_rate=bounce_rate, complaint_rate=complaint_rate)
    found: list[Health] = []

    def run() -> Health:
        found.append(check(app.settings, limits, web=web, bounces=bounces))
        return found[-1]

    if prometheus is not None:
        from outreach.metrics import write_textfile

        write_textfile(prometheus, run)
    result = found[-1] if found else run()
    if as_json:
        console.print(json.dumps(result.as_json(), ensure_ascii=False), soft_wrap=True)
    else:
        for problem in result.problems:
            console.print(problem.line(), soft_wrap=True)
    if not result.ok:
        sys.exit(1)
