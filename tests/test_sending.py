"""The sending pipeline against real SMTP and real databases (SQLite and PostgreSQL)."""

from __future__ import annotations

import email
from collections.abc import Iterator
from datetime import timedelta
from email import policy
from pathlib import Path

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from outreach.config import parse_smtp_url
from outreach.errors import ConfigError, FileErrors
from outreach.lifecycle import cancel, pause, resume, send_test
from outreach.models import Campaign, Delivery, Event, Suppression, utcnow
from outreach.pipeline import Sender
from outreach.ratelimit import Limit, reserve
from outreach.suppressions import suppress
from outreach.tasks import run_sweep
from outreach.transport import SmtpTransport
from tests.project import CAMPAIGN
from tests.sending_helpers import campaign_id as cid_of
from tests.sending_helpers import contacts_csv, current, drain, project_with, send, settings_for
from tests.smtp_server import SmtpServer, start_server


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = start_server(stall_seconds=2.0)
    yield server
    server.stop()


def test_outbox_send_and_status(session: Session, db_url: str, tmp_path: Path) -> None:
    settings = settings_for(db_url, tmp_path)
    path = project_with(tmp_path, session)
    result = send(path, settings, session)
    assert (result.added, result.state) == (3, "sending")
    cid_of(session)
    drain(settings, session)
    status = current(settings)
    assert status.state == "done" and status.counts["sent"] == 3
    files = sorted((tmp_path / "outbox" / "news").glob("*.eml"))
    assert len(files) == 3
    ids = set(session.scalars(select(Delivery.message_id)))
    for f in files:
        msg = email.message_from_bytes(f.read_bytes(), policy=policy.default)
        assert msg["Message-ID"] in ids
        assert msg["List-Unsubscribe"].startswith(f"<{settings.base_url}/u/")
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    kim = next(f for f in files if b"kim@suwon" in f.read_bytes())
    msg = email.message_from_bytes(kim.read_bytes(), policy=policy.default)
    assert msg["Subject"] == "시티넷 소식 — 김수진님"
    assert "김수진님, 안녕하십니까." in msg.get_body(("html",)).get_content()


def test_sending_twice_never_mails_anyone_twice(
    session: Session, db_url: str, tmp_path: Path
) -> None:
    settings = settings_for(db_url, tmp_path)
    path = project_with(tmp_path, session)
    send(path, settings, session)
    drain(settings, session)
    again = send(path, settings, session)
    assert again.added == 0 and again.total == 3
    from outreach.contacts import import_csv
    from tests.conftest import write

    write(tmp_path / "more.csv", "email,language\nnew@example.org,en\n")
    import_csv(session, tmp_path / "more.csv")
    third = send(path, settings, session)
    assert third.added == 1 and third.total == 4
    drain(settings, session)
    assert len(list((tmp_path / "outbox" / "news").glob("*.eml"))) == 4


def test_invalid_campaign_queues_nothing(session: Session, db_url: str, tmp_path: Path) -> None:
    settings = settings_for(db_url, tmp_path)
    path = project_with(
        tmp_path, session, campaign=CAMPAIGN.replace("template: news", "template: x")
    )
    with pytest.raises(FileErrors):
        send(path, settings, session)
    session.rollback()
    assert session.scalar(select(func.count()).select_from(Campaign)) == 0
    assert session.scalar(select(func.count()).select_from(Delivery)) == 0


def test_smtp_send_needs_a_secret_key(session: Session, db_url: str, tmp_path: Path) -> None:
    settings = settings_for(
        db_url, tmp_path, secret_key=None, smtp_url="smtp://127.0.0.1:1?tls=none"
    )
    path = project_with(tmp_path, session)
    with pytest.raises(ConfigError, match="OUTREACH_SECRET_KEY"):
        send(path, settings, session)


def test_failures_are_retried_or_failed_and_nothing_is_lost(
    session: Session, db_url: str, tmp_path: Path, smtp: SmtpServer
) -> None:
    settings = settings_for(db_url, tmp_path, smtp_url=smtp.url, pause_after_failures=50)
    path = project_with(tmp_path, session, csv=contacts_csv(40))
    h = smtp.handler
    for i in range(0, 8):
        h.rule(f"person{i}@example.org", "reply", "451 4.3.0 try later", times=2)
    for i in range(8, 12):
        h.rule(f"person{i}@example.org", "reply", "550 5.1.1 user unknown")
    for i in range(12, 14):
        h.rule(f"person{i}@example.org", "reply", "552 5.2.2 mailbox full")
    for i in range(14, 18):
        h.rule(f"person{i}@example.org", "drop", times=1)
    h.rule("person18@example.org", "stall", times=1)
    h.rule("person19@example.org", "reply", "451 4.3.0 always", times=None)
    send(path, settings, session)
    drain(settings, session, timeout=60)
    status = current(settings)
    counts = status.counts
    assert status.state == "done"
    assert counts["sent"] == 40 - 4 - 2 - 1
    assert counts["failed"] == 7
    assert sum(counts.values()) == status.total == 40
    received = h.by_recipient()
    for i in list(range(0, 8)) + list(range(14, 19)) + list(range(20, 40)):
        assert received[f"person{i}@example.org"] == 1, i
    for i in range(8, 14):
        assert received[f"person{i}@example.org"] == 0
    # the 5.1.1s are hard bounces: suppressed and recorded; a full mailbox is not
    suppressed = set(session.scalars(select(Suppression.email)))
    assert suppressed == {f"person{i}@example.org" for i in range(8, 12)}
    assert (
        session.scalar(select(func.count()).select_from(Event).where(Event.kind == "bounce")) == 4
    )
    always = session.scalar(select(Delivery).where(Delivery.last_text.like("gave up after%")))
    assert always is not None and always.attempts == settings.max_attempts
    retried = session.scalars(
        select(Delivery.attempts).where(Delivery.state == "sent", Delivery.attempts > 1)
    ).all()
    assert len(retried) == 8 + 4 + 1


def test_a_failing_relay_pauses_the_campaign(
    session: Session, db_url: str, tmp_path: Path, smtp: SmtpServer
) -> None:
    settings = settings_for(db_url, tmp_path, smtp_url=smtp.url, pause_after_failures=3)
    path = project_with(tmp_path, session, csv=contacts_csv(30))
    for i in range(30):
        smtp.handler.rule(f"person{i}@example.org", "reply", "421 4.7.0 too many connections")
    send(path, settings, session)
    Sender(settings, SmtpTransport(parse_smtp_url(smtp.url))).run(cid_of(session))
    status = current(settings)
    assert status.state == "paused"
    assert "3 consecutive relay failures" in (status.reason or "") and "421" in status.reason
    attempts = session.scalars(select(Delivery.attempts)).all()
    assert sum(attempts) == 3 and status.counts["queued"] == 27
    assert status.counts["sending"] == 0


def test_pause_resume_cancel(session: Session, db_url: str, tmp_path: Path) -> None:
    settings = settings_for(db_url, tmp_path)
    path = project_with(tmp_path, session, csv=contacts_csv(10))
    send(path, settings, session)
    campaign_id = cid_of(session)
    pause(session, "news")
    assert (
        Sender(settings, SmtpTransport(parse_smtp_url("smtp://127.0.0.1:1"))).run(campaign_id).sent
        == 0
    )
    assert current(settings).counts["queued"] == 10
    queued: list[tuple[int, int]] = []
    resume(session, "news", lambda cid, n: queued.append((cid, n)), settings)
    assert queued == [(campaign_id, 1)] and current(settings).state == "sending"
    drain(settings, session)
    assert current(settings).counts["sent"] == 10
    with pytest.raises(Exception, match="already done"):
        cancel(session, "news")


def test_cancel_skips_what_is_left(session: Session, db_url: str, tmp_path: Path) -> None:
    settings = settings_for(db_url, tmp_path)
    path = project_with(tmp_path, session, csv=contacts_csv(5))
    send(path, settings, session)
    assert cancel(session, "news").skipped == 5
    status = current(settings)
    assert status.state == "cancelled" and status.counts["skipped"] == 5
    with pytest.raises(Exception, match="was cancelled"):
        send(path, settings, session)


def test_unsubscribe_after_queueing_is_honoured(
    session: Session, db_url: str, tmp_path: Path
) -> None:
    settings = settings_for(db_url, tmp_path)
    path = project_with(tmp_path, session)
    send(path, settings, session)
    suppress(session, "kim@suwon.example.org", "unsubscribed")
    session.commit()
    drain(settings, session)
    status = current(settings)
    assert status.counts == {**status.counts, "sent": 2, "skipped": 1}
    skipped = session.scalar(select(Delivery).where(Delivery.state == "skipped"))
    assert skipped is not None and skipped.last_text == "suppressed (unsubscribed)"
    assert not any(b"kim@suwon" in f.read_bytes() for f in (tmp_path / "outbox" / "news").iterdir())


def test_forgotten_contact_is_skipped(session: Session, db_url: str, tmp_path: Path) -> None:
    from outreach.contacts import forget

    settings = settings_for(db_url, tmp_path)
    path = project_with(tmp_path, session)
    send(path, settings, session)
    forget(session, "kim@suwon.example.org")
    session.commit()
    drain(settings, session)
    assert current(settings).counts["skipped"] == 1


def test_scheduled_campaign_starts_on_time(session: Session, db_url: str, tmp_path: Path) -> None:
    settings = settings_for(db_url, tmp_path)
    path = project_with(
        tmp_path, session, campaign=CAMPAIGN + "send_at: 2099-01-01T09:00:00+09:00\n"
    )
    result = send(path, settings, session)
    assert result.state == "scheduled"
    enqueued: list[int] = []
    run_sweep(settings, lambda cid: enqueued.append(cid))
    assert enqueued == [] and current(settings).state == "scheduled"
    session.execute(update(Campaign).values(send_at=utcnow() - timedelta(seconds=1)))
    session.commit()
    run_sweep(settings, lambda cid: enqueued.append(cid))
    assert enqueued and current(settings).state == "sending"


def test_sweep_resumes_abandoned_claims(session: Session, db_url: str, tmp_path: Path) -> None:
    from outreach import store

    settings = settings_for(db_url, tmp_path)
    path = project_with(tmp_path, session)
    send(path, settings, session)
    campaign_id = cid_of(session)
    ids = store.claim(session, campaign_id, "dead-worker", 10, lease=0.01)
    session.commit()
    assert len(ids) == 3
    import time

    time.sleep(0.05)
    enqueued: list[int] = []
    run_sweep(settings, lambda cid: enqueued.append(cid))
    assert enqueued == [campaign_id]
    assert current(settings).counts["queued"] == 3
    drain(settings, session)
    assert current(settings).counts["sent"] == 3


def test_test_to_sends_one_per_language_and_touches_nothing(
    session: Session, db_url: str, tmp_path: Path, smtp: SmtpServer
) -> None:
    settings = settings_for(db_url, tmp_path, smtp_url=smtp.url)
    path = project_with(tmp_path, session)
    languages = send_test(path, settings, session, "Staff@CityNet.example.org")
    assert languages == ["en", "ko"]
    got = smtp.handler.received
    assert [r.rcpt for r in got] == ["staff@citynet.example.org"] * 2
    subjects = sorted(
        email.message_from_bytes(r.data, policy=policy.default)["Subject"] for r in got
    )
    assert subjects[0].startswith("[TEST en]") and subjects[1].startswith("[TEST ko] 시티넷")
    assert session.scalar(select(func.count()).select_from(Delivery)) == 0


def test_verp_dkim_and_header_injection(
    session: Session, db_url: str, tmp_path: Path, smtp: SmtpServer
) -> None:
    import subprocess

    import dkim

    key = tmp_path / "dkim.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
    public = subprocess.run(
        ["openssl", "rsa", "-in", str(key), "-pubout", "-outform", "DER"],
        check=True,
        capture_output=True,
    ).stdout
    import base64

    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)
    settings = settings_for(
        db_url,
        tmp_path,
        smtp_url=smtp.url,
        bounce_domain="bounce.citynet-ap.org",
        dkim_key_file=str(key),
        dkim_selector="s2026",
    )
    csv = (
        "email,name,organisation,language\n"
        '"evil@example.org","Eve\r\nBcc: victim@example.org","Org\nX-Injected: yes",en\n'
    )
    path = project_with(tmp_path, session, csv=csv)
    send(path, settings, session)
    drain(settings, session)
    (message,) = smtp.handler.received
    assert message.mail_from.startswith("bounces+") and message.mail_from.endswith(
        "@bounce.citynet-ap.org"
    )
    assert message.rcpt == "evil@example.org"
    msg = email.message_from_bytes(message.data, policy=policy.default)
    assert msg["Return-Path"] == f"<{message.mail_from}>"
    assert "mailto:unsubscribe+" in msg["List-Unsubscribe"]
    assert "Bcc" not in msg and "X-Injected" not in msg
    assert "victim@example.org" in str(msg["To"])  # harmless text inside the display name
    signature = msg["DKIM-Signature"]
    tags = dict(
        part.strip().split("=", 1)
        for part in signature.replace("\r\n", "").split(";")
        if "=" in part
    )
    signed = tags["h"].replace(" ", "").lower().split(":")
    assert "list-unsubscribe" in signed and "list-unsubscribe-post" in signed
    assert "feedback-id" in signed and msg["Feedback-ID"] == "news:outreach:citynet-ap.org"
    assert tags["d"] == "citynet-ap.org" and tags["s"] == "s2026"
    assert dkim.verify(message.data, dnsfunc=lambda name, timeout=5: record)


def test_rate_limit_reservations_are_shared(session: Session) -> None:
    limit = Limit("global", 10.0)
    first = reserve(session, limit, 5, now=1000.0)
    second = reserve(session, limit, 5, now=1000.0)  # another worker, same instant
    third = reserve(session, limit, 2, now=1003.0)  # after a pause: no burst from the past
    assert first == 1000.0
    assert second == pytest.approx(1000.5)
    assert third == pytest.approx(1003.0)


# --- cancel: everything not sent ends skipped, including what workers held ---------------


def _accounted(settings) -> None:  # type: ignore[no-untyped-def]
    status = current(settings)
    counts = status.counts
    assert counts["queued"] == counts["deferred"] == counts["sending"] == 0, counts
    assert counts["sent"] + counts["skipped"] + counts["failed"] + counts["bounced"] == status.total


def test_cancel_skips_what_a_worker_held_and_gave_back(
    session: Session, db_url: str, tmp_path: Path
) -> None:
    from outreach import store
    from outreach.db import writer_sessionmaker
    from outreach.lifecycle import list_campaigns

    settings = settings_for(db_url, tmp_path)
    path = project_with(tmp_path, session, csv=contacts_csv(10))
    send(path, settings, session)
    campaign_id = cid_of(session)
    with writer_sessionmaker(db_url)() as worker:
        held = store.claim(worker, campaign_id, "worker-1", 4, lease=60)
        worker.commit()
    cancelled = cancel(session, "news")
    assert (cancelled.skipped, cancelled.in_flight) == (6, 4)
    status = current(settings)
    assert status.counts["sending"] == 4 and status.eta_seconds is None
    with writer_sessionmaker(db_url)() as worker:
        store.release(worker, campaign_id, held, "worker-1")  # the worker lets go
        worker.commit()
    _accounted(settings)
    assert current(settings).counts["skipped"] == 10
    [(_, counts)] = list_campaigns(session)
    assert counts["queued"] + counts["deferred"] == 0


def test_cancel_skips_claims_whose_worker_died(
    session: Session, db_url: str, tmp_path: Path
) -> None:
    import time

    from outreach import store
    from outreach.db import writer_sessionmaker

    settings = settings_for(db_url, tmp_path)
    path = project_with(tmp_path, session, csv=contacts_csv(5))
    send(path, settings, session)
    campaign_id = cid_of(session)
    with writer_sessionmaker(db_url)() as worker:
        store.claim(worker, campaign_id, "dead-worker", 3, lease=0.01)
        worker.commit()
    cancel(session, "news")
    time.sleep(0.05)
    run_sweep(settings, lambda cid: None)
    _accounted(settings)
    assert current(settings).counts["skipped"] == 5


def test_cancel_while_a_sender_is_sending(session: Session, db_url: str, tmp_path: Path) -> None:
    import threading

    from outreach.config import parse_rate
    from outreach.db import writer_sessionmaker

    settings = settings_for(db_url, tmp_path, rate=parse_rate("20/s"), batch_size=50)
    path = project_with(tmp_path, session, csv=contacts_csv(60))
    send(path, settings, session)
    campaign_id = cid_of(session)
    sender = Sender(settings, transport_for_outbox(settings))
    thread = threading.Thread(target=sender.run, args=(campaign_id,))
    thread.start()
    try:
        deadline = utcnow() + timedelta(seconds=20)
        while current(settings).counts["sent"] < 3 and utcnow() < deadline:
            import time

            time.sleep(0.05)
        with writer_sessionmaker(db_url)() as writer:
            cancelled = cancel(writer, "news")
        assert cancelled.in_flight > 0
    finally:
        thread.join(timeout=30)
    _accounted(settings)
    counts = current(settings).counts
    assert counts["skipped"] > 0 and counts["sent"] < 60
    assert current(settings).eta_seconds is None


def transport_for_outbox(settings):  # type: ignore[no-untyped-def]
    from outreach.transport import transport_for

    return transport_for(settings)


# --- an error the transport does not classify --------------------------------------------


def test_an_unclassified_transport_error_defers_and_pauses(
    session: Session, db_url: str, tmp_path: Path
) -> None:
    from tests.conftest import write

    outbox = write(tmp_path / "outbox-is-a-file", "not a folder\n")  # as a full disk behaves
    settings = settings_for(db_url, tmp_path, outbox=outbox, pause_after_failures=3)
    path = project_with(tmp_path, session, csv=contacts_csv(8))
    send(path, settings, session)
    outcome = Sender(settings, transport_for_outbox(settings)).run(cid_of(session))
    assert outcome.sent == 0
    status = current(settings)
    assert status.state == "paused"
    assert status.counts["deferred"] == 3 and status.counts["queued"] == 5
    assert status.counts["sending"] == 0
    assert "3 consecutive relay failures" in status.reason
    assert "Not a directory" in status.reason or "NotADirectory" in status.reason
    deferred = session.scalars(select(Delivery.last_text).where(Delivery.state == "deferred"))
    assert all("Not a directory" in (t or "") for t in deferred)


# --- policy rejections during SMTP ---------------------------------------------------------


def test_policy_rejections_are_recorded_never_suppress_and_pause(
    session: Session, db_url: str, tmp_path: Path, smtp: SmtpServer
) -> None:
    from outreach.reports import build

    settings = settings_for(db_url, tmp_path, smtp_url=smtp.url, pause_after_failures=3)
    path = project_with(tmp_path, session, csv=contacts_csv(10, domain="gmail.example"))
    for i in range(10):
        smtp.handler.rule(
            f"person{i}@gmail.example",
            "reply",
            "550 5.7.26 Unauthenticated email from citynet-ap.org is not accepted\x1b[2J due to DMARC",
        )
    send(path, settings, session)
    Sender(settings, SmtpTransport(parse_smtp_url(smtp.url))).run(cid_of(session))
    status = current(settings)
    assert status.state == "paused"
    assert "3 consecutive policy rejections" in status.reason and "5.7.26" in status.reason
    assert "campaigns resume news" in status.reason
    assert status.counts["failed"] == 3 and status.counts["queued"] == 7
    assert session.scalar(select(func.count()).select_from(Suppression)) == 0
    events = session.scalars(select(Event).where(Event.kind == "bounce")).all()
    assert len(events) == 3
    for event in events:
        assert event.data == {
            "kind": "policy",
            "code": 550,
            "text": "5.7.26 Unauthenticated email from citynet-ap.org is not accepted due to DMARC",
            "domain": "gmail.example",
            "source": "smtp",
        }
        assert event.delivery_id is not None and event.contact_id is not None
    report = build(
        session, session.get(Campaign, cid_of(session)), tmp_path / "campaigns" / "segments.yaml"
    )
    assert report.policy_by_domain == [{"domain": "gmail.example", "rejected": 3}]


def test_a_sent_message_or_another_failure_ends_a_run_of_policy_rejections(
    session: Session, db_url: str, tmp_path: Path, smtp: SmtpServer
) -> None:
    settings = settings_for(db_url, tmp_path, smtp_url=smtp.url, pause_after_failures=2)
    path = project_with(tmp_path, session, csv=contacts_csv(9))
    # policy, ok, policy, hard, policy, ok, policy, ok, policy: never two policy in a row
    for i in (0, 2, 4, 6, 8):
        smtp.handler.rule(f"person{i}@example.org", "reply", "554 5.7.1 Message rejected as spam")
    smtp.handler.rule("person3@example.org", "reply", "550 5.1.1 no such user")
    send(path, settings, session)
    drain(settings, session)
    status = current(settings)
    assert status.state == "done"
    assert status.counts["failed"] == 6 and status.counts["sent"] == 3
    assert set(session.scalars(select(Suppression.email))) == {"person3@example.org"}


# --- a contact forgotten while its message is being sent -----------------------------------


class ForgetsDuringSend:
    """The SMTP transport, with `contacts forget` run by someone else while a message to
    that contact is on its way: between the worker loading the batch and recording."""

    def __init__(self, inner: SmtpTransport, db_url: str) -> None:
        self.inner, self.db_url, self.name = inner, db_url, "smtp"

    def send(self, envelope, campaign):  # type: ignore[no-untyped-def]
        from outreach.contacts import forget
        from outreach.db import session_scope

        with session_scope(self.db_url) as other:
            forget(other, envelope.recipient)
        return self.inner.send(envelope, campaign)

    def close(self) -> None:
        self.inner.close()


@pytest.mark.parametrize(
    ("reply", "state"),
    [
        ("550 5.1.1 <{a}>: Recipient address rejected: User unknown", "failed"),
        ("554 5.7.1 <{a}>: Relay access denied by policy", "failed"),
        ("450 4.2.1 <{a}>: Mailbox busy, try later", "deferred"),
        (None, "sent"),
    ],
)
def test_a_contact_forgotten_mid_send_is_not_written_back(
    session: Session,
    db_url: str,
    tmp_path: Path,
    smtp: SmtpServer,
    reply: str | None,
    state: str,
) -> None:
    from outreach.history import ERASED

    settings = settings_for(db_url, tmp_path, smtp_url=smtp.url)
    address = "Kim.Sujin@Suwon.example.org"
    path = project_with(tmp_path, session, csv=f"email,name,language\n{address},김수진,ko\n")
    if reply:
        smtp.handler.rule(address.lower(), "reply", reply.format(a=address.lower()))
    send(path, settings, session)
    transport = ForgetsDuringSend(SmtpTransport(parse_smtp_url(smtp.url)), db_url)
    Sender(settings, transport).run(cid_of(session))
    transport.close()
    delivery = session.scalar(select(Delivery))
    assert delivery is not None and delivery.state == state and delivery.contact_id is None
    stored = [delivery.last_text or ""]
    stored += [repr(e.data) + repr(e.dedupe_key) for e in session.scalars(select(Event))]
    stored += [c.state_reason or "" for c in session.scalars(select(Campaign))]
    assert not any(address.lower() in text.lower() for text in stored), stored
    if reply:
        assert ERASED in delivery.last_text
    assert session.scalar(select(Event.contact_id).where(Event.contact_id.is_not(None))) is None
    reasons = dict(session.execute(select(Suppression.email, Suppression.reason)).all())
    assert reasons == {address.lower(): "forgotten"}


# --- is anyone sending? --------------------------------------------------------------------


def test_status_says_when_no_worker_has_been_seen(
    session: Session, db_url: str, tmp_path: Path
) -> None:
    from outreach.db import writer_sessionmaker
    from outreach.heartbeat import beat

    settings = settings_for(db_url, tmp_path)
    path = project_with(tmp_path, session)
    send(path, settings, session)
    status = current(settings)
    assert status.workers.alive == 0 and status.eta_seconds is None
    assert status.note == "no worker has been seen — start `outreach worker`"
    with writer_sessionmaker(db_url)() as writer:
        beat(writer, "mail-1:4242", threads=4, now=utcnow() - timedelta(minutes=5, seconds=3))
        writer.commit()
    status = current(settings)
    assert status.note == "no worker has been seen for 5 minutes — start `outreach worker`"
    assert status.as_json()["workers"]["alive"] == 0
    with writer_sessionmaker(db_url)() as writer:
        beat(writer, "mail-1:4242", threads=4)
        writer.commit()
    status = current(settings)
    assert status.workers.alive == 1 and status.note is None
    assert status.as_json()["workers"]["alive"] == 1
    drain(settings, session)
    assert current(settings).note is None  # done: nothing to wait for


class _Watching:
    """A transport that accepts everything and, as each message goes, compares how many it
    was handed with how many the database has as sent: the messages a crash would resend."""

    name = "watching"

    def __init__(self, settings) -> None:  # type: ignore[no-untyped-def]
        self.settings = settings
        self.handed = 0
        self.most_unrecorded = 0

    def send(self, envelope, campaign):  # type: ignore[no-untyped-def]
        from outreach.transport import Accepted

        self.handed += 1  # this one is in flight
        recorded = current(self.settings).counts["sent"]
        self.most_unrecorded = max(self.most_unrecorded, self.handed - recorded)
        return Accepted(250, "ok")

    def close(self) -> None:
        pass


def test_outcomes_are_committed_in_groups_within_the_crash_bound(
    session: Session, db_url: str, tmp_path: Path
) -> None:
    from outreach.config import parse_rate
    from outreach.pipeline import OUTCOMES_PER_COMMIT

    n = 3 * OUTCOMES_PER_COMMIT + 5
    settings = settings_for(db_url, tmp_path, rate=parse_rate("0"), batch_size=n)
    path = project_with(tmp_path, session, csv=contacts_csv(n))
    send(path, settings, session)
    watching = _Watching(settings)
    drain(settings, session, transport=watching)
    assert current(settings).counts["sent"] == watching.handed == n
    # Grouped (more than one message a commit), and never past the stated bound.
    assert 1 < watching.most_unrecorded <= OUTCOMES_PER_COMMIT
