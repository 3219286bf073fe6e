"""When each delivery of a campaign becomes due: `send_at: {local: …}` (a wall-clock time in
each recipient's own zone) and `window:` (the days and hours, in the recipient's zone, when
their message may go).

A delivery's due time is its `next_attempt_at`, which claims already honour: the worker
claims nothing early, and the sweep (see `tasks`) wakes a worker to the second for the next
due group. Due times are worked out per zone, not per contact: an audience spans a handful
of zones, so the deliveries are updated in one statement per zone.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator
from sqlalchemy import ColumnElement, and_, func, select, update
from sqlalchemy.orm import Session

from outreach.models import Contact, Delivery, utcnow
from outreach.zones import contact_zone, several_zones, zone

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# Korean and English spellings of the days, to their three-letter names.
_DAY_NAMES = {
    **{d: d for d in DAYS},
    **dict(
        zip(
            ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"),
            DAYS,
            strict=True,
        )
    ),
    **dict(zip(("월", "화", "수", "목", "금", "토", "일"), DAYS, strict=True)),
    **dict(
        zip(
            ("월요일", "화요일", "수요일", "목요일", "금요일", "토요일", "일요일"),
            DAYS,
            strict=True,
        )
    ),
}
_HOURS = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
# How far ahead a window's next opening is looked for: a year and a bit of holidays.
_HORIZON_DAYS = 400


class LocalTime(BaseModel):
    """`send_at: {local: 2026-12-08T09:00}`: that wall-clock time in each recipient's zone."""

    model_config = ConfigDict(extra="forbid")
    local: datetime

    @field_validator("local", mode="before")
    @classmethod
    def _text(cls, v: Any) -> Any:
        if isinstance(v, str):
            try:
                return datetime.fromisoformat(v)
            except ValueError:
                raise ValueError(
                    f"{v!r} is not a time: write e.g. send_at: {{local: 2026-12-08T09:00}}"
                ) from None
        return v

    @field_validator("local")
    @classmethod
    def _naive(cls, v: datetime) -> datetime:
        if v.tzinfo is not None:
            raise ValueError(
                "a local time has no offset (it is read in each recipient's zone): write e.g. "
                "{local: 2026-12-08T09:00}, or a plain send_at: 2026-12-08T09:00:00+09:00"
            )
        return v


class Window(BaseModel):
    """`window: {days: [mon, …], hours: "08:00-18:00", holidays: [2026-12-25]}`, read in each
    recipient's own zone."""

    model_config = ConfigDict(extra="forbid")
    days: list[str] = list(DAYS[:5])
    hours: str = "00:00-24:00"
    holidays: list[date] = []

    @field_validator("days", mode="before")
    @classmethod
    def _days(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [part for part in re.split(r"[\s,]+", v) if part]
        if not isinstance(v, list) or not v:
            raise ValueError("list the days, e.g. days: [mon, tue, wed, thu, fri]")
        out = []
        for day in v:
            name = _DAY_NAMES.get(str(day).strip().lower())
            if name is None:
                raise ValueError(f"{day!r} is not a day: write mon, tue, wed, thu, fri, sat or sun")
            out.append(name)
        return sorted(set(out), key=DAYS.index)

    @field_validator("hours", mode="before")
    @classmethod
    def _hours(cls, v: Any) -> Any:
        found = _HOURS.match(str(v))
        bad = f'{v!r} is not a span of hours: write e.g. hours: "08:00-18:00"'
        if not found:
            raise ValueError(bad)
        h1, m1, h2, m2 = (int(x) for x in found.groups())
        start, end = h1 * 60 + m1, h2 * 60 + m2
        if m1 > 59 or m2 > 59 or h1 > 23 or end > 24 * 60:
            raise ValueError(bad)
        if end <= start:
            raise ValueError(
                f"hours {v!r} end before they start: write the earlier time first, e.g. "
                '"08:00-18:00" (a window across midnight is two days\' hours)'
            )
        return f"{h1:02d}:{m1:02d}-{h2:02d}:{m2:02d}"

    @field_validator("holidays", mode="before")
    @classmethod
    def _holidays(cls, v: Any) -> Any:
        if not isinstance(v, list):
            raise ValueError("list the dates, e.g. holidays: [2026-12-25, 2027-01-01]")
        out = []
        for day in v:
            if isinstance(day, datetime):
                day = day.date()
            if not isinstance(day, date):
                try:
                    day = date.fromisoformat(str(day).strip())
                except ValueError:
                    raise ValueError(
                        f"{day!r} is not a date: write e.g. holidays: [2026-12-25]"
                    ) from None
            out.append(day)
        return out

    def span(self) -> tuple[int, int]:
        """Minutes after midnight the window opens and closes."""
        start, end = self.hours.split("-")
        return _minutes(start), _minutes(end)


def _minutes(text: str) -> int:
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


def _at(day: date, minutes: int, tz: tzinfo) -> datetime:
    """The moment `minutes` after midnight of `day` on the zone's clocks, in UTC."""
    # Wall-clock arithmetic, then read in the zone: a DST day has 23 or 25 hours.
    wall = datetime.combine(day, time()) + timedelta(minutes=minutes)
    return wall.replace(tzinfo=tz).astimezone(UTC)


def next_opening(moment: datetime, window: Window, tz: tzinfo) -> datetime:
    """The first moment at or after `moment` inside the window, in the zone's days and hours."""
    start, end = window.span()
    holidays = set(window.holidays)
    first = moment.astimezone(tz).date()
    for offset in range(_HORIZON_DAYS):
        day = first + timedelta(days=offset)
        if DAYS[day.weekday()] not in window.days or day in holidays:
            continue
        opens, closes = _at(day, start, tz), _at(day, end, tz)
        if moment < opens:
            return opens
        if moment < closes:
            return moment
    raise ValueError("the window never opens in the coming year: check its days and holidays")


def wall_clock(local: datetime, tz: tzinfo) -> datetime:
    """A wall-clock time in a zone, in UTC (DST-correct: the zone's offset on that day)."""
    return local.replace(tzinfo=tz).astimezone(UTC)


@dataclass(frozen=True)
class Timing:
    """A campaign's send_at and window as the worker needs them (kept in its definition)."""

    send_at: datetime | None = None  # a moment (aware)
    local: datetime | None = None  # a wall-clock time (naive) in each recipient's zone
    window: Window | None = None

    @property
    def per_zone(self) -> bool:
        return self.local is not None or self.window is not None

    def due(self, zone_name: str, now: datetime) -> datetime:
        """When a recipient in this zone becomes due; `now` when their moment has passed."""
        tz = zone(zone_name)
        at = wall_clock(self.local, tz) if self.local is not None else self.send_at or now
        at = max(at, now)
        if self.window is not None:
            at = next_opening(at, self.window, tz)
        return at

    def as_definition(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.local is not None:
            out["send_at_local"] = self.local.isoformat()
        if self.window is not None:
            out["window"] = self.window.model_dump(mode="json")
        return out

    @classmethod
    def from_definition(cls, definition: dict[str, Any]) -> Timing:
        local = definition.get("send_at_local")
        window = definition.get("window")
        return cls(
            local=datetime.fromisoformat(local) if local else None,
            window=Window.model_validate(window) if window else None,
        )


def _zone_groups(
    session: Session, where: ColumnElement[bool], joined: bool
) -> list[tuple[str | None, str | None, int]]:
    query = select(Contact.timezone, Contact.country, func.count())
    if joined:
        query = query.join(Delivery, Delivery.contact_id == Contact.id)
    rows = session.execute(query.where(where).group_by(Contact.timezone, Contact.country)).all()
    return [(tz, country, int(n)) for tz, country, n in rows]


def _same(column: Any, value: str | None) -> ColumnElement[bool]:
    same: ColumnElement[bool] = column.is_(None) if value is None else column == value
    return same


def apply(
    session: Session, campaign_id: int, timing: Timing, default_zone: str, now: datetime
) -> None:
    """Set the due time of the campaign's deliveries not yet tried, zone by zone."""
    if not timing.per_zone:
        return
    fresh = and_(
        Delivery.campaign_id == campaign_id, Delivery.state == "queued", Delivery.attempts == 0
    )
    for tz_name, country, _ in _zone_groups(session, fresh, joined=True):
        due = timing.due(contact_zone(tz_name, country, default_zone), now)
        ids = select(Contact.id).where(
            _same(Contact.timezone, tz_name), _same(Contact.country, country)
        )
        session.execute(
            update(Delivery)
            .where(fresh, Delivery.contact_id.in_(ids))
            .values(next_attempt_at=due)
            .execution_options(synchronize_session=False)
        )


@dataclass(frozen=True)
class Group:
    """Deliveries of one zone due at one moment."""

    zone: str
    at: datetime  # UTC
    count: int
    at_once: bool  # their moment had passed: due when the campaign was sent


def groups(
    session: Session, campaign_id: int, default_zone: str, now: datetime | None = None
) -> list[Group]:
    """The campaign's deliveries still waiting for their first attempt, by zone and due time,
    soonest first; those already due are `at_once`."""
    now = now or utcnow()
    rows = session.execute(
        select(Contact.timezone, Contact.country, Delivery.next_attempt_at, func.count())
        .join(Contact, Delivery.contact_id == Contact.id)
        .where(
            Delivery.campaign_id == campaign_id,
            Delivery.state == "queued",
            Delivery.attempts == 0,
        )
        .group_by(Contact.timezone, Contact.country, Delivery.next_attempt_at)
    ).all()
    merged: dict[tuple[str, datetime, bool], int] = {}
    for tz_name, country, at, n in rows:  # `at`: aware UTC (the column's type)
        late = at <= now
        group = (contact_zone(tz_name, country, default_zone), now if late else at, late)
        merged[group] = merged.get(group, 0) + int(n)
    found = [Group(z, at, n, late) for (z, at, late), n in merged.items()]
    return sorted(found, key=lambda g: (g.at, g.zone))


def by_time(found: Iterable[Group]) -> list[dict[str, Any]]:
    """`[{"at": "2026-12-08T00:00:00Z", "count": 120}, …]`: the JSON schedule, in UTC."""
    totals: dict[datetime, int] = {}
    for group in found:
        at = group.at.astimezone(UTC).replace(microsecond=0)
        totals[at] = totals.get(at, 0) + group.count
    return [
        {"at": at.strftime("%Y-%m-%dT%H:%M:%SZ"), "count": n} for at, n in sorted(totals.items())
    ]


@dataclass
class AudienceZones:
    """What validate says of an audience's zones for a campaign with a local send_at or a
    window: who is in a country of several zones without their own, whose moment has passed."""

    several: dict[str, int]
    passed: int


def audience_zones(
    session: Session, where: ColumnElement[bool], timing: Timing, default_zone: str
) -> AudienceZones:
    now = utcnow()
    several: dict[str, int] = {}
    passed = 0
    for tz_name, country, n in _zone_groups(session, where, joined=False):
        if tz_name is None and several_zones(country):
            assert country is not None
            several[country] = several.get(country, 0) + n
        own = zone(contact_zone(tz_name, country, default_zone))
        if timing.local is not None and wall_clock(timing.local, own) <= now:
            passed += n
    return AudienceZones(several, passed)


def hold_outside_window(
    session: Session,
    campaign_id: int,
    ids: list[int],
    worker: str,
    window: Window,
    default_zone: str,
) -> list[int]:
    """Of deliveries just claimed, give back those whose window is closed now (the rate made
    them late, or a retry fell outside), due at their next opening; returns the others."""
    now = utcnow()
    rows = session.execute(
        select(Delivery.id, Contact.timezone, Contact.country)
        .join(Contact, Delivery.contact_id == Contact.id)
        .where(Delivery.id.in_(ids))
    ).all()
    later: dict[datetime, list[int]] = {}
    for delivery_id, tz_name, country in rows:
        opens = next_opening(now, window, zone(contact_zone(tz_name, country, default_zone)))
        if opens > now:
            later.setdefault(opens, []).append(delivery_id)
    for opens, held in later.items():
        session.execute(
            update(Delivery)
            .where(
                Delivery.campaign_id == campaign_id,
                Delivery.id.in_(held),
                Delivery.worker == worker,
                Delivery.state == "sending",
            )
            .values(state="queued", worker=None, lease_until=None, next_attempt_at=opens)
            .execution_options(synchronize_session=False)
        )
    waiting = {i for held in later.values() for i in held}
    return [i for i in ids if i not in waiting]
