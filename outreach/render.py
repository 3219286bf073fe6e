"""The render pipeline: campaign-level Jinja, MJML compiled once, recipients filled in after.

Stage 1 runs per campaign and language: Jinja renders the MJML template with the campaign's
context (loops over articles, layouts, includes), then MJML compiles it to HTML, and the
plain-text part is derived from that HTML. Every `{{ ... }}` that mentions a per-recipient
name (`contact`, `unsubscribe_url`, …) is not evaluated in stage 1: a Jinja extension lifts
it out of the token stream and leaves an opaque marker in its place, which survives MJML and
the HTML-to-text conversion untouched.

Stage 2 runs per recipient: all lifted expressions are rendered together in one small
autoescaping Jinja template, and their values are spliced between the literal pieces of the
compiled HTML, text and subject. Campaign content is never re-parsed as Jinja, so a literal
`{{` in an article cannot turn into code, and recipient values are always escaped.
"""

from __future__ import annotations

import html as html_lib
import re
import secrets
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import meta
from jinja2.ext import Extension
from jinja2.lexer import Token, TokenStream
from markupsafe import escape

from outreach.errors import UserError

RECIPIENT_NAMES = frozenset({"contact", "unsubscribe_url", "preferences_url", "view_online_url"})
_SEP = "\x1f"  # between stage-2 values; stripped from recipient data


class RenderError(Exception):
    """A template problem, located by template name and line where known."""

    def __init__(self, message: str, template: str | None = None, line: int | None = None):
        self.message, self.template, self.line = message, template, line
        where = f"{template}:{line}: " if template and line else f"{template}: " if template else ""
        super().__init__(where + message)


class UnsafeLink(RenderError, UserError):
    """A recipient's own value would make a link that is not http(s) or mailto: that
    recipient gets no message (the worker records the delivery as failed, with this)."""


@dataclass(frozen=True)
class Markers:
    """The placeholders stage 1 leaves where per-recipient values go: `OUTR{nonce}X{n}X`.

    ASCII letters and digits only, because mjml-python escapes private-use characters in
    attributes; the per-campaign nonce keeps them from matching anything an author wrote."""

    nonce: str

    @property
    def prefix(self) -> str:
        return f"OUTR{self.nonce}X"

    def __call__(self, index: int) -> str:
        return f"{self.prefix}{index}X"

    @property
    def pattern(self) -> re.Pattern[str]:
        return re.compile(f"{self.prefix}(\\d+)X")


# Where an expression was written: the language being compiled, the template (None: the
# subject) and the line.
Place = tuple[str, str | None, int]


@dataclass
class Deferred:
    """Per-recipient expressions of one campaign, in marker order, and where each was
    written for each language (`language` is the one being compiled)."""

    nonce: str = field(default_factory=lambda: secrets.token_hex(4))
    sources: list[str] = field(default_factory=list)
    origins: list[tuple[str | None, int]] = field(default_factory=list)
    places: list[list[Place]] = field(default_factory=list)
    language: str = ""
    _index: dict[str, int] = field(default_factory=dict)

    @property
    def markers(self) -> Markers:
        return Markers(self.nonce)

    def marker(self, source: str, origin: tuple[str | None, int]) -> str:
        if source not in self._index:
            self._index[source] = len(self.sources)
            self.sources.append(source)
            self.origins.append(origin)
            self.places.append([])
        index = self._index[source]
        place = (self.language, *origin)
        if place not in self.places[index]:
            self.places[index].append(place)
        return self.markers(index)


def _token_source(token: Token) -> str:
    if token.type in ("string", "integer", "float"):
        return repr(token.value)
    return str(token.value)


def _expression_source(tokens: list[Token]) -> str:
    """Jinja source for an expression's tokens, spaced as a person would write it."""
    out = ""
    previous: Token | None = None
    for token in tokens:
        text = _token_source(token)
        tight_before = token.type in ("dot", "rparen", "rbracket", "comma", "lparen", "lbracket")
        tight_after = previous is not None and previous.type in ("dot", "lparen", "lbracket")
        if token.type == "lparen" and previous is not None and previous.type != "name":
            tight_before = False
        if out and not tight_before and not tight_after:
            out += " "
        out += text
        previous = token
    return out


def _recipient_names(tokens: list[Token]) -> list[str]:
    """Per-recipient names used in a tag: a name, but not an attribute (`webinar.contact`)."""
    found = []
    for i, token in enumerate(tokens):
        if token.type == "name" and token.value in RECIPIENT_NAMES:
            if i > 0 and tokens[i - 1].type == "dot":
                continue
            found.append(str(token.value))
    return found


class DeferRecipientValues(Extension):
    """Lifts `{{ ... }}` blocks that use per-recipient names out of stage 1."""

    def filter_stream(self, stream: TokenStream) -> Iterator[Token]:
        deferred: Deferred = self.environment.deferred  # type: ignore[attr-defined]
        tokens = iter(stream)
        for token in tokens:
            if token.type == "variable_begin":
                block = [token]
                for inner in tokens:
                    block.append(inner)
                    if inner.type == "variable_end":
                        break
                body = block[1:-1]
                if _recipient_names(body):
                    source = "{{ " + _expression_source(body) + " }}"
                    marker = deferred.marker(source, (stream.name, token.lineno))
                    yield block[0]
                    yield Token(token.lineno, "string", marker)
                    yield block[-1]
                else:
                    yield from block
            elif token.type == "block_begin":
                block = [token]
                for inner in tokens:
                    block.append(inner)
                    if inner.type == "block_end":
                        break
                names = _recipient_names(block)
                if names:
                    raise jinja2.TemplateSyntaxError(
                        f"{names[0]!r} is a per-recipient value and can only be printed with "
                        "{{ ... }} (filters and inline `x if y else z` are fine), not used in "
                        "{% ... %} tags, which run once per campaign",
                        token.lineno,
                        stream.name,
                        stream.filename,
                    )
                yield from block
            else:
                yield token


class RecordingLoader(jinja2.FileSystemLoader):
    """A loader that remembers which templates it read, in order: errors found in the
    compiled message are looked for in these files, for a line number."""

    def __init__(self, searchpath: str) -> None:
        super().__init__(searchpath)
        self.loaded: list[str] = []

    def get_source(
        self, environment: jinja2.Environment, template: str
    ) -> tuple[str, str, Callable[[], bool]]:
        found = super().get_source(environment, template)
        if template not in self.loaded:
            self.loaded.append(template)
        return found


def stage1_environment(templates_dir: Path, deferred: Deferred) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=RecordingLoader(str(templates_dir)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        extensions=[DeferRecipientValues],
        keep_trailing_newline=True,
    )
    env.deferred = deferred  # type: ignore[attr-defined]
    return env


class MissingAttribute(jinja2.StrictUndefined):
    """A free attribute this contact does not have: `default(…)` replaces it and a test
    (`… if contact.attributes.x else …`) reads it as false, but printed as it is it fails
    like any undefined value, so validate reports it instead of a blank in a message."""

    __slots__ = ()

    def __bool__(self) -> bool:  # type: ignore[override]
        return False


class Attributes(dict[str, Any]):
    """A contact's free attributes as templates see them (`contact.attributes.X`)."""

    def __missing__(self, key: str) -> MissingAttribute:
        return MissingAttribute(
            hint=f"contact.attributes.{key} is missing (a contact without a {key!r} column)",
            name=key,
        )


def _finalize(value: Any) -> Any:
    # A missing optional field prints as nothing, never as "None".
    return "" if value is None else value


def _as_text(value: Any) -> str:
    """A value as it prints, for building a URL from pieces (`~` would print None)."""
    return "" if value is None else str(value)


# What `contact.X` reads: a contact is a dict (`Attributes` for its free columns).
_MAPPINGS = (dict, Attributes)
_MAPPING_NAMES = frozenset(dir(Attributes))


class _Stage2Environment(jinja2.Environment):
    def getattr(self, obj: Any, attribute: str) -> Any:
        """Jinja's `obj.attribute`, the same value, with a contact's key looked up first.
        Jinja tries the attribute first and catches its AttributeError before it reads the
        key: ~2-5 µs each, and a message reads its contact's fields a handful of times.
        Only for a name a dict has no attribute of (`contact.items` stays the method)."""
        if type(obj) in _MAPPINGS and attribute not in _MAPPING_NAMES:
            try:
                return obj[attribute]
            except KeyError:
                pass
        return super().getattr(obj, attribute)


_STAGE2 = _Stage2Environment(autoescape=True, undefined=jinja2.StrictUndefined, finalize=_finalize)
_STAGE2.filters["outreach_text"] = _as_text


@dataclass(frozen=True)
class CompiledVariant:
    """One language of one campaign after stage 1, as stored with the campaign."""

    language: str
    subject: str
    html: str
    text: str


# Inside a tag: align="center" / align=right, and text-align: center|right in a style.
_ALIGN_ATTRIBUTE = re.compile(r"""(<[^<>]*?)\salign\s*=\s*(["']?)(?:center|right)\2""", re.I)
_ALIGN_STYLE = re.compile(
    r"""(<[^<>]*?\bstyle\s*=\s*["'][^"'<>]*?text-align\s*:\s*)(?:center|right)""", re.I
)


def html_to_text(html: str) -> str:
    from inscriptis import get_text
    from inscriptis.css_profiles import CSS_PROFILES
    from inscriptis.model.config import ParserConfig

    # Centred and right-aligned cells were padded to the widest line of their table: the
    # layout's header, button and footer came out pushed right by dozens of spaces.
    html = _ALIGN_ATTRIBUTE.sub(r"\1", html)
    html = _ALIGN_STYLE.sub(r"\1left", html)
    text = get_text(html, ParserConfig(display_links=True, css=CSS_PROFILES["strict"]))
    lines = [line.rstrip() for line in text.splitlines()]
    text = "\n".join(lines).strip("\n")
    return re.sub(r"\n{3,}", "\n\n", text) + "\n"


# Attributes whose value a mail client follows or loads.
_URL_ATTRIBUTE = re.compile(
    r"""(?<![\w-])(href|src|background|action|formaction|poster)\s*=\s*(?:"([^"]*)"|'([^']*)')""",
    re.I,
)
# The links we make ourselves, from OUTREACH_BASE_URL or a static http(s) link.
_OWN_LINK = re.compile(
    r"""\{\{ (?:(?:unsubscribe_url|preferences_url|view_online_url|open_url) \}\}$|click\((['"])https?://)"""
)
_FIXED_SCHEME = re.compile(r"(?:https?|mailto):", re.I)
_SAFE_URL = {
    "href": re.compile(r"(?:https?://[^\s/?#\\]|mailto:\S)", re.I),
    "other": re.compile(r"https?://[^\s/?#\\]", re.I),
}
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class LinkSlot:
    """A URL attribute of the compiled HTML whose scheme a recipient's value decides:
    its literal pieces and expression numbers, as `Personaliser.parts` gives them."""

    attribute: str
    parts: tuple[str | int, ...]

    @property
    def expressions(self) -> list[int]:
        return [p for p in self.parts if isinstance(p, int)]


def link_slots(html: str, markers: Markers, expressions: list[str]) -> list[LinkSlot]:
    """Every href/src (and the like) that starts with a per-recipient value of the author's:
    what it becomes is only known per recipient, so stage 2 checks it."""
    slots = []
    pattern = markers.pattern
    for match in _URL_ATTRIBUTE.finditer(html):
        value = match.group(2) if match.group(2) is not None else match.group(3)
        pieces = pattern.split(value)
        if len(pieces) == 1:
            continue
        parts = tuple(p if i % 2 == 0 else int(p) for i, p in enumerate(pieces))
        if _FIXED_SCHEME.match(html_lib.unescape(pieces[0])):
            continue  # the template fixed the scheme; a value can only add to it
        if len(parts) == 3 and parts[0] == parts[2] == "":
            index = parts[1]
            if isinstance(index, int) and _OWN_LINK.match(expressions[index]):
                continue
        slots.append(LinkSlot(match.group(1).lower(), parts))
    return slots


def unsafe_link(attribute: str, url: str) -> bool:
    """True unless `url` is an http(s) address (or, in an href, a mailto:) as it stands:
    no control characters, no entities left to decode, nothing a browser would strip."""
    url = url.strip(" ")
    safe = _SAFE_URL["href" if attribute == "href" else "other"]
    return bool(_CONTROL.search(url)) or not safe.match(url)


@dataclass(frozen=True)
class _Plan:
    """What stage 2 does for one compiled variant: the expressions it uses, rendered in one
    template, and the links to check."""

    used: tuple[int, ...]
    template: jinja2.Template | None
    links: tuple[LinkSlot, ...]
    # The names those expressions read (`contact`, `click`, `preferences_url`, …): a link
    # that no expression prints is not signed for its readers.
    names: frozenset[str] = frozenset()
    # The links stage 2 makes itself (see `_native`): (expression number, the name it
    # prints, or "click" with the address and position the template fixed), and the Jinja
    # template of the other used expressions (None: there are none).
    native: tuple[tuple[int, str, str | None, int | None], ...] = ()
    rest: tuple[int, ...] = ()
    rest_template: jinja2.Template | None = None


# Our own links as the compiler writes them: `{{ unsubscribe_url }}`, and a tracked link
# whose address the template fixed, `{{ click('https://…', 3) }}` (compiler.track_clicks).
_OWN_EXPRESSION = re.compile(
    r"\{\{ (unsubscribe_url|preferences_url|view_online_url|open_url) \}\}$"
)
_FIXED_CLICK = re.compile(r"""\{\{ click\(('[^'\\]*'|"[^"\\]*"), ([0-9]+)\) \}\}$""")


def _native(source: str) -> tuple[str, str | None, int | None] | None:
    """How stage 2 prints an expression without Jinja, or None. These are most of a
    tracked message's expressions, and each cost a call through Jinja's runtime (~5-10 µs)
    for a string we make: printed the way Jinja prints it (escaped), the same text."""
    own = _OWN_EXPRESSION.match(source)
    if own:
        return own.group(1), None, None
    click = _FIXED_CLICK.match(source)
    if click:
        # The address as Jinja reads the literal, so both ways give the same string.
        address = _STAGE2.compile_expression(click.group(1))()
        if isinstance(address, str):
            return "click", address, int(click.group(2))
    return None


class Personaliser:
    """Stage 2 for one campaign: fills recipients' values into the compiled variants."""

    def __init__(self, expressions: list[str], nonce: str) -> None:
        self.expressions = expressions
        self.markers = Markers(nonce)
        self.pattern = self.markers.pattern
        self.template = self._template(range(len(expressions)))
        self._split: dict[str, tuple[list[str], list[int]]] = {}
        self._plans: dict[CompiledVariant, _Plan] = {}

    def _template(self, used: Any) -> jinja2.Template:
        source = _SEP.join(self.expressions[i] for i in used)
        try:
            return _STAGE2.from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            raise RenderError(f"per-recipient expression: {exc.message}") from None

    def _names(self, used: tuple[int, ...]) -> frozenset[str]:
        source = _SEP.join(self.expressions[i] for i in used)
        return frozenset(meta.find_undeclared_variables(_STAGE2.parse(source)))

    def _pieces(self, text: str) -> tuple[list[str], list[int]]:
        """The literal pieces of a compiled text and the expression numbers between them
        (one fewer); cached per text."""
        cached = self._split.get(text)
        if cached is None:
            pieces = self.pattern.split(text)
            cached = self._split[text] = (pieces[0::2], [int(n) for n in pieces[1::2]])
        return cached

    def parts(self, text: str) -> list[str | int]:
        """Literal pieces and expression numbers, alternating."""
        literals, numbers = self._pieces(text)
        parts: list[str | int] = [literals[0]]
        for number, literal in zip(numbers, literals[1:], strict=True):
            parts += [number, literal]
        return parts

    def plan(self, variant: CompiledVariant) -> _Plan:
        """Only the expressions a variant uses are rendered for its readers: an English
        reader never fails on a value only the Korean text asks for."""
        plan = self._plans.get(variant)
        if plan is None:
            used = sorted(
                {
                    number
                    for text in (variant.subject, variant.html, variant.text)
                    for number in self._pieces(text)[1]
                }
            )
            template = None
            if len(used) == len(self.expressions):
                template = self.template
            elif used:
                template = self._template(used)
            links = link_slots(variant.html, self.markers, self.expressions)
            names = self._names(tuple(used)) if used else frozenset()
            native, rest = [], []
            for number in used:
                how = _native(self.expressions[number])
                if how is None:
                    rest.append(number)
                else:
                    native.append((number, *how))
            plan = self._plans[variant] = _Plan(
                tuple(used),
                template,
                tuple(links),
                names,
                tuple(native),
                tuple(rest),
                self._template(rest) if rest and native else template if rest else None,
            )
        return plan

    def values(self, variables: Mapping[str, Any], plan: _Plan | None = None) -> list[str]:
        """Every used expression's value, HTML-escaped, in one Jinja render ("" for the
        others)."""
        if not self.expressions:
            return []
        used: tuple[int, ...] | range = range(len(self.expressions))
        template: jinja2.Template | None = self.template
        if plan is not None:
            used, template = plan.used, plan.template
        if template is None:
            return [""] * len(self.expressions)
        if plan is not None and plan.native:
            native = self._native_values(variables, plan)
            if native is not None:
                return native
        rendered = template.render(variables).split(_SEP)
        if len(rendered) != len(used):
            raise RenderError("a per-recipient value contains a control character")
        if plan is None:
            return rendered
        values = [""] * len(self.expressions)
        for index, value in zip(used, rendered, strict=True):
            values[index] = value
        return values

    def _native_values(self, variables: Mapping[str, Any], plan: _Plan) -> list[str] | None:
        """`values` with our own links made here and the rest rendered by Jinja; None when
        the variables lack what those links need (Jinja then says what is missing)."""
        click = variables.get("click")
        values = [""] * len(self.expressions)
        for number, name, address, position in plan.native:
            if name == "click":
                if not callable(click):
                    return None
                value = click(address, position)
            else:
                value = variables.get(name)
                if not isinstance(value, str):
                    return None
            values[number] = str(escape(value))
        if plan.rest_template is not None:
            rendered = plan.rest_template.render(variables).split(_SEP)
            if len(rendered) != len(plan.rest):
                raise RenderError("a per-recipient value contains a control character")
            for number, value in zip(plan.rest, rendered, strict=True):
                values[number] = value
        return values

    def fill(self, text: str, values: list[str], *, escaped: bool) -> str:
        literals, numbers = self._pieces(text)
        if not numbers:
            return text
        filled = [""] * (len(literals) + len(numbers))
        filled[0::2] = literals
        if escaped:
            filled[1::2] = [values[n] for n in numbers]
        else:
            filled[1::2] = [html_lib.unescape(values[n]) for n in numbers]
        return "".join(filled)

    def check_links(self, plan: _Plan, values: list[str]) -> None:
        """Stop a message whose per-recipient link is not http(s) or mailto: a contact's
        value never becomes `javascript:` or `data:` in an href."""
        for slot in plan.links:
            url = html_lib.unescape(
                "".join(p if isinstance(p, str) else values[p] for p in slot.parts)
            )
            if unsafe_link(slot.attribute, url):
                source = self.expressions[slot.expressions[0]]
                shown = repr(url if len(url) <= 80 else url[:80] + "…")
                raise UnsafeLink(
                    f"{slot.attribute}={shown} (from {source}) is not an http(s) or mailto: "
                    "address; the message was not sent"
                )


def clean_recipient_value(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace(_SEP, " ")
    return value


# The columns of a contact that `contact_variables` reads: all a worker loads of one.
CONTACT_COLUMNS = (
    "email",
    "name",
    "organisation",
    "organisation_type",
    "city",
    "country",
    "language",
    "membership",
    "consent",
    "attributes",
)


def contact_variables(contact: Any, tags: list[str] | None = None) -> dict[str, Any]:
    """What templates see as `contact`: a Contact row (or a dict standing in for one)."""
    if isinstance(contact, dict):
        variables = {k: clean_recipient_value(v) for k, v in contact.items()}
        variables["attributes"] = Attributes(variables.get("attributes") or {})
        return variables
    return {
        "email": contact.email,
        "name": clean_recipient_value(contact.name),
        "organisation": clean_recipient_value(contact.organisation),
        "organisation_type": contact.organisation_type,
        "city": clean_recipient_value(contact.city),
        "country": contact.country,
        "language": contact.language,
        "membership": contact.membership,
        "consent": contact.consent,
        "tags": contact.tag_names if tags is None else tags,
        "attributes": Attributes(
            {k: clean_recipient_value(v) for k, v in (contact.attributes or {}).items()}
        ),
    }


def column_variables(columns: tuple[Any, ...], tags: list[str]) -> dict[str, Any]:
    """`contact_variables` of a row of CONTACT_COLUMNS as a plain tuple, in that order: the
    worker's batch load, where reading a Row by name cost more than the rest of it."""
    email, name, organisation, organisation_type, city, country, *rest = columns
    language, membership, consent, attributes = rest
    return {
        "email": email,
        "name": clean_recipient_value(name),
        "organisation": clean_recipient_value(organisation),
        "organisation_type": organisation_type,
        "city": clean_recipient_value(city),
        "country": country,
        "language": language,
        "membership": membership,
        "consent": consent,
        "tags": tags,
        "attributes": Attributes(
            {k: clean_recipient_value(v) for k, v in (attributes or {}).items()}
        ),
    }


@dataclass
class Rendered:
    subject: str
    html: str
    text: str


def personalise(
    p: Personaliser,
    variant: CompiledVariant,
    variables: Mapping[str, Any],
    *,
    check_links: bool = True,
) -> Rendered:
    """Stage 2 for one recipient; raises `UnsafeLink` rather than put a recipient's value
    that is not http(s) or mailto into a link (`check_links=False`: validation's stand-ins)."""
    plan = p.plan(variant)
    values = p.values(variables, plan)
    if check_links and plan.links:
        p.check_links(plan, values)
    subject = p.fill(variant.subject, values, escaped=False)
    return Rendered(
        subject=" ".join(subject.split()),  # a header is one line
        html=p.fill(variant.html, values, escaped=True),
        text=p.fill(variant.text, values, escaped=False),
    )
