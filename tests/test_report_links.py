"""The click report groups clicks by the template's link (its position, its address with
each recipient's value as a placeholder); a click counts as an open; deliveries never
written are listed under their state; times are shown in OUTREACH_TIMEZONE."""

from __future__ import annotations

import email
import html
import json
import re
from email import policy
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from outreach.lifecycle import get_campaign
from outreach.reports import LABEL_ROOM, build, fit_label, link_label, local, render_html
from outreach.suppressions import suppress
from outreach.web import create_app
from tests.conftest import write
from tests.sending_helpers import drain, project_with, send, settings_for

SECRET = "_6FuslupQUggb0oT5JRL-5S1KOu2C5jSHsLnhjAj"
REGISTER = "https://citynet-ap.org/events/register?event=covid19-8&amp;org="
WEBINAR = f"""<mjml><mj-body><mj-section><mj-column>
  <mj-button href="{REGISTER}{{{{ contact.organisation | urlencode }}}}">Register</mj-button>
  <mj-text>
    <a href="https://citynet-ap.org/events/covid19-consultation-series-8-programme">Programme</a>
    <a href="https://citynet-ap.org/events/covid19-consultation-series-8-speakers">Speakers</a>
    <a href="{{{{ unsubscribe_url }}}}">Unsubscribe</a>
  </mj-text>
  <mj-button href="{REGISTER}{{{{ contact.organisation | urlencode }}}}">Register now</mj-button>
</mj-column></mj-section></mj-body></mjml>
"""
CAMPAIGN = """name: news
template: webinar
subject: {en: "COVID-19 webinar", ko: "코로나19 웨비나"}
from: "CityNet Secretariat <news@citynet-ap.org>"
audience: {include: [everyone]}
tracking: {opens: true, clicks: true}
"""
TEMPLATE = "https://citynet-ap.org/events/register?event=covid19-8&org={organisation}"


def click_everything(settings, session: Session) -> int:  # type: ignore[no-untyped-def]
    """Every recipient clicks every tracked link of their message, as received."""
    client = create_app(settings).test_client()
    clicks = 0
    for path in sorted(Path(settings.outbox).rglob("*.eml")):
        message = email.message_from_bytes(path.read_bytes(), policy=policy.default)
        part = message.get_body(("html",))
        assert part is not None
        for link in re.findall(r'href="http://127\.0\.0\.1:8000(/c/[^"]+)"', part.get_content()):
            assert client.get(link).status_code == 302
            clicks += 1
    session.commit()
    return clicks


@pytest.fixture
def clicked(session: Session, db_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    settings = settings_for(db_url, tmp_path, secret_key=SECRET)
    path = project_with(tmp_path, session, campaign=CAMPAIGN, **{"webinar.mjml": WEBINAR})
    send(path, settings, session)
    suppress(session, "sato@yokohama.example.com", "unsubscribed")  # after the send: skipped
    session.commit()
    drain(settings, session)
    assert click_everything(settings, session) == 2 * 4  # two recipients, four links each
    return settings, tmp_path


def test_clicks_are_grouped_by_the_templates_link(clicked, session: Session) -> None:  # type: ignore[no-untyped-def]
    report = build(session, get_campaign(session, "news"))
    assert report.top_links == [
        {"link": 1, "url": TEMPLATE, "clicks": 2, "unique": 2},
        {
            "link": 2,
            "url": "https://citynet-ap.org/events/covid19-consultation-series-8-programme",
            "clicks": 2,
            "unique": 2,
        },
        {
            "link": 3,
            "url": "https://citynet-ap.org/events/covid19-consultation-series-8-speakers",
            "clicks": 2,
            "unique": 2,
        },
        # The same address again at the foot of the message: its own row.
        {"link": 4, "url": TEMPLATE, "clicks": 2, "unique": 2},
    ]


def test_a_click_counts_as_an_open(clicked, session: Session) -> None:  # type: ignore[no-untyped-def]
    """Nobody fetched the tracking image (clients block images), both clicked: both read."""
    report = build(session, get_campaign(session, "news"))
    assert "open" not in report.events
    assert report.opened == 2
    assert report.rates["open"] == 1.0
    assert report.rate_text("open") == "100.0%"


def test_a_finished_campaign_lists_a_skipped_delivery_under_its_state(
    clicked, session: Session
) -> None:  # type: ignore[no-untyped-def]
    report = build(session, get_campaign(session, "news"))
    assert report.state == "done"
    languages = {row["language"]: row for row in report.by_language}
    assert "(not yet sent)" not in languages
    assert languages["(skipped)"]["skipped"] == 1


def test_html_labels_tell_the_links_apart(clicked, session: Session) -> None:  # type: ignore[no-untyped-def]
    report = build(session, get_campaign(session, "news"), timezone="Asia/Seoul")
    from outreach.config import Settings

    page = render_html(report, Settings().zone)
    chart = page[page.index('id="links"') : page.index('id="link-table"')]
    labels = [html.unescape(x) for x in re.findall(r'<text x="0" y="\d+">([^<]*)<title>', chart)]
    assert len(labels) == 4 and len(set(labels)) == 4, labels
    assert all(fit_label(label, LABEL_ROOM) == label for label in labels)  # each fits
    assert any("{organisation}" in label for label in labels), labels
    assert any("programme" in label for label in labels), labels
    # The whole address in the table beside the chart.
    assert TEMPLATE.replace("&", "&amp;") in page
    # Times in Seoul's zone, and the zone said.
    assert "(times in Asia/Seoul)" in page and " KST" in page


def test_link_labels_keep_the_end_that_differs() -> None:
    long = "https://citynet-ap.org/events/covid19-consultation-series-8-programme"
    other = "https://citynet-ap.org/events/covid19-consultation-series-8-speakers"
    assert link_label({"link": 2, "url": long}) != link_label({"link": 3, "url": other})
    assert link_label({"link": 2, "url": long}).endswith("programme")
    assert link_label({"link": 1, "url": "https://citynet-ap.org/"}) == "1. citynet-ap.org/"


def test_local_times_show_their_zone() -> None:
    from zoneinfo import ZoneInfo

    assert local("2026-12-01T00:05:00+00:00", ZoneInfo("Asia/Seoul")) == "2026-12-01 09:05 KST"
    assert local("2026-12-01T00:05Z", ZoneInfo("Asia/Kathmandu")) == "2026-12-01 05:50 UTC+05:45"


def test_cli_report_rows_and_times(clicked, run_cli) -> None:  # type: ignore[no-untyped-def]
    settings, _ = clicked
    env = {"OUTREACH_DATABASE_URL": settings.database_url}
    table = run_cli("campaigns", "report", "news", env=env)
    assert table.exit_code == 0, table.output
    rows = [line for line in table.output.splitlines() if "citynet-ap.org/events" in line]
    assert len(rows) == 4, table.output
    assert sum(TEMPLATE in row for row in rows) == 2
    assert re.search(r"started \d{4}-\d\d-\d\d \d\d:\d\d KST", table.output), table.output
    assert "100.0%" in table.output  # opened: the clicks count
    london = run_cli(
        "campaigns", "report", "news", env={**env, "OUTREACH_TIMEZONE": "Europe/London"}
    )
    assert re.search(r"started \d{4}-\d\d-\d\d \d\d:\d\d (GMT|BST)", london.output)
    as_json = json.loads(run_cli("campaigns", "report", "news", "--json", env=env).output)
    assert as_json["timezone"] == "Asia/Seoul" and as_json["opened"] == 2
    assert as_json["started_at"].endswith("+00:00")  # scripts read UTC
    bad = run_cli("campaigns", "report", "news", env={**env, "OUTREACH_TIMEZONE": "Seoul"})
    assert bad.exit_code != 0 and "OUTREACH_TIMEZONE: 'Seoul' is not a time zone" in bad.output


def test_a_forged_position_changes_nothing_but_the_row(clicked, session: Session) -> None:  # type: ignore[no-untyped-def]
    """Tokens are signed: a click token's position cannot be altered; an old token without
    one (mail sent before) still counts, under the link its address fits."""
    from sqlalchemy import select

    from outreach.models import Contact, Delivery
    from outreach.tokens import Tokens

    settings, _ = clicked
    did = session.scalar(
        select(Delivery.id)
        .join(Contact, Contact.id == Delivery.contact_id)
        .where(Contact.email == "kim@suwon.example.org")
    )
    client = create_app(settings).test_client()
    old = Tokens(SECRET).sign(
        "click", [did, "https://citynet-ap.org/events/covid19-consultation-series-8-speakers"]
    )
    assert client.get(f"/c/{old}").status_code == 302
    assert client.get(f"/c/{old[:-3]}xyz").status_code == 400
    session.commit()
    rows = {row["link"]: row for row in build(session, get_campaign(session, "news")).top_links}
    assert rows[3]["clicks"] == 3


def test_the_template_link_of_an_attribute(session: Session, tmp_path: Path) -> None:
    from outreach.links import identify, tracked_links

    links = tracked_links(
        (
            "{{ contact.name }}",
            "{{ click('https://citynet-ap.org/ref?r=' ~ ((contact.attributes.region) "
            "| outreach_text) ~ '&x=1', 2) }}",
        )
    )
    (link,) = links
    assert (link.position, link.template) == (2, "https://citynet-ap.org/ref?r={region}&x=1")
    assert identify(links, "https://citynet-ap.org/ref?r=east-asia&x=1", 2) == link
    assert identify(links, "https://example.org/", 2) is None
    write(tmp_path / "unused.txt", "")
