"""Campaign files (`campaigns/*.yaml`): their schema, where their templates and segments
are, and which languages they can be written in. Compiling is `compiler`, checking is
`validate`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from outreach.config import Rate, Settings, parse_rate
from outreach.errors import FileError, FileErrors
from outreach.fields import normalise_language, primary_language
from outreach.invitations import EventSpec, Invitation
from outreach.schedule import LocalTime, Timing, Window
from outreach.topics import NAME as TOPIC_NAME
from outreach.topics import beside as topics_beside
from outreach.yamlfile import Loc, YamlDoc, load_yaml, validation_errors

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
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,199}$")


class AudienceSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include: list[str] = []
    exclude: list[str] = []


class TrackingSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    opens: bool = False
    clicks: bool = False


class CampaignSpec(BaseModel):
    """The schema of `campaigns/*.yaml`; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str | None = None
    template: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")
    subject: str | dict[str, str]
    # One From, or one per language: {ko: "시티넷 사무국 <…>", en: "CityNet Secretariat <…>"}.
    from_: str | dict[str, str] | None = Field(default=None, alias="from")
    reply_to: str | None = None
    audience: AudienceSpec = Field(default_factory=AudienceSpec)
    default_language: str = "en"
    # A moment, or {local: …}: that wall-clock time in each recipient's zone.
    send_at: datetime | LocalTime | None = None
    # The days and hours, in each recipient's zone, when their message may go.
    window: Window | None = None
    rate: str | None = None
    tracking: TrackingSpec = TrackingSpec()
    advertising: bool = False
    # Shown to everyone at /archive once sent, rendered for a neutral reader.
    archive: bool = False
    # The welcome message: each newly confirmed subscriber gets it once; it has no audience.
    welcome: bool = False
    # One of campaigns/topics.yaml: whoever left it is not mailed, and the message's one-click
    # unsubscribe leaves it (without one, the unsubscribe leaves everything).
    topic: str | None = None
    # A calendar invitation that travels with the message (`invitations`).
    event: EventSpec | None = None
    context: dict[str, Any] = {}

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and not _NAME.match(v):
            raise ValueError(
                "use lower-case letters, digits, '.', '_' and '-', e.g. 2026-12-newsletter"
            )
        return v

    @field_validator("topic", mode="before")
    @classmethod
    def _topic(cls, v: Any) -> Any:
        if v is not None and not (isinstance(v, str) and TOPIC_NAME.match(v)):
            raise ValueError(
                "write the name of a topic of campaigns/topics.yaml, e.g. topic: newsletter"
            )
        return v

    @field_validator("default_language")
    @classmethod
    def _language(cls, v: str) -> str:
        return normalise_language(v)

    @field_validator("from_")
    @classmethod
    def _from(cls, v: str | dict[str, str] | None) -> str | dict[str, str] | None:
        if isinstance(v, dict):
            if not v:
                raise ValueError('give an address, or one per language: {ko: "…", en: "…"}')
            return {normalise_language(str(lang)): str(text) for lang, text in v.items()}
        return v

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

    @field_validator("send_at", mode="before")
    @classmethod
    def _send_at_text(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return LocalTime.model_validate(v)
        if isinstance(v, str):
            try:
                return datetime.fromisoformat(v)
            except ValueError:
                raise ValueError(
                    f"{v!r} is not a time: write e.g. 2026-12-01T09:00:00+09:00"
                ) from None
        return v

    @field_validator("send_at")
    @classmethod
    def _send_at(cls, v: datetime | LocalTime | None) -> datetime | LocalTime | None:
        if isinstance(v, datetime) and v.tzinfo is None:
            raise ValueError(
                "give a time zone, e.g. 2026-12-01T09:00:00+09:00, or for 09:00 in each "
                "recipient's own zone: send_at: {local: 2026-12-01T09:00}"
            )
        return v

    @model_validator(mode="after")
    def _audience(self) -> CampaignSpec:
        given = self.audience.include or self.audience.exclude
        if self.welcome and given:
            raise ValueError(
                "welcome: true: the welcome message goes to each new subscriber when they "
                "confirm; remove audience:"
            )
        if not self.welcome and not self.audience.include:
            raise ValueError(
                "audience.include: name at least one segment, e.g. audience: {include: [members]}"
            )
        return self

    @field_validator("rate", mode="before")
    @classmethod
    def _rate(cls, v: Any) -> str | None:
        if v is None:
            return None
        parse_rate(str(v))
        return str(v)


@dataclass
class CampaignFile:
    """A loaded, schema-valid campaign file and where its templates and segments are."""

    path: Path
    spec: CampaignSpec
    doc: YamlDoc
    templates_dir: Path
    segments_path: Path
    topics_path: Path

    @property
    def name(self) -> str:
        return self.spec.name or self.path.stem

    @property
    def send_at(self) -> datetime | None:
        """The moment of a plain send_at (a local one is a moment per zone: `timing`)."""
        given = self.spec.send_at
        return given if isinstance(given, datetime) else None

    @property
    def timing(self) -> Timing:
        given = self.spec.send_at
        return Timing(
            send_at=self.send_at,
            local=given.local if isinstance(given, LocalTime) else None,
            window=self.spec.window,
        )

    @property
    def rate(self) -> Rate | None:
        return parse_rate(self.spec.rate) if self.spec.rate else None

    def invitation(self, settings: Settings) -> Invitation | None:
        if self.spec.event is None:
            return None
        return Invitation.of(
            self.name, self.spec.event, self.spec.default_language, settings.base_url
        )

    def line(self, *loc: str | int) -> int | None:
        return self.doc.lines.line_for(loc)

    def error(self, message: str, *loc: str | int) -> FileError:
        return FileError(self.path, message, self.line(*loc) if loc else None)

    def sender(self, settings: Settings, language: str | None = None) -> str:
        """The From of the messages in `language` (by default, default_language's): the
        campaign's own for that language, else its default language's, else OUTREACH_FROM.
        (validate requires default_language's or OUTREACH_FROM of a from: per language.)"""
        given = self.spec.from_
        if isinstance(given, dict):
            default = self.spec.default_language
            language = language or default
            return (
                given.get(language)
                or given.get(primary_language(language))
                or given.get(default)
                or settings.from_
                or given[sorted(given)[0]]
            )
        sender = given or settings.from_
        if not sender:
            raise self.error("no From: set from: in the campaign or OUTREACH_FROM")
        return sender

    def senders(self, settings: Settings, languages: set[str] | list[str]) -> dict[str, str]:
        """The From of each language, when the campaign gives one per language (else {})."""
        if not isinstance(self.spec.from_, dict):
            return {}
        return {language: self.sender(settings, language) for language in sorted(languages)}

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


def load_campaign(path: Path | str, root: Path | None = None) -> CampaignFile:
    path = Path(path)
    doc = load_yaml(path)
    if not isinstance(doc.data, dict):
        raise FileError(path, "a campaign file is a mapping of keys such as template:, subject:", 1)
    try:
        spec = CampaignSpec.model_validate(doc.data)
    except ValidationError as exc:
        allowed: dict[Loc, list[str]] = {
            (): sorted(f.alias or n for n, f in CampaignSpec.model_fields.items()),
            ("audience",): ["include", "exclude"],
            ("tracking",): ["opens", "clicks"],
            ("event",): sorted(EventSpec.model_fields),
            ("send_at",): ["local"],
            ("window",): ["days", "hours", "holidays"],
        }
        raise validation_errors(doc, exc, allowed) from None
    # With event:, templates get `event` (its title, times and calendar links).
    reserved = RESERVED | {"event"} if spec.event is not None else RESERVED
    clash = [key for key in spec.context if key in reserved]
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
    return CampaignFile(
        path=path,
        spec=spec,
        doc=doc,
        templates_dir=root / "templates",
        segments_path=path.resolve().parent / "segments.yaml",
        topics_path=topics_beside(path),
    )


# Files in campaigns/ that are not campaigns.
NOT_CAMPAIGNS = frozenset({"segments.yaml", "subscribe.yaml", "topics.yaml"})


def find_campaigns(directory: Path = Path("campaigns")) -> list[Path]:
    return sorted(p for p in directory.glob("*.yaml") if p.name not in NOT_CAMPAIGNS)
