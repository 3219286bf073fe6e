"""The subscribe form and double opt-in.

    GET /subscribe  -> a form with a signed form token (no cookies)
    POST /subscribe -> token, per-client limit, honeypot, checks; then the hourly ceiling and
                       the shares of it one network or one domain may take ("try again later"
                       past them, whatever the address); then, unless the mailbox is
                       suppressed for good, said no in a confirmation, or was sent 3
                       confirmations today, a request row and a confirmation message queued
                       for the worker; the same page in any case, after the same time
    GET /confirm/T  -> a page with one button and what would be saved (mail scanners follow
                       links: nothing changes)
    POST /confirm/T -> the contact, its consent, its tags; the welcome message; a result
                       notice when the installation advertises (Network Act Art. 50(7))

What a subscription adds and the consent text shown are set in `campaigns/subscribe.yaml`;
without that file there is no form.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from email_validator import EmailNotValidError, validate_email
from itsdangerous import BadSignature, SignatureExpired, TimestampSigner
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import Table, case, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from outreach import consent, system_mail
from outreach.advertising import sender_contact
from outreach.config import Settings
from outreach.errors import FileError, FileErrors, UserError
from outreach.events import record_event
from outreach.fields import mailable_email, normalise_language, normalise_tag, sender_address
from outreach.i18n import supported, translator
from outreach.mailboxes import domain_of, mailbox, same_mailbox
from outreach.models import (
    Campaign,
    Contact,
    ContactTag,
    RateLimit,
    Subscription,
    Suppression,
    SystemRecipient,
    utcnow,
)
from outreach.system_mail import KINDS, Sender
from outreach.topics import FILE_NAME as TOPICS_FILE
from outreach.topics import load_topics
from outreach.yamlfile import YamlDoc, load_yaml, validation_errors

log = logging.getLogger("outreach.subscriptions")
CONFIG_PATH = Path("campaigns/subscribe.yaml")
CONFIRM_DAYS = 7
PER_ADDRESS_PER_DAY = 3
CEILING_KEY = "subscribe:confirmations"  # client keys are hex digests: no clash
# The shares of the hourly ceiling one network (an IPv4 /24, an IPv6 /48) and one mailbox
# domain may take: one attacker, or one victim's provider, cannot use it all up and leave a
# real person with nothing. The housekeeping purges every "subscribe:" key.
NETWORK_SHARE = 5  # a fifth
DOMAIN_SHARE = 2  # a half
FORM_HOURS = 12
MAX_LENGTHS = {"email": 320, "name": 300, "organisation": 300}
# Suppressions a confirmation never goes to: only the person's own unsubscribe is theirs to undo.
FOR_GOOD = ("bounced", "complained", "forgotten", "manual")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


class ConsentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: str = Field(min_length=1, max_length=64)
    text: dict[str, str]

    @field_validator("version", mode="before")
    @classmethod
    def _version(cls, v: Any) -> str:
        return str(v)

    @field_validator("text")
    @classmethod
    def _text(cls, v: dict[str, str]) -> dict[str, str]:
        missing = [lang for lang in ("ko", "en") if not str(v.get(lang, "")).strip()]
        if missing:
            raise ValueError(f"give the consent text in {' and '.join(missing)}")
        return {str(k): str(t).strip() for k, t in v.items()}


class LimitsSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    per_client_per_hour: int = Field(default=20, ge=1, le=1_000_000)
    # Across all clients: many addresses each under their own limit must not make us mail
    # strangers without end. Past it the form answers as always and queues nothing.
    confirmations_per_hour: int = Field(default=100, ge=1, le=1_000_000)


class SubscribeSpec(BaseModel):
    """The schema of `campaigns/subscribe.yaml`."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    # One From, or one per language: {ko: "시티넷 사무국 <…>", en: "CityNet Secretariat <…>"}.
    from_: str | dict[str, str] | None = Field(default=None, alias="from")
    reply_to: str | None = None
    tags: list[str] = []
    consent: ConsentSpec
    # The installation sends advertising: consents and withdrawals get a result notice by mail.
    advertising: bool = False
    limits: LimitsSpec = LimitsSpec()
    # Topics of topics.yaml the form offers as boxes nobody ticked for the person: those
    # ticked are joined on confirmation, the others offered left.
    topics: list[str] = []

    @field_validator("from_")
    @classmethod
    def _from(cls, v: str | dict[str, str] | None) -> str | dict[str, str] | None:
        if isinstance(v, dict):
            return {normalise_language(str(k)): sender_address(str(a)) for k, a in v.items()}
        return None if v is None else sender_address(v)

    @field_validator("reply_to")
    @classmethod
    def _sender(cls, v: str | None) -> str | None:
        return None if v is None else sender_address(v)

    @field_validator("tags")
    @classmethod
    def _tags(cls, v: list[str]) -> list[str]:
        tags = sorted({normalise_tag(str(t)) for t in v if str(t).strip()})
        for tag in tags:
            if len(tag) > 100:
                raise ValueError(f"tag {tag[:20]!r}… is longer than 100 characters")
        return tags


@dataclass(frozen=True)
class SubscribeConfig:
    spec: SubscribeSpec
    path: Path

    @property
    def version(self) -> str:
        return self.spec.consent.version

    def consent_text(self, language: str) -> str:
        text = self.spec.consent.text
        return text.get(language) or text.get(language.split("-")[0]) or text["en"]


def load_config(settings: Settings, path: Path = CONFIG_PATH) -> SubscribeConfig | None:
    """The subscribe settings, or None when the file does not exist (no form then)."""
    if not path.is_file():
        return None
    doc = load_yaml(path)
    if not isinstance(doc.data, dict):
        raise FileError(path, "expected keys such as consent:, tags:, from:", 1)
    try:
        spec = SubscribeSpec.model_validate(doc.data)
    except ValidationError as exc:
        allowed: dict[Any, list[str]] = {
            (): sorted(f.alias or n for n, f in SubscribeSpec.model_fields.items()),
            ("consent",): ["text", "version"],
            ("limits",): ["confirmations_per_hour", "per_client_per_hour"],
        }
        raise validation_errors(doc, exc, allowed) from None
    config = SubscribeConfig(spec, path)
    system_sender(settings, config)  # a From is needed to send confirmations
    _check_topics(doc, spec.topics)
    return config


def _check_topics(doc: YamlDoc, names: list[str]) -> None:
    if not names:
        return
    topics = load_topics(doc.path.parent / TOPICS_FILE)
    errors = [
        FileError(doc.path, f"topics: {topics.unknown(name)}", doc.lines.line_for(("topics", i)))
        for i, name in enumerate(names)
        if name not in topics
    ]
    if errors:
        raise FileErrors(errors)


class WatchedConfig:
    """campaigns/subscribe.yaml as a long-running `outreach serve` reads it: loaded again
    when the file appears, changes or goes (its mtime, looked at no more than every
    CHECK_SECONDS), so a form set up while the server runs works without a restart. An edit
    that does not load keeps the last good settings, and says why in the log."""

    CHECK_SECONDS = 2.0

    def __init__(self, settings: Settings, path: Path = CONFIG_PATH) -> None:
        self.settings, self.path = settings, path
        self._lock = threading.Lock()
        self._stamp = self._mtime()
        self._config = load_config(settings, path)  # at start a broken file stops serve
        self._checked = time.monotonic()

    def _mtime(self) -> float | None:
        try:
            return self.path.stat().st_mtime
        except OSError:
            return None

    def current(self) -> SubscribeConfig | None:
        now = time.monotonic()
        if now - self._checked < self.CHECK_SECONDS:
            return self._config
        with self._lock:
            self._checked = now
            stamp = self._mtime()
            if stamp != self._stamp:
                self._stamp = stamp
                try:
                    self._config = load_config(self.settings, self.path)
                    log.info("subscribe: %s read again", self.path)
                except UserError as exc:
                    log.warning("subscribe: %s changed but is kept as it was: %s", self.path, exc)
        return self._config


def system_sender(settings: Settings, config: SubscribeConfig | None) -> Sender:
    """Who confirmations and notices come from: subscribe.yaml's from:, else OUTREACH_FROM."""
    spec = config.spec if config else None
    given = spec.from_ if spec else None
    by_language = given if isinstance(given, dict) else {}
    default = by_language.get("en") or next(iter(by_language.values()), None)
    from_ = system_mail.require_from(
        (given if isinstance(given, str) else default) or settings.from_,
        str(config.path if config else CONFIG_PATH),
    )
    reply_to = spec.reply_to if spec else None
    return Sender(
        from_=from_,
        reply_to=reply_to,
        postal_address=settings.postal_address or "",
        contact=sender_contact(settings.sender_contact, reply_to, from_),
        consent_text=dict(spec.consent.text) if spec else {},
        from_by_language=dict(by_language),
    )


def _signer(settings: Settings, salt: str) -> TimestampSigner:
    secret = settings.require_secret_key("the subscribe form")
    return TimestampSigner([*settings.secret_key_fallbacks, secret], salt=salt)


def client_network(address: str | None) -> str:
    """The client a limit counts: an IPv4 address, or the /64 of an IPv6 one (a subscriber
    line gets a whole /64, so its addresses are one client)."""
    try:
        ip = ipaddress.ip_address((address or "").strip())
    except ValueError:
        return address or "-"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def wider_network(address: str | None) -> str:
    """The network a client is part of, for the ceiling's shares: the /24 of an IPv4
    address, the /48 of an IPv6 one (what one site or one provider's customer holds)."""
    client = client_network(address)
    try:
        network = ipaddress.ip_network(client, strict=False)
    except ValueError:
        return client
    prefix = 24 if network.version == 4 else 48
    return str(network.supernet(new_prefix=prefix))


def _hashed(settings: Settings, value: str) -> str:
    secret = settings.require_secret_key("the subscribe form")
    return hashlib.sha256(f"{secret}|{value}".encode()).hexdigest()[:24]


def client_key(settings: Settings, address: str | None) -> str:
    """A client's address as we keep it: hashed with the key, never stored as it is."""
    return _hashed(settings, client_network(address))


@dataclass(frozen=True)
class FormTokens:
    """The form's CSRF token: the client's hashed address, signed with a time. A page that
    is not ours cannot read one, and one fetched elsewhere does not fit another client."""

    signer: TimestampSigner

    @classmethod
    def of(cls, settings: Settings) -> FormTokens:
        return cls(_signer(settings, "outreach.subscribe-form"))

    def issue(self, client: str) -> str:
        return self.signer.sign(client).decode("ascii")

    def valid(self, token: str, client: str) -> bool:
        if not token or len(token) > 200:
            return False
        try:
            value = self.signer.unsign(token, max_age=FORM_HOURS * 3600)
        except (BadSignature, UnicodeError):
            return False
        return value.decode("ascii", "replace") == client


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def reference(subscription: Subscription) -> str:
    """What a confirmation link names: the request's number and the microsecond it was
    made. SQLite gives a deleted row's number to the next row (after `contacts forget`, or
    the worker's purge), so the number alone could confirm someone else's later request."""
    made = (subscription.created_at - _EPOCH) // timedelta(microseconds=1)
    return f"{subscription.id}.{made}"


class ConfirmTokens:
    """The mailed link: a request's reference, signed with a time; it expires after 7 days."""

    def __init__(self, settings: Settings) -> None:
        self.signer = _signer(settings, "outreach.confirm")

    def sign(self, subscription: Subscription) -> str:
        return self.signer.sign(reference(subscription)).decode("ascii")

    def verify(self, token: str) -> str | None:
        """The request's reference; None when forged, altered or expired."""
        if len(token) > 200:
            return None
        try:
            value = self.signer.unsign(token, max_age=CONFIRM_DAYS * 86400).decode("ascii")
        except (SignatureExpired, BadSignature, UnicodeError):
            return None
        return value if _REFERENCE.fullmatch(value) else None


_REFERENCE = re.compile(r"[1-9][0-9]{0,18}\.[0-9]{1,20}")


@dataclass
class SubscribeForm:
    email: str
    name: str | None
    organisation: str | None
    language: str
    topics: list[str] | None = None  # ticked, when the form offers topics


@dataclass
class FormResult:
    form: SubscribeForm | None = None
    errors: dict[str, str] = field(default_factory=dict)
    values: dict[str, str] = field(default_factory=dict)
    topics: list[str] = field(default_factory=list)


def read_form(
    data: Mapping[str, str],
    page_language: str,
    offered: list[str] | None = None,
    ticked: list[str] | None = None,
) -> FormResult:
    """The form's fields checked; errors (in the page's language) by field. `ticked`: the
    topics ticked among those `offered`."""
    _ = translator(page_language)
    result = FormResult()
    values = {key: str(data.get(key, "")) for key in ("email", "name", "organisation", "language")}
    result.values = {k: v[:400] for k, v in values.items()}
    for key, limit in MAX_LENGTHS.items():
        if len(values[key]) > limit:
            result.errors[key] = _("This is too long: at most %(limit)s characters.") % {
                "limit": limit
            }
        elif _CONTROL.search(values[key]):
            result.errors[key] = _("This contains characters that cannot be used here.")
    email = values["email"].strip()
    if "email" not in result.errors:
        if not email:
            result.errors["email"] = _("Enter your email address.")
        else:
            try:
                validate_email(email, check_deliverability=False)
                email = mailable_email(email)
            except (EmailNotValidError, ValueError):
                result.errors["email"] = _("This is not a valid email address.")
    language = supported(values["language"].strip())
    if language is None:
        result.errors["language"] = _("Choose the language of our email.")
    if data.get("consent") != "yes":
        result.errors["consent"] = _("Tick the box to agree to receive our email.")
    if offered:
        result.topics = list(dict.fromkeys(ticked or ()))
        if not set(result.topics) <= set(offered):
            result.errors["topics"] = _("Choose among the kinds of email shown.")
        elif not result.topics:
            result.errors["topics"] = _("Tick at least one kind of email to receive.")
    if not result.errors:
        assert language is not None
        result.form = SubscribeForm(
            email=email,
            name=values["name"].strip() or None,
            organisation=values["organisation"].strip() or None,
            language=language,
            topics=result.topics if offered else None,
        )
    return result


def allow_client(session: Session, client: str, per_hour: int, now: float | None = None) -> bool:
    """A per-client limit: see `_allow`."""
    return _allow(session, f"subscribe:{client}", per_hour, now)


def _allow(session: Session, key: str, per_hour: int, now: float | None = None) -> bool:
    """GCRA in the shared rate-limit table: bursts of up to `per_hour`, refilled evenly over
    the hour. One atomic UPDATE, so it holds across gunicorn workers."""
    import time

    now = time.time() if now is None else now
    interval = 3600.0 / per_hour
    table = cast(Table, RateLimit.__table__)
    dialect = session.get_bind().dialect.name
    insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)
    session.execute(insert.values(key=key, tat=0.0).on_conflict_do_nothing())
    start = case((table.c.tat > now, table.c.tat), else_=now)
    result = session.execute(
        update(table)
        .where(table.c.key == key, start - now <= 3600.0 - interval)
        .values(tat=start + interval)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def _lock_address(session: Session, email: str) -> None:
    """Serialises requests for one address (the daily count must hold under concurrency).
    SQLite writers are serial already."""
    if session.get_bind().dialect.name == "postgresql":
        key = int.from_bytes(hashlib.sha256(email.encode()).digest()[:8], "big", signed=True)
        session.execute(select(func.pg_advisory_xact_lock(key)))


class Busy(Exception):
    """The hourly ceiling, or the share of it a network or a domain may take, is used up:
    the visitor is asked to come back (whatever the address, so nothing about it shows)."""


def _within_shares(
    session: Session, config: SubscribeConfig, network: str, domain: str, now: datetime
) -> None:
    """Take one confirmation from the network's share, the domain's and the ceiling (keys
    hashed, as client keys are); raise Busy (logged, one line, no address) when one is used
    up."""
    ceiling = config.spec.limits.confirmations_per_hour
    checks = (
        (
            f"subscribe:network:{network}",
            max(1, ceiling // NETWORK_SHARE),
            "the share of one network (an IPv4 /24 or IPv6 /48)",
        ),
        (
            f"subscribe:domain:{domain}",
            max(1, ceiling // DOMAIN_SHARE),
            "the share of one mail domain",
        ),
    )
    for key, allowed, whose in checks:
        if not _allow(session, key, allowed, now.timestamp()):
            log.warning(
                "subscribe: %s of the confirmation ceiling (%d an hour) is used up: a request "
                "was asked to come back later (limits.confirmations_per_hour in %s)",
                whose,
                allowed,
                config.path,
            )
            raise Busy(whose)
    if not _allow(session, CEILING_KEY, ceiling, now.timestamp()):
        log.warning(
            "subscribe: the ceiling of %d confirmations per hour is reached: a request was "
            "asked to come back later and nothing queued (limits.confirmations_per_hour in %s)",
            ceiling,
            config.path,
        )
        raise Busy("the ceiling")


CONFIRMATION = KINDS["confirmation"].campaign


def refused_for(session: Session, email: str) -> str | None:
    """Why the form mails no confirmation to this address's mailbox, if it must not: a
    suppression for good of any spelling of it, or a "no" its owner gave in a confirmation
    (the unsubscribe link of one). Their own unsubscribe from a campaign is theirs to undo."""
    for reason, campaign in session.execute(
        select(Suppression.reason, Campaign.name)
        .outerjoin(Campaign, Campaign.id == Suppression.campaign_id)
        .where(same_mailbox(Suppression.email, email))
    ):
        if reason in FOR_GOOD:
            return str(reason)
        if reason == "unsubscribed" and campaign == CONFIRMATION:
            return "declined"
    return None


def declined(session: Session, email: str, campaign: Campaign) -> None:
    """After an unsubscribe of a confirmation message: its suppression says so, even when
    the address was unsubscribed before (from a campaign, which alone would let the form
    send again), so that no stranger can have more confirmations sent to it."""
    if campaign.name != CONFIRMATION:
        return
    row = session.scalar(select(Suppression).where(Suppression.email == email))
    if row is not None and row.reason == "unsubscribed":
        row.campaign_id, row.detail = campaign.id, "said no to a subscription confirmation"


def request(
    session: Session,
    form: SubscribeForm,
    config: SubscribeConfig,
    settings: Settings,
    now: datetime | None = None,
    network: str = "-",
) -> int | None:
    """Queue a confirmation for a form that passed its checks, in the caller's transaction.
    Returns the campaign to nudge, or None when nothing was queued (a mailbox suppressed for
    good or that said no, or its third confirmation today) — which the answer never
    reveals. Raises Busy past the ceiling or a share of it (`network`: `wider_network`);
    that is checked first, so it reveals nothing of the address either."""
    now = now or utcnow()
    network_key, domain_key = _hashed(settings, network), _hashed(settings, domain_of(form.email))
    _within_shares(session, config, network_key, domain_key, now)
    _lock_address(session, mailbox(form.email))
    if refused_for(session, form.email) is not None:
        return None
    recent = session.scalar(
        select(func.count())
        .select_from(Subscription)
        .where(
            same_mailbox(Subscription.email, form.email),
            Subscription.created_at > now - timedelta(days=1),
        )
    )
    if (recent or 0) >= PER_ADDRESS_PER_DAY:
        return None
    subscription = Subscription(
        email=form.email,
        name=form.name,
        organisation=form.organisation,
        language=form.language,
        text_version=config.version,
        created_at=now,
        topics=form.topics,
    )
    session.add(subscription)
    session.flush()
    url = f"{settings.base_url}/confirm/{ConfirmTokens(settings).sign(subscription)}"
    campaign_id, _ = system_mail.queue(
        session,
        "confirmation",
        system_sender(settings, config),
        email=form.email,
        # The bare address: whoever typed it may not own it, and must not put words of
        # theirs into a stranger's inbox as the name the message is addressed to.
        name=None,
        language=form.language,
        variables={"confirm_url": url},
    )
    return campaign_id


def erase_requests(session: Session, email: str) -> None:
    """`contacts forget`: every request for the mailbox, whatever its spelling (a +tag
    request holds a name and organisation too), and the addresses of their confirmations."""
    session.execute(delete(Subscription).where(same_mailbox(Subscription.email, email)))
    session.execute(delete(SystemRecipient).where(same_mailbox(SystemRecipient.email, email)))


@dataclass
class Confirmation:
    """What a confirmation did: `confirmed` (now or earlier), `blocked` (the mailbox
    bounced, complained or was forgotten since) or `unsubscribed` (confirmed, then left: a
    link used again does not undo that); the campaigns to nudge."""

    status: str
    email: str
    language: str
    at: datetime
    nudge: list[int] = field(default_factory=list)


def pending(session: Session, ref: str) -> Subscription | None:
    """The request a link's reference names; None when it is gone or the row under its
    number is another request."""
    number = int(ref.partition(".")[0])
    found = session.get(Subscription, number)
    return found if found is not None and reference(found) == ref else None


def standing(session: Session, found: Subscription) -> str:
    """Where a request stands: `pending`, `confirmed`, `unsubscribed` (confirmed, then
    left) or `blocked` (its mailbox bounced, complained or was forgotten)."""
    reason = refused_for(session, found.email)
    if reason is not None and reason != "declined":
        return "blocked"
    if found.confirmed_at is None:
        return "pending"
    if session.scalar(select(Suppression.id).where(Suppression.email == found.email)):
        return "unsubscribed"
    return "confirmed"


def confirm(
    session: Session,
    ref: str,
    config: SubscribeConfig,
    settings: Settings,
    now: datetime | None = None,
) -> Confirmation | None:
    """Make the request a subscriber, in the caller's transaction; None if it is gone."""
    now = now or utcnow()
    found = pending(session, ref)
    if found is None:
        return None
    _lock_address(session, mailbox(found.email))
    session.refresh(found)
    status = standing(session, found)
    if status != "pending":
        at = found.confirmed_at if status == "confirmed" and found.confirmed_at else now
        return Confirmation(status, found.email, found.language, at)
    # Only the owner's own unsubscribe (or their "no" to a confirmation) is left: the
    # button pressed in their own mailbox undoes it.
    suppression = session.scalar(select(Suppression).where(Suppression.email == found.email))
    contact = session.scalar(select(Contact).where(Contact.email == found.email))
    if contact is None:
        contact = Contact(email=found.email, attributes={})
        session.add(contact)
    contact.name = contact.name or found.name
    contact.organisation = contact.organisation or found.organisation
    contact.language = found.language
    session.flush()
    consent.record(session, contact, "opt-in", source="form", at=now, version=found.text_version)
    _choose_topics(session, contact.id, config.spec.topics, found, now)
    have = set(session.scalars(select(ContactTag.tag).where(ContactTag.contact_id == contact.id)))
    for tag in config.spec.tags:
        if tag not in have:
            session.add(ContactTag(contact_id=contact.id, tag=tag))
    if suppression is not None:
        session.delete(suppression)
        record_event(session, "resubscribe", contact_id=contact.id, data={"method": "form"})
    found.confirmed_at, found.contact_id = now, contact.id
    session.flush()
    done = Confirmation("confirmed", found.email, found.language, now)
    from outreach.welcome import queue_welcome

    welcome = queue_welcome(session, contact.id)
    if welcome is not None:
        done.nudge.append(welcome)
    if config.spec.advertising:
        campaign_id, _ = system_mail.queue(
            session,
            "result-consent",
            system_sender(settings, config),
            email=contact.email,
            name=contact.name,
            language=contact.language,
            contact_id=contact.id,
            variables={"result_date": now.date().isoformat()},
        )
        done.nudge.append(campaign_id)
    return done


def _choose_topics(
    session: Session,
    contact_id: int,
    offered: list[str],
    found: Subscription,
    now: datetime,
) -> None:
    """The topics ticked on the form are received, the others it offered left."""
    if found.topics is None:
        return
    for topic in offered:
        if topic in found.topics:
            consent.join_topic(
                session,
                contact_id,
                topic,
                source="form",
                version=found.text_version,
                at=now,
                chosen=True,
            )
        else:
            consent.leave_topic(
                session,
                contact_id,
                topic,
                source="form: not chosen",
                version=found.text_version,
                at=now,
            )
