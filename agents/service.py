"""One agent process: its parts, wired in the order a message meets them, on the shared runner.

Start: settings -> keys -> directory (verified, held) -> directory watch ->
store -> outbox (publisher and relay) -> case book (one, shared by the
receiver and the API) -> receiver and inbox consumer -> auditing (witness,
proof follower) -> health (`agents.health`, with the agent's own TLS
certificates) -> HTTP API -> tasks. The watch puts newer directory versions
in force (each remembered against rollback first) while the agent runs, and
refuses traffic once the one in force expired (`runtime.directory`); it takes
them from its file, from the gateway's push (the receiver) and from a poll of
the gateway's `GET /v1/directory` (`agents.directory_feed`). Stopping, supervision and exit statuses are
`runtime.runner`'s: the API stops taking requests, the consumer finishes the
delivery in hand and hands back what it had buffered, the relay makes one
last attempt to publish what is queued (what it cannot publish stays in the
outbox for the next start), and connections close.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import aiohttp
import structlog
from aiohttp import web

from agents.api import AgentApi, ApiContext
from agents.attachments import Attachments, BlobPushingPublisher
from agents.auditing import Auditing, GatewayAuditClient, ProofFollower, SenderViews, Witness
from agents.bundle_report import draw_bundle_report
from agents.bundles import BundleExporter
from agents.cases import CaseBook
from agents.connectivity import Connectivity
from agents.directory_feed import gateway_directory_source
from agents.guard import ApiGuard, RateLimit, RevocationList, parse_token_specs
from agents.health import AgentHealth
from agents.held_directory import remember_directory
from agents.metrics import AgentMetrics
from agents.outbox import OutboxRelay
from agents.receiving import InboxDelivery, Received, Receiver, ReceiverKeys
from agents.reports import report_fonts, request_report_signature
from agents.retention import Retention
from agents.settings import AgentSettings
from agents.storage_key import storage_key
from agents.store import AgentStore
from agents.submission import SenderKeys
from agents.transport import SubmitPublisher, inbox_consumer
from agents.webhooks import AddressPolicy, DeliveryPolicy, WebhookDispatcher, Webhooks
from protocol.directory import Directory
from protocol.errors import ProtocolError
from protocol.ids import AgencyId, parse_agency_id
from protocol.keys import EncryptionPrivateKey, SigningPrivateKey, SigningPublicKey
from protocol.keystore import previous_keys
from protocol.signing import SignedStatement
from protocol.storage import StorageKey
from protocol.topology import inbox_queue
from runtime.broker import BrokerEndpoints, FailoverConnector, QueueConsumer, service_endpoints
from runtime.data_dir import DataDirClaim, ServiceIdentity, claim_data_dir, identity_of, released
from runtime.directory import DirectoryWatch, Source
from runtime.errors import ConfigurationError
from runtime.http import Exposition
from runtime.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from runtime.private_files import PRIVATE_UMASK
from runtime.reports.errors import ReportError
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
from runtime.tls import client_context

log = structlog.get_logger("rogatory.agent")


def _load_keys(
    settings: AgentSettings,
) -> tuple[SigningPrivateKey, EncryptionPrivateKey, list[EncryptionPrivateKey], StorageKey, ServiceIdentity]:
    """Signing key, current encryption key, encryption keys rotated out (mail in flight), storage key, identity.

    The storage key is added to the keystore on first start (`agents.storage_key`).
    """
    keys = unlock_keys(settings.keystore_file, settings.keystore_passphrase_file)
    try:
        previous = [EncryptionPrivateKey(secret) for secret in previous_keys(keys, "encryption")]
        signing = SigningPrivateKey(key_named(keys, "signing", settings.keystore_file))
        encryption = EncryptionPrivateKey(key_named(keys, "encryption", settings.keystore_file))
        signing_keys = [signing, *(SigningPrivateKey(seed) for seed in previous_keys(keys, "signing"))]
    except ProtocolError as exc:
        raise ConfigurationError(f"cannot unlock the keystore {settings.keystore_file}: {exc}") from exc
    identity = identity_of("agent", settings.agency, (key.public_key.raw for key in signing_keys))
    storage = storage_key(keys, settings.keystore_file, settings.keystore_passphrase_file)
    return signing, encryption, previous, storage, identity


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


def _auditing(
    settings: AgentSettings,
    *,
    agency: AgencyId,
    signing_key: SigningPrivateKey,
    directory: Callable[[], Directory],
    store: AgentStore,
    clock: Clock,
    sender_views: SenderViews,
) -> Auditing | None:
    """The witness (comparing the views senders claim) and proof follower, when the audit API is configured."""
    if settings.gateway_url is None or settings.gateway_token_file is None:
        log.warning("auditing_disabled", reason="ROGATORY_GATEWAY_URL or ROGATORY_GATEWAY_TOKEN_FILE is not set")
        return None
    try:
        token = settings.gateway_token_file.read_text().strip()
    except OSError as exc:
        raise ConfigurationError(f"cannot read the gateway token file: {exc}") from exc
    session = aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=15),
        connector=aiohttp.TCPConnector(ssl=client_context(settings.gateway_ca_file)),
    )
    client = GatewayAuditClient(session, settings.gateway_url, token)
    witness = Witness(
        agency=agency,
        signing_key=signing_key,
        directory=directory,
        store=store,
        gateway=client,
        clock=clock,
        sender_views=sender_views,
    )
    proofs = ProofFollower(
        store=store, gateway=client, clock=clock, max_merge_delay=timedelta(seconds=settings.max_merge_delay_s)
    )
    return Auditing(session=session, witness=witness, proofs=proofs, gateway=client)


async def _attachments(
    settings: AgentSettings, *, agency: AgencyId, signing_key: SigningPrivateKey, store: AgentStore, clock: Clock
) -> Attachments | None:
    """Attachment bodies travel through the gateway's blob store, so they need its URL."""
    if settings.gateway_url is None:
        return None
    return await Attachments.open(
        data_dir=settings.data_dir,
        gateway_url=settings.gateway_url,
        gateway_tls=client_context(settings.gateway_ca_file),
        agency=agency,
        signing_key=signing_key,
        storage_key=store.storage_key,
        agent_store=store,
        limits=settings.limits,
        clock=clock,
        max_received_body_bytes=settings.max_received_body_bytes,
    )


@dataclass(frozen=True, slots=True)
class _Core:
    """What every part of the agent stands on: the agency, its keys, the directory in force, the store."""

    settings: AgentSettings
    clock: Clock
    agency: AgencyId
    signing_key: SigningPrivateKey
    encryption_keys: tuple[EncryptionPrivateKey, ...]
    """Every encryption key this agency can open with: the rotated-out ones first, the current one last."""
    directory: DirectoryWatch
    """The directory in force: reloaded from its file, each new version remembered first, refused once expired."""
    endpoints: BrokerEndpoints
    store: AgentStore
    directory_session: aiohttp.ClientSession | None
    """For the poll of the gateway's `GET /v1/directory`, when `ROGATORY_GATEWAY_URL` is set."""
    claim: DataDirClaim
    """The lock on the data directory, held until the store closed (`runtime.data_dir`)."""

    def current_directory(self) -> Directory:
        """The directory in force now (`DirectoryExpired` once it expired)."""
        return self.directory.current


DirectoryReader = Callable[[AgentSettings, SigningPublicKey, datetime], Directory]
"""Reads and verifies an agent's directory file at start (a host shares one reading among its agencies)."""


def _read_own_directory(settings: AgentSettings, authority: SigningPublicKey, now: datetime) -> Directory:
    return read_directory(settings.directory_file, authority, now=now, limits=settings.limits)


async def _open_core(
    settings: AgentSettings,
    clock: Clock,
    directory_source: Source | None = None,
    directory_reader: DirectoryReader = _read_own_directory,
) -> _Core:
    """Keys and directory verified (and held against rollback), then the store.

    `directory_source` replaces the agency's own poll of the gateway's `GET /v1/directory` (a host's shared one).
    """
    agency = parse_agency_id(settings.agency)
    authority = authority_key(settings.authority_key)
    signing_key, encryption_key, previous_encryption_keys, storage, identity = _load_keys(settings)
    claim = await asyncio.to_thread(claim_data_dir, settings.data_dir, identity)  # before anything is written there
    try:
        return await _open_claimed(
            settings,
            clock,
            claim,
            agency=agency,
            authority=authority,
            signing_key=signing_key,
            keys=(*previous_encryption_keys, encryption_key),
            storage=storage,
            directory_source=directory_source,
            directory_reader=directory_reader,
        )
    except BaseException:
        claim.release()
        raise


async def _open_claimed(
    settings: AgentSettings,
    clock: Clock,
    claim: DataDirClaim,
    *,
    agency: AgencyId,
    authority: SigningPublicKey,
    signing_key: SigningPrivateKey,
    keys: tuple[EncryptionPrivateKey, ...],
    storage: StorageKey,
    directory_source: Source | None,
    directory_reader: DirectoryReader,
) -> _Core:
    encryption_key = keys[-1]
    directory = directory_reader(settings, authority, clock())
    remember_directory(settings.data_dir, directory)
    _check_keys_listed(directory, agency, signing_key, encryption_key)

    async def adopt(_signed: SignedStatement, newer: Directory) -> None:
        await asyncio.to_thread(remember_directory, settings.data_dir, newer)

    session = (
        None
        if settings.gateway_url is None or directory_source is not None
        else aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=15),
            connector=aiohttp.TCPConnector(ssl=client_context(settings.gateway_ca_file)),
        )
    )
    watch = DirectoryWatch(
        settings.directory_file,
        authority=authority,
        directory=directory,
        clock=clock,
        limits=settings.limits,
        interval_s=settings.directory_reload_s,
        adopt=adopt,
        sources=(
            {"gateway": directory_source}
            if directory_source is not None
            else {}
            if session is None or settings.gateway_url is None
            else {"gateway": gateway_directory_source(session, settings.gateway_url, limits=settings.limits)}
        ),
    )
    structlog.contextvars.bind_contextvars(agency=agency)
    endpoints = service_endpoints(settings.amqp_url, heartbeat_s=settings.amqp_heartbeat_s)
    store = await AgentStore.open(
        settings.data_dir / "agent.db", storage_key=storage, synchronous=settings.sqlite_synchronous
    )
    return _Core(settings, clock, agency, signing_key, keys, watch, endpoints, store, session, claim)


async def _close_core(core: _Core) -> None:
    """Close what `_open_core` opened (for an agency whose start failed past it)."""
    if core.directory_session is not None:
        await core.directory_session.close()
    await core.store.close()
    core.claim.release()


@dataclass(frozen=True, slots=True)
class _MessagePath:
    """Everything a message meets in the agent: the outbox and its relay, the case book, the receiver's inbox."""

    attachments: Attachments | None
    publisher: SubmitPublisher
    relay: OutboxRelay
    cases: CaseBook
    metrics: AgentMetrics
    inbox: QueueConsumer[InboxDelivery, Received]
    sender_views: SenderViews
    links: Connectivity


async def _message_path(core: _Core) -> _MessagePath:
    """The outbox (publisher, relay), the case book the API and the receiver share, the inbox consumer."""
    settings, agency, store, clock = core.settings, core.agency, core.store, core.clock
    attachments = await _attachments(settings, agency=agency, signing_key=core.signing_key, store=store, clock=clock)
    connector = FailoverConnector(core.endpoints, service="agent")
    publisher = (
        SubmitPublisher(connector, routing_key=agency)
        if attachments is None
        else BlobPushingPublisher(connector, routing_key=agency, push=attachments.push_for)
    )
    relay = OutboxRelay(store, publisher, clock=clock, agency=agency, limits=settings.limits)
    cases = CaseBook(agency)
    sender_views = SenderViews()
    links = Connectivity(
        sender=SenderKeys(agency=agency, signing_key=core.signing_key, archive_key=core.encryption_keys[-1].public_key),
        store=store,
        directory=core.current_directory,
        limits=settings.limits,
        clock=clock,
        wake_relay=relay.wake,
    )
    receiver = Receiver(
        keys=ReceiverKeys(
            agency=agency,
            signing_key=core.signing_key,
            encryption_keys={key.key_id: key for key in core.encryption_keys},
        ),
        directory=core.current_directory,
        store=store,
        gateway_broker_user=settings.gateway_broker_user,
        limits=settings.limits,
        clock=clock,
        wake_relay=relay.wake,
        cases=cases,
        on_opened=None if attachments is None else attachments.accept_opened,
        on_log_view=sender_views.offer,
        on_directory=lambda raw: core.directory.offer(raw, source="push"),
        on_probe=links.receive,
    )
    metrics = AgentMetrics()
    inbox = inbox_consumer(
        FailoverConnector(core.endpoints, service="agent"),
        inbox_queue(agency),
        metrics.measured_handler(receiver.handle, store, clock, agency=agency),
        prefetch=settings.prefetch,
    )
    return _MessagePath(attachments, publisher, relay, cases, metrics, inbox, sender_views, links)


def _guard(settings: AgentSettings) -> ApiGuard:
    """The API's tokens, scopes, revocations and rate limits (the webhooks' owners are judged by it too)."""
    return ApiGuard(
        parse_token_specs(settings.api_tokens_sha256),
        revocations=RevocationList(settings.api_tokens_revoked_file),
        rate=RateLimit(settings.api_rate_per_s, settings.api_rate_burst),
        clock=time.monotonic,
    )


def _webhooks(core: _Core, path: _MessagePath, guard: ApiGuard) -> Webhooks:
    """The subscriptions API and the dispatcher delivering their events (`agents.webhooks`)."""
    settings = core.settings
    addresses = AddressPolicy.of(
        settings.webhook_allowed_networks,
        allow_plain_http=settings.webhook_allow_plain_http,
        allow_public=settings.webhook_allow_public_addresses,
    )
    policy = DeliveryPolicy(
        timeout_s=settings.webhook_timeout_s,
        retry_base_s=settings.webhook_retry_base_s,
        retry_max_s=settings.webhook_retry_max_s,
        suspend_after_failures=settings.webhook_suspend_after_failures,
        suspend_after_s=settings.webhook_suspend_after_s,
        max_pending_events=settings.webhook_max_pending_events,
        max_subscriptions=settings.webhook_max_subscriptions,
        poll_s=settings.webhook_poll_s,
        deadline_scan_s=settings.webhook_deadline_scan_s,
    )
    dispatcher = WebhookDispatcher(
        store=core.store,
        owner=guard.holder,
        clock=core.clock,
        policy=policy,
        addresses=addresses,
        tls=client_context(settings.webhook_ca_file),
        cases=path.cases,
    )
    return Webhooks(store=core.store, dispatcher=dispatcher, addresses=addresses, policy=policy, clock=core.clock)


def _bundle_report(core: _Core, auditing: Auditing) -> Callable[[bytes], Awaitable[bytes | None]] | None:
    """The clerk's signed PDF of each exported bundle (`agents.bundle_report`), if this agent can draw one."""
    settings = core.settings
    if settings.gateway_url is None:
        return None
    try:
        fonts = report_fonts(settings)
    except ReportError as exc:
        log.warning("bundle_reports_disabled", reason=str(exc)[:300])
        return None
    gateway_url = settings.gateway_url
    authority = authority_key(settings.authority_key)

    async def sign(pdf: bytes) -> bytes:
        signed = await request_report_signature(
            auditing.session, gateway_url, agency=core.agency, key=core.signing_key, pdf=pdf, now=core.clock()
        )
        return signed.pdf

    async def report(raw: bytes) -> bytes | None:
        return await draw_bundle_report(raw, authority=authority, fonts=fonts, sign=sign, drawn_at=core.clock())

    return report


def _api(  # noqa: PLR0917 - the parts the API stands on, each built once
    core: _Core,
    path: _MessagePath,
    health: Callable[[], dict[str, Any]],
    exposition: Exposition,
    guard: ApiGuard,
    webhooks: Webhooks,
    auditing: Auditing | None = None,
) -> AgentApi:
    """The HTTP API the agency's systems use, behind its tokens, scopes and rate limits."""
    settings = core.settings
    bundles = (
        None
        if auditing is None or auditing.gateway is None
        else BundleExporter(
            agency=core.agency,
            signing_key=core.signing_key,
            store=core.store,
            gateway=auditing.gateway,
            directory=core.current_directory,
            limits=settings.limits,
            clock=core.clock,
            report=_bundle_report(core, auditing),
        )
    )
    return AgentApi(
        ApiContext(
            agency=core.agency,
            sender=SenderKeys(
                agency=core.agency, signing_key=core.signing_key, archive_key=core.encryption_keys[-1].public_key
            ),
            store=core.store,
            directory=core.current_directory,
            limits=settings.limits,
            message_ttl=timedelta(seconds=settings.message_ttl_s),
            token_hashes=settings.api_tokens_sha256,
            clock=core.clock,
            wake_relay=path.relay.wake,
            health=health,
            cases=path.cases,
            metrics=exposition,
            attachments=path.attachments,
            connectivity=path.links,
            guard=guard,
            webhooks=webhooks,
            bundles=bundles,
        )
    )


@dataclass(frozen=True, slots=True)
class AgencyParts:
    """One agency's agent, built and not yet running: what the runner serves, runs and closes for it.

    Built by `open_agency`, the one function both modes use: `run_agent`
    runs one in its process, `agents.hosting` runs several in one process.
    """

    agency: AgencyId
    settings: AgentSettings
    app: web.Application
    """The agency's HTTP API (`agents.api`), behind its own tokens."""
    guard: ApiGuard
    """The agency's tokens, revocations and rate limits (the host routes a request by its token)."""
    health: Callable[[], dict[str, Any]]
    """The agency's `/healthz` answer."""
    tasks: Mapping[str, Task]
    closers: Sequence[Callable[[], Awaitable[None]]]
    """What to close after the tasks ended, in this order (the store and the data directory's lock last)."""
    started: Mapping[str, object]
    """Figures for the `agent_started` log line."""

    async def close(self) -> None:
        """Close what `open_agency` opened, for an agency that will not run (another failed to start)."""
        for close in self.closers:
            await close()


async def open_agency(
    settings: AgentSettings,
    clock: Clock = utc_now,
    *,
    directory_source: Source | None = None,
    directory_reader: DirectoryReader = _read_own_directory,
) -> AgencyParts:
    """One agency's agent, from its settings: keys, directory, store, message path, API and tasks.

    `directory_source`, if given, is where the agency polls the gateway's directory instead of its own
    `GET /v1/directory` (a host's one fetch for all its agencies, `agents.hosting`); `directory_reader`
    reads its directory file at start (a host's reads each file once and shares the parsed directory).
    """
    core = await _open_core(settings, clock, directory_source, directory_reader)
    try:
        path = await _message_path(core)
    except BaseException:
        await _close_core(core)
        raise
    attachments, store = path.attachments, core.store
    auditing = _auditing(
        settings,
        agency=core.agency,
        signing_key=core.signing_key,
        directory=core.current_directory,
        store=store,
        clock=clock,
        sender_views=path.sender_views,
    )

    health = AgentHealth(
        agency=core.agency,
        inbox_connected=path.inbox.connected.is_set,
        directory=core.directory,
        auditing=auditing,
        certificates=settings.watched_certificates,
        clock=clock,
    )

    async def exposition() -> tuple[bytes, str]:
        certificates = health.read_certificates()  # once, for the health answer and the certificate gauges
        await path.metrics.refresh(store, health.answer(certificates), clock(), certificates)
        return path.metrics.render(), METRICS_CONTENT_TYPE

    guard = _guard(settings)
    webhooks = _webhooks(core, path, guard)
    retention = Retention(
        agency=core.agency,
        store=store,
        cases=path.cases,
        attachments=None if attachments is None else attachments.store,
        after_close_days=settings.retention_after_close_days,
        clock=clock,
    )

    async def purge_when_due(stopping: asyncio.Event) -> None:
        await retention.run(stopping, interval=settings.retention_interval_s)

    api = _api(core, path, health, exposition, guard, webhooks, auditing)
    return AgencyParts(
        agency=core.agency,
        settings=settings,
        app=api.app(),
        guard=guard,
        health=health,
        tasks={
            "inbox": path.inbox.run,
            "webhooks": webhooks.dispatcher.run,
            "outbox": path.relay.run,
            "watchdog": ConsumerWatchdog((path.inbox,), limit_s=settings.watchdog_s).run,
            "directory": core.directory.run,
            **({} if attachments is None else {"attachments": attachments.run}),
            **({} if auditing is None else auditing.tasks(interval=settings.witness_interval_s)),
            **({} if settings.retention_after_close_days is None else {"retention": purge_when_due}),
        },
        closers=[
            path.publisher.close,
            webhooks.dispatcher.close,
            *([] if attachments is None else [attachments.close]),
            *([] if auditing is None else [auditing.close]),
            *([] if core.directory_session is None else [core.directory_session.close]),
            store.close,
            released(core.claim),
        ],
        started={
            "directory_version": core.directory.held.version,
            "directory_reload_s": settings.directory_reload_s,
        },
    )


async def run_agent(settings: AgentSettings, *, stopping: asyncio.Event | None = None, clock: Clock = utc_now) -> None:
    """Run one agent until `stopping` is set (or SIGTERM/SIGINT arrives)."""
    parts = await open_agency(settings, clock)
    await run_service(
        Service(
            name="agent",
            settings=settings,
            app=parts.app,
            tasks=parts.tasks,
            closers=parts.closers,
            started=parts.started,
        ),
        stopping or asyncio.Event(),
    )


def main() -> None:
    """Entry point of `python -m agents`: one agency, or the agencies of `ROGATORY_HOSTED_AGENCIES_DIR`."""
    os.umask(PRIVATE_UMASK)  # besides the modes set at creation: whatever else the agent writes is private
    if os.environ.get("ROGATORY_HOSTED_AGENCIES_DIR"):
        from agents.hosting import main as host_main  # noqa: PLC0415 - host mode's module builds on this one

        host_main(os.environ)
        return
    service_main(
        "agent",
        read_settings=AgentSettings.from_environ,
        run=run_agent,
    )


__all__ = ["AgencyParts", "DirectoryReader", "main", "open_agency", "run_agent"]
