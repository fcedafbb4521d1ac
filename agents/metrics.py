"""Prometheus metrics of an agent, served at `GET /metrics` (with the agent's bearer token).

Events are counted where they happen: `AgentMetrics.measured_handler` wraps
the receiver (deliveries by kind and outcome, errors by code, latency of the
receive step, and for each piece of evidence about a message this agency
sent, the delay since it was submitted). State is read when scraped
(`AgentMetrics.refresh`): the outbox by message type and status, evidence
still waiting for its inclusion proof and the age of the oldest such (the
proof delay), the witness's figures from the health answer, and the agent's own
TLS certificates' expiry (`runtime.metrics.CertificateGauges`, the gateway's
family, so the same alert rules cover agents).

One registry per agent, never the process-wide default. Labels hold kinds,
types, statuses and codes only, never content.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, Final

import aiosqlite
import structlog
from prometheus_client import Gauge, Histogram

from agents.receiving import InboxDelivery, Received
from agents.store import AgentStore
from protocol.encoding import parse_timestamp
from protocol.errors import MalformedInput
from runtime.certificates import WatchedCertificate
from runtime.logs import log_message
from runtime.metrics import CERTIFICATE_METRIC_NAMES, DELAY_BUCKETS, CertificateGauges, ServiceMetrics, age_seconds

log = structlog.get_logger("rogatory.agent.messages")

EVIDENCE_TYPES: Final = frozenset(
    {
        "SUBMISSION_ACCEPTED",
        "SUBMISSION_REJECTED",
        "RELAY_ACCEPTED",
        "RELAY_FAILED",
        "DELIVERY",
        "NON_DELIVERY",
        "RETRIEVAL",
        "NON_RETRIEVAL",
    }
)

METRIC_NAMES: Final = frozenset(
    {
        "rogatory_agent_deliveries_total",
        "rogatory_agent_errors_total",
        "rogatory_agent_stage_seconds",
        "rogatory_agent_evidence_delay_seconds",
        "rogatory_agent_outbox_messages",
        "rogatory_agent_evidence_awaiting_proof",
        "rogatory_agent_oldest_unproven_evidence_age_seconds",
        "rogatory_agent_inclusion_proofs_overdue",
        "rogatory_agent_forks_detected",
        "rogatory_agent_inbox_connected",
        "rogatory_agent_webhook_subscriptions",
        "rogatory_agent_webhook_pending_events",
        "rogatory_agent_webhook_dropped_events",
    }
    | CERTIFICATE_METRIC_NAMES
)
"""Every series family this module exports (histograms add `_bucket`, `_sum`, `_count`)."""


class AgentMetrics(ServiceMetrics):
    """An agent's metrics in a registry of their own."""

    def __init__(self) -> None:
        super().__init__("agent", deliveries="deliveries", stages="receive (verify, open, store one delivery)")
        r = self.registry
        self.evidence_delay = Histogram(
            "rogatory_agent_evidence_delay_seconds",
            "From this agency's submission of a message to each piece of evidence about it, by evidence type.",
            ("type",),
            buckets=DELAY_BUCKETS,
            registry=r,
        )
        self.outbox = Gauge(
            "rogatory_agent_outbox_messages",
            "Messages this agency sent, by message type and status.",
            ("type", "status"),
            registry=r,
        )
        self.awaiting_proof = Gauge(
            "rogatory_agent_evidence_awaiting_proof", "Evidence held without an inclusion proof yet.", registry=r
        )
        self.oldest_unproven = Gauge(
            "rogatory_agent_oldest_unproven_evidence_age_seconds",
            "Age of the oldest evidence still waiting for its inclusion proof (the proof delay).",
            registry=r,
        )
        self.proofs_overdue = Gauge(
            "rogatory_agent_inclusion_proofs_overdue",
            "Evidence whose inclusion proof is later than the log promises.",
            registry=r,
        )
        self.forks = Gauge(
            "rogatory_agent_forks_detected", "Forks of the gateway's log this witness detected.", registry=r
        )
        self.inbox_connected = Gauge(
            "rogatory_agent_inbox_connected", "1 while the agent consumes its inbox.", registry=r
        )
        self.webhook_subscriptions = Gauge(
            "rogatory_agent_webhook_subscriptions",
            "Webhook subscriptions by state (active, suspended: failing too long, or its token withdrawn).",
            ("state",),
            registry=r,
        )
        self.webhook_pending = Gauge(
            "rogatory_agent_webhook_pending_events", "Webhook events held, not yet delivered.", registry=r
        )
        self.webhook_dropped = Gauge(
            "rogatory_agent_webhook_dropped_events",
            "Webhook events dropped because their subscription was owed too many (since it was made).",
            registry=r,
        )
        self.certificates = CertificateGauges(r)

    def measured_handler(
        self,
        handle: Callable[[InboxDelivery], Awaitable[Received]],
        store: AgentStore,
        clock: Callable[[], datetime],
        *,
        agency: str,
    ) -> Callable[[InboxDelivery], Awaitable[Received]]:
        """`handle`, counting each outcome and timing it; evidence kept is measured against its submission."""

        async def measured(delivery: InboxDelivery) -> Received:
            started = time.perf_counter()
            received = await handle(delivery)
            elapsed = time.perf_counter() - started
            self.stage_seconds.labels("receive").observe(elapsed)
            self.deliveries.labels(received.kind, received.result).inc()
            case_id = recipient = None
            # Only the columns the line needs: never the rows' sealed bytes.
            if received.kind == "evidence" and received.message_id:
                sent = await store.outbox_summary(received.message_id)
                if sent is not None:
                    case_id, recipient, created_at = sent
                    if received.result == "kept":  # for kept evidence, `code` is its type (`agents.receiving`)
                        self._observe_delay(created_at, str(received.code), clock())
            elif received.message_id and received.sender:
                case_id = await store.inbox_case_id(received.sender, received.message_id)
                recipient = None if case_id is None else agency
            if received.code is not None and received.result in {"refused", "dropped"}:
                self.errors.labels(str(received.code)).inc()
            log_message(
                log,
                message_id=received.message_id,
                case_id=case_id,
                sender=received.sender,
                recipient=recipient,
                kind=received.kind,
                result=received.result,
                code=received.code,
                duration_ms=round(elapsed * 1000, 2),
                **(received.batch or {}),
            )
            return received

        return measured

    def _observe_delay(self, submitted_at: str, evidence_type: str, now: datetime) -> None:
        if evidence_type not in EVIDENCE_TYPES:
            return
        try:
            submitted = parse_timestamp(submitted_at)
        except MalformedInput:
            return
        self.evidence_delay.labels(evidence_type).observe(max((now - submitted).total_seconds(), 0.0))

    async def refresh(
        self,
        store: AgentStore,
        health: dict[str, Any],
        now: datetime,
        certificates: Sequence[WatchedCertificate] = (),
    ) -> None:
        """Read the gauges' values from the store, the health answer and the watched certificates."""
        self.outbox.clear()
        for row in await _rows(
            store, "SELECT message_type, status, COUNT(*) FROM outbox GROUP BY message_type, status"
        ):
            self.outbox.labels(str(row[0]), str(row[1])).set(int(row[2]))
        rows = await _rows(store, "SELECT COUNT(*), MIN(received_at) FROM evidence WHERE inclusion_proof IS NULL")
        count, oldest = (int(rows[0][0]), rows[0][1]) if rows else (0, None)
        self.awaiting_proof.set(count)
        self.oldest_unproven.set(age_seconds(str(oldest), now) if oldest is not None else 0.0)
        self.proofs_overdue.set(int(health.get("inclusion_proofs_overdue") or 0))
        self.forks.set(int(health.get("forks_detected") or 0))
        self.inbox_connected.set(1 if health.get("inbox_connected") else 0)
        states = {"active": 0, "suspended": 0}
        dropped = 0
        for row in await _rows(
            store, "SELECT state, COUNT(*), COALESCE(SUM(dropped), 0) FROM webhook_subscriptions GROUP BY state"
        ):
            states[str(row[0])] = int(row[1])
            dropped += int(row[2])
        for state, number in states.items():
            self.webhook_subscriptions.labels(state).set(number)
        self.webhook_dropped.set(dropped)
        rows = await _rows(store, "SELECT COUNT(*) FROM webhook_outbox")
        self.webhook_pending.set(int(rows[0][0]) if rows else 0)
        self.certificates.set(certificates)


async def _rows(store: AgentStore, query: str) -> Sequence[Sequence[Any]]:
    """Read-only aggregates on the store's reading connection, which sees committed rows only."""
    reader: aiosqlite.Connection = store._scan_db  # noqa: SLF001 - read-only aggregates, kept out of the store's API
    async with reader.execute(query) as cursor:
        return [tuple(row) for row in await cursor.fetchall()]


__all__ = ["METRIC_NAMES", "AgentMetrics"]
