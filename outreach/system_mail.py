"""System messages — a subscription's confirmation, the consent notices, the result notices —
sent by the worker like any campaign: each kind is a campaign of its own (`_confirmation`,
…) whose deliveries have no contact but a `SystemRecipient` row with the address and the
message's own values (the confirmation link, the date of a consent).

Their words are in the message catalogs (`mail_templates/*.mjml`), compiled once per
language into the campaign's variants, and again whenever the templates, the catalogs or
the settings they print change. The web process only queues; it never waits on SMTP.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from email.utils import parseaddr
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from outreach import __version__
from outreach.errors import UserError
from outreach.i18n import CATALOGS, N_, languages, translations
from outreach.lifecycle import replace_variants, transition
from outreach.models import Campaign, Delivery, SystemRecipient, utcnow
from outreach.render import CompiledVariant, DeferRecipientValues, Deferred, html_to_text
from outreach.typography import keep_words

log = logging.getLogger("outreach.system_mail")
TEMPLATES = Path(__file__).parent / "mail_templates"


@dataclass(frozen=True)
class Kind:
    campaign: str  # not a valid campaign file name, so it never clashes with one
    template: str
    subject: str  # a catalog message; %(sender)s is the sender's name
    # May go to an address its owner unsubscribed: a confirmation they asked for, the
    # result of their own withdrawal. Never to a bounced, complained or forgotten one.
    to_unsubscribed: bool = False


KINDS: dict[str, Kind] = {
    "confirmation": Kind(
        "_confirmation",
        "confirmation.mjml",
        N_("Please confirm your subscription to %(sender)s"),
        to_unsubscribed=True,
    ),
    "consent-notice": Kind(
        "_consent-notice",
        "consent_notice.mjml",
        N_("Your consent to receive email from %(sender)s"),
    ),
    "result-consent": Kind(
        "_result-consent",
        "result_consent.mjml",
        N_("Your subscription to %(sender)s is confirmed"),
    ),
    "result-withdrawal": Kind(
        "_result-withdrawal",
        "result_withdrawal.mjml",
        N_("Your unsubscription from %(sender)s is processed"),
        to_unsubscribed=True,
    ),
    # A topic left (campaigns/topics.yaml): the person still receives the others.
    "result-topic": Kind(
        "_result-topic",
        "result_topic.mjml",
        N_("Your choice of email from %(sender)s is processed"),
        to_unsubscribed=True,
    ),
}
_BY_CAMPAIGN = {kind.campaign: kind for kind in KINDS.values()}


def is_system(campaign_name: str) -> bool:
    return campaign_name in _BY_CAMPAIGN


@dataclass(frozen=True)
class Sender:
    """Who system messages are from, and what they print about the sender."""

    from_: str
    reply_to: str | None
    postal_address: str
    contact: str
    consent_text: dict[str, str]
    # subscribe.yaml's from: per language ({ko: "시티넷 사무국 <…>", en: …}); else from_.
    from_by_language: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.name_for(None)

    def from_for(self, language: str | None) -> str:
        return self.from_by_language.get(language or "") or self.from_

    def name_for(self, language: str | None) -> str:
        """The sender's name as readers of `language` read it."""
        name, address = parseaddr(self.from_for(language))
        return name or address

    def consent_text_for(self, language: str) -> str:
        return self.consent_text.get(language) or self.consent_text.get("en") or ""


def _environment(language: str, deferred: Deferred) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        extensions=[DeferRecipientValues, "jinja2.ext.i18n"],
    )
    env.deferred = deferred  # type: ignore[attr-defined]
    env.install_gettext_translations(translations(language), newstyle=True)  # type: ignore[attr-defined]
    return env


def compile_kind(kind: Kind, sender: Sender) -> tuple[dict[str, CompiledVariant], Deferred]:
    """Every catalog language of one kind of message: stage 1 of `render`, with the catalog
    of each language; per-recipient values (`contact.…`) stay markers for the worker."""
    from mjml import mjml2html

    deferred = Deferred()
    variants = {}
    for language in languages():
        env = _environment(language, deferred)
        source = env.get_template(kind.template).render(
            lang=language,
            sender=sender.name_for(language),
            postal_address=sender.postal_address,
            sender_contact=sender.contact,
            consent_text=sender.consent_text_for(language),
        )
        html = keep_words(str(mjml2html(source)))
        name = sender.name_for(language)
        subject = translations(language).gettext(kind.subject) % {"sender": name}
        variants[language] = CompiledVariant(language, subject, html, html_to_text(html))
    return variants, deferred


@lru_cache(maxsize=1)
def _sources() -> bytes:
    """The templates and catalogs as shipped: read once per process."""
    digest = hashlib.sha256(__version__.encode())
    for path in sorted(TEMPLATES.glob("*.mjml")) + sorted(CATALOGS.glob("*/LC_MESSAGES/*.po")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.digest()


# Raised when what `ensure` stores in a campaign's definition changes, so stored system
# campaigns are compiled again (2: `mails_unsubscribed`).
DEFINITION_FORMAT = 2


def _fingerprint(kind: Kind, sender: Sender) -> str:
    return _fingerprint_of(repr((DEFINITION_FORMAT, kind, sender)))


@lru_cache(maxsize=64)
def _fingerprint_of(settings: str) -> str:
    return hashlib.sha256(_sources() + settings.encode()).hexdigest()[:32]


def ensure(session: Session, kind: Kind, sender: Sender) -> int:
    """The campaign of a kind, compiled for the current templates, catalogs and sender."""
    fingerprint = _fingerprint(kind, sender)
    current = session.execute(
        select(Campaign.id, Campaign.definition).where(Campaign.name == kind.campaign)
    ).first()
    if current is not None and (current.definition or {}).get("fingerprint") == fingerprint:
        return int(current.id)  # the usual case: no lock, so requests never queue on it
    campaign = session.scalar(
        select(Campaign).where(Campaign.name == kind.campaign).with_for_update()
    )
    if campaign is not None and campaign.definition.get("fingerprint") == fingerprint:
        return campaign.id
    if campaign is None:
        try:
            with session.begin_nested():
                campaign = Campaign(name=kind.campaign, state="draft")
                session.add(campaign)
        except IntegrityError:  # another process created it meanwhile: use theirs
            campaign = session.scalar(
                select(Campaign).where(Campaign.name == kind.campaign).with_for_update()
            )
            assert campaign is not None
            if campaign.definition.get("fingerprint") == fingerprint:
                return campaign.id
    variants, deferred = compile_kind(kind, sender)
    campaign.definition = {
        "from": sender.from_,
        "from_by_language": {language: sender.from_for(language) for language in variants}
        if sender.from_by_language
        else {},
        "reply_to": sender.reply_to,
        "default_language": "en" if "en" in variants else sorted(variants)[0],
        "nonce": deferred.nonce,
        "tracking": {"opens": False, "clicks": False},
        "advertising": False,
        "template": kind.template,
        "audience": None,
        "system": True,
        # The withdrawal notice goes to the address that has just unsubscribed.
        "mails_unsubscribed": kind.to_unsubscribed,
        "fingerprint": fingerprint,
    }
    campaign.expressions = list(deferred.sources)
    campaign.updated_at = utcnow()
    session.flush()
    replace_variants(session, campaign.id, variants)
    session.flush()
    return campaign.id


def queue(
    session: Session,
    kind_name: str,
    sender: Sender,
    *,
    email: str,
    name: str | None,
    language: str | None,
    contact_id: int | None = None,
    variables: dict[str, Any] | None = None,
) -> tuple[int, int]:
    """One message of a kind to one address, queued in the caller's transaction; returns
    (campaign id, delivery id). Nudge the worker after the commit (`Nudger`)."""
    kind = KINDS[kind_name]
    campaign_id = ensure(session, kind, sender)
    now = utcnow()
    delivery = Delivery(
        campaign_id=campaign_id,
        contact_id=None,
        state="queued",
        attempts=0,
        next_attempt_at=now,
        created_at=now,
        updated_at=now,
    )
    session.add(delivery)
    session.flush()
    session.add(
        SystemRecipient(
            delivery_id=delivery.id,
            email=email,
            name=name,
            language=language,
            contact_id=contact_id,
            variables=variables or {},
        )
    )
    reopen(session, campaign_id)
    return campaign_id, delivery.id


def reopen(session: Session, campaign_id: int) -> None:
    """A standing campaign that finished sends again when it gets a new delivery."""
    transition(session, campaign_id, "sending", only_from=("draft", "done"))


def require_from(from_: str | None, where: str) -> str:
    if not from_:
        raise UserError(f"no From for system messages: set from: in {where} or OUTREACH_FROM")
    return from_
