"""Prometheus metrics of the gateway, served at `GET /metrics`.

Two kinds of figures:

* events, counted where they happen: `GatewayMetrics.measured_handler` wraps
  the ingress pipeline's handler (messages by kind and outcome, errors by
  code, latency of the whole step, delay from acceptance to a recipient's
  evidence), `MeasuredPublisher` wraps the confirmed publisher (latency of
  the route step), `measured_dead_letters` wraps the dead-letter handler;
* state, read when scraped (`GatewayMetrics.refresh`): messages by type and
  state, queue depths and consumers from the broker's management API,
  checkpoint age, entries awaiting a checkpoint, dead letters by state, key,
  directory and TLS certificate expiry, consumer connections.

One registry per gateway (never the process-wide default), so that tests
and several gateways in one process do not share counters. No label ever
holds content: kinds, states, codes, queue and agency names only.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Final, Protocol, TypeVar

import structlog
from prometheus_client import Counter, Gauge, Histogram

from gateway.pipeline import IngressDelivery, Outcome
from gateway.store import GatewayStore
from protocol.directory import Directory
from protocol.encoding import parse_timestamp
from protocol.errors import MalformedInput
from runtime.broker import ManagementAccess, queue_figures
from runtime.certificates import WatchedCertificate
from runtime.errors import ManagementUnavailable
from runtime.logs import log_message
from runtime.metrics import CERTIFICATE_METRIC_NAMES, DELAY_BUCKETS, CertificateGauges, ServiceMetrics, age_seconds

log = structlog.get_logger("rogatory.gateway.messages")


METRIC_NAMES: Final = frozenset(
    {
        "rogatory_gateway_messages_total",
        "rogatory_gateway_errors_total",
        "rogatory_gateway_stage_seconds",
        "rogatory_gateway_evidence_delay_seconds",
        "rogatory_gateway_dead_letters_taken_total",
        "rogatory_gateway_message_states",
        "rogatory_queue_messages",
        "rogatory_queue_consumers",
        "rogatory_queue_publish_rate",
        "rogatory_queue_deliver_rate",
        "rogatory_gateway_management_up",
        "rogatory_gateway_log_entries",
        "rogatory_gateway_leader",
        "rogatory_gateway_entries_awaiting_checkpoint",
        "rogatory_gateway_checkpoint_age_seconds",
        "rogatory_gateway_checkpoint_cosignatures",
        "rogatory_gateway_checkpoint_timestamps_total",
        "rogatory_gateway_timestamp_age_seconds",
        "rogatory_gateway_log_recovering",
        "rogatory_gateway_log_witnessed_size",
        "rogatory_gateway_witness_last_cosignature_age_seconds",
        "rogatory_gateway_dead_letters",
        "rogatory_gateway_consumer_up",
        "rogatory_key_expiry_timestamp_seconds",
        "rogatory_directory_expiry_timestamp_seconds",
    }
    | CERTIFICATE_METRIC_NAMES
)
"""Every series family this module exports (histograms add `_bucket`, `_sum`, `_count`)."""


class _Taken(Protocol):
    @property
    def queue(self) -> str: ...


D = TypeVar("D")
T = TypeVar("T", bound=_Taken)


class _Publisher(Protocol):
    async def publish(self, *, routing_key: str, body: bytes, kind: str, message_id: str) -> None: ...


class GatewayMetrics(ServiceMetrics):
    """The gateway's metrics in a registry of their own."""

    def __init__(self) -> None:
        super().__init__(
            "gateway",
            deliveries="messages",
            stages="ingress (a whole delivery), route (publish and confirm), dead_letter",
        )
        r = self.registry
        self.evidence_delay = Histogram(
            "rogatory_gateway_evidence_delay_seconds",
            "From the gateway's acceptance of a message to a recipient's evidence about it.",
            buckets=DELAY_BUCKETS,
            registry=r,
        )
        self.dead_letters_taken = Counter(
            "rogatory_gateway_dead_letters_taken",
            "Dead letters taken from mla.dead, by queue of death.",
            ("queue",),
            registry=r,
        )
        self.message_states = Gauge(
            "rogatory_gateway_message_states",
            "Messages known to the gateway by type and state.",
            ("type", "state"),
            registry=r,
        )
        self.queue_messages = Gauge(
            "rogatory_queue_messages", "Messages in a queue by state (ready, unacked).", ("queue", "state"), registry=r
        )
        self.queue_consumers = Gauge("rogatory_queue_consumers", "Consumers of a queue.", ("queue",), registry=r)
        self.queue_publish_rate = Gauge(
            "rogatory_queue_publish_rate", "Messages per second into a queue.", ("queue",), registry=r
        )
        self.queue_deliver_rate = Gauge(
            "rogatory_queue_deliver_rate", "Messages per second out of a queue.", ("queue",), registry=r
        )
        self.management_up = Gauge(
            "rogatory_gateway_management_up", "1 when the broker's management API answered the last scrape.", registry=r
        )
        self.log_entries = Gauge("rogatory_gateway_log_entries", "Entries in the audit log.", registry=r)
        self.leader = Gauge(
            "rogatory_gateway_leader",
            "1 while this gateway process leads (signs checkpoints: gateway.leadership), else 0.",
            registry=r,
        )
        self.log_recovering = Gauge(
            "rogatory_gateway_log_recovering",
            "1 while the audit log is held behind a checkpoint its witnesses cosigned (a restored disk), else 0.",
            registry=r,
        )
        self.log_witnessed_size = Gauge(
            "rogatory_gateway_log_witnessed_size",
            "The largest log size a witness presented beyond this log (0: none); the log is held below it.",
            registry=r,
        )
        self.awaiting_checkpoint = Gauge(
            "rogatory_gateway_entries_awaiting_checkpoint",
            "Audit log entries not yet covered by a signed checkpoint (their proofs are delayed).",
            registry=r,
        )
        self.checkpoint_age = Gauge(
            "rogatory_gateway_checkpoint_age_seconds", "Age of the latest signed checkpoint.", registry=r
        )
        self.checkpoint_cosignatures = Gauge(
            "rogatory_gateway_checkpoint_cosignatures", "Witness cosignatures on the latest checkpoint.", registry=r
        )
        self.checkpoint_timestamps = Counter(
            "rogatory_gateway_checkpoint_timestamps_total",
            "Attempts at time-stamping a checkpoint (RFC 3161), by result: stamped, unavailable, invalid, untrusted.",
            ("result",),
            registry=r,
        )
        self.timestamp_age = Gauge(
            "rogatory_gateway_timestamp_age_seconds",
            "Seconds since the newest checkpoint time-stamp was recorded (absent until the first).",
            registry=r,
        )
        self.witness_age = Gauge(
            "rogatory_gateway_witness_last_cosignature_age_seconds",
            "Seconds since each witness last cosigned a checkpoint.",
            ("witness",),
            registry=r,
        )
        self.dead_letters = Gauge(
            "rogatory_gateway_dead_letters", "Dead letters recorded, by state.", ("state",), registry=r
        )
        self.consumer_up = Gauge(
            "rogatory_gateway_consumer_up", "1 while a consumer of the gateway consumes.", ("consumer",), registry=r
        )
        self.key_expiry = Gauge(
            "rogatory_key_expiry_timestamp_seconds",
            "When each published key stops being valid (Unix time).",
            ("owner", "use", "key_id"),
            registry=r,
        )
        self.directory_expiry = Gauge(
            "rogatory_directory_expiry_timestamp_seconds", "When the directory in force expires.", registry=r
        )
        self.certificates = CertificateGauges(r)

    # -- events ----------------------------------------------------------------------

    def measured_handler(
        self,
        handle: Callable[[IngressDelivery], Awaitable[Outcome]],
        store: GatewayStore,
        clock: Callable[[], datetime],
    ) -> Callable[[IngressDelivery], Awaitable[Outcome]]:
        """`handle`, counted, timed and logged in one canonical line (a transient failure is retried, not counted)."""

        async def measured(delivery: IngressDelivery) -> Outcome:
            started = time.perf_counter()
            outcome = await handle(delivery)
            elapsed = time.perf_counter() - started
            self.stage_seconds.labels("ingress").observe(elapsed)
            self.deliveries.labels(outcome.kind, outcome.result).inc()
            if outcome.code is not None:
                self.errors.labels(str(outcome.code)).inc()
            record = (
                await store.message(outcome.sender, outcome.message_id)
                if outcome.message_id and outcome.sender
                else None
            )
            if record is not None and outcome.kind == "evidence" and outcome.result == "forwarded":
                self._observe_evidence_delay(record.received_at, clock())
            log_message(
                log,
                message_id=outcome.message_id,
                case_id=None if record is None else record.case_id,
                sender=outcome.sender or delivery.user_id,
                recipient=None if record is None else ",".join(record.recipients),
                message_type=None if record is None else record.message_type,
                kind=outcome.kind,
                result=outcome.result,
                code=outcome.code,
                duration_ms=round(elapsed * 1000, 2),
                **(outcome.batch or {}),
            )
            return outcome

        return measured

    def _observe_evidence_delay(self, accepted_at: str, now: datetime) -> None:
        try:
            accepted = parse_timestamp(accepted_at)
        except MalformedInput:
            return
        self.evidence_delay.observe(max((now - accepted).total_seconds(), 0.0))

    def measured_dead_letters(self, take: Callable[[D], Awaitable[T]]) -> Callable[[D], Awaitable[T]]:
        """`take` of `gateway.deadletters.DeadLetters`, counted and timed."""

        async def measured(delivery: D) -> T:
            started = time.perf_counter()
            taken = await take(delivery)
            self.stage_seconds.labels("dead_letter").observe(time.perf_counter() - started)
            self.dead_letters_taken.labels(taken.queue).inc()
            return taken

        return measured

    # -- state, at scrape time -------------------------------------------------------

    async def refresh(
        self,
        *,
        store: GatewayStore,
        tree_size: int,
        directory: Directory,
        consumers: dict[str, bool],
        management: ManagementAccess | None,
        vhost: str,
        now: datetime,
        certificates: Sequence[WatchedCertificate] = (),
    ) -> None:
        """Read the gauges' values from the store, the directory, the watched certificates and the broker."""
        self.log_entries.set(tree_size)
        latest = await store.latest_checkpoint()
        self.awaiting_checkpoint.set(tree_size - (latest.tree_size if latest is not None else 0))
        if latest is not None:
            self.checkpoint_age.set(age_seconds(latest.signed_at, now))
            self.checkpoint_cosignatures.set(len(latest.cosignatures))
        stamped = await store.last_timestamp()
        if stamped is not None:
            self.timestamp_age.set(age_seconds(stamped[1], now))
        for witness, at in (await store_witness_times(store)).items():
            self.witness_age.labels(witness).set(age_seconds(at, now))
        self.dead_letters.clear()
        for state, count in await _grouped(store, "SELECT state, COUNT(*) FROM dead_letters GROUP BY state"):
            self.dead_letters.labels(state).set(count)
        self.dead_letters.labels("held")  # present at 0, so that an alert on it has a series to read
        self.message_states.clear()
        query = "SELECT message_type, state, COUNT(*) FROM messages GROUP BY message_type, state"
        for row in await _rows(store, query):
            self.message_states.labels(str(row[0]), str(row[1])).set(int(str(row[2])))
        for name, up in consumers.items():
            self.consumer_up.labels(name).set(1 if up else 0)
        self._keys(directory)
        self.certificates.set(certificates)
        await self._queues(management, vhost)

    def _keys(self, directory: Directory) -> None:
        self.key_expiry.clear()
        self.directory_expiry.set(directory.expires_at.timestamp())
        for agency in directory.agencies:
            for key in agency.signing_keys:
                self.key_expiry.labels(agency.agency_id, "signing", key.key_id).set(key.valid_until.timestamp())
            for enc in agency.encryption_keys:
                self.key_expiry.labels(agency.agency_id, "encryption", enc.key_id).set(enc.valid_until.timestamp())
        gateway = directory.gateway
        for key in gateway.evidence_keys:
            self.key_expiry.labels(gateway.gateway_id, "evidence", key.key_id).set(key.valid_until.timestamp())
        for key in gateway.log_keys:
            self.key_expiry.labels(gateway.gateway_id, "log", key.key_id).set(key.valid_until.timestamp())

    async def _queues(self, management: ManagementAccess | None, vhost: str) -> None:
        if management is None:
            self.management_up.set(0)
            return
        try:
            figures = await queue_figures(management, vhost, timeout_s=5.0)
        except ManagementUnavailable as exc:
            log.warning("metrics_queues_unavailable", error=str(exc)[:200])
            self.management_up.set(0)
            return
        self.management_up.set(1)
        for gauge in (self.queue_messages, self.queue_consumers, self.queue_publish_rate, self.queue_deliver_rate):
            gauge.clear()
        for queue in figures:
            name = str(queue["name"])
            self.queue_messages.labels(name, "ready").set(queue["messages_ready"] or 0)
            self.queue_messages.labels(name, "unacked").set(queue["messages_unacknowledged"] or 0)
            self.queue_consumers.labels(name).set(queue["consumers"] or 0)
            self.queue_publish_rate.labels(name).set(queue["publish_rate"] or 0.0)
            self.queue_deliver_rate.labels(name).set(queue["deliver_rate"] or 0.0)


class MeasuredPublisher:
    """A publisher whose publishes are timed as the `route` stage."""

    def __init__(self, inner: _Publisher, metrics: GatewayMetrics) -> None:
        self._inner = inner
        self._metrics = metrics

    async def publish(self, *, routing_key: str, body: bytes, kind: str, message_id: str) -> None:
        """Publish through the wrapped publisher, timing the confirm."""
        started = time.perf_counter()
        await self._inner.publish(routing_key=routing_key, body=body, kind=kind, message_id=message_id)
        self._metrics.stage_seconds.labels("route").observe(time.perf_counter() - started)


async def _rows(store: GatewayStore, query: str) -> Sequence[Sequence[object]]:
    """Read-only aggregate queries over the store's reader connection (metrics and consoles only)."""
    return await store._read.fetchall(query)  # noqa: SLF001 - read-only aggregates kept out of the store's write API


async def _grouped(store: GatewayStore, query: str) -> list[tuple[str, int]]:
    return [(str(row[0]), int(str(row[1]))) for row in await _rows(store, query)]


async def store_witness_times(store: GatewayStore) -> dict[str, str]:
    """When each witness last cosigned a checkpoint."""
    rows = await _rows(store, "SELECT witness, MAX(cosigned_at) FROM cosignatures GROUP BY witness")
    return {str(witness): str(at) for witness, at in rows if at is not None}


__all__ = ["METRIC_NAMES", "GatewayMetrics", "MeasuredPublisher", "store_witness_times"]
