"""Signed tokens in recipients' links: unsubscribe, preferences, view online, click, open.

Tokens carry only a delivery number (and a click's URL), signed with OUTREACH_SECRET_KEY;
they do not expire, because people click year-old mail, and a signature cannot be guessed,
so one token reveals nothing about any other recipient.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Collection
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from itsdangerous import BadSignature, Signer

from outreach.config import Settings

KINDS = ("unsubscribe", "preferences", "view", "click", "open", "bounce")
# The per-recipient names a message's links go by (see `Links.variables`).
NAMES = frozenset({"unsubscribe_url", "preferences_url", "view_online_url", "open_url", "click"})


class InvalidToken(Exception):
    pass


class _KeyedSigner(Signer):
    """A signer that derives its key once: itsdangerous re-derives it (one more HMAC) on
    every signature, and a newsletter signs a dozen links per recipient."""

    def derive_key(self, secret_key: str | bytes | None = None) -> bytes:
        if secret_key is not None:
            return super().derive_key(secret_key)
        key = self.__dict__.get("_derived")
        if key is None:
            key = self.__dict__["_derived"] = super().derive_key()
        return key


@lru_cache(maxsize=64)
def _signer(keys: tuple[str, ...], kind: str) -> Signer:
    # itsdangerous signs with the last key and verifies with each, newest first. Its default
    # digest is SHA-1 behind a Python function, which sends `hmac` down its pure-Python path
    # (~20 µs a signature); hashlib's own SHA-1 takes OpenSSL's (~3 µs), same signatures.
    return _KeyedSigner(list(keys), salt=f"outreach.{kind}", digest_method=hashlib.sha1)


@lru_cache(maxsize=64)
def _signing_key(keys: tuple[str, ...], kind: str) -> bytes:
    return _signer(keys, kind).derive_key()


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode("utf-8")).decode("ascii").rstrip("=")


def _unb64(text: str) -> str:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("utf-8")


@dataclass(frozen=True)
class Tokens:
    """`DELIVERY.SIGNATURE`, or `DELIVERY.URL[.POSITION].SIGNATURE` for a click: compact,
    and cheap to make (a plain itsdangerous Signer, no JSON), since every message carries several.

    New tokens are signed with `secret`; `fallbacks` (keys replaced by a rotation) still
    verify, so links in mail sent before the rotation keep working."""

    secret: str
    fallbacks: tuple[str, ...] = ()

    @classmethod
    def throwaway(cls) -> Tokens:
        """For rendering that no recipient ever receives (validation, previews): a random key
        of its own, so no real key is needed and nothing it signs verifies anywhere."""
        return cls(secrets.token_urlsafe(32))

    @property
    def _keys(self) -> tuple[str, ...]:
        return (*self.fallbacks, self.secret)

    def sign(self, kind: str, payload: int | list[Any] | tuple[Any, ...]) -> str:
        if isinstance(payload, list | tuple):
            # A click: [delivery, url] or [delivery, url, the link's position].
            delivery_id, url, *position = payload
            value = f"{int(delivery_id)}.{_b64(str(url))}"
            if position and position[0] is not None:
                value += f".{int(position[0])}"
        else:
            value = str(int(payload))
        # What `_signer(self._keys, kind).sign(value)` returns, written out: VALUE, ".", then
        # HMAC-SHA1 of VALUE under the signer's derived key in base64url without padding.
        # Every message carries several signatures, and itsdangerous's eight Python calls a
        # signature were a tenth of composing one (tests/test_composition.py compares them).
        mac = hmac.digest(_signing_key(self._keys, kind), value.encode("ascii"), "sha1")
        return f"{value}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode('ascii')}"

    def verify(self, kind: str, token: str) -> Any:
        if len(token) > 4096:
            raise InvalidToken("token too long")
        try:
            value = _signer(self._keys, kind).unsign(token).decode("ascii")
            head, _, rest = value.partition(".")
            delivery_id = int(head)
            if not rest:
                return delivery_id
            url, _, position = rest.partition(".")  # base64url has no "."
            clicked: list[Any] = [delivery_id, _unb64(url)]
            return [*clicked, int(position)] if position else clicked
        except (BadSignature, ValueError, UnicodeError) as exc:
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

    def variables(self, delivery_id: int, names: Collection[str] = NAMES) -> dict[str, Any]:
        """Everything per-recipient that a compiled message may ask for besides `contact`;
        of the links, those in `names` (each costs a signature) and the unsubscribe link,
        which every message's List-Unsubscribe header carries."""
        sign = self.tokens.sign
        found: dict[str, Any] = {
            "unsubscribe_url": f"{self.base_url}/u/{sign('unsubscribe', delivery_id)}"
        }
        if "preferences_url" in names:
            found["preferences_url"] = f"{self.base_url}/p/{sign('preferences', delivery_id)}"
        if "view_online_url" in names:
            found["view_online_url"] = f"{self.base_url}/v/{sign('view', delivery_id)}"
        if "open_url" in names:
            found["open_url"] = self.open_pixel(delivery_id)
        if "click" in names:
            found["click"] = lambda url, position=None: self.click(delivery_id, url, position)
        return found

    def click(self, delivery_id: int, url: str, position: int | None = None) -> str:
        return f"{self.base_url}/c/{self.tokens.sign('click', [delivery_id, url, position])}"

    def open_pixel(self, delivery_id: int) -> str:
        return f"{self.base_url}/o/{self.tokens.sign('open', delivery_id)}.gif"


def tokens_for(settings: Settings, purpose: str) -> Tokens:
    """The installation's tokens; stops with one line when its key is missing or unfit."""
    return Tokens(settings.require_secret_key(purpose), settings.secret_key_fallbacks)


def links_for(settings: Settings, purpose: str) -> Links:
    return Links(settings.base_url, tokens_for(settings, purpose))
