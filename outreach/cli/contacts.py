"""`outreach contacts`: import, export, look up and forget contacts."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

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
from outreach.errors import UserError
from outreach.printable import counted, json_document
from outreach.spreadsheets import ENCODINGS


@click.group()
def contacts() -> None:
    """Import, export, look up and forget contacts.

    \b
    Example:
      outreach contacts import examples/contacts.csv
    """


@contacts.command("import")
@click.argument("file", type=click.Path(path_type=Path))
@click.option(
    "--dry-run", is_flag=True, help="Check and count, write nothing; list what would change."
)
@click.option(
    "--skip-invalid",
    is_flag=True,
    help="Write the valid rows even if some are invalid (reported; exit status 0).",
)
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
@click.option(
    "--override-recipient-choices",
    is_flag=True,
    help="Let the file replace what recipients chose on their preferences page (their "
    "language); without it their choice is kept.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object, for scripts.")
@pass_app
def contacts_import(
    app: App,
    file: Path,
    dry_run: bool,
    skip_invalid: bool,
    encoding: str,
    maps: tuple[str, ...],
    override_recipient_choices: bool,
    as_json: bool,
) -> None:
    """Upsert contacts from a CSV or .xlsx file with a header row and an email column.

    Known columns: name, organisation, organisation_type, city, country, language,
    membership, tags (separated by ;), consent, consent_date, topics_left (topics of
    campaigns/topics.yaml the contact left, separated by ;); common English and Korean
    headers for them (E-mail, 이메일, 이름, 기관명, 국가, 언어, …) are understood, and --map names
    any other. Values may be written as Korean offices do (대한민국, 한국어, 정회원, 동의). Any
    other column becomes a free attribute. Without --skip-invalid nothing is written when
    any row is invalid (exit status 1); with it, the valid rows are (exit status 0), dry
    run or not. Suppressed addresses stay suppressed; forgotten ones are not imported; a
    topic a contact left is never given back.

    A language a recipient chose on their own preferences page is kept, and the summary
    says how many rows kept one; --override-recipient-choices lets the file win. --dry-run
    lists every row that would change, field by field.

    \b
    Example:
      outreach contacts import members.csv --encoding cp949 --dry-run
      outreach contacts import 회원명단.xlsx --map "Mail Adr=email"
      outreach contacts import corrected.csv --override-recipient-choices
    """
    from outreach.contacts import MAX_REPORTED, import_csv, parse_mapping
    from outreach.topics import DEFAULT_PATH as TOPICS_PATH

    mapping = parse_mapping(maps)
    with app.session() as session:
        result = import_csv(
            session,
            file,
            encoding=encoding,
            dry_run=dry_run,
            skip_invalid=skip_invalid,
            mapping=mapping,
            topics_path=TOPICS_PATH,
            override_recipient_choices=override_recipient_choices,
        )
    # One rule, dry run or not: invalid rows fail the command unless --skip-invalid.
    failed = bool(result.errors) and not skip_invalid
    if as_json:
        click.echo(json_document(result.as_json()))
        if failed:
            sys.exit(1)
        return
    for error in result.errors[:MAX_REPORTED]:
        err_console.print(f"{file}:{error.line}: {error.reason}", soft_wrap=True)
    if len(result.errors) > MAX_REPORTED:
        more = len(result.errors) - MAX_REPORTED
        err_console.print(f"… and {counted(more, 'more invalid row')}")
    summary = (
        f"{counted(result.rows, 'row')}: {result.created} new, {result.updated} updated, "
        f"{result.unchanged} unchanged, {len(result.errors)} invalid"
    )
    if result.kept:
        summary += (
            f"; {result.kept} kept a recipient's own choice "
            f"({', '.join(sorted(result.kept_fields))}, set on their preferences page: "
            "--override-recipient-choices lets the file replace it)"
        )
    if result.suppressed:
        summary += f"; {result.suppressed} of them suppressed and staying so"
    if result.newly_suppressed:
        summary += (
            f"; {counted(result.newly_suppressed, 'address', 'addresses')} suppressed as the "
            "file's suppressed column says"
        )
    if result.forgotten:
        summary += f"; {counted(result.forgotten, 'forgotten address', 'forgotten addresses')} "
        summary += "not imported"
    if result.topics_left:
        summary += f"; {counted(result.topics_left, 'topic')} left"
    if dry_run:
        console.print(f"dry run, nothing written. {summary}", soft_wrap=True)
        _print_changes(result)
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
    if failed:
        sys.exit(1)


MAX_CHANGES = 200


def _print_changes(result: Any) -> None:
    """A dry run's changes: a line per field of each row that would change."""
    rows: list[list[Any]] = []
    for change in result.changes:
        if change.new:
            rows.append([change.line, change.email, "(new contact)", "", "", "added"])
        for name, (was, new) in change.fields.items():
            rows.append([change.line, change.email, name, was, new, "changes"])
        for name, (theirs, in_file) in change.kept.items():
            rows.append(
                [change.line, change.email, name, theirs, in_file, "kept: the recipient's choice"]
            )
    if not rows:
        return
    shown = rows[:MAX_CHANGES]
    title = "what the import would change"
    if len(rows) > MAX_CHANGES:
        title += f" (the first {MAX_CHANGES} of {len(rows)}; --json lists every one)"
    print_table(title, ["line", "email", "field", "now", "in the file", "result"], shown)


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
    "--exclude-suppressed",
    is_flag=True,
    help="Leave out unsubscribed, bounced and other suppressed addresses: the list for a "
    "mail merge. Without it every contact is written, with its status (a backup).",
)
@segments_file_option
@pass_app
def contacts_export(
    app: App,
    segment: str | None,
    output: Path | None,
    encoding: str,
    exclude_suppressed: bool,
    segments_file: Path,
) -> None:
    """Write contacts as CSV or .xlsx in the import format, with their status.

    Every row says whether the address is suppressed (unsubscribed, bounced, complained,
    manual), why and since when (columns suppressed, suppressed_reason, suppressed_since).
    For a mail merge in Outlook or Excel use --exclude-suppressed (or --segment, which
    leaves them out as a campaign would); for a backup or a re-import export everyone:
    importing the file back keeps who left suppressed. Cells a spreadsheet would run as a
    formula (starting with =, +, -, @) are written so they stay text; import reads them
    back as they were.

    \b
    Example:
      outreach contacts export --exclude-suppressed -o mail-merge.xlsx
      outreach contacts export --segment korean-local-governments -o korea.xlsx
      outreach contacts export --encoding cp949 -o backup.csv
    """
    from outreach.contacts import export_file, export_stream
    from outreach.segments import count, get_segment, load_segments, not_suppressed

    where: Any = None
    encoding = encoding.lower()
    with app.reader() as session:
        if segment:
            defined = load_segments(segments_file, session)
            where = get_segment(defined, segment, segments_file).where & not_suppressed()
        elif exclude_suppressed:
            where = not_suppressed()
        if output:
            n = export_file(session, output, where, encoding=encoding)
            line = f"{counted(n, 'contact')} written to {output}"
            if exclude_suppressed and not segment:
                left_out = count(session, ~not_suppressed())
                line += f" ({left_out} suppressed left out)"
            err_console.print(line, soft_wrap=True)
        else:
            export_stream(session, sys.stdout.buffer, where, encoding=encoding)


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
        doc = describe(session, email, app.settings.timezone)
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
            [k, minute(doc[k]) if k.endswith("_at") else doc[k]]
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
                "topics_left",
            )
        ]
        rows.append(["tags", ", ".join(doc["tags"])])
        rows.append(
            [
                "topics left",
                "; ".join(
                    f"{t['topic']} since {t['since'][:10]} ({t['source']})"
                    for t in doc["topics_left"]
                )
                or "none",
            ]
        )
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
                    [minute(e["at"]), e["what"], e["source"], e["version"]]
                    for e in doc["consent_history"]
                ],
            )
        if doc["history"]:
            print_table(
                "history",
                ["when", "campaign", "what", "detail"],
                [[minute(e["at"]), e["campaign"], e["what"], e["detail"]] for e in doc["history"]],
            )


@contacts.command("forget")
@click.argument("email")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_app
def contacts_forget(app: App, email: str, yes: bool) -> None:
    """Erase a contact's personal data; the address stays suppressed forever.

    Deliveries keep their counts but lose the link to the person. It asks first at a
    terminal; in a script pass --yes (without it, it says so and erases nothing).

    \b
    Example:
      outreach contacts forget former.officer@example.org --yes
    """
    from outreach.contacts import forget

    if not confirmed(yes, f"Erase {email} and never mail it again?", f"{email} not erased"):
        raise UserError("nothing erased")
    with app.session() as session:
        contact = forget(session, email)
    console.print(
        f"{contact.email}: personal data erased; the address stays suppressed", soft_wrap=True
    )
