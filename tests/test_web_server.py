"""The recipient's side end to end: a real message from the real pipeline, a real
`outreach serve` process, a plain HTTP client and headless Chromium."""

from __future__ import annotations

import email
import re
import shutil
from collections.abc import Iterator
from email import policy
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from outreach.models import Contact, Delivery, Suppression
from tests.conftest import write
from tests.project import CAMPAIGN
from tests.sending_helpers import drain, project_with, send, settings_for
from tests.smtp_server import SmtpServer, start_server
from tests.web_helpers import Server, request

pytestmark = pytest.mark.integration


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = start_server()
    yield server
    server.stop()


def sent_to(smtp: SmtpServer, address: str) -> email.message.EmailMessage:
    (raw,) = [r.data for r in smtp.handler.received if r.rcpt == address]
    return email.message_from_bytes(raw, policy=policy.default)  # type: ignore[return-value]


def unsubscribe_url(message: email.message.EmailMessage) -> str:
    match = re.match(r"<([^>]+)>", message["List-Unsubscribe"])
    assert match is not None
    return match.group(1)


def test_one_click_from_a_real_message_against_a_real_server(
    session: Session, db_url: str, tmp_path: Path, smtp: SmtpServer
) -> None:
    log = tmp_path / "serve.log"
    settings = settings_for(db_url, tmp_path, smtp_url=smtp.url)
    path = project_with(tmp_path, session)
    with Server(settings, log) as server:
        from dataclasses import replace

        settings = replace(settings, base_url=server.url)
        send(path, settings, session)
        drain(settings, session)
        message = sent_to(smtp, "kim@suwon.example.org")
        url = unsubscribe_url(message)
        assert url.startswith(server.url + "/u/")
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        # A mail scanner following the link changes nothing.
        status, _, body = request(url)
        assert status == 200 and "수신거부하기".encode() in body
        # What Gmail does (RFC 8058): a POST with this exact body, no cookies.
        status, headers, body = request(
            url,
            "POST",
            b"List-Unsubscribe=One-Click",
            {"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert status == 200 and "Location" not in headers
        assert headers["Referrer-Policy"] == "no-referrer"
        again = request(
            url,
            "POST",
            b"List-Unsubscribe=One-Click",
            {"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert again[0] == 200
        forged = request(
            url[:-4] + "AAAA",
            "POST",
            b"List-Unsubscribe=One-Click",
            {"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert forged[0] == 400
    # The next campaign skips that contact.
    write(tmp_path / "campaigns" / "next.yaml", CAMPAIGN.replace("name: news", "name: next"))
    session.commit()
    result = send(tmp_path / "campaigns" / "next.yaml", settings, session)
    assert result.added == 2
    drain(settings, session, "next")
    assert not [r for r in smtp.handler.received if r.rcpt == "kim@suwon.example.org"][1:]
    kim = session.scalar(select(Contact.id).where(Contact.email == "kim@suwon.example.org"))
    assert (
        session.scalar(select(func.count()).select_from(Delivery).where(Delivery.contact_id == kim))
        == 1
    )


needs_chromium = pytest.mark.skipif(
    not (Path("/usr/bin/chromium").exists() or shutil.which("chromium")),
    reason="Chromium is not installed (apt-get install chromium; .ci/run installs it)",
)


@needs_chromium
@pytest.mark.browser
def test_a_person_unsubscribes_in_korean_and_comes_back(
    sqlite_url: str, tmp_path: Path, smtp: SmtpServer
) -> None:
    from dataclasses import replace

    from playwright.sync_api import sync_playwright

    from outreach.db import reader_sessionmaker
    from outreach.preview import CHROMIUM, CHROMIUM_ARGS
    from outreach.suppressions import is_suppressed

    settings = settings_for(sqlite_url, tmp_path, smtp_url=smtp.url)
    with reader_sessionmaker(sqlite_url)() as session:
        path = project_with(tmp_path, session)
        with Server(settings, tmp_path / "serve.log") as server:
            settings = replace(settings, base_url=server.url)
            send(path, settings, session)
            drain(settings, session)
            message = sent_to(smtp, "kim@suwon.example.org")
            html = message.get_body(("html",)).get_content()
            link = re.search(r'href="([^"]+/u/[^"]+)"', html)
            assert link is not None and "수신거부" in html
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 390, "height": 800})
                page.goto(link.group(1).replace("&amp;", "&"))
                assert page.locator("html").get_attribute("lang") == "ko"
                assert page.locator("h1").inner_text() == "수신거부"
                session.commit()
                assert not is_suppressed(session, "kim@suwon.example.org")
                page.click("#unsubscribe")
                page.wait_for_selector("#done")
                assert page.locator("#done").inner_text() == "수신거부되었습니다"
                session.commit()
                assert is_suppressed(session, "kim@suwon.example.org")
                page.screenshot(path=str(tmp_path / "unsubscribed.png"))
                page.click("#preferences")
                page.wait_for_selector("#resubscribe")
                page.click("#resubscribe")
                page.wait_for_selector("#notice")
                assert "다시 받도록" in page.locator("#notice").inner_text()
                browser.close()
            session.commit()
            assert not is_suppressed(session, "kim@suwon.example.org")


def _mail_to(smtp: SmtpServer, address: str, n: int) -> list[email.message.EmailMessage]:
    from tests.workers import wait_for

    wait_for(lambda: smtp.handler.count_for(address) >= n, 60, f"{n} messages to {address}")
    return [
        email.message_from_bytes(r.data, policy=policy.default)  # type: ignore[misc]
        for r in smtp.handler.received
        if r.rcpt == address
    ]


@needs_chromium
@pytest.mark.browser
def test_a_person_subscribes_in_korean_confirms_from_the_mail_and_is_welcomed(
    sqlite_url: str, tmp_path: Path, smtp: SmtpServer
) -> None:
    """Real gunicorn, a real worker process and a real SMTP server: the web process only
    queues, the worker mails; Chromium does what the person does."""
    from dataclasses import replace

    from playwright.sync_api import sync_playwright

    from outreach.db import reader_sessionmaker
    from outreach.preview import CHROMIUM, CHROMIUM_ARGS
    from outreach.welcome import install
    from tests.subscribe_helpers import subscribe_project
    from tests.workers import Worker

    welcome = subscribe_project(tmp_path)
    address = "yeon.lee@gangneung.example.kr"
    settings = settings_for(
        sqlite_url,
        tmp_path,
        smtp_url=smtp.url,
        queue_url=f"sqlite:///{tmp_path / 'queue.db'}",
    )
    log = tmp_path / "processes.log"
    with (
        reader_sessionmaker(sqlite_url)() as session,
        Server(settings, log) as server,
        Worker(settings, log, OUTREACH_BASE_URL=server.url),
    ):
        settings = replace(settings, base_url=server.url)
        install(welcome, settings, session)
        project_with(tmp_path, session)  # the news campaign's audience, for the archive
        write(tmp_path / "campaigns" / "news.yaml", CAMPAIGN + "archive: true\n")
        send(tmp_path / "campaigns" / "news.yaml", settings, session)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            context = browser.new_context(locale="ko-KR", viewport={"width": 390, "height": 844})
            page = context.new_page()
            requested: list[str] = []
            page.on("request", lambda r: requested.append(r.url))
            page.goto(server.url + "/subscribe")
            assert page.locator("html").get_attribute("lang") == "ko"
            page.fill("#email", address)
            page.fill("#name", "이서연")
            page.fill("#organisation", "강릉시")
            page.check("#consent")
            page.click("#subscribe")
            page.wait_for_selector("h1")
            assert page.locator("h1").inner_text() == "받은편지함을 확인해 주세요"
            page.screenshot(path=str(tmp_path / "subscribe-sent.png"))
            (confirmation,) = _mail_to(smtp, address, 1)
            assert confirmation["Subject"] == "구독 확인 요청: 시티넷 사무국"
            html = confirmation.get_body(("html",)).get_content()  # type: ignore[union-attr]
            link = re.search(r'href="([^"]+/confirm/[^"]+)"', html)
            assert link is not None and link.group(1).startswith(server.url)
            page.goto(link.group(1))
            page.wait_for_selector("#confirm")
            page.click("#confirm")
            page.wait_for_selector("#done")
            assert page.locator("#done").inner_text() == "구독이 확인되었습니다"
            assert "시티넷 사무국" in page.locator("#result").inner_text()
            page.screenshot(path=str(tmp_path / "confirmed.png"))
            _, welcomed = _mail_to(smtp, address, 2)
            assert welcomed["Subject"].startswith("시티넷에 오신 것을 환영합니다")
            assert "이서연님, 안녕하십니까." in welcomed.get_body(("html",)).get_content()  # type: ignore[union-attr]
            # The archive: nothing is fetched from anywhere but this server.
            requested.clear()
            page.goto(server.url + "/archive")
            assert page.locator("h1").inner_text() == "시티넷 뉴스레터 보관함"
            page.click("#entries a")
            page.wait_for_selector("#subscribe")
            assert "담당자님, 안녕하십니까." in page.content()
            page.screenshot(path=str(tmp_path / "archive.png"), full_page=True)
            assert requested and all(u.startswith(server.url) for u in requested), requested
            browser.close()
        session.commit()
        assert [m for m in smtp.handler.received if m.rcpt == address][2:] == []


def test_other_spellings_of_a_link_neither_redirect_with_nor_log_the_token(
    session: Session, db_url: str, tmp_path: Path, smtp: SmtpServer
) -> None:
    """/u//TOKEN was answered 308 to /u/TOKEN (the token in a Location header and, in clear,
    in the log), /U/TOKEN a 404 logged in clear."""
    log = tmp_path / "serve.log"
    settings = settings_for(db_url, tmp_path, smtp_url=smtp.url)
    path = project_with(tmp_path, session)
    with Server(settings, log) as server:
        from dataclasses import replace

        settings = replace(settings, base_url=server.url)
        send(path, settings, session)
        drain(settings, session)
        url = unsubscribe_url(sent_to(smtp, "kim@suwon.example.org"))
        token = url.rsplit("/", 1)[1]
        for spelling in (
            f"/u//{token}",
            f"/u///{token}?lang=ko",
            f"/U/{token}",
            f"/P//{token}",
            f"/v//{token}",
            f"/u/{token}/",
        ):
            for method in ("GET", "POST"):
                data = b"List-Unsubscribe=One-Click" if method == "POST" else None
                status, headers, body = request(server.url + spelling, method, data)
                assert not 300 <= status < 400, (spelling, method, status)
                assert token not in headers.get("Location", ""), (spelling, headers)
                assert token.encode() not in body, spelling
        assert request(url)[0] == 200  # the link as mailed still works
        # Werkzeug reads a path's leading slashes as one: //u/TOKEN is the link itself.
        status, headers, _ = request(f"{server.url}//u/{token}")
        assert status == 200 and "Location" not in headers
    session.commit()
    assert session.scalar(select(func.count()).select_from(Suppression)) == 0
    text = log.read_text()
    assert "GET /u/[token]" in text and token not in text, text[-3000:]
