import email
from email import policy
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from outreach.campaigns import load_campaign
from outreach.compiler import compile_campaign
from outreach.compose import resolve_language
from outreach.config import Settings
from outreach.contacts import get_contact, import_csv
from outreach.messages import MessageBuilder, encode_address, encode_header
from outreach.render import contact_variables, personalise
from outreach.tokens import Links, Tokens
from outreach.validate import validate_campaign
from tests.project import CAMPAIGN, make_project

POSTAL = "CityNet Secretariat, 38 Jong-ro, Seoul 03188, Republic of Korea"
SETTINGS = Settings(postal_address=POSTAL, secret_key="FF1-g7ItGr7If_tH5i77jDAspupuVobgJwpeoawB")
LINKS = Links("https://mail.example.org", Tokens("s3cret"))


def render_for(path: Path, contact: dict, languages: set[str] | None = None):  # type: ignore[no-untyped-def]
    campaign = load_campaign(path)
    language = resolve_language(
        contact.get("language"), campaign.languages(), campaign.spec.default_language
    )
    compiled = compile_campaign(campaign, languages or {language}, SETTINGS)
    return personalise(
        compiled.personaliser(),
        compiled.variants[language],
        {"contact": contact, **LINKS.for_delivery(7)},
    )


def contact(**fields: object) -> dict:
    return {
        "email": "x@example.org",
        "name": None,
        "organisation": None,
        "tags": [],
        "attributes": {},
        **fields,
    }


def test_korean_and_english(tmp_path: Path) -> None:
    path = make_project(tmp_path)
    ko = render_for(path, contact(name="김수진", organisation="수원특례시", language="ko"))
    assert ko.subject == "시티넷 소식 — 김수진님"
    assert "김수진님, 안녕하십니까." in ko.html and "콜롬보 배수로" in ko.html
    assert "수신거부" in ko.html and POSTAL in ko.html
    en = render_for(path, contact(name="Maria", organisation="Makati", language="en"))
    assert en.subject == "News for Maria"
    assert "Dear Maria of Makati," in en.html


def test_text_part_is_readable_and_has_every_link(tmp_path: Path) -> None:
    path = make_project(tmp_path)
    ko = render_for(path, contact(name="김수진", language="ko"))
    urls = LINKS.for_delivery(7)
    assert "김수진님, 안녕하십니까." in ko.text
    assert "https://citynet-ap.org/news/colombo" in ko.text
    assert urls["unsubscribe_url"] in ko.text
    assert "<" not in ko.text.replace("<", "", 0) or "<mj-" not in ko.text


def test_text_part_is_not_centred_with_spaces(tmp_path: Path) -> None:
    """Centring means nothing without a known width: a text client (and a phone) showed the
    layout's centred header, button and footer pushed right by dozens of spaces."""
    from outreach.render import html_to_text

    long = "A long footer line with the postal address of the sender in it"
    html = (
        f'<table align="center"><tr><td>{long}</td></tr>'
        '<tr><td align="center">Visit</td></tr>'
        '<tr><td style="color:#333;text-align: center">Header</td></tr>'
        "<tr><td ALIGN='right'>Right</td></tr></table><ul><li>one</li><li>two</li></ul>"
    )
    lines = html_to_text(html).splitlines()
    assert {"Visit", "Header", "Right", long} <= set(lines), lines
    assert any(line.startswith("  * one") for line in lines), lines  # lists keep their indent


def test_fallback_languages(tmp_path: Path) -> None:
    path = make_project(tmp_path)
    available = load_campaign(path).languages()
    assert available == {"en", "ko"}
    assert resolve_language("ja", available, "en") == "en"
    assert resolve_language("ko-KR", available, "en") == "ko"
    assert resolve_language(None, available, "en") == "en"
    ja = render_for(path, contact(name="Sato", language="ja"))
    assert ja.subject == "News for Sato"


def test_fallback_template_with_subject_languages(tmp_path: Path) -> None:
    (tmp_path / "templates").mkdir()
    path = make_project(
        tmp_path,
        CAMPAIGN.replace("template: news", "template: invite"),
        **{"invite.mjml": NEWS_FALLBACK},
    )
    campaign = load_campaign(path)
    assert campaign.languages() == {"en", "ko"}
    assert campaign.template_for("ko") == "invite.mjml"
    ko = render_for(path, contact(name="김", language="ko"))
    assert ko.subject.startswith("시티넷 소식") and "Hello 김" in ko.html


NEWS_FALLBACK = """{% extends "layouts/base.mjml" %}
{% block content %}<mj-section><mj-column><mj-text>Hello {{ contact.name }}</mj-text></mj-column></mj-section>{% endblock %}
"""


@pytest.mark.parametrize("name", ["<script>alert(1)</script>", '"><img src=x onerror=alert(1)>'])
def test_recipient_values_are_escaped(tmp_path: Path, name: str) -> None:
    path = make_project(tmp_path)
    out = render_for(path, contact(name=name, organisation=name, language="en"))
    assert name not in out.html
    assert "&lt;" in out.html and ("&#34;" in out.html or "&lt;script" in out.html)
    assert "<script>" not in out.html and "<img src=x" not in out.html
    assert name in out.text  # the plain-text part shows it as text
    assert out.subject == f"News for {' '.join(name.split())}"


def test_campaign_content_is_never_evaluated_per_recipient(tmp_path: Path) -> None:
    text = CAMPAIGN.replace('"Colombo drains"', '"{{ contact.email }} and {% raw %}x{% endraw %}"')
    path = make_project(tmp_path, text)
    out = render_for(path, contact(email="secret@example.org", language="en"))
    assert "secret@example.org" not in out.html
    assert "{{ contact.email }}" in out.html.replace("&#123;", "{")
    report = validate_campaign(path, SETTINGS, None)
    assert any("literal '{{'" in e.message for e in report.errors)


def test_mjml_compiles_once_per_language(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mjml

    calls: list[int] = []
    real = mjml.mjml2html
    monkeypatch.setattr(
        mjml, "mjml2html", lambda src, *a, **k: calls.append(1) or real(src, *a, **k)
    )
    path = make_project(tmp_path)
    campaign = load_campaign(path)
    compiled = compile_campaign(campaign, {"en", "ko"}, SETTINGS)
    assert len(calls) == 2
    p = compiled.personaliser()
    htmls = {
        personalise(
            p, compiled.variants["en"], {"contact": contact(name=f"N{i}"), **LINKS.for_delivery(i)}
        ).html
        for i in range(50)
    }
    assert len(htmls) == 50 and len(calls) == 2


def test_advertising_rules(tmp_path: Path) -> None:
    path = make_project(tmp_path, CAMPAIGN + "advertising: true\n")
    ko = render_for(path, contact(name="김수진", language="ko"))
    assert ko.subject.startswith("(광고) ")
    assert "광고성 정보" in ko.html and "시티넷 사무국" in ko.html
    # A name only in Korean tells an English reader nothing (issue 24): the address does.
    assert "This is an advertisement from news@citynet-ap.org" in ko.html
    assert POSTAL in ko.html
    unsubscribe = LINKS.for_delivery(7)["unsubscribe_url"]
    assert ko.html.count(unsubscribe) >= 3  # the layout's link and the bilingual notice's two
    en = render_for(path, contact(name="Maria", language="en"))
    assert en.subject.startswith("(광고) News for Maria")
    missing_postal = validate_campaign(path, Settings(), None)
    assert any("OUTREACH_POSTAL_ADDRESS" in e.message for e in missing_postal.errors)


def test_korean_headers_are_rfc2047(tmp_path: Path) -> None:
    builder = MessageBuilder("시티넷 사무국 <news@citynet-ap.org>", reply_to="info@citynet-ap.org")
    envelope = builder.build(
        to_name="김수진",
        to_address="kim@suwon.example.org",
        subject="시티넷 뉴스레터 — 2026년 12월",
        html="<p>안녕하십니까</p>",
        text="안녕하십니까",
        unsubscribe_url="https://x/u/t",
        message_id=builder.new_message_id(1),
    )
    raw = envelope.data.decode("ascii")  # the whole message is 7-bit
    assert "=?utf-8?" in raw
    msg = email.message_from_bytes(envelope.data, policy=policy.default)
    assert msg["Subject"] == "시티넷 뉴스레터 — 2026년 12월"
    assert msg["To"].addresses[0].display_name == "김수진"
    assert msg["From"].addresses[0].display_name == "시티넷 사무국"
    assert msg.get_content_type() == "multipart/alternative"
    assert msg.get_body(("plain",)).get_content().strip() == "안녕하십니까"
    assert encode_header("plain") == "plain"
    assert "\n" not in encode_address("a\r\nBcc: x@y", "a@b.org").replace("\r\n ", "")


@pytest.mark.parametrize(
    "typed",
    [
        "=?utf-8?b?7Iuc7Yuw64S3IOyCrOustOq1rQ==?=",  # would show as "시티넷 사무국"
        "Support =?us-ascii?q?IT?= <x@y.org>",
        "a=?b",
    ],
)
def test_a_typed_encoded_word_reaches_the_reader_as_typed(typed: str) -> None:
    """A name or subject that looks like an RFC 2047 encoded-word is encoded by us, so a mail
    client shows the characters typed, never what they would decode to."""
    builder = MessageBuilder("news@citynet-ap.org")
    envelope = builder.build(
        to_name=typed,
        to_address="kim@suwon.example.org",
        subject=typed,
        html="<p>x</p>",
        text="x",
        unsubscribe_url="https://x/u/t",
        message_id=builder.new_message_id(1),
    )
    msg = email.message_from_bytes(envelope.data, policy=policy.default)
    assert msg["Subject"] == typed
    assert msg["To"].addresses[0].display_name == typed
    assert msg["To"].addresses[0].addr_spec == "kim@suwon.example.org"
    assert typed not in envelope.data.decode("ascii")


def test_validate_renders_for_a_real_contact_of_each_language(
    tmp_path: Path, session: Session
) -> None:
    path = make_project(tmp_path)
    import_csv(session, tmp_path / "contacts.csv")
    report = validate_campaign(path, SETTINGS, session)
    assert report.ok, report.errors
    assert report.audience_size == 3
    assert report.languages == {"ko": 1, "en": 2}
    kim = contact_variables(get_contact(session, "kim@suwon.example.org"))
    assert kim["name"] == "김수진"
