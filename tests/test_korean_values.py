"""Values as Korean offices write them: countries, languages, membership and consent in
Korean and English words beside the codes; stored and exported as the codes."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from outreach.contacts import export_to_string, get_contact, import_csv
from outreach.fields import normalise_field
from outreach.spellings import KOREAN_COUNTRY_NAMES
from tests.conftest import write

OFFICE_FILE = (
    "이메일,이름,기관명,국가,언어,회원 구분,수신 동의\n"
    "mayor@suwon.example.org,김수진,수원특례시,대한민국,한국어,정회원,동의\n"
    "intl@busan.example.org,박지훈,부산광역시,한국,영어,준회원,수신동의\n"
    "city@yokohama.example.jp,Sato Haruka,Yokohama,일본,일본어,비회원,기존 관계\n"
    "info@penang.example.my,Lim Wei,Penang Island City Council,말레이시아,English,예비회원,공개 연락처\n"
    "office@taipei.example.tw,Chen Mei,Taipei,대만,중국어(번체),협력기관,기존관계\n"
    "team@sydney.example.au,Jack Lee,Sydney,호주,Korean,Full Member,Opt-in\n"
)


@pytest.mark.parametrize("encoding", ["utf-8", "cp949"])
def test_a_korean_office_file_imports_and_exports_the_codes(
    session: Session, tmp_path: Path, encoding: str
) -> None:
    path = write(tmp_path / "office.csv", OFFICE_FILE.encode(encoding))
    result = import_csv(session, path, encoding=encoding)
    assert not result.errors, result.errors
    assert result.created == 6
    suwon = get_contact(session, "mayor@suwon.example.org")
    assert (suwon.country, suwon.language, suwon.membership, suwon.consent) == (
        "KR",
        "ko",
        "full",
        "opt-in",
    )
    expected = {
        "intl@busan.example.org": ("KR", "en", "associate", "opt-in"),
        "city@yokohama.example.jp": ("JP", "ja", "none", "existing-relationship"),
        "info@penang.example.my": ("MY", "en", "prospective", "public-contact"),
        "office@taipei.example.tw": ("TW", "zh-Hant", "partner", "existing-relationship"),
        "team@sydney.example.au": ("AU", "ko", "full", "opt-in"),
    }
    for email, codes in expected.items():
        contact = get_contact(session, email)
        assert (contact.country, contact.language, contact.membership, contact.consent) == codes
    exported = list(csv.DictReader(io.StringIO(export_to_string(session))))
    assert {row["country"] for row in exported} == {"KR", "JP", "MY", "TW", "AU"}
    assert {row["membership"] for row in exported} <= {
        "full",
        "associate",
        "prospective",
        "partner",
        "none",
    }
    # The export is the import format: read back, nothing changes.
    again = write(tmp_path / "export.csv", export_to_string(session))
    assert import_csv(session, again).unchanged == 6


@pytest.mark.parametrize(
    ("field", "written", "code"),
    [
        ("country", "대한민국", "KR"),
        ("country", "한국", "KR"),
        ("country", "대한 민국", "KR"),
        ("country", "South Korea", "KR"),
        ("country", "Korea, Republic of", "KR"),
        ("country", "Republic of Korea", "KR"),
        ("country", "KOR", "KR"),
        ("country", "kr", "KR"),
        ("country", "북한", "KP"),
        ("country", "일본", "JP"),
        ("country", "중국", "CN"),
        ("country", "말레이시아", "MY"),
        ("country", "Malaysia", "MY"),
        ("country", "베트남", "VN"),
        ("country", "Vietnam", "VN"),
        ("country", "라오스", "LA"),
        ("country", "필리핀", "PH"),
        ("country", "인도네시아", "ID"),
        ("country", "태국", "TH"),
        ("country", "캄보디아", "KH"),
        ("country", "미얀마", "MM"),
        ("country", "몽골", "MN"),
        ("country", "스리랑카", "LK"),
        ("country", "방글라데시", "BD"),
        ("country", "네팔", "NP"),
        ("country", "인도", "IN"),
        ("country", "파키스탄", "PK"),
        ("country", "호주", "AU"),
        ("country", "뉴질랜드", "NZ"),
        ("country", "대만", "TW"),
        ("country", "홍콩", "HK"),
        ("country", "싱가포르", "SG"),
        ("country", "이란", "IR"),
        ("country", "몰디브", "MV"),
        ("language", "한국어", "ko"),
        ("language", "영어", "en"),
        ("language", "중국어", "zh"),
        ("language", "중국어(간체)", "zh-Hans"),
        ("language", "번체", "zh-Hant"),
        ("language", "일본어", "ja"),
        ("language", "베트남어", "vi"),
        ("language", "English", "en"),
        ("language", "Korean", "ko"),
        ("language", "korean", "ko"),
        ("language", "KOR", "ko"),
        ("language", "ko-kr", "ko-KR"),
        ("membership", "정회원", "full"),
        ("membership", "준회원", "associate"),
        ("membership", "비회원", "none"),
        ("membership", "예비회원", "prospective"),
        ("membership", "협력기관", "partner"),
        ("membership", "Associate Member", "associate"),
        ("membership", "FULL", "full"),
        ("consent", "동의", "opt-in"),
        ("consent", "수신동의", "opt-in"),
        ("consent", "수신 동의", "opt-in"),
        ("consent", "기존 관계", "existing-relationship"),
        ("consent", "공개 연락처", "public-contact"),
        ("consent", "opt in", "opt-in"),
        ("consent", "Existing Relationship", "existing-relationship"),
    ],
)
def test_words_offices_write_are_their_codes(field: str, written: str, code: str) -> None:
    assert normalise_field(field, written) == code


def test_every_korean_country_name_is_its_own_country() -> None:
    """No Korean name of the careful list is taken by another country's spelling."""
    for code, names in KOREAN_COUNTRY_NAMES.items():
        for name in names:
            assert normalise_field("country", name) == code, name


@pytest.mark.parametrize(
    ("field", "written", "says"),
    [
        ("country", "Koreaa", "did you mean 'Korea' (KR)?"),
        ("country", "Atlantis", "e.g. KR, 대한민국, 한국, Korea, 일본, Japan"),
        ("language", "klingon", "e.g. ko, en, 한국어, 영어, 중국어, Korean, English"),
        ("membership", "회원", "could be full (정회원) or associate (준회원)"),
        ("membership", "gold", "full (정회원), associate (준회원), prospective (예비회원)"),
        ("consent", "maybe", "opt-in (동의), existing-relationship (기존 관계)"),
    ],
)
def test_unknown_values_suggest_the_accepted_spellings(field: str, written: str, says: str) -> None:
    with pytest.raises(ValueError) as err:
        normalise_field(field, written)
    assert says in str(err.value)
    assert repr(written) in str(err.value)


def test_cli_line_for_an_unknown_korean_value(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert run_cli("init").exit_code == 0
    write(tmp_path / "c.csv", "이메일,국가,회원 구분\nkim@example.org,대한민굮,회원\n")
    result = run_cli("contacts", "import", "c.csv")
    assert result.exit_code == 1
    assert "c.csv:2: unknown country '대한민굮'" in result.output
    assert "did you mean '대한민국' (KR)?" in result.output
    assert "could be full (정회원) or associate (준회원)" in result.output
    assert "Traceback" not in result.output
