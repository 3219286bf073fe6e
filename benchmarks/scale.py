"""How sending scales with worker processes: 1, 2 and 4 on PostgreSQL + Redis, next to the
embedded SQLite default, for one campaign into a fast local SMTP sink.

    python benchmarks/scale.py [--n 50000] [--postgres URL] [--redis URL]

Each worker process runs one sending thread here, so processes = SMTP connections. On a
2-core machine the curve flattens early: Python spends about a core per ~1,500 messages/s,
and the sink, PostgreSQL and Redis share the same cores.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from send import Sink, prepare_files  # noqa: E402


def run(n: int, processes: int, database_url: str, queue_url: str, smtp_url: str) -> float:
    from outreach.config import Settings
    from outreach.contacts import import_csv
    from outreach.db import engine_for, reader_sessionmaker, upgrade, writer_sessionmaker
    from outreach.lifecycle import send_campaign, status
    from outreach.tasks import enqueuer

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        prepare_files(tmp)
        with (tmp / "contacts.csv").open("w", encoding="utf-8") as out:
            out.write("email,name,language\n")
            for i in range(n):
                out.write(
                    f"officer{i}@city{i % 997}.example.org,담당자 {i},{'ko' if i % 2 else 'en'}\n"
                )
        env = {k: v for k, v in os.environ.items() if not k.startswith("OUTREACH_")}
        env.update(
            {
                "OUTREACH_DATABASE_URL": database_url,
                "OUTREACH_QUEUE_URL": queue_url,
                "OUTREACH_SMTP_URL": smtp_url,
                "OUTREACH_SECRET_KEY": "bench",
                "OUTREACH_RATE": "0",
                "OUTREACH_POSTAL_ADDRESS": "Seoul",
            }
        )
        settings = Settings.load(env=env, cwd=tmp)
        upgrade(settings.database_url)
        with writer_sessionmaker(settings.database_url)() as session:
            import_csv(session, tmp / "contacts.csv")
            send_campaign(tmp / "campaigns" / "bench.yaml", settings, session, enqueuer(settings))
        engine_for(settings.database_url).dispose()
        start = time.perf_counter()
        workers = [
            subprocess.Popen(
                [sys.executable, "-m", "outreach", "worker", "-w", "1"],
                cwd=tmp,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for _ in range(processes)
        ]
        try:
            while True:
                time.sleep(0.25)
                with reader_sessionmaker(settings.database_url)() as session:
                    if status(session, "bench").state == "done":
                        break
        finally:
            for w in workers:
                w.send_signal(signal.SIGTERM)
            for w in workers:
                w.wait()
        return n / (time.perf_counter() - start)


def fresh_schema(base: str, name: str) -> str:
    from sqlalchemy import create_engine, text

    engine = create_engine(base)
    with engine.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {name} CASCADE"))
        conn.execute(text(f"CREATE SCHEMA {name}"))
    engine.dispose()
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{name}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "OUTREACH_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
        ),
    )
    parser.add_argument(
        "--redis", default=os.environ.get("OUTREACH_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    )
    args = parser.parse_args()
    import redis

    base = args.postgres.replace("postgresql://", "postgresql+psycopg://", 1)
    sink = Sink()
    smtp_url = f"smtp://127.0.0.1:{sink.port}?tls=none"
    print(f"cores: {os.cpu_count()}; {args.n} recipients per run; sink: {sink.kind}")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            rate = run(args.n, 1, f"sqlite:///{tmp}/o.db", f"sqlite:///{tmp}/q.db", smtp_url)
        print(f"SQLite + SQLite queue, 1 process:   {rate:7.0f} msg/s (the embedded default)")
        baseline = None
        for processes in (1, 2, 4):
            redis.Redis.from_url(args.redis).flushdb()
            url = fresh_schema(base, "outreach_scale")
            rate = run(args.n, processes, url, args.redis, smtp_url)
            baseline = baseline or rate
            print(
                f"PostgreSQL + Redis, {processes} process(es): {rate:7.0f} msg/s "
                f"({rate / baseline:.2f}x of one)"
            )
        fresh_schema(base, "outreach_scale")
    finally:
        sink.stop()


if __name__ == "__main__":
    main()
