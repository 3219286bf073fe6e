"""How long an upgrade from 0.1.0 and `outreach db downgrade 0.1.0` take on a database of a
real size: 100,000 contacts (two tags each), a campaign sent to all of them, 10,000 events
and 5,000 suppressions, made at 0.1.0's schema (revision 0001). Timed: `outreach init`'s
upgrade to this release's head, then planning and running the downgrade, then the upgrade
again, beside a bare `SELECT count(*)` of the contacts, on SQLite and PostgreSQL.

    python benchmarks/releases.py [--postgres URL] [--contacts 100000]

PostgreSQL comes from --postgres or OUTREACH_TEST_POSTGRES_URL; without either, SQLite only.
The PostgreSQL run uses (and drops again) a schema of its own, outreach_bench_releases.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from pg_schema import drop_schema, fresh_schema

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def timed(what: Callable[[], object]) -> float:
    start = time.perf_counter()
    what()
    return time.perf_counter() - start


def fill(url: str, contacts: int) -> None:
    """0.1.0's schema, filled as 0.1.0 would have filled it."""
    from sqlalchemy import text

    from outreach.db import engine_for, upgrade

    upgrade(url, "0001")
    at = datetime(2026, 11, 1, tzinfo=UTC)
    if url.startswith("sqlite"):
        at = at.replace(tzinfo=None)  # type: ignore[assignment]
    engine = engine_for(url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO campaigns (id, name, state, definition, expressions, created_at, "
                "updated_at) VALUES (1, 'news', 'done', '{}', '[]', :t, :t)"
            ),
            {"t": at},
        )
        batch = 10_000
        for start in range(0, contacts, batch):
            rows = range(start + 1, min(start + batch, contacts) + 1)
            conn.execute(
                text(
                    "INSERT INTO contacts (id, email, name, country, language, attributes, "
                    "created_at, updated_at) VALUES (:id, :email, :name, 'KR', 'ko', '{}', :t, :t)"
                ),
                [
                    {
                        "id": i,
                        "email": f"p{i}@city{i % 500}.example.org",
                        "name": f"담당자 {i}",
                        "t": at,
                    }
                    for i in rows
                ],
            )
            conn.execute(
                text("INSERT INTO contact_tags (contact_id, tag) VALUES (:id, :tag)"),
                [{"id": i, "tag": tag} for i in rows for tag in ("newsletter", "member")],
            )
            conn.execute(
                text(
                    "INSERT INTO deliveries (id, campaign_id, contact_id, state, attempts, "
                    "next_attempt_at, created_at, updated_at, sent_at, message_id) VALUES "
                    "(:id, 1, :id, 'sent', 1, :t, :t, :t, :t, :mid)"
                ),
                [{"id": i, "t": at, "mid": f"<{i}@outreach>"} for i in rows],
            )
        conn.execute(
            text(
                "INSERT INTO events (kind, created_at, campaign_id, delivery_id, contact_id, "
                "data) VALUES ('click', :t, 1, :id, :id, '{}')"
            ),
            [{"t": at, "id": i} for i in range(1, min(10_000, contacts) + 1)],
        )
        conn.execute(
            text(
                "INSERT INTO suppressions (email, reason, created_at) "
                "VALUES (:email, 'unsubscribed', :t)"
            ),
            [
                {"email": f"p{i}@city{i % 500}.example.org", "t": at}
                for i in range(1, min(5_000, contacts) + 1)
            ],
        )


def measure(label: str, url: str, contacts: int) -> None:
    from sqlalchemy import text

    from outreach.db import engine_for, upgrade
    from outreach.releases import downgrade, plan_downgrade

    fill(url, contacts)
    engine = engine_for(url)

    def count() -> None:
        with engine.connect() as conn:
            conn.execute(text("SELECT count(*) FROM contacts")).scalar_one()

    baseline = timed(count)
    up = timed(lambda: upgrade(url))
    plans: list[object] = []
    plan_s = timed(lambda: plans.append(plan_downgrade(url, "0.1.0")))
    down = timed(lambda: downgrade(plans[0]))  # type: ignore[arg-type]
    again = timed(lambda: upgrade(url))
    print(
        f"{label}: {contacts:,} contacts — upgrade 0.1.0 → head {up:.2f} s; "
        f"db downgrade 0.1.0: plan {plan_s:.2f} s + downgrade {down:.2f} s; "
        f"upgrade again {again:.2f} s (a bare count(*) of the contacts: {baseline * 1000:.1f} ms)",
        flush=True,
    )
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", default=os.environ.get("OUTREACH_TEST_POSTGRES_URL"))
    parser.add_argument("--contacts", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        measure("SQLite", f"sqlite:///{Path(tmp) / 'bench.db'}", args.contacts)
    if args.postgres:
        base = args.postgres.replace("postgresql://", "postgresql+psycopg://", 1)
        schema = "outreach_bench_releases"
        try:
            measure("PostgreSQL", fresh_schema(base, schema), args.contacts)
        finally:
            drop_schema(base, schema)


if __name__ == "__main__":
    main()
