"""The `outreach` command: a thin adapter over the Python API."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from outreach import __version__
from outreach.config import Settings
from outreach.errors import FileErrors, UserError
from outreach.printable import counted, json_document, printable
from outreach.spreadsheets import ENCODINGS

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


class PrintableConsole(Console):
    """A console whose text is printed through `printable`: names, subjects, file names and
    error lines carry data (a CSV header, a contact field), and no escape sequence in them
    may reach the terminal. Tables and Text are made printable where they are built."""

    def print(self, *objects: Any, **kwargs: Any) -> None:
        super().print(*(printable(o) if isinstance(o, str) else o for o in objects), **kwargs)


# No markup and no emoji codes: user text ("include: [a, b]", "[TEST ko]", ":smile:") must
# print as it is.
console = PrintableConsole(highlight=False, markup=False, emoji=False)
err_console = PrintableConsole(stderr=True, highlight=False, markup=False, emoji=False)
# Wide enough that no table is ever cut to fit: what a file or a program reads has no width.
PIPED_WIDTH = 100_000


def whole_when_piped() -> None:
    """Output to a file or another program is never wrapped at 80 columns, and no table cell
    is cut with …: scripts parse it and people paste it into tickets. At a terminal, rich
    fits it to the window as usual."""
    for stream in (console, err_console):
        if not stream.is_terminal:
            stream.soft_wrap = True
            stream.width = PIPED_WIDTH


def labelled(label: str, style: str, text: object) -> Text:
    return Text.assemble((label, style), " ", printable(text))


class App:
    """Lazily loaded settings, shared by every command of one invocation."""

    def __init__(self) -> None:
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = Settings.load()
        return self._settings

    def database(self, *, check: bool = True) -> str:
        from outreach.db import check_schema

        url = self.settings.database_url
        if check:
            check_schema(url)
        return url

    @contextmanager
    def session(self) -> Iterator[Session]:
        """The one way commands open the database: committed on success, else rolled back."""
        from outreach.db import session_scope

        with session_scope(self.database()) as session:
            yield session

    @contextmanager
    def reader(self) -> Iterator[Session]:
        """For commands that only read: on SQLite it never takes the write lock."""
        from outreach.db import reader_sessionmaker

        with reader_sessionmaker(self.database())() as session:
            yield session

    @contextmanager
    def optional_session(self, warn: str | None = None) -> Iterator[Session | None]:
        """A reading session when the database is initialised, else None (file-only checks);
        with `warn`, why there is none is printed as a warning ending with `warn`."""
        from outreach.db import check_schema

        try:
            check_schema(self.settings.database_url)
        except UserError as exc:
            if warn:
                err_console.print(labelled("warning:", "yellow", f"{exc}; {warn}"), soft_wrap=True)
            yield None
            return
        with self.reader() as session:
            yield session


pass_app = click.make_pass_decorator(App, ensure=True)


class OutreachGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except FileErrors as exc:
            for error in exc.errors:
                err_console.print(labelled("error:", "red", error), soft_wrap=True)
            sys.exit(exc.exit_code)
        except UserError as exc:
            err_console.print(labelled("error:", "red", exc), soft_wrap=True)
            sys.exit(exc.exit_code)


def print_table(title: str | None, columns: list[str], rows: list[list[Any]]) -> None:
    # Cells and titles are stored text (contact fields, bounce diagnostics): no escapes.
    table = Table(title=None if title is None else printable(title), show_lines=False)
    for column in columns:
        table.add_column(printable(column))
    for row in rows:
        table.add_row(*("" if v is None else printable(v) for v in row))
    console.print(table)


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
    console.print(f"database {safe_url(url)} is at schema {head_revision()}")
    if not settings.secret_key:
        toml = Path("outreach.toml")
        secretkey.store(toml)
        console.print(
            f"generated a secret key into {toml.resolve()}; keep that file private and out "
            "of git, and never change the key (links in sent mail would stop working)",
            soft_wrap=True,
        )


@cli.group()
def contacts() -> None:
    """Import, export, look up and forget contacts.

    \b
    Example:
      outreach contacts import examples/contacts.csv
    """


@contacts.command("import")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--dry-run", is_flag=True, help="Check and count, write nothing.")
@click.option("--skip-invalid", is_flag=True, help="Write the valid rows even if some are invalid.")
@click.option(
    "--encoding",
    default="utf-8",
    show_default=True,
    help="A CSV file's encoding; Korean Excel exports are often cp949.",
)
@click.option(
    "--map",
    "maps",
    multiple=True,
    metavar="SRC=DEST",
    help="Read the file's column SRC as DEST (a known column or an attribute name); repeatable.",
)
@pass_app
def contacts_import(
    app: App,
    file: Path,
    dry_run: bool,
    skip_invalid: bool,
    encoding: str,
    maps: tuple[str, ...],
) -> None:
    """Upsert contacts from a CSV or .xlsx file with a header row and an email column.

    Known columns: name, organisation, organisation_type, city, country, language,
    membership, tags (separated by ;), consent, consent_date; common English and Korean
    headers for them (E-mail, 이메일, 이름, 기관명, 국가, 언어, …) are understood, and --map names
    any other. Any other column becomes a free attribute. Without --skip-invalid nothing is
    written when any row is invalid. Suppressed addresses stay suppressed.

    \b
    Example:
      outreach contacts import members.csv --encoding cp949 --dry-run
      outreach contacts import 회원명단.xlsx --map "Mail Adr=email"
    """
    from outreach.contacts import MAX_REPORTED, import_csv, parse_mapping

    mapping = parse_mapping(maps)
    with app.session() as session:
        result = import_csv(
            session,
            file,
            encoding=encoding,
            dry_run=dry_run,
            skip_invalid=skip_invalid,
            mapping=mapping,
        )
    for error in result.errors[:MAX_REPORTED]:
        err_console.print(f"{file}:{error.line}: {error.reason}", soft_wrap=True)
    if len(result.errors) > MAX_REPORTED:
        more = len(result.errors) - MAX_REPORTED
        err_console.print(f"… and {counted(more, 'more invalid row')}")
    summary = (
        f"{counted(result.rows, 'row')}: {result.created} new, {result.updated} updated, "
        f"{len(result.errors)} invalid"
    )
    if result.suppressed:
        summary += f"; {result.suppressed} of them suppressed and staying so"
    if dry_run:
        console.print(f"dry run, nothing written. {summary}", soft_wrap=True)
    elif result.written:
        console.print(f"imported. {summary}", soft_wrap=True)
    else:
        err_console.print(
            labelled(
                "error:",
                "red",
                f"nothing written: {counted(len(result.errors), 'invalid row')} "
                "(fix them, or pass --skip-invalid to import the valid rows)",
            ),
            soft_wrap=True,
        )
    if result.errors and not (skip_invalid and result.written):
        sys.exit(1)


@contacts.command("export")
@click.option("--segment", help="Only the contacts of this segment.")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="Write to FILE (.xlsx by its name, else CSV), not stdout.",
)
@click.option(
    "--encoding",
    type=click.Choice(ENCODINGS, case_sensitive=False),
    default="utf-8",
    show_default=True,
    help="CSV encoding: utf-8-sig or cp949 for Korean Excel.",
)
@click.option(
    "--segments-file",
    type=click.Path(path_type=Path),
    default=Path("campaigns/segments.yaml"),
    show_default=True,
    help="The segments file.",
)
@pass_app
def contacts_export(
    app: App, segment: str | None, output: Path | None, encoding: str, segments_file: Path
) -> None:
    """Write contacts as CSV or .xlsx in the import format.

    Cells a spreadsheet would run as a formula (starting with =, +, -, @) are written so they
    stay text; import reads them back as they were.

    \b
    Example:
      outreach contacts export --segment korean-local-governments -o korea.xlsx
      outreach contacts export --encoding cp949 -o members.csv
    """
    from outreach.contacts import export_file, export_stream
    from outreach.segments import get_segment, load_segments, not_suppressed

    where = None
    encoding = encoding.lower()
    with app.reader() as session:
        if segment:
            defined = load_segments(segments_file, session)
            where = get_segment(defined, segment, segments_file).where & not_suppressed()
        if output:
            n = export_file(session, output, where, encoding=encoding)
            err_console.print(f"{n} contacts written to {output}", soft_wrap=True)
        else:
            export_stream(session, sys.stdout.buffer, where, encoding=encoding)


def _when(iso: str | None) -> str | None:
    """An ISO 8601 UTC time from a JSON document, to the minute, for a table."""
    return f"{iso[:16].replace('T', ' ')} UTC" if iso else iso


@contacts.command("show")
@click.argument("email")
@click.option("--json", "as_json", is_flag=True, help="One JSON object, for scripts.")
@pass_app
def contacts_show(app: App, email: str, as_json: bool) -> None:
    """Show one contact: fields, tags, attributes, suppression and history.

    A forgotten address shows only that it was forgotten, and when.

    \b
    Example:
      outreach contacts show mayor@suwon.example.org --json
    """

    from outreach.contacts import describe

    with app.reader() as session:
        doc = describe(session, email)
    if as_json:
        click.echo(json_document(doc))
    elif doc["forgotten"]:
        console.print(
            f"{doc['email']} was forgotten on {doc['forgotten_at'][:10]}: its personal data "
            "is erased and it is never mailed again",
            soft_wrap=True,
        )
    else:
        suppression = doc["suppression"]
        rows = [
            [k, _when(doc[k]) if k.endswith("_at") else doc[k]]
            for k in doc
            if k
            not in (
                "email",
                "forgotten",
                "tags",
                "attributes",
                "suppression",
                "history",
                "consent_history",
            )
        ]
        rows.append(["tags", ", ".join(doc["tags"])])
        rows += [[f"attributes.{k}", v] for k, v in sorted(doc["attributes"].items())]
        rows.append(
            [
                "suppressed",
                f"{suppression['reason']} since {suppression['since'][:10]}"
                if suppression
                else "no",
            ]
        )
        print_table(doc["email"], ["field", "value"], rows)
        if doc["consent_history"]:
            print_table(
                "consent",
                ["when", "what", "source", "text version"],
                [
                    [_when(e["at"]), e["what"], e["source"], e["version"]]
                    for e in doc["consent_history"]
                ],
            )
        if doc["history"]:
            print_table(
                "history",
                ["when", "campaign", "what", "detail"],
                [[_when(e["at"]), e["campaign"], e["what"], e["detail"]] for e in doc["history"]],
            )


@contacts.command("forget")
@click.argument("email")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_app
def contacts_forget(app: App, email: str, yes: bool) -> None:
    """Erase a contact's personal data; the address stays suppressed forever.

    Deliveries keep their counts but lose the link to the person.

    \b
    Example:
      outreach contacts forget former.officer@example.org --yes
    """
    from outreach.contacts import forget

    if not yes and not click.confirm(f"Erase {email} and never mail it again?"):
        raise UserError("nothing erased")
    with app.session() as session:
        contact = forget(session, email)
    console.print(
        f"{contact.email}: personal data erased; the address stays suppressed", soft_wrap=True
    )


@cli.group()
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


@cli.group()
def segments() -> None:
    """Inspect the segments of campaigns/segments.yaml.

    \b
    Example:
      outreach segments list
    """


segments_file_option = click.option(
    "--segments-file",
    type=click.Path(path_type=Path),
    default=Path("campaigns/segments.yaml"),
    show_default=True,
    help="The segments file.",
)


@segments.command("list")
@segments_file_option
@click.option("--json", "as_json", is_flag=True, help="One JSON array, for scripts.")
@pass_app
def segments_list(app: App, segments_file: Path, as_json: bool) -> None:
    """List segments with their description and live member count.

    \b
    Example:
      outreach segments list --segments-file campaigns/segments.yaml
      outreach segments list --json
    """

    from outreach.segments import count, load_segments, not_suppressed

    if not segments_file.exists():
        raise UserError(f"{segments_file}: no such file; define segments there (see README)")
    with app.reader() as session:
        defined = load_segments(segments_file, session)
        listed = [
            {
                "segment": name,
                "description": s.description,
                "contacts": count(session, s.where & not_suppressed()),
            }
            for name, s in defined.items()
        ]
    if as_json:
        click.echo(json_document(listed))
        return
    rows = [[x["segment"], x["description"], x["contacts"]] for x in listed]
    print_table(str(segments_file), ["segment", "description", "contacts"], rows)


MEMBER_FIELDS = ("email", "name", "organisation", "country", "language", "membership")


@segments.command("show")
@click.argument("name")
@click.option(
    "--limit",
    default=20,
    show_default=True,
    type=click.IntRange(min=0),
    help="How many members to list.",
)
@segments_file_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object, for scripts.")
@pass_app
def segments_show(app: App, name: str, limit: int, segments_file: Path, as_json: bool) -> None:
    """Count a segment's members and list the first of them.

    \b
    Example:
      outreach segments show korean-local-governments --limit 5
      outreach segments show korean-local-governments --limit 1000 --json
    """

    from outreach.segments import count, get_segment, load_segments, members, not_suppressed

    with app.reader() as session:
        segment = get_segment(load_segments(segments_file, session), name, segments_file)
        where = segment.where & not_suppressed()
        total = count(session, where)
        listed = [
            {field: getattr(c, field) for field in MEMBER_FIELDS}
            for c in members(session, where, limit)
        ]
    if as_json:
        doc = {
            "segment": name,
            "description": segment.description,
            "contacts": total,
            "members": listed,
        }
        click.echo(json_document(doc))
        return
    print_table(
        f"{name}: {total} contacts" + (f" (first {len(listed)})" if listed else ""),
        list(MEMBER_FIELDS),
        [[m[field] for field in MEMBER_FIELDS] for m in listed],
    )


@cli.group()
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


def main() -> None:
    cli(prog_name="outreach")


@cli.group()
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

    Checks YAML and keys, segments, From/Reply-To, template variants for the languages in
    the audience, Jinja and MJML errors, undefined variables (rendered for stand-in
    contacts), links, and the unsubscribe link. Warns about what the audience's data will
    do: languages without a variant, values empty for some readers, links made of
    recipients' values. Without FILES, every campaigns/*.yaml is checked, and
    campaigns/subscribe.yaml (the subscribe form's settings) by its own rules.

    \b
    Example:
      outreach campaigns validate campaigns/2026-12-newsletter.yaml
    """
    from outreach.campaigns import find_campaigns
    from outreach.subscriptions import CONFIG_PATH

    paths = list(files) or [*find_campaigns(), *([CONFIG_PATH] if CONFIG_PATH.is_file() else [])]
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


def _validate_one(
    app: App, path: Path, session: Session | None
) -> tuple[list[Any], list[str], str | None]:
    """(errors, warnings, the ok line) of one file: a campaign, or the subscribe settings."""
    from outreach.errors import FileError, located
    from outreach.subscriptions import load_config
    from outreach.validate import validate_campaign

    if path.name == "subscribe.yaml":
        try:
            load_config(app.settings, path)
        except (FileError, FileErrors) as exc:
            return located(exc), [], None
        return [], [], f"{path}: the subscribe form's settings"
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
@pass_app
def campaigns_send(app: App, file: Path, dry_run: bool, test_to: str | None) -> None:
    """Validate a campaign, snapshot its audience into deliveries and queue them.

    Sending the same campaign again adds only contacts new to its audience: nobody is
    mailed twice. With send_at in the future the campaign waits, scheduled, for the worker.

    \b
    Example:
      outreach campaigns send campaigns/2026-12-newsletter.yaml --dry-run
      outreach campaigns send campaigns/2026-12-newsletter.yaml --test-to me@example.org
    """
    from outreach.lifecycle import send_campaign, send_test
    from outreach.tasks import enqueuer
    from outreach.welcome import install, is_welcome

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
            languages = send_test(file, app.settings, session, test_to)
            console.print(
                f"sent {len(languages)} test messages ({', '.join(languages)}) to "
                f"{test_to}; the campaign's deliveries are untouched"
            )
            return
        # Made only when the queue answers: else one line, and the campaign stays as it was.
        enqueue = None if dry_run else enqueuer(app.settings)
        result = send_campaign(file, app.settings, session, enqueue, dry_run=dry_run)
    langs = ", ".join(f"{k} {v}" for k, v in sorted(result.languages.items()))
    if dry_run:
        new = counted(result.added, "new delivery", "new deliveries")
        console.print(
            f"dry run: {result.campaign} would queue {new} ({result.total} in all; "
            f"the audience's languages: {langs}); nothing was queued",
            soft_wrap=True,
        )
        return
    line = f"{result.campaign}: {result.added} new deliveries queued ({result.total} in all)"
    if result.state == "scheduled" and result.send_at:
        line += f"; scheduled for {result.send_at.isoformat()}"
    console.print(
        line + ". Run `outreach worker` to send; follow with `outreach campaigns "
        f"status {result.campaign} --watch`",
        soft_wrap=True,
    )


def _status_view(status: Any) -> Any:
    from rich.console import Group
    from rich.progress_bar import ProgressBar

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
    if status.note:
        line += f"; {status.note}"
    elif status.eta_seconds is not None and status.state == "sending":
        line += f", about {int(status.eta_seconds)} s left"
    if not console.is_terminal:
        return Group(table, Text(printable(line)))  # a bar is for eyes, not for a pipe
    # In a grid, the bar ends its line even where nothing is wrapped.
    bar = Table.grid()
    bar.add_row(ProgressBar(total=max(status.total, 1), completed=done, width=60))
    return Group(table, bar, Text(printable(line)))


def _status_line(status: Any) -> str:
    counts = " ".join(f"{state}={n}" for state, n in status.counts.items())
    return printable(f"{status.name} {status.state} {counts} total={status.total}")


@campaigns.command("status")
@click.argument("name")
@click.option("--watch", is_flag=True, help="Refresh until the campaign is done.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object, for scripts.")
@click.option("--interval", default=1.0, show_default=True, help="Seconds between refreshes.")
@pass_app
def campaigns_status(app: App, name: str, watch: bool, as_json: bool, interval: float) -> None:
    """Counts of deliveries in each state, rate and time left.

    When no worker has beaten for a minute (see `outreach worker --check`), it says so
    instead of a time left that would never come.

    \b
    Example:
      outreach campaigns status 2026-12-newsletter --watch
      outreach campaigns status 2026-12-newsletter --json
    """
    import time

    from rich.live import Live

    from outreach.lifecycle import status

    with app.reader() as session:
        current = status(session, name)
        if as_json:
            click.echo(json_document(current.as_json()))
            return
        if not watch:
            console.print(_status_view(current))
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
                current = status(session, name)
        with Live(_status_view(current), console=console, refresh_per_second=4) as live:
            while current.state in ("sending", "scheduled"):
                time.sleep(interval)
                current = status(session, name)
                live.update(_status_view(current))


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
            _when(c["created_at"]),
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
    so that sent, skipped, failed and bounced add up to the total once they let go.

    \b
    Example:
      outreach campaigns cancel 2026-12-newsletter --yes
    """
    from outreach.lifecycle import cancel

    if not yes and not click.confirm(f"Cancel {name}? It cannot be resumed."):
        raise UserError("nothing cancelled")
    with app.session() as session:
        cancelled = cancel(session, name)
    line = f"{name}: cancelled; {cancelled.skipped} unsent deliveries skipped"
    if cancelled.in_flight:
        line += (
            f"; {cancelled.in_flight} more are in workers' hands: the message in hand is "
            "finished, the others are skipped as they are given back"
        )
    console.print(line, soft_wrap=True)


@cli.command()
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


@cli.command()
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
        console.print(_status_view(status(session, CAMPAIGN)))
    files = sorted((settings.outbox / CAMPAIGN).glob("*.eml"))
    console.print(
        f"{len(files)} messages are in {settings.outbox / CAMPAIGN}, e.g. "
        f"{files[0] if files else 'none'}",
        soft_wrap=True,
    )
    console.print("Try it, in a shell (each line as it is):")
    for command in next_commands(directory):
        console.print(f"  {command}", soft_wrap=True)


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--workers",
    "-w",
    default=2,
    show_default=True,
    type=click.IntRange(1, 64),
    help="gunicorn worker processes.",
)
@pass_app
def serve(app: App, host: str, port: int, workers: int) -> None:
    """Serve recipients' pages: unsubscribe, preferences, click and open tracking, the
    subscribe form (with campaigns/subscribe.yaml) and the public archive.

    Needs OUTREACH_SECRET_KEY (the same as the workers') and OUTREACH_BASE_URL set to the
    public address this is reached at. Runs gunicorn with outreach.gunicorn_conf, as the
    compose web service does: clients that send half a request cannot hold its workers, and
    tokens never reach its log. Put it behind your HTTPS proxy.

    \b
    Example:
      outreach serve --port 8000
      OUTREACH_BASE_URL=https://mail.citynet-ap.org outreach serve --host 0.0.0.0 --workers 4
    """
    import os

    from outreach.gunicorn_conf import command
    from outreach.web import create_app

    # Refuse here, with one line, what would otherwise stop every worker as it boots.
    app.database()
    create_app(app.settings)
    _check_port_free(host, port)
    console.print(f"serving {app.settings.base_url} on http://{host}:{port} ({workers} workers)")
    sys.stdout.flush()
    # A fresh interpreter: gevent must patch the standard library before the app and the
    # database driver are imported, which the workers of `gunicorn outreach.wsgi:app` do.
    os.execv(sys.executable, [sys.executable, "-m", "gunicorn", *command(host, port, workers)])


def _check_port_free(host: str, port: int) -> None:
    """gunicorn retries a taken address for seconds, a line each time; say it once."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise UserError(
                f"cannot listen on {host}:{port} ({exc.strerror}): another program uses it; "
                "stop it, or choose another --port"
            ) from None


@cli.group()
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
@pass_app
def bounces_ingest(app: App, source: str | None, mbox: Path | None, maildir: Path | None) -> None:
    """Ingest bounces (RFC 3464 DSNs, common non-standard formats, VERP) and ARF complaints.

    Only failures of mail we sent to that address count (by VERP address, original
    Message-ID, or a delivery to the failing address in the last 30 days); the rest is
    reported as not ours. An address that does not exist suppresses at once; temporary
    failures after OUTREACH_SOFT_BOUNCE_LIMIT campaigns in a row; a complaint always.
    Policy rejections (SPF/DKIM/DMARC, spam, blocked IP) and auto-replies never suppress.
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
    10 MB with 552, and answers 451 (the sender retries) while the database cannot be
    reached or too many messages wait to be stored (20 in all, 5 from one client).
    Connections and messages per client address are limited. Point the bounce
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


@campaigns.command("report")
@click.argument("name")
@click.option(
    "--html",
    "html_path",
    type=click.Path(path_type=Path),
    help="Write a self-contained HTML page with charts.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object, for scripts.")
@click.option(
    "--segments-file",
    type=click.Path(path_type=Path),
    default=Path("campaigns/segments.yaml"),
    show_default=True,
    help="The segments file.",
)
@pass_app
def campaigns_report(
    app: App, name: str, html_path: Path | None, as_json: bool, segments_file: Path
) -> None:
    """Per-state counts, delivery, bounce, unsubscribe, open and click rates, top links,
    languages, segments, bounces and policy rejections by domain and the send timeline.

    \b
    Example:
      outreach campaigns report 2026-12-newsletter --html report.html
    """

    from outreach.lifecycle import get_campaign
    from outreach.reports import build, render_html

    with app.reader() as session:
        report = build(session, get_campaign(session, name), segments_file)
    if as_json:
        click.echo(json_document(report.as_json()))
        return
    if html_path:
        html_path.parent.mkdir(parents=True, exist_ok=True)
        html_path.write_text(render_html(report), encoding="utf-8")
    pct = {k: "–" if v is None else f"{v * 100:.1f}%" for k, v in report.rates.items()}
    print_table(
        f"{report.campaign}: {report.state}",
        [*list(report.counts), "total"],
        [[*report.counts.values(), report.total]],
    )
    print_table("rates", list(pct), [list(pct.values())])
    if report.top_links:
        print_table(
            "top clicked links",
            ["url", "clicks", "unique"],
            [[x["url"], x["clicks"], x["unique"]] for x in report.top_links],
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
