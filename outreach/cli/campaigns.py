"""`outreach campaigns`: validate, preview, send, follow and report campaigns."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.table import Table
from rich.text import Text

from outreach.cli.app import (
    App,
    confirmed,
    console,
    err_console,
    labelled,
    minute,
    pass_app,
    print_table,
    segments_file_option,
)
from outreach.errors import FileErrors, UserError
from outreach.printable import counted, json_document, printable

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from outreach.lifecycle import Status


@click.group()
def campaigns() -> None:
    """Validate, preview, send and follow campaigns (campaigns/*.yaml).

    \b
    Example:
      outreach campaigns validate
    """


@campaigns.command("validate")
@click.argument("files", nargs=-1, type=click.Path(path_type=Path))
@pass_app
def campaigns_validate(app: App, files: tuple[Path, ...]) -> None:
    """Check campaign files, their segments and templates; exit 0 only when all is well.

    Checks YAML and keys, segments, the topic, From/Reply-To, every template variant, Jinja
    and MJML errors, undefined variables (rendered for stand-in contacts), links, and the
    unsubscribe link. Warns about what the audience's data will
    do: languages without a variant, values empty for some readers, links made of
    recipients' values. Without FILES, every campaigns/*.yaml is checked, and
    campaigns/topics.yaml and campaigns/subscribe.yaml (the subscribe form's settings) by
    their own rules; named, campaigns/segments.yaml is checked as segments.

    \b
    Example:
      outreach campaigns validate campaigns/2026-12-newsletter.yaml
    """
    from outreach.campaigns import find_campaigns
    from outreach.subscriptions import CONFIG_PATH
    from outreach.topics import DEFAULT_PATH as TOPICS_PATH

    shared = [path for path in (TOPICS_PATH, CONFIG_PATH) if path.is_file()]
    paths = list(files) or [*find_campaigns(), *shared]
    if not paths:
        raise UserError("no campaign files: pass FILE or add campaigns/*.yaml")
    # An error in a shared file (segments.yaml, a layout) is one problem, however many
    # campaigns use it: each is printed once, and the last line names the files to fix.
    shown: set[str] = set()
    broken: set[str] = set()
    failed = 0
    with app.optional_session(warn="audiences are not checked") as session:
        for path in paths:
            errors, warnings, ok_line = _validate_one(app, path, session)
            failed += bool(errors)
            for warning in warnings:
                if warning not in shown:  # e.g. the postal address, once for all files
                    shown.add(warning)
                    err_console.print(labelled("warning:", "yellow", warning), soft_wrap=True)
            if ok_line is not None:
                console.print(labelled("ok", "green", ok_line), soft_wrap=True)
            for error in errors:
                broken.add(_shown_path(error.path))
                if str(error) not in shown:
                    shown.add(str(error))
                    err_console.print(labelled("error:", "red", _shown(error)), soft_wrap=True)
    if failed:
        raise UserError(
            f"{failed} of {len(paths)} campaign files have errors; fix {', '.join(sorted(broken))}"
        )


def local_and_utc(when: datetime) -> str:
    """`2099-01-01 09:00 +09:00 (2099-01-01 00:00 UTC)`: the time as the file gives it, and
    in UTC, the one time zone every worker and report uses."""
    utc = when.astimezone(UTC)
    if when.utcoffset() == timedelta(0):
        return f"{utc:%Y-%m-%d %H:%M} UTC"
    offset = when.strftime("%z")
    return f"{when:%Y-%m-%d %H:%M} {offset[:3]}:{offset[3:]} ({utc:%Y-%m-%d %H:%M} UTC)"


def _validate_one(
    app: App, path: Path, session: Session | None
) -> tuple[list[Any], list[str], str | None]:
    """(errors, warnings, the ok line) of one file: a campaign, the topics, the segments or
    the subscribe settings."""
    from outreach.errors import FileError, located
    from outreach.subscriptions import load_config
    from outreach.validate import validate_campaign

    if path.name == "subscribe.yaml":
        try:
            load_config(app.settings, path)
        except (FileError, FileErrors) as exc:
            return located(exc), [], None
        return [], [], f"{path}: the subscribe form's settings"
    if path.name == "topics.yaml":  # checked with every campaign too
        from outreach.topics import load_topics

        try:
            topics = load_topics(path)
        except (FileError, FileErrors) as exc:
            return located(exc), [], None
        if not path.is_file():
            return [FileError(path, "no such file")], [], None
        return [], [], f"{path}: {counted(len(topics), 'topic')}: {topics.listing()}"
    if path.name == "segments.yaml":  # checked with every campaign, or named alone
        from outreach.segments import load_segments

        try:
            found = load_segments(path, session)
        except (FileError, FileErrors) as exc:
            return located(exc), [], None
        return [], [], f"{path}: {counted(len(found), 'segment')}"
    report = validate_campaign(path, app.settings, session)
    if not report.ok:
        return report.errors, report.warnings, None
    detail = ""
    if report.audience_size is not None:
        langs = ", ".join(f"{k} {v}" for k, v in sorted(report.languages.items()))
        detail = f": {report.audience_size} recipients" + (
            f" (languages: {langs})" if langs else ""
        )
    return [], report.warnings, f"{path}{detail}"


def _shown_path(path: str) -> str:
    """A path as the person typed it: relative to this folder when it is inside it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return path


def _shown(error: Any) -> str:
    where = _shown_path(error.path)
    return f"{where}:{error.line}: {error.message}" if error.line else f"{where}: {error.message}"


@campaigns.command("preview")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--contact", "email", help="Render for this contact (from the database).")
@click.option("--lang", help="Render this language variant.")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="HTML file to write (default preview/NAME.LANG.html); text goes beside it.",
)
@click.option("--eml", type=click.Path(path_type=Path), help="Also write the whole message.")
@click.option(
    "--png",
    type=click.Path(path_type=Path),
    help="Also screenshot it in headless Chromium (desktop, and .mobile.png).",
)
@pass_app
def campaigns_preview(
    app: App,
    file: Path,
    email: str | None,
    lang: str | None,
    output: Path | None,
    eml: Path | None,
    png: Path | None,
) -> None:
    """Write exactly what one recipient would get: HTML, text, and optionally .eml and PNG.

    Without --contact it renders for a stand-in contact; a language with no variant of its
    own is previewed in the variant its readers would get, and says so.

    \b
    Example:
      outreach campaigns preview campaigns/2026-12-newsletter.yaml --lang ko
      outreach campaigns preview campaigns/2026-12-newsletter.yaml \\
        --contact mayor.office@suwon.example.org --png preview/suwon.png
    """
    from outreach.preview import build_preview, screenshot

    with app.optional_session() as session:
        preview = build_preview(file, app.settings, session, email=email, language=lang)
    if preview.note:
        console.print(f"note: {preview.note}", soft_wrap=True)
    html_path = output or Path("preview") / f"{preview.campaign.name}.{preview.language}.html"
    html_path.parent.mkdir(parents=True, exist_ok=True)
    html_path.write_text(preview.rendered.html, encoding="utf-8")
    text_path = html_path.with_suffix(".txt")
    text_path.write_text(preview.rendered.text, encoding="utf-8")
    console.print(f"subject ({preview.language}): {preview.rendered.subject}", soft_wrap=True)
    console.print(f"wrote {html_path} and {text_path}")
    if eml:
        eml.parent.mkdir(parents=True, exist_ok=True)
        eml.write_bytes(preview.eml)
        console.print(f"wrote {eml}")
    if png:
        png.parent.mkdir(parents=True, exist_ok=True)
        for shot in screenshot(html_path, png):
            console.print(f"wrote {shot}")


@campaigns.command("send")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--dry-run", is_flag=True, help="Check and count the audience; queue nothing.")
@click.option(
    "--test-to",
    metavar="EMAIL",
    help="Send one copy per language to EMAIL only; the campaign is untouched.",
)
@click.option(
    "--contact",
    "as_contact",
    metavar="EMAIL",
    help="With --test-to: one copy as this contact would get it (their data and language).",
)
@click.option(
    "--json", "as_json", is_flag=True, help="With --dry-run: one JSON object, for scripts."
)
@pass_app
def campaigns_send(
    app: App,
    file: Path,
    dry_run: bool,
    test_to: str | None,
    as_contact: str | None,
    as_json: bool,
) -> None:
    """Validate a campaign, snapshot its audience into deliveries and queue them.

    Prints validate's warnings, and when the campaign starts: at once, or at send_at (a
    send_at in the past starts it at once, and says so). Sending the same campaign again
    adds only contacts new to its audience: nobody is mailed twice. With send_at in the
    future the campaign waits, scheduled, for the worker.

    \b
    Example:
      outreach campaigns send campaigns/2026-12-newsletter.yaml --dry-run
      outreach campaigns send campaigns/2026-12-newsletter.yaml --dry-run --json
      outreach campaigns send campaigns/2026-12-newsletter.yaml --test-to me@example.org
      outreach campaigns send campaigns/2026-12-newsletter.yaml --test-to me@example.org \\
        --contact mayor.office@suwon.example.org
    """
    from outreach.lifecycle import send_campaign, send_test
    from outreach.tasks import enqueuer
    from outreach.welcome import install, is_welcome

    if as_contact and not test_to:
        raise click.UsageError("--contact goes with --test-to: --test-to ME --contact EMAIL")
    if as_json and not dry_run:
        raise click.UsageError("--json goes with --dry-run: send FILE --dry-run --json")
    with app.session() as session:
        if is_welcome(file) and not test_to:
            if dry_run:
                raise UserError(f"{file} is the welcome message: it has no audience to count")
            installed = install(file, app.settings, session)
            console.print(
                f"{installed.campaign}: stored as the welcome message "
                f"({', '.join(installed.languages)}); each newly confirmed subscriber gets it "
                "once. Nobody was mailed now."
                + (f" It replaces {', '.join(installed.replaced)}." if installed.replaced else ""),
                soft_wrap=True,
            )
            return
        if test_to:
            languages = send_test(file, app.settings, session, test_to, as_contact)
            whom = f" as {as_contact} would get it" if as_contact else ""
            console.print(
                f"sent {counted(len(languages), 'test message')}{whom} ({', '.join(languages)}) "
                f"to {test_to}; the campaign's deliveries are untouched",
                soft_wrap=True,
            )
            return
        # Made only when the queue answers: else one line, and the campaign stays as it was.
        enqueue = None if dry_run else enqueuer(app.settings)
        result = send_campaign(file, app.settings, session, enqueue, dry_run=dry_run)
    if as_json:
        click.echo(json_document(_dry_run_json(result)))
        return
    for warning in result.warnings:
        err_console.print(labelled("warning:", "yellow", warning), soft_wrap=True)
    langs = ", ".join(f"{k} {v}" for k, v in sorted(result.languages.items()))
    new = counted(result.added, "new delivery", "new deliveries")
    past = result.send_at is not None and result.send_at <= datetime.now(UTC)
    if past and (dry_run or result.added):  # said when it decides something
        assert result.send_at is not None
        console.print(
            f"send_at {local_and_utc(result.send_at)} is in the past: the campaign "
            + ("would start at once" if dry_run else "starts now"),
            soft_wrap=True,
        )
    if result.schedule:
        console.print(schedule_table(result.schedule, dry_run))
    if dry_run:
        start = (
            f"would start {local_and_utc(result.send_at)}"
            if result.send_at is not None and not past
            else "would start at once"
        )
        if result.schedule:
            first = result.schedule[0]
            start = (
                "would start at once"
                if first.at_once
                else f"would start {local_and_utc(first.at)}, each zone at its own time"
            )
        console.print(
            f"dry run: {result.campaign} would queue {new} ({result.total} in all; "
            f"the audience's languages: {langs}) and {start}; nothing was queued",
            soft_wrap=True,
        )
        return
    line = f"{result.campaign}: {new} queued ({result.total} in all)"
    if result.state == "scheduled" and result.schedule:
        starts = local_and_utc(result.schedule[0].at)
        line += f"; scheduled: each zone at its own time, the first at {starts}"
    elif result.state == "scheduled" and result.send_at:
        line += f"; scheduled for {local_and_utc(result.send_at)}"
    elif result.state == "sending":
        line += "; starts now"
    elif result.state == "done":
        line += "; nobody new to send to, the campaign stays done"
    else:
        line += f"; the campaign is {result.state}"
    console.print(
        line + ". Run `outreach worker` to send; follow with `outreach campaigns "
        f"status {result.campaign} --watch`",
        soft_wrap=True,
    )


def _dry_run_json(result: Any) -> dict[str, Any]:
    """`send --dry-run --json`: what would happen, with the UTC schedule when delivery
    depends on recipients' zones or a window."""
    from outreach.schedule import by_time

    return {
        "campaign": result.campaign,
        "dry_run": True,
        "state": result.state,
        "new_deliveries": result.added,
        "total": result.total,
        "languages": result.languages,
        "send_at": result.send_at.isoformat() if result.send_at else None,
        "schedule": by_time(result.schedule),
        "at_once": sum(g.count for g in result.schedule if g.at_once),
        "warnings": result.warnings,
    }


def schedule_table(groups: list[Any], dry_run: bool) -> Table:
    """Who gets it when, one row per zone and due time: the recipients' own clock and UTC."""
    from outreach.zones import zone

    table = Table(title="would be delivered" if dry_run else "delivery schedule")
    for column, justify in (
        ("zone", "left"),
        ("recipients", "right"),
        ("their time", "left"),
        ("UTC", "left"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for group in groups:
        shown = group.at.astimezone(zone(group.zone))
        own = f"{shown:%a %Y-%m-%d %H:%M} {shown.strftime('%Z')}"
        if group.at_once:
            own = "at once (its time has passed)"
        table.add_row(
            group.zone, str(group.count), own, f"{group.at.astimezone(UTC):%Y-%m-%d %H:%M:%S}"
        )
    return table


def status_view(status: Any, zone: Any = UTC) -> Any:
    from rich.console import Group
    from rich.progress_bar import ProgressBar

    from outreach.reports import local

    done = (
        status.total
        - status.counts["queued"]
        - status.counts["deferred"]
        - status.counts["sending"]
    )
    table = Table(
        title=printable(
            f"{status.name}: {status.state}" + (f" — {status.reason}" if status.reason else "")
        )
    )
    for state in ("queued", "sending", "sent", "deferred", "failed", "skipped", "bounced"):
        table.add_column(state, justify="right")
    table.add_column("total", justify="right")
    table.add_row(
        *(
            str(status.counts[s])
            for s in ("queued", "sending", "sent", "deferred", "failed", "skipped", "bounced")
        ),
        str(status.total),
    )
    line = f"{done}/{status.total} done, {int(status.per_minute)} sent in the last minute"
    if status.state == "scheduled" and status.send_at is not None:
        line = f"starts {local(status.send_at, zone)} ({_until(status.send_at)}); {line}"
    if status.note:
        line += f"; {status.note}"
    elif status.eta_seconds is not None and status.state == "sending":
        line += f", about {int(status.eta_seconds)} s left"
    parts: list[Any] = [table]
    if status.waiting:
        parts.append(schedule_table(status.waiting[:WAITING_ROWS], dry_run=False))
        if len(status.waiting) > WAITING_ROWS:
            rest = sum(g.count for g in status.waiting[WAITING_ROWS:])
            more = counted(rest, "more recipient", "more recipients")
            parts.append(Text(f"… and {more} due later (--json lists every group)"))
    if not console.is_terminal:
        return Group(*parts, Text(printable(line)))  # a bar is for eyes, not for a pipe
    # In a grid, the bar ends its line even where nothing is wrapped.
    bar = Table.grid()
    bar.add_row(ProgressBar(total=max(status.total, 1), completed=done, width=60))
    return Group(*parts, bar, Text(printable(line)))


# `campaigns status`: the waiting groups shown (the JSON has them all).
WAITING_ROWS = 12


def _until(when: datetime) -> str:
    """`in 2 d 3 h`, `in 1 h 5 min`, `in 4 min`: how long until a scheduled start."""
    left = int((when - datetime.now(UTC)).total_seconds())
    if left <= 0:
        return "due: a worker starts it"
    days, rest = divmod(left, 86400)
    hours, minutes = rest // 3600, rest % 3600 // 60
    if days:
        return f"in {days} d {hours} h"
    if hours:
        return f"in {hours} h {minutes} min"
    return f"in {max(minutes, 1)} min"


def _status_line(status: Any) -> str:
    counts = " ".join(f"{state}={n}" for state, n in status.counts.items())
    return printable(f"{status.name} {status.state} {counts} total={status.total}")


# `campaigns status`: work is due and no worker is alive to do it.
NO_WORKER = 3


def unattended(current: Status) -> bool:
    """The campaign has work due now and no worker is alive (`Status.note` says so)."""
    from outreach.models import utcnow

    if current.note is None:
        return False
    if current.state == "scheduled" and current.send_at is not None:
        return current.send_at <= utcnow()
    return current.state == "sending"


@campaigns.command("status")
@click.argument("name")
@click.option("--watch", is_flag=True, help="Refresh until the campaign is done.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object, for scripts.")
@click.option("--interval", default=1.0, show_default=True, help="Seconds between refreshes.")
@pass_app
def campaigns_status(app: App, name: str, watch: bool, as_json: bool, interval: float) -> None:
    """Counts of deliveries in each state, rate and time left.

    When no worker is alive (see `outreach worker --check`), it says so instead of a time
    left that would never come, and (without --watch) exits 3 if the campaign's work is
    due: for scripts, "nobody is sending this".

    \b
    Example:
      outreach campaigns status 2026-12-newsletter --watch
      outreach campaigns status 2026-12-newsletter --json
    """
    import time

    from rich.live import Live

    from outreach.lifecycle import status

    with app.reader() as session:
        current = status(session, name, default_zone=app.settings.timezone)
        if as_json:
            click.echo(json_document(current.as_json()))
        zone = app.settings.zone
        if not as_json and not watch:
            console.print(status_view(current, zone))
        if as_json or not watch:
            if unattended(current):
                sys.exit(NO_WORKER)
            return
        if not console.is_terminal:
            # Piped: a line per change, each whole, instead of a screen redrawn in place.
            shown = ""
            while True:
                view = _status_line(current)
                if view != shown:
                    click.echo(view)
                    shown = view
                if current.state not in ("sending", "scheduled"):
                    return
                time.sleep(interval)
                current = status(session, name, default_zone=app.settings.timezone)
        with Live(status_view(current, zone), console=console, refresh_per_second=4) as live:
            while current.state in ("sending", "scheduled"):
                time.sleep(interval)
                current = status(session, name, default_zone=app.settings.timezone)
                live.update(status_view(current, zone))


@campaigns.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON array, for scripts.")
@pass_app
def campaigns_list(app: App, as_json: bool) -> None:
    """Every campaign that has been sent, with its state and counts.

    Pending counts deliveries that wait for a worker (queued or deferred).

    \b
    Example:
      outreach campaigns list
      outreach campaigns list --json
    """

    from outreach.lifecycle import list_campaigns, listed_as_json

    with app.reader() as session:
        listed = [listed_as_json(c, n) for c, n in list_campaigns(session)]
    if as_json:
        click.echo(json_document(listed))
        return
    rows = [
        [
            c["campaign"],
            c["state"],
            c["total"],
            c["deliveries"]["sent"],
            c["deliveries"]["queued"] + c["deliveries"]["deferred"],
            c["deliveries"]["failed"],
            c["deliveries"]["bounced"],
            minute(c["created_at"]),
        ]
        for c in listed
    ]
    print_table(
        "campaigns",
        ["campaign", "state", "deliveries", "sent", "pending", "failed", "bounced", "created"],
        rows,
    )


@campaigns.command("pause")
@click.argument("name")
@pass_app
def campaigns_pause(app: App, name: str) -> None:
    """Stop sending a campaign; workers give back what they had claimed.

    \b
    Example:
      outreach campaigns pause 2026-12-newsletter
    """
    from outreach.lifecycle import pause

    with app.session() as session:
        pause(session, name)
    console.print(f"{name}: paused; `outreach campaigns resume {name}` continues it")


@campaigns.command("resume")
@click.argument("name")
@pass_app
def campaigns_resume(app: App, name: str) -> None:
    """Continue a paused campaign.

    \b
    Example:
      outreach campaigns resume 2026-12-newsletter
    """
    from outreach.lifecycle import resume
    from outreach.tasks import enqueuer

    enqueue = enqueuer(app.settings)  # an unreachable queue stops here: still paused
    with app.session() as session:
        campaign = resume(session, name, enqueue, app.settings)
    console.print(f"{name}: {campaign.state}")


@campaigns.command("cancel")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_app
def campaigns_cancel(app: App, name: str, yes: bool) -> None:
    """Cancel a campaign: nothing more is sent, the rest is counted as skipped.

    Workers finish the message in hand and give the rest of their batch back as skipped,
    so that sent, skipped, failed and bounced add up to the total once they let go. It asks
    first at a terminal; in a script pass --yes (without it, it says so and cancels nothing).

    \b
    Example:
      outreach campaigns cancel 2026-12-newsletter --yes
    """
    from outreach.lifecycle import cancel

    if not confirmed(yes, f"Cancel {name}? It cannot be resumed.", f"{name} not cancelled"):
        raise UserError("nothing cancelled")
    with app.session() as session:
        cancelled = cancel(session, name)
    unsent = counted(cancelled.skipped, "unsent delivery", "unsent deliveries")
    line = f"{name}: cancelled; {unsent} skipped"
    if cancelled.in_flight:
        line += (
            f"; {cancelled.in_flight} more in workers' hands: the message in hand is "
            "finished, the others are skipped as they are given back"
        )
    console.print(line, soft_wrap=True)


@campaigns.command("report")
@click.argument("name")
@click.option(
    "--html",
    "html_path",
    type=click.Path(path_type=Path),
    help="Write a self-contained HTML page with charts.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object, for scripts.")
@segments_file_option
@pass_app
def campaigns_report(
    app: App, name: str, html_path: Path | None, as_json: bool, segments_file: Path
) -> None:
    """Per-state counts, delivery, bounce, unsubscribe, open and click rates, unsubscribes
    by topic left (and everything apart), top links, languages, segments, bounces and
    policy rejections by domain and the send timeline.

    \b
    Example:
      outreach campaigns report 2026-12-newsletter --html report.html
    """

    from outreach.lifecycle import get_campaign
    from outreach.reports import build, local, render_html

    zone = app.settings.zone
    with app.reader() as session:
        report = build(session, get_campaign(session, name), segments_file, app.settings.timezone)
    if as_json:
        click.echo(json_document(report.as_json()))
        return
    if html_path:
        html_path.parent.mkdir(parents=True, exist_ok=True)
        html_path.write_text(render_html(report, zone), encoding="utf-8")
    pct = {name: report.rate_text(name) for name in report.rates}
    print_table(
        f"{report.campaign}: {report.state}",
        [*list(report.counts), "total"],
        [[*report.counts.values(), report.total]],
    )
    times = [("started", report.started_at), ("finished", report.finished_at)]
    shown = "; ".join(f"{what} {local(at, zone)}" for what, at in times if at)
    if shown:
        console.print(shown, soft_wrap=True)
    print_table("rates", list(pct), [list(pct.values())])
    left = report.unsubscribes
    if left["everything"] or left["by_topic"]:
        print_table(
            "unsubscribes",
            ["left", "contacts"],
            [[f"topic {topic}", n] for topic, n in left["by_topic"].items()]
            + [["everything", left["everything"]]],
        )
    if report.top_links:
        print_table(
            "top clicked links (by the template's link; a click counts as an open)",
            ["link", "url", "clicks", "unique"],
            [[x["link"] or "", x["url"], x["clicks"], x["unique"]] for x in report.top_links],
        )
    if report.bounces_by_domain:
        print_table(
            "bounces by domain",
            ["domain", "bounced"],
            [[x["domain"], x["bounced"]] for x in report.bounces_by_domain],
        )
    if report.policy_by_domain:
        print_table(
            "policy rejections by receiving domain",
            ["domain", "rejected"],
            [[x["domain"], x["rejected"]] for x in report.policy_by_domain],
        )
    if html_path:
        console.print(f"wrote {html_path}")
