"""Bounces and complaints from files, mboxes, Maildirs and standard input: what counts (only
failures of mail we sent to that address), what suppresses (only a missing address), and
what an outsider writing to the bounce domain cannot do."""

from __future__ import annotations

import json
import mailbox
import subprocess
import sys
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from outreach.bounce_parser import MAX_FAILURES, MAX_PARTS, MAX_TEXT_BYTES, parse
from outreach.bounces import MAX_MESSAGE_BYTES, ingest, messages_from
from outreach.contacts import import_csv
from outreach.models import Contact, Delivery, Event, Suppression, utcnow
from outreach.tokens import Tokens
from tests.conftest import write
from tests.project import CAMPAIGN
from tests.sending_helpers import drain, project_with, send, settings_for
from tests.workers import worker_env

FIXTURES = Path(__file__).parent / "fixtures" / "bounces"
SECRET = "_6FuslupQUggb0oT5JRL-5S1KOu2C5jSHsLnhjAj"
DOMAIN = "bounce.citynet-ap.org"
PEOPLE = ["postfix", "exchange", "gmail", "qmail", "soft", "arf", "verp", "fine"]
# People at the providers whose policy rejections the report counts by domain.
ELSEWHERE = {"dmarc": "dmarc@gmail.com", "microsoft": "microsoft@outlook.com"}


def address_of(person: str) -> str:
    return ELSEWHERE.get(person, f"{person}@city.example.org")


@pytest.fixture
def campaign(session: Session, db_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    return sent_campaign(session, db_url, tmp_path)


def sent_campaign(session: Session, db_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    """A campaign sent to everyone in PEOPLE and ELSEWHERE: (settings, {person: (delivery id,
    Message-ID)})."""
    settings = settings_for(db_url, tmp_path, secret_key=SECRET, bounce_domain=DOMAIN)
    csv = "email,name,language\n" + "".join(
        f"{address_of(p)},{p},en\n" for p in [*PEOPLE, *ELSEWHERE]
    )
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
    text = text.replace("{address}", address_of(person)).replace("{message_id}", mid)
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


def run(session: Session, settings, messages, domain: str | None = DOMAIN):  # type: ignore[no-untyped-def]
    return ingest(session, Tokens(SECRET), domain, settings.soft_bounce_limit, messages)


def one(session: Session, settings, name: str, raw: bytes, domain: str | None = DOMAIN):  # type: ignore[no-untyped-def]
    return run(session, settings, iter([(name, raw, None)]), domain)


def dsn(addresses: list[str], status: str = "5.1.1") -> bytes:
    """A hand-written multipart/report: no VERP, no Message-ID of ours."""
    blocks = "".join(
        f"\nFinal-Recipient: rfc822; {a}\nAction: failed\nStatus: {status}\n" for a in addresses
    )
    return (
        "From: MAILER-DAEMON@mx.example.net\nTo: news@citynet-ap.org\n"
        "Subject: Undelivered Mail Returned to Sender\nMIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\n\n'
        "--b\nContent-Type: text/plain\n\nfailed\n\n"
        f"--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.net\n"
        f"{blocks}\n--b--\n"
    ).encode()


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("postfix", "hard"),
        ("exchange", "hard"),
        ("gmail", "hard"),
        ("qmail", "hard"),
        ("soft", "soft"),
        ("arf", "complaint"),
        ("gmail_dmarc", "policy"),
        ("microsoft_515", "policy"),
        ("generic_unknown", "hard"),
        ("spam_content", "policy"),
    ],
)
def test_parser_reads_each_format(name: str, kind: str) -> None:
    info = {name: (5, "<5.abc@citynet-ap.org>")}
    parsed = parse(fixture(name, info), DOMAIN)
    assert parsed is not None
    assert [(f.address, f.kind) for f in parsed.failures] == [(address_of(name), kind)]
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
    assert (report.messages, report.hard, report.soft, report.complaints) == (9, 4, 1, 1)
    assert report.not_bounces + len(report.malformed) == 2
    # verp.eml names no failure ("The account has been closed.", no address, no status):
    # logged and counted, never suppressed.
    assert len(report.unreadable) == 1 and "nothing suppressed" in report.unreadable[0]
    got = states(session)
    for person in ("postfix", "exchange", "gmail", "qmail"):
        assert got[person] == "bounced", person
    assert got["soft"] == "sent" and got["arf"] == "sent" and got["fine"] == "sent"
    assert got["verp"] == "sent"
    assert suppressed(session) == {
        "postfix": "bounced",
        "exchange": "bounced",
        "gmail": "bounced",
        "qmail": "bounced",
        "arf": "complained",
    }
    gmail = session.scalar(select(Event).where(Event.delivery_id == info["gmail"][0]))
    assert (
        gmail is not None
        and gmail.data["status"] == "5.1.1"
        and "does not exist" in gmail.data["diagnostic"]
    )
    verp = session.scalar(select(Event).where(Event.delivery_id == info["verp"][0]))
    assert verp is not None and verp.data["kind"] == "unreadable"
    # The same bounces again count once.
    again = run(session, settings, iter(messages))
    assert again.duplicates == 7 and again.hard == 0
    assert session.scalar(select(func.count()).select_from(Event)) == 7


def test_a_later_bounce_keeps_the_send_in_the_contacts_history(campaign, session: Session) -> None:  # type: ignore[no-untyped-def]
    """The relay accepted the message when it was sent; the bounce came later. The history
    says both, each at its time, instead of a 'bounced' delivery at the time it was sent."""
    from outreach.history import contact_history

    settings, info = campaign
    report = one(session, settings, "postfix.eml", fixture("postfix", info))
    assert report.hard == 1
    contact = session.scalar(select(Contact).where(Contact.email == address_of("postfix")))
    assert contact is not None
    entries = [(e.what, e.detail) for e in contact_history(session, contact.id)]
    assert entries[0][0] == "delivery sent" and "5.1.1" not in entries[0][1], entries
    assert entries[-1][0] == "bounce" and "5.1.1" in entries[-1][1], entries


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("gmail_dmarc", "policy"),  # 5.7.26: DMARC, our DNS
        ("microsoft_515", "policy"),  # 5.7.515: Microsoft's authentication level
        ("spam_content", "policy"),  # generic 5.0.0 that says "spam"
        ("generic_unknown", "hard"),  # generic 5.0.0 that says "User unknown"
    ],
)
def test_only_a_missing_address_suppresses(
    campaign, session: Session, name: str, kind: str
) -> None:  # type: ignore[no-untyped-def]
    settings, info = campaign
    person = {"gmail_dmarc": "dmarc", "microsoft_515": "microsoft"}.get(name, "fine")
    report = one(session, settings, name, fixture(name, info, person))
    assert getattr(report, kind) == 1 and report.not_ours == 0
    event = session.scalar(select(Event).where(Event.delivery_id == info[person][0]))
    assert event is not None and event.data["kind"] == kind
    assert event.data["domain"] == address_of(person).split("@")[1]
    assert states(session)[person] == "bounced"  # it did not arrive, whatever the reason
    if kind == "hard":
        assert suppressed(session) == {person: "bounced"}
    else:
        assert suppressed(session) == {}, "a policy rejection is our problem, not theirs"


def test_policy_rejections_are_counted_by_receiving_domain(  # type: ignore[no-untyped-def]
    run_cli, campaign, session: Session, tmp_path: Path
) -> None:
    settings, info = campaign
    one(session, settings, "dmarc", fixture("gmail_dmarc", info, "dmarc"))
    one(session, settings, "ms", fixture("microsoft_515", info, "microsoft"))
    one(session, settings, "postfix", fixture("postfix", info))
    session.commit()
    env = {"OUTREACH_DATABASE_URL": settings.database_url}
    as_json = run_cli("campaigns", "report", "news", "--json", env=env)
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.output)["policy_by_domain"] == [
        {"domain": "gmail.com", "rejected": 1},
        {"domain": "outlook.com", "rejected": 1},
    ]
    table = run_cli("campaigns", "report", "news", "--html", str(tmp_path / "r.html"), env=env)
    assert table.exit_code == 0, table.output
    assert "policy rejections by receiving domain" in " ".join(table.output.split())
    assert "gmail.com" in table.output and "outlook.com" in table.output
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    section = html.split("Policy rejections by receiving domain", 1)[1].split("<h2>", 1)[0]
    assert "gmail.com" in section and "outlook.com" in section


@pytest.mark.parametrize("name", ["out_of_office", "out_of_office_ko", "relayed"])
def test_auto_replies_and_relay_reports_are_not_failures(  # type: ignore[no-untyped-def]
    campaign, session: Session, name: str
) -> None:
    settings, info = campaign
    report = one(session, settings, name, fixture(name, info, "fine"))
    if name == "relayed":
        assert report.delivered == 1
    else:
        assert report.auto_replies == 1
    assert (report.hard, report.soft, report.suppressed, len(report.unreadable)) == (0, 0, 0, 0)
    assert states(session)["fine"] == "sent" and suppressed(session) == {}
    assert (
        session.scalar(select(func.count()).select_from(Event).where(Event.kind == "bounce")) == 0
    )


def test_a_hand_written_report_suppresses_nobody(campaign, session: Session) -> None:  # type: ignore[no-untyped-def]
    settings, _ = campaign
    strangers = [f"never{i}@city{i % 50}.example.org" for i in range(1_500)]
    # Real recipients named past the first hundred are not even read.
    named = [*strangers[:MAX_FAILURES], address_of("fine"), address_of("postfix"), *strangers]
    report = one(session, settings, "forged", dsn(named))
    assert report.not_ours == MAX_FAILURES and report.hard == 0
    assert report.truncated == ["forged"]
    # 20,000 blocks are more than any bounce has: not even parsed.
    many = [f"never{i}@city{i % 50}.example.org" for i in range(20_000)]
    report = one(session, settings, "many", dsn([address_of("fine"), *many]))
    assert report.not_ours == 0 and "not read" in report.refused[0]
    assert suppressed(session) == {}
    assert session.scalar(select(func.count()).select_from(Event)) == 0
    assert set(states(session).values()) == {"sent"}


def test_a_failure_must_be_about_a_delivery_to_that_address(  # type: ignore[no-untyped-def]
    campaign, session: Session, tmp_path: Path
) -> None:
    settings, info = campaign
    # A contact we never mailed: no bounce can be about them.
    write(tmp_path / "late.csv", "email,name\nlate@city.example.org,Late\n")
    import_csv(session, tmp_path / "late.csv")
    session.commit()
    assert one(session, settings, "never", dsn(["late@city.example.org"])).not_ours == 1
    # The VERP address of one delivery, naming another recipient.
    token = Tokens(SECRET).sign("bounce", info["fine"][0])
    verp_other = f"Delivered-To: bounces+{token}@{DOMAIN}\n".encode() + dsn([address_of("postfix")])
    assert one(session, settings, "verp-other", verp_other).not_ours == 1
    # The Message-ID of one delivery, naming another recipient.
    mid_other = fixture("postfix", info).replace(
        info["postfix"][1].encode(), info["fine"][1].encode()
    )
    assert one(session, settings, "mid-other", mid_other).not_ours == 1
    assert suppressed(session) == {} and set(states(session).values()) == {"sent"}


def test_with_a_bounce_domain_an_address_alone_is_not_ours(  # type: ignore[no-untyped-def]
    campaign, session: Session
) -> None:
    """Every message we send carries its own VERP address, so anyone who can mail the bounce
    domain (postmaster@, abuse@) must not get an address suppressed by naming it: a report
    counts only by a VERP token or the Message-ID of a delivery we stored."""
    settings, info = campaign
    report = one(session, settings, "forged-dsn", dsn([address_of("fine")]))
    assert report.not_ours == 1 and report.hard == 0
    forged_arf = fixture("arf", {"fine": (0, "<forged.1@elsewhere.example>")}, "fine")
    report = one(session, settings, "forged-arf", forged_arf)
    assert report.not_ours == 1 and report.complaints == 0
    forged_soft = fixture("qmail", {"soft": (0, "<forged.2@elsewhere.example>")}, "soft")
    assert one(session, settings, "forged-qmail", forged_soft).not_ours == 1
    assert suppressed(session) == {} and set(states(session).values()) == {"sent"}
    assert session.scalar(select(func.count()).select_from(Event)) == 0
    # The same reports that name the delivery are believed.
    assert one(session, settings, "arf", fixture("arf", info, "fine")).complaints == 1
    assert suppressed(session) == {"fine": "complained"}


def test_without_a_bounce_domain_an_address_alone_is_recorded_not_believed(  # type: ignore[no-untyped-def]
    run_cli, campaign, session: Session, tmp_path: Path
) -> None:
    """An installation without a bounce domain gets its bounces at the From mailbox, which
    anyone can write to: a report that names only an address (no VERP address, no
    Message-ID of ours) is recorded and listed for staff, and suppresses nothing on its own
    (issue 21, 9). Only a delivery of the last 30 days is looked for."""
    settings, info = campaign
    session.execute(
        update(Delivery)
        .where(Delivery.id == info["fine"][0])
        .values(sent_at=utcnow() - timedelta(days=31))
    )
    session.commit()
    assert one(session, settings, "old", dsn([address_of("fine")]), None).not_ours == 1
    session.execute(
        update(Delivery)
        .where(Delivery.id == info["fine"][0])
        .values(sent_at=utcnow() - timedelta(days=29))
    )
    session.commit()
    report = one(session, settings, "recent", dsn([address_of("fine")]), None)
    assert report.hard == 0 and report.suppressed == 0
    assert len(report.unconfirmed) == 1 and "fine@city.example.org" in report.unconfirmed[0]
    assert "recent" in report.unconfirmed[0] and "not suppressed" in report.unconfirmed[0]
    assert suppressed(session) == {} and states(session)["fine"] == "sent"
    event = session.scalar(select(Event).where(Event.delivery_id == info["fine"][0]))
    assert event is not None and event.data["attribution"] == "address"
    # For staff: the line in the output and in --json.
    write(tmp_path / "named.eml", dsn([address_of("postfix")]))
    env = {
        "OUTREACH_DATABASE_URL": settings.database_url,
        "OUTREACH_SECRET_KEY": SECRET,
    }
    result = run_cli("bounces", "ingest", str(tmp_path / "named.eml"), "--json", env=env)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["hard"] == 0 and len(doc["unconfirmed"]) == 1
    assert "postfix@city.example.org" in doc["unconfirmed"][0]
    text = run_cli("bounces", "ingest", str(tmp_path / "named.eml"), env=env)
    assert "named by address only" in text.output
    assert suppressed(session) == {}


def send_again(tmp_path: Path, settings, session: Session, name: str, person: str) -> str:  # type: ignore[no-untyped-def]
    """Send the project's campaign again under another name; the person's Message-ID."""
    write(tmp_path / "campaigns" / f"{name}.yaml", CAMPAIGN.replace("name: news", f"name: {name}"))
    send(tmp_path / "campaigns" / f"{name}.yaml", settings, session)
    drain(settings, session, name)
    message_id = session.scalar(
        select(Delivery.message_id)
        .join(Contact, Contact.id == Delivery.contact_id)
        .where(Contact.email == address_of(person))
        .order_by(Delivery.id.desc())
    )
    session.commit()
    assert message_id is not None
    return message_id


def test_forged_address_reports_for_campaign_after_campaign_suppress_nobody(  # type: ignore[no-untyped-def]
    campaign, session: Session, tmp_path: Path
) -> None:
    settings, _ = campaign
    for n in range(4):
        if n:
            send_again(tmp_path, settings, session, f"c{n}", "fine")
        forged = f"Message-ID: <forged{n}@mx.example.net>\n".encode() + dsn([address_of("fine")])
        report = one(session, settings, f"forged{n}", forged, None)
        assert len(report.unconfirmed) == 1
    assert suppressed(session) == {}


def test_an_address_alone_counts_with_a_report_that_names_our_delivery(  # type: ignore[no-untyped-def]
    campaign, session: Session, tmp_path: Path
) -> None:
    """More evidence: a run of failures over campaigns in a row counts the reports named by
    address alone once one of the run names our delivery (by VERP or Message-ID)."""
    settings, _ = campaign
    for n in (1, 2):
        if n == 2:
            send_again(tmp_path, settings, session, "c2", "fine")
        alone = f"Message-ID: <a{n}@mx.example.net>\n".encode() + dsn([address_of("fine")], "5.0.0")
        assert one(session, settings, f"a{n}", alone, None).unconfirmed
    assert suppressed(session) == {}
    third = send_again(tmp_path, settings, session, "c3", "fine")
    named = fixture("postfix", {"fine": (0, third)}, "fine").replace(b"5.1.1", b"5.0.0")
    named = named.replace(b"Recipient address rejected: User", b"permanent error")
    report = one(session, settings, "named", named, None)
    assert report.other == 1 and report.suppressed == 1
    assert suppressed(session) == {"fine": "bounced"}


def test_other_permanent_failures_suppress_after_a_run_of_campaigns(  # type: ignore[no-untyped-def]
    campaign, session: Session, tmp_path: Path
) -> None:
    """A bare 550 with no reason, again and again, campaign after campaign: the address was
    mailed forever. It now counts toward a run as soft bounces do (issue 21, 10)."""
    settings, info = campaign
    ids = [info["fine"][1]]
    for n in (2, 3):
        ids.append(send_again(tmp_path, settings, session, f"c{n}", "fine"))
    for i, mid in enumerate(ids):
        raw = fixture("postfix", {"fine": (0, mid)}, "fine").replace(b"5.1.1", b"5.0.0")
        raw = raw.replace(b"Recipient address rejected: User", b"permanent error")
        assert one(session, settings, f"bare{i}", raw).other == 1
        if i < 2:
            assert suppressed(session) == {}, i
    assert suppressed(session) == {"fine": "bounced"}


def test_failures_about_our_own_message_never_run_up(  # type: ignore[no-untyped-def]
    campaign, session: Session, tmp_path: Path
) -> None:
    """Our sender address refused (5.1.8) or our message too big (5.3.4) are failures of
    ours, not the recipient's: however often, they suppress nobody."""
    settings, info = campaign
    ids = [info["fine"][1]]
    for n in (2, 3, 4):
        ids.append(send_again(tmp_path, settings, session, f"c{n}", "fine"))
    for i, mid in enumerate(ids):
        status = "5.1.8" if i % 2 else "5.3.4"
        raw = fixture("postfix", {"fine": (0, mid)}, "fine").replace(b"5.1.1", status.encode())
        raw = raw.replace(b"Recipient address rejected: User", b"refused")
        assert one(session, settings, f"ours{i}", raw).other == 1
    assert suppressed(session) == {}


def test_a_domain_that_does_not_exist_suppresses_at_once(campaign, session: Session) -> None:  # type: ignore[no-untyped-def]
    settings, info = campaign
    raw = fixture("postfix", info, "fine").replace(b"5.1.1", b"5.4.4")
    raw = raw.replace(
        b"Recipient address rejected: User", b"Host or domain name not found. Name service error:"
    )
    assert one(session, settings, "nxdomain", raw).hard == 1
    assert suppressed(session) == {"fine": "bounced"}


def test_a_complaint_counts_only_when_attributable(campaign, session: Session) -> None:  # type: ignore[no-untyped-def]
    settings, info = campaign
    forged = fixture("arf", info, "stranger")  # names an address we never mailed
    assert one(session, settings, "forged", forged).not_ours == 1
    assert suppressed(session) == {}
    # Feedback loops that withhold the address name the delivery by its Message-ID.
    report = one(session, settings, "redacted", fixture("arf_no_address", info, "arf"))
    assert report.complaints == 1 and suppressed(session) == {"arf": "complained"}


def test_event_dedupe_keys_hold_no_address(campaign, session: Session) -> None:  # type: ignore[no-untyped-def]
    settings, info = campaign
    for name in ("postfix", "arf", "verp", "gmail_dmarc"):
        one(
            session, settings, name, fixture(name, info, "dmarc" if name == "gmail_dmarc" else None)
        )
    session.commit()
    keys = list(session.scalars(select(Event.dedupe_key)))
    assert len(keys) == 4
    for key in keys:
        assert key and "@" not in key and not any(p in key for p in [*PEOPLE, *ELSEWHERE])


def test_control_characters_never_reach_the_terminal(  # type: ignore[no-untyped-def]
    run_cli, campaign, session: Session
) -> None:
    settings, info = campaign
    assert one(session, settings, "escapes", fixture("escapes", info, "gmail")).hard == 1
    session.commit()
    event = session.scalar(select(Event).where(Event.delivery_id == info["gmail"][0]))
    stored = [
        event.data["diagnostic"] if event else "",
        session.scalar(select(Suppression.detail)),
        session.scalar(select(Delivery.last_text).where(Delivery.id == info["gmail"][0])),
    ]
    for text in stored:
        assert text and "does not exist" in text
        assert not any(c in text for c in "\x1b\x07\r\x9b"), repr(text)
    # Stored text from before this rule (or typed in by anyone) is stripped when printed.
    session.add(
        Event(
            kind="bounce",
            contact_id=session.scalar(
                select(Contact.id).where(Contact.email == address_of("fine"))
            ),
            data={"kind": "other", "diagnostic": "\x1b[2J\x1b]0;title\x07cleared\rover"},
        )
    )
    session.commit()
    env = {"OUTREACH_DATABASE_URL": settings.database_url}
    for person in ("gmail", "fine"):
        shown = run_cli("contacts", "show", address_of(person), env=env)
        assert shown.exit_code == 0, shown.output
        assert "\x1b" not in shown.output and "\x07" not in shown.output
        assert "\r" not in shown.output and "\x9b" not in shown.output
    assert "clearedover" in shown.output.replace("\n", "").replace(" ", "").replace("│", "")


def cli_ingest(settings, *args: str, stdin: bytes = b"", **env: str):  # type: ignore[no-untyped-def]
    return subprocess.run(
        [sys.executable, "-m", "outreach", "bounces", "ingest", *args],
        input=stdin,
        capture_output=True,
        env=worker_env(replace(settings), OUTREACH_BOUNCE_DOMAIN=DOMAIN, **env),
        timeout=60,
    )


def test_flufl_bounce_tracebacks_are_not_shown(campaign, session: Session) -> None:  # type: ignore[no-untyped-def]
    settings, info = campaign
    session.commit()
    result = cli_ingest(settings, "-", stdin=fixture("no_from", info))
    assert result.returncode == 0, result.stderr
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1 and "stdin" in lines[0] and "Traceback" not in lines[0], lines
    assert b"1 malformed" in result.stdout


def crafted(parts: int, size: int = 1) -> bytes:
    """A message in the shape of a bounce with many MIME parts of `size` characters."""
    body = "".join(f"--b\r\nContent-Type: text/plain\r\n\r\n{'x' * size}\r\n" for _ in range(parts))
    return (
        "From: MAILER-DAEMON@mx.example.net\r\nTo: news@citynet-ap.org\r\n"
        "Subject: failure notice\r\nMIME-Version: 1.0\r\n"
        f'Content-Type: multipart/mixed; boundary="b"\r\n\r\n{body}--b--\r\n'
    ).encode()


def test_a_message_no_detector_can_read_is_reported_as_such(campaign, session: Session) -> None:  # type: ignore[no-untyped-def]
    """Bytes no mail system wrote make a flufl.bounce detector raise: the line says that no
    bounce format could be read, not only the exception's name."""
    settings, _ = campaign
    report = one(session, settings, "garbage.eml", b"garbage\x00\x01 not a mail\n")
    assert len(report.malformed) == 1 and suppressed(session) == {}
    assert "no bounce format could be read" in report.malformed[0], report.malformed


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (crafted(MAX_PARTS + 1), f"more than {MAX_PARTS} MIME parts"),
        (crafted(2, MAX_TEXT_BYTES // 2 + 10), "more than 1 MB of text"),
    ],
    ids=["parts", "text"],
)
def test_messages_too_big_to_guess_at_are_not_read_by_heuristics(  # type: ignore[no-untyped-def]
    campaign, session: Session, raw: bytes, why: str
) -> None:
    """Tens of thousands of tiny MIME parts take flufl.bounce seconds each: a message of that
    shape is no bounce of a real mail system, and is reported in one line unread."""
    settings, _ = campaign
    report = one(session, settings, "crafted", raw)
    assert report.not_bounces == 0 and len(report.malformed) == 1, report
    assert why in report.malformed[0] and "\n" not in report.malformed[0]
    assert suppressed(session) == {}
    # A standard report (RFC 3464) that size is still read: it names its failures itself.
    many = dsn([address_of("fine")]).replace(
        b"--b--", b"".join(b"--b\nContent-Type: text/plain\n\nx\n" for _ in range(150)) + b"--b--"
    )
    assert parse(many, DOMAIN).failures[0].address == address_of("fine")


def test_oversized_messages_are_refused(campaign, session: Session, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings, info = campaign
    session.commit()
    big = fixture("postfix", info) + b"x" * MAX_MESSAGE_BYTES
    write(tmp_path / "big.eml", big)
    for args, stdin in (((str(tmp_path / "big.eml"),), b""), (("-",), big)):
        result = cli_ingest(settings, *args, stdin=stdin)
        assert result.returncode == 0, result.stderr
        lines = result.stderr.decode().splitlines()
        assert len(lines) == 1 and "larger than 10 MB" in lines[0], lines
        assert b"1 refused" in result.stdout
    assert suppressed(session) == {}


def test_an_unreachable_database_asks_the_mta_to_retry(
    campaign, session: Session, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    settings, info = campaign
    raw = fixture("postfix", info)
    for url in (
        "postgresql+psycopg://outreach:secret@127.0.0.1:1/outreach",
        f"sqlite:///{tmp_path}/no/such/folder/outreach.db",
    ):
        result = cli_ingest(settings, "-", stdin=raw, OUTREACH_DATABASE_URL=url)
        assert result.returncode == 75, (url, result.stderr)  # EX_TEMPFAIL
        lines = result.stderr.decode().splitlines()
        assert len(lines) == 1 and "cannot reach the database" in lines[0], lines
        assert "secret" not in lines[0]
    # Anything else the operator must fix stays a plain error.
    empty = cli_ingest(settings, "-", stdin=raw, OUTREACH_DATABASE_URL=f"sqlite:///{tmp_path}/e.db")
    assert empty.returncode == 1 and b"outreach init" in empty.stderr
    assert suppressed(session) == {}


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
    assert b"1 hard bounce," in result.stdout
    assert states(session)["qmail"] == "bounced"


def send_another(tmp_path: Path, settings, session: Session, name: str) -> str:  # type: ignore[no-untyped-def]
    """Send the project's campaign again under another name; the soft address's Message-ID."""
    return send_again(tmp_path, settings, session, name, "soft")


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
    assert "1 hard bounce," in result.output
    both = run_cli("bounces", "ingest", "x.eml", "--mbox", "y", env=env)
    assert both.exit_code == 1 and "exactly one of" in both.output
    missing = run_cli("bounces", "ingest", "--maildir", "nowhere", env=env)
    assert missing.exit_code == 1 and "not a Maildir" in missing.output
    shown = run_cli("contacts", "show", "postfix@city.example.org", env=env)
    assert "history" in shown.output and "bounce" in shown.output and "bounced" in shown.output
    # For a script: one document with every count and the messages that needed a word.
    write(tmp_path / "junk.eml", b"garbage\x00\x01 not a mail\n")
    for name, hard in (("postfix.eml", 0), ("junk.eml", 0)):
        result = run_cli("bounces", "ingest", str(tmp_path / name), "--json", env=env)
        assert result.exit_code == 0, result.output
        doc = json.loads(result.output)
        assert doc["messages"] == 1 and doc["hard"] == hard
    assert doc["malformed"] and "junk.eml" in doc["malformed"][0]
    again = json.loads(
        run_cli("bounces", "ingest", str(tmp_path / "postfix.eml"), "--json", env=env).output
    )
    assert again["duplicates"] == 1 and again["suppressed"] == 0


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
    # The consent history keeps the withdrawal, as for the /u/ link (Network Act Art. 50(7)).
    from outreach.models import ConsentRecord

    session.commit()
    withdrawals = session.scalars(
        select(ConsentRecord).where(ConsentRecord.kind == "withdrawn")
    ).all()
    assert [(w.source) for w in withdrawals] == ["mailto"]
    forged = raw.replace(b"unsubscribe+", b"unsubscribe+x")
    assert run(session, settings, iter([("forged", forged, None)])).not_ours == 1


def test_mailto_unsubscribe_of_a_system_message(campaign, session: Session) -> None:  # type: ignore[no-untyped-def]
    """A confirmation or a notice goes to an address that may be no contact (yet): its
    List-Unsubscribe mailto: unsubscribes that address all the same."""
    from outreach.subscriptions import system_sender
    from outreach.system_mail import queue

    settings, _ = campaign
    sender = system_sender(replace(settings, from_="CityNet <news@citynet-ap.org>"), None)
    fine = session.scalar(select(Contact).where(Contact.email == address_of("fine")))
    assert fine is not None
    _, stranger = queue(
        session, "confirmation", sender, email="new@city.example.org", name=None, language="en"
    )
    _, notice = queue(
        session,
        "consent-notice",
        sender,
        email=fine.email,
        name=fine.name,
        language="en",
        contact_id=fine.id,
    )
    session.commit()

    def mailto(delivery_id: int, sender: str) -> bytes:
        token = Tokens(SECRET).sign("bounce", delivery_id)
        return (
            f"From: {sender}\r\nTo: <unsubscribe+{token}@{DOMAIN}>\r\n"
            "Subject: unsubscribe\r\n\r\nunsubscribe\r\n"
        ).encode()

    report = run(
        session,
        settings,
        iter(
            [
                ("a", mailto(stranger, "new@city.example.org"), None),
                ("b", mailto(notice, fine.email), None),
            ]
        ),
    )
    assert report.unsubscribes == 2 and report.not_ours == 0
    assert suppressed(session) == {"new": "unsubscribed", "fine": "unsubscribed"}
    # "No" to a confirmation: the form sends that mailbox no more (issue 21, 7).
    from outreach.subscriptions import refused_for

    assert refused_for(session, "new+later@city.example.org") == "declined"
    assert refused_for(session, fine.email) is None  # a notice's unsubscribe is not that
    events = session.execute(
        select(Event.delivery_id, Event.contact_id).where(Event.kind == "unsubscribe")
    ).all()
    assert sorted(map(tuple, events)) == sorted([(stranger, None), (notice, fine.id)])


def test_ingest_in_the_wrong_folder_creates_no_database(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "dsn.eml").write_bytes(fixture("postfix", {}))
    result = run_cli("bounces", "ingest", "dsn.eml", env={"OUTREACH_SECRET_KEY": SECRET})
    assert result.exit_code == 1 and "not an outreach folder" in result.output
    assert not (tmp_path / "outreach.db").exists()


def tiny_pieces(kind: str, n: int) -> bytes:
    """A message in the shape of a bounce made of many tiny pieces (issue 21, 1)."""
    head = (
        b"From: MAILER-DAEMON@mx.example.net\r\nTo: postmaster@bounce.citynet-ap.org\r\n"
        b"Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nfailed\r\n"
    )
    if kind == "blocks":
        body = b"--b\r\nContent-Type: message/delivery-status\r\n\r\n" + b"A: b\r\n\r\n" * n
    elif kind == "lines":
        body = b"--b\r\nContent-Type: message/delivery-status\r\n\r\n" + b"x\r\n" * n
    else:
        body = b"".join(b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n" for _ in range(n))
    return head + body + b"--b--\r\n"


@pytest.mark.parametrize(
    ("kind", "n", "why"),
    [
        ("blocks", 2_100, "blank lines"),
        ("lines", 50_100, "lines"),
        ("parts", 600, "MIME boundaries"),
    ],
)
def test_a_message_of_many_tiny_pieces_is_refused_before_it_is_parsed(  # type: ignore[no-untyped-def]
    campaign, session: Session, kind: str, n: int, why: str
) -> None:
    """790,000 blocks in 7.8 MB took half a minute and 450 MB to parse: a message of more
    pieces than any bounce is refused by counting them in its bytes, unparsed."""
    settings, _ = campaign
    report = one(session, settings, "crafted", tiny_pieces(kind, n))
    assert len(report.refused) == 1 and why in report.refused[0], report
    assert report.malformed == [] and report.not_bounces == 0
    assert suppressed(session) == {}


def test_a_bounce_that_quotes_a_long_message_is_still_read(campaign, session: Session) -> None:  # type: ignore[no-untyped-def]
    settings, info = campaign
    quoted = b"".join(b"A paragraph of the returned newsletter, quoted.\n\n" for _ in range(900))
    raw = fixture("postfix", info).replace(b"To: postfix@", quoted + b"To: postfix@", 1)
    assert raw != fixture("postfix", info)
    assert one(session, settings, "long", raw).hard == 1


def test_a_bounce_ingested_by_0_1_0_is_not_counted_again(campaign, session: Session) -> None:  # type: ignore[no-untyped-def]
    """0.1.0 keyed a bounce event `bounce:FINGERPRINT:ADDRESS`; the same message ingested
    again after the upgrade is a duplicate, not a second bounce."""
    import hashlib

    settings, info = campaign
    raw = fixture("postfix", info)
    report = one(session, settings, "postfix", raw)
    assert report.hard == 1 and report.duplicates == 0
    session.commit()
    fingerprint = hashlib.sha256(raw).hexdigest()[:32]
    # As 0.1.0 stored it.
    session.execute(
        update(Event)
        .where(Event.kind == "bounce")
        .values(dedupe_key=f"bounce:{fingerprint}:{address_of('postfix')}")
    )
    session.commit()
    again = one(session, settings, "postfix", raw)
    session.commit()
    assert again.duplicates == 1 and again.hard == 0
    assert (
        session.scalar(select(func.count()).select_from(Event).where(Event.kind == "bounce")) == 1
    )
