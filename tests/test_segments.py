from pathlib import Path

import pytest
from sqlalchemy import event
from sqlalchemy.orm import Session

from outreach.contacts import import_csv
from outreach.errors import FileError, FileErrors
from outreach.segments import audience, count, load_segments, members, parse_segments
from outreach.suppressions import suppress
from outreach.yamlfile import load_yaml
from tests.conftest import ROOT, write

CONTACTS = """email,country,organisation_type,membership,language,tags,region,score
kr1@example.org,KR,local_government,full,ko,covid19-webinar,east-asia,3
kr2@example.org,KR,local_government,prospective,ko-KR,,east-asia,5
kr3@example.org,KR,ngo,none,ko,climate-webinar,east-asia,
ph1@example.com,PH,local_government,full,en,climate-webinar;newsletter,south-east-asia,
lk1@example.com,LK,local_government,associate,en,covid19-webinar;climate-webinar,south-asia,1
np1@example.com,NP,local_government,none,en,covid19-webinar,south-asia,
"""


@pytest.fixture
def loaded(session: Session, tmp_path: Path) -> Session:
    import_csv(session, write(tmp_path / "c.csv", CONTACTS))
    return session


def segment(tmp_path: Path, where: str) -> object:
    path = write(tmp_path / "segments.yaml", f"s:\n  where:\n{where}")
    return load_segments(path)["s"].where


def emails(session: Session, where: object) -> set[str]:
    return {c.email.split("@")[0] for c in members(session, audience([_wrap(where)]))}


class _wrap:
    def __init__(self, where: object) -> None:
        self.where = where


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("    country: KR\n    organisation_type: local_government\n", {"kr1", "kr2"}),
        ("    country: [PH, LK]\n", {"ph1", "lk1"}),
        ("    country: {in: [ph, np]}\n", {"ph1", "np1"}),
        ("    country: {not: KR}\n", {"ph1", "lk1", "np1"}),
        ("    language: ko\n", {"kr1", "kr2", "kr3"}),
        ("    tags: newsletter\n", {"ph1"}),
        ("    tags: {all: [covid19-webinar, climate-webinar]}\n", {"lk1"}),
        ("    tags: {none: [covid19-webinar]}\n", {"kr2", "kr3", "ph1"}),
        ("    attributes.region: south-asia\n", {"lk1", "np1"}),
        ("    attributes.score: 5\n", {"kr2"}),
        ("    any:\n      - membership: full\n      - country: NP\n", {"kr1", "ph1", "np1"}),
        ("    not: {membership: none}\n", {"kr1", "kr2", "ph1", "lk1"}),
        (
            "    all:\n      - tags: {any: [covid19-webinar, climate-webinar]}\n"
            "      - not: {membership: none}\n"
            "      - attributes.region: {in: [east-asia, south-asia]}\n",
            {"kr1", "lk1"},
        ),
    ],
)
def test_operators(loaded: Session, tmp_path: Path, where: str, expected: set[str]) -> None:
    assert emails(loaded, segment(tmp_path, where)) == expected


def test_suppressed_contacts_are_never_members(loaded: Session, tmp_path: Path) -> None:
    suppress(loaded, "kr1@example.org", "unsubscribed")
    where = segment(tmp_path, "    country: KR\n")
    assert emails(loaded, where) == {"kr2", "kr3"}


def test_count_is_one_query(loaded: Session, tmp_path: Path) -> None:
    where = audience([_wrap(segment(tmp_path, "    tags: {any: [covid19-webinar]}\n"))])
    statements: list[str] = []
    engine = loaded.get_bind()
    listener = lambda *a: statements.append(a[2])  # noqa: E731
    event.listen(engine, "before_cursor_execute", listener)
    try:
        assert count(loaded, where) == 3
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 1 and "count(" in selects[0].lower()


def test_audience_include_exclude(loaded: Session, tmp_path: Path) -> None:
    path = write(
        tmp_path / "s.yaml", "a:\n  where: {country: KR}\nb:\n  where: {membership: none}\n"
    )
    segs = load_segments(path)
    got = {c.email.split("@")[0] for c in members(loaded, audience([segs["a"]], [segs["b"]]))}
    assert got == {"kr1", "kr2"}


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("s:\n  where:\n    country: [KR\n", 4, "YAML syntax error"),
        ("s:\n  where:\n\tcountry: KR\n", 3, "tabs"),
        (
            "s:\n  where:\n    contry: KR\n",
            3,
            "unknown field or operator 'contry'; allowed: all, any, not",
        ),
        ("s:\n  where:\n    country: {like: K}\n", 3, "unknown operator 'like'; allowed: in, not"),
        ("s:\n  where:\n    tags: {some: [a]}\n", 3, "allowed: any, all, none"),
        ("s:\n  where:\n    country: ZZ\n", 3, "unknown country 'ZZ'"),
        (
            "s:\n  where:\n    membership: gold\n",
            3,
            "choose one of full (정회원), associate (준회원)",
        ),
        ("s:\n  where:\n    country: {a: 1}\n", 3, "unknown operator 'a'"),
        ("s:\n  where:\n    all: {country: KR}\n", 3, "all: takes a list of conditions"),
        (
            "s:\n  wher:\n    country: KR\n",
            2,
            "unknown key 'wher'; allowed keys: description, where",
        ),
        ("s:\n  where: []\n", 2, "a condition must be a mapping"),
        ("s:\n  where:\n    country:\n      - KR\n      - [PH]\n", 5, "expected a value, got list"),
        ("s: 3\n", 1, "must be a mapping"),
    ],
)
def test_errors_name_file_line_and_choices(
    tmp_path: Path, text: str, line: int, fragment: str
) -> None:
    path = write(tmp_path / "segments.yaml", text)
    with pytest.raises((FileError, FileErrors)) as err:
        parse_segments(load_yaml(path))
    errors = err.value.errors if isinstance(err.value, FileErrors) else [err.value]
    assert any(e.line == line and fragment in e.message for e in errors), [str(e) for e in errors]
    assert all(str(path) in str(e) for e in errors)


def test_shipped_segments_file_is_valid() -> None:
    segs = load_segments(ROOT / "campaigns" / "segments.yaml")
    assert {"korean-local-governments", "prospective-members", "webinar-alumni"} <= set(segs)


def test_cli_segments(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert run_cli("init").exit_code == 0
    write(tmp_path / "c.csv", CONTACTS)
    assert run_cli("contacts", "import", "c.csv").exit_code == 0
    write(
        tmp_path / "campaigns" / "segments.yaml",
        "koreans:\n  description: Korea\n  where: {country: KR}\n",
    )
    listed = run_cli("segments", "list")
    assert listed.exit_code == 0 and "koreans" in listed.output and "3" in listed.output
    shown = run_cli("segments", "show", "koreans", "--limit", "1")
    assert shown.exit_code == 0 and "koreans: 3 contacts (first 1)" in shown.output
    missing = run_cli("segments", "show", "nobody")
    assert missing.exit_code == 1 and "no segment 'nobody' (known: koreans)" in missing.output
    write(tmp_path / "campaigns" / "segments.yaml", "koreans:\n  where: {country: [KR}\n")
    broken = run_cli("segments", "list")
    assert broken.exit_code != 0 and "segments.yaml:2: YAML syntax error" in broken.output
    assert "Traceback" not in broken.output
    exported = run_cli("contacts", "export", "--segment", "nobody")
    assert exported.exit_code != 0
