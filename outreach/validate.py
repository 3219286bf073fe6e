"""Validating a campaign: every check `campaigns send` runs before anything is queued.

    the file (schema, keys) -> its audience (segments) -> From and Reply-To
    -> the languages of the audience (counted) -> compile every variant (Jinja, MJML) -> links
    -> render for stand-in recipients (stage 2) -> what the audience's data will do

Each problem is reported with its file and, where the source has one, its line. Errors are
about the campaign's own files; contacts' data never makes one (a contact named `{{ x }}`
is a contact, not a template). What the data does to the messages (empty values, links
that will not be sent) is a warning, counted in the database.
"""

from __future__ import annotations

import html as html_lib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import nodes
from sqlalchemy import ColumnElement, and_, case, func, not_, or_, select
from sqlalchemy.orm import Session

from outreach.campaigns import CampaignFile, load_campaign
from outreach.compiler import UNSUBSCRIBE, CompiledCampaign, compile_campaign, find_in_templates
from outreach.compose import MINIMAL_CONTACT, NO_DELIVERY, SAMPLE_CONTACT, resolve_language
from outreach.config import Settings
from outreach.errors import FileError, FileErrors, located
from outreach.fields import primary_language, sender_address
from outreach.i18n import chinese_script
from outreach.models import Contact
from outreach.render import (
    CompiledVariant,
    LinkSlot,
    Personaliser,
    RenderError,
    personalise,
    unsafe_link,
)
from outreach.segments import audience, audience_of, untracked
from outreach.tokens import Links, Tokens
from outreach.topics import Topic, load_topics


@dataclass
class Validation:
    errors: list[FileError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    audience_size: int | None = None
    languages: dict[str, int] = field(default_factory=dict)
    compiled: CompiledCampaign | None = None
    # The campaign's topic as campaigns/topics.yaml defines it (None: it names none).
    topic: Topic | None = None

    @property
    def ok(self) -> bool:
        return not self.errors


POSTAL_WARNING = (
    "no postal address is configured: set OUTREACH_POSTAL_ADDRESS (Korean law requires it "
    "in advertising, and Gmail and Yahoo expect it in bulk mail)"
)


def validate_campaign(
    path: Path | str, settings: Settings, session: Session | None, root: Path | None = None
) -> Validation:
    """Every check `send` runs too: schema, segments, addresses, templates, links, rendering."""
    validation = Validation()
    try:
        campaign = load_campaign(path, root)
        include, exclude, segment_errors = audience_of(campaign, session)
    except (FileError, FileErrors) as exc:
        validation.errors += located(exc)
        return validation
    validation.errors += segment_errors
    validation.topic = _check_topic(campaign, validation)
    validation.warnings += internal_name_in_subject(campaign)
    validation.warnings += untracked([*include, *exclude], campaign.segments_path.parent, session)
    validation.errors += check_addresses(campaign, settings)
    validation.errors += _check_advertising(campaign, settings)
    if not settings.postal_address and not campaign.spec.advertising:
        validation.warnings.append(POSTAL_WARNING)
    available = campaign.languages()
    if not available:
        validation.errors.append(
            campaign.error(
                f"no template {campaign.templates_dir / campaign.spec.template}.mjml nor any "
                f"{campaign.spec.template}.LANG.mjml variant in {campaign.templates_dir}",
                "template",
            )
        )
        return validation
    needed: set[str] = set(available)
    where: ColumnElement[bool] | None = None
    if campaign.spec.welcome:  # no audience: any language a new subscriber may read
        validation.languages = dict.fromkeys(sorted(available), 0)
    elif session is not None and not segment_errors:
        topic = validation.topic.name if validation.topic else None
        where = audience(include, exclude, topic=topic)
        needed = _audience(campaign, session, where, available, validation)
        validation.warnings += _zone_warnings(campaign, session, where, settings)
        if campaign.spec.advertising:
            validation.warnings += _left_out(campaign, session, include, exclude)
    default = campaign.spec.default_language
    if default not in available and (needed - available or not needed):
        validation.errors.append(
            campaign.error(
                f"default_language {default} has no template variant or subject", "default_language"
            )
        )
        return validation
    try:
        # Every variant, not only the audience's: the default goes to whoever changes
        # language after the send, and a broken file is broken whoever reads it today.
        compiled = compile_campaign(campaign, set(available), settings)
    except (FileError, FileErrors) as exc:
        validation.errors += located(exc)
        return validation
    validation.compiled = compiled
    validation.errors += check_links(compiled, campaign)
    validation.errors += _check_rendering(campaign, compiled, settings.base_url)
    data = _AudienceData(campaign, compiled, session, where, validation.languages)
    validation.warnings += data.empty_value_warnings()
    validation.warnings += data.link_warnings()
    if campaign.spec.archive:
        validation.warnings += data.archive_warnings()
    return validation


def _check_topic(campaign: CampaignFile, validation: Validation) -> Topic | None:
    """The campaign's topic: an unknown one is an error; none, where topics exist, a warning
    (its one-click unsubscribe would leave everything)."""
    try:
        topics = load_topics(campaign.topics_path)
    except (FileError, FileErrors) as exc:
        validation.errors += located(exc)
        return None
    name = campaign.spec.topic
    if name is None:
        if topics.exists and not campaign.spec.welcome:
            validation.warnings.append(
                f"{campaign.path}: no topic: its unsubscribe link leaves all our email, and "
                f"nobody can leave this kind of mail alone; add topic: with one of "
                f"{topics.listing()} ({topics.path.name})"
            )
        return None
    topic = topics.get(name)
    if topic is None:
        validation.errors.append(campaign.error(topics.unknown(name), "topic"))
    return topic


def _reads_campaign_name(node: nodes.Node) -> bool:
    for found in node.find_all((nodes.Getattr, nodes.Getitem)):
        key: Any
        if isinstance(found, nodes.Getattr):
            key, target = found.attr, found.node
        else:
            assert isinstance(found, nodes.Getitem)
            key, target = getattr(found.arg, "value", None), found.node
        if key == "name" and isinstance(target, nodes.Name) and target.name == "campaign":
            return True
    return False


def internal_name_in_subject(campaign: CampaignFile) -> list[str]:
    """`{{ campaign.name }}` in a subject sends the file's internal name (a slug such as
    2027-01-membership-korea) to every recipient: say so, at the subject's line."""
    raw = campaign.doc.data.get("subject") if isinstance(campaign.doc.data, dict) else None
    written = raw.items() if isinstance(raw, dict) else [(None, raw)]
    warnings = []
    for language, text in written:
        try:
            parsed = _PARSER.parse(str(text))
        except jinja2.TemplateSyntaxError:
            continue  # reported as an error where the subject is compiled
        if _reads_campaign_name(parsed):
            loc = ("subject",) if language is None else ("subject", language)
            which = "the subject" if language is None else f"the {language} subject"
            warnings.append(
                f"{campaign.path}:{campaign.line(*loc)}: {which} prints {{{{ campaign.name }}}}, "
                f"the campaign's internal name ({campaign.name}), to every recipient; write "
                "the words you want them to read"
            )
    return warnings


def check_addresses(campaign: CampaignFile, settings: Settings) -> list[FileError]:
    """From (each language's, when given per language) and Reply-To: one line, a valid
    address, mailable without SMTPUTF8."""
    errors = []
    given = campaign.spec.from_
    addresses: list[tuple[tuple[str, ...], str | None]]
    if not isinstance(given, dict):
        addresses = [(("from",), given or settings.from_)]
    else:
        addresses = [(("from", lang), value) for lang, value in given.items()]
        if campaign.spec.default_language not in given and not settings.from_:
            errors.append(
                campaign.error(
                    f"from: no address for {campaign.spec.default_language} (default_language): "
                    "readers of a language without one get it; add it, or set OUTREACH_FROM",
                    "from",
                )
            )
    for loc, value in [*addresses, (("reply_to",), campaign.spec.reply_to)]:
        key = ".".join(loc)
        if value is None:
            if key == "from":
                errors.append(campaign.error("no From: set from: in the campaign or OUTREACH_FROM"))
            continue
        if "\n" in value or "\r" in value:
            errors.append(campaign.error(f"{key}: must be one line", *loc))
            continue
        try:
            sender_address(value)
        except ValueError as exc:
            errors.append(campaign.error(f"{key}: {exc}", *loc))
    return errors


def _check_advertising(campaign: CampaignFile, settings: Settings) -> list[FileError]:
    if campaign.spec.advertising and not settings.postal_address:
        return [
            campaign.error(
                "advertising: true needs the sender's postal address in the footer: set "
                "OUTREACH_POSTAL_ADDRESS",
                "advertising",
            )
        ]
    return []


def _left_out(
    campaign: CampaignFile, session: Session, include: list[Any], exclude: list[Any]
) -> list[str]:
    from outreach.advertising import left_out

    n = left_out(session, include, exclude)
    if not n:
        return []
    return [
        f"{campaign.path}: {n} contacts with consent public-contact left out: addresses "
        "collected from public pages are never sent advertising (Network Act Art. 50-2)"
    ]


def _zone_warnings(
    campaign: CampaignFile, session: Session, where: ColumnElement[bool], settings: Settings
) -> list[str]:
    """For send_at {local: …} or a window: contacts mailed at OUTREACH_TIMEZONE's time
    because their country has several zones, and those whose moment has passed."""
    from outreach.schedule import audience_zones

    timing = campaign.timing
    if not timing.per_zone:
        return []
    found = audience_zones(session, where, timing, settings.timezone)
    warnings = []
    if found.several:
        named = ", ".join(f"{c} {n}" for c, n in sorted(found.several.items()))
        total = sum(found.several.values())
        who = "1 contact is" if total == 1 else f"{total} contacts are"
        warnings.append(
            f"{campaign.path}: {who} in a country of several time zones without a timezone "
            f"of their own ({named}): they get it at {settings.timezone}'s time "
            "(OUTREACH_TIMEZONE); set their timezone column, e.g. Australia/Sydney"
        )
    if found.passed:
        who = "1 recipient's" if found.passed == 1 else f"{found.passed} recipients'"
        assert timing.local is not None
        warnings.append(
            f"{campaign.path}: {who} {timing.local:%Y-%m-%d %H:%M} has already passed in "
            "their time zone: they get it at once when the campaign is sent",
        )
    return warnings


def _audience(
    campaign: CampaignFile,
    session: Session,
    where: ColumnElement[bool],
    available: set[str],
    validation: Validation,
) -> set[str]:
    """The languages the audience will be written in, counted in one GROUP BY; languages
    that have no variant are warnings, since those readers get another language."""
    default = campaign.spec.default_language
    counts = session.execute(
        select(Contact.language, func.count()).where(where).group_by(Contact.language)
    ).all()
    # The audience counted once, by language: `send` runs this over every contact.
    validation.audience_size = sum(n for _, n in counts)
    if validation.audience_size == 0:
        validation.warnings.append(f"{campaign.path}: the audience is empty")
    without_variant: dict[str, int] = {}
    for lang, n in counts:
        resolved = resolve_language(lang, available, default)
        validation.languages[resolved] = validation.languages.get(resolved, 0) + n
        if lang and resolve_language(lang, available, "") == "":  # no variant of its own
            # Chinese counts by script: a zh-Hant reader is not served by a zh-Hans variant.
            spoken = chinese_script(lang) or primary_language(lang)
            without_variant[spoken] = without_variant.get(spoken, 0) + n
    for spoken, n in sorted(without_variant.items(), key=lambda item: (-item[1], item[0])):
        who = "1 contact speaks" if n == 1 else f"{n} contacts speak"
        validation.warnings.append(
            f"{campaign.path}: {who} {spoken}; there is no {spoken} variant, they get "
            f"{default} (default_language)"
        )
    return set(validation.languages) if counts else set(available)


_HREF = re.compile(r"""\b(href|src)\s*=\s*(["'])(.*?)\2""", re.I | re.S)


def check_links(compiled: CompiledCampaign, campaign: CampaignFile) -> list[FileError]:
    """Static links of every variant: http(s) or mailto:, never empty; and an unsubscribe
    link. Each is located in the campaign's context or the template that wrote it."""
    found: dict[tuple[str, int | None, str], list[str]] = {}
    unsubscribe = compiled.marker_of(UNSUBSCRIBE)
    for language, variant in compiled.variants.items():
        names = compiled.templates.get(language) or [campaign.template_for(language)]
        seen: set[tuple[str, str]] = set()
        for attr, _, raw in _HREF.findall(variant.html):
            url = html_lib.unescape(raw).strip()
            if compiled.markers.prefix in url:
                continue  # a per-recipient link, checked after stage 2
            if attr.lower() == "href" and url.startswith("mailto:"):
                continue
            if (attr.lower(), url) in seen:
                continue
            seen.add((attr.lower(), url))
            if not url or url == "#":
                problem = f"an empty or '#' {attr}: a broken link"
            elif not re.match(r"^https?://[^\s/]+", url):
                problem = f"{attr}={url!r} is not an http(s) address; write the full https:// URL"
            else:
                continue
            path, line, key = _locate_link(campaign, names, url)
            found.setdefault((path, line, key + problem), []).append(language)
        if unsubscribe is None or unsubscribe not in variant.html:
            message = (
                'no unsubscribe link: add <a href="{{ unsubscribe_url }}"> (the shared '
                "layout's footer has one)"
            )
            path = str(campaign.templates_dir / names[0])
            found.setdefault((path, None, message), []).append(language)
    return _with_languages(found)


def _with_languages(found: dict[tuple[str, int | None, str], list[str]]) -> list[FileError]:
    """One error per problem, naming every language it is found in."""
    return [
        FileError(path, f"{message} ({', '.join(dict.fromkeys(langs))})", line)
        for (path, line, message), langs in found.items()
    ]


def _context_values(value: Any, loc: tuple[str | int, ...]) -> list[tuple[tuple, str]]:
    if isinstance(value, dict):
        return [i for k, v in value.items() for i in _context_values(v, (*loc, str(k)))]
    if isinstance(value, list):
        return [i for n, v in enumerate(value) for i in _context_values(v, (*loc, n))]
    return [(loc, value.strip())] if isinstance(value, str) else []


def _locate_link(campaign: CampaignFile, names: list[str], url: str) -> tuple[str, int | None, str]:
    """Where a bad link was written: the template that has it literally, else the
    campaign's context value it came from. Returns path, line and a `context.KEY: ` prefix."""
    literal = re.escape(url) + "|" + re.escape(html_lib.escape(url))
    pattern = re.compile(f"""\\b(?:href|src)\\s*=\\s*(["'])(?:{literal})\\1""", re.I)
    found = find_in_templates(campaign.templates_dir, names, pattern)
    if found is not None:
        return str(campaign.templates_dir / found[0]), found[1], ""
    context = campaign.doc.data.get("context") if isinstance(campaign.doc.data, dict) else None
    for loc, value in _context_values(context, ("context",)):
        if value == url:
            key = ".".join(str(p) for p in loc)
            return str(campaign.path), campaign.line(*loc), f"{key}: "
    return str(campaign.templates_dir / names[0]), None, ""


def _check_rendering(
    campaign: CampaignFile, compiled: CompiledCampaign, base_url: str
) -> list[FileError]:
    """Stage 2 of each variant for a stand-in with every field and one with nothing but an
    address: what any recipient could get must be complete. Stand-ins, not real contacts:
    a contact's own data (say a name written `{{ Maria }}`) is never the template's fault."""
    # Nothing rendered here reaches anyone: sign with a key of its own.
    links = Links(base_url, Tokens.throwaway())
    personaliser = compiled.personaliser()
    found: dict[tuple[str, int | None, str], list[str]] = {}
    for language, variant in compiled.variants.items():
        for contact in (SAMPLE_CONTACT, MINIMAL_CONTACT):
            contact = {**contact, "language": language}
            variables = {"contact": contact, **links.variables(NO_DELIVERY)}
            errors = _render_one(campaign, compiled, personaliser, variant, variables)
            for error in errors:
                found.setdefault((error.path, error.line, error.message), []).append(language)
            if errors:
                break
    return _with_languages(found)


def _render_one(
    campaign: CampaignFile,
    compiled: CompiledCampaign,
    personaliser: Personaliser,
    variant: CompiledVariant,
    variables: dict[str, Any],
) -> list[FileError]:
    language = variant.language
    try:
        # Links made of recipients' values are checked per recipient; see link_warnings.
        rendered = personalise(personaliser, variant, variables, check_links=False)
    except (jinja2.TemplateError, RenderError, TypeError, ValueError, LookupError) as exc:
        return _stage2_errors(exc, compiled, personaliser, campaign, variant, variables)
    where = campaign.templates_dir / campaign.template_for(language)
    minimal = variables["contact"].get("name") is None
    if not rendered.subject.strip():
        return [
            campaign.error(
                "the subject renders empty for a contact "
                + ("without a name" if minimal else "with every field")
                + "; give a default, e.g. {{ contact.name | default('colleague', true) }}",
                "subject",
            )
        ]
    for part, text in (
        ("subject", rendered.subject),
        ("HTML", rendered.html),
        ("text", rendered.text),
    ):
        # The stand-ins hold no braces: any that reach the message came from the campaign.
        if re.search(r"\{\{|\{%", text):
            return [
                FileError(
                    where,
                    f"the {part} contains a literal '{{{{' or '{{%' that would reach recipients",
                )
            ]
    return []


def _stage2_errors(
    exc: Exception,
    compiled: CompiledCampaign,
    personaliser: Personaliser,
    campaign: CampaignFile,
    variant: CompiledVariant,
    variables: dict[str, Any],
) -> list[FileError]:
    """Which of the variant's per-recipient expressions fail, each at its own line. Those
    the compiler made (tracked links, the pixel, the advertising footer) only fail through a
    value written elsewhere, which is reported where it was written."""
    errors: list[FileError] = []
    generated: list[FileError] = []
    who = "" if variables["contact"].get("name") else " for a contact with only an address"
    for index in personaliser.plan(variant).used:
        source = compiled.expressions[index]
        try:
            Personaliser([source], compiled.nonce).values(variables)
        except Exception as failure:
            message = getattr(failure, "message", None) or str(failure)
            template, line = compiled.place(index, variant.language)
            hint = ""
            if isinstance(failure, jinja2.UndefinedError):
                unknown = _unknown_field(source, message)
                missing = re.match(r"contact\.attributes\.(\S+) is missing", message)
                if unknown is not None:
                    message, hint = unknown, ""
                elif missing is not None:
                    hint = _attribute_fix(source, missing[1])
                else:
                    inner = source.removeprefix("{{ ").removesuffix(" }}")
                    hint = f"; give a default, e.g. {{{{ {inner} | default('…', true) }}}}"
            at: int | None = line
            if template and template.endswith(".mjml"):
                where = campaign.templates_dir / template
            elif template is None:
                where, at = campaign.path, campaign.line("subject")
            else:
                generated.append(FileError(campaign.path, f"{template}: {message}{who}"))
                continue
            errors.append(FileError(where, f"{source}: {message}{who}{hint}", at))
    errors = errors or generated
    if not errors:
        message = getattr(exc, "message", None) or str(exc)
        errors.append(FileError(campaign.path, message))
    return errors


def _attribute_fix(source: str, key: str) -> str:
    """What works for an attribute some contacts lack, written into the expression as it
    is: `.get(KEY, '')` where it is read (a default after later filters comes too late),
    or a test."""
    read = re.compile(
        rf"""contact\.attributes(?:\.{re.escape(key)}\b|\[\s*(['"]){re.escape(key)}\1\s*\])"""
    )
    fixed = read.sub(f"contact.attributes.get('{key}', '')", source)
    return (
        f"; write {fixed} (the '' is what they get), or give a default where it is read: "
        f"contact.attributes.{key} | default('…', true), or test it: "
        f"{{{{ … if contact.attributes.{key} else … }}}}"
    )


# Every field a contact has in templates; columns of one's own are contact.attributes.NAME.
CONTACT_FIELDS = (*SAMPLE_CONTACT, "language")


def _unknown_field(source: str, message: str) -> str | None:
    """For `contact.X` where no contact has an X (a typo, or a column of the user's own):
    what to write instead. None when X is a field some contacts leave empty, or the
    expression reads something else (then a default is the fix)."""
    import difflib

    missing = re.search(r"has no attribute '([^']+)'", message)
    if missing is None or not re.search(rf"\bcontact\.{re.escape(missing[1])}\b", source):
        return None
    field = missing[1]
    if field in CONTACT_FIELDS:
        return None
    near = difflib.get_close_matches(field, CONTACT_FIELDS, n=1, cutoff=0.75)
    if near:
        return f"contacts have no field {field!r}; did you mean contact.{near[0]}?"
    return (
        f"contacts have no field {field!r} (they have {', '.join(CONTACT_FIELDS)}); a column "
        f"of your own is contact.attributes.{field}"
    )


# What validate can say about a recipient value: which contact field an expression prints.

_FIELDS = (
    "name",
    "organisation",
    "organisation_type",
    "city",
    "country",
    "language",
    "membership",
    "consent",
)
_PARSER = jinja2.Environment()


@dataclass(frozen=True)
class PrintedField:
    """A contact field an expression prints as it is, e.g. `contact.name` or
    `contact.attributes.region | default('Asia', true)`."""

    path: tuple[str, ...]
    # default(…) replaces a missing attribute; default(…, true) an empty value too.
    has_default: bool = False
    default_covers_empty: bool = False
    default: Any = None

    @property
    def name(self) -> str:
        return "contact." + ".".join(self.path)

    def column(self) -> Any:
        if len(self.path) == 2 and self.path[0] == "attributes":
            return Contact.attributes[self.path[1]].as_string()
        if len(self.path) == 1 and self.path[0] in _FIELDS:
            return getattr(Contact, self.path[0])
        return None


def printed_field(source: str) -> PrintedField | None:
    try:
        body = _PARSER.parse(source).body
    except jinja2.TemplateSyntaxError:
        return None
    if len(body) != 1 or not isinstance(body[0], nodes.Output) or len(body[0].nodes) != 1:
        return None
    node = body[0].nodes[0]
    has_default = covers_empty = False
    default = None
    while isinstance(node, nodes.Filter) and node.node is not None:
        if node.name in ("default", "d"):
            has_default = True
            boolean: Any = node.args[1] if len(node.args) > 1 else None
            boolean = next((kw.value for kw in node.kwargs if kw.key == "boolean"), boolean)
            covers_empty = covers_empty or (
                isinstance(boolean, nodes.Const) and bool(boolean.value)
            )
            if node.args and isinstance(node.args[0], nodes.Const):
                default = node.args[0].value
        node = node.node
    path: list[str] = []
    while isinstance(node, nodes.Getattr | nodes.Getitem):
        if isinstance(node, nodes.Getattr):
            path.insert(0, node.attr)
        elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            path.insert(0, node.arg.value)
        else:
            return None
        node = node.node
    if not (isinstance(node, nodes.Name) and node.name == "contact" and path):
        return None
    return PrintedField(tuple(path), has_default, covers_empty, default)


def _empty(column: Any) -> ColumnElement[bool]:
    return or_(column.is_(None), column == "")


@dataclass
class _AudienceData:
    """Warnings about what the audience's own data does to the messages, each counted in
    the database (one GROUP BY per field), never by loading contacts."""

    campaign: CampaignFile
    compiled: CompiledCampaign
    session: Session | None
    where: ColumnElement[bool] | None
    languages: dict[str, int]

    def __post_init__(self) -> None:
        personaliser = self.compiled.personaliser()
        self.plans = {lang: personaliser.plan(v) for lang, v in self.compiled.variants.items()}

    def _users(self, index: int) -> list[str]:
        return [lang for lang, plan in sorted(self.plans.items()) if index in plan.used]

    def _count(self, condition: ColumnElement[bool]) -> dict[str, int]:
        """Recipients matching `condition`, by the variant they get."""
        return self._counts([condition])[0]

    def _counts(self, conditions: list[ColumnElement[bool]]) -> list[dict[str, int]]:
        """`_count` of each condition, in one pass over the audience."""
        assert self.session is not None and self.where is not None
        available = self.campaign.languages()
        found: list[dict[str, int]] = [{} for _ in conditions]
        rows = self.session.execute(
            select(Contact.language, *(func.count(case((c, 1))) for c in conditions))
            .where(self.where)
            .group_by(Contact.language)
        )
        for lang, *counts in rows:
            resolved = resolve_language(lang, available, self.campaign.spec.default_language)
            for by_variant, n in zip(found, counts, strict=True):
                if n:
                    by_variant[resolved] = by_variant.get(resolved, 0) + n
        return found

    def _where(self, index: int, language: str) -> tuple[str, str]:
        """`path:line` of an expression, and the line as written."""
        template, line = self.compiled.place(index, language)
        if not (template and template.endswith(".mjml")):
            return f"{self.campaign.path}:{self.campaign.line('subject')}", ""
        path = self.campaign.templates_dir / template
        try:
            written = path.read_text(encoding="utf-8").splitlines()[line - 1]
            written = re.sub(r"<[^>]*>", "", written).strip()  # the words, not the markup
        except (OSError, IndexError, UnicodeDecodeError):
            written = ""
        return f"{path}:{line}", written

    def empty_value_warnings(self) -> list[str]:
        """A field printed without a default that is empty for some of its readers: they
        would get "Dear ," — name it, where it is written, and how many."""
        if self.session is None or self.where is None:
            return []
        fields = []
        for index, source in enumerate(self.compiled.expressions):
            printed = printed_field(source)
            if printed is None or printed.default_covers_empty:
                continue
            column = printed.column()
            if column is None or (printed.path[0] == "attributes" and not printed.has_default):
                continue  # a missing attribute without a default is already an error
            users = self._users(index)
            # A missing attribute takes the default; an empty one does not.
            condition = column == "" if printed.path[0] == "attributes" else _empty(column)
            if users:
                fields.append((index, printed, users, condition))
        counted_empty = self._counts([condition for *_, condition in fields]) if fields else []
        warnings = []
        for (index, printed, users, _), empties in zip(fields, counted_empty, strict=True):
            n = sum(empties.get(lang, 0) for lang in users)
            if not n:
                continue
            total = sum(self.languages.get(lang, 0) for lang in users)
            readers = [lang for lang in users if empties.get(lang)]
            at, written = self._where(index, readers[0])
            counted = (
                f"{printed.name} is empty for {n} of {total} recipients ({', '.join(readers)})"
            )
            if printed.has_default:
                fix = repr(printed.default) if printed.default is not None else "'…'"
                warnings.append(
                    f"{at}: {counted}, and default() without true leaves an empty value "
                    f"empty; write {{{{ {printed.name} | default({fix}, true) }}}}"
                )
            else:
                shown = f' "{written}"' if written else " it"
                warnings.append(
                    f"{at}: {counted}, who would read{shown} with nothing in its place; "
                    f"give a default: {{{{ {printed.name} | default('…', true) }}}}"
                )
        return warnings

    def archive_warnings(self) -> list[str]:
        """`archive: true` shows the message at /archive to readers who are no contact
        (every field empty): a field printed without a default that covers an empty value
        would greet them with "Dear ,"."""
        warnings = []
        for index, source in enumerate(self.compiled.expressions):
            printed = printed_field(source)
            users = self._users(index)
            if printed is None or printed.default_covers_empty or not users:
                continue
            if printed.path[0] == "attributes":
                continue  # printed without a default, a missing attribute is an error
            at, written = self._where(index, users[0])
            shown = f' "{written}"' if written else " it"
            warnings.append(
                f"{at}: archive: true shows this message at /archive to readers who are not "
                f"contacts, and {printed.name} has no value there: they would read{shown} "
                f"with nothing in its place; write {{{{ {printed.name} | default('…', true) }}}}"
            )
        return warnings

    def link_warnings(self) -> list[str]:
        """A link whose address is a recipient's value is checked per message: anything but
        http(s) or mailto: fails that delivery. Say so, and count who would fail."""
        slots: dict[int, tuple[LinkSlot, list[str]]] = {}
        for lang, plan in sorted(self.plans.items()):
            for slot in plan.links:
                slots.setdefault(slot.expressions[0], (slot, []))[1].append(lang)
        warnings = []
        for index, (slot, users) in slots.items():
            source = self.compiled.expressions[index]
            at, _ = self._where(index, users[0])
            counted = self._unsafe_count(slot, users)
            warnings.append(
                f'{at}: {slot.attribute}="{source}" is a per-recipient link: only http(s) '
                "and mailto: addresses are sent, and a recipient whose value is anything "
                "else gets no message (the delivery fails, with the reason)" + counted
            )
        return warnings

    def _unsafe_count(self, slot: LinkSlot, users: list[str]) -> str:
        printed = printed_field(self.compiled.expressions[slot.expressions[0]])
        whole = len(slot.parts) == 3 and slot.parts[0] == slot.parts[2] == ""
        column = printed.column() if printed is not None else None
        if self.session is None or printed is None or column is None or not whole:
            return ""
        lowered = func.lower(column)
        schemes = ["http://%", "https://%"] + (["mailto:%"] if slot.attribute == "href" else [])
        not_a_link = not_(or_(*(lowered.like(s) for s in schemes)))
        empty_fails = not printed.default_covers_empty or unsafe_link(
            slot.attribute, str(printed.default or "")
        )
        condition = (
            or_(_empty(column), not_a_link)
            if empty_fails
            else and_(not_(_empty(column)), not_a_link)
        )
        failing = self._count(condition)
        n = sum(failing.get(lang, 0) for lang in users)
        total = sum(self.languages.get(lang, 0) for lang in users)
        return f"; {n} of {total} recipients have such a value today"
