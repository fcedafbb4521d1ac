"""Start-up, wiring and graceful shutdown of one agent process.

Order at start: settings -> keys -> directory (verified) -> store -> outbox
relay -> receiver and inbox consumer -> HTTP API. At SIGTERM or SIGINT the
API stops taking requests, the consumer finishes the delivery in hand, the
relay makes one last attempt to publish what is queued (what it cannot
publish stays in the outbox for the next start), and connections close.
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

from agents.api import AgentApi, ApiContext
from agents.broker import InboxConsumer, OutboxRelay, SubmitPublisher
from agents.errors import ConfigurationError, TransientFailure
from agents.logs import configure_logging
from agents.receiving import Receiver, ReceiverKeys
from agents.settings import AgentSettings
from agents.store import AgentStore
from agents.submission import SenderKeys
from protocol.directory import Directory, verify_directory
from protocol.encoding import b64decode
from protocol.errors import ErrorCode, ProtocolError
from protocol.ids import AgencyId, parse_agency_id
from protocol.keys import EncryptionPrivateKey, SigningPrivateKey, SigningPublicKey
from protocol.keystore import unlock_keystore
from protocol.signing import SignedStatement
from protocol.topology import inbox_queue

log = structlog.get_logger("rogatory.agent")

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The wall clock, in UTC: the only clock the agent reads."""
    return datetime.now(UTC)


def _broker_user(amqp_url: str) -> str:
    user = urlsplit(amqp_url).username
    if not user:
        raise ConfigurationError("ROGATORY_AMQP_URL must name the agency's broker user")
    return unquote(user)


def _load_keys(settings: AgentSettings) -> tuple[SigningPrivateKey, EncryptionPrivateKey]:
    try:
        passphrase = settings.keystore_passphrase_file.read_bytes().strip()
        keys = unlock_keystore(settings.keystore_file.read_bytes(), passphrase)
        return SigningPrivateKey(keys["signing"]), EncryptionPrivateKey(keys["encryption"])
    except (OSError, KeyError, ProtocolError) as exc:
        raise ConfigurationError(f"cannot unlock the keystore {settings.keystore_file}: {exc}") from exc


def _read_directory(settings: AgentSettings, authority: SigningPublicKey, now: datetime) -> Directory:
    try:
        signed = SignedStatement.from_json(settings.directory_file.read_bytes(), code=ErrorCode.MALFORMED_DIRECTORY)
        return verify_directory(signed, authority, now=now, limits=settings.limits)
    except (OSError, ProtocolError) as exc:
        raise ConfigurationError(f"directory {settings.directory_file} refused: {exc}") from exc


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


async def run_agent(settings: AgentSettings, *, stopping: asyncio.Event | None = None, clock: Clock = utc_now) -> None:
    """Run one agent until `stopping` is set (or SIGTERM/SIGINT arrives)."""
    stopping = stopping or asyncio.Event()
    agency = parse_agency_id(settings.agency)
    try:
        authority = SigningPublicKey(b64decode(settings.authority_key))
    except ProtocolError as exc:
        raise ConfigurationError("ROGATORY_AUTHORITY_KEY is not a base64 Ed25519 public key") from exc
    signing_key, encryption_key = _load_keys(settings)
    directory = _read_directory(settings, authority, clock())
    _check_keys_listed(directory, agency, signing_key, encryption_key)
    structlog.contextvars.bind_contextvars(agency=agency)

    store = await AgentStore.open(settings.data_dir / "agent.db", synchronous=settings.sqlite_synchronous)
    broker_user = _broker_user(settings.amqp_url)
    publisher = SubmitPublisher(settings.amqp_url, broker_user=broker_user, routing_key=agency)
    relay = OutboxRelay(store, publisher, clock=clock)
    receiver = Receiver(
        keys=ReceiverKeys(
            agency=agency, signing_key=signing_key, encryption_keys={encryption_key.key_id: encryption_key}
        ),
        directory=lambda: directory,
        store=store,
        gateway_broker_user=settings.gateway_broker_user,
        limits=settings.limits,
        clock=clock,
        on_evidence_issued=relay.wake,
    )
    consumer = InboxConsumer(settings.amqp_url, inbox_queue(agency), receiver.handle, prefetch=settings.prefetch)

    def health() -> dict[str, Any]:
        connected = consumer.connected.is_set()
        return {
            "status": "ok" if connected else "degraded",
            "service": "agent",
            "agency": agency,
            "inbox_connected": connected,
            "directory_version": directory.version,
        }

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
    ]
    try:
        await stopping.wait()
        log.info("agent_stopping")
        await runner.shutdown()
        await asyncio.gather(*tasks)
        with contextlib.suppress(TransientFailure, TimeoutError):
            await asyncio.wait_for(relay.drain(), timeout=5)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await runner.cleanup()
        await publisher.close()
        await store.close()
        log.info("agent_stopped")


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


__all__ = ["main", "run_agent", "utc_now"]
