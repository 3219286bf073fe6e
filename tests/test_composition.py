"""Every message stays byte for byte what it was: messages composed the worker's way today are
compared with those composed before the sending path was made faster (issue 26), kept in
tests/fixtures/composed/. Only what must differ from one composition to the next (the
Message-ID, the Date and the MIME boundary, all random or the clock's) is blanked first.

The fixtures were written by `composed_messages` below at commit 18fab67 (before issue 26);
never write them again from newer code: they are the old way's output. One thing has changed
on purpose since: a click token also carries the link's position in the template (issue 22,
clicks grouped by the template's link), so a message with tracked links is compared part by
part, decoded, with each click token read back to what it signs (the delivery, the URL).
And two of issue 24: Korean is set with `word-break: keep-all` inline in the HTML, and the
advertising footer is styled like the layout's footer (with dark-mode colours in the head);
all are taken out of the messages (`unstyled`) before they are compared, part by part,
decoded."""

from __future__ import annotations

import email
import email.header
import random
import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from outreach import store
from outreach.advertising import DARK_STYLE as ADVERTISING_DARK_STYLE
from outreach.compose import prepare
from outreach.config import Settings
from outreach.contacts import import_csv
from outreach.db import writer_sessionmaker
from outreach.lifecycle import send_campaign
from outreach.messages import encode_header
from outreach.models import Campaign
from outreach.tokens import KINDS, Links, Tokens, _signer
from outreach.typography import KEEP_WORDS
from tests.conftest import write
from tests.project import LAYOUT, SEGMENTS

FIXTURES = Path(__file__).parent / "fixtures" / "composed"
# The key the fixtures' tokens were signed with, in 2026 a guessable one that signing
# commands refuse: the messages sign with it directly (Links), the commands get STRONG_KEY.
KEY = "composition-test-key-0123456789abcdef0123456789"
STRONG_KEY = "p9Hd2Lk-V0sQ7wYbN3xR_fT6mJ1cZ8aG4eUiO5"

TEMPLATE = """{% extends "layouts/base.mjml" %}
{% block content %}
<mj-section><mj-column>
  <mj-text>Dear {{ contact.name | default("colleague", true) }} of {{ contact.organisation }},</mj-text>
  <mj-text>Read the <a href="https://citynet-ap.org/events/excom-2027">programme</a>, the
  <a href="https://citynet-ap.org/training/call?from=news&org={{ contact.organisation|urlencode }}">call
  for proposals</a> ({{ contact.attributes.region | default("all regions", true) }}) and
  <a href="https://citynet-ap.org/news">past issues</a>.</mj-text>
  <mj-text>Tags: {{ contact.tags | join(", ") }}.
  <a href="{{ preferences_url }}">Preferences</a> · <a href="{{ view_online_url }}">View online</a></mj-text>
</mj-column></mj-section>
{% endblock %}
"""

CAMPAIGNS = {
    # A personalised subject in each language, three tracked links (one with a contact's
    # value), the open pixel.
    "personal": """name: personal
template: news
subject:
  en: "Dear {{ contact.name }}, CityNet's December news"
  ko: "{{ contact.name }}님께 — 시티넷 12월 소식"
from: "시티넷 사무국 <news@citynet-ap.org>"
reply_to: info@citynet-ap.org
audience:
  include: [everyone]
default_language: en
tracking: {opens: true, clicks: true}
""",
    # A fixed, long subject (several encoded words), advertising, no tracking.
    "fixed": """name: fixed
template: news
subject:
  en: "CityNet Newsletter — December 2026: cities learning from cities, climate finance, and the youth urban forum"
  ko: "시티넷 뉴스레터 — 2026년 12월: 도시가 도시에게 배웁니다, 기후금융 연수와 청년 도시 포럼 소식"
from: "CityNet Secretariat <news@citynet-ap.org>"
audience:
  include: [everyone]
default_language: ko
advertising: true
""",
}

# Names and organisations that exercise the header encodings: Korean, ASCII that needs
# quoting, none, an emoji, a typed encoded-word, one long enough to fold.
CONTACTS = '''email,name,organisation,country,language,membership,tags,region
kim@suwon.example.org,김수진,수원특례시 & 시민,KR,ko,full,newsletter;members,East Asia
maria@makati.example.com,"Santos, Maria ""Mia""",Makati City,PH,en,full,newsletter,South-East Asia
sato@yokohama.example.com,,Yokohama,JP,ja,full,,
lee@seoul.example.org,이 🌏 지은,서울특별시,KR,ko,full,newsletter,
typed@example.org,=?utf-8?b?7Iuc7Yuw64S3?=,Typed Co,KR,en,full,newsletter,
long@example.org,대한민국 지방자치단체 국제협력 담당관 홍길동 주무관님 그리고 그 동료들,아주 긴 기관 이름을 가진 지방자치단체 국제협력센터,KR,ko,full,newsletter,Pacific
ascii@example.org,Jean-Luc Picard-Dupont de la Tour Eiffel Métropole,Q&A / R+D <Lab>,FR,en,full,members,
'''

_BLANK = [
    (re.compile(rb"^Message-ID: <[^>]*>", re.M), b"Message-ID: <ID>"),
    (re.compile(rb"^Date: [^\r\n]*", re.M), b"Date: DATE"),
    (re.compile(rb"=_[0-9a-f]{24}"), b"=_BOUNDARY"),
]


def blank(data: bytes) -> bytes:
    """What must differ between two compositions of one message, blanked."""
    for pattern, replacement in _BLANK:
        data = pattern.sub(replacement, data)
    return data


def composed_messages(root: Path, database_url: str) -> dict[str, bytes]:
    """Each campaign's message for each contact, composed as the worker composes it, keyed
    `campaign-mailbox` (the address's local part)."""
    write(root / "templates" / "layouts" / "base.mjml", LAYOUT)
    write(root / "templates" / "news.mjml", TEMPLATE)
    write(root / "campaigns" / "segments.yaml", SEGMENTS)
    write(root / "contacts.csv", CONTACTS)
    settings = Settings(
        database_url=database_url,
        secret_key=STRONG_KEY,
        base_url="https://news.citynet-ap.org",
        bounce_domain="bounces.citynet-ap.org",
        postal_address="CityNet Secretariat, Seoul",
    )
    links = Links(settings.base_url, Tokens(KEY))
    out: dict[str, bytes] = {}
    with writer_sessionmaker(database_url)() as session:
        import_csv(session, root / "contacts.csv")
        session.commit()
        for name, text in CAMPAIGNS.items():
            path = write(root / "campaigns" / f"{name}.yaml", text)
            send_campaign(path, settings, session, None)
            campaign = session.scalars(select(Campaign).where(Campaign.name == name)).one()
            prepared = prepare(session, campaign, settings, links)
            ids = store.claim(session, campaign.id, "test", 100, 3600)
            session.commit()
            for recipient in store.load(session, ids):
                envelope = prepared.composer.compose(recipient).envelope
                head = f"{envelope.sender}\n{envelope.recipient}\n".encode()
                out[f"{name}-{envelope.recipient.partition('@')[0]}"] = head + envelope.data
    return out


_CLICK = re.compile(r"/c/([0-9]+\.[A-Za-z0-9_=-]+(?:\.[0-9]+)?\.[A-Za-z0-9_-]+)")


def _clicks_read_back(text: str, positions: list[int]) -> str:
    """Each click token replaced by the delivery and URL it signs; its position, when it
    has one, noted in `positions`."""
    tokens = Tokens(KEY)

    def read(match: re.Match[str]) -> str:
        delivery, url, *position = tokens.verify("click", match.group(1))
        positions.extend(position)
        return f"/c/<{delivery} {url}>"

    return _CLICK.sub(read, text)


_AD_FOOTER = re.compile(r'<div (?:class="advertising-footer" )?style="[^"]*"><p lang="ko"')
_AD_PARAGRAPH = re.compile(r'<p lang="(ko|en)" style="[^"]*">')


def unstyled(parts: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """The parts without the styles issue 24 added or changed on purpose."""
    return [
        (
            kind,
            encoding,
            _AD_PARAGRAPH.sub(
                r'<p lang="\1">',
                _AD_FOOTER.sub(
                    '<div><p lang="ko"',
                    text.replace(KEEP_WORDS, "").replace(ADVERTISING_DARK_STYLE, ""),
                ),
            ),
        )
        for kind, encoding, text in parts
    ]


def parts_read_back(data: bytes, positions: list[int]) -> list[tuple[str, str, str]]:
    """A message's parts: content type, transfer encoding and decoded text, clicks read back
    (`data` as composed_messages keeps it: the envelope's two lines, then the message)."""
    message = email.message_from_bytes(data.split(b"\n", 2)[2])
    found = []
    for part in message.walk():
        if part.is_multipart():
            continue
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        text = payload.decode(part.get_content_charset() or "ascii")
        found.append(
            (
                part.get_content_type(),
                str(part["Content-Transfer-Encoding"]),
                _clicks_read_back(text, positions),
            )
        )
    return found


def test_messages_are_composed_byte_for_byte_as_before(tmp_path: Path, sqlite_url: str) -> None:
    # SQLite only: the delivery numbers signed into the links must be the fixtures' own, and
    # PostgreSQL may number a snapshot's rows in another order.
    messages = composed_messages(tmp_path, sqlite_url)
    expected = sorted(p.stem for p in FIXTURES.glob("*.eml"))
    assert sorted(messages) == expected
    tracked = 0
    for key, data in messages.items():
        before = (FIXTURES / f"{key}.eml").read_bytes()
        positions: list[int] = []
        parts = unstyled(parts_read_back(data, positions))
        head, _, _ = blank(data).partition(b"\r\n\r\n")
        head_before, _, _ = blank(before).partition(b"\r\n\r\n")
        if not any("/c/<" in text for _, _, text in parts):  # no tracked link
            assert head == head_before, key
            assert parts == unstyled(parts_read_back(before, [])), key
            continue
        tracked += 1
        assert head == head_before, key
        assert parts == unstyled(parts_read_back(before, [])), key
        # Each tracked link of the template by its place: programme, call, past issues.
        assert positions and sorted(set(positions)) == [1, 2, 3], (key, positions)
    assert tracked, "no message with tracked links was compared"


def _subjects() -> list[str]:
    """Subjects as campaigns and contacts make them: Korean, English with a Korean name,
    emoji, punctuation that quoted-printable encodes, lengths across the folding points."""
    rng = random.Random(26)
    alphabets = [
        "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789",
        "-!*+/_=?.,;:'\"()<>@[]\\ \t#$%&~`{}|^",
        "시티넷뉴스레터년월님께소식담당자 ",
        "éüßñçøåÉ€£¥©®°±§¶",
        "🌏🎉👍🏽😀",
        "中文漢字日本語カタカナ",
    ]
    found = [
        "시티넷 뉴스레터 — 2026년 12월",
        "Dear 담당자 7, CityNet's December news",
        "담당자 19999님께 — 시티넷 12월 소식",
        "=?utf-8?b?7Iuc7Yuw64S3?=",
        "a=?b",
        "x" * 950,
        "(광고) " + "가" * 300,
    ]
    for _ in range(3000):
        length = rng.choice([1, 2, 5, 20, 40, 56, 57, 58, 64, 65, 66, 80, 120, 200, 400])
        pools = rng.sample(alphabets, rng.randint(1, 3))
        found.append("".join(rng.choice(rng.choice(pools)) for _ in range(length)))
    return found


@pytest.mark.parametrize("chunk", range(4))
def test_subjects_are_encoded_as_the_standard_library_encodes_them(chunk: int) -> None:
    """The subject's RFC 2047 encoding is ours (the standard library's tries every prefix of
    the text), and writes exactly what `email.header.Header` wrote."""
    subjects = _subjects()[chunk::4]
    for subject in subjects:
        value = re.sub(r"[\x00-\x1f\x7f]+", " ", subject).strip()
        if value.isascii() and len(value) < 900 and "=?" not in value:
            expected = value
        else:
            expected = email.header.Header(value, "utf-8", header_name="Subject").encode(
                linesep="\r\n"
            )
        assert encode_header(subject) == expected, subject
        if expected != value:  # what a mail client reads is what was typed
            assert str(email.header.make_header(email.header.decode_header(expected))) == value


@pytest.mark.parametrize("kind", KINDS)
def test_tokens_are_signed_as_itsdangerous_signs_them(kind: str) -> None:
    """Our signatures are written out by hand for speed: the same as the library's, and
    verified by it, old keys too."""
    tokens = Tokens(KEY, fallbacks=("an-older-key-0123456789abcdef0123456789",))
    url = "https://citynet-ap.org/?org=수원 & 시"
    # (what is signed, what verifying gives back)
    cases: list[tuple[Any, Any]] = [(0, 0), (7, 7), (2**40, 2**40), ([12, url], [12, url])]
    for payload, read_back in cases:
        token = tokens.sign(kind, payload)
        value = token.rpartition(".")[0]
        assert token == _signer(tokens._keys, kind).sign(value).decode("ascii")
        assert tokens.verify(kind, token) == read_back
