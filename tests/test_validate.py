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
from tests.project import CAMPAIGN, LAYOUT, NEWS_EN, NEWS_KO, make_project

SETTINGS = Settings(postal_address="Seoul", secret_key="9cNXWE6t_eLknMO08CWMIE_BPZaFX0Be0mAo1Uun")


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
            "unknown key audience.exclud: did you mean exclude?",
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
        (
            lambda c: c.replace(
                'from: "시티넷 사무국 <news@citynet-ap.org>"',
                'from: "시티넷 <홍보@citynet-ap.org>"',
            ),
            "from: '시티넷 <홍보@citynet-ap.org>' has non-ASCII characters before the @",
            6,
        ),
        (
            lambda c: c.replace("reply_to: info@citynet-ap.org", "reply_to: 문의@citynet-ap.org"),
            "reply_to: '문의@citynet-ap.org' has non-ASCII characters before the @",
            7,
        ),
        (lambda c: c + "send_at: 2026-12-01T09:00:00\n", "give a time zone", 17),
        (lambda c: c + "rate: fast\n", "is not a rate", 17),
        (lambda c: c + "context2: {}\n", "unknown key context2", 17),
        (
            lambda c: c + "tracking: {pixels: true}\n",
            "unknown key tracking.pixels; allowed keys: opens, clicks",
            17,
        ),
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
    assert result.output.count("ok ") == 5  # four campaigns and topics.yaml


# Issue 13, items 9-13: validate tells you what recipients will see.


def validated(tmp_path: Path, session: Session | None, csv: str | None = None, **kw: str):  # type: ignore[no-untyped-def]
    path = make_project(tmp_path, kw.pop("campaign", CAMPAIGN), **kw)
    if csv is not None:
        write(tmp_path / "contacts.csv", csv)
    if session is not None:
        import_csv(session, tmp_path / "contacts.csv")
    return validate_campaign(path, SETTINGS, session)


def test_a_language_without_a_variant_is_a_warning_with_its_count(
    tmp_path: Path, session: Session
) -> None:
    rows = "".join(f"k{i}@suwon.example.org,김{i},Suwon,KR,ko,full\n" for i in range(6))
    csv = "email,name,organisation,country,language,membership\n" + rows
    csv += "m@makati.example.com,Maria,Makati,PH,en,full\nj@y.example.com,Sato,Y,JP,ja-JP,full\n"
    path = make_project(tmp_path)
    (tmp_path / "templates" / "news.ko.mjml").unlink()
    write(tmp_path / "contacts.csv", csv)
    import_csv(session, tmp_path / "contacts.csv")
    report = validate_campaign(path, SETTINGS, session)
    assert report.ok, report.errors
    one(
        report.warnings,
        "news.yaml: 6 contacts speak ko; there is no ko variant, they get en (default_language)",
    )
    one(
        report.warnings,
        "news.yaml: 1 contact speaks ja; there is no ja variant, they get en (default_language)",
    )
    assert not any("speak en" in w or "speaks en" in w for w in report.warnings)


NO_NAME = """email,name,organisation,country,language,membership
a@x.example.org,,Makati,PH,en,full
b@x.example.org,,Cebu,PH,en,full
c@x.example.org,Maria,Quezon,PH,en,full
d@x.example.org,,수원,KR,ko,full
"""


def test_an_empty_recipient_value_without_a_default_is_a_warning(
    tmp_path: Path, session: Session
) -> None:
    template = NEWS_EN.replace(
        '{{ contact.name | default("colleague", true) }}', "{{ contact.name }}"
    )
    report = validated(tmp_path, session, NO_NAME, **{"news.en.mjml": template})
    assert report.ok, report.errors
    warning = one(report.warnings, "contact.name")
    # The ko variant has a default: only the two nameless English readers count.
    assert "news.en.mjml:4:" in warning and "2 of 3 recipients" in warning
    assert "Dear {{ contact.name }} of" in warning and "default(" in warning
    # Every contact has an organisation: no warning for it.
    assert not any("contact.organisation is empty" in w for w in report.warnings)


def test_a_default_without_true_does_not_cover_an_empty_value(
    tmp_path: Path, session: Session
) -> None:
    template = NEWS_EN.replace(
        '{{ contact.name | default("colleague", true) }}',
        '{{ contact.name | default("colleague") }}',
    )
    report = validated(tmp_path, session, NO_NAME, **{"news.en.mjml": template})
    warning = one(report.warnings, "contact.name")
    assert "2 of 3" in warning and "true)" in warning


def test_an_empty_attribute_without_a_default_is_counted(tmp_path: Path, session: Session) -> None:
    csv = "email,name,language,region\na@x.example.org,A,en,east-asia\nb@x.example.org,B,en,\n"
    template = NEWS_EN.replace(
        '{{ contact.name | default("colleague", true) }}',
        "{{ contact.name }} ({{ contact.attributes.region | default('') }})",
    )
    report = validated(tmp_path, session, csv, **{"news.en.mjml": template})
    # An explicit default (even an empty one) is a choice the author made.
    assert not any("contact.attributes.region is" in w for w in report.warnings), report.warnings


def test_an_error_only_in_the_korean_template_is_reported_once(tmp_path: Path) -> None:
    broken = NEWS_KO.replace("{{ article.title.ko }}", "{{ article.titel.ko }}")
    errors = errors_for(tmp_path, **{"news.ko.mjml": broken})
    assert len(errors) == 1, errors
    assert "news.ko.mjml:6:" in errors[0] and "(ko)" in errors[0]


def test_a_recipient_error_only_in_the_korean_template_is_reported_once(
    tmp_path: Path, session: Session
) -> None:
    broken = NEWS_KO.replace("{{ contact.name", "{{ contact.attributes.position }} {{ contact.name")
    errors = errors_for(tmp_path, session=session, **{"news.ko.mjml": broken})
    assert len(errors) == 1, errors
    assert "news.ko.mjml:4:" in errors[0] and "ko" in errors[0] and "en)" not in errors[0]


def test_errors_in_both_variants_are_all_reported(tmp_path: Path) -> None:
    en = NEWS_EN.replace("{{ article.title.en }}", "{{ article.titel.en }}")
    ko = NEWS_KO.replace("{{ article.title.ko }}", "{{ article.titel.ko }}")
    errors = errors_for(tmp_path, **{"news.en.mjml": en, "news.ko.mjml": ko})
    one(errors, "news.en.mjml:6:")
    one(errors, "news.ko.mjml:6:")
    en2 = NEWS_EN.replace("{{ contact.organisation }}", "{{ contact.attributes.x }}")
    ko2 = NEWS_KO.replace("님,", "{{ contact.attributes.y }}님,")
    errors = errors_for(tmp_path, **{"news.en.mjml": en2, "news.ko.mjml": ko2})
    assert "en" in one(errors, "contact.attributes.x") and "news.en.mjml:4:" in errors[0]
    assert "news.ko.mjml:4:" in one(errors, "contact.attributes.y")


def test_an_error_in_the_shared_layout_is_reported_once_for_both_languages(
    tmp_path: Path,
) -> None:
    layout = LAYOUT.replace("{{ postal_address }}", "{{ postal_adress }}")
    errors = errors_for(tmp_path, **{"layouts__base.mjml": layout})
    assert len(errors) == 1, errors
    assert "layouts/base.mjml:5:" in errors[0] and "postal_adress" in errors[0]


def test_an_unclosed_mj_text_has_its_line(tmp_path: Path) -> None:
    broken = NEWS_EN.replace("{{ contact.organisation }},</mj-text>", "{{ contact.organisation }},")
    error = one(errors_for(tmp_path, **{"news.en.mjml": broken}), "<mj-text>")
    assert "news.en.mjml:4:" in error and "never closed" in error


def test_a_stray_closing_tag_has_its_line(tmp_path: Path) -> None:
    broken = NEWS_EN.replace("</mj-column></mj-section>", "</mj-column></mj-column></mj-section>")
    error = one(errors_for(tmp_path, **{"news.en.mjml": broken}), "</mj-column>")
    assert "news.en.mjml:9:" in error


def test_an_unknown_mj_tag_has_its_line_and_the_near_one(tmp_path: Path) -> None:
    broken = NEWS_EN.replace("<mj-column>", "<mj-colum>").replace("</mj-column>", "</mj-colum>")
    error = one(errors_for(tmp_path, **{"news.en.mjml": broken}), "unknown MJML tag <mj-colum>")
    assert "news.en.mjml:3:" in error and "mj-column" in error


def test_an_unknown_mj_tag_in_the_layout_is_found_there(tmp_path: Path) -> None:
    layout = LAYOUT.replace("<mj-text>", "<mj-txet>").replace("</mj-text>", "</mj-txet>")
    error = one(errors_for(tmp_path, **{"layouts__base.mjml": layout}), "<mj-txet>")
    assert "layouts/base.mjml:4:" in error and "mj-text" in error


def test_an_empty_link_in_a_template_has_its_line(tmp_path: Path) -> None:
    broken = NEWS_EN.replace('href="https://citynet-ap.org/"', 'href=""')
    error = one(errors_for(tmp_path, **{"news.en.mjml": broken}), "broken link")
    assert "news.en.mjml:8:" in error


def test_a_non_http_link_from_the_context_points_at_the_campaign_file(tmp_path: Path) -> None:
    campaign = CAMPAIGN.replace(
        "url: https://citynet-ap.org/news/suwon", "url: ftp://citynet-ap.org/news/suwon"
    )
    errors = errors_for(tmp_path, campaign)
    error = one(errors, "ftp://citynet-ap.org/news/suwon")
    assert "news.yaml:16:" in error and "context.articles.1.url" in error
    assert len([e for e in errors if "ftp://" in e]) == 1, errors  # once, for en and ko


@pytest.mark.parametrize(
    ("edit", "line", "hint"),
    [
        (
            lambda c: c.replace("  include: [everyone]", "  include: [everyone]\n exclude: []"),
            10,
            "indentation?",
        ),
        (lambda c: c.replace("reply_to: info", "  reply_to: info"), 7, "indentation?"),
        # A key without its colon: the line of that key, not the next one the parser read.
        (lambda c: c.replace("reply_to: info", "reply_to info"), 7, "a key without its colon?"),
    ],
)
def test_a_yaml_syntax_error_hints_at_the_cause(tmp_path: Path, edit, line: int, hint: str) -> None:  # type: ignore[no-untyped-def]
    error = one(errors_for(tmp_path, edit(CAMPAIGN)), "YAML syntax error")
    assert hint in error and f"news.yaml:{line}:" in error


def test_an_unknown_key_suggests_the_near_one(tmp_path: Path) -> None:
    errors = errors_for(tmp_path, CAMPAIGN.replace("reply_to:", "replyto:"))
    error = one(errors, "replyto")
    assert "news.yaml:7: unknown key replyto: did you mean reply_to?" in error
    tracking = errors_for(tmp_path, CAMPAIGN + "tracking: {click: true}\n")
    assert "unknown key tracking.click: did you mean clicks?" in one(tracking, "tracking.click")


def test_a_missing_postal_address_is_a_warning(tmp_path: Path) -> None:
    path = make_project(tmp_path)
    report = validate_campaign(path, Settings(secret_key=SETTINGS.secret_key), None)
    assert report.ok
    one(report.warnings, "OUTREACH_POSTAL_ADDRESS")
    assert not any(
        "OUTREACH_POSTAL_ADDRESS" in w for w in validate_campaign(path, SETTINGS, None).warnings
    )


def test_preview_says_which_variant_it_used(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    make_project(tmp_path)
    env = {"OUTREACH_POSTAL_ADDRESS": "Seoul"}
    result = run_cli("campaigns", "preview", "campaigns/news.yaml", "--lang", "fr", env=env)
    assert result.exit_code == 0, result.output
    assert "there is no fr variant; previewing en (default_language)" in result.output
    assert (tmp_path / "preview" / "news.en.html").exists()
    ko = run_cli("campaigns", "preview", "campaigns/news.yaml", "--lang", "ko-KR", env=env)
    assert "no ko-KR variant" not in ko.output and "there is no" not in ko.output


@pytest.mark.parametrize("command", ["preview", "validate"])
def test_help_examples_are_not_squashed_onto_one_line(run_cli, command: str) -> None:  # type: ignore[no-untyped-def]
    import re

    result = run_cli("campaigns", command, "--help")
    example = result.output.split("Example:", 1)[1].split("Options:", 1)[0]
    lines = [line for line in example.splitlines() if line.strip()]
    assert lines and all(not re.search(r"\S {3,}\S", line) for line in lines), lines


def test_a_tracked_link_with_an_undefined_value_is_reported_where_it_is_written(
    tmp_path: Path,
) -> None:
    template = NEWS_EN.replace(
        'href="https://citynet-ap.org/"',
        'href="https://citynet-ap.org/?r={{ contact.attributes.region }}"',
    )
    errors = errors_for(
        tmp_path, CAMPAIGN + "tracking: {clicks: true}\n", **{"news.en.mjml": template}
    )
    assert len(errors) == 1, errors
    assert "news.en.mjml:8:" in errors[0] and "region" in errors[0]


def test_a_send_at_that_is_no_time_shows_the_format(tmp_path: Path) -> None:
    path = make_project(tmp_path, CAMPAIGN + "send_at: tomorrow\n")
    report = validate_campaign(path, SETTINGS, None)
    assert [e.message for e in report.errors] == [
        "send_at: 'tomorrow' is not a time: write e.g. 2026-12-01T09:00:00+09:00"
    ]


def test_a_variant_nobody_in_the_audience_reads_is_still_checked(
    session: Session, tmp_path: Path
) -> None:
    """The default variant goes to anyone whose language changes after the send (the
    preferences page) and to new languages: a typo in it is an error with a database too,
    not only without one."""
    broken = NEWS_EN.replace("contact.organisation }}", "contact.organisaton }}")
    path = make_project(tmp_path, **{"news.en.mjml": broken})
    write(tmp_path / "contacts.csv", "email,name,language\nkim@suwon.example.org,김수진,ko\n")
    import_csv(session, tmp_path / "contacts.csv")
    report = validate_campaign(path, SETTINGS, session)
    assert report.languages == {"ko": 1}
    error = one([str(e) for e in report.errors], "organisaton")
    assert "news.en.mjml:4:" in error, error


def test_previewing_a_broken_variant_is_one_line(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    broken = NEWS_EN.replace("contact.organisation }}", "contact.organisaton }}")
    make_project(tmp_path, **{"news.en.mjml": broken})
    write(tmp_path / "contacts.csv", "email,name,language\nkim@suwon.example.org,김수진,ko\n")
    assert run_cli("init").exit_code == 0
    assert run_cli("contacts", "import", "contacts.csv").exit_code == 0
    env = {"OUTREACH_POSTAL_ADDRESS": "Seoul"}
    result = run_cli("campaigns", "preview", "campaigns/news.yaml", "--lang", "en", env=env)
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert "news.en.mjml:4:" in result.output


def test_a_misspelt_contact_field_suggests_the_field_not_a_default(tmp_path: Path) -> None:
    """A default would hide the typo from everyone: the near field is the fix."""
    typo = NEWS_KO.replace(
        '{{ contact.name | default("담당자", true) }}', "{{ contact.organization }}"
    )
    error = one(errors_for(tmp_path, **{"news.ko.mjml": typo}), "organization")
    assert "did you mean contact.organisation?" in error, error
    assert "default(" not in error and "dict object" not in error
    unknown = NEWS_KO.replace('{{ contact.name | default("담당자", true) }}', "{{ contact.rank }}")
    error = one(errors_for(tmp_path, **{"news.ko.mjml": unknown}), "contact.rank")
    assert "contact.attributes.rank" in error and "dict object" not in error, error


def test_a_problem_found_twice_in_one_variant_names_its_language_once(tmp_path: Path) -> None:
    twice = NEWS_KO.replace(
        "{% endfor %}", '{% endfor %}\n  <mj-text><a href="">a</a> <a href="#">b</a></mj-text>'
    )
    error = one(errors_for(tmp_path, **{"news.ko.mjml": twice}), "broken link")
    assert error.endswith("(ko)"), error


def test_a_nested_key_without_its_colon_is_reported_on_its_line(tmp_path: Path) -> None:
    """`  include [everyone]` is text where keys were expected: not pydantic's "valid
    dictionary" but the line and the likely mistake."""
    errors = errors_for(tmp_path, CAMPAIGN.replace("  include: [everyone]", "  include [everyone]"))
    error = one(errors, "audience")
    assert "news.yaml:9:" in error and "a key without its colon?" in error, error
    assert "valid dictionary" not in error


def test_a_segment_on_opens_of_a_campaign_that_does_not_track_them_is_a_warning(
    tmp_path: Path,
) -> None:
    """`opened: news` matches nobody when news sends no open pixel: say so, instead of a
    follow-up that quietly goes to no one (or, excluded, to everyone)."""
    make_project(tmp_path)
    segments = tmp_path / "campaigns" / "segments.yaml"
    segments.write_text(
        segments.read_text()
        + "openers:\n  where: {opened: news}\nclickers:\n  where: {clicked: {campaign: news}}\n",
        "utf-8",
    )
    followup = CAMPAIGN.replace("name: news", "name: followup").replace(
        "include: [everyone]", "include: [everyone]\n  exclude: [openers, clickers]"
    )
    path = write(tmp_path / "campaigns" / "followup.yaml", followup)
    report = validate_campaign(path, SETTINGS, None)
    assert report.ok, report.errors
    opened = one(report.warnings, "openers")
    assert "opened: news matches nobody" in opened and "does not track opens" in opened
    assert "does not track clicks" in one(report.warnings, "clickers")
    # Tracked: no warning.
    news = tmp_path / "campaigns" / "news.yaml"
    news.write_text(news.read_text() + "tracking: {opens: true, clicks: true}\n", "utf-8")
    report = validate_campaign(path, SETTINGS, None)
    assert not [w for w in report.warnings if "matches nobody" in w], report.warnings
