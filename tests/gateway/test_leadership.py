"""Several gateway processes on one PostgreSQL database: one leader at a time, and each outbox row published once."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest

from gateway.auditlog import AuditLog
from gateway.directory import DirectoryHolder, held_version
from gateway.leadership import LEADER_LOCK_KEY, Leadership
from gateway.outgoing import OutgoingRelay
from gateway.store import GatewayStore
from protocol.directory import Directory, sign_directory
from protocol.signing import SignedStatement
from runtime.errors import BrokerUnavailable, ConfigurationError
from tests.gateway.conftest import InMemoryBroker, fresh_postgres_database
from tests.support.network import NOW, LocalNetwork

RETRY_S = 0.2
AT = "2026-01-01T00:00:00Z"


@asynccontextmanager
async def running(*holders: Leadership) -> AsyncIterator[asyncio.Event]:
    stopping = asyncio.Event()
    tasks = [asyncio.create_task(holder.run(stopping)) for holder in holders]
    try:
        yield stopping
    finally:
        stopping.set()
        await asyncio.gather(*tasks)
        for holder in holders:
            await holder.close()


async def until(condition: Callable[[], bool], *, within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, "the condition did not come true in time"
        await asyncio.sleep(0.02)


async def _leader_backend(url: str) -> int:
    """The server process of the connection holding the leader's lock."""
    admin = await asyncpg.connect(url)
    try:
        pid = await admin.fetchval(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = $1 AND granted",
            LEADER_LOCK_KEY & 0xFFFFFFFF,
        )
        assert isinstance(pid, int)
        return pid
    finally:
        await admin.close()


async def test_two_processes_on_one_database_have_exactly_one_leader_and_hand_over_when_its_connection_drops():
    """Two holders: exactly one leads; its connection killed by the server, the other leads within the retry."""
    async with fresh_postgres_database() as url:
        first, second = Leadership(url, retry_s=RETRY_S), Leadership(url, retry_s=RETRY_S)
        async with running(first, second):
            await until(lambda: first.leading or second.leading)
            await asyncio.sleep(5 * RETRY_S)
            assert [first.leading, second.leading].count(True) == 1, "exactly one leads"
            leader, follower = (first, second) if first.leading else (second, first)
            admin = await asyncpg.connect(url)
            try:
                await admin.execute("SELECT pg_terminate_backend($1)", await _leader_backend(url))
            finally:
                await admin.close()
            await until(lambda: not leader.leading, within_s=3 * RETRY_S + 1)
            await until(lambda: follower.leading, within_s=3 * RETRY_S + 1)
            await asyncio.sleep(5 * RETRY_S)
            assert follower.leading, "the new leader keeps leading"
            assert not leader.leading, "the old leader, connected again, follows"


async def test_a_leader_stopping_gracefully_hands_over():
    """`close` lets go of the lock: another holder leads at its next try."""
    async with fresh_postgres_database() as url:
        first = Leadership(url, retry_s=RETRY_S)
        async with running(first):
            await until(lambda: first.leading)
            second = Leadership(url, retry_s=RETRY_S)
            async with running(second):
                await asyncio.sleep(3 * RETRY_S)
                assert not second.leading, "the lock is held"
                await first.close()
                await until(lambda: second.leading, within_s=3 * RETRY_S + 1)


async def test_a_single_process_on_sqlite_always_leads():
    """No shared database, no contest: the one process does every duty."""
    alone = Leadership(None)
    assert alone.leading
    async with running(alone) as stopping:
        stopping.set()
    assert alone.status() == {"leader": True, "leadership": "single"}


class SlowBroker(InMemoryBroker):
    """Confirms after a pause, so that two relays' drains overlap."""

    async def publish(self, *, routing_key: str, body: bytes, kind: str, message_id: str) -> None:
        await asyncio.sleep(0.01)
        await super().publish(routing_key=routing_key, body=body, kind=kind, message_id=message_id)


async def _enqueue(store: GatewayStore, count: int) -> None:
    async with store.transaction() as tx:
        for index in range(count):
            # Only evidence is batched (`batch_outgoing`): one broker message per row of another kind.
            await tx.enqueue(f"AGENCY-{index % 7}", "rogatory.directory.v1", f"m/{index}", b"{}", AT)


async def test_two_relays_on_one_database_publish_each_row_once():
    """Two processes' relays drain one outbox at once: every row published, none twice, the outbox empty."""
    async with fresh_postgres_database() as url:
        stores = [await GatewayStore.open_postgres(url), await GatewayStore.open_postgres(url)]
        try:
            await _enqueue(stores[0], 600)
            brokers = [SlowBroker(), SlowBroker()]
            relays = [OutgoingRelay(store, broker) for store, broker in zip(stores, brokers, strict=True)]
            await asyncio.gather(*(relay.drain() for relay in relays))
            published = [p.message_id for broker in brokers for p in broker.confirmed]
            assert sorted(published) == sorted(f"m/{i}" for i in range(600)), "each row once"
            assert all(broker.confirmed for broker in brokers), "both relays took a share"
            assert await stores[0].pending_outgoing() == []
        finally:
            for store in stores:
                await store.close()


async def test_a_claim_ended_without_confirms_leaves_its_rows_to_the_next_relay():
    """Broker away: the claimed rows are not forgotten, and another process's relay publishes them."""
    async with fresh_postgres_database() as url:
        stores = [await GatewayStore.open_postgres(url), await GatewayStore.open_postgres(url)]
        try:
            await _enqueue(stores[0], 10)
            away = InMemoryBroker(down=True)
            with pytest.raises(BrokerUnavailable):
                await OutgoingRelay(stores[0], away).drain()
            async with stores[0].outgoing_batch() as claimed:
                assert len(claimed.records) == 10
                async with stores[1].outgoing_batch() as other:
                    assert other.records == [], "rows claimed by one process are skipped by another"
            broker = InMemoryBroker()
            await OutgoingRelay(stores[1], broker).drain()
            assert len(broker.confirmed) == 10
        finally:
            for store in stores:
                with contextlib.suppress(Exception):
                    await store.close()


async def _process(url: str, net: LocalNetwork, file: Path) -> tuple[GatewayStore, AuditLog, DirectoryHolder]:
    """One gateway process's store, log and directory holder, on the shared database."""
    store = await GatewayStore.open_postgres(url)
    audit = await AuditLog.load(store, origin="rogatory.test/audit-log", log_key=net.log_key)
    holder = await DirectoryHolder.load(
        file, authority=net.authority.public_key, store=store, audit=audit, now=NOW, limits=net.limits
    )
    return store, audit, holder


def _signed(net: LocalNetwork, version: int) -> tuple[SignedStatement, Directory]:
    directory = net.directory(version=version)
    return sign_directory(directory, net.authority), directory


async def test_two_processes_adopting_one_directory_version_log_one_leaf_and_never_go_back(tmp_path: Path):
    """Both processes adopt version 2: one leaf. One adopts 3; the other, having read 'held 1' before that
    commit, then adopts 2: refused in its transaction, the version held stays 3, no leaf of 2 after 3."""
    net = LocalNetwork()
    file = tmp_path / "directory.json"
    file.write_bytes(net.signed_directory().model_dump_json().encode())
    async with fresh_postgres_database() as url:
        first, second = await _process(url, net, file), await _process(url, net, file)
        try:
            for store, audit, holder in (first, second):
                await holder.adopt(*_signed(net, 2), store=store, audit=audit, now=NOW)
            directory_leaves = [r.identity for r in await first[0].leaves(limit=100) if r.kind == "directory"]
            assert directory_leaves == ["directory/1", "directory/2"]
            await first[2].adopt(*_signed(net, 3), store=first[0], audit=first[1], now=NOW)
            stale = second[0]

            async def held_before_the_other_commit(name: str) -> str | None:
                return "1" if name == "directory_version" else None

            stale.setting = held_before_the_other_commit  # type: ignore[method-assign]
            with pytest.raises(ConfigurationError, match="another gateway process"):
                await second[2].adopt(*_signed(net, 2), store=stale, audit=second[1], now=NOW)
            assert await held_version(first[0]) == 3
            directory_leaves = [r.identity for r in await first[0].leaves(limit=100) if r.kind == "directory"]
            assert directory_leaves == ["directory/1", "directory/2", "directory/3"]
        finally:
            for store, _, _ in (first, second):
                await store.close()
