"""What a recipient sees: one-click unsubscribe (RFC 8058), preferences, click and open
tracking, the view-online page, the subscribe form with double opt-in, and the public
archive. Every link to a person carries a signed token, so nothing here can be changed,
listed or guessed without one, and a GET never changes anything.

A module per door, each a Blueprint of module-level views: `recipients` (/u, /p, /v — the
links in a message), `tracking` (/c, /o), `subscribe` (/subscribe, /confirm), `archive`
(/archive), `invitations` (/e/NAME.ics, a campaign's event). What they share (settings,
tokens, sessions, the page renderer) is in `base` and on `app.extensions["outreach"]`; the
site-wide parts (headers, error pages, /healthz) are here. Every word on the pages is in the
message catalogs (`i18n`); the reader's language is `?lang=`, else the contact's, else the
browser's Accept-Language (Simplified Chinese never for Traditional), else English.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, Response, request
from sqlalchemy import text
from werkzeug.middleware.proxy_fix import ProxyFix

from outreach import subscriptions
from outreach.archive import Archive
from outreach.config import Settings
from outreach.db import reader_sessionmaker, writer_sessionmaker
from outreach.i18n import N_, install, translator
from outreach.subscriptions import ConfirmTokens, FormTokens
from outreach.tasks import Nudger
from outreach.tokens import Links, tokens_for
from outreach.topics import FILE_NAME as TOPICS_FILE
from outreach.topics import load_topics
from outreach.web.archive import archive_door
from outreach.web.base import WebState, both, message, state
from outreach.web.invitations import invitation_door
from outreach.web.recipients import recipients
from outreach.web.subscribe import SUBSCRIBE_FLOOR, pad_to, subscribe_door
from outreach.web.tracking import tracking

__all__ = ["SUBSCRIBE_FLOOR", "WebState", "create_app", "pad_to"]

log = logging.getLogger("outreach.web")
MAX_BODY = 16 * 1024
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
NO_STORE = ("/u/", "/p/", "/v/", "/subscribe", "/confirm/")
PACKAGE = Path(__file__).resolve().parent.parent

site = Blueprint("site", __name__)


def create_app(settings: Settings, project: Path | None = None) -> Flask:
    """The app; `project` is the folder with campaigns/ (subscribe.yaml, topics.yaml,
    archived campaigns), the working directory by default."""
    tokens = tokens_for(settings, "outreach serve")
    root = Path.cwd() if project is None else project
    app = Flask(
        __name__,
        template_folder=str(PACKAGE / "web_templates"),
        static_folder=str(PACKAGE / "static"),
        static_url_path="/static",
    )
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    # Werkzeug answers /u//TOKEN with a redirect to /u/TOKEN: the token would travel in a
    # Location header and be logged under a path the redaction must guess. One spelling.
    app.url_map.merge_slashes = False
    install(app.jinja_env)
    config = subscriptions.WatchedConfig(settings, root / subscriptions.CONFIG_PATH)
    app.extensions["outreach"] = WebState(
        settings,
        tokens,
        Links(settings.base_url, tokens),
        writer_sessionmaker(settings.database_url),
        reader_sessionmaker(settings.database_url),
        subscribe_file=config,
        archive=Archive(root / "campaigns"),
        form_tokens=FormTokens.of(settings),
        confirm_tokens=ConfirmTokens(settings),
        nudge=Nudger(settings),
        topics=load_topics(root / "campaigns" / TOPICS_FILE),
    )
    for door in (site, recipients, tracking, subscribe_door, archive_door, invitation_door):
        app.register_blueprint(door)
    if settings.proxies:
        # Only the last `proxies` hops of X-Forwarded-For are believed: a client cannot
        # claim another address by sending the header itself.
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=settings.proxies, x_proto=settings.proxies
        )
    return app


@site.after_app_request
def _headers(response: Response) -> Response:
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    if request.path.startswith(NO_STORE):
        response.headers["Cache-Control"] = "no-store"
    return response


@site.app_errorhandler(400)
@site.app_errorhandler(404)
@site.app_errorhandler(405)
@site.app_errorhandler(413)
@site.app_errorhandler(429)
def _http_error(error: Any) -> Response:
    lang, lines = both(N_("This request cannot be handled. Nothing was changed."))
    code = getattr(error, "code", 400)
    if code == 429:
        lang, lines = both(N_("Too many requests from your network. Please try again later."))
    return message(
        lang,
        translator(lang)("CityNet"),
        *((language, f"{code}: {line}") for language, line in lines),
        status=code,
    )


@site.get("/healthz")
def healthz() -> Response:
    """Alive, and the database answers: a web process that cannot record an unsubscribe
    is not healthy."""
    try:
        with state().reader() as session:
            session.execute(text("SELECT 1"))
    except Exception:
        return Response("database unreachable\n", status=503, mimetype="text/plain")
    return Response("ok\n", mimetype="text/plain")
