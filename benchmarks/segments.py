"""History segments at scale: `segments show invited-not-registered --limit 0` on 100,000
contacts, 300,000 deliveries and 200,000 click/open events, next to a bare
`SELECT count(*)` of the deliveries in the same run, on SQLite and PostgreSQL; then the same
again without the history indexes of migration 0002, to show what they buy.

    python benchmarks/segments.py [--postgres URL] [--contacts 100000] [--deliveries 300000]
                                  [--events 200000] [--repeat 5]

PostgreSQL comes from --postgres or OUTREACH_TEST_POSTGRES_URL; without either, SQLite only.
The PostgreSQL run uses (and drops again) a schema of its own, outreach_bench_segments.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from pg_schema import drop_schema, fresh_schema

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

INVITATION = "2026-12-covid19-webinar"
REGISTER = "https://citynet-ap.org/events/covid19-series-7"
OTHER_URLS = (
    "https://citynet-ap.org/news/colombo-drainage",
    "https://citynet-ap.org/news/suwon-living-lab",
    "https://citynet-ap.org/events/resilience-finance",
)
SEGMENTS = f"""invited-not-registered:
  where:
    all:
      - received: {INVITATION}
      - not: {{clicked: {{campaign: {INVITATION}, url: covid19-series-7}}}}
registered:
  where:
    clicked: {{campaign: {INVITATION}, url: covid19-series-7}}
quiet-members:
  where:
    all:
      - membership: {{in: [full, associate]}}
      - not: {{engaged: {{days: 365}}}}
"""
SCHEMA = "outreach_bench_segments"


def populate(url: str, contacts: int, deliveries: int, events: int) -> None:
    """Ten campaigns (the invitation the largest), their deliveries, and clicks and opens on
    the sent ones, written in bulk."""
    from sqlalchemy import insert, select

    from outreach.db import bulk_execute, writer_sessionmaker
    from outreach.models import Campaign, Contact, Delivery, Event, Suppression, utcnow

    rng = random.Random(11)
    now = utcnow()
    with writer_sessionmaker(url)() as session:
        conn = session.connection()
        bulk_execute(
            conn,
            insert(Contact),
            [
                {
                    "email": f"officer{i}@city{i % 997}.example.org",
                    "language": "ko" if i % 2 else "en",
                    "membership": rng.choice(["full", "associate", "prospective", "none"]),
                    "attributes": {},
                    "created_at": now,
                    "updated_at": now,
                }
                for i in range(contacts)
            ],
        )
        ids = list(session.scalars(select(Contact.id)))
        bulk_execute(
            conn,
            insert(Suppression),
            [
                {"email": f"officer{i}@city{i % 997}.example.org", "reason": "unsubscribed"}
                | {"created_at": now}
                for i in rng.sample(range(contacts), contacts // 50)
            ],
        )
        names = [INVITATION] + [f"2026-{m:02d}-newsletter" for m in range(1, 10)]
        campaign_ids = {}
        for name in names:
            campaign = Campaign(name=name, state="done", definition={}, expressions=[])
            session.add(campaign)
            session.flush()
            campaign_ids[name] = campaign.id
        # The invitation goes to a fifth of the deliveries, the newsletters share the rest.
        sizes = [deliveries // 5] + [(deliveries - deliveries // 5) // 9] * 9
        sizes[-1] += deliveries - sum(sizes)
        rows: list[dict[str, Any]] = []
        for name, size in zip(names, sizes, strict=True):
            for cid in rng.sample(ids, min(size, len(ids))):
                roll = rng.random()
                state = "sent" if roll < 0.9 else "bounced" if roll < 0.93 else "failed"
                sent = now - timedelta(days=rng.uniform(0, 400))
                rows.append(
                    {
                        "campaign_id": campaign_ids[name],
                        "contact_id": cid,
                        "state": state,
                        "attempts": 1,
                        "next_attempt_at": now,
                        "created_at": sent,
                        "updated_at": sent,
                        "sent_at": None if state == "failed" else sent,
                    }
                )
        sent_rows = [r for r in rows if r["state"] == "sent"]
        event_rows = []
        for _ in range(events):
            delivery = rng.choice(sent_rows)
            click = rng.random() < 0.4
            invitation = delivery["campaign_id"] == campaign_ids[INVITATION]
            url = REGISTER if invitation and rng.random() < 0.5 else rng.choice(OTHER_URLS)
            event_rows.append(
                {
                    "kind": "click" if click else "open",
                    "campaign_id": delivery["campaign_id"],
                    "contact_id": delivery["contact_id"],
                    "created_at": delivery["sent_at"] + timedelta(hours=rng.uniform(0, 72)),
                    "data": {"url": url} if click else {},
                }
            )
        # bulk_execute converts values in place: the events are drawn from the rows first.
        bulk_execute(conn, insert(Delivery), rows)
        bulk_execute(conn, insert(Event), event_rows)
        session.commit()


def best(repeat: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def measure(url: str, folder: Path, repeat: int, label: str) -> dict[str, float]:
    """What `segments show NAME --limit 0` runs: load the file, count, list none."""
    from sqlalchemy import func, select, text

    from outreach.db import reader_sessionmaker
    from outreach.models import Delivery
    from outreach.segments import count, get_segment, load_segments, members, not_suppressed

    path = folder / "segments.yaml"
    results: dict[str, float] = {}
    with reader_sessionmaker(url)() as session:
        session.execute(text("ANALYZE"))  # statistics, as autovacuum would have them
        bare, total = best(
            repeat, lambda: session.scalar(select(func.count()).select_from(Delivery))
        )
        print(f"  {label}: bare SELECT count(*) of {total} deliveries: {bare * 1000:8.1f} ms")
        for name in ("invited-not-registered", "registered", "quiet-members"):

            def show(name: str = name) -> int:
                segment = get_segment(load_segments(path, session), name, path)
                where = segment.where & not_suppressed()
                n = count(session, where)
                members(session, where, 0)
                return n

            elapsed, n = best(repeat, show)
            results[name] = elapsed
            print(
                f"  {label}: segments show {name} --limit 0: {elapsed * 1000:8.1f} ms "
                f"({n} contacts), {elapsed / bare:5.1f}x the bare count"
            )
    return results


def run(url: str, backend: str, args: argparse.Namespace, folder: Path) -> None:
    from sqlalchemy import text

    from outreach.db import engine_for, upgrade

    upgrade(url)
    start = time.perf_counter()
    populate(url, args.contacts, args.deliveries, args.events)
    print(
        f"{backend}: {args.contacts} contacts, {args.deliveries} deliveries, {args.events} "
        f"events written in {time.perf_counter() - start:.0f} s"
    )
    with_indexes = measure(url, folder, args.repeat, f"{backend}, with 0002")
    # What 0002's downgrade does, without going below the later revisions whose columns
    # the code reads (a downgrade to 0001 took the consent columns of 0004 away too).
    with engine_for(url).begin() as conn:
        conn.execute(text("DROP INDEX ix_events_history"))
        conn.execute(text("CREATE INDEX ix_events_contact_id ON events (contact_id)"))
    without = measure(url, folder, args.repeat, f"{backend}, without 0002")
    for name, elapsed in with_indexes.items():
        print(f"  {backend}: {name}: {without[name] / elapsed:5.1f}x faster with the 0002 indexes")
    engine_for(url).dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--postgres", default=os.environ.get("OUTREACH_TEST_POSTGRES_URL"))
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--deliveries", type=int, default=300_000)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}")
    with tempfile.TemporaryDirectory() as tmp_name:
        folder = Path(tmp_name)
        (folder / "segments.yaml").write_text(SEGMENTS, encoding="utf-8")
        run(f"sqlite:///{folder}/bench.db", "SQLite", args, folder)
        if args.postgres:
            base = args.postgres.replace("postgresql://", "postgresql+psycopg://", 1)
            try:
                run(fresh_schema(base, SCHEMA), "PostgreSQL", args, folder)
            finally:
                drop_schema(base, SCHEMA)
        else:
            print("PostgreSQL: skipped (pass --postgres URL or set OUTREACH_TEST_POSTGRES_URL)")


if __name__ == "__main__":
    main()
