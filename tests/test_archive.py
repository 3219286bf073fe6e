"""The public archive: archived campaigns, once sent, for a neutral reader, and their feed."""

from __future__ import annotations

import re
from pathlib import Path
from xml.etree import ElementTree

import pytest
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from outreach.config import Settings
from outreach.web import create_app
from tests.conftest import write
from tests.project import CAMPAIGN
from tests.sending_helpers import drain, project_with, send, settings_for
from tests.subscribe_helpers import SUBSCRIBE

ATOM = "{http://www.w3.org/2005/Atom}"
TRACKED = CAMPAIGN + "tracking: {opens: true, clicks: true}\narchive: true\n"


@pytest.fixture
def archived(session: Session, db_url: str, tmp_path: Path) -> tuple[Settings, FlaskClient]:
    settings = settings_for(db_url, tmp_path, base_url="https://mail.citynet-ap.org")
    path = project_with(tmp_path, session, campaign=TRACKED)
    write(tmp_path / "campaigns" / "subscribe.yaml", SUBSCRIBE)
    send(path, settings, session)
    drain(settings, session)
    # Sent but not archived, and archived but never sent: neither is shown.
    private = write(
        tmp_path / "campaigns" / "private.yaml", CAMPAIGN.replace("name: news", "name: private")
    )
    send(private, settings, session)
    write(
        tmp_path / "campaigns" / "draft.yaml",
        CAMPAIGN.replace("name: news", "name: draft") + "archive: true\n",
    )
    session.commit()
    return settings, create_app(settings, tmp_path).test_client()


def test_the_archive_lists_sent_archived_campaigns_only(archived) -> None:  # type: ignore[no-untyped-def]
    _, client = archived
    page = client.get("/archive?lang=ko")
    text = page.get_data(as_text=True)
    assert page.status_code == 200 and '<html lang="ko">' in text
    assert "시티넷 뉴스레터 보관함" in text and 'href="/archive/news?lang=ko"' in text
    assert "private" not in text and "/archive/draft" not in text
    assert 'id="subscribe"' in text and 'href="/subscribe?lang=ko"' in text
    assert "Set-Cookie" not in page.headers
    english = client.get("/archive", headers={"Accept-Language": "en"}).get_data(as_text=True)
    assert "CityNet newsletter archive" in english and "News for you" in english


def test_an_archived_campaign_is_shown_to_a_neutral_reader(archived) -> None:  # type: ignore[no-untyped-def]
    _, client = archived
    for lang, greeting in (("ko", "담당자님, 안녕하십니까."), ("en", "Dear colleague")):
        page = client.get(f"/archive/news?lang={lang}")
        html = page.get_data(as_text=True)
        assert page.status_code == 200 and greeting in html
        # No contact's data, no tracking, no personal links.
        for person in ("김수진", "Maria", "kim@suwon", "수원특례시", "Makati"):
            assert person not in html
        assert not re.search(r"/(c|o|u|p|v)/[A-Za-z0-9_.-]{8,}", html)
        assert 'href="https://citynet-ap.org/news/colombo"' in html  # straight, untracked
        assert 'width="1" height="1"' not in html  # the open pixel is gone
        assert "fonts.googleapis.com" not in html  # nor MJML's web-font requests
        assert 'id="subscribe"' in html and "OUTR" not in html
    assert client.get("/archive/private").status_code == 404
    assert client.get("/archive/draft").status_code == 404
    assert client.get("/archive/" + "x" * 300).status_code == 404


def test_the_atom_feed(archived) -> None:  # type: ignore[no-untyped-def]
    _, client = archived
    response = client.get("/archive/feed.xml?lang=ko")
    assert response.status_code == 200 and response.mimetype == "application/atom+xml"
    feed = ElementTree.fromstring(response.data)
    assert feed.tag == f"{ATOM}feed"
    assert feed.findtext(f"{ATOM}author/{ATOM}name") == "시티넷 CityNet"  # RFC 4287
    (entry,) = feed.findall(f"{ATOM}entry")
    assert entry.findtext(f"{ATOM}title") == "시티넷 소식 — 담당자님"
    link = entry.find(f"{ATOM}link")
    assert (
        link is not None and link.get("href") == "https://mail.citynet-ap.org/archive/news?lang=ko"
    )
    summary = entry.findtext(f"{ATOM}summary") or ""
    assert "콜롬보 배수로" in summary and "김수진" not in summary


def test_nothing_archived_yet(sqlite_url: str, tmp_path: Path) -> None:
    client = create_app(settings_for(sqlite_url, tmp_path), tmp_path).test_client()
    page = client.get("/archive?lang=en").get_data(as_text=True)
    assert "Nothing has been published here yet." in page
    assert 'id="subscribe"' not in page  # no form configured, no link to it
    feed = ElementTree.fromstring(client.get("/archive/feed.xml").data)
    assert feed.findall(f"{ATOM}entry") == []


def shipped_newsletter_archived(session: Session, db_url: str, tmp_path: Path) -> FlaskClient:
    """The shipped project with its December newsletter marked archive: true and sent."""
    import shutil

    from outreach.contacts import import_csv
    from tests.conftest import ROOT

    settings = settings_for(db_url, tmp_path, base_url="https://mail.citynet-ap.org")
    shutil.copytree(ROOT / "templates", tmp_path / "templates")
    shutil.copytree(ROOT / "campaigns", tmp_path / "campaigns")
    shutil.copy(ROOT / "examples" / "contacts.csv", tmp_path / "contacts.csv")
    newsletter = tmp_path / "campaigns" / "2026-12-newsletter.yaml"
    newsletter.write_text(newsletter.read_text(encoding="utf-8") + "archive: true\n", "utf-8")
    import_csv(session, tmp_path / "contacts.csv")
    send(newsletter, settings, session)
    session.commit()
    return create_app(settings, tmp_path).test_client()


def test_the_shipped_newsletter_reads_well_to_a_neutral_reader(
    session: Session, db_url: str, tmp_path: Path
) -> None:
    """The shipped footer names the recipient's address; in the archive there is none, and
    no sentence may be left with a gap where it was."""
    client = shipped_newsletter_archived(session, db_url, tmp_path)
    for lang, sentence in (("en", "This email was sent by"), ("ko", "이 메일은 ")):
        page = client.get(f"/archive/2026-12-newsletter?lang={lang}").get_data(as_text=True)
        assert sentence in page
        assert "sent to  by" not in page and "이 메일은  주소로" not in page
