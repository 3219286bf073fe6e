"""Contact import speed: `outreach contacts import` against a bare executemany insert.

Both write the same 100,000 generated rows into a fresh, migrated SQLite database in the same
run; the ratio is what matters (target: import >= 0.5x the bare insert). Then times counting a
segment over those contacts, which must be a single query.

    python benchmarks/import_contacts.py [--n 100000]
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import tempfile
import time
from pathlib import Path

from sqlalchemy import event

from outreach.contacts import import_csv
from outreach.db import engine_for, upgrade, writer_sessionmaker
from outreach.segments import audience, count, load_segments

COUNTRIES = ["KR", "JP", "PH", "VN", "ID", "LK", "NP", "BD", "IN", "MY"]
MEMBERSHIPS = ["full", "associate", "prospective", "partner", "none"]
TAGS = ["newsletter", "covid19-webinar", "climate-webinar", "smart-city", "youth"]


def generate(path: Path, n: int) -> list[tuple[str, ...]]:
    rng = random.Random(7)
    rows = []
    with path.open("w", encoding="utf-8") as out:
        out.write(
            "email,name,organisation,organisation_type,city,country,language,membership,"
            "tags,consent,region\n"
        )
        for i in range(n):
            country = rng.choice(COUNTRIES)
            row = (
                f"officer{i}@city{i % 5000}.example.org",
                f"담당자 {i}",
                f"City {i % 5000}",
                rng.choice(["local_government", "ngo", "partner"]),
                f"City {i % 5000}",
                country,
                "ko" if country == "KR" else "en",
                rng.choice(MEMBERSHIPS),
                ";".join(rng.sample(TAGS, 2)),
                "existing-relationship",
                rng.choice(["east-asia", "south-asia", "south-east-asia"]),
            )
            rows.append(row)
            out.write(",".join(row) + "\n")
    return rows


def bare_insert(db: Path, rows: list[tuple[str, ...]]) -> float:
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    start = time.perf_counter()
    conn.executemany(
        "INSERT INTO contacts (email, name, organisation, organisation_type, city, country, "
        "language, membership, consent, attributes, created_at, updated_at) "
        "VALUES (?,?,?,?,?,?,?,?,?,?,datetime('now'),datetime('now'))",
        [
            (r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[9], json.dumps({"region": r[10]}))
            for r in rows
        ],
    )
    conn.executemany(
        "INSERT INTO contact_tags (contact_id, tag) VALUES (?, ?)",
        [(i + 1, t) for i, r in enumerate(rows) for t in r[8].split(";")],
    )
    conn.commit()
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        csv_path = tmpdir / "contacts.csv"
        rows = generate(csv_path, args.n)
        bare_db, our_db = tmpdir / "bare.db", tmpdir / "ours.db"
        for db in (bare_db, our_db):
            upgrade(f"sqlite:///{db}")
        bare = bare_insert(bare_db, rows)
        url = f"sqlite:///{our_db}"
        with writer_sessionmaker(url)() as session:
            start = time.perf_counter()
            result = import_csv(session, csv_path)
            ours = time.perf_counter() - start
        assert result.created == args.n, result
        print(f"contacts: {args.n}")
        print(f"bare executemany insert: {args.n / bare:10.0f} rows/s  ({bare:.2f} s)")
        print(
            f"outreach contacts import: {args.n / ours:10.0f} rows/s  ({ours:.2f} s, "
            "validating, normalising, upserting, tagging)"
        )
        print(f"ratio import/bare: {bare / ours:.2f}  (target >= 0.50)")

        segments = load_segments(Path(__file__).resolve().parent.parent / "campaigns/segments.yaml")
        engine = engine_for(url)
        for name in ("korean-local-governments", "webinar-alumni"):
            statements: list[str] = []
            hook = lambda *a, s=statements: s.append(a[2])  # noqa: E731
            event.listen(engine, "before_cursor_execute", hook)
            with writer_sessionmaker(url)() as session:
                start = time.perf_counter()
                n = count(session, audience([segments[name]]))
                elapsed = time.perf_counter() - start
            event.remove(engine, "before_cursor_execute", hook)
            selects = sum(1 for s in statements if s.lstrip().upper().startswith("SELECT"))
            print(
                f"segment {name}: {n} contacts counted in {elapsed * 1000:.1f} ms, {selects} SELECT"
            )


if __name__ == "__main__":
    main()
