"""Configuration from `OUTREACH_*` variables and an optional `outreach.toml`.

The environment wins over the file. Everything is validated once, up front, so a typo
surfaces as one line naming the variable instead of a traceback deep inside a send.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import timedelta, timezone, tzinfo
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from outreach.errors import ConfigError

PREFIX = "OUTREACH_"
# Variables the test-suite and CI use; they configure tests, not the application.
IGNORED_PREFIXES = ("OUTREACH_TEST_",)


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    tls: str  # "starttls", "ssl" or "none"
    username: str | None
    password: str | None
    timeout: float


@dataclass(frozen=True)
class Rate:
    """Messages per second; 0 means no ceiling."""

    per_second: float

    @property
    def unlimited(self) -> bool:
        return self.per_second <= 0

    def __str__(self) -> str:
        return "unlimited" if self.unlimited else f"{self.per_second:g}/s"


_RATE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/\s*(s|sec|second|m|min|minute|h|hour))?\s*$")
_UNIT_SECONDS = {
    "s": 1,
    "sec": 1,
    "second": 1,
    "m": 60,
    "min": 60,
    "minute": 60,
    "h": 3600,
    "hour": 3600,
}


def parse_rate(text: str) -> Rate:
    """`14/s`, `3000/h`, `600/m` or `0` (no ceiling)."""
    match = _RATE_RE.match(str(text))
    if not match:
        raise ValueError(f"{text!r} is not a rate; write e.g. 14/s, 600/m, 3000/h or 0")
    number, unit = float(match.group(1)), match.group(2)
    if unit is None and number != 0:
        raise ValueError(f"{text!r} needs a unit; write e.g. {text}/s or {text}/h")
    return Rate(number / _UNIT_SECONDS[unit or "s"])


_PASSWORD = re.compile(r"(://[^/@\s]*?:)[^/@\s]*@")


def mask_password(url: str) -> str:
    """A URL fit to print: its password, if any, replaced by ***. Works on URLs too broken
    to parse, which are exactly the ones an error message quotes."""
    return _PASSWORD.sub(r"\1***@", url)


def _database_url(value: str) -> str:
    shown = mask_password(value)
    try:
        url = make_url(value)
    except ArgumentError:
        raise ValueError(
            f"{shown!r} is not a database URL; write sqlite:///outreach.db or "
            "postgresql+psycopg://USER:PASSWORD@HOST/DB"
        ) from None
    backend = url.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise ValueError(f"{shown!r}: only sqlite:/// and postgresql+psycopg:// are supported")
    if backend == "postgresql" and url.drivername in ("postgresql", "postgres"):
        return url.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    if backend == "postgresql" and url.drivername != "postgresql+psycopg":
        raise ValueError(f"{shown!r}: use the psycopg driver (postgresql+psycopg://…)")
    return value


def _queue_url(value: str) -> str:
    shown = mask_password(value)
    scheme = urlsplit(value).scheme
    if scheme not in ("sqlite", "redis", "rediss", "memory"):
        raise ValueError(f"{shown!r}: use sqlite:///PATH or redis://HOST:PORT/DB")
    if scheme == "sqlite" and not value.startswith("sqlite:///"):
        raise ValueError(f"{shown!r}: write sqlite:///relative.db or sqlite:////absolute.db")
    return value


def parse_smtp_url(value: str) -> SmtpSettings:
    shown = mask_password(value)
    try:
        parts = urlsplit(value)
        port_number = parts.port
    except ValueError as exc:
        raise ValueError(f"{shown!r}: {exc}") from None
    if parts.scheme not in ("smtp", "smtps"):
        raise ValueError(f"{shown!r}: use smtp://host:587?tls=starttls or smtps://host:465")
    if not parts.hostname:
        raise ValueError(f"{shown!r} names no host")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    unknown = set(query) - {"tls", "timeout"}
    if unknown:
        raise ValueError(
            f"{shown!r}: unknown parameter {sorted(unknown)[0]!r} (known: tls, timeout)"
        )
    default_tls = "ssl" if parts.scheme == "smtps" else "starttls"
    tls = query.get("tls", default_tls)
    if tls not in ("starttls", "ssl", "none"):
        raise ValueError(f"{shown!r}: tls must be starttls, ssl or none, not {tls!r}")
    try:
        port = port_number or (465 if tls == "ssl" else 587)
        timeout = float(query.get("timeout", "30"))
    except ValueError as exc:
        raise ValueError(f"{shown!r}: {exc}") from None
    from urllib.parse import unquote

    return SmtpSettings(
        host=parts.hostname,
        port=port,
        tls=tls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        timeout=timeout,
    )


def _smtp_url(value: str) -> str:
    parse_smtp_url(value)
    return value


def _base_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{value!r} is not an http(s) URL, e.g. https://mail.citynet-ap.org")
    return value.rstrip("/")


def _address(value: str) -> str:
    from outreach.fields import sender_address

    return sender_address(value)


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a whole number") from None
    if number < 1:
        raise ValueError(f"{value!r} must be at least 1")
    return number


def _positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a number") from None
    if number <= 0:
        raise ValueError(f"{value!r} must be greater than 0")
    return number


def _domain(value: str) -> str:
    if not re.fullmatch(
        r"(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}", value.lower()
    ):
        raise ValueError(f"{value!r} is not a domain name such as citynet-ap.org")
    return value.lower()


def _existing_file(value: str) -> str:
    if not Path(value).is_file():
        raise ValueError(f"{value!r}: no such file")
    return value


def _selector(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", value):
        raise ValueError(f"{value!r} is not a DKIM selector (letters, digits, . _ -)")
    return value


def _text(value: str) -> str:
    return value


def _boolean(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{value!r} is not true or false")


def _count(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a whole number") from None
    if number < 0:
        raise ValueError(f"{value!r} must be 0 or more")
    return number


def _key_list(value: str) -> tuple[str, ...]:
    return tuple(k.strip() for k in value.split(",") if k.strip())


def _path(value: str) -> Path:
    return Path(value)


def _timezone(value: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"{value!r} is not a time zone; write an IANA name such as Asia/Seoul or "
            "Australia/Sydney"
        ) from None
    return value


DEFAULT_TIMEZONE = "Asia/Seoul"
# Korea has kept +09:00 without daylight saving since 1988: the default zone stands even
# on a system without a time zone database.
_SEOUL = timezone(timedelta(hours=9), "KST")


@dataclass(frozen=True)
class Settings:
    database_url: str = "sqlite:///outreach.db"
    queue_url: str = "sqlite:///outreach-queue.db"
    smtp_url: str | None = None
    outbox: Path = Path("outbox")
    base_url: str = "http://127.0.0.1:8000"
    secret_key: str | None = None
    secret_key_fallbacks: tuple[str, ...] = ()
    from_: str | None = field(default=None, metadata={"key": "from"})
    rate: Rate = Rate(50.0)
    postal_address: str | None = None
    # How recipients of advertising reach the sender (Network Act Art. 50(4)): an address or
    # a phone number; unset, the campaign's Reply-To or From.
    sender_contact: str | None = None
    # Whether the worker's sweep queues the two-yearly consent notices (Art. 50(8)) daily.
    consent_notices: bool = False
    # Reverse proxies in front of `outreach serve` whose X-Forwarded-For is trusted: the
    # subscribe form's per-client limit must see the visitor, not the proxy.
    proxies: int = 0
    retry_delay: float = 60.0
    max_attempts: int = 8
    bounce_domain: str | None = None
    dkim_key_file: str | None = None
    dkim_selector: str | None = None
    # Tunables behind the contract, documented in README's configuration section.
    lease_seconds: float = 120.0
    batch_size: int = 100
    soft_bounce_limit: int = 3
    pause_after_failures: int = 10
    # Times shown to people (reports, status) and, for contacts whose own zone is unknown,
    # local-time sending.
    timezone: str = DEFAULT_TIMEZONE

    @property
    def zone(self) -> tzinfo:
        """OUTREACH_TIMEZONE as a tzinfo."""
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            return ZoneInfo(self.timezone)
        except ZoneInfoNotFoundError:
            if self.timezone == DEFAULT_TIMEZONE:
                return _SEOUL
            raise

    @property
    def smtp(self) -> SmtpSettings | None:
        return parse_smtp_url(self.smtp_url) if self.smtp_url else None

    def require_secret_key(self, purpose: str) -> str:
        """The key that signs every token, checked: stops with one line when it is missing,
        too short, guessable, or one that has been published (see `secretkey`)."""
        from outreach.secretkey import check_fallback, check_key, check_strength

        if not self.secret_key:
            raise ConfigError(
                f"OUTREACH_SECRET_KEY is not set; {purpose} needs it to sign and check links. "
                "Run `outreach init` in this folder to generate one into outreach.toml, or set "
                "it (the same for every process of this installation)"
            )
        check_key(self.secret_key, "OUTREACH_SECRET_KEY")
        check_strength(self.secret_key, "OUTREACH_SECRET_KEY")
        for old in self.secret_key_fallbacks:
            check_fallback(old, "OUTREACH_SECRET_KEY_FALLBACKS")
        return self.secret_key

    @classmethod
    def load(cls, env: Mapping[str, str] | None = None, cwd: Path | None = None) -> Settings:
        env = os.environ if env is None else env
        cwd = Path.cwd() if cwd is None else cwd
        raw: dict[str, tuple[str, str]] = {}  # key -> (value, where it came from)
        toml_path = cwd / "outreach.toml"
        if toml_path.is_file():
            try:
                data = tomllib.loads(toml_path.read_text(encoding="utf-8"))
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                raise ConfigError(f"{toml_path}: not valid TOML: {exc}") from None
            for key, value in data.items():
                if key not in _PARSERS:
                    known = ", ".join(sorted(_PARSERS))
                    raise ConfigError(f"{toml_path}: unknown key {key!r}; known keys: {known}")
                if isinstance(value, dict | list):
                    raise ConfigError(f"{toml_path}: {key} must be a single value")
                raw[key] = (str(value), f"{toml_path}: {key}")
        for name, value in env.items():
            if not name.startswith(PREFIX) or name.startswith(IGNORED_PREFIXES):
                continue
            key = name[len(PREFIX) :].lower()
            if key not in _PARSERS:
                raise ConfigError(
                    f"{name} is not a known setting; known: "
                    + ", ".join(PREFIX + k.upper() for k in sorted(_PARSERS))
                )
            raw[key] = (value, name)
        values: dict[str, Any] = {}
        for key, (value, where) in raw.items():
            if value == "" and key not in ("rate",):
                continue  # an empty variable means "unset"
            try:
                values[_ATTR[key]] = _PARSERS[key](value)
            except ValueError as exc:
                raise ConfigError(f"{where}: {exc}") from None
        # Relative paths are fixed to the working directory now, so that a long-lived
        # process (or a cached engine) never follows a later chdir to another database.
        for key in ("database_url", "queue_url"):
            url = values.get(key, getattr(cls, key))
            if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
                rest = url[len("sqlite:///") :]
                if rest and not rest.startswith(":memory:"):
                    values[key] = "sqlite:///" + str((cwd / rest).resolve())
        values["outbox"] = (cwd / values.get("outbox", cls.outbox)).resolve()
        settings = cls(**values)
        if bool(settings.dkim_key_file) != bool(settings.dkim_selector):
            raise ConfigError(
                "OUTREACH_DKIM_KEY_FILE and OUTREACH_DKIM_SELECTOR must be set together"
            )
        base = urlsplit(settings.base_url)
        if settings.smtp_url and base.scheme == "http" and base.hostname not in _LOCAL_HOSTS:
            # RFC 8058: mail providers only POST one-click unsubscribes to https addresses.
            raise ConfigError(
                f"OUTREACH_BASE_URL {settings.base_url} is plain http: mail that goes over SMTP "
                "needs an https:// address for its unsubscribe links (RFC 8058)"
            )
        return settings


_PARSERS: dict[str, Callable[[str], Any]] = {
    "database_url": _database_url,
    "queue_url": _queue_url,
    "smtp_url": _smtp_url,
    "outbox": _path,
    "base_url": _base_url,
    "secret_key": _text,
    "secret_key_fallbacks": _key_list,
    "from": _address,
    "rate": parse_rate,
    "postal_address": _text,
    "sender_contact": _text,
    "consent_notices": _boolean,
    "proxies": _count,
    "retry_delay": _positive_float,
    "max_attempts": _positive_int,
    "bounce_domain": _domain,
    "dkim_key_file": _existing_file,
    "dkim_selector": _selector,
    "lease_seconds": _positive_float,
    "batch_size": _positive_int,
    "soft_bounce_limit": _positive_int,
    "pause_after_failures": _positive_int,
    "timezone": _timezone,
}
_LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
_ATTR = {f.metadata.get("key", f.name): f.name for f in fields(Settings)}
assert set(_ATTR) == set(_PARSERS), "every setting needs a parser"
