"""A send-rate ceiling shared by every worker on every machine, kept in the database.

GCRA (the generic cell rate algorithm): each limiter stores one number, the theoretical
arrival time (TAT) of the next message. A worker reserves a run of n slots with one atomic
UPDATE, then spaces its n messages 1/rate apart from the start of its run. Reserving a few
hundred milliseconds' worth at a time keeps the database out of the per-message path.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import cast

from sqlalchemy import Table, case, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from outreach.models import RateLimit

RESERVE_SECONDS = 0.25


@dataclass(frozen=True)
class Limit:
    key: str
    per_second: float


def reserve(session: Session, limit: Limit, n: int, now: float | None = None) -> float:
    """Reserve n slots; returns the time of the first. Commits, so others see it at once."""
    now = time.time() if now is None else now
    span = n / limit.per_second
    table = cast(Table, RateLimit.__table__)
    dialect = session.get_bind().dialect.name
    insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)
    session.execute(insert.values(key=limit.key, tat=0.0).on_conflict_do_nothing())
    new_tat = session.execute(
        update(table)
        .where(table.c.key == limit.key)
        .values(tat=case((table.c.tat > now, table.c.tat), else_=now) + span)
        .returning(table.c.tat)
    ).scalar_one()
    session.commit()
    return float(new_tat) - span


@dataclass
class Pacer:
    """Hands out send times for one worker thread under one or more shared limits."""

    session_factory: Callable[[], Session]
    limits: Sequence[Limit]
    sleep: Callable[[float], None] = time.sleep
    _slots: list[float] = field(default_factory=list)

    def wait(self, remaining: int, before_sleep: Callable[[], None] | None = None) -> None:
        """Block until the next message may go; `remaining` sizes the next reservation.
        `before_sleep` runs first when there is a wait (the sender commits its outcomes)."""
        limits = [lim for lim in self.limits if lim.per_second > 0]
        if not limits:
            return
        if not self._slots:
            slowest = min(lim.per_second for lim in limits)
            n = max(1, min(remaining, math.ceil(slowest * RESERVE_SECONDS)))
            with self.session_factory() as session:
                starts = [(reserve(session, lim, n), lim.per_second) for lim in limits]
            self._slots = [max(start + i / rate for start, rate in starts) for i in range(n)]
        at = self._slots.pop(0)
        delay = at - time.time()
        if delay > 0:
            if before_sleep is not None:
                before_sleep()
                delay = at - time.time()
            self.sleep(max(0.0, delay))

    def unused(self) -> int:
        return len(self._slots)


def latest(session: Session, key: str) -> float | None:
    return session.scalar(select(RateLimit.tat).where(RateLimit.key == key))
