"""The Korean Network Act's rules for advertising mail (`advertising: true`), beyond the
`(광고)` subject prefix that `compiler` adds:

- Art. 50(4): the footer names the sender, its postal address and a way to reach it (an email
  address or a phone number: OUTREACH_SENDER_CONTACT, else the campaign's Reply-To or From),
  with an opt-out in Korean and English. Its words live in the message catalogs.
- Art. 50-2: addresses collected from public pages (`consent: public-contact`) are never sent
  advertising; such contacts are left out of the audience, and validate says how many.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from email.utils import parseaddr

from markupsafe import Markup, escape
from sqlalchemy import ColumnElement, and_, not_, or_
from sqlalchemy.orm import Session

from outreach.i18n import translator
from outreach.models import Contact
from outreach.segments import HARVESTED, Segment, count, not_suppressed
from outreach.typography import FONTS

FOOTER_LANGUAGES = ("ko", "en")
FOOTER_CLASS = "advertising-footer"
# The footer's colours in a mail client's dark mode (the shipped layout's footer's): its inline
# grey would sit at 2.9:1 on the dark page. Goes in the message's <head>.
DARK_STYLE = (
    "<style>@media (prefers-color-scheme: dark) {"
    f" .{FOOTER_CLASS} {{ color: #9aa5b1 !important; }}"
    f" .{FOOTER_CLASS} a {{ color: #c3ddf7 !important; }} }}</style>"
)
_HANGUL = re.compile("[\uac00-\ud7a3]")


def _is_harvested(segment: Segment) -> bool:
    return segment.line is None and segment.name.startswith("consent: public-contact")


def left_out(session: Session, include: Sequence[Segment], exclude: Sequence[Segment]) -> int:
    """How many contacts of the audience an advertising campaign leaves out as public-contact."""
    if not include:
        return 0
    others = [s.where for s in exclude if not _is_harvested(s)]
    where: ColumnElement[bool] = and_(
        or_(*(s.where for s in include)), Contact.consent == HARVESTED, not_suppressed()
    )
    if others:
        where = and_(where, not_(or_(*others)))
    return count(session, where)


def sender_contact(configured: str | None, reply_to: str | None, sender: str) -> str:
    """How a recipient reaches the sender: the configured contact, else Reply-To, else From."""
    if configured:
        return configured
    return parseaddr(reply_to or "")[1] or parseaddr(sender)[1]


def footer(unsubscribe: str, sender: str | dict[str, str], postal: str, contact: str) -> str:
    """The footer of an advertising message, in Korean and in English. `unsubscribe` is the
    link's href as it goes into the HTML (a stage-2 marker in a compiled campaign); `sender`
    the From, or each footer language's From (its name goes in that paragraph)."""
    link = Markup('<a href="{}">{}</a>')
    paragraphs = []
    for language in FOOTER_LANGUAGES:
        header = sender if isinstance(sender, str) else sender[language]
        name = parseaddr(header)[0] or parseaddr(header)[1]
        if language != "ko" and _HANGUL.search(name):
            # A name only in Korean ("시티넷 사무국") tells an English reader nothing: the
            # address does. from: can give a name per language.
            name = parseaddr(header)[1] or name
        values = {"sender": escape(name), "address": escape(postal), "contact": escape(contact)}
        _ = translator(language)
        text = _("This is an advertisement from %(sender)s, %(address)s (contact: %(contact)s).")
        words = _("unsubscribe")
        leave = _("If you no longer wish to receive it, %(link)s.")
        paragraphs.append(
            f'<p lang="{language}" style="margin:0 0 8px;">{escape(text) % values} '
            f"{escape(leave) % {'link': link.format(Markup(unsubscribe), words)}}</p>"
        )
    # Set as the shipped layout's footer just above it: centred, its font, size and colour.
    return (
        f'<div class="{FOOTER_CLASS}" style="font-family:{FONTS};font-size:12px;'
        "line-height:1.6;color:#52606d;text-align:center;max-width:640px;margin:0 auto;"
        "padding:0 24px 32px;"
        'box-sizing:border-box;">' + "".join(paragraphs) + "</div>"
    )
