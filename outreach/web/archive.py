"""The public archive: campaigns marked `archive: true`, rendered for a neutral reader, and
their Atom feed. Nothing here names or needs a recipient."""

from __future__ import annotations

from flask import Blueprint, Response, abort
from markupsafe import escape

from outreach.archive import Archive, atom_feed, summary
from outreach.i18n import menu, translator
from outreach.web.base import VIEW_CSP, banner, language, page, state, with_banner

archive_door = Blueprint("archive", __name__)


def _archive() -> Archive:
    archive = state().archive
    assert archive is not None
    return archive


@archive_door.get("/archive")
def archive_index() -> Response:
    lang = language()
    with state().reader() as session:
        entries = _archive().entries(session)
    _ = translator(lang)
    response = page(
        "archive.html",
        lang,
        entries=entries,
        title=_("CityNet newsletter archive"),
        robots="index, follow",
        wide=True,
    )
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


@archive_door.get("/archive/feed.xml")
def archive_feed() -> Response:
    web = state()
    lang = language()
    items = []
    with web.reader() as session:
        for entry in _archive().entries(session)[:50]:
            shown = _archive().render(
                session, entry.name, lang, f"{web.settings.base_url}/archive/{entry.name}"
            )
            if shown is not None:
                items.append((entry, summary(shown[2].html)))
    _ = translator(lang)
    body = atom_feed(
        items, web.settings.base_url, lang, _("CityNet newsletter archive"), _("CityNet")
    )
    response = Response(body, mimetype="application/atom+xml")
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


# Where an archive copy's Preferences and Unsubscribe lead: a copy has no personal links.
PERSONAL_LINKS = "/archive-links"


@archive_door.get(PERSONAL_LINKS)
def personal_links() -> Response:
    lang = language()
    _ = translator(lang)
    lines = [
        _(
            "This is the archive copy of our email: it has no links of yours. To choose what "
            "you receive or to unsubscribe, use the links at the end of an email we sent you."
        )
    ]
    return page(
        "message.html",
        lang,
        heading=_("Your preferences"),
        lines=lines,
        links=[("/subscribe?lang=" + lang, _("Subscribe"))] if state().subscribe else [],
        title=_("Your preferences"),
    )


@archive_door.get("/archive/<name>")
def archive_entry(name: str) -> Response:
    web = state()
    if len(name) > 200:
        abort(404)
    lang = language()
    self_url = f"{web.settings.base_url}/archive/{name}"
    with web.reader() as session:
        shown = _archive().render(session, name, lang, self_url, f"{PERSONAL_LINKS}?lang={lang}")
    if shown is None:
        abort(404)
    entry, written_in, rendered = shown
    _ = translator(lang)
    parts = [
        f'<strong><a href="/archive?lang={lang}">{escape(_("CityNet newsletter archive"))}</a>'
        "</strong>",
        f"· {entry.sent_at:%Y-%m-%d}",
    ]
    for code, label in menu():
        if code in entry.subjects and code != written_in:
            parts.append(f'· <a href="?lang={code}" lang="{code}">{escape(label)}</a>')
    if web.subscribe is not None:
        parts.append(
            f'· <a href="/subscribe?lang={lang}" id="subscribe">{escape(_("Subscribe"))}</a>'
        )
    html = with_banner(rendered.html, banner(lang, *parts))
    response = Response(html, mimetype="text/html")
    response.headers["Content-Security-Policy"] = VIEW_CSP
    response.headers["Cache-Control"] = "public, max-age=300"
    return response
