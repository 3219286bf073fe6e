"""Segments: named audiences from `campaigns/segments.yaml`, compiled to one SQL query each.

A segment never loads contacts into Python to filter them; it is a WHERE clause the
database evaluates, and suppressed addresses are excluded by the same query. Conditions on
a contact's history with earlier campaigns (`received`, `clicked`, `engaged`...) are EXISTS
subqueries over deliveries and events in that same WHERE clause; `topic: events` (receives
it) and `left: {topic: events, days: N}` (left it: a consent record) read the topics of
campaigns/topics.yaml beside the file.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import (
    ColumnElement,
    and_,
    bindparam,
    exists,
    false,
    func,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.orm import InstrumentedAttribute, Session, aliased

from outreach.campaigns import CampaignFile, find_campaigns
from outreach.errors import FileError, FileErrors, NotFound
from outreach.fields import KNOWN_COLUMNS, normalise_field
from outreach.models import (
    Campaign,
    ConsentRecord,
    Contact,
    ContactTag,
    Delivery,
    Event,
    Suppression,
    utcnow,
)
from outreach.topics import FILE_NAME as TOPICS_FILE
from outreach.topics import NAME as TOPIC_NAME
from outreach.topics import Topics, load_topics, receives
from outreach.yamlfile import Loc, YamlDoc, load_yaml

DEFAULT_PATH = Path("campaigns/segments.yaml")
FIELDS = tuple(c for c in KNOWN_COLUMNS if c not in ("consent_date", "topics_left"))
COMBINATORS = ("all", "any", "not")
VALUE_OPERATORS = ("in", "not")
TAG_OPERATORS = ("any", "all", "none")
SEGMENT_KEYS = ("description", "where")
Scalar = str | int | float | bool | None

# History conditions: the event kinds each one looks for (`received` reads deliveries).
HISTORY_EVENTS = {
    "received": (),
    "opened": ("open",),
    "clicked": ("click",),
    "bounced": ("bounce",),
    "unsubscribed": ("unsubscribe",),
    "engaged": ("click", "open"),
}
HISTORY_KEYS = {
    **{key: ("campaign", "days") for key in HISTORY_EVENTS},
    "clicked": ("campaign", "url", "days"),
    "engaged": ("days",),
}
# Topics (campaigns/topics.yaml): who receives one, and who left one (in the last N days).
TOPIC_KEYS = ("topic", "left")
LEFT_KEYS = ("topic", "days")
MAX_DAYS = 36500
MAX_URL = 2000


@dataclass(frozen=True)
class Segment:
    name: str
    description: str | None
    where: ColumnElement[bool]
    line: int | None
    # The history conditions it uses, as (key, campaign): what `untracked` looks at.
    history: tuple[tuple[str, str], ...] = ()


class _Compiler:
    """Turns the parsed YAML of one `where:` into a SQLAlchemy expression, or located errors."""

    def __init__(self, doc: YamlDoc) -> None:
        self.doc = doc
        self.errors: list[FileError] = []
        # Campaign and topic names the conditions mention, with where: checked once all is
        # parsed.
        self.campaigns: list[tuple[str, Loc]] = []
        self.topics: list[tuple[str, Loc]] = []
        self.references: list[tuple[str, str]] = []
        # The errors of each segment, by its name (the first part of every location).
        self.by_segment: dict[str, list[FileError]] = {}

    def error(self, loc: Loc, message: str) -> ColumnElement[bool]:
        error = FileError(self.doc.path, message, self.doc.lines.line_for(loc))
        self.errors.append(error)
        if loc:
            self.by_segment.setdefault(str(loc[0]), []).append(error)
        return false()

    def condition(self, node: Any, loc: Loc) -> ColumnElement[bool]:
        if not isinstance(node, dict) or not node:
            return self.error(loc, "a condition must be a mapping such as {country: KR}")
        parts = []
        for key, value in node.items():
            here = (*loc, key)
            if key in ("all", "any"):
                if not isinstance(value, list) or not value:
                    parts.append(self.error(here, f"{key}: takes a list of conditions"))
                    continue
                subs = [self.condition(v, (*here, i)) for i, v in enumerate(value)]
                parts.append(and_(*subs) if key == "all" else or_(*subs))
            elif key == "not":
                parts.append(not_(self.condition(value, here)))
            else:
                parts.append(self.field(str(key), value, here))
        return and_(*parts) if len(parts) > 1 else parts[0]

    def field(self, key: str, value: Any, loc: Loc) -> ColumnElement[bool]:
        if key == "tags":
            return self.tags(value, loc)
        if key in HISTORY_EVENTS:
            return self.history(key, value, loc)
        if key == "topic":
            return self.value(key, value, loc, lambda v: self.topic(v, loc))
        if key == "left":
            return self.left(value, loc)
        if key.startswith("attributes."):
            name = key.split(".", 1)[1]
            if not name:
                return self.error(loc, "write attributes.KEY, e.g. attributes.region")
            return self.value(key, value, loc, lambda v: _attribute_equals(name, v))
        if key not in FIELDS:
            allowed = ", ".join(
                (*COMBINATORS, *FIELDS, "attributes.KEY", *HISTORY_EVENTS, *TOPIC_KEYS)
            )
            return self.error(loc, f"unknown field or operator {key!r}; allowed: {allowed}")
        column: InstrumentedAttribute[Any] = getattr(Contact, key)

        def equals(v: Scalar) -> ColumnElement[bool]:
            if v is None:
                return column.is_(None)
            normalised = self.normalise(key, v, loc)
            if key == "language" and "-" not in normalised:
                # `language: ko` means Korean in any region: ko, ko-KR.
                return or_(column == normalised, column.like(normalised + "-%"))
            return column == normalised

        return self.value(key, value, loc, equals)

    def value(self, key: str, value: Any, loc: Loc, equals: Any) -> ColumnElement[bool]:
        if isinstance(value, list):
            if not value:
                return self.error(loc, f"{key}: an empty list matches nobody")
            return or_(*(self.scalar(key, v, (*loc, i), equals) for i, v in enumerate(value)))
        if isinstance(value, dict):
            if len(value) != 1:
                return self.error(loc, f"{key}: write one operator ({', '.join(VALUE_OPERATORS)})")
            ((op, arg),) = value.items()
            if op == "in":
                if not isinstance(arg, list):
                    return self.error((*loc, "in"), f"{key}: in: takes a list")
                return self.value(key, arg, (*loc, "in"), equals)
            if op == "not":
                return not_(self.value(key, arg, (*loc, "not"), equals))
            return self.error(
                (*loc, op), f"{key}: unknown operator {op!r}; allowed: {', '.join(VALUE_OPERATORS)}"
            )
        return self.scalar(key, value, loc, equals)

    def scalar(self, key: str, value: Any, loc: Loc, equals: Any) -> ColumnElement[bool]:
        if not isinstance(value, str | int | float | bool) and value is not None:
            return self.error(loc, f"{key}: expected a value, got {type(value).__name__}")
        return equals(value)  # type: ignore[no-any-return]

    def normalise(self, key: str, value: Scalar, loc: Loc) -> str:
        if isinstance(value, bool) and key in ("membership",):
            # YAML reads a bare `none`... as a string, but `no`/`off` as False: say so.
            self.error(loc, f"{key}: {value!r} is not a {key}; quote it, e.g. '{key}: \"none\"'")
            return ""
        try:
            return normalise_field(key, str(value))
        except ValueError as exc:
            self.error(loc, str(exc))
            return ""

    def tags(self, value: Any, loc: Loc) -> ColumnElement[bool]:
        def has(tag: str) -> ColumnElement[bool]:
            return exists().where(ContactTag.contact_id == Contact.id, ContactTag.tag == tag)

        def has_any(tags: list[str]) -> ColumnElement[bool]:
            return exists().where(ContactTag.contact_id == Contact.id, ContactTag.tag.in_(tags))

        if isinstance(value, str):
            return has(normalise_field("tags", value))
        if isinstance(value, list):
            return has_any(self.tag_list(value, loc))
        if isinstance(value, dict) and len(value) == 1:
            ((op, arg),) = value.items()
            here = (*loc, op)
            if op not in TAG_OPERATORS:
                return self.error(
                    here, f"tags: unknown operator {op!r}; allowed: {', '.join(TAG_OPERATORS)}"
                )
            tags = self.tag_list(arg if isinstance(arg, list) else [arg], here)
            if op == "any":
                return has_any(tags)
            if op == "none":
                return not_(has_any(tags))
            return and_(*(has(t) for t in tags)) if tags else true()
        return self.error(loc, "tags: write a tag, a list of tags, or {any|all|none: [tags]}")

    def history(self, key: str, value: Any, loc: Loc) -> ColumnElement[bool]:
        allowed = HISTORY_KEYS[key]
        if key == "engaged":
            if not isinstance(value, dict):
                return self.error(loc, "engaged: write {days: N}, e.g. engaged: {days: 365}")
            spec = value
        elif isinstance(value, dict):
            spec = value
        elif isinstance(value, list):
            return self.error(loc, f"{key}: write a campaign name or {{campaign: NAME, days: N}}")
        else:
            spec = {"campaign": value}
        for k in spec:
            if k not in allowed:
                return self.error(
                    (*loc, k), f"{key}: unknown key {k!r}; allowed: {', '.join(allowed)}"
                )
        campaign = None
        if "campaign" in allowed:
            if "campaign" not in spec:
                return self.error(loc, f"{key}: needs campaign:, e.g. {{campaign: NAME}}")
            campaign = self.campaign_name(key, spec["campaign"], (*loc, "campaign"))
            if campaign is None:
                return false()
        days = None
        if "days" in spec:
            days = self.days(spec["days"], (*loc, "days"))
            if days is None:
                return false()
        elif key == "engaged":
            return self.error(loc, "engaged: needs days:, e.g. engaged: {days: 365}")
        url = None
        if "url" in spec:
            url = spec["url"]
            if not isinstance(url, str) or not url.strip() or len(url) > MAX_URL:
                return self.error((*loc, "url"), "url: write part of a link, e.g. url: register")
        if campaign is not None:
            self.campaigns.append((campaign, (*loc, "campaign")))
            self.references.append((key, campaign))
        return _history(key, campaign, days, url)

    def topic(self, value: Scalar, loc: Loc) -> ColumnElement[bool]:
        """`topic: events`: contacts who receive it (have not left it)."""
        name = self.topic_name("topic", value, loc)
        return false() if name is None else receives(name)

    def left(self, value: Any, loc: Loc) -> ColumnElement[bool]:
        """`left: events` or `left: {topic: events, days: 30}`: contacts who left the topic
        (in the last N days), whether or not they joined it again since."""
        spec = value if isinstance(value, dict) else {"topic": value}
        for k in spec:
            if k not in LEFT_KEYS:
                return self.error(
                    (*loc, k), f"left: unknown key {k!r}; allowed: {', '.join(LEFT_KEYS)}"
                )
        if "topic" not in spec:
            return self.error(loc, "left: needs topic:, e.g. left: {topic: events, days: 30}")
        here = (*loc, "topic") if isinstance(value, dict) else loc
        name = self.topic_name("left", spec["topic"], here)
        days = self.days(spec["days"], (*loc, "days")) if "days" in spec else None
        if name is None or ("days" in spec and days is None):
            return false()
        record = aliased(ConsentRecord)
        conditions = [
            record.contact_id == Contact.id,
            record.kind == "left",
            record.topic == name,
        ]
        if days is not None:
            conditions.append(record.at >= _since(days))
        return exists().where(*conditions)

    def topic_name(self, key: str, value: Any, loc: Loc) -> str | None:
        if not isinstance(value, str) or not TOPIC_NAME.match(value):
            self.error(loc, f"{key}: write the name of a topic of topics.yaml, e.g. {key}: events")
            return None
        self.topics.append((value, loc))
        return value

    def check_topics(self, topics: Topics) -> None:
        for name, loc in self.topics:
            if name not in topics:
                self.error(loc, topics.unknown(name))

    def campaign_name(self, key: str, value: Any, loc: Loc) -> str | None:
        if value is None or (isinstance(value, str) and not value.strip()):
            self.error(loc, f"{key}: write a campaign name, e.g. {key}: 2026-12-newsletter")
            return None
        if isinstance(value, list | dict):
            self.error(loc, f"{key}: write a campaign name or {{campaign: NAME, days: N}}")
            return None
        if not isinstance(value, str):
            # YAML reads 2027 as a number and 2026-12-01 as a date: the name is text.
            self.error(loc, f"{key}: write the campaign name as text, e.g. '{value}' in quotes")
            return None
        return value

    def days(self, value: Any, loc: Loc) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_DAYS:
            self.error(loc, f"days: a whole number from 1 to {MAX_DAYS}, e.g. days: 30")
            return None
        return value

    def check_campaigns(self, known: set[str], sources: str) -> None:
        for name, loc in self.campaigns:
            if name in known:
                continue
            hint = difflib.get_close_matches(name, known, n=1)
            listing = sorted(known)
            shown = ", ".join(_printable(n) for n in listing[:20]) or "none"
            if len(listing) > 20:
                shown += f" and {len(listing) - 20} more"
            self.error(
                loc,
                f"unknown campaign '{_printable(name)}'"
                + (f" (did you mean '{_printable(hint[0])}'?)" if hint else "")
                + f"; known from the {sources}: {shown}",
            )

    def tag_list(self, values: list[Any], loc: Loc) -> list[str]:
        tags = []
        for i, v in enumerate(values):
            if not isinstance(v, str) or not v.strip():
                self.error((*loc, i), "tags: each tag must be text")
            else:
                tags.append(normalise_field("tags", v))
        if not values:
            self.error(loc, "tags: an empty list matches nobody")
        return tags


def _printable(name: str) -> str:
    """A name as an error message may show it: one short line, whatever the file held."""
    name = name if name.isprintable() else repr(name)[1:-1]
    return name if len(name) <= 80 else name[:79] + "…"


def _since(days: int) -> Any:
    # Evaluated at each execution: a loaded segment's window ends when the query runs.
    return bindparam(
        None, callable_=lambda: utcnow() - timedelta(days=days), type_=Event.created_at.type
    )


def _campaign_id(name: str) -> Any:
    campaign = aliased(Campaign)
    return select(campaign.id).where(campaign.name == name).scalar_subquery()


def _history(
    key: str, campaign: str | None, days: int | None, url: str | None
) -> ColumnElement[bool]:
    """EXISTS over deliveries or events of this contact; aliased, so that a query whose own
    FROM holds deliveries (a report's) still correlates on the contact alone."""
    if key == "received":
        delivery = aliased(Delivery)
        conditions = [
            delivery.contact_id == Contact.id,
            delivery.campaign_id == _campaign_id(campaign or ""),
            # Accepted by the relay, and no bounce came back since.
            delivery.state == "sent",
        ]
        if days is not None:
            conditions.append(delivery.sent_at >= _since(days))
        return exists().where(*conditions)
    event = aliased(Event)
    kinds = HISTORY_EVENTS[key]
    conditions = [
        event.contact_id == Contact.id,
        event.kind == kinds[0] if len(kinds) == 1 else event.kind.in_(kinds),
    ]
    if campaign is not None:
        conditions.append(event.campaign_id == _campaign_id(campaign))
    if days is not None:
        conditions.append(event.created_at >= _since(days))
    if url is not None:
        conditions.append(event.data["url"].as_string().icontains(url, autoescape=True))
    if key == "bounced":
        # A "delayed" DSN is a warning that the message is still being tried, not a bounce.
        action = event.data["action"].as_string()
        conditions.append(or_(action.is_(None), action != "delayed"))
    return exists().where(*conditions)


def known_campaigns(folder: Path, session: Session | None = None) -> set[str]:
    """Campaign names a segment may mention: the campaign files beside segments.yaml (their
    `name:`, else the file's stem) and, given a session, every campaign in the database."""
    names = {_campaign_name(path) for path in find_campaigns(folder)}
    if session is not None:
        names.update(session.scalars(select(Campaign.name)))
    return names


# What a history condition needs the campaign to have recorded: no pixel, no opens.
NEEDS_TRACKING = {"opened": "opens", "clicked": "clicks"}


def untracked(segments: Sequence[Segment], folder: Path, session: Session | None) -> list[str]:
    """Warnings for `opened:`/`clicked:` conditions on a campaign that does not track them:
    they match nobody. Tracking as sent (the database) where the campaign was sent, else
    as its file beside segments.yaml says."""
    needed = {(k, c) for s in segments for k, c in s.history if k in NEEDS_TRACKING}
    if not needed:
        return []
    tracking: dict[str, dict[str, Any]] = {}
    for path in find_campaigns(folder):
        data = _yaml_of(path)
        if isinstance(data, dict):
            name = data.get("name") if isinstance(data.get("name"), str) else path.stem
            stated = data.get("tracking")
            tracking[str(name)] = stated if isinstance(stated, dict) else {}
    if session is not None:
        names = {c for _, c in needed}
        for sent in session.scalars(select(Campaign).where(Campaign.name.in_(names))):
            tracking[sent.name] = {kind: sent.tracks(kind) for kind in ("opens", "clicks")}
    warnings = []
    for segment in segments:
        for key, campaign in dict.fromkeys(segment.history):
            what = NEEDS_TRACKING.get(key)
            if what is None or campaign not in tracking or tracking[campaign].get(what):
                continue
            warnings.append(
                f"segment {_printable(segment.name)!r}: {key}: {_printable(campaign)} matches "
                f"nobody: {_printable(campaign)} does not track {what} (tracking: "
                f"{{{what}: true}} in its file, for the campaigns sent after)"
            )
    return warnings


def _yaml_of(path: Path) -> Any:
    # A file that does not parse is validate's to report.
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None


def _campaign_name(path: Path) -> str:
    # Only the name is wanted here; a file that does not parse is validate's to report.
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return path.stem
    name = data.get("name") if isinstance(data, dict) else None
    return name if isinstance(name, str) and name else path.stem


def _attribute_equals(name: str, value: Scalar) -> ColumnElement[bool]:
    element: Any = Contact.attributes[name]
    condition: ColumnElement[bool]
    if value is None:
        condition = element.as_string().is_(None)
    elif isinstance(value, bool):
        condition = element.as_boolean() == value
    elif isinstance(value, int):
        condition = element.as_integer() == value
    elif isinstance(value, float):
        condition = element.as_float() == value
    else:
        condition = element.as_string() == value
    return condition


def not_suppressed() -> ColumnElement[bool]:
    return ~exists().where(Suppression.email == Contact.email)


def parse_segments(doc: YamlDoc, session: Session | None = None) -> dict[str, Segment]:
    """Compile every segment of a file; campaign names in history conditions are checked
    against known_campaigns() of the file's folder (and the database, given a session)."""
    segments, compiler = _parse(doc, session)
    if compiler.errors:
        raise FileErrors(compiler.errors)
    return segments


def load_each(
    path: Path | str = DEFAULT_PATH, session: Session | None = None
) -> tuple[dict[str, Segment], dict[str, list[FileError]]]:
    """The file's segments that compile, and the errors of each that does not: one broken
    segment (naming a campaign not written yet, say) does not hide the others. A file that
    cannot be read as segments at all still raises."""
    path = Path(path)
    if not path.exists():
        return {}, {}
    segments, compiler = _parse(load_yaml(path), session)
    broken = compiler.by_segment
    return {name: s for name, s in segments.items() if name not in broken}, broken


def _parse(doc: YamlDoc, session: Session | None) -> tuple[dict[str, Segment], _Compiler]:
    if doc.data is None:
        return {}, _Compiler(doc)
    if not isinstance(doc.data, dict):
        raise FileError(doc.path, "expected a mapping of segment names to segments", 1)
    compiler = _Compiler(doc)
    segments: dict[str, Segment] = {}
    for name, body in doc.data.items():
        loc: Loc = (str(name),)
        line = doc.lines.line_for(loc)
        if not isinstance(body, dict):
            compiler.error(loc, f"segment {name!r} must be a mapping with a where: key")
            continue
        for key in body:
            if key not in SEGMENT_KEYS:
                compiler.error(
                    (*loc, key),
                    f"segment {name!r}: unknown key {key!r}; "
                    f"allowed keys: {', '.join(SEGMENT_KEYS)}",
                )
        description = body.get("description")
        if description is not None and not isinstance(description, str):
            compiler.error((*loc, "description"), "description must be text")
            description = None
        if "where" not in body:
            compiler.error(loc, f"segment {name!r} has no where: (use where: {{}} ... for all)")
            continue
        first = len(compiler.references)
        where = compiler.condition(body["where"], (*loc, "where"))
        history = tuple(compiler.references[first:])
        segments[str(name)] = Segment(str(name), description, where, line, history)
    if compiler.campaigns:
        folder = doc.path.parent
        sources = f"campaign files in {folder}/" + (
            " and the database" if session is not None else ""
        )
        compiler.check_campaigns(known_campaigns(folder, session), sources)
    if compiler.topics:
        compiler.check_topics(load_topics(doc.path.parent / TOPICS_FILE))
    return segments, compiler


def load_segments(
    path: Path | str = DEFAULT_PATH, session: Session | None = None
) -> dict[str, Segment]:
    """The segments of a file. Pass the session where there is one, so that campaigns known
    only to the database (their file since moved) count as known names."""
    path = Path(path)
    if not path.exists():
        return {}
    return parse_segments(load_yaml(path), session)


def get_segment(
    segments: dict[str, Segment], name: str, path: Path | str = DEFAULT_PATH
) -> Segment:
    try:
        return segments[name]
    except KeyError:
        known = ", ".join(sorted(segments)) or "none defined"
        raise NotFound(f"{path}: no segment {name!r} (known: {known})") from None


def audience(
    include: Sequence[Segment], exclude: Sequence[Segment] = (), *, topic: str | None = None
) -> ColumnElement[bool]:
    """Contacts in any included segment, in no excluded one, not suppressed, and, for a
    campaign with a topic, who have not left it."""
    condition = or_(*(s.where for s in include)) if include else false()
    if exclude:
        condition = and_(condition, not_(or_(*(s.where for s in exclude))))
    if topic is not None:
        return and_(condition, not_suppressed(), receives(topic))
    return and_(condition, not_suppressed())


def count(session: Session, where: ColumnElement[bool]) -> int:
    return session.scalar(select(func.count()).select_from(Contact).where(where)) or 0


def members(
    session: Session, where: ColumnElement[bool], limit: int | None = None
) -> list[Contact]:
    query = select(Contact).where(where).order_by(Contact.email)
    if limit is not None:
        query = query.limit(limit)
    return list(session.scalars(query))


def audience_of(
    campaign: CampaignFile, session: Session | None = None
) -> tuple[list[Segment], list[Segment], list[FileError]]:
    """The campaign's included and excluded segments; with a session, segments that name
    earlier campaigns are checked against the database too."""
    segments = load_segments(campaign.segments_path, session)
    errors = []
    include: list[Segment] = []
    exclude: list[Segment] = []
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
    if campaign.spec.advertising:
        exclude.append(harvested())
    return include, exclude, errors


# Consent that the Network Act (Art. 50-2) forbids advertising to: an address collected from
# a public page.
HARVESTED = "public-contact"


def harvested() -> Segment:
    """Contacts an advertising campaign leaves out, as an excluded segment."""
    return Segment(
        name="consent: public-contact (never sent advertising)",
        description="addresses collected from public pages (Network Act Art. 50-2)",
        # Never NULL: a NOT around it must keep contacts with no consent recorded.
        where=func.coalesce(Contact.consent, "") == HARVESTED,
        line=None,
    )
