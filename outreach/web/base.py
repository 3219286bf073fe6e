"""What every door of the web app shares: its state on the app, the reader's language, the
page and message renderers, and reading a signed link into the recipient it names."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email.utils import parseaddr
from typing import Any

from flask import Response, current_app, render_template, request
from markupsafe import Markup
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from outreach.archive import Archive
from outreach.config import Settings
from outreach.i18n import DEFAULT, N_, best_accepted, menu, supported, translator
from outreach.models import Campaign, CampaignVariant, Contact, Delivery
from outreach.render import Markers
from outreach.subscriptions import ConfirmTokens, FormTokens, SubscribeConfig, WatchedConfig
from outreach.suppressions import recipient_of
from outreach.tasks import Nudger
from outreach.tokens import InvalidToken, Links, Tokens
from outreach.topics import Topics
from outreach.typography import FONTS

# The view-online and archive pages show an email itself: its inline styles and images.
VIEW_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; "
    "font-src https:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
# The 400 page of a link we cannot read: we cannot know the reader's language.
BILINGUAL = ("ko", "en")


@dataclass
class WebState:
    settings: Settings
    tokens: Tokens
    links: Links
    writer: sessionmaker[Session]
    reader: sessionmaker[Session]
    # campaigns/subscribe.yaml, read again when it changes (see `subscribe`).
    subscribe_file: WatchedConfig | None = None
    archive: Archive | None = None
    form_tokens: FormTokens | None = None
    confirm_tokens: ConfirmTokens | None = None
    nudge: Nudger = field(default_factory=lambda: Nudger(Settings()))
    # campaigns/topics.yaml: what the preferences page offers (none without the file).
    topics: Topics | None = None

    @property
    def subscribe(self) -> SubscribeConfig | None:
        """The subscribe form's settings as the file says now; None: no form."""
        return self.subscribe_file.current() if self.subscribe_file is not None else None


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
        """The sender's name as the message gave it (in its language, with a from: per
        language)."""
        definition = self.campaign.definition
        by_language = definition.get("from_by_language") or {}
        from_ = by_language.get(self.delivery.language or "") or definition.get("from", "")
        name, address = parseaddr(from_)
        return name or address or "CityNet"


def message_subject(session: Session, addressee: Addressee) -> str:
    """The subject of the message a link came in, as its recipient read it: what they
    know the message by (the campaign's own name is an internal slug)."""
    from outreach.compose import prepare
    from outreach.store import load as load_recipients

    web = state()
    try:
        prepared = prepare(session, addressee.campaign, web.settings, web.links)
        (recipient,) = load_recipients(session, [addressee.delivery.id])
        return prepared.composer.render(recipient, addressee.delivery.language).subject
    except Exception:  # its contact's values no longer render: the subject's own words
        subject = session.scalar(
            select(CampaignVariant.subject).where(
                CampaignVariant.campaign_id == addressee.campaign.id,
                CampaignVariant.language == (addressee.delivery.language or ""),
            )
        )
        nonce = (addressee.campaign.definition or {}).get("nonce", "")
        return " ".join(Markers(nonce).pattern.sub("", subject or "").split())


def state() -> WebState:
    found: WebState = current_app.extensions["outreach"]
    return found


def language(own: str | None = None) -> str:
    """?lang=, else the person's own language, else the browser's, else English."""
    asked = supported(request.values.get("lang", ""))
    if asked:
        return asked
    chosen = supported(own)
    if chosen:
        return chosen
    return best_accepted(request.accept_languages) or DEFAULT


def page(template: str, lang: str, status: int = 200, **values: Any) -> Response:
    body = render_template(
        template,
        lang=lang,
        languages=menu(),
        title=values.pop("title", None) or translator(lang)("CityNet"),
        subscribe_open=state().subscribe is not None,
        **values,
    )
    return Response(body, status=status, mimetype="text/html")


def message(lang: str, heading: str, *lines: str | tuple[str, str], status: int = 200) -> Response:
    """A page of a heading and lines; a line given as (language, text) says its language."""
    return page("message.html", lang, status, heading=heading, lines=list(lines))


def both(text: str) -> tuple[str, list[tuple[str, str]]]:
    """A message in ?lang= if given, else in Korean and English (a reader we cannot know),
    the browser's language first; each line with its language, for its lang attribute."""
    asked = supported(request.args.get("lang", ""))
    if asked:
        langs = [asked]
    else:
        first = request.accept_languages.best_match(list(BILINGUAL)) or BILINGUAL[0]
        langs = [first, *(code for code in BILINGUAL if code != first)]
    return langs[0], [(code, translator(code)(text)) for code in langs]


def invalid() -> Response:
    lang, titles = both(N_("This link is not valid"))
    _, lines = both(
        N_(
            "The link is damaged, incomplete or expired. Please use the link in your email "
            "again. Nothing was changed."
        )
    )
    heading = Markup(" / ").join(
        Markup('<span lang="{}">{}</span>').format(code, title) for code, title in titles
    )
    return message(lang, heading, *lines, status=400)


def verify(kind: str, token: str) -> Any:
    try:
        return state().tokens.verify(kind, token)
    except InvalidToken:
        return None


def load(session: Session, delivery_id: Any) -> Addressee | None:
    if not isinstance(delivery_id, int) or isinstance(delivery_id, bool) or delivery_id < 1:
        return None
    found = recipient_of(session, delivery_id)
    if found is None:
        return None
    return Addressee(found.delivery, found.contact, found.campaign, found.email)


def _special(delivery_id: Any, addressee: Addressee | None) -> Response | None:
    """Pages for links that name no live recipient: a test message, an erased contact."""
    if delivery_id == 0:
        lang = language()
        _ = translator(lang)
        return message(
            lang, _("CityNet"), _("This link is from a test message. Nothing was changed.")
        )
    if addressee is None:
        return invalid()
    if addressee.email is None:
        lang = language()
        _ = translator(lang)
        return message(
            lang,
            _("CityNet"),
            _("This address has been erased and will not be mailed again."),
        )
    return None


def resolve(kind: str, token: str, session: Session) -> tuple[Addressee | None, Response | None]:
    """The addressee a token names, or the page to answer instead of acting."""
    delivery_id = verify(kind, token)
    if delivery_id is None:
        return None, invalid()
    addressee = load(session, delivery_id)
    return addressee, _special(delivery_id, addressee)


def own_language(addressee: Addressee) -> str | None:
    if addressee.contact is not None:
        return addressee.contact.language
    return addressee.delivery.language


_BODY = re.compile(r"<body\b[^>]*>", re.I)


def with_banner(html: str, banner_html: str) -> str:
    """An email's HTML shown as a page: a line of ours at the top of its body, and the
    whole in <main> (a page has one main landmark, and nothing outside landmarks)."""
    match = _BODY.search(html)
    if match is None:
        return "<main>" + banner_html + html + "</main>"
    rest = html[match.end() :]
    end = rest.lower().rfind("</body>")
    if end < 0:
        end = len(rest)
    return html[: match.end()] + "<main>" + banner_html + rest[:end] + "</main>" + rest[end:]


def banner(lang: str, *parts: str) -> str:
    return (
        f'<div lang="{lang}" style="font:14px/1.5 {FONTS};background:#fff8e1;color:#1f2933;'
        "word-break:keep-all;overflow-wrap:break-word;"
        'padding:10px 16px;border-bottom:1px solid #e4e7eb;">' + " ".join(parts) + "</div>"
    )
