"""Campaign files: their schema, the languages they speak, compiling and validating them."""

from __future__ import annotations

import re
import traceback
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parseaddr
from pathlib import Path
from typing import Any

import jinja2
from email_validator import EmailNotValidError, validate_email
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from outreach.config import Rate, Settings, parse_rate
from outreach.errors import FileError, FileErrors, located
from outreach.fields import normalise_language, primary_language
from outreach.models import Contact
from outreach.render import (
    CompiledVariant,
    Deferred,
    Personaliser,
    RenderError,
    contact_variables,
    html_to_text,
    personalise,
    stage1_environment,
)
from outreach.segments import Segment, audience, load_segments
from outreach.yamlfile import YamlDoc, load_yaml, validation_errors

RESERVED = frozenset(
    {
        "contact",
        "campaign",
        "language",
        "unsubscribe_url",
        "preferences_url",
        "view_online_url",
        "advertising",
        "sender",
        "postal_address",
    }
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
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,199}$")


class AudienceSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include: list[str] = Field(min_length=1)
    exclude: list[str] = []


class TrackingSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    opens: bool = False
    clicks: bool = False


class CampaignFile(BaseModel):
    """`campaigns/*.yaml`, exactly as DESIGN.md shows it; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str | None = None
    template: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")
    subject: str | dict[str, str]
    from_: str | None = Field(default=None, alias="from")
    reply_to: str | None = None
    audience: AudienceSpec
    default_language: str = "en"
    send_at: datetime | None = None
    rate: str | None = None
    tracking: TrackingSpec = TrackingSpec()
    advertising: bool = False
    context: dict[str, Any] = {}

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and not _NAME.match(v):
            raise ValueError(
                "use lower-case letters, digits, '.', '_' and '-', e.g. 2026-12-newsletter"
            )
        return v

    @field_validator("default_language")
    @classmethod
    def _language(cls, v: str) -> str:
        return normalise_language(v)

    @field_validator("subject")
    @classmethod
    def _subject(cls, v: str | dict[str, str]) -> str | dict[str, str]:
        if isinstance(v, str):
            if not v.strip():
                raise ValueError("the subject is empty")
            return v
        if not v:
            raise ValueError("give at least one language, e.g. en: ...")
        out = {}
        for lang, text in v.items():
            if not str(text).strip():
                raise ValueError(f"the {lang} subject is empty")
            out[normalise_language(str(lang))] = str(text)
        return out

    @field_validator("send_at")
    @classmethod
    def _send_at(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("give a time zone, e.g. 2026-12-01T09:00:00+09:00")
        return v

    @field_validator("rate", mode="before")
    @classmethod
    def _rate(cls, v: Any) -> str | None:
        if v is None:
            return None
        parse_rate(str(v))
        return str(v)


@dataclass
class Campaign:
    """A loaded, schema-valid campaign file and where its templates and segments are."""

    path: Path
    spec: CampaignFile
    doc: YamlDoc
    templates_dir: Path
    segments_path: Path

    @property
    def name(self) -> str:
        return self.spec.name or self.path.stem

    @property
    def rate(self) -> Rate | None:
        return parse_rate(self.spec.rate) if self.spec.rate else None

    def line(self, *loc: str | int) -> int | None:
        return self.doc.lines.line_for(loc)

    def error(self, message: str, *loc: str | int) -> FileError:
        return FileError(self.path, message, self.line(*loc) if loc else None)

    def sender(self, settings: Settings) -> str:
        sender = self.spec.from_ or settings.from_
        if not sender:
            raise self.error("no From: set from: in the campaign or OUTREACH_FROM")
        return sender

    def template_files(self) -> tuple[dict[str, str], str | None]:
        """Language variants (language -> template name) and the fallback template name."""
        base = self.spec.template
        folder = (self.templates_dir / base).parent
        stem = Path(base).name
        variants = {}
        if folder.is_dir():
            for path in folder.glob(f"{stem}.*.mjml"):
                lang = path.name[len(stem) + 1 : -len(".mjml")]
                try:
                    variants[normalise_language(lang)] = str(Path(base).parent / path.name)
                except ValueError:
                    continue
        fallback_path = self.templates_dir / f"{base}.mjml"
        fallback = f"{base}.mjml" if fallback_path.is_file() else None
        return variants, fallback

    def languages(self) -> set[str]:
        """Languages a message can be written in: a template variant, or the fallback
        template with a subject in that language."""
        variants, fallback = self.template_files()
        languages = set(variants)
        if fallback:
            languages.add(self.spec.default_language)
            if isinstance(self.spec.subject, dict):
                languages |= set(self.spec.subject)
        return languages

    def subject_for(self, language: str) -> str:
        subject = self.spec.subject
        if isinstance(subject, str):
            return subject
        if language in subject:
            return subject[language]
        if self.spec.default_language in subject:
            return subject[self.spec.default_language]
        raise self.error(
            f"no subject for {language} nor for default_language {self.spec.default_language}",
            "subject",
        )

    def template_for(self, language: str) -> str:
        variants, fallback = self.template_files()
        if language in variants:
            return variants[language]
        if fallback:
            return fallback
        raise self.error(
            f"no template for language {language}: create "
            f"{self.templates_dir / self.spec.template}.{language}.mjml or the fallback "
            f"{self.templates_dir / self.spec.template}.mjml",
            "template",
        )


def resolve_language(contact_language: str | None, available: set[str], default: str) -> str:
    """The language a contact is written to in: its own, its primary subtag, or the default."""
    if contact_language:
        if contact_language in available:
            return contact_language
        primary = primary_language(contact_language)
        if primary in available:
            return primary
    return default


def load_campaign(path: Path | str, root: Path | None = None) -> Campaign:
    path = Path(path)
    doc = load_yaml(path)
    if not isinstance(doc.data, dict):
        raise FileError(path, "a campaign file is a mapping of keys such as template:, subject:", 1)
    try:
        spec = CampaignFile.model_validate(doc.data)
    except ValidationError as exc:
        allowed = {
            (): sorted(f.alias or n for n, f in CampaignFile.model_fields.items()),
            ("audience",): ["include", "exclude"],
            ("tracking",): ["opens", "clicks"],
        }
        raise validation_errors(doc, exc, allowed) from None
    clash = [key for key in spec.context if key in RESERVED]
    if clash:
        raise FileErrors(
            [
                FileError(
                    path,
                    f"context: {key!r} is a reserved template variable; rename it",
                    doc.lines.line_for(("context", key)),
                )
                for key in clash
            ]
        )
    root = root or path.resolve().parent.parent
    return Campaign(
        path=path,
        spec=spec,
        doc=doc,
        templates_dir=root / "templates",
        segments_path=path.resolve().parent / "segments.yaml",
    )


def find_campaigns(directory: Path = Path("campaigns")) -> list[Path]:
    return sorted(p for p in directory.glob("*.yaml") if p.name != "segments.yaml")


@dataclass
class CompiledCampaign:
    variants: dict[str, CompiledVariant]
    expressions: list[str]
    nonce: str
    origins: list[tuple[str | None, int]] = field(default_factory=list)

    def personaliser(self) -> Personaliser:
        return Personaliser(self.expressions, self.nonce)


def _template_location(exc: BaseException, templates_dir: Path) -> tuple[str | None, int | None]:
    """Where in a template a runtime error happened, from Jinja's rewritten traceback."""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename.endswith(".mjml") or frame.filename == "<template>":
            return frame.filename, frame.lineno
    return None, None


def _advertising_footer(deferred: Deferred, sender: str, postal: str) -> str:
    from markupsafe import escape

    name = escape(parseaddr(sender)[0] or parseaddr(sender)[1])
    link = deferred.marker("{{ unsubscribe_url }}", ("advertising footer", 0))
    return (
        '<div style="font-family:sans-serif;font-size:12px;line-height:1.5;color:#555;'
        'max-width:600px;margin:0 auto;padding:16px;">'
        f"<p>(광고) 본 메일은 {name}({escape(postal)})에서 발송한 광고성 정보입니다. "
        f'수신을 원하지 않으시면 <a href="{link}">수신거부</a>를 눌러 주세요.</p>'
        f"<p>This is an advertisement from {name}, {escape(postal)}. "
        f'If you no longer wish to receive it, <a href="{link}">unsubscribe</a>.</p></div>'
    )


def compile_campaign(
    campaign: Campaign, languages: set[str], settings: Settings
) -> CompiledCampaign:
    """Stage 1 for each language: Jinja with the campaign's context, MJML once, text once."""
    from mjml import mjml2html

    deferred = Deferred()
    env = stage1_environment(campaign.templates_dir, deferred)
    sender = campaign.sender(settings)
    variants = {}
    for language in sorted(languages):
        template_name = campaign.template_for(language)
        try:
            subject = env.from_string(campaign.subject_for(language)).render(
                campaign={"name": campaign.name}, language=language, **campaign.spec.context
            )
        except jinja2.TemplateSyntaxError as exc:
            raise campaign.error(f"subject: {exc.message}", "subject") from None
        except jinja2.UndefinedError as exc:
            raise campaign.error(f"subject: {exc.message}", "subject") from None
        subject = " ".join(subject.split())
        if campaign.spec.advertising and not subject.startswith(AD_PREFIX):
            subject = f"{AD_PREFIX} {subject}"
        variables = {
            **campaign.spec.context,
            "campaign": {"name": campaign.name, "subject": subject},
            "language": language,
            "advertising": campaign.spec.advertising,
            "sender": parseaddr(sender)[0] or parseaddr(sender)[1],
            "postal_address": settings.postal_address or "",
        }
        try:
            mjml_source = env.get_template(template_name).render(variables)
        except jinja2.TemplateNotFound as exc:
            raise FileError(
                campaign.templates_dir / exc.name,
                f"template not found (used by {template_name}); create it or fix the name",
            ) from None
        except jinja2.TemplateSyntaxError as exc:
            raise FileError(exc.filename or template_name, exc.message, exc.lineno) from None
        except (jinja2.UndefinedError, jinja2.TemplateError, TypeError) as exc:
            where, line = _template_location(exc, campaign.templates_dir)
            message = getattr(exc, "message", None) or str(exc)
            raise FileError(where or template_name, message, line) from None
        unknown = sorted(set(re.findall(r"<(mj-[A-Za-z0-9-]+)", mjml_source)) - KNOWN_MJ_TAGS)
        if unknown:
            raise FileError(
                campaign.templates_dir / template_name,
                f"unknown MJML tag <{unknown[0]}>; MJML would pass it through as is "
                "(known tags: mj-section, mj-column, mj-text, mj-button, mj-image, …)",
            )
        try:
            html = mjml2html(mjml_source)
        except (ValueError, RuntimeError) as exc:
            raise FileError(campaign.templates_dir / template_name, f"MJML: {exc}") from None
        if campaign.spec.advertising:
            footer = _advertising_footer(deferred, sender, settings.postal_address or "")
            html = (
                html.replace("</body>", footer + "</body>", 1)
                if "</body>" in html
                else html + footer
            )
        # The text part keeps the real addresses; tracking rewrites only the HTML.
        text = html_to_text(html)
        tracking = campaign.spec.tracking
        if tracking.clicks:
            html = track_clicks(html, deferred)
        if tracking.opens:
            pixel = deferred.marker("{{ open_url }}", ("open tracking", 0))
            img = (
                f'<img src="{pixel}" width="1" height="1" alt="" '
                'style="display:block;width:1px;height:1px;border:0;">'
            )
            html = html.replace("</body>", img + "</body>", 1) if "</body>" in html else html + img
        variants[language] = CompiledVariant(language, subject, html, text)
    return CompiledCampaign(
        variants, list(deferred.sources), deferred.nonce, list(deferred.origins)
    )


_TRACKABLE = re.compile(r"""(<a\b[^>]*?\bhref\s*=\s*)(["'])(https?://[^"']+)\2""", re.I)


def track_clicks(html: str, deferred: Deferred) -> str:
    """Every http(s) link goes through /c/TOKEN; recipients' own links (unsubscribe,
    preferences, view online) are markers, not http, and stay as they are."""
    import html as html_lib

    def rewrite(match: re.Match[str]) -> str:
        url = html_lib.unescape(match.group(3))
        marker = deferred.marker("{{ click(" + repr(url) + ") }}", ("click tracking", 0))
        return f"{match.group(1)}{match.group(2)}{marker}{match.group(2)}"

    return _TRACKABLE.sub(rewrite, html)


_HREF = re.compile(r"""\b(href|src)\s*=\s*(["'])(.*?)\2""", re.I | re.S)


def check_links(compiled: CompiledCampaign, campaign: Campaign) -> list[FileError]:
    errors = []
    for language, variant in compiled.variants.items():
        where = campaign.templates_dir / campaign.template_for(language)
        for attr, _, url in _HREF.findall(variant.html):
            url = url.strip()
            if f"OUTR{compiled.nonce}X" in url:
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
        if f"OUTR{compiled.nonce}X{_index(compiled, '{{ unsubscribe_url }}')}X" not in variant.html:
            errors.append(
                FileError(
                    where,
                    f"no unsubscribe link ({language}): add "
                    '<a href="{{ unsubscribe_url }}"> (the shared layout\'s footer '
                    "has one)",
                )
            )
    return errors


def _index(compiled: CompiledCampaign, source: str) -> int:
    try:
        return compiled.expressions.index(source)
    except ValueError:
        return -1


@dataclass
class Report:
    errors: list[FileError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    audience_size: int | None = None
    languages: dict[str, int] = field(default_factory=dict)
    compiled: CompiledCampaign | None = None

    @property
    def ok(self) -> bool:
        return not self.errors


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
    "attributes": {},
}
SAMPLE_CONTACT = {
    "email": "sample@example.org",
    "name": "Sample Contact",
    "organisation": "Sample City",
    "organisation_type": "local_government",
    "city": "Sample City",
    "country": "KR",
    "membership": "full",
    "consent": "opt-in",
    "tags": [],
    "attributes": {},
}


def audience_of(
    campaign: Campaign, session: Session | None = None
) -> tuple[list[Segment], list[Segment], list[FileError]]:
    segments = load_segments(campaign.segments_path, session)
    errors = []
    include, exclude = [], []
    for key, names, out in (
        ("include", campaign.spec.audience.include, include),
        ("exclude", campaign.spec.audience.exclude, exclude),
    ):
        for i, name in enumerate(names):
            if name in segments:
                out.append(segments[name])
            else:
                known = ", ".join(sorted(segments)) or "none"
                errors.append(
                    campaign.error(
                        f"unknown segment {name!r} in audience.{key}; define it in "
                        f"{campaign.segments_path} (known: {known})",
                        "audience",
                        key,
                        i,
                    )
                )
    return include, exclude, errors


def check_addresses(campaign: Campaign, settings: Settings) -> list[FileError]:
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


def validate_campaign(
    path: Path | str, settings: Settings, session: Session | None, root: Path | None = None
) -> Report:
    """Every check `send` runs too: schema, segments, addresses, templates, links, rendering."""
    from outreach.segments import count
    from outreach.tokens import Links, Tokens

    report = Report()
    try:
        campaign = load_campaign(path, root)
    except (FileError, FileErrors) as exc:
        report.errors += located(exc)
        return report
    try:
        include, exclude, errors = audience_of(campaign, session)
    except (FileError, FileErrors) as exc:
        report.errors += located(exc)
        return report
    report.errors += errors
    report.errors += check_addresses(campaign, settings)
    if campaign.spec.advertising and not settings.postal_address:
        report.errors.append(
            campaign.error(
                "advertising: true needs the sender's postal address in the footer: set "
                "OUTREACH_POSTAL_ADDRESS",
                "advertising",
            )
        )
    available = campaign.languages()
    if not available:
        report.errors.append(
            campaign.error(
                f"no template {campaign.templates_dir / campaign.spec.template}.mjml nor any "
                f"{campaign.spec.template}.LANG.mjml variant in {campaign.templates_dir}",
                "template",
            )
        )
        return report
    default = campaign.spec.default_language
    needed = set(available)
    samples: dict[str, dict[str, Any]] = {}
    if session is not None and not errors:
        where = audience(include, exclude)
        report.audience_size = count(session, where)
        if report.audience_size == 0:
            report.warnings.append(f"{campaign.path}: the audience is empty")
        counts = session.execute(
            select(Contact.language, func.count()).where(where).group_by(Contact.language)
        ).all()
        for lang, n in counts:
            resolved = resolve_language(lang, available, default)
            report.languages[resolved] = report.languages.get(resolved, 0) + n
        if counts:
            needed = set(report.languages)
        for lang, _ in counts:
            resolved = resolve_language(lang, available, default)
            if resolved in samples:
                continue
            contact = session.scalars(
                select(Contact)
                .where(
                    where, Contact.language.is_(None) if lang is None else Contact.language == lang
                )
                .limit(1)
            ).first()
            if contact is not None:
                samples[resolved] = contact_variables(contact)
    if default not in available and (needed - available or not needed):
        report.errors.append(
            campaign.error(
                f"default_language {default} has no template variant or subject", "default_language"
            )
        )
        return report
    try:
        compiled = compile_campaign(campaign, needed, settings)
    except (FileError, FileErrors) as exc:
        report.errors += located(exc)
        return report
    report.compiled = compiled
    report.errors += check_links(compiled, campaign)
    personaliser = compiled.personaliser()
    links = Links(settings.base_url, Tokens(settings.secret_key or "validate"))
    for language, variant in compiled.variants.items():
        # A real contact of the language, and one with nothing but an address: what any
        # recipient could get must be complete.
        minimal = {**MINIMAL_CONTACT, "language": language}
        for contact in (samples.get(language) or {**SAMPLE_CONTACT, "language": language}, minimal):
            error = _check_rendering(
                campaign, compiled, personaliser, links, language, variant, contact
            )
            if error is not None:
                report.errors.append(error)
                break
    return report


def _check_rendering(
    campaign: Campaign,
    compiled: CompiledCampaign,
    personaliser: Personaliser,
    links: Any,
    language: str,
    variant: CompiledVariant,
    contact: dict[str, Any],
) -> FileError | None:
    try:
        rendered = personalise(personaliser, variant, {"contact": contact, **links.variables(0)})
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
    campaign: Campaign,
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
            where = (
                campaign.templates_dir / origin
                if origin and origin.endswith(".mjml")
                else campaign.path
            )
            hint = (
                "; give a default, e.g. {{ contact.attributes.region | default('', true) }}"
                if "undefined" in message or "attribute" in message
                else ""
            )
            return FileError(
                where,
                f"{source}: {message} (for {contact.get('email')}, {language}){hint}",
                line if origin and origin.endswith(".mjml") else campaign.line("subject"),
            )
    return FileError(campaign.path, message)
