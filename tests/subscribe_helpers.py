"""A project with a subscribe form and a welcome message, and the mail it sends."""

from __future__ import annotations

import email
import re
from email import policy
from email.message import EmailMessage
from pathlib import Path

from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from outreach.models import Delivery, SystemRecipient
from tests.conftest import write
from tests.project import CAMPAIGN, make_project

SUBSCRIBE = """from: "시티넷 사무국 <news@citynet-ap.org>"
reply_to: info@citynet-ap.org
tags: [newsletter]
consent:
  version: "2026-12"
  text:
    ko: "시티넷 뉴스레터와 행사 안내를 이메일로 받는 데 동의합니다. 언제든지 수신거부할 수 있습니다."
    en: "I agree to receive CityNet's newsletter and event invitations by email. I can leave at any time."
"""

WELCOME = (
    CAMPAIGN.replace("name: news", "name: welcome")
    .replace("audience:\n  include: [everyone]\n", "")
    .replace("News for", "Welcome,")
    .replace("시티넷 소식", "시티넷에 오신 것을 환영합니다")
    + "welcome: true\n"
)


def subscribe_project(root: Path, subscribe: str = SUBSCRIBE) -> Path:
    make_project(root)
    write(root / "campaigns" / "subscribe.yaml", subscribe)
    return write(root / "campaigns" / "welcome.yaml", WELCOME)


def form_token(client: FlaskClient, lang: str = "ko") -> str:
    page = client.get(f"/subscribe?lang={lang}").get_data(as_text=True)
    match = re.search(r'name="token" value="([^"]+)"', page)
    assert match is not None
    return match.group(1)


def post_form(client: FlaskClient, lang: str = "ko", token: str | None = None, **fields: str):  # type: ignore[no-untyped-def]
    data = {
        "token": form_token(client, lang) if token is None else token,
        "lang": lang,
        "email": "new.person@gangneung.example.kr",
        "name": "이서연",
        "organisation": "강릉시",
        "language": lang,
        "consent": "yes",
        "website": "",
    }
    data.update(fields)
    return client.post("/subscribe", data={k: v for k, v in data.items() if v is not None})


def queued_confirmations(session: Session, address: str | None = None) -> int:
    session.commit()
    query = select(func.count()).select_from(SystemRecipient).join(Delivery)
    if address is not None:
        query = query.where(SystemRecipient.email == address)
    return session.scalar(query) or 0


def outbox_messages(outbox: Path, campaign: str) -> list[EmailMessage]:
    return [
        email.message_from_bytes(path.read_bytes(), policy=policy.default)  # type: ignore[misc]
        for path in sorted((outbox / campaign).glob("*.eml"))
    ]


def html_of(message: EmailMessage) -> str:
    body = message.get_body(("html",))
    assert body is not None
    return str(body.get_content())  # type: ignore[attr-defined]


def confirm_link(message: EmailMessage) -> str:
    match = re.search(r'href="(https?://[^"]+/confirm/[^"]+)"', html_of(message))
    assert match is not None
    return match.group(1)
