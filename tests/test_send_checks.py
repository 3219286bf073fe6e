"""What `send` and `validate` tell staff before anyone is mailed: warnings and the start time
at send, the internal name in a subject, a sender name per language, a test with a real
contact's data, archived campaigns that would greet nobody, attributes without a value."""

from __future__ import annotations

import email
from collections.abc import Iterator
from datetime import timedelta
from email import policy
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from outreach.config import Settings
from outreach.contacts import import_csv
from outreach.lifecycle import send_test
from outreach.models import utcnow
from outreach.validate import validate_campaign
from tests.conftest import write
from tests.project import CAMPAIGN, NEWS_EN, NEWS_KO, make_project
from tests.sending_helpers import drain, project_with, send, settings_for
from tests.smtp_server import SmtpServer, start_server

SETTINGS = Settings(postal_address="Seoul", secret_key="Hq0vZ3pV7-xw2LmT9bRk_4sYe8NcJ1fUaD6gWiO5")
ENV = {"OUTREACH_POSTAL_ADDRESS": "Seoul"}


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = start_server()
    yield server
    server.stop()


def validated(tmp_path: Path, session: Session | None = None, **kw: str):  # type: ignore[no-untyped-def]
    path = make_project(tmp_path, kw.pop("campaign", CAMPAIGN), **kw)
    if session is not None:
        import_csv(session, tmp_path / "contacts.csv")
    return validate_campaign(path, SETTINGS, session)


def messages(smtp: SmtpServer) -> list[email.message.EmailMessage]:
    return [
        email.message_from_bytes(r.data, policy=policy.default)  # type: ignore[misc]
        for r in smtp.handler.received
    ]


# Item 6: send and --dry-run show validate's warnings and when the campaign starts.


def test_send_and_dry_run_show_warnings_and_the_start(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    make_project(tmp_path)  # sato speaks ja: there is no ja variant
    assert run_cli("init").exit_code == 0
    assert run_cli("contacts", "import", "contacts.csv").exit_code == 0
    dry = run_cli("campaigns", "send", "campaigns/news.yaml", "--dry-run", env=ENV)
    assert dry.exit_code == 0, dry.output
    assert "warning: " in dry.output and "1 contact speaks ja" in dry.output
    assert "would start at once" in dry.output
    sent = run_cli("campaigns", "send", "campaigns/news.yaml", env=ENV)
    assert sent.exit_code == 0, sent.output
    assert "1 contact speaks ja" in sent.output
    assert "3 new deliveries queued" in sent.output and "starts now" in sent.output


def test_a_single_new_delivery_is_said_in_the_singular(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    make_project(tmp_path)
    write(tmp_path / "contacts.csv", "email,name,language\nkim@suwon.example.org,김수진,ko\n")
    assert run_cli("init").exit_code == 0
    assert run_cli("contacts", "import", "contacts.csv").exit_code == 0
    sent = run_cli("campaigns", "send", "campaigns/news.yaml", env=ENV)
    assert "1 new delivery queued (1 in all)" in sent.output, sent.output


def test_a_send_at_in_the_future_says_when_and_in_the_past_says_so(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    later = (utcnow() + timedelta(days=2)).replace(microsecond=0)
    make_project(tmp_path, CAMPAIGN + f"send_at: {later.isoformat()}\n")
    assert run_cli("init").exit_code == 0
    assert run_cli("contacts", "import", "contacts.csv").exit_code == 0
    dry = run_cli("campaigns", "send", "campaigns/news.yaml", "--dry-run", env=ENV)
    assert f"would start {later:%Y-%m-%d %H:%M} UTC" in dry.output, dry.output
    past = CAMPAIGN + "send_at: 2026-01-05T09:00:00+09:00\n"
    write(tmp_path / "campaigns" / "old.yaml", past.replace("name: news", "name: old"))
    old = run_cli("campaigns", "send", "campaigns/old.yaml", "--dry-run", env=ENV)
    assert old.exit_code == 0, old.output
    assert "send_at 2026-01-05 09:00 +09:00 (2026-01-05 00:00 UTC) is in the past" in old.output
    assert "the campaign would start at once" in old.output
    real = run_cli("campaigns", "send", "campaigns/old.yaml", env=ENV)
    assert "is in the past" in real.output and "starts now" in real.output


def test_a_scheduled_campaigns_status_shows_its_start(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    later = (utcnow() + timedelta(days=2)).replace(microsecond=0)
    make_project(tmp_path, CAMPAIGN + f"send_at: {later.isoformat()}\n")
    assert run_cli("init").exit_code == 0
    assert run_cli("contacts", "import", "contacts.csv").exit_code == 0
    sent = run_cli("campaigns", "send", "campaigns/news.yaml", env=ENV)
    assert "scheduled for" in sent.output, sent.output
    shown = run_cli("campaigns", "status", "news", env=ENV)
    local = later.astimezone(Settings().zone)
    assert f"starts {local:%Y-%m-%d %H:%M} KST" in shown.output, shown.output


# Item 8: the internal name in a subject.


def test_the_internal_name_in_a_subject_is_a_warning(tmp_path: Path) -> None:
    campaign = CAMPAIGN.replace('ko: "시티넷 소식', 'ko: "시티넷 소식 {{ campaign.name }}').replace(
        "name: news", "name: 2027-01-membership-korea"
    )
    report = validated(tmp_path, campaign=campaign)
    assert report.ok, report.errors
    (warning,) = [w for w in report.warnings if "campaign.name" in w]
    assert "news.yaml:5: the ko subject" in warning
    assert "2027-01-membership-korea" in warning and "internal name" in warning


def test_the_shipped_campaigns_do_not_print_their_internal_name() -> None:
    from tests.conftest import ROOT

    for folder in (ROOT / "campaigns", ROOT / "outreach" / "examples" / "campaigns"):
        for path in folder.glob("*.yaml"):
            assert "campaign.name" not in path.read_text(encoding="utf-8"), path


def test_the_unsubscribe_page_shows_the_subject_not_the_internal_name(
    session: Session, db_url: str, tmp_path: Path
) -> None:
    from sqlalchemy import select

    from outreach.models import Contact, Delivery
    from outreach.tokens import Tokens
    from outreach.web import create_app

    settings = settings_for(db_url, tmp_path)
    campaign = CAMPAIGN.replace("name: news", "name: 2026-12-internal-name")
    path = project_with(tmp_path, session, campaign=campaign)
    send(path, settings, session)
    drain(settings, session, "2026-12-internal-name")
    did = session.scalar(
        select(Delivery.id)
        .join(Contact, Contact.id == Delivery.contact_id)
        .where(Contact.email == "kim@suwon.example.org")
    )
    session.commit()
    client = create_app(settings).test_client()
    page = client.get(f"/u/{Tokens(settings.secret_key or '').sign('unsubscribe', did)}")
    text = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "시티넷 소식 — 김수진님" in text
    assert "2026-12-internal-name" not in text


# Item 9: a sender name per language.

PER_LANGUAGE_FROM = CAMPAIGN.replace(
    'from: "시티넷 사무국 <news@citynet-ap.org>"',
    'from:\n  ko: "시티넷 사무국 <news@citynet-ap.org>"\n  en: "CityNet Secretariat <news@citynet-ap.org>"',
)
FOOTER = '<mj-section><mj-column><mj-text>{% if language == "ko" %}{{ sender }}에서 보냈습니다{% else %}Sent by {{ sender }}{% endif %}</mj-text></mj-column></mj-section>'


def test_from_per_language_in_from_and_footer(
    session: Session, db_url: str, tmp_path: Path
) -> None:
    settings = settings_for(db_url, tmp_path)
    layout = (
        (Path(__file__).parent / "project.py").read_text(encoding="utf-8").split('LAYOUT = """')[1]
    )
    layout = layout.split('"""')[0].replace("</mj-body>", FOOTER + "</mj-body>")
    path = project_with(
        tmp_path, session, campaign=PER_LANGUAGE_FROM, **{"layouts__base.mjml": layout}
    )
    send(path, settings, session)
    drain(settings, session)
    by_to = {}
    for eml in (tmp_path / "outbox" / "news").glob("*.eml"):
        msg = email.message_from_bytes(eml.read_bytes(), policy=policy.default)
        by_to[msg["To"].addresses[0].addr_spec] = msg
    kim, maria = by_to["kim@suwon.example.org"], by_to["maria@makati.example.com"]
    assert kim["From"].addresses[0].display_name == "시티넷 사무국"
    assert maria["From"].addresses[0].display_name == "CityNet Secretariat"
    assert "시티넷 사무국에서 보냈습니다" in kim.get_body(("html",)).get_content()
    assert "Sent by CityNet Secretariat" in maria.get_body(("html",)).get_content()


def test_validate_checks_every_from_address(tmp_path: Path) -> None:
    campaign = PER_LANGUAGE_FROM.replace(
        'ko: "시티넷 사무국 <news@citynet-ap.org>"', 'ko: "시티넷 사무국 <news@>"'
    )
    report = validated(tmp_path, campaign=campaign)
    (error,) = [str(e) for e in report.errors]
    assert "news.yaml:7: from.ko:" in error and "not a valid address" in error


def test_a_from_per_language_needs_the_default_languages(tmp_path: Path) -> None:
    campaign = PER_LANGUAGE_FROM.replace('  en: "CityNet Secretariat <news@citynet-ap.org>"\n', "")
    report = validated(tmp_path, campaign=campaign)
    assert any("from: no address for en (default_language)" in str(e) for e in report.errors)


def test_system_mail_subjects_start_in_korean_and_take_the_korean_sender(
    session: Session, db_url: str
) -> None:
    from outreach.system_mail import KINDS, Sender, compile_kind

    sender = Sender(
        from_="CityNet Secretariat <news@citynet-ap.org>",
        reply_to=None,
        postal_address="Seoul",
        contact="info@citynet-ap.org",
        consent_text={},
    )
    for kind in KINDS.values():
        variants, _ = compile_kind(kind, sender)
        assert "\uac00" <= variants["ko"].subject[0] <= "\ud7a3", variants["ko"].subject
    korean = Sender(
        from_="CityNet Secretariat <news@citynet-ap.org>",
        reply_to=None,
        postal_address="Seoul",
        contact="info@citynet-ap.org",
        consent_text={},
        from_by_language={"ko": "시티넷 사무국 <news@citynet-ap.org>"},
    )
    variants, _ = compile_kind(KINDS["confirmation"], korean)
    assert "시티넷 사무국" in variants["ko"].subject
    assert "CityNet Secretariat" in variants["en"].subject
    assert (
        "시티넷 사무국" in variants["ko"].html and "CityNet Secretariat" not in variants["ko"].html
    )


def test_subscribe_yaml_takes_a_sender_per_language(tmp_path: Path) -> None:
    from outreach.subscriptions import load_config, system_sender

    write(
        tmp_path / "subscribe.yaml",
        'from:\n  ko: "시티넷 사무국 <news@citynet-ap.org>"\n'
        '  en: "CityNet Secretariat <news@citynet-ap.org>"\n'
        'consent:\n  version: "1"\n  text: {ko: "동의합니다", en: "I agree"}\n',
    )
    config = load_config(SETTINGS, tmp_path / "subscribe.yaml")
    sender = system_sender(SETTINGS, config)
    assert sender.name_for("ko") == "시티넷 사무국"
    assert sender.name_for("en") == "CityNet Secretariat"
    write(
        tmp_path / "bad.yaml",
        'from:\n  ko: "시티넷 사무국 <news@>"\n'
        'consent:\n  version: "1"\n  text: {ko: "동의합니다", en: "I agree"}\n',
    )
    from outreach.errors import FileError, FileErrors

    with pytest.raises((FileError, FileErrors)) as err:
        load_config(SETTINGS, tmp_path / "bad.yaml")
    assert "not a valid address" in str(err.value)


# Item 10: a test message with a real contact's data.


def test_test_to_with_a_contact_uses_their_data_and_language(
    session: Session, db_url: str, tmp_path: Path, smtp: SmtpServer
) -> None:
    settings = settings_for(db_url, tmp_path, smtp_url=smtp.url)
    path = project_with(tmp_path, session)
    session.commit()
    languages = send_test(
        path, settings, session, "staff@citynet.example.org", "kim@suwon.example.org"
    )
    assert languages == ["ko"]
    (msg,) = messages(smtp)
    assert msg["To"].addresses[0].addr_spec == "staff@citynet.example.org"
    assert msg["Subject"] == "[TEST ko] 시티넷 소식 — 김수진님"
    assert "김수진님, 안녕하십니까." in msg.get_body(("html",)).get_content()
    assert "Sample" not in msg.get_body(("html",)).get_content()


def test_cli_test_to_with_a_contact(run_cli, tmp_path: Path, smtp: SmtpServer) -> None:  # type: ignore[no-untyped-def]
    make_project(tmp_path)
    assert run_cli("init").exit_code == 0
    assert run_cli("contacts", "import", "contacts.csv").exit_code == 0
    env = {**ENV, "OUTREACH_SMTP_URL": smtp.url}
    sent = run_cli(
        "campaigns",
        "send",
        "campaigns/news.yaml",
        "--test-to",
        "me@example.org",
        "--contact",
        "maria@makati.example.com",
        env=env,
    )
    assert sent.exit_code == 0, sent.output
    assert "as maria@makati.example.com would get it (en)" in sent.output
    (msg,) = messages(smtp)
    assert "Maria Santos" in msg.get_body(("html",)).get_content()
    nobody = run_cli(
        "campaigns", "send", "campaigns/news.yaml", "--test-to", "me@example.org",
        "--contact", "nobody@example.org", env=env,
    )  # fmt: skip
    assert nobody.exit_code == 1 and "no contact nobody@example.org" in nobody.output
    alone = run_cli("campaigns", "send", "campaigns/news.yaml", "--contact", "x@example.org")
    assert alone.exit_code != 0 and "--contact goes with --test-to" in alone.output


# Item 11: an archived campaign that greets a field without a default.


def test_an_archived_campaign_printing_a_field_without_a_default_is_a_warning(
    tmp_path: Path,
) -> None:
    report = validated(tmp_path, campaign=CAMPAIGN + "archive: true\n")
    assert report.ok, report.errors
    (warning,) = [w for w in report.warnings if "archive" in w]
    assert "news.en.mjml:4:" in warning and "contact.organisation" in warning
    assert "/archive" in warning and "default(" in warning
    quiet = validated(tmp_path / "b", campaign=CAMPAIGN)
    assert not [w for w in quiet.warnings if "archive" in w]


# Item 12: attributes that some contacts do not have.


@pytest.mark.parametrize(
    "expression",
    [
        '{{ contact.attributes.position | default("") }}',
        '{{ contact.attributes.position | default("", true) }}',
        "{{ contact.attributes.get('position', '') | upper }}",
        '{{ contact.attributes.position ~ ", " if contact.attributes.position else "" }}',
        "{{ contact.attributes.position | default('') | upper }}",
    ],
)
def test_an_attribute_with_a_default_or_a_test_is_safe(tmp_path: Path, expression: str) -> None:
    report = validated(tmp_path, **{"news.en.mjml": NEWS_EN.replace("Dear", expression + " Dear")})
    assert report.ok, report.errors


@pytest.mark.parametrize(
    "expression",
    ["{{ contact.attributes.position }}", "{{ contact.attributes.position | upper }}"],
)
def test_an_attribute_printed_without_a_default_is_an_error_whose_fix_works(
    tmp_path: Path, expression: str
) -> None:
    report = validated(tmp_path, **{"news.en.mjml": NEWS_EN.replace("Dear", expression + " Dear")})
    (error,) = [str(e) for e in report.errors]
    assert "contact.attributes.get('position', '')" in error, error
    fix = error.split("write ")[1].split(" (")[0].split(", or")[0]
    fixed = validated(
        tmp_path / "fixed", **{"news.en.mjml": NEWS_EN.replace("Dear", fix + " Dear")}
    )
    assert fixed.ok, (fix, fixed.errors)


def test_a_contact_without_the_attribute_gets_the_default_when_sent(
    session: Session, db_url: str, tmp_path: Path
) -> None:
    settings = settings_for(db_url, tmp_path)
    template = NEWS_KO.replace(
        "님, 안녕하십니까.",
        '님{{ " (" ~ contact.attributes.position ~ ")" if contact.attributes.position else "" }}, 안녕하십니까.',
    )
    csv = (
        "email,name,organisation,country,language,membership,position\n"
        "kim@suwon.example.org,김수진,수원특례시,KR,ko,full,시장\n"
        "lee@busan.example.org,이영희,부산광역시,KR,ko,full,\n"
    )
    write(tmp_path / "contacts.csv", csv)
    path = make_project(tmp_path, **{"news.ko.mjml": template})
    write(tmp_path / "contacts.csv", csv)
    import_csv(session, tmp_path / "contacts.csv")
    send(path, settings, session)
    drain(settings, session)
    bodies = [
        email.message_from_bytes(p.read_bytes(), policy=policy.default)
        for p in (tmp_path / "outbox" / "news").glob("*.eml")
    ]
    html = [m.get_body(("html",)).get_content() for m in bodies]  # type: ignore[union-attr]
    assert len(html) == 2
    assert any("김수진님 (시장), 안녕하십니까." in h for h in html)
    assert any("이영희님, 안녕하십니까." in h for h in html)
