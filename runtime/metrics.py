"""The scaffolding of both services' Prometheus metrics: a registry of their own, buckets, exposition.

One registry per service instance (never the process-wide default), so that
tests and several services in one process do not share counters. Every
service counts deliveries by kind and outcome, refusals by stable code, the
time of each stage and the delay until evidence, and exports the watched TLS
certificates' expiry (`CertificateGauges`, one family for both, so that one
alert rule covers both); what else it exports is its own (`agents.metrics`,
`gateway.metrics`). No label ever holds content:
kinds, states, codes, queue and agency names only.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from protocol.encoding import parse_timestamp
from protocol.errors import MalformedInput
from runtime.certificates import WatchedCertificate

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
"""The Prometheus text exposition format."""
LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Seconds: one stage takes milliseconds; tens of seconds means the broker or the disk is away."""
DELAY_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0, 86400.0)
"""Seconds: evidence comes back in under a second with everyone up, in hours or days when a party was away."""
CERTIFICATE_METRIC_NAMES: Final = frozenset(
    {"rogatory_certificate_expiry_timestamp_seconds", "rogatory_certificate_readable"}
)
"""The series families of `CertificateGauges`, which each service's `METRIC_NAMES` includes."""


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


class CertificateGauges:
    """The watched TLS certificates: when each ends, and whether each file parses (`runtime.certificates`)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        # A timestamp, not seconds left, like the key expiry: a rule subtracts `time()`, and the value does not
        # go stale between scrapes.
        self.expiry = Gauge(
            "rogatory_certificate_expiry_timestamp_seconds",
            "When each watched TLS certificate stops being valid (Unix time).",
            ("path", "subject", "issuer"),
            registry=registry,
        )
        self.readable = Gauge(
            "rogatory_certificate_readable",
            "1 when a watched certificate file parses, 0 when it is missing or holds no certificate.",
            ("path",),
            registry=registry,
        )

    def set(self, certificates: Sequence[WatchedCertificate]) -> None:
        """Replace the series with these certificates' (a file no longer watched disappears)."""
        self.expiry.clear()
        self.readable.clear()
        for watched in certificates:
            path = str(watched.path)
            if watched.facts is None:
                self.readable.labels(path).set(0)
                continue
            self.readable.labels(path).set(1)
            facts = watched.facts
            self.expiry.labels(path, facts.subject, facts.issuer).set(facts.not_after.timestamp())


def age_seconds(at: str, now: datetime) -> float:
    """Seconds from the RFC 3339 time `at` to `now` (0 if `at` is in the future or unreadable)."""
    try:
        return max((now - parse_timestamp(at)).total_seconds(), 0.0)
    except MalformedInput:
        return 0.0


__all__ = [
    "CERTIFICATE_METRIC_NAMES",
    "CONTENT_TYPE",
    "DELAY_BUCKETS",
    "LATENCY_BUCKETS",
    "CertificateGauges",
    "ServiceMetrics",
    "age_seconds",
]
