"""Values as offices write them: country, language, membership and consent in Korean and
English words beside the codes outreach stores (`대한민국` and `South Korea` are KR, `한국어`
and `Korean` are ko, `정회원` is full, `수신동의` is opt-in).

Country and language names come from pycountry (ISO 3166-1 and ISO 639 names, in English
and in pycountry's Korean translation), plus the names Korean offices use that ISO does
not (`한국`, `호주`, `대만`, `라오스`…). Words are compared without case, spaces or
punctuation, so `Korea, Republic of`, `korea republic of` and `대한 민국` are one spelling.
"""

from __future__ import annotations

import difflib
import gettext
import re
import unicodedata
from functools import lru_cache

# Spaces, punctuation and brackets do not make another word.
_NOISE = re.compile(r"[\s.,'’()\[\]_\-·/]+")


def key(word: str) -> str:
    return _NOISE.sub("", unicodedata.normalize("NFKC", word).casefold())


# What Korean offices call Asia-Pacific countries (and a few partners') where ISO's Korean
# name differs or is long: "호주" not "오스트레일리아", "대만" not "타이완, 중국령".
KOREAN_COUNTRY_NAMES: dict[str, tuple[str, ...]] = {
    "KR": ("대한민국", "한국", "남한", "대한민국(한국)"),
    "KP": ("북한", "조선민주주의인민공화국"),
    "JP": ("일본",),
    "CN": ("중국", "중화인민공화국"),
    "TW": ("대만", "타이완", "중화민국"),
    "HK": ("홍콩",),
    "MO": ("마카오",),
    "MN": ("몽골",),
    "VN": ("베트남",),
    "LA": ("라오스",),
    "KH": ("캄보디아",),
    "TH": ("태국", "타이"),
    "MM": ("미얀마", "버마"),
    "MY": ("말레이시아",),
    "SG": ("싱가포르", "싱가폴"),
    "ID": ("인도네시아",),
    "PH": ("필리핀",),
    "BN": ("브루나이",),
    "TL": ("동티모르", "티모르레스테"),
    "IN": ("인도",),
    "PK": ("파키스탄",),
    "BD": ("방글라데시",),
    "LK": ("스리랑카",),
    "NP": ("네팔",),
    "BT": ("부탄",),
    "MV": ("몰디브",),
    "AF": ("아프가니스탄",),
    "IR": ("이란",),
    "KZ": ("카자흐스탄",),
    "KG": ("키르기스스탄", "키르기스"),
    "UZ": ("우즈베키스탄",),
    "TJ": ("타지키스탄",),
    "TM": ("투르크메니스탄",),
    "AU": ("호주", "오스트레일리아"),
    "NZ": ("뉴질랜드",),
    "PG": ("파푸아뉴기니",),
    "FJ": ("피지",),
    "SB": ("솔로몬제도",),
    "VU": ("바누아투",),
    "WS": ("사모아",),
    "TO": ("통가",),
    "KI": ("키리바시",),
    "TV": ("투발루",),
    "NR": ("나우루",),
    "PW": ("팔라우",),
    "MH": ("마셜제도",),
    "FM": ("미크로네시아",),
    "RU": ("러시아",),
    "TR": ("튀르키예", "터키"),
    "AE": ("아랍에미리트", "UAE"),
    "US": ("미국",),
    "GB": ("영국",),
    "DE": ("독일",),
    "FR": ("프랑스",),
    "CA": ("캐나다",),
}
# English names lists use that ISO spells otherwise.
ENGLISH_COUNTRY_NAMES: dict[str, tuple[str, ...]] = {
    "KR": ("Korea", "Republic of Korea", "ROK", "Korea (South)"),
    "KP": ("Korea (North)", "DPRK"),
    "RU": ("Russia",),
    "TW": ("Chinese Taipei",),
    "GB": ("UK", "Great Britain", "Britain"),
    "US": ("USA", "United States of America"),
    "AE": ("United Arab Emirates",),
    "TR": ("Turkey",),
    "MM": ("Burma",),
    "TL": ("East Timor",),
    "BN": ("Brunei",),
    "FM": ("Micronesia",),
}

# Language names a Korean office writes, beside ISO 639's (English and Korean) names.
KOREAN_LANGUAGE_NAMES: dict[str, tuple[str, ...]] = {
    "ko": ("한국어", "한국말", "한글", "국문"),
    "en": ("영어", "영문"),
    "zh": ("중국어", "중문", "중국말"),
    "zh-Hans": (
        "중국어(간체)",
        "간체",
        "간체자",
        "간체 중국어",
        "Simplified Chinese",
        "Chinese (Simplified)",
    ),
    "zh-Hant": (
        "중국어(번체)",
        "번체",
        "번체자",
        "번체 중국어",
        "Traditional Chinese",
        "Chinese (Traditional)",
    ),
    "ja": ("일본어", "일어", "일문"),
    "vi": ("베트남어",),
    "th": ("태국어", "타이어"),
    "id": ("인도네시아어",),
    "ms": ("말레이어", "말레이시아어", "Malay", "Bahasa Melayu", "Bahasa Malaysia"),
    "fil": ("필리핀어", "Filipino", "Pilipino"),
    "tl": ("타갈로그어",),
    "km": ("크메르어", "캄보디아어", "Khmer"),
    "lo": ("라오어", "라오스어"),
    "my": ("미얀마어", "버마어"),
    "mn": ("몽골어",),
    "hi": ("힌디어", "힌두어"),
    "bn": ("벵골어", "방글라데시어"),
    "ne": ("네팔어", "Nepali"),
    "si": ("싱할라어", "스리랑카어"),
    "ta": ("타밀어",),
    "ur": ("우르두어",),
    "fa": ("페르시아어", "Persian", "Farsi"),
    "ru": ("러시아어",),
    "fr": ("프랑스어", "불어"),
    "de": ("독일어",),
    "es": ("스페인어",),
    "ar": ("아랍어",),
    "pt": ("포르투갈어",),
}

# Korean offices' membership words, by what they mean at CityNet: 정회원 is a Full Member (a
# local government), 준회원 an Associate Member (an NGO, institute or association),
# 협력기관 a partner organisation, 예비회원 a city approached to join, 비회원 none. A bare
# 회원 ("member") is refused: it could be full or associate.
MEMBERSHIP_WORDS: dict[str, tuple[str, ...]] = {
    "full": ("정회원", "Full Member", "Full Membership", "Full Members", "Regular Member"),
    "associate": ("준회원", "Associate Member", "Associate Membership", "Associate Members"),
    "prospective": (
        "예비회원",
        "가입예정",
        "가입 예정",
        "가입검토",
        "가입 검토",
        "잠재회원",
        "Prospective Member",
        "Prospect",
        "Candidate",
    ),
    "partner": (
        "협력기관",
        "파트너",
        "파트너기관",
        "협력파트너",
        "제휴기관",
        "Partner",
        "Partner Organisation",
        "Partner Organization",
        "Partners",
    ),
    "none": ("비회원", "해당없음", "없음", "탈퇴", "Non-member", "Non member", "Nonmember", "No"),
}

# "Member" alone: a Full or an Associate Member; the office has to say which.
AMBIGUOUS_MEMBERSHIP = frozenset(key(word) for word in ("회원", "회원기관", "Member", "Members"))

# Consent words: what the person agreed to, as Korean offices record it. 동의/수신동의 is a
# consent given (opt-in); 기존 관계 a relationship that allows mail; 공개 연락처 an address
# found on a public page (never sent advertising, Network Act Art. 50-2).
CONSENT_WORDS: dict[str, tuple[str, ...]] = {
    "opt-in": (
        "동의",
        "동의함",
        "수신동의",
        "수신 동의",
        "메일 수신 동의",
        "이메일 수신 동의",
        "Opt in",
        "Opted in",
        "Subscribed",
        "Consented",
    ),
    "existing-relationship": (
        "기존 관계",
        "기존관계",
        "기존 거래 관계",
        "거래 관계",
        "기존 회원",
        "Existing Relationship",
        "Existing",
    ),
    "public-contact": (
        "공개 연락처",
        "공개연락처",
        "공개된 연락처",
        "홈페이지 공개",
        "공개 정보",
        "Public Contact",
        "Public",
    ),
}


class Spellings:
    """One field's accepted words: each word's code, and what to suggest for others."""

    def __init__(self, examples: str) -> None:
        self.words: dict[str, str] = {}  # key(word) -> code
        self.shown: dict[str, str] = {}  # key(word) -> the word as first written
        self.examples = examples

    def add(self, code: str, names: tuple[str, ...] | list[str]) -> None:
        for name in names:
            if name and key(name) not in self.words:
                self.words[key(name)] = code
                self.shown[key(name)] = name

    def get(self, word: str) -> str | None:
        return self.words.get(key(word))

    def suggestion(self, word: str) -> str:
        """`; did you mean 'Korea' (KR)?` for a word near an accepted one, else ''."""
        found = difflib.get_close_matches(key(word), list(self.words), n=1, cutoff=0.75)
        if not found:
            return ""
        return f"; did you mean {self.shown[found[0]]!r} ({self.words[found[0]]})?"


@lru_cache(maxsize=1)
def countries() -> Spellings:
    import pycountry

    korean = gettext.translation("iso3166-1", pycountry.LOCALES_DIR, languages=["ko"])
    spellings = Spellings("KR, 대한민국, 한국, Korea, 일본, Japan")
    for code, names in (*KOREAN_COUNTRY_NAMES.items(), *ENGLISH_COUNTRY_NAMES.items()):
        spellings.add(code, names)
    for country in pycountry.countries:
        english = [
            country.name,
            getattr(country, "common_name", ""),
            getattr(country, "official_name", ""),
        ]
        spellings.add(country.alpha_2, [country.alpha_3, *english])
        spellings.add(country.alpha_2, [korean.gettext(name) for name in english if name])
    return spellings


@lru_cache(maxsize=1)
def languages() -> Spellings:
    import pycountry

    korean = gettext.translation("iso639-3", pycountry.LOCALES_DIR, languages=["ko"])
    spellings = Spellings("ko, en, 한국어, 영어, 중국어, Korean, English")
    for code, names in KOREAN_LANGUAGE_NAMES.items():
        spellings.add(code, names)
    # Names only for languages with a two-letter code: the ones lists are written in.
    for language in pycountry.languages:
        two = getattr(language, "alpha_2", None)
        if two:
            spellings.add(two, [language.name, korean.gettext(language.name)])
    return spellings


def _choices(table: dict[str, tuple[str, ...]]) -> Spellings:
    spellings = Spellings(", ".join(f"{code} ({names[0]})" for code, names in table.items()))
    for code, names in table.items():
        spellings.add(code, [code, *names])
    return spellings


@lru_cache(maxsize=1)
def memberships() -> Spellings:
    return _choices(MEMBERSHIP_WORDS)


@lru_cache(maxsize=1)
def consents() -> Spellings:
    return _choices(CONSENT_WORDS)
