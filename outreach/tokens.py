"""Signed tokens in recipients' links: unsubscribe, preferences, view online, click, open.

Tokens carry only a delivery number (and a click's URL), signed with OUTREACH_SECRET_KEY;
they do not expire, because people click year-old mail, and a signature cannot be guessed,
so one token reveals nothing about any other recipient.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from itsdangerous import BadSignature, URLSafeSerializer

KINDS = ("unsubscribe", "preferences", "view", "click", "open", "bounce")


class InvalidToken(Exception):
    pass


@lru_cache(maxsize=64)
def _serializer(secret: str, kind: str) -> URLSafeSerializer:
    # Building a serializer derives its keys; one per kind is plenty.
    return URLSafeSerializer(secret, salt=f"outreach.{kind}")


@dataclass(frozen=True)
class Tokens:
    secret: str

    def _serializer(self, kind: str) -> URLSafeSerializer:
        return _serializer(self.secret, kind)

    def sign(self, kind: str, payload: Any) -> str:
        return self._serializer(kind).dumps(payload)  # type: ignore[no-any-return]

    def verify(self, kind: str, token: str) -> Any:
        if len(token) > 4096:
            raise InvalidToken("token too long")
        try:
            return self._serializer(kind).loads(token)
        except (BadSignature, ValueError, TypeError) as exc:
            raise InvalidToken(str(exc)) from None


@dataclass(frozen=True)
class Links:
    """The per-recipient URLs of one message."""

    base_url: str
    tokens: Tokens

    def for_delivery(self, delivery_id: int) -> dict[str, str]:
        sign = self.tokens.sign
        return {
            "unsubscribe_url": f"{self.base_url}/u/{sign('unsubscribe', delivery_id)}",
            "preferences_url": f"{self.base_url}/p/{sign('preferences', delivery_id)}",
            "view_online_url": f"{self.base_url}/v/{sign('view', delivery_id)}",
        }

    def variables(self, delivery_id: int) -> dict[str, Any]:
        """Everything per-recipient that a compiled message may ask for besides `contact`."""
        return {
            **self.for_delivery(delivery_id),
            "open_url": _Lazy(lambda: self.open_pixel(delivery_id)),
            "click": lambda url: self.click(delivery_id, url),
        }

    def click(self, delivery_id: int, url: str) -> str:
        return f"{self.base_url}/c/{self.tokens.sign('click', [delivery_id, url])}"

    def open_pixel(self, delivery_id: int) -> str:
        return f"{self.base_url}/o/{self.tokens.sign('open', delivery_id)}.gif"


class _Lazy:
    """A value computed only if a template prints it (the open pixel's token)."""

    def __init__(self, make: Any) -> None:
        self._make = make

    def __str__(self) -> str:
        return str(self._make())

    def __html__(self) -> str:
        from markupsafe import escape

        return str(escape(str(self)))
