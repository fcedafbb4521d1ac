"""The audit tree lives in the database: several gateway processes on one PostgreSQL serve one log, and a
gateway's memory does not grow with its log.

Two `AuditLog`s on two connections pools stand for two gateway processes sharing one database: they
append interleaved (and concurrently), and each must serve the roots and proofs of the whole log, not of
what it appended itself; a checkpoint signed by either covers both's leaves, and each checkpoint is
consistent with the one before it whichever process signed which.
"""

from __future__ import annotations

import asyncio
import gc
import random
import time
import tracemalloc
from datetime import timedelta
from pathlib import Path

import pytest

import gateway.store
from gateway.auditlog import AuditLog
from gateway.db import PostgresDatabase, SqliteDatabase
from gateway.store import GATEWAY_SCHEMA, GatewayStore, LeafRecord
from protocol.auditlog import OperatorActionLeaf, encode_leaf
from protocol.checkpoint import Checkpoint, verify_checkpoint
from protocol.errors import ProofInvalid
from protocol.keys import SigningPrivateKey
from protocol.merkle import MerkleTree, leaf_hash, verify_consistency, verify_inclusion
from runtime.schema import Schema, sqlite_status
from tests.gateway.conftest import fresh_postgres_database
from tests.support.network import NOW

ORIGIN = "rogatory.test/audit-log"


def _action(name: str) -> OperatorActionLeaf:
    return OperatorActionLeaf(
        identity=f"operator/{name}", at=NOW, operator="ops", action="test_append", target=name, detail="two gateways"
    )


async def _append(audit: AuditLog, names: list[str]) -> list[int]:
    async with audit.transaction() as atx:
        return [(await atx.append(_action(name), at=NOW)).index for name in names]


async def _stored_tree(store: GatewayStore) -> MerkleTree:
    return MerkleTree.from_leaf_hashes(await store.leaf_hashes())


async def test_two_gateway_processes_on_one_postgresql_database_serve_one_log() -> None:
    """Interleaved appends from two processes; both give the same roots and proofs; checkpoints chain across them."""
    key = SigningPrivateKey.generate()
    rng = random.Random(20)  # noqa: S311 - a replayable interleaving, not a secret
    async with fresh_postgres_database() as url:
        stores = [await GatewayStore.open_postgres(url), await GatewayStore.open_postgres(url)]
        try:
            logs = [await AuditLog.load(store, origin=ORIGIN, log_key=key) for store in stores]
            previous: Checkpoint | None = None
            counter = 0
            for round_ in range(12):
                # Each round: one process, the other, then both at once (the writers' lock orders them).
                batches = []
                for _ in range(3):
                    batches.append([f"r{round_}-{counter + i}" for i in range(rng.randint(1, 9))])
                    counter += len(batches[-1])
                await _append(logs[round_ % 2], batches[0])
                await _append(logs[(round_ + 1) % 2], batches[1])
                await asyncio.gather(_append(logs[0], batches[2][::2]), _append(logs[1], batches[2][1::2]))

                signer, other = logs[round_ % 2], logs[(round_ + 1) % 2]
                note = await signer.checkpoint_if_due(NOW + timedelta(minutes=round_), idle_interval=timedelta(hours=1))
                assert note is not None
                checkpoint = verify_checkpoint(note, ORIGIN, key.public_key, origin=ORIGIN)
                reference = await _stored_tree(stores[0])
                assert checkpoint.size == reference.size == counter  # the database's size, not the signer's appends
                assert checkpoint.root_hash == reference.root()
                assert await other.root(checkpoint.size) == checkpoint.root_hash

                if previous is not None:
                    # The other process proves this checkpoint extends the previous one (signed by this one).
                    proof = await other.consistency_proof(previous.size, checkpoint.size)
                    assert proof == await signer.consistency_proof(previous.size, checkpoint.size)
                    verify_consistency(previous.size, checkpoint.size, previous.root_hash, checkpoint.root_hash, proof)
                indexes = rng.sample(range(checkpoint.size), min(20, checkpoint.size))
                from_signer = await signer.inclusion_proofs(indexes, checkpoint.size)
                assert await other.inclusion_proofs(indexes, checkpoint.size) == from_signer
                for index, (digest, path) in from_signer.items():
                    assert digest == reference.leaf_hash_at(index)
                    assert path == reference.inclusion_proof(index, checkpoint.size)
                    verify_inclusion(digest, index, checkpoint.size, path, checkpoint.root_hash)
                previous = checkpoint

            assert [await log.current_size() for log in logs] == [counter, counter]
            records = await stores[1].leaves(limit=10_000)
            assert [record.index for record in records] == list(range(counter))  # dense, whoever appended
            checkpoints = await stores[0].checkpoints()
            assert [c.tree_size for c in checkpoints] == sorted(c.tree_size for c in checkpoints)
        finally:
            for store in stores:
                await store.close()


async def test_a_proof_beyond_the_database_size_is_refused_not_guessed(gateway_store: GatewayStore) -> None:
    audit = await AuditLog.load(gateway_store, origin=ORIGIN, log_key=SigningPrivateKey.generate())
    await _append(audit, ["a", "b", "c"])
    with pytest.raises(ProofInvalid, match="larger than the log"):
        await audit.inclusion_proof(0, 4)
    with pytest.raises(ProofInvalid, match="larger than the log"):
        await audit.consistency_proof(1, 4)
    assert await audit.root(3) == (await _stored_tree(gateway_store)).root()


async def test_a_leaf_rolled_back_leaves_no_node_and_the_next_writer_continues_the_stored_tree(
    gateway_store: GatewayStore,
) -> None:
    """A transaction that fails after appending (the nodes it closed go with it); the edge cached is not used."""
    audit = await AuditLog.load(gateway_store, origin=ORIGIN, log_key=SigningPrivateKey.generate())
    await _append(audit, ["a", "b", "c"])

    async def failing() -> None:
        async with audit.transaction() as atx:
            await atx.append(_action("d"), at=NOW)  # closes (1, 1) and (2, 0): both rolled back
            raise RuntimeError("the state this leaf records could not be written")

    with pytest.raises(RuntimeError):
        await failing()
    await _append(audit, ["e", "f"])
    reference = await _stored_tree(gateway_store)
    assert reference.size == 5
    assert await audit.root() == reference.root()
    assert [record.identity for record in await gateway_store.leaves()][3:] == ["operator/e", "operator/f"]


LOG_SIZE = 100_000
CACHE = 2_000


async def _fill(store: GatewayStore, audit: AuditLog, upto: int) -> None:
    """The fast path of a test fixture: leaves with a stand-in receipt, 10,000 a transaction, through the store."""
    while (size := await store.tree_size()) < upto:
        async with audit.transaction() as atx:
            for index in range(size, min(upto, size + 10_000)):
                data = encode_leaf(_action(str(index)))
                record = LeafRecord(
                    index, f"operator/{index}", "operator_action", None, data, leaf_hash(data), b"-", ""
                )
                await atx.insert(record, ())


async def _serving(store: GatewayStore) -> tuple[int, float, AuditLog]:
    """Bytes a freshly loaded log holds (Python allocations) after serving a checkpoint's root and many proofs."""
    gc.collect()
    tracemalloc.start()
    started = time.perf_counter()
    audit = await AuditLog.load(store, origin=ORIGIN, log_key=SigningPrivateKey.generate(), cache_entries=CACHE)
    start_up = time.perf_counter() - started
    size = audit.size
    await audit.root(size)
    rng = random.Random(4)  # noqa: S311 - replayable leaves to prove, not a secret
    for _ in range(20):  # batch proofs endpoint: up to 500 leaves per request
        await audit.inclusion_proofs(rng.sample(range(size), 100), size)
    for _ in range(50):
        old = rng.randrange(1, size)
        await audit.consistency_proof(old, size)
    gc.collect()
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return held, start_up, audit


async def test_the_gateway_holds_a_bounded_cache_of_nodes_whatever_the_size_of_its_log(tmp_path: Path) -> None:
    """100,000 leaves: the log object holds at most its cache, the same at 50,000; the whole tree would hold more.

    Memory is measured with tracemalloc (Python's allocations), not time: what the `AuditLog` keeps after
    start-up, a root, 2,000 inclusion proofs and 50 consistency proofs.
    """
    store = await GatewayStore.open(tmp_path / "gateway.db", synchronous="OFF")
    try:
        writer = AuditLog(store, origin=ORIGIN, log_key=SigningPrivateKey.generate())
        await _fill(store, writer, LOG_SIZE // 2)
        held_half, _, half = await _serving(store)
        await _fill(store, writer, LOG_SIZE)
        held_full, start_up, full = await _serving(store)
        assert full.size == LOG_SIZE
        assert len(half.cache) <= CACHE
        assert len(full.cache) <= CACHE

        gc.collect()
        tracemalloc.start()
        started = time.perf_counter()
        tree = MerkleTree.from_leaf_hashes(await store.leaf_hashes())  # what start-up did before: the whole tree
        rebuild = time.perf_counter() - started
        gc.collect()
        whole = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        assert await full.root() == tree.root()

        print(
            f"\naudit log of {LOG_SIZE} leaves: the AuditLog holds {held_full / 1e6:.2f} MB "
            f"({len(full.cache)} cached nodes; {held_half / 1e6:.2f} MB at {LOG_SIZE // 2} leaves); "
            f"the whole in-memory tree held {whole / 1e6:.2f} MB. Start-up: {start_up * 1000:.1f} ms "
            f"(was a rebuild of {rebuild * 1000:.0f} ms)"
        )
        assert held_full < whole / 4
        assert held_full < held_half * 1.25 + 200_000  # not proportional to the log: doubling it changes nothing
    finally:
        await store.close()


STEP_2 = Schema("gateway", GATEWAY_SCHEMA.migrations[:2], adopts=GATEWAY_SCHEMA.adopts)
"""The gateway's schema before the tree moved to the database."""


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
async def test_a_log_written_before_the_tree_was_stored_migrates_and_goes_on(
    engine: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A version-2 database (leaves, no nodes) gets its leaves' tree at step 3, in batches; appends continue it."""
    monkeypatch.setattr(gateway.store, "FILL_BATCH", 7)  # many batches, and batches that end mid-subtree
    count = 100
    datas = [encode_leaf(_action(f"old-{index}")) for index in range(count)]
    rows = [
        (index, f"operator/old-{index}", "operator_action", None, ",,", data, leaf_hash(data), b"-", "")
        for index, data in enumerate(datas)
    ]
    insert = (
        "INSERT INTO leaves (leaf_index, identity, kind, message_id, agencies, leaf, leaf_hash, receipt, appended_at) "
        "VALUES (?,?,?,?,?,?,?,?,?)"
    )

    async def check(store: GatewayStore) -> None:
        audit = await AuditLog.load(store, origin=ORIGIN, log_key=SigningPrivateKey.generate())
        assert audit.size == count
        assert await audit.root() == MerkleTree.from_leaf_hashes([leaf_hash(d) for d in datas]).root()
        await _append(audit, ["new-1", "new-2", "new-3"])
        reference = await _stored_tree(store)
        assert reference.size == count + 3
        assert await audit.root() == reference.root()
        for index in (0, 63, 64, 99, 100, 102):
            assert (await audit.inclusion_proof(index, reference.size))[1] == reference.inclusion_proof(
                index, reference.size
            )
        assert await audit.consistency_proof(count, reference.size) == reference.consistency_proof(
            count, reference.size
        )

    if engine == "sqlite":
        path = tmp_path / "gateway.db"
        old = await SqliteDatabase.open(path, STEP_2)
        async with old.transaction() as connection:
            await connection.executemany(insert, rows)
        await old.close()
        assert sqlite_status(path, GATEWAY_SCHEMA).version == 2
        store = await GatewayStore.open(path)
        try:
            await check(store)
        finally:
            await store.close()
        return
    async with fresh_postgres_database() as url:
        old_pg = await PostgresDatabase.open(url, STEP_2)
        async with old_pg.transaction() as connection:
            await connection.executemany(insert, rows)
        await old_pg.close()
        store = await GatewayStore.open_postgres(url)
        try:
            await check(store)
        finally:
            await store.close()
