"""Compiling a campaign: stage 1 of rendering, once per campaign and language.

For each language: the subject and the MJML template are rendered with the campaign's
context (per-recipient expressions are lifted out as markers, see `render`), MJML compiles
to HTML once, the Korean advertising footer is added when the campaign advertises, the plain
text is derived, and tracking rewrites the HTML's links. What comes out is stored with the
campaign at `send`; workers only fill in recipients.
"""

from __future__ import annotations

import html as html_lib
import re
import traceback
from dataclasses import dataclass, field
from email.utils import parseaddr
from typing import Any

import jinja2

from outreach.advertising import footer as advertising_footer
from outreach.advertising import sender_contact
from outreach.campaigns import CampaignFile
from outreach.config import Settings
from outreach.errors import FileError
from outreach.render import (
    CompiledVariant,
    Deferred,
    Markers,
    Personaliser,
    html_to_text,
    stage1_environment,
)

AD_PREFIX = "(광고)"
KNOWN_MJ_TAGS = frozenset(
    (
        "mjml",
        "mj-head",
        "mj-body",
        "mj-attributes",
        "mj-breakpoint",
        "mj-font",
        "mj-html-attributes",
        "mj-html-attribute",
        "mj-preview",
        "mj-style",
        "mj-title",
        "mj-accordion",
        "mj-accordion-element",
        "mj-accordion-title",
        "mj-accordion-text",
        "mj-button",
        "mj-carousel",
        "mj-carousel-image",
        "mj-column",
        "mj-divider",
        "mj-group",
        "mj-hero",
        "mj-image",
        "mj-navbar",
        "mj-navbar-link",
        "mj-raw",
        "mj-section",
        "mj-social",
        "mj-social-element",
        "mj-spacer",
        "mj-table",
        "mj-text",
        "mj-wrapper",
        "mj-all",
        "mj-class",
        "mj-include",
        "mj-selector",
    )
)
UNSUBSCRIBE = "{{ unsubscribe_url }}"


@dataclass
class CompiledCampaign:
    variants: dict[str, CompiledVariant]
    expressions: list[str]
    nonce: str
    origins: list[tuple[str | None, int]] = field(default_factory=list)

    @property
    def markers(self) -> Markers:
        return Markers(self.nonce)

    def personaliser(self) -> Personaliser:
        return Personaliser(self.expressions, self.nonce)

    def marker_of(self, source: str) -> str | None:
        """The marker standing for one per-recipient expression, if the campaign uses it."""
        try:
            return self.markers(self.expressions.index(source))
        except ValueError:
            return None


def compile_campaign(
    campaign: CampaignFile, languages: set[str], settings: Settings
) -> CompiledCampaign:
    """Stage 1 for each language: Jinja with the campaign's context, MJML once, text once."""
    deferred = Deferred()
    env = stage1_environment(campaign.templates_dir, deferred)
    sender = campaign.sender(settings)
    variants = {
        language: _compile_variant(campaign, language, env, deferred, sender, settings)
        for language in sorted(languages)
    }
    return CompiledCampaign(
        variants, list(deferred.sources), deferred.nonce, list(deferred.origins)
    )


def _compile_variant(
    campaign: CampaignFile,
    language: str,
    env: jinja2.Environment,
    deferred: Deferred,
    sender: str,
    settings: Settings,
) -> CompiledVariant:
    template_name = campaign.template_for(language)
    subject = _subject(campaign, env, language)
    variables = {
        **campaign.spec.context,
        "campaign": {"name": campaign.name, "subject": subject},
        "language": language,
        "advertising": campaign.spec.advertising,
        "sender": parseaddr(sender)[0] or parseaddr(sender)[1],
        "postal_address": settings.postal_address or "",
    }
    source = _render_template(campaign, env, template_name, variables)
    html = _mjml(campaign, template_name, source)
    if campaign.spec.advertising:
        html = _before_body_end(html, _advertising_footer(campaign, deferred, sender, settings))
    # The text part keeps the real addresses; tracking rewrites only the HTML.
    text = html_to_text(html)
    tracking = campaign.spec.tracking
    if tracking.clicks:
        html = track_clicks(html, deferred)
    if tracking.opens:
        pixel = deferred.marker("{{ open_url }}", ("open tracking", 0))
        html = _before_body_end(
            html,
            f'<img src="{pixel}" width="1" height="1" alt="" '
            'style="display:block;width:1px;height:1px;border:0;">',
        )
    return CompiledVariant(language, subject, html, text)


def _subject(campaign: CampaignFile, env: jinja2.Environment, language: str) -> str:
    try:
        subject = env.from_string(campaign.subject_for(language)).render(
            campaign={"name": campaign.name}, language=language, **campaign.spec.context
        )
    except (jinja2.TemplateSyntaxError, jinja2.UndefinedError) as exc:
        raise campaign.error(f"subject: {exc.message}", "subject") from None
    subject = " ".join(subject.split())
    if campaign.spec.advertising and not subject.startswith(AD_PREFIX):
        subject = f"{AD_PREFIX} {subject}"
    return subject


def _template_location(exc: BaseException) -> tuple[str | None, int | None]:
    """Where in a template a runtime error happened, from Jinja's rewritten traceback."""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename.endswith(".mjml") or frame.filename == "<template>":
            return frame.filename, frame.lineno
    return None, None


def _render_template(
    campaign: CampaignFile,
    env: jinja2.Environment,
    template_name: str,
    variables: dict[str, Any],
) -> str:
    try:
        source = env.get_template(template_name).render(variables)
    except jinja2.TemplateNotFound as exc:
        raise FileError(
            campaign.templates_dir / str(exc.name),
            f"template not found (used by {template_name}); create it or fix the name",
        ) from None
    except jinja2.TemplateSyntaxError as exc:
        message = exc.message or str(exc)
        raise FileError(exc.filename or template_name, message, exc.lineno) from None
    except (jinja2.UndefinedError, jinja2.TemplateError, TypeError) as exc:
        where, line = _template_location(exc)
        message = getattr(exc, "message", None) or str(exc)
        raise FileError(where or template_name, message, line) from None
    unknown = sorted(set(re.findall(r"<(mj-[A-Za-z0-9-]+)", source)) - KNOWN_MJ_TAGS)
    if unknown:
        raise FileError(
            campaign.templates_dir / template_name,
            f"unknown MJML tag <{unknown[0]}>; MJML would pass it through as is "
            "(known tags: mj-section, mj-column, mj-text, mj-button, mj-image, …)",
        )
    return source


def _mjml(campaign: CampaignFile, template_name: str, source: str) -> str:
    from mjml import mjml2html

    try:
        return str(mjml2html(source))
    except (ValueError, RuntimeError) as exc:
        raise FileError(campaign.templates_dir / template_name, f"MJML: {exc}") from None


def _before_body_end(html: str, fragment: str) -> str:
    if "</body>" not in html:
        return html + fragment
    return html.replace("</body>", fragment + "</body>", 1)


def _advertising_footer(
    campaign: CampaignFile, deferred: Deferred, sender: str, settings: Settings
) -> str:
    """Korean Network Act rules for advertising: sender, postal address, a way to reach the
    sender (Art. 50(4)) and an opt-out, in Korean and English (see `advertising`)."""
    contact = sender_contact(settings.sender_contact, campaign.spec.reply_to, sender)
    link = deferred.marker(UNSUBSCRIBE, ("advertising footer", 0))
    return advertising_footer(link, sender, settings.postal_address or "", contact)


_TRACKABLE = re.compile(r"""(<a\b[^>]*?\bhref\s*=\s*)(["'])(https?://[^"']+)\2""", re.I)


def track_clicks(html: str, deferred: Deferred) -> str:
    """Every http(s) link goes through /c/TOKEN; recipients' own links (unsubscribe,
    preferences, view online) are markers, not http, and stay as they are."""

    def rewrite(match: re.Match[str]) -> str:
        url = html_lib.unescape(match.group(3))
        marker = deferred.marker("{{ click(" + repr(url) + ") }}", ("click tracking", 0))
        return f"{match.group(1)}{match.group(2)}{marker}{match.group(2)}"

    return _TRACKABLE.sub(rewrite, html)
