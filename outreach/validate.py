"""Validating a campaign: every check `campaigns send` runs before anything is queued.

    the file (schema, keys) -> its audience (segments) -> From and Reply-To
    -> the languages of the audience -> compile (Jinja, MJML) -> links
    -> render for real and stand-in recipients (stage 2)

Each problem is reported with its file and, where the source has one, its line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email.utils import parseaddr
from pathlib import Path
from typing import Any

import jinja2
from email_validator import EmailNotValidError, validate_email
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from outreach.campaigns import CampaignFile, audience_of, load_campaign
from outreach.compiler import UNSUBSCRIBE, CompiledCampaign, compile_campaign
from outreach.compose import (
    MINIMAL_CONTACT,
    NO_DELIVERY,
    SAMPLE_CONTACT,
    Composer,
    Recipient,
    resolve_language,
)
from outreach.config import Settings
from outreach.errors import FileError, FileErrors, located
from outreach.models import Contact
from outreach.render import Personaliser, RenderError, contact_variables
from outreach.segments import audience, count
from outreach.tokens import Links, Tokens


@dataclass
class Validation:
    errors: list[FileError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    audience_size: int | None = None
    languages: dict[str, int] = field(default_factory=dict)
    compiled: CompiledCampaign | None = None

    @property
    def ok(self) -> bool:
        return not self.errors


def validate_campaign(
    path: Path | str, settings: Settings, session: Session | None, root: Path | None = None
) -> Validation:
    """Every check `send` runs too: schema, segments, addresses, templates, links, rendering."""
    validation = Validation()
    try:
        campaign = load_campaign(path, root)
        include, exclude, segment_errors = audience_of(campaign, session)
    except (FileError, FileErrors) as exc:
        validation.errors += located(exc)
        return validation
    validation.errors += segment_errors
    validation.errors += check_addresses(campaign, settings)
    validation.errors += _check_advertising(campaign, settings)
    available = campaign.languages()
    if not available:
        validation.errors.append(
            campaign.error(
                f"no template {campaign.templates_dir / campaign.spec.template}.mjml nor any "
                f"{campaign.spec.template}.LANG.mjml variant in {campaign.templates_dir}",
                "template",
            )
        )
        return validation
    needed: set[str] = set(available)
    samples: dict[str, dict[str, Any]] = {}
    if campaign.spec.welcome:  # no audience: any language a new subscriber may read
        validation.languages = dict.fromkeys(sorted(available), 0)
    elif session is not None and not segment_errors:
        needed, samples = _audience(
            campaign, session, audience(include, exclude), available, validation
        )
        if campaign.spec.advertising:
            validation.warnings += _left_out(campaign, session, include, exclude)
    default = campaign.spec.default_language
    if default not in available and (needed - available or not needed):
        validation.errors.append(
            campaign.error(
                f"default_language {default} has no template variant or subject", "default_language"
            )
        )
        return validation
    try:
        compiled = compile_campaign(campaign, needed, settings)
    except (FileError, FileErrors) as exc:
        validation.errors += located(exc)
        return validation
    validation.compiled = compiled
    validation.errors += check_links(compiled, campaign)
    validation.errors += _check_rendering(campaign, compiled, samples, settings.base_url)
    return validation


def check_addresses(campaign: CampaignFile, settings: Settings) -> list[FileError]:
    errors = []
    for key, value in (
        ("from", campaign.spec.from_ or settings.from_),
        ("reply_to", campaign.spec.reply_to),
    ):
        if value is None:
            if key == "from":
                errors.append(campaign.error("no From: set from: in the campaign or OUTREACH_FROM"))
            continue
        if "\n" in value or "\r" in value:
            errors.append(campaign.error(f"{key}: must be one line", key))
            continue
        _, address = parseaddr(value)
        try:
            validate_email(address, check_deliverability=False)
        except EmailNotValidError as exc:
            errors.append(campaign.error(f"{key}: {value!r} is not a valid address ({exc})", key))
    return errors


def _check_advertising(campaign: CampaignFile, settings: Settings) -> list[FileError]:
    if campaign.spec.advertising and not settings.postal_address:
        return [
            campaign.error(
                "advertising: true needs the sender's postal address in the footer: set "
                "OUTREACH_POSTAL_ADDRESS",
                "advertising",
            )
        ]
    return []


def _left_out(
    campaign: CampaignFile, session: Session, include: list[Any], exclude: list[Any]
) -> list[str]:
    from outreach.advertising import left_out

    n = left_out(session, include, exclude)
    if not n:
        return []
    return [
        f"{campaign.path}: {n} contacts with consent public-contact left out: addresses "
        "collected from public pages are never sent advertising (Network Act Art. 50-2)"
    ]


def _audience(
    campaign: CampaignFile,
    session: Session,
    where: ColumnElement[bool],
    available: set[str],
    validation: Validation,
) -> tuple[set[str], dict[str, dict[str, Any]]]:
    """The languages the audience will be written in, counted, and a real contact of each
    (to render for): one GROUP BY, and one row per language."""
    default = campaign.spec.default_language
    validation.audience_size = count(session, where)
    if validation.audience_size == 0:
        validation.warnings.append(f"{campaign.path}: the audience is empty")
    counts = session.execute(
        select(Contact.language, func.count()).where(where).group_by(Contact.language)
    ).all()
    samples: dict[str, dict[str, Any]] = {}
    for lang, n in counts:
        resolved = resolve_language(lang, available, default)
        validation.languages[resolved] = validation.languages.get(resolved, 0) + n
        if resolved in samples:
            continue
        contact = session.scalars(
            select(Contact)
            .where(where, Contact.language.is_(None) if lang is None else Contact.language == lang)
            .limit(1)
        ).first()
        if contact is not None:
            samples[resolved] = contact_variables(contact)
    needed = set(validation.languages) if counts else set(available)
    return needed, samples


_HREF = re.compile(r"""\b(href|src)\s*=\s*(["'])(.*?)\2""", re.I | re.S)


def check_links(compiled: CompiledCampaign, campaign: CampaignFile) -> list[FileError]:
    errors = []
    unsubscribe = compiled.marker_of(UNSUBSCRIBE)
    for language, variant in compiled.variants.items():
        where = campaign.templates_dir / campaign.template_for(language)
        for attr, _, url in _HREF.findall(variant.html):
            url = url.strip()
            if compiled.markers.prefix in url:
                continue  # a per-recipient link, checked after stage 2
            if attr.lower() == "href" and url.startswith("mailto:"):
                continue
            if not url or url == "#":
                errors.append(
                    FileError(where, f"an empty or '#' {attr} ({language}): a broken link")
                )
            elif not re.match(r"^https?://[^\s/]+", url):
                errors.append(
                    FileError(
                        where,
                        f"{attr}={url!r} ({language}) is not an http(s) "
                        "address; write the full https:// URL",
                    )
                )
        if unsubscribe is None or unsubscribe not in variant.html:
            errors.append(
                FileError(
                    where,
                    f"no unsubscribe link ({language}): add "
                    '<a href="{{ unsubscribe_url }}"> (the shared layout\'s footer '
                    "has one)",
                )
            )
    return errors


def _check_rendering(
    campaign: CampaignFile,
    compiled: CompiledCampaign,
    samples: dict[str, dict[str, Any]],
    base_url: str,
) -> list[FileError]:
    """Stage 2 for a real contact of each language, and for one with nothing but an
    address: what any recipient could get must be complete."""
    # Nothing rendered here reaches anyone: sign with a key of its own.
    links = Links(base_url, Tokens.throwaway())
    composer = Composer(
        compiled.variants, campaign.spec.default_language, compiled.personaliser(), links
    )
    errors = []
    for language in compiled.variants:
        minimal = {**MINIMAL_CONTACT, "language": language}
        real = samples.get(language) or {**SAMPLE_CONTACT, "language": language}
        for contact in (real, minimal):
            error = _render_one(campaign, compiled, composer, language, contact)
            if error is not None:
                errors.append(error)
                break
    return errors


def _render_one(
    campaign: CampaignFile,
    compiled: CompiledCampaign,
    composer: Composer,
    language: str,
    contact: dict[str, Any],
) -> FileError | None:
    recipient = Recipient(NO_DELIVERY, contact.get("email"), contact.get("name"), contact)
    try:
        rendered = composer.render(recipient, language)
    except (jinja2.UndefinedError, jinja2.TemplateError, RenderError) as exc:
        return _stage2_error(exc, compiled, campaign, language, contact)
    where = campaign.templates_dir / campaign.template_for(language)
    if not rendered.subject.strip():
        return campaign.error(
            f"the {language} subject renders empty for {contact['email']}; give a default, e.g. "
            "{{ contact.name | default('colleague', true) }}",
            "subject",
        )
    for part, text in (
        ("subject", rendered.subject),
        ("HTML", rendered.html),
        ("text", rendered.text),
    ):
        if re.search(r"\{\{|\{%", text):
            return FileError(
                where,
                f"the {language} {part} contains a literal '{{{{' or "
                "'{%' that would reach recipients",
            )
    return None


def _stage2_error(
    exc: Exception,
    compiled: CompiledCampaign,
    campaign: CampaignFile,
    language: str,
    contact: dict[str, Any],
) -> FileError:
    message = getattr(exc, "message", None) or str(exc)
    # Find which lifted expression failed by rendering them one at a time.
    for index, source in enumerate(compiled.expressions):
        try:
            Personaliser([source], compiled.nonce).values(
                {
                    "contact": contact,
                    "unsubscribe_url": "",
                    "preferences_url": "",
                    "view_online_url": "",
                    "open_url": "",
                    "click": lambda url: url,
                }
            )
        except Exception:
            origin, line = compiled.origins[index]
            in_template = bool(origin and origin.endswith(".mjml"))
            where = campaign.templates_dir / origin if origin and in_template else campaign.path
            hint = (
                "; give a default, e.g. {{ contact.attributes.region | default('', true) }}"
                if "undefined" in message or "attribute" in message
                else ""
            )
            return FileError(
                where,
                f"{source}: {message} (for {contact.get('email')}, {language}){hint}",
                line if in_template else campaign.line("subject"),
            )
    return FileError(campaign.path, message)
