"""Consent records, the two-yearly consent notice (Art. 50(8)), result notices (Art. 50(7)),
the sender's contact in the advertising footer (Art. 50(4)) and public-contact addresses
(Art. 50-2)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from outreach.config import Settings
from outreach.consent import queue_notices
from outreach.contacts import describe, export_to_string, forget, get_contact, import_csv
from outreach.models import (
    ConsentNotice,
    ConsentRecord,
    Contact,
    Delivery,
    Subscription,
    SystemRecipient,
    utcnow,
)
from outreach.subscriptions import load_config, system_sender
from outreach.suppressions import suppress
from outreach.tokens import Tokens
from outreach.validate import validate_campaign
from outreach.web import create_app
from tests.conftest import write
from tests.project import CAMPAIGN
from tests.sending_helpers import drain, project_with, send, settings_for
from tests.subscribe_helpers import (
    SUBSCRIBE,
    html_of,
    outbox_messages,
    post_form,
    subscribe_project,
)

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def records(session: Session, email: str) -> list[tuple[str, str | None]]:
    session.commit()
    return [
        (r.kind, r.source)
        for r in session.scalars(
            select(ConsentRecord)
            .join(Contact, Contact.id == ConsentRecord.contact_id)
            .where(Contact.email == email)
            .order_by(ConsentRecord.id)
        )
    ]


def test_import_records_consent_and_a_round_trip_keeps_it(tmp_path: Path, session: Session) -> None:
    first = write(
        tmp_path / "members.csv",
        "email,consent,consent_date\n"
        "a@suwon.example.org,opt-in,2024-03-31\n"
        "b@suwon.example.org,existing-relationship,\n"
        "c@suwon.example.org,,\n",
    )
    import_csv(session, first)
    assert records(session, "a@suwon.example.org") == [("opt-in", "import members.csv")]
    assert records(session, "b@suwon.example.org") == [
        ("existing-relationship", "import members.csv")
    ]
    assert records(session, "c@suwon.example.org") == []
    # The same file again changes nothing; a new consent is a new record.
    import_csv(session, first)
    assert len(records(session, "a@suwon.example.org")) == 1
    second = write(tmp_path / "update.csv", "email,consent\nb@suwon.example.org,opt-in\n")
    import_csv(session, second)
    assert records(session, "b@suwon.example.org") == [
        ("existing-relationship", "import members.csv"),
        ("opt-in", "import update.csv"),
    ]
    b = get_contact(session, "b@suwon.example.org")
    assert (b.consent, b.consent_source) == ("opt-in", "import update.csv")
    # Export carries the consent as recorded; importing the export changes nothing.
    exported = export_to_string(session)
    header = exported.splitlines()[0]
    assert ",consent,consent_date,consent_source,consent_version,topics_left," in header
    assert "import update.csv" in exported
    before = session.scalar(select(func.count()).select_from(ConsentRecord))
    at = get_contact(session, "b@suwon.example.org").consent_at
    import_csv(session, write(tmp_path / "export.csv", exported))
    session.commit()
    assert session.scalar(select(func.count()).select_from(ConsentRecord)) == before
    again = get_contact(session, "b@suwon.example.org")
    assert (again.consent_at, again.consent_source) == (at, "import update.csv")


def test_contacts_show_lists_the_consent_history(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    write(
        tmp_path / "m.csv",
        "email,consent,consent_date\nmayor@suwon.example.org,opt-in,2024-03-31\n",
    )
    assert run_cli("init").exit_code == 0
    assert run_cli("contacts", "import", "m.csv").exit_code == 0
    shown = run_cli("contacts", "show", "mayor@suwon.example.org")
    assert shown.exit_code == 0, shown.output
    assert "consent" in shown.output and "import m.csv" in shown.output
    assert "2024-03-31" in shown.output
    doc = json.loads(run_cli("contacts", "show", "mayor@suwon.example.org", "--json").output)
    assert doc["consent_source"] == "import m.csv"
    assert [(s["what"], s["source"]) for s in doc["consent_history"]] == [
        ("opt-in", "import m.csv")
    ]


def _contact(
    session: Session, email: str, consent: str | None, at: datetime | None, **kw
) -> Contact:  # type: ignore[no-untyped-def]
    contact = Contact(email=email, consent=consent, consent_at=at, attributes={}, **kw)
    session.add(contact)
    session.flush()
    return contact


@pytest.fixture
def notice_setup(session: Session, db_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    settings = settings_for(db_url, tmp_path, from_="CityNet <news@citynet-ap.org>")
    old = NOW - timedelta(days=3 * 365)
    _contact(session, "due.ko@example.org", "opt-in", old, language="ko", name="김민지")
    _contact(session, "due.en@example.org", "opt-in", NOW - timedelta(days=731), language="en")
    # Languages as contacts' files spell them: written to in Korean, and in the default.
    _contact(session, "due.kokr@example.org", "opt-in", old, language="ko-KR")
    _contact(session, "due.fr@example.org", "opt-in", old, language="fr")
    _contact(session, "recent@example.org", "opt-in", NOW - timedelta(days=300))
    _contact(session, "relationship@example.org", "existing-relationship", old)
    _contact(session, "harvested@example.org", "public-contact", old)
    _contact(session, "unknown@example.org", None, None)
    _contact(session, "left@example.org", "opt-in", old)
    suppress(session, "left@example.org", "unsubscribed")
    session.commit()
    return settings


def _notices(session: Session) -> list[str]:
    session.commit()
    return sorted(
        session.scalars(
            select(Contact.email).join(ConsentNotice, ConsentNotice.contact_id == Contact.id)
        )
    )


def test_consent_notices_go_once_per_period_to_the_right_contacts(
    notice_setup: Settings, session: Session
) -> None:
    settings = notice_setup
    sender = system_sender(settings, None)
    dry = queue_notices(session, sender, dry_run=True, now=NOW)
    assert (dry.due, dry.queued) == (4, 4) and _notices(session) == []
    # Counted by the language each notice is written in, the same in a dry run.
    assert dry.languages == {"ko": 2, "en": 2}
    run = queue_notices(session, sender, now=NOW)
    assert run.queued == 4 and run.languages == {"ko": 2, "en": 2}
    assert _notices(session) == [
        "due.en@example.org",
        "due.fr@example.org",
        "due.ko@example.org",
        "due.kokr@example.org",
    ]
    # Again, the same day or a year later: nobody is due.
    assert queue_notices(session, sender, now=NOW).queued == 0
    assert queue_notices(session, sender, now=NOW + timedelta(days=365)).queued == 0
    drain(settings, session, "_consent-notice")
    messages = {
        m["To"].addresses[0].addr_spec: m
        for m in outbox_messages(settings.outbox, "_consent-notice")
    }
    assert sorted(messages) == [
        "due.en@example.org",
        "due.fr@example.org",
        "due.ko@example.org",
        "due.kokr@example.org",
    ]
    assert messages["due.kokr@example.org"]["Subject"] == "메일 수신동의 확인 안내: CityNet"
    korean = messages["due.ko@example.org"]
    assert korean["Subject"] == "메일 수신동의 확인 안내: CityNet"
    html = html_of(korean)
    consent_day = (NOW - timedelta(days=3 * 365)).date().isoformat()
    assert consent_day in html and "수신동의 날짜" in html and "/u/" in html
    english = html_of(messages["due.en@example.org"])
    assert "Date of your consent" in english and "CityNet" in english
    # Two years after the notice, the next one is due (and recent@'s first); the history shows it.
    later = queue_notices(session, sender, now=utcnow() + timedelta(days=2 * 365 + 1))
    assert later.queued == 5
    doc = describe(session, "due.ko@example.org")
    assert [s["what"] for s in doc["consent_history"]].count("notice") == 2


def test_two_runs_at_once_send_one_notice(
    notice_setup: Settings, session: Session, db_url: str
) -> None:
    from outreach.db import writer_sessionmaker

    sender = system_sender(notice_setup, None)
    with writer_sessionmaker(db_url)() as other:
        first = queue_notices(other, sender, now=NOW)
    second = queue_notices(session, sender, now=NOW)
    assert first.queued + second.queued == 4
    session.commit()
    assert session.scalar(select(func.count()).select_from(SystemRecipient)) == 4


def test_consent_notices_command_and_the_workers_daily_task(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from huey import MemoryHuey

    from outreach.housekeeping import register_periodic

    env = {"OUTREACH_FROM": "CityNet <news@citynet-ap.org>"}
    write(
        tmp_path / "m.csv",
        "email,consent,consent_date,language\nold@example.org,opt-in,2023-01-05,ko\n"
        "older@example.org,opt-in,2022-01-05,en\n",
    )
    assert run_cli("init").exit_code == 0
    assert run_cli("contacts", "import", "m.csv").exit_code == 0
    no_from = run_cli("consent", "notices")
    assert no_from.exit_code != 0 and "OUTREACH_FROM" in no_from.output
    dry = run_cli("consent", "notices", "--dry-run", env=env)
    assert dry.exit_code == 0 and "2 consent notices due" in dry.output, dry.output
    # The worker's daily task, only when enabled in the configuration.
    settings = Settings.load(env={**env, "OUTREACH_QUEUE_URL": "memory://"}, cwd=tmp_path)
    assert "notices" not in register_periodic(MemoryHuey("off"), settings)
    enabled = Settings.load(
        env={**env, "OUTREACH_CONSENT_NOTICES": "true", "OUTREACH_QUEUE_URL": "memory://"},
        cwd=tmp_path,
    )
    tasks = register_periodic(MemoryHuey("on"), enabled)
    tasks["notices"].call_local()
    again = run_cli("consent", "notices", env=env)
    assert again.exit_code == 0 and "0 consent notices queued" in again.output, again.output
    bad = run_cli("consent", "notices", env={**env, "OUTREACH_CONSENT_NOTICES": "maybe"})
    assert bad.exit_code == 2 and "OUTREACH_CONSENT_NOTICES" in bad.output


def test_unsubscribing_records_the_withdrawal_and_mails_the_result(
    session: Session, db_url: str, tmp_path: Path
) -> None:
    settings = settings_for(db_url, tmp_path)
    path = project_with(tmp_path, session)
    write(tmp_path / "campaigns" / "subscribe.yaml", SUBSCRIBE + "advertising: true\n")
    send(path, settings, session)
    drain(settings, session)
    kim = get_contact(session, "kim@suwon.example.org")
    delivery = session.scalar(select(Delivery.id).where(Delivery.contact_id == kim.id))
    session.commit()
    client = create_app(settings, tmp_path).test_client()
    url = f"/u/{Tokens(settings.secret_key or '').sign('unsubscribe', delivery)}"
    page = client.post(url, data={"confirm": "yes"}).get_data(as_text=True)
    assert "처리 결과" in page and utcnow().date().isoformat() in page  # Art. 50(7) on the page
    assert records(session, "kim@suwon.example.org")[-1] == ("withdrawn", "unsubscribe page")
    client.post(url, data={"confirm": "yes"})  # a second press records nothing new
    assert len(records(session, "kim@suwon.example.org")) == 1
    drain(settings, session, "_result-withdrawal")
    (notice,) = outbox_messages(settings.outbox, "_result-withdrawal")
    assert notice["To"].addresses[0].addr_spec == "kim@suwon.example.org"  # though unsubscribed
    assert "수신동의 철회" in html_of(notice)
    session.commit()
    skipped = session.scalar(
        select(func.count()).select_from(Delivery).where(Delivery.state == "skipped")
    )
    assert skipped == 0


def test_a_confirmation_result_is_mailed_when_the_installation_advertises(
    session: Session, db_url: str, tmp_path: Path
) -> None:
    settings = settings_for(db_url, tmp_path)
    subscribe_project(tmp_path, SUBSCRIBE + "advertising: true\n")
    client = create_app(settings, tmp_path).test_client()
    post_form(client)
    drain(settings, session, "_confirmation")
    (message,) = outbox_messages(settings.outbox, "_confirmation")
    link = re.search(r'href="https?://[^/]+(/confirm/[^"]+)"', html_of(message))
    assert link is not None
    client.post(link.group(1))
    drain(settings, session, "_result-consent")
    (result,) = outbox_messages(settings.outbox, "_result-consent")
    assert "메일 수신동의가 처리되었습니다" in html_of(result)


def test_forget_erases_pending_requests_and_system_messages(
    session: Session, db_url: str, tmp_path: Path
) -> None:
    settings = settings_for(db_url, tmp_path)
    subscribe_project(tmp_path)
    client = create_app(settings, tmp_path).test_client()
    post_form(client, email="mayor@suwon.example.org")
    session.add(Contact(email="mayor@suwon.example.org", attributes={}))
    session.commit()
    forget(session, "mayor@suwon.example.org")
    session.commit()
    assert session.scalar(select(func.count()).select_from(Subscription)) == 0
    assert session.scalar(select(func.count()).select_from(SystemRecipient)) == 0
    drain(settings, session, "_confirmation")
    assert outbox_messages(settings.outbox, "_confirmation") == []


def test_public_contacts_never_get_advertising_and_validate_says_how_many(
    session: Session, db_url: str, tmp_path: Path
) -> None:
    settings = settings_for(db_url, tmp_path, sender_contact="+82-2-723-0639")
    path = project_with(tmp_path, session, campaign=CAMPAIGN + "advertising: true\n")
    import_csv(
        session,
        write(
            tmp_path / "harvested.csv",
            "email,consent,language\nfound1@example.org,public-contact,ko\n"
            "found2@example.org,public-contact,en\n",
        ),
    )
    report = validate_campaign(path, settings, session)
    assert report.ok and report.audience_size == 3
    assert any("2 contacts with consent public-contact left out" in w for w in report.warnings)
    result = send(path, settings, session)
    assert result.added == 3
    drain(settings, session)
    mailed = {m["To"].addresses[0].addr_spec for m in outbox_messages(settings.outbox, "news")}
    assert not {"found1@example.org", "found2@example.org"} & mailed
    html = html_of(outbox_messages(settings.outbox, "news")[0])
    assert "+82-2-723-0639" in html and "연락처" in html  # Art. 50(4)
    # Not advertising: they are in the audience.
    plain = validate_campaign(
        write(tmp_path / "campaigns" / "plain.yaml", CAMPAIGN.replace("name: news", "name: plain")),
        settings,
        session,
    )
    assert plain.audience_size == 5 and not any("left out" in w for w in plain.warnings)


def test_the_footer_contact_defaults_to_reply_to(tmp_path: Path) -> None:
    from outreach.campaigns import load_campaign
    from outreach.compiler import compile_campaign
    from tests.project import make_project

    path = make_project(tmp_path, CAMPAIGN + "advertising: true\n")
    compiled = compile_campaign(load_campaign(path), {"ko"}, Settings(postal_address="Seoul"))
    html = compiled.variants["ko"].html
    assert "연락처: info@citynet-ap.org" in html and "contact: info@citynet-ap.org" in html


def test_a_subscribe_file_is_not_a_campaign(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    subscribe_project(tmp_path)
    result = run_cli("campaigns", "validate")
    # Checked by its own rules, not as a campaign.
    assert "ok campaigns/subscribe.yaml: the subscribe form's settings" in result.output
    assert "template" not in result.output, result.output
    assert load_config(Settings(from_="a@b.org"), tmp_path / "campaigns" / "subscribe.yaml")


def test_housekeeping_purges_old_requests_and_reopens_a_stalled_system_campaign(
    session: Session, db_url: str, tmp_path: Path
) -> None:
    from outreach.housekeeping import maintain
    from outreach.lifecycle import transition
    from outreach.models import Campaign
    from outreach.system_mail import queue

    settings = settings_for(db_url, tmp_path, from_="CityNet <news@citynet-ap.org>")
    sender = system_sender(settings, None)
    session.add(
        Subscription(
            email="old@example.org", language="en", created_at=utcnow() - timedelta(days=9)
        )
    )
    session.add(Subscription(email="new@example.org", language="en", created_at=utcnow()))
    campaign_id, _ = queue(
        session, "confirmation", sender, email="a@example.org", name=None, language="en"
    )
    # A worker finished the campaign just as this delivery was added.
    session.execute(Campaign.__table__.update().values(state="done"))
    session.commit()
    maintain(session)
    assert session.scalar(select(func.count()).select_from(Subscription)) == 1
    assert session.scalar(select(Campaign.state).where(Campaign.id == campaign_id)) == "sending"
    assert not transition(session, campaign_id, "sending", only_from=("done",))
