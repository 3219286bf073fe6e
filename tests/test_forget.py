"""`contacts forget` leaves the address nowhere but the suppression list, and every count of
the campaigns the contact was part of stays as it was."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from outreach.contacts import forget
from outreach.models import Base, Campaign, Contact, Delivery, Event, Suppression
from outreach.reports import build
from outreach.tokens import Tokens
from tests.conftest import write
from tests.sending_helpers import drain, project_with, send, settings_for
from tests.smtp_server import SmtpServer, start_server

SECRET = "jqWrdxVYd3fUd5bTiSMGYpPou_YzRplYKiIe6evX"
DOMAIN = "bounce.citynet-ap.org"
PEOPLE = ["rejected", "bounced", "kept"]
FIXTURE = Path(__file__).parent / "fixtures" / "bounces" / "postfix.eml"


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = start_server()
    yield server
    server.stop()


def occurrences(session: Session, needle: str) -> list[str]:
    """Every table cell outside the suppression list that mentions needle, as table.column."""
    session.commit()
    found = []
    for table in Base.metadata.sorted_tables:
        if table.name == "suppressions":
            continue
        for row in session.execute(select(table)).mappings():
            for column, value in row.items():
                text = json.dumps(value, ensure_ascii=False) if isinstance(value, dict) else value
                if isinstance(text, str) and needle.lower() in text.lower():
                    found.append(f"{table.name}.{column}")
    return found


def counts_of(report: Any) -> dict[str, Any]:
    # Per-domain and per-segment tables need the contact's address and fields, which are gone.
    doc = report.as_json()
    for key in ("generated_at", "bounces_by_domain", "by_segment"):
        doc.pop(key)
    return doc  # type: ignore[no-any-return]


def test_forget_scrubs_the_address_from_deliveries_events_and_keys(
    session: Session, db_url: str, tmp_path: Path, smtp: SmtpServer, run_cli
) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(
        db_url, tmp_path, smtp_url=smtp.url, secret_key=SECRET, bounce_domain=DOMAIN
    )
    csv = "email,name,language\n" + "".join(f"{p}@city.example.org,{p},en\n" for p in PEOPLE)
    # The relay quotes the address as the recipient's server spelled it.
    smtp.handler.rule(
        "rejected@city.example.org",
        "reply",
        "550 5.1.1 <Rejected@City.Example.org>: Recipient address rejected: User unknown",
    )
    path = project_with(tmp_path, session, csv=csv)
    send(path, settings, session)
    drain(settings, session)
    delivery_id, message_id = session.execute(
        select(Delivery.id, Delivery.message_id)
        .join(Contact, Contact.id == Delivery.contact_id)
        .where(Contact.email == "bounced@city.example.org")
    ).one()
    dsn = FIXTURE.read_text(encoding="utf-8").replace("{address}", "bounced@city.example.org")
    dsn = dsn.replace("{message_id}", message_id)
    write(tmp_path / "dsn.eml", dsn.replace("{verp}", Tokens(SECRET).sign("bounce", delivery_id)))
    session.commit()
    env = {
        "OUTREACH_DATABASE_URL": settings.database_url,
        "OUTREACH_SECRET_KEY": SECRET,
        "OUTREACH_BOUNCE_DOMAIN": DOMAIN,
    }
    ingested = run_cli("bounces", "ingest", str(tmp_path / "dsn.eml"), env=env)
    assert ingested.exit_code == 0, ingested.output
    for person in ("rejected", "bounced"):
        assert occurrences(session, f"{person}@city.example.org"), person  # the premise
    campaign = session.scalar(select(Campaign))
    assert campaign is not None
    before = counts_of(build(session, campaign))
    assert before["counts"]["failed"] == 1 and before["counts"]["bounced"] == 1

    for person in ("rejected", "bounced"):
        forget(session, f"{person}@city.example.org")
    session.commit()

    for person in ("rejected", "bounced"):
        assert occurrences(session, f"{person}@city.example.org") == [], person
    assert occurrences(session, "kept@city.example.org") == ["contacts.email"]
    session.expire_all()
    assert counts_of(build(session, campaign)) == before
    forgotten = dict(session.execute(select(Suppression.email, Suppression.reason)).all())
    assert forgotten == {
        "rejected@city.example.org": "forgotten",
        "bounced@city.example.org": "forgotten",
    }
    # What happened stays readable, without the address.
    texts = session.scalars(select(Delivery.last_text).where(Delivery.state == "failed")).all()
    assert texts and "Recipient address rejected" in texts[0]


def test_forget_scrubs_data_stored_by_earlier_versions(session: Session) -> None:
    """Event data and dedupe keys written before keys were hashed, with the address inside
    nested values and in other spellings, are scrubbed; other people's events are not."""
    campaign = Campaign(name="old", state="done")
    other = Contact(email="other@city.example.org")
    gone = Contact(email="gone@city.example.org")
    session.add_all([campaign, other, gone])
    session.flush()
    mine = Delivery(
        campaign_id=campaign.id,
        contact_id=gone.id,
        state="bounced",
        last_text="550 5.1.1 <GONE@city.example.org>... User unknown",
    )
    theirs = Delivery(campaign_id=campaign.id, contact_id=other.id, state="sent")
    session.add_all([mine, theirs])
    session.flush()
    session.add_all(
        [
            Event(
                kind="bounce",
                campaign_id=campaign.id,
                delivery_id=mine.id,
                contact_id=gone.id,
                dedupe_key="bounce:0123abcd:gone@city.example.org",
                data={
                    "address": "gone@city.example.org",
                    "diagnostic": "smtp; 550 <Gone@City.Example.Org> unknown",
                    "hops": ["relay for gone@city.example.org", 3],
                },
            ),
            # Unattributed (no contact, no delivery), but about this address.
            Event(
                kind="bounce",
                dedupe_key="bounce:4567cdef:gone@city.example.org",
                data={"address": "gone@city.example.org", "kind": "soft"},
            ),
            Event(
                kind="bounce",
                campaign_id=campaign.id,
                delivery_id=theirs.id,
                contact_id=other.id,
                dedupe_key="bounce:89ab0123:other@city.example.org",
                data={"address": "other@city.example.org", "kind": "soft"},
            ),
        ]
    )
    session.commit()
    forget(session, "gone@city.example.org")
    session.commit()
    assert occurrences(session, "gone@city.example.org") == []
    events = session.scalars(select(Event).order_by(Event.id)).all()
    assert [e.kind for e in events] == ["bounce", "bounce", "bounce"]  # counts intact
    assert events[0].delivery_id == mine.id and events[0].campaign_id == campaign.id
    assert events[0].data["hops"][1] == 3 and "unknown" in events[0].data["diagnostic"]
    assert events[2].dedupe_key == "bounce:89ab0123:other@city.example.org"
    assert events[2].data["address"] == "other@city.example.org"
    session.refresh(mine)
    assert mine.state == "bounced" and "User unknown" in (mine.last_text or "")


def test_cli_import_leaves_a_forgotten_address_forgotten(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The newcomer's walkthrough: forget, then import a file that still has the person."""
    assert run_cli("init").exit_code == 0
    write(
        tmp_path / "c.csv", "email,name\npark@city.example.org,박지은\nlee@city.example.org,Lee\n"
    )
    assert run_cli("contacts", "import", "c.csv").exit_code == 0
    assert run_cli("contacts", "forget", "park@city.example.org", "--yes").exit_code == 0
    for dry in ([], ["--dry-run"]):
        imported = run_cli("contacts", "import", "c.csv", *dry)
        assert imported.exit_code == 0, imported.output
        assert "2 rows: 0 new" in imported.output
        assert "1 forgotten address not imported" in imported.output
        assert "suppressed" not in imported.output
    shown = run_cli("contacts", "show", "park@city.example.org", "--json")
    doc = json.loads(shown.output)
    assert doc["forgotten"] is True and set(doc) == {"email", "forgotten", "forgotten_at"}
