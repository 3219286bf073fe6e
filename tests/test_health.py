"""`outreach health`: quiet and exit 0 while all is well, one line per problem otherwise, on
SQLite and PostgreSQL; its figures in Prometheus' text format, from a file and from a real
worker's endpoint (issue 20, item 4)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from outreach.config import Settings
from outreach.events import record_event
from outreach.models import Campaign, Delivery, WorkerBeat, utcnow
from tests.sending_helpers import contacts_csv, project_with, send, settings_for
from tests.smtp_server import free_port, start_server
from tests.workers import wait_for, worker_env


@pytest.fixture
def health(run_cli, db_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    """`outreach health ARGS` against the test's database: (exit code, lines)."""

    def run(*args: str, **env: str) -> tuple[int, list[str]]:
        result = run_cli("health", *args, env={"OUTREACH_DATABASE_URL": db_url, **env})
        assert "Traceback" not in result.output
        return result.exit_code, result.output.strip().splitlines()

    return run


def _sent(session: Session, db_url: str, tmp_path: Path, n: int = 3) -> Settings:
    settings = settings_for(db_url, tmp_path)
    path = project_with(tmp_path, session, csv=contacts_csv(n))
    send(path, settings, session)
    return settings


def _alive_elsewhere(session: Session) -> None:
    """A worker of another host that beat just now."""
    now = utcnow()
    session.add(
        WorkerBeat(name="other:1", host="other", pid=1, threads=4, started_at=now, seen_at=now)
    )
    session.commit()


def test_all_well_is_quiet_and_exit_0(
    health, session: Session, db_url: str, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    assert health() == (0, [])
    _sent(session, db_url, tmp_path)
    session.execute(update(Delivery).values(state="sent", sent_at=utcnow()))
    session.execute(update(Campaign).values(state="done", finished_at=utcnow()))
    session.commit()
    assert health() == (0, [])
    code, lines = health("--json")
    assert code == 0 and json.loads(lines[0]) == {"ok": True, "problems": []}


def test_work_due_and_no_worker_is_the_dead_man_line(  # type: ignore[no-untyped-def]
    health, run_cli, session: Session, db_url: str, tmp_path: Path
) -> None:
    _sent(session, db_url, tmp_path)
    code, lines = health()
    assert code == 1
    assert lines == [
        "no-worker: 3 deliveries due and no worker has ever been seen: start `outreach worker`"
    ]
    # campaigns status says it too, and tells a script with its exit code.
    env = {"OUTREACH_DATABASE_URL": db_url}
    status = run_cli("campaigns", "status", "news", "--json", env=env)
    assert status.exit_code == 3 and json.loads(status.output)["note"]
    _alive_elsewhere(session)
    assert health() == (0, [])
    assert run_cli("campaigns", "status", "news", "--json", env=env).exit_code == 0
    # A worker that stopped beating 10 minutes ago is gone.
    session.execute(update(WorkerBeat).values(seen_at=utcnow() - timedelta(minutes=10)))
    session.commit()
    code, lines = health()
    assert lines == [
        "no-worker: 3 deliveries due and no worker has been seen for 10 minutes: start "
        "`outreach worker`"
    ]


def test_paused_late_stuck_and_expired_leases(  # type: ignore[no-untyped-def]
    health, session: Session, db_url: str, tmp_path: Path
) -> None:
    _sent(session, db_url, tmp_path)
    _alive_elsewhere(session)
    long_ago = utcnow() - timedelta(minutes=40)
    first = session.scalars(select(Delivery.id).order_by(Delivery.id)).first()
    session.execute(update(Delivery).values(next_attempt_at=long_ago))
    session.execute(
        update(Delivery)
        .where(Delivery.id == first)
        .values(state="sending", worker="dead:7", lease_until=long_ago)
    )
    session.commit()
    code, lines = health()
    assert code == 1
    assert lines == [
        "stuck: news has 2 deliveries due for 40 minutes while a worker is alive: see the "
        "workers' log",
        "lease: news has 1 delivery in `sending` past their lease: their worker died and no "
        "live worker gave them back",
    ]
    session.execute(
        update(Campaign).values(state="paused", state_reason="10 consecutive relay failures")
    )
    session.commit()
    assert health()[1][0] == "paused: news (10 consecutive relay failures)"
    session.execute(update(Delivery).values(state="queued", lease_until=None))
    session.execute(update(Campaign).values(state="scheduled", send_at=long_ago))
    session.commit()
    assert health() == (1, ["late: news was to start 40 minutes ago"])


def test_bounce_complaint_and_policy_lines_name_the_campaign_and_the_threshold(  # type: ignore[no-untyped-def]
    health, session: Session, db_url: str, tmp_path: Path
) -> None:
    _sent(session, db_url, tmp_path, n=200)
    ids = session.scalars(select(Delivery.id).order_by(Delivery.id)).all()
    campaign_id = session.scalar(select(Campaign.id))
    session.execute(update(Delivery).values(state="sent", sent_at=utcnow()))
    session.execute(update(Campaign).values(state="done", finished_at=utcnow()))
    session.commit()
    assert health() == (0, [])
    # 0.5% complaints: over Gmail's 0.3%.
    for delivery_id in ids[:1]:
        record_event(session, "complaint", campaign_id=campaign_id, delivery_id=delivery_id)
    session.execute(update(Delivery).where(Delivery.id.in_(ids[1:12])).values(state="bounced"))
    record_event(
        session,
        "bounce",
        campaign_id=campaign_id,
        delivery_id=ids[20],
        data={"kind": "policy", "domain": "gmail.com", "code": 550},
    )
    session.commit()
    code, lines = health()
    assert code == 1
    assert lines == [
        "complaints: news: 1 complaint of 200 sent (0.5%; Gmail's limit is 0.3%)",
        "bounces: news: 11 bounced of 200 sent (5.5%; over 5%): clean the list before the next "
        "campaign",
        "policy: news: 1 policy rejection (5.7.x) from gmail.com in the last 24 hours: "
        "authentication (SPF, DKIM, DMARC) or reputation; see docs/operations.md, the runbook",
    ]
    # Thresholds of one's own.
    code, lines = health("--bounce-rate", "0.1", "--complaint-rate", "0.01")
    assert [line.split(":")[0] for line in lines] == ["policy"]


def test_unreachable_database_and_queue_are_one_line_each(health, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    code, lines = health(
        OUTREACH_DATABASE_URL=f"postgresql+psycopg://postgres@127.0.0.1:{port}/outreach",
        OUTREACH_QUEUE_URL=f"redis://127.0.0.1:{port}/0",
    )
    assert code == 1 and len(lines) == 2, lines
    assert lines[0].startswith(
        f"database: cannot reach the database postgresql+psycopg://postgres@127.0.0.1:{port}/outreach"
    )
    assert lines[1].startswith(f"queue: cannot reach the queue redis://127.0.0.1:{port}/0")


@pytest.fixture
def web(db_url: str, tmp_path: Path) -> Iterator[str]:
    """The web app behind a real HTTP server on a loopback port."""
    from werkzeug.serving import make_server

    from outreach.web import create_app

    server = make_server("127.0.0.1", 0, create_app(settings_for(db_url, tmp_path)), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_the_web_service_and_the_bounce_receiver_when_asked(health, web: str) -> None:  # type: ignore[no-untyped-def]
    smtp = start_server()
    try:
        assert health("--web", web, "--bounces", f"127.0.0.1:{smtp.port}") == (0, [])
    finally:
        smtp.stop()
    closed = free_port()
    code, lines = health("--web", f"http://127.0.0.1:{closed}", "--bounces", f"127.0.0.1:{closed}")
    assert code == 1 and len(lines) == 2
    assert lines[0].startswith(f"web: http://127.0.0.1:{closed}/healthz does not answer:")
    assert lines[1].startswith(
        f"bounce-receiver: the bounce receiver at 127.0.0.1:{closed} does not answer"
    )


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_prometheus_textfile(health, session: Session, db_url: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _sent(session, db_url, tmp_path)
    prom = tmp_path / "textfile" / "outreach.prom"
    prom.parent.mkdir()
    code, lines = health("--prometheus", str(prom))
    assert code == 1 and lines[0].startswith("no-worker:")
    text = prom.read_text()
    samples = _samples(text)
    assert samples[("outreach_deliveries", (("state", "queued"),))] == 3
    assert samples[("outreach_health_problems", (("check", "no-worker"),))] == 1
    assert samples[("outreach_health_problems", (("check", "paused"),))] == 0
    assert samples[("outreach_workers_alive", ())] == 0
    assert samples[("outreach_events_total", (("kind", "bounce"),))] == 0
    assert "# TYPE outreach_events_total counter" in text
    assert "# TYPE outreach_oldest_due_delivery_age_seconds gauge" in text


def test_a_worker_serves_the_figures_on_127_0_0_1(
    session: Session, db_url: str, tmp_path: Path
) -> None:
    _sent(session, db_url, tmp_path)
    settings = settings_for(db_url, tmp_path, queue_url=f"sqlite:///{tmp_path / 'queue.db'}")
    port = free_port()
    log = tmp_path / "worker.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "outreach", "worker", "--workers", "1", "--metrics-port", str(port)],
        env=worker_env(settings),
        stdout=subprocess.DEVNULL,
        stderr=log.open("ab"),
        cwd=tmp_path,
    )
    scraped: dict[str, Any] = {}

    def scrape() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
                scraped["text"] = answer.read().decode()
        except OSError:
            return False
        return _samples(scraped["text"]).get(("outreach_workers_alive", ()), 0) >= 1

    try:
        wait_for(scrape, 30, "the worker's /metrics", log, interval=0.5)
        wait_for(
            lambda: (
                scrape()
                and _samples(scraped["text"])[("outreach_deliveries", (("state", "sent"),))] == 3
            ),
            30,
            "the campaign to be sent",
            log,
            interval=0.5,
        )
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0
    samples = _samples(scraped["text"])
    assert samples[("outreach_health_problems", (("check", "no-worker"),))] == 0
    assert samples[("outreach_last_sent_timestamp_seconds", ())] > 0
