"""The welcome message: a campaign file marked `welcome: true`, stored by `send`, sent to
each newly confirmed subscriber once."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from outreach.models import Campaign, Delivery
from outreach.welcome import queue_welcome, welcome_campaign
from tests.conftest import write
from tests.project import CAMPAIGN
from tests.subscribe_helpers import WELCOME, subscribe_project


def test_send_stores_the_welcome_message_and_mails_nobody(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    subscribe_project(tmp_path)
    assert run_cli("init").exit_code == 0
    assert run_cli("contacts", "import", "contacts.csv").exit_code == 0
    checked = run_cli("campaigns", "validate", "campaigns/welcome.yaml")
    assert checked.exit_code == 0, checked.output
    dry = run_cli("campaigns", "send", "campaigns/welcome.yaml", "--dry-run")
    assert dry.exit_code == 1 and "welcome message" in dry.output
    sent = run_cli("campaigns", "send", "campaigns/welcome.yaml")
    assert sent.exit_code == 0, sent.output
    assert "stored as the welcome message (en, ko)" in sent.output
    assert "Nobody was mailed now" in sent.output
    assert not (tmp_path / "outbox").exists()
    status = run_cli("campaigns", "status", "welcome", "--json")
    assert '"total": 0' in status.output and '"state": "done"' in status.output
    # A second welcome file replaces the first.
    write(
        tmp_path / "campaigns" / "welcome2.yaml",
        WELCOME.replace("name: welcome", "name: welcome-2027"),
    )
    again = run_cli("campaigns", "send", "campaigns/welcome2.yaml")
    assert "It replaces welcome." in again.output, again.output


def test_a_welcome_has_no_audience_and_a_campaign_needs_one(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    subscribe_project(tmp_path)
    write(tmp_path / "campaigns" / "welcome.yaml", WELCOME + "audience: {include: [everyone]}\n")
    write(
        tmp_path / "campaigns" / "news.yaml",
        CAMPAIGN.replace("audience:\n  include: [everyone]\n", ""),
    )
    result = run_cli("campaigns", "validate")
    assert result.exit_code != 0
    assert "welcome.yaml" in result.output and "remove audience:" in result.output
    assert "news.yaml" in result.output and "name at least one segment" in result.output


def test_each_subscriber_is_welcomed_once(session: Session, db_url: str, tmp_path: Path) -> None:
    from outreach.contacts import import_csv
    from outreach.welcome import install
    from tests.sending_helpers import settings_for

    settings = settings_for(db_url, tmp_path)
    path = subscribe_project(tmp_path)
    import_csv(session, tmp_path / "contacts.csv")
    session.commit()
    assert welcome_campaign(session) is None
    install(path, settings, session)
    campaign = welcome_campaign(session)
    assert campaign is not None
    kim = session.scalar(select(Campaign.id).where(Campaign.name == "news"))  # not sent: None
    assert kim is None
    from outreach.contacts import get_contact

    contact = get_contact(session, "kim@suwon.example.org").id
    assert queue_welcome(session, contact) == campaign
    assert queue_welcome(session, contact) is None
    session.commit()
    assert session.scalar(select(func.count()).select_from(Delivery)) == 1
    state = session.scalar(select(Campaign.state).where(Campaign.id == campaign))
    assert state == "sending"
