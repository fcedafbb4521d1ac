"""The scaffolding of both services' Prometheus metrics: a registry of their own, buckets, exposition.

One registry per service instance (never the process-wide default), so that
tests and several services in one process do not share counters. Every
service counts deliveries by kind and outcome, refusals by stable code, the
time of each stage and the delay until evidence; what else it exports is its
own (`agents.metrics`, `gateway.metrics`). No label ever holds content:
kinds, states, codes, queue and agency names only.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from protocol.encoding import parse_timestamp
from protocol.errors import MalformedInput

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
"""The Prometheus text exposition format."""
LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Seconds: one stage takes milliseconds; tens of seconds means the broker or the disk is away."""
DELAY_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0, 86400.0)
"""Seconds: evidence comes back in under a second with everyone up, in hours or days when a party was away."""


class ServiceMetrics:
    """A registry of its own, with the series every service has: deliveries, errors by code, time per stage."""

    def __init__(self, service: str, *, deliveries: str, stages: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.deliveries = Counter(
            f"rogatory_{service}_{deliveries}",
            "Deliveries processed, by kind (message, evidence) and outcome.",
            ("kind", "result"),
            registry=self.registry,
        )
        self.errors = Counter(
            f"rogatory_{service}_errors",
            "Refusals and failures by stable error code.",
            ("code",),
            registry=self.registry,
        )
        self.stage_seconds = Histogram(
            f"rogatory_{service}_stage_seconds",
            f"Time spent in one stage: {stages}.",
            ("stage",),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def render(self) -> bytes:
        """The exposition text of every metric."""
        return generate_latest(self.registry)


def age_seconds(at: str, now: datetime) -> float:
    """Seconds from the RFC 3339 time `at` to `now` (0 if `at` is in the future or unreadable)."""
    try:
        return max((now - parse_timestamp(at)).total_seconds(), 0.0)
    except MalformedInput:
        return 0.0


__all__ = ["CONTENT_TYPE", "DELAY_BUCKETS", "LATENCY_BUCKETS", "ServiceMetrics", "age_seconds"]
