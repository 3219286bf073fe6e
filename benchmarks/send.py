"""Sending speed, end to end, next to the machine's SMTP limit measured in the same run.

For each message size (the ~34 KB newsletter and a ~7 KB bulletin) it measures, into one fast
local SMTP sink (Postfix's `smtp-sink` when installed, else a minimal asyncio sink):

- a bare smtplib loop sending the campaign's own pre-built message bytes (composed by the
  same code the worker runs, before the clock starts), on 1 connection and as one process
  per core, one connection each: what Python and the sink can do with no work per message;
- Postfix's `smtp-source` (C) at 1 and 2 sessions: the machine's SMTP limit;
- outreach end to end, from `campaigns send` (the API it wraps: validate, compile, snapshot,
  queue) until every delivery is `sent`, with an idle worker already running: the default
  `outreach worker`, and `--processes 1/2/4`; on SQLite (the embedded default) and on
  PostgreSQL + Redis when given (a schema and a Redis database of the benchmark's own);
- the worker's peak resident memory per process at N and at --rss-n recipients.

Every figure is run --repeats times, interleaved (one round of every figure, then the next),
and the median is printed: the machine may be shared, and a 1-connection loop moves with
the cores the scheduler picks. The load average is printed with each round.

    python benchmarks/send.py [--n 20000] [--rss-n 100000] [--repeats 3]
        [--postgres postgresql://postgres@127.0.0.1:5432/test] [--redis redis://127.0.0.1:6379/10]

The PostgreSQL and Redis URLs default to OUTREACH_TEST_POSTGRES_URL and
OUTREACH_TEST_REDIS_URL; without them those rows say so and are skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import shutil
import signal
import smtplib
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pg_schema import drop_schema, fresh_schema

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Long enough for the secret-key check every sending command makes.
BENCH_KEY = "RZ4nq0hFvT2yXcU8pLk-3sWjMbE7aGdN_9oYtHiQ5uVe"
SCHEMA = "outreach_bench_send"
SMTP_SINK = "/usr/sbin/smtp-sink"
SMTP_SOURCE = "/usr/sbin/smtp-source"

HEADER = """name: {name}
template: {template}
subject:
{subject}
from: "CityNet Secretariat <news@citynet-ap.org>"
audience:
  include: [everyone]
default_language: en
tracking: {{opens: false, clicks: {clicks}}}
"""
FIXED_SUBJECT = '  en: "CityNet Newsletter — December 2026"\n  ko: "시티넷 뉴스레터 — 2026년 12월"'
# A real campaign's subject greets each reader by name, in their language.
PERSONAL_SUBJECT = (
    '  en: "Dear {{ contact.name }}, CityNet\'s December news"\n'
    '  ko: "{{ contact.name }}님께 — 시티넷 12월 소식"'
)
# A short bulletin: two paragraphs, the postal address and the unsubscribe link.
BULLETIN_TEMPLATE = """<mjml lang="{{ language }}">
  <mj-body width="640px">
    <mj-section>
      <mj-column>
        <mj-text>Dear {{ contact.name | default("colleague", true) }},</mj-text>
        <mj-text>The Secretariat is closed on 25 December. Messages sent that day are
        answered from 26 December; for urgent matters write to info@citynet-ap.org.</mj-text>
        <mj-text>The January newsletter follows on 5 January, with the programme of the
        2027 Executive Committee meeting and the call for training proposals.</mj-text>
        <mj-text font-size="12px">{{ postal_address }} ·
        <a href="{{ unsubscribe_url }}">Unsubscribe</a></mj-text>
      </mj-column>
    </mj-section>
  </mj-body>
</mjml>
"""


# The bulletin as real campaigns are written: click tracking on three links, one of which
# carries the reader's organisation, and a contact attribute in the text.
TRACKED_BULLETIN_TEMPLATE = """<mjml lang="{{ language }}">
  <mj-body width="640px">
    <mj-section>
      <mj-column>
        <mj-text>Dear {{ contact.name | default("colleague", true) }},</mj-text>
        <mj-text>The Secretariat is closed on 25 December. Messages sent that day are
        answered from 26 December; for urgent matters write to info@citynet-ap.org.</mj-text>
        <mj-text>The January newsletter follows on 5 January, with the
        <a href="https://citynet-ap.org/events/executive-committee-2027">programme of the
        2027 Executive Committee meeting</a> and the
        <a href="https://citynet-ap.org/training/call-2027?from=newsletter&org={{ contact.organisation|urlencode }}">call
        for training proposals</a> (region: {{ contact.attributes.region | default("all", true) }}).</mj-text>
        <mj-text>Past issues are on <a href="https://citynet-ap.org/news">citynet-ap.org</a>.</mj-text>
        <mj-text font-size="12px">{{ postal_address }} ·
        <a href="{{ unsubscribe_url }}">Unsubscribe</a></mj-text>
      </mj-column>
    </mj-section>
  </mj-body>
</mjml>
"""


@dataclass(frozen=True)
class Size:
    label: str
    template: str  # the campaign's template
    newsletter: bool  # the newsletter's context, or none
    subject: str = FIXED_SUBJECT
    clicks: bool = False  # click tracking


SIZES = [
    Size("newsletter", "newsletter", True),
    Size("bulletin", "bulletin", False),
    # What issue 26 measured: a personalised subject per language, tracked links.
    Size("realistic", "bulletin-tracked", False, PERSONAL_SUBJECT, clicks=True),
]


def tool(name: str, fallback: str) -> str | None:
    return shutil.which(name) or (fallback if Path(fallback).exists() else None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Sink:
    """smtp-sink if available, else a tiny asyncio sink that answers 250 to everything."""

    def __init__(self) -> None:
        self.port = free_port()
        binary = tool("smtp-sink", SMTP_SINK)
        self.kind = "Postfix smtp-sink" if binary else "an asyncio sink (smtp-sink not installed)"
        self.process: subprocess.Popen[bytes] | None = None
        if binary:
            user = ["-u", "root"] if os.geteuid() == 0 else []
            self.process = subprocess.Popen(
                [binary, *user, f"127.0.0.1:{self.port}", "1024"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        else:
            threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True).start()
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)

    async def _serve(self) -> None:
        async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"220 sink\r\n")
            in_data = False
            while line := await reader.readline():
                if in_data:
                    if line == b".\r\n":
                        in_data = False
                        writer.write(b"250 ok\r\n")
                    continue
                cmd = line[:4].upper()
                if cmd == b"DATA":
                    in_data = True
                    writer.write(b"354 go\r\n")
                elif cmd == b"QUIT":
                    writer.write(b"221 bye\r\n")
                    break
                elif cmd == b"EHLO":
                    writer.write(b"250-sink\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
                else:
                    writer.write(b"250 ok\r\n")
                await writer.drain()
            writer.close()

        server = await asyncio.start_server(session, "127.0.0.1", self.port)
        async with server:
            await server.serve_forever()

    def stop(self) -> None:
        if self.process:
            self.process.terminate()
            self.process.wait()


# --- the project: files, contacts, settings -------------------------------------------------


def write_project(folder: Path, size: Size, name: str) -> Path:
    """Templates, segments and the campaign file; returns the campaign's path."""
    if not (folder / "templates").exists():
        shutil.copytree(ROOT / "templates", folder / "templates")
        (folder / "templates" / "bulletin.mjml").write_text(BULLETIN_TEMPLATE, encoding="utf-8")
        (folder / "templates" / "bulletin-tracked.mjml").write_text(
            TRACKED_BULLETIN_TEMPLATE, encoding="utf-8"
        )
        (folder / "campaigns").mkdir()
        (folder / "campaigns" / "segments.yaml").write_text(
            "everyone:\n  where:\n    not: {email: nobody@example.org}\n", encoding="utf-8"
        )
    text = HEADER.format(
        name=name,
        template=size.template,
        subject=size.subject,
        clicks="true" if size.clicks else "false",
    )
    if size.newsletter:
        newsletter = (ROOT / "campaigns" / "2026-12-newsletter.yaml").read_text(encoding="utf-8")
        text += "context:\n" + newsletter.split("context:\n", 1)[1]
    path = folder / "campaigns" / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


REGIONS = ("East Asia", "South Asia", "South-East Asia", "Pacific")


def contacts_csv(path: Path, n: int) -> None:
    """Contacts as an export has them: half Korean, with tags and two free columns (which
    become attributes); organisations with spaces and an ampersand, as links must carry."""
    with path.open("w", encoding="utf-8") as out:
        out.write("email,name,organisation,country,language,membership,tags,region,sector\n")
        for i in range(n):
            lang = "ko" if i % 2 else "en"
            tags = "newsletter;members" if i % 3 else "newsletter;members;training-2026"
            out.write(
                f"officer{i}@city{i % 997}.example.org,담당자 {i},City {i} Water & Sewerage,"
                f"KR,{lang},full,{tags},{REGIONS[i % 4]},water\n"
            )


def environment(database_url: str, queue_url: str, smtp_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTREACH_")}
    env.update(
        {
            "OUTREACH_DATABASE_URL": database_url,
            "OUTREACH_QUEUE_URL": queue_url,
            "OUTREACH_SMTP_URL": smtp_url,
            "OUTREACH_SECRET_KEY": BENCH_KEY,
            "OUTREACH_RATE": "0",
            "OUTREACH_POSTAL_ADDRESS": "CityNet Secretariat, Seoul",
        }
    )
    return env


def import_contacts(database_url: str, csv: Path) -> None:
    from outreach.config import Settings
    from outreach.contacts import import_csv
    from outreach.db import engine_for, upgrade, writer_sessionmaker

    settings = Settings(database_url=database_url)
    upgrade(settings.database_url)
    with writer_sessionmaker(settings.database_url)() as session:
        import_csv(session, csv)
    if not database_url.startswith("sqlite"):
        from sqlalchemy import text

        # As autovacuum would have done since the contacts were imported: the planner
        # knows the table's size.
        with engine_for(database_url).begin() as conn:
            conn.execute(text("ANALYZE contacts"))
    engine_for(database_url).dispose()


def forget_campaigns(database_url: str) -> None:
    """Back to contacts only, between runs on PostgreSQL."""
    from sqlalchemy import text

    from outreach.db import engine_for

    with engine_for(database_url).begin() as conn:
        conn.execute(
            text(
                "TRUNCATE deliveries, events, campaign_variants, campaigns, rate_limits, "
                "workers RESTART IDENTITY CASCADE"
            )
        )
    engine_for(database_url).dispose()


# --- the figures ------------------------------------------------------------------------------


@dataclass
class Backend:
    label: str
    # A fresh database with the contacts imported, and its queue: (database URL, queue URL).
    fresh: Callable[[Path], tuple[str, str]]


@dataclass
class Run:
    rate: float
    rss_mb: int = 0  # the largest peak of one worker process
    load: float = 0.0
    cpu_us: float = 0.0  # CPU time of the worker's processes per message
    send_s: float = 0.0  # `campaigns send` itself: validate, compile, snapshot, queue


@dataclass
class Figures:
    runs: dict[str, list[Run]] = field(default_factory=dict)
    alias: dict[str, str] = field(default_factory=dict)  # "SQLite default" -> "SQLite p1"

    def add(self, key: str, run: Run | None) -> None:
        if run is not None:
            self.runs.setdefault(key, []).append(run)

    def median(self, key: str) -> float | None:
        runs = self.runs.get(self.alias.get(key, key))
        return statistics.median(r.rate for r in runs) if runs else None

    def cpu(self, key: str) -> float | None:
        runs = self.runs.get(self.alias.get(key, key))
        return statistics.median(r.cpu_us for r in runs) if runs and runs[0].cpu_us else None

    def send_seconds(self, key: str) -> float | None:
        runs = self.runs.get(self.alias.get(key, key))
        return statistics.median(r.send_s for r in runs) if runs else None

    def rss(self, key: str) -> int | None:
        runs = self.runs.get(self.alias.get(key, key))
        return max(r.rss_mb for r in runs) if runs else None


def peak_rss_mb(pid: int) -> int:
    """A process's high-water mark of resident memory (VmHWM), in MB."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) // 1024
    return 0


def cpu_seconds(pid: int) -> float:
    """User and system time of a running process so far."""
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


def children(pid: int) -> list[int]:
    with contextlib.suppress(OSError):
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return []


def campaign_state(database_url: str, name: str) -> str | None:
    from sqlalchemy import select

    from outreach.db import reader_sessionmaker
    from outreach.models import Campaign

    with reader_sessionmaker(database_url)() as session:
        return session.scalar(select(Campaign.state).where(Campaign.name == name))


def sent_span(database_url: str) -> tuple[float, float]:
    """When the first and the last message of the run were sent (epoch seconds)."""
    from sqlalchemy import func, select

    from outreach.db import reader_sessionmaker
    from outreach.models import Delivery

    with reader_sessionmaker(database_url)() as session:
        first, last = session.execute(
            select(func.min(Delivery.sent_at), func.max(Delivery.sent_at))
        ).one()
    return first.timestamp(), last.timestamp()


def alive_workers(database_url: str) -> int:
    from outreach.db import reader_sessionmaker
    from outreach.heartbeat import workers

    with reader_sessionmaker(database_url)() as session:
        return workers(session).alive


def end_to_end(
    folder: Path,
    size: Size,
    backend: Backend,
    smtp_url: str,
    worker_args: list[str],
    processes: int,
    n: int,
) -> Run:
    """`outreach worker` idle and ready, then the clock: `send`, until the campaign is done."""
    from outreach.config import Settings
    from outreach.db import engine_for, writer_sessionmaker
    from outreach.lifecycle import send_campaign
    from outreach.tasks import enqueuer

    name = f"bench-{size.label}"
    path = write_project(folder, size, name)
    database_url, queue_url = backend.fresh(folder)
    env = environment(database_url, queue_url, smtp_url)
    settings = Settings.load(env=env, cwd=folder)
    worker = subprocess.Popen(
        [sys.executable, "-m", "outreach", "worker", *worker_args],
        cwd=folder,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(folder / "worker.log").open("ab"),
    )
    try:
        deadline = time.monotonic() + 60
        while alive_workers(database_url) < processes:
            if worker.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the worker did not start; see {folder / 'worker.log'}")
            time.sleep(0.1)
        time.sleep(1.0)  # its start-up sweep is done: it is idle
        processes_ = [worker.pid, *children(worker.pid)]
        cpu_before = sum(cpu_seconds(pid) for pid in processes_)
        start = time.perf_counter()
        with writer_sessionmaker(database_url)() as session:
            result = send_campaign(path, settings, session, enqueuer(settings))
        sent = time.perf_counter() - start
        assert result.added == n, result
        while campaign_state(database_url, name) != "done":
            if worker.poll() is not None:
                raise SystemExit(f"the worker died; see {folder / 'worker.log'}")
            time.sleep(0.05)
        elapsed = time.perf_counter() - start
        rss = max(peak_rss_mb(pid) for pid in processes_)
        cpu = sum(cpu_seconds(pid) for pid in processes_) - cpu_before
        if os.environ.get("BENCH_DEBUG"):
            first, last = sent_span(database_url)
            print(
                f"  {name} {worker_args}: {elapsed:.2f} s in all, `send` {sent:.2f} s, "
                f"first to last message {last - first:.2f} s ({n / (last - first):,.0f} msg/s)"
            )
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait()
        engine_for(database_url).dispose()
    return Run(n / elapsed, rss, os.getloadavg()[0], 1e6 * cpu / n, sent)


def send_only(folder: Path, size: Size, backend: Backend, n: int) -> float:
    """`campaigns send` alone (the API it wraps), no worker running: seconds."""
    from outreach.config import Settings
    from outreach.db import engine_for, writer_sessionmaker
    from outreach.lifecycle import send_campaign
    from outreach.tasks import enqueuer

    name = f"bench-{size.label}"
    path = write_project(folder, size, name)
    database_url, queue_url = backend.fresh(folder)
    env = environment(database_url, queue_url, "smtp://127.0.0.1:25?tls=none")
    settings = Settings.load(env=env, cwd=folder)
    start = time.perf_counter()
    with writer_sessionmaker(database_url)() as session:
        result = send_campaign(path, settings, session, enqueuer(settings))
    elapsed = time.perf_counter() - start
    assert result.added == n, result
    engine_for(database_url).dispose()
    return elapsed


def build_messages(folder: Path, size: Size, n: int, out: Path) -> int:
    """The campaign's own messages, composed as the worker composes them, written to `out`
    as length-prefixed records; returns the mean message size in bytes."""
    from outreach import store
    from outreach.compose import prepare
    from outreach.config import Settings
    from outreach.db import engine_for, writer_sessionmaker
    from outreach.lifecycle import send_campaign
    from outreach.models import Campaign
    from outreach.tokens import links_for

    name = f"bench-{size.label}"
    path = write_project(folder, size, name)
    database_url = f"sqlite:///{folder}/messages.db"
    contacts_csv(folder / "contacts.csv", n)
    import_contacts(database_url, folder / "contacts.csv")
    settings = Settings.load(
        env=environment(database_url, "memory://", "smtp://127.0.0.1:25?tls=none"), cwd=folder
    )
    total = 0
    with writer_sessionmaker(database_url)() as session, out.open("wb") as f:
        send_campaign(path, settings, session, None)
        campaign = session.query(Campaign).filter_by(name=name).one()
        prepared = prepare(session, campaign, settings, links_for(settings, "the benchmark"))
        ids = store.claim(session, campaign.id, "bench", n, 3600)
        session.commit()
        for start in range(0, len(ids), 1000):
            for recipient in store.load(session, ids[start : start + 1000]):
                envelope = prepared.composer.compose(recipient).envelope
                for part in (envelope.sender.encode(), envelope.recipient.encode(), envelope.data):
                    f.write(struct.pack("<I", len(part)))
                    f.write(part)
                total += len(envelope.data)
            session.commit()
    engine_for(database_url).dispose()
    return total // n


def read_messages(path: Path, part: int, parts: int) -> list[tuple[str, str, bytes]]:
    messages = []
    with path.open("rb") as f:
        index = 0
        while header := f.read(4):
            fields = []
            for i in range(3):
                length = struct.unpack("<I", header if i == 0 else f.read(4))[0]
                fields.append(f.read(length))
            if index % parts == part:
                messages.append((fields[0].decode(), fields[1].decode(), fields[2]))
            index += 1
    return messages


def _bare_process(
    path: Path, part: int, parts: int, port: int, barrier: object, cpu: object
) -> None:
    messages = read_messages(path, part, parts)
    conn = smtplib.SMTP("127.0.0.1", port)
    conn.ehlo()
    barrier.wait()  # type: ignore[attr-defined]
    start = time.process_time()
    for sender, recipient, data in messages:
        conn.sendmail(sender, [recipient], data)
    with cpu.get_lock():  # type: ignore[attr-defined]
        cpu.value += time.process_time() - start  # type: ignore[attr-defined]
    conn.quit()


def bare(path: Path, n: int, processes: int, port: int) -> Run:
    """A plain smtplib loop per process, one connection each, the messages in memory."""
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(processes + 1)
    cpu = context.Value("d", 0.0)
    workers = [
        context.Process(target=_bare_process, args=(path, i, processes, port, barrier, cpu))
        for i in range(processes)
    ]
    for w in workers:
        w.start()
    barrier.wait()
    start = time.perf_counter()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - start
    if any(w.exitcode for w in workers):
        raise SystemExit("a bare loop failed")
    return Run(n / elapsed, load=os.getloadavg()[0], cpu_us=1e6 * cpu.value / n)


def smtp_source(port: int, n: int, sessions: int, body: int) -> Run | None:
    binary = tool("smtp-source", SMTP_SOURCE)
    if binary is None:
        return None
    start = time.perf_counter()
    subprocess.run(
        [
            binary,
            "-d",  # one connection per session, as ours
            "-s",
            str(sessions),
            "-m",
            str(n),
            "-l",
            str(body),
            "-f",
            "news@citynet-ap.org",
            "-t",
            "officer@city.example.org",
            f"127.0.0.1:{port}",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return Run(n / (time.perf_counter() - start), load=os.getloadavg()[0])


# --- the run ---------------------------------------------------------------------------------


def default_processes() -> int:
    """How many processes a plain `outreach worker` starts (see `outreach.cli.worker`)."""
    from outreach.cli import worker

    for param in worker.params:
        if param.name == "processes":
            default = param.default
            if isinstance(default, int):
                return default
            return os.cpu_count() or 1
    return 1


@contextlib.contextmanager
def backends(
    args: argparse.Namespace, work: Path, templates: dict[int, Path], n: int, schema: str
) -> Iterator[list[Backend]]:
    """SQLite and, when given, PostgreSQL + Redis, each holding n contacts."""

    def sqlite(folder: Path) -> tuple[str, str]:
        db = folder / "outreach.db"
        for stale in folder.glob("outreach.db*"):
            stale.unlink()
        for stale in folder.glob("queue.db*"):
            stale.unlink()
        shutil.copy(templates[n], db)
        return f"sqlite:///{db}", f"sqlite:///{folder}/queue.db"

    found = [Backend("SQLite", sqlite)]
    pg = None
    if args.postgres and args.redis:
        import redis

        base = args.postgres.replace("postgresql://", "postgresql+psycopg://", 1)
        pg = fresh_schema(base, schema)
        contacts_csv(work / f"contacts-pg-{n}.csv", n)
        import_contacts(pg, work / f"contacts-pg-{n}.csv")

        def postgres(folder: Path) -> tuple[str, str]:
            assert pg is not None
            forget_campaigns(pg)
            redis.Redis.from_url(args.redis).flushdb()
            return pg, args.redis

        found.append(Backend("PostgreSQL + Redis", postgres))
    try:
        yield found
    finally:
        if pg is not None:
            drop_schema(base, schema)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20_000, help="recipients per run")
    parser.add_argument(
        "--rss-n", type=int, default=100_000, help="recipients of the memory run (0: none)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--postgres", default=os.environ.get("OUTREACH_TEST_POSTGRES_URL"))
    parser.add_argument("--redis", default=os.environ.get("OUTREACH_TEST_REDIS_URL"))
    parser.add_argument(
        "--send-n",
        type=int,
        default=100_000,
        help="recipients of the `campaigns send` timing, no worker running (0: none)",
    )
    parser.add_argument(
        "--sizes",
        default="newsletter,bulletin,realistic",
        help="which messages: newsletter, bulletin, realistic",
    )
    parser.add_argument(
        "--processes", default="1,2,4", help="the worker's --processes to run (the default too)"
    )
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    defaults = default_processes()
    sizes = [s for s in SIZES if s.label in args.sizes.split(",")]
    counts = sorted({int(p) for p in args.processes.split(",")} | {defaults})
    sink = Sink()
    smtp_url = f"smtp://127.0.0.1:{sink.port}?tls=none"
    print(
        f"cores: {cores}; sink: {sink.kind}; {args.n} recipients a run; medians of {args.repeats}"
    )
    print(f"load average at the start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if not (args.postgres and args.redis):
        print(
            "PostgreSQL + Redis: skipped (give --postgres and --redis, or set "
            "OUTREACH_TEST_POSTGRES_URL and OUTREACH_TEST_REDIS_URL)"
        )
    if tool("smtp-source", SMTP_SOURCE) is None:
        print("smtp-source: not installed (Debian: apt-get install postfix); its rows are n/a")
    work = Path(tempfile.mkdtemp(prefix="outreach-bench-"))
    try:
        templates = {}
        for n in {args.n, args.rss_n, args.send_n} - {0}:
            templates[n] = work / f"contacts-{n}.db"
            contacts_csv(work / f"contacts-{n}.csv", n)
            import_contacts(f"sqlite:///{templates[n]}", work / f"contacts-{n}.csv")
        messages, sizes_bytes = {}, {}
        for size in sizes:
            messages[size.label] = work / f"{size.label}.messages"
            folder = work / f"build-{size.label}"
            folder.mkdir()
            sizes_bytes[size.label] = build_messages(folder, size, args.n, messages[size.label])
        # A plain `outreach worker` is `--processes` its default.
        worker_runs = [(f"p{p}", ["--processes", str(p)], p) for p in counts]
        figures = {size.label: Figures() for size in sizes}
        # `campaigns send` alone, at --send-n, of the last shape (the realistic one).
        send_times: dict[str, list[float]] = {}
        with contextlib.ExitStack() as stack:
            found = stack.enter_context(backends(args, work, templates, args.n, SCHEMA))
            big_backends = (
                stack.enter_context(backends(args, work, templates, args.send_n, SCHEMA + "_big"))
                if args.send_n
                else []
            )
            for f in figures.values():
                f.alias = {f"{b.label} default": f"{b.label} p{defaults}" for b in found}
            for round_ in range(args.repeats):
                for size in sizes:
                    f, path = figures[size.label], messages[size.label]
                    body = sizes_bytes[size.label]
                    f.add("bare 1", bare(path, args.n, 1, sink.port))
                    f.add(f"bare {cores}", bare(path, args.n, cores, sink.port))
                    f.add("source 1", smtp_source(sink.port, args.n, 1, body))
                    f.add("source 2", smtp_source(sink.port, args.n, 2, body))
                    for backend in found:
                        for key, worker_args, processes in worker_runs:
                            folder = work / f"run-{size.label}-{backend.label[:6]}-{key}"
                            folder.mkdir(exist_ok=True)
                            run = end_to_end(
                                folder, size, backend, smtp_url, worker_args, processes, args.n
                            )
                            f.add(f"{backend.label} {key}", run)
                for backend in big_backends:
                    folder = work / f"send-{backend.label[:6]}"
                    folder.mkdir(exist_ok=True)
                    seconds = send_only(folder, sizes[-1], backend, args.send_n)
                    send_times.setdefault(backend.label, []).append(seconds)
                print(
                    f"round {round_ + 1} of {args.repeats} done; load average "
                    f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}",
                    flush=True,
                )
            memory: dict[str, Run] = {}
            if args.rss_n:
                sqlite = found[0]
                big = Backend(
                    "SQLite", lambda folder: _copy_big(folder, templates[args.rss_n], sqlite)
                )
                for size in sizes:
                    folder = work / f"rss-{size.label}"
                    folder.mkdir()
                    memory[size.label] = end_to_end(
                        folder, size, big, smtp_url, [], defaults, args.rss_n
                    )
        for size in sizes:
            report(
                size,
                sizes_bytes[size.label],
                figures[size.label],
                memory.get(size.label),
                args,
                cores,
                defaults,
                counts,
                [b.label for b in found],
            )
        if send_times:
            print()
            print(
                f"`campaigns send` ({sizes[-1].label}: validate, compile, snapshot, queue), "
                "no worker running, median seconds:"
            )
            runs = figures[sizes[-1].label].runs
            for label, times in send_times.items():
                at_n = [r.send_s for p in counts for r in runs.get(f"{label} p{p}", [])]
                print(
                    f"  {label}: {args.send_n} recipients {statistics.median(times):.2f} s "
                    f"(runs: {', '.join(f'{t:.2f}' for t in times)}); {args.n} recipients, "
                    f"a worker idle: {statistics.median(at_n):.2f} s "
                    f"(runs: {', '.join(f'{t:.2f}' for t in at_n)})"
                )
        print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        sink.stop()
        shutil.rmtree(work, ignore_errors=True)


def _copy_big(folder: Path, template: Path, sqlite: Backend) -> tuple[str, str]:
    db = folder / "outreach.db"
    for stale in [*folder.glob("outreach.db*"), *folder.glob("queue.db*")]:
        stale.unlink()
    shutil.copy(template, db)
    return f"sqlite:///{db}", f"sqlite:///{folder}/queue.db"


def report(
    size: Size,
    size_bytes: int,
    f: Figures,
    memory: Run | None,
    args: argparse.Namespace,
    cores: int,
    defaults: int,
    counts: list[int],
    labels: list[str],
) -> None:
    def rate(key: str) -> str:
        value = f.median(key)
        return "n/a" if value is None else f"{value:,.0f}"

    def ratio(a: str, b: str) -> str:
        x, y = f.median(a), f.median(b)
        return "n/a" if x is None or not y else f"{x / y:.2f}"

    print()
    print(f"## {size.label}: {size_bytes / 1024:.1f} KB a message ({size_bytes} bytes)")
    print()

    def cpu(key: str) -> str:
        """CPU per message, and the cores that makes at the median rate: how much of the
        machine the worker got (a shared machine gives it less than its processes ask)."""
        value, rate_ = f.cpu(key), f.median(key)
        if value is None or rate_ is None:
            return " |"
        return f"{value:,.0f} | {value * rate_ / 1e6:.2f}"

    print("| what | msg/s (median) | CPU µs/msg (its own) | cores it used |")
    print("|---|---|---|---|")
    print(
        f"| bare smtplib loop, pre-built messages, 1 connection | {rate('bare 1')} | {cpu('bare 1')} |"
    )
    print(
        f"| bare smtplib loop, {cores} processes (1 connection each) | {rate(f'bare {cores}')} | "
        f"{cpu(f'bare {cores}')} |"
    )
    print(f"| Postfix smtp-source, 1 session | {rate('source 1')} | | |")
    print(f"| Postfix smtp-source, 2 sessions | {rate('source 2')} | | |")
    for label in labels:
        for p in counts:
            key = f"{label} p{p}"
            what = f"`--processes {p}`" + (" (the default worker)" if p == defaults else "")
            print(f"| outreach, {label}, {what} | {rate(key)} | {cpu(key)} |")
    print()

    def line(what: str, a: str, b: str) -> None:
        if f.median(a) is not None and f.median(b) is not None:
            print(f"  {what + ':':<56}{ratio(a, b)}")

    for label in labels:
        print(f"{label}:")
        line("1-core ratio, --processes 1 / bare 1 connection", f"{label} p1", "bare 1")
        line("default worker / bare 1 connection", f"{label} default", "bare 1")
        line(
            f"all-cores ratio, --processes {cores} / bare {cores} processes",
            f"{label} p{cores}",
            f"bare {cores}",
        )
        for p in counts:
            if p != 1:
                line(f"--processes {p} / --processes 1", f"{label} p{p}", f"{label} p1")
        line("--processes 2 / smtp-source 2 sessions", f"{label} p2", "source 2")
        bare_cpu, own_cpu = f.cpu("bare 1"), f.cpu(f"{label} p{defaults}")
        if bare_cpu and own_cpu:
            # Steadier than the rates on a busy machine: what a message costs, not how
            # much of a core each got.
            print(
                f"  {'CPU a message, bare 1 connection / default worker:':<56}{bare_cpu / own_cpu:.2f}"
            )
        rss = {f"p{p}": f.rss(f"{label} p{p}") for p in counts}
        print(
            "  peak RSS per worker process at "
            f"{args.n}: " + ", ".join(f"{k} {v} MB" for k, v in rss.items() if v)
        )
    if memory is not None:
        print(
            f"SQLite, default worker, {args.rss_n} recipients: peak RSS per process "
            f"{memory.rss_mb} MB ({memory.rate:,.0f} msg/s, `campaigns send` "
            f"{memory.send_s:.2f} s); at {args.n}: {f.rss('SQLite default')} MB"
        )
    loads = [r.load for runs in f.runs.values() for r in runs]
    if loads:
        print(
            f"load average (1 min) during these runs: median {statistics.median(loads):.2f}, "
            f"max {max(loads):.2f}"
        )


if __name__ == "__main__":
    main()
