"""Contacts: CSV import (validated upsert), export, lookup and forgetting."""

from __future__ import annotations

import codecs
import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import partial
from pathlib import Path
from typing import IO, Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from outreach.errors import FileError, NotFound, UserError
from outreach.fields import KNOWN_COLUMNS, normalise_email, normalise_field, split_tags
from outreach.history import contact_history, erase_address
from outreach.models import Contact, Suppression, utcnow
from outreach.suppressions import forgotten_message, suppress

BATCH = 2000
MAX_REPORTED = 50
_KNOWN = frozenset(KNOWN_COLUMNS)
# Columns that land in a contact's own column (consent_date is stored as consent_at).
COLUMNS = tuple(c for c in KNOWN_COLUMNS if c not in ("email", "tags", "consent_date"))
_NORMALISERS = [(c, partial(normalise_field, c)) for c in COLUMNS]


@dataclass
class RowError:
    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass
class ImportResult:
    path: str
    rows: int = 0
    created: int = 0
    updated: int = 0
    suppressed: int = 0
    errors: list[RowError] = field(default_factory=list)
    written: bool = False
    attribute_columns: list[str] = field(default_factory=list)

    @property
    def valid(self) -> int:
        return self.rows - len(self.errors)


def _open_text(path: Path, encoding: str) -> IO[str]:
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise UserError(f"unknown encoding {encoding!r}; try utf-8 or cp949") from None
    if encoding.lower().replace("_", "-") in ("utf-8", "utf8"):
        encoding = "utf-8-sig"  # a BOM from Excel is not part of the first column's name
    try:
        return path.open(encoding=encoding, newline="", errors="strict")
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{path} is a directory, not a CSV file") from None


def _decode_hint(path: Path, encoding: str, exc: UnicodeDecodeError, line: int) -> FileError:
    hint = (
        "Korean Excel exports are often CP949: try --encoding cp949"
        if encoding.lower().startswith("utf")
        else "try another --encoding"
    )
    return FileError(
        path,
        f"cannot read the file as {encoding} (byte 0x{exc.object[exc.start]:02x}); {hint}",
        line,
    )


def _rows(path: Path, encoding: str) -> Iterator[tuple[int, dict[str, str]]]:
    handle = _open_text(path, encoding)
    reader = csv.reader(handle)
    line = 1
    try:
        with handle:
            try:
                header = next(reader)
            except StopIteration:
                raise FileError(
                    path, "the file is empty; expected a header row with an email column"
                ) from None
            columns = [h.strip().lower() for h in header]
            if "email" not in columns:
                found = ", ".join(c for c in columns if c) or "none"
                raise FileError(path, f"no email column in the header row (found: {found})", 1)
            unnamed = "" in columns
            seen = set()
            for name in columns:
                if name and name in seen:
                    raise FileError(path, f"column {name!r} appears twice in the header row", 1)
                seen.add(name)
            for record in reader:
                line = reader.line_num
                if not "".join(record).strip():
                    continue
                if len(record) > len(columns):
                    yield (
                        line,
                        {
                            "__error__": f"{len(record)} cells but the header has "
                            f"{len(columns)} columns"
                        },
                    )
                    continue
                row = dict(zip(columns, record, strict=False))
                if unnamed:
                    row.pop("", None)
                yield line, row
    except UnicodeDecodeError as exc:
        raise _decode_hint(path, encoding, exc, reader.line_num + 1) from None
    except csv.Error as exc:
        raise FileError(path, f"not valid CSV: {exc}", reader.line_num) from None


def _parse_date(value: str) -> datetime:
    text = value.strip()
    try:
        if len(text) == 10:
            d = date.fromisoformat(text)
            return datetime(d.year, d.month, d.day, tzinfo=UTC)
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"consent_date {value!r} is not a date such as 2026-03-31") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _validate(raw: dict[str, str], now: datetime) -> tuple[dict[str, Any], list[str] | None]:
    """One row to column values and tags; raises ValueError with the first reason."""
    if "__error__" in raw:
        raise ValueError(raw["__error__"])
    values: dict[str, Any] = {"email": normalise_email(raw.get("email", ""))}
    for column, normalise in _NORMALISERS:
        cell = raw.get(column)
        if cell is not None:
            cell = cell.strip()
            values[column] = normalise(cell) if cell else None
    if "consent" in raw:
        date_cell = raw.get("consent_date", "").strip()
        values["consent_at"] = (
            _parse_date(date_cell) if date_cell else (now if values["consent"] else None)
        )
    attributes = {k: v.strip() for k, v in raw.items() if k not in _KNOWN and v.strip()}
    values["attributes"] = attributes
    tags = split_tags(raw["tags"]) if "tags" in raw else None
    return values, tags


def import_csv(
    session: Session,
    path: Path | str,
    *,
    encoding: str = "utf-8",
    dry_run: bool = False,
    skip_invalid: bool = False,
) -> ImportResult:
    """Upsert contacts from a CSV file.

    All or nothing by default: rows are written in batches inside one transaction, and the
    transaction is rolled back when any row is invalid (unless skip_invalid) or on a dry run.
    """
    path = Path(path)
    result = ImportResult(str(path))
    now = utcnow()
    seen: dict[str, int] = {}
    batch: list[tuple[dict[str, Any], list[str] | None]] = []
    has_free_columns = has_consent_dates = False
    writing = not dry_run
    for line, raw in _rows(path, encoding):
        result.rows += 1
        if result.rows == 1:
            result.attribute_columns = [k for k in raw if k not in KNOWN_COLUMNS]
            has_free_columns = bool(result.attribute_columns)
            has_consent_dates = "consent_date" in raw
        try:
            values, tags = _validate(raw, now)
            first = seen.get(values["email"])
            if first is not None:
                raise ValueError(f"duplicate of line {first} ({values['email']})")
            seen[values["email"]] = line
        except ValueError as exc:
            result.errors.append(RowError(line, str(exc)))
            if not skip_invalid:
                writing = False  # keep validating to report every problem, write nothing
                batch.clear()
            continue
        if writing:
            batch.append((values, tags))
            if len(batch) >= BATCH:
                _write(session, batch, has_free_columns, now, has_consent_dates)
                batch.clear()
    if writing and batch:
        _write(session, batch, has_free_columns, now, has_consent_dates)
    if dry_run or (result.errors and not skip_invalid):
        session.rollback()
        if dry_run:
            _count_existing(session, list(seen), result)
        return result
    _count_written(session, now, result)
    result.written = True
    session.commit()
    return result


def _count_written(session: Session, now: datetime, result: ImportResult) -> None:
    """Every row this import wrote carries its timestamp: count them in one pass."""
    written = select(Contact.email).where(Contact.updated_at == now)
    touched = session.scalar(select(func.count()).select_from(written.subquery())) or 0
    result.created = (
        session.scalar(select(func.count()).select_from(Contact).where(Contact.created_at == now))
        or 0
    )
    result.updated = touched - result.created
    result.suppressed = (
        session.scalar(
            select(func.count()).select_from(Suppression).where(Suppression.email.in_(written))
        )
        or 0
    )


def _count_existing(session: Session, emails: list[str], result: ImportResult) -> None:
    conn = session.connection()
    for start in range(0, len(emails), BATCH):
        chunk = emails[start : start + BATCH]
        existing = conn.scalar(
            select(func.count()).select_from(Contact).where(Contact.email.in_(chunk))
        )
        result.updated += existing or 0
        result.created += len(chunk) - (existing or 0)
        result.suppressed += (
            conn.scalar(
                select(func.count()).select_from(Suppression).where(Suppression.email.in_(chunk))
            )
            or 0
        )


def _write(
    session: Session,
    batch: list[tuple[dict[str, Any], list[str] | None]],
    has_free_columns: bool,
    now: datetime,
    has_consent_dates: bool = False,
) -> None:
    """Upsert one batch with a single multi-row INSERT … ON CONFLICT … RETURNING.

    Written as plain SQL on purpose: one statement per thousands of rows, no per-row
    parameter handling, and the ids come back with the insert instead of a second lookup.
    """
    conn = session.connection()
    postgres = conn.dialect.name == "postgresql"
    mark = "%s" if postgres else "?"
    columns = [*batch[0][0], "created_at", "updated_at"]
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
    one = (
        "("
        + ", ".join(f"{mark}::jsonb" if postgres and c == "attributes" else mark for c in columns)
        + ")"
    )
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
    # Update only what the file has: a column absent from the file keeps its stored value.
    updates = [
        c
        for c in columns
        if c not in ("email", "created_at") and (c != "attributes" or has_free_columns)
    ]
    same = "IS NOT DISTINCT FROM" if postgres else "IS"
    assignments = [
        f"{c} = CASE WHEN contacts.consent {same} excluded.consent "
        "THEN contacts.consent_at ELSE excluded.consent_at END"
        # Re-importing the same consent keeps the date it was first recorded.
        if c == "consent_at" and not has_consent_dates
        else f"{c} = excluded.{c}"
        for c in updates
    ]
    ids = {
        email: cid
        for cid, email in conn.exec_driver_sql(
            f"INSERT INTO contacts ({', '.join(columns)}) VALUES {', '.join([one] * len(batch))} "
            f"ON CONFLICT (email) DO UPDATE SET {', '.join(assignments)} RETURNING id, email",
            tuple(params),
        ).all()
    }
    if batch[0][1] is not None:  # the file has a tags column: it replaces the contact's tags
        contact_ids = [ids[v["email"]] for v, _ in batch]
        conn.exec_driver_sql(
            f"DELETE FROM contact_tags WHERE contact_id IN ({', '.join([mark] * len(batch))})",
            tuple(contact_ids),
        )
        tag_rows = [
            (cid, t) for cid, (_, tags) in zip(contact_ids, batch, strict=True) for t in tags or ()
        ]
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


def get_contact(session: Session, email: str) -> Contact:
    address = _address(email)
    contact = session.scalar(
        select(Contact).where(Contact.email == address).options(selectinload(Contact.tags))
    )
    if contact is None:
        raise _no_contact(session, address)
    return contact


def describe(session: Session, email: str) -> dict[str, Any]:
    """Everything stored about one address, as `contacts show` prints it."""
    address = _address(email)
    contact = session.scalar(
        select(Contact).where(Contact.email == address).options(selectinload(Contact.tags))
    )
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
        "consent_at": contact.consent_at.isoformat() if contact.consent_at else None,
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
        "history": [entry.as_json() for entry in contact_history(session, contact.id)],
    }


def forget(session: Session, email: str) -> Contact:
    """Erase a contact's personal data, keeping a suppression so it is never mailed again."""
    contact = get_contact(session, email)
    erase_address(session, contact.id, contact.email)
    suppress(session, contact.email, "forgotten", detail="erased on request")
    session.delete(contact)
    session.flush()
    return contact


EXPORT_COLUMNS = KNOWN_COLUMNS  # the import format, so an export re-imports as is


def export_csv(session: Session, out: IO[str], where: Any = None) -> int:
    """Write contacts as CSV in the import format (a re-import is a no-op)."""
    query = select(Contact).options(selectinload(Contact.tags)).order_by(Contact.id)
    if where is not None:
        query = query.where(where)
    # Attribute columns are the union over the exported contacts: one pass to find them.
    keys: set[str] = set()
    for attrs in session.scalars(query.with_only_columns(Contact.attributes)).yield_per(BATCH):
        keys.update(attrs or {})
    attribute_columns = sorted(keys)
    writer = csv.writer(out)
    writer.writerow([*EXPORT_COLUMNS, *attribute_columns])
    n = 0
    for contact in session.scalars(query.execution_options(yield_per=BATCH)):
        writer.writerow(
            [
                contact.email,
                contact.name or "",
                contact.organisation or "",
                contact.organisation_type or "",
                contact.city or "",
                contact.country or "",
                contact.language or "",
                contact.membership or "",
                ";".join(contact.tag_names),
                contact.consent or "",
                contact.consent_at.date().isoformat() if contact.consent_at else "",
                *((contact.attributes or {}).get(k, "") for k in attribute_columns),
            ]
        )
        n += 1
    return n


def export_to_string(session: Session, where: Any = None) -> str:
    buf = io.StringIO()
    export_csv(session, buf, where)
    return buf.getvalue()
