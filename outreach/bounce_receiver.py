"""An SMTP server for the bounce domain, so bounces reach a deployment with no MTA of its own
(the compose stack's `bounces` service; the MX record of OUTREACH_BOUNCE_DOMAIN points here).

It takes mail only for what we hand out: bounces+TOKEN@ and unsubscribe+TOKEN@ with a valid
signature, and postmaster@/abuse@ for feedback loops. Each message goes through the same
`Ingester` as `outreach bounces ingest`, read once whatever its number of recipients.
Because the sending MTA keeps a message it could not hand over, every failure of ours is
answered 451 (try again later): an unreachable database never loses a bounce, and a message
that waits too long for the store is answered 451 rather than left without a reply. Limits
per client (an IPv4 address, or the /64 of an IPv6 one, as the web side counts) and in all
keep one sender from taking the service, and so do limits on the messages waiting for the
one thread that stores them, counted until that thread is done with them even when their
sender has hung up. A message made of more pieces than any bounce (`shape_refusal`) is
refused before it is parsed.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from outreach.bounce_parser import shape_refusal
from outreach.bounces import (
    DatabaseUnavailable,
    Ingester,
    IngestReport,
    database_session,
)
from outreach.config import Settings
from outreach.printable import one_line
from outreach.subscriptions import client_network
from outreach.tokens import InvalidToken, Tokens

MAX_RECIPIENTS = 10  # a bounce has one; a few for a forwarded complaint
# One thread stores every message: while it is slow (a large message, a busy database), no
# client may fill the queue in front of it. Past these an MTA is told to come back (451).
MAX_WAITING = 20
MAX_WAITING_PER_CLIENT = 5
# Connections from everyone together.
MAX_CONNECTIONS = 100
# What a connection may send: bounces of our mail are tens of KB (Postfix returns the first
# 50 KB of a message, Exim 100 KB; ours carry no attachments). aiosmtpd keeps a message as
# one object per line while it arrives, about 70 bytes each, so 2 MB of empty lines cost
# some 75 MB: one message at a time from a client, a few at a time in all.
MAX_RECEIVED_BYTES = 2 * 1024 * 1024
MAX_RECEIVING = 4
MAX_RECEIVING_PER_CLIENT = 1
# Seconds a message may wait for the store before its sender is told to come back (451):
# an MTA gives up on a DATA reply after minutes, and must get one.
STORE_DEADLINE = 30.0
FEEDBACK_LOCALS = ("postmaster", "abuse")


class ClientLimits:
    """Open connections and messages in a sliding window, per client address."""

    def __init__(self, max_connections: int, max_messages: int, window: float) -> None:
        self.max_connections, self.max_messages, self.window = (
            max_connections,
            max_messages,
            window,
        )
        self.connections: dict[str, int] = defaultdict(int)
        self.messages: dict[str, deque[float]] = {}

    def connect(self, client: str) -> bool:
        if self.connections[client] >= self.max_connections:
            return False
        self.connections[client] += 1
        return True

    def disconnect(self, client: str) -> None:
        self.connections[client] -= 1
        if self.connections[client] <= 0:
            del self.connections[client]

    def message(self, client: str) -> bool:
        now = time.monotonic()
        recent = self.messages.setdefault(client, deque())
        while recent and recent[0] <= now - self.window:
            recent.popleft()
        if len(recent) >= self.max_messages:
            return False
        recent.append(now)
        if len(self.messages) > 10_000:  # forget quiet clients rather than grow forever
            idle = now - self.window
            for quiet in [c for c, q in self.messages.items() if not q or q[-1] <= idle]:
                del self.messages[quiet]
        return True


def _client(peer: Any) -> str:
    """The client a limit counts: an IPv4 address, or the /64 of an IPv6 one."""
    address = str(peer[0]) if isinstance(peer, tuple) and peer else str(peer or "?")
    return client_network(address)


class _Connection(SMTP):
    """aiosmtpd's SMTP session, refusing a client over its connection limit before the
    greeting, and known to the receiver so a stop can close it."""

    def __init__(self, receiver: BounceReceiver, **kwargs: Any) -> None:
        super().__init__(receiver, **kwargs)
        self.receiver = receiver
        self.client: str | None = None
        self.arriving = False  # counted in receiver.receiving

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.transport is None:  # not the second call of a STARTTLS upgrade
            client = _client(transport.get_extra_info("peername"))
            refusal = None
            if self.receiver.stopping:
                refusal = b"421 4.3.2 shutting down; try again later\r\n"
            elif len(self.receiver.connections) >= self.receiver.max_connections:
                refusal = b"421 4.7.0 too many connections; try again later\r\n"
            elif not self.receiver.limits.connect(client):
                refusal = b"421 4.7.0 too many connections from your address\r\n"
            if refusal is not None:
                transport.write(refusal)  # type: ignore[attr-defined]
                transport.close()
                return
            self.client = client
            self.receiver.connections.add(self)
        super().connection_made(transport)

    async def smtp_DATA(self, arg: str) -> None:
        """DATA, when there is room to receive the message; else 451 before it is sent."""
        receiver, client = self.receiver, self.client or "?"
        if (
            sum(receiver.receiving.values()) >= receiver.max_receiving
            or receiver.receiving.get(client, 0) >= MAX_RECEIVING_PER_CLIENT
        ):
            receiver.log(f"from {client}: 451 at DATA, too many messages arriving at once")
            await self.push("451 4.3.2 too many messages arriving at once; try again later")
            return
        receiver.receiving[client] = receiver.receiving.get(client, 0) + 1
        self.arriving = True
        try:
            await super().smtp_DATA(arg)
        finally:
            self.arrived()

    def arrived(self) -> None:
        """The message is in (or the connection gone): it no longer counts as arriving.
        Storing it is counted apart, by the receiver's queue."""
        if not self.arriving:
            return
        self.arriving = False
        receiving, client = self.receiver.receiving, self.client or "?"
        receiving[client] -= 1
        if not receiving[client]:
            del receiving[client]

    def connection_lost(self, error: Exception | None) -> None:
        if self.client is None:
            return  # refused in connection_made: nothing was set up
        self.receiver.limits.disconnect(self.client)
        self.receiver.connections.discard(self)
        self.client = None
        super().connection_lost(error)


class BounceReceiver:
    """The SMTP handler (aiosmtpd calls its handle_* methods) and the server around it."""

    def __init__(
        self,
        settings: Settings,
        tokens: Tokens,
        *,
        log: Callable[[str], None] = print,
        max_connections: int = 10,
        max_messages: int = 100,
        window: float = 60.0,
        timeout: float = 60.0,
        max_waiting: int = MAX_WAITING,
        max_waiting_per_client: int = MAX_WAITING_PER_CLIENT,
        max_total_connections: int = MAX_CONNECTIONS,
        store_deadline: float = STORE_DEADLINE,
        max_receiving: int = MAX_RECEIVING,
    ) -> None:
        if not settings.bounce_domain:
            raise ValueError("a bounce receiver needs OUTREACH_BOUNCE_DOMAIN")
        self.settings, self.tokens, self.log = settings, tokens, log
        self.domain = settings.bounce_domain.lower()
        self.limits = ClientLimits(max_connections, max_messages, window)
        self.timeout = timeout
        self.connections: set[_Connection] = set()
        self.max_waiting, self.max_waiting_per_client = max_waiting, max_waiting_per_client
        self.max_connections, self.store_deadline = max_total_connections, store_deadline
        self.storing = 0  # messages handed to the store thread that it has not finished
        self.waiting: dict[str, int] = {}  # the same, by client address
        self.parsed = 0  # messages parsed, once each whatever their recipients
        self.max_receiving = max_receiving
        self.receiving: dict[str, int] = {}  # messages arriving now (DATA), by client
        self.stopping = False
        self.port: int | None = None
        self.ready = threading.Event()
        # One thread stores messages: bounces are few, and SQLite takes one writer anyway.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bounces")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    # -- recipients ---------------------------------------------------------------------

    def accepts(self, address: str) -> bool:
        local, at, domain = address.strip("<> ").rpartition("@")
        if not at or domain.lower() != self.domain:
            return False
        if local.lower() in FEEDBACK_LOCALS:
            return True
        kind, plus, token = local.partition("+")
        if not plus or kind.lower() not in ("bounces", "unsubscribe"):
            return False
        try:
            return isinstance(self.tokens.verify("bounce", token), int)
        except InvalidToken:
            return False

    def _label(self, address: str) -> str:
        """A recipient for the log, without its token (a token is a key to a delivery)."""
        local, _, domain = address.rpartition("@")
        return f"{local.partition('+')[0]}{'+…' if '+' in local else ''}@{domain}"

    def _busy(self, client: str) -> str | None:
        """The 451 to answer when the store has too much waiting, overall or from this
        client; logged, one line each."""
        if self.storing >= self.max_waiting:
            reply = "451 4.3.2 too many messages waiting to be stored; try again later"
        elif self.waiting.get(client, 0) >= self.max_waiting_per_client:
            reply = "451 4.7.1 too many of your messages waiting to be stored; try again later"
        else:
            return None
        self.log(f"from {client}: {reply[:3]}, {self.storing} messages waiting to be stored")
        return reply

    # -- aiosmtpd hooks -----------------------------------------------------------------

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        client = _client(session.peer)
        busy = self._busy(client)  # before the message is sent, so as not to read it
        if busy is not None:
            return busy
        if not self.limits.message(client):
            return "451 4.7.1 too many messages from your address; try again later"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if not self.accepts(address):
            return "550 5.1.1 no such recipient here"
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return "452 4.5.3 too many recipients"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if isinstance(server, _Connection):
            server.arrived()
        client = _client(session.peer)
        data = envelope.original_content or b""
        recipients = list(envelope.rcpt_tos)
        shape = shape_refusal(data)  # before any parsing: a few counts over the bytes
        if shape is not None:
            self.log(f"from {client}: 554, {shape}")
            return f"554 5.6.0 not a bounce we read: {shape}"
        busy = self._busy(client)  # others may have filled the queue since MAIL FROM
        if busy is not None:
            return busy
        stored = self._submit(client, data, recipients)
        try:
            # Shielded: a sender that hangs up does not stop the store thread, whose work
            # stays counted until it is done (`_submit`).
            report = await asyncio.wait_for(
                asyncio.shield(asyncio.wrap_future(stored)), self.store_deadline
            )
        except TimeoutError:
            stored.cancel()  # if the store has not started on it; else it is stored anyway
            self.log(f"from {client}: 451, not stored within {self.store_deadline:g} s")
            return "451 4.3.2 too busy to store the message now; try again later"
        except DatabaseUnavailable as exc:
            self.log(f"from {client}: 451, {exc}")
            return "451 4.3.0 cannot store the message now; try again later"
        except Exception as exc:  # our bug, not the sender's: keep the message coming back
            self.log(f"from {client}: 451, {type(exc).__name__}: {one_line(exc, 300)}")
            return "451 4.3.0 local error; try again later"
        to = ", ".join(self._label(r) for r in recipients)
        self.log(f"from {client} to {to}: {report.brief()}")
        for note in report.notes():
            self.log(f"  {note}")
        return "250 OK"

    def _submit(self, client: str, data: bytes, recipients: list[str]) -> Future[IngestReport]:
        """Hand a message to the store thread; it counts as waiting (overall and for its
        client) until the thread is done with it or it is withdrawn before it started."""
        self.storing += 1
        self.waiting[client] = self.waiting.get(client, 0) + 1
        loop = asyncio.get_running_loop()

        def release() -> None:
            self.storing -= 1
            self.waiting[client] -= 1
            if not self.waiting[client]:
                del self.waiting[client]

        def done(_: Future[IngestReport]) -> None:
            with contextlib.suppress(RuntimeError):  # a closed loop: the receiver stopped
                loop.call_soon_threadsafe(release)

        stored = self._executor.submit(self._store, data, recipients)
        stored.add_done_callback(done)
        return stored

    def _store(self, data: bytes, recipients: list[str]) -> IngestReport:
        settings = self.settings
        with database_session(settings.database_url, check=False) as session:
            ingester = Ingester(
                session, self.tokens, settings.bounce_domain, settings.soft_bounce_limit
            )
            labels = ", ".join(self._label(r) for r in recipients)
            ingester.ingest_for(data, f"smtp:{labels}", list(recipients))
            self.parsed += ingester.parsed
            session.commit()  # all recipients or none: a 451 makes the sender send it all again
        return ingester.report

    # -- serving ------------------------------------------------------------------------

    def _connection(self) -> _Connection:
        return _Connection(
            self,
            data_size_limit=MAX_RECEIVED_BYTES,
            hostname=self.domain,
            ident="outreach bounces",
            timeout=self.timeout,
            loop=self._loop,
        )

    async def run(self, host: str, port: int) -> None:
        """Serve until stop(); then finish the messages being stored and close the rest."""
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await self._loop.create_server(self._connection, host, port)
        self.port = int(server.sockets[0].getsockname()[1])
        self.ready.set()
        try:
            await self._stop.wait()
        finally:
            self.stopping = True
            server.close()
            deadline = time.monotonic() + 30
            while self.storing and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            for connection in list(self.connections):
                transport = connection.transport
                if transport is not None:
                    transport.write(b"421 4.3.2 shutting down; try again later\r\n")  # type: ignore[attr-defined]
                    transport.close()
            await server.wait_closed()
            self._executor.shutdown(wait=True)

    def stop(self) -> None:
        """Stop serving; safe to call from any thread or a signal handler."""
        loop, event = self._loop, self._stop
        if loop is not None and event is not None:
            loop.call_soon_threadsafe(event.set)


def serve(
    settings: Settings,
    tokens: Tokens,
    host: str,
    port: int,
    log: Callable[[str], None] = print,
) -> None:
    """Run a receiver in the foreground until SIGTERM or SIGINT."""
    from outreach.db import safe_url
    from outreach.errors import UserError

    try:
        with database_session(settings.database_url):
            pass  # reachable and at the right schema (a wrong schema stops us here)
    except DatabaseUnavailable as exc:
        log(f"warning: {exc}; answering 451 until it can be reached")
    receiver = BounceReceiver(settings, tokens, log=log)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, receiver.stop)
        task = asyncio.create_task(receiver.run(host, port))
        while not receiver.ready.is_set() and not task.done():
            await asyncio.sleep(0.01)
        if receiver.ready.is_set():
            log(
                f"receiving mail for {receiver.domain} on {host}:{receiver.port} "
                f"(database {safe_url(settings.database_url)})"
            )
        try:
            await task
        except OSError as exc:
            raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        log("stopped")

    asyncio.run(main())
