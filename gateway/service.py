"""Start-up, wiring and graceful shutdown of one gateway process.

Order at start: settings -> store -> keys -> directory (verified) -> audit
log (tree rebuilt) -> directory leaf -> publisher, pipeline, relay ->
HTTP API -> ingress and dead-letter consumers, watchdog. At SIGTERM or
SIGINT the consumers stop taking deliveries, finish the one in hand (acking
it or handing it back) and hand back what they had buffered, the relay
drains what was committed, a last checkpoint is signed, and the connections
close. If a task ends on its own, or the watchdog finds a consumer down for
too long (`gateway.watchdog`), the same shutdown runs and the process exits
with status 70 for its supervisor to start it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote, urlsplit

import structlog
from aiohttp import web

from gateway.api import GatewayApi, Role, TokenTable
from gateway.auditlog import AuditLog
from gateway.blobs import AttachmentGate, BlobApi, BlobStore, BlobSweeper
from gateway.broker import (
    ConfirmedPublisher,
    DeadLetterConsumer,
    FailoverConnector,
    IngressConsumer,
    ManagementAccess,
    endpoints_from_setting,
)
from gateway.console_api import AlertThresholds, ConsoleApi
from gateway.deadletters import DeadLetters, OperationsApi, taken_summary
from gateway.deadlines import DeadlineWatcher
from gateway.directory import DirectoryHolder
from gateway.logs import configure_logging
from gateway.metrics import GatewayMetrics, MeasuredPublisher
from gateway.outgoing import OutgoingRelay
from gateway.pipeline import GatewayIdentity, IngressPipeline
from gateway.settings import GatewaySettings
from gateway.store import GatewayStore
from gateway.watchdog import EXIT_UNHEALTHY, ConsumerWatchdog, finish, supervise
from protocol.directory import Directory, verify_directory
from protocol.encoding import b64decode
from protocol.errors import ErrorCode, ProtocolError
from protocol.keys import SigningPrivateKey, SigningPublicKey
from protocol.keystore import unlock_keystore
from protocol.signing import SignedStatement
from runtime.errors import ConfigurationError, ServiceUnhealthy, TransientFailure

log = structlog.get_logger("rogatory.gateway")

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The wall clock, in UTC: the only clock the gateway reads."""
    return datetime.now(UTC)


SHUTDOWN_TIMEOUT_S = 10.0
"""How long the tasks may take to finish at shutdown before they are cancelled."""


def broker_user_of(amqp_url: str) -> str:
    """The user name in an AMQP URL (the first of a list): what RabbitMQ checks `user_id` against."""
    user = urlsplit(amqp_url.split(",", 1)[0].strip()).username
    if not user:
        raise ConfigurationError("ROGATORY_AMQP_URL must name the gateway's broker user")
    return unquote(user)


def _load_keys(settings: GatewaySettings) -> tuple[SigningPrivateKey, SigningPrivateKey]:
    try:
        passphrase = settings.keystore_passphrase_file.read_bytes().strip()
        keys = unlock_keystore(settings.keystore_file.read_bytes(), passphrase)
        return SigningPrivateKey(keys["evidence"]), SigningPrivateKey(keys["log"])
    except (OSError, KeyError, ProtocolError) as exc:
        raise ConfigurationError(f"cannot unlock the gateway keystore {settings.keystore_file}: {exc}") from exc


def _read_directory(settings: GatewaySettings, authority: SigningPublicKey, now: datetime) -> Directory:
    try:
        signed = SignedStatement.from_json(settings.directory_file.read_bytes(), code=ErrorCode.MALFORMED_DIRECTORY)
        return verify_directory(signed, authority, now=now, limits=settings.limits)
    except (OSError, ProtocolError) as exc:
        raise ConfigurationError(f"directory {settings.directory_file} refused: {exc}") from exc


def _check_keys_listed(directory: Directory, evidence_key: SigningPrivateKey, log_key: SigningPrivateKey) -> None:
    if evidence_key.key_id not in {key.key_id for key in directory.gateway.evidence_keys}:
        raise ConfigurationError(f"evidence key {evidence_key.key_id} is not listed for the gateway in the directory")
    if log_key.key_id not in {key.key_id for key in directory.gateway.log_keys}:
        raise ConfigurationError(f"log key {log_key.key_id} is not listed for the gateway in the directory")


async def run_gateway(  # noqa: PLR0915 - the wiring reads top to bottom, in one place
    settings: GatewaySettings, *, stopping: asyncio.Event | None = None, clock: Clock = utc_now
) -> None:
    """Run one gateway until `stopping` is set (or SIGTERM/SIGINT arrives)."""
    stopping = stopping or asyncio.Event()
    try:
        authority = SigningPublicKey(b64decode(settings.authority_key))
    except ProtocolError as exc:
        raise ConfigurationError("ROGATORY_AUTHORITY_KEY is not a base64 Ed25519 public key") from exc
    evidence_key, log_key = _load_keys(settings)
    first_directory = _read_directory(settings, authority, clock())
    _check_keys_listed(first_directory, evidence_key, log_key)

    store = (
        await GatewayStore.open_postgres(settings.database_url)
        if settings.database_url is not None
        else await GatewayStore.open(settings.data_dir / "gateway.db", synchronous=settings.sqlite_synchronous)
    )
    audit = await AuditLog.load(store, origin=first_directory.gateway.log_origin, log_key=log_key)
    directory = await DirectoryHolder.load(
        settings.directory_file, authority=authority, store=store, audit=audit, now=clock(), limits=settings.limits
    )
    identity = GatewayIdentity(
        gateway_id=directory.current.gateway.gateway_id,
        evidence_key=evidence_key,
        broker_user_prefix=settings.broker_user_prefix,
    )
    broker_user_of(settings.amqp_url)
    endpoints = endpoints_from_setting(settings.amqp_url, heartbeat_s=settings.amqp_heartbeat_s)
    publisher = ConfirmedPublisher(FailoverConnector(endpoints))
    metrics = GatewayMetrics()
    relay = OutgoingRelay(store, publisher)
    blob_store = await BlobStore.open(settings.data_dir)
    pipeline = IngressPipeline(
        identity=identity,
        directory=directory,
        store=store,
        audit=audit,
        publisher=MeasuredPublisher(publisher, metrics),
        limits=settings.limits,
        clock=clock,
        on_outgoing=relay.wake,
        attachments=AttachmentGate(blob_store),
    )
    measured = metrics.measured_handler(pipeline.handle, store, clock)
    consumer = IngressConsumer(FailoverConnector(endpoints), measured, prefetch=settings.prefetch)
    dead_letters = DeadLetters(
        identity=identity,
        directory=lambda: directory.current,
        store=store,
        audit=audit,
        pipeline=pipeline,
        publisher=publisher,
        limits=settings.limits,
        clock=clock,
        on_outgoing=relay.wake,
    )
    dead_letter_consumer = DeadLetterConsumer(
        FailoverConnector(endpoints), metrics.measured_dead_letters(dead_letters.take), taken_summary
    )

    def health() -> dict[str, Any]:
        connected = consumer.connected.is_set()
        return {
            "status": "ok" if connected else "degraded",
            "service": "gateway",
            "ingress_connected": connected,
            "dead_letters_connected": dead_letter_consumer.connected.is_set(),
            "tree_size": audit.size,
            "directory_version": directory.current.version,
        }

    tokens = TokenTable(
        (
            (settings.operator_token_sha256, Role.OPERATOR),
            (settings.auditor_token_sha256, Role.AUDITOR),
            *((digest, Role.READER) for digest in settings.reader_tokens_sha256),
        )
    )
    api = GatewayApi(
        store=store,
        audit=audit,
        tokens=tokens,
        health=health,
        directory=lambda: directory.current,
        clock=clock,
        authority=authority,
        operations=OperationsApi(
            dead_letters=dead_letters, store=store, management=_management_access(settings), vhost=endpoints.vhost
        ),
        extra_routes=ConsoleApi(
            store=store,
            tree_size=lambda: audit.size,
            directory=lambda: directory.current,
            health=health,
            tokens=tokens,
            metrics=metrics,
            management=_management_access(settings),
            vhost=endpoints.vhost,
            clock=clock,
            thresholds=AlertThresholds(idle_checkpoint_s=settings.idle_checkpoint_interval_s),
            certificates=settings.watched_certificates,
        ).routes()
        + [  # attachment bodies: each request is signed by an agency (gateway.blobs), no token role
            (method, path, handler, None)
            for method, path, handler in BlobApi(
                blob_store, directory=lambda: directory.current, clock=clock, max_blob_bytes=settings.max_blob_bytes
            ).routes()
        ],
    )
    runner = web.AppRunner(api.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.http_host, settings.http_port)
    await site.start()
    log.info(
        "gateway_started",
        http=f"{settings.http_host}:{settings.http_port}",
        directory_version=directory.current.version,
        tree_size=audit.size,
    )

    async def checkpoints() -> None:
        idle = timedelta(seconds=settings.idle_checkpoint_interval_s)
        while not stopping.is_set():
            try:
                await audit.checkpoint_if_due(clock(), idle_interval=idle)
            except TransientFailure as exc:
                log.warning("checkpoint_failed", error=str(exc)[:300])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=settings.checkpoint_interval_s)

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stopping.set)
    deadlines = DeadlineWatcher(
        identity=identity,
        store=store,
        audit=audit,
        on_outgoing=relay.wake,
        clock=clock,
        delivery_grace=timedelta(seconds=settings.delivery_grace_s),
        retrieval_deadline=timedelta(seconds=settings.retrieval_deadline_s),
    )
    tasks = [
        asyncio.create_task(consumer.run(stopping), name="ingress"),
        asyncio.create_task(dead_letter_consumer.run(stopping), name="dead_letters"),
        asyncio.create_task(
            ConsumerWatchdog((consumer, dead_letter_consumer), limit_s=settings.watchdog_s).run(stopping),
            name="watchdog",
        ),
        asyncio.create_task(relay.run(stopping), name="outgoing"),
        asyncio.create_task(checkpoints(), name="checkpoints"),
        asyncio.create_task(deadlines.run(stopping, interval=settings.deadline_sweep_s), name="deadlines"),
        asyncio.create_task(
            BlobSweeper(
                blob_store,
                audit,
                clock=clock,
                retention=timedelta(seconds=settings.blob_retention_s),
                unreferenced=timedelta(seconds=settings.blob_unreferenced_s),
            ).run(stopping, interval=settings.blob_sweep_s),
            name="blobs",
        ),
    ]
    failure: ServiceUnhealthy | None = None
    try:
        failure = await supervise(tasks, stopping)
        log.info("gateway_stopping", reason="unhealthy" if failure is not None else "asked")
        await finish(tasks, timeout_s=SHUTDOWN_TIMEOUT_S)
        with contextlib.suppress(TransientFailure):
            await audit.checkpoint_if_due(clock(), idle_interval=timedelta(0))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await runner.cleanup()
        await publisher.close()
        await blob_store.close()
        await store.close()
        log.info("audit_append_latency", **audit.append_latency())  # read by `rogatory bench`
        log.info("gateway_stopped")
    if failure is not None:
        raise failure


def _management_access(settings: GatewaySettings) -> ManagementAccess | None:
    """Access to the broker's management API, when all three settings are given."""
    if settings.management_url is None or settings.management_user is None or settings.management_password_file is None:
        return None
    try:
        password = settings.management_password_file.read_text().strip()
    except OSError as exc:
        raise ConfigurationError(f"cannot read ROGATORY_MANAGEMENT_PASSWORD_FILE: {exc}") from exc
    return ManagementAccess(base_url=settings.management_url, username=settings.management_user, password=password)


def main() -> None:
    """Entry point of `python -m gateway`."""
    import os  # noqa: PLC0415 - the environment is read here and nowhere else

    try:
        settings = GatewaySettings.from_environ(os.environ)
    except ConfigurationError as exc:
        configure_logging("console", service="gateway")
        log.error("gateway_configuration_invalid", error=str(exc))
        raise SystemExit(2) from exc
    configure_logging(settings.log_format, service="gateway")
    try:
        asyncio.run(run_gateway(settings))
    except ConfigurationError as exc:
        log.error("gateway_configuration_invalid", error=str(exc))
        raise SystemExit(2) from exc
    except ServiceUnhealthy as exc:
        log.error("gateway_exiting_unhealthy", error=str(exc)[:500], exit_status=EXIT_UNHEALTHY)
        raise SystemExit(EXIT_UNHEALTHY) from exc


__all__ = ["broker_user_of", "main", "run_gateway", "utc_now"]
