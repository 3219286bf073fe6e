"""One address, one spelling: a domain written in Unicode (수원.kr) and in its ASCII form
(xn--9p4bi0g.kr) is the same mailbox, so everything that stores or compares an address
agrees on `local@ascii-domain` — and a suppression cannot be escaped by the other spelling.
Databases from before this rule are rewritten by migration 0006."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.orm import Session

from outreach.bounces import ingest
from outreach.contacts import import_csv
from outreach.db import engine_for, upgrade
from outreach.fields import normalise_email
from outreach.models import Contact, Delivery, Subscription, Suppression, SystemRecipient
from outreach.suppressions import is_suppressed, suppress, unsuppress
from outreach.tokens import Tokens
from outreach.web import create_app
from tests.conftest import POSTGRES_URL, _pg_url_with_schema, write
from tests.project import CONTACTS
from tests.sending_helpers import current, drain, project_with, send, settings_for
from tests.subscribe_helpers import post_form, queued_confirmations, subscribe_project

UNICODE = "kim@수원.kr"
ASCII = "kim@xn--9p4bi0g.kr"
SPELLINGS = [(UNICODE, ASCII), (ASCII, UNICODE)]
ROW = "{},김수원,수원특례시,KR,ko,full\n"


def test_every_spelling_is_stored_with_the_ascii_domain() -> None:
    for spelling in (UNICODE, ASCII, "Kim@수원.KR", "KIM@XN--9P4BI0G.KR", " kim@수원.kr "):
        assert normalise_email(spelling) == ASCII, spelling
    # An internationalised local part stays as it is; only the domain takes the ASCII form.
    assert normalise_email("김@수원.kr") == "김@xn--9p4bi0g.kr"
    assert normalise_email("josé@münchen.example") == "josé@xn--mnchen-3ya.example"


@pytest.mark.parametrize(("first", "second"), SPELLINGS)
def test_suppressed_under_one_spelling_is_never_mailed_under_the_other(
    session: Session, db_url: str, tmp_path: Path, first: str, second: str
) -> None:
    settings = settings_for(db_url, tmp_path)
    path = project_with(tmp_path, session, csv=CONTACTS + ROW.format(first))
    # Importing the other spelling updates the same contact.
    import_csv(session, write(tmp_path / "again.csv", "email,city\n" + f"{second},Suwon\n"))
    session.commit()
    assert session.scalar(select(func.count()).select_from(Contact)) == 4
    assert session.scalar(select(Contact.city).where(Contact.email == ASCII)) == "Suwon"
    send(path, settings, session)
    # Suppressed after the campaign was queued: the worker's check just before sending.
    suppress(session, second, "unsubscribed")
    session.commit()
    drain(settings, session)
    assert current(settings).counts["skipped"] == 1
    skipped = session.scalar(select(Delivery).where(Delivery.state == "skipped"))
    assert skipped is not None and skipped.last_text == "suppressed (unsubscribed)"
    for message in (tmp_path / "outbox" / "news").iterdir():
        assert b"9p4bi0g" not in message.read_bytes(), message
    assert is_suppressed(session, ASCII)
    # And lifted under the first spelling.
    unsuppress(session, first)
    session.commit()
    assert not is_suppressed(session, ASCII)


@pytest.mark.parametrize(("first", "second"), SPELLINGS)
def test_a_suppressed_spelling_is_outside_every_audience(
    session: Session, db_url: str, tmp_path: Path, first: str, second: str
) -> None:
    settings = settings_for(db_url, tmp_path)
    path = project_with(tmp_path, session, csv=CONTACTS + ROW.format(first))
    suppress(session, second, "bounced")
    result = send(path, settings, session)
    assert result.added == 3


@pytest.mark.parametrize(("first", "second"), SPELLINGS)
def test_the_subscribe_form_knows_both_spellings(
    session: Session, db_url: str, tmp_path: Path, first: str, second: str
) -> None:
    settings = settings_for(db_url, tmp_path)
    subscribe_project(tmp_path)
    client: FlaskClient = create_app(settings, tmp_path).test_client()
    post_form(client, email=first)
    session.commit()
    assert session.scalar(select(Subscription.email)) == ASCII
    assert session.scalar(select(SystemRecipient.email)) == ASCII
    suppress(session, second, "bounced")
    session.commit()
    post_form(client, email=second)
    post_form(client, email=first)
    assert queued_confirmations(session) == 1, "a bounced address gets no confirmation"


def test_a_bounce_naming_the_ascii_form_counts_for_a_unicode_import(
    session: Session, db_url: str, tmp_path: Path
) -> None:
    """Relays report an internationalised domain in its ASCII form."""
    domain = "bounce.citynet-ap.org"
    settings = settings_for(db_url, tmp_path, bounce_domain=domain)
    path = project_with(tmp_path, session, csv=CONTACTS + ROW.format(UNICODE))
    send(path, settings, session)
    drain(settings, session)
    message_id = session.scalar(
        select(Delivery.message_id)
        .join(Contact, Contact.id == Delivery.contact_id)
        .where(Contact.email == normalise_email(UNICODE))
    )
    session.commit()
    assert message_id is not None
    raw = (
        "From: MAILER-DAEMON@mx.example.net\nTo: news@citynet-ap.org\n"
        "Subject: Undelivered Mail Returned to Sender\nMIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\n\n'
        "--b\nContent-Type: text/plain\n\nfailed\n\n"
        "--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.net\n\n"
        f"Final-Recipient: rfc822; {ASCII}\nAction: failed\nStatus: 5.1.1\n\n"
        f"--b\nContent-Type: text/rfc822-headers\n\nTo: {ASCII}\nMessage-ID: {message_id}\n\n"
        "--b--\n"
    ).encode()
    secret = settings.secret_key
    assert secret is not None
    report = ingest(session, Tokens(secret), domain, 3, iter([("dsn", raw, None)]))
    session.commit()
    assert report.hard == 1 and report.not_ours == 0
    assert session.scalar(select(Suppression.email)) == ASCII


# --- migration 0006: databases from before the rule ---------------------------------------

NEW, OLD = "2026-06-01 00:00:00", "2025-01-01 00:00:00"


@pytest.fixture(params=["sqlite", "postgresql"])
def url_at_0004(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database at revision 0004, before addresses had one spelling."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'old.db'}"
        upgrade(url, "0004")
        yield url
        engine_for(url).dispose()
        return
    if not POSTGRES_URL:
        pytest.skip("PostgreSQL tests need OUTREACH_TEST_POSTGRES_URL (CI sets it)")
    schema = f"m_{uuid.uuid4().hex[:10]}"
    admin = create_engine(POSTGRES_URL.replace("postgresql://", "postgresql+psycopg://", 1))
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    url = _pg_url_with_schema(schema)
    try:
        upgrade(url, "0004")
        yield url
    finally:
        engine_for(url).dispose()
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def _insert(conn, table: str, **values: object) -> None:  # type: ignore[no-untyped-def]
    columns = ", ".join(values)
    params = ", ".join(f":{k}" for k in values)
    conn.execute(text(f"INSERT INTO {table} ({columns}) VALUES ({params})"), values)


def test_migration_0006_rewrites_every_address_to_one_spelling(url_at_0004: str) -> None:
    u, a = "수원.kr", "xn--9p4bi0g.kr"
    with engine_for(url_at_0004).begin() as conn:
        _insert(
            conn,
            "campaigns",
            id=1,
            name="news",
            state="done",
            definition="{}",
            expressions="[]",
            created_at=OLD,
            updated_at=OLD,
        )
        contacts = [
            (1, f"kim@{u}", OLD),  # older than its ASCII twin: kept
            (2, f"kim@{a}", NEW),
            (3, f"lee@{a}", OLD),  # the ASCII row is the older: kept
            (4, f"lee@{u}", NEW),
            (5, f"park@{u}", NEW),  # one spelling only: rewritten
            (6, f"김@{u}", NEW),
            (7, "plain@example.org", NEW),
        ]
        for cid, address, at in contacts:
            _insert(
                conn,
                "contacts",
                id=cid,
                email=address,
                attributes="{}",
                created_at=at,
                updated_at=at,
            )
        for did, cid in ((1, 1), (2, 2), (3, 4), (4, None)):
            _insert(
                conn,
                "deliveries",
                id=did,
                campaign_id=1,
                contact_id=cid,
                state="sent",
                attempts=1,
                next_attempt_at=OLD,
                created_at=OLD,
                updated_at=OLD,
            )
            _insert(
                conn,
                "events",
                id=did,
                kind="sent",
                data="{}",
                created_at=OLD,
                campaign_id=1,
                delivery_id=did,
                contact_id=cid,
            )
        suppressions = [
            (1, f"kim@{u}", "bounced"),  # stronger than its twin's unsubscribe
            (2, f"kim@{a}", "unsubscribed"),
            (3, f"lee@{a}", "complained"),
            (4, f"lee@{u}", "manual"),
            (5, f"park@{u}", "unsubscribed"),
        ]
        for sid, address, reason in suppressions:
            _insert(conn, "suppressions", id=sid, email=address, reason=reason, created_at=OLD)
        subscriptions = [
            (1, f"kim@{u}", OLD),
            (2, f"kim@{a}", NEW),  # the newer of the two: kept
            (3, f"lee@{a}", OLD),
            (4, f"lee@{u}", NEW),  # the newer of the two: kept, rewritten
            (5, f"choi@{u}", NEW),
        ]
        for sid, address, at in subscriptions:
            _insert(conn, "subscriptions", id=sid, email=address, language="ko", created_at=at)
        _insert(conn, "system_recipients", delivery_id=4, email=f"choi@{u}", variables="{}")
        # The duplicate (2) holds the proof of consent and a tag the kept row (1) lacks.
        conn.execute(
            text(
                "UPDATE contacts SET name = 'Kim', consent = 'opt-in', consent_at = :at WHERE id = 2"
            ),
            {"at": NEW},
        )
        _insert(conn, "consents", id=1, contact_id=2, kind="opt-in", at=NEW, recorded_at=NEW)
        _insert(conn, "contact_tags", contact_id=2, tag="newsletter")
        _insert(conn, "contact_tags", contact_id=1, tag="newsletter")
        _insert(conn, "contact_tags", contact_id=2, tag="webinar")

    upgrade(url_at_0004)

    with engine_for(url_at_0004).connect() as conn:
        assert dict(conn.execute(text("SELECT id, email FROM contacts ORDER BY id")).all()) == {
            1: f"kim@{a}",
            3: f"lee@{a}",
            5: f"park@{a}",
            6: f"김@{a}",
            7: "plain@example.org",
        }
        # The duplicates merge into the kept contacts: their events and their deliveries of
        # campaigns the kept one had none of move over; a second delivery of the same
        # campaign stays, counted, without a contact.
        rows = conn.execute(text("SELECT id, contact_id FROM deliveries ORDER BY id")).all()
        assert [tuple(r) for r in rows] == [(1, 1), (2, None), (3, 3), (4, None)]
        rows = conn.execute(text("SELECT id, contact_id FROM events ORDER BY id")).all()
        assert [tuple(r) for r in rows] == [(1, 1), (2, 1), (3, 3), (4, None)]
        # Nothing of the proof of consent, the fields or the tags is lost.
        assert conn.execute(text("SELECT contact_id FROM consents")).scalar() == 1
        kept = conn.execute(text("SELECT name, consent FROM contacts WHERE id = 1")).one()
        assert tuple(kept) == ("Kim", "opt-in")
        tags = conn.execute(text("SELECT tag FROM contact_tags WHERE contact_id = 1 ORDER BY tag"))
        assert [t for (t,) in tags] == ["newsletter", "webinar"]
        rows = conn.execute(text("SELECT email, reason FROM suppressions ORDER BY email")).all()
        assert [tuple(r) for r in rows] == [
            (f"kim@{a}", "bounced"),
            (f"lee@{a}", "complained"),
            (f"park@{a}", "unsubscribed"),
        ]
        rows = conn.execute(text("SELECT id, email FROM subscriptions ORDER BY id")).all()
        assert [tuple(r) for r in rows] == [(2, f"kim@{a}"), (4, f"lee@{a}"), (5, f"choi@{a}")]
        assert conn.execute(text("SELECT email FROM system_recipients")).scalar() == f"choi@{a}"


def test_migration_0006_ranks_suppressions_as_the_code_does() -> None:
    from alembic.script import ScriptDirectory

    from outreach.db import alembic_config
    from outreach.suppressions import PRECEDENCE

    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    revision = script.get_revision("0006")
    assert revision is not None and revision.module.PRECEDENCE == PRECEDENCE
