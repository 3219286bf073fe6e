"""Message assembly: headers and MIME structure, built as bytes directly.

`email.message.EmailMessage` costs milliseconds per message, more than rendering and sending
together, so messages are written here from a per-campaign header template: only the parts
that differ per recipient (To, Message-ID, Date, List-Unsubscribe, the bodies) are encoded
per message. Every value that reaches a header passes through `_header_text`, which removes
CR and LF, so no contact field or YAML value can inject a header.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import string
import struct
import threading
import time
from bisect import bisect_right
from dataclasses import dataclass, field
from email import base64mime, quoprimime
from email.header import Header
from email.utils import formataddr, formatdate, parseaddr
from functools import lru_cache
from itertools import accumulate
from pathlib import Path

from outreach.fields import NEEDS_SMTPUTF8

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
DKIM_HEADERS = [
    b"from",
    b"to",
    b"subject",
    b"date",
    b"message-id",
    b"reply-to",
    b"mime-version",
    b"content-type",
    b"list-unsubscribe",
    b"list-unsubscribe-post",
    # Gmail's feedback loop trusts a Feedback-ID only when the domain's signature covers it.
    b"feedback-id",
]


class _RandomHex:
    """Random hex strings from the system's CSPRNG, read a few kilobytes at a time: a
    system call per Message-ID and per boundary cost more than the rest of the headers."""

    CHUNK = 4096

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool = b""

    def __call__(self, nbytes: int) -> str:
        with self._lock:
            if len(self._pool) < nbytes:
                self._pool = os.urandom(self.CHUNK)
            taken, self._pool = self._pool[:nbytes], self._pool[nbytes:]
        return taken.hex()


random_hex = _RandomHex()


def _header_text(value: str) -> str:
    return _CONTROL.sub(" ", value).strip()


@lru_cache(maxsize=1024)
def encode_header(value: str) -> str:
    """RFC 2047 for non-ASCII text (Korean subjects), folded; ASCII as is.

    Cached: most recipients of a campaign share their language's subject."""
    value = _header_text(value)
    # Typed "=?…?=" is encoded too: a mail client must show it, never decode it.
    if value.isascii() and len(value) < 900 and "=?" not in value:
        return value
    return _subject_words(value)


# What `email.header.Header(value, "utf-8", header_name="Subject").encode()` writes, made
# without its search (it encodes every prefix of the text again to find where a word must
# end: ~100-200 µs for a personalised subject, which misses the cache above). Its rules: the
# whole value in base64 or in Q, whichever is shorter; greedy words of whole characters, the
# first at most 57 encoded characters long (78 minus "Subject: " and "=?utf-8?b?…?="), the
# others 65 (78 minus the folding space and the same); folded with CRLF and a space. The
# test that compares the two (tests/test_composition.py) keeps them the same.
_FIRST_WORD = 78 - len("Subject: ") - len("=?utf-8?b??=")
_NEXT_WORD = 78 - len(" ") - len("=?utf-8?b??=")
# Bytes Q writes as themselves (a space as "_"); every other byte becomes "=XX".
_Q_AS_IS = frozenset(b"-!*+/ " + string.ascii_letters.encode() + string.digits.encode())
_Q_LENGTH = [1 if byte in _Q_AS_IS else 3 for byte in range(256)]
# Characters `str.splitlines` ends a line at, which Header folds at (and `_header_text`
# leaves): such rare values are left to it.
_LINE_BREAKS = re.compile("[\x85\u2028\u2029]")


def _subject_words(value: str) -> str:
    if _LINE_BREAKS.search(value):
        return Header(value, "utf-8", header_name="Subject").encode(linesep="\r\n")
    data = value.encode("utf-8")
    # q[i]: the Q length of data[: i + 1].
    q = list(accumulate(map(_Q_LENGTH.__getitem__, data)))
    base64 = (len(data) + 2) // 3 * 4 < (q[-1] if q else 0)
    words = []
    start, limit = 0, _FIRST_WORD
    while True:
        # The most bytes from `start` whose encoding fits in `limit` characters...
        if base64:
            end = start + limit // 4 * 3
        else:
            end = bisect_right(q, (q[start - 1] if start else 0) + limit, start)
        if end >= len(data):
            words.append(data[start:])
            break
        # ...ending where a character ends (before a UTF-8 continuation byte, never on one).
        while data[end] & 0xC0 == 0x80:
            end -= 1
        words.append(data[start:end])
        start, limit = end, _NEXT_WORD
    encode = base64mime.header_encode if base64 else quoprimime.header_encode
    return "\r\n ".join(encode(word, "utf-8") for word in words)


def _encoded_words(text: str) -> str:
    """UTF-8 base64 encoded-words of at most 75 characters, split between characters."""
    data = text.encode("utf-8")
    if len(data) <= 45:  # most names: one word
        return "=?utf-8?b?" + binascii.b2a_base64(data, newline=False).decode("ascii") + "?="
    words: list[str] = []
    chunk: list[str] = []
    size = 0
    for char in text:
        n = len(char.encode("utf-8"))
        if size + n > 45:  # 45 bytes -> 60 base64 characters + 12 of framing
            words.append("".join(chunk))
            chunk, size = [], 0
        chunk.append(char)
        size += n
    words.append("".join(chunk))
    return "\r\n ".join(
        "=?utf-8?b?" + base64.b64encode(w.encode("utf-8")).decode("ascii") + "?=" for w in words
    )


class UnmailableAddress(ValueError):
    """A recipient address no message can be built for (see fields.NEEDS_SMTPUTF8)."""

    def __init__(self, address: str) -> None:
        self.message = f"{address} {NEEDS_SMTPUTF8}"
        super().__init__(self.message)


def encode_address(name: str | None, address: str) -> str:
    """A display name with an address; the name RFC 2047-encoded when not ASCII."""
    name = _header_text(name or "")
    address = _header_text(address)
    if not address.isascii():
        # A contact stored before imports checked this (fields.mailable_email).
        raise UnmailableAddress(address)
    if not name:
        return address
    if name.isascii() and "=?" not in name:
        return formataddr((name, address))
    return f"{_encoded_words(name)} <{address}>"


@lru_cache(maxsize=4)
def _date(second: int) -> str:
    """The Date header's value; the same for every message sent within one second."""
    return formatdate(second, usegmt=True)


@lru_cache(maxsize=256)
def _lines(n: int) -> struct.Struct:
    """Splits n lines of 76 characters in one call: a loop over slices cost more than the
    encoding itself."""
    return struct.Struct("76s" * n)


def base64_body(text: str) -> bytes:
    """A MIME body as `build` writes its parts (for a part built once, used in many)."""
    return _base64_body(text)


def _base64_body(text: str) -> bytes:
    """UTF-8, base64, in lines of 76 characters (RFC 2045), each ending in CRLF."""
    encoded = binascii.b2a_base64(text.encode("utf-8"), newline=False)
    full, rest = divmod(len(encoded), 76)
    lines = list(_lines(full).unpack_from(encoded))
    if rest:
        lines.append(encoded[full * 76 :])
    lines.append(b"")
    return b"\r\n".join(lines)


@dataclass
class Envelope:
    sender: str
    recipient: str
    message_id: str
    data: bytes


@dataclass
class DkimKey:
    selector: str
    domain: str
    private_key: bytes

    @classmethod
    def load(cls, key_file: str, selector: str, domain: str) -> DkimKey:
        return cls(selector, domain, Path(key_file).read_bytes())


@dataclass
class MessageBuilder:
    """Assembles every message of one campaign; built once per campaign."""

    from_header: str
    reply_to: str | None = None
    bounce_domain: str | None = None
    dkim: DkimKey | None = None
    mailto_unsubscribe: bool = True
    extra_headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        name, address = parseaddr(self.from_header)
        self.from_address = address
        self.domain = address.rpartition("@")[2] or "localhost"
        common = [f"From: {encode_address(name, address)}"]
        if self.reply_to:
            rname, raddress = parseaddr(self.reply_to)
            common.append(f"Reply-To: {encode_address(rname, raddress)}")
        common.append("MIME-Version: 1.0")
        common += [f"{k}: {_header_text(v)}" for k, v in self.extra_headers.items()]
        self._common = "\r\n".join(common)

    def new_message_id(self, delivery_id: int) -> str:
        return f"<{delivery_id}.{random_hex(8)}@{self.domain}>"

    def envelope_sender(self, bounce_token: str | None) -> str:
        if self.bounce_domain and bounce_token:
            return f"bounces+{bounce_token}@{self.bounce_domain}"
        return self.from_address

    def build(
        self,
        *,
        to_name: str | None,
        to_address: str,
        subject: str,
        html: str,
        text: str,
        unsubscribe_url: str,
        message_id: str,
        bounce_token: str | None = None,
        date: float | None = None,
        calendar: bytes | None = None,
    ) -> Envelope:
        """`calendar`: an event (`invitations`), already as `base64_body` gives it — the
        third alternative, which mail programs show as an event beside the HTML."""
        sender = self.envelope_sender(bounce_token)
        unsubscribe = f"<{_header_text(unsubscribe_url)}>"
        if self.bounce_domain and bounce_token and self.mailto_unsubscribe:
            unsubscribe += (
                f", <mailto:unsubscribe+{bounce_token}@{self.bounce_domain}?subject=unsubscribe>"
            )
        boundary = "=_" + random_hex(12)
        head = [
            f"Return-Path: <{sender}>" if self.bounce_domain and bounce_token else None,
            self._common,
            f"To: {encode_address(to_name, to_address)}",
            f"Subject: {encode_header(subject)}",
            f"Date: {_date(int(date if date is not None else time.time()))}",
            f"Message-ID: {message_id}",
            f"List-Unsubscribe: {unsubscribe}",
            "List-Unsubscribe-Post: List-Unsubscribe=One-Click",
            f'Content-Type: multipart/alternative; boundary="{boundary}"',
        ]
        parts = [
            "\r\n".join(h for h in head if h).encode("utf-8"),
            b"\r\n\r\n",
            f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\n".encode(),
            _base64_body(text),
            f"--{boundary}\r\nContent-Type: text/html; charset=utf-8\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\n".encode(),
            _base64_body(html),
        ]
        if calendar is not None:
            parts += [
                f"--{boundary}\r\nContent-Type: text/calendar; method=PUBLISH; charset=UTF-8\r\n"
                "Content-Transfer-Encoding: base64\r\n\r\n".encode(),
                calendar,
            ]
        parts.append(f"--{boundary}--\r\n".encode())
        data = b"".join(parts)
        if self.dkim is not None:
            data = self.sign(data)
        return Envelope(sender, _header_text(to_address), message_id, data)

    def sign(self, data: bytes) -> bytes:
        import dkim

        assert self.dkim is not None
        signature: bytes = dkim.sign(
            data,
            self.dkim.selector.encode(),
            self.dkim.domain.encode(),
            self.dkim.private_key,
            include_headers=DKIM_HEADERS,
        )
        return signature + data
