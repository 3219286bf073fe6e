"""The subscribe form under load: 1,000 POSTs /subscribe from 16 concurrent clients against a
real `outreach serve` (gunicorn) on loopback, then a check that every valid request queued
exactly one confirmation and every invalid one none.

    python benchmarks/subscribe_load.py [--n 1000] [--clients 16] [--postgres URL]

The baseline, measured in the same run against the same server, is GET /healthz (one
`SELECT 1`): the ratio says what the form's work (token, limits, checks, a request row, a
queued system delivery and a nudge to the queue) costs beside a request that does nothing.
One request in 20 is invalid (no consent box) and must queue nothing. Bounded in count and
time: it stops after N requests or --seconds, whichever comes first.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SUBSCRIBE = """from: "CityNet Secretariat <news@citynet-ap.org>"
tags: [newsletter]
consent:
  version: "2026-12"
  text:
    ko: "시티넷 뉴스레터와 행사 안내를 이메일로 받는 데 동의합니다."
    en: "I agree to receive CityNet's newsletter and event invitations by email."
limits: {per_client_per_hour: 1000000, confirmations_per_hour: 1000000}
"""


def timed(
    fn: Callable[[int], int], jobs: int, clients: int, deadline: float
) -> tuple[float, list[tuple[int, float]]]:
    def one(i: int) -> tuple[int, float]:
        if time.monotonic() > deadline:
            return -1, 0.0
        start = time.perf_counter()
        status = fn(i)
        return status, time.perf_counter() - start

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one, range(jobs)))
    return time.perf_counter() - start, results


def request(url: str, data: bytes | None = None) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/x-www-form-urlencoded"} if data else {}
    req = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return 0, b""


def summary(label: str, elapsed: float, results: list[tuple[int, float]], clients: int) -> float:
    ok = sorted(t for s, t in results if s in (200, 400))
    rate = len(results) / elapsed
    failures = Counter(s for s, _ in results if s not in (200, 400))

    def pct(p: float) -> float:
        return ok[min(len(ok) - 1, int(p * len(ok)))] * 1000

    print(
        f"  {label}: {len(results)} requests from {clients} clients in {elapsed:.1f} s = "
        f"{rate:.0f} requests/s" + (f"; failures by status: {dict(failures)}" if failures else "")
    )
    if ok:
        print(
            f"    latency ms: p50 {pct(0.5):.1f}, p90 {pct(0.9):.1f}, p99 {pct(0.99):.1f}, "
            f"max {ok[-1] * 1000:.1f}, mean {statistics.mean(ok) * 1000:.1f}"
        )
    return rate


def run(
    label: str,
    database_url: str,
    queue_url: str,
    n: int,
    clients: int,
    seconds: float,
    workers: int,
) -> None:
    from sqlalchemy import func, select

    from outreach.config import Settings
    from outreach.db import reader_sessionmaker, upgrade
    from outreach.models import Delivery, SystemRecipient
    from tests.web_helpers import Server

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "campaigns").mkdir()
        (tmp / "campaigns" / "subscribe.yaml").write_text(SUBSCRIBE, encoding="utf-8")
        upgrade(database_url)
        settings = Settings(
            database_url=database_url,
            queue_url=queue_url,
            secret_key="VKUmmvluWOE04yVfhmEswAYgDk8yPvdtFnWwyLWl",
            postal_address="Seoul",
        )
        with Server(settings, tmp / "serve.log", workers=workers) as server:
            deadline = time.monotonic() + seconds
            page = request(server.url + "/subscribe?lang=ko")[1].decode()
            match = re.search(r'name="token" value="([^"]+)"', page)
            assert match, "no form token on the page"
            token = match.group(1)
            # Warm every gunicorn worker (and compile the confirmation message once).
            for _ in range(workers * 2):
                request(server.url + "/healthz")
            elapsed, base = timed(
                lambda i: request(server.url + "/healthz")[0], n, clients, deadline
            )
            baseline = summary("baseline GET /healthz", elapsed, base, clients)
            valid: set[str] = set()

            def post(i: int) -> int:
                address = f"person{i}@city{i % 97}.example.org"
                fields = {
                    "token": token,
                    "lang": "ko",
                    "email": address,
                    "name": f"담당자 {i}",
                    "organisation": f"City {i % 97}",
                    "language": "ko" if i % 2 else "en",
                    "consent": "" if i % 20 == 0 else "yes",
                    "website": "",
                }
                status = request(
                    server.url + "/subscribe", urllib.parse.urlencode(fields).encode()
                )[0]
                if status == 200:
                    valid.add(address)
                return status

            elapsed, results = timed(post, n, clients, deadline)
            rate = summary("POST /subscribe", elapsed, results, clients)
        codes = Counter(s for s, _ in results)
        with reader_sessionmaker(database_url)() as session:
            per_address = Counter(
                dict(
                    session.execute(
                        select(SystemRecipient.email, func.count())
                        .join(Delivery, Delivery.id == SystemRecipient.delivery_id)
                        .group_by(SystemRecipient.email)
                    ).all()
                )
            )
        exactly_one = all(per_address[a] == 1 for a in valid)
        strays = sum(v for a, v in per_address.items() if a not in valid)
        print(
            f"{label}: {rate:.0f} subscribe POSTs/s = {rate / baseline:.2f}x the /healthz "
            f"baseline ({baseline:.0f}/s); {codes.get(200, 0)} valid answered 200, "
            f"{codes.get(400, 0)} invalid answered 400"
        )
        print(
            f"  confirmations queued: {sum(per_address.values())} for {len(valid)} valid "
            f"requests; every valid one exactly once: {'yes' if exactly_one else 'NO'}; "
            f"queued for invalid ones: {strays}"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument(
        "--postgres",
        default=os.environ.get("OUTREACH_TEST_POSTGRES_URL"),
        help="also run on this PostgreSQL database (its schema outreach_subscribe_load is replaced)",
    )
    parser.add_argument(
        "--redis",
        default=os.environ.get("OUTREACH_TEST_REDIS_URL"),
        help="the queue for the PostgreSQL run (else a SQLite queue)",
    )
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}")
    with tempfile.TemporaryDirectory() as tmp:
        run(
            "SQLite",
            f"sqlite:///{tmp}/load.db",
            f"sqlite:///{tmp}/queue.db",
            args.n,
            args.clients,
            args.seconds,
            args.workers,
        )
        if args.postgres:
            from sqlalchemy import create_engine, text

            base = args.postgres.replace("postgresql://", "postgresql+psycopg://", 1)
            engine = create_engine(base)
            schema = "outreach_subscribe_load"
            with engine.begin() as conn:
                conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
                conn.execute(text(f"CREATE SCHEMA {schema}"))
            sep = "&" if "?" in base else "?"
            try:
                run(
                    "PostgreSQL" + (" + Redis" if args.redis else ""),
                    f"{base}{sep}options=-csearch_path%3D{schema}",
                    args.redis or f"sqlite:///{tmp}/queue-pg.db",
                    args.n,
                    args.clients,
                    args.seconds,
                    args.workers,
                )
            finally:
                with engine.begin() as conn:
                    conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))


if __name__ == "__main__":
    main()
