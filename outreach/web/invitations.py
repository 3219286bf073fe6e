"""`GET /e/NAME.ics`: a sent campaign's event as an iCalendar file, for the "add to
calendar" link of its messages (`event.ics_url`). The same UID, times and title as the
calendar part of the messages, so a calendar that has one has both."""

from __future__ import annotations

from flask import Blueprint, Response, abort, request
from sqlalchemy import select

from outreach.invitations import Invitation
from outreach.models import Campaign
from outreach.web.base import language, state

invitation_door = Blueprint("invitations", __name__)


@invitation_door.get("/e/<name>.ics")
def event_ics(name: str) -> Response:
    if len(name) > 200:
        abort(404)
    with state().reader() as session:
        found = session.execute(
            select(Campaign.definition, Campaign.state).where(Campaign.name == name)
        ).first()
    if found is None or found.state == "cancelled" or not (found.definition or {}).get("event"):
        abort(404)
    definition = found.definition
    invitation = Invitation.from_json(name, definition["event"], definition["default_language"])
    # The title in ?lang= (the links in a message name its language), else the reader's.
    lang = request.args.get("lang", "")[:35] or language()
    body = invitation.ics(lang)
    response = Response(body, mimetype="text/calendar")
    response.headers["Content-Type"] = "text/calendar; method=PUBLISH; charset=utf-8"
    response.headers["Content-Disposition"] = f'attachment; filename="{name}.ics"'
    response.headers["Cache-Control"] = "public, max-age=300"
    return response
