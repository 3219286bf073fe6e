"""Clicks and opens: the redirect to the URL signed inside a click token, and the open
pixel of campaigns that track opens. Both answer at once whatever the token says."""

from __future__ import annotations

from flask import Blueprint, Response, request

from outreach.events import record_event
from outreach.links import clicked_link
from outreach.web.base import invalid, load, state, verify

tracking = Blueprint("tracking", __name__)

GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00"
    b"\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)


@tracking.get("/c/<token>")
def click(token: str) -> Response:
    payload = verify("click", token)
    if (
        not isinstance(payload, list)
        or len(payload) not in (2, 3)
        or not isinstance(payload[1], str)
        or not payload[1].startswith(("https://", "http://"))
    ):
        return invalid()
    delivery_id, url, *position = payload
    # Link scanners check links with HEAD: only a GET is a person's click.
    if request.method == "GET" and isinstance(delivery_id, int) and delivery_id > 0:
        with state().writer() as session:
            addressee = load(session, delivery_id)
            if addressee is not None:
                record_event(
                    session,
                    "click",
                    campaign_id=addressee.campaign.id,
                    delivery_id=delivery_id,
                    contact_id=addressee.delivery.contact_id,
                    data={
                        "url": url[:2000],
                        **clicked_link(addressee.campaign, url, *position),
                    },
                )
                session.commit()
    response = Response("", status=302)
    response.headers["Location"] = url  # only ever the URL signed inside the token
    return response


@tracking.get("/o/<token>.gif")
def open_pixel(token: str) -> Response:
    delivery_id = verify("open", token)
    if request.method == "GET" and isinstance(delivery_id, int) and delivery_id > 0:
        with state().writer() as session:
            addressee = load(session, delivery_id)
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
