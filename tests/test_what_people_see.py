"""What people see, as a demanding designer looks at it (issue 24): every web page a person
meets and the emails we send, in headless Chromium at a phone's width (375 px) and a
desktop's (1280 px), in Korean and English.

- Korean text never breaks inside a word: the computed `word-break` of every element holding
  Hangul is `keep-all`, on the pages and in the emails (inline there: clients drop <style>).
- axe-core finds no violation on any page, and nothing serious or critical in an email.
- The report's charts scale to a phone rather than being cropped.

One real `outreach serve`, one shipped project sent to the outbox, one Chromium."""

from __future__ import annotations

import email
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from outreach.config import Settings
from outreach.contacts import import_csv
from outreach.db import upgrade, writer_sessionmaker
from outreach.models import Contact, Delivery
from outreach.tokens import Tokens
from tests.axe import MISSING, SCRIPT
from tests.conftest import ROOT, write
from tests.sending_helpers import drain, send, settings_for
from tests.subscribe_helpers import SUBSCRIBE, confirm_link, html_of
from tests.test_preview_browser import needs_chromium
from tests.web_helpers import Server, request

pytestmark = [
    pytest.mark.browser,
    needs_chromium,
    pytest.mark.skipif(not SCRIPT.exists(), reason=MISSING),
]

WIDTHS = (375, 1280)
LANGS = ("ko", "en")
NEWSLETTER = "2026-12-newsletter"
SECRET = "_6FuslupQUggb0oT5JRL-5S1KOu2C5jSHsLnhjAj"

# Every element that holds Hangul, and how it may break; hidden text (a preheader) aside.
KOREAN_BREAKS = """() => {
  const found = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    if (!/[\\uac00-\\ud7a3]/.test(node.textContent)) continue;
    const element = node.parentElement;
    if (!element || !element.getClientRects().length) continue;
    const style = getComputedStyle(element);
    if (style.visibility === "hidden" || style.display === "none") continue;
    if (style.wordBreak !== "keep-all") {
      found.push(`${element.tagName.toLowerCase()} «${node.textContent.trim().slice(0, 24)}»: `
        + style.wordBreak);
    }
  }
  return found;
}"""

AXE = """async (options) => {
  const result = await axe.run(document, options);
  return result.violations.map(v => ({id: v.id, impact: v.impact,
    targets: v.nodes.slice(0, 3).map(n => n.target.join(" "))}));
}"""


@dataclass
class Site:
    server: Server
    settings: Settings
    tmp: Path
    # GET pages, by name: a path on the server.
    pages: dict[str, str] = field(default_factory=dict)
    # Answers to POSTs, by name: (path, form) posted with the reader's `lang`.
    posts: dict[str, tuple[str, dict[str, str]]] = field(default_factory=dict)
    emails: dict[str, str] = field(default_factory=dict)
    report: Path | None = None


def _message(path: Path) -> EmailMessage:
    return email.message_from_bytes(path.read_bytes(), policy=policy.default)  # type: ignore[return-value]


def _outbox(settings: Settings, campaign: str) -> list[EmailMessage]:
    assert settings.outbox is not None
    return [_message(p) for p in sorted((settings.outbox / campaign).glob("*.eml"))]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The shipped project, its newsletter archived and sent, the subscribe form open, a
    subscription asked for in each language, one reader unsubscribed."""
    import shutil

    from outreach.lifecycle import get_campaign
    from outreach.preview import build_preview
    from outreach.reports import build, render_html

    tmp = tmp_path_factory.mktemp("see")
    db_url = f"sqlite:///{tmp / 'outreach.db'}"
    upgrade(db_url)
    settings = settings_for(db_url, tmp, secret_key=SECRET)
    shutil.copytree(ROOT / "templates", tmp / "templates")
    shutil.copytree(ROOT / "campaigns", tmp / "campaigns")
    write(tmp / "campaigns" / "subscribe.yaml", SUBSCRIBE)
    newsletter = tmp / "campaigns" / f"{NEWSLETTER}.yaml"
    newsletter.write_text(newsletter.read_text("utf-8") + "archive: true\n", "utf-8")
    shutil.copy(ROOT / "examples" / "contacts.csv", tmp / "contacts.csv")
    # The membership letter as advertising: its legal footer is seen too.
    membership = tmp / "campaigns" / "2027-01-membership-korea.yaml"
    membership.write_text(membership.read_text("utf-8") + "advertising: true\n", "utf-8")
    factory = writer_sessionmaker(db_url)
    with Server(settings, tmp / "serve.log") as server:
        settings = replace(settings, base_url=server.url)
        with factory() as session:
            import_csv(session, tmp / "contacts.csv")
            send(newsletter, settings, session)
            drain(settings, session, NEWSLETTER)
            by_language = dict(
                session.execute(
                    select(Contact.language, Delivery.id)
                    .join(Contact, Contact.id == Delivery.contact_id)
                    .order_by(Delivery.id)
                ).all()
            )
            session.commit()
        found = Site(server, settings, tmp)
        tokens = Tokens(SECRET)
        ko, en = by_language["ko"], by_language["en"]
        gone = tokens.sign("unsubscribe", ko)
        # One reader leaves; opening the link again must say so, not offer the button again.
        status, _, _ = request(
            server.url + f"/u/{gone}",
            "POST",
            b"confirm=yes&leave=everything",
            {"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert status == 200
        found.pages.update(
            {
                "subscribe": "/subscribe",
                "unsubscribe": f"/u/{tokens.sign('unsubscribe', en)}",
                "already unsubscribed": f"/u/{gone}",
                "preferences": f"/p/{tokens.sign('preferences', ko)}",
                "preferences, subscribed": f"/p/{tokens.sign('preferences', en)}",
                "view online": f"/v/{tokens.sign('view', ko)}",
                "archive": "/archive",
                "archive copy": f"/archive/{NEWSLETTER}",
                "400": "/u/not-a-token",
                "404": "/no/such/page",
                "archive links": "/archive-links",
                "check inbox again": "/subscribe/sent",
            }
        )
        found.posts["unsubscribed"] = (f"/u/{gone}", {"confirm": "yes", "leave": "everything"})
        found.posts["subscribe, errors"] = ("/subscribe", {"email": "not an address"})
        # A subscription asked for in each language: the confirmation mails and pages.
        for lang in LANGS:
            address = f"new.{lang}@gangneung.example.kr"
            page = request(server.url + f"/subscribe?lang={lang}")[2].decode()
            token = re.search(r'name="token" value="([^"]+)"', page)
            assert token is not None
            form = {
                "token": token.group(1),
                "lang": lang,
                "email": address,
                "name": "이서연",
                "organisation": "강릉시",
                "language": lang,
                "consent": "yes",
            }
            status, _, body = request(
                server.url + "/subscribe",
                "POST",
                "&".join(f"{k}={v}" for k, v in form.items()).encode(),
                {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
            )
            assert status == 200, body.decode()
            found.emails[f"check inbox {lang}"] = body.decode()  # a page, set as content
        with factory() as session:
            drain(settings, session, "_confirmation")
            session.commit()
        confirmations = (
            [
                m
                for p in sorted(settings.outbox.glob("*/*.eml"))
                if "/confirm/" in html_of(m := _message(p))
            ]
            if settings.outbox
            else []
        )
        assert len(confirmations) == 2
        for message in confirmations:
            lang = "ko" if "new.ko@" in str(message["To"]) else "en"
            found.emails[f"confirmation email {lang}"] = html_of(message)
            path = confirm_link(message).removeprefix(server.url)
            found.pages[f"confirm ({lang} request)"] = path
            found.posts[f"confirmed ({lang} request)"] = (path, {})
        for message in _outbox(settings, NEWSLETTER):
            lang = (
                "ko" if "?lang=ko" in html_of(message) or "수신거부" in html_of(message) else "en"
            )
            found.emails.setdefault(f"newsletter email {lang}", html_of(message))
        with factory() as session:
            for name in ("2026-12-covid19-webinar", "2027-01-membership-korea"):
                path = tmp / "campaigns" / f"{name}.yaml"
                for lang in LANGS:
                    try:
                        preview = build_preview(path, settings, session, language=lang)
                    except Exception:  # a campaign without that language
                        continue
                    if preview.language == lang:
                        found.emails[f"{name} email {lang}"] = preview.rendered.html
            report = build(session, get_campaign(session, NEWSLETTER), timezone="Asia/Seoul")
            found.report = write(tmp / "report.html", render_html(report, ZoneInfo("Asia/Seoul")))
        # The inbox pages are pages, not emails.
        for lang in LANGS:
            found.posts[f"check inbox {lang}"] = (
                "",
                {"html": found.emails.pop(f"check inbox {lang}")},
            )
        yield found


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        from outreach.preview import CHROMIUM, CHROMIUM_ARGS

        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _tab(browser: Any, width: int, lang: str) -> Any:
    # bypass_csp: the pages allow no script, and axe is one.
    context = browser.new_context(
        viewport={"width": width, "height": 800},
        locale="ko-KR" if lang == "ko" else "en-US",
        extra_http_headers={"Accept-Language": "ko" if lang == "ko" else "en"},
        bypass_csp=True,
    )
    # Nothing leaves the machine: an email's web font or remote image is not fetched.
    context.route(
        re.compile(r"^(?!https?://127\.0\.0\.1[:/]|file:|data:|about:).*"),
        lambda route: route.abort(),
    )
    return context.new_page()


def _look(page: Any, *, everything: bool = True) -> tuple[list[str], list[str]]:
    """(elements with Hangul that may break mid-word, axe violations)."""
    breaks: list[str] = page.evaluate(KOREAN_BREAKS)
    page.add_script_tag(path=str(SCRIPT))
    violations = page.evaluate(AXE, {"resultTypes": ["violations"]})
    if not everything:
        violations = [v for v in violations if v["impact"] in ("serious", "critical")]
    return breaks, [f"{v['id']} ({v['impact']}): {v['targets']}" for v in violations]


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("lang", LANGS)
def test_every_page_keeps_korean_words_whole_and_passes_axe(
    site: Site, browser: Any, lang: str, width: int
) -> None:
    page = _tab(browser, width, lang)
    problems: dict[str, tuple[list[str], list[str]]] = {}
    for name, path in site.pages.items():
        # The error pages are reached without ?lang=: the browser's language decides.
        url = site.server.url + path + ("" if name in ("400", "404") else f"?lang={lang}")
        page.goto(url)
        problems[name] = _look(page)
        wide = page.evaluate("document.documentElement.scrollWidth")
        if wide > width:
            problems[name][1].append(f"wider than the screen: {wide} px")
    for name, (path, form) in site.posts.items():
        page.goto(site.server.url + "/healthz")  # the origin, for /static/page.css
        if "html" in form:
            html = form["html"]
        else:
            data = "&".join(f"{k}={v}" for k, v in {**form, "lang": lang}.items()).encode()
            html = request(
                site.server.url + path,
                "POST",
                data,
                {"Content-Type": "application/x-www-form-urlencoded"},
            )[2].decode()
        page.set_content(html)
        problems[name] = _look(page)
    failing = {name: found for name, found in problems.items() if found[0] or found[1]}
    assert failing == {}, json.dumps(failing, ensure_ascii=False, indent=1)


@pytest.mark.parametrize("width", WIDTHS)
def test_emails_keep_korean_words_whole_and_have_nothing_serious(
    site: Site, browser: Any, width: int
) -> None:
    page = _tab(browser, width, "ko")
    problems = {}
    for name, html in site.emails.items():
        page.set_content(html)
        problems[name] = _look(page, everything=False)
    failing = {name: found for name, found in problems.items() if found[0] or found[1]}
    assert failing == {}, json.dumps(failing, ensure_ascii=False, indent=1)


def test_the_report_reads_on_a_phone(site: Site, browser: Any) -> None:
    assert site.report is not None
    for width in WIDTHS:
        page = _tab(browser, width, "en")
        page.goto(site.report.as_uri())
        charts = page.evaluate(
            """() => [...document.querySelectorAll("svg")].map(svg => ({
                viewBox: svg.getAttribute("viewBox"),
                name: svg.getAttribute("aria-label") || svg.getAttribute("aria-labelledby"),
                right: svg.getBoundingClientRect().right}))"""
        )
        assert charts, "the report has charts"
        for chart in charts:
            assert chart["viewBox"] and chart["name"], chart
            assert chart["right"] <= width, chart  # scaled into the screen, not cropped
        # Scaled, but not past reading: every label at 11 px or more on the screen.
        small = page.evaluate(
            """() => [...document.querySelectorAll("svg text")].map(t => [t.textContent,
                parseFloat(getComputedStyle(t).fontSize) * t.ownerSVGElement.getScreenCTM().a])
                .filter(([, px]) => px < 11)"""
        )
        assert small == [], (width, small)
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        breaks, violations = _look(page)
        assert (breaks, violations) == ([], [])


def test_what_a_demanding_reader_also_checks(site: Site, browser: Any) -> None:
    page = _tab(browser, 375, "en")
    url = site.server.url
    # An unsubscribe link opened again says so, and offers no button to press again.
    page.goto(url + site.pages["already unsubscribed"] + "?lang=en")
    assert page.locator("#already").count() == 1 and page.locator("#unsubscribe").count() == 0
    # The subscribe form's invalid field turns red, and focus is on it.
    page.goto(url + "/subscribe?lang=en")
    page.fill("#email", "not an address")
    page.click("#subscribe")
    page.wait_for_selector("#error-email")
    assert page.evaluate("document.activeElement.id") == "email"
    red = page.evaluate("getComputedStyle(document.getElementById('email')).borderTopColor")
    assert red == "rgb(179, 38, 30)"
    # The language switch of "check your inbox" keeps that page, not an empty form.
    page.set_content(site.posts["check inbox en"][1]["html"])
    switch = page.locator("nav.lang a[hreflang=ko]").get_attribute("href")
    assert switch == "/subscribe/sent?lang=ko"
    page.goto(url + switch)
    assert page.locator("h1").inner_text() == "받은편지함을 확인해 주세요"
    # English browsers get the error page English first; the Korean line says it is Korean.
    page.goto(url + "/no/such/page")
    lines = page.locator("main p:not(.brand)").evaluate_all(
        "ps => ps.map(p => [p.lang, p.innerText])"
    )
    assert lines[0][0] == "" and lines[0][1].startswith("404: This request")
    assert lines[1][0] == "ko"
    # The archive copy's Preferences and Unsubscribe lead to a page that says where a
    # reader's own links are, not back to the copy.
    page.goto(url + site.pages["archive copy"] + "?lang=en")
    for word in ("Preferences", "Unsubscribe"):
        href = page.get_by_role("link", name=word, exact=True).get_attribute("href")
        assert href == "/archive-links?lang=en"
    page.goto(url + "/archive-links?lang=en")
    assert "links at the end of an email we sent you" in page.locator("main").inner_text()


def test_emails_in_dark_mode_have_no_bright_rule_and_nothing_serious(
    site: Site, browser: Any
) -> None:
    """A mail client in dark mode (prefers-color-scheme) gets the dark palette: text that
    reads (axe), and no rule or border left in the light palette's pale grey."""
    context = browser.new_context(viewport={"width": 375, "height": 800}, color_scheme="dark")
    context.route(re.compile(r"^(?!file:|data:|about:).*"), lambda route: route.abort())
    page = context.new_page()
    problems = {}
    for name, html in site.emails.items():
        page.set_content(html)
        bright = page.evaluate(
            """() => [...document.querySelectorAll(".card *")].flatMap(el => {
                const style = getComputedStyle(el);
                return ["Top", "Bottom"].filter(side =>
                    parseFloat(style[`border${side}Width`]) > 0 &&
                    style[`border${side}Style`] !== "none" && el.offsetWidth > 0
                ).map(side => style[`border${side}Color`]).filter(colour => {
                    const [r, g, b] = colour.match(/\\d+/g).map(Number);
                    return (r + g + b) / 3 > 128;
                }).map(colour => `${el.tagName}: ${colour}`);
            })"""
        )
        _, violations = _look(page, everything=False)
        if bright or violations:
            problems[name] = (bright, violations)
    context.close()
    assert problems == {}, json.dumps(problems, ensure_ascii=False, indent=1)
