"""Transports: how a finished message leaves. SMTP for real mail, an outbox folder for safety.

A transport has one method, `send`, which either returns the server's acceptance or raises a
`TemporaryFailure` (try again later) or a `PermanentFailure` (never retry). Deciding what a
failure means for the delivery and the campaign is the sender's job, not the transport's.
"""

from __future__ import annotations

import contextlib
import os
import re
import smtplib
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from outreach.config import Settings, SmtpSettings
from outreach.failures import classify
from outreach.messages import Envelope

T = TypeVar("T")


@dataclass(frozen=True)
class Accepted:
    code: int
    text: str


class SendFailure(Exception):
    def __init__(self, code: int | None, text: str, *, relay: bool = False) -> None:
        self.code, self.text, self.relay = code, text, relay
        super().__init__(f"{code} {text}" if code else text)


class TemporaryFailure(SendFailure):
    """4xx, a dropped connection or a timeout: retry later. `relay` marks failures of the
    relay itself rather than of this recipient (a run of those pauses the campaign)."""


class PermanentFailure(SendFailure):
    """5xx for this recipient: never retry."""

    @property
    def hard_bounce(self) -> bool:
        """The address does not exist or is disabled (5.1.x, 5.2.1, or a generic 550 that
        says so): the only refusal that suppresses it."""
        return classify(self.code, self.text) == "hard"

    @property
    def policy(self) -> bool:
        """Refused for who we are or what we sent (5.7.x: SPF/DKIM/DMARC, spam, a blocked
        IP): our problem, never the recipient's; a run of them should stop the campaign."""
        return classify(self.code, self.text) == "policy"


class Transport(Protocol):
    name: str

    def send(self, envelope: Envelope, campaign: str) -> Accepted: ...

    def close(self) -> None: ...


class OutboxTransport:
    """One `.eml` per message under OUTBOX/<campaign>/: nobody is mailed by accident."""

    name = "outbox"

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def send(self, envelope: Envelope, campaign: str) -> Accepted:
        folder = self.directory / re.sub(r"[^A-Za-z0-9._-]", "_", campaign)
        folder.mkdir(parents=True, exist_ok=True)
        stem = re.sub(r"[^A-Za-z0-9._-]", "_", envelope.message_id.strip("<>"))
        final = folder / f"{stem}.eml"
        temporary = folder / f".{stem}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            temporary.write_bytes(envelope.data)
            os.replace(temporary, final)  # readers never see half a message
        except OSError as exc:
            raise TemporaryFailure(None, f"outbox: {exc}", relay=True) from None
        return Accepted(250, f"written to {final}")

    def close(self) -> None:
        pass


class SmtpTransport:
    """SMTP with one persistent connection per thread, reused across messages."""

    name = "smtp"

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings
        self._local = threading.local()

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        try:
            if s.tls == "ssl":
                conn: smtplib.SMTP = smtplib.SMTP_SSL(
                    s.host, s.port, timeout=s.timeout, context=ssl.create_default_context()
                )
            else:
                conn = smtplib.SMTP(s.host, s.port, timeout=s.timeout)
            conn.ehlo()
            if s.tls == "starttls":
                conn.starttls(context=ssl.create_default_context())
                conn.ehlo()
            if s.username:
                conn.login(s.username, s.password or "")
        except smtplib.SMTPAuthenticationError as exc:
            raise TemporaryFailure(
                exc.smtp_code, f"authentication failed: {_text(exc.smtp_error)}", relay=True
            ) from None
        except smtplib.SMTPResponseException as exc:
            raise TemporaryFailure(exc.smtp_code, _text(exc.smtp_error), relay=True) from None
        except (OSError, smtplib.SMTPException) as exc:
            raise TemporaryFailure(
                None, f"cannot connect to {s.host}:{s.port}: {exc}", relay=True
            ) from None
        return conn

    def _connection(self) -> tuple[smtplib.SMTP, bool]:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            return conn, True
        conn = self._connect()
        self._local.conn = conn
        return conn, False

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.close()

    def send(self, envelope: Envelope, campaign: str) -> Accepted:
        conn, reused = self._connection()
        if conn.has_extn("pipelining") and _dot_safe(envelope.data):
            return self._send_pipelined(conn, reused, envelope)
        conn, (code, reply) = self._first(
            conn, reused, lambda c: _command(c, f"FROM:<{envelope.sender}>", "mail")
        )
        self._check(conn, code, reply, relay=True)
        code, reply = self._guard(lambda: _command(conn, f"TO:<{envelope.recipient}>", "rcpt"))
        if code not in (250, 251):
            self._check(conn, code, reply, relay=False)
        code, reply = self._guard(lambda: _data(conn, envelope.data))
        if code != 250:
            self._check(conn, code, reply, relay=False)
        return Accepted(code, _text(reply))

    def _first(
        self,
        conn: smtplib.SMTP,
        reused: bool,
        step: Callable[[smtplib.SMTP], tuple[int, bytes]],
    ) -> tuple[smtplib.SMTP, tuple[int, bytes]]:
        """A message's first command. On a pooled connection the server may have closed
        while it sat idle; nothing was sent yet, so reconnect once and go on."""
        try:
            return conn, step(conn)
        except (smtplib.SMTPServerDisconnected, OSError):
            self._drop()
            if not reused:
                raise TemporaryFailure(
                    None, "connection dropped before MAIL FROM", relay=True
                ) from None
            fresh, _ = self._connection()
            return fresh, self._guard(lambda: step(fresh))

    def _send_pipelined(self, conn: smtplib.SMTP, reused: bool, envelope: Envelope) -> Accepted:
        """RFC 2920: MAIL, RCPT and DATA in one write, then their three replies. Two round
        trips a message instead of four, which is most of the time a message takes."""
        commands = (
            f"MAIL FROM:<{envelope.sender}>\r\nRCPT TO:<{envelope.recipient}>\r\nDATA\r\n"
        ).encode()

        def start(conn: smtplib.SMTP) -> tuple[int, bytes]:
            conn.send(commands)
            return conn.getreply()

        conn, mail = self._first(conn, reused, start)
        rcpt = self._guard(conn.getreply)
        data = self._guard(conn.getreply)
        if data[0] == 354 and (mail[0] != 250 or rcpt[0] not in (250, 251)):
            # A server that accepted DATA after refusing the envelope: send nothing.
            def empty() -> tuple[int, bytes]:
                conn.send(b".\r\n")
                return conn.getreply()

            self._guard(empty)
        if mail[0] != 250:
            self._check(conn, *mail, relay=True)
        if rcpt[0] not in (250, 251):
            self._check(conn, *rcpt, relay=False)
        if data[0] != 354:
            self._check(conn, *data, relay=False)

        def body() -> tuple[int, bytes]:
            conn.send(envelope.data + b".\r\n")
            return conn.getreply()

        code, reply = self._guard(body)
        if code != 250:
            self._check(conn, code, reply, relay=False)
        return Accepted(code, _text(reply))

    def _guard(self, step: Callable[[], T]) -> T:
        try:
            return step()
        except smtplib.SMTPServerDisconnected as exc:
            self._drop()
            raise TemporaryFailure(None, f"connection dropped: {exc}", relay=True) from None
        except TimeoutError:
            self._drop()
            raise TemporaryFailure(None, "timed out waiting for the server", relay=True) from None
        except smtplib.SMTPResponseException as exc:
            self._drop()
            raise TemporaryFailure(exc.smtp_code, _text(exc.smtp_error), relay=True) from None
        except OSError as exc:
            self._drop()
            raise TemporaryFailure(None, f"connection error: {exc}", relay=True) from None

    def _check(self, conn: smtplib.SMTP, code: int, reply: bytes, *, relay: bool) -> None:
        if 200 <= code < 300:
            return
        text = _text(reply)
        if code == 421:  # the server is closing the channel
            self._drop()
            raise TemporaryFailure(code, text, relay=True)
        try:
            conn.rset()
        except (smtplib.SMTPException, OSError):
            self._drop()
        if 400 <= code < 500:
            raise TemporaryFailure(code, text, relay=relay)
        if relay:
            # MAIL FROM refused: every recipient would be; it is the relay's or our setup's fault.
            raise TemporaryFailure(code, f"sender refused: {text}", relay=True)
        raise PermanentFailure(code, text)

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                conn.quit()
            self._local.conn = None


def _command(conn: smtplib.SMTP, argument: str, verb: str) -> tuple[int, bytes]:
    """MAIL/RCPT with addresses we normalised ourselves (smtplib re-parses each one)."""
    conn.putcmd(verb, argument)
    return conn.getreply()


def _dot_safe(data: bytes) -> bool:
    """No line starts with a dot (our headers and base64 bodies never do), so the message
    needs no dot-stuffing and can go as it is."""
    return not (data.startswith(b".") or b"\n." in data) and data.endswith(b"\r\n")


def _data(conn: smtplib.SMTP, data: bytes) -> tuple[int, bytes]:
    """DATA without smtplib's regex pass over the whole message when none is needed."""
    if not _dot_safe(data):
        return conn.data(data)
    conn.putcmd("data")
    code, reply = conn.getreply()
    if code != 354:
        return code, reply
    conn.send(data + b".\r\n")
    return conn.getreply()


def _text(reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    return " ".join(text.split())


def transport_for(settings: Settings) -> Transport:
    smtp = settings.smtp
    if smtp is not None:
        return SmtpTransport(smtp)
    return OutboxTransport(settings.outbox)
