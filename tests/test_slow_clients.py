"""Slow clients cannot keep recipients from unsubscribing.

Gmail and Yahoo POST the one-click unsubscribe (RFC 8058) and expect a prompt 200. Here 200
connections each send half a request (part of the headers, or the headers and a few bytes of
body) and then nothing, and stay open; a one-click POST from a real message must still be
answered within a second — by `outreach serve`, and through the compose stack's web path
(nginx with deploy/nginx/outreach.conf.template in front of gunicorn started exactly as
docker-compose.yml starts it).
"""

from __future__ import annotations

import email
import re
import socket
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from email import policy
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from outreach.config import Settings
from tests.sending_helpers import drain, project_with, send, settings_for
from tests.smtp_server import SmtpServer, start_server
from tests.web_helpers import Server

pytestmark = pytest.mark.integration

SLOW = 200
# What a mail provider's one-click POST looks like; the half requests imitate it.
ONE_CLICK = b"List-Unsubscribe=One-Click"


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = start_server()
    yield server
    server.stop()


def unsubscribe_url(smtp: SmtpServer) -> str:
    raw = smtp.handler.received[0].data
    message = email.message_from_bytes(raw, policy=policy.default)
    match = re.match(r"<([^>]+)>", str(message["List-Unsubscribe"]))
    assert match is not None
    return match.group(1)


def mail_one_message(
    settings: Settings, session: Session, tmp_path: Path, smtp: SmtpServer, base_url: str
) -> str:
    """Send the test campaign over SMTP with links to base_url; return one unsubscribe URL."""
    settings = replace(settings, base_url=base_url, smtp_url=smtp.url)
    path = project_with(tmp_path, session)
    send(path, settings, session)
    drain(settings, session)
    url = unsubscribe_url(smtp)
    assert url.startswith(base_url + "/u/")
    return url


@contextmanager
def slow_connections(
    host: str, port: int, n: int = SLOW, tls: ssl.SSLContext | None = None
) -> Iterator[list[socket.socket]]:
    """n connections, each with half a request sent and nothing more, held open."""
    held: list[socket.socket] = []
    try:
        for i in range(n):
            sock = socket.create_connection((host, port), timeout=5)
            if tls is not None:
                sock = tls.wrap_socket(sock, server_hostname="localhost")
            head = (
                f"POST /u/slow{i} HTTP/1.1\r\nHost: {host}\r\n"
                "Content-Type: application/x-www-form-urlencoded\r\n"
                f"Content-Length: {len(ONE_CLICK)}\r\n"
            ).encode()
            # Half stop inside the headers, half after a few bytes of the body.
            sock.sendall(head if i % 2 else head + b"\r\n" + ONE_CLICK[:8])
            held.append(sock)
        yield held
    finally:
        for sock in held:
            sock.close()


def still_open(socks: list[socket.socket]) -> int:
    """How many of the held connections the server has not closed yet."""
    open_ = 0
    for sock in socks:
        sock.setblocking(False)
        try:
            open_ += sock.recv(1) != b""
        except (BlockingIOError, ssl.SSLWantReadError):
            open_ += 1
        except OSError:
            pass
    return open_


def one_click(url: str, timeout: float = 1.0, tls: ssl.SSLContext | None = None) -> int:
    """POST the RFC 8058 one-click body as a mail provider does; the status, or 0 if the
    server did not answer within the timeout."""
    req = urllib.request.Request(
        url,
        data=ONE_CLICK,
        method="POST",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=tls) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (TimeoutError, urllib.error.URLError):
        return 0


def test_outreach_serve_answers_one_click_while_200_clients_hang(
    session: Session, db_url: str, tmp_path: Path, smtp: SmtpServer
) -> None:
    settings = settings_for(db_url, tmp_path)
    with Server(settings, tmp_path / "serve.log", workers=2) as server:
        url = mail_one_message(settings, session, tmp_path, smtp, server.url)
        with slow_connections("127.0.0.1", server.port) as held:
            assert one_click(url) == 200
            assert still_open(held) > SLOW // 2
        # The same recipient again, after the slow clients are gone: still a plain 200.
        assert one_click(url) == 200
