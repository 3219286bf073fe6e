"""Calendar invitations (`event:`): the text/calendar part read back with `icalendar` from
messages a real worker sent through a real SMTP server, the "add to calendar" links, the
.ics file served by a real `outreach serve`, and what validate says about the times."""

from __future__ import annotations

import email
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from icalendar import Calendar
from sqlalchemy.orm import Session

from outreach.contacts import import_csv
from tests.conftest import write
from tests.project import CAMPAIGN
from tests.sending_helpers import drain, project_with, send, settings_for
from tests.smtp_server import SmtpServer, start_server
from tests.web_helpers import Server, request

EVENT = """event:
  title: {ko: "제8차 코로나19 대응 웨비나", en: "COVID-19 Consultation Series, 8th webinar"}
  start: 2026-12-15T14:00:00+09:00
  end: 2026-12-15T15:30:00+09:00
  location: Online (Zoom)
  url: https://citynet-ap.org/events/covid19-8
"""
WEBINAR = CAMPAIGN + EVENT

LINKS = """{% extends "layouts/base.mjml" %}
{% block content %}
<mj-section><mj-column>
  <mj-text>{{ event.title }} — {{ event.start.strftime("%Y-%m-%d %H:%M") }} UTC</mj-text>
  <mj-text><a href="{{ event.google_url }}">Google</a> · <a href="{{ event.outlook_url }}">Outlook</a>
  · <a href="{{ event.ics_url }}">.ics</a></mj-text>
</mj-column></mj-section>
{% endblock %}
"""


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = start_server()
    yield server
    server.stop()


def received(smtp: SmtpServer, address: str) -> list[EmailMessage]:
    return [
        email.message_from_bytes(r.data, policy=policy.default)  # type: ignore[misc]
        for r in smtp.handler.received
        if r.rcpt == address
    ]


def calendar_of(message: EmailMessage) -> Calendar:
    assert message.get_content_type() == "multipart/alternative"
    parts = list(message.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html", "text/calendar"]
    part = parts[2]
    assert part.get_param("method") == "PUBLISH"
    assert str(part.get_param("charset")).upper() == "UTF-8"
    return Calendar.from_ical(part.get_payload(decode=True))


def the_event(calendar: Calendar):  # type: ignore[no-untyped-def]
    assert str(calendar["method"]) == "PUBLISH"
    (event,) = calendar.walk("VEVENT")
    return event


def test_the_calendar_part_has_one_uid_utc_times_and_the_readers_title(
    session: Session, db_url: str, tmp_path: Path, smtp: SmtpServer
) -> None:
    settings = settings_for(db_url, tmp_path, smtp_url=smtp.url)
    path = project_with(tmp_path, session, campaign=WEBINAR)
    send(path, settings, session)
    drain(settings, session)
    events = {}
    for address in ("kim@suwon.example.org", "maria@makati.example.com"):
        (message,) = received(smtp, address)
        events[address] = the_event(calendar_of(message))
    kim, maria = events["kim@suwon.example.org"], events["maria@makati.example.com"]
    assert str(kim["summary"]) == "제8차 코로나19 대응 웨비나"
    assert str(maria["summary"]) == "COVID-19 Consultation Series, 8th webinar"
    assert str(kim["uid"]) == str(maria["uid"]) == "news@127.0.0.1"
    for event in (kim, maria):
        start, end = event.decoded("dtstart"), event.decoded("dtend")
        assert start == datetime(2026, 12, 15, 5, 0, tzinfo=UTC) and start.utcoffset().seconds == 0
        assert end == datetime(2026, 12, 15, 6, 30, tzinfo=UTC)
        assert event.to_ical().decode().count("DTSTART:20261215T050000Z") == 1
        assert str(event["location"]) == "Online (Zoom)"
        assert str(event["url"]) == "https://citynet-ap.org/events/covid19-8"
    # A second send (a contact added later) keeps the event's UID: calendars update, not add.
    write(
        tmp_path / "contacts.csv",
        "email,name,organisation,country,language,membership\n"
        "tan@penang.example.my,Tan Mei Ling,Penang Island City Council,MY,en,full\n",
    )
    import_csv(session, tmp_path / "contacts.csv")
    assert send(path, settings, session).added == 1
    drain(settings, session)
    (later,) = received(smtp, "tan@penang.example.my")
    assert str(the_event(calendar_of(later))["uid"]) == "news@127.0.0.1"
    assert len(received(smtp, "kim@suwon.example.org")) == 1


def test_add_to_calendar_links_and_the_ics_download_over_http(
    session: Session, db_url: str, tmp_path: Path, smtp: SmtpServer
) -> None:
    settings = settings_for(db_url, tmp_path, smtp_url=smtp.url)
    path = project_with(tmp_path, session, campaign=WEBINAR, **{"news.en.mjml": LINKS})
    with Server(settings, tmp_path / "serve.log") as server:
        settings = replace(settings, base_url=server.url)
        send(path, settings, session)
        drain(settings, session)
        (message,) = received(smtp, "maria@makati.example.com")
        body = message.get_body(("html",))
        assert body is not None
        html = body.get_content().replace("&amp;", "&")
        assert "COVID-19 Consultation Series, 8th webinar — 2026-12-15 05:00 UTC" in html
        google = next(u for u in _hrefs(html) if u.startswith("https://calendar.google.com/"))
        query = parse_qs(urlsplit(google).query)
        assert query["action"] == ["TEMPLATE"]
        assert query["dates"] == ["20261215T050000Z/20261215T063000Z"]
        assert query["text"] == ["COVID-19 Consultation Series, 8th webinar"]
        assert query["location"] == ["Online (Zoom)"]
        outlook = next(u for u in _hrefs(html) if u.startswith("https://outlook.office.com/"))
        query = parse_qs(urlsplit(outlook).query)
        assert query["startdt"] == ["2026-12-15T05:00:00Z"]
        assert query["enddt"] == ["2026-12-15T06:30:00Z"]
        assert query["subject"] == ["COVID-19 Consultation Series, 8th webinar"]
        ics = next(u for u in _hrefs(html) if "/e/" in u)
        assert ics == f"{server.url}/e/news.ics?lang=en"
        status, headers, data = request(ics)
        assert status == 200
        assert headers["Content-Type"] == "text/calendar; method=PUBLISH; charset=utf-8"
        assert 'filename="news.ics"' in headers["Content-Disposition"]
        served = the_event(Calendar.from_ical(data))
        mailed = the_event(calendar_of(message))
        assert str(served["uid"]) == str(mailed["uid"]) == f"news@{urlsplit(server.url).hostname}"
        assert served.decoded("dtstart") == mailed.decoded("dtstart")
        assert served.decoded("dtstamp") == mailed.decoded("dtstamp")
        status, _, data = request(f"{server.url}/e/news.ics?lang=ko")
        assert str(the_event(Calendar.from_ical(data))["summary"]) == "제8차 코로나19 대응 웨비나"
        status, _, data = request(
            f"{server.url}/e/news.ics", headers={"Accept-Language": "ko-KR,ko;q=0.9"}
        )
        assert str(the_event(Calendar.from_ical(data))["summary"]) == "제8차 코로나19 대응 웨비나"
        assert request(f"{server.url}/e/nothing-here.ics")[0] == 404


def _hrefs(html: str) -> list[str]:
    import re

    return re.findall(r'href="([^"]+)"', html)


def test_a_campaign_without_an_event_has_no_calendar_part(
    session: Session, db_url: str, tmp_path: Path, smtp: SmtpServer
) -> None:
    settings = settings_for(db_url, tmp_path, smtp_url=smtp.url)
    path = project_with(tmp_path, session)
    send(path, settings, session)
    drain(settings, session)
    (message,) = received(smtp, "kim@suwon.example.org")
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]


@pytest.mark.parametrize(
    ("event", "line", "expected"),
    [
        (
            EVENT.replace("end: 2026-12-15T15:30:00+09:00", "end: 2026-12-15T13:30:00+09:00"),
            4,
            "end must be after start",
        ),
        (
            EVENT.replace("start: 2026-12-15T14:00:00+09:00", "start: 2026-12-15T14:00:00"),
            3,
            "give the time zone of start, e.g. 2026-12-15T14:00:00+09:00",
        ),
        (EVENT.replace("location:", "place:"), 5, "unknown key event.place"),
        (EVENT.replace("2026-12-15T15:30:00+09:00", "15 December"), 4, "is not a time"),
    ],
)
def test_validate_names_the_file_and_line_of_a_wrong_event(
    run_cli,  # type: ignore[no-untyped-def]
    tmp_path: Path,
    event: str,
    line: int,
    expected: str,
) -> None:
    from tests.project import make_project

    make_project(tmp_path, campaign=CAMPAIGN + event)
    result = run_cli("campaigns", "validate", "campaigns/news.yaml")
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    offset = CAMPAIGN.count("\n")
    wanted = f"campaigns/news.yaml:{offset + line}"
    found = [text for text in result.output.splitlines() if wanted in text and expected in text]
    assert found, result.output


def test_a_template_using_event_without_an_event_is_a_validate_error(
    run_cli,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    from tests.project import make_project

    make_project(tmp_path, **{"news.en.mjml": LINKS})
    result = run_cli("campaigns", "validate", "campaigns/news.yaml")
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "event" in result.output, result.output


def test_the_example_webinar_invites_in_each_readers_language(
    session: Session, db_url: str, tmp_path: Path, smtp: SmtpServer
) -> None:
    """The shipped example (campaigns/, templates/): a Wuhan contact gets the zh-Hans variant
    and a Chinese calendar title; Taipei's zh-Hant reader gets English, never Simplified."""
    import shutil

    root = Path(__file__).resolve().parent.parent
    for folder in ("campaigns", "templates"):
        shutil.copytree(root / folder, tmp_path / folder)
    rows = (root / "examples" / "contacts.csv").read_text(encoding="utf-8")
    write(
        tmp_path / "contacts.csv",
        rows.rstrip("\n")
        + "\nwaiban@wuhan.example.cn,王芳,武汉市人民政府外事办公室,local_government,Wuhan,CN,"
        "zh-CN,full,covid19-webinar,existing-relationship,east-asia,\n",
    )
    import_csv(session, tmp_path / "contacts.csv")
    settings = settings_for(db_url, tmp_path, smtp_url=smtp.url, postal_address="Seoul")
    send(tmp_path / "campaigns" / "2026-12-covid19-webinar.yaml", settings, session)
    drain(settings, session, "2026-12-covid19-webinar")
    (wuhan,) = received(smtp, "waiban@wuhan.example.cn")
    assert wuhan["Subject"] == "邀请函：新冠肺炎疫情快速应对系列研讨会第七期——地方经济复苏"
    html = wuhan.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert 'lang="zh-Hans"' in html and "尊敬的王芳：" in html and "添加至日历" in html
    assert "Noto Sans CJK SC" in html
    event = the_event(calendar_of(wuhan))
    assert str(event["summary"]) == "新冠肺炎疫情快速应对系列研讨会第七期：地方经济复苏"
    assert event.decoded("dtstart") == datetime(2026, 12, 16, 5, 0, tzinfo=UTC)
    (taipei,) = received(smtp, "cdm@taipei.example.com")
    assert taipei["Subject"].startswith("Invitation:")
    assert str(the_event(calendar_of(taipei))["summary"]).startswith("Rapid Responses")
    assert str(the_event(calendar_of(taipei))["uid"]) == str(event["uid"])
    # The sender's name in the reader's language where it has one, else English.
    (suwon,) = received(smtp, "mayor.office@suwon.example.org")
    assert suwon["From"] == "시티넷 사무국 <programmes@citynet-ap.org>"
    assert taipei["From"] == wuhan["From"] == "CityNet Secretariat <programmes@citynet-ap.org>"


def test_preview_eml_and_test_sends_carry_the_invitation(
    run_cli,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    """What staff check before sending is what recipients get: the calendar part included."""
    from tests.project import make_project

    make_project(tmp_path, campaign=WEBINAR)
    assert run_cli("init").exit_code == 0
    env = {"OUTREACH_POSTAL_ADDRESS": "Seoul"}
    preview = ["campaigns", "preview", "campaigns/news.yaml", "--lang", "ko", "--eml", "ko.eml"]
    result = run_cli(*preview, env=env)
    assert result.exit_code == 0, result.output
    message = email.message_from_bytes((tmp_path / "ko.eml").read_bytes(), policy=policy.default)
    event = the_event(calendar_of(message))  # type: ignore[arg-type]
    assert str(event["summary"]) == "제8차 코로나19 대응 웨비나"
    test_send = ["campaigns", "send", "campaigns/news.yaml", "--test-to", "staff@citynet-ap.org"]
    result = run_cli(*test_send, env=env)
    assert result.exit_code == 0, result.output
    summaries = []
    for path in sorted((tmp_path / "outbox").rglob("*.eml")):
        sent = email.message_from_bytes(path.read_bytes(), policy=policy.default)
        summaries.append(str(the_event(calendar_of(sent))["summary"]))  # type: ignore[arg-type]
    assert sorted(summaries) == [
        "COVID-19 Consultation Series, 8th webinar",
        "제8차 코로나19 대응 웨비나",
    ]
