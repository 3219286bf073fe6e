"""The figures of `health` in Prometheus' text format: the worker's own endpoint
(`outreach worker --metrics-port`, on 127.0.0.1) or a file for node_exporter's textfile
collector (`outreach health --prometheus FILE`). Read from the database at each scrape, so
every worker and the file say the same.

Names follow Prometheus' conventions: `outreach_` prefix, base units (seconds), `_total`
for counters, a label per state or kind.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, start_http_server, write_to_textfile
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from outreach.health import Health
from outreach.models import CAMPAIGN_STATES, DELIVERY_STATES, EVENT_KINDS, utcnow

# The checks `health` runs, so that each has a series (0 while all is well).
CHECKS = (
    "database",
    "queue",
    "no-worker",
    "paused",
    "late",
    "stuck",
    "lease",
    "complaints",
    "bounces",
    "deferred",
    "policy",
    "web",
    "bounce-receiver",
)


class HealthCollector(Collector):
    """Runs `check()` at every scrape and turns what it found into metrics."""

    def __init__(self, check: Callable[[], Health]) -> None:
        self.check = check

    def collect(self) -> Iterator[Metric]:
        health = self.check()
        problems = Counter(p.check for p in health.problems)
        gauge = GaugeMetricFamily(
            "outreach_health_problems",
            "Problems `outreach health` reports now, by check (0: all well).",
            labels=["check"],
        )
        for check in CHECKS:
            gauge.add_metric([check], problems.get(check, 0))
        yield gauge
        found = health.figures
        if found is None:
            return  # the database did not answer: only the problems above
        now = utcnow()
        yield GaugeMetricFamily(
            "outreach_workers_alive", "Worker processes alive (heartbeats).", found.workers_alive
        )
        yield GaugeMetricFamily(
            "outreach_worker_heartbeat_age_seconds",
            "Seconds since the newest worker heartbeat (a dead-man signal; -1: never).",
            (now - found.last_heartbeat).total_seconds() if found.last_heartbeat else -1,
        )
        deliveries = GaugeMetricFamily(
            "outreach_deliveries", "Deliveries in each state.", labels=["state"]
        )
        for state in DELIVERY_STATES:
            deliveries.add_metric([state], found.deliveries.get(state, 0))
        yield deliveries
        campaigns = GaugeMetricFamily(
            "outreach_campaigns", "Campaigns in each state.", labels=["state"]
        )
        for state in CAMPAIGN_STATES:
            campaigns.add_metric([state], found.campaigns.get(state, 0))
        yield campaigns
        yield GaugeMetricFamily(
            "outreach_deliveries_due",
            "Deliveries of sending campaigns whose time has come and that no worker holds.",
            found.due,
        )
        yield GaugeMetricFamily(
            "outreach_oldest_due_delivery_age_seconds",
            "How long the oldest due delivery has waited (0: none waits).",
            (now - found.oldest_due).total_seconds() if found.oldest_due else 0,
        )
        events = CounterMetricFamily(
            "outreach_events", "Events recorded, by kind (bounces, complaints, …).", labels=["kind"]
        )
        for kind in EVENT_KINDS:
            events.add_metric([kind], found.events.get(kind, 0))
        yield events
        yield GaugeMetricFamily(
            "outreach_last_sent_timestamp_seconds",
            "When a message was last sent (Unix time; 0: never).",
            found.last_sent.timestamp() if found.last_sent else 0,
        )


def registry_for(check: Callable[[], Health]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HealthCollector(check))
    return registry


def write_textfile(path: Path, check: Callable[[], Health]) -> None:
    """For node_exporter's textfile collector: written whole, then renamed into place."""
    write_to_textfile(str(path), registry_for(check))


def serve(port: int, check: Callable[[], Health], host: str = "127.0.0.1") -> None:
    """The worker's own /metrics endpoint, from a thread of its own; local only."""
    start_http_server(port, addr=host, registry=registry_for(check))
