"""Compiling a campaign: stage 1 of rendering, once per campaign and language.

For each language: the subject and the MJML template are rendered with the campaign's
context (per-recipient expressions are lifted out as markers, see `render`), MJML compiles
to HTML once, the Korean advertising footer is added when the campaign advertises, the plain
text is derived, and tracking rewrites the HTML's links. What comes out is stored with the
campaign at `send`; workers only fill in recipients.
"""

from __future__ import annotations

import difflib
import html as html_lib
import itertools
import re
import traceback
from dataclasses import dataclass, field
from email.utils import parseaddr
from pathlib import Path
from typing import Any

import jinja2

from outreach.advertising import DARK_STYLE as ADVERTISING_DARK_STYLE
from outreach.advertising import FOOTER_LANGUAGES, sender_contact
from outreach.advertising import footer as advertising_footer
from outreach.campaigns import CampaignFile
from outreach.config import Settings
from outreach.errors import FileError, FileErrors, located
from outreach.render import (
    CompiledVariant,
    Deferred,
    Markers,
    Personaliser,
    Place,
    RecordingLoader,
    html_to_text,
    stage1_environment,
)
from outreach.typography import keep_words

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
UNSUBSCRIBE = "{{ unsubscribe_url }}"


@dataclass
class CompiledCampaign:
    variants: dict[str, CompiledVariant]
    expressions: list[str]
    nonce: str
    origins: list[tuple[str | None, int]] = field(default_factory=list)
    # For each expression, every (language, template, line) it was written at.
    places: list[list[Place]] = field(default_factory=list)
    # For each language, the template files it was compiled from, the variant's own first.
    templates: dict[str, list[str]] = field(default_factory=dict)
    _personaliser: Personaliser | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def markers(self) -> Markers:
        return Markers(self.nonce)

    def personaliser(self) -> Personaliser:
        """Stage 2 of this campaign; one, made once, for everything that renders it
        (validation twice, then the test send or preview): its templates are compiled once."""
        if self._personaliser is None:
            self._personaliser = Personaliser(self.expressions, self.nonce)
        return self._personaliser

    def marker_of(self, source: str) -> str | None:
        """The marker standing for one per-recipient expression, if the campaign uses it."""
        try:
            return self.markers(self.expressions.index(source))
        except ValueError:
            return None

    def place(self, index: int, language: str) -> tuple[str | None, int]:
        """Where expression `index` was written for `language` (template None: the subject)."""
        for lang, template, line in self.places[index] if self.places else ():
            if lang == language:
                return template, line
        return self.origins[index]


def compile_campaign(
    campaign: CampaignFile, languages: set[str], settings: Settings
) -> CompiledCampaign:
    """Stage 1 for each language: Jinja with the campaign's context, MJML once, text once.

    Every language is compiled even when one fails, so all errors are reported together;
    an error shared by several (a layout's) is reported once, naming them."""
    deferred = Deferred()
    variants = {}
    templates: dict[str, list[str]] = {}
    failures: dict[tuple[str, int | None, str], list[str]] = {}
    for language in sorted(languages):
        # An environment per language: its templates are parsed, and their per-recipient
        # expressions placed, for each language that uses them.
        deferred.language = language
        env = stage1_environment(campaign.templates_dir, deferred)
        try:
            sender = campaign.sender(settings, language)  # a from: per language: this one's
            variants[language] = _compile_variant(
                campaign, language, env, deferred, sender, settings
            )
        except (FileError, FileErrors) as exc:
            for error in located(exc):
                failures.setdefault((error.path, error.line, error.message), []).append(language)
        templates[language] = list(_loader(env).loaded)
    if failures:
        raise FileErrors(
            [
                FileError(path, f"{message} ({', '.join(langs)})", line)
                for (path, line, message), langs in failures.items()
            ]
        )
    return CompiledCampaign(
        variants,
        list(deferred.sources),
        deferred.nonce,
        list(deferred.origins),
        [list(p) for p in deferred.places],
        templates,
    )


def _loader(env: jinja2.Environment) -> RecordingLoader:
    assert isinstance(env.loader, RecordingLoader)
    return env.loader


def _compile_variant(
    campaign: CampaignFile,
    language: str,
    env: jinja2.Environment,
    deferred: Deferred,
    sender: str,
    settings: Settings,
) -> CompiledVariant:
    template_name = campaign.template_for(language)
    subject = _subject(campaign, env, language)
    variables = {
        **campaign.spec.context,
        "campaign": {"name": campaign.name, "subject": subject},
        "language": language,
        "advertising": campaign.spec.advertising,
        "sender": parseaddr(sender)[0] or parseaddr(sender)[1],
        "postal_address": settings.postal_address or "",
    }
    invitation = campaign.invitation(settings)
    if invitation is not None:
        variables["event"] = invitation.links(language, settings.base_url)
    source = _render_template(campaign, env, template_name, variables)
    html = _mjml(campaign, env, template_name, source)
    if campaign.spec.advertising:
        html = _before_body_end(html, _advertising_footer(campaign, deferred, sender, settings))
        html = _before_head_end(html, ADVERTISING_DARK_STYLE)
    html = keep_words(html)
    # The text part keeps the real addresses; tracking rewrites only the HTML.
    text = html_to_text(html)
    tracking = campaign.spec.tracking
    if tracking.clicks:
        html = track_clicks(html, deferred)
    if tracking.opens:
        pixel = deferred.marker("{{ open_url }}", ("open tracking", 0))
        html = _before_body_end(
            html,
            f'<img src="{pixel}" width="1" height="1" alt="" '
            'style="display:block;width:1px;height:1px;border:0;">',
        )
    return CompiledVariant(language, subject, html, text)


def _subject(campaign: CampaignFile, env: jinja2.Environment, language: str) -> str:
    try:
        subject = env.from_string(campaign.subject_for(language)).render(
            campaign={"name": campaign.name}, language=language, **campaign.spec.context
        )
    except (jinja2.TemplateSyntaxError, jinja2.UndefinedError) as exc:
        raise campaign.error(f"subject: {exc.message}", "subject") from None
    subject = " ".join(subject.split())
    if campaign.spec.advertising and not subject.startswith(AD_PREFIX):
        subject = f"{AD_PREFIX} {subject}"
    return subject


def _template_location(exc: BaseException) -> tuple[str | None, int | None]:
    """Where in a template a runtime error happened, from Jinja's rewritten traceback."""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename.endswith(".mjml") or frame.filename == "<template>":
            return frame.filename, frame.lineno
    return None, None


def _render_template(
    campaign: CampaignFile,
    env: jinja2.Environment,
    template_name: str,
    variables: dict[str, Any],
) -> str:
    try:
        source = env.get_template(template_name).render(variables)
    except jinja2.TemplateNotFound as exc:
        raise FileError(
            campaign.templates_dir / str(exc.name),
            f"template not found (used by {template_name}); create it or fix the name",
        ) from None
    except jinja2.TemplateSyntaxError as exc:
        message = exc.message or str(exc)
        raise FileError(exc.filename or template_name, message, exc.lineno) from None
    except (jinja2.UndefinedError, jinja2.TemplateError, TypeError) as exc:
        where, line = _template_location(exc)
        message = getattr(exc, "message", None) or str(exc)
        raise FileError(where or template_name, message, line) from None
    errors = [
        _unknown_tag(campaign, env, template_name, tag)
        for tag in sorted(set(re.findall(r"</?(mj-[A-Za-z0-9-]+)", source)) - KNOWN_MJ_TAGS)
    ]
    if errors:
        raise FileErrors(errors)
    return source


def _unknown_tag(
    campaign: CampaignFile, env: jinja2.Environment, template_name: str, tag: str
) -> FileError:
    near = difflib.get_close_matches(tag, KNOWN_MJ_TAGS, n=1, cutoff=0.7)
    hint = f"did you mean <{near[0]}>?" if near else "known tags: mj-section, mj-column, …"
    found = find_in_templates(
        campaign.templates_dir,
        [template_name, *_loader(env).loaded],
        re.compile(f"</?{re.escape(tag)}\\b"),
    )
    where, line = found or (template_name, None)
    return FileError(
        campaign.templates_dir / where,
        f"unknown MJML tag <{tag}>: {hint} (MJML would pass it through as it is)",
        line,
    )


def template_source(templates_dir: Path, name: str) -> str | None:
    try:
        return (templates_dir / name).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def find_in_templates(
    templates_dir: Path, names: list[str], pattern: re.Pattern[str]
) -> tuple[str, int] | None:
    """The first of `names` (a variant, then what it extends and includes) and the line
    where `pattern` matches its source."""
    for name in dict.fromkeys(names):
        source = template_source(templates_dir, name)
        match = pattern.search(source) if source is not None else None
        if match is not None and source is not None:
            return name, source.count("\n", 0, match.start()) + 1
    return None


def _mjml(campaign: CampaignFile, env: jinja2.Environment, template_name: str, source: str) -> str:
    from mjml import mjml2html

    try:
        return str(mjml2html(source))
    except (ValueError, RuntimeError) as exc:
        raise _mjml_error(campaign, env, template_name, source, str(exc)) from None


# Tags, end tags, comments and any other `<` in MJML (whose text is HTML).
_TAG = re.compile(
    r"""<!--.*?-->|<!\[CDATA\[.*?\]\]>|<![^>]*>"""
    r"""|<(/?)([A-Za-z][\w:.-]*)((?:\s+[^\s"'=<>/]+(?:\s*=\s*(?:"[^"]*"|'[^']*'|[^\s"'=<>`]+))?)*)\s*(/?)>"""
    r"""|<""",
    re.S,
)
# HTML elements without an end tag (mrml knows them too).
_VOID = frozenset(
    "area base br col embed hr img input link meta param source track wbr".split()  # noqa: SIM905
)
_JINJA = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.S)


def tag_problems(text: str) -> list[tuple[int, str, str]]:
    """Unbalanced markup as (offset, kind, tag): an element never closed, an end tag that
    closes nothing, a `<` that starts no tag. MJML (mrml) names none of these by line."""
    problems: list[tuple[int, str, str]] = []
    stack: list[tuple[int, str]] = []
    for match in _TAG.finditer(text):
        if match.group(0) == "<":
            problems.append((match.start(), "bare", "<"))
            continue
        close, name, _, self_closing = match.group(1, 2, 3, 4)
        if name is None:
            continue  # a comment, CDATA or declaration
        name = name.lower()
        if close:
            if any(open_name == name for _, open_name in stack):
                while stack:
                    offset, open_name = stack.pop()
                    if open_name == name:
                        break
                    problems.append((offset, "unclosed", open_name))
            else:
                problems.append((match.start(), "stray", name))
        elif not self_closing and name not in _VOID:
            stack.append((match.start(), name))
    problems += [(offset, "unclosed", name) for offset, name in stack]
    return sorted(problems)


_PROBLEM = {
    "unclosed": "MJML: <{tag}> is never closed: add </{tag}> where it ends",
    "stray": "MJML: </{tag}> closes nothing: remove it, or open <{tag}> before it",
    "bare": "MJML: a '<' that starts no tag: write &lt; for a literal '<'",
}


def _mjml_error(
    campaign: CampaignFile,
    env: jinja2.Environment,
    template_name: str,
    source: str,
    message: str,
) -> FileError:
    """MJML's own error names no line: find the unbalanced tag in the compiled source, then
    the template file and line it was written at."""
    problems = tag_problems(source)
    if not problems:
        return FileError(campaign.templates_dir / template_name, f"MJML: {message}")
    _, kind, tag = problems[0]
    for name in dict.fromkeys([template_name, *_loader(env).loaded]):
        text = template_source(campaign.templates_dir, name)
        if text is None:
            continue
        # Jinja tags blanked, newlines kept: lines stay where they were written.
        blanked = _JINJA.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)
        for offset, found_kind, found_tag in tag_problems(blanked):
            if (found_kind, found_tag) == (kind, tag):
                return FileError(
                    campaign.templates_dir / name,
                    _PROBLEM[kind].format(tag=tag),
                    text.count("\n", 0, offset) + 1,
                )
    return FileError(
        campaign.templates_dir / template_name,
        _PROBLEM[kind].format(tag=tag) + f" ({message})",
    )


def _before_head_end(html: str, fragment: str) -> str:
    if "</head>" not in html:
        return fragment + html
    return html.replace("</head>", fragment + "</head>", 1)


def _before_body_end(html: str, fragment: str) -> str:
    if "</body>" not in html:
        return html + fragment
    return html.replace("</body>", fragment + "</body>", 1)


def _advertising_footer(
    campaign: CampaignFile, deferred: Deferred, sender: str, settings: Settings
) -> str:
    """Korean Network Act rules for advertising: sender, postal address, a way to reach the
    sender (Art. 50(4)) and an opt-out, in Korean and English (see `advertising`), each
    paragraph with the sender's name in its language when from: gives one per language."""
    contact = sender_contact(settings.sender_contact, campaign.spec.reply_to, sender)
    link = deferred.marker(UNSUBSCRIBE, ("advertising footer", 0))
    names = {lang: campaign.sender(settings, lang) for lang in FOOTER_LANGUAGES}
    return advertising_footer(link, names, settings.postal_address or "", contact)


_TRACKABLE = re.compile(r"""(<a\b[^>]*?\bhref\s*=\s*)(["'])(https?://[^"']+)\2""", re.I)


def track_clicks(html: str, deferred: Deferred) -> str:
    """Every http(s) link goes through /c/TOKEN; recipients' own links (unsubscribe,
    preferences, view online) are markers, not http, and stay as they are.

    A link that carries a recipient's value (`?r={{ contact.attributes.region }}`) is
    signed in stage 2 with that value in it, so each recipient lands on their own URL.
    Each link's position (1, 2, … in the HTML) is signed with it: the click report tells
    two links with one address apart (see `links`)."""
    markers = deferred.markers
    positions = itertools.count(1)

    def rewrite(match: re.Match[str]) -> str:
        url = html_lib.unescape(match.group(3))
        pieces = markers.pattern.split(url)
        args = []
        for i, piece in enumerate(pieces):
            if i % 2 == 0:
                if piece:
                    args.append(repr(piece))
            else:
                inner = deferred.sources[int(piece)].removeprefix("{{ ").removesuffix(" }}")
                args.append(f"(({inner}) | outreach_text)")
        address = " ~ ".join(args)
        source = f"{{{{ click({address}, {next(positions)}) }}}}"
        marker = deferred.marker(source, ("click tracking", 0))
        return f"{match.group(1)}{match.group(2)}{marker}{match.group(2)}"

    return _TRACKABLE.sub(rewrite, html)
