"""Spreadsheet files: CSV in a chosen encoding and Excel .xlsx, read as rows of text cells and
written so that no cell runs as a formula when a spreadsheet opens the file.

A CSV cell that starts with one of OWASP's formula triggers (`= + - @`, tab, CR) is written
with a leading apostrophe, and a cell that already starts with an apostrophe before one of
those (or before another apostrophe) gets one more; reading takes exactly one off again, so
export → import → export gives the same file. In .xlsx a cell has a type: such cells are
written as text (marked as quoted, as Excel does for a typed apostrophe) and need no escape.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, time
from pathlib import Path
from typing import IO, Any

from outreach.errors import FileError, UserError
from outreach.printable import one_line

ESCAPE = "'"
TRIGGERS = frozenset("=+-@\t\r")
_ESCAPED = TRIGGERS | {ESCAPE}
ENCODINGS = ("utf-8", "utf-8-sig", "cp949")
XLSX_SUFFIXES = (".xlsx", ".xlsm")
# Characters with no business in a contact's data that a terminal or XML would act on:
# C0 controls but tab and line breaks, DEL, and C1 controls (U+009B starts a terminal command).
CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_C0_BYTES = bytes(b for b in range(32) if b not in (9, 10, 13)) + b"\x7f"
_C1_UTF8 = re.compile(rb"\xc2[\x80-\x9f]")
_CHUNK = 1 << 20
# Excel's limit for one cell; openpyxl would cut longer text silently.
XLSX_CELL_LIMIT = 32767


def neutralise(cell: str) -> str:
    """A CSV cell that no spreadsheet runs; `restore` gives the value back."""
    if cell and (
        cell[0] in TRIGGERS or (cell[0] == ESCAPE and len(cell) > 1 and cell[1] in _ESCAPED)
    ):
        return ESCAPE + cell
    return cell


def restore(cell: str) -> str:
    """Undo `neutralise`: one leading apostrophe before a trigger or an apostrophe goes."""
    if len(cell) > 1 and cell[0] == ESCAPE and cell[1] in _ESCAPED:
        return cell[1:]
    return cell


def is_xlsx(path: Path) -> bool:
    return path.suffix.lower() in XLSX_SUFFIXES


@dataclass
class Table:
    """Rows of text cells with their line (CSV) or row (xlsx) number, the header first."""

    rows: Iterator[tuple[int, list[str]]]
    # False when the whole file was seen to hold no control characters: rows need no check.
    may_have_controls: bool


def read_table(path: Path, encoding: str = "utf-8") -> Table:
    if is_xlsx(path):
        return Table(_xlsx_rows(path), may_have_controls=True)
    if path.suffix.lower() == ".xls":
        raise FileError(path, _OLD_EXCEL)
    if path.suffix.lower() in _NOT_CONTACTS:
        # Read as CSV, a YAML or JSON file would fail on its "header" with advice about --map.
        raise FileError(path, "this is not a contacts file: give a .csv or .xlsx file")
    return _csv_table(path, encoding)


# Files of a project that are not contact lists, which a slip of the tab key can name.
_NOT_CONTACTS = frozenset({".yaml", ".yml", ".json", ".mjml", ".html", ".eml", ".toml", ".db"})


_OLD_EXCEL = "this is an Excel 97-2003 .xls file; save it as .xlsx (or CSV UTF-8) and import that"


def _check_encoding(encoding: str) -> str:
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise UserError(f"unknown encoding {encoding!r}; try utf-8 or cp949") from None
    if encoding.lower().replace("_", "-") in ("utf-8", "utf8"):
        return "utf-8-sig"  # a BOM from Excel is not part of the first column's name
    return encoding


def _scan(path: Path) -> tuple[bool, bool]:
    """(may hold control characters, has a cell starting with an apostrophe), from the bytes
    at C speed, so that rows of an ordinary file are not checked one by one. Exact for
    ASCII-compatible encodings (UTF-8, CP949); anything it flags is checked row by row."""
    controls = escapes = False
    previous = b"\n"
    try:
        with path.open("rb") as handle:
            head = handle.read(8)
            if head.startswith(b"PK\x03\x04"):
                raise FileError(path, "this is an Excel .xlsx file, not CSV: name it .xlsx")
            if head.startswith(b"\xd0\xcf\x11\xe0"):
                raise FileError(path, _OLD_EXCEL)
            handle.seek(0)
            while chunk := handle.read(_CHUNK):
                if not controls:
                    controls = len(chunk.translate(None, _C0_BYTES)) != len(chunk) or bool(
                        b"\xc2" in chunk and _C1_UTF8.search(previous + chunk)
                    )
                if not escapes and b"'" in chunk:
                    data = previous + chunk
                    at = data.find(b"'", 1)
                    while at != -1 and not escapes:
                        escapes = data[at - 1 : at] in (b",", b'"', b"\n", b"\r")
                        at = data.find(b"'", at + 1)
                previous = chunk[-1:]
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{path} is a directory, not a CSV file") from None
    return controls, escapes


def _csv_table(path: Path, encoding: str) -> Table:
    encoding = _check_encoding(encoding)
    controls, escapes = _scan(path)
    if codecs.lookup(encoding).name not in ENCODINGS:
        # The scan reads bytes as UTF-8 or CP949 write them: in UTF-7, Latin-1 or UTF-16 a
        # control character or an apostrophe may be other bytes, so every row is checked.
        controls = escapes = True
    return Table(_csv_rows(path, encoding, escapes), may_have_controls=controls)


def _csv_rows(path: Path, encoding: str, escapes: bool) -> Iterator[tuple[int, list[str]]]:
    with path.open(encoding=encoding, newline="", errors="strict") as handle:
        reader = csv.reader(handle)
        try:
            if escapes:
                for record in reader:
                    yield reader.line_num, [restore(c) if c[:1] == ESCAPE else c for c in record]
            else:
                for record in reader:
                    yield reader.line_num, record
        except UnicodeDecodeError as exc:
            raise _decode_error(path, encoding, exc, reader.line_num + 1) from None
        except csv.Error as exc:
            raise FileError(path, f"not valid CSV: {exc}", reader.line_num) from None


def _decode_error(path: Path, encoding: str, exc: UnicodeDecodeError, line: int) -> FileError:
    """Where the file stops being `encoding`, and what it looks like instead."""
    name = "UTF-8" if codecs.lookup(encoding).name in ("utf-8", "utf-8-sig") else encoding
    raw = path.read_bytes()
    if "x\n".encode(encoding).endswith(b"x\n"):  # ASCII-compatible (UTF-16 is not)
        # The decoder reads ahead, so its line is where the chunk began: find the line of
        # the first bad byte itself (lines are plain \n bytes in these encodings).
        try:
            raw.decode(encoding)
        except UnicodeDecodeError as first:
            # utf-8-sig counts its positions after the BOM it took off.
            skipped = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
            offset = first.start + (skipped if encoding == "utf-8-sig" else 0)
            exc, line = first, raw.count(b"\n", 0, offset) + 1
    if name == "UTF-8" and _reads_as(raw, "cp949"):
        hint = "it looks like CP949, as Korean Excel saves CSV: add --encoding cp949"
    elif name != "UTF-8" and _reads_as(raw, "utf-8"):
        hint = "the file reads as UTF-8: leave out --encoding"
    else:
        hint = "save it as CSV UTF-8, or name its encoding with --encoding (e.g. latin-1)"
    return FileError(
        path,
        f"cannot read the file as {name} (byte 0x{exc.object[exc.start]:02x}); {hint}",
        line,
    )


def _reads_as(raw: bytes, encoding: str) -> bool:
    try:
        raw.decode(encoding)
    except UnicodeDecodeError:
        return False
    return True


def _text(value: Any) -> str:
    """A typed spreadsheet value as the text a person sees (phone numbers without ".0")."""
    if value is None:
        return ""
    if isinstance(value, str):
        return restore(value) if value[:1] == ESCAPE else value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime):
        return value.date().isoformat() if value.time() == time() else value.isoformat()
    if isinstance(value, date | time):
        return value.isoformat()
    return str(value)


def _xlsx_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    from openpyxl import load_workbook

    book = formulas = None
    try:
        # data_only: the values a person sees, not the formulas behind them. The formulas
        # are read beside them only to tell a computed value from one never computed.
        book = load_workbook(path, read_only=True, data_only=True)
        formula_parts, stale = _scan_xlsx(path)
        if formula_parts:
            formulas = load_workbook(path, read_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except Exception as exc:  # openpyxl raises zip, XML and key errors alike for a bad file
        if book is not None:
            book.close()
        raise FileError(path, f"not an Excel .xlsx file ({type(exc).__name__})") from None
    try:
        if not book.worksheets:
            return
        # The first sheet holds the list; others (notes, lookups) are not contacts.
        sheet = book.worksheets[0]
        sheet.reset_dimensions()  # some writers store wrong dimensions; read every row
        rows = sheet.iter_rows(min_row=1, values_only=True)
        if formulas is not None:
            behind = formulas.worksheets[0]
            behind.reset_dimensions()
            written = behind.iter_rows(min_row=1, values_only=True)
            rows = (
                _computed(path, n, v, w, stale)
                for n, (v, w) in enumerate(zip(rows, written, strict=True), 1)
            )
        for number, values in enumerate(rows, 1):
            cells = [_text(v) for v in values]
            while cells and not cells[-1]:
                cells.pop()  # formatted but empty cells to the right are not columns
            yield number, cells
    except (OSError, ValueError, KeyError) as exc:
        raise FileError(path, f"cannot read the .xlsx file ({type(exc).__name__})") from None
    finally:
        book.close()
        if formulas is not None:
            formulas.close()


# A formula element (SpreadsheetML's <f>), with or without a namespace prefix. Cell text
# cannot contain a bare "<", so only markup matches; a false match only costs a second read.
_FORMULA = re.compile(rb"<(?:[\w.-]+:)?f[\s>/]")
# A workbook that asks to be recalculated when opened, as openpyxl and XlsxWriter write it
# (XlsxWriter saves 0 for every formula): its saved values are none a spreadsheet computed.
# Read from the XML: openpyxl reports this flag as set when the attribute is absent.
_RECALCULATE = re.compile(rb"<(?:[\w.-]+:)?calcPr\b[^>]*\bfullCalcOnLoad\s*=\s*[\"'](?:1|true)")
_TAIL = 256  # longer than any tag that matters, so one split between two chunks is seen


def _scan_xlsx(path: Path) -> tuple[bool, bool]:
    """(whether any part may hold a formula, whether the workbook asks to be recalculated).
    Most contact lists hold no formula, and reading the file a second time for its formulas
    would cost as much as the first."""
    import zipfile

    formulas = stale = False
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            if not name.endswith(".xml"):
                continue
            tail = b""
            with archive.open(name) as part:
                while chunk := part.read(1 << 20):
                    data = tail + chunk
                    formulas = formulas or bool(_FORMULA.search(data))
                    stale = stale or bool(_RECALCULATE.search(data))
                    tail = chunk[-_TAIL:]
    return formulas, stale


def _computed(path: Path, number: int, values: Any, written: Any, stale: bool) -> Any:
    """`values`, unless one is a formula whose value no spreadsheet program computed (a
    script wrote the file): read as a value it would import a contact without its name,
    with "0" for it, or report an address missing that the sheet shows. The import stops
    at the first, before anything is written."""
    from openpyxl.utils import get_column_letter
    from openpyxl.worksheet.formula import ArrayFormula, DataTableFormula

    for index, (value, source) in enumerate(zip(values, written, strict=False)):
        formula = isinstance(source, ArrayFormula | DataTableFormula) or (
            isinstance(source, str) and source.startswith("=")
        )
        if formula and (value is None or stale):
            text = getattr(source, "text", source)
            cell = f"{get_column_letter(index + 1)}{number}"
            raise FileError(
                path,
                f"cell {cell} is a formula with no saved value ({one_line(text, 60)}); the "
                "program that wrote the file did not compute it. Open the file in Excel or "
                "LibreOffice and save it again, or paste values instead of formulas",
                number,
            )
    return values


class CellError(ValueError):
    """A value the file cannot hold, by its position in the row."""

    def __init__(self, index: int, reason: str) -> None:
        self.index = index
        super().__init__(reason)


class TableWriter:
    """Rows of text to a CSV stream or an .xlsx sheet, neutralised either way."""

    def __init__(self, out: IO[str] | None = None, sheet: Any = None) -> None:
        self._out = out
        self._csv = csv.writer(out) if out is not None else None
        self._sheet = sheet

    def writerow(self, cells: list[str]) -> None:
        if self._csv is None:
            self._sheet.append([self._xlsx_cell(i, c) for i, c in enumerate(cells)])
            return
        try:
            self._csv.writerow([neutralise(c) for c in cells])
        except UnicodeEncodeError as exc:
            # The text stream encodes each row as it is written: nothing of it went out.
            encoding = getattr(self._out, "encoding", "")
            for index, cell in enumerate(cells):
                try:
                    cell.encode(encoding)
                except UnicodeEncodeError as bad:
                    char = cell[bad.start]
                    raise CellError(
                        index, f"{char!r} (U+{ord(char):04X}) cannot be written in {encoding}"
                    ) from None
            raise CellError(0, str(exc)) from None

    def _xlsx_cell(self, index: int, value: str) -> Any:
        from openpyxl.cell import WriteOnlyCell

        if not value:
            return None
        if len(value) > XLSX_CELL_LIMIT:
            raise CellError(index, f"is longer than the {XLSX_CELL_LIMIT} characters of a cell")
        if CONTROL.search(value):
            raise CellError(index, "holds a control character, which .xlsx cannot")
        if value[0] in TRIGGERS:
            # openpyxl takes any text starting with "=" for a formula; this stays text.
            cell = WriteOnlyCell(self._sheet, value)
            cell.data_type = "s"
            cell.quotePrefix = True
            return cell
        return ESCAPE + value if restore(value) != value else value


def _new_file_mode(path: Path) -> int:
    if path.exists():
        return path.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_table(path: Path, fill: Callable[[TableWriter], int], *, encoding: str = "utf-8") -> int:
    """Write a file through a temporary one beside it, so a failed export leaves what was
    there. The format follows the name: .xlsx, else CSV in encoding."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    temporary = Path(name)
    try:
        if is_xlsx(path):
            from openpyxl import Workbook

            os.close(fd)
            book = Workbook(write_only=True)
            n = fill(TableWriter(sheet=book.create_sheet("contacts")))
            book.save(temporary)
        else:
            with open(fd, "w", encoding=encoding, newline="") as text:
                n = fill(TableWriter(text))
        os.chmod(temporary, _new_file_mode(path))
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
    return n


def write_stream(binary: IO[bytes], fill: Callable[[TableWriter], int], encoding: str) -> int:
    """CSV to an open binary stream such as standard output, in encoding."""
    text = io.TextIOWrapper(binary, encoding=encoding, newline="")
    try:
        return fill(TableWriter(text))
    finally:
        text.flush()
        text.detach()
