"""Composing one message: a campaign's compiled variants + a recipient + their links.

    pick the language -> sign the recipient's links -> personalise (stage 2 of `render`)
    -> assemble the MIME message and its envelope (`messages`)

The worker, test sends, previews, the view-online page and validation all compose through
here, so what validation checks and what a preview shows is what a recipient gets.

A recipient whose own value would put anything but an http(s) or mailto: address into a
link gets no message: rendering raises `render.UnsafeLink` (re-exported here), whose
`message` says which link and value, for the delivery's record.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from outreach.config import Settings
from outreach.fields import primary_language
from outreach.i18n import chinese_script
from outreach.invitations import Invitation
from outreach.messages import DkimKey, Envelope, MessageBuilder, base64_body
from outreach.models import Campaign, CampaignVariant
from outreach.render import Attributes, CompiledVariant, Personaliser, Rendered, personalise
from outreach.render import UnsafeLink as UnsafeLink
from outreach.tokens import Links

# Stand-in contacts for test sends, previews and validation: one with every field, and one
# with nothing but an address, since what any recipient could get must be complete.
SAMPLE_CONTACT: dict[str, Any] = {
    "email": "sample@example.org",
    "name": "Sample Contact",
    "organisation": "Sample City",
    "organisation_type": "local_government",
    "city": "Sample City",
    "country": "KR",
    "membership": "full",
    "consent": "opt-in",
    "tags": [],
    "attributes": Attributes(),
}
MINIMAL_CONTACT: dict[str, Any] = {
    "email": "minimal@example.org",
    "name": None,
    "organisation": None,
    "organisation_type": None,
    "city": None,
    "country": None,
    "membership": None,
    "consent": None,
    "tags": [],
    "attributes": Attributes(),
}
# Links of a message that is not a delivery (test sends, previews) name delivery 0, which
# the web pages answer with "this is a test message".
NO_DELIVERY = 0


@dataclass
class Recipient:
    """Who one message is for. `variables` is what templates see as `contact`."""

    delivery_id: int
    email: str | None
    name: str | None
    variables: dict[str, Any]
    attempts: int = 0
    contact_id: int | None = None


def resolve_language(contact_language: str | None, available: set[str], default: str) -> str:
    """The language a contact is written to in: its own, its primary subtag, or the default."""
    if contact_language:
        if contact_language in available:
            return contact_language
        script = chinese_script(contact_language)
        if script == "zh-Hant":
            # A Traditional reader gets a zh-Hant variant, else the default: never zh-Hans.
            return script if script in available else default
        if script in available:
            return script
        primary = primary_language(contact_language)
        if primary in available:
            return primary
    return default


@dataclass
class Composed:
    language: str
    rendered: Rendered
    envelope: Envelope


@dataclass
class Composer:
    """Everything of one campaign that its recipients share, built once, used per message."""

    variants: dict[str, CompiledVariant]
    default_language: str
    personaliser: Personaliser
    links: Links
    builder: MessageBuilder | None = None
    # Sign a VERP bounce token into the envelope sender (when the builder has a domain).
    verp: bool = False
    # A From per language (`from: {ko: …, en: …}`): that language's builder, else `builder`.
    builders: dict[str, MessageBuilder] = field(default_factory=dict)
    # An event's calendar part per language, MIME-encoded once (`invitations`).
    calendars: dict[str, bytes] = field(default_factory=dict)

    def language_for(self, recipient: Recipient) -> str:
        return resolve_language(
            recipient.variables.get("language"), set(self.variants), self.default_language
        )

    def render(self, recipient: Recipient, language: str | None = None) -> Rendered:
        """The subject, HTML and text one recipient gets (no headers)."""
        return self._render(recipient, language or self.language_for(recipient))[0]

    def _render(self, recipient: Recipient, language: str) -> tuple[Rendered, dict[str, Any]]:
        variant = self.variants[language]
        # Only the links this language's message prints are signed.
        names = self.personaliser.plan(variant).names
        urls = self.links.variables(recipient.delivery_id, names)
        rendered = personalise(self.personaliser, variant, {"contact": recipient.variables, **urls})
        return rendered, urls

    def compose(
        self,
        recipient: Recipient,
        language: str | None = None,
        *,
        subject_prefix: str = "",
        bounce_token: str | None = None,
    ) -> Composed:
        """The whole message and its envelope."""
        assert self.builder is not None, "a Composer without a MessageBuilder only renders"
        assert recipient.email is not None, "an erased contact gets no message"
        language = language or self.language_for(recipient)
        rendered, urls = self._render(recipient, language)
        builder = self.builders.get(language, self.builder)
        if bounce_token is None and self.verp and builder.bounce_domain:
            bounce_token = self.links.tokens.sign("bounce", recipient.delivery_id)
        envelope = builder.build(
            to_name=recipient.name,
            to_address=recipient.email,
            subject=subject_prefix + rendered.subject,
            html=rendered.html,
            text=rendered.text,
            unsubscribe_url=urls["unsubscribe_url"],
            message_id=builder.new_message_id(recipient.delivery_id),
            bounce_token=bounce_token,
            calendar=self.calendars.get(language),
        )
        return Composed(language, rendered, envelope)


@dataclass
class Prepared:
    """A sent campaign as the worker and the web pages need it: read from the database once
    per campaign version, shared by every batch and thread of a process."""

    campaign_id: int
    name: str
    version: datetime
    rate: float | None
    composer: Composer
    settings: Settings = field(repr=False)
    # A system message that goes to a person's own unsubscribe (the notice that their
    # unsubscription is processed, a confirmation that lifts it).
    mails_unsubscribed: bool = False

    def blocked_by(self, reason: str) -> bool:
        """Whether an address suppressed for `reason` must not get this campaign's message."""
        return not (self.mails_unsubscribed and reason == "unsubscribed")


def calendar_parts(invitation: Invitation | None, languages: Iterable[str]) -> dict[str, bytes]:
    """`Composer.calendars`: the event's calendar part in each language, encoded once."""
    if invitation is None:
        return {}
    return {
        language: base64_body(invitation.ics(language).decode("utf-8")) for language in languages
    }


def _calendars(campaign: Campaign, variants: dict[str, CompiledVariant]) -> dict[str, bytes]:
    stored = campaign.definition.get("event")
    if not stored:
        return {}
    default = campaign.definition["default_language"]
    return calendar_parts(Invitation.from_json(campaign.name, stored, default), variants)


_prepared: dict[tuple[str, int], Prepared] = {}
_prepared_lock = threading.Lock()


def prepare(session: Session, campaign: Campaign, settings: Settings, links: Links) -> Prepared:
    key = (settings.database_url, campaign.id)
    with _prepared_lock:
        cached = _prepared.get(key)
    if (
        cached is not None
        and cached.version == campaign.updated_at
        and cached.settings == settings
        and cached.composer.links == links
    ):
        return cached
    variants = {
        v.language: CompiledVariant(v.language, v.subject, v.html, v.text)
        for v in session.scalars(
            select(CampaignVariant).where(CampaignVariant.campaign_id == campaign.id)
        )
    }
    definition = campaign.definition

    def builder(from_: str) -> MessageBuilder:
        domain = from_.rpartition("@")[2].strip(">").strip()
        dkim = None
        if settings.dkim_key_file and settings.dkim_selector:
            dkim = DkimKey.load(settings.dkim_key_file, settings.dkim_selector, domain)
        return MessageBuilder(
            from_,
            reply_to=definition.get("reply_to"),
            bounce_domain=settings.bounce_domain,
            dkim=dkim,
            # Gmail's form: identifiers, most specific first, the sender's last.
            extra_headers={"Feedback-ID": f"{campaign.name}:outreach:{domain}"},
        )

    composer = Composer(
        variants,
        definition["default_language"],
        Personaliser(list(campaign.expressions), definition["nonce"]),
        links,
        builder(definition["from"]),
        verp=True,
        builders={
            language: builder(from_)
            for language, from_ in (definition.get("from_by_language") or {}).items()
        },
        calendars=_calendars(campaign, variants),
    )
    prepared = Prepared(
        campaign.id,
        campaign.name,
        campaign.updated_at,
        campaign.rate,
        composer,
        settings,
        bool(definition.get("mails_unsubscribed")),
    )
    with _prepared_lock:
        _prepared[key] = prepared
    return prepared
