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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from jinja2.ext import Extension
from jinja2.lexer import Token, TokenStream

RECIPIENT_NAMES = frozenset({"contact", "unsubscribe_url", "preferences_url", "view_online_url"})
_SEP = "\x1f"  # between stage-2 values; stripped from recipient data


class RenderError(Exception):
    """A template problem, located by template name and line where known."""

    def __init__(self, message: str, template: str | None = None, line: int | None = None):
        self.message, self.template, self.line = message, template, line
        where = f"{template}:{line}: " if template and line else f"{template}: " if template else ""
        super().__init__(where + message)


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


@dataclass
class Deferred:
    """Per-recipient expressions of one campaign, in marker order."""

    nonce: str = field(default_factory=lambda: secrets.token_hex(4))
    sources: list[str] = field(default_factory=list)
    origins: list[tuple[str | None, int]] = field(default_factory=list)
    _index: dict[str, int] = field(default_factory=dict)

    @property
    def markers(self) -> Markers:
        return Markers(self.nonce)

    def marker(self, source: str, origin: tuple[str | None, int]) -> str:
        if source not in self._index:
            self._index[source] = len(self.sources)
            self.sources.append(source)
            self.origins.append(origin)
        return self.markers(self._index[source])


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


def stage1_environment(templates_dir: Path, deferred: Deferred) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        extensions=[DeferRecipientValues],
        keep_trailing_newline=True,
    )
    env.deferred = deferred  # type: ignore[attr-defined]
    return env


def _finalize(value: Any) -> Any:
    # A missing optional field prints as nothing, never as "None".
    return "" if value is None else value


_STAGE2 = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, finalize=_finalize)


@dataclass(frozen=True)
class CompiledVariant:
    """One language of one campaign after stage 1, as stored with the campaign."""

    language: str
    subject: str
    html: str
    text: str


def html_to_text(html: str) -> str:
    from inscriptis import get_text
    from inscriptis.css_profiles import CSS_PROFILES
    from inscriptis.model.config import ParserConfig

    text = get_text(html, ParserConfig(display_links=True, css=CSS_PROFILES["strict"]))
    lines = [line.rstrip() for line in text.splitlines()]
    text = "\n".join(lines).strip("\n")
    return re.sub(r"\n{3,}", "\n\n", text) + "\n"


class Personaliser:
    """Stage 2 for one campaign: fills recipients' values into the compiled variants."""

    def __init__(self, expressions: list[str], nonce: str) -> None:
        self.expressions = expressions
        self.pattern = Markers(nonce).pattern
        source = _SEP.join(expressions)
        try:
            self.template = _STAGE2.from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            raise RenderError(f"per-recipient expression: {exc.message}") from None
        self._split: dict[str, list[str | int]] = {}

    def parts(self, text: str) -> list[str | int]:
        """Literal pieces and expression numbers, alternating; cached per compiled text."""
        cached = self._split.get(text)
        if cached is None:
            pieces = self.pattern.split(text)
            cached = [p if i % 2 == 0 else int(p) for i, p in enumerate(pieces)]
            self._split[text] = cached
        return cached

    def values(self, variables: Mapping[str, Any]) -> list[str]:
        """Every expression's value, HTML-escaped, in one Jinja render."""
        if not self.expressions:
            return []
        rendered = self.template.render(variables)
        values = rendered.split(_SEP)
        if len(values) != len(self.expressions):
            raise RenderError("a per-recipient value contains a control character")
        return values

    def fill(self, text: str, values: list[str], *, escaped: bool) -> str:
        parts = self.parts(text)
        if len(parts) == 1:
            return text
        out: list[str] = []
        for part in parts:
            if isinstance(part, str):
                out.append(part)
            else:
                value = values[part]
                out.append(value if escaped else html_lib.unescape(value))
        return "".join(out)


def clean_recipient_value(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace(_SEP, " ")
    return value


def contact_variables(contact: Any, tags: list[str] | None = None) -> dict[str, Any]:
    """What templates see as `contact`: a Contact row (or a dict standing in for one)."""
    if isinstance(contact, dict):
        return {k: clean_recipient_value(v) for k, v in contact.items()}
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
        "attributes": {k: clean_recipient_value(v) for k, v in (contact.attributes or {}).items()},
    }


@dataclass
class Rendered:
    subject: str
    html: str
    text: str


def personalise(
    p: Personaliser, variant: CompiledVariant, variables: Mapping[str, Any]
) -> Rendered:
    values = p.values(variables)
    subject = p.fill(variant.subject, values, escaped=False)
    return Rendered(
        subject=" ".join(subject.split()),  # a header is one line
        html=p.fill(variant.html, values, escaped=True),
        text=p.fill(variant.text, values, escaped=False),
    )
