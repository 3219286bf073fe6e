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
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from email import policy
from pathlib import Path

import pytest
import yaml
from sqlalchemy.orm import Session

from outreach.config import Settings
from outreach.gunicorn_conf import PER_CLIENT_CONNECTIONS
from tests.conftest import ROOT
from tests.sending_helpers import drain, project_with, send, settings_for
from tests.smtp_server import SmtpServer, free_port, start_server
from tests.web_helpers import Server
from tests.workers import worker_env

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


def one_click(url: str, timeout: float = 5.0, tls: ssl.SSLContext | None = None) -> int:
    """POST the RFC 8058 one-click body as a mail provider does; the status, or 0 if the
    server did not answer within the timeout. Five seconds is half the 10 s for which a
    server that waits on the held connections would stall, and room for a busy machine."""
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
            # From a mail provider's address, not the one holding the connections.
            assert one_click_from(url, "127.0.0.2", timeout=5)[0] == 200
            # Really held: all of them, or as many as one worker takes from one client (the
            # rest are closed at once, so they may all have gone to the same worker).
            assert still_open(held) >= min(SLOW, PER_CLIENT_CONNECTIONS)
        # The same recipient again, after the slow clients are gone: still a plain 200.
        assert one_click(url) == 200
    log = (tmp_path / "serve.log").read_text()
    assert "POST /u/[token]" in log and url.rsplit("/", 1)[1] not in log


needs_nginx = pytest.mark.skipif(
    shutil.which("nginx") is None or shutil.which("openssl") is None,
    reason="nginx is not installed (apt-get install nginx-light openssl; .ci/run installs it)",
)


def wait_until_listening(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError(f"nothing listens on port {port}:\n" + log.read_text()[-3000:])


@contextmanager
def compose_web(settings: Settings, base_url: str, tmp_path: Path) -> Iterator[Path]:
    """gunicorn started with the web service's entrypoint, command and PORT from
    docker-compose.yml (only the port differs); yields its log."""
    web = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["web"]
    assert web["entrypoint"] == ["gunicorn"]
    port = free_port()
    log = tmp_path / "web.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", *web["command"]],
        env=worker_env(settings, OUTREACH_BASE_URL=base_url, PORT=str(port)),
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )
    try:
        wait_until_listening(port, process, log)
        yield log
    finally:
        process.terminate()
        process.wait(timeout=15)


@contextmanager
def nginx_proxy(upstream: str, https_port: int, tmp_path: Path) -> Iterator[Path]:
    """Debian's nginx with deploy/nginx/outreach.conf.template rendered for this upstream and
    a self-signed certificate for localhost; yields its access log."""
    root = tmp_path / "nginx"
    root.mkdir()
    cert, key = root / "cert.pem", root / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    values = {
        "NGINX_UPSTREAM": upstream,
        "NGINX_RESOLVER": "127.0.0.1",
        "NGINX_HTTP_PORT": str(free_port()),
        "NGINX_HTTPS_PORT": str(https_port),
        "NGINX_TLS_CERT": str(cert),
        "NGINX_TLS_KEY": str(key),
    }
    template = (ROOT / "deploy" / "nginx" / "outreach.conf.template").read_text()
    # What the nginx image's envsubst does with the proxy service's environment.
    site = re.sub(r"\$\{(NGINX_[A-Z_]+)\}", lambda m: values[m.group(1)], template)
    (root / "outreach.conf").write_text(site)
    # The image's own nginx.conf, reduced to what the site file needs.
    (root / "nginx.conf").write_text(
        f"pid {root}/nginx.pid;\n"
        f"error_log {root}/error.log warn;\n"
        "events { worker_connections 1024; }\n"
        "http {\n"
        + "".join(
            f"  {kind}_temp_path {root}/{kind};\n"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        + f"  include {root}/outreach.conf;\n}}\n"
    )
    log = root / "access.log"
    process = subprocess.Popen(
        [
            *("nginx", "-p", str(root), "-c", str(root / "nginx.conf")),
            *("-e", str(root / "error.log"), "-g", "daemon off;"),
        ],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until_listening(https_port, process, root / "error.log")
        yield log
    finally:
        process.terminate()
        process.wait(timeout=15)


@needs_nginx
def test_the_compose_web_path_answers_one_click_while_200_clients_hang(
    session: Session, db_url: str, tmp_path: Path, smtp: SmtpServer
) -> None:
    settings = settings_for(db_url, tmp_path)
    https_port = free_port()
    base_url = f"https://localhost:{https_port}"
    with compose_web(settings, base_url, tmp_path) as web_log:
        upstream = re.search(r"Listening at: http://[^:]+:(\d+)", web_log.read_text())
        assert upstream is not None
        with nginx_proxy(f"127.0.0.1:{upstream.group(1)}", https_port, tmp_path) as proxy_log:
            url = mail_one_message(settings, session, tmp_path, smtp, base_url)
            tls = ssl.create_default_context(cafile=str(tmp_path / "nginx" / "cert.pem"))
            with slow_connections("127.0.0.1", https_port, tls=tls) as held:
                assert one_click(url, tls=tls) == 200
                assert still_open(held) > SLOW // 2
            assert one_click(url, tls=tls) == 200
    token = url.rsplit("/", 1)[1]
    for log in (web_log, proxy_log):
        text = log.read_text()
        assert "POST /u/[token]" in text and token not in text, log


@needs_nginx
def test_a_percent_encoded_link_is_served_but_never_logged_in_clear(
    session: Session, db_url: str, tmp_path: Path, smtp: SmtpServer
) -> None:
    """/%75/TOKEN reaches the app as /u/TOKEN (gunicorn decodes the path): neither nginx's
    log nor gunicorn's may show the token, however the path was written."""
    settings = settings_for(db_url, tmp_path)
    https_port = free_port()
    base_url = f"https://localhost:{https_port}"
    with compose_web(settings, base_url, tmp_path) as web_log:
        upstream = re.search(r"Listening at: http://[^:]+:(\d+)", web_log.read_text())
        assert upstream is not None
        with nginx_proxy(f"127.0.0.1:{upstream.group(1)}", https_port, tmp_path) as proxy_log:
            url = mail_one_message(settings, session, tmp_path, smtp, base_url)
            token = url.rsplit("/", 1)[1]
            tls = ssl.create_default_context(cafile=str(tmp_path / "nginx" / "cert.pem"))
            for path in (f"/%75/{token}?lang=ko", f"/u%2F{token}", f"/%75%2f{token}"):
                assert one_click(base_url + path, timeout=10, tls=tls) == 200, path
            one_click(f"{base_url}//u/{token}", timeout=10, tls=tls)
    for log in (web_log, proxy_log):
        text = log.read_text()
        assert text.count("POST /u/[token]") >= 3 and token not in text, (log, text[-2000:])
        assert "POST /u/[token]?lang=ko HTTP/1." in text


# Issue 21, 2: 2,100 connections from one address, each a POST header with
# Content-Length: 16000 and then a byte now and then, made every one-click POST time out.

MANY = 2_100


def one_click_from(url: str, source: str, timeout: float) -> tuple[int, float]:
    """The one-click POST from another address (a mail provider's server); (status or 0,
    seconds it took)."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    started = time.monotonic()
    connection = http.client.HTTPConnection(
        parts.hostname, parts.port, timeout=timeout, source_address=(source, 0)
    )
    try:
        connection.request(
            "POST",
            parts.path,
            body=ONE_CLICK,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        status = connection.getresponse().status
    except OSError:
        status = 0
    finally:
        connection.close()
    return status, time.monotonic() - started


def test_one_click_answers_within_a_second_while_one_address_holds_2100_slow_bodies(
    session: Session, db_url: str, tmp_path: Path, smtp: SmtpServer
) -> None:
    settings = settings_for(db_url, tmp_path)
    held: list[socket.socket] = []
    with Server(settings, tmp_path / "serve.log", workers=2) as server:
        url = mail_one_message(settings, session, tmp_path, smtp, server.url)
        try:
            for i in range(MANY):
                sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
                sock.sendall(
                    (
                        f"POST /u/slow{i} HTTP/1.1\r\nHost: x\r\n"
                        "Content-Type: application/x-www-form-urlencoded\r\n"
                        "Content-Length: 16000\r\n\r\nL"
                    ).encode()
                )
                held.append(sock)
            time.sleep(1)
            status, took = one_click_from(url, "127.0.0.2", timeout=5)
            assert status == 200 and took < 1.0, (status, took)
        finally:
            for sock in held:
                sock.close()


def test_a_body_that_trickles_in_is_dropped_at_the_request_deadline(
    session: Session, db_url: str, tmp_path: Path
) -> None:
    """A byte every few seconds meets no per-read timeout: the whole request has one."""
    from outreach.gunicorn_conf import BODY_TIMEOUT, REQUEST_DEADLINE

    settings = settings_for(db_url, tmp_path)
    with Server(settings, tmp_path / "serve.log", workers=1) as server:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        sock.sendall(
            b"POST /u/slow HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 16000\r\n\r\n"
        )
        started = time.monotonic()
        closed_after = None
        # Wait for the server's end of the connection while sending a byte now and then:
        # reading sees it at once, where a send fails only at the second byte after it.
        sock.settimeout(BODY_TIMEOUT / 3)
        try:
            while time.monotonic() - started < REQUEST_DEADLINE + 10:
                try:
                    sock.recv(65536)  # an answer or the end: either way, the request is over
                except TimeoutError:
                    sock.sendall(b"L")
                    continue
                closed_after = time.monotonic() - started
                break
        except OSError:
            closed_after = time.monotonic() - started
        finally:
            sock.close()
    assert closed_after is not None and closed_after < REQUEST_DEADLINE + 5, closed_after
