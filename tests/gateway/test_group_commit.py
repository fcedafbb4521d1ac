"""Group commit: bodies share COMMITs under load, yet each is durable when released, undone alone,
and never reported committed on a transaction SQLite ended; audit indexes stay dense under concurrency."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiosqlite
import pytest

from protocol.merkle import MerkleTree
from runtime.errors import StoreUnavailable
from runtime.sqlite import GroupCommitter, LoopSqlite
from tests.gateway.conftest import Harness
from tests.support.network import BD

BODIES = 40


@pytest.fixture
async def connections(tmp_path: Path) -> AsyncIterator[tuple[LoopSqlite, aiosqlite.Connection]]:
    """A writer in WAL mode with `synchronous=FULL`, and a reader that sees committed rows only."""
    path = tmp_path / "group.db"
    writer = await LoopSqlite.connect(path)
    await writer.execute("PRAGMA journal_mode=WAL")
    await writer.execute("PRAGMA synchronous=FULL")
    await writer.execute("CREATE TABLE rows (n INTEGER PRIMARY KEY)")
    reader = await aiosqlite.connect(path, isolation_level=None)
    yield writer, reader
    await reader.close()
    await writer.close()


async def _committed(reader: aiosqlite.Connection) -> set[int]:
    async with reader.execute("SELECT n FROM rows") as cursor:
        return {int(row[0]) for row in await cursor.fetchall()}


async def test_concurrent_bodies_share_commits_and_each_is_committed_when_released(
    connections: tuple[LoopSqlite, aiosqlite.Connection],
):
    """Forty concurrent writers need fewer COMMITs than writers, and each row is committed when its block ends."""
    writer, reader = connections
    committer = GroupCommitter(writer)
    seen_at_release: dict[int, bool] = {}

    async def body(n: int) -> None:
        async with committer.transaction():
            await writer.execute("INSERT INTO rows (n) VALUES (?)", (n,))
        seen_at_release[n] = n in await _committed(reader)

    await asyncio.gather(*(body(n) for n in range(BODIES)))
    assert seen_at_release == dict.fromkeys(range(BODIES), True)
    assert 1 <= committer.commits < BODIES


async def test_a_failing_body_is_undone_alone(connections: tuple[LoopSqlite, aiosqlite.Connection]):
    """A body that raises leaves nothing behind, and the bodies sharing its COMMIT are kept."""
    writer, reader = connections
    committer = GroupCommitter(writer)

    async def body(n: int) -> None:
        async with committer.transaction():
            await writer.execute("INSERT INTO rows (n) VALUES (?)", (n,))
            if n % 3 == 0:
                raise ValueError(f"body {n} fails")

    outcomes = await asyncio.gather(*(body(n) for n in range(BODIES)), return_exceptions=True)
    failed = {n for n, outcome in enumerate(outcomes) if isinstance(outcome, ValueError)}
    assert failed == {n for n in range(BODIES) if n % 3 == 0}
    assert await _committed(reader) == set(range(BODIES)) - failed
    assert committer.commits < BODIES


async def test_no_member_is_released_as_committed_when_sqlite_ended_the_transaction(
    connections: tuple[LoopSqlite, aiosqlite.Connection],
):
    """If the transaction ends under a series (as SQLite does on a full disk), every member fails, none is kept."""
    writer, reader = connections
    committer = GroupCommitter(writer)
    second_waiting = asyncio.Event()

    async def first() -> None:
        async with committer.transaction():
            await writer.execute("INSERT INTO rows (n) VALUES (1)")
            await second_waiting.wait()  # the second writer now waits: this one leaves the series open

    async def second() -> None:
        second_waiting.set()
        async with committer.transaction():
            await writer.execute("INSERT INTO rows (n) VALUES (2)")
            await writer.execute("ROLLBACK")  # what SQLite does by itself on some I/O errors

    outcomes = await asyncio.gather(first(), second(), return_exceptions=True)
    assert [type(outcome) for outcome in outcomes] == [StoreUnavailable, StoreUnavailable]
    assert await _committed(reader) == set()
    async with committer.transaction():  # the committer goes on working afterwards
        await writer.execute("INSERT INTO rows (n) VALUES (3)")
    assert await _committed(reader) == {3}


async def test_concurrent_pipeline_keeps_audit_indexes_dense_and_the_tree_equal_to_the_store(harness: Harness):
    """Messages handled concurrently get dense leaf indexes, and the stored tree nodes make the stored leaves' tree."""
    bodies = [harness.net.seal().to_bytes() for _ in range(BODIES)]
    outcomes = await asyncio.gather(*(harness.pipeline.handle(harness.delivery(b, publisher=BD)) for b in bodies))
    assert {outcome.result for outcome in outcomes} == {"relayed"}
    records = await harness.store.leaves(limit=10_000)
    assert [record.index for record in records] == list(
        range(1 + 2 * BODIES)
    )  # the directory, then accepted and relayed
    stored = MerkleTree.from_leaf_hashes(await harness.store.leaf_hashes())
    assert harness.audit.size == stored.size
    assert await harness.audit.root(stored.size) == stored.root(stored.size)


async def test_the_writer_waits_on_the_disk_off_the_loop_and_alone_on_its_connection(
    connections: tuple[LoopSqlite, aiosqlite.Connection],
):
    """While a statement runs in the writer's thread the loop goes on, and no other statement enters the connection."""
    writer, _ = connections
    slow = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000000) SELECT count(*) FROM c"
    order: list[str] = []
    ticks = 0

    async def off_loop() -> None:
        await writer.execute_off_loop(slow)
        order.append("off-loop statement returned")

    async def inline() -> None:
        await asyncio.sleep(0)  # issued once the slow statement is under way
        await writer.fetchone("SELECT 1")
        order.append("inline statement ran")

    async def ticker() -> None:
        nonlocal ticks
        while "inline statement ran" not in order:
            ticks += 1
            await asyncio.sleep(0.001)

    await asyncio.gather(off_loop(), inline(), ticker())
    assert order == ["off-loop statement returned", "inline statement ran"]
    assert ticks > 5, "the event loop was held while the statement ran in the writer's thread"


async def test_a_write_lock_held_by_another_connection_is_waited_for_off_the_loop(
    connections: tuple[LoopSqlite, aiosqlite.Connection], tmp_path: Path
):
    """Another process writing: the transaction waits for its lock in the thread, and the loop goes on meanwhile."""
    writer, reader = connections
    committer = GroupCommitter(writer)
    other = sqlite3.connect(tmp_path / "group.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")

    async def body() -> None:
        async with committer.transaction():
            await writer.execute("INSERT INTO rows (n) VALUES (7)")

    waiting = asyncio.create_task(body())
    started = time.monotonic()
    for _ in range(20):
        await asyncio.sleep(0.01)
    assert time.monotonic() - started < 1.0, "the event loop was held while the write lock was waited for"
    assert not waiting.done()
    other.execute("ROLLBACK")
    other.close()
    await asyncio.wait_for(waiting, timeout=10)
    assert await _committed(reader) == {7}
