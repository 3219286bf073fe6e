"""One test per thing `outreach campaigns validate` must catch, with file, line and fix."""

from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from outreach.config import Settings
from outreach.contacts import import_csv
from outreach.models import Campaign, Delivery
from outreach.validate import validate_campaign
from tests.conftest import write
from tests.project import CAMPAIGN, NEWS_EN, make_project

SETTINGS = Settings(postal_address="Seoul", secret_key="k-0123456789abcdef0123456789abcdef")


def errors_for(
    tmp_path: Path, campaign: str = CAMPAIGN, session: Session | None = None, **templates: str
) -> list[str]:
    path = make_project(tmp_path, campaign, **templates)
    if session is not None:
        import_csv(session, tmp_path / "contacts.csv")
    report = validate_campaign(path, SETTINGS, session)
    return [str(e) for e in report.errors]


def one(errors: list[str], fragment: str) -> str:
    found = [e for e in errors if fragment in e]
    assert found, f"{fragment!r} not in {errors}"
    return found[0]


def test_the_example_project_is_clean(tmp_path: Path) -> None:
    assert errors_for(tmp_path) == []


@pytest.mark.parametrize(
    ("edit", "fragment", "line"),
    [
        (
            lambda c: c.replace("template: news", "template: news\ntemplat: x"),
            "unknown key templat",
            3,
        ),
        (
            lambda c: c.replace("include: [everyone]", "include: [everyone, nobodies]"),
            "unknown segment 'nobodies' in audience.include",
            9,
        ),
        (
            lambda c: c.replace("audience:", "audience:\n  exclud: [x]"),
            "unknown key audience.exclud; allowed keys: include, exclude",
            9,
        ),
        (
            lambda c: c.replace(
                'from: "시티넷 사무국 <news@citynet-ap.org>"', "from: not-an-address"
            ),
            "from: 'not-an-address' is not a valid address",
            6,
        ),
        (
            lambda c: c.replace("reply_to: info@citynet-ap.org", "reply_to: info@"),
            "reply_to: 'info@' is not a valid address",
            7,
        ),
        (lambda c: c + "send_at: 2026-12-01T09:00:00\n", "give a time zone", 17),
        (lambda c: c + "rate: fast\n", "is not a rate", 17),
        (lambda c: c + "context2: {}\n", "unknown key context2", 17),
        (lambda c: c.replace("subject:\n", "subject: ''\nx_subject:\n"), "the subject is empty", 3),
        (
            lambda c: c.replace("  articles:", "  contact: 1\n  articles:"),
            "'contact' is a reserved template variable",
            12,
        ),
        (lambda c: c.replace("audience:", "audience: [\n"), "YAML syntax error", None),
    ],
)
def test_campaign_file_errors(tmp_path: Path, edit, fragment: str, line: int | None) -> None:  # type: ignore[no-untyped-def]
    error = one(errors_for(tmp_path, edit(CAMPAIGN)), fragment)
    assert "campaigns/news.yaml" in error
    if line is not None:
        assert f"news.yaml:{line}:" in error


def test_missing_variant_for_a_language_in_the_audience(tmp_path: Path, session: Session) -> None:
    campaign = CAMPAIGN.replace("default_language: en", "default_language: ja")
    error = one(errors_for(tmp_path, campaign, session), "default_language ja has no template")
    assert "news.yaml:" in error


def test_missing_template_entirely(tmp_path: Path) -> None:
    error = one(
        errors_for(tmp_path, CAMPAIGN.replace("template: news", "template: newz")), "no template"
    )
    assert "newz.mjml" in error and "news.yaml:2:" in error


def test_jinja_syntax_error_has_template_and_line(tmp_path: Path) -> None:
    broken = NEWS_EN.replace("{% endfor %}", "{% endfor")
    error = one(errors_for(tmp_path, **{"news.en.mjml": broken}), "news.en.mjml:")
    assert ":7:" in error or ":8:" in error


def test_undefined_campaign_variable(tmp_path: Path) -> None:
    broken = NEWS_EN.replace("{{ article.title.en }}", "{{ article.titel.en }}")
    error = one(errors_for(tmp_path, **{"news.en.mjml": broken}), "titel")
    assert "news.en.mjml:6:" in error


def test_undefined_recipient_variable(tmp_path: Path) -> None:
    broken = NEWS_EN.replace("{{ contact.organisation }}", "{{ contact.attributes.position }}")
    error = one(errors_for(tmp_path, **{"news.en.mjml": broken}), "position")
    assert "news.en.mjml:4:" in error and "default(" in error


def test_recipient_value_in_a_block_tag(tmp_path: Path) -> None:
    broken = NEWS_EN.replace("<mj-text>Dear", "{% if contact.name %}x{% endif %}<mj-text>Dear")
    error = one(errors_for(tmp_path, **{"news.en.mjml": broken}), "per-recipient value")
    assert "news.en.mjml:4:" in error


def test_mjml_error(tmp_path: Path) -> None:
    broken = NEWS_EN.replace("</mj-column></mj-section>", "</mj-section>")
    one(errors_for(tmp_path, **{"news.en.mjml": broken}), "MJML")


def test_unknown_mj_tag(tmp_path: Path) -> None:
    broken = NEWS_EN.replace("<mj-button", "<mj-buton").replace("</mj-button>", "</mj-buton>")
    one(errors_for(tmp_path, **{"news.en.mjml": broken}), "unknown MJML tag <mj-buton>")


@pytest.mark.parametrize("href", ["javascript:alert(1)", "/relative/path", "#", ""])
def test_bad_links(tmp_path: Path, href: str) -> None:
    broken = NEWS_EN.replace('href="https://citynet-ap.org/"', f'href="{href}"')
    errors = errors_for(tmp_path, **{"news.en.mjml": broken})
    assert any("not an http(s) address" in e or "broken link" in e for e in errors), errors


def test_missing_unsubscribe_link(tmp_path: Path) -> None:
    layout = "<mjml><mj-body>{% block content %}{% endblock %}</mj-body></mjml>"
    one(errors_for(tmp_path, **{"layouts__base.mjml": layout}), "no unsubscribe link")


def test_empty_subject(tmp_path: Path) -> None:
    campaign = CAMPAIGN.replace(
        "en: \"News for {{ contact.name | default('you', true) }}\"", 'en: "{{ contact.name }}"'
    )
    one(errors_for(tmp_path, campaign), "subject renders empty")


def test_empty_audience_is_a_warning(tmp_path: Path, session: Session) -> None:
    path = make_project(tmp_path, CAMPAIGN.replace("include: [everyone]", "include: [nobody]"))
    import_csv(session, tmp_path / "contacts.csv")
    report = validate_campaign(path, SETTINGS, session)
    assert report.ok and report.audience_size == 0
    assert any("audience is empty" in w for w in report.warnings)


def test_cli_validate_and_preview(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    make_project(tmp_path)
    env = {"OUTREACH_POSTAL_ADDRESS": "Seoul"}
    assert run_cli("init").exit_code == 0
    assert run_cli("contacts", "import", "contacts.csv").exit_code == 0
    ok = run_cli("campaigns", "validate", env=env)
    assert ok.exit_code == 0, ok.output
    assert "3 recipients (languages: en 2, ko 1)" in ok.output
    preview = run_cli(
        "campaigns",
        "preview",
        "campaigns/news.yaml",
        "--contact",
        "kim@suwon.example.org",
        "--eml",
        "out/kim.eml",
        env=env,
    )
    assert preview.exit_code == 0, preview.output
    html = (tmp_path / "preview" / "news.ko.html").read_text(encoding="utf-8")
    assert "김수진님" in html
    assert "김수진님" in (tmp_path / "preview" / "news.ko.txt").read_text(encoding="utf-8")
    import email
    from email import policy

    msg = email.message_from_bytes(
        (tmp_path / "out" / "kim.eml").read_bytes(), policy=policy.default
    )
    assert msg["Subject"] == "시티넷 소식 — 김수진님"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    en = run_cli(
        "campaigns", "preview", "campaigns/news.yaml", "--lang", "en", "-o", "en.html", env=env
    )
    assert en.exit_code == 0 and "Dear Sample Contact" in (tmp_path / "en.html").read_text()
    write(
        tmp_path / "campaigns" / "broken.yaml", CAMPAIGN.replace("template: news", "templat: news")
    )
    bad = run_cli("campaigns", "validate", env=env)
    assert bad.exit_code == 1
    assert "broken.yaml:2: unknown key templat" in bad.output
    assert "1 of 2 campaign files have errors" in bad.output and "Traceback" not in bad.output
    refused = run_cli("campaigns", "preview", "campaigns/broken.yaml", env=env)
    assert refused.exit_code == 1 and not (tmp_path / "preview" / "broken.en.html").exists()


def test_validate_writes_nothing(tmp_path: Path, session: Session) -> None:
    errors_for(tmp_path, session=session)
    assert session.scalar(select(func.count()).select_from(Campaign)) == 0
    assert session.scalar(select(func.count()).select_from(Delivery)) == 0


def test_shipped_campaigns_validate(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import shutil

    from tests.conftest import ROOT

    for folder in ("campaigns", "templates", "examples"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    env = {"OUTREACH_POSTAL_ADDRESS": "CityNet Secretariat, Seoul"}
    assert run_cli("init").exit_code == 0
    assert run_cli("contacts", "import", "examples/contacts.csv").exit_code == 0
    result = run_cli("campaigns", "validate", env=env)
    assert result.exit_code == 0, result.output
    assert result.output.count("ok ") == 4
