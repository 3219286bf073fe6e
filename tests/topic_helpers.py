"""A project with topics: campaigns/topics.yaml and campaigns under the newsletter and
events topics, for the topic tests."""

from __future__ import annotations

import email
import re
from email import policy
from pathlib import Path

from tests.conftest import write
from tests.project import CAMPAIGN

TOPICS = """newsletter:
  title: {ko: "시티넷 뉴스레터", en: "CityNet newsletter"}
events:
  title: {ko: "행사·웨비나 안내", en: "Events and webinars"}
  description: {ko: "웨비나, 연수, 총회 초대", en: "Invitations to webinars, trainings and the Congress"}
"""


def campaign(root: Path, name: str, topic: str | None) -> Path:
    """A copy of the test project's campaign under another name and topic."""
    text = CAMPAIGN.replace("name: news", f"name: {name}")
    if topic is not None:
        text += f"topic: {topic}\n"
    return write(root / "campaigns" / f"{name}.yaml", text)


def with_topics(root: Path) -> None:
    write(root / "campaigns" / "topics.yaml", TOPICS)


def unsubscribe_path(raw: bytes) -> str:
    """The /u/ path of a message's List-Unsubscribe header."""
    message = email.message_from_bytes(raw, policy=policy.default)
    found = re.search(r"<https?://[^/>]+(/u/[^>]+)>", str(message["List-Unsubscribe"]))
    assert found is not None, message["List-Unsubscribe"]
    return found.group(1)
