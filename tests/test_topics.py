"""Topics: people choose what they receive. Leaving a topic by a message's one-click (or
its page, or its mailto:) stops that topic only; the audience leaves them out at the
snapshot and again before each message; every join and leave is a consent record."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from outreach.config import Settings
from outreach.models import ConsentRecord, Contact, Delivery, Event, Suppression, TopicLeft
from outreach.tokens import Tokens
from outreach.web import create_app
from tests.sending_helpers import campaign_id, drain, project_with, send, settings_for
from tests.smtp_server import SmtpServer, start_server
from tests.topic_helpers import campaign, unsubscribe_path, with_topics

KIM = "kim@suwon.example.org"
MARIA = "maria@makati.example.com"
ONE_CLICK = {
    "data": "List-Unsubscribe=One-Click",
    "content_type": "application/x-www-form-urlencoded",
}


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = start_server()
    yield server
    server.stop()


def received(smtp: SmtpServer, address: str) -> int:
    return smtp.handler.count_for(address)


def delivery_of(session: Session, name: str, address: str) -> Delivery | None:
    session.commit()
    return session.scalar(
        select(Delivery)
        .join(Contact, Contact.id == Delivery.contact_id)
        .where(Delivery.campaign_id == campaign_id(session, name), Contact.email == address)
    )


def left(session: Session, address: str) -> set[str]:
    session.commit()
    return set(
        session.scalars(
            select(TopicLeft.topic)
            .join(Contact, Contact.id == TopicLeft.contact_id)
            .where(Contact.email == address)
        )
    )


def suppressed(session: Session, address: str) -> bool:
    session.commit()
    return session.scalar(select(Suppression.id).where(Suppression.email == address)) is not None


def token(settings: Settings, kind: str, delivery: Delivery | None) -> str:
    assert delivery is not None and settings.secret_key
    return Tokens(settings.secret_key).sign(kind, delivery.id)


@pytest.fixture
def topics_sent(session: Session, db_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    """The test project with topics: `invite` (events) sent to the outbox."""
    settings = settings_for(db_url, tmp_path)
    project_with(tmp_path, session)
    with_topics(tmp_path)
    send(campaign(tmp_path, "invite", "events"), settings, session)
    drain(settings, session, "invite")
    return settings


@pytest.fixture
def client(topics_sent: Settings, tmp_path: Path) -> FlaskClient:
    return create_app(topics_sent, tmp_path).test_client()


def test_leaving_events_by_one_click_keeps_the_newsletter_and_stops_the_next_events(
    session: Session, db_url: str, tmp_path: Path, smtp: SmtpServer
) -> None:
    """The issue's first promise, over real SMTP: a mail client's one-click on an events
    message leaves events only — the newsletter still comes, the next events campaign
    does not, and the address is not suppressed."""
    settings = settings_for(db_url, tmp_path, smtp_url=smtp.url)
    project_with(tmp_path, session)
    with_topics(tmp_path)
    send(campaign(tmp_path, "webinar-1", "events"), settings, session)
    drain(settings, session, "webinar-1")
    (raw,) = [r.data for r in smtp.handler.received if r.rcpt == KIM]
    app = create_app(settings, tmp_path).test_client()
    answer = app.post(unsubscribe_path(raw), **ONE_CLICK)
    assert answer.status_code == 200 and "Location" not in answer.headers
    assert "행사·웨비나 안내" in answer.get_data(as_text=True)
    assert left(session, KIM) == {"events"} and not suppressed(session, KIM)

    send(campaign(tmp_path, "newsletter-1", "newsletter"), settings, session)
    drain(settings, session, "newsletter-1")
    result = send(campaign(tmp_path, "webinar-2", "events"), settings, session)
    drain(settings, session, "webinar-2")
    assert received(smtp, KIM) == 2  # webinar-1 and newsletter-1
    assert received(smtp, MARIA) == 3
    assert result.added == 2  # webinar-2's snapshot left Kim out
    assert delivery_of(session, "webinar-2", KIM) is None
    kim_news = delivery_of(session, "newsletter-1", KIM)
    assert kim_news is not None and kim_news.state == "sent"


def test_a_topic_left_after_the_snapshot_is_skipped_before_its_message(
    session: Session, db_url: str, tmp_path: Path
) -> None:
    """Queued before the leave, checked again before sending: skipped, with the reason;
    the newsletter queued alongside still goes."""
    from outreach.consent import leave_topic
    from outreach.db import writer_sessionmaker

    settings = settings_for(db_url, tmp_path)
    project_with(tmp_path, session)
    with_topics(tmp_path)
    send(campaign(tmp_path, "webinar", "events"), settings, session)
    send(campaign(tmp_path, "newsletter", "newsletter"), settings, session)
    kim = session.scalar(select(Contact.id).where(Contact.email == KIM))
    assert kim is not None
    with writer_sessionmaker(db_url)() as writer:
        leave_topic(writer, kim, "events", source="test")
        writer.commit()
    drain(settings, session, "webinar")
    drain(settings, session, "newsletter")
    skipped = delivery_of(session, "webinar", KIM)
    assert skipped is not None and skipped.state == "skipped"
    assert skipped.last_text == "suppressed (left topic events)"
    news = delivery_of(session, "newsletter", KIM)
    assert news is not None and news.state == "sent"


def test_the_unsubscribe_page_names_the_topic_and_offers_it_or_everything(
    client: FlaskClient, topics_sent: Settings, session: Session
) -> None:
    url = f"/u/{token(topics_sent, 'unsubscribe', delivery_of(session, 'invite', KIM))}"
    page = client.get(url).get_data(as_text=True)
    assert "“행사·웨비나 안내”" in page and "invite" not in page  # its title, not its name
    assert "웨비나, 연수, 총회 초대" in page  # the topic's description
    # The topic first: the default button of the form (Enter presses it).
    buttons = re.findall(r'<button type="submit"[^>]*id="([^"]+)"', page)
    assert buttons == ["leave-topic", "leave-everything"]
    assert not left(session, KIM)  # a GET changes nothing
    english = client.get(url + "?lang=en").get_data(as_text=True)
    assert "“Events and webinars”" in english and "Stop all our email" in english

    done = client.post(url, data={"confirm": "yes", "leave": "topic"})
    body = done.get_data(as_text=True)
    assert done.status_code == 200 and "“행사·웨비나 안내”" in body
    assert left(session, KIM) == {"events"} and not suppressed(session, KIM)
    assert 'id="undo"' in body and 'id="leave-everything"' in body

    everything = client.post(url, data={"confirm": "yes", "leave": "everything"})
    assert everything.status_code == 200 and suppressed(session, KIM)
    assert 'id="done">수신거부되었습니다<' in everything.get_data(as_text=True)
    assert left(session, KIM) == {"events"}  # kept for the day they subscribe again
    methods = sorted(
        (e.data.get("topic") or "everything", e.data["method"])
        for e in session.scalars(select(Event).where(Event.kind == "unsubscribe"))
    )
    assert methods == [("events", "page"), ("everything", "page")]
    records = session.execute(
        select(ConsentRecord.kind, ConsentRecord.topic, ConsentRecord.source).order_by(
            ConsentRecord.id
        )
    ).all()
    assert [tuple(r) for r in records][-2:] == [
        ("left", "events", "unsubscribe page"),
        ("withdrawn", None, "unsubscribe page"),
    ]
    # The history names the topic left once, with the campaign whose message it was.
    from outreach.history import contact_history

    kim = session.scalar(select(Contact.id).where(Contact.email == KIM))
    assert kim is not None
    history = [(e.campaign, e.what, e.detail) for e in contact_history(session, kim)]
    assert [h for h in history if "unsubscribe" in h[1] or "topic" in h[1]] == [
        ("invite", "left topic events", "method=page"),
        ("invite", "unsubscribe", "method=page"),
    ]


def test_the_result_page_undoes_the_topic_left(
    client: FlaskClient, topics_sent: Settings, session: Session
) -> None:
    url = f"/u/{token(topics_sent, 'unsubscribe', delivery_of(session, 'invite', KIM))}"
    done = client.post(url, **ONE_CLICK).get_data(as_text=True)
    action = re.search(r'<form method="post" action="(/p/[^"]+)">\s*<input[^>]+value="join"', done)
    assert action is not None
    undone = client.post(action.group(1), data={"action": "join", "topic": "events"})
    assert "“행사·웨비나 안내” 메일을 다시 받도록" in undone.get_data(as_text=True)
    assert not left(session, KIM)
    kinds = session.execute(
        select(ConsentRecord.kind, ConsentRecord.source).where(ConsentRecord.topic == "events")
    ).all()
    assert sorted(tuple(k) for k in kinds) == [
        ("joined", "preferences page"),
        ("left", "one-click"),
    ]


def test_a_message_without_a_topic_still_leaves_everything(
    session: Session, db_url: str, tmp_path: Path
) -> None:
    settings = settings_for(db_url, tmp_path)
    project_with(tmp_path, session)
    with_topics(tmp_path)
    send(campaign(tmp_path, "plain", None), settings, session)
    app = create_app(settings, tmp_path).test_client()
    url = f"/u/{token(settings, 'unsubscribe', delivery_of(session, 'plain', KIM))}"
    page = app.get(url).get_data(as_text=True)
    assert 'id="unsubscribe"' in page and "leave-topic" not in page
    assert app.post(url, **ONE_CLICK).status_code == 200
    assert suppressed(session, KIM) and not left(session, KIM)


def test_preferences_list_every_topic_and_save_the_choices(
    client: FlaskClient, topics_sent: Settings, session: Session
) -> None:
    url = f"/p/{token(topics_sent, 'preferences', delivery_of(session, 'invite', KIM))}"
    page = client.get(url).get_data(as_text=True)
    assert re.search(r'id="topic-newsletter" checked', page)
    assert re.search(r'id="topic-events" checked', page)
    assert "시티넷 뉴스레터" in page and "행사·웨비나 안내" in page
    saved = client.post(url, data={"action": "topics", "topic": ["newsletter"]})
    assert "저장했습니다" in saved.get_data(as_text=True)
    assert left(session, KIM) == {"events"}
    page = saved.get_data(as_text=True)
    assert re.search(r'id="topic-events"(?! checked)', page)
    assert re.search(r'id="topic-newsletter" checked', page)
    # Saving the same choices again records nothing more.
    client.post(url, data={"action": "topics", "topic": ["newsletter"]})
    client.post(url, data={"action": "topics", "topic": ["newsletter", "events"]})
    assert not left(session, KIM)
    steps = session.execute(
        select(ConsentRecord.kind, ConsentRecord.topic, ConsentRecord.text_version)
        .where(ConsentRecord.topic.is_not(None))
        .order_by(ConsentRecord.id)
    ).all()
    assert [(k, t) for k, t, _ in steps] == [("left", "events"), ("joined", "events")]
    assert all(v and len(v) == 12 for _, _, v in steps)  # the wording chosen on
    events = session.execute(
        select(Event.kind, Event.data).where(Event.kind.in_(("unsubscribe", "resubscribe")))
    ).all()
    assert sorted((k, d["topic"], d["method"]) for k, d in events) == [
        ("resubscribe", "events", "preferences"),
        ("unsubscribe", "events", "preferences"),
    ]
    # The language and the own unsubscribe's "subscribe again" stay.
    lang = client.post(url, data={"action": "language", "language": "en"})
    assert "Your language is saved" in lang.get_data(as_text=True)


def test_preferences_while_unsubscribed_show_topics_without_changing_them(
    client: FlaskClient, topics_sent: Settings, session: Session
) -> None:
    did = delivery_of(session, "invite", KIM)
    client.post(
        f"/u/{token(topics_sent, 'unsubscribe', did)}",
        data={"confirm": "yes", "leave": "everything"},
    )
    page = client.get(f"/p/{token(topics_sent, 'preferences', did)}").get_data(as_text=True)
    assert 'id="resubscribe"' in page
    assert re.search(r"<fieldset disabled", page)


def test_forged_replayed_and_foreign_requests_change_nothing(
    client: FlaskClient, topics_sent: Settings, session: Session
) -> None:
    did = delivery_of(session, "invite", KIM)
    good = token(topics_sent, "unsubscribe", did)
    preferences = token(topics_sent, "preferences", did)
    other_key = Tokens("another-secret-0123456789abcdef012345").sign("unsubscribe", did.id)  # type: ignore[union-attr]
    for url in (
        f"/u/{good}x",
        f"/u/{other_key}",
        f"/u/{preferences}",  # a preferences token is no unsubscribe
        f"/p/{good}",
    ):
        answer = client.post(url, **ONE_CLICK)
        assert answer.status_code == 400, url
        answer = client.post(url, data={"action": "topics", "topic": ["newsletter"]})
        assert answer.status_code == 400, url
    assert not left(session, KIM) and not suppressed(session, KIM)
    # A topic the page does not offer, or a made-up action: 400, nothing changed.
    assert (
        client.post(
            f"/p/{preferences}", data={"action": "topics", "topic": ["newsletter", "x"]}
        ).status_code
        == 400
    )
    assert (
        client.post(f"/p/{preferences}", data={"action": "join", "topic": "x"}).status_code == 400
    )
    assert (
        client.post(f"/u/{good}", data={"confirm": "yes", "leave": "newsletter"}).status_code == 400
    )
    assert not left(session, KIM)
    # Replayed: the mail client retries; one leave, one event, one consent record.
    for _ in range(3):
        assert client.post(f"/u/{good}", **ONE_CLICK).status_code == 200
    assert left(session, KIM) == {"events"}
    count = session.scalar(
        select(func.count()).select_from(Event).where(Event.kind == "unsubscribe")
    )
    records = session.scalar(
        select(func.count()).select_from(ConsentRecord).where(ConsentRecord.kind == "left")
    )
    assert (count, records) == (1, 1)


@pytest.mark.integration
def test_a_topic_left_during_a_running_campaign_stops_its_messages_within_a_second(
    session: Session, db_url: str, tmp_path: Path
) -> None:
    """A real `outreach worker` sends an events campaign at 20 messages a second, the whole
    campaign one claimed batch; a one-click on an events message two seconds ahead of the
    worker (twice the bound) stops that person's message, and only theirs."""
    from outreach.config import parse_rate
    from outreach.lifecycle import send_campaign
    from outreach.pipeline import CHECK_SECONDS
    from outreach.tasks import enqueuer
    from tests.sending_helpers import contacts_csv, current
    from tests.workers import Worker, wait_done, wait_for

    n, rate = 100, 20
    server = start_server()
    try:
        settings = settings_for(
            db_url,
            tmp_path,
            smtp_url=server.url,
            queue_url=f"sqlite:///{tmp_path / 'queue.db'}",
            rate=parse_rate(f"{rate}/s"),
            batch_size=n,
        )
        project_with(tmp_path, session, csv=contacts_csv(n))
        with_topics(tmp_path)
        path = campaign(tmp_path, "webinar", "events")
        session.commit()
        send_campaign(path, settings, session, enqueuer(settings))
        app = create_app(settings, tmp_path).test_client()
        log = tmp_path / "worker.log"
        with Worker(settings, log, 1) as worker:
            wait_for(lambda: len(server.handler.received) >= 10, 30, "sending to start", log)
            assert current(settings, "webinar").counts["queued"] == 0, "the batch is claimed"
            late = (
                f"person{len(server.handler.received) + int(2 * CHECK_SECONDS * rate)}@example.org"
            )
            url = f"/u/{token(settings, 'unsubscribe', delivery_of(session, 'webinar', late))}"
            assert app.post(url, **ONE_CLICK).status_code == 200
            status = wait_done(settings, 60, log, "webinar")
            assert worker.terminate() == 0
    finally:
        server.stop()
    assert server.handler.count_for(late) == 0
    assert status.counts["skipped"] == 1 and status.counts["sent"] == n - 1
    skipped = delivery_of(session, "webinar", late)
    assert skipped is not None and skipped.last_text == "suppressed (left topic events)"
    assert not suppressed(session, late) and left(session, late) == {"events"}


SEGMENTS = """receives-events:
  where: {topic: events}
receives-any:
  where: {topic: [events, newsletter]}
left-events:
  where: {left: events}
left-lately:
  where: {left: {topic: events, days: 30}}
not-events:
  where: {not: {topic: events}}
"""


def test_segments_on_topics_received_and_left(
    session: Session, db_url: str, tmp_path: Path
) -> None:
    from datetime import timedelta

    from outreach.consent import join_topic, leave_topic
    from outreach.db import writer_sessionmaker
    from outreach.models import utcnow
    from outreach.segments import load_segments, members
    from tests.conftest import write

    project_with(tmp_path, session)
    with_topics(tmp_path)
    write(tmp_path / "campaigns" / "segments.yaml", SEGMENTS)
    ids = dict(session.execute(select(Contact.email, Contact.id)).all())
    with writer_sessionmaker(db_url)() as writer:
        leave_topic(writer, ids[KIM], "events", source="test")
        # Maria left events long ago and came back: she receives it, and left it once.
        long_ago = utcnow() - timedelta(days=90)
        leave_topic(writer, ids[MARIA], "events", source="test", at=long_ago)
        join_topic(writer, ids[MARIA], "events", source="test", at=long_ago)
        writer.commit()
    session.commit()
    segments = load_segments(tmp_path / "campaigns" / "segments.yaml", session)

    def who(name: str) -> set[str]:
        return {c.email for c in members(session, segments[name].where)}

    sato = "sato@yokohama.example.com"
    assert who("receives-events") == {MARIA, sato}
    assert who("receives-any") == {KIM, MARIA, sato}
    assert who("left-events") == {KIM, MARIA}
    assert who("left-lately") == {KIM}
    assert who("not-events") == {KIM}


def test_an_unknown_topic_in_a_segment_is_located(tmp_path: Path) -> None:
    from outreach.errors import FileErrors
    from outreach.segments import load_segments
    from tests.conftest import write

    with_topics(tmp_path)
    path = write(
        tmp_path / "campaigns" / "segments.yaml",
        "a:\n  where: {topic: evnts}\nb:\n  where: {left: {topic: 7, days: 0}}\n"
        "c:\n  where: {left: {topc: events}}\n",
    )
    with pytest.raises(FileErrors) as caught:
        load_segments(path)
    shown = [f"{e.line}: {e.message}" for e in caught.value.errors]
    assert shown == [
        "4: left: write the name of a topic of topics.yaml, e.g. left: events",
        "4: days: a whole number from 1 to 36500, e.g. days: 30",
        "6: left: unknown key 'topc'; allowed: topic, days",
        f"2: unknown topic 'evnts' (did you mean 'events'?); the topics in "
        f"{tmp_path / 'campaigns' / 'topics.yaml'}: newsletter, events",
    ]


def test_an_import_after_a_leave_keeps_it_left(
    session: Session, db_url: str, tmp_path: Path
) -> None:
    """Imports bring contacts, consents and tags; they never give a topic back. The export
    carries the topics left, so a re-import is a no-op; a topics_left column can add leaves
    (a list moved from another tool), checked against topics.yaml."""
    from outreach.consent import leave_topic
    from outreach.contacts import export_to_string, import_csv
    from outreach.db import writer_sessionmaker
    from tests.conftest import write

    project_with(tmp_path, session)
    with_topics(tmp_path)
    topics = tmp_path / "campaigns" / "topics.yaml"
    kim = session.scalar(select(Contact.id).where(Contact.email == KIM))
    assert kim is not None
    session.commit()
    with writer_sessionmaker(db_url)() as writer:
        leave_topic(writer, kim, "events", source="one-click")
        writer.commit()

    def imported(text: str, name: str = "again.csv"):  # type: ignore[no-untyped-def]
        with writer_sessionmaker(db_url)() as writer:
            return import_csv(writer, write(tmp_path / name, text), topics_path=topics)

    # The same people with a fresh opt-in, and a file whose topics_left cell is empty.
    fresh = imported(
        "email,name,consent,consent_date\n"
        f"{KIM},김수진,opt-in,2027-01-05\n{MARIA},Maria Santos,opt-in,2027-01-05\n"
    )
    assert fresh.written and fresh.updated == 2
    assert left(session, KIM) == {"events"}
    assert imported(f"email,topics_left\n{KIM},\n").written
    assert left(session, KIM) == {"events"}

    exported = export_to_string(session)
    header, *rows = exported.splitlines()
    assert header.split(",")[13] == "topics_left"
    assert next(r for r in rows if r.startswith(KIM)).split(",")[13] == "events"
    again = imported(exported, "export.csv")
    assert (again.unchanged, again.updated, again.topics_left) == (3, 0, 0)
    assert left(session, KIM) == {"events"}

    # A column of topics left, as from another tool: added, recorded, and only once.
    moved = imported(f"email,수신거부 주제\n{MARIA},newsletter; events\n", "moved.csv")
    assert moved.topics_left == 2 and left(session, MARIA) == {"events", "newsletter"}
    assert imported(f"email,topics_left\n{MARIA},newsletter\n").topics_left == 0
    sources = session.scalars(
        select(ConsentRecord.source).where(
            ConsentRecord.kind == "left", ConsentRecord.contact_id != kim
        )
    ).all()
    assert sources == ["import moved.csv", "import moved.csv"]

    # A topic topics.yaml does not have is the row's error; nothing is written.
    bad = imported(f"email,name,topics_left\n{KIM},Kim,evnts\n", "bad.csv")
    assert not bad.written
    assert [str(e) for e in bad.errors] == [
        "line 2: topics_left: unknown topic 'evnts' (did you mean 'events'?); the topics in "
        f"{topics}: newsletter, events"
    ]


def test_contacts_show_lists_the_topics_left_and_their_consent_records(
    run_cli, session: Session, db_url: str, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    import json

    from outreach.consent import join_topic, leave_topic
    from outreach.db import writer_sessionmaker

    project_with(tmp_path, session)
    kim = session.scalar(select(Contact.id).where(Contact.email == KIM))
    assert kim is not None
    session.commit()
    with writer_sessionmaker(db_url)() as writer:
        leave_topic(writer, kim, "newsletter", source="preferences page", version="abc")
        join_topic(writer, kim, "newsletter", source="preferences page", version="abc")
        leave_topic(writer, kim, "events", source="one-click", version="def")
        writer.commit()
    env = {"OUTREACH_DATABASE_URL": db_url}
    doc = json.loads(run_cli("contacts", "show", KIM, "--json", env=env).output)
    assert [t["topic"] for t in doc["topics_left"]] == ["events"]
    assert doc["topics_left"][0]["source"] == "one-click"
    steps = [(s["what"], s["topic"], s["source"], s["version"]) for s in doc["consent_history"]]
    assert steps[-3:] == [
        ("left topic newsletter", "newsletter", "preferences page", "abc"),
        ("joined topic newsletter", "newsletter", "preferences page", "abc"),
        ("left topic events", "events", "one-click", "def"),
    ]
    text = run_cli("contacts", "show", KIM, env=env).output
    assert "topics left" in text and "events since" in text and "left topic events" in text
    # Not made through a message (no event): the history shows the consent records.
    history = [(e["what"], e["detail"]) for e in doc["history"]]
    assert history == [
        ("left topic newsletter", "source=preferences page, version=abc"),
        ("joined topic newsletter", "source=preferences page, version=abc"),
        ("left topic events", "source=one-click, version=def"),
    ]


def test_the_report_counts_unsubscribes_per_topic_and_everything_apart(
    client: FlaskClient, topics_sent: Settings, session: Session, run_cli, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    import json

    from outreach.reports import build

    sato = "sato@yokohama.example.com"
    did = {who: delivery_of(session, "invite", who) for who in (KIM, MARIA, sato)}
    client.post(f"/u/{token(topics_sent, 'unsubscribe', did[KIM])}", **ONE_CLICK)
    client.post(
        f"/u/{token(topics_sent, 'unsubscribe', did[MARIA])}",
        data={"confirm": "yes", "leave": "everything"},
    )
    client.post(
        f"/p/{token(topics_sent, 'preferences', did[sato])}",
        data={"action": "topics", "topic": ["events"]},
    )
    session.commit()
    from outreach.lifecycle import get_campaign

    report = build(session, get_campaign(session, "invite"))
    assert report.unsubscribes == {"everything": 1, "by_topic": {"events": 1, "newsletter": 1}}
    env = {"OUTREACH_DATABASE_URL": topics_sent.database_url}
    doc = json.loads(run_cli("campaigns", "report", "invite", "--json", env=env).output)
    assert doc["unsubscribes"] == report.unsubscribes
    text = run_cli("campaigns", "report", "invite", "--html", "r.html", env=env).output
    assert re.search(r"topic events\s*│\s*1", text) and re.search(r"everything\s*│\s*1", text)
    html = (tmp_path / "r.html").read_text()
    assert '<td>topic newsletter</td><td class="n">1</td>' in html
    assert '<td>everything (no more email)</td><td class="n">1</td>' in html


@pytest.mark.integration
@pytest.mark.browser
@pytest.mark.skipif(
    not Path("/usr/bin/chromium").exists(), reason="Chromium is not installed (.ci/run installs it)"
)
def test_in_chromium_a_person_leaves_events_then_chooses_on_the_preferences_page(
    sqlite_url: str, tmp_path: Path, smtp: SmtpServer
) -> None:
    """Real `outreach serve`, a real message, Chromium: the unsubscribe page names the topic
    and leaves it by its first button; the result says which; preferences list each topic
    with its state and save what is ticked."""
    from dataclasses import replace

    from playwright.sync_api import sync_playwright

    from outreach.db import reader_sessionmaker
    from outreach.preview import CHROMIUM, CHROMIUM_ARGS
    from tests.web_helpers import Server

    settings = settings_for(sqlite_url, tmp_path, smtp_url=smtp.url)
    with reader_sessionmaker(sqlite_url)() as session:
        project_with(tmp_path, session)
        with_topics(tmp_path)
        path = campaign(tmp_path, "webinar", "events")
        with Server(settings, tmp_path / "serve.log") as server:
            settings = replace(settings, base_url=server.url)
            send(path, settings, session)
            drain(settings, session, "webinar")
            (raw,) = [r.data for r in smtp.handler.received if r.rcpt == KIM]
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 390, "height": 844})
                page.goto(server.url + unsubscribe_path(raw))
                assert page.locator("html").get_attribute("lang") == "ko"
                intro = page.locator("#intro").inner_text()
                assert "“행사·웨비나 안내”" in intro and "webinar" not in intro
                first = page.locator("form button").first
                assert first.get_attribute("id") == "leave-topic"
                assert first.inner_text() == "“행사·웨비나 안내”만 수신거부"
                assert page.locator("#leave-everything").inner_text() == "모든 메일 수신거부"
                page.screenshot(path=str(tmp_path / "unsubscribe.png"), full_page=True)
                assert not left(session, KIM)
                first.click()
                page.wait_for_selector("#done")
                assert page.locator("#done").inner_text() == "“행사·웨비나 안내” 수신거부되었습니다"
                assert "다른 메일은 계속" in page.locator("#still").inner_text()
                assert "수신동의 철회" in page.locator("#result").inner_text()
                page.screenshot(path=str(tmp_path / "unsubscribed.png"), full_page=True)
                assert left(session, KIM) == {"events"} and not suppressed(session, KIM)

                page.click("#preferences")
                page.wait_for_selector("#topics")
                assert page.is_checked("#topic-newsletter")
                assert not page.is_checked("#topic-events")
                assert page.locator("label[for=topic-events]").inner_text() == "행사·웨비나 안내"
                page.check("#topic-events")
                page.uncheck("#topic-newsletter")
                page.click("#save-topics")
                page.wait_for_selector("#notice")
                assert page.locator("#notice").inner_text() == "선택하신 내용을 저장했습니다."
                assert page.is_checked("#topic-events")
                assert not page.is_checked("#topic-newsletter")
                page.screenshot(path=str(tmp_path / "preferences.png"), full_page=True)
                browser.close()
            assert left(session, KIM) == {"newsletter"}


def test_a_topic_left_gets_its_result_by_mail_when_the_installation_advertises(
    session: Session, db_url: str, tmp_path: Path
) -> None:
    """Network Act Art. 50(7): a refusal to receive is answered with its result — for a topic
    too, naming it, in the person's language; a second press mails nothing more."""
    from tests.conftest import write
    from tests.subscribe_helpers import SUBSCRIBE, html_of, outbox_messages

    settings = settings_for(db_url, tmp_path)
    project_with(tmp_path, session)
    with_topics(tmp_path)
    write(tmp_path / "campaigns" / "subscribe.yaml", SUBSCRIBE + "advertising: true\n")
    send(campaign(tmp_path, "invite", "events"), settings, session)
    client = create_app(settings, tmp_path).test_client()
    url = f"/u/{token(settings, 'unsubscribe', delivery_of(session, 'invite', KIM))}"
    for _ in range(2):
        assert client.post(url, **ONE_CLICK).status_code == 200
    session.commit()
    drain(settings, session, "_result-topic")
    (notice,) = outbox_messages(settings.outbox, "_result-topic")
    assert notice["To"].addresses[0].addr_spec == KIM
    assert notice["Subject"] == "메일 수신 선택 처리 완료: 시티넷 사무국"
    html = html_of(notice)
    assert "행사·웨비나 안내" in html and "다른 메일은 계속" in html
    assert "/p/" in html  # where to choose again


def test_the_subscribe_form_offers_topics_unticked_and_records_the_choice(
    session: Session, db_url: str, tmp_path: Path
) -> None:
    """subscribe.yaml's topics: are offered as boxes nobody ticked for the person; ticking
    none is an error; the topics ticked are joined and the others offered are left on
    confirmation, each a consent record with the form's text version."""
    from tests.subscribe_helpers import (
        SUBSCRIBE,
        confirm_link,
        outbox_messages,
        post_form,
        queued_confirmations,
        subscribe_project,
    )

    settings = settings_for(db_url, tmp_path)
    subscribe_project(tmp_path, SUBSCRIBE + "topics: [newsletter, events]\n")
    with_topics(tmp_path)
    client = create_app(settings, tmp_path).test_client()
    page = client.get("/subscribe?lang=ko").get_data(as_text=True)
    boxes = re.findall(r'<input type="checkbox" name="topic" value="(\w+)"[^>]*>', page)
    assert boxes == ["newsletter", "events"]
    assert not re.search(r'name="topic"[^>]* checked', page), "nothing ticked for the person"
    assert "시티넷 뉴스레터" in page and "웨비나, 연수, 총회 초대" in page

    address = "new.person@gangneung.example.kr"
    none = post_form(client)
    assert none.status_code == 400 and "받으실 메일을 하나 이상 골라 주세요" in none.get_data(
        as_text=True
    )
    forged = post_form(client, topic="surveys")
    assert forged.status_code == 400
    assert queued_confirmations(session, address) == 0

    chose = client.post(
        "/subscribe",
        data={
            "token": re.search(r'name="token" value="([^"]+)"', page).group(1),  # type: ignore[union-attr]
            "lang": "ko",
            "email": address,
            "language": "ko",
            "consent": "yes",
            "website": "",
            "topic": ["events"],
        },
    )
    assert chose.status_code == 200 and queued_confirmations(session, address) == 1
    drain(settings, session, "_confirmation")
    (message,) = outbox_messages(settings.outbox, "_confirmation")
    link = confirm_link(message)
    assert client.post("/" + link.split("/", 3)[3]).status_code == 200
    assert left(session, address) == {"newsletter"}
    steps = session.execute(
        select(
            ConsentRecord.kind,
            ConsentRecord.topic,
            ConsentRecord.source,
            ConsentRecord.text_version,
        )
        .where(ConsentRecord.topic.is_not(None))
        .order_by(ConsentRecord.topic)
    ).all()
    assert [tuple(s) for s in steps] == [
        ("joined", "events", "form", "2026-12"),
        ("left", "newsletter", "form: not chosen", "2026-12"),
    ]


@pytest.mark.integration
@pytest.mark.browser
@pytest.mark.skipif(
    not Path("/usr/bin/chromium").exists(), reason="Chromium is not installed (.ci/run installs it)"
)
def test_in_chromium_each_topic_box_of_the_subscribe_form_sits_by_its_title(
    sqlite_url: str, tmp_path: Path
) -> None:
    """The form's topic rows read as the consent box does: a small box, its title right
    beside it, the description under the title (the field rule that makes the address
    input full width must not stretch the boxes)."""
    from playwright.sync_api import sync_playwright

    from outreach.preview import CHROMIUM, CHROMIUM_ARGS
    from tests.subscribe_helpers import SUBSCRIBE, subscribe_project
    from tests.web_helpers import Server

    subscribe_project(tmp_path, SUBSCRIBE + "topics: [newsletter, events]\n")
    with_topics(tmp_path)
    with (
        Server(settings_for(sqlite_url, tmp_path), tmp_path / "serve.log") as server,
        sync_playwright() as p,
    ):
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for width, lang in ((375, "ko"), (1280, "en")):
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.goto(f"{server.url}/subscribe?lang={lang}")
            rows = page.evaluate(
                """() => [...document.querySelectorAll("input[name=topic]")].map(box => {
                    const label = document.querySelector(`label[for="${box.id}"]`);
                    const b = box.getBoundingClientRect(), l = label.getBoundingClientRect();
                    return {box: box.id, width: b.width, gap: l.left - b.right};
                })"""
            )
            assert [r["box"] for r in rows] == ["topic-newsletter", "topic-events"]
            for row in rows:
                assert row["width"] < 30, (width, row)  # a box, not a block
                assert 0 <= row["gap"] < 20, (width, row)  # its title right beside it
            page.close()
        browser.close()


def test_subscribe_yaml_topics_must_be_topics(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tests.subscribe_helpers import SUBSCRIBE, subscribe_project

    subscribe_project(tmp_path, SUBSCRIBE + "topics: [newsletter, evnts]\n")
    with_topics(tmp_path)
    result = run_cli("campaigns", "validate", env={"OUTREACH_POSTAL_ADDRESS": "Seoul"})
    assert result.exit_code == 1
    assert (
        "error: campaigns/subscribe.yaml:9: topics: unknown topic 'evnts' (did you mean "
        "'events'?); the topics in campaigns/topics.yaml: newsletter, events"
    ) in result.output


def test_a_mailto_unsubscribe_leaves_the_messages_topic(
    topics_sent: Settings, session: Session
) -> None:
    """The List-Unsubscribe mailto: of an events message does what its one-click does: it
    leaves events, once (without a topic it leaves everything: tests/test_bounces.py)."""
    from outreach.bounces import ingest

    assert topics_sent.secret_key
    tokens = Tokens(topics_sent.secret_key)
    domain = "bounce.citynet-ap.org"

    def mailto(delivery: Delivery | None) -> bytes:
        assert delivery is not None
        return (
            f"From: {KIM}\r\nTo: <unsubscribe+{tokens.sign('bounce', delivery.id)}@{domain}>\r\n"
            "Subject: unsubscribe\r\n\r\nunsubscribe\r\n"
        ).encode()

    raw = mailto(delivery_of(session, "invite", KIM))
    report = ingest(session, tokens, domain, 3, iter([("a", raw, None), ("b", raw, None)]))
    assert (report.unsubscribes, report.duplicates) == (1, 1)
    assert left(session, KIM) == {"events"} and not suppressed(session, KIM)
    (event,) = session.scalars(select(Event).where(Event.kind == "unsubscribe"))
    assert event.data == {"method": "mailto", "topic": "events"}
    record = session.scalar(select(ConsentRecord).where(ConsentRecord.kind == "left"))
    assert record is not None and (record.topic, record.source) == ("events", "mailto")
