"""Previews: exactly what one recipient would get, as HTML, text, .eml and screenshots."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from sqlalchemy.orm import Session

from outreach.campaigns import CampaignFile, load_campaign
from outreach.compose import (
    NO_DELIVERY,
    SAMPLE_CONTACT,
    Composer,
    Recipient,
    calendar_parts,
    resolve_language,
)
from outreach.config import Settings
from outreach.contacts import get_contact
from outreach.errors import FileErrors, UserError
from outreach.fields import normalise_language, primary_language
from outreach.messages import MessageBuilder, UnmailableAddress
from outreach.render import Rendered, RenderError, UnsafeLink, contact_variables
from outreach.tokens import Links, Tokens
from outreach.validate import validate_campaign

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


@dataclass
class Preview:
    campaign: CampaignFile
    language: str
    contact: dict[str, Any]
    rendered: Rendered
    eml: bytes
    # Set when the language asked for (or the contact's) has no variant of its own.
    note: str | None = None


def build_preview(
    path: Path,
    settings: Settings,
    session: Session | None,
    *,
    email: str | None = None,
    language: str | None = None,
) -> Preview:
    report = validate_campaign(path, settings, session)
    if not report.ok:
        raise FileErrors(report.errors)
    campaign = load_campaign(path)
    available = campaign.languages()
    if email:
        if session is None:
            raise UserError("--contact needs the database; run `outreach init` and import contacts")
        contact = contact_variables(get_contact(session, email))
    else:
        contact = dict(SAMPLE_CONTACT)
    if language:
        try:
            language = normalise_language(language)
        except ValueError as exc:
            raise UserError(str(exc)) from None
    wanted = language or contact.get("language")
    resolved = resolve_language(wanted, available, campaign.spec.default_language)
    note = None
    if wanted and resolved not in (wanted, primary_language(wanted)):
        whose = "" if language else f" ({contact['email']} speaks {wanted})"
        note = f"there is no {wanted} variant{whose}; previewing {resolved} (default_language)"
    contact.setdefault("language", resolved)
    compiled = report.compiled
    assert compiled is not None  # validation compiled every variant
    # A preview is not mailed: its links are signed with a key of its own.
    composer = Composer(
        compiled.variants,
        campaign.spec.default_language,
        compiled.personaliser(),
        Links(settings.base_url, Tokens.throwaway()),
        MessageBuilder(
            campaign.sender(settings, resolved),
            reply_to=campaign.spec.reply_to,
            bounce_domain=settings.bounce_domain,
        ),
        calendars=calendar_parts(campaign.invitation(settings), compiled.variants),
    )
    recipient = Recipient(NO_DELIVERY, contact["email"], contact.get("name"), contact)
    try:
        composed = composer.compose(recipient, resolved, bounce_token="preview")
    except (UnsafeLink, UnmailableAddress) as exc:
        raise UserError(f"{contact['email']} would get no message: {exc.message}") from None
    except (jinja2.TemplateError, RenderError, TypeError, ValueError, LookupError) as exc:
        # Validation rendered the templates for stand-ins; this contact's own values broke
        # them (the worker would fail the delivery with the same reason).
        why = getattr(exc, "message", None) or str(exc)
        raise UserError(f"{contact['email']} would get no message: render error: {why}") from None
    return Preview(campaign, resolved, contact, composed.rendered, composed.envelope.data, note)


def screenshot(html_path: Path, png_path: Path) -> list[Path]:
    """Desktop (1200 px) and mobile (390 px) screenshots of a preview, in headless Chromium."""
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        raise UserError("--png needs Chromium: apt-get install chromium fonts-noto-cjk")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise UserError(
            "--png needs Playwright (it drives the machine's Chromium): "
            "pip install 'outreach[preview]'"
        ) from None

    outputs = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium"),
            args=CHROMIUM_ARGS,
        )
        try:
            for label, width in (("", 1200), (".mobile", 390)):
                page = browser.new_page(viewport={"width": width, "height": 900})
                # The preview must not reach the network: block everything but the file.
                page.route(
                    "**/*",
                    lambda route: (
                        route.continue_()
                        if route.request.url.startswith("file:")
                        else route.abort()
                    ),
                )
                page.goto(html_path.resolve().as_uri())
                target = png_path.with_name(png_path.stem + label + png_path.suffix)
                page.screenshot(path=str(target), full_page=True)
                outputs.append(target)
                page.close()
        finally:
            browser.close()
    return outputs
