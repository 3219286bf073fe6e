"""Calendar invitations: a campaign's `event:` as an iCalendar (RFC 5545) `text/calendar;
method=PUBLISH` part that Outlook, Gmail and Apple Mail show as an event, and the "add to
calendar" links its templates print (Google Calendar, Outlook on the web, our own .ics at
`GET /e/NAME.ics`).

One event has one UID for good — every recipient, every send of the campaign — so a calendar
that already holds it updates it instead of adding a copy. Times travel in UTC; the zone the
campaign wrote them in only has to be given. The calendar body of a language is built once per
campaign and language (the worker keeps it with the compiled messages), never per recipient.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

PRODID = "-//CityNet//outreach//EN"
_ZONE_EXAMPLE = "e.g. 2026-12-15T14:00:00+09:00"


class EventSpec(BaseModel):
    """`event:` of a campaign file."""

    model_config = ConfigDict(extra="forbid")

    title: str | dict[str, str]
    start: datetime
    end: datetime
    location: str | None = None
    url: str | None = None

    @field_validator("title")
    @classmethod
    def _title(cls, v: str | dict[str, str]) -> str | dict[str, str]:
        from outreach.fields import normalise_language

        if isinstance(v, str):
            if not v.strip():
                raise ValueError("the title is empty")
            return v.strip()
        if not v:
            raise ValueError('give a title, or one per language: {ko: "…", en: "…"}')
        out = {}
        for lang, text in v.items():
            if not str(text).strip():
                raise ValueError(f"the {lang} title is empty")
            out[normalise_language(str(lang))] = " ".join(str(text).split())
        return out

    @field_validator("start", "end", mode="before")
    @classmethod
    def _time_text(cls, v: Any) -> Any:
        if isinstance(v, str):
            try:
                return datetime.fromisoformat(v)
            except ValueError:
                raise ValueError(f"{v!r} is not a time: write {_ZONE_EXAMPLE}") from None
        return v

    @field_validator("start", "end")
    @classmethod
    def _zone(cls, v: datetime, info: ValidationInfo) -> datetime:
        if v.tzinfo is None:
            raise ValueError(f"give the time zone of {info.field_name}, {_ZONE_EXAMPLE}")
        if info.field_name == "end":
            start = info.data.get("start")
            if isinstance(start, datetime) and start.tzinfo is not None and v <= start:
                raise ValueError(
                    f"the event would end at {v.isoformat()}, not after its start at "
                    f"{start.isoformat()}: end must be after start"
                )
        return v

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and urlsplit(v).scheme not in ("http", "https"):
            raise ValueError("write a web address, e.g. https://citynet-ap.org/events/…")
        return v


def _utc(moment: datetime) -> datetime:
    # Stored times without a zone (SQLite's) are UTC.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _compact(moment: datetime) -> str:
    return _utc(moment).strftime("%Y%m%dT%H%M%SZ")


@dataclass(frozen=True)
class Invitation:
    """One campaign's event, as stored with the sent campaign (`to_json`/`from_json`)."""

    campaign: str
    uid: str
    titles: dict[str, str]
    start: datetime
    end: datetime
    location: str | None
    url: str | None
    default_language: str
    # When this version of the event was published (DTSTAMP): at `send`, kept with it.
    stamp: datetime

    @classmethod
    def of(cls, campaign: str, spec: EventSpec, default_language: str, base_url: str) -> Invitation:
        titles = {"": spec.title} if isinstance(spec.title, str) else dict(spec.title)
        return cls(
            campaign,
            uid_for(campaign, base_url),
            titles,
            _utc(spec.start),
            _utc(spec.end),
            spec.location,
            spec.url,
            default_language,
            datetime.now(UTC).replace(microsecond=0),
        )

    def title(self, language: str) -> str:
        """The title in `language`: its own, its primary subtag's, else the default
        language's, else any (a title given once is every language's)."""
        from outreach.compose import resolve_language

        if "" in self.titles:
            return self.titles[""]
        chosen = resolve_language(language, set(self.titles), self.default_language)
        return self.titles.get(chosen) or self.titles[sorted(self.titles)[0]]

    def ics(self, language: str) -> bytes:
        """The VCALENDAR (METHOD:PUBLISH) in `language`: the same for every recipient."""
        from icalendar import Calendar, Event

        calendar = Calendar()
        calendar.add("prodid", PRODID)
        calendar.add("version", "2.0")
        calendar.add("method", "PUBLISH")
        event = Event()
        event.add("uid", self.uid)
        event.add("dtstamp", self.stamp)
        event.add("dtstart", self.start)
        event.add("dtend", self.end)
        event.add("summary", self.title(language))
        # A later send of a changed event replaces the one a calendar holds.
        event.add("sequence", int(self.stamp.timestamp()) // 60 % 2**31)
        if self.location:
            event.add("location", self.location)
        if self.url:
            event.add("url", self.url)
            event.add("description", self.url)
        calendar.add_component(event)
        return bytes(calendar.to_ical())

    def links(self, language: str, base_url: str) -> dict[str, Any]:
        """What templates see as `event`: the title in this language, the times, and the
        "add to calendar" links."""
        title = self.title(language)
        details = self.url or ""
        google = urlencode(
            {
                "action": "TEMPLATE",
                "text": title,
                "dates": f"{_compact(self.start)}/{_compact(self.end)}",
                "details": details,
                "location": self.location or "",
            },
            quote_via=quote,
        )
        outlook = urlencode(
            {
                "path": "/calendar/action/compose",
                "rru": "addevent",
                "subject": title,
                "startdt": self.start.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "enddt": self.end.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "body": details,
                "location": self.location or "",
            },
            quote_via=quote,
        )
        return {
            "title": title,
            "start": self.start,
            "end": self.end,
            "location": self.location or "",
            "url": self.url or "",
            "google_url": f"https://calendar.google.com/calendar/render?{google}",
            "outlook_url": f"https://outlook.office.com/calendar/0/deeplink/compose?{outlook}",
            "ics_url": ics_url(base_url, self.campaign, language),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "uid": self.uid,
            "titles": self.titles,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "location": self.location,
            "url": self.url,
            "stamp": self.stamp.isoformat(),
        }

    @classmethod
    def from_json(cls, campaign: str, data: dict[str, Any], default_language: str) -> Invitation:
        return cls(
            campaign,
            data["uid"],
            dict(data["titles"]),
            datetime.fromisoformat(data["start"]),
            datetime.fromisoformat(data["end"]),
            data.get("location"),
            data.get("url"),
            default_language,
            datetime.fromisoformat(data["stamp"]),
        )


def uid_for(campaign: str, base_url: str) -> str:
    """The event's UID: the campaign's name (unique, kept for good) at this installation."""
    host = urlsplit(base_url).hostname or "outreach.invalid"
    return f"{campaign}@{host}"


def ics_url(base_url: str, campaign: str, language: str) -> str:
    return f"{base_url.rstrip('/')}/e/{quote(campaign)}.ics?lang={quote(language)}"


def mime_body(ics: bytes) -> bytes:
    """The calendar as a base64 MIME body (lines of 76), ready to go into every message."""
    encoded = base64.encodebytes(ics).replace(b"\n", b"\r\n")
    return encoded
