"""A real SMTP server for tests (aiosmtpd on a loopback port) whose answers tests script.

Rules per recipient: answer RCPT with a code, drop the connection during DATA, or stall
past the client's timeout — each either always or for the first N attempts only.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Rule:
    action: str  # "reply", "drop", "stall"
    reply: str = ""
    times: int | None = None  # None: always


@dataclass
class Received:
    mail_from: str
    rcpt: str
    data: bytes


class Handler:
    def __init__(self, stall_seconds: float = 3.0) -> None:
        self.rules: dict[str, Rule] = {}
        self.mail_rule: Rule | None = None
        self.received: list[Received] = []
        self.attempts: Counter[str] = Counter()
        self.connections = 0
        self.stall_seconds = stall_seconds
        self.lock = threading.Lock()

    def rule(self, address: str, action: str, reply: str = "", times: int | None = None) -> None:
        self.rules[address.lower()] = Rule(action, reply, times)

    def _active(self, rule: Rule | None, count: int) -> Rule | None:
        if rule is None or (rule.times is not None and count > rule.times):
            return None
        return rule

    async def handle_EHLO(self, server, session, envelope, hostname, responses):  # type: ignore[no-untyped-def]
        with self.lock:
            self.connections += 1
        session.host_name = hostname
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):  # type: ignore[no-untyped-def]
        if self.mail_rule is not None:
            return self.mail_rule.reply
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # type: ignore[no-untyped-def]
        key = address.lower()
        with self.lock:
            self.attempts[key] += 1
            count = self.attempts[key]
        rule = self._active(self.rules.get(key), count)
        if rule is not None and rule.action == "reply":
            return rule.reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session: Session, envelope: Envelope):  # type: ignore[no-untyped-def]
        key = envelope.rcpt_tos[0].lower()
        rule = self._active(self.rules.get(key), self.attempts[key])
        if rule is not None and rule.action == "drop":
            server.transport.close()
            return "421 dropped"
        if rule is not None and rule.action == "stall":
            await asyncio.sleep(self.stall_seconds)
            return "451 too late"
        with self.lock:
            for rcpt in envelope.rcpt_tos:
                self.received.append(
                    Received(
                        envelope.mail_from, rcpt, envelope.original_content or envelope.content
                    )
                )
        return "250 2.0.0 OK queued"

    def count_for(self, address: str) -> int:
        with self.lock:
            return sum(1 for r in self.received if r.rcpt.lower() == address.lower())

    def by_recipient(self) -> Counter[str]:
        with self.lock:
            return Counter(r.rcpt.lower() for r in self.received)


@dataclass
class SmtpServer:
    handler: Handler
    controller: Controller
    port: int
    url: str
    extra: dict[str, object] = field(default_factory=dict)

    def stop(self) -> None:
        self.controller.stop()


def _authenticator(server, session, envelope, mechanism, auth_data):  # type: ignore[no-untyped-def]
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == b"outreach"
        and auth_data.password == b"s3cret"
    )
    return AuthResult(success=ok)


def start_server(
    *,
    tls: str = "none",
    auth: bool = False,
    cert: tuple[Path, Path] | None = None,
    stall_seconds: float = 3.0,
) -> SmtpServer:
    handler = Handler(stall_seconds)
    port = free_port()
    kwargs: dict[str, object] = {"hostname": "127.0.0.1", "port": port}
    if tls in ("starttls", "ssl"):
        assert cert is not None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(cert[0]), str(cert[1]))
        if tls == "starttls":
            kwargs["tls_context"] = context
            kwargs["require_starttls"] = True
        else:
            kwargs["ssl_context"] = context
    if auth:
        kwargs["authenticator"] = _authenticator
        kwargs["auth_required"] = True
        kwargs["auth_require_tls"] = tls == "starttls"
        kwargs["auth_exclude_mechanism"] = ["LOGIN"]  # PLAIN is what relays offer
    controller = Controller(handler, **kwargs)  # type: ignore[arg-type]
    controller.start()
    scheme = "smtps" if tls == "ssl" else "smtp"
    creds = "outreach:s3cret@" if auth else ""
    url = f"{scheme}://{creds}127.0.0.1:{port}?tls={tls}&timeout=1"
    return SmtpServer(handler, controller, port, url)


def make_certificate(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key
