"""Campaign reports: SQL aggregates, JSON, and an HTML page that renders in Chromium."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from outreach.bounces import ingest
from outreach.lifecycle import get_campaign
from outreach.reports import build, render_html
from outreach.tokens import Tokens
from outreach.web import create_app
from tests.project import CAMPAIGN
from tests.sending_helpers import contacts_csv, drain, project_with, send, settings_for
from tests.test_bounces import fixture

SECRET = "_6FuslupQUggb0oT5JRL-5S1KOu2C5jSHsLnhjAj"


@pytest.fixture
def reported(session: Session, db_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    settings = settings_for(
        db_url, tmp_path, secret_key=SECRET, bounce_domain="bounce.citynet-ap.org"
    )
    csv = contacts_csv(20).replace("person0@example.org", "postfix@city.example.org")
    path = project_with(
        tmp_path, session, csv=csv, campaign=CAMPAIGN + "tracking: {opens: true, clicks: true}\n"
    )
    send(path, settings, session)
    drain(settings, session)
    from sqlalchemy import select

    from outreach.models import Contact, Delivery

    ids = dict(
        session.execute(
            select(Contact.email, Delivery.id).join(Delivery, Delivery.contact_id == Contact.id)
        ).all()
    )
    mid = session.scalar(
        select(Delivery.message_id).where(Delivery.id == ids["postfix@city.example.org"])
    )
    session.commit()
    client = create_app(settings).test_client()
    tokens = Tokens(SECRET)
    for n, address in enumerate(sorted(ids)[:6]):
        did = ids[address]
        client.get(f"/o/{tokens.sign('open', did)}.gif")
        client.get(f"/c/{tokens.sign('click', [did, 'https://citynet-ap.org/news/colombo'])}")
        if n < 2:
            client.get(f"/c/{tokens.sign('click', [did, 'https://citynet-ap.org/news/suwon'])}")
    client.get(
        f"/c/{tokens.sign('click', [ids[sorted(ids)[0]], 'https://citynet-ap.org/news/colombo'])}"
    )
    client.post(
        f"/u/{tokens.sign('unsubscribe', ids[sorted(ids)[7]])}",
        data={"List-Unsubscribe": "One-Click"},
    )
    ingest(
        session,
        tokens,
        settings.bounce_domain,
        3,
        iter([("postfix", fixture("postfix", {"postfix": (0, mid)}), None)]),
    )
    return settings, tmp_path


def test_report_figures(reported, session: Session) -> None:  # type: ignore[no-untyped-def]
    _settings, tmp_path = reported
    report = build(session, get_campaign(session, "news"), tmp_path / "campaigns" / "segments.yaml")
    assert report.total == 20
    assert report.counts["sent"] == 19 and report.counts["bounced"] == 1
    assert report.rates["bounce"] == 0.05
    assert report.rates["open"] == round(6 / 19, 4)
    assert report.rates["click"] == round(6 / 19, 4)
    assert report.tracking == {"opens": True, "clicks": True}
    assert report.events["click"] == {"total": 9, "unique": 6}
    assert report.events["unsubscribe"]["unique"] == 1
    assert report.top_links[0] == {
        "link": 1,  # the first tracked link of the message: the token named none, its URL does
        "url": "https://citynet-ap.org/news/colombo",
        "clicks": 7,
        "unique": 6,
    }
    assert report.top_links[1]["url"] == "https://citynet-ap.org/news/suwon"
    assert report.bounces_by_domain == [{"domain": "city.example.org", "bounced": 1}]
    assert {row["language"] for row in report.by_language} == {"ko"}
    assert report.by_segment == [{"segment": "everyone", "total": 20, "sent": 19, "bounced": 1}]
    assert sum(p["sent"] for p in report.timeline) == 20
    # Times a script reads are ISO 8601 in UTC, like every other time in JSON output.
    from datetime import datetime

    assert datetime.fromisoformat(report.generated_at).utcoffset() is not None
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\dZ", p["at"]) for p in report.timeline)
    json.dumps(report.as_json())


def test_report_cli_json_and_html(reported, run_cli, session: Session) -> None:  # type: ignore[no-untyped-def]
    settings, tmp_path = reported
    env = {"OUTREACH_DATABASE_URL": settings.database_url}
    result = run_cli("campaigns", "report", "news", "--json", env=env)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["counts"]["bounced"] == 1 and data["top_links"][0]["clicks"] == 7
    assert data["tracking"] == {"opens": True, "clicks": True}
    assert data["rates"]["open"] == round(6 / 19, 4)
    html = tmp_path / "out" / "report.html"
    table = run_cli("campaigns", "report", "news", "--html", str(html), env=env)
    assert table.exit_code == 0 and "top clicked links" in table.output
    assert "not tracked" not in table.output and "31.6%" in table.output
    page = html.read_text(encoding="utf-8")
    assert page.count("<svg") >= 4
    assert "not tracked" not in page
    # Self-contained: nothing fetched from anywhere.
    assert not re.search(r'(src|href)="(https?:)?//', page)
    missing = run_cli("campaigns", "report", "nope", env=env)
    assert missing.exit_code == 1 and "no campaign 'nope'" in missing.output


@pytest.fixture(params=["opens", "clicks"])
def untracked(request, session: Session, db_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    """A campaign of 6 that tracks one of opens and clicks, everyone opening and clicking."""
    off = request.param
    on = "clicks" if off == "opens" else "opens"
    settings = settings_for(db_url, tmp_path, secret_key=SECRET)
    path = project_with(
        tmp_path,
        session,
        csv=contacts_csv(6),
        campaign=CAMPAIGN + f"tracking: {{{off}: false, {on}: true}}\n",
    )
    send(path, settings, session)
    drain(settings, session)
    from sqlalchemy import select

    from outreach.models import Delivery

    ids = list(session.scalars(select(Delivery.id).order_by(Delivery.id)))
    session.commit()
    client = create_app(settings).test_client()
    tokens = Tokens(SECRET)
    for did in ids[:3]:
        if on == "opens":
            client.get(f"/o/{tokens.sign('open', did)}.gif")
        else:
            client.get(f"/c/{tokens.sign('click', [did, 'https://citynet-ap.org/news/colombo'])}")
    return settings, tmp_path, off


RATE = {"opens": "open", "clicks": "click"}


def test_untracked_rate_is_null_not_zero(untracked, session: Session) -> None:  # type: ignore[no-untyped-def]
    """Nobody can have opened what was not tracked: the rate is unknown, not 0."""
    _settings, tmp_path, off = untracked
    on = "clicks" if off == "opens" else "opens"
    report = build(session, get_campaign(session, "news"), tmp_path / "campaigns" / "segments.yaml")
    assert report.counts["sent"] == 6
    assert report.tracking == {off: False, on: True}
    assert report.rates[RATE[off]] is None
    assert report.rates[RATE[on]] == 0.5
    if off == "clicks":
        assert report.top_links == []
    data = report.as_json()
    assert data["tracking"] == {off: False, on: True}
    assert json.loads(json.dumps(data))["rates"][RATE[off]] is None


def test_untracked_rate_in_cli_json_table_and_html(untracked, run_cli) -> None:  # type: ignore[no-untyped-def]
    settings, tmp_path, off = untracked
    on = "clicks" if off == "opens" else "opens"
    env = {"OUTREACH_DATABASE_URL": settings.database_url}
    result = run_cli("campaigns", "report", "news", "--json", env=env)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["rates"][RATE[off]] is None and data["rates"][RATE[on]] == 0.5
    assert data["tracking"] == {off: False, on: True}

    html = tmp_path / "report.html"
    table = run_cli("campaigns", "report", "news", "--html", str(html), env=env)
    assert table.exit_code == 0, table.output
    rates = table.output.split("rates", 1)[1].splitlines()
    header = next(line for line in rates if RATE[off] in line)
    values = rates[rates.index(header) + 2]
    cells = [c.strip() for c in values.strip("│ ").split("│")]
    columns = [c.strip() for c in header.strip("┃ ").split("┃")]
    assert cells[columns.index(RATE[off])] == "not tracked"
    assert cells[columns.index(RATE[on])] == "50.0%"

    page = html.read_text(encoding="utf-8")
    tiles = dict(
        (label, value)
        for value, label in re.findall(r'<div class="tile"><b>([^<]*)</b>(\w+)</div>', page)
    )
    assert tiles["opened" if off == "opens" else "clicked"] == "not tracked"
    assert tiles["clicked" if off == "opens" else "opened"] == "50.0%"
    links = re.search(r'<div id="links">(.*?)</div>', page, re.S)
    assert links is not None
    if off == "clicks":
        assert "not tracked" in links.group(1) and "<svg" not in links.group(1)
    else:
        assert "<svg" in links.group(1)


needs_chromium = pytest.mark.skipif(
    not (Path("/usr/bin/chromium").exists() or shutil.which("chromium")),
    reason="Chromium is not installed (apt-get install chromium; .ci/run installs it)",
)


@needs_chromium
@pytest.mark.browser
def test_html_report_renders_in_chromium(reported, session: Session) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import sync_playwright

    from outreach.preview import CHROMIUM, CHROMIUM_ARGS

    _settings, tmp_path = reported
    report = build(session, get_campaign(session, "news"), tmp_path / "campaigns" / "segments.yaml")
    path = tmp_path / "report.html"
    path.write_text(render_html(report), encoding="utf-8")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        errors: list[str] = []
        requests: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("request", lambda r: requests.append(r.url))
        page.goto(path.as_uri())
        assert page.locator("#states svg rect").count() == 2  # sent, bounced
        assert page.locator("#links svg rect").count() == 2
        assert page.locator("#timeline svg rect").count() >= 1
        assert "news" in page.locator("h1").inner_text()
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()
    assert errors == []
    assert all(url.startswith("file:") for url in requests)


@needs_chromium
@pytest.mark.browser
def test_chart_labels_stay_inside_their_chart_in_chromium(tmp_path: Path) -> None:
    """A long link label (a calendar link's address) and a long domain are cut to fit the
    chart, keeping the link's position, not cut off at its edge."""
    from playwright.sync_api import sync_playwright

    from outreach.preview import CHROMIUM, CHROMIUM_ARGS
    from outreach.reports import bar_chart, link_label

    links = [
        {
            "link": 1,
            "url": "https://calendar.google.com/calendar/render?action=TEMPLATE&text=CityNet"
            "%20Webinar&dates=20261210T050000Z/20261210T063000Z&location=Online%20%28Zoom%29",
        },
        {"link": 2, "url": "https://www.citynet-ap.org/events/webinar-2026-12?lang=en"},
        {"link": 3, "url": "https://mmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmm.org/WWWWW"},
    ]
    charts = [
        bar_chart([(link_label(link), 3) for link in links], name="clicks by link"),
        bar_chart([("mail.very-long-subdomain-of-a-city.go.kr.example", 2)], name="domains"),
    ]
    (tmp_path / "charts.html").write_text("".join(charts), encoding="utf-8")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto((tmp_path / "charts.html").as_uri())
        overflow = page.evaluate(
            """() => [...document.querySelectorAll("svg")].flatMap(svg => {
                const box = svg.getBoundingClientRect();
                return [...svg.querySelectorAll("text")].map(t => {
                    const text = t.getBoundingClientRect();
                    return [t.textContent, text.left - box.left, box.right - text.right];
                }).filter(([, left, right]) => left < 0 || right < 0);
            })"""
        )
        labels = page.locator("svg").first.locator("text").all_text_contents()
        browser.close()
    assert overflow == []
    assert [label.split(".")[0] for label in labels[::2]] == ["1", "2", "3"]
