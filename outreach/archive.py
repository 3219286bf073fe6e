"""The public archive: campaigns whose file says `archive: true`, once sent, for anyone.

Each is shown as it was compiled at `send`, rendered for a neutral reader: no contact's
data, no tracking (links go straight to their address, no open pixel), and the personal
links (unsubscribe, preferences, view online) lead back to the archive page itself.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from sqlalchemy import select
from sqlalchemy.orm import Session

from outreach.campaigns import find_campaigns, load_campaign
from outreach.compose import MINIMAL_CONTACT, resolve_language
from outreach.errors import UserError
from outreach.models import Campaign, CampaignVariant
from outreach.render import CompiledVariant, Markers, Personaliser, Rendered, personalise

log = logging.getLogger("outreach.archive")
# A reader we know nothing about.
NEUTRAL_CONTACT: dict[str, Any] = {**MINIMAL_CONTACT, "email": "", "language": None}
OPEN_PIXEL = "{{ open_url }}"
# What MJML adds for web fonts (Google Fonts for its default Ubuntu): a request to a third
# party from every reader of the archive. The fonts fall back to the reader's own.
_REMOTE_STYLESHEET = re.compile(r"""<link\b[^>]*\bhref\s*=\s*["']https?://[^>]*>""", re.I)
_REMOTE_IMPORT = re.compile(r"@import\s+url\(\s*['\"]?https?://[^)]*\)\s*;?", re.I)
ATOM = "http://www.w3.org/2005/Atom"
XML = "http://www.w3.org/XML/1998/namespace"


@dataclass
class Entry:
    name: str
    sent_at: datetime
    subjects: dict[str, str]
    default_language: str

    def subject(self, language: str) -> str:
        chosen = resolve_language(language, set(self.subjects), self.default_language)
        return self.subjects.get(chosen) or next(iter(self.subjects.values()), self.name)


class Archive:
    """Which campaign files are marked for the archive: read again only when a file in
    campaigns/ changes, so a page costs a few stat calls."""

    def __init__(self, campaigns_dir: Path) -> None:
        self.directory = campaigns_dir
        self._seen: dict[Path, tuple[float, str | None]] = {}
        self._lock = threading.Lock()

    def names(self) -> set[str]:
        found: dict[Path, tuple[float, str | None]] = {}
        for path in find_campaigns(self.directory) if self.directory.is_dir() else []:
            try:
                mtime = path.stat().st_mtime
            except OSError:
                continue
            with self._lock:
                known = self._seen.get(path)
            if known is not None and known[0] == mtime:
                found[path] = known
                continue
            try:
                spec = load_campaign(path)
                found[path] = (mtime, spec.name if spec.spec.archive else None)
            except UserError:
                found[path] = (mtime, None)  # validate reports it; the archive skips it
        with self._lock:
            self._seen = found
        return {name for _, name in found.values() if name}

    def entries(self, session: Session) -> list[Entry]:
        """Archived campaigns that have been sent, newest first."""
        names = self.names()
        if not names:
            return []
        campaigns = session.scalars(
            select(Campaign)
            .where(
                Campaign.name.in_(names),
                Campaign.started_at.is_not(None),
                Campaign.state.in_(("sending", "done", "paused")),
            )
            .order_by(Campaign.started_at.desc(), Campaign.id.desc())
        ).all()
        out = []
        for campaign in campaigns:
            personaliser = Personaliser(list(campaign.expressions), campaign.definition["nonce"])
            try:
                values = personaliser.values(_variables("", ""))
            except Exception as exc:
                log.warning(
                    "archive: %s cannot be shown to a neutral reader: %s", campaign.name, exc
                )
                continue
            subjects = {
                language: " ".join(personaliser.fill(subject, values, escaped=False).split())
                for language, subject in session.execute(
                    select(CampaignVariant.language, CampaignVariant.subject).where(
                        CampaignVariant.campaign_id == campaign.id
                    )
                )
            }
            if subjects and campaign.started_at is not None:
                default = campaign.definition.get("default_language", "en")
                out.append(Entry(campaign.name, campaign.started_at, subjects, default))
        return out

    def render(
        self, session: Session, name: str, language: str, self_url: str, links_url: str = ""
    ) -> Any:
        """(the campaign's entry, the language shown, the message rendered) or None.
        `links_url`: where the copy's Preferences and Unsubscribe lead (a page that says
        where a reader's own links are), else back to the copy."""
        if name not in self.names():
            return None
        campaign = session.scalar(
            select(Campaign).where(Campaign.name == name, Campaign.started_at.is_not(None))
        )
        if campaign is None or campaign.started_at is None:
            return None
        variants = {
            v.language: CompiledVariant(v.language, v.subject, v.html, v.text)
            for v in session.scalars(
                select(CampaignVariant).where(CampaignVariant.campaign_id == campaign.id)
            )
        }
        if not variants:
            return None
        definition = campaign.definition
        default = definition.get("default_language", "en")
        shown = resolve_language(language, set(variants), default)
        shown = shown if shown in variants else sorted(variants)[0]
        try:
            rendered = _neutral(
                tuple(campaign.expressions),
                definition["nonce"],
                variants[shown],
                self_url,
                campaign.id,
                campaign.updated_at,
                links_url or self_url,
            )
        except Exception as exc:  # a template that needs a real contact's data
            log.warning("archive: %s cannot be shown to a neutral reader: %s", name, exc)
            return None
        entry = Entry(
            name, campaign.started_at, {k: v.subject for k, v in variants.items()}, default
        )
        return entry, shown, rendered


@lru_cache(maxsize=256)
def _neutral(
    expressions: tuple[str, ...],
    nonce: str,
    variant: CompiledVariant,
    self_url: str,
    campaign_id: int,
    version: datetime,
    links_url: str,
) -> Rendered:
    html = _REMOTE_IMPORT.sub("", _REMOTE_STYLESHEET.sub("", variant.html))
    if OPEN_PIXEL in expressions:
        marker = Markers(nonce)(expressions.index(OPEN_PIXEL))
        html = re.sub(rf"<img\b[^>]*{re.escape(marker)}[^>]*>", "", html)
    personaliser = Personaliser(list(expressions), nonce)
    return personalise(
        personaliser,
        CompiledVariant(variant.language, variant.subject, html, variant.text),
        _variables(self_url, links_url),
    )


def _variables(self_url: str, links_url: str) -> dict[str, Any]:
    """What a neutral reader's copy is filled in with: no contact, no tracking, view online
    pointing back at the archive page and the personal links at `links_url`."""
    return {
        "contact": NEUTRAL_CONTACT,
        "unsubscribe_url": links_url,
        "preferences_url": links_url,
        "view_online_url": self_url,
        "open_url": "",
        "click": lambda url, position=None: url,
    }


# Elements that start a block of text; what is inside one, up to the next, is a paragraph.
_BLOCKS = frozenset(
    [
        "address",
        "article",
        "aside",
        "blockquote",
        "br",
        "dd",
        "div",
        "dl",
        "dt",
        "figcaption",
        "footer",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "header",
        "hr",
        "li",
        "ol",
        "p",
        "pre",
        "section",
        "table",
        "tbody",
        "td",
        "tfoot",
        "th",
        "thead",
        "tr",
        "ul",
    ]
)
_SKIPPED = frozenset(("head", "style", "script", "title"))
# A paragraph of the body, not the header's name and tagline nor a greeting: the summary
# starts at the first block this long.
BODY_PARAGRAPH = 60


class _Paragraphs(HTMLParser):
    """The visible text of an HTML message, block by block: no link addresses, nothing
    hidden (the preheader MJML hides in the body) or in <head>."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[str] = []
        self._text: list[str] = []
        self._hidden: list[str] = []  # the open elements that hide what is inside them

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCKS:
            self._flush()
        style = (dict(attrs).get("style") or "").replace(" ", "").lower()
        hides = tag in _SKIPPED or "display:none" in style or self._hidden
        if hides and tag not in _VOID:
            self._hidden.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if self._hidden and self._hidden[-1] == tag:
            self._hidden.pop()
        if tag in _BLOCKS:
            self._flush()

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self._text.append(data)

    def _flush(self) -> None:
        text = " ".join("".join(self._text).split())
        if text:
            self.blocks.append(text)
        self._text = []

    def close(self) -> None:
        super().close()
        self._flush()


_VOID = frozenset(
    [
        "area",
        "base",
        "br",
        "col",
        "embed",
        "hr",
        "img",
        "input",
        "link",
        "meta",
        "source",
        "track",
        "wbr",
    ]
)


def summary(html: str, limit: int = 300) -> str:
    """A feed entry's summary: the body's first paragraphs — from the first that is a real
    paragraph, past the header — as plain text, cut at a whole word with an ellipsis."""
    parser = _Paragraphs()
    parser.feed(html)
    parser.close()
    blocks = parser.blocks
    start = next((i for i, b in enumerate(blocks) if len(b) >= BODY_PARAGRAPH), 0)
    text = ""
    for block in blocks[start:]:
        # A heading has no full stop: a dash keeps it from running into what follows.
        joint = " " if not text or text[-1] in ".!?。:;…" else " — "
        text = f"{text}{joint}{block}" if text else block
        if len(text) >= limit:
            break
    if len(text) <= limit:
        return text
    cut = text[:limit]
    space = cut.rfind(" ")
    if space > limit * 0.6:  # a language written without spaces is cut where it reaches
        cut = cut[:space]
    return cut.rstrip(" ,;:·-–—") + "…"


def atom_feed(
    entries: list[tuple[Entry, str]], base_url: str, language: str, title: str, author: str
) -> bytes:
    """An Atom feed (RFC 4287) of archive entries, each with its summary text; `author` is
    the feed's (RFC 4287 wants one, at the feed or at every entry)."""
    ElementTree.register_namespace("", ATOM)

    def sub(parent: ElementTree.Element, tag: str, text: str | None = None, **attrs: str) -> Any:
        element = ElementTree.SubElement(parent, f"{{{ATOM}}}{tag}", attrs)
        if text is not None:
            element.text = text
        return element

    feed = ElementTree.Element(f"{{{ATOM}}}feed", {f"{{{XML}}}lang": language})
    sub(feed, "title", title)
    sub(sub(feed, "author"), "name", author)
    sub(feed, "id", f"{base_url}/archive")
    sub(feed, "link", rel="self", href=f"{base_url}/archive/feed.xml?lang={language}")
    sub(feed, "link", rel="alternate", type="text/html", href=f"{base_url}/archive?lang={language}")
    newest = max((e.sent_at for e, _ in entries), default=None)
    sub(feed, "updated", (newest or datetime(2026, 1, 1).astimezone()).isoformat())
    for entry, summary in entries:
        item = sub(feed, "entry")
        sub(item, "title", entry.subject(language))
        sub(item, "id", f"{base_url}/archive/{entry.name}")
        sub(item, "link", href=f"{base_url}/archive/{entry.name}?lang={language}")
        sub(item, "updated", entry.sent_at.isoformat())
        sub(item, "summary", summary)
    body: bytes = ElementTree.tostring(feed, encoding="utf-8", xml_declaration=False)
    return b'<?xml version="1.0" encoding="utf-8"?>\n' + body
