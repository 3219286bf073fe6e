"""What contacts typed never becomes active content or blocks a campaign (issue 14, 4).

Recipient values are data: they are escaped into the message, a `{{` in them is text, a
per-recipient link reaches an href only when it is http(s) or mailto, and a tracked link
that carries one is signed with the recipient's own value."""

from __future__ import annotations

import email
import re
from email import policy
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from outreach.campaigns import load_campaign
from outreach.compiler import compile_campaign
from outreach.config import Settings
from outreach.contacts import import_csv
from outreach.models import Contact, Delivery
from outreach.render import UnsafeLink, personalise
from outreach.tokens import Links, Tokens
from outreach.validate import validate_campaign
from tests.conftest import write
from tests.project import CAMPAIGN, CONTACTS, NEWS_EN, make_project
from tests.sending_helpers import drain, send, settings_for

SETTINGS = Settings(postal_address="Seoul", secret_key="9cNXWE6t_eLknMO08CWMIE_BPZaFX0Be0mAo1Uun")


def messages(tmp_path: Path) -> dict[str, email.message.EmailMessage]:
    found = {}
    for f in sorted((tmp_path / "outbox" / "news").glob("*.eml")):
        msg = email.message_from_bytes(f.read_bytes(), policy=policy.default)
        found[msg["To"].addresses[0].addr_spec] = msg
    return found


def html_of(msg: email.message.EmailMessage) -> str:
    return msg.get_body(("html",)).get_content()  # type: ignore[union-attr]


# 1. A `{{` typed by a contact is text, and never stops a campaign.


def test_a_contact_named_with_braces_does_not_block_validate_or_send(
    session: Session, db_url: str, tmp_path: Path
) -> None:
    path = make_project(tmp_path)
    write(tmp_path / "contacts.csv", CONTACTS.replace("Maria Santos", "{{ Maria }}"))
    import_csv(session, tmp_path / "contacts.csv")
    report = validate_campaign(path, SETTINGS, session)
    assert report.ok, report.errors
    settings = settings_for(db_url, tmp_path)
    assert send(path, settings, session).added == 3
    drain(settings, session)
    maria = messages(tmp_path)["maria@makati.example.com"]
    assert "Dear {{ Maria }} of Makati," in html_of(maria)
    assert maria["Subject"] == "News for {{ Maria }}"


def test_a_literal_brace_in_the_template_is_still_an_error(tmp_path: Path) -> None:
    broken = NEWS_EN.replace("<mj-text>Dear", "<mj-text>{{ '{{' }} Dear")
    path = make_project(tmp_path, **{"news.en.mjml": broken})
    report = validate_campaign(path, SETTINGS, None)
    assert any("literal '{{'" in e.message for e in report.errors), report.errors


# 2. A per-recipient URL reaches an href only when it is http(s) or mailto.

WEBSITE = NEWS_EN.replace(
    '<mj-button href="https://citynet-ap.org/">Visit</mj-button>',
    "<mj-button href=\"{{ contact.attributes.website | default('https://citynet-ap.org/', true) }}\">"
    "Your site</mj-button>",
)
SAFE = ["https://suwon.go.kr/", "HTTP://makati.gov.ph", "mailto:mayor@cebu.gov.ph"]
UNSAFE = [
    "javascript:alert(1)",
    "JavaScript:alert(document.cookie)",
    "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
    "vbscript:msgbox(1)",
    " javascript:alert(1)",
    "java\tscript:alert(1)",
    "java\nscript:alert(1)",
    "jav&#x61;script:alert(1)",
    "&#106;avascript:alert(1)",
    "\x01javascript:alert(1)",
    "https://ok.example.org/\x00",
    "//evil.example.org/",
    "www.suwon.go.kr",
]


def render_website(tmp_path: Path, website: str | None) -> str:
    path = make_project(tmp_path, **{"news.en.mjml": WEBSITE})
    compiled = compile_campaign(load_campaign(path), {"en"}, SETTINGS)
    attributes = {} if website is None else {"website": website}
    contact = {"email": "x@example.org", "name": "X", "organisation": "Y", "tags": []}
    rendered = personalise(
        compiled.personaliser(),
        compiled.variants["en"],
        {
            "contact": {**contact, "attributes": attributes},
            **Links("https://m.example.org", Tokens("k" * 32)).variables(1),
        },
    )
    return rendered.html


@pytest.mark.parametrize("website", SAFE)
def test_http_and_mailto_recipient_links_reach_the_message(tmp_path: Path, website: str) -> None:
    html = render_website(tmp_path, website)
    assert f'href="{website}"' in html


def test_the_default_stands_in_for_a_missing_value(tmp_path: Path) -> None:
    assert 'href="https://citynet-ap.org/"' in render_website(tmp_path, None)


@pytest.mark.parametrize("website", UNSAFE)
def test_any_other_recipient_link_never_reaches_the_message(tmp_path: Path, website: str) -> None:
    with pytest.raises(UnsafeLink) as caught:
        render_website(tmp_path, website)
    message = caught.value.message
    assert "http(s) or mailto" in message and "contact.attributes.website" in message
    assert not re.search(r"[\x00-\x1f]", message)  # printable in status and logs


def test_a_scheme_fixed_by_the_template_needs_no_check(tmp_path: Path) -> None:
    template = NEWS_EN.replace(
        'href="https://citynet-ap.org/"',
        "href=\"https://citynet-ap.org/members/{{ contact.attributes.slug | default('', true) }}\"",
    )
    path = make_project(tmp_path, **{"news.en.mjml": template})
    compiled = compile_campaign(load_campaign(path), {"en"}, SETTINGS)
    html = personalise(
        compiled.personaliser(),
        compiled.variants["en"],
        {
            "contact": {"email": "x@e.org", "organisation": "O", "attributes": {"slug": "java"}},
            **Links("https://m.example.org", Tokens("k" * 32)).variables(1),
        },
    ).html
    assert 'href="https://citynet-ap.org/members/java"' in html


UNSAFE_CSV = """email,name,organisation,language,website
good@suwon.example.org,Kim,Suwon,en,https://suwon.go.kr/
mail@cebu.example.org,Cebu,Cebu,en,mailto:mayor@cebu.gov.ph
js@evil.example.org,Eve,Evil,en,javascript:alert(1)
data@evil.example.org,Dee,Evil,en,"data:text/html,<script>alert(1)</script>"
entity@evil.example.org,Ent,Evil,en,jav&#x61;script:alert(1)
none@makati.example.org,Maria,Makati,en,
"""


def test_an_unsafe_recipient_link_fails_that_delivery_with_its_reason(
    session: Session, db_url: str, tmp_path: Path
) -> None:
    path = make_project(tmp_path, **{"news.en.mjml": WEBSITE})
    write(tmp_path / "contacts.csv", UNSAFE_CSV)
    import_csv(session, tmp_path / "contacts.csv")
    report = validate_campaign(path, SETTINGS, session)
    assert report.ok, report.errors
    warning = next(w for w in report.warnings if "contact.attributes.website" in w)
    assert "news.en.mjml:8:" in warning and "href" in warning
    assert "3 of 6 recipients" in warning
    settings = settings_for(db_url, tmp_path)
    send(path, settings, session)
    drain(settings, session)
    sent = messages(tmp_path)
    assert set(sent) == {
        "good@suwon.example.org",
        "mail@cebu.example.org",
        "none@makati.example.org",
    }
    for msg in sent.values():
        raw = msg.as_string().lower()
        assert "javascript" not in raw and "data:text" not in raw
    assert 'href="https://citynet-ap.org/"' in html_of(sent["none@makati.example.org"])
    session.expire_all()
    failed = {
        email: (state, text)
        for email, state, text in session.execute(
            select(Contact.email, Delivery.state, Delivery.last_text).join(
                Delivery, Delivery.contact_id == Contact.id
            )
        )
        if state != "sent"
    }
    assert set(failed) == {
        "js@evil.example.org",
        "data@evil.example.org",
        "entity@evil.example.org",
    }
    for state, text in failed.values():
        assert state == "failed"
        assert text is not None and "not an http(s) or mailto" in text


# 3. A tracked link that carries a recipient value is signed with that value.

REGION = NEWS_EN.replace(
    'href="https://citynet-ap.org/"',
    "href=\"https://citynet-ap.org/ref?r={{ contact.attributes.region | default('none', true) }}&amp;src=mail\"",
)
REGION_CSV = """email,name,organisation,language,region
kim@suwon.example.org,Kim,Suwon,en,east-asia
maria@makati.example.com,Maria,Makati,en,south-east asia & pacific
sato@yokohama.example.com,Sato,Yokohama,en,
"""


def test_a_tracked_link_with_a_recipient_value_is_signed_after_personalisation(
    session: Session, db_url: str, tmp_path: Path
) -> None:
    path = make_project(
        tmp_path, CAMPAIGN + "tracking: {clicks: true}\n", **{"news.en.mjml": REGION}
    )
    write(tmp_path / "contacts.csv", REGION_CSV)
    import_csv(session, tmp_path / "contacts.csv")
    settings = settings_for(db_url, tmp_path)
    send(path, settings, session)
    drain(settings, session)
    tokens = Tokens(settings.secret_key or "")
    expected = {
        "kim@suwon.example.org": "https://citynet-ap.org/ref?r=east-asia&src=mail",
        "maria@makati.example.com": "https://citynet-ap.org/ref?r=south-east asia & pacific&src=mail",
        "sato@yokohama.example.com": "https://citynet-ap.org/ref?r=none&src=mail",
    }
    for address, msg in messages(tmp_path).items():
        urls = []
        for token in re.findall(r"/c/([A-Za-z0-9._-]+)", html_of(msg)):
            _, url, _position = tokens.verify("click", token)
            urls.append(url)
        assert expected[address] in urls, urls
        assert not any("OUTR" in url for url in urls), urls


def test_previewing_a_contact_whose_link_is_unsafe_says_so_in_one_line(
    run_cli, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    make_project(tmp_path, **{"news.en.mjml": WEBSITE})
    write(tmp_path / "contacts.csv", UNSAFE_CSV)
    env = {"OUTREACH_POSTAL_ADDRESS": "Seoul"}
    assert run_cli("init").exit_code == 0
    assert run_cli("contacts", "import", "contacts.csv").exit_code == 0
    args = ("campaigns", "preview", "campaigns/news.yaml", "--contact")
    result = run_cli(*args, "js@evil.example.org", env=env)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "js@evil.example.org would get no message: href='javascript:alert(1)'" in result.output
    assert not (tmp_path / "preview").exists()
    assert run_cli(*args, "good@suwon.example.org", env=env).exit_code == 0


# 5. An address with non-ASCII characters before the @ (RFC 6531) needs SMTPUTF8, which
# outreach does not send: refused where addresses come in, and one clear failure for a
# contact stored before that.

UTF8_LOCAL = "김민지@suwon.example.org"


def test_an_address_that_needs_smtputf8_is_refused_at_import(
    session: Session, tmp_path: Path
) -> None:
    path = write(tmp_path / "c.csv", f"email,name\n{UTF8_LOCAL},Kim\nkim@suwon.example.org,K\n")
    result = import_csv(session, path)
    assert [e.line for e in result.errors] == [2]
    assert "non-ASCII characters before the @" in result.errors[0].reason
    assert "SMTPUTF8" in result.errors[0].reason
    assert session.scalar(select(Contact.email)) is None


def test_a_test_send_to_such_an_address_is_one_line(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    make_project(tmp_path)
    assert run_cli("init").exit_code == 0
    env = {"OUTREACH_POSTAL_ADDRESS": "Seoul"}
    result = run_cli("campaigns", "send", "campaigns/news.yaml", "--test-to", UTF8_LOCAL, env=env)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "non-ASCII characters before the @" in result.output
    assert not (tmp_path / "outbox").exists()


def test_a_stored_contact_with_such_an_address_fails_alone_with_the_reason(
    session: Session, db_url: str, tmp_path: Path
) -> None:
    path = make_project(tmp_path)
    import_csv(session, tmp_path / "contacts.csv")
    # As an import before this check stored it.
    session.add(Contact(email=UTF8_LOCAL, name="Kim", language="en", tags=[], attributes={}))
    session.commit()
    settings = settings_for(db_url, tmp_path)
    send(path, settings, session)
    drain(settings, session)
    assert len(messages(tmp_path)) == 3
    session.expire_all()
    state, text = session.execute(
        select(Delivery.state, Delivery.last_text)
        .join(Contact, Delivery.contact_id == Contact.id)
        .where(Contact.email == UTF8_LOCAL)
    ).one()
    assert state == "failed" and "non-ASCII characters before the @" in (text or "")
    assert "render error" not in (text or "")


def test_previewing_a_stored_contact_with_such_an_address_is_one_line(
    run_cli, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import create_engine

    make_project(tmp_path)
    assert run_cli("init").exit_code == 0
    with Session(create_engine(f"sqlite:///{tmp_path / 'outreach.db'}")) as stored:
        stored.add(Contact(email=UTF8_LOCAL, name="Kim", language="en", tags=[], attributes={}))
        stored.commit()
    env = {"OUTREACH_POSTAL_ADDRESS": "Seoul"}
    args = ("campaigns", "preview", "campaigns/news.yaml", "--contact", UTF8_LOCAL)
    result = run_cli(*args, env=env)
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert f"{UTF8_LOCAL} would get no message: " in result.output
    assert "non-ASCII characters before the @" in result.output


# 6. The view-online page of a contact whose value is an unsafe link (issue 21, 13): the
# site's error page, no traceback, nothing of the value quoted.


def test_viewing_online_a_message_with_an_unsafe_link_is_the_plain_error_page(
    session: Session, db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from outreach.web import create_app

    path = make_project(tmp_path, **{"news.en.mjml": WEBSITE})
    write(tmp_path / "contacts.csv", UNSAFE_CSV)
    import_csv(session, tmp_path / "contacts.csv")
    settings = settings_for(db_url, tmp_path)
    send(path, settings, session)
    drain(settings, session)
    ids = dict(
        session.execute(
            select(Contact.email, Delivery.id).join(Delivery, Delivery.contact_id == Contact.id)
        ).all()
    )
    session.commit()
    tokens = Tokens(settings.secret_key or "")
    app = create_app(settings, tmp_path)
    app.config["PROPAGATE_EXCEPTIONS"] = False  # as in production: an error is a page
    client = app.test_client()
    good = client.get(f"/v/{tokens.sign('view', ids['good@suwon.example.org'])}?lang=en")
    assert good.status_code == 200 and "https://suwon.go.kr/" in good.get_data(as_text=True)
    other_failure = client.get("/v/999999.forged?lang=en")
    with caplog.at_level("INFO"):
        for address in ("js@evil.example.org", "data@evil.example.org"):
            answer = client.get(f"/v/{tokens.sign('view', ids[address])}?lang=en")
            page = answer.get_data(as_text=True)
            assert answer.status_code == other_failure.status_code, (address, answer.status_code)
            assert page == other_failure.get_data(as_text=True)
            assert "javascript" not in page and "data:text" not in page
    logged = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    assert "Traceback" not in logged and "javascript" not in logged, logged
    assert not any(r.exc_info for r in caplog.records)
