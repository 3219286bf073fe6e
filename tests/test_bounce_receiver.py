"""`outreach bounces receive`: a real SMTP server for the bounce domain, driven by smtplib."""

from __future__ import annotations

import asyncio
import os
import signal
import smtplib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from outreach.bounce_receiver import MAX_RECEIVED_BYTES, BounceReceiver
from outreach.config import Settings
from outreach.db import engine_for
from outreach.models import Event
from outreach.tokens import Tokens
from tests.smtp_server import free_port
from tests.test_bounces import DOMAIN, SECRET, fixture, sent_campaign, states, suppressed
from tests.workers import worker_env

Info = dict[str, tuple[int, str]]


@pytest.fixture
def campaign(session: Session, db_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    return sent_campaign(session, db_url, tmp_path)


@contextmanager
def receiving(settings: Settings, **limits: Any) -> Iterator[BounceReceiver]:
    lines: list[str] = []
    receiver = BounceReceiver(settings, Tokens(SECRET), log=lines.append, **limits)
    thread = threading.Thread(target=lambda: asyncio.run(receiver.run("127.0.0.1", 0)))
    thread.start()
    assert receiver.ready.wait(10), "the receiver did not start"
    receiver.lines = lines  # type: ignore[attr-defined]
    try:
        yield receiver
    finally:
        receiver.stop()
        thread.join(30)
        assert not thread.is_alive()


def client(receiver: BounceReceiver) -> smtplib.SMTP:
    assert receiver.port is not None
    return smtplib.SMTP("127.0.0.1", receiver.port, timeout=10)


def wire(raw: bytes) -> bytes:
    """A message as SMTP carries it: CRLF line ends."""
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def verp(info: Info, person: str, local: str = "bounces") -> str:
    return f"{local}+{Tokens(SECRET).sign('bounce', info[person][0])}@{DOMAIN}"


def test_accepts_only_what_we_hand_out(campaign, session: Session) -> None:  # type: ignore[no-untyped-def]
    settings, info = campaign
    with receiving(settings) as receiver, client(receiver) as smtp:
        smtp.ehlo("mx.example.net")
        smtp.mail("")
        for rcpt in (
            verp(info, "postfix"),
            verp(info, "fine", "unsubscribe"),
            f"postmaster@{DOMAIN}",
            f"ABUSE@{DOMAIN.upper()}",
        ):
            assert smtp.rcpt(rcpt)[0] == 250, rcpt
        for rcpt in (
            f"bounces+forged.token@{DOMAIN}",
            f"bounces@{DOMAIN}",
            f"someone@{DOMAIN}",
            verp(info, "postfix").replace(DOMAIN, "other.example.org"),
            "postmaster@citynet-ap.org",
        ):
            code, text = smtp.rcpt(rcpt)
            assert code == 550, (rcpt, code, text)
        smtp.rset()


def test_a_bounce_is_ingested_as_bounces_ingest_does(campaign, session: Session) -> None:  # type: ignore[no-untyped-def]
    settings, info = campaign
    session.commit()
    with receiving(settings) as receiver, client(receiver) as smtp:
        smtp.sendmail("", [verp(info, "postfix")], wire(fixture("postfix", info)))
        # The envelope recipient's token names the delivery, whatever the headers say.
        unreadable = fixture("verp", info).replace(
            f"bounces+{Tokens(SECRET).sign('bounce', info['verp'][0])}".encode(), b"news"
        )
        smtp.sendmail("", [verp(info, "verp")], wire(unreadable))
        smtp.sendmail(
            "someone@example.org",
            [verp(info, "fine", "unsubscribe")],
            b"Subject: x\r\n\r\nunsubscribe\r\n",
        )
    assert states(session)["postfix"] == "bounced"
    assert suppressed(session) == {"postfix": "bounced", "fine": "unsubscribed"}
    event = session.scalar(select(Event).where(Event.delivery_id == info["verp"][0]))
    assert event is not None and event.data["kind"] == "unreadable"
    log = "\n".join(receiver.lines)  # type: ignore[attr-defined]
    assert "1 hard bounce" in log and "1 unsubscribe" in log
    assert Tokens(SECRET).sign("bounce", info["postfix"][0]) not in log  # no token in the log


def test_mail_to_postmaster_naming_an_address_suppresses_nothing(  # type: ignore[no-untyped-def]
    campaign, session: Session
) -> None:
    """Anyone may write to postmaster@ and abuse@: a report there counts only by the
    Message-ID of a delivery we stored, never by the address it names."""
    settings, _ = campaign
    session.commit()
    forged = {"fine": (0, "<forged@elsewhere.example>"), "postfix": (0, "<forged@x.example>")}
    with receiving(settings) as receiver, client(receiver) as smtp:
        smtp.sendmail("", [f"abuse@{DOMAIN}"], wire(fixture("arf", forged, "fine")))
        smtp.sendmail("", [f"postmaster@{DOMAIN}"], wire(fixture("postfix", forged)))
    assert suppressed(session) == {} and set(states(session).values()) == {"sent"}
    lines = receiver.lines  # type: ignore[attr-defined]
    assert sum("1 not ours" in line for line in lines) == 2, lines


def test_size_is_capped_at_2_mb(campaign, session: Session) -> None:  # type: ignore[no-untyped-def]
    """Bounces of our mail are tens of KB; aiosmtpd holds an arriving message as an object
    per line, so what one connection may send is kept small (issue 21, 1)."""
    settings, info = campaign
    big = wire(fixture("postfix", info)) + (b"x" * 998 + b"\r\n") * (MAX_RECEIVED_BYTES // 1000 + 1)
    with receiving(settings) as receiver, client(receiver) as smtp:
        smtp.ehlo("mx.example.net")
        assert smtp.esmtp_features["size"] == str(MAX_RECEIVED_BYTES) == str(2 * 1024 * 1024)
        with pytest.raises(smtplib.SMTPSenderRefused) as declared:
            smtp.sendmail("", [verp(info, "postfix")], big)  # smtplib declares SIZE=
        assert declared.value.smtp_code == 552
        smtp.rset()
        # A sender that does not declare the size is cut off at the limit all the same.
        smtp.mail("")
        smtp.rcpt(verp(info, "postfix"))
        code, _ = smtp.data(big)
        assert code == 552
    assert suppressed(session) == {}


def test_one_message_at_a_time_arrives_from_a_client(campaign, session: Session) -> None:  # type: ignore[no-untyped-def]
    """Ten uploads at once from one address took the receiver to 1.28 GB: a client sends one
    message at a time, and everyone together a few; the others are told to come back."""
    import socket

    settings, info = campaign
    session.commit()
    with receiving(settings, max_receiving=2) as receiver:
        assert receiver.port is not None

        def open_data(source: str) -> socket.socket:
            sock = socket.create_connection(
                ("127.0.0.1", receiver.port), source_address=(source, 0)
            )
            reader = sock.makefile("rb")
            reader.readline()
            for command in (b"EHLO mx", b"MAIL FROM:<>", f"RCPT TO:<postmaster@{DOMAIN}>".encode()):
                sock.sendall(command + b"\r\n")
                while reader.readline()[3:4] == b"-":
                    pass
            sock.sendall(b"DATA\r\n")
            assert reader.readline().startswith(b"354")
            sock.sendall(b"Subject: half a message\r\n\r\n")
            return sock

        first = open_data("127.0.0.1")
        with client(receiver) as smtp:  # the same address
            smtp.ehlo("mx.example.net")
            smtp.mail("")
            smtp.rcpt(f"postmaster@{DOMAIN}")
            code, reply = smtp.docmd("DATA")
            assert code == 451 and b"arriving" in reply, reply
        second = open_data("127.0.0.2")
        with smtplib.SMTP(
            "127.0.0.1", receiver.port, timeout=10, source_address=("127.0.0.3", 0)
        ) as smtp:  # a third address, over the cap for everyone
            smtp.ehlo("mx.example.net")
            smtp.mail("")
            smtp.rcpt(f"postmaster@{DOMAIN}")
            assert smtp.docmd("DATA")[0] == 451
        for sock in (first, second):
            sock.sendall(b"hello\r\n.\r\nQUIT\r\n")
            sock.close()
        wait_for(lambda: not receiver.receiving, "the two messages to arrive")
        with client(receiver) as smtp:
            assert smtp.sendmail("", [verp(info, "gmail")], wire(fixture("gmail", info))) == {}
    assert suppressed(session) == {"gmail": "bounced"}


def test_an_unreachable_database_answers_451(campaign, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings, info = campaign
    gone = replace(settings, database_url=f"sqlite:///{tmp_path}/no/such/folder/outreach.db")
    with receiving(gone) as receiver, client(receiver) as smtp:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            smtp.sendmail("", [verp(info, "postfix")], wire(fixture("postfix", info)))
        assert refused.value.smtp_code == 451  # the sender keeps it and tries again
    assert any("cannot reach the database" in line for line in receiver.lines)  # type: ignore[attr-defined]


def test_limits_per_client_address(campaign) -> None:  # type: ignore[no-untyped-def]
    settings, _ = campaign
    with receiving(settings, max_connections=2, max_messages=2, window=60) as receiver:
        first, second = client(receiver), client(receiver)
        with pytest.raises(smtplib.SMTPConnectError) as third:
            client(receiver)
        assert third.value.smtp_code == 421
        second.quit()
        for _ in range(2):
            first.sendmail("", [f"postmaster@{DOMAIN}"], b"Subject: hi\r\n\r\nhello\r\n")
        with pytest.raises(smtplib.SMTPSenderRefused) as over:
            first.sendmail("", [f"postmaster@{DOMAIN}"], b"Subject: hi\r\n\r\nhello\r\n")
        assert over.value.smtp_code == 451
        first.quit()


@contextmanager
def writes_held(url: str) -> Iterator[None]:
    """The database as a long transaction elsewhere leaves it: storing a bounce waits."""
    with engine_for(url).connect() as conn:
        conn.begin()  # SQLite: BEGIN IMMEDIATE, the write lock
        if conn.dialect.name == "postgresql":
            conn.execute(text("LOCK TABLE deliveries IN ACCESS EXCLUSIVE MODE"))
        yield
        conn.rollback()


def send_in_background(
    receiver: BounceReceiver, source: str, recipient: str, data: bytes
) -> tuple[threading.Thread, list[Any]]:
    outcome: list[Any] = []

    def send() -> None:
        assert receiver.port is not None
        try:
            with smtplib.SMTP(
                "127.0.0.1", receiver.port, timeout=60, source_address=(source, 0)
            ) as smtp:
                outcome.append(smtp.sendmail("", [recipient], data))
        except Exception as exc:
            outcome.append(exc)

    thread = threading.Thread(target=send)
    thread.start()
    return thread, outcome


def wait_for(condition: Any, what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_a_full_store_queue_answers_451(campaign, session: Session, db_url: str) -> None:  # type: ignore[no-untyped-def]
    """One thread stores every message: while it is slow, a client may have only a few
    messages waiting, and everyone together only a few more; the rest are asked to come
    back later (451), which an MTA does."""
    settings, info = campaign
    session.commit()
    limits = {"max_waiting": 3, "max_waiting_per_client": 2}
    sending = []
    with receiving(settings, **limits) as receiver:
        with writes_held(db_url):
            # One after the other: a client may have only one message arriving at a time
            # (MAX_RECEIVING_PER_CLIENT), so two sent at once could race to a 451 at DATA.
            for waiting, person in enumerate(("postfix", "gmail"), start=1):
                raw = wire(fixture(person, info))
                sending.append(send_in_background(receiver, "127.0.0.1", verp(info, person), raw))
                wait_for(lambda n=waiting: receiver.storing == n, f"{waiting} waiting")
            with client(receiver) as smtp:
                smtp.ehlo("mx.example.net")
                code, reply = smtp.mail("")
                assert code == 451 and b"waiting" in reply, reply
            raw = wire(fixture("exchange", info))
            sending.append(send_in_background(receiver, "127.0.0.2", verp(info, "exchange"), raw))
            wait_for(lambda: receiver.storing == 3, "three messages waiting")
            with smtplib.SMTP(
                "127.0.0.1", receiver.port, timeout=10, source_address=("127.0.0.3", 0)
            ) as smtp:
                smtp.ehlo("mx.example.net")
                code, reply = smtp.mail("")
                assert code == 451 and b"waiting" in reply, reply
        for thread, outcome in sending:
            thread.join(60)
            assert outcome == [{}], outcome  # accepted once the store caught up
    assert suppressed(session) == {"postfix": "bounced", "gmail": "bounced", "exchange": "bounced"}
    refusals = [line for line in receiver.lines if "451" in line]  # type: ignore[attr-defined]
    assert len(refusals) == 2 and all("waiting" in line for line in refusals), refusals


def receive_process(
    settings: Settings, tmp_path: Path, port: int, **env: str
) -> subprocess.Popen[bytes]:
    with (tmp_path / "receive.err").open("wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "outreach", "bounces", "receive", "--port", str(port)],
            env=worker_env(replace(settings), **env),
            stdout=subprocess.PIPE,
            stderr=err,
            cwd=tmp_path,
        )


def test_the_command_needs_a_bounce_domain_and_stops_on_sigterm(  # type: ignore[no-untyped-def]
    campaign, session: Session, tmp_path: Path
) -> None:
    settings, info = campaign
    session.commit()
    port = free_port()
    refused = receive_process(settings, tmp_path, port)
    assert refused.wait(30) == 1
    assert refused.stdout is not None and refused.stdout.read() == b""
    refused.stdout.close()
    err = (tmp_path / "receive.err").read_text().splitlines()
    assert len(err) == 1 and "OUTREACH_BOUNCE_DOMAIN" in err[0], err
    process = receive_process(settings, tmp_path, port, OUTREACH_BOUNCE_DOMAIN=DOMAIN)
    try:
        assert process.stdout is not None
        first = process.stdout.readline().decode()
        assert f"receiving mail for {DOMAIN} on 127.0.0.1:{port}" in first, first
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            smtp.sendmail("", [verp(info, "gmail")], wire(fixture("gmail", info)))
        os.kill(process.pid, signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    out = process.stdout.read().decode()
    process.stdout.close()
    assert "1 hard bounce" in out and out.rstrip().endswith("stopped")
    assert "Traceback" not in (tmp_path / "receive.err").read_text()
    assert suppressed(session) == {"gmail": "bounced"}


# Issue 21, 1: one crafted message must not stall the receiver.


def test_a_message_is_read_once_whatever_its_recipients(campaign, session: Session) -> None:  # type: ignore[no-untyped-def]
    settings, info = campaign
    session.commit()
    recipients = [verp(info, "postfix"), f"postmaster@{DOMAIN}", f"abuse@{DOMAIN}"]
    recipients += [verp(info, person) for person in ("gmail", "fine", "soft", "qmail")]
    recipients += [f"Postmaster@{DOMAIN}", f"ABUSE@{DOMAIN}", verp(info, "exchange")]
    assert len(recipients) == 10
    with receiving(settings) as receiver, client(receiver) as smtp:
        assert smtp.sendmail("", recipients, wire(fixture("postfix", info))) == {}
    assert receiver.parsed == 1
    assert suppressed(session) == {"postfix": "bounced"}  # only the delivery it is about


def test_a_message_of_many_tiny_pieces_is_refused_unparsed(campaign, session: Session) -> None:  # type: ignore[no-untyped-def]
    from tests.test_bounces import tiny_pieces

    settings, _ = campaign
    with receiving(settings) as receiver, client(receiver) as smtp:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            smtp.sendmail("", [f"postmaster@{DOMAIN}"], tiny_pieces("blocks", 5_000))
        assert refused.value.smtp_code == 554 and b"blank lines" in refused.value.smtp_error
    assert receiver.parsed == 0 and receiver.storing == 0
    assert any("554" in line for line in receiver.lines)  # type: ignore[attr-defined]


def hang_up_after_data(port: int, recipient: str, data: bytes) -> None:
    """An SMTP client that sends a whole message and closes the connection at once, without
    waiting for the reply."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        reader = sock.makefile("rb")
        reader.readline()
        for command in (b"EHLO mx.example.net", b"MAIL FROM:<>", f"RCPT TO:<{recipient}>".encode()):
            sock.sendall(command + b"\r\n")
            while True:
                line = reader.readline()
                if line[3:4] != b"-":
                    break
        sock.sendall(b"DATA\r\n")
        assert reader.readline().startswith(b"354")
        sock.sendall(data + b"\r\n.\r\n")


def test_work_stays_counted_after_its_sender_hangs_up(  # type: ignore[no-untyped-def]
    campaign, session: Session, db_url: str
) -> None:
    """Ten clients that send and hang up at once used to leave the counters at zero while
    the store thread still had all their messages: the queue grew without a limit."""
    settings, info = campaign
    session.commit()
    with receiving(settings, max_waiting=1) as receiver:
        assert receiver.port is not None
        with writes_held(db_url):
            hang_up_after_data(receiver.port, verp(info, "postfix"), wire(fixture("postfix", info)))
            wait_for(lambda: receiver.storing == 1, "the message handed to the store")
            time.sleep(0.5)  # the server has seen the connection close by now
            assert receiver.storing == 1 and receiver.waiting == {"127.0.0.1": 1}
            with client(receiver) as smtp:
                smtp.ehlo("mx.example.net")
                code, reply = smtp.mail("")
                assert code == 451 and b"waiting" in reply, reply
        wait_for(lambda: receiver.storing == 0, "the store to finish")
    assert suppressed(session) == {"postfix": "bounced"}  # stored all the same


def test_a_message_the_store_cannot_take_in_time_gets_451(  # type: ignore[no-untyped-def]
    campaign, session: Session, db_url: str
) -> None:
    """A sender waiting on a slow store gets an answer, 451, instead of silence."""
    settings, info = campaign
    session.commit()
    with receiving(settings, store_deadline=1.0) as receiver:
        with writes_held(db_url), client(receiver) as smtp:
            started = time.monotonic()
            with pytest.raises(smtplib.SMTPDataError) as busy:
                smtp.sendmail("", [verp(info, "gmail")], wire(fixture("gmail", info)))
            assert busy.value.smtp_code == 451 and time.monotonic() - started < 8
        wait_for(lambda: receiver.storing == 0, "the store to finish")
    assert any("not stored within 1 s" in line for line in receiver.lines)  # type: ignore[attr-defined]


def test_a_cap_on_connections_from_everyone(campaign) -> None:  # type: ignore[no-untyped-def]
    settings, _ = campaign
    with receiving(settings, max_total_connections=3) as receiver:
        assert receiver.port is not None
        held = [
            smtplib.SMTP("127.0.0.1", receiver.port, timeout=10, source_address=(f"127.0.0.{n}", 0))
            for n in (1, 2, 3)
        ]
        with pytest.raises(smtplib.SMTPConnectError) as refused:
            smtplib.SMTP("127.0.0.1", receiver.port, timeout=10, source_address=("127.0.0.4", 0))
        assert refused.value.smtp_code == 421
        held.pop().quit()
        smtplib.SMTP("127.0.0.1", receiver.port, timeout=10, source_address=("127.0.0.5", 0)).quit()
        for smtp in held:
            smtp.quit()


def test_ipv6_clients_are_counted_by_their_64() -> None:
    """One subscriber line holds a whole /64: its addresses are one client, as on the web."""
    from outreach.bounce_receiver import ClientLimits, _client

    limits = ClientLimits(max_connections=2, max_messages=10, window=60)
    same = [("2001:db8:1:2::1", 25, 0, 0), ("2001:db8:1:2:ffff::9", 25, 0, 0)]
    assert [limits.connect(_client(peer)) for peer in same] == [True, True]
    assert not limits.connect(_client(("2001:db8:1:2::abcd", 25, 0, 0)))
    assert limits.connect(_client(("2001:db8:1:3::1", 25, 0, 0)))  # another /64
    assert _client(("::ffff:192.0.2.7", 25, 0, 0)) == _client(("192.0.2.7", 25)) == "192.0.2.7"
