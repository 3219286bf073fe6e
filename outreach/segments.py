"""Segments: named audiences from `campaigns/segments.yaml`, compiled to one SQL query each.

A segment never loads contacts into Python to filter them; it is a WHERE clause the
database evaluates, and suppressed addresses are excluded by the same query.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, false, func, not_, or_, select, true
from sqlalchemy.orm import Session

from outreach.errors import FileError, FileErrors, NotFound
from outreach.fields import KNOWN_COLUMNS, normalise_field
from outreach.models import Contact, ContactTag, Suppression
from outreach.yamlfile import Loc, YamlDoc, load_yaml

DEFAULT_PATH = Path("campaigns/segments.yaml")
FIELDS = tuple(c for c in KNOWN_COLUMNS if c != "consent_date")
COMBINATORS = ("all", "any", "not")
VALUE_OPERATORS = ("in", "not")
TAG_OPERATORS = ("any", "all", "none")
SEGMENT_KEYS = ("description", "where")
Scalar = str | int | float | bool | None


@dataclass(frozen=True)
class Segment:
    name: str
    description: str | None
    where: ColumnElement[bool]
    line: int | None


class _Compiler:
    """Turns the parsed YAML of one `where:` into a SQLAlchemy expression, or located errors."""

    def __init__(self, doc: YamlDoc) -> None:
        self.doc = doc
        self.errors: list[FileError] = []

    def error(self, loc: Loc, message: str) -> ColumnElement[bool]:
        self.errors.append(FileError(self.doc.path, message, self.doc.lines.line_for(loc)))
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
        if key.startswith("attributes."):
            name = key.split(".", 1)[1]
            if not name:
                return self.error(loc, "write attributes.KEY, e.g. attributes.region")
            return self.value(key, value, loc, lambda v: _attribute_equals(name, v))
        if key not in FIELDS:
            allowed = ", ".join((*COMBINATORS, *FIELDS, "attributes.KEY"))
            return self.error(loc, f"unknown field or operator {key!r}; allowed: {allowed}")
        column = getattr(Contact, key)

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


def _attribute_equals(name: str, value: Scalar) -> ColumnElement[bool]:
    element = Contact.attributes[name]
    if value is None:
        return or_(element.as_string().is_(None))
    if isinstance(value, bool):
        return element.as_boolean() == value
    if isinstance(value, int):
        return element.as_integer() == value
    if isinstance(value, float):
        return element.as_float() == value
    return element.as_string() == value


def not_suppressed() -> ColumnElement[bool]:
    return ~exists().where(Suppression.email == Contact.email)


def parse_segments(doc: YamlDoc) -> dict[str, Segment]:
    if doc.data is None:
        return {}
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
        where = compiler.condition(body["where"], (*loc, "where"))
        segments[str(name)] = Segment(str(name), description, where, line)
    if compiler.errors:
        raise FileErrors(compiler.errors)
    return segments


def load_segments(path: Path | str = DEFAULT_PATH) -> dict[str, Segment]:
    path = Path(path)
    if not path.exists():
        return {}
    return parse_segments(load_yaml(path))


def get_segment(
    segments: dict[str, Segment], name: str, path: Path | str = DEFAULT_PATH
) -> Segment:
    try:
        return segments[name]
    except KeyError:
        known = ", ".join(sorted(segments)) or "none defined"
        raise NotFound(f"{path}: no segment {name!r} (known: {known})") from None


def audience(include: Sequence[Segment], exclude: Sequence[Segment] = ()) -> ColumnElement[bool]:
    """Contacts in any included segment, in no excluded one, and not suppressed."""
    condition = or_(*(s.where for s in include)) if include else false()
    if exclude:
        condition = and_(condition, not_(or_(*(s.where for s in exclude))))
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
