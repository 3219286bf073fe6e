"""End-to-end sending speed: `send` + `outreach worker` + SMTP, against a bare smtplib loop.

Both deliver the same number of messages into the same fast local SMTP sink (Postfix's
smtp-sink when installed, else a minimal asyncio sink), over the same number of connections.
The bare loop sends pre-built messages, so the ratio is what our rendering, assembly,
claiming, pacing and per-message bookkeeping cost. Also prints the worker's peak RSS.

    python benchmarks/send.py [--n 20000] [--threads 2] [--rss-n 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Long enough for the secret-key check every sending command makes.
BENCH_KEY = "bench-secret-key-0123456789abcdef0123456789"

CAMPAIGN = """name: bench
template: newsletter
subject:
  en: "CityNet Newsletter — December 2026"
  ko: "시티넷 뉴스레터 — 2026년 12월"
from: "CityNet Secretariat <news@citynet-ap.org>"
audience:
  include: [everyone]
default_language: en
context:
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Sink:
    """smtp-sink if available, else a tiny asyncio sink that answers 250 to everything."""

    def __init__(self) -> None:
        self.port = free_port()
        binary = shutil.which("smtp-sink") or (
            "/usr/sbin/smtp-sink" if Path("/usr/sbin/smtp-sink").exists() else None
        )
        self.kind = "postfix smtp-sink" if binary else "asyncio sink"
        if binary:
            self.process: subprocess.Popen[bytes] | None = subprocess.Popen(
                [binary, "-u", "root", f"127.0.0.1:{self.port}", "1024"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        else:
            self.process = None
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
                    writer.write(b"250-sink\r\n250 8BITMIME\r\n")
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


def prepare_files(tmp: Path) -> None:
    shutil.copytree(ROOT / "templates", tmp / "templates")
    (tmp / "campaigns").mkdir()
    (tmp / "campaigns" / "segments.yaml").write_text(
        "everyone:\n  where:\n    not: {email: nobody@example.org}\n", encoding="utf-8"
    )
    newsletter = (ROOT / "campaigns" / "2026-12-newsletter.yaml").read_text(encoding="utf-8")
    context = newsletter.split("context:\n", 1)[1]
    (tmp / "campaigns" / "bench.yaml").write_text(CAMPAIGN + context, encoding="utf-8")


def prepare(tmp: Path, n: int, smtp_url: str) -> dict[str, str]:
    from outreach.config import Settings
    from outreach.contacts import import_csv
    from outreach.db import upgrade, writer_sessionmaker

    prepare_files(tmp)
    with (tmp / "contacts.csv").open("w", encoding="utf-8") as out:
        out.write("email,name,organisation,country,language,membership\n")
        for i in range(n):
            lang = "ko" if i % 2 else "en"
            out.write(f"officer{i}@city{i % 997}.example.org,담당자 {i},City {i},KR,{lang},full\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTREACH_")}
    env.update(
        {
            "OUTREACH_DATABASE_URL": f"sqlite:///{tmp}/outreach.db",
            "OUTREACH_QUEUE_URL": f"sqlite:///{tmp}/queue.db",
            "OUTREACH_SMTP_URL": smtp_url,
            "OUTREACH_SECRET_KEY": BENCH_KEY,
            "OUTREACH_RATE": "0",
            "OUTREACH_POSTAL_ADDRESS": "CityNet Secretariat, Seoul",
        }
    )
    settings = Settings.load(env=env, cwd=tmp)
    upgrade(settings.database_url)
    with writer_sessionmaker(settings.database_url)() as session:
        import_csv(session, tmp / "contacts.csv")
    return env


def end_to_end(n: int, threads: int, smtp_url: str, processes: int = 1) -> tuple[float, float, int]:
    from outreach.config import Settings
    from outreach.db import reader_sessionmaker, writer_sessionmaker
    from outreach.lifecycle import send_campaign, status
    from outreach.tasks import enqueuer

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        env = prepare(tmp, n, smtp_url)
        settings = Settings.load(env=env, cwd=tmp)
        start = time.perf_counter()
        with writer_sessionmaker(settings.database_url)() as session:
            result = send_campaign(
                tmp / "campaigns" / "bench.yaml", settings, session, enqueuer(settings)
            )
        send_time = time.perf_counter() - start
        assert result.added == n, result
        start = time.perf_counter()
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "outreach",
                "worker",
                "--workers",
                str(threads),
                "--processes",
                str(processes),
            ],
            cwd=tmp,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        while True:
            time.sleep(0.2)
            with reader_sessionmaker(settings.database_url)() as session:
                current = status(session, "bench")
            if current.state == "done":
                break
            if worker.poll() is not None:
                raise SystemExit("the worker died")
        elapsed = time.perf_counter() - start
        children = Path(f"/proc/{worker.pid}/task/{worker.pid}/children").read_text().split()
        peak = max(peak_rss_mb(int(pid)) for pid in [worker.pid, *children])
        worker.send_signal(signal.SIGTERM)
        worker.wait()
        assert current.counts["sent"] == n, current.counts
        return send_time, elapsed, peak


def peak_rss_mb(pid: int) -> int:
    """The process's high-water mark of resident memory (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    return -1


def bare(n: int, threads: int, port: int) -> float:
    """The same messages, rendered and assembled beforehand, through plain smtplib."""
    from outreach.campaigns import load_campaign
    from outreach.compiler import compile_campaign
    from outreach.config import Settings
    from outreach.messages import MessageBuilder
    from outreach.render import personalise
    from outreach.tokens import Links, Tokens

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        prepare_files(tmp)
        campaign = load_campaign(tmp / "campaigns" / "bench.yaml")
        settings = Settings(postal_address="CityNet Secretariat, Seoul", secret_key=BENCH_KEY)
        compiled = compile_campaign(campaign, {"en", "ko"}, settings)
    personaliser = compiled.personaliser()
    links = Links(settings.base_url, Tokens(BENCH_KEY))
    builder = MessageBuilder("CityNet Secretariat <news@citynet-ap.org>")
    messages = []
    for i in range(n):
        lang = "ko" if i % 2 else "en"
        urls = links.variables(i)
        contact = {
            "email": f"officer{i}@example.org",
            "name": f"담당자 {i}",
            "tags": [],
            "attributes": {},
            "organisation": f"City {i}",
        }
        r = personalise(personaliser, compiled.variants[lang], {"contact": contact, **urls})
        messages.append(
            builder.build(
                to_name=contact["name"],
                to_address=contact["email"],
                subject=r.subject,
                html=r.html,
                text=r.text,
                unsubscribe_url=urls["unsubscribe_url"],
                message_id=builder.new_message_id(i),
            )
        )

    def loop(part: list) -> None:  # type: ignore[type-arg]
        conn = smtplib.SMTP("127.0.0.1", port)
        for m in part:
            conn.sendmail(m.sender, [m.recipient], m.data)
        conn.quit()

    start = time.perf_counter()
    workers = [threading.Thread(target=loop, args=(messages[i::threads],)) for i in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument(
        "--threads",
        type=int,
        default=2,
        help="SMTP connections in all: the bare loop's threads, and the "
        "worker's processes x threads",
    )
    parser.add_argument(
        "--processes", type=int, default=0, help="worker processes (default: one per connection)"
    )
    parser.add_argument(
        "--rss-n", type=int, default=0, help="also run this many (e.g. 100000) to compare peak RSS"
    )
    args = parser.parse_args()
    sink = Sink()
    smtp_url = f"smtp://127.0.0.1:{sink.port}?tls=none"
    try:
        print(
            f"cores: {os.cpu_count()}; sink: {sink.kind}; worker threads = connections: "
            f"{args.threads}"
        )
        processes = args.processes or args.threads
        per_process = max(1, args.threads // processes)
        print(f"worker: {processes} processes x {per_process} threads")
        send_time, elapsed, rss = end_to_end(args.n, per_process, smtp_url, processes)
        bare_time = bare(args.n, args.threads, sink.port)
        print(
            f"bare smtplib loop:      {args.n / bare_time:8.0f} msg/s ({args.n} pre-built, "
            "the same rendered newsletter)"
        )
        print(
            f"outreach end to end:    {args.n / elapsed:8.0f} msg/s ({args.n} recipients; "
            f"`send` took {send_time:.1f} s before)"
        )
        print(f"ratio end-to-end/bare:  {bare_time / elapsed:.2f}  (target >= 0.60)")
        print(f"worker peak RSS at {args.n}: {rss} MB")
        if args.rss_n:
            _, elapsed2, rss2 = end_to_end(args.rss_n, per_process, smtp_url, processes)
            print(
                f"worker peak RSS at {args.rss_n}: {rss2} MB ({args.rss_n / elapsed2:.0f} msg/s);"
                f" growth {100 * (rss2 - rss) / rss:.0f}% (target < 10%, < 150 MB)"
            )
    finally:
        sink.stop()


if __name__ == "__main__":
    main()
