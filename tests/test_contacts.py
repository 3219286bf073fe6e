from pathlib import Path

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from outreach.contacts import describe, export_to_string, forget, get_contact, import_csv
from outreach.errors import FileError, NotFound
from outreach.models import ConsentRecord, Contact, ContactTag, Suppression
from outreach.suppressions import is_suppressed, suppress, unsuppress
from tests.conftest import ROOT, write

HEADER = "email,name,organisation,organisation_type,city,country,language,membership,tags,consent,region\n"
KOREAN = (
    HEADER
    + "Mayor@Suwon.Example.ORG,김수진,수원특례시,local_government,Suwon,KR,ko,full,covid19-webinar;newsletter,existing-relationship,east-asia\n"
    + " intl@makati.example.com ,Maria Santos,Makati,local_government,Makati,ph,EN,full,,opt-in,south-east-asia\n"
)


def count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(Contact)) or 0


def test_import_korean_with_bom(session: Session, tmp_path: Path) -> None:
    path = write(tmp_path / "c.csv", b"\xef\xbb\xbf" + KOREAN.encode("utf-8"))
    result = import_csv(session, path)
    assert result.written and result.created == 2 and not result.errors
    suwon = get_contact(session, "mayor@suwon.example.org")
    assert suwon.email == "mayor@suwon.example.org"  # trimmed and lower-cased
    assert suwon.name == "김수진" and suwon.organisation == "수원특례시"
    assert suwon.tag_names == ["covid19-webinar", "newsletter"]
    assert suwon.attributes == {"region": "east-asia"}
    assert suwon.consent == "existing-relationship" and suwon.consent_at is not None
    makati = get_contact(session, "intl@makati.example.com")
    assert (makati.country, makati.language) == ("PH", "en")


def test_cp949_file_gets_a_hint_and_then_imports(session: Session, tmp_path: Path) -> None:
    path = write(tmp_path / "excel.csv", KOREAN.encode("cp949"))
    with pytest.raises(FileError) as err:
        import_csv(session, path)
    assert "--encoding cp949" in str(err.value) and "excel.csv" in str(err.value)
    assert count(session) == 0
    result = import_csv(session, path, encoding="cp949")
    assert result.created == 2
    assert get_contact(session, "mayor@suwon.example.org").name == "김수진"


def test_an_encoding_error_names_its_line_and_what_the_bytes_look_like(
    session: Session, tmp_path: Path
) -> None:
    """The line of the first byte that is not UTF-8 (not line 1 because the decoder read
    ahead), UTF-8 as the user would name it, and CP949 only when the file reads as CP949."""
    korean = "email,name\na@example.org,Kim\nb@example.org,김수진\n".encode("cp949")
    with pytest.raises(FileError) as err:
        import_csv(session, write(tmp_path / "ko.csv", korean))
    assert "ko.csv:3: " in str(err.value), err.value
    assert "as UTF-8" in str(err.value) and "--encoding cp949" in str(err.value)
    # After a BOM (an Excel "CSV UTF-8" file with a CP949 part pasted in): the same line.
    with pytest.raises(FileError) as err:
        starts_bad = "email,name\na@example.org,Kim\n김수진,b@example.org\n".encode("cp949")
        import_csv(session, write(tmp_path / "bom.csv", b"\xef\xbb\xbf" + starts_bad))
    assert "bom.csv:3: " in str(err.value), err.value
    german = "email,name\na@example.org,Kim\nb@example.org,Müller\n".encode("latin-1")
    with pytest.raises(FileError) as err:
        import_csv(session, write(tmp_path / "de.csv", german))
    message = str(err.value)
    assert "de.csv:3:" in message and "cp949" not in message.lower()
    # A UTF-8 file read with the wrong --encoding: at its line, and what to do.
    utf8 = "email,name\na@example.org,Kim\nb@example.org,김수진\n".encode()
    with pytest.raises(FileError) as err:
        import_csv(session, write(tmp_path / "u.csv", utf8), encoding="euc-kr")
    assert "u.csv:3:" in str(err.value) and "leave out --encoding" in str(err.value), err.value
    assert "--encoding" in message and "UTF-8" in message
    assert count(session) == 0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "the file is empty"),
        ("name,city\nKim,Suwon\n", "no email column in the header row (found: name, city)"),
        ("email,email\na@example.org,b@example.org\n", "column 'email' appears twice"),
    ],
)
def test_file_level_errors(session: Session, tmp_path: Path, content: str, message: str) -> None:
    with pytest.raises(FileError, match=message.replace("(", r"\(").replace(")", r"\)")):
        import_csv(session, write(tmp_path / "c.csv", content))
    assert count(session) == 0


BAD = (
    "email,country,language,membership,consent\n"
    "good@example.org,KR,ko,full,opt-in\n"  # line 2
    "not-an-address,KR,ko,full,opt-in\n"  # line 3
    "other@example.org,XX,ko,full,opt-in\n"  # line 4
    "third@example.org,KR,klingon,full,opt-in\n"  # line 5
    "GOOD@example.org,KR,ko,full,opt-in\n"  # line 6: duplicate of line 2
    "good@EXAMPLE.org,KR,ko,full,opt-in\n"  # line 7: duplicate of line 2
    "fourth@example.org,KR,ko,gold,opt-in\n"  # line 8
    "fifth@example.org,KR,ko,full,maybe\n"  # line 9
    "sixth@example.org,JP,ja,,\n"  # line 10: fine
)


def test_invalid_rows_are_reported_by_line_and_nothing_is_written(
    session: Session, tmp_path: Path
) -> None:
    result = import_csv(session, write(tmp_path / "bad.csv", BAD))
    reasons = {e.line: e.reason for e in result.errors}
    assert set(reasons) == {3, 4, 5, 6, 7, 8, 9}
    assert "invalid email 'not-an-address'" in reasons[3]
    assert "unknown country 'XX'" in reasons[4]
    assert "unknown language 'klingon'" in reasons[5]
    assert reasons[7] == "duplicate of line 2 (good@example.org)"
    assert "unknown membership 'gold'" in reasons[8] and "prospective" in reasons[8]
    assert "unknown consent 'maybe'" in reasons[9]
    assert not result.written
    assert count(session) == 0


def test_skip_invalid_writes_the_valid_rows(session: Session, tmp_path: Path) -> None:
    result = import_csv(session, write(tmp_path / "bad.csv", BAD), skip_invalid=True)
    assert result.written and len(result.errors) == 7
    emails = set(session.scalars(select(Contact.email)))
    assert emails == {"good@example.org", "sixth@example.org"}


def test_dry_run_writes_nothing(session: Session, tmp_path: Path) -> None:
    result = import_csv(session, write(tmp_path / "c.csv", KOREAN), dry_run=True)
    assert result.created == 2 and not result.written
    assert count(session) == 0


def test_upsert_updates_only_the_columns_in_the_file(session: Session, tmp_path: Path) -> None:
    import_csv(session, write(tmp_path / "a.csv", KOREAN))
    first_consent = get_contact(session, "mayor@suwon.example.org").consent_at
    import_csv(session, write(tmp_path / "a.csv", KOREAN))
    assert get_contact(session, "mayor@suwon.example.org").consent_at == first_consent
    result = import_csv(
        session,
        write(
            tmp_path / "b.csv", "email,membership,tags\nmayor@suwon.example.org,associate,climate\n"
        ),
    )
    assert (result.created, result.updated) == (0, 1)
    session.expire_all()
    suwon = get_contact(session, "mayor@suwon.example.org")
    assert suwon.membership == "associate"
    assert suwon.name == "김수진"  # absent column kept
    assert suwon.attributes == {"region": "east-asia"}  # no free columns: attributes kept
    assert suwon.tag_names == ["climate"]
    assert session.scalar(select(func.count()).select_from(ContactTag)) == 1


def test_suppressed_and_forgotten_addresses_stay_suppressed(
    session: Session, tmp_path: Path
) -> None:
    path = write(tmp_path / "c.csv", KOREAN)
    import_csv(session, path)
    suppress(session, "intl@makati.example.com", "unsubscribed")
    forget(session, "mayor@suwon.example.org")
    session.commit()
    assert count(session) == 1
    row = session.scalar(select(Suppression).where(Suppression.email == "mayor@suwon.example.org"))
    assert row is not None and row.reason == "forgotten"
    result = import_csv(session, path)
    assert (result.created, result.unchanged, result.suppressed, result.forgotten) == (0, 1, 1, 1)
    assert is_suppressed(session, "mayor@suwon.example.org")
    assert is_suppressed(session, "intl@makati.example.com")


def test_a_forgotten_address_is_not_imported_again(session: Session, tmp_path: Path) -> None:
    """Forgetting erased its personal data: an import must not store it again, nor a
    consent for it. The row is counted, not refused: the file is not wrong."""
    path = write(tmp_path / "c.csv", KOREAN)
    import_csv(session, path)
    forget(session, "mayor@suwon.example.org")
    session.commit()
    dry = import_csv(session, path, dry_run=True)
    assert (dry.created, dry.unchanged, dry.forgotten, dry.errors) == (0, 1, 1, [])
    again = write(
        tmp_path / "again.csv", KOREAN.replace("Mayor@Suwon.Example.ORG", "MAYOR@suwon.example.org")
    )
    result = import_csv(session, again)
    assert result.written and not result.errors
    assert (result.rows, result.created, result.unchanged, result.forgotten) == (2, 0, 1, 1)
    session.expire_all()
    assert count(session) == 1
    assert (
        session.scalar(
            select(func.count())
            .select_from(ConsentRecord)
            .where(ConsentRecord.source == "import again.csv")
        )
        == 0
    )
    assert describe(session, "mayor@suwon.example.org")["forgotten"] is True


def test_an_address_forgotten_while_its_batch_is_written_is_not_kept(
    session: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A forget committed between an import's look-up and its write (PostgreSQL lets the
    upsert insert the address afresh once the forget has deleted it) is caught before the
    import commits."""
    import outreach.contacts as contacts

    look_up = contacts._suppressions

    def then_forgotten(conn, emails):  # type: ignore[no-untyped-def]
        found = look_up(conn, emails)
        conn.execute(
            insert(Suppression).values(email="mayor@suwon.example.org", reason="forgotten")
        )
        return found

    monkeypatch.setattr(contacts, "_suppressions", then_forgotten)
    result = import_csv(session, write(tmp_path / "c.csv", KOREAN))
    assert (result.created, result.forgotten, result.suppressed) == (1, 1, 0)
    emails = session.scalars(select(Contact.email)).all()
    assert emails == ["intl@makati.example.com"]
    assert session.scalar(select(func.count()).select_from(ConsentRecord)) == 1


def test_suppression_precedence_and_lifting(session: Session) -> None:
    suppress(session, "a@example.org", "bounced")
    assert suppress(session, "a@example.org", "unsubscribed").reason == "bounced"
    with pytest.raises(Exception, match="suppressed as bounced, which stays"):
        unsuppress(session, "a@example.org", only_reason="unsubscribed")
    unsuppress(session, "a@example.org")
    assert not is_suppressed(session, "a@example.org")
    with pytest.raises(NotFound):
        unsuppress(session, "a@example.org")


def test_export_round_trips(session: Session, tmp_path: Path) -> None:
    import_csv(session, write(tmp_path / "c.csv", KOREAN))
    exported = export_to_string(session)
    assert exported.splitlines()[0].endswith(",region")
    assert "김수진" in exported
    stamps = dict(session.execute(select(Contact.email, Contact.updated_at)).all())
    result = import_csv(session, write(tmp_path / "again.csv", exported))
    assert (result.created, result.updated, result.unchanged, result.errors) == (0, 0, 2, [])
    session.expire_all()
    assert dict(session.execute(select(Contact.email, Contact.updated_at)).all()) == stamps
    assert export_to_string(session) == exported


def updated_at(session: Session) -> dict[str, object]:
    session.expire_all()
    return dict(session.execute(select(Contact.email, Contact.updated_at)).all())


def test_rows_equal_to_what_is_stored_are_unchanged_and_not_written(
    session: Session, tmp_path: Path
) -> None:
    """Unchanged is the stored value after the import's own rules: the same consent keeps its
    date and source, a column the file lacks is not compared, tags are compared as a set."""
    path = write(tmp_path / "c.csv", KOREAN)
    import_csv(session, path)
    before = updated_at(session)
    same = import_csv(session, path)
    assert (same.created, same.updated, same.unchanged, same.written) == (0, 0, 2, True)
    assert updated_at(session) == before
    dry = import_csv(session, path, dry_run=True)
    assert (dry.created, dry.updated, dry.unchanged) == (0, 0, 2)
    # Fewer columns, tags in another order and case, another source file: still the same.
    fewer = "email,tags,consent\nmayor@suwon.example.org,Newsletter; covid19-webinar,existing-relationship\n"
    result = import_csv(session, write(tmp_path / "fewer.csv", fewer))
    assert (result.updated, result.unchanged) == (0, 1)
    assert updated_at(session) == before
    for changed in (
        "email,tags\nmayor@suwon.example.org,newsletter\n",  # a tag less
        "email,region\nmayor@suwon.example.org,asia\n",  # an attribute
        "email,consent\nmayor@suwon.example.org,opt-in\n",  # another consent
        "email,consent,consent_date\nmayor@suwon.example.org,opt-in,2020-01-01\n",  # its date
        "email,city\nmayor@suwon.example.org,\n",  # an empty cell clears
    ):
        result = import_csv(session, write(tmp_path / "changed.csv", changed))
        assert (result.updated, result.unchanged) == (1, 0), changed
        now = updated_at(session)
        assert now["mayor@suwon.example.org"] > before["mayor@suwon.example.org"], changed
        assert now["intl@makati.example.com"] == before["intl@makati.example.com"]
        before = now
        again = import_csv(session, write(tmp_path / "changed.csv", changed))
        assert (again.updated, again.unchanged) == (0, 1), changed


def test_example_contacts_import_cleanly(session: Session) -> None:
    result = import_csv(session, ROOT / "examples" / "contacts.csv")
    assert result.written and not result.errors and result.created >= 30
    emails = session.scalars(select(Contact.email)).all()
    assert all(e.endswith((".example.org", ".example.com")) for e in emails)


def test_a_large_file_imports_in_batches(session: Session, tmp_path: Path) -> None:
    rows = "".join(f"user{i}@city{i % 97}.example.org,KR,ko,t{i % 5};all\n" for i in range(12_000))
    path = write(tmp_path / "big.csv", "email,country,language,tags\n" + rows)
    result = import_csv(session, path)
    assert result.created == 12_000 and not result.errors
    assert count(session) == 12_000
    assert session.scalar(select(func.count()).select_from(ContactTag)) == 24_000


def test_cli_import_reports_lines_and_exit_status(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert run_cli("init").exit_code == 0
    write(tmp_path / "bad.csv", BAD)
    result = run_cli("contacts", "import", "bad.csv")
    assert result.exit_code == 1
    assert "bad.csv:3: invalid email" in result.output
    assert "nothing written: 7 invalid rows" in result.output
    assert "Traceback" not in result.output
    ok = run_cli("contacts", "import", "bad.csv", "--skip-invalid")
    assert ok.exit_code == 0, ok.output
    assert "imported. 9 rows: 2 new, 0 updated, 0 unchanged, 7 invalid" in ok.output
    same = run_cli("contacts", "import", "bad.csv", "--skip-invalid")
    assert "imported. 9 rows: 0 new, 0 updated, 2 unchanged, 7 invalid" in same.output
    show = run_cli("contacts", "show", "sixth@example.org")
    assert show.exit_code == 0 and "JP" in show.output
    missing = run_cli("contacts", "show", "nobody@example.org")
    assert missing.exit_code == 1 and "no contact nobody@example.org" in missing.output
    cp949 = write(tmp_path / "k.csv", KOREAN.encode("cp949"))
    result = run_cli("contacts", "import", str(cp949))
    assert result.exit_code == 1 and "--encoding cp949" in result.output
    assert run_cli("contacts", "import", str(cp949), "--encoding", "cp949").exit_code == 0
    gone = run_cli("contacts", "forget", "sixth@example.org", "--yes")
    assert gone.exit_code == 0
    listed = run_cli("suppressions", "list")
    assert "sixth@example.org" in listed.output and "forgotten" in listed.output
    out = run_cli("contacts", "export", "-o", "out.csv")
    assert out.exit_code == 0 and "김수진" in (tmp_path / "out.csv").read_text(encoding="utf-8")


def test_skip_invalid_exits_by_one_rule_dry_run_or_not(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A dry run predicts the import's exit status: invalid rows fail it unless
    --skip-invalid, which reports and skips them (exit 0) either way."""
    assert run_cli("init").exit_code == 0
    write(tmp_path / "bad.csv", BAD)
    for extra in ((), ("--dry-run",)):
        stopped = run_cli("contacts", "import", "bad.csv", *extra)
        assert stopped.exit_code == 1, (extra, stopped.output)
        skipped = run_cli("contacts", "import", "bad.csv", "--skip-invalid", *extra)
        assert skipped.exit_code == 0, (extra, skipped.output)
        assert "bad.csv:3: invalid email" in skipped.output
    as_json = run_cli("contacts", "import", "bad.csv", "--dry-run", "--json")
    assert as_json.exit_code == 1 and '"invalid": 7' in as_json.output


def test_a_row_with_several_bad_values_reports_all_of_them(
    session: Session, tmp_path: Path
) -> None:
    path = write(
        tmp_path / "c.csv",
        "email,name,country,language,membership,consent,consent_date,organisation_type\n"
        f"not-an-address,{'김' * 301},XX,klingon,gold,maybe,yesterday,local government!\n"
        "fine@example.org,Kim,KR,ko,full,opt-in,2026-03-31,ngo\n",
    )
    result = import_csv(session, path)
    [error] = result.errors
    assert error.line == 2
    for part in (
        "invalid email 'not-an-address'",
        "name is longer than 300 characters",
        "unknown country 'XX'",
        "unknown language 'klingon'",
        "unknown membership 'gold'",
        "unknown consent 'maybe'",
        "consent_date 'yesterday' is not a date",
        "organisation_type 'local government!'",
    ):
        assert part in error.reason, part
    assert "\n" not in error.reason


def test_cli_reports_every_bad_value_of_a_row_on_its_line(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert run_cli("init").exit_code == 0
    write(tmp_path / "c.csv", "email,country,language\nkim@example.org,XX,klingon\n")
    result = run_cli("contacts", "import", "c.csv")
    assert result.exit_code == 1
    line = next(x for x in result.output.splitlines() if x.startswith("c.csv:2:"))
    assert "unknown country 'XX'" in line and "unknown language 'klingon'" in line


ROW = (
    "mayor@suwon.example.org,김수진,수원특례시,local_government,Suwon,KR,ko,full,"
    "newsletter;climate,opt-in,2026-03-31,east-asia\n"
)


@pytest.mark.parametrize(
    "header",
    [
        "E-mail,Name,Organization,Organization Type,City,Country,Language,Membership,Tags,"
        "Consent,Consent Date,Region",
        "Email Address,Full Name,Institution,Org Type,Municipality,Country Code,"
        "Preferred Language,Membership Status,Labels,Consent Type,Date of Consent,region",
        "EMAIL,Contact Name,organisation_name,Type of Organisation,Town,Nation,Lang,"
        "Member Type,Tag,consent basis,consent_at,REGION",
        "e_mail,contact person,Agency,institution type,City Name,Country/Region,Locale,"
        "member status,label,Consent,Consent-Date,Region",
        "이메일,이름,기관명,기관 유형,도시,국가,언어,회원 구분,태그,수신 동의,동의일,region",
        "이메일 주소,성명,소속,기관유형,도시명,국가 코드,사용 언어,회원유형,태그,동의,동의 일자,region",
        "전자우편,담당자,소속 기관,기관 구분,시군구,나라,선호 언어,회원,라벨,동의 유형,동의 날짜,region",
    ],
    ids=["en-1", "en-2", "en-3", "en-4", "ko-1", "ko-2", "ko-3"],
)
def test_headers_in_english_and_korean(session: Session, tmp_path: Path, header: str) -> None:
    result = import_csv(session, write(tmp_path / "c.csv", header + "\n" + ROW))
    assert (result.created, result.errors) == (1, []), result.errors
    assert result.attribute_columns == ["region"]
    c = get_contact(session, "mayor@suwon.example.org")
    assert (c.name, c.organisation, c.organisation_type, c.city) == (
        "김수진",
        "수원특례시",
        "local_government",
        "Suwon",
    )
    assert (c.country, c.language, c.membership, c.consent) == ("KR", "ko", "full", "opt-in")
    assert c.consent_at is not None and c.consent_at.date().isoformat() == "2026-03-31"
    assert c.tag_names == ["climate", "newsletter"]
    assert c.attributes == {"region": "east-asia"}


def test_every_alias_names_one_known_column() -> None:
    from outreach.fields import HEADER_ALIASES, KNOWN_COLUMNS, column_for

    assert set(HEADER_ALIASES) == set(KNOWN_COLUMNS)
    for column, aliases in HEADER_ALIASES.items():
        assert column_for(column) == column
        assert column_for(f" {column.upper()} ") == column
        for alias in aliases:
            assert column_for(alias) == column, alias
            assert column_for(alias.upper().replace(" ", "_")) == column, alias
    for named in ("E-mail", "Email Address", "이메일", "이름", "기관명", "국가", "언어"):
        assert column_for(named) in KNOWN_COLUMNS
    assert column_for("Region ") == "region"  # anything else is a free attribute


def test_map_names_the_columns_no_alias_knows(session: Session, tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.csv",
        "Mail Adr,Gemeinde,Kontakt,Bemerkung,Land\nkim@suwon.example.org,Suwon,김수진,VIP,KR\n",
    )
    with pytest.raises(FileError) as err:
        import_csv(session, path)
    assert "no email column in the header row (found: mail adr, gemeinde" in str(err.value)
    assert "--map 'Mail Adr=email'" in str(err.value)
    result = import_csv(
        session,
        path,
        mapping={"mail adr": "email", "Gemeinde": "city", "KONTAKT": "이름", "Bemerkung": "note"},
    )
    assert (result.created, result.errors) == (1, [])
    c = get_contact(session, "kim@suwon.example.org")
    assert (c.city, c.name) == ("Suwon", "김수진")
    assert c.attributes == {"note": "VIP", "land": "KR"}


@pytest.mark.parametrize(
    ("header", "mapping", "message"),
    [
        ("Email,E-mail\n", {}, "columns 'Email' and 'E-mail' both mean email"),
        ("Email,Mail Adr\n", {"Mail Adr": "email"}, "columns 'Email' and 'Mail Adr' both mean"),
        ("Email,Name\n", {"Nom": "name"}, "--map Nom=name: no column 'Nom' in the header row"),
        ("Email,Name\n", {"Name": ""}, "--map Name=: say which column"),
    ],
)
def test_header_problems_are_one_line(
    session: Session, tmp_path: Path, header: str, mapping: dict[str, str], message: str
) -> None:
    with pytest.raises(FileError) as err:
        import_csv(
            session, write(tmp_path / "c.csv", header + "a@example.org,x\n"), mapping=mapping
        )
    assert message in str(err.value) and str(err.value).startswith(str(tmp_path / "c.csv"))
    assert "\n" not in str(err.value)


def test_cli_map(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert run_cli("init").exit_code == 0
    write(tmp_path / "c.csv", "Mail Adr,Ort\nkim@suwon.example.org,Suwon\n")
    refused = run_cli("contacts", "import", "c.csv")
    assert refused.exit_code == 1 and "--map" in refused.output
    ok = run_cli("contacts", "import", "c.csv", "--map", "Mail Adr=email", "--map", "Ort=city")
    assert ok.exit_code == 0, ok.output
    shown = run_cli("contacts", "show", "kim@suwon.example.org", "--json")
    assert '"city": "Suwon"' in shown.output
    bad = run_cli("contacts", "import", "c.csv", "--map", "Mail Adr")
    assert bad.exit_code != 0 and "SRC=DEST" in bad.output and "Traceback" not in bad.output


def test_control_characters_are_refused_with_the_row(session: Session, tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.csv",
        "email,name,note\n"
        "ok@example.org,Kim,fine\tto have a tab\n"
        "esc@example.org,\x1b[31mred\x1b[0m,x\n"
        "bell@example.org,Lee,ring\x07\n"
        "csi@example.org,Park,\u009b2J\n",
    )
    result = import_csv(session, path)
    assert [(e.line, e.reason) for e in result.errors] == [
        (3, "name contains a control character (U+001B); remove it"),
        (4, "note contains a control character (U+0007); remove it"),
        (5, "note contains a control character (U+009B); remove it"),
    ]
    assert count(session) == 0


def test_rows_shorter_than_the_header_have_empty_cells(session: Session, tmp_path: Path) -> None:
    """Excel and .xlsx files leave trailing empty cells out; such a row used to crash."""
    path = write(
        tmp_path / "c.csv", "email,name,city\na@example.org,Kim\nb@example.org,Lee,Seoul\n"
    )
    result = import_csv(session, path)
    assert (result.created, result.errors) == (2, [])
    a, b = get_contact(session, "a@example.org"), get_contact(session, "b@example.org")
    assert (a.name, a.city, b.name, b.city) == ("Kim", None, "Lee", "Seoul")


def test_empty_cells_past_the_header_carry_nothing(session: Session, tmp_path: Path) -> None:
    """Excel writes a trailing comma after the last cell; an empty extra cell is no problem."""
    path = write(
        tmp_path / "c.csv",
        "email,name,country\na@example.org,Kim,KR,\nb@example.org,Lee,JP, ,\n",
    )
    result = import_csv(session, path)
    assert (result.created, result.errors) == (2, [])
    a, b = get_contact(session, "a@example.org"), get_contact(session, "b@example.org")
    assert (a.name, a.country, b.name, b.country) == ("Kim", "KR", "Lee", "JP")
    assert a.attributes == {} and b.attributes == {}


def test_a_row_with_a_cell_too_many_says_only_that(session: Session, tmp_path: Path) -> None:
    """Its address is there: the extra cell (often a comma that needed quotes) is the problem."""
    path = write(
        tmp_path / "c.csv",
        "email,name,country\nc@example.org,Park, Jieun,KR\nd@example.org,Kim,KR\n",
    )
    result = import_csv(session, path)
    assert [(e.line, e.reason) for e in result.errors] == [
        (2, "4 cells but the header has 3 columns")
    ]
    assert count(session) == 0
