"""Group commit on PostgreSQL: bodies share one transaction and COMMIT under load, yet each is committed when
released, undone alone, never reported committed on a connection that is gone, and its hooks run in body order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from gateway.db import PostgresDatabase
from gateway.store import GATEWAY_SCHEMA
from runtime.errors import StoreUnavailable
from tests.gateway.conftest import fresh_postgres_database

BODIES = 40


@pytest.fixture
async def database() -> AsyncIterator[tuple[PostgresDatabase, asyncpg.Pool]]:
    """The gateway's PostgreSQL database with a table `rows`, and separate connections that see committed rows."""
    async with fresh_postgres_database() as url:
        db = await PostgresDatabase.open(url, GATEWAY_SCHEMA)
        await db.reader().execute("CREATE TABLE rows (n BIGINT PRIMARY KEY)")
        observer = await asyncpg.create_pool(url, min_size=1, max_size=4, timeout=10)
        yield db, observer
        await observer.close()
        await db.close()


async def _committed(observer: asyncpg.Pool) -> set[int]:
    return {int(row[0]) for row in await observer.fetch("SELECT n FROM rows")}


async def test_concurrent_bodies_share_commits_and_each_is_committed_when_released(
    database: tuple[PostgresDatabase, asyncpg.Pool],
):
    """Forty concurrent writers need fewer COMMITs than writers, and each row is committed when its block ends."""
    db, observer = database
    seen_at_release: dict[int, bool] = {}

    async def body(n: int) -> None:
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO rows (n) VALUES (?)", (n,))
        seen_at_release[n] = n in await _committed(observer)

    await asyncio.gather(*(body(n) for n in range(BODIES)))
    assert seen_at_release == dict.fromkeys(range(BODIES), True)
    assert 1 <= db.committer.commits < BODIES


async def test_a_failing_body_is_undone_alone(database: tuple[PostgresDatabase, asyncpg.Pool]):
    """A body that raises (after its statement or because of it) leaves nothing behind; the others are kept."""
    db, observer = database

    async def body(n: int) -> None:
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO rows (n) VALUES (?)", (n,))
            if n % 3 == 0:
                raise ValueError(f"body {n} fails")
            if n % 5 == 0:
                await tx.execute("INSERT INTO rows (n) VALUES (?)", (n,))  # a duplicate key: PostgreSQL aborts

    outcomes = await asyncio.gather(*(body(n) for n in range(BODIES)), return_exceptions=True)
    raised = {n for n, outcome in enumerate(outcomes) if isinstance(outcome, ValueError)}
    unavailable = {n for n, outcome in enumerate(outcomes) if isinstance(outcome, StoreUnavailable)}
    assert raised == {n for n in range(BODIES) if n % 3 == 0}
    assert unavailable == {n for n in range(BODIES) if n % 5 == 0 and n % 3 != 0}
    assert await _committed(observer) == set(range(BODIES)) - raised - unavailable
    assert db.committer.commits < BODIES


async def test_a_body_that_swallows_an_aborting_error_is_undone_alone_and_told(
    database: tuple[PostgresDatabase, asyncpg.Pool],
):
    """A body leaving normally on an aborted transaction fails (its writes undone), not the series it shared."""
    db, observer = database
    second_waiting = asyncio.Event()

    async def first() -> None:
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO rows (n) VALUES (1)")
            await second_waiting.wait()  # the second writer now waits: this one leaves the series open

    async def second() -> None:
        second_waiting.set()
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO rows (n) VALUES (2)")
            with pytest.raises(StoreUnavailable):
                await tx.execute("INSERT INTO rows (n) VALUES (1)")  # aborts the PostgreSQL transaction

    outcomes = await asyncio.gather(first(), second(), return_exceptions=True)
    assert outcomes[0] is None
    assert isinstance(outcomes[1], StoreUnavailable)
    assert await _committed(observer) == {1}


async def test_a_lost_connection_fails_every_member_of_the_series_and_the_next_transaction_reconnects(
    database: tuple[PostgresDatabase, asyncpg.Pool],
):
    """The writer's connection killed under a series: no member is released as committed, nothing is kept,
    and the next transaction runs on a new connection."""
    db, observer = database
    second_waiting = asyncio.Event()
    hooks: list[int] = []

    async def first() -> None:
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO rows (n) VALUES (1)")
            tx.after_commit(lambda: hooks.append(1))
            await second_waiting.wait()

    async def second() -> None:
        second_waiting.set()
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO rows (n) VALUES (2)")
            tx.after_commit(lambda: hooks.append(2))
            pid = await tx.fetchone("SELECT pg_backend_pid()")
            assert pid is not None
            await observer.execute("SELECT pg_terminate_backend($1)", pid[0])
            await asyncio.sleep(0.2)  # the body itself notices nothing: leaving its block must

    outcomes = await asyncio.gather(first(), second(), return_exceptions=True)
    assert [type(outcome) for outcome in outcomes] == [StoreUnavailable, StoreUnavailable]
    assert hooks == []
    assert await _committed(observer) == set()
    async with db.transaction() as tx:  # the committer goes on working, on a new connection
        await tx.execute("INSERT INTO rows (n) VALUES (3)")
    assert await _committed(observer) == {3}


async def test_hooks_run_after_the_commit_in_body_order(database: tuple[PostgresDatabase, asyncpg.Pool]):
    """Every body's callback runs once its row is committed, in the order the bodies ran (the audit tree's order)."""
    db, observer = database
    ran: list[int] = []
    hooked: list[int] = []
    committed_in_hook: list[bool] = []

    async def body(n: int) -> None:
        async with db.transaction() as tx:
            ran.append(n)
            await tx.execute("INSERT INTO rows (n) VALUES (?)", (n,))
            tx.after_commit(lambda: hooked.append(n))
        committed_in_hook.append(n in await _committed(observer))

    await asyncio.gather(*(body(n) for n in range(BODIES)))
    assert hooked == ran
    assert all(committed_in_hook)


async def test_the_series_holds_the_writers_lock_another_process_waits_for(
    database: tuple[PostgresDatabase, asyncpg.Pool],
):
    """While a series is open, another writer's advisory lock waits; the series' COMMIT releases it."""
    db, observer = database
    release = asyncio.Event()
    inside = asyncio.Event()

    async def holder() -> None:
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO rows (n) VALUES (1)")
            inside.set()
            await release.wait()

    holding = asyncio.create_task(holder())
    await inside.wait()
    key = db.writer.lock_key
    assert not await observer.fetchval("SELECT pg_try_advisory_xact_lock($1)", key)
    release.set()
    await holding
    assert await observer.fetchval("SELECT pg_try_advisory_xact_lock($1)", key)


async def test_a_body_cancelled_in_a_statement_is_undone_alone(database: tuple[PostgresDatabase, asyncpg.Pool]):
    """A body cancelled while PostgreSQL runs its statement leaves nothing behind; the series it shared commits."""
    db, observer = database
    started = asyncio.Event()

    async def slow() -> None:
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO rows (n) VALUES (1)")
            started.set()
            await tx.execute("SELECT pg_sleep(30)")

    async def other() -> None:
        await started.wait()
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO rows (n) VALUES (2)")

    cancelled = asyncio.create_task(slow())
    waiting = asyncio.create_task(other())
    await started.wait()
    await asyncio.sleep(0.2)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    await asyncio.wait_for(waiting, timeout=10)
    assert await _committed(observer) == {2}
