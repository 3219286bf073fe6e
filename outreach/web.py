"""What a recipient sees: one-click unsubscribe (RFC 8058), preferences, click and open
tracking, and the view-online page. Every link carries a signed token, so nothing here can
be changed, listed or guessed without one, and a GET never changes anything.

The pages are one Blueprint of module-level views; what they share (settings, tokens,
sessions) lives on `app.extensions["outreach"]`.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.utils import parseaddr
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, Response, abort, current_app, render_template, request
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from outreach.compose import Prepared, prepare
from outreach.config import Settings
from outreach.db import reader_sessionmaker, writer_sessionmaker
from outreach.events import record_event
from outreach.fields import normalise_language
from outreach.models import Campaign, Contact, Delivery, Suppression
from outreach.store import load as load_recipients
from outreach.suppressions import suppress_if_new, unsuppress
from outreach.tokens import InvalidToken, Links, Tokens, tokens_for

MAX_BODY = 16 * 1024
GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00"
    b"\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
LANGUAGES = [("ko", "한국어"), ("en", "English")]
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
# The view-online page shows the email itself: its inline styles and remote images.
VIEW_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; "
    "font-src https:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)

TEXT: dict[str, dict[str, str]] = {
    "ko": {
        "brand": "시티넷 CityNet",
        "unsubscribe_title": "수신거부",
        "unsubscribe_who": "{sender}에서 보내는 메일({campaign})을 더 이상 받지 않으시려면 아래 "
        "버튼을 눌러 주세요.",
        "unsubscribe_button": "수신거부하기",
        "unsubscribe_note": "버튼을 누르기 전에는 아무것도 바뀌지 않습니다.",
        "unsubscribed_title": "수신거부되었습니다",
        "unsubscribed_text": "{email} 주소로는 {sender}의 메일을 더 이상 보내지 않습니다. "
        "이미 발송 대기 중인 메일도 보내지 않습니다.",
        "undo_button": "실수였습니다 — 다시 받기",
        "preferences_link": "수신 설정 및 언어 변경",
        "preferences_title": "수신 설정",
        "subscribed": "현재 메일을 받고 계십니다.",
        "unsubscribed": "수신거부하셨습니다.",
        "blocked": "이 주소로는 메일을 보낼 수 없습니다(반송 또는 스팸 신고). 다시 받으시려면 "
        "사무국에 문의해 주세요.",
        "resubscribe_button": "다시 받기",
        "resubscribed": "다시 받도록 설정했습니다.",
        "unsubscribe_link": "수신거부",
        "language_label": "받으실 언어",
        "language_button": "언어 저장",
        "language_saved": "언어를 저장했습니다.",
        "invalid_title": "잘못된 링크입니다",
        "invalid_text": "링크가 손상되었거나 완전하지 않습니다. 받으신 메일의 링크를 다시 "
        "눌러 주세요. 아무것도 변경되지 않았습니다.",
        "test_text": "시험 발송된 메일의 링크입니다. 아무것도 변경되지 않았습니다.",
        "gone_text": "이 주소의 정보는 이미 삭제되었으며 더 이상 메일을 보내지 않습니다.",
        "bad_request": "요청을 처리할 수 없습니다. 아무것도 변경되지 않았습니다.",
    },
    "en": {
        "brand": "CityNet",
        "unsubscribe_title": "Unsubscribe",
        "unsubscribe_who": "To stop receiving email from {sender} ({campaign}), press the button "
        "below.",
        "unsubscribe_button": "Unsubscribe",
        "unsubscribe_note": "Nothing changes until you press the button.",
        "unsubscribed_title": "You are unsubscribed",
        "unsubscribed_text": "{sender} will send no more email to {email}, including messages "
        "already waiting to be sent.",
        "undo_button": "That was a mistake — subscribe me again",
        "preferences_link": "Preferences and language",
        "preferences_title": "Your preferences",
        "subscribed": "You are receiving our email.",
        "unsubscribed": "You have unsubscribed.",
        "blocked": "We cannot send to this address (it bounced or was reported as spam). Please "
        "contact the Secretariat to receive our email again.",
        "resubscribe_button": "Subscribe again",
        "resubscribed": "You will receive our email again.",
        "unsubscribe_link": "Unsubscribe",
        "language_label": "Language of our email",
        "language_button": "Save language",
        "language_saved": "Your language is saved.",
        "invalid_title": "This link is not valid",
        "invalid_text": "The link is damaged or incomplete. Please click the link in your email "
        "again. Nothing was changed.",
        "test_text": "This link is from a test message. Nothing was changed.",
        "gone_text": "This address has been erased and will not be mailed again.",
        "bad_request": "This request cannot be handled. Nothing was changed.",
    },
}


@dataclass
class WebState:
    settings: Settings
    tokens: Tokens
    links: Links
    writer: sessionmaker[Session]
    reader: sessionmaker[Session]


@dataclass
class Addressee:
    """Whom a link was sent to: the delivery a token names, its contact and campaign."""

    delivery: Delivery
    contact: Contact | None
    campaign: Campaign

    @property
    def sender(self) -> str:
        name, address = parseaddr(self.campaign.definition.get("from", ""))
        return name or address or "CityNet"


pages = Blueprint("pages", __name__)


def create_app(settings: Settings) -> Flask:
    tokens = tokens_for(settings, "outreach serve")
    app = Flask(
        __name__,
        template_folder="web_templates",
        static_folder=str(Path(__file__).parent / "static"),
        static_url_path="/static",
    )
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.extensions["outreach"] = WebState(
        settings,
        tokens,
        Links(settings.base_url, tokens),
        writer_sessionmaker(settings.database_url),
        reader_sessionmaker(settings.database_url),
    )
    app.register_blueprint(pages)
    return app


def _state() -> WebState:
    state: WebState = current_app.extensions["outreach"]
    return state


def _language(contact: Contact | None) -> str:
    asked = request.values.get("lang", "")
    if asked in TEXT:
        return asked
    if contact is not None and contact.language and contact.language.split("-")[0] in TEXT:
        return contact.language.split("-")[0]
    best = request.accept_languages.best_match(list(TEXT))
    return best or "en"


def _page(template: str, lang: str, status: int = 200, **values: Any) -> Response:
    t = TEXT[lang]
    body = render_template(
        template,
        lang=lang,
        t=t,
        languages=LANGUAGES,
        title=values.pop("title", t["brand"]),
        **values,
    )
    return Response(body, status=status, mimetype="text/html")


def _message(lang: str, heading: str, *lines: str, status: int = 200) -> Response:
    return _page("message.html", lang, status, heading=heading, lines=list(lines))


def _invalid() -> Response:
    lang = request.values.get("lang", "")
    # Both languages: we cannot know the recipient's from a token we cannot read.
    langs = [lang] if lang in TEXT else ["ko", "en"]
    lines = [TEXT[code]["invalid_text"] for code in langs]
    heading = " / ".join(TEXT[code]["invalid_title"] for code in langs)
    return _message(langs[0], heading, *lines, status=400)


def _verify(kind: str, token: str) -> Any:
    try:
        return _state().tokens.verify(kind, token)
    except InvalidToken:
        return None


def _load(session: Session, delivery_id: Any) -> Addressee | None:
    if not isinstance(delivery_id, int) or isinstance(delivery_id, bool) or delivery_id < 1:
        return None
    row = session.execute(
        select(Delivery, Contact, Campaign)
        .outerjoin(Contact, Contact.id == Delivery.contact_id)
        .join(Campaign, Campaign.id == Delivery.campaign_id)
        .where(Delivery.id == delivery_id)
    ).first()
    return None if row is None else Addressee(*row)


def _special(delivery_id: Any, addressee: Addressee | None) -> Response | None:
    """Pages for links that name no live recipient: a test message, an erased contact."""
    if delivery_id == 0:
        lang = _language(None)
        return _message(lang, TEXT[lang]["brand"], TEXT[lang]["test_text"])
    if addressee is None:
        return _invalid()
    if addressee.contact is None:
        lang = _language(None)
        return _message(lang, TEXT[lang]["brand"], TEXT[lang]["gone_text"])
    return None


def _resolve(kind: str, token: str, session: Session) -> tuple[Addressee | None, Response | None]:
    """The addressee a token names, or the page to answer instead of acting."""
    delivery_id = _verify(kind, token)
    if delivery_id is None:
        return None, _invalid()
    addressee = _load(session, delivery_id)
    return addressee, _special(delivery_id, addressee)


@pages.after_app_request
def _headers(response: Response) -> Response:
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    if request.path.startswith(("/u/", "/p/", "/v/")):
        response.headers["Cache-Control"] = "no-store"
    return response


@pages.app_errorhandler(400)
@pages.app_errorhandler(404)
@pages.app_errorhandler(405)
@pages.app_errorhandler(413)
def _http_error(error: Any) -> Response:
    lang = request.values.get("lang", "") if request.method == "GET" else ""
    langs = [lang] if lang in TEXT else ["ko", "en"]
    code = getattr(error, "code", 400)
    text = [f"{code}: {TEXT[c]['bad_request']}" for c in langs]
    return _message(langs[0], TEXT[langs[0]]["brand"], *text, status=code)


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
        assert addressee is not None and addressee.contact is not None
        lang = _language(addressee.contact)
        return _page(
            "unsubscribe.html",
            lang,
            email=addressee.contact.email,
            sender=addressee.sender,
            campaign=addressee.campaign.name,
            action=f"/u/{token}",
            title=TEXT[lang]["unsubscribe_title"],
        )


@pages.post("/u/<token>")
def unsubscribe(token: str) -> Response:
    one_click = request.form.get("List-Unsubscribe") == "One-Click"
    confirmed = request.form.get("confirm") == "yes"
    if not (one_click or confirmed):
        abort(400)
    state = _state()
    with state.writer() as session:
        addressee, other = _resolve("unsubscribe", token, session)
        if other is not None:
            return other
        assert addressee is not None and addressee.contact is not None
        contact = addressee.contact
        if suppress_if_new(
            session,
            contact.email,
            "unsubscribed",
            campaign_id=addressee.campaign.id,
            detail="one-click" if one_click else "unsubscribe page",
        ):
            record_event(
                session,
                "unsubscribe",
                campaign_id=addressee.campaign.id,
                delivery_id=addressee.delivery.id,
                contact_id=contact.id,
                data={"method": "one-click" if one_click else "page"},
            )
        session.commit()
        lang = _language(contact)
        return _page(
            "unsubscribed.html",
            lang,
            email=contact.email,
            sender=addressee.sender,
            preferences=f"/p/{state.tokens.sign('preferences', addressee.delivery.id)}",
            title=TEXT[lang]["unsubscribed_title"],
        )


@pages.route("/p/<token>", methods=["GET", "POST"])
def preferences(token: str) -> Response:
    state = _state()
    sessions = state.writer if request.method == "POST" else state.reader
    with sessions() as session:
        addressee, other = _resolve("preferences", token, session)
        if other is not None:
            return other
        assert addressee is not None and addressee.contact is not None
        contact = addressee.contact
        notice = _change_preferences(session, addressee) if request.method == "POST" else None
        lang = (
            _language(contact)
            if request.method == "GET" or "lang" in request.args
            else (contact.language or "en").split("-")[0]
        )
        lang = lang if lang in TEXT else "en"
        t = TEXT[lang]
        suppression = session.scalar(select(Suppression).where(Suppression.email == contact.email))
        if suppression is None:
            status_text = t["subscribed"]
        elif suppression.reason in ("unsubscribed", "manual"):
            status_text = t["unsubscribed"]
        else:
            status_text = t["blocked"]
        return _page(
            "preferences.html",
            lang,
            email=contact.email,
            notice=notice,
            status_text=status_text,
            subscribed=suppression is None,
            can_resubscribe=suppression is not None and suppression.reason == "unsubscribed",
            unsubscribe=f"/u/{state.tokens.sign('unsubscribe', addressee.delivery.id)}",
            contact_language=(contact.language or "en").split("-")[0],
            title=t["preferences_title"],
        )


def _change_preferences(session: Session, addressee: Addressee) -> str:
    assert addressee.contact is not None
    contact = addressee.contact
    action = request.form.get("action")
    if action == "resubscribe":
        notice = _resubscribe(session, addressee, TEXT[_language(contact)])
    elif action == "language":
        try:
            chosen = normalise_language(request.form.get("language", ""))
        except ValueError:
            abort(400)
        if chosen not in TEXT:
            abort(400)
        contact.language = chosen
        notice = TEXT[chosen]["language_saved"]
    else:
        abort(400)
    session.commit()
    return notice


def _resubscribe(session: Session, addressee: Addressee, t: dict[str, str]) -> str:
    assert addressee.contact is not None
    existing = session.scalar(
        select(Suppression).where(Suppression.email == addressee.contact.email)
    )
    if existing is None:
        return t["resubscribed"]
    if existing.reason != "unsubscribed":
        return t["blocked"]  # a bounce or complaint is not the recipient's to undo
    unsuppress(session, addressee.contact.email, only_reason="unsubscribed")
    record_event(
        session,
        "resubscribe",
        campaign_id=addressee.campaign.id,
        delivery_id=addressee.delivery.id,
        contact_id=addressee.contact.id,
    )
    return t["resubscribed"]


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
    if isinstance(delivery_id, int) and delivery_id > 0:
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
    if isinstance(delivery_id, int) and delivery_id > 0:
        with _state().writer() as session:
            addressee = _load(session, delivery_id)
            tracking = addressee.campaign.definition.get("tracking", {}) if addressee else {}
            if addressee is not None and tracking.get("opens"):
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


@pages.get("/v/<token>")
def view_online(token: str) -> Response:
    state = _state()
    with state.reader() as session:
        addressee, other = _resolve("view", token, session)
        if other is not None:
            return other
        assert addressee is not None
        prepared: Prepared = prepare(session, addressee.campaign, state.settings, state.links)
        (recipient,) = load_recipients(session, [addressee.delivery.id])
        html = prepared.composer.render(recipient).html
    response = Response(html, mimetype="text/html")
    response.headers["Content-Security-Policy"] = VIEW_CSP
    return response
