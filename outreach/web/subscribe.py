"""The public subscribe form and its double opt-in: the form, the request that queues a
confirmation, and the confirmation link's page and button."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, abort, request

from outreach import subscriptions
from outreach.i18n import supported, translator
from outreach.subscriptions import SubscribeConfig
from outreach.web.base import invalid, language, message, page, state

subscribe_door = Blueprint("subscribe", __name__)

# Seconds every POST /subscribe answer takes at least, whatever the address.
SUBSCRIBE_FLOOR = 0.1


def _client() -> str:
    return subscriptions.client_key(state().settings, request.remote_addr)


def _subscribe_config() -> SubscribeConfig:
    config = state().subscribe
    if config is None:
        abort(404)
    return config


def _form(lang: str, status: int = 200, **values: Any) -> Response:
    web = state()
    config = _subscribe_config()
    assert web.form_tokens is not None
    _ = translator(lang)
    return page(
        "subscribe.html",
        lang,
        status,
        token=web.form_tokens.issue(_client()),
        consent_text=config.consent_text(lang),
        topics=[
            {"name": t.name, "title": t.title_in(lang), "description": t.description_in(lang)}
            for t in (web.topics.get(name) for name in config.spec.topics if web.topics)
            if t is not None
        ],
        ticked=values.pop("ticked", []),
        errors=values.pop("errors", {}),
        values=values.pop("values", {"language": lang}),
        title=_("Subscribe"),
        robots="index, follow",
        **values,
    )


@subscribe_door.get("/subscribe")
def subscribe_page() -> Response:
    return _form(language())


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


@subscribe_door.post("/subscribe")
def subscribe() -> Response:
    started = time.monotonic()
    try:
        return _subscribe()
    finally:
        # A suppressed or limited address is answered without the work of queueing: a
        # fixed floor keeps how long the answer takes from telling which it was.
        pad_to(SUBSCRIBE_FLOOR, started)


def _subscribe() -> Response:
    web = state()
    config = _subscribe_config()
    lang = supported(request.form.get("lang", "")) or language()
    _ = translator(lang)
    assert web.form_tokens is not None
    checked = subscriptions.read_form(
        request.form, lang, config.spec.topics, request.form.getlist("topic")
    )
    # The token first: any page on the web can make a visitor's browser POST here, but not
    # with a token, and such requests must not use up the visitor's own allowance.
    if not web.form_tokens.valid(request.form.get("token", ""), _client()):
        checked.errors = {"form": _("The form has expired. Please send it again.")}
        return _form(lang, 400, errors=checked.errors, values=checked.values, ticked=checked.topics)
    with web.writer() as session:
        allowed = subscriptions.allow_client(
            session, _client(), config.spec.limits.per_client_per_hour
        )
        session.commit()
    if not allowed:
        abort(429)
    if checked.errors:
        return _form(lang, 400, errors=checked.errors, values=checked.values, ticked=checked.topics)
    campaign_id = None
    # A robot fills in the field people never see: it gets the same answer, nothing queued.
    if not request.form.get("website") and checked.form is not None:
        network = subscriptions.wider_network(request.remote_addr)
        try:
            with web.writer() as session:
                campaign_id = subscriptions.request(
                    session, checked.form, config, web.settings, network=network
                )
                session.commit()
        except subscriptions.Busy:
            # Honest, and the same for every address: come back, rather than wait for mail
            # that will not come.
            return message(
                lang,
                _("Please try again later"),
                _(
                    "We are receiving too many subscription requests right now, and nothing "
                    "was sent. Please try again in an hour."
                ),
                status=429,
            )
    web.nudge(campaign_id)
    # The same page whatever the address: new, pending, subscribed, suppressed or limited.
    return _check_inbox(lang)


@subscribe_door.get("/subscribe/sent")
def check_inbox_page() -> Response:
    """ "Please check your inbox" again, in the language chosen on it (it says nothing of
    the address: anyone may open it)."""
    _subscribe_config()
    return _check_inbox(language())


def _check_inbox(lang: str) -> Response:
    _ = translator(lang)
    return page(
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
        switch_to="/subscribe/sent",
    )


def _confirmation(token: str) -> tuple[str | None, Response | None]:
    _subscribe_config()
    tokens = state().confirm_tokens
    assert tokens is not None
    reference = tokens.verify(token)
    return (reference, None) if reference is not None else (None, invalid())


@subscribe_door.get("/confirm/<token>")
def confirm_page(token: str) -> Response:
    """One button; nothing changes until it is pressed (mail scanners follow links)."""
    reference, not_valid = _confirmation(token)
    if not_valid is not None:
        return not_valid
    assert reference is not None
    with state().reader() as session:
        found = subscriptions.pending(session, reference)
        if found is None:
            return invalid()
        lang = language(found.language)
        _ = translator(lang)
        standing = subscriptions.standing(session, found)
        if standing in ("blocked", "unsubscribed"):
            return _not_confirmed(lang, standing)
        return page(
            "confirm.html",
            lang,
            email=found.email,
            # What the person who filled in the form typed becomes the contact's: the owner
            # of the address sees it before saying yes.
            name=found.name,
            organisation=found.organisation,
            sender=_system_sender_name(),
            consent_text=_subscribe_config().consent_text(lang),
            confirmed=standing == "confirmed",
            action=f"/confirm/{token}",
            title=_("Confirm your subscription"),
        )


def _not_confirmed(lang: str, standing: str) -> Response:
    _ = translator(lang)
    if standing == "unsubscribed":
        return message(
            lang,
            _("Confirm your subscription"),
            _(
                "You unsubscribed after confirming this subscription, so we do not send you "
                "our email. To receive it again, subscribe again with the form."
            ),
        )
    return message(
        lang,
        _("Confirm your subscription"),
        _(
            "We cannot send to this address (it bounced or was reported as spam). Please "
            "contact the Secretariat to receive our email again."
        ),
    )


def _system_sender_name() -> str:
    web = state()
    return subscriptions.system_sender(web.settings, web.subscribe).name


@subscribe_door.post("/confirm/<token>")
def confirm(token: str) -> Response:
    reference, not_valid = _confirmation(token)
    if not_valid is not None:
        return not_valid
    assert reference is not None
    web = state()
    config = _subscribe_config()
    with web.writer() as session:
        done = subscriptions.confirm(session, reference, config, web.settings)
        session.commit()
    if done is None:
        return invalid()
    web.nudge(*done.nudge)
    lang = language(done.language)
    _ = translator(lang)
    if done.status != "confirmed":
        return _not_confirmed(lang, done.status)
    return page(
        "confirmed.html",
        lang,
        email=done.email,
        sender=_system_sender_name(),
        result="consented",
        result_date=done.at.date().isoformat(),
        title=_("Your subscription is confirmed"),
    )
