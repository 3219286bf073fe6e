"""The contact fields users write in CSV and segment files, and how each is normalised."""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from email_validator import EmailNotValidError, validate_email

from outreach import spellings
from outreach.models import CONSENTS, MEMBERSHIPS
from outreach.zones import normalise_timezone

# Columns with a place of their own on a contact; anything else is a free attribute.
KNOWN_COLUMNS = (
    "email",
    "name",
    "organisation",
    "organisation_type",
    "city",
    "country",
    "language",
    "membership",
    "tags",
    "consent",
    "consent_date",
    "consent_source",
    "consent_version",
    "topics_left",
    "timezone",
)
# How lists staff receive name the known columns, in English and Korean. Compared without
# case, spaces, "_", "-", "." or "*", so "E-mail", "e_mail" and "EMAIL *" are all email.
HEADER_ALIASES: dict[str, tuple[str, ...]] = {
    "email": (
        "e-mail",
        "email address",
        "e-mail address",
        "mail",
        "mail address",
        "이메일",
        "이메일 주소",
        "전자우편",
        "전자우편 주소",
        "전자메일",
        "메일",
        "메일 주소",
    ),
    "name": (
        "full name",
        "contact name",
        "contact person",
        "person",
        "이름",
        "성명",
        "성함",
        "담당자",
        "담당자명",
        "담당자 이름",
    ),
    "organisation": (
        "organization",
        "org",
        "organisation name",
        "organization name",
        "institution",
        "agency",
        "affiliation",
        "company",
        "기관",
        "기관명",
        "소속",
        "소속 기관",
        "단체",
        "단체명",
    ),
    "organisation_type": (
        "organization type",
        "org type",
        "type of organisation",
        "type of organization",
        "institution type",
        "기관 유형",
        "기관 구분",
        "기관 종류",
        "단체 유형",
    ),
    "city": ("municipality", "town", "city name", "도시", "도시명", "시군구"),
    "country": ("country code", "nation", "country/region", "국가", "국가명", "국가 코드", "나라"),
    "language": (
        "lang",
        "preferred language",
        "language code",
        "locale",
        "언어",
        "사용 언어",
        "선호 언어",
        "언어 코드",
    ),
    "membership": (
        "membership status",
        "membership type",
        "member status",
        "member type",
        "회원",
        "회원 구분",
        "회원 유형",
        "회원 자격",
        "회원 등급",
    ),
    "tags": ("tag", "labels", "label", "태그", "라벨"),
    "timezone": ("time zone", "tz", "zone", "시간대", "표준 시간대", "표준시간대", "타임존"),
    "consent": (
        "consent type",
        "consent basis",
        "동의",
        "수신 동의",
        "동의 유형",
        "수신 동의 유형",
    ),
    "consent_date": (
        "consent date",
        "date of consent",
        "consented on",
        "consent_at",
        "동의일",
        "동의 일자",
        "동의 날짜",
        "수신 동의일",
        "수신 동의 일자",
    ),
    "consent_source": (
        "consent source",
        "source of consent",
        "how consented",
        "동의 경로",
        "수신 동의 경로",
        "동의 출처",
    ),
    "consent_version": (
        "consent version",
        "consent text version",
        "동의 문구 버전",
        "동의서 버전",
    ),
    "topics_left": (
        "left topics",
        "topics unsubscribed",
        "수신거부 주제",
        "수신 거부 주제",
    ),
}
# What an export says about each contact's suppression. An import reads them back: "yes"
# suppresses the address (so restoring an export never mails who left), "no" lifts nothing.
STATUS_COLUMNS = ("suppressed", "suppressed_reason", "suppressed_since")
STATUS_ALIASES: dict[str, tuple[str, ...]] = {
    "suppressed": ("수신거부", "수신 거부", "발송 제외"),
    "suppressed_reason": ("suppression reason", "수신거부 사유", "제외 사유"),
    "suppressed_since": ("suppressed at", "수신거부일", "수신거부 일자", "제외일"),
}
_SPELLING = re.compile(r"[\s_\-.*]+")


def _header_key(header: str) -> str:
    return _SPELLING.sub("", unicodedata.normalize("NFKC", header).casefold())


_ALIASES = {
    _header_key(alias): column
    for column, aliases in (*HEADER_ALIASES.items(), *STATUS_ALIASES.items())
    for alias in (column, *aliases)
}


def column_for(header: str) -> str:
    """The known column a header names, else the free attribute it becomes."""
    return _ALIASES.get(_header_key(header)) or header.strip().lower()


TEXT_FIELDS = ("name", "organisation", "city")
MAX_LENGTHS = {
    "name": 300,
    "organisation": 300,
    "city": 200,
    "organisation_type": 64,
    "consent_source": 300,
    "consent_version": 64,
}


@lru_cache(maxsize=1)
def _countries() -> frozenset[str]:
    import pycountry

    return frozenset(c.alpha_2 for c in pycountry.countries)


@lru_cache(maxsize=1)
def _languages() -> frozenset[str]:
    import pycountry

    codes = set()
    for lang in pycountry.languages:
        codes.add(lang.alpha_3)
        if hasattr(lang, "alpha_2"):
            codes.add(lang.alpha_2)
    return frozenset(codes)


_BCP47 = re.compile(
    r"^(?P<lang>[A-Za-z]{2,3})(?:-(?P<script>[A-Za-z]{4}))?(?:-(?P<region>[A-Za-z]{2}|\d{3}))?"
    r"(?P<rest>(?:-[A-Za-z0-9]{5,8}|-\d[A-Za-z0-9]{3})*)$"
)


# The common case, an ASCII dot-atom local part: checked here, the domain once per domain.
_ASCII_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")


@lru_cache(maxsize=65536)
def _domain(domain: str) -> str:
    return validate_email("x@" + domain, check_deliverability=False).ascii_domain


def normalise_email(value: str) -> str:
    """`local@ascii-domain`, trimmed and lower-cased (IDNA-checked); raises ValueError with
    the reason.

    The domain is always in its ASCII form (xn--…): kim@수원.kr and kim@xn--9p4bi0g.kr are
    one mailbox, and a suppression must not be escaped by the other spelling. The local part
    is lower-cased too: in practice no mail server distinguishes Mayor@ from mayor@, and an
    unsubscribe must not be escaped by a change of case.
    """
    value = value.strip()
    if not value:
        raise ValueError("email is empty")
    local, at, domain = value.rpartition("@")
    try:
        if at and len(local) <= 64 and value.isascii() and _ASCII_LOCAL.fullmatch(local):
            return f"{local}@{_domain(domain)}".lower()
        checked = validate_email(value, check_deliverability=False)
        return f"{checked.local_part}@{checked.ascii_domain}".lower()
    except EmailNotValidError as exc:
        raise ValueError(f"invalid email {value!r}: {exc}") from None


# RFC 6531 allows any UTF-8 before the @, but only a server that offers SMTPUTF8 takes it,
# and outreach sends no SMTPUTF8 (nor the UTF-8 headers that go with it).
NEEDS_SMTPUTF8 = (
    "has non-ASCII characters before the @, which only mail servers with SMTPUTF8 accept "
    "and outreach does not send; ask for an ASCII address"
)


def mailable_email(value: str) -> str:
    """`normalise_email`, for an address that is to be mailed: refused as well when it
    needs SMTPUTF8 (see NEEDS_SMTPUTF8). Lookups keep `normalise_email`, so a contact
    stored before this check can still be shown, suppressed and forgotten."""
    address = normalise_email(value)
    if not address.isascii():
        raise ValueError(f"{address} {NEEDS_SMTPUTF8}")
    return address


def sender_address(value: str) -> str:
    """`value` (`Name <address>` or a bare address) checked as a From or Reply-To header:
    one line, a valid address, ASCII before the @; raises ValueError with the reason."""
    from email.utils import parseaddr

    if "\n" in value or "\r" in value:
        raise ValueError(f"{value!r} must be one line")
    _, address = parseaddr(value)
    try:
        checked = validate_email(address, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(f"{value!r} is not a valid address ({exc})") from None
    if not checked.local_part.isascii():
        raise ValueError(f"{value!r} {NEEDS_SMTPUTF8}")
    return value


def normalise_country(value: str) -> str:
    """An ISO 3166-1 alpha-2 code, from the code or a name as offices write it (`대한민국`,
    `한국`, `South Korea`, `KOR`: KR)."""
    code = value.strip().upper()
    if code in _countries():
        return code
    return _by_name(spellings.countries(), "country", value, "an ISO 3166-1 code")


def _by_name(words: spellings.Spellings, field: str, value: str, code: str) -> str:
    """A value written as a name (`대한민국`, `한국어`), or one line naming what is accepted."""
    named = words.get(value)
    if named is not None:
        return named
    raise ValueError(
        f"unknown {field} {value!r}: write {code} or the {field}'s name, e.g. "
        f"{words.examples}{words.suggestion(value)}"
    )


@lru_cache(maxsize=1)
def _two_letter() -> dict[str, str]:
    """ISO 639 three-letter codes that have a two-letter one (kor: ko): BCP 47 uses the
    shortest."""
    import pycountry

    return {lang.alpha_3: lang.alpha_2 for lang in pycountry.languages if hasattr(lang, "alpha_2")}


def normalise_language(value: str) -> str:
    """BCP 47 in canonical case: `ko`, `en-GB`, `zh-Hant-TW`; from a tag, or a language's
    name as offices write it (`한국어`, `영어`, `English`, `중국어(번체)`)."""
    text = value.strip().replace("_", "-")
    match = _BCP47.match(text)
    if not match or match.group("lang").lower() not in _languages():
        return _by_name(spellings.languages(), "language", value, "a BCP 47 tag")
    primary = match.group("lang").lower()
    parts = [_two_letter().get(primary, primary)]
    if match.group("script"):
        parts.append(match.group("script").title())
    if match.group("region"):
        parts.append(match.group("region").upper())
    if match.group("rest"):
        parts.append(match.group("rest").strip("-").lower())
    return "-".join(parts)


def normalise_choice(field: str, value: str) -> str:
    """One of MEMBERSHIPS or CONSENTS, from the code or a word as offices write it
    (`정회원`: full, `수신동의`: opt-in; see `spellings`)."""
    choices = {"membership": MEMBERSHIPS, "consent": CONSENTS}[field]
    text = value.strip().lower()
    if text in choices:
        return text
    words = spellings.memberships() if field == "membership" else spellings.consents()
    found = words.get(value)
    if found is not None:
        return found
    if field == "membership" and spellings.key(value) in spellings.AMBIGUOUS_MEMBERSHIP:
        raise ValueError(
            f"membership {value!r} could be full (정회원) or associate (준회원): write which"
        )
    raise ValueError(f"unknown {field} {value!r}: choose one of {words.examples}")


def normalise_organisation_type(value: str) -> str:
    text = re.sub(r"[\s-]+", "_", value.strip().lower())
    if not re.fullmatch(r"[a-z0-9_]{1,64}", text):
        raise ValueError(
            f"organisation_type {value!r} must be a short code such as local_government or ngo"
        )
    return text


def normalise_tag(value: str) -> str:
    return value.strip().lower()


@lru_cache(maxsize=4096)
def _split_tags(value: str) -> tuple[str, ...]:
    return tuple(sorted({normalise_tag(t) for t in value.split(";") if t.strip()}))


def split_tags(value: str) -> list[str]:
    # Lists repeat from row to row ("newsletter;covid19-webinar"): each is split once.
    return list(_split_tags(value))


@lru_cache(maxsize=4096)
def _categorical(field: str, value: str) -> str:
    # Few distinct values, many rows: each distinct value is checked once.
    if field == "country":
        return normalise_country(value)
    if field == "language":
        return normalise_language(value)
    if field in ("membership", "consent"):
        return normalise_choice(field, value)
    if field == "timezone":
        return normalise_timezone(value)
    return normalise_organisation_type(value)


CATEGORICAL = frozenset(
    {"country", "language", "membership", "consent", "organisation_type", "timezone"}
)


def normalise_field(field: str, value: str) -> str:
    """Normalise one known field's value; raises ValueError with a reason."""
    if field in CATEGORICAL:
        return _categorical(field, value)
    if field == "email":
        return normalise_email(value)
    if field == "country":
        return normalise_country(value)
    if field == "language":
        return normalise_language(value)
    if field in ("membership", "consent"):
        return normalise_choice(field, value)
    if field == "organisation_type":
        return normalise_organisation_type(value)
    if field == "tags":
        return normalise_tag(value)
    text = value.strip()
    limit = MAX_LENGTHS.get(field)
    if limit and len(text) > limit:
        raise ValueError(f"{field} is longer than {limit} characters")
    return text


def primary_language(tag: str) -> str:
    return tag.split("-", 1)[0]
