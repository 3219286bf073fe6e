"""Follow-ups: live counts of history segments in the CLI, and the shipped webinar reminder
sent to those who received the invitation but did not register."""

from __future__ import annotations

import email
import shutil
from email import policy
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from outreach.contacts import import_csv
from outreach.db import writer_sessionmaker
from outreach.models import Campaign, Contact, Delivery, Event, utcnow
from outreach.tokens import Tokens
from outreach.web import create_app
from tests.conftest import ROOT, write
from tests.sending_helpers import drain, send, settings_for

SECRET = "_6FuslupQUggb0oT5JRL-5S1KOu2C5jSHsLnhjAj"
INVITATION = "2026-12-covid19-webinar"
REMINDER = "2026-12-covid19-webinar-reminder"
REGISTER = "https://citynet-ap.org/events/covid19-series-7"

CONTACTS = """email,country,membership
a@example.org,KR,full
b@example.org,KR,full
c@example.org,PH,associate
d@example.org,LK,none
e@example.org,NP,full
"""
SEGMENTS = f"""invited-not-registered:
  description: Got the invitation, did not click to register
  where:
    all:
      - received: {INVITATION}
      - not: {{clicked: {{campaign: {INVITATION}, url: covid19-series-7}}}}
registered:
  where:
    clicked: {{campaign: {INVITATION}, url: covid19-series-7}}
quiet:
  where:
    not: {{engaged: {{days: 30}}}}
"""


def _history(url: str) -> None:
    """a, b, c received the invitation; b clicked to register; c opened it; d's bounced."""
    with writer_sessionmaker(url)() as session:
        campaign = Campaign(name=INVITATION, state="done")
        session.add(campaign)
        session.flush()
        ids = dict(session.execute(select(Contact.email, Contact.id)).all())
        for who, state in (("a", "sent"), ("b", "sent"), ("c", "sent"), ("d", "bounced")):
            session.add(
                Delivery(
                    campaign_id=campaign.id,
                    contact_id=ids[f"{who}@example.org"],
                    state=state,
                    sent_at=utcnow(),
                )
            )
        for who, kind, data in (("b", "click", {"url": REGISTER}), ("c", "open", {})):
            session.add(
                Event(
                    kind=kind,
                    campaign_id=campaign.id,
                    contact_id=ids[f"{who}@example.org"],
                    data=data,
                )
            )
        session.commit()


def test_cli_live_counts(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert run_cli("init").exit_code == 0
    write(tmp_path / "c.csv", CONTACTS)
    assert run_cli("contacts", "import", "c.csv").exit_code == 0
    # The invitation's file is gone from campaigns/: the database still knows the name.
    write(tmp_path / "campaigns" / "segments.yaml", SEGMENTS)
    _history(f"sqlite:///{tmp_path / 'outreach.db'}")

    listed = run_cli("segments", "list")
    assert listed.exit_code == 0, listed.output
    rows = {line.split("│")[1].strip(): line for line in listed.output.splitlines() if "│" in line}
    assert rows["invited-not-registered"].rstrip(" │").endswith("2")  # a, c
    assert rows["registered"].rstrip(" │").endswith("1")  # b
    assert rows["quiet"].rstrip(" │").endswith("3")  # a, d, e

    shown = run_cli("segments", "show", "invited-not-registered", "--limit", "0")
    assert shown.exit_code == 0 and "invited-not-registered: 2 contacts" in shown.output
    assert "@example.org" not in shown.output
    listed_members = run_cli("segments", "show", "invited-not-registered")
    assert "a@example.org" in listed_members.output and "c@example.org" in listed_members.output

    exported = run_cli("contacts", "export", "--segment", "registered")
    assert exported.exit_code == 0 and exported.output.count("@example.org") == 1
    assert "b@example.org" in exported.output

    # Registering later moves a contact between segments at the next count.
    _click(f"sqlite:///{tmp_path / 'outreach.db'}", "a@example.org")
    again = run_cli("segments", "show", "invited-not-registered", "--limit", "0")
    assert "invited-not-registered: 1 contacts" in again.output


def _click(url: str, address: str) -> None:
    with writer_sessionmaker(url)() as session:
        cid = session.scalar(select(Campaign.id).where(Campaign.name == INVITATION))
        contact = session.scalar(select(Contact.id).where(Contact.email == address))
        session.add(
            Event(
                kind="click",
                campaign_id=cid,
                contact_id=contact,
                data={"url": REGISTER + "?utm=mail"},
            )
        )
        session.commit()


def test_cli_unknown_campaign(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert run_cli("init").exit_code == 0
    write(tmp_path / "campaigns" / f"{INVITATION}.yaml", "template: webinar-invitation\n")
    write(
        tmp_path / "campaigns" / "segments.yaml",
        "late:\n  where:\n    received: 2026-12-covid-webinar\n",
    )
    for args in (
        ("segments", "list"),
        ("segments", "show", "late"),
        ("contacts", "export", "--segment", "late"),
    ):
        result = run_cli(*args)
        assert result.exit_code == 1, result.output
        assert "segments.yaml:3: unknown campaign '2026-12-covid-webinar'" in result.output
        assert f"did you mean '{INVITATION}'" in result.output
        assert "Traceback" not in result.output


def test_validate_checks_campaign_names_offline(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    for folder in ("campaigns", "templates"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    env = {"OUTREACH_POSTAL_ADDRESS": "CityNet Secretariat, Seoul"}
    ok = run_cli("campaigns", "validate", f"campaigns/{REMINDER}.yaml", env=env)
    assert ok.exit_code == 0, ok.output
    segments = tmp_path / "campaigns" / "segments.yaml"
    segments.write_text(
        segments.read_text(encoding="utf-8").replace(
            f"received: {INVITATION}", "received: 2026-11-covid19-webinar"
        ),
        encoding="utf-8",
    )
    bad = run_cli("campaigns", "validate", f"campaigns/{REMINDER}.yaml", env=env)
    assert bad.exit_code == 1
    assert "segments.yaml:" in bad.output
    assert "unknown campaign '2026-11-covid19-webinar'" in bad.output
    assert "Traceback" not in bad.output


def test_the_webinar_reminder_goes_to_the_invited_who_did_not_register(
    session: Session, db_url: str, tmp_path: Path
) -> None:
    """The README's follow-up walk-through: invitation, clicks, then the reminder."""
    for folder in ("campaigns", "templates", "examples"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    settings = settings_for(db_url, tmp_path, secret_key=SECRET)
    import_csv(session, tmp_path / "examples" / "contacts.csv")
    send(tmp_path / "campaigns" / f"{INVITATION}.yaml", settings, session)
    drain(settings, session, INVITATION)

    invited = dict(
        session.execute(
            select(Contact.email, Delivery.id)
            .join(Delivery, Delivery.contact_id == Contact.id)
            .join(Campaign, Campaign.id == Delivery.campaign_id)
            .where(Campaign.name == INVITATION, Delivery.state == "sent")
        ).all()
    )
    session.commit()
    assert len(invited) >= 6
    registered, browsed, left = sorted(invited)[:3], sorted(invited)[3], sorted(invited)[4]
    client = create_app(settings).test_client()
    tokens = Tokens(SECRET)
    for address in registered:
        click = client.get(f"/c/{tokens.sign('click', [invited[address], REGISTER])}")
        assert click.status_code == 302
    other = "https://citynet-ap.org/news/colombo-drainage"
    assert client.get(f"/c/{tokens.sign('click', [invited[browsed], other])}").status_code == 302
    unsubscribe = client.post(
        f"/u/{tokens.sign('unsubscribe', invited[left])}", data={"confirm": "yes"}
    )
    assert unsubscribe.status_code == 200
    session.commit()

    reminder = send(tmp_path / "campaigns" / f"{REMINDER}.yaml", settings, session)
    want = set(invited) - set(registered) - {left}
    assert reminder.added == len(want)
    drain(settings, session, REMINDER)
    got = set(
        session.scalars(
            select(Contact.email)
            .join(Delivery, Delivery.contact_id == Contact.id)
            .join(Campaign, Campaign.id == Delivery.campaign_id)
            .where(Campaign.name == REMINDER, Delivery.state == "sent")
        )
    )
    session.commit()
    assert got == want and browsed in got
    subjects = set()
    for path in (tmp_path / "outbox").rglob("*.eml"):
        message = email.message_from_bytes(path.read_bytes(), policy=policy.default)
        subjects.add(str(message["Subject"]))
    assert any("Reminder" in s for s in subjects) and any("다시 안내" in s for s in subjects)
