"""Contacts' time zones: the IANA name a contact's `timezone` holds, as offices write it
(`Asia/Seoul`, `asia/seoul`, `Seoul`, `서울`, `KST`), and the zone a contact is in when it holds
none: their country's, when the country keeps one time (KR, MY, LK, IN, JP, CN…), else
OUTREACH_TIMEZONE.

Which countries keep one time comes from the IANA database's own country table (zone.tab,
shipped with the `tzdata` package): a country whose zones all keep the same offsets the
whole year is one zone (Malaysia's Kuala Lumpur and Kuching both keep +08:00), the others
(AU, ID, US, RU…) need a contact's own `timezone`.
"""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from functools import lru_cache
from zoneinfo import TZPATH, ZoneInfo, ZoneInfoNotFoundError, available_timezones

from outreach.spellings import key

# Countries that keep one official time although the zone table lists several zones: China
# keeps Beijing time nationwide (Asia/Urumqi is the unofficial Xinjiang time).
NATIONAL_ZONES = {"CN": "Asia/Shanghai"}

# Names people write for the zones of the region and of the usual partners, beside the IANA
# names themselves: cities in English and Korean, and the abbreviations that name one zone.
SPELLINGS: dict[str, tuple[str, ...]] = {
    "Asia/Seoul": ("Seoul", "서울", "KST", "Korea", "한국", "한국 표준시", "한국시간"),
    "Asia/Tokyo": ("Tokyo", "도쿄", "JST", "Japan", "일본", "Yokohama", "요코하마"),
    "Asia/Shanghai": ("Beijing", "베이징", "Shanghai", "상하이", "China", "중국"),
    "Asia/Hong_Kong": ("Hong Kong", "홍콩"),
    "Asia/Taipei": ("Taipei", "타이베이"),
    "Asia/Manila": ("Manila", "마닐라", "Makati", "마카티"),
    "Asia/Singapore": ("Singapore", "싱가포르", "싱가폴"),
    "Asia/Kuala_Lumpur": ("Kuala Lumpur", "쿠알라룸푸르", "Malaysia", "말레이시아"),
    "Asia/Bangkok": ("Bangkok", "방콕", "Thailand", "태국"),
    "Asia/Ho_Chi_Minh": ("Ho Chi Minh City", "Ho Chi Minh", "Saigon", "호찌민", "호치민"),
    "Asia/Jakarta": ("Jakarta", "자카르타", "WIB"),
    "Asia/Makassar": ("Makassar", "마카사르", "Bali", "발리", "WITA"),
    "Asia/Jayapura": ("Jayapura", "자야푸라", "WIT"),
    "Asia/Kolkata": (
        "Kolkata",
        "콜카타",
        "New Delhi",
        "Delhi",
        "뉴델리",
        "델리",
        "Mumbai",
        "뭄바이",
        "India",
        "인도",
    ),
    "Asia/Colombo": ("Colombo", "콜롬보", "Sri Lanka", "스리랑카"),
    "Asia/Dhaka": ("Dhaka", "다카"),
    "Asia/Kathmandu": ("Kathmandu", "카트만두"),
    "Asia/Karachi": ("Karachi", "카라치", "Islamabad", "이슬라마바드"),
    "Asia/Ulaanbaatar": ("Ulaanbaatar", "울란바토르"),
    "Asia/Dubai": ("Dubai", "두바이"),
    "Australia/Sydney": ("Sydney", "시드니", "Canberra", "캔버라", "Melbourne", "멜버른"),
    "Australia/Brisbane": ("Brisbane", "브리즈번"),
    "Australia/Perth": ("Perth", "퍼스"),
    "Australia/Adelaide": ("Adelaide", "애들레이드"),
    "Pacific/Auckland": ("Auckland", "오클랜드", "Wellington", "웰링턴"),
    "Pacific/Fiji": ("Suva", "수바", "Fiji", "피지"),
    "America/New_York": ("New York", "뉴욕", "Washington", "워싱턴"),
    "America/Los_Angeles": ("Los Angeles", "로스앤젤레스", "San Francisco", "샌프란시스코"),
    "Europe/London": ("London", "런던"),
    "Europe/Paris": ("Paris", "파리"),
    "Europe/Berlin": ("Berlin", "베를린"),
    "UTC": ("GMT", "Z", "협정 세계시"),
}


@lru_cache(maxsize=1)
def _names() -> dict[str, str]:
    """Every accepted spelling (compared as `spellings.key` does) -> its IANA name."""
    names = {key(zone): zone for zone in available_timezones()}
    for zone, words in SPELLINGS.items():
        for word in words:
            names.setdefault(key(word), zone)
    return names


def normalise_timezone(value: str) -> str:
    """The IANA name of a zone as written (`Asia/Seoul`, `asia/seoul`, `Seoul`, `서울`, `KST`);
    ValueError naming what to write."""
    text = value.strip()
    found = _names().get(key(text))
    if found is None:
        raise ValueError(
            f"unknown timezone {value!r}: write an IANA name such as Asia/Seoul, "
            "Australia/Sydney or Asia/Kolkata (or a city such as Seoul, 시드니)"
        )
    return found


def _zone_table() -> str:
    from importlib import resources

    try:
        return resources.files("tzdata.zoneinfo").joinpath("zone.tab").read_text("utf-8")
    except (ModuleNotFoundError, FileNotFoundError):
        pass
    for folder in TZPATH:
        try:
            with open(f"{folder}/zone.tab", encoding="utf-8") as found:
                return found.read()
        except OSError:
            continue
    return ""


def _offsets(zone: str, year: int) -> tuple[object, ...]:
    tz = ZoneInfo(zone)
    return tuple(datetime(year, month, 1, 12, tzinfo=tz).utcoffset() for month in (1, 4, 7, 10))


@lru_cache(maxsize=1)
def country_zones() -> dict[str, tuple[str, ...]]:
    """Country code -> its zones, as the IANA country table lists them (capital first)."""
    zones: dict[str, list[str]] = {}
    for line in _zone_table().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) >= 3:
            zones.setdefault(parts[0].upper(), []).append(parts[2])
    return {country: tuple(names) for country, names in zones.items()}


@lru_cache(maxsize=512)
def zone_of_country(country: str | None) -> str | None:
    """The zone of a country that keeps one time all year, else None (several zones, or a
    country the table does not know)."""
    if not country:
        return None
    country = country.upper()
    if country in NATIONAL_ZONES:
        return NATIONAL_ZONES[country]
    zones = country_zones().get(country, ())
    if not zones:
        return None
    year = datetime.now(UTC).year
    first = _offsets(zones[0], year)
    if all(_offsets(zone, year) == first for zone in zones[1:]):
        return zones[0]
    return None


def several_zones(country: str | None) -> bool:
    """Whether a contact of this country needs its own `timezone` to be mailed at its time."""
    return (
        bool(country)
        and zone_of_country(country) is None
        and bool(country_zones().get((country or "").upper()))
    )


def contact_zone(timezone: str | None, country: str | None, default: str) -> str:
    """The IANA zone a contact is in: its own, else its country's, else `default`."""
    return timezone or zone_of_country(country) or default


@lru_cache(maxsize=512)
def zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")
