"""One-click unsubscribe under load: 5,000 POSTs from 32 concurrent clients against a real
`outreach serve` on loopback, then a check that every one of the 5,000 is suppressed; then one
more POST while 200 clients hold half-sent requests open. Each set-up runs twice: with the
gevent workers of outreach/gunicorn_conf.py, and with gunicorn's sync workers as the baseline
(what `outreach serve` ran before), and prints the ratio.

    python benchmarks/unsubscribe_load.py [--n 5000] [--clients 32] [--postgres URL]

Bounded in count and time: it stops after N requests or --seconds, whichever comes first; the
POST among slow clients gives up after 30 s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# A key for this benchmark's throw-away database only.
SECRET = "jQpjQE5KnRx0xdqofNi0vo-4alQnQnTKxYFxb1WV"
sys.path.insert(0, str(ROOT))


def setup(tmp: Path, database_url: str, n: int) -> list[int]:
    from sqlalchemy import select

    from outreach.config import Settings
    from outreach.contacts import import_csv
    from outreach.db import upgrade, writer_sessionmaker
    from outreach.lifecycle import send_campaign
    from outreach.models import Delivery

    shutil.copytree(ROOT / "templates", tmp / "templates")
    (tmp / "campaigns").mkdir()
    (tmp / "campaigns" / "segments.yaml").write_text(
        "everyone:\n  where:\n    not: {email: nobody@example.org}\n", encoding="utf-8"
    )
    newsletter = (ROOT / "campaigns" / "2026-12-newsletter.yaml").read_text(encoding="utf-8")
    newsletter = newsletter.replace(
        "include: [newsletter-readers, korean-local-governments]", "include: [everyone]"
    ).replace("name: 2026-12-newsletter", "name: load")
    (tmp / "campaigns" / "load.yaml").write_text(newsletter, encoding="utf-8")
    with (tmp / "contacts.csv").open("w", encoding="utf-8") as out:
        out.write("email,name,language\n")
        for i in range(n):
            out.write(f"reader{i}@city{i % 300}.example.org,담당자 {i},{'ko' if i % 2 else 'en'}\n")
    settings = Settings(database_url=database_url, postal_address="Seoul", secret_key=SECRET)
    upgrade(database_url)
    with writer_sessionmaker(database_url)() as session:
        import_csv(session, tmp / "contacts.csv")
        send_campaign(tmp / "campaigns" / "load.yaml", settings, session, None)
        return list(session.scalars(select(Delivery.id).order_by(Delivery.id)))


def run(
    label: str,
    database_url: str,
    n: int,
    clients: int,
    seconds: float,
    workers: int,
    worker_class: str | None,
) -> float:
    """Requests per second; worker_class overrides outreach/gunicorn_conf.py's."""
    from sqlalchemy import func, select

    from outreach.config import Settings
    from outreach.db import reader_sessionmaker
    from outreach.models import Event, Suppression
    from outreach.tokens import Tokens
    from tests.test_slow_clients import one_click, slow_connections
    from tests.web_helpers import Server

    if worker_class:
        os.environ["GUNICORN_CMD_ARGS"] = f"--worker-class {worker_class}"
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        ids = setup(tmp, database_url, n)
        settings = Settings(database_url=database_url, secret_key=SECRET, postal_address="Seoul")
        tokens = Tokens(SECRET)
        with Server(settings, tmp / "serve.log", workers=workers) as server:
            urls = [f"{server.url}/u/{tokens.sign('unsubscribe', i)}" for i in ids]
            deadline = time.monotonic() + seconds

            def post(url: str) -> tuple[int, float]:
                if time.monotonic() > deadline:
                    return -1, 0.0
                start = time.perf_counter()
                req = urllib.request.Request(
                    url,
                    data=b"List-Unsubscribe=One-Click",
                    method="POST",
                    headers={"Content-Type": "application/x-www-form-urlencoded"},
                )
                try:
                    with urllib.request.urlopen(req, timeout=30) as r:
                        r.read()
                        status = r.status
                except urllib.error.HTTPError as e:
                    status = e.code
                except OSError:
                    status = 0
                return status, time.perf_counter() - start

            start = time.perf_counter()
            with ThreadPoolExecutor(clients) as pool:
                results = list(pool.map(post, urls))
            elapsed = time.perf_counter() - start
            with slow_connections("127.0.0.1", server.port):
                slow_start = time.perf_counter()
                slow_status = one_click(urls[0], timeout=30)
                slow_seconds = time.perf_counter() - slow_start
        os.environ.pop("GUNICORN_CMD_ARGS", None)
        latencies = sorted(t for s, t in results if s == 200)
        failed = sum(1 for s, _ in results if s != 200)
        if failed:
            from collections import Counter

            print("  failures by status:", dict(Counter(s for s, _ in results if s != 200)))
            log = (tmp / "serve.log").read_text()
            print(
                "  server errors:",
                "\n".join(line for line in log.splitlines() if "Error" in line or "error" in line)[
                    -3000:
                ],
            )
        with reader_sessionmaker(database_url)() as session:
            suppressed = session.scalar(select(func.count()).select_from(Suppression)) or 0
            events = (
                session.scalar(
                    select(func.count()).select_from(Event).where(Event.kind == "unsubscribe")
                )
                or 0
            )

        def pct(p: float) -> float:
            return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000

        kind = worker_class or "gevent (outreach/gunicorn_conf.py)"
        print(
            f"{label}, {kind}: {len(results)} POSTs from {clients} clients to {workers} gunicorn "
            f"workers in {elapsed:.1f} s = {len(results) / elapsed:.0f} requests/s; "
            f"failed: {failed}"
        )
        if latencies:
            print(
                f"  latency ms: p50 {pct(0.5):.1f}, p90 {pct(0.9):.1f}, p99 {pct(0.99):.1f}, "
                f"max {latencies[-1] * 1000:.1f}, mean {statistics.mean(latencies) * 1000:.1f}"
            )
        print(
            f"  suppressed afterwards: {suppressed} of {n}; unsubscribe events: {events}"
            f" -> {'none lost' if suppressed == n == events else 'LOST OR DUPLICATED'}"
        )
        answer = f"{slow_status} after {slow_seconds:.2f} s" if slow_status else "no answer in 30 s"
        print(f"  one-click POST while 200 clients hold half a request: {answer}")
        return len(results) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument(
        "--postgres",
        default=os.environ.get("OUTREACH_TEST_POSTGRES_URL"),
        help="also run on this PostgreSQL database (its tables are replaced)",
    )
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}")
    rates = {}
    for worker_class in ("sync", None):
        with tempfile.TemporaryDirectory() as tmp:
            rates[worker_class] = run(
                "SQLite",
                f"sqlite:///{tmp}/load.db",
                args.n,
                args.clients,
                args.seconds,
                args.workers,
                worker_class,
            )
    print(f"SQLite: gevent / sync = {rates[None] / rates['sync']:.2f}")
    if args.postgres:
        from sqlalchemy import create_engine, text

        base = args.postgres.replace("postgresql://", "postgresql+psycopg://", 1)
        engine = create_engine(base)
        sep = "&" if "?" in base else "?"
        for worker_class in ("sync", None):
            with engine.begin() as conn:
                conn.execute(text("DROP SCHEMA IF EXISTS outreach_load CASCADE"))
                conn.execute(text("CREATE SCHEMA outreach_load"))
            try:
                rates[worker_class] = run(
                    "PostgreSQL",
                    f"{base}{sep}options=-csearch_path%3Doutreach_load",
                    args.n,
                    args.clients,
                    args.seconds,
                    args.workers,
                    worker_class,
                )
            finally:
                with engine.begin() as conn:
                    conn.execute(text("DROP SCHEMA IF EXISTS outreach_load CASCADE"))
        print(f"PostgreSQL: gevent / sync = {rates[None] / rates['sync']:.2f}")


if __name__ == "__main__":
    main()
