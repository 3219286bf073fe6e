"""Each recipient's own morning (issue 25, items 1–3; issue 22, item 7): contacts' time zones,
`send_at: {local: …}`, sending windows, and a send_at started to the second. Real SQLite and
PostgreSQL, real `outreach worker` processes, a real SMTP server; SQLite or Redis queues."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from outreach.contacts import describe, export_to_string, import_csv
from outreach.lifecycle import send_campaign
from outreach.models import Contact, Delivery, utcnow
from outreach.pipeline import Sender
from outreach.schedule import Timing, Window, next_opening
from outreach.tasks import enqueuer
from outreach.transport import transport_for
from outreach.validate import validate_campaign
from outreach.zones import normalise_timezone, several_zones, zone_of_country
from tests.conftest import REDIS_URL, write
from tests.project import CAMPAIGN, make_project
from tests.sending_helpers import campaign_id, current, settings_for
from tests.smtp_server import SmtpServer, start_server
from tests.workers import Worker, wait_for

# Seoul, Kuala Lumpur and Kolkata by their countries; Sydney by the contact's own zone
# (Australia has several); Jakarta's contact has none (Indonesia has three).
ZONED = """email,name,country,language,timezone
kim@suwon.example.org,김수진,KR,ko,
aziz@kl.example.com,Aziz,MY,en,
priya@kolkata.example.com,Priya,IN,en,
olivia@sydney.example.com,Olivia,AU,en,시드니
budi@jakarta.example.com,Budi,ID,en,
"""
ZONE_OF = {
    "kim@suwon.example.org": "Asia/Seoul",
    "aziz@kl.example.com": "Asia/Kuala_Lumpur",
    "priya@kolkata.example.com": "Asia/Kolkata",
    "olivia@sydney.example.com": "Australia/Sydney",
    "budi@jakarta.example.com": "Asia/Seoul",  # OUTREACH_TIMEZONE
}


def _zoned_project(tmp_path: Path, session: Session, extra: str) -> Path:
    path = make_project(tmp_path, CAMPAIGN + extra)
    write(tmp_path / "contacts.csv", ZONED)
    result = import_csv(session, tmp_path / "contacts.csv")
    assert not result.errors, result.errors
    session.commit()
    return path


# Time zones of contacts -------------------------------------------------------------------


def test_zones_as_offices_write_them_and_the_zone_of_a_country() -> None:
    assert normalise_timezone("Asia/Seoul") == "Asia/Seoul"
    assert normalise_timezone(" asia/kolkata ") == "Asia/Kolkata"
    assert normalise_timezone("서울") == normalise_timezone("KST") == "Asia/Seoul"
    assert normalise_timezone("Sydney") == normalise_timezone("시드니") == "Australia/Sydney"
    with pytest.raises(ValueError, match=r"unknown timezone 'Mars/Olympus'.*Asia/Seoul"):
        normalise_timezone("Mars/Olympus")
    for country, zone in {
        "KR": "Asia/Seoul",
        "MY": "Asia/Kuala_Lumpur",
        "LK": "Asia/Colombo",
        "IN": "Asia/Kolkata",
        "JP": "Asia/Tokyo",
        "CN": "Asia/Shanghai",
        "SG": "Asia/Singapore",
        "TH": "Asia/Bangkok",
        "VN": "Asia/Ho_Chi_Minh",
        "PH": "Asia/Manila",
    }.items():
        assert zone_of_country(country) == zone, country
    for country in ("AU", "ID", "US", "RU"):
        assert zone_of_country(country) is None and several_zones(country), country


def test_import_show_and_export_carry_the_zone(session: Session, tmp_path: Path) -> None:
    write(tmp_path / "c.csv", ZONED)
    assert not import_csv(session, tmp_path / "c.csv").errors
    session.commit()
    olivia = describe(session, "olivia@sydney.example.com")
    assert olivia["timezone"] == olivia["zone"] == "Australia/Sydney"
    priya = describe(session, "priya@kolkata.example.com")
    assert priya["timezone"] is None and priya["zone"] == "Asia/Kolkata (the zone of IN)"
    budi = describe(session, "budi@jakarta.example.com", "Asia/Seoul")
    assert budi["zone"].startswith("Asia/Seoul (OUTREACH_TIMEZONE: ID has several zones")
    exported = export_to_string(session).splitlines()
    assert "timezone" in exported[0].split(",")
    column = exported[0].split(",").index("timezone")
    rows = {line.split(",")[0]: line.split(",")[column] for line in exported[1:]}
    assert rows["olivia@sydney.example.com"] == "Australia/Sydney"
    assert rows["kim@suwon.example.org"] == ""


def test_an_unknown_zone_is_refused_with_file_and_line(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert run_cli("init").exit_code == 0
    write(tmp_path / "z.csv", ZONED + "x@example.org,X,AU,en,Australia/Sidney\n")
    result = run_cli("contacts", "import", "z.csv")
    assert result.exit_code == 1
    assert "z.csv:7: unknown timezone 'Australia/Sidney'" in result.output
    assert "Traceback" not in result.output
    written = run_cli("contacts", "import", "z.csv", "--skip-invalid")
    assert written.exit_code == 0, written.output
    show = run_cli("contacts", "show", "olivia@sydney.example.com")
    assert "Australia/Sydney" in show.output


# send_at {local: …} -----------------------------------------------------------------------


def test_local_time_is_dst_correct() -> None:
    summer = Timing(local=datetime(2026, 12, 8, 9, 0))  # Sydney keeps +11:00 (AEDT)
    winter = Timing(local=datetime(2027, 7, 8, 9, 0))  # +10:00 (AEST)
    long_ago = datetime(2026, 1, 1, tzinfo=UTC)
    assert summer.due("Australia/Sydney", long_ago) == datetime(2026, 12, 7, 22, tzinfo=UTC)
    assert winter.due("Australia/Sydney", long_ago) == datetime(2027, 7, 7, 23, tzinfo=UTC)
    assert summer.due("Asia/Kolkata", long_ago) == datetime(2026, 12, 8, 3, 30, tzinfo=UTC)
    # Its moment passed: at once.
    later = datetime(2026, 12, 8, 1, tzinfo=UTC)
    assert summer.due("Australia/Sydney", later) == later


def test_dry_run_json_and_table_give_the_schedule_by_zone(
    run_cli,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    make_project(tmp_path, CAMPAIGN + "send_at: {local: 2099-12-08T09:00}\n")
    write(tmp_path / "contacts.csv", ZONED)
    assert run_cli("init").exit_code == 0
    assert run_cli("contacts", "import", "contacts.csv").exit_code == 0
    env = {"OUTREACH_POSTAL_ADDRESS": "Seoul"}
    out = run_cli("campaigns", "send", "campaigns/news.yaml", "--dry-run", "--json", env=env)
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output)
    assert doc["schedule"] == [
        {"at": "2099-12-07T22:00:00Z", "count": 1},  # Sydney (+11:00)
        {"at": "2099-12-08T00:00:00Z", "count": 2},  # Seoul: Kim, and Budi (OUTREACH_TIMEZONE)
        {"at": "2099-12-08T01:00:00Z", "count": 1},  # Kuala Lumpur
        {"at": "2099-12-08T03:30:00Z", "count": 1},  # Kolkata
    ]
    assert doc["new_deliveries"] == 5 and doc["at_once"] == 0
    assert any("1 contact is in a country of several time zones" in w for w in doc["warnings"])
    assert any("(ID 1)" in w for w in doc["warnings"])
    human = run_cli("campaigns", "send", "campaigns/news.yaml", "--dry-run", env=env)
    assert human.exit_code == 0, human.output
    text = human.output
    assert "Australia/Sydney" in text and "Asia/Kolkata" in text and "Asia/Kuala_Lumpur" in text
    assert "2099-12-08 09:00 IST" in text and "2099-12-08 03:30:00" in text
    assert "would start 2099-12-07 22:00 UTC, each zone at its own time" in text
    assert "nothing was queued" in text
    # Queued for real: scheduled until the first group, and status says what is due when.
    sent = run_cli("campaigns", "send", "campaigns/news.yaml", env=env)
    assert sent.exit_code == 0, sent.output
    status = run_cli("campaigns", "status", "news", "--json", env=env)
    got = json.loads(status.output)
    assert got["state"] == "scheduled" and got["send_at"].startswith("2099-12-07T22:00:00")
    assert [g["count"] for g in got["schedule"]] == [1, 2, 1, 1]
    shown = run_cli("campaigns", "status", "news", env=env)
    assert "Asia/Kolkata" in shown.output and "2099-12-08 09:00 IST" in shown.output


def test_validate_counts_whose_moment_has_passed(session: Session, tmp_path: Path) -> None:
    # 09:00 today in Sydney has passed for everyone once it is 09:00 in Kolkata: pick a time
    # that has passed in Sydney (+10/+11) but not yet in Kolkata (+05:30).
    now = utcnow()
    kolkata = now.astimezone(ZoneInfo("Asia/Kolkata")) + timedelta(hours=2)
    local = kolkata.replace(tzinfo=None, second=0, microsecond=0)
    path = _zoned_project(tmp_path, session, f"send_at: {{local: {local:%Y-%m-%dT%H:%M}}}\n")
    settings = settings_for("sqlite://", tmp_path)
    report = validate_campaign(path, settings, session)
    passed = [w for w in report.warnings if "has already passed in their time zone" in w]
    # Sydney, Seoul (Kim and Budi) and Kuala Lumpur are ahead of Kolkata by 2.5 h or more.
    assert len(passed) == 1 and "4 recipients'" in passed[0], report.warnings


@pytest.mark.parametrize(
    ("extra", "fragment", "line"),
    [
        ("send_at: {local: 2026-12-08T09:00+09:00}\n", "a local time has no offset", 17),
        ("send_at: {local: soon}\n", "'soon' is not a time", 17),
        ("send_at: {lokal: 2026-12-08T09:00}\n", "unknown key send_at.lokal", 17),
        ("window:\n  days: [mon, funday]\n", "'funday' is not a day", 18),
        ('window:\n  hours: "18:00-08:00"\n', "end before they start", 18),
        ('window:\n  hours: "8am to 6pm"\n', "is not a span of hours", 18),
        ("window:\n  holidays: [christmas]\n", "'christmas' is not a date", 18),
        ("window: {days: [mon], hour: 9}\n", "unknown key window.hour", 17),
    ],
)
def test_bad_send_at_and_window_say_file_line_and_fix(
    tmp_path: Path, extra: str, fragment: str, line: int
) -> None:
    path = make_project(tmp_path, CAMPAIGN + extra)
    errors = [
        str(e) for e in validate_campaign(path, settings_for("sqlite://", tmp_path), None).errors
    ]
    found = [e for e in errors if fragment in e]
    assert found, errors
    assert f"news.yaml:{line}:" in found[0], found


# Windows ----------------------------------------------------------------------------------


def test_the_next_opening_of_a_window() -> None:
    window = Window.model_validate(
        {
            "days": ["mon", "화", "wed", "thu", "fri"],
            "hours": "08:00-18:00",
            "holidays": ["2026-12-25"],
        }
    )
    seoul = ZoneInfo("Asia/Seoul")
    # Thursday 24 December 2026, 18:30 in Seoul: Friday is Christmas, so Monday 08:00.
    thursday_evening = datetime(2026, 12, 24, 18, 30, tzinfo=seoul)
    assert next_opening(thursday_evening, window, seoul) == datetime(2026, 12, 28, 8, tzinfo=seoul)
    inside = datetime(2026, 12, 28, 9, 15, tzinfo=seoul)
    assert next_opening(inside, window, seoul) == inside
    assert window.holidays == [date(2026, 12, 25)]


def test_a_delivery_outside_its_window_waits_while_others_go(
    session: Session, db_url: str, tmp_path: Path
) -> None:
    """The window is each recipient's: Kolkata's closed, Seoul's open, in one campaign."""
    now = utcnow()
    seoul = now.astimezone(ZoneInfo("Asia/Seoul"))
    # Open from 3.5 h ahead of Kolkata's clock, i.e. about Seoul's now: open in Seoul only.
    start = (seoul - timedelta(minutes=30)).replace(second=0, microsecond=0)
    if not 4 <= seoul.hour < 22:
        pytest.skip("the hours around midnight make this window two days' hours")
    hours = f"{start:%H:%M}-{min(start.hour + 2, 24):02d}:{start:%M}"
    path = _zoned_project(
        tmp_path,
        session,
        f'window: {{days: [mon, tue, wed, thu, fri, sat, sun], hours: "{hours}"}}\n',
    )
    settings = settings_for(db_url, tmp_path)
    send_campaign(path, settings, session, enqueue=None)
    transport = transport_for(settings)
    try:
        Sender(settings, transport).run(campaign_id(session))
    finally:
        transport.close()
    state = {
        email: (d.state, d.next_attempt_at)
        for email, d in session.execute(
            select(Contact.email, Delivery).join(Delivery, Delivery.contact_id == Contact.id)
        )
    }
    session.commit()
    assert state["kim@suwon.example.org"][0] == "sent"
    assert state["budi@jakarta.example.com"][0] == "sent"  # OUTREACH_TIMEZONE, Seoul
    waiting, due = state["priya@kolkata.example.com"]
    assert waiting == "queued" and due > utcnow()
    assert due.astimezone(ZoneInfo("Asia/Kolkata")).strftime("%H:%M") == f"{start:%H:%M}"
    assert current(settings).state == "sending"


def test_a_delivery_given_back_when_its_window_closed_meanwhile(
    session: Session, db_url: str, tmp_path: Path
) -> None:
    """A retry (or a slow rate) that falls outside the window is not sent then."""
    from sqlalchemy import update

    seoul = utcnow().astimezone(ZoneInfo("Asia/Seoul"))
    # The day after tomorrow in Seoul is no contact's today, whatever their zone.
    later = DAYS_OF_WEEK[(seoul.weekday() + 2) % 7]
    path = _zoned_project(tmp_path, session, f"window: {{days: [{later}]}}\n")
    settings = settings_for(db_url, tmp_path)
    send_campaign(path, settings, session, enqueue=None)
    # As a retry would: due now, though the window is shut until tomorrow.
    session.execute(update(Delivery).values(next_attempt_at=utcnow()))
    session.commit()
    transport = transport_for(settings)
    try:
        outcome = Sender(settings, transport).run(campaign_id(session))
    finally:
        transport.close()
    assert outcome.sent == 0 and outcome.wake_at is not None and outcome.wake_at > utcnow()
    counts = current(settings).counts
    assert counts["queued"] == 5 and counts["sent"] == 0 and counts["sending"] == 0


DAYS_OF_WEEK = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


# Real workers -----------------------------------------------------------------------------


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = start_server()
    yield server
    server.stop()


def _queue(tmp_path: Path, backend: str) -> str:
    if backend == "redis":
        if not REDIS_URL:
            pytest.skip("Redis tests need OUTREACH_TEST_REDIS_URL (CI sets it)")
        import redis

        redis.Redis.from_url(REDIS_URL).flushdb()
        return REDIS_URL
    return f"sqlite:///{tmp_path / 'queue.db'}"


def _sent(settings) -> dict[str, tuple[str, datetime | None, datetime]]:  # type: ignore[no-untyped-def]
    from outreach.db import reader_sessionmaker

    with reader_sessionmaker(settings.database_url)() as session:
        rows = session.execute(
            select(Contact.email, Delivery.state, Delivery.sent_at, Delivery.next_attempt_at).join(
                Delivery, Delivery.contact_id == Contact.id
            )
        ).all()
    return {email: (state, sent_at, due) for email, state, sent_at, due in rows}


@pytest.mark.integration
@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_a_worker_sends_each_zone_at_its_own_time(
    session: Session, db_url: str, tmp_path: Path, smtp: SmtpServer, backend: str
) -> None:
    """09:00 in Seoul a few seconds from now: Sydney's 09:00 has passed (sent at once), Seoul's
    comes (sent at that second, not before), Kuala Lumpur's and Kolkata's are hours away."""
    settings = settings_for(
        db_url, tmp_path, smtp_url=smtp.url, queue_url=_queue(tmp_path, backend)
    )
    seoul_at = (utcnow() + timedelta(seconds=8)).replace(microsecond=0)
    local = seoul_at.astimezone(ZoneInfo("Asia/Seoul")).replace(tzinfo=None)
    path = _zoned_project(tmp_path, session, f"send_at: {{local: {local.isoformat()}}}\n")
    send_campaign(path, settings, session, enqueuer(settings))
    log = tmp_path / "worker.log"
    with Worker(settings, log, threads=2) as worker:
        wait_for(lambda: current(settings).counts["sent"] >= 3, 60, "Sydney's and Seoul's", log)
        rows = _sent(settings)
        assert worker.terminate() == 0
    assert sorted(smtp.handler.by_recipient()) == [
        "budi@jakarta.example.com",
        "kim@suwon.example.org",
        "olivia@sydney.example.com",
    ]
    for email in ("kim@suwon.example.org", "budi@jakarta.example.com"):
        state, sent_at, _ = rows[email]
        assert state == "sent" and sent_at is not None and sent_at >= seoul_at  # nothing early
    for email, hours in (("aziz@kl.example.com", 1), ("priya@kolkata.example.com", 3.5)):
        state, sent_at, due = rows[email]
        assert state == "queued" and sent_at is None
        assert due == seoul_at + timedelta(hours=hours), email
        assert due.astimezone(ZoneInfo(ZONE_OF[email])).replace(tzinfo=None) == local
    status = current(settings)
    assert status.state == "sending" and [g.count for g in status.waiting] == [1, 1]


@pytest.mark.integration
@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_a_scheduled_send_at_starts_at_its_second_not_the_next_sweep(
    session: Session, db_url: str, tmp_path: Path, smtp: SmtpServer, backend: str
) -> None:
    """Issue 22 item 7: the sweep runs at each minute's start; a send_at 15 s into a minute
    is sent well before the next one, by a task set to wake at that second."""
    settings = settings_for(
        db_url, tmp_path, smtp_url=smtp.url, queue_url=_queue(tmp_path, backend)
    )
    now = utcnow()
    send_at = now.replace(second=15, microsecond=0) + timedelta(minutes=1)
    if (send_at - now).total_seconds() > 60:
        send_at -= timedelta(minutes=1)
    if (send_at - now).total_seconds() < 6:  # leave the worker time to start first
        send_at += timedelta(minutes=1)
    path = make_project(tmp_path, CAMPAIGN + f"send_at: {send_at.isoformat()}\n")
    import_csv(session, tmp_path / "contacts.csv")
    session.commit()
    send_campaign(path, settings, session, enqueuer(settings))
    assert current(settings).state == "scheduled"
    log = tmp_path / "worker.log"
    with Worker(settings, log, threads=2) as worker:
        wait_for(lambda: current(settings).counts["sent"] >= 3, 120, "the campaign", log)
        rows = _sent(settings)
        assert worker.terminate() == 0
    times = [sent_at for _, sent_at, _ in rows.values()]
    assert all(t is not None and t >= send_at for t in times), (send_at, rows)  # not early
    # Not left for the sweep at the next minute's start (45 s of slack for a busy machine).
    assert all(t is not None and t < send_at + timedelta(seconds=44) for t in times), times


@pytest.mark.integration
def test_a_worker_sends_when_the_window_opens(
    session: Session, db_url: str, tmp_path: Path, smtp: SmtpServer
) -> None:
    """A window opening at the next minute on Seoul's and Tokyo's clocks: nothing goes before
    it, both go when it opens; Manila's (an hour behind) waits for its own opening."""
    settings = settings_for(
        db_url, tmp_path, smtp_url=smtp.url, queue_url=_queue(tmp_path, "sqlite")
    )
    seoul = ZoneInfo("Asia/Seoul")
    opens = (utcnow() + timedelta(seconds=70)).astimezone(seoul).replace(second=0, microsecond=0)
    if opens.hour >= 22:
        pytest.skip("a window of one evening's hours would run past midnight")
    hours = f"{opens:%H:%M}-{opens.hour + 2:02d}:{opens:%M}"
    path = make_project(
        tmp_path,
        CAMPAIGN + f'window: {{days: [{DAYS_OF_WEEK[opens.weekday()]}], hours: "{hours}"}}\n',
    )
    import_csv(session, tmp_path / "contacts.csv")  # Suwon (KR), Makati (PH), Yokohama (JP)
    session.commit()
    send_campaign(path, settings, session, enqueuer(settings))
    log = tmp_path / "worker.log"
    with Worker(settings, log, threads=2) as worker:
        wait_for(lambda: current(settings).counts["sent"] >= 2, 150, "the window to open", log)
        rows = _sent(settings)
        assert worker.terminate() == 0
    for email in ("kim@suwon.example.org", "sato@yokohama.example.com"):
        state, sent_at, _ = rows[email]
        assert state == "sent" and sent_at is not None and sent_at >= opens, (email, sent_at)
    state, _, due = rows["maria@makati.example.com"]
    assert state == "queued" and due == opens + timedelta(hours=1)
    assert sorted(smtp.handler.by_recipient()) == [
        "kim@suwon.example.org",
        "sato@yokohama.example.com",
    ]
