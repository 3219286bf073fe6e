"""The pages a recipient reaches from a message of ours: the one-click unsubscribe
(RFC 8058) and its confirm page, preferences, and the message viewed online."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, abort, request
from markupsafe import escape
from sqlalchemy import select
from sqlalchemy.orm import Session

from outreach import consent, subscriptions
from outreach.compose import Prepared, prepare
from outreach.contacts import record_choice
from outreach.events import record_event
from outreach.fields import normalise_language
from outreach.i18n import DEFAULT, languages, supported, translator
from outreach.models import Suppression, utcnow
from outreach.store import load as load_recipients
from outreach.suppressions import suppress_if_new, unsuppress
from outreach.web.base import (
    VIEW_CSP,
    Addressee,
    banner,
    language,
    message,
    message_subject,
    own_language,
    page,
    resolve,
    state,
    with_banner,
)

recipients = Blueprint("recipients", __name__)


@recipients.get("/u/<token>")
def unsubscribe_page(token: str) -> Response:
    with state().reader() as session:
        addressee, other = resolve("unsubscribe", token, session)
        if other is not None:
            return other
        assert addressee is not None
        lang = language(own_language(addressee))
        return page(
            "unsubscribe.html",
            lang,
            email=addressee.email,
            sender=addressee.sender,
            campaign=message_subject(session, addressee),  # what the message was called
            action=f"/u/{token}",
            title=translator(lang)("Unsubscribe"),
        )


@recipients.post("/u/<token>")
def unsubscribe(token: str) -> Response:
    one_click = request.form.get("List-Unsubscribe") == "One-Click"
    confirmed = request.form.get("confirm") == "yes"
    if not (one_click or confirmed):
        abort(400)
    web = state()
    nudge: int | None = None
    with web.writer() as session:
        addressee, other = resolve("unsubscribe", token, session)
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
                    session, contact, web.subscribe, web.settings
                )
        session.commit()
        withdrawn = session.scalar(
            select(Suppression.created_at).where(Suppression.email == addressee.email)
        )
        lang = language(own_language(addressee))
        response = page(
            "unsubscribed.html",
            lang,
            email=addressee.email,
            sender=addressee.sender,
            preferences=f"/p/{web.tokens.sign('preferences', addressee.delivery.id)}",
            result="withdrawn",
            result_date=(withdrawn or utcnow()).date().isoformat(),
            title=translator(lang)("You are unsubscribed"),
        )
    web.nudge(nudge)
    return response


@recipients.route("/p/<token>", methods=["GET", "POST"])
def preferences(token: str) -> Response:
    web = state()
    sessions = web.writer if request.method == "POST" else web.reader
    with sessions() as session:
        addressee, other = resolve("preferences", token, session)
        if other is not None:
            return other
        assert addressee is not None and addressee.email is not None
        contact = addressee.contact
        if contact is None:  # a confirmation that was never used: nothing to set
            lang = language(own_language(addressee))
            _ = translator(lang)
            return message(lang, _("Your preferences"), _("This address is not on our list."))
        notice = _change_preferences(session, addressee) if request.method == "POST" else None
        lang = (
            language(contact.language)
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
        return page(
            "preferences.html",
            lang,
            email=contact.email,
            notice=notice,
            standing=status,
            can_resubscribe=suppression is not None and suppression.reason == "unsubscribed",
            unsubscribe=f"/u/{web.tokens.sign('unsubscribe', addressee.delivery.id)}",
            contact_language=supported(contact.language) or DEFAULT,
            title=translator(lang)("Your preferences"),
        )


def _change_preferences(session: Session, addressee: Addressee) -> str:
    assert addressee.contact is not None
    contact = addressee.contact
    action = request.form.get("action")
    if action == "resubscribe":
        notice = _resubscribe(session, addressee, translator(language(contact.language)))
    elif action == "language":
        try:
            chosen = normalise_language(request.form.get("language", ""))
        except ValueError:
            abort(400)
        if chosen not in languages():
            abort(400)
        record_choice(contact, "language", chosen)  # kept by later imports (contacts.py)
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


@recipients.get("/v/<token>")
def view_online(token: str) -> Response:
    """The message re-rendered from what was compiled at send, with the contact's data as
    it is today (we keep no copy of each message sent): the page says so."""
    web = state()
    with web.reader() as session:
        addressee, other = resolve("view", token, session)
        if other is not None:
            return other
        assert addressee is not None
        prepared: Prepared = prepare(session, addressee.campaign, web.settings, web.links)
        (recipient,) = load_recipients(session, [addressee.delivery.id])
        rendered = prepared.composer.render(recipient)
        lang = language(own_language(addressee))
    _ = translator(lang)
    note = escape(
        _(
            "This is our message to you, shown again with your details as they are today; "
            "they may differ from the copy you received."
        )
    )
    response = Response(with_banner(rendered.html, banner(lang, note)), mimetype="text/html")
    response.headers["Content-Security-Policy"] = VIEW_CSP
    return response
