"""One contract every transport passes, then SMTP's failure handling against a real server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from outreach.config import parse_smtp_url
from outreach.messages import Envelope, MessageBuilder
from outreach.transport import (
    Accepted,
    OutboxTransport,
    PermanentFailure,
    SmtpTransport,
    TemporaryFailure,
    Transport,
)
from tests.smtp_server import SmtpServer, make_certificate, start_server


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def trust(certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))


@pytest.fixture
def server() -> Iterator[SmtpServer]:
    s = start_server()
    yield s
    s.stop()


def envelope(to: str = "kim@suwon.example.org", n: int = 1) -> Envelope:
    builder = MessageBuilder("시티넷 <news@citynet-ap.org>")
    return builder.build(
        to_name="김수진",
        to_address=to,
        subject=f"시험 {n}",
        html="<p>안녕</p>",
        text="안녕",
        unsubscribe_url="https://x/u/t",
        message_id=builder.new_message_id(n),
    )


class Case:
    """A transport under test and a way to read back what it delivered."""

    def __init__(self, transport: Transport, received) -> None:  # type: ignore[no-untyped-def]
        self.transport = transport
        self.received = received


@pytest.fixture(params=["outbox", "smtp-plain", "smtp-starttls-auth", "smtps-auth"])
def case(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    certificate: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Case]:
    if request.param == "outbox":
        transport = OutboxTransport(tmp_path / "outbox")
        yield Case(
            transport,
            lambda: [p.read_bytes() for p in sorted((tmp_path / "outbox" / "c").glob("*.eml"))],
        )
        return
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    tls, auth = {
        "smtp-plain": ("none", False),
        "smtp-starttls-auth": ("starttls", True),
        "smtps-auth": ("ssl", True),
    }[request.param]
    server = start_server(tls=tls, auth=auth, cert=certificate)
    smtp = SmtpTransport(parse_smtp_url(server.url))
    yield Case(smtp, lambda: [r.data for r in server.handler.received])
    smtp.close()
    server.stop()


def test_contract_messages_arrive_unchanged(case: Case) -> None:
    sent = [envelope(n=i) for i in range(3)]
    for e in sent:
        result = case.transport.send(e, "c")
        assert isinstance(result, Accepted) and 200 <= result.code < 300
    received = case.received()
    assert len(received) == 3
    for e in sent:
        assert any(r.replace(b"\r\n", b"\n") == e.data.replace(b"\r\n", b"\n") for r in received)


def test_smtp_reuses_one_connection_and_reconnects_after_a_drop(server: SmtpServer) -> None:
    smtp = SmtpTransport(parse_smtp_url(server.url))
    for i in range(5):
        smtp.send(envelope(n=i), "c")
    assert server.handler.connections == 1
    server.handler.rule("drop@example.org", "drop", times=1)
    with pytest.raises(TemporaryFailure) as err:
        smtp.send(envelope("drop@example.org"), "c")
    assert err.value.relay
    smtp.send(envelope("drop@example.org"), "c")  # reconnects
    assert server.handler.connections == 2
    assert server.handler.count_for("drop@example.org") == 1
    smtp.close()


def test_smtp_reply_codes(server: SmtpServer) -> None:
    smtp = SmtpTransport(parse_smtp_url(server.url))
    h = server.handler
    h.rule("busy@example.org", "reply", "451 4.7.1 try again later")
    h.rule(
        "gone@example.org",
        "reply",
        "550 5.1.1 <gone@example.org>: Recipient address rejected: User unknown",
    )
    h.rule("full@example.org", "reply", "552 5.2.2 mailbox full")
    with pytest.raises(TemporaryFailure) as temp:
        smtp.send(envelope("busy@example.org"), "c")
    assert temp.value.code == 451 and not temp.value.relay
    with pytest.raises(PermanentFailure) as hard:
        smtp.send(envelope("gone@example.org"), "c")
    assert hard.value.code == 550 and hard.value.hard_bounce
    with pytest.raises(PermanentFailure) as full:
        smtp.send(envelope("full@example.org"), "c")
    assert not full.value.hard_bounce
    # one recipient's rejection leaves the connection usable for the next
    smtp.send(envelope("ok@example.org"), "c")
    assert h.count_for("ok@example.org") == 1 and h.connections == 1
    smtp.close()


def test_smtp_421_and_refused_sender_are_relay_failures(server: SmtpServer) -> None:
    smtp = SmtpTransport(parse_smtp_url(server.url))
    server.handler.rule("x@example.org", "reply", "421 4.3.2 service shutting down")
    with pytest.raises(TemporaryFailure) as err:
        smtp.send(envelope("x@example.org"), "c")
    assert err.value.relay and err.value.code == 421
    from tests.smtp_server import Rule

    server.handler.mail_rule = Rule("reply", "553 5.7.1 sender not allowed")
    with pytest.raises(TemporaryFailure) as sender:
        smtp.send(envelope("y@example.org"), "c")
    assert sender.value.relay and "sender refused" in sender.value.text
    smtp.close()


def test_smtp_timeout(tmp_path: Path) -> None:
    server = start_server(stall_seconds=2.5)
    try:
        server.handler.rule("slow@example.org", "stall", times=1)
        smtp = SmtpTransport(parse_smtp_url(server.url))  # timeout=1
        with pytest.raises(TemporaryFailure) as err:
            smtp.send(envelope("slow@example.org"), "c")
        assert "timed out" in err.value.text and err.value.relay
        smtp.send(envelope("slow@example.org"), "c")
        assert server.handler.count_for("slow@example.org") == 1
        smtp.close()
    finally:
        server.stop()


def test_unreachable_relay_and_bad_password(trust: None, certificate: tuple[Path, Path]) -> None:
    from tests.smtp_server import free_port

    dead = SmtpTransport(parse_smtp_url(f"smtp://127.0.0.1:{free_port()}?tls=none&timeout=1"))
    with pytest.raises(TemporaryFailure, match="cannot connect") as err:
        dead.send(envelope(), "c")
    assert err.value.relay
    server = start_server(tls="starttls", auth=True, cert=certificate)
    try:
        wrong = SmtpTransport(parse_smtp_url(server.url.replace("s3cret", "wrong")))
        # aiosmtpd answers a wrong password by going silent; either way it is the relay's
        # failure, never the recipient's.
        with pytest.raises(TemporaryFailure) as refused:
            wrong.send(envelope(), "c")
        assert refused.value.relay
        assert server.handler.received == []
    finally:
        server.stop()


def test_outbox_writes_one_file_per_message(tmp_path: Path) -> None:
    outbox = OutboxTransport(tmp_path)
    e = envelope()
    outbox.send(e, "2026-12-newsletter")
    files = list((tmp_path / "2026-12-newsletter").iterdir())
    assert len(files) == 1 and files[0].suffix == ".eml"
    assert files[0].read_bytes() == e.data


@pytest.fixture
def pipelining() -> Iterator[object]:
    from tests.pipelining_server import PipeliningServer

    server = PipeliningServer()
    yield server
    server.stop()


def test_pipelined_sending(pipelining) -> None:  # type: ignore[no-untyped-def]
    server = pipelining
    server.rcpt_replies = {
        "busy@example.org": "451 4.7.1 greylisted",
        "gone@example.org": "550 5.1.1 user unknown",
    }
    smtp = SmtpTransport(parse_smtp_url(server.url))
    sent = [envelope(n=i) for i in range(3)]
    for e in sent:
        assert smtp.send(e, "c").code == 250
    with pytest.raises(TemporaryFailure) as temp:
        smtp.send(envelope("busy@example.org"), "c")
    assert temp.value.code == 451 and not temp.value.relay
    with pytest.raises(PermanentFailure) as hard:
        smtp.send(envelope("gone@example.org"), "c")
    assert hard.value.hard_bounce
    smtp.send(envelope("after@example.org"), "c")  # the connection is still in step
    smtp.close()
    assert [r[1] for r in server.received] == [e.recipient for e in sent] + ["after@example.org"]
    for e, (_, _, data) in zip(sent, server.received, strict=False):
        assert data == e.data
    assert server.connections == 1
    assert max(server.batches) >= 3  # MAIL, RCPT and DATA arrived in one write


@pytest.mark.parametrize("pipelined", [True, False])
def test_a_connection_closed_while_idle_is_replaced_silently(pipelined: bool) -> None:
    from tests.pipelining_server import PipeliningServer

    server = PipeliningServer(pipelining=pipelined)
    try:
        smtp = SmtpTransport(parse_smtp_url(server.url))
        smtp.send(envelope("first@example.org"), "c")
        server.close_idle_connections()
        assert smtp.send(envelope("second@example.org"), "c").code == 250
        assert server.connections == 2
        assert [r[1] for r in server.received] == ["first@example.org", "second@example.org"]
        smtp.close()
    finally:
        server.stop()
