"""Campaign reports: what happened to every delivery, computed with SQL aggregates.

Nothing here loops over deliveries in Python; each figure is one GROUP BY, so a report on a
campaign of a million messages costs a handful of queries.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, tzinfo
from html import escape
from pathlib import Path
from typing import Any

from markupsafe import Markup
from sqlalchemy import ColumnElement, distinct, func, select
from sqlalchemy.orm import Session

from outreach import store
from outreach.links import identify, tracked_links
from outreach.models import Campaign, Contact, Delivery, Event, utcnow
from outreach.segments import load_segments


@dataclass
class Report:
    campaign: str
    state: str
    reason: str | None
    generated_at: str
    total: int
    counts: dict[str, int]
    # None where it cannot be computed: nothing to divide by, or opens or clicks not tracked.
    rates: dict[str, float | None]
    # What the campaign as sent tracked: an untracked rate is unknown, never 0.
    tracking: dict[str, bool]
    events: dict[str, dict[str, int]]
    top_links: list[dict[str, Any]] = field(default_factory=list)
    by_language: list[dict[str, Any]] = field(default_factory=list)
    by_segment: list[dict[str, Any]] = field(default_factory=list)
    bounces_by_domain: list[dict[str, Any]] = field(default_factory=list)
    # Refusals of our sending (SPF/DKIM/DMARC, spam, blocked IP), by receiving domain: a
    # provider that rejects many is a setup problem to fix, not addresses to drop.
    policy_by_domain: list[dict[str, Any]] = field(default_factory=list)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    timeline_unit: str = "minute"
    # Unsubscribes through this campaign's messages: each topic left, and everything apart.
    unsubscribes: dict[str, Any] = field(default_factory=lambda: {"everything": 0, "by_topic": {}})
    # Deliveries read: an open recorded, or a click (whose reader's client blocked images).
    opened: int = 0
    started_at: str | None = None
    finished_at: str | None = None
    # OUTREACH_TIMEZONE: the zone people read the report's times in (JSON keeps UTC).
    timezone: str = "UTC"

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    def rate_text(self, name: str) -> str:
        """A rate for people: `31.6%`, `–` with nothing to count, `not tracked`."""
        kind = TRACKED_BY.get(name)
        if kind is not None and not self.tracking[kind]:
            return "not tracked"
        value = self.rates[name]
        return "–" if value is None else f"{value * 100:.1f}%"


# The rates that exist only where the campaign tracked their events.
TRACKED_BY = {"open": "opens", "click": "clicks"}


def _tracking(campaign: Campaign) -> dict[str, bool]:
    return {kind: campaign.tracks(kind) for kind in ("opens", "clicks")}


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _domain(session: Session) -> ColumnElement[str]:
    if session.get_bind().dialect.name == "postgresql":
        return func.split_part(Contact.email, "@", 2)
    return func.substr(Contact.email, func.instr(Contact.email, "@") + 1)


def _bucket(session: Session, unit: str) -> ColumnElement[str]:
    """The start of each minute or hour, in UTC, as ISO 8601 (`2026-12-01T09:05Z`)."""
    if session.get_bind().dialect.name == "postgresql":
        fmt = 'YYYY-MM-DD"T"HH24:MI"Z"' if unit == "minute" else 'YYYY-MM-DD"T"HH24:00"Z"'
        return func.to_char(func.date_trunc(unit, func.timezone("UTC", Delivery.sent_at)), fmt)
    fmt = "%Y-%m-%dT%H:%MZ" if unit == "minute" else "%Y-%m-%dT%H:00Z"
    return func.strftime(fmt, Delivery.sent_at)


def build(
    session: Session,
    campaign: Campaign,
    segments_path: Path | None = None,
    timezone: str = "UTC",
) -> Report:
    """The whole report of one campaign: each part one SQL aggregate. `timezone` (an IANA
    name, OUTREACH_TIMEZONE) is the zone its times are shown in; JSON keeps UTC."""
    cid = campaign.id
    tracked = _tracking(campaign)
    counts = store.counts(session, cid)
    events = _events(session, cid)
    opened = _opened(session, cid)
    unit, timeline = _timeline(session, cid)
    return Report(
        campaign=campaign.name,
        state=campaign.state,
        reason=campaign.state_reason,
        generated_at=utcnow().isoformat(timespec="seconds"),
        total=sum(counts.values()),
        counts=counts,
        rates=_rates(counts, events, tracked, opened),
        tracking=tracked,
        events=events,
        top_links=_top_links(session, campaign) if tracked["clicks"] else [],
        by_language=_by_language(session, cid),
        by_segment=_by_segment(session, campaign, segments_path),
        bounces_by_domain=_bounces_by_domain(session, cid),
        policy_by_domain=_policy_by_domain(session, cid),
        timeline=timeline,
        timeline_unit=unit,
        unsubscribes=_unsubscribes(session, cid),
        opened=opened,
        started_at=_iso(campaign.started_at),
        finished_at=_iso(campaign.finished_at),
        timezone=timezone,
    )


def _unsubscribes(session: Session, cid: int) -> dict[str, Any]:
    """Who left what through this campaign's messages (a one-click, the page, mailto:, the
    preferences page): a topic, or everything (a suppression)."""
    topic = Event.data["topic"].as_string()
    by_topic: dict[str, int] = {}
    everything = 0
    for name, n in session.execute(
        select(topic, func.count())
        .where(Event.campaign_id == cid, Event.kind == "unsubscribe")
        .group_by(topic)
    ):
        if name is None:
            everything = int(n)
        else:
            by_topic[str(name)] = int(n)
    return {"everything": everything, "by_topic": dict(sorted(by_topic.items()))}


def _iso(when: datetime | None) -> str | None:
    return when.isoformat(timespec="seconds") if when else None


def local(when: datetime | str | None, zone: tzinfo, *, seconds: bool = False) -> str:
    """A time as people here read it: `2026-12-01 09:00 KST` (OUTREACH_TIMEZONE), the zone
    always shown. Accepts a datetime or ISO 8601 text (a report's JSON, `…Z` too)."""
    if when is None:
        return ""
    if isinstance(when, str):
        when = datetime.fromisoformat(when.replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    shown = when.astimezone(zone)
    name = shown.strftime("%Z")
    if not name or name[0] in "+-":  # a zone without an abbreviation: its offset
        offset = shown.strftime("%z")
        name = f"UTC{offset[:3]}:{offset[3:]}"
    return f"{shown:%Y-%m-%d %H:%M{':%S' if seconds else ''}} {name}"


def _events(session: Session, cid: int) -> dict[str, dict[str, int]]:
    """Per kind: how many events, and from how many deliveries."""
    return {
        kind: {"total": int(n), "unique": int(deliveries)}
        for kind, n, deliveries in session.execute(
            select(Event.kind, func.count(), func.count(distinct(Event.delivery_id)))
            .where(Event.campaign_id == cid)
            .group_by(Event.kind)
        )
    }


def _opened(session: Session, cid: int) -> int:
    """Deliveries read: an open recorded, or a click, since whoever clicked read the
    message even when their client blocked the tracking image."""
    return int(
        session.scalar(
            select(func.count(distinct(Event.delivery_id))).where(
                Event.campaign_id == cid, Event.kind.in_(("open", "click"))
            )
        )
        or 0
    )


def _rates(
    counts: dict[str, int],
    events: dict[str, dict[str, int]],
    tracked: dict[str, bool],
    opened: int,
) -> dict[str, float | None]:
    delivered = counts["sent"]  # accepted and not bounced since
    attempted = counts["sent"] + counts["bounced"] + counts["failed"]

    def unique(kind: str) -> int:
        return events.get(kind, {}).get("unique", 0)

    return {
        "delivery": _ratio(delivered, attempted),
        "bounce": _ratio(counts["bounced"], counts["sent"] + counts["bounced"]),
        "unsubscribe": _ratio(unique("unsubscribe"), delivered + counts["bounced"]),
        "open": _ratio(opened, delivered) if tracked["opens"] else None,
        "click": _ratio(unique("click"), delivered) if tracked["clicks"] else None,
    }


def _top_links(session: Session, campaign: Campaign, limit: int = 10) -> list[dict[str, Any]]:
    """Clicks by the template's link — its position and its address with each recipient's
    value as a placeholder — so a link carrying a contact's value is one row, not one per
    recipient. Clicks recorded before links were told apart are sorted out by address."""
    cid = campaign.id
    link, template = Event.data["link"].as_integer(), Event.data["template"].as_string()
    grouped = [
        {"link": position, "url": url, "clicks": int(n), "unique": int(q)}
        for position, url, n, q in session.execute(
            select(link, template, func.count(), func.count(distinct(Event.delivery_id)))
            .where(Event.campaign_id == cid, Event.kind == "click", template.isnot(None))
            .group_by(link, template)
        )
    ]
    rows = {(row["link"], row["url"]): row for row in grouped}
    links = tracked_links(tuple(campaign.expressions or ()))
    url = Event.data["url"].as_string()
    for address, n, q in session.execute(
        select(url, func.count(), func.count(distinct(Event.delivery_id)))
        .where(Event.campaign_id == cid, Event.kind == "click", template.is_(None))
        .group_by(url)
    ):
        found = identify(links, address)
        key = (found.position, found.template) if found else (None, address)
        row = rows.setdefault(key, {"link": key[0], "url": key[1], "clicks": 0, "unique": 0})
        row["clicks"] += int(n)
        row["unique"] += int(q)  # one address per delivery and link: the sum is exact
    ordered = sorted(rows.values(), key=lambda r: (-r["clicks"], r["link"] or 0, r["url"]))
    return ordered[:limit]


# Deliveries that may still be written to; the others without a language never will be.
WAITING = ("queued", "sending", "deferred")


def _by_language(session: Session, cid: int) -> list[dict[str, Any]]:
    """Deliveries by the language they were written in. One never written (skipped before
    its turn, say) has none: it is listed under its state, "(not yet sent)" only while it
    may still be sent."""
    languages: dict[str, dict[str, int]] = {}
    for language, state, n in session.execute(
        select(Delivery.language, Delivery.state, func.count())
        .where(Delivery.campaign_id == cid)
        .group_by(Delivery.language, Delivery.state)
    ):
        if language is None:
            language = "(not yet sent)" if state in WAITING else f"({state})"
        languages.setdefault(language, {})[state] = int(n)
    return [{"language": k, "total": sum(v.values()), **v} for k, v in sorted(languages.items())]


def _by_segment(
    session: Session, campaign: Campaign, segments_path: Path | None
) -> list[dict[str, Any]]:
    """The campaign's included segments as they are today, against its deliveries."""
    if not segments_path or not segments_path.exists():
        return []
    segments = load_segments(segments_path, session)
    rows = []
    for name in campaign.definition.get("audience", {}).get("include", []):
        segment = segments.get(name)
        if segment is None:
            continue
        total, sent, bounced = session.execute(
            select(
                func.count(),
                func.count().filter(Delivery.state == "sent"),
                func.count().filter(Delivery.state == "bounced"),
            )
            .select_from(Delivery)
            .join(Contact, Contact.id == Delivery.contact_id)
            .where(Delivery.campaign_id == campaign.id, segment.where)
        ).one()
        rows.append(
            {"segment": name, "total": int(total), "sent": int(sent), "bounced": int(bounced)}
        )
    return rows


def _bounces_by_domain(session: Session, cid: int) -> list[dict[str, Any]]:
    domain = _domain(session)
    return [
        {"domain": d, "bounced": int(n)}
        for d, n in session.execute(
            select(domain, func.count())
            .select_from(Delivery)
            .join(Contact, Contact.id == Delivery.contact_id)
            .where(Delivery.campaign_id == cid, Delivery.state == "bounced")
            .group_by(domain)
            .order_by(func.count().desc())
            .limit(10)
        )
    ]


def _policy_by_domain(session: Session, cid: int) -> list[dict[str, Any]]:
    """Rejections for our own sending (SPF, DKIM, DMARC, spam, blocked IP), by receiver."""
    event_kind = Event.data["kind"].as_string()
    event_domain = Event.data["domain"].as_string()
    return [
        {"domain": d, "rejected": int(n)}
        for d, n in session.execute(
            select(event_domain, func.count())
            .where(Event.campaign_id == cid, Event.kind == "bounce", event_kind == "policy")
            .group_by(event_domain)
            .order_by(func.count().desc(), event_domain)
            .limit(10)
        )
    ]


def _timeline(session: Session, cid: int) -> tuple[str, list[dict[str, Any]]]:
    """Messages sent per minute, or per hour for a campaign that took longer than 3 hours."""
    first, last = session.execute(
        select(func.min(Delivery.sent_at), func.max(Delivery.sent_at)).where(
            Delivery.campaign_id == cid
        )
    ).one()
    unit = "minute"
    if first is not None and last is not None and _seconds(first, last) > 3 * 3600:
        unit = "hour"
    bucket = _bucket(session, unit)
    return unit, [
        {"at": at, "sent": int(n)}
        for at, n in session.execute(
            select(bucket, func.count())
            .where(Delivery.campaign_id == cid, Delivery.sent_at.isnot(None))
            .group_by(bucket)
            .order_by(bucket)
        )
    ]


def _seconds(a: Any, b: Any) -> float:
    if isinstance(a, datetime) and isinstance(b, datetime):
        return (b.replace(tzinfo=None) - a.replace(tzinfo=None)).total_seconds()
    return 0.0


COLOURS = {
    "sent": "#2f855a",
    "queued": "#a0aec0",
    "sending": "#4299e1",
    "deferred": "#d69e2e",
    "failed": "#c53030",
    "skipped": "#718096",
    "bounced": "#dd6b20",
}


def _svg(width: int, height: int, name: str, body: str) -> Markup:
    """An inline chart that scales to its column (viewBox; the page sets max-width: 100%,
    height: auto), named for a screen reader by what it shows. Its type size is set here,
    where labels are measured against it."""
    return Markup(
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-size="{TYPE_SIZE}" role="img" '
        f'aria-label="{escape(name)}" class="chart">{body}</svg>'
    )


# Charts are drawn this many units wide, at TYPE_SIZE units a letter: a phone's column (343
# px at 375) shows them at 95%, so their type stays above 11 px; a wide screen at their own
# size.
CHART_WIDTH = 360
TYPE_SIZE = 12
_LABEL_MARGIN = 4  # between a label's end and the chart's
LABEL_ROOM = CHART_WIDTH - _LABEL_MARGIN
# Widths of characters in em, generous (the widest sans-serif faces a reader may have), so a
# label estimated to fit does: "m", "W" and "%" are nearly twice an "e", Korean a full em.
_NARROW = frozenset(" .,:;!|'/()[]-ijlft1rI")
_WIDE = frozenset("mwMW%@")


def _em(char: str) -> float:
    if char in _NARROW:
        return 0.36
    if char in _WIDE:
        return 0.95
    if unicodedata.east_asian_width(char) in "WF":
        return 1.0
    return 0.72 if char.isupper() else 0.6


def _width(text: str) -> float:
    """`text`'s width in a chart's units, estimated generously."""
    return TYPE_SIZE * sum(_em(c) for c in text)


def _fitting(chars: Iterable[str], room: float) -> int:
    """How many of `chars`, taken in order, fit within `room` units."""
    used, n = 0.0, 0
    for char in chars:
        used += _width(char)
        if used > room:
            break
        n += 1
    return n


def _end(text: str, room: float) -> str:
    """The longest end of `text` within `room` units."""
    return text[len(text) - _fitting(reversed(text), room) :]


def fit_label(label: str, room: float) -> str:
    """`label` cut at the end, to fit `room` units."""
    if _width(label) <= room:
        return label
    return label[: _fitting(label, room - _width("…"))] + "…"


def bar_chart(
    items: list[tuple[str, int]],
    *,
    name: str = "chart",
    colour: str = "#0b5cad",
    colours: dict[str, str] | None = None,
    width: int = CHART_WIDTH,
    titles: list[str] | None = None,
) -> Markup:
    """Horizontal bars as inline SVG: no script, no network; each label above its bar, so
    the chart is narrow enough to keep its type readable on a phone. `name` says what it
    counts (its accessible name lists every bar); `titles`: each bar's whole label, shown on
    hover where the label is short."""
    if not items:
        return Markup('<p class="empty">nothing yet</p>')
    row_h = 38
    top = max(n for _, n in items) or 1
    height = row_h * len(items)
    parts = []
    for i, (label, n) in enumerate(items):
        y = i * row_h
        w = max(int((width - 48) * n / top), 1)  # the count's room after the longest bar
        fill = (colours or {}).get(label, colour)
        short = fit_label(label, width - _LABEL_MARGIN)
        title = titles[i] if titles else label
        parts.append(
            f'<text x="0" y="{y + 13}">{escape(short)}<title>{escape(title)}</title></text>'
        )
        parts.append(f'<rect x="0" y="{y + 18}" width="{w}" height="14" fill="{fill}"/>')
        parts.append(f'<text x="{w + 6}" y="{y + 30}">{n}</text>')
    spoken = ", ".join(
        f"{(titles[i] if titles else label)}: {n}" for i, (label, n) in enumerate(items)
    )
    return _svg(width, height, f"{name} — {spoken}", "".join(parts))


def timeline_chart(
    points: list[dict[str, Any]], width: int = CHART_WIDTH, height: int = 120
) -> Markup:
    if not points:
        return Markup('<p class="empty">nothing sent yet</p>')
    top = max(p["sent"] for p in points) or 1
    step = min(width / max(len(points), 1), 40.0)
    bars = []
    for i, p in enumerate(points):
        h = int((height - 30) * p["sent"] / top)
        bars.append(
            f'<rect x="{i * step:.1f}" y="{height - 20 - h}" width="{max(step - 1, 1):.1f}"'
            f' height="{h}" fill="#0b5cad"><title>{escape(p["at"])}: {p["sent"]}'
            "</title></rect>"
        )
    labels = (
        f'<text x="0" y="{height - 4}">{escape(points[0]["at"])}</text>'
        f'<text x="{width}" y="{height - 4}" text-anchor="end">'
        f"{escape(points[-1]['at'])}</text>"
    )
    total = sum(p["sent"] for p in points)
    name = f"messages sent: {total}, from {points[0]['at']} to {points[-1]['at']}"
    return _svg(width, height, name, "".join(bars) + labels)


def link_label(link: dict[str, Any], room: float = LABEL_ROOM) -> str:
    """A label that tells a campaign's links apart and fits the chart's label column
    (`room` units at 12 px): the link's position and its address without the scheme, cut in
    the middle when long, so the end that differs (`…register?org={organisation}`) shows
    rather than a prefix they all share."""
    address = re.sub(r"^https?://(www\.)?", "", link["url"])
    position = f"{link['link']}. " if link.get("link") else ""
    if _width(position + address) <= room:
        return position + address
    host, slash, _ = address.partition("/")
    if slash:  # the host and at least a word of the end
        start = f"{position}{host}/…"
        tail = _end(address, room - _width(start))
        if len(tail) >= 12:
            return start + tail
    start = f"{position}…"  # else the end alone: it tells links apart
    return start + _end(address, room - _width(start))


def render_html(report: Report, zone: tzinfo | None = None) -> str:
    """The report as one self-contained page, its times in `zone` (OUTREACH_TIMEZONE)."""
    import jinja2

    zone = zone or UTC
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "web_templates")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    states = [(s, n) for s, n in report.counts.items() if n]
    links_chart = (
        bar_chart(
            [(link_label(link), link["clicks"]) for link in report.top_links],
            titles=[link["url"] for link in report.top_links],
            name="clicks by link",
        )
        if report.tracking["clicks"]
        else Markup('<p class="empty">not tracked: the campaign does not track clicks</p>')
    )
    timeline = [{**point, "at": local(point["at"], zone)} for point in report.timeline]
    return env.get_template("report.html").render(
        r=report,
        states_chart=bar_chart(states, colours=COLOURS, name="deliveries by state"),
        links_chart=links_chart,
        languages_chart=bar_chart(
            [(row["language"], row["total"]) for row in report.by_language],
            name="deliveries by language",
        ),
        domains_chart=bar_chart(
            [(row["domain"], row["bounced"]) for row in report.bounces_by_domain],
            colour="#dd6b20",
            name="bounces by domain",
        ),
        policy_chart=bar_chart(
            [(row["domain"] or "(unknown)", row["rejected"]) for row in report.policy_by_domain],
            colour="#c53030",
            name="policy rejections by receiving domain",
        ),
        timeline_chart=timeline_chart(timeline),
        rate=report.rate_text,
        when=lambda at: local(at, zone),
        link_label=link_label,
    )
