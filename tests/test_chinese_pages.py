"""Simplified Chinese (zh-Hans) readers end to end: a real `outreach serve`, a real worker and
SMTP server, and headless Chromium doing what the person does."""

from __future__ import annotations

import email
import re
import shutil
from collections.abc import Iterator
from dataclasses import replace
from email import policy
from pathlib import Path

import pytest

from tests.sending_helpers import drain, project_with, send, settings_for
from tests.smtp_server import SmtpServer, start_server
from tests.subscribe_helpers import SUBSCRIBE
from tests.web_helpers import Server, request

pytestmark = [pytest.mark.integration, pytest.mark.browser]

needs_chromium = pytest.mark.skipif(
    not (Path("/usr/bin/chromium").exists() or shutil.which("chromium")),
    reason="Chromium is not installed (apt-get install chromium; .ci/run installs it)",
)

CONTACTS = """email,name,organisation,country,language,membership
kim@suwon.example.org,김수진,수원특례시,KR,ko,full
wang@wuhan.example.cn,王芳,武汉市人民政府,CN,zh-CN,prospective
"""

SUBSCRIBE_ZH = SUBSCRIBE + (
    '    zh-Hans: "本人同意通过电子邮件接收CityNet的通讯和活动邀请，并可随时退订。"\n'
)


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = start_server()
    yield server
    server.stop()


def _font_of(page, selector: str) -> str:  # type: ignore[no-untyped-def]
    return str(page.eval_on_selector(selector, "e => getComputedStyle(e).fontFamily"))


@needs_chromium
def test_a_reader_in_china_unsubscribes_in_simplified_chinese(
    sqlite_url: str, tmp_path: Path, smtp: SmtpServer
) -> None:
    from playwright.sync_api import sync_playwright

    from outreach.db import reader_sessionmaker
    from outreach.preview import CHROMIUM, CHROMIUM_ARGS
    from outreach.suppressions import is_suppressed

    settings = settings_for(sqlite_url, tmp_path, smtp_url=smtp.url)
    with reader_sessionmaker(sqlite_url)() as session:
        path = project_with(tmp_path, session, csv=CONTACTS)
        with Server(settings, tmp_path / "serve.log") as server:
            settings = replace(settings, base_url=server.url)
            send(path, settings, session)
            drain(settings, session)
            (raw,) = [r.data for r in smtp.handler.received if r.rcpt == "wang@wuhan.example.cn"]
            message = email.message_from_bytes(raw, policy=policy.default)
            url = re.match(r"<([^>]+)>", message["List-Unsubscribe"]).group(1)  # type: ignore[union-attr]
            # A Traditional-Chinese browser is not what decides: the contact's own zh-CN is.
            status, _, body = request(url, headers={"Accept-Language": "zh-TW"})
            assert status == 200 and b'lang="zh-Hans"' in body
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 390, "height": 800})
                page.goto(url)
                assert page.locator("html").get_attribute("lang") == "zh-Hans"
                assert page.locator("h1").inner_text() == "退订"
                assert "Noto Sans CJK SC" in _font_of(page, "h1")
                page.click("#unsubscribe")
                page.wait_for_selector("#done")
                assert page.locator("#done").inner_text() == "您已成功退订"
                assert "已在等待发送的邮件也不再发送" in page.content()
                page.screenshot(path=str(tmp_path / "unsubscribed.zh.png"))
                session.commit()
                assert is_suppressed(session, "wang@wuhan.example.cn")
                page.click("#preferences")
                page.wait_for_selector("#resubscribe")
                assert page.locator("html").get_attribute("lang") == "zh-Hans"
                page.click("#resubscribe")
                page.wait_for_selector("#notice")
                assert page.locator("#notice").inner_text().strip() == "您将重新接收我们的邮件。"
                browser.close()
            session.commit()
            assert not is_suppressed(session, "wang@wuhan.example.cn")


@needs_chromium
def test_a_reader_in_china_subscribes_and_confirms_in_simplified_chinese(
    sqlite_url: str, tmp_path: Path, smtp: SmtpServer
) -> None:
    from playwright.sync_api import sync_playwright

    from outreach.preview import CHROMIUM, CHROMIUM_ARGS
    from tests.conftest import write
    from tests.project import make_project
    from tests.test_web_server import _mail_to
    from tests.workers import Worker

    make_project(tmp_path)
    write(tmp_path / "campaigns" / "subscribe.yaml", SUBSCRIBE_ZH)
    address = "li.na@chengdu.example.cn"
    settings = settings_for(
        sqlite_url,
        tmp_path,
        smtp_url=smtp.url,
        queue_url=f"sqlite:///{tmp_path / 'queue.db'}",
    )
    log = tmp_path / "processes.log"
    with (
        Server(settings, log) as server,
        Worker(settings, log, OUTREACH_BASE_URL=server.url),
        sync_playwright() as p,
    ):
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        # Chromium sends Accept-Language from its locale: zh-CN picks the zh-Hans catalog.
        context = browser.new_context(locale="zh-CN", viewport={"width": 390, "height": 844})
        page = context.new_page()
        page.goto(server.url + "/subscribe")
        assert page.locator("html").get_attribute("lang") == "zh-Hans"
        assert page.locator("h1").inner_text() == "订阅我们的邮件"
        assert "本人同意通过电子邮件接收CityNet" in page.content()
        assert page.locator("#language").input_value() == "zh-Hans"
        assert "Noto Sans CJK SC" in _font_of(page, "body")
        page.fill("#email", address)
        page.fill("#name", "李娜")
        page.fill("#organisation", "成都市人民政府外事办公室")
        page.check("#consent")
        page.click("#subscribe")
        page.wait_for_selector("h1")
        assert page.locator("h1").inner_text() == "请查收邮件"
        (confirmation,) = _mail_to(smtp, address, 1)
        assert confirmation["Subject"] == "请确认订阅：시티넷 사무국"
        html = confirmation.get_body(("html",)).get_content()  # type: ignore[union-attr]
        assert 'lang="zh-Hans"' in html and "Noto Sans CJK SC" in html
        assert "有人申请通过此地址接收" in html
        link = re.search(r'href="([^"]+/confirm/[^"]+)"', html)
        assert link is not None
        page.goto(link.group(1))
        page.wait_for_selector("#confirm")
        assert page.locator("html").get_attribute("lang") == "zh-Hans"
        page.click("#confirm")
        page.wait_for_selector("#done")
        assert page.locator("#done").inner_text() == "订阅已确认"
        assert "李娜" in page.content() or address in page.content()
        page.screenshot(path=str(tmp_path / "confirmed.zh.png"))
        browser.close()


def test_the_language_a_chinese_reader_gets_from_the_address_bar_and_browser(
    sqlite_url: str, tmp_path: Path
) -> None:
    from tests.conftest import write
    from tests.project import make_project

    make_project(tmp_path)
    write(tmp_path / "campaigns" / "subscribe.yaml", SUBSCRIBE_ZH)
    settings = settings_for(sqlite_url, tmp_path)
    with Server(settings, tmp_path / "serve.log") as server:

        def lang_of(query: str = "", accept: str = "") -> str:
            headers = {"Accept-Language": accept} if accept else {}
            status, _, body = request(server.url + "/subscribe" + query, headers=headers)
            assert status == 200
            found = re.search(rb'<html lang="([^"]+)"', body)
            assert found is not None
            return found.group(1).decode()

        assert lang_of("?lang=zh") == "zh-Hans"
        assert lang_of("?lang=zh-Hans") == "zh-Hans"
        assert lang_of(accept="zh-CN,zh;q=0.9") == "zh-Hans"
        assert lang_of(accept="zh-SG") == "zh-Hans"
        # Traditional readers are not served Simplified: their next language, else English.
        assert lang_of(accept="zh-TW,zh;q=0.9,ko;q=0.5") == "ko"
        assert lang_of(accept="zh-HK") == "en"
        assert lang_of("?lang=zh-TW", accept="ko") == "ko"
