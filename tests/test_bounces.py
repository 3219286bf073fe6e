"""Bounces and complaints from files, mboxes, Maildirs and standard input."""

from __future__ import annotations

import mailbox
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from outreach.bounces import ingest, messages_from, parse
from outreach.models import Contact, Delivery, Event, Suppression
from outreach.tokens import Tokens
from tests.conftest import write
from tests.project import CAMPAIGN
from tests.sending_helpers import drain, project_with, send, settings_for
from tests.workers import worker_env

FIXTURES = Path(__file__).parent / "fixtures" / "bounces"
SECRET = "test-secret-0123456789abcdef0123456789"
DOMAIN = "bounce.citynet-ap.org"
PEOPLE = ["postfix", "exchange", "gmail", "qmail", "soft", "arf", "verp", "fine"]


@pytest.fixture
def campaign(session: Session, db_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    settings = settings_for(db_url, tmp_path, secret_key=SECRET, bounce_domain=DOMAIN)
    csv = "email,name,language\n" + "".join(f"{p}@city.example.org,{p},en\n" for p in PEOPLE)
    path = project_with(tmp_path, session, csv=csv)
    send(path, settings, session)
    drain(settings, session)
    rows = session.execute(
        select(Contact.email, Delivery.id, Delivery.message_id).join(
            Delivery, Delivery.contact_id == Contact.id
        )
    ).all()
    session.commit()
    info = {email.split("@")[0]: (did, mid) for email, did, mid in rows}
    return settings, info


def fixture(name: str, info: dict[str, tuple[int, str]], person: str | None = None) -> bytes:
    person = person or name
    did, mid = info.get(person, (0, "<none@x>"))
    text = (FIXTURES / f"{name}.eml").read_text(encoding="utf-8", errors="surrogateescape")
    text = text.replace("{address}", f"{person}@city.example.org").replace("{message_id}", mid)
    text = text.replace("{message_id_bare}", mid.strip("<>"))
    text = text.replace("{verp}", Tokens(SECRET).sign("bounce", did))
    return text.encode("utf-8", errors="surrogateescape")


def states(session: Session) -> dict[str, str]:
    session.commit()
    return {
        e.split("@")[0]: s
        for e, s in session.execute(
            select(Contact.email, Delivery.state).join(Delivery, Delivery.contact_id == Contact.id)
        )
    }


def suppressed(session: Session) -> dict[str, str]:
    session.commit()
    return {
        e.split("@")[0]: r
        for e, r in session.execute(select(Suppression.email, Suppression.reason))
    }


def run(session: Session, settings, messages):  # type: ignore[no-untyped-def]
    return ingest(session, Tokens(SECRET), DOMAIN, settings.soft_bounce_limit, messages)


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("postfix", "hard"),
        ("exchange", "hard"),
        ("gmail", "hard"),
        ("qmail", "hard"),
        ("soft", "soft"),
        ("arf", "complaint"),
    ],
)
def test_parser_reads_each_format(name: str, kind: str) -> None:
    info = {name: (5, "<5.abc@citynet-ap.org>")}
    parsed = parse(fixture(name, info), DOMAIN)
    assert parsed is not None
    assert [(f.address, f.kind) for f in parsed.failures] == [(f"{name}@city.example.org", kind)]
    if name != "qmail":
        assert parsed.message_id == "<5.abc@citynet-ap.org>"


def test_files_change_the_right_deliveries(campaign, session: Session, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings, info = campaign
    for name in (
        "postfix",
        "exchange",
        "gmail",
        "qmail",
        "soft",
        "arf",
        "verp",
        "malformed",
        "junk",
    ):
        write(tmp_path / "in" / f"{name}.eml", fixture(name, info))
    messages = [m for f in sorted((tmp_path / "in").iterdir()) for m in messages_from(str(f))]
    report = run(session, settings, iter(messages))
    assert (report.messages, report.hard, report.soft, report.complaints) == (9, 5, 1, 1)
    assert report.not_bounces + len(report.malformed) == 2
    got = states(session)
    for person in ("postfix", "exchange", "gmail", "qmail", "verp"):
        assert got[person] == "bounced", person
    assert got["soft"] == "sent" and got["arf"] == "sent" and got["fine"] == "sent"
    assert suppressed(session) == {
        "postfix": "bounced",
        "exchange": "bounced",
        "gmail": "bounced",
        "qmail": "bounced",
        "verp": "bounced",
        "arf": "complained",
    }
    gmail = session.scalar(select(Event).where(Event.delivery_id == info["gmail"][0]))
    assert (
        gmail is not None
        and gmail.data["status"] == "5.1.1"
        and "does not exist" in gmail.data["diagnostic"]
    )
    # The same bounces again count once.
    again = run(session, settings, iter(messages))
    assert again.duplicates == 7 and again.hard == 0
    assert session.scalar(select(func.count()).select_from(Event)) == 7


def test_mbox_maildir_and_stdin(campaign, session: Session, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings, info = campaign
    box = mailbox.mbox(str(tmp_path / "bounces.mbox"))
    box.add(fixture("postfix", info))
    box.add(fixture("exchange", info))
    box.flush()
    report = run(session, settings, messages_from(None, mbox=tmp_path / "bounces.mbox"))
    assert report.hard == 2
    maildir = mailbox.Maildir(str(tmp_path / "Maildir"), create=True)
    maildir.add(fixture("gmail", info))
    maildir.add(fixture("malformed", info))
    report = run(session, settings, messages_from(None, maildir=tmp_path / "Maildir"))
    assert report.hard == 1 and report.messages == 2
    assert list((tmp_path / "Maildir" / "new").iterdir()) == []
    assert len(list((tmp_path / "Maildir" / "cur").iterdir())) == 2
    # A second cron run finds nothing new.
    assert run(session, settings, messages_from(None, maildir=tmp_path / "Maildir")).messages == 0
    # An MTA alias pipes into `outreach bounces ingest -`: a real process reading stdin.
    session.commit()
    result = subprocess.run(
        [sys.executable, "-m", "outreach", "bounces", "ingest", "-"],
        input=fixture("qmail", info),
        capture_output=True,
        cwd=tmp_path,
        env=worker_env(replace(settings), OUTREACH_BOUNCE_DOMAIN=DOMAIN),
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert b"1 hard bounces" in result.stdout
    assert states(session)["qmail"] == "bounced"


def send_another(tmp_path: Path, settings, session: Session, name: str) -> str:  # type: ignore[no-untyped-def]
    """Send the project's campaign again under another name; the soft address's Message-ID."""
    write(tmp_path / "campaigns" / f"{name}.yaml", CAMPAIGN.replace("name: news", f"name: {name}"))
    send(tmp_path / "campaigns" / f"{name}.yaml", settings, session)
    drain(settings, session, name)
    message_id = session.scalar(
        select(Delivery.message_id)
        .join(Contact, Contact.id == Delivery.contact_id)
        .where(Contact.email == "soft@city.example.org")
        .order_by(Delivery.id.desc())
    )
    session.commit()
    assert message_id is not None
    return message_id


def test_soft_bounces_suppress_after_three_campaigns_in_a_row(
    campaign, session: Session, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    settings, info = campaign
    soft_ids = [info["soft"][1]]
    for n in (2, 3):
        soft_ids.append(send_another(tmp_path, settings, session, f"c{n}"))
    for i, mid in enumerate(soft_ids):
        raw = fixture("soft", {"soft": (0, mid)})
        run(session, settings, iter([(f"soft{i}", raw, None)]))
        if i < 2:
            assert "soft" not in suppressed(session)
    assert suppressed(session)["soft"] == "bounced"


def test_a_delivery_in_between_resets_the_soft_count(
    campaign, session: Session, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    settings, info = campaign
    ids = [info["soft"][1]]
    for n in (2, 3, 4):
        ids.append(send_another(tmp_path, settings, session, f"c{n}"))
    # campaigns 1, 2 and 4 soft-bounce; campaign 3 got through
    for i in (0, 1, 3):
        run(session, settings, iter([(f"s{i}", fixture("soft", {"soft": (0, ids[i])}), None)]))
    assert "soft" not in suppressed(session)


def test_cli_ingest_and_report(run_cli, campaign, session: Session, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings, info = campaign
    write(tmp_path / "postfix.eml", fixture("postfix", info))
    env = {
        "OUTREACH_DATABASE_URL": settings.database_url,
        "OUTREACH_SECRET_KEY": SECRET,
        "OUTREACH_BOUNCE_DOMAIN": DOMAIN,
    }
    session.commit()
    result = run_cli("bounces", "ingest", str(tmp_path / "postfix.eml"), env=env)
    assert result.exit_code == 0, result.output
    assert "1 hard bounces" in result.output
    both = run_cli("bounces", "ingest", "x.eml", "--mbox", "y", env=env)
    assert both.exit_code == 1 and "exactly one of" in both.output
    missing = run_cli("bounces", "ingest", "--maildir", "nowhere", env=env)
    assert missing.exit_code == 1 and "not a Maildir" in missing.output
    shown = run_cli("contacts", "show", "postfix@city.example.org", env=env)
    assert "history" in shown.output and "bounce" in shown.output and "bounced" in shown.output


def test_mailto_unsubscribe(campaign, session: Session) -> None:  # type: ignore[no-untyped-def]
    settings, info = campaign
    did, _ = info["fine"]
    raw = (
        f"From: fine@city.example.org\r\nTo: <unsubscribe+{Tokens(SECRET).sign('bounce', did)}"
        f"@{DOMAIN}>\r\nSubject: unsubscribe\r\n\r\nunsubscribe\r\n"
    ).encode()
    report = run(session, settings, iter([("mail", raw, None), ("again", raw, None)]))
    assert report.unsubscribes == 1 and report.duplicates == 1
    assert suppressed(session) == {"fine": "unsubscribed"}
    forged = raw.replace(b"unsubscribe+", b"unsubscribe+x")
    assert run(session, settings, iter([("forged", forged, None)])).unattributed == 1
