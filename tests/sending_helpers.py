"""Driving a campaign in-process: the same Sender the worker runs, called directly."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from sqlalchemy.orm import Session

from outreach.config import Settings
from outreach.contacts import import_csv
from outreach.lifecycle import SendResult, send_campaign, status
from outreach.pipeline import Sender
from outreach.transport import Transport, transport_for
from tests.conftest import write
from tests.project import make_project


def settings_for(db_url: str, tmp_path: Path, **overrides: object) -> Settings:
    base = Settings(
        database_url=db_url,
        queue_url="memory://",
        outbox=tmp_path / "outbox",
        postal_address="Seoul",
        secret_key="_6FuslupQUggb0oT5JRL-5S1KOu2C5jSHsLnhjAj",
        rate=Settings().rate,
        retry_delay=0.05,
        max_attempts=4,
        lease_seconds=30,
    )
    return replace(base, **overrides)  # type: ignore[arg-type]


def contacts_csv(n: int, domain: str = "example.org", lang: str = "ko") -> str:
    rows = "".join(f"person{i}@{domain},담당자 {i},City {i},KR,{lang},full\n" for i in range(n))
    return "email,name,organisation,country,language,membership\n" + rows


def project_with(tmp_path: Path, session: Session, csv: str | None = None, **kw: str) -> Path:
    path = make_project(tmp_path, **kw)
    if csv is not None:
        write(tmp_path / "contacts.csv", csv)
    import_csv(session, tmp_path / "contacts.csv")
    return path


def send(path: Path, settings: Settings, session: Session) -> SendResult:
    session.commit()
    return send_campaign(path, settings, session, enqueue=None)


def campaign_id(session: Session, name: str = "news") -> int:
    from sqlalchemy import select

    from outreach.models import Campaign

    found = session.scalar(select(Campaign.id).where(Campaign.name == name))
    session.commit()
    assert found is not None
    return found


def drain(
    settings: Settings,
    session: Session,
    name: str = "news",
    transport: Transport | None = None,
    timeout: float = 30,
) -> None:
    """Run the sender until the campaign has nothing left, honouring retry times."""
    cid = campaign_id(session, name)
    transport = transport or transport_for(settings)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            outcome = Sender(settings, transport).run(cid)
            if outcome.wake_at is None:
                return
            from outreach.models import utcnow

            time.sleep(max(0.0, min(1.0, (outcome.wake_at - utcnow()).total_seconds())))
        raise AssertionError("the campaign did not finish in time")
    finally:
        transport.close()


def current(settings: Settings, name: str = "news"):  # type: ignore[no-untyped-def]
    from outreach.db import reader_sessionmaker

    with reader_sessionmaker(settings.database_url)() as session:
        return status(session, name)
