"""One gateway process: its parts, wired in the order a message meets them, on the shared runner.

Start: settings -> keys -> directory (verified) -> store -> audit log (tree
rebuilt) -> directory leaf -> directory watch -> publisher, pipeline, relay ->
consumers of ingress and dead letters -> HTTP API (audit, operations,
consoles, blobs) -> tasks. The watch puts newer directory versions in force
(each a leaf first) while the gateway runs, and refuses traffic once the one
in force expired (`runtime.directory`). Stopping, supervision and exit statuses are `runtime.runner`'s: the
consumers stop taking deliveries, finish the one in hand (acking it or
handing it back) and hand back what they had buffered, the relay drains what
was committed, a last checkpoint is signed (by the leader), and the
connections close (the leadership lock's first).

Several processes may run one gateway on one PostgreSQL database, each with
its own data directory (`ROGATORY_BLOB_DIR` shared). In every process:
the ingress and dead-letter consumers (competing consumers), the outbox
relay (each row claimed by one process), the directory watch (a version
adopted twice is one leaf: appends are idempotent on identity), the HTTP
API. Only in the leader (`gateway.leadership`): checkpoints, time-stamps,
the deadline sweep and the blob sweeper.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog

from gateway.api import GatewayApi, TokenTable
from gateway.auditlog import AuditLog
from gateway.blobs import AttachmentGate, BlobApi, BlobStore, BlobSweeper
from gateway.console_api import AlertThresholds, ConsoleApi
from gateway.deadletters import DeadLetters, OperationsApi, taken_summary
from gateway.deadlines import DeadlineWatcher
from gateway.directory import DirectoryHolder
from gateway.directory_api import DirectoryApi
from gateway.leadership import Leadership
from gateway.metrics import GatewayMetrics, MeasuredPublisher
from gateway.outgoing import OutgoingRelay
from gateway.pipeline import GatewayIdentity, IngressDelivery, IngressPipeline, Outcome
from gateway.recovery import LogRecovery
from gateway.reports import ReportSigningApi
from gateway.settings import GatewaySettings
from gateway.store import GatewayStore
from gateway.timestamping import CheckpointStamper, StampAttempt
from gateway.transport import DeadDelivery, dead_letter_consumer, deliver_publisher, ingress_consumer
from protocol.directory import Directory
from protocol.keys import SigningPrivateKey, SigningPublicKey
from protocol.signing import SignedStatement
from runtime.broker import (
    BrokerEndpoints,
    ConfirmedPublisher,
    FailoverConnector,
    ManagementAccess,
    QueueConsumer,
    service_endpoints,
)
from runtime.data_dir import DataDirClaim, claim_data_dir, identity_of, released
from runtime.directory import DirectoryWatch
from runtime.errors import ConfigurationError, TransientFailure
from runtime.reports.errors import ReportError
from runtime.reports.pades import ReportSigner, load_report_signer
from runtime.runner import (
    Clock,
    Service,
    Task,
    authority_key,
    key_named,
    read_directory,
    run_service,
    service_main,
    unlock_keys,
    utc_now,
)
from runtime.supervision import ConsumerWatchdog
from runtime.timestamps import TimestampClient

log = structlog.get_logger("rogatory.gateway")


def _load_keys(settings: GatewaySettings) -> tuple[SigningPrivateKey, SigningPrivateKey]:
    """The evidence key and the log key."""
    keys = unlock_keys(settings.keystore_file, settings.keystore_passphrase_file)
    return (
        SigningPrivateKey(key_named(keys, "evidence", settings.keystore_file)),
        SigningPrivateKey(key_named(keys, "log", settings.keystore_file)),
    )


def _check_keys_listed(directory: Directory, evidence_key: SigningPrivateKey, log_key: SigningPrivateKey) -> None:
    if evidence_key.key_id not in {key.key_id for key in directory.gateway.evidence_keys}:
        raise ConfigurationError(f"evidence key {evidence_key.key_id} is not listed for the gateway in the directory")
    if log_key.key_id not in {key.key_id for key in directory.gateway.log_keys}:
        raise ConfigurationError(f"log key {log_key.key_id} is not listed for the gateway in the directory")


def _management_access(settings: GatewaySettings) -> ManagementAccess | None:
    """Access to the broker's management API, when all three settings are given."""
    if settings.management_url is None or settings.management_user is None or settings.management_password_file is None:
        return None
    try:
        password = settings.management_password_file.read_text().strip()
    except OSError as exc:
        raise ConfigurationError(f"cannot read ROGATORY_MANAGEMENT_PASSWORD_FILE: {exc}") from exc
    return ManagementAccess(base_url=settings.management_url, username=settings.management_user, password=password)


async def _open_store(settings: GatewaySettings) -> GatewayStore:
    """PostgreSQL when `ROGATORY_DATABASE_URL` is set, else SQLite in the data directory."""
    if settings.database_url is not None:
        return await GatewayStore.open_postgres(settings.database_url)
    return await GatewayStore.open(settings.data_dir / "gateway.db", synchronous=settings.sqlite_synchronous)


def _while_leading(
    leadership: Leadership, interval_s: float, step: Callable[[], Awaitable[object]], *, failed: str
) -> Task:
    """A singleton duty: `step` every `interval_s` seconds, only while this process leads (`gateway.leadership`)."""

    async def duty(stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            if leadership.leading:
                try:
                    await step()
                except TransientFailure as exc:
                    log.warning(failed, error=str(exc)[:300])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=interval_s)

    return duty


def _checkpoints(audit: AuditLog, settings: GatewaySettings, clock: Clock, leadership: Leadership) -> Task:
    """Sign a checkpoint whenever one is due, every `checkpoint_interval_s`, while this process leads."""
    idle = timedelta(seconds=settings.idle_checkpoint_interval_s)
    return _while_leading(
        leadership,
        settings.checkpoint_interval_s,
        lambda: audit.checkpoint_if_due(clock(), idle_interval=idle),
        failed="checkpoint_failed",
    )


def _timestamps(core: _Core, metrics: GatewayMetrics, client: TimestampClient, leadership: Leadership) -> Task:
    """Time-stamp the newest checkpoint every `tsa_interval_s` (looked at every `checkpoint_interval_s`), leading."""
    settings = core.settings

    def count(attempt: StampAttempt) -> None:
        metrics.checkpoint_timestamps.labels(attempt.result.value).inc()

    stamper = CheckpointStamper(
        core.store,
        client,
        core.held_directory,
        interval=timedelta(seconds=settings.tsa_interval_s),
        on_attempt=count,
    )
    return _while_leading(
        leadership,
        settings.checkpoint_interval_s,
        lambda: stamper.stamp_if_due(core.clock()),
        failed="timestamp_failed",
    )


@dataclass(frozen=True, slots=True)
class _Core:
    """What every part of the gateway stands on: its identity, the log, the directory in force, the store."""

    settings: GatewaySettings
    clock: Clock
    authority: SigningPublicKey
    endpoints: BrokerEndpoints
    store: GatewayStore
    audit: AuditLog
    directory: DirectoryWatch
    """The directory in force: reloaded from its file, each new version logged first, refused once expired."""
    identity: GatewayIdentity
    recovery: LogRecovery
    """The log held while it is behind its witnesses (a restored disk), and brought back (`gateway.recovery`)."""
    claim: DataDirClaim
    """The lock on the data directory, held until the stores closed (`runtime.data_dir`)."""

    def current_directory(self) -> Directory:
        """The directory in force now (`DirectoryExpired` once it expired)."""
        return self.directory.current

    def held_directory(self) -> Directory:
        """The directory in force, expired or not: for the operator's console, which must show an expired one."""
        return self.directory.held


def _report_signer(settings: GatewaySettings) -> ReportSigner | None:
    """The document-signing certificate and key the gateway signs reports with, if configured."""
    cert, key, ca = settings.report_signing_cert_file, settings.report_signing_key_file, settings.report_signing_ca_file
    if cert is None or key is None or ca is None:
        return None
    try:
        return load_report_signer(cert, key, ca)
    except ReportError as exc:
        raise ConfigurationError(f"report signing: {exc.detail}") from exc


async def _open_core(settings: GatewaySettings, clock: Clock) -> _Core:
    """Keys and directory verified, then the store and the audit log (tree rebuilt, directory leaf appended)."""
    authority = authority_key(settings.authority_key)
    evidence_key, log_key = _load_keys(settings)
    first_directory = read_directory(settings.directory_file, authority, now=clock(), limits=settings.limits)
    _check_keys_listed(first_directory, evidence_key, log_key)
    identity = identity_of(
        "gateway", first_directory.gateway.gateway_id, (evidence_key.public_key.raw, log_key.public_key.raw)
    )
    claim = await asyncio.to_thread(claim_data_dir, settings.data_dir, identity)
    try:
        return await _open_claimed(
            settings,
            clock,
            claim,
            authority=authority,
            first_directory=first_directory,
            evidence_key=evidence_key,
            log_key=log_key,
        )
    except BaseException:
        claim.release()
        raise


async def _open_claimed(
    settings: GatewaySettings,
    clock: Clock,
    claim: DataDirClaim,
    *,
    authority: SigningPublicKey,
    first_directory: Directory,
    evidence_key: SigningPrivateKey,
    log_key: SigningPrivateKey,
) -> _Core:
    endpoints = service_endpoints(settings.amqp_url, heartbeat_s=settings.amqp_heartbeat_s)
    store = await _open_store(settings)
    audit = await AuditLog.load(store, origin=first_directory.gateway.log_origin, log_key=log_key)
    in_force: list[Callable[[], Directory]] = [lambda: first_directory]

    def directory_in_force() -> Directory:
        return in_force[0]()

    # Held (a restored store) before anything appends, the directory leaf included.
    recovery = await LogRecovery.load(
        store, audit, directory=directory_in_force, clock=clock, max_message_ttl=settings.limits.max_message_ttl
    )
    holder = await DirectoryHolder.load(
        settings.directory_file, authority=authority, store=store, audit=audit, now=clock(), limits=settings.limits
    )

    async def adopt(signed: SignedStatement, directory: Directory) -> None:
        await holder.adopt(signed, directory, store=store, audit=audit, now=clock())

    watch = DirectoryWatch(
        settings.directory_file,
        authority=authority,
        directory=holder.current,
        clock=clock,
        limits=settings.limits,
        interval_s=settings.directory_reload_s,
        adopt=adopt,
    )
    identity = GatewayIdentity(
        gateway_id=holder.current.gateway.gateway_id,
        evidence_key=evidence_key,
        broker_user_prefix=settings.broker_user_prefix,
    )
    in_force[0] = lambda: watch.held
    return _Core(settings, clock, authority, endpoints, store, audit, watch, identity, recovery, claim)


@dataclass(frozen=True, slots=True)
class _MessagePath:
    """Everything a message meets in the gateway: the pipeline, its relay, dead letters, deadlines, blobs."""

    publisher: ConfirmedPublisher
    metrics: GatewayMetrics
    relay: OutgoingRelay
    blob_store: BlobStore
    pipeline: IngressPipeline
    ingress: QueueConsumer[IngressDelivery, Outcome]
    dead_letters: DeadLetters
    dead_letter_intake: QueueConsumer[DeadDelivery, Any]
    deadlines: DeadlineWatcher
    sweeper: BlobSweeper


async def _message_path(core: _Core) -> _MessagePath:
    """The ingress pipeline with its publisher and relay, the dead-letter desk, the deadline and blob sweepers."""
    settings, clock, store, audit = core.settings, core.clock, core.store, core.audit
    publisher = deliver_publisher(FailoverConnector(core.endpoints, service="gateway"))
    metrics = GatewayMetrics()
    relay = OutgoingRelay(store, publisher, limits=settings.limits)
    blob_store = await BlobStore.open(settings.blob_dir or settings.data_dir)
    pipeline = IngressPipeline(
        identity=core.identity,
        directory=core.directory,
        store=store,
        audit=audit,
        publisher=MeasuredPublisher(publisher, metrics),
        limits=settings.limits,
        clock=clock,
        wake_relay=relay.wake,
        attachments=AttachmentGate(blob_store),
    )
    dead_letters = DeadLetters(
        identity=core.identity,
        directory=core.current_directory,
        store=store,
        audit=audit,
        pipeline=pipeline,
        publisher=publisher,
        limits=settings.limits,
        clock=clock,
        gateway_user=core.endpoints.broker_user,
        wake_relay=relay.wake,
    )
    return _MessagePath(
        publisher=publisher,
        metrics=metrics,
        relay=relay,
        blob_store=blob_store,
        pipeline=pipeline,
        ingress=ingress_consumer(
            FailoverConnector(core.endpoints, service="gateway"),
            metrics.measured_handler(pipeline.handle, store, clock),
            prefetch=settings.prefetch,
        ),
        dead_letters=dead_letters,
        dead_letter_intake=dead_letter_consumer(
            FailoverConnector(core.endpoints, service="gateway"),
            metrics.measured_dead_letters(dead_letters.take),
            taken_summary,
        ),
        deadlines=DeadlineWatcher(
            identity=core.identity,
            store=store,
            audit=audit,
            wake_relay=relay.wake,
            clock=clock,
            delivery_grace=timedelta(seconds=settings.delivery_grace_s),
            retrieval_deadline=timedelta(seconds=settings.retrieval_deadline_s),
        ),
        sweeper=BlobSweeper(
            blob_store,
            audit,
            clock=clock,
            retention=timedelta(seconds=settings.blob_retention_s),
            unreferenced=timedelta(seconds=settings.blob_unreferenced_s),
            partial_expiry=timedelta(seconds=settings.blob_partial_expiry_s),
        ),
    )


def _health(core: _Core, path: _MessagePath, leadership: Leadership) -> Callable[[], dict[str, Any]]:
    """`/healthz`: ok while the ingress is consumed; the dead letters' consumer, the log, the directory, the leader.

    `recovering` (answered 200) while the log is held after a lost disk (`gateway.recovery`).
    """

    def health() -> dict[str, Any]:
        connected = path.ingress.connected.is_set()
        alarms = core.directory.alarms()
        status = "ok" if connected and not alarms else "degraded"
        recovering = core.recovery.reason()
        if recovering is not None:
            # Still 200: the witnesses must reach a held gateway to bring its log back (a balancer must keep it).
            status = "recovering" if status == "ok" else status
            alarms = [*alarms, f"audit log recovering: {recovering}"]
        return {
            "status": status,
            "service": "gateway",
            "ingress_connected": connected,
            "dead_letters_connected": path.dead_letter_intake.connected.is_set(),
            "tree_size": core.audit.size,
            **leadership.status(),
            "log_recovery": core.recovery.status(),
            **core.directory.health(),
            **({"alarms": alarms} if alarms else {}),
        }

    return health


def _api(core: _Core, path: _MessagePath, health: Callable[[], dict[str, Any]]) -> GatewayApi:
    """The HTTP API: audit and proofs, the operator's operations, the consoles and `/metrics`, the blob store."""
    settings = core.settings
    tokens = TokenTable.from_settings(settings)
    management = _management_access(settings)
    consoles = ConsoleApi(
        store=core.store,
        tree_size=lambda: core.audit.size,
        directory=core.held_directory,
        health=health,
        metrics=path.metrics,
        management=management,
        vhost=core.endpoints.vhost,
        clock=core.clock,
        thresholds=AlertThresholds(idle_checkpoint_s=settings.idle_checkpoint_interval_s),
        certificates=settings.watched_certificates,
    )
    blobs = BlobApi(
        path.blob_store,
        directory=core.current_directory,
        clock=core.clock,
        max_blob_bytes=settings.max_blob_bytes,
        quota_bytes=settings.blob_quota_bytes,
    )
    reports = ReportSigningApi(
        store=core.store,
        audit=core.audit,
        directory=core.current_directory,
        clock=core.clock,
        signer=_report_signer(settings),
    )
    return GatewayApi(
        store=core.store,
        audit=core.audit,
        recovery=core.recovery,
        tokens=tokens,
        health=health,
        directory=core.current_directory,
        clock=core.clock,
        authority=core.authority,
        operations=OperationsApi(
            dead_letters=path.dead_letters, store=core.store, management=management, vhost=core.endpoints.vhost
        ),
        # Attachment bodies: each request is signed by an agency (gateway.blobs), no token role.
        # The directory is public material, signed by its authority (gateway.directory_api), no token role.
        extra_routes=consoles.routes()
        + [(method, route, handler, None) for method, route, handler in blobs.routes()]
        # Report signing: each request is signed by an agency (gateway.reports), no token role.
        + [(method, route, handler, None) for method, route, handler in reports.routes()]
        + [(method, route, handler, None) for method, route, handler in DirectoryApi(core.store).routes()],
    )


async def run_gateway(
    settings: GatewaySettings, *, stopping: asyncio.Event | None = None, clock: Clock = utc_now
) -> None:
    """Run one gateway until `stopping` is set (or SIGTERM/SIGINT arrives)."""
    core = await _open_core(settings, clock)
    path = await _message_path(core)
    audit = core.audit
    leadership = Leadership(settings.database_url, retry_s=settings.leader_retry_s)
    path.metrics.leader.set_function(lambda: 1.0 if leadership.leading else 0.0)
    path.metrics.log_recovering.set_function(lambda: 1.0 if core.recovery.recovering else 0.0)
    path.metrics.log_witnessed_size.set_function(
        lambda: float(core.recovery.floor.size if core.recovery.floor is not None else 0)
    )

    async def last_checkpoint() -> None:
        if not leadership.leading:
            return  # the leader signs (this process lets go of leadership only after this, `leadership.close`)
        with contextlib.suppress(TransientFailure):
            await audit.checkpoint_if_due(clock(), idle_interval=timedelta(0))

    async def report_append_latency() -> None:
        log.info("audit_append_latency", **audit.append_latency())  # read by `rogatory bench`

    consumers = (path.ingress, path.dead_letter_intake)
    tasks: dict[str, Task] = {}
    closers = [
        leadership.close,
        path.publisher.close,
        path.blob_store.close,
        core.store.close,
        report_append_latency,
        released(core.claim),
    ]
    if settings.tsa_url is not None:
        tsa = TimestampClient(settings.tsa_url, timeout_s=settings.tsa_timeout_s)
        tasks["timestamps"] = _timestamps(core, path.metrics, tsa, leadership)
        closers.insert(0, tsa.close)
    await run_service(
        Service(
            name="gateway",
            settings=settings,
            app=_api(core, path, _health(core, path, leadership)).app(),
            tasks={
                "ingress": path.ingress.run,
                "dead_letters": path.dead_letter_intake.run,
                "watchdog": ConsumerWatchdog(consumers, limit_s=settings.watchdog_s).run,
                "outgoing": path.relay.run,
                "directory": core.directory.run,
                "leadership": leadership.run,
                # The singleton duties (`gateway.leadership`): one process at a time does them.
                "checkpoints": _checkpoints(audit, settings, clock, leadership),
                "deadlines": _while_leading(
                    leadership, settings.deadline_sweep_s, path.deadlines.sweep, failed="deadline_sweep_failed"
                ),
                "blobs": _while_leading(
                    leadership, settings.blob_sweep_s, path.sweeper.sweep, failed="blob_sweep_failed"
                ),
                **tasks,
            },
            closers=closers,
            last_words=last_checkpoint,
            started={
                "directory_version": core.directory.held.version,
                "directory_reload_s": settings.directory_reload_s,
                "tree_size": audit.size,
                "leadership": "shared" if leadership.shared else "single",
            },
        ),
        stopping or asyncio.Event(),
    )


def main() -> None:
    """Entry point of `python -m gateway`."""
    service_main(
        "gateway",
        read_settings=GatewaySettings.from_environ,
        run=run_gateway,
    )


__all__ = ["main", "run_gateway"]
