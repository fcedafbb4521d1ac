"""The agent's store under concurrent writers: each transaction is committed when its block ends, a failing
one is undone alone, and the outbox relay never reads what is not committed."""

from __future__ import annotations

import asyncio
from pathlib import Path

from agents.store import AgentStore
from protocol.storage import StorageKey

WRITERS = 30


async def test_concurrent_transactions_are_each_committed_when_released_and_a_failing_one_is_undone_alone(
    tmp_path: Path,
):
    """Evidence committed by each writer is what the relay sees right after its block; a failed writer's is not."""
    store = await AgentStore.open(tmp_path / "agent.db", storage_key=StorageKey.generate())
    seen: dict[int, bool] = {}

    async def writer(n: int) -> None:
        async with store.transaction() as tx:
            await tx.enqueue_evidence(f"evidence/{n}", f"message-{n}", b"{}", "2026-11-29T10:00:00.000Z")
            if n % 5 == 0:
                raise ValueError(f"writer {n} fails")
        seen[n] = f"evidence/{n}" in {item.identity for item in await store.pending_evidence(limit=1000)}

    try:
        outcomes = await asyncio.gather(*(writer(n) for n in range(WRITERS)), return_exceptions=True)
        failed = {n for n, outcome in enumerate(outcomes) if isinstance(outcome, ValueError)}
        assert failed == {n for n in range(WRITERS) if n % 5 == 0}
        assert seen == dict.fromkeys(set(range(WRITERS)) - failed, True)
        kept = {item.identity for item in await store.pending_evidence(limit=1000)}
        assert kept == {f"evidence/{n}" for n in range(WRITERS) if n not in failed}
    finally:
        await store.close()
