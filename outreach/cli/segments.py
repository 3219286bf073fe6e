"""`outreach segments`: audiences (campaigns/segments.yaml) with live counts."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from outreach.cli.app import (
    App,
    err_console,
    labelled,
    pass_app,
    print_table,
    segments_file_option,
)
from outreach.errors import UserError
from outreach.printable import json_document


@click.group()
def segments() -> None:
    """Inspect the segments of campaigns/segments.yaml.

    \b
    Example:
      outreach segments list
    """


@segments.command("list")
@segments_file_option
@click.option("--json", "as_json", is_flag=True, help="One JSON array, for scripts.")
@pass_app
def segments_list(app: App, segments_file: Path, as_json: bool) -> None:
    """List segments with their description and live member count.

    A segment with an error (say, one naming a campaign that is not written yet) is listed
    with its error instead of a count, and the others are counted as usual; the command
    then exits 1.

    \b
    Example:
      outreach segments list --segments-file campaigns/segments.yaml
      outreach segments list --json
    """

    from outreach.segments import count, load_each, not_suppressed

    if not segments_file.exists():
        raise UserError(f"{segments_file}: no such file; define segments there (see README)")
    with app.reader() as session:
        defined, broken = load_each(segments_file, session)
        listed = [
            {
                "segment": name,
                "description": s.description,
                "contacts": count(session, s.where & not_suppressed()),
                "error": None,
            }
            for name, s in defined.items()
        ]
    for name, errors in broken.items():
        where = f"{segments_file}:{errors[0].line}: " if errors[0].line else ""
        error = where + "; ".join(e.message for e in errors)
        listed.append({"segment": name, "description": None, "contacts": None, "error": error})
    if as_json:
        click.echo(json_document(listed))
    else:
        rows = [
            [x["segment"], x["description"], "error" if x["error"] else x["contacts"]]
            for x in listed
        ]
        print_table(str(segments_file), ["segment", "description", "contacts"], rows)
        for x in listed:
            if x["error"]:
                err_console.print(
                    labelled("error:", "red", f"segment {x['segment']}: {x['error']}"),
                    soft_wrap=True,
                )
    if broken:
        sys.exit(1)


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
