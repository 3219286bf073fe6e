"""Recipients' pages: unsubscribe, preferences, click and open tracking, view online."""

from __future__ import annotations

import email
import re
from email import policy
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from outreach.models import Contact, Delivery, Event, Suppression
from outreach.suppressions import is_suppressed as _is_suppressed
from outreach.suppressions import suppress
from outreach.tokens import Tokens
from outreach.web import create_app
from tests.project import CAMPAIGN
from tests.sending_helpers import drain, project_with, send, settings_for

SECRET = "_6FuslupQUggb0oT5JRL-5S1KOu2C5jSHsLnhjAj"


@pytest.fixture
def sent(session: Session, db_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    """The example project sent to the outbox, with click and open tracking on."""
    settings = settings_for(db_url, tmp_path, secret_key=SECRET)
    path = project_with(
        tmp_path, session, campaign=CAMPAIGN + "tracking: {opens: true, clicks: true}\n"
    )
    send(path, settings, session)
    drain(settings, session)
    ids = {
        email_: did
        for did, email_ in session.execute(
            select(Delivery.id, Contact.email).join(Contact, Contact.id == Delivery.contact_id)
        )
    }
    session.commit()
    return settings, ids


@pytest.fixture
def client(sent) -> FlaskClient:  # type: ignore[no-untyped-def]
    settings, _ = sent
    return create_app(settings).test_client()


def is_suppressed(session: Session, address: str) -> bool:
    session.commit()  # end the test's read snapshot: the app wrote in between
    return _is_suppressed(session, address)


def token(kind: str, payload: object) -> str:
    return Tokens(SECRET).sign(kind, payload)


def events(session: Session, kind: str) -> int:
    session.commit()
    return session.scalar(select(func.count()).select_from(Event).where(Event.kind == kind)) or 0


def test_get_shows_a_korean_page_and_changes_nothing(client, sent, session: Session) -> None:  # type: ignore[no-untyped-def]
    _, ids = sent
    url = f"/u/{token('unsubscribe', ids['kim@suwon.example.org'])}"
    response = client.get(url)
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert '<html lang="ko">' in page and "수신거부하기" in page and "kim@suwon.example.org" in page
    assert "시티넷 사무국" in page  # who is writing
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    english = client.get(url + "?lang=en").get_data(as_text=True)
    assert '<html lang="en">' in english and "Unsubscribe" in english
    assert not is_suppressed(session, "kim@suwon.example.org")
    maria = client.get(f"/u/{token('unsubscribe', ids['maria@makati.example.com'])}")
    assert '<html lang="en">' in maria.get_data(as_text=True)


@pytest.mark.parametrize("multipart", [False, True])
def test_one_click_post(client, sent, session: Session, multipart: bool) -> None:  # type: ignore[no-untyped-def]
    _, ids = sent
    url = f"/u/{token('unsubscribe', ids['kim@suwon.example.org'])}"
    kwargs = (
        {"data": {"List-Unsubscribe": "One-Click"}, "content_type": "multipart/form-data"}
        if multipart
        else {
            "data": "List-Unsubscribe=One-Click",
            "content_type": "application/x-www-form-urlencoded",
        }
    )
    first = client.post(url, **kwargs)
    assert first.status_code == 200 and "Location" not in first.headers
    assert "Set-Cookie" not in first.headers
    assert "수신거부되었습니다" in first.get_data(as_text=True)
    assert is_suppressed(session, "kim@suwon.example.org")
    second = client.post(url, **kwargs)
    assert second.status_code == 200
    assert events(session, "unsubscribe") == 1
    row = session.scalar(select(Suppression))
    assert row is not None and row.reason == "unsubscribed" and row.detail == "one-click"


def test_confirm_form_then_undo_and_language(client, sent, session: Session) -> None:  # type: ignore[no-untyped-def]
    _, ids = sent
    did = ids["kim@suwon.example.org"]
    done = client.post(f"/u/{token('unsubscribe', did)}", data={"confirm": "yes"})
    assert done.status_code == 200 and is_suppressed(session, "kim@suwon.example.org")
    page = done.get_data(as_text=True)
    preferences = re.search(r'action="(/p/[^"]+)"', page)
    assert preferences is not None
    undone = client.post(preferences.group(1), data={"action": "resubscribe"})
    assert undone.status_code == 200 and "다시 받도록 설정했습니다" in undone.get_data(as_text=True)
    assert not is_suppressed(session, "kim@suwon.example.org")
    assert events(session, "resubscribe") == 1
    saved = client.post(preferences.group(1), data={"action": "language", "language": "en"})
    assert saved.status_code == 200 and "Your language is saved" in saved.get_data(as_text=True)
    session.commit()
    assert (
        session.scalar(
            select(Contact.language).where(
                Contact.id.isnot(None), Contact.email == "kim@suwon.example.org"
            )
        )
        == "en"
    )


def test_a_bounce_is_not_the_recipients_to_undo(client, sent, session: Session) -> None:  # type: ignore[no-untyped-def]
    _, ids = sent
    suppress(session, "kim@suwon.example.org", "bounced")
    session.commit()
    url = f"/p/{token('preferences', ids['kim@suwon.example.org'])}"
    page = client.get(url).get_data(as_text=True)
    assert 'id="resubscribe"' not in page and "반송" in page
    client.post(url, data={"action": "resubscribe"})
    assert is_suppressed(session, "kim@suwon.example.org")


@pytest.mark.parametrize(
    "path",
    [
        "/u/not-a-token",
        "/u/{valid}x",
        "/u/{truncated}",
        "/p/{valid}",
        "/v/{valid}",
        "/c/{valid}",
        "/u/{unknown}",
    ],
)
def test_forged_altered_truncated_and_unknown_tokens(
    client, sent, session: Session, path: str
) -> None:  # type: ignore[no-untyped-def]
    _, ids = sent
    valid = token("unsubscribe", ids["kim@suwon.example.org"])  # wrong kind for /p, /v, /c
    url = path.format(valid=valid, truncated=valid[:-6], unknown=token("unsubscribe", 99999))
    for method in ("get", "post"):
        if method == "post" and not url.startswith(("/u/", "/p/")):
            continue
        response = getattr(client, method)(url, data={"List-Unsubscribe": "One-Click"})
        assert response.status_code == 400, (url, method)
        text = response.get_data(as_text=True)
        assert "잘못된 링크" in text and "not valid" in text
    assert session.scalar(select(func.count()).select_from(Suppression)) == 0
    assert events(session, "unsubscribe") == 0


def test_bad_requests_change_nothing(client, sent, session: Session) -> None:  # type: ignore[no-untyped-def]
    _, ids = sent
    url = f"/u/{token('unsubscribe', ids['kim@suwon.example.org'])}"
    assert client.post(url).status_code == 400  # no body
    assert client.post(url, data={"List-Unsubscribe": "Yes-Please"}).status_code == 400
    assert (
        client.post(
            url, data="x=" + "a" * 70_000, content_type="application/x-www-form-urlencoded"
        ).status_code
        == 413
    )
    assert client.put(url).status_code == 405
    assert client.delete(url).status_code == 405
    assert client.get("/nowhere").status_code == 404
    assert not is_suppressed(session, "kim@suwon.example.org")


def test_click_redirects_only_to_the_signed_url(client, sent, session: Session) -> None:  # type: ignore[no-untyped-def]
    settings, ids = sent
    outbox = sorted((settings.outbox / "news").glob("*.eml"))
    kim = next(f for f in outbox if b"kim@suwon" in f.read_bytes())
    html = (
        email.message_from_bytes(kim.read_bytes(), policy=policy.default)
        .get_body(("html",))
        .get_content()
    )
    tracked = re.findall(r'href="http://127\.0\.0\.1:8000(/c/[^"]+)"', html)
    assert len(tracked) == 2, "both article links are tracked"
    assert "/u/" in html and "/c/" not in re.search(r'href="([^"]*/u/[^"]*)"', html).group(1)
    response = client.get(tracked[0])
    assert response.status_code == 302
    assert response.headers["Location"] == "https://citynet-ap.org/news/colombo"
    assert events(session, "click") == 1
    evil = token("click", [ids["kim@suwon.example.org"], "javascript:alert(1)"])
    assert client.get(f"/c/{evil}").status_code == 400
    altered = tracked[0][:-3] + ("AAA" if not tracked[0].endswith("AAA") else "BBB")
    assert client.get(altered).status_code == 400
    assert events(session, "click") == 1


def test_open_pixel(client, sent, session: Session) -> None:  # type: ignore[no-untyped-def]
    _, ids = sent
    response = client.get(f"/o/{token('open', ids['kim@suwon.example.org'])}.gif")
    assert response.status_code == 200 and response.mimetype == "image/gif"
    assert response.data.startswith(b"GIF89a")
    assert events(session, "open") == 1
    assert client.get("/o/forged.gif").status_code == 200  # a pixel never breaks a message
    assert events(session, "open") == 1


def test_view_online_and_healthz(client, sent) -> None:  # type: ignore[no-untyped-def]
    _, ids = sent
    page = client.get(f"/v/{token('view', ids['kim@suwon.example.org'])}")
    assert page.status_code == 200 and "김수진님, 안녕하십니까." in page.get_data(as_text=True)
    assert "unsafe-inline" in page.headers["Content-Security-Policy"]
    assert client.get("/healthz").status_code == 200


def test_test_message_links_change_nothing(client, session: Session) -> None:  # type: ignore[no-untyped-def]
    response = client.post(f"/u/{token('unsubscribe', 0)}", data={"List-Unsubscribe": "One-Click"})
    text = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "test message" in text.lower() or "시험 발송" in text
    assert session.scalar(select(func.count()).select_from(Suppression)) == 0


def test_serve_needs_a_secret_key(run_cli, tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert run_cli("init").exit_code == 0
    (tmp_path / "outreach.toml").unlink()  # as if the key init generated were lost
    result = run_cli("serve")
    assert result.exit_code == 2 and "OUTREACH_SECRET_KEY is not set" in result.output


def test_a_link_scanners_head_request_is_not_a_click_nor_an_open(
    client, sent, session: Session
) -> None:  # type: ignore[no-untyped-def]
    _, ids = sent
    did = ids["kim@suwon.example.org"]
    link = f"/c/{token('click', [did, 'https://citynet-ap.org/news/colombo'])}"
    head = client.head(link)
    assert head.status_code == 302 and head.headers["Location"].endswith("/news/colombo")
    assert events(session, "click") == 0
    assert client.get(link).status_code == 302 and events(session, "click") == 1
    pixel = f"/o/{token('open', did)}.gif"
    assert client.head(pixel).status_code == 200 and events(session, "open") == 0
    assert client.get(pixel).status_code == 200 and events(session, "open") == 1


def test_view_online_says_it_is_shown_with_todays_details(client, sent, session: Session) -> None:  # type: ignore[no-untyped-def]
    _, ids = sent
    url = f"/v/{token('view', ids['kim@suwon.example.org'])}"
    page = client.get(url).get_data(as_text=True)
    assert "오늘 기준의 정보로 다시 보여 드립니다" in page and "김수진님" in page
    english = client.get(f"/v/{token('view', ids['maria@makati.example.com'])}")
    assert "shown again with your details as they are today" in english.get_data(as_text=True)
    kim = session.scalar(select(Contact).where(Contact.email == "kim@suwon.example.org"))
    assert kim is not None
    kim.name = "김수진 (개명)"
    session.commit()
    assert "김수진 (개명)님" in client.get(url).get_data(as_text=True)


def test_every_page_word_comes_from_the_catalogs(client, sent) -> None:  # type: ignore[no-untyped-def]
    from outreach import web

    assert not hasattr(web, "TEXT"), "page text belongs in outreach/translations/*.po"
    _, ids = sent
    url = f"/p/{token('preferences', ids['kim@suwon.example.org'])}"
    assert "수신 설정" in client.get(url).get_data(as_text=True)
    assert "Your preferences" in client.get(url + "?lang=en").get_data(as_text=True)
