"""The gateway's pipeline on a real store (SQLite, and PostgreSQL as the scale-out store) with an
in-memory broker port: each test runs on both stores."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import asyncpg
import pytest

from gateway.auditlog import AuditLog
from gateway.pipeline import GatewayIdentity, IngressDelivery, IngressPipeline
from gateway.store import GatewayStore
from protocol.auditlog import directory_leaf
from protocol.directory import Directory
from protocol.evidence import EvidenceType, verify_evidence
from protocol.ids import AgencyId
from protocol.signing import SignedStatement
from protocol.topology import KIND_SEALED_MESSAGE
from runtime.errors import BrokerUnavailable, RoutingFailed
from tests.support.network import NOW, LocalNetwork

POSTGRES_URL = os.environ.get("ROGATORY_TEST_POSTGRES_URL", "postgresql://rogatory:rogatory@127.0.0.1:5432/postgres")
PREFIX = "net."


@dataclass
class Published:
    routing_key: str
    body: bytes
    kind: str
    message_id: str


@dataclass
class InMemoryBroker:
    """The `Publisher` port: records what was confirmed; can refuse or return on demand."""

    confirmed: list[Published] = field(default_factory=list)
    unroutable: set[str] = field(default_factory=set)
    down: bool = False

    async def publish(self, *, routing_key: str, body: bytes, kind: str, message_id: str) -> None:
        if self.down:
            raise BrokerUnavailable("broker away (test)")
        if routing_key in self.unroutable:
            raise RoutingFailed(f"no queue for {routing_key}")
        self.confirmed.append(Published(routing_key, body, kind, message_id))


@dataclass
class StaticDirectory:
    current: Directory


@dataclass
class Harness:
    net: LocalNetwork
    store: GatewayStore
    audit: AuditLog
    broker: InMemoryBroker
    pipeline: IngressPipeline
    clock: list[datetime]
    identity: GatewayIdentity

    def delivery(
        self, body: bytes, *, publisher: AgencyId | None, kind: str = KIND_SEALED_MESSAGE, message_id: str | None = None
    ) -> IngressDelivery:
        return IngressDelivery(
            body=body, kind=kind, user_id=None if publisher is None else PREFIX + publisher, amqp_message_id=message_id
        )

    async def leaves(self) -> list[dict[str, str]]:
        return [{"kind": record.kind, "identity": record.identity} for record in await self.store.leaves(limit=1000)]

    async def evidence_types(self) -> list[str]:
        return [leaf["identity"].split("/")[1] for leaf in await self.leaves() if leaf["kind"] == "evidence"]

    async def outgoing(self) -> list[tuple[str, EvidenceType]]:
        found = []
        for record in await self.store.pending_outgoing():
            signed = SignedStatement.model_validate_json(record.body)
            statement = verify_evidence(signed, self.net.directory(), now=NOW).statement
            found.append((record.routing_key, statement.evidence_type))
        return found


@asynccontextmanager
async def fresh_postgres_database() -> AsyncIterator[str]:
    """A new PostgreSQL database, dropped afterwards. No server is a failure, not a skip."""
    name = f"rogatory_test_{secrets.token_hex(4)}"
    try:
        admin = await asyncpg.connect(POSTGRES_URL, timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.fail(f"PostgreSQL is not usable at {POSTGRES_URL} ({exc!r}); start it with deploy/ensure-postgresql.sh")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield POSTGRES_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture(params=["sqlite", "postgresql"])
async def gateway_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[GatewayStore]:
    """The gateway's store on each engine it supports."""
    if request.param == "sqlite":
        store = await GatewayStore.open(tmp_path / "gateway.db")
        yield store
        await store.close()
        return
    async with fresh_postgres_database() as url:
        store = await GatewayStore.open_postgres(url)
        yield store
        await store.close()


@pytest.fixture
async def harness(gateway_store: GatewayStore) -> Harness:
    net = LocalNetwork()
    store = gateway_store
    audit = await AuditLog.load(store, origin="rogatory.test/audit-log", log_key=net.log_key)
    async with audit.transaction() as atx:
        await atx.append(directory_leaf(net.signed_directory(), 1), at=NOW)
    clock = [NOW]
    broker = InMemoryBroker()
    identity = GatewayIdentity(gateway_id="gateway.test", evidence_key=net.evidence_key, broker_user_prefix=PREFIX)
    pipeline = IngressPipeline(
        identity=identity,
        directory=StaticDirectory(net.directory()),
        store=store,
        audit=audit,
        publisher=broker,
        limits=net.limits,
        clock=lambda: clock[0],
        attachments=None,
    )
    return Harness(net, store, audit, broker, pipeline, clock, identity)
