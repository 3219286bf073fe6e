"""gunicorn's settings for the recipients' web app, the one place they are made.

Both `outreach serve` and the compose `web` service run

    gunicorn --config python:outreach.gunicorn_conf [--bind …] [--workers N] outreach.wsgi:app

Mail providers POST the one-click unsubscribe (RFC 8058) from their own servers and expect a
prompt 200, so a handful of clients that open connections and send half a request must not
hold the workers: every connection is a greenlet (gevent), not a worker, a request that is
not over within REQUEST_DEADLINE is dropped however it trickles in, and one client (an IPv4
address, an IPv6 /64) holds at most PER_CLIENT_CONNECTIONS of a worker's connections, so no
single address can take them all. A buffering proxy in front (deploy/nginx/) is the first
line; this is the second, for `outreach serve` run on its own and for anything that reaches
gunicorn directly.
"""

from __future__ import annotations

import logging
import re
import string
from typing import Any

import gevent
from gunicorn.glogging import Logger
from gunicorn.workers.ggevent import GeventWorker

# Seconds a client may take to send its request line and headers (gunicorn's gevent worker
# bounds that read by the keep-alive time), and to send each further piece of its body, or
# to take each piece of the answer.
HEADER_TIMEOUT = 5
BODY_TIMEOUT = 10
# Seconds a whole request may take, its body and answer included: a body sent a byte every
# few seconds meets no per-read timeout, and must not hold a connection for long. Our forms
# are a few KB (16 KB at most) and the answers short.
REQUEST_DEADLINE = 20
# Connections one client may hold in one worker process (of its 1000). A mail provider's
# one-click POSTs come from many addresses; an office behind one address opens a few.
PER_CLIENT_CONNECTIONS = 100

worker_class = "outreach.gunicorn_conf.SlowClientWorker"
# Per worker process: idle or slow connections cost a greenlet each, not a process.
worker_connections = 1000
keepalive = HEADER_TIMEOUT
# A request that takes longer than this has a bug, or a database that is not answering.
timeout = 30
graceful_timeout = 10
# Nothing the app serves needs more: tokens are short and requests carry few headers.
limit_request_line = 4094
limit_request_fields = 50
limit_request_field_size = 8190
accesslog = "-"
# gunicorn's runtime control socket lives in $HOME, shared by every instance of a user:
# nothing here uses it.
control_socket_disable = True
logger_class = "outreach.gunicorn_conf.RedactingLogger"

# The path segment after these prefixes is a signed token; whoever reads a log must not be
# able to unsubscribe, resubscribe or read a recipient's message with it. A request that
# spells the path otherwise (/U/, /u//, /u\\) is refused, but its line is logged all the same.
TOKEN_PATH = re.compile(r"((?:[/\\]+)(?:u|p|c|o|v|confirm)[/\\]+)[^/\\\s?#\"']+", re.I)
# A signed token wherever it stands (a door that does not exist, /x/../u/): a number, maybe
# more dot-separated parts, and an itsdangerous signature (27 base64 characters).
TOKEN_SHAPE = re.compile(r"(?<![\w-])[0-9]+(?:\.[\w-]+)*\.[\w-]{27}(?![\w-])")
REDACTED = "[token]"


# gunicorn decodes the path before routing, so /%75/TOKEN and /u%2FTOKEN are served as
# /u/TOKEN: redaction reads the path with the escapes of letters, digits and "-._~/" decoded
# (other escapes, such as %0A, stay as they are, so no line break reaches the log).
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_PLAIN = frozenset(string.ascii_letters + string.digits + "-._~/")


def _plain_escapes_decoded(text: str) -> str:
    def one(match: re.Match[str]) -> str:
        char = chr(int(match.group(1), 16))
        return char if char in _PLAIN else match.group()

    return _ESCAPE.sub(one, text)


def redact(text: str) -> str:
    """The text with the token segment of every recipient link replaced, however the link's
    path was percent-encoded."""
    if "%" in text:
        decoded = _plain_escapes_decoded(text)
        if TOKEN_PATH.search(decoded):
            text = decoded
    return TOKEN_SHAPE.sub(REDACTED, TOKEN_PATH.sub(r"\1" + REDACTED, text))


class RedactTokens(logging.Filter):
    """Rewrites a record so that neither its message nor its traceback carries a token."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


class RedactingLogger(Logger):
    """gunicorn's logger with tokens redacted from the access log, the error log, and what
    Flask logs about a failed request ("Exception on /u/… [POST]")."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        from flask.logging import default_handler

        redactor = RedactTokens()
        for log in (self.error_log, self.access_log):
            log.addFilter(redactor)
        default_handler.addFilter(redactor)


class SlowClientWorker(GeventWorker):
    """gunicorn's gevent worker with a read and write timeout on each connection, so that a
    client that stops half-way through its body, or never reads the answer, is dropped; a
    deadline on each whole request, so that one that trickles in is dropped too; and a cap
    on the connections of one client."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connections_of: dict[str, int] = {}
        # Behind OUTREACH_PROXIES every connection comes from the proxy, which buffers
        # bodies (deploy/nginx/): it is not one client, and is not capped as one.
        from outreach.config import Settings

        self.per_client = 0 if Settings.load().proxies else PER_CLIENT_CONNECTIONS

    def handle(self, listener: Any, client: Any, addr: Any) -> None:
        from outreach.subscriptions import client_network

        key = client_network(str(addr[0]) if isinstance(addr, tuple) else str(addr))
        if self.per_client and self.connections_of.get(key, 0) >= self.per_client:
            client.close()  # before reading anything: the slot goes to someone else
            return
        self.connections_of[key] = self.connections_of.get(key, 0) + 1
        try:
            super().handle(listener, client, addr)
        finally:
            self.connections_of[key] -= 1
            if not self.connections_of[key]:
                del self.connections_of[key]

    def handle_request(self, listener_name: Any, req: Any, sock: Any, addr: Any) -> Any:
        sock.settimeout(BODY_TIMEOUT)
        deadline = gevent.Timeout(REQUEST_DEADLINE)
        deadline.start()
        try:
            return super().handle_request(listener_name, req, sock, addr)
        except gevent.Timeout as expired:
            if expired is not deadline:
                raise
            raise StopIteration from None  # gunicorn closes the connection
        finally:
            deadline.close()


def post_fork(server: Any, worker: Any) -> None:
    # With --preload the app, and its pooled database connections, were made before the
    # fork; no connection may be shared between processes.
    if server.cfg.preload_app:
        from outreach.config import Settings
        from outreach.db import engine_for

        engine_for(Settings.load().database_url).dispose(close=False)


def command(host: str, port: int, workers: int) -> list[str]:
    """The gunicorn command line `outreach serve` runs: this configuration, the WSGI app."""
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return [
        "--config",
        f"python:{__name__}",
        "--bind",
        address,
        "--workers",
        str(workers),
        "outreach.wsgi:app",
    ]
