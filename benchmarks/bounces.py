"""Bounce ingestion and report speed.

1. Ingest 10,000 generated RFC 3464 DSNs from a Maildir: messages/s.
2. `campaigns report` on a campaign of 100,000 deliveries, next to a bare
   `SELECT count(*)` over the same deliveries in the same run.
3. A hand-written multipart/report naming 20,000 addresses (none of them ours: it must
   change nothing and stay cheap), next to one ordinary DSN in the same run.

    python benchmarks/bounces.py [--n 10000] [--deliveries 100000]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DSN = """Return-Path: <>
From: MAILER-DAEMON@mx{n}.example.org (Mail Delivery System)
To: news@citynet-ap.org
Subject: Undelivered Mail Returned to Sender
Date: Mon, 30 Nov 2026 09:12:01 +0900
Message-Id: <bounce{n}@mx.example.org>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="b{n}"

--b{n}
Content-Type: text/plain; charset=us-ascii

I'm sorry to have to inform you that your message could not be delivered.

--b{n}
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.org

Final-Recipient: rfc822; {address}
Action: failed
Status: {status}
Diagnostic-Code: smtp; {code} {status} mailbox unavailable

--b{n}
Content-Type: text/rfc822-headers

To: {address}
Message-ID: {message_id}

--b{n}--
"""


def populate(url: str, n_contacts: int) -> list[tuple[int, str, str]]:
    """Contacts, one sent campaign, and its deliveries, written in bulk."""
    from sqlalchemy import insert, select

    from outreach.db import bulk_execute, upgrade, writer_sessionmaker
    from outreach.models import Campaign, Contact, Delivery, utcnow

    upgrade(url)
    now = utcnow()
    with writer_sessionmaker(url)() as session:
        conn = session.connection()
        bulk_execute(
            conn,
            insert(Contact.__table__),
            [
                {
                    "email": f"officer{i}@city{i % 400}.example.org",
                    "name": f"담당자 {i}",
                    "language": "ko" if i % 2 else "en",
                    "attributes": {},
                    "created_at": now,
                    "updated_at": now,
                }
                for i in range(n_contacts)
            ],
        )
        campaign = Campaign(
            name="bench", state="done", definition={"audience": {"include": []}}, expressions=[]
        )
        session.add(campaign)
        session.flush()
        ids = list(session.scalars(select(Contact.id).order_by(Contact.id)))
        rng = random.Random(3)
        bulk_execute(
            conn,
            insert(Delivery.__table__),
            [
                {
                    "campaign_id": campaign.id,
                    "contact_id": cid,
                    "state": "sent",
                    "attempts": 1,
                    "language": "ko" if cid % 2 else "en",
                    "message_id": f"<{cid}.x@citynet-ap.org>",
                    "next_attempt_at": now,
                    "created_at": now,
                    "updated_at": now,
                    "sent_at": now - timedelta(seconds=rng.randrange(7200)),
                }
                for cid in ids
            ],
        )
        session.commit()
        rows = session.execute(
            select(Delivery.id, Contact.email, Delivery.message_id).join(
                Contact, Contact.id == Delivery.contact_id
            )
        ).all()
    return [(r[0], r[1], r[2]) for r in rows]


def hostile_report(url: str, rows: list[tuple[int, str, str]], n: int) -> tuple[float, float]:
    """Milliseconds to ingest a forged report of n addresses, and one ordinary DSN."""
    from sqlalchemy import func, select

    from outreach.bounces import ingest
    from outreach.db import _sessionmaker
    from outreach.models import Suppression
    from outreach.tokens import Tokens

    blocks = "".join(
        f"\nFinal-Recipient: rfc822; stranger{i}@example.net\nAction: failed\nStatus: 5.1.1\n"
        for i in range(n)
    )
    forged = DSN.split("--b{n}\nContent-Type: message/delivery-status")[0].format(n=0) + (
        f"--b0\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; x\n{blocks}\n--b0--\n"
    )
    _, address, mid = rows[-1]
    ordinary = DSN.format(n=1, address=address, message_id=mid, status="5.1.1", code=550)
    timings = []
    with _sessionmaker(url)() as session:
        before = session.scalar(select(func.count()).select_from(Suppression))
        for raw in (forged, ordinary):
            start = time.perf_counter()
            ingest(session, Tokens("bench"), None, 3, iter([("x", raw.encode(), None)]))
            timings.append((time.perf_counter() - start) * 1000)
        after = session.scalar(select(func.count()).select_from(Suppression))
    assert after == (before or 0) + 1, "the forged report must suppress nobody"
    return timings[0], timings[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--deliveries", type=int, default=100_000)
    parser.add_argument("--strangers", type=int, default=20_000)
    args = parser.parse_args()
    from sqlalchemy import func, select

    from outreach.bounces import ingest, messages_from
    from outreach.db import reader_sessionmaker, writer_sessionmaker
    from outreach.lifecycle import get_campaign
    from outreach.models import Delivery
    from outreach.reports import build
    from outreach.tokens import Tokens

    print(f"cores: {os.cpu_count()}")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        url = f"sqlite:///{tmp}/bench.db"
        rows = populate(url, max(args.n, args.deliveries))
        maildir = tmp / "Maildir"
        for sub in ("new", "cur", "tmp"):
            (maildir / sub).mkdir(parents=True)
        for i, (_, address, mid) in enumerate(rows[: args.n]):
            hard = i % 4 != 0
            (maildir / "new" / f"{i}.bench").write_text(
                DSN.format(
                    n=i,
                    address=address,
                    message_id=mid,
                    status="5.1.1" if hard else "4.2.2",
                    code=550 if hard else 452,
                )
            )
        with writer_sessionmaker(url)() as session:
            start = time.perf_counter()
            report = ingest(session, Tokens("bench"), None, 3, messages_from(None, maildir=maildir))
            elapsed = time.perf_counter() - start
        print(
            f"bounces: {report.messages} DSNs from a Maildir in {elapsed:.1f} s = "
            f"{report.messages / elapsed:.0f} messages/s ({report.hard} hard, {report.soft} "
            f"soft, {report.suppressed} suppressed, {report.not_ours} not ours)"
        )
        hostile_ms, ordinary_ms = hostile_report(url, rows, args.strangers)
        print(
            f"hand-written report naming {args.strangers} addresses: {hostile_ms:.0f} ms "
            f"(nothing suppressed); one ordinary DSN: {ordinary_ms:.1f} ms; "
            f"ratio {hostile_ms / ordinary_ms:.0f}x"
        )
        with reader_sessionmaker(url)() as session:
            start = time.perf_counter()
            total = session.scalar(select(func.count()).select_from(Delivery))
            bare = time.perf_counter() - start
            start = time.perf_counter()
            result = build(session, get_campaign(session, "bench"))
            full = time.perf_counter() - start
        print(
            f"report over {total} deliveries: {full * 1000:.0f} ms; bare SELECT count(*): "
            f"{bare * 1000:.1f} ms; ratio {full / bare:.0f}x "
            f"(states {result.counts['sent']} sent / {result.counts['bounced']} bounced, "
            f"{len(result.timeline)} timeline points)"
        )


if __name__ == "__main__":
    main()
