"""A small SMTP server that offers PIPELINING (aiosmtpd does not), for the transport's
pipelined path: it reads commands in order from the stream, so pipelined commands simply
arrive together. Replies to RCPT are scripted per recipient."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter

from tests.smtp_server import free_port


class PipeliningServer:
    def __init__(self, pipelining: bool = True) -> None:
        self.pipelining = pipelining
        self.writers: list[asyncio.StreamWriter] = []
        self.port = free_port()
        self.url = f"smtp://127.0.0.1:{self.port}?tls=none&timeout=2"
        self.rcpt_replies: dict[str, str] = {}
        self.received: list[tuple[str, str, bytes]] = []
        self.connections = 0
        self.batches: Counter[int] = Counter()  # how many commands arrived in one read
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        ready.wait(5)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._session, "127.0.0.1", self.port)
        )
        ready.set()
        self._loop.run_forever()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        writer.write(b"220 pipelining test server\r\n")
        await writer.drain()
        sender, recipients = "", []
        while line := await reader.readline():
            pending = len(reader._buffer)
            self.batches[1 + bytes(reader._buffer).count(b"\r\n") if pending else 1] += 1
            verb = line[:4].upper()
            if verb == b"EHLO":
                extension = b"250-PIPELINING\r\n" if self.pipelining else b""
                writer.write(b"250-test\r\n" + extension + b"250 8BITMIME\r\n")
            elif verb == b"MAIL":
                sender, recipients = line[10:].strip().strip(b"<>").decode(), []
                writer.write(b"250 2.1.0 ok\r\n")
            elif verb == b"RCPT":
                address = line[8:].strip().strip(b"<>").decode()
                reply = self.rcpt_replies.get(address.lower(), "250 2.1.5 ok")
                if reply.startswith("2"):
                    recipients.append(address)
                writer.write(reply.encode() + b"\r\n")
            elif verb == b"DATA":
                if not recipients:
                    writer.write(b"554 5.5.1 no valid recipients\r\n")
                else:
                    writer.write(b"354 go ahead\r\n")
                    await writer.drain()
                    chunks = []
                    while (chunk := await reader.readline()) != b".\r\n":
                        chunks.append(chunk)
                    for rcpt in recipients:
                        self.received.append((sender, rcpt, b"".join(chunks)))
                    writer.write(b"250 2.0.0 queued\r\n")
            elif verb == b"RSET":
                sender, recipients = "", []
                writer.write(b"250 ok\r\n")
            elif verb == b"QUIT":
                writer.write(b"221 bye\r\n")
                await writer.drain()
                break
            else:
                writer.write(b"250 ok\r\n")
            await writer.drain()
        writer.close()

    def close_idle_connections(self) -> None:
        """What a server does to a connection idle past its timeout."""
        for writer in self.writers:
            self._loop.call_soon_threadsafe(writer.close)
        self.writers = []
        import time

        time.sleep(0.2)

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
