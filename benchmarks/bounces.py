"""Bounce ingestion and report speed.

1. Ingest 10,000 generated RFC 3464 DSNs from a Maildir: messages/s.
2. `campaigns report` on a campaign of 100,000 deliveries, next to a bare
   `SELECT count(*)` over the same deliveries in the same run.
3. A hand-written multipart/report naming 20,000 addresses (none of them ours: it must
   change nothing and stay cheap), next to one ordinary DSN in the same run.
4. A crafted message of 7.8 MB made of ~780,000 tiny delivery-status blocks: time and peak
   memory of reading it as the parser would without the check of its shape (what
   `bounces ingest` did before) and as `bounces ingest` does now, each in a process of its
   own; then ten such uploads at once, from one address with ten recipients each, to a
   running `outreach bounces receive`, while a real bounce is sent from another address:
   how long the real one waits for its reply, and the receiver's memory after.

    python benchmarks/bounces.py [--n 10000] [--deliveries 100000] [--blocks 780000]
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


def crafted(blocks: int) -> bytes:
    head = (
        b"From: MAILER-DAEMON@mx.example.net\r\nTo: postmaster@bounce.example.org\r\n"
        b"Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nfailed\r\n"
        b"--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n\r\n"
    )
    return head + b"Xyz: w\r\n\r\n" * blocks + b"--b--\r\n"


def crafted_child(how: str, path: str) -> None:
    """In a process of its own: read the crafted message; print seconds and peak MB."""
    import email
    import email.policy
    import resource

    raw = Path(path).read_bytes()
    start = time.perf_counter()
    if how == "unguarded":
        from outreach.bounce_parser import parse_message

        msg = email.message_from_bytes(raw, policy=email.policy.compat32)
        parse_message(msg, raw, None)
    else:
        from outreach.bounces import Ingester
        from outreach.db import upgrade, writer_sessionmaker
        from outreach.tokens import Tokens

        url = f"sqlite:///{path}.db"
        upgrade(url)
        start = time.perf_counter()  # the reading, not the making of the database
        with writer_sessionmaker(url)() as session:
            ingester = Ingester(session, Tokens("bench"), None, 3)
            ingester.ingest(raw, path)
            assert ingester.report.refused, ingester.report
    elapsed = time.perf_counter() - start
    print(f"{elapsed:.3f} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}")


def rss(pid: int) -> tuple[float, float]:
    """A process's resident memory now and at its peak, in MB (Linux)."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return (int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024)


def receiver_under_uploads(tmp: Path, raw: bytes) -> None:
    import smtplib
    import subprocess
    import threading

    from outreach.db import upgrade

    domain = "bounce.example.org"
    url = f"sqlite:///{tmp}/receive.db"
    upgrade(url)
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **os.environ,
        "OUTREACH_DATABASE_URL": url,
        "OUTREACH_BOUNCE_DOMAIN": domain,
        "OUTREACH_SECRET_KEY": "jQpjQE5KnRx0xdqofNi0vo-4alQnQnTKxYFxb1WV",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "outreach", "bounces", "receive", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=tmp,
    )
    try:
        assert process.stdout is not None
        process.stdout.readline()  # "receiving mail for …"
        before = rss(process.pid)
        replies: list[object] = []

        def upload() -> None:
            # Without declaring its SIZE: the whole message is sent whatever it is.
            try:
                with smtplib.SMTP("127.0.0.1", port, timeout=300) as smtp:
                    smtp.ehlo("mx.example.net")
                    smtp.mail("")
                    for _ in range(10):
                        smtp.rcpt(f"postmaster@{domain}")
                    replies.append(smtp.data(raw)[0])
            except smtplib.SMTPException as exc:
                replies.append(getattr(exc, "smtp_code", type(exc).__name__))

        threads = [threading.Thread(target=upload) for _ in range(10)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        real = DSN.format(
            n=1, address="someone@example.org", message_id="<x@y>", status="5.1.1", code=550
        )
        with smtplib.SMTP("127.0.0.1", port, timeout=300, source_address=("127.0.0.2", 0)) as smtp:
            asked = time.perf_counter()
            try:
                smtp.sendmail("", [f"postmaster@{domain}"], real.encode())
                answer: object = 250
            except smtplib.SMTPException as exc:
                answer = getattr(exc, "smtp_code", type(exc).__name__)
            real_wait = time.perf_counter() - asked
        for thread in threads:
            thread.join()
        uploads = time.perf_counter() - started
        time.sleep(1)
        after = rss(process.pid)
        print(
            f"  receiver, 10 uploads of {len(raw) / 1e6:.1f} MB at once from one address (10 "
            f"recipients each, no SIZE declared): answers "
            f"{sorted(map(str, replies))} in {uploads:.1f} s; a real bounce sent meanwhile "
            f"from another address: {answer} after {real_wait:.2f} s; receiver memory "
            f"{before[0]:.0f} MB before, {after[0]:.0f} MB after, peak {after[1]:.0f} MB"
        )
    finally:
        process.terminate()
        process.wait(30)


def crafted_message(blocks: int) -> None:
    import subprocess

    raw = crafted(blocks)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        path = tmp / "crafted.eml"
        path.write_bytes(raw)
        figures = {}
        for how in ("unguarded", "guarded"):
            out = subprocess.run(
                [sys.executable, __file__, "--crafted-child", how, str(path)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            figures[how] = (float(out[0]), float(out[1]))
        (t0, m0), (t1, m1) = figures["unguarded"], figures["guarded"]
        print(
            f"crafted message, {len(raw) / 1e6:.1f} MB of {blocks:,} delivery-status blocks: "
            f"parsed unguarded (as before) {t0:.1f} s, peak {m0:.0f} MB; `bounces ingest` now "
            f"{t1 * 1000:.0f} ms, peak {m1:.0f} MB (refused unparsed); ratio {t0 / t1:.0f}x"
        )
        receiver_under_uploads(tmp, raw)
        # Under the receiver's 2 MB: received whole, then refused by its shape.
        receiver_under_uploads(tmp, crafted(min(blocks, 190_000)))


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--crafted-child":
        crafted_child(sys.argv[2], sys.argv[3])
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--deliveries", type=int, default=100_000)
    parser.add_argument("--strangers", type=int, default=20_000)
    parser.add_argument("--blocks", type=int, default=780_000)
    parser.add_argument("--only-crafted", action="store_true", help="only part 4")
    args = parser.parse_args()
    if args.only_crafted:
        crafted_message(args.blocks)
        return
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
    crafted_message(args.blocks)


if __name__ == "__main__":
    main()
