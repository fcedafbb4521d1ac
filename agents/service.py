"""Start-up, wiring and graceful shutdown of one agent process.

Order at start: settings -> keys -> directory (verified) -> store -> outbox
relay -> case book (one, shared by the receiver and the API) -> receiver and
inbox consumer -> HTTP API -> watchdog. At SIGTERM or SIGINT the
API stops taking requests, the consumer finishes the delivery in hand and
hands back what it had buffered, the relay makes one last attempt to
publish what is queued (what it cannot publish stays in the outbox for the
next start), and connections close. If a task ends on its own, or the
watchdog finds the inbox consumer down for too long (`agents.watchdog`),
the same shutdown runs and the process exits with status 70 for its
supervisor to start it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote, urlsplit

import aiohttp
import structlog
from aiohttp import web

from agents.api import AgentApi, ApiContext
from agents.attachments import Attachments, BlobPushingPublisher
from agents.auditing import GatewayAuditClient, ProofFollower, Witness
from agents.broker import FailoverConnector, InboxConsumer, OutboxRelay, SubmitPublisher, endpoints_from_setting
from agents.cases import CaseBook
from agents.guard import ApiGuard, RateLimit, RevocationList, parse_token_specs
from agents.held_directory import remember_directory
from agents.logs import configure_logging
from agents.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from agents.metrics import AgentMetrics
from agents.receiving import Receiver, ReceiverKeys
from agents.settings import AgentSettings
from agents.store import AgentStore
from agents.submission import SenderKeys
from agents.watchdog import EXIT_UNHEALTHY, ConsumerWatchdog, finish, supervise
from protocol.directory import Directory, verify_directory
from protocol.encoding import b64decode
from protocol.errors import ErrorCode, ProtocolError
from protocol.ids import AgencyId, parse_agency_id
from protocol.keys import EncryptionPrivateKey, SigningPrivateKey, SigningPublicKey
from protocol.keystore import previous_keys, unlock_keystore
from protocol.signing import SignedStatement
from protocol.topology import inbox_queue
from runtime.errors import ConfigurationError, ServiceUnhealthy, TransientFailure

log = structlog.get_logger("rogatory.agent")

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The wall clock, in UTC: the only clock the agent reads."""
    return datetime.now(UTC)


SHUTDOWN_TIMEOUT_S = 10.0
"""How long the tasks may take to finish at shutdown before they are cancelled."""


def _broker_user(amqp_url: str) -> str:
    user = urlsplit(amqp_url.split(",", 1)[0].strip()).username
    if not user:
        raise ConfigurationError("ROGATORY_AMQP_URL must name the agency's broker user")
    return unquote(user)


def _load_keys(settings: AgentSettings) -> tuple[SigningPrivateKey, EncryptionPrivateKey, list[EncryptionPrivateKey]]:
    """The signing key, the current encryption key, and the encryption keys rotated out (for mail in flight)."""
    try:
        passphrase = settings.keystore_passphrase_file.read_bytes().strip()
        keys = unlock_keystore(settings.keystore_file.read_bytes(), passphrase)
        previous = [EncryptionPrivateKey(secret) for secret in previous_keys(keys, "encryption")]
        return SigningPrivateKey(keys["signing"]), EncryptionPrivateKey(keys["encryption"]), previous
    except (OSError, KeyError, ProtocolError) as exc:
        raise ConfigurationError(f"cannot unlock the keystore {settings.keystore_file}: {exc}") from exc


def _read_directory(settings: AgentSettings, authority: SigningPublicKey, now: datetime) -> Directory:
    try:
        signed = SignedStatement.from_json(settings.directory_file.read_bytes(), code=ErrorCode.MALFORMED_DIRECTORY)
        return verify_directory(signed, authority, now=now, limits=settings.limits)
    except (OSError, ProtocolError) as exc:
        raise ConfigurationError(f"directory {settings.directory_file} refused: {exc}") from exc


def _auditing(
    settings: AgentSettings,
    *,
    agency: AgencyId,
    signing_key: SigningPrivateKey,
    directory: Directory,
    store: AgentStore,
    clock: Clock,
) -> tuple[aiohttp.ClientSession, Witness, ProofFollower] | None:
    """The witness and proof follower, when the gateway's audit API is configured."""
    if settings.gateway_url is None or settings.gateway_token_file is None:
        log.warning("auditing_disabled", reason="ROGATORY_GATEWAY_URL or ROGATORY_GATEWAY_TOKEN_FILE is not set")
        return None
    try:
        token = settings.gateway_token_file.read_text().strip()
    except OSError as exc:
        raise ConfigurationError(f"cannot read the gateway token file: {exc}") from exc
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))
    client = GatewayAuditClient(session, settings.gateway_url, token)
    witness = Witness(
        agency=agency, signing_key=signing_key, directory=lambda: directory, store=store, gateway=client, clock=clock
    )
    proofs = ProofFollower(
        store=store, gateway=client, clock=clock, max_merge_delay=timedelta(seconds=settings.max_merge_delay_s)
    )
    return session, witness, proofs


def _check_keys_listed(
    directory: Directory, agency: AgencyId, signing: SigningPrivateKey, encryption: EncryptionPrivateKey
) -> None:
    try:
        entry = directory.agency(agency)
    except ProtocolError as exc:
        raise ConfigurationError(f"agency {agency} is not in the directory") from exc
    if signing.key_id not in {key.key_id for key in entry.signing_keys}:
        raise ConfigurationError(f"signing key {signing.key_id} is not listed for {agency} in the directory")
    if encryption.key_id not in {key.key_id for key in entry.encryption_keys}:
        raise ConfigurationError(f"encryption key {encryption.key_id} is not listed for {agency} in the directory")


async def run_agent(  # noqa: PLR0915, C901 - the wiring reads top to bottom, in one place
    settings: AgentSettings, *, stopping: asyncio.Event | None = None, clock: Clock = utc_now
) -> None:
    """Run one agent until `stopping` is set (or SIGTERM/SIGINT arrives)."""
    stopping = stopping or asyncio.Event()
    agency = parse_agency_id(settings.agency)
    try:
        authority = SigningPublicKey(b64decode(settings.authority_key))
    except ProtocolError as exc:
        raise ConfigurationError("ROGATORY_AUTHORITY_KEY is not a base64 Ed25519 public key") from exc
    signing_key, encryption_key, previous_encryption_keys = _load_keys(settings)
    directory = _read_directory(settings, authority, clock())
    remember_directory(settings.data_dir, directory)
    _check_keys_listed(directory, agency, signing_key, encryption_key)
    structlog.contextvars.bind_contextvars(agency=agency)

    store = await AgentStore.open(settings.data_dir / "agent.db", synchronous=settings.sqlite_synchronous)
    _broker_user(settings.amqp_url)
    endpoints = endpoints_from_setting(settings.amqp_url, heartbeat_s=settings.amqp_heartbeat_s)
    attachments = (  # bodies travel through the gateway's blob store, so they need its URL
        None
        if settings.gateway_url is None
        else await Attachments.open(
            data_dir=settings.data_dir,
            gateway_url=settings.gateway_url,
            agency=agency,
            signing_key=signing_key,
            agent_store=store,
            limits=settings.limits,
            clock=clock,
        )
    )
    publisher = (
        SubmitPublisher(FailoverConnector(endpoints), routing_key=agency)
        if attachments is None
        else BlobPushingPublisher(FailoverConnector(endpoints), routing_key=agency, push=attachments.push_for)
    )
    relay = OutboxRelay(store, publisher, clock=clock)
    cases = CaseBook(agency)
    receiver = Receiver(
        keys=ReceiverKeys(
            agency=agency,
            signing_key=signing_key,
            encryption_keys={key.key_id: key for key in (*previous_encryption_keys, encryption_key)},
        ),
        directory=lambda: directory,
        store=store,
        gateway_broker_user=settings.gateway_broker_user,
        limits=settings.limits,
        clock=clock,
        on_evidence_issued=relay.wake,
        cases=cases,
        on_opened=None if attachments is None else attachments.accept_opened,
    )
    metrics = AgentMetrics()
    consumer = InboxConsumer(
        FailoverConnector(endpoints),
        inbox_queue(agency),
        metrics.measured_handler(receiver.handle, store, clock, agency=agency),
        prefetch=settings.prefetch,
    )

    auditing = _auditing(
        settings, agency=agency, signing_key=signing_key, directory=directory, store=store, clock=clock
    )

    def health() -> dict[str, Any]:
        connected = consumer.connected.is_set()
        answer: dict[str, Any] = {
            "status": "ok" if connected else "degraded",
            "service": "agent",
            "agency": agency,
            "inbox_connected": connected,
            "directory_version": directory.version,
        }
        if auditing is not None:
            _, witness, proofs = auditing
            answer |= {
                "witness_last_cosigned_at": None
                if witness.last_witnessed_at is None
                else witness.last_witnessed_at.isoformat(),
                "forks_detected": witness.forks_detected,
                "inclusion_proofs_overdue": proofs.overdue,
            }
            if witness.forks_detected or proofs.overdue:
                answer["alarms"] = [
                    *(["the gateway's audit log is forked"] if witness.forks_detected else []),
                    *([f"{proofs.overdue} evidence without an inclusion proof"] if proofs.overdue else []),
                ]
        return answer

    context = ApiContext(
        agency=agency,
        sender=SenderKeys(agency=agency, signing_key=signing_key, archive_key=encryption_key.public_key),
        store=store,
        directory=lambda: directory,
        limits=settings.limits,
        message_ttl=timedelta(seconds=settings.message_ttl_s),
        token_hashes=settings.api_tokens_sha256,
        clock=clock,
        wake_outbox=relay.wake,
        health=health,
        cases=cases,
        metrics=lambda: _exposition(metrics, store, health, clock),
        attachments=attachments,
        guard=ApiGuard(
            parse_token_specs(settings.api_tokens_sha256),
            revocations=RevocationList(settings.api_tokens_revoked_file),
            rate=RateLimit(settings.api_rate_per_s, settings.api_rate_burst),
            clock=time.monotonic,
        ),
    )
    runner = web.AppRunner(AgentApi(context).app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.http_host, settings.http_port)
    await site.start()
    log.info("agent_started", http=f"{settings.http_host}:{settings.http_port}", directory_version=directory.version)

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stopping.set)
    tasks = [
        asyncio.create_task(consumer.run(stopping), name="inbox"),
        asyncio.create_task(relay.run(stopping), name="outbox"),
        asyncio.create_task(ConsumerWatchdog((consumer,), limit_s=settings.watchdog_s).run(stopping), name="watchdog"),
    ]
    if attachments is not None:
        tasks.append(asyncio.create_task(attachments.run(stopping), name="attachments"))
    audit_session: aiohttp.ClientSession | None = None
    if auditing is not None:
        audit_session, witness, proofs = auditing
        tasks += [
            asyncio.create_task(witness.run(stopping, interval=settings.witness_interval_s), name="witness"),
            asyncio.create_task(proofs.run(stopping, interval=settings.witness_interval_s), name="proofs"),
        ]
    failure: ServiceUnhealthy | None = None
    try:
        failure = await supervise(tasks, stopping)
        log.info("agent_stopping", reason="unhealthy" if failure is not None else "asked")
        await runner.shutdown()
        await finish(tasks, timeout_s=SHUTDOWN_TIMEOUT_S)
        with contextlib.suppress(TransientFailure, TimeoutError):
            await asyncio.wait_for(relay.drain(), timeout=5)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await runner.cleanup()
        await publisher.close()
        if attachments is not None:
            await attachments.close()
        if audit_session is not None:
            await audit_session.close()
        await store.close()
        log.info("agent_stopped")
    if failure is not None:
        raise failure


async def _exposition(
    metrics: AgentMetrics, store: AgentStore, health: Callable[[], dict[str, Any]], clock: Clock
) -> tuple[bytes, str]:
    await metrics.refresh(store, health(), clock())
    return metrics.render(), METRICS_CONTENT_TYPE


def main() -> None:
    """Entry point of `python -m agents`."""
    import os  # noqa: PLC0415 - the environment is read here and nowhere else

    try:
        settings = AgentSettings.from_environ(os.environ)
    except ConfigurationError as exc:
        configure_logging("console", service="agent")
        log.error("agent_configuration_invalid", error=str(exc))
        raise SystemExit(2) from exc
    configure_logging(settings.log_format, service="agent")
    try:
        asyncio.run(run_agent(settings))
    except ConfigurationError as exc:
        log.error("agent_configuration_invalid", error=str(exc))
        raise SystemExit(2) from exc
    except ServiceUnhealthy as exc:
        log.error("agent_exiting_unhealthy", error=str(exc)[:500], exit_status=EXIT_UNHEALTHY)
        raise SystemExit(EXIT_UNHEALTHY) from exc


__all__ = ["main", "run_agent", "utc_now"]
