"""The pages a recipient reaches from a message of ours: the one-click unsubscribe
(RFC 8058) and its confirm page, preferences (topics, subscribe again, language), and the
message viewed online. What an unsubscribe does is `unsubscribe`; here is only the door."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, abort, request
from markupsafe import escape
from sqlalchemy import select
from sqlalchemy.orm import Session

from outreach import consent
from outreach import unsubscribe as leaving
from outreach.compose import Prepared, prepare
from outreach.contacts import record_choice
from outreach.events import record_event
from outreach.fields import normalise_language
from outreach.i18n import DEFAULT, languages, supported, translator
from outreach.models import Suppression, utcnow
from outreach.render import RenderError
from outreach.store import load as load_recipients
from outreach.suppressions import DeliveryRecipient, is_suppressed, unsuppress
from outreach.topics import Topic, Topics, left_by
from outreach.web.base import (
    VIEW_CSP,
    Addressee,
    banner,
    invalid,
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
log = logging.getLogger("outreach.web")
# The source of the consent records of what is chosen on the preferences page.
SOURCE = "preferences page"


@recipients.get("/u/<token>")
def unsubscribe_page(token: str) -> Response:
    with state().reader() as session:
        addressee, other = resolve("unsubscribe", token, session)
        if other is not None:
            return other
        assert addressee is not None and addressee.email is not None
        lang = language(own_language(addressee))
        topic = _topic(addressee)
        already = _already_left(session, addressee, topic, token)
        if already is not None:
            return already
        return page(
            "unsubscribe.html",
            lang,
            email=addressee.email,
            sender=addressee.sender,
            topic=topic.title_in(lang) if topic else None,
            description=topic.description_in(lang) if topic else None,
            subject=message_subject(session, addressee),  # not the campaign's internal name
            action=f"/u/{token}",
            title=translator(lang)("Unsubscribe"),
        )


def _already_left(
    session: Session, addressee: Addressee, topic: Topic | None, token: str
) -> Response | None:
    """The link opened again after leaving: say so, with the result, rather than offer the
    button again (and the page's language switch lands here, not on the button)."""
    assert addressee.email is not None
    web = state()
    lang = language(own_language(addressee))
    _ = translator(lang)
    since = session.scalar(
        select(Suppression.created_at).where(
            Suppression.email == addressee.email, Suppression.reason == "unsubscribed"
        )
    )
    left = None
    if since is None and topic is not None and addressee.contact is not None:
        left = left_by(session, addressee.contact.id).get(topic.name)
        if left is None:
            return None
    elif since is None:
        return None
    title = topic.title_in(lang) if left is not None and topic is not None else None
    return page(
        "unsubscribed.html",
        lang,
        already=True,
        email=addressee.email,
        sender=addressee.sender,
        topic=title,
        topic_name=topic.name if title and topic else None,
        suppressed=False,
        action=f"/u/{token}",
        preferences=f"/p/{web.tokens.sign('preferences', addressee.delivery.id)}",
        result="left" if title else "withdrawn",
        result_date=(left.at if left is not None else since or utcnow()).date().isoformat(),
        title=_("You have already left “%(topic)s”") % {"topic": title}
        if title
        else _("You have already unsubscribed"),
    )


@recipients.post("/u/<token>")
def unsubscribe(token: str) -> Response:
    """A mail client's one-click (RFC 8058) and the page's default button leave the
    message's topic; the page's other button (leave=everything) leaves everything."""
    one_click = request.form.get("List-Unsubscribe") == "One-Click"
    confirmed = request.form.get("confirm") == "yes"
    if not (one_click or confirmed):
        abort(400)
    leave = "topic" if one_click else request.form.get("leave", "topic")
    if leave not in ("topic", "everything"):
        abort(400)
    web = state()
    with web.writer() as session:
        addressee, other = resolve("unsubscribe", token, session)
        if other is not None:
            return other
        assert addressee is not None and addressee.email is not None
        done = leaving.unsubscribe(
            session,
            DeliveryRecipient(
                addressee.delivery, addressee.campaign, addressee.contact, addressee.email
            ),
            "one-click" if one_click else "page",
            everything=leave == "everything",
            subscribe=web.subscribe,
            settings=web.settings,
        )
        session.commit()
        lang = language(own_language(addressee))
        _ = translator(lang)
        topic = done.topic.title_in(lang) if done.topic else None
        response = page(
            "unsubscribed.html",
            lang,
            already=False,
            email=addressee.email,
            sender=addressee.sender,
            topic=topic,
            topic_name=done.topic.name if done.topic else None,
            suppressed=done.topic is not None and is_suppressed(session, addressee.email),
            action=f"/u/{token}",
            preferences=f"/p/{web.tokens.sign('preferences', addressee.delivery.id)}",
            result="left" if done.topic else "withdrawn",
            result_date=done.since.date().isoformat(),
            title=_("You have left “%(topic)s”") % {"topic": topic}
            if topic
            else _("You are unsubscribed"),
        )
    web.nudge(done.nudge)
    return response


def _topic(addressee: Addressee) -> Topic | None:
    """The topic a message's unsubscribe leaves, as the message was sent under it; None when
    it leaves everything (no topic, or a system message's recipient who is no contact)."""
    if addressee.contact is None:
        return None
    return leaving.topic_of(addressee.campaign)


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
        left = left_by(session, contact.id)
        return page(
            "preferences.html",
            lang,
            email=contact.email,
            notice=notice,
            standing=status,
            can_resubscribe=suppression is not None and suppression.reason == "unsubscribed",
            topics=[
                {
                    "name": topic.name,
                    "title": topic.title_in(lang),
                    "description": topic.description_in(lang),
                    "receives": topic.name not in left,
                }
                for topic in web.topics or ()
            ],
            unsubscribe=f"/u/{web.tokens.sign('unsubscribe', addressee.delivery.id)}",
            contact_language=supported(contact.language) or DEFAULT,
            title=translator(lang)("Your preferences"),
        )


def _change_preferences(session: Session, addressee: Addressee) -> str:
    assert addressee.contact is not None
    contact = addressee.contact
    action = request.form.get("action")
    _ = translator(language(contact.language))
    if action == "resubscribe":
        notice = _resubscribe(session, addressee, _)
    elif action == "topics":
        notice = _choose_topics(session, addressee, set(request.form.getlist("topic")), _)
    elif action == "join":
        notice = _join_again(session, addressee, request.form.get("topic", ""), _)
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


def _topics() -> Topics:
    found = state().topics
    if found is None or not found.exists:
        abort(400)  # a page of ours offers no topics then
    return found


def _choose_topics(session: Session, addressee: Addressee, chosen: set[str], _: Any) -> str:
    """The topics ticked are received, the others left; a name we do not offer changes
    nothing at all."""
    topics = _topics()
    if chosen - set(topics.by_name):
        abort(400)
    assert addressee.contact is not None
    left = left_by(session, addressee.contact.id)
    for topic in topics:
        if topic.name in chosen and topic.name in left:
            _record_join(session, addressee, topic)
        elif topic.name not in chosen and topic.name not in left:
            _record_leave(session, addressee, topic)
    return str(_("Your choices are saved."))


def _join_again(session: Session, addressee: Addressee, name: str, _: Any) -> str:
    """ "That was a mistake": the topic just left, received again."""
    offered = state().topics
    topic = (offered.get(name) if offered else None) or _sent_topic(addressee, name)
    if topic is None:
        abort(400)
    _record_join(session, addressee, topic)
    assert addressee.contact is not None
    title = topic.title_in(language(addressee.contact.language))
    return str(_("You will receive “%(topic)s” again.") % {"topic": title})


def _sent_topic(addressee: Addressee, name: str) -> Topic | None:
    topic = leaving.topic_of(addressee.campaign)
    return topic if topic is not None and topic.name == name else None


def _record_join(session: Session, addressee: Addressee, topic: Topic) -> None:
    assert addressee.contact is not None
    if consent.join_topic(
        session, addressee.contact.id, topic.name, source=SOURCE, version=topic.version
    ):
        _topic_event(session, addressee, "resubscribe", topic)


def _record_leave(session: Session, addressee: Addressee, topic: Topic) -> None:
    assert addressee.contact is not None
    changed, _ = consent.leave_topic(
        session, addressee.contact.id, topic.name, source=SOURCE, version=topic.version
    )
    if changed:
        _topic_event(session, addressee, "unsubscribe", topic)


def _topic_event(session: Session, addressee: Addressee, kind: str, topic: Topic) -> None:
    record_event(
        session,
        kind,
        campaign_id=addressee.campaign.id,
        delivery_id=addressee.delivery.id,
        contact_id=addressee.contact.id if addressee.contact else None,
        data={"method": "preferences", "topic": topic.name},
    )


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
        try:
            rendered = prepared.composer.render(recipient)
        except RenderError as exc:
            # A value the contact holds now (a `javascript:` link, say) makes no message:
            # the page any failed link gets, and a line that quotes none of the value.
            log.warning(
                "view online of delivery %d: cannot render it (%s)",
                addressee.delivery.id,
                type(exc).__name__,
            )
            return invalid()
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
