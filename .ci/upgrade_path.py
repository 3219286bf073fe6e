"""The way from the first release to today and back, as an operator walks it (.ci/upgrade-path
runs it; issue 20): a database made by 0.1.0 itself and filled by it (contacts, a sent
campaign, unsubscribes, a bounce, a scheduled campaign, a half-sent one), upgraded with
today's `outreach init`, used (the half-sent campaign finished, a new one sent, the old bounce
ingested again, someone unsubscribed through a link 0.1.0 mailed), taken back with `outreach
db downgrade 0.1.0`, the 0.1.0 worker sending the scheduled campaign on it, and upgraded
again. Fails with one line saying what went wrong; prints how long each part took.

  .venv/bin/python .ci/upgrade_path.py --old-venv DIR --backend sqlite|postgresql [--pg SERVER-URL]
"""

from __future__ import annotations

import argparse
import email
import email.policy
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.project import CONTACTS, LAYOUT, NEWS_EN, NEWS_KO, SEGMENTS  # noqa: E402
from tests.smtp_server import start_server  # noqa: E402

# 0.1.0 accepted any key; this one is shorter than today's minimum, as many were.
OLD_KEY = "citynet-mail-key-2025"
NEW_KEY = "Xq7vR2mKp9LwT4sZ8bNc3HfJ6dYg1UaE5oVi0QrWtCkP"
MORE_CONTACTS = "".join(
    f"member{n}@city{n}.example.org,Member {n},City {n},KR,ko,full\n" for n in range(20)
)


# A PostgreSQL database of its own (dropped and made again at each run).
DATABASE = "outreach_upgrade_path"


class Failed(Exception):
    pass


def campaign(name: str, subject: str, extra: str = "") -> str:
    return (
        f'name: {name}\ntemplate: news\nsubject:\n  en: "{subject} {{{{ contact.name }}}}"\n'
        f'  ko: "{subject} (ko) {{{{ contact.name }}}}"\n'
        'from: "CityNet Secretariat <news@citynet-ap.org>"\naudience:\n  include: [everyone]\n'
        "default_language: en\ncontext:\n  articles:\n"
        "    - title: {en: Colombo, ko: 콜롬보}\n      url: https://citynet-ap.org/news/colombo\n"
        f"{extra}"
    )


class Path_:
    """One walk of the path on one database."""

    def __init__(self, old_venv: Path, backend: str, pg: str, work: Path) -> None:
        self.old, self.new = old_venv / "bin" / "outreach", ROOT / ".venv" / "bin" / "outreach"
        self.work, self.backend = work, backend
        self.smtp = start_server()
        if backend == "sqlite":
            self.url = f"sqlite:///{work / 'outreach.db'}"
        else:
            server = pg.rstrip("/").replace("postgresql://", "postgresql+psycopg://", 1)
            admin = create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"))
                conn.execute(text(f"CREATE DATABASE {DATABASE}"))
            admin.dispose()
            self.url = f"{server}/{DATABASE}"
        self.engine = create_engine(self.url)
        common = {
            "OUTREACH_DATABASE_URL": self.url,
            "OUTREACH_QUEUE_URL": f"sqlite:///{work / 'queue.db'}",
            "OUTREACH_SMTP_URL": self.smtp.url,
            "OUTREACH_BASE_URL": "http://127.0.0.1:8000",
            "OUTREACH_POSTAL_ADDRESS": "Seoul",
            "OUTREACH_RATE": "0",
            "OUTREACH_LEASE_SECONDS": "10",
        }
        clean = {k: v for k, v in os.environ.items() if not k.startswith("OUTREACH_")}
        clean["COLUMNS"] = "300"  # 0.1.0 cut table cells to the terminal's width
        self.old_env = {**clean, **common, "OUTREACH_SECRET_KEY": OLD_KEY}
        self.new_env = {
            **clean,
            **common,
            "OUTREACH_SECRET_KEY": NEW_KEY,
            "OUTREACH_SECRET_KEY_FALLBACKS": OLD_KEY,
        }
        self.times: dict[str, float] = {}

    # --- running the two releases --------------------------------------------------------

    def run(self, release: str, *args: str, check: bool = True) -> str:
        program, env = (self.old, self.old_env) if release == "old" else (self.new, self.new_env)
        t0 = time.monotonic()
        done = subprocess.run(
            [str(program), *args], env=env, cwd=self.work, capture_output=True, text=True
        )
        out = done.stdout + done.stderr
        if os.environ.get("UPGRADE_PATH_DEBUG"):
            print(f"    {release} {' '.join(args)}: {time.monotonic() - t0:.1f} s", flush=True)
        if check and done.returncode != 0:
            raise Failed(f"{release} `outreach {' '.join(args)}` exited {done.returncode}: {out}")
        if "Traceback" in out:
            raise Failed(f"{release} `outreach {' '.join(args)}` printed a traceback: {out}")
        return out

    def worker(self, release: str) -> subprocess.Popen[bytes]:
        program, env = (self.old, self.old_env) if release == "old" else (self.new, self.new_env)
        log = (self.work / f"worker-{release}.log").open("ab")
        return subprocess.Popen(
            [str(program), "worker", "--workers", "2"],
            env=env,
            cwd=self.work,
            stdout=log,
            stderr=log,
        )

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        t0 = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        if os.environ.get("UPGRADE_PATH_DEBUG"):
            print(f"    worker stopped in {time.monotonic() - t0:.1f} s", flush=True)

    def sql(self, query: str, **params: Any) -> Any:
        with self.engine.begin() as conn:
            result = conn.execute(text(query), params)
            return result.all() if result.returns_rows else None

    def wait(self, what: str, predicate: Callable[[], bool], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                logs = "".join(p.read_text()[-2000:] for p in self.work.glob("worker-*.log"))
                raise Failed(f"{self.backend}: timed out waiting for {what}\n{logs}")
            time.sleep(0.2)

    def state(self, name: str) -> str:
        return str(self.sql("SELECT state FROM campaigns WHERE name = :n", n=name)[0][0])

    def sent(self, name: str) -> int:
        return int(
            self.sql(
                "SELECT count(*) FROM deliveries d JOIN campaigns c ON c.id = d.campaign_id "
                "WHERE c.name = :n AND d.state = 'sent'",
                n=name,
            )[0][0]
        )

    def mail(self) -> list[email.message.EmailMessage]:
        return [
            email.message_from_bytes(r.data, policy=email.policy.default)  # type: ignore[misc]
            for r in list(self.smtp.handler.received)
        ]

    # --- the walk ------------------------------------------------------------------------

    def project(self) -> None:
        (self.work / "templates" / "layouts").mkdir(parents=True)
        (self.work / "campaigns").mkdir()
        (self.work / "templates" / "layouts" / "base.mjml").write_text(LAYOUT)
        (self.work / "templates" / "news.en.mjml").write_text(NEWS_EN)
        (self.work / "templates" / "news.ko.mjml").write_text(NEWS_KO)
        (self.work / "campaigns" / "segments.yaml").write_text(SEGMENTS)
        (self.work / "contacts.csv").write_text(CONTACTS + MORE_CONTACTS, encoding="utf-8")
        for name, extra in (
            ("sent-before", ""),
            ("scheduled", "send_at: 2031-01-01T09:00:00+09:00\n"),
            ("half-sent", "rate: 5/s\n"),
            ("sent-after", ""),
        ):
            (self.work / "campaigns" / f"{name}.yaml").write_text(
                campaign(name, name.replace("-", " ").title(), extra), encoding="utf-8"
            )

    def dsn(self, message: email.message.EmailMessage) -> Path:
        recipient = str(message["To"]).rpartition("<")[2].rstrip(">")
        path = self.work / "bounce.eml"
        path.write_text(
            "From: MAILER-DAEMON@mx.example.net\nTo: news@citynet-ap.org\n"
            "Subject: Undelivered Mail Returned to Sender\nMIME-Version: 1.0\n"
            'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\n\n'
            "--b\nContent-Type: text/plain\n\nThe mailbox does not exist.\n\n"
            "--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.net\n\n"
            f"Final-Recipient: rfc822; {recipient}\nAction: failed\nStatus: 5.1.1\n"
            "Diagnostic-Code: smtp; 550 5.1.1 user unknown\n\n"
            f"--b\nContent-Type: message/rfc822-headers\n\nMessage-ID: {message['Message-ID']}\n"
            f"To: {recipient}\n\n--b--\n"
        )
        return path

    def before(self) -> None:
        self.run("old", "init")
        self.run("old", "contacts", "import", "contacts.csv")
        self.run("old", "campaigns", "send", "campaigns/sent-before.yaml")
        worker = self.worker("old")
        self.wait("sent-before to be done", lambda: self.state("sent-before") == "done")
        self.stop(worker)
        first = [m for m in self.mail() if str(m["Subject"]).startswith("Sent Before")]
        self.bounced = str(first[0]["To"]).rpartition("<")[2].rstrip(">")
        out = self.run("old", "bounces", "ingest", str(self.dsn(first[0])))
        if self.sql("SELECT count(*) FROM events WHERE kind = 'bounce'")[0][0] != 1:
            raise Failed(f"0.1.0 did not record the bounce: {out}")
        self.run(
            "old", "suppressions", "add", "member0@city0.example.org", "member1@city1.example.org"
        )
        self.run("old", "campaigns", "send", "campaigns/scheduled.yaml")
        self.run("old", "campaigns", "send", "campaigns/half-sent.yaml")
        worker = self.worker("old")
        self.wait("a few of half-sent", lambda: self.sent("half-sent") >= 3)
        self.stop(worker)
        if self.state("half-sent") != "sending" or self.state("scheduled") != "scheduled":
            raise Failed("the half-sent or scheduled campaign is not as 0.1.0 left it")
        # Whom the scheduled campaign will mail, and a 0.1.0 message of theirs with its link.
        self.leaver = "member5@city5.example.org"
        mine = [m for m in self.mail() if self.leaver in str(m["To"])]
        link = re.search(r"/u/([^>]+)>", str(mine[0]["List-Unsubscribe"]))
        assert link is not None
        self.old_token = link.group(1)

    def upgrade(self) -> None:
        start = time.monotonic()
        self.run("new", "init")
        self.times["upgrade"] = time.monotonic() - start
        status = self.run("new", "db", "status")
        if "release 0.1.0" in status or "expects this schema" not in status:
            raise Failed(f"after the upgrade: {status}")

    def use(self) -> None:
        from outreach.config import Settings
        from outreach.web import create_app

        # The old bounce again: a duplicate, not a second bounce.
        out = self.run("new", "bounces", "ingest", str(self.work / "bounce.eml"))
        if self.sql("SELECT count(*) FROM events WHERE kind = 'bounce'")[0][0] != 1:
            raise Failed(f"the bounce ingested by 0.1.0 counted again after the upgrade: {out}")
        # Someone leaves through the link 0.1.0 mailed them (signed with the old, short key).
        env = {k: v for k, v in self.new_env.items() if k.startswith("OUTREACH_")}
        client = create_app(Settings.load(env=env, cwd=self.work)).test_client()
        answer = client.post(f"/u/{self.old_token}", data={"List-Unsubscribe": "One-Click"})
        if answer.status_code != 200:
            raise Failed(f"the unsubscribe link 0.1.0 mailed answered {answer.status_code}")
        self.run("new", "campaigns", "send", "campaigns/sent-after.yaml")
        worker = self.worker("new")
        self.wait(
            "half-sent and sent-after to be done",
            lambda: self.state("half-sent") == "done" and self.state("sent-after") == "done",
        )
        self.stop(worker)
        log = (self.work / "worker-new.log").read_text()
        if "Traceback" in log:
            raise Failed(f"today's worker, started on 0.1.0's queue, printed a traceback: {log}")
        self.dropped = [line for line in log.splitlines() if "dropped" in line]

    def downgrade(self) -> None:
        start = time.monotonic()
        out = self.run("new", "db", "downgrade", "0.1.0", "--yes")
        self.times["downgrade"] = time.monotonic() - start
        self.downgrade_output = out
        if self.sql("SELECT version_num FROM alembic_version")[0][0] != "0001":
            raise Failed(f"not at 0.1.0's schema after the downgrade: {out}")

    def old_again(self) -> None:
        # Its time comes (a fast-forward: the campaign was scheduled for 2031).
        now = datetime.now(UTC)
        self.sql(
            "UPDATE campaigns SET send_at = :t WHERE name = 'scheduled'",
            t=now.replace(tzinfo=None) if self.backend == "sqlite" else now,
        )
        listed = self.run("old", "suppressions", "list")
        if self.leaver not in listed:
            raise Failed(f"0.1.0 does not see the unsubscribe made after the upgrade: {listed}")
        log = self.work / "worker-old.log"
        log.unlink()
        worker = self.worker("old")
        self.wait("the scheduled campaign to be done", lambda: self.state("scheduled") == "done")
        self.stop(worker)
        if "Traceback" in log.read_text():
            raise Failed(
                f"0.1.0's worker printed a traceback after the downgrade: {log.read_text()}"
            )
        # A campaign 0.1.0 never saw, as 0.1.0 reads it.
        status = self.run("old", "campaigns", "status", "sent-after")
        if "done" not in status:
            raise Failed(f"0.1.0 reads the campaign sent after the upgrade as: {status}")

    def check_mail(self) -> None:
        # Who got which campaign: the Feedback-ID starts with the campaign's name in both.
        seen = Counter(
            (str(m["To"]).rpartition("<")[2].rstrip(">"), str(m["Feedback-ID"]).split(":")[0])
            for m in self.mail()
        )
        twice = [k for k, n in seen.items() if n > 1]
        if twice:
            raise Failed(f"{self.backend}: mailed twice: {twice[:5]}")
        if (self.leaver, "scheduled") in seen:
            raise Failed(
                "0.1.0 mailed the scheduled campaign to someone who left after the upgrade"
            )
        expected = self.sql(
            "SELECT count(*) FROM deliveries d JOIN campaigns c ON c.id = d.campaign_id "
            "WHERE c.name = 'scheduled' AND d.state = 'sent'"
        )[0][0]
        got = sum(1 for _, name in seen if name == "scheduled")
        if got != expected or not got:
            raise Failed(f"the scheduled campaign: {expected} deliveries sent, {got} messages")
        skipped = self.sql(
            "SELECT d.state FROM deliveries d JOIN campaigns c ON c.id = d.campaign_id "
            "JOIN contacts k ON k.id = d.contact_id WHERE c.name = 'scheduled' AND k.email = :e",
            e=self.leaver,
        )
        if skipped != [("skipped",)]:
            raise Failed(f"the leaver's delivery of the scheduled campaign is {skipped}")

    def again(self) -> None:
        self.run("new", "init")
        status = self.run("new", "db", "status")
        if "expects this schema" not in status:
            raise Failed(f"after upgrading again: {status}")
        counts = self.sql(
            "SELECT (SELECT count(*) FROM contacts), (SELECT count(*) FROM suppressions), "
            "(SELECT count(*) FROM events WHERE kind = 'bounce')"
        )[0]
        contacts = len((CONTACTS + MORE_CONTACTS).strip().splitlines()) - 1
        # 2 added by hand, the bounced address, the leaver
        if tuple(counts) != (contacts, 4, 1):
            raise Failed(f"after upgrading again: contacts, suppressions, bounces = {counts}")

    def walk(self) -> None:
        steps = (
            ("0.1.0 made and filled", self.project, self.before),
            ("upgraded", self.upgrade),
            ("used", self.use),
            ("downgraded to 0.1.0", self.downgrade),
            ("0.1.0 ran on it", self.old_again, self.check_mail),
            ("upgraded again", self.again),
        )
        for label, *parts in steps:
            start = time.monotonic()
            for part in parts:
                part()
            print(f"  {self.backend}: {label} ({time.monotonic() - start:.1f} s)", flush=True)
        for line in self.dropped:
            print(f"  {self.backend}: today's worker said: {line.split(' WARNING ')[-1]}")
        for line in self.downgrade_output.splitlines():
            if line.startswith("not kept"):
                print(f"  {self.backend}: db downgrade said: {line}", flush=True)
        print(
            f"  {self.backend}: upgrade {self.times['upgrade']:.1f} s, downgrade "
            f"{self.times['downgrade']:.1f} s; {len(self.mail())} messages, none twice",
            flush=True,
        )

    def close(self) -> None:
        self.smtp.stop()
        self.engine.dispose()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--old-venv", type=Path, required=True)
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], required=True)
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432", help="a server")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix=f"upgrade-path-{args.backend}-"))
    walk = None
    try:
        walk = Path_(args.old_venv, args.backend, args.pg, work)
        walk.walk()
    except Failed as exc:
        print(f"upgrade path failed: {exc}", file=sys.stderr)
        return 1
    finally:
        if walk is not None:
            walk.close()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
