"""What a recipient sees: one-click unsubscribe (RFC 8058), preferences, click and open
tracking, the view-online page, the subscribe form with double opt-in, and the public
archive. Every link to a person carries a signed token, so nothing here can be changed,
listed or guessed without one, and a GET never changes anything.

The pages are one Blueprint of module-level views; what they share (settings, tokens,
sessions) lives on `app.extensions["outreach"]`. Every word on them is in the message
catalogs (`i18n`); the reader's language is `?lang=`, else the contact's, else the
browser's Accept-Language, else English.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import parseaddr
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, Response, abort, current_app, render_template, request
from markupsafe import escape
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.middleware.proxy_fix import ProxyFix

from outreach import consent, subscriptions
from outreach.archive import Archive, atom_feed
from outreach.compose import Prepared, prepare
from outreach.config import Settings
from outreach.db import reader_sessionmaker, writer_sessionmaker
from outreach.events import record_event
from outreach.fields import normalise_language
from outreach.i18n import DEFAULT, N_, install, languages, menu, supported, translator
from outreach.models import Campaign, Contact, Delivery, Suppression, utcnow
from outreach.store import load as load_recipients
from outreach.subscriptions import ConfirmTokens, FormTokens, SubscribeConfig
from outreach.suppressions import recipient_of, suppress_if_new, unsuppress
from outreach.tasks import Nudger
from outreach.tokens import InvalidToken, Links, Tokens, tokens_for

log = logging.getLogger("outreach.web")
MAX_BODY = 16 * 1024
GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00"
    b"\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
# The view-online and archive pages show an email itself: its inline styles and images.
VIEW_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; "
    "font-src https:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
# The 400 page of a link we cannot read: we cannot know the reader's language.
BILINGUAL = ("ko", "en")
NO_STORE = ("/u/", "/p/", "/v/", "/subscribe", "/confirm/")
# Seconds every POST /subscribe answer takes at least, whatever the address.
SUBSCRIBE_FLOOR = 0.1


@dataclass
class WebState:
    settings: Settings
    tokens: Tokens
    links: Links
    writer: sessionmaker[Session]
    reader: sessionmaker[Session]
    subscribe: SubscribeConfig | None = None
    archive: Archive | None = None
    form_tokens: FormTokens | None = None
    confirm_tokens: ConfirmTokens | None = None
    nudge: Nudger = field(default_factory=lambda: Nudger(Settings()))


@dataclass
class Addressee:
    """Whom a link was sent to: the delivery a token names, its campaign, its address and
    contact (a system message, such as a confirmation, may go to someone not yet one)."""

    delivery: Delivery
    contact: Contact | None
    campaign: Campaign
    email: str | None

    @property
    def sender(self) -> str:
        name, address = parseaddr(self.campaign.definition.get("from", ""))
        return name or address or "CityNet"


pages = Blueprint("pages", __name__)


def create_app(settings: Settings, project: Path | None = None) -> Flask:
    """The app; `project` is the folder with campaigns/ (subscribe.yaml, archived campaigns),
    the working directory by default."""
    tokens = tokens_for(settings, "outreach serve")
    root = Path.cwd() if project is None else project
    app = Flask(
        __name__,
        template_folder="web_templates",
        static_folder=str(Path(__file__).parent / "static"),
        static_url_path="/static",
    )
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    install(app.jinja_env)
    config = subscriptions.load_config(settings, root / subscriptions.CONFIG_PATH)
    app.extensions["outreach"] = WebState(
        settings,
        tokens,
        Links(settings.base_url, tokens),
        writer_sessionmaker(settings.database_url),
        reader_sessionmaker(settings.database_url),
        subscribe=config,
        archive=Archive(root / "campaigns"),
        form_tokens=FormTokens.of(settings),
        confirm_tokens=ConfirmTokens(settings),
        nudge=Nudger(settings),
    )
    app.register_blueprint(pages)
    if settings.proxies:
        # Only the last `proxies` hops of X-Forwarded-For are believed: a client cannot
        # claim another address by sending the header itself.
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=settings.proxies, x_proto=settings.proxies
        )
    return app


def _state() -> WebState:
    state: WebState = current_app.extensions["outreach"]
    return state


def _language(own: str | None = None) -> str:
    """?lang=, else the person's own language, else the browser's, else English."""
    asked = supported(request.values.get("lang", ""))
    if asked:
        return asked
    chosen = supported(own)
    if chosen:
        return chosen
    best = request.accept_languages.best_match(list(languages()))
    return best or DEFAULT


def _page(template: str, lang: str, status: int = 200, **values: Any) -> Response:
    body = render_template(
        template,
        lang=lang,
        languages=menu(),
        title=values.pop("title", None) or translator(lang)("CityNet"),
        subscribe_open=_state().subscribe is not None,
        **values,
    )
    return Response(body, status=status, mimetype="text/html")


def _message(lang: str, heading: str, *lines: str, status: int = 200) -> Response:
    return _page("message.html", lang, status, heading=heading, lines=list(lines))


def _both(message: str) -> tuple[str, list[str]]:
    """A message in ?lang= if given, else in Korean and English (a reader we cannot know)."""
    asked = supported(request.args.get("lang", ""))
    langs = [asked] if asked else list(BILINGUAL)
    return langs[0], [translator(code)(message) for code in langs]


def _invalid() -> Response:
    lang, titles = _both(N_("This link is not valid"))
    _, lines = _both(
        N_(
            "The link is damaged, incomplete or expired. Please use the link in your email "
            "again. Nothing was changed."
        )
    )
    return _message(lang, " / ".join(titles), *lines, status=400)


def _verify(kind: str, token: str) -> Any:
    try:
        return _state().tokens.verify(kind, token)
    except InvalidToken:
        return None


def _load(session: Session, delivery_id: Any) -> Addressee | None:
    if not isinstance(delivery_id, int) or isinstance(delivery_id, bool) or delivery_id < 1:
        return None
    found = recipient_of(session, delivery_id)
    if found is None:
        return None
    return Addressee(found.delivery, found.contact, found.campaign, found.email)


def _special(delivery_id: Any, addressee: Addressee | None) -> Response | None:
    """Pages for links that name no live recipient: a test message, an erased contact."""
    if delivery_id == 0:
        lang = _language()
        _ = translator(lang)
        return _message(
            lang, _("CityNet"), _("This link is from a test message. Nothing was changed.")
        )
    if addressee is None:
        return _invalid()
    if addressee.email is None:
        lang = _language()
        _ = translator(lang)
        return _message(
            lang,
            _("CityNet"),
            _("This address has been erased and will not be mailed again."),
        )
    return None


def _resolve(kind: str, token: str, session: Session) -> tuple[Addressee | None, Response | None]:
    """The addressee a token names, or the page to answer instead of acting."""
    delivery_id = _verify(kind, token)
    if delivery_id is None:
        return None, _invalid()
    addressee = _load(session, delivery_id)
    return addressee, _special(delivery_id, addressee)


def _own_language(addressee: Addressee) -> str | None:
    if addressee.contact is not None:
        return addressee.contact.language
    return addressee.delivery.language


@pages.after_app_request
def _headers(response: Response) -> Response:
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    if request.path.startswith(NO_STORE):
        response.headers["Cache-Control"] = "no-store"
    return response


@pages.app_errorhandler(400)
@pages.app_errorhandler(404)
@pages.app_errorhandler(405)
@pages.app_errorhandler(413)
@pages.app_errorhandler(429)
def _http_error(error: Any) -> Response:
    lang, lines = _both(N_("This request cannot be handled. Nothing was changed."))
    code = getattr(error, "code", 400)
    if code == 429:
        lang, lines = _both(N_("Too many requests from your network. Please try again later."))
    return _message(
        lang, translator(lang)("CityNet"), *(f"{code}: {line}" for line in lines), status=code
    )


@pages.get("/healthz")
def healthz() -> Response:
    """Alive, and the database answers: a web process that cannot record an unsubscribe
    is not healthy."""
    try:
        with _state().reader() as session:
            session.execute(text("SELECT 1"))
    except Exception:
        return Response("database unreachable\n", status=503, mimetype="text/plain")
    return Response("ok\n", mimetype="text/plain")


@pages.get("/u/<token>")
def unsubscribe_page(token: str) -> Response:
    with _state().reader() as session:
        addressee, other = _resolve("unsubscribe", token, session)
        if other is not None:
            return other
        assert addressee is not None
        lang = _language(_own_language(addressee))
        return _page(
            "unsubscribe.html",
            lang,
            email=addressee.email,
            sender=addressee.sender,
            campaign=addressee.campaign.name,
            action=f"/u/{token}",
            title=translator(lang)("Unsubscribe"),
        )


@pages.post("/u/<token>")
def unsubscribe(token: str) -> Response:
    one_click = request.form.get("List-Unsubscribe") == "One-Click"
    confirmed = request.form.get("confirm") == "yes"
    if not (one_click or confirmed):
        abort(400)
    state = _state()
    nudge: int | None = None
    with state.writer() as session:
        addressee, other = _resolve("unsubscribe", token, session)
        if other is not None:
            return other
        assert addressee is not None and addressee.email is not None
        contact = addressee.contact
        method = "one-click" if one_click else "unsubscribe page"
        if suppress_if_new(
            session,
            addressee.email,
            "unsubscribed",
            campaign_id=addressee.campaign.id,
            detail=method,
        ):
            record_event(
                session,
                "unsubscribe",
                campaign_id=addressee.campaign.id,
                delivery_id=addressee.delivery.id,
                contact_id=contact.id if contact else None,
                data={"method": "one-click" if one_click else "page"},
            )
            if contact is not None:
                consent.record(session, contact, "withdrawn", source=method)
                nudge = subscriptions.withdrawal_notice(
                    session, contact, state.subscribe, state.settings
                )
        session.commit()
        withdrawn = session.scalar(
            select(Suppression.created_at).where(Suppression.email == addressee.email)
        )
        lang = _language(_own_language(addressee))
        response = _page(
            "unsubscribed.html",
            lang,
            email=addressee.email,
            sender=addressee.sender,
            preferences=f"/p/{state.tokens.sign('preferences', addressee.delivery.id)}",
            result="withdrawn",
            result_date=(withdrawn or utcnow()).date().isoformat(),
            title=translator(lang)("You are unsubscribed"),
        )
    state.nudge(nudge)
    return response


@pages.route("/p/<token>", methods=["GET", "POST"])
def preferences(token: str) -> Response:
    state = _state()
    sessions = state.writer if request.method == "POST" else state.reader
    with sessions() as session:
        addressee, other = _resolve("preferences", token, session)
        if other is not None:
            return other
        assert addressee is not None and addressee.email is not None
        contact = addressee.contact
        if contact is None:  # a confirmation that was never used: nothing to set
            lang = _language(_own_language(addressee))
            _ = translator(lang)
            return _message(lang, _("Your preferences"), _("This address is not on our list."))
        notice = _change_preferences(session, addressee) if request.method == "POST" else None
        lang = (
            _language(contact.language)
            if request.method == "GET" or "lang" in request.args
            else supported(contact.language) or DEFAULT
        )
        suppression = session.scalar(select(Suppression).where(Suppression.email == contact.email))
        if suppression is None:
            status = "subscribed"
        elif suppression.reason in ("unsubscribed", "manual"):
            status = "unsubscribed"
        else:
            status = "blocked"
        return _page(
            "preferences.html",
            lang,
            email=contact.email,
            notice=notice,
            standing=status,
            can_resubscribe=suppression is not None and suppression.reason == "unsubscribed",
            unsubscribe=f"/u/{state.tokens.sign('unsubscribe', addressee.delivery.id)}",
            contact_language=supported(contact.language) or DEFAULT,
            title=translator(lang)("Your preferences"),
        )


def _change_preferences(session: Session, addressee: Addressee) -> str:
    assert addressee.contact is not None
    contact = addressee.contact
    action = request.form.get("action")
    if action == "resubscribe":
        notice = _resubscribe(session, addressee, translator(_language(contact.language)))
    elif action == "language":
        try:
            chosen = normalise_language(request.form.get("language", ""))
        except ValueError:
            abort(400)
        if chosen not in languages():
            abort(400)
        contact.language = chosen
        _ = translator(chosen)
        notice = _("Your language is saved.")
    else:
        abort(400)
    session.commit()
    return notice


def _resubscribe(session: Session, addressee: Addressee, _: Any) -> str:
    assert addressee.contact is not None
    existing = session.scalar(
        select(Suppression).where(Suppression.email == addressee.contact.email)
    )
    if existing is None:
        return str(_("You will receive our email again."))
    if existing.reason != "unsubscribed":
        # a bounce or complaint is not the recipient's to undo
        return str(
            _(
                "We cannot send to this address (it bounced or was reported as spam). Please "
                "contact the Secretariat to receive our email again."
            )
        )
    unsuppress(session, addressee.contact.email, only_reason="unsubscribed")
    record_event(
        session,
        "resubscribe",
        campaign_id=addressee.campaign.id,
        delivery_id=addressee.delivery.id,
        contact_id=addressee.contact.id,
    )
    consent.record(session, addressee.contact, "opt-in", source="preferences page")
    return str(_("You will receive our email again."))


@pages.get("/c/<token>")
def click(token: str) -> Response:
    payload = _verify("click", token)
    if (
        not isinstance(payload, list)
        or len(payload) != 2
        or not isinstance(payload[1], str)
        or not payload[1].startswith(("https://", "http://"))
    ):
        return _invalid()
    delivery_id, url = payload
    # Link scanners check links with HEAD: only a GET is a person's click.
    if request.method == "GET" and isinstance(delivery_id, int) and delivery_id > 0:
        with _state().writer() as session:
            addressee = _load(session, delivery_id)
            if addressee is not None:
                record_event(
                    session,
                    "click",
                    campaign_id=addressee.campaign.id,
                    delivery_id=delivery_id,
                    contact_id=addressee.delivery.contact_id,
                    data={"url": url[:2000]},
                )
                session.commit()
    response = Response("", status=302)
    response.headers["Location"] = url  # only ever the URL signed inside the token
    return response


@pages.get("/o/<token>.gif")
def open_pixel(token: str) -> Response:
    delivery_id = _verify("open", token)
    if request.method == "GET" and isinstance(delivery_id, int) and delivery_id > 0:
        with _state().writer() as session:
            addressee = _load(session, delivery_id)
            if addressee is not None and addressee.campaign.tracks("opens"):
                record_event(
                    session,
                    "open",
                    campaign_id=addressee.campaign.id,
                    delivery_id=delivery_id,
                    contact_id=addressee.delivery.contact_id,
                )
                session.commit()
    response = Response(GIF, mimetype="image/gif")
    response.headers["Cache-Control"] = "no-store, max-age=0"
    return response


_BODY = re.compile(r"<body\b[^>]*>", re.I)


def _with_banner(html: str, banner: str) -> str:
    match = _BODY.search(html)
    if match is None:
        return banner + html
    return html[: match.end()] + banner + html[match.end() :]


def _banner(lang: str, *parts: str) -> str:
    return (
        f'<div lang="{lang}" style="font:14px/1.5 sans-serif;background:#fff8e1;color:#1f2933;'
        'padding:10px 16px;border-bottom:1px solid #e4e7eb;">' + " ".join(parts) + "</div>"
    )


@pages.get("/v/<token>")
def view_online(token: str) -> Response:
    """The message re-rendered from what was compiled at send, with the contact's data as
    it is today (we keep no copy of each message sent): the page says so."""
    state = _state()
    with state.reader() as session:
        addressee, other = _resolve("view", token, session)
        if other is not None:
            return other
        assert addressee is not None
        prepared: Prepared = prepare(session, addressee.campaign, state.settings, state.links)
        (recipient,) = load_recipients(session, [addressee.delivery.id])
        rendered = prepared.composer.render(recipient)
        lang = _language(_own_language(addressee))
    _ = translator(lang)
    note = escape(
        _(
            "This is our message to you, shown again with your details as they are today; "
            "they may differ from the copy you received."
        )
    )
    response = Response(_with_banner(rendered.html, _banner(lang, note)), mimetype="text/html")
    response.headers["Content-Security-Policy"] = VIEW_CSP
    return response


# --- subscribe, with double opt-in --------------------------------------------------------


def _client() -> str:
    return subscriptions.client_key(_state().settings, request.remote_addr)


def _subscribe_config() -> SubscribeConfig:
    config = _state().subscribe
    if config is None:
        abort(404)
    return config


def _form(lang: str, status: int = 200, **values: Any) -> Response:
    state = _state()
    config = _subscribe_config()
    assert state.form_tokens is not None
    _ = translator(lang)
    return _page(
        "subscribe.html",
        lang,
        status,
        token=state.form_tokens.issue(_client()),
        consent_text=config.consent_text(lang),
        errors=values.pop("errors", {}),
        values=values.pop("values", {"language": lang}),
        title=_("Subscribe"),
        robots="index, follow",
        **values,
    )


@pages.get("/subscribe")
def subscribe_page() -> Response:
    return _form(_language())


def pad_to(
    floor: float,
    started: float,
    *,
    now: float | None = None,
    sleep: Callable[[float], None] | None = None,
) -> float:
    """Sleep what is left of `floor` seconds since `started` (time.monotonic); returns it.
    Under gunicorn's gevent worker the sleep yields: the process serves others meanwhile
    (time.sleep is looked up when called, after gevent has patched it)."""
    elapsed = max(0.0, (time.monotonic() if now is None else now) - started)
    left = floor - elapsed
    if left <= 0:
        return 0
    (sleep or time.sleep)(left)
    return left


@pages.post("/subscribe")
def subscribe() -> Response:
    started = time.monotonic()
    try:
        return _subscribe()
    finally:
        # A suppressed or limited address is answered without the work of queueing: a
        # fixed floor keeps how long the answer takes from telling which it was.
        pad_to(SUBSCRIBE_FLOOR, started)


def _subscribe() -> Response:
    state = _state()
    config = _subscribe_config()
    lang = supported(request.form.get("lang", "")) or _language()
    _ = translator(lang)
    with state.writer() as session:
        allowed = subscriptions.allow_client(
            session, _client(), config.spec.limits.per_client_per_hour
        )
        session.commit()
    if not allowed:
        abort(429)
    assert state.form_tokens is not None
    checked = subscriptions.read_form(request.form, lang)
    if not state.form_tokens.valid(request.form.get("token", ""), _client()):
        checked.errors = {"form": _("The form has expired. Please send it again.")}
    if checked.errors:
        return _form(lang, 400, errors=checked.errors, values=checked.values)
    campaign_id = None
    # A robot fills in the field people never see: it gets the same answer, nothing queued.
    if not request.form.get("website") and checked.form is not None:
        with state.writer() as session:
            campaign_id = subscriptions.request(session, checked.form, config, state.settings)
            session.commit()
    state.nudge(campaign_id)
    # The same page whatever the address: new, pending, subscribed, suppressed or limited.
    return _page(
        "message.html",
        lang,
        heading=_("Please check your inbox"),
        lines=[
            _(
                "If the address can receive our email, a message with a confirmation link is "
                "on its way. Your subscription starts when you confirm it."
            ),
            _("The link works for 7 days. Did nothing arrive? Look in your spam folder."),
        ],
        title=_("Please check your inbox"),
    )


def _confirmation(token: str) -> tuple[str | None, Response | None]:
    _subscribe_config()
    tokens = _state().confirm_tokens
    assert tokens is not None
    reference = tokens.verify(token)
    return (reference, None) if reference is not None else (None, _invalid())


@pages.get("/confirm/<token>")
def confirm_page(token: str) -> Response:
    """One button; nothing changes until it is pressed (mail scanners follow links)."""
    reference, invalid = _confirmation(token)
    if invalid is not None:
        return invalid
    assert reference is not None
    with _state().reader() as session:
        found = subscriptions.pending(session, reference)
        if found is None:
            return _invalid()
        lang = _language(found.language)
        _ = translator(lang)
        return _page(
            "confirm.html",
            lang,
            email=found.email,
            sender=_system_sender_name(),
            consent_text=_subscribe_config().consent_text(lang),
            confirmed=found.confirmed_at is not None,
            action=f"/confirm/{token}",
            title=_("Confirm your subscription"),
        )


def _system_sender_name() -> str:
    state = _state()
    return subscriptions.system_sender(state.settings, state.subscribe).name


@pages.post("/confirm/<token>")
def confirm(token: str) -> Response:
    reference, invalid = _confirmation(token)
    if invalid is not None:
        return invalid
    assert reference is not None
    state = _state()
    config = _subscribe_config()
    with state.writer() as session:
        done = subscriptions.confirm(session, reference, config, state.settings)
        session.commit()
    if done is None:
        return _invalid()
    state.nudge(*done.nudge)
    lang = _language(done.language)
    _ = translator(lang)
    if done.status == "blocked":
        return _message(
            lang,
            _("Confirm your subscription"),
            _(
                "We cannot send to this address (it bounced or was reported as spam). Please "
                "contact the Secretariat to receive our email again."
            ),
        )
    return _page(
        "confirmed.html",
        lang,
        email=done.email,
        sender=_system_sender_name(),
        result="consented",
        result_date=done.at.date().isoformat(),
        title=_("Your subscription is confirmed"),
    )


# --- the public archive ---------------------------------------------------------------------


def _archive() -> Archive:
    archive = _state().archive
    assert archive is not None
    return archive


@pages.get("/archive")
def archive_index() -> Response:
    lang = _language()
    with _state().reader() as session:
        entries = _archive().entries(session)
    _ = translator(lang)
    response = _page(
        "archive.html",
        lang,
        entries=entries,
        title=_("CityNet newsletter archive"),
        robots="index, follow",
        wide=True,
    )
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


@pages.get("/archive/feed.xml")
def archive_feed() -> Response:
    state = _state()
    lang = _language()
    items = []
    with state.reader() as session:
        for entry in _archive().entries(session)[:50]:
            shown = _archive().render(
                session, entry.name, lang, f"{state.settings.base_url}/archive/{entry.name}"
            )
            if shown is not None:
                summary = " ".join(shown[2].text.split())[:400]
                items.append((entry, summary))
    body = atom_feed(
        items, state.settings.base_url, lang, translator(lang)("CityNet newsletter archive")
    )
    response = Response(body, mimetype="application/atom+xml")
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


@pages.get("/archive/<name>")
def archive_entry(name: str) -> Response:
    state = _state()
    if len(name) > 200:
        abort(404)
    lang = _language()
    self_url = f"{state.settings.base_url}/archive/{name}"
    with state.reader() as session:
        shown = _archive().render(session, name, lang, self_url)
    if shown is None:
        abort(404)
    entry, language, rendered = shown
    _ = translator(lang)
    parts = [
        f'<strong><a href="/archive?lang={lang}">{escape(_("CityNet newsletter archive"))}</a>'
        "</strong>",
        f"· {entry.sent_at:%Y-%m-%d}",
    ]
    for code, label in menu():
        if code in entry.subjects and code != language:
            parts.append(f'· <a href="?lang={code}" lang="{code}">{escape(label)}</a>')
    if state.subscribe is not None:
        parts.append(
            f'· <a href="/subscribe?lang={lang}" id="subscribe">{escape(_("Subscribe"))}</a>'
        )
    html = _with_banner(rendered.html, _banner(lang, *parts))
    response = Response(html, mimetype="text/html")
    response.headers["Content-Security-Policy"] = VIEW_CSP
    response.headers["Cache-Control"] = "public, max-age=300"
    return response
