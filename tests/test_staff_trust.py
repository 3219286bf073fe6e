"""Small things that cost trust: one broken segment hides no other, subscribe.yaml edited
while serving, prompts in scripts, a steady time left, consent notices listed, and an Atom
summary that reads like the message."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path
from xml.etree import ElementTree

import pytest
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from outreach.archive import summary
from outreach.lifecycle import status
from outreach.models import Campaign, Contact, Delivery, WorkerBeat, utcnow
from outreach.subscriptions import WatchedConfig
from outreach.web import create_app
from tests.conftest import ROOT, write
from tests.project import make_project
from tests.sending_helpers import settings_for
from tests.subscribe_helpers import SUBSCRIBE
from tests.test_archive import shipped_newsletter_archived

ENV = {"OUTREACH_POSTAL_ADDRESS": "Seoul"}

# Item 13: one broken segment does not hide the others.


def test_segments_list_shows_the_others_and_the_broken_one(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    make_project(tmp_path)
    segments = tmp_path / "campaigns" / "segments.yaml"
    segments.write_text(
        segments.read_text(encoding="utf-8")
        + "reminder:\n  where:\n    received: 2027-03-webinar\n",
        encoding="utf-8",
    )
    assert run_cli("init").exit_code == 0
    assert run_cli("contacts", "import", "contacts.csv").exit_code == 0
    listed = run_cli("segments", "list")
    assert listed.exit_code == 1
    assert re.search(r"everyone\s.*\s3\s", listed.output), listed.output
    assert re.search(r"koreans\s.*\s1\s", listed.output), listed.output
    assert "segment reminder:" in listed.output
    assert "segments.yaml:10: unknown campaign '2027-03-webinar'" in listed.output
    assert "Traceback" not in listed.output
    as_json = json.loads(run_cli("segments", "list", "--json").output)
    by_name = {row["segment"]: row for row in as_json}
    assert by_name["everyone"]["contacts"] == 3 and by_name["everyone"]["error"] is None
    assert by_name["reminder"]["contacts"] is None
    assert "unknown campaign '2027-03-webinar'" in by_name["reminder"]["error"]


# Item 14: subscribe.yaml created or changed while serve runs.


def test_subscribe_yaml_is_picked_up_while_serving(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(WatchedConfig, "CHECK_SECONDS", 0.0)
    settings = settings_for(sqlite_url, tmp_path)
    client = create_app(settings, tmp_path).test_client()
    assert client.get("/subscribe").status_code == 404  # no file: no form
    path = write(tmp_path / "campaigns" / "subscribe.yaml", SUBSCRIBE)
    page = client.get("/subscribe?lang=en")
    assert page.status_code == 200
    edited = SUBSCRIBE.replace("I agree to receive", "I am happy to receive")
    assert edited != SUBSCRIBE
    write(path, edited)
    bump = path.stat().st_mtime + 5
    import os

    os.utime(path, (bump, bump))
    assert "I am happy to receive" in client.get("/subscribe?lang=en").get_data(as_text=True)
    # A broken edit keeps the form as it was (and says why in the log).
    write(path, "consent: [\n")
    os.utime(path, (bump + 5, bump + 5))
    assert "I am happy to receive" in client.get("/subscribe?lang=en").get_data(as_text=True)
    path.unlink()
    assert client.get("/subscribe").status_code == 404


def test_subscribe_settings_are_looked_at_only_every_few_seconds(
    sqlite_url: str, tmp_path: Path
) -> None:
    watched = WatchedConfig(settings_for(sqlite_url, tmp_path), tmp_path / "subscribe.yaml")
    assert watched.current() is None
    write(tmp_path / "subscribe.yaml", SUBSCRIBE)
    assert watched.current() is None  # not looked at again yet: a page costs no stat call
    assert WatchedConfig.CHECK_SECONDS <= 5


# Item 15: prompts in scripts, plurals, a steady time left, consent notices listed.


@pytest.mark.parametrize(
    ("command", "refusal"),
    [
        (("campaigns", "cancel", "news"), "news not cancelled"),
        (("contacts", "forget", "kim@suwon.example.org"), "kim@suwon.example.org not erased"),
    ],
)
def test_without_yes_in_a_script_one_line_and_nothing_done(
    run_cli, tmp_path: Path, command, refusal
) -> None:  # type: ignore[no-untyped-def]
    make_project(tmp_path)
    assert run_cli("init").exit_code == 0
    assert run_cli("contacts", "import", "contacts.csv").exit_code == 0
    assert run_cli("campaigns", "send", "campaigns/news.yaml", env=ENV).exit_code == 0
    refused = run_cli(*command)
    assert refused.exit_code == 1
    assert "Aborted!" not in refused.output
    assert refused.output.strip().splitlines() == [
        f"error: {refusal}: not at a terminal, so nobody can answer; pass --yes"
    ]
    shown = run_cli("campaigns", "status", "news")
    assert "news: sending" in shown.output
    assert run_cli("contacts", "show", "kim@suwon.example.org").exit_code == 0
    done = run_cli(*command, "--yes")
    assert done.exit_code == 0, done.output


def test_cancel_says_its_count_in_the_right_number(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    make_project(tmp_path)
    write(tmp_path / "contacts.csv", "email,name,language\nkim@suwon.example.org,김수진,ko\n")
    assert run_cli("init").exit_code == 0
    assert run_cli("contacts", "import", "contacts.csv").exit_code == 0
    assert run_cli("campaigns", "send", "campaigns/news.yaml", env=ENV).exit_code == 0
    cancelled = run_cli("campaigns", "cancel", "news", "--yes")
    assert "1 unsent delivery skipped" in cancelled.output, cancelled.output


def _sent_every(session: Session, campaign_id: int, contact_ids: list[int], times: list) -> None:  # type: ignore[type-arg]
    session.execute(
        insert(Delivery),
        [
            {
                "campaign_id": campaign_id,
                "contact_id": cid,
                "state": "sent" if at is not None else "queued",
                "attempts": 1 if at is not None else 0,
                "next_attempt_at": utcnow(),
                "sent_at": at,
                "created_at": utcnow(),
                "updated_at": utcnow(),
            }
            for cid, at in zip(contact_ids, times, strict=True)
        ],
    )


def test_the_time_left_is_smoothed(session: Session, db_url: str) -> None:
    """A worker commits outcomes in groups, and a relay has slow spells: counted over the
    last minute alone, the time left jumped (900 → 580 → 780 → 500 s). Weighted over the
    last minutes it stays close from one look to the next."""
    start = utcnow().replace(microsecond=0) - timedelta(minutes=10)
    n_sent, n_left = 3000, 4000
    session.execute(
        insert(Contact),
        [
            {
                "email": f"p{i}@example.org",
                "attributes": {},
                "created_at": start,
                "updated_at": start,
            }
            for i in range(n_sent + n_left)
        ],
    )
    session.execute(
        insert(Campaign).values(
            name="steady", state="sending", definition={}, expressions=[], started_at=start,
            created_at=start, updated_at=start,
        )
    )  # fmt: skip
    campaign_id = session.scalar(select(Campaign.id))
    contact_ids = list(session.scalars(select(Contact.id).order_by(Contact.id)))
    # 5 messages a second on average, committed as a group of 80 every 16 s, with a slow
    # spell (half the rate) in the middle.
    times = []
    t = 0.0
    while len(times) < n_sent:
        gap = 32.0 if 300 <= t < 420 else 16.0
        t += gap
        times += [start + timedelta(seconds=t)] * 80
    times = times[:n_sent]
    _sent_every(session, campaign_id, contact_ids, times + [None] * n_left)  # type: ignore[arg-type]
    last = max(times)
    beat = last + timedelta(seconds=10)  # a worker is alive: else there is no time left
    session.execute(
        insert(WorkerBeat).values(
            name="host:1", host="host", pid=1, threads=4, started_at=start, seen_at=beat
        )
    )
    session.commit()
    looks = [last + timedelta(seconds=s) for s in (1, 5, 9, 13, 15)]
    etas = [status(session, "steady", now=at).eta_seconds for at in looks]
    assert all(eta is not None for eta in etas)
    spread = (max(etas) - min(etas)) / min(etas)  # type: ignore[type-var, operator]
    assert spread < 0.25, etas
    # The raw count of the last minute, which the ETA used to follow, swings far more.
    raw = [status(session, "steady", now=at).per_minute for at in looks]
    assert (max(raw) - min(raw)) / min(raw) > spread, (raw, etas)


def test_consent_notices_dry_run_lists_who_would_get_one(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    write(
        tmp_path / "c.csv",
        "email,name,language,consent,consent_date\n"
        "old@suwon.example.org,김수진,ko,opt-in,2020-03-01\n"
        "new@suwon.example.org,이영희,ko,opt-in,2099-01-01\n"
        "rel@makati.example.com,Maria,en,existing-relationship,2020-03-01\n",
    )
    env = {"OUTREACH_FROM": "CityNet <news@citynet-ap.org>"}
    assert run_cli("init").exit_code == 0
    assert run_cli("contacts", "import", "c.csv").exit_code == 0
    listed = run_cli("consent", "notices", "--dry-run", "--list", env=env)
    assert listed.exit_code == 0, listed.output
    rows = [line for line in listed.output.splitlines() if "@" in line]
    assert len(rows) == 1 and "old@suwon.example.org" in rows[0] and "ko" in rows[0]
    assert "2020-03-01" in rows[0]
    assert "dry run: 1 consent notice due" in listed.output
    doc = json.loads(run_cli("consent", "notices", "--dry-run", "--json", env=env).output)
    assert [r["email"] for r in doc["recipients"]] == ["old@suwon.example.org"]
    assert doc["dry_run"] is True and doc["queued"] == 1


# Item 16: the Atom feed's summary.


def test_the_feed_summary_is_the_bodys_first_paragraphs(
    session: Session, db_url: str, tmp_path: Path
) -> None:
    client = shipped_newsletter_archived(session, db_url, tmp_path)
    for lang, first in (
        ("en", "This month: climate-resilient infrastructure in Colombo"),
        ("ko", "이번 호에서는 콜롬보의 기후 회복력 인프라"),
    ):
        feed = ElementTree.fromstring(client.get(f"/archive/feed.xml?lang={lang}").data)
        text = feed.findtext(
            "{http://www.w3.org/2005/Atom}entry/{http://www.w3.org/2005/Atom}summary"
        )
        assert text is not None and text.startswith(first), text
        assert "](" not in text and "http" not in text and "[" not in text
        assert text.endswith("…") and len(text) <= 301
        words = text[:-1].split()
        page = client.get(f"/archive/2026-12-newsletter?lang={lang}").get_data(as_text=True)
        assert words[-1].rstrip(".,") in page  # a whole word, not a piece of one


def test_summary_cuts_at_a_whole_word_and_skips_what_is_hidden() -> None:
    html = (
        "<html><head><style>p {color: red}</style></head><body>"
        '<div style="display:none">Preheader text that no reader sees in the message</div>'
        "<div>CityNet</div><div>The Network of Local Governments</div>"
        "<div>Dear colleague,</div>"
        "<p>" + "Cities learn from cities across Asia and the Pacific every year. " * 8 + "</p>"
        '<p><a href="https://citynet-ap.org/x">Read more</a></p></body></html>'
    )
    text = summary(html, limit=120)
    assert text.startswith("Cities learn from cities")
    assert "Preheader" not in text and "color" not in text and "CityNet" not in text
    assert text.endswith("…") and len(text) <= 121
    assert text[:-1].split()[-1] in {"Cities", "learn", "from", "cities", "across", "Asia",
                                     "and", "the", "Pacific", "every", "year"}  # fmt: skip
    assert summary("<p>Short.</p>") == "Short."


def test_readme_says_what_scripts_and_serve_need() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "reads the file again within seconds of a change" in readme
    assert "outreach campaigns cancel NAME --yes" in readme
    assert "outreach contacts forget EMAIL --yes" in readme
