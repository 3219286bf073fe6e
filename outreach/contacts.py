"""Contacts: import from CSV or .xlsx (validated upsert), export, lookup and forgetting."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import partial
from pathlib import Path
from typing import IO, Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, aliased, selectinload

from outreach.consent import erase as erase_consent
from outreach.consent import history as consent_history
from outreach.consent import leave_topics, record_current
from outreach.errors import FileError, NotFound, UserError
from outreach.fields import (
    KNOWN_COLUMNS,
    STATUS_COLUMNS,
    column_for,
    mailable_email,
    normalise_email,
    normalise_field,
    split_tags,
)
from outreach.history import contact_history, erase_address
from outreach.models import SUPPRESSION_REASONS, Contact, ContactTag, Suppression, utcnow
from outreach.spreadsheets import (
    CONTROL,
    CellError,
    TableWriter,
    is_xlsx,
    read_table,
    write_stream,
    write_table,
)
from outreach.subscriptions import erase_requests
from outreach.suppressions import forgotten_message, suppress
from outreach.topics import NAME as TOPIC_NAME
from outreach.topics import Topics, load_topics
from outreach.zones import several_zones, zone_of_country

BATCH = 2000
MAX_REPORTED = 50
_KNOWN = frozenset((*KNOWN_COLUMNS, *STATUS_COLUMNS))
# Columns that land in a contact's own column (consent_date is stored as consent_at;
# topics_left are rows of their own).
COLUMNS = tuple(
    c for c in KNOWN_COLUMNS if c not in ("email", "tags", "consent_date", "topics_left")
)
_NORMALISERS = [(c, partial(normalise_field, c)) for c in COLUMNS]


@dataclass
class RowError:
    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


# Fields a recipient can set on their own preferences page, and the column that says when
# they did: an import keeps such a value unless staff override it.
RECIPIENT_CHOICES = {"language": "language_chosen_at"}


def record_choice(contact: Contact, field: str, value: str) -> None:
    """A value the recipient chose themselves (on their preferences page): set, and marked
    as theirs, so that a re-import of the office's list does not undo it."""
    setattr(contact, field, value)
    setattr(contact, RECIPIENT_CHOICES[field], utcnow())


Shown = str | None


def _shown(value: Any) -> Shown:
    """A stored or imported value as a person reads it in a list of changes."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


@dataclass
class RowChange:
    """What importing one row changes (a dry run lists them): a new contact, or each field
    with its stored value and the file's; `kept` are the file's values not taken because
    the recipient chose theirs."""

    line: int
    email: str
    new: bool = False
    fields: dict[str, tuple[Shown, Shown]] = field(default_factory=dict)
    kept: dict[str, tuple[Shown, Shown]] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "line": self.line,
            "email": self.email,
            "new": self.new,
            "fields": {k: {"from": a, "to": b} for k, (a, b) in self.fields.items()},
            "kept": {k: {"recipient": a, "file": b} for k, (a, b) in self.kept.items()},
        }


@dataclass
class ImportResult:
    path: str
    rows: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0  # rows equal to what is stored: not written, updated_at stays
    suppressed: int = 0
    forgotten: int = 0  # rows of forgotten addresses, not imported: their data stays erased
    topics_left: int = 0  # topics contacts left by this import (a topics_left column)
    # Addresses the file's status columns suppress (an export restored: who left stays out).
    newly_suppressed: int = 0
    # Rows whose file value lost to a value the recipient chose (RECIPIENT_CHOICES).
    kept: int = 0
    kept_fields: set[str] = field(default_factory=set)
    errors: list[RowError] = field(default_factory=list)
    written: bool = False
    attribute_columns: list[str] = field(default_factory=list)
    # Under --dry-run: every row that would change something, in file order.
    changes: list[RowChange] = field(default_factory=list)

    @property
    def valid(self) -> int:
        return self.rows - len(self.errors)

    def as_json(self) -> dict[str, Any]:
        return {
            "file": self.path,
            "rows": self.rows,
            "new": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "invalid": len(self.errors),
            "kept_recipient_choices": self.kept,
            "suppressed": self.suppressed,
            "newly_suppressed": self.newly_suppressed,
            "forgotten": self.forgotten,
            "written": self.written,
            "errors": [{"line": e.line, "reason": e.reason} for e in self.errors],
            "changes": [change.as_json() for change in self.changes],
        }


def parse_mapping(pairs: list[str] | tuple[str, ...]) -> dict[str, str]:
    """`--map SRC=DEST` options as a mapping from a file's header to a column name."""
    mapping = {}
    for pair in pairs:
        source, equals, dest = pair.partition("=")
        if not equals or not source.strip():
            raise UserError(f"--map {pair!r}: write it as SRC=DEST, e.g. --map 'Mail Adr=email'")
        mapping[source.strip()] = dest.strip()
    return mapping


def _columns(path: Path, header: list[str], mapping: Mapping[str, str]) -> list[str]:
    """Each header cell's column: --map first, then the known names and their aliases, else
    a free attribute. Checked once per file, so rows cost nothing more."""
    cells = [h.strip() for h in header]
    by_key = {c.casefold(): i for i, c in enumerate(cells) if c}
    chosen: dict[int, str] = {}
    for source, dest in mapping.items():
        if not dest.strip():
            raise FileError(path, f"--map {source}=: say which column {source!r} is", 1)
        index = by_key.get(source.strip().casefold())
        if index is None:
            found = ", ".join(c for c in cells if c) or "none"
            raise FileError(
                path,
                f"--map {source}={dest}: no column {source!r} in the header row (found: {found})",
                1,
            )
        chosen[index] = column_for(dest)
    columns = [chosen.get(i) or (column_for(c) if c else "") for i, c in enumerate(cells)]
    first: dict[str, int] = {}
    for index, column in enumerate(columns):
        if not column:
            continue
        if column in first:
            a, b = cells[first[column]], cells[index]
            what = (
                f"column {a!r} appears twice"
                if a == b
                else (f"columns {a!r} and {b!r} both mean {column}")
            )
            raise FileError(
                path,
                f"{what} in the header row; remove one, or --map one of them to another name",
                1,
            )
        first[column] = index
    if "email" not in first:
        named = [c for c in cells if c]
        listed = ", ".join(c.lower() for c in named) or "none"
        hint = (
            f"; rename the address column to email, or pass e.g. --map {named[0] + '=email'!r}"
            if named
            else ""
        )
        raise FileError(path, f"no email column in the header row (found: {listed}){hint}", 1)
    return columns


Row = tuple[int, dict[str, str], list[str] | None]


def _rows(path: Path, encoding: str, mapping: Mapping[str, str]) -> tuple[list[str], Iterator[Row]]:
    """The file's columns, and its rows as (line, cells by column, problems found so far)."""
    table = read_table(path, encoding)
    try:
        _, header = next(table.rows)
    except StopIteration:
        raise FileError(
            path, "the file is empty; expected a header row with an email column"
        ) from None
    columns = _columns(path, header, mapping)
    return columns, _records(table.rows, columns, table.may_have_controls)


def _records(
    rows: Iterator[tuple[int, list[str]]], columns: list[str], controls: bool
) -> Iterator[Row]:
    unnamed = "" in columns
    width = len(columns)
    padding = [""] * width
    for line, record in rows:
        joined = "".join(record)
        if not joined.strip():
            continue
        if len(record) != width:
            if len(record) > width:
                if any(cell.strip() for cell in record[width:]):
                    # Cells shifted by an unquoted comma: only the count is worth saying.
                    yield line, {}, [f"{len(record)} cells but the header has {width} columns"]
                    continue
                record = record[:width]  # empty cells past the header (a trailing comma)
            else:
                record = record + padding[len(record) :]  # missing cells at the end are empty
        row = dict(zip(columns, record, strict=True))
        if unnamed:
            row.pop("", None)
        problems = None
        if controls and CONTROL.search(joined):
            problems = [
                f"{column} contains a control character (U+{ord(found.group()):04X}); remove it"
                for column, cell in row.items()
                if (found := CONTROL.search(cell))
            ]
        yield line, row, problems


def _parse_date(value: str, column: str = "consent_date") -> datetime:
    text = value.strip()
    try:
        if len(text) == 10:
            d = date.fromisoformat(text)
            return datetime(d.year, d.month, d.day, tzinfo=UTC)
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{column} {value!r} is not a date such as 2026-03-31") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _topics_left(cell: str, topics: Topics | None, errors: list[str]) -> list[str]:
    """A topics_left cell: topic names separated by ;, each a topic of topics.yaml when
    there is one."""
    names = list(dict.fromkeys(t.strip() for t in cell.split(";") if t.strip()))
    for name in names:
        if not TOPIC_NAME.match(name):
            errors.append(f"topics_left: {name!r} is not a topic name (e.g. events)")
        elif topics is not None and topics.exists and name not in topics:
            errors.append(f"topics_left: {topics.unknown(name)}")
    return names


# The reasons an export (or a person) can give in suppressed_reason: not "forgotten",
# which only `contacts forget` gives (and whose contacts are never exported).
IMPORTED_REASONS = tuple(r for r in SUPPRESSION_REASONS if r != "forgotten")
_YES = frozenset(("yes", "y", "true", "1", "예", "o"))
_NO = frozenset(("no", "n", "false", "0", "아니오", "아니요", "x", ""))
Wanted = tuple[str, datetime]  # a suppression the file asks for: reason, since


def _status(raw: dict[str, str], now: datetime, errors: list[str]) -> Wanted | None:
    """The suppression a row's status columns ask for (an export's `suppressed: yes`)."""
    flag = raw.get("suppressed", "").strip()
    if flag.lower() not in _YES | _NO:
        errors.append(f"suppressed {flag!r}: write yes or no")
        return None
    reason = raw.get("suppressed_reason", "").strip().lower() or "manual"
    since = raw.get("suppressed_since", "").strip()
    if reason not in IMPORTED_REASONS:
        errors.append(f"suppressed_reason {reason!r}: write one of {', '.join(IMPORTED_REASONS)}")
        return None
    try:
        at = _parse_date(since, "suppressed_since") if since else now
    except ValueError as exc:
        errors.append(str(exc))
        return None
    return (reason, at) if flag.lower() in _YES else None


def _validate(
    raw: dict[str, str],
    now: datetime,
    problems: list[str] | None,
    source: str = "import",
    topics: Topics | None = None,
) -> tuple[dict[str, Any], list[str] | None, Wanted | None]:
    """One row to column values, tags and the suppression its status columns ask for;
    raises ValueError with every reason it has. The topics the row left, if it says, are
    under "topics_left"."""
    if problems and not raw:  # a row that could not be read into columns
        raise ValueError("; ".join(problems))
    errors = problems or []
    values: dict[str, Any] = {}
    try:
        values["email"] = mailable_email(raw.get("email", ""))
    except ValueError as exc:
        errors.append(str(exc))
    for column, normalise in _NORMALISERS:
        cell = raw.get(column)
        if cell is not None:
            cell = cell.strip()
            try:
                values[column] = normalise(cell) if cell else None
            except ValueError as exc:
                errors.append(str(exc))
                values[column] = None
    if "consent" in raw:
        date_cell = raw.get("consent_date", "").strip()
        try:
            values["consent_at"] = (
                _parse_date(date_cell) if date_cell else (now if values["consent"] else None)
            )
        except ValueError as exc:
            errors.append(str(exc))
        # Where a consent came from, unless the file says (an export does).
        if "consent_source" not in raw:
            values["consent_source"] = source if values["consent"] else None
        if "consent_version" not in raw:
            values["consent_version"] = None
    if "topics_left" in raw:
        values["topics_left"] = _topics_left(raw["topics_left"], topics, errors)
    wanted = _status(raw, now, errors) if "suppressed" in raw else None
    if errors:
        raise ValueError("; ".join(errors))
    attributes = {k: v.strip() for k, v in raw.items() if k not in _KNOWN and v.strip()}
    values["attributes"] = attributes
    tags = split_tags(raw["tags"]) if "tags" in raw else None
    return values, tags, wanted


def import_csv(
    session: Session,
    path: Path | str,
    *,
    encoding: str = "utf-8",
    dry_run: bool = False,
    skip_invalid: bool = False,
    mapping: Mapping[str, str] | None = None,
    topics_path: Path | None = None,
    override_recipient_choices: bool = False,
) -> ImportResult:
    """Upsert contacts from a CSV file, or an .xlsx one (by its name).

    Headers are matched to the known columns by name or alias (see fields.HEADER_ALIASES)
    after `mapping` (a header → a column name) is applied.
    All or nothing by default: rows are written in batches inside one transaction, and the
    transaction is rolled back when any row is invalid (unless skip_invalid) or on a dry run.
    A topics_left column adds the topics it names to those the contact left (checked against
    the topics file `topics_path`, when it exists); an import never gives a topic back.
    A value the recipient chose themselves (RECIPIENT_CHOICES) is kept unless
    `override_recipient_choices`; a dry run lists what each row would change.
    """
    path = Path(path)
    result = ImportResult(str(path))
    now = utcnow()
    seen: dict[str, int] = {}
    batch: list[Line] = []
    upsert = _Upsert(now, override_recipient_choices, dry_run)
    suppressions: dict[str, Wanted] = {}
    columns, rows = _rows(path, encoding, mapping or {})
    result.attribute_columns = [c for c in columns if c and c not in _KNOWN]
    topics = load_topics(topics_path) if topics_path and "topics_left" in columns else None
    upsert.has_free_columns = bool(result.attribute_columns)
    # A consent's date, source and version are kept when the same consent is imported
    # again, unless the file gives them.
    upsert.keep = frozenset(
        column
        for column, given in (
            ("consent_at", "consent_date"),
            ("consent_source", "consent_source"),
            ("consent_version", "consent_version"),
        )
        if given not in columns
    )
    source = f"import {path.name}"
    collecting = True
    leaves: list[tuple[str, list[str]]] = []
    for line, raw, problems in rows:
        result.rows += 1
        try:
            values, tags, wanted = _validate(raw, now, problems, source, topics)
            first = seen.get(values["email"])
            if first is not None:
                raise ValueError(f"duplicate of line {first} ({values['email']})")
            seen[values["email"]] = line
            if wanted is not None:
                suppressions[values["email"]] = wanted
        except ValueError as exc:
            result.errors.append(RowError(line, str(exc)))
            if not (skip_invalid or dry_run):
                collecting = False  # keep validating to report every problem, write nothing
                batch.clear()
            continue
        left = values.pop("topics_left", None)
        if collecting:  # a dry run counts every valid row as the import would
            if left:
                leaves.append((values["email"], left))
            batch.append((line, values, tags))
            if len(batch) >= BATCH:
                _import_batch(session, batch, result, upsert)
                batch.clear()
    if collecting and batch:
        _import_batch(session, batch, result, upsert)
    if collecting and suppressions:
        _suppress_as_written(session, suppressions, result)
    if dry_run or (result.errors and not skip_invalid):
        session.rollback()
        if not dry_run:  # nothing imported
            result.unchanged = result.suppressed = result.forgotten = result.kept = 0
            result.newly_suppressed = 0
            result.kept_fields.clear()
        return result
    _count_written(session, now, result)
    result.topics_left = leave_topics(session, leaves, source=source, at=now)
    result.written = True
    session.commit()
    return result


def _suppress_as_written(session: Session, wanted: dict[str, Wanted], result: ImportResult) -> None:
    """Suppress the addresses the file says are suppressed, unless they already are (an
    import never lifts a suppression nor replaces its reason), in the import's transaction."""
    addresses = list(wanted)
    for start in range(0, len(addresses), BATCH):
        chunk = addresses[start : start + BATCH]
        already = _suppressions(session.connection(), chunk)
        new = [
            Suppression(email=email, reason=wanted[email][0], created_at=wanted[email][1])
            for email in chunk
            if email not in already
        ]
        result.newly_suppressed += len(new)
        session.add_all(new)
    session.flush()


def _suppressions(conn: Any, emails: list[str]) -> dict[str, str]:
    """The suppressed ones of these addresses, with their reasons: one query."""
    query = select(Suppression.email, Suppression.reason).where(Suppression.email.in_(emails))
    return {email: reason for email, reason in conn.execute(query)}


def _stored(
    conn: Any, emails: list[str], columns: list[str], with_tags: bool
) -> dict[str, tuple[dict[str, Any], set[str]]]:
    """The stored values of these columns (and the tags) of the contacts that exist among
    these addresses: one query."""
    table, tag_table = Contact.__table__, ContactTag.__table__
    query = select(table.c.email, *(table.c[c] for c in columns)).where(table.c.email.in_(emails))
    if with_tags:  # one row per contact, its tags joined by ; (which no tag contains)
        query = query.add_columns(
            select(func.aggregate_strings(tag_table.c.tag, ";"))
            .where(tag_table.c.contact_id == table.c.id)
            .scalar_subquery()
        )
    found: dict[str, tuple[dict[str, Any], set[str]]] = {}
    for email, *cells in conn.execute(query):
        joined = cells.pop() if with_tags else None
        tags = set(joined.split(";")) if joined else set()
        found[email] = (dict(zip(columns, cells, strict=True)), tags)
    return found


Values = dict[str, Any]
Tags = list[str] | None
Line = tuple[int, Values, Tags]


@dataclass
class _Upsert:
    """How this import writes: its time, what the file leaves as stored, and whether the
    file's values replace those recipients chose themselves."""

    now: datetime
    override: bool = False
    dry_run: bool = False
    has_free_columns: bool = False
    keep: frozenset[str] = frozenset(("consent_at",))


def _differences(
    values: Values, tags: Tags, stored: tuple[dict[str, Any], set[str]], upsert: _Upsert
) -> dict[str, tuple[Shown, Shown]]:
    """What the upsert would change, field by field (stored value, file value): the rules
    of `_assignments` (the same consent keeps its date, source and version) in Python."""
    old, old_tags = stored
    same_consent = old.get("consent") == values.get("consent")
    changed: dict[str, tuple[Shown, Shown]] = {}
    for column, was in old.items():
        if column not in values:
            continue  # read for what it says about another (when a choice was made)
        new = values[column]
        kept = column in upsert.keep or (column == "consent_at" and new == upsert.now)
        if same_consent and kept:
            continue  # kept as recorded
        if column == "attributes":
            was = was or {}
            for key in sorted({*was, *new}):
                if was.get(key) != new.get(key):
                    changed[f"attributes.{key}"] = (_shown(was.get(key)), _shown(new.get(key)))
        elif new != was:
            changed[column] = (_shown(was), _shown(new))
    if tags is not None and set(tags) != old_tags:
        changed["tags"] = (_shown(";".join(sorted(old_tags))), _shown(";".join(tags)))
    return changed


def _import_batch(
    session: Session, batch: list[Line], result: ImportResult, upsert: _Upsert
) -> None:
    """Sort a batch out with two queries, and write (unless a dry run) what changes.

    A forgotten address is left out: forgetting erased its personal data, and no import
    brings it back (nor a consent record for it). A row equal to what is stored is counted
    as unchanged and not written, so its updated_at stays. A value the recipient chose is
    kept (and counted) unless the import overrides recipients' choices."""
    conn = session.connection()
    reasons = _suppressions(conn, [values["email"] for _, values, _ in batch])
    rows = [row for row in batch if reasons.get(row[1]["email"]) != "forgotten"]
    result.forgotten += len(batch) - len(rows)
    if not rows:
        return
    first = rows[0][1]
    compared = [c for c in first if c != "email" and (c != "attributes" or upsert.has_free_columns)]
    chosen = [RECIPIENT_CHOICES[c] for c in compared if c in RECIPIENT_CHOICES]
    with_tags = rows[0][2] is not None
    emails = [values["email"] for _, values, _ in rows]
    stored = _stored(conn, emails, [*compared, *chosen], with_tags)
    changed = []
    for line, values, tags in rows:
        email = values["email"]
        old = stored.get(email)
        if old is None:
            changed.append((values, tags))
            if upsert.dry_run:
                result.created += 1
                result.suppressed += email in reasons
                result.changes.append(RowChange(line, email, new=True))
            continue
        fields = _differences(values, tags, old, upsert)
        kept = {}
        for name, when in RECIPIENT_CHOICES.items():
            if name in fields and old[0].get(when) is not None and not upsert.override:
                kept[name] = fields.pop(name)  # the recipient's own choice stays
        if kept:
            result.kept += 1
            result.kept_fields.update(kept)
        if not fields:
            result.unchanged += 1
            result.suppressed += email in reasons
            if kept and upsert.dry_run:
                result.changes.append(RowChange(line, email, kept=kept))
            continue
        changed.append((values, tags))
        if upsert.dry_run:  # a real import counts what it wrote, in _count_written
            result.updated += 1
            result.suppressed += email in reasons
            result.changes.append(RowChange(line, email, fields=fields, kept=kept))
    if changed and not upsert.dry_run:
        _write(session, changed, upsert)


def _count_written(session: Session, now: datetime, result: ImportResult) -> None:
    """Every row this import wrote carries its timestamp: count them in one pass.

    An address forgotten while the import ran (the forget committed after the batch's
    look-up, and PostgreSQL's upsert then inserted the address afresh) is removed again."""
    written = select(Contact.email).where(Contact.updated_at == now)
    by_reason = dict(
        session.execute(
            select(Suppression.reason, func.count())
            .where(Suppression.email.in_(written))
            .group_by(Suppression.reason)
        ).all()
    )
    late = by_reason.pop("forgotten", 0)
    if late:
        forgotten = select(Suppression.email).where(Suppression.reason == "forgotten")
        session.execute(
            delete(Contact).where(Contact.updated_at == now, Contact.email.in_(forgotten)),
            execution_options={"synchronize_session": False},
        )
        result.forgotten += late
    result.suppressed += sum(by_reason.values())  # written ones; unchanged ones are counted
    touched = session.scalar(select(func.count()).select_from(written.subquery())) or 0
    result.created = (
        session.scalar(select(func.count()).select_from(Contact).where(Contact.created_at == now))
        or 0
    )
    result.updated = touched - result.created


def _write(session: Session, batch: list[tuple[Values, Tags]], upsert: _Upsert) -> None:
    """Upsert one batch with a single multi-row INSERT … ON CONFLICT … RETURNING.

    Written as plain SQL on purpose: one statement per thousands of rows, no per-row
    parameter handling, and the ids come back with the insert instead of a second lookup.
    """
    conn = session.connection()
    postgres = conn.dialect.name == "postgresql"
    mark = "%s" if postgres else "?"
    columns = [*batch[0][0], "created_at", "updated_at"]
    params, stamp = _parameters(conn, batch, columns, upsert.now)
    assignments, extra = _assignments(columns, upsert, postgres, mark)
    params += [stamp] * extra
    one = (
        "("
        + ", ".join(f"{mark}::jsonb" if postgres and c == "attributes" else mark for c in columns)
        + ")"
    )
    ids = {
        email: cid
        for cid, email in conn.exec_driver_sql(
            f"INSERT INTO contacts ({', '.join(columns)}) VALUES {', '.join([one] * len(batch))} "
            f"ON CONFLICT (email) DO UPDATE SET {', '.join(assignments)} RETURNING id, email",
            tuple(params),
        ).all()
    }
    if "consent" in batch[0][0]:
        record_current(session, ids.values())  # the consent history keeps every change
    if batch[0][1] is not None:  # the file has a tags column: it replaces the contact's tags
        _replace_tags(conn, mark, [(ids[v["email"]], tags) for v, tags in batch])


def _parameters(
    conn: Any,
    batch: list[tuple[dict[str, Any], list[str] | None]],
    columns: list[str],
    now: datetime,
) -> tuple[list[Any], Any]:
    """The batch's values, row after row, converted as the driver needs them (JSON, and
    SQLite's datetimes); each distinct value converted once."""
    postgres = conn.dialect.name == "postgresql"
    table = Contact.__table__
    convert: dict[str, Any] = {}
    for name in columns:
        if name == "attributes":
            convert[name] = json.dumps
        elif not postgres and name in ("consent_at", "created_at", "updated_at"):
            convert[name] = (
                table.c[name].type.dialect_impl(conn.dialect).bind_processor(conn.dialect)
            )
    stamp = convert["created_at"](now) if "created_at" in convert else now
    params: list[Any] = []
    for values, _ in batch:
        params.extend(values.values())
        params += (stamp, stamp)
    width = len(columns)
    for index, name in enumerate(columns):
        if name in convert and name not in ("created_at", "updated_at"):
            fn, memo = convert[name], {}
            for pos in range(index, len(params), width):
                value = params[pos]
                if value is None:
                    continue
                if isinstance(value, dict):
                    params[pos] = fn(value)
                else:
                    if value not in memo:
                        memo[value] = fn(value)
                    params[pos] = memo[value]
    return params, stamp


def _assignments(
    columns: list[str], upsert: _Upsert, postgres: bool, mark: str
) -> tuple[list[str], int]:
    """The ON CONFLICT … SET list, and how many more parameters (the import's time) it takes.

    Only what the file has is updated: a column absent from the file keeps its stored value.
    A value the recipient chose stays unless the import overrides; overridden, it is no
    longer theirs (unless the file says the same)."""
    keep = upsert.keep
    updates = [
        c
        for c in columns
        if c not in ("email", "created_at") and (c != "attributes" or upsert.has_free_columns)
    ]
    same = "IS NOT DISTINCT FROM" if postgres else "IS"
    assignments = [
        f"{c} = CASE WHEN contacts.consent {same} excluded.consent "
        f"THEN contacts.{c} ELSE excluded.{c} END"
        # Re-importing the same consent keeps the date (and source) it was first recorded.
        if c in keep
        else f"{c} = excluded.{c}"
        for c in updates
    ]
    for c, when in RECIPIENT_CHOICES.items():
        if c not in updates:
            continue
        if upsert.override:
            assignments.append(
                f"{when} = CASE WHEN contacts.{c} {same} excluded.{c} "
                f"THEN contacts.{when} ELSE NULL END"
            )
        else:
            assignments[updates.index(c)] = (
                f"{c} = CASE WHEN contacts.{when} IS NULL THEN excluded.{c} ELSE contacts.{c} END"
            )
    if "consent_at" in updates and "consent_at" not in keep:
        # A file with dates, but an empty cell: the same consent keeps its recorded date.
        assignments[updates.index("consent_at")] = (
            f"consent_at = CASE WHEN contacts.consent {same} excluded.consent AND "
            f"excluded.consent_at = {mark} THEN contacts.consent_at ELSE excluded.consent_at END"
        )
        return assignments, 1
    return assignments, 0


def _replace_tags(conn: Any, mark: str, rows: list[tuple[int, list[str] | None]]) -> None:
    contact_ids = [cid for cid, _ in rows]
    conn.exec_driver_sql(
        f"DELETE FROM contact_tags WHERE contact_id IN ({', '.join([mark] * len(rows))})",
        tuple(contact_ids),
    )
    tag_rows = [(cid, t) for cid, tags in rows for t in tags or ()]
    if tag_rows:
        conn.exec_driver_sql(
            f"INSERT INTO contact_tags (contact_id, tag) VALUES ({mark}, {mark})", tag_rows
        )


def _address(email: str) -> str:
    try:
        return normalise_email(email)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _no_contact(session: Session, address: str) -> NotFound:
    row = session.scalar(select(Suppression).where(Suppression.email == address))
    if row is None:
        return NotFound(f"no contact {address}")
    if row.reason == "forgotten":
        return NotFound(f"{forgotten_message(row)}: its personal data is erased")
    return NotFound(
        f"no contact {address}; the address is suppressed ({row.reason} since "
        f"{row.created_at:%Y-%m-%d})"
    )


def _find(session: Session, address: str) -> Contact | None:
    return session.scalar(
        select(Contact).where(Contact.email == address).options(selectinload(Contact.tags))
    )


def get_contact(session: Session, email: str) -> Contact:
    address = _address(email)
    contact = _find(session, address)
    if contact is None:
        raise _no_contact(session, address)
    return contact


def describe(session: Session, email: str, default_zone: str = "Asia/Seoul") -> dict[str, Any]:
    """Everything stored about one address, as `contacts show` prints it; `default_zone`
    (OUTREACH_TIMEZONE) is the zone of a contact whose own and country's are unknown."""
    address = _address(email)
    contact = _find(session, address)
    suppression = session.scalar(select(Suppression).where(Suppression.email == address))
    if contact is None:
        if suppression is not None and suppression.reason == "forgotten":
            return {
                "email": address,
                "forgotten": True,
                "forgotten_at": suppression.created_at.isoformat(),
            }
        raise _no_contact(session, address)
    return {
        "email": contact.email,
        "forgotten": False,
        **{column: getattr(contact, column) for column in COLUMNS},
        "zone": zone_used(contact.timezone, contact.country, default_zone),
        "consent_at": contact.consent_at.isoformat() if contact.consent_at else None,
        **{
            when: value.isoformat() if (value := getattr(contact, when)) else None
            for when in RECIPIENT_CHOICES.values()
        },
        "tags": contact.tag_names,
        "attributes": contact.attributes or {},
        "created_at": contact.created_at.isoformat(),
        "updated_at": contact.updated_at.isoformat(),
        "suppression": None
        if suppression is None
        else {
            "reason": suppression.reason,
            "since": suppression.created_at.isoformat(),
            "detail": suppression.detail,
        },
        "topics_left": [
            {"topic": left.topic, "since": left.at.isoformat(), "source": left.source}
            for left in contact.left_topics
        ],
        "consent_history": [step.as_json() for step in consent_history(session, contact.id)],
        "history": [entry.as_json() for entry in contact_history(session, contact.id)],
    }


def forget(session: Session, email: str) -> Contact:
    """Erase a contact's personal data, keeping a suppression so it is never mailed again."""
    contact = get_contact(session, email)
    erase_address(session, contact.id, contact.email)
    erase_consent(session, contact.email)
    # Requests of the same mailbox under another spelling (victim+z@) hold what a stranger
    # typed about this person too.
    erase_requests(session, contact.email)
    suppress(session, contact.email, "forgotten", detail="erased on request")
    session.delete(contact)
    session.flush()
    return contact


def zone_used(timezone: str | None, country: str | None, default_zone: str) -> str:
    """The zone a contact is mailed in and why: `Asia/Kolkata (the zone of IN)`."""
    if timezone:
        return timezone
    own = zone_of_country(country)
    if own:
        return f"{own} (the zone of {country})"
    if several_zones(country):
        return f"{default_zone} (OUTREACH_TIMEZONE: {country} has several zones; set timezone)"
    return f"{default_zone} (OUTREACH_TIMEZONE)"


def _consent_date(at: datetime | None) -> str:
    """A date when that is all there is; the whole time otherwise, so a re-import keeps the
    consent exactly as recorded."""
    if at is None:
        return ""
    if (at.hour, at.minute, at.second, at.microsecond) == (0, 0, 0, 0):
        return at.date().isoformat()
    return at.isoformat()


@dataclass(frozen=True)
class Exported:
    """One contact as an export writes it, with its suppression if it has one."""

    contact: Contact
    reason: str | None
    since: datetime | None


def _text(value: str | None) -> str:
    return value or ""


# The export's columns, in order, each with how to write it: the import format (so an
# export re-imports as it is), then the status columns. A new column is one line here.
EXPORT_COLUMNS: tuple[tuple[str, Callable[[Exported], str]], ...] = (
    ("email", lambda e: e.contact.email),
    ("name", lambda e: _text(e.contact.name)),
    ("organisation", lambda e: _text(e.contact.organisation)),
    ("organisation_type", lambda e: _text(e.contact.organisation_type)),
    ("city", lambda e: _text(e.contact.city)),
    ("country", lambda e: _text(e.contact.country)),
    ("language", lambda e: _text(e.contact.language)),
    ("membership", lambda e: _text(e.contact.membership)),
    ("tags", lambda e: ";".join(e.contact.tag_names)),
    ("consent", lambda e: _text(e.contact.consent)),
    ("consent_date", lambda e: _consent_date(e.contact.consent_at)),
    ("consent_source", lambda e: _text(e.contact.consent_source)),
    ("consent_version", lambda e: _text(e.contact.consent_version)),
    ("topics_left", lambda e: ";".join(left.topic for left in e.contact.left_topics)),
    ("timezone", lambda e: _text(e.contact.timezone)),
    ("suppressed", lambda e: "yes" if e.reason else "no"),
    ("suppressed_reason", lambda e: _text(e.reason)),
    ("suppressed_since", lambda e: e.since.isoformat(timespec="seconds") if e.since else ""),
)


def _export(session: Session, writer: TableWriter, where: Any, hint: str) -> int:
    # An alias: `where` may hold not_suppressed(), whose EXISTS names the table itself.
    status = aliased(Suppression)
    query = (
        select(Contact, status.reason, status.created_at)
        .outerjoin(status, status.email == Contact.email)
        .options(selectinload(Contact.tags), selectinload(Contact.left_topics))
        .order_by(Contact.id)
    )
    if where is not None:
        query = query.where(where)
    # Attribute columns are the union over the exported contacts: one pass to find them.
    keys: set[str] = set()
    for attrs in session.scalars(query.with_only_columns(Contact.attributes)).yield_per(BATCH):
        keys.update(attrs or {})
    attribute_columns = sorted(keys - _KNOWN)
    header = [name for name, _ in EXPORT_COLUMNS] + attribute_columns
    writer.writerow(header)
    n = 0
    for contact, reason, since in session.execute(query.execution_options(yield_per=BATCH)):
        row = Exported(contact, reason, since)
        attributes = contact.attributes or {}
        cells = [write(row) for _, write in EXPORT_COLUMNS]
        cells += [str(attributes.get(k, "")) for k in attribute_columns]
        try:
            writer.writerow(cells)
        except CellError as exc:
            raise UserError(f"{contact.email}: {header[exc.index]} {exc}; {hint}") from None
        n += 1
    return n


_ENCODING_HINT = "use --encoding utf-8-sig (Excel opens it too)"


def export_csv(session: Session, out: IO[str], where: Any = None) -> int:
    """Write contacts as CSV in the import format (a re-import is a no-op)."""
    return _export(session, TableWriter(out), where, _ENCODING_HINT)


def export_file(
    session: Session, path: Path | str, where: Any = None, *, encoding: str = "utf-8"
) -> int:
    """Write contacts to a file in the import format: .xlsx by its name, else CSV in
    encoding. An export that fails leaves an existing file as it was."""
    path = Path(path)
    hint = "correct the contact, or export CSV" if is_xlsx(path) else _ENCODING_HINT
    try:
        return write_table(path, lambda w: _export(session, w, where, hint), encoding=encoding)
    except (FileNotFoundError, NotADirectoryError, PermissionError, IsADirectoryError) as exc:
        raise UserError(f"cannot write {path}: {exc.strerror}") from None


def export_stream(
    session: Session, binary: IO[bytes], where: Any = None, *, encoding: str = "utf-8"
) -> int:
    """Write contacts as CSV to a binary stream (standard output) in encoding."""
    return write_stream(binary, lambda w: _export(session, w, where, _ENCODING_HINT), encoding)


def export_to_string(session: Session, where: Any = None) -> str:
    buf = io.StringIO()
    export_csv(session, buf, where)
    return buf.getvalue()
