"""Segment conditions on what contacts did with earlier campaigns, checked against a Python
reference computed from the same delivery and event rows, on SQLite and PostgreSQL."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from outreach.errors import FileError, FileErrors, located
from outreach.models import Campaign, Contact, Delivery, Event, utcnow
from outreach.segments import audience, count, load_segments, members
from outreach.suppressions import suppress
from tests.conftest import write

URLS = (
    "https://citynet-ap.org/events/covid19-series-7",
    "https://citynet-ap.org/events/covid19-series-7?lang=ko",
    "https://citynet-ap.org/news/colombo-drainage",
    "https://citynet-ap.org/REGISTER/climate",
    "https://citynet-ap.org/offers/100%_off",
    "https://citynet-ap.org/offers/1000off",
)
CAMPAIGNS = ("inv", "news", "old")
STATES = ("sent",) * 6 + ("bounced", "bounced", "failed", "queued", "deferred", "skipped")


@dataclass
class World:
    """The rows a test wrote, kept in Python for the reference evaluation."""

    now: datetime
    emails: dict[int, str] = field(default_factory=dict)
    membership: dict[int, str] = field(default_factory=dict)
    suppressed: set[int] = field(default_factory=set)
    # (contact_id, campaign, state, sent_at)
    deliveries: list[tuple[int, str, str, datetime | None]] = field(default_factory=list)
    # (contact_id, campaign or None, kind, created_at, data)
    events: list[tuple[int | None, str | None, str, datetime, dict[str, Any]]] = field(
        default_factory=list
    )


def _ago(rnd: random.Random, now: datetime) -> datetime:
    # Half a day off every whole day, so no row sits on a window's edge.
    return now - timedelta(days=rnd.randrange(60) + 0.5)


def build_world(session: Session, seed: int = 20261216, contacts: int = 90) -> World:
    rnd = random.Random(seed)
    now = utcnow()
    world = World(now=now)
    campaigns = {name: Campaign(name=name, state="done") for name in CAMPAIGNS}
    session.add_all(campaigns.values())
    rows = [
        Contact(email=f"c{i}@example.org", membership=rnd.choice(["full", "associate", "none"]))
        for i in range(contacts)
    ]
    session.add_all(rows)
    session.flush()
    for contact in rows:
        world.emails[contact.id] = contact.email
        world.membership[contact.id] = contact.membership or ""
    for contact in rnd.sample(rows, 8):
        suppress(session, contact.email, rnd.choice(["unsubscribed", "bounced"]))
        world.suppressed.add(contact.id)
    for contact in rows:
        for name, campaign in campaigns.items():
            if rnd.random() < 0.25:
                continue
            state = rnd.choice(STATES)
            sent_at = _ago(rnd, now) if state in ("sent", "bounced") else None
            delivery = Delivery(
                campaign_id=campaign.id,
                contact_id=contact.id,
                state=state,
                sent_at=sent_at,
                # Queued long before it went out: `received` windows count from sent_at.
                created_at=now - timedelta(days=90),
            )
            session.add(delivery)
            session.flush()
            world.deliveries.append((contact.id, name, state, sent_at))
            if sent_at is None:
                continue

            happened: list[tuple[str, dict[str, Any]]] = []
            happened += [("open", {})] * rnd.choice([0, 0, 1, 2])
            for _ in range(rnd.choice([0, 0, 1, 2])):
                happened.append(("click", {"url": rnd.choice(URLS)}))
            if state == "bounced":
                happened.append(
                    ("bounce", {"kind": rnd.choice(["hard", "soft"]), "action": "failed"})
                )
            elif rnd.random() < 0.1:
                # A warning that the message is still being tried, not a bounce.
                happened.append(("bounce", {"kind": "soft", "action": "delayed"}))
            if rnd.random() < 0.08:
                happened.append(("unsubscribe", {"method": "one-click"}))
            for kind, data in happened:
                at = _ago(rnd, now)
                session.add(
                    Event(
                        kind=kind,
                        campaign_id=campaign.id,
                        delivery_id=delivery.id,
                        contact_id=contact.id,
                        created_at=at,
                        data=data,
                    )
                )
                world.events.append((contact.id, name, kind, at, data))
    # Rows that belong to no contact or no campaign must match nobody.
    session.add(Event(kind="click", campaign_id=campaigns["inv"].id, data={"url": URLS[0]}))
    session.add(Event(kind="bounce", contact_id=rows[0].id, data={"kind": "hard"}))
    world.events.append((rows[0].id, None, "bounce", now, {"kind": "hard"}))
    session.commit()
    return world


def reference(world: World, cond: Any, cid: int) -> bool:
    """What a condition means, written plainly over the rows in Python."""
    if "all" in cond:
        return all(reference(world, c, cid) for c in cond["all"])
    if "any" in cond:
        return any(reference(world, c, cid) for c in cond["any"])
    if "not" in cond:
        return not reference(world, cond["not"], cid)
    ((key, arg),) = cond.items()
    if key == "membership":
        return world.membership[cid] in (arg if isinstance(arg, list) else [arg])
    spec = arg if isinstance(arg, dict) else {"campaign": arg}
    since = world.now - timedelta(days=spec["days"]) if "days" in spec else None

    def recent(at: datetime | None) -> bool:
        return at is not None and (since is None or at >= since)

    if key == "received":
        return any(
            c == cid and name == spec["campaign"] and state == "sent" and recent(at)
            for c, name, state, at in world.deliveries
        )
    kinds = {
        "opened": ("open",),
        "clicked": ("click",),
        "bounced": ("bounce",),
        "unsubscribed": ("unsubscribe",),
        "engaged": ("open", "click"),
    }[key]
    for c, name, kind, at, data in world.events:
        if c != cid or kind not in kinds or not recent(at):
            continue
        if "campaign" in spec and name != spec["campaign"]:
            continue
        if key == "clicked" and "url" in spec and spec["url"].lower() not in data["url"].lower():
            continue
        if key == "bounced" and data.get("action") == "delayed":
            continue
        return True
    return False


INVITED_NOT_REGISTERED = {
    "all": [
        {"received": "inv"},
        {"not": {"clicked": {"campaign": "inv", "url": "covid19-series-7"}}},
    ]
}
CASES: list[Any] = [
    {"received": "inv"},
    {"received": {"campaign": "inv", "days": 10}},
    {"received": {"campaign": "news", "days": 45}},
    {"opened": "inv"},
    {"opened": {"campaign": "news", "days": 7}},
    {"clicked": "inv"},
    {"clicked": {"campaign": "inv", "url": "covid19-series-7"}},
    {"clicked": {"campaign": "inv", "url": "register"}},  # case-insensitive
    {"clicked": {"campaign": "old", "url": "100%_"}},  # % and _ are plain characters
    {"clicked": {"campaign": "old", "url": "%"}},
    {"clicked": {"campaign": "news", "url": "covid19", "days": 20}},
    {"bounced": "inv"},
    {"bounced": {"campaign": "news", "days": 30}},
    {"unsubscribed": "old"},
    {"unsubscribed": {"campaign": "inv", "days": 30}},
    {"engaged": {"days": 14}},
    {"engaged": {"days": 365}},
    {"not": {"engaged": {"days": 5}}},
    {"not": {"received": "inv"}},
    INVITED_NOT_REGISTERED,
    {"any": [{"opened": "old"}, {"clicked": "news"}]},
    {"all": [{"membership": ["full", "associate"]}, {"not": {"engaged": {"days": 20}}}]},
    {"all": [{"received": "news"}, {"not": {"received": "inv"}}, {"not": {"bounced": "old"}}]},
    {"received": "never-sent"},  # a campaign file that was never sent: nobody
]


@pytest.fixture
def world(session: Session) -> World:
    return build_world(session)


def segments_file(folder: Path, where: Any, name: str = "s") -> Path:
    write(folder / "never-sent.yaml", "template: x\n")
    return write(folder / "segments.yaml", yaml.safe_dump({name: {"where": where}}))


def expected(world: World, cond: Any) -> set[str]:
    return {
        world.emails[cid]
        for cid in world.emails
        if cid not in world.suppressed and reference(world, cond, cid)
    }


@pytest.mark.parametrize("cond", CASES, ids=lambda c: yaml.safe_dump(c, width=1000).strip())
def test_conditions_match_the_reference(
    session: Session, world: World, tmp_path: Path, cond: Any
) -> None:
    segment = load_segments(segments_file(tmp_path, cond), session)["s"]
    where = audience([segment])
    got = {c.email for c in members(session, where)}
    want = expected(world, cond)
    assert got == want
    assert count(session, where) == len(want)
    assert not got & {world.emails[cid] for cid in world.suppressed}


def test_the_data_exercises_every_case(world: World) -> None:
    # A reference that is always empty or always full proves nothing.
    for cond in CASES[:-1]:
        hits = sum(reference(world, cond, cid) for cid in world.emails)
        assert 0 < hits < len(world.emails), cond


def test_seeded_worlds_agree_too(session: Session, tmp_path: Path) -> None:
    world = build_world(session, seed=7, contacts=40)
    for i, cond in enumerate(CASES):
        segment = load_segments(segments_file(tmp_path / str(i), cond), session)["s"]
        assert {c.email for c in members(session, audience([segment]))} == expected(world, cond)


def test_suppressed_contacts_are_never_members(
    session: Session, world: World, tmp_path: Path
) -> None:
    everyone = {"any": [{"received": n} for n in CAMPAIGNS] + [{"not": {"received": "inv"}}]}
    segment = load_segments(segments_file(tmp_path, everyone), session)["s"]
    got = {c.email for c in members(session, audience([segment]))}
    assert got == {e for cid, e in world.emails.items() if cid not in world.suppressed}


def test_one_query_each(session: Session, world: World, tmp_path: Path) -> None:
    segment = load_segments(segments_file(tmp_path, INVITED_NOT_REGISTERED), session)["s"]
    where = audience([segment])
    statements: list[str] = []
    engine = session.get_bind()
    listener: Callable[..., None] = lambda *a: statements.append(a[2])  # noqa: E731
    event.listen(engine, "before_cursor_execute", listener)
    try:
        count(session, where)
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    assert len(statements) == 1
    sql = statements[0].lower()
    assert sql.count("exists") >= 2 and "deliveries" in sql and "events" in sql


def test_inside_a_query_over_deliveries(session: Session, world: World, tmp_path: Path) -> None:
    """Reports count a campaign's deliveries by segment: a history condition there must still
    ask about the contact, not about the delivery row of the outer query."""
    segment = load_segments(segments_file(tmp_path, {"received": "inv"}), session)["s"]
    news = session.scalar(select(Campaign.id).where(Campaign.name == "news"))
    got = session.scalar(
        select(func.count())
        .select_from(Delivery)
        .join(Contact, Contact.id == Delivery.contact_id)
        .where(Delivery.campaign_id == news, segment.where)
    )
    news_contacts = {c for c, name, *_ in world.deliveries if name == "news"}
    want = sum(reference(world, {"received": "inv"}, cid) for cid in news_contacts)
    assert got == want


def test_windows_end_when_the_query_runs(session: Session, tmp_path: Path) -> None:
    """A loaded segment measures its window at each execution, not when the file was read."""
    campaign = Campaign(name="inv", state="done")
    contact = Contact(email="late@example.org")
    session.add_all([campaign, contact])
    session.flush()
    segment = load_segments(
        segments_file(tmp_path, {"received": {"campaign": "inv", "days": 1}}), session
    )["s"]
    assert count(session, segment.where) == 0
    session.add(
        Delivery(
            campaign_id=campaign.id,
            contact_id=contact.id,
            state="sent",
            sent_at=utcnow() - timedelta(hours=23),
        )
    )
    session.commit()
    assert count(session, segment.where) == 1


# --- campaign names ---------------------------------------------------------------------


def test_unknown_campaign_is_a_located_error_with_the_known_names(tmp_path: Path) -> None:
    write(tmp_path / "2026-12-covid19-webinar.yaml", "template: webinar-invitation\n")
    write(tmp_path / "news.yaml", "name: 2026-12-newsletter\ntemplate: newsletter\n")
    write(tmp_path / "broken.yaml", "name: [unclosed\n")
    path = write(
        tmp_path / "segments.yaml",
        "ok:\n  where:\n    received: 2026-12-covid19-webinar\n"
        "typo:\n  where:\n    all:\n      - clicked: {campaign: 2026-12-covid19-webinr}\n",
    )
    with pytest.raises((FileError, FileErrors)) as err:
        load_segments(path)
    (error,) = located(err.value)  # type: ignore[arg-type]
    assert error.path == str(path) and error.line == 7
    assert "unknown campaign '2026-12-covid19-webinr'" in error.message
    assert "did you mean '2026-12-covid19-webinar'" in error.message
    # `name:` wins over the file's stem; a file we cannot read counts by its stem.
    assert error.message.endswith(
        f"known from the campaign files in {tmp_path}/: "
        "2026-12-covid19-webinar, 2026-12-newsletter, broken"
    )


def test_names_from_the_database_when_a_session_is_given(session: Session, tmp_path: Path) -> None:
    session.add(Campaign(name="2025-06-archived", state="done"))
    session.commit()
    path = write(tmp_path / "segments.yaml", "s:\n  where:\n    opened: 2025-06-archived\n")
    with pytest.raises(FileErrors, match=r"segments.yaml:3: unknown campaign '2025-06-archived'"):
        load_segments(path)
    assert "s" in load_segments(path, session)


def test_names_are_only_looked_up_when_needed(tmp_path: Path) -> None:
    # Unreadable campaign files do not matter to segments that test contact fields only.
    write(tmp_path / "bad.yaml", b"\xff\xfe not utf-8")
    path = write(tmp_path / "segments.yaml", "s:\n  where: {country: KR}\n")
    assert "s" in load_segments(path)


@pytest.mark.parametrize(
    ("where", "line", "fragment"),
    [
        (
            "    clicked: {campaign: inv, link: x}\n",
            3,
            "unknown key 'link'; allowed: campaign, url, days",
        ),
        ("    opened: {campaign: inv, url: x}\n", 3, "unknown key 'url'; allowed: campaign, days"),
        ("    received: {days: 3}\n", 3, "received: needs campaign:"),
        ("    received: {campaign: inv, days: 0}\n", 3, "days: a whole number from 1 to 36500"),
        ("    received: {campaign: inv, days: -4}\n", 3, "days: a whole number from 1 to 36500"),
        ("    received: {campaign: inv, days: 2.5}\n", 3, "days: a whole number from 1 to 36500"),
        ("    received: {campaign: inv, days: ten}\n", 3, "days: a whole number from 1 to 36500"),
        ("    received: {campaign: inv, days: yes}\n", 3, "days: a whole number from 1 to 36500"),
        (
            "    engaged: {days: 99999999999999999999}\n",
            3,
            "days: a whole number from 1 to 36500",
        ),
        ("    received: 2027\n", 3, "received: write the campaign name as text, e.g. '2027'"),
        ("    received: ''\n", 3, "received: write a campaign name"),
        ("    received: [inv, news]\n", 3, "received: write a campaign name or {campaign: NAME"),
        ("    clicked: {campaign: inv, url: ''}\n", 3, "url: write part of a link"),
        ("    clicked: {campaign: inv, url: [a]}\n", 3, "url: write part of a link"),
        ("    engaged: 30\n", 3, "engaged: write {days: N}"),
        ("    engaged: {}\n", 3, "engaged: needs days:"),
        ("    engaged: {days: 30, campaign: inv}\n", 3, "unknown key 'campaign'; allowed: days"),
        (
            "    all:\n      - country: KR\n      - bounced:\n          campaign: inv\n"
            "          days: 0\n",
            7,
            "days: a whole number",
        ),
    ],
)
def test_condition_errors(tmp_path: Path, where: str, line: int, fragment: str) -> None:
    write(tmp_path / "inv.yaml", "template: x\n")
    write(tmp_path / "news.yaml", "template: x\n")
    path = write(tmp_path / "segments.yaml", f"s:\n  where:\n{where}")
    with pytest.raises((FileError, FileErrors)) as err:
        load_segments(path)
    errors = located(err.value)  # type: ignore[arg-type]
    assert any(e.line == line and fragment in e.message for e in errors), [str(e) for e in errors]


def test_hostile_campaign_names(tmp_path: Path) -> None:
    write(tmp_path / "inv.yaml", "template: x\n")
    path = write(
        tmp_path / "segments.yaml",
        's:\n  where:\n    received: "inv\\x1b[31m\\r\\nX-Evil: 1"\n'
        f"t:\n  where:\n    opened: {'a' * 5000}\n",
    )
    with pytest.raises(FileErrors) as err:
        load_segments(path)
    messages = [e.message for e in err.value.errors]
    assert len(messages) == 2 and all(m.startswith("unknown campaign ") for m in messages)
    assert "inv\\x1b[31m\\r\\nX-Evil: 1" in messages[0] and "aaa…" in messages[1]
    assert all("\x1b" not in m and "\r" not in m and "\n" not in m for m in messages)
    assert all(len(m) < 400 for m in messages)


def test_history_index_migration(db_url: str) -> None:
    from alembic import command
    from sqlalchemy import inspect

    from outreach.db import alembic_config, current_revision, engine_for, head_revision, upgrade

    def indexes() -> set[str]:
        return {str(i["name"]) for i in inspect(engine_for(db_url)).get_indexes("events")}

    assert current_revision(db_url) == head_revision()
    assert "ix_events_history" in indexes() and "ix_events_contact_id" not in indexes()
    command.downgrade(alembic_config(db_url), "0001")
    assert "ix_events_history" not in indexes() and "ix_events_contact_id" in indexes()
    upgrade(db_url)
    assert current_revision(db_url) == head_revision() and "ix_events_history" in indexes()
