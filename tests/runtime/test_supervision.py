"""Supervision: keyed turns serialise work per key and forget a key once nobody holds or waits for it."""

from __future__ import annotations

import asyncio

from runtime.supervision import KeyedLocks


async def test_work_of_one_key_runs_one_at_a_time_in_arrival_order_and_other_keys_run_beside_it():
    """Holders of one key never overlap and enter in the order they asked; another key is not held up."""
    locks = KeyedLocks()
    inside: dict[str, int] = {"a": 0, "b": 0}
    most: dict[str, int] = {"a": 0, "b": 0}
    order: list[tuple[str, int]] = []

    async def work(key: str, n: int) -> None:
        async with locks.hold(key):
            inside[key] += 1
            most[key] = max(most[key], inside[key])
            order.append((key, n))
            await asyncio.sleep(0.001)
            inside[key] -= 1

    await asyncio.gather(*(work(key, n) for n in range(5) for key in ("a", "b")))
    assert most == {"a": 1, "b": 1}
    assert [n for key, n in order if key == "a"] == list(range(5))
    assert [n for key, n in order if key == "b"] == list(range(5))


async def test_a_key_is_forgotten_once_nobody_holds_or_waits_for_it():
    """The map holds only keys in use, so it cannot grow with every key ever seen."""
    locks = KeyedLocks()
    for n in range(100):
        async with locks.hold(f"key-{n}"):
            assert len(locks) == 1
    assert len(locks) == 0


async def test_no_key_means_no_lock():
    """Work without a key waits for nobody and leaves nothing behind."""
    locks = KeyedLocks()
    async with locks.hold(None), locks.hold(None):
        assert len(locks) == 0
