"""Topics: what people choose to receive, from `campaigns/topics.yaml`.

    newsletter:
      title: {ko: "시티넷 뉴스레터", en: "CityNet newsletter"}
    events:
      title: {ko: "행사·웨비나 안내", en: "Events and webinars"}
      description: {ko: "웨비나, 연수, 총회 초대", en: "Invitations to webinars, …"}

A contact receives every topic until they leave it (a `TopicLeft` row). A campaign names its
topic (`topic: events`): its one-click unsubscribe leaves that topic, and its audience leaves
out whoever left it, at the snapshot (`receives`, one condition in the snapshot's SQL) and
again just before each message (`store.suppressed`, the look-up refreshed each second).
What a contact receives is changed by `consent` (each join and leave is a consent record);
leaving through a message is `unsubscribe`. Mail that is not a campaign (confirmations,
notices) has no topic.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator
from sqlalchemy import ColumnElement, exists, select
from sqlalchemy.orm import Session

from outreach.errors import FileError, FileErrors
from outreach.fields import normalise_language, primary_language
from outreach.models import Contact, TopicLeft
from outreach.yamlfile import Loc, load_yaml, validation_errors

FILE_NAME = "topics.yaml"
DEFAULT_PATH = Path("campaigns") / FILE_NAME
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
# Every reader falls back to these: the catalogs that are always complete.
REQUIRED_LANGUAGES = ("ko", "en")
FALLBACK = "en"


def _texts(value: str | dict[str, str], what: str) -> dict[str, str]:
    """A text per language; a plain string is the same text in every language."""
    if isinstance(value, str):
        if not value.strip():
            raise ValueError(f"the {what} is empty")
        return {"": value.strip()}
    out = {}
    for lang, text in value.items():
        if not str(text).strip():
            raise ValueError(f"the {lang} {what} is empty")
        out[normalise_language(str(lang))] = str(text).strip()
    missing = [lang for lang in REQUIRED_LANGUAGES if lang not in out]
    if missing:
        raise ValueError(
            f"give the {what} in {' and '.join(missing)} too (or one text for every language)"
        )
    return out


class TopicSpec(BaseModel):
    """One topic in `campaigns/topics.yaml`; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")
    title: str | dict[str, str]
    description: str | dict[str, str] | None = None

    @field_validator("title")
    @classmethod
    def _title(cls, v: str | dict[str, str]) -> dict[str, str]:
        return _texts(v, "title")

    @field_validator("description")
    @classmethod
    def _description(cls, v: str | dict[str, str] | None) -> dict[str, str] | None:
        return None if v is None else _texts(v, "description")


def _in(texts: dict[str, str], language: str | None) -> str | None:
    if not texts:
        return None
    if "" in texts:
        return texts[""]
    for lang in (language, primary_language(language) if language else None, FALLBACK):
        if lang and lang in texts:
            return texts[lang]
    return next(iter(texts.values()))


@dataclass(frozen=True)
class Topic:
    name: str
    title: dict[str, str]
    description: dict[str, str] = field(default_factory=dict)

    def title_in(self, language: str | None) -> str:
        return _in(self.title, language) or self.name

    def description_in(self, language: str | None) -> str | None:
        return _in(self.description, language)

    @property
    def version(self) -> str:
        """Which wording of the topic a person chose on: recorded with each join and leave,
        so a record says what was shown even after the title or description changed."""
        shown = json.dumps([self.title, self.description], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(shown.encode()).hexdigest()[:12]

    def as_sent(self) -> dict[str, Any]:
        """What a campaign stores of its topic when sent: its pages and the mailto path then
        need no topics.yaml, and name the topic as the message did."""
        return {"name": self.name, "title": self.title, "description": self.description}

    @classmethod
    def from_sent(cls, stored: Any) -> Topic | None:
        if not isinstance(stored, dict) or not isinstance(stored.get("name"), str):
            return None
        return cls(
            stored["name"], dict(stored.get("title") or {}), dict(stored.get("description") or {})
        )


@dataclass(frozen=True)
class Topics:
    """The topics of one file, in its order; empty when there is no file."""

    path: Path
    by_name: dict[str, Topic] = field(default_factory=dict)

    def __iter__(self) -> Iterator[Topic]:
        return iter(self.by_name.values())

    def __len__(self) -> int:
        return len(self.by_name)

    def __contains__(self, name: object) -> bool:
        return name in self.by_name

    def get(self, name: str | None) -> Topic | None:
        return self.by_name.get(name) if name else None

    @property
    def exists(self) -> bool:
        return bool(self.by_name)

    def listing(self) -> str:
        return ", ".join(self.by_name) or "none"

    def unknown(self, name: str) -> str:
        """Why `name` is not a topic, and what to write instead."""
        if not self.by_name:
            return (
                f"unknown topic {name!r}: there is no {self.path}; create it with each "
                "topic's title (README, Topics)"
            )
        near = difflib.get_close_matches(name, list(self.by_name), n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        return f"unknown topic {name!r}{hint}; the topics in {self.path}: {self.listing()}"


def load_topics(path: Path | str = DEFAULT_PATH) -> Topics:
    """The topics of a file, or none when it does not exist; a malformed file is a
    located error (FileError or FileErrors)."""
    path = Path(path)
    if not path.is_file():
        return Topics(path)
    doc = load_yaml(path)
    if not isinstance(doc.data, dict) or not doc.data:
        raise FileError(
            path,
            "a mapping of topic names to their titles, e.g. events: {title: {ko: 행사 안내, "
            "en: Events}}",
            1,
        )
    errors: list[FileError] = []
    found: dict[str, Topic] = {}
    for key, body in doc.data.items():
        name = str(key)
        line = doc.lines.line_for((name,))
        if not NAME.match(name):
            errors.append(
                FileError(
                    path,
                    f"topic name {name!r}: use lower-case letters, digits, '-' and '_' "
                    "(at most 64), e.g. events",
                    line,
                )
            )
            continue
        if not isinstance(body, dict):
            errors.append(
                FileError(
                    path, f"topic {name!r}: write its title:, e.g. title: {{ko: …, en: …}}", line
                )
            )
            continue
        try:
            spec = TopicSpec.model_validate(body)
        except ValidationError as exc:
            allowed: dict[Loc, list[str]] = {(name,): ["description", "title"]}
            errors += validation_errors(doc, exc, allowed, prefix=(name,)).errors
            continue
        assert isinstance(spec.title, dict)
        description = spec.description if isinstance(spec.description, dict) else {}
        found[name] = Topic(name, spec.title, description)
    if errors:
        raise FileErrors(errors)
    return Topics(path, found)


def beside(campaign_path: Path) -> Path:
    """The topics file of a campaign: in its folder, as segments.yaml is (the path as the
    campaign's was given, for messages)."""
    return campaign_path.parent / FILE_NAME


def receives(topic: str) -> ColumnElement[bool]:
    """Contacts who have not left `topic`: one NOT EXISTS on the topics-left key."""
    return ~exists().where(TopicLeft.contact_id == Contact.id, TopicLeft.topic == topic)


def left_by(session: Session, contact_id: int) -> dict[str, TopicLeft]:
    """The topics a contact left, by name."""
    rows = session.scalars(
        select(TopicLeft).where(TopicLeft.contact_id == contact_id).order_by(TopicLeft.topic)
    )
    return {row.topic: row for row in rows}
