"""How a relay's batches form (`runtime.broker.Relay`, `runtime.broker.batch_outgoing`), without a broker.

The relay is driven by its own loop (`Relay.run`); its `drain` here records
what was pending each time, in place of publishing it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from protocol.evidence import parse_evidence_batch
from protocol.limits import DEFAULT_LIMITS, Limits
from protocol.topology import KIND_DIRECTORY, KIND_EVIDENCE, KIND_EVIDENCE_BATCH
from runtime.broker import Relay, batch_outgoing


class RecordingRelay(Relay):
    """Each drain takes everything pending, as a relay's confirm window does."""

    def __init__(self) -> None:
        super().__init__(poll_interval=3600)
        self.pending: list[str] = []
        self.drains: list[list[str]] = []
        self.drained = asyncio.Event()

    async def drain(self) -> None:
        if self.pending:
            self.drains.append(self.pending)
            self.pending = []
            self.drained.set()


@asynccontextmanager
async def running(relay: RecordingRelay) -> AsyncIterator[None]:
    stopping = asyncio.Event()
    task = asyncio.create_task(relay.run(stopping))
    try:
        yield
    finally:
        stopping.set()
        relay.wake()
        await task


async def _let_the_loop_run() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_idle_relay_drains_a_single_commit_at_once() -> None:
    relay = RecordingRelay()
    async with running(relay):
        relay.pending.append("a")
        relay.wake()
        await asyncio.wait_for(relay.drained.wait(), timeout=30)
    assert relay.drains == [["a"]]


def _evidence(n: int) -> bytes:
    return b'{"statement":"' + b"x" * n + b'"}'


def test_batches_are_grouped_by_destination_and_a_lone_statement_keeps_its_kind() -> None:
    items = [
        ("BD", KIND_EVIDENCE, _evidence(1)),
        ("LY", KIND_EVIDENCE, _evidence(2)),
        ("BD", KIND_EVIDENCE, _evidence(3)),
    ]
    items.append(("BD", KIND_DIRECTORY, b"directory"))
    messages = batch_outgoing(
        items,
        destination=lambda item: item[0],
        kind=lambda item: item[1],
        body=lambda item: item[2],
        message_id=lambda item: f"id-{item[2].decode()[-4:]}",
        batch_id=lambda destination: f"batch/{destination}",
        limits=DEFAULT_LIMITS,
    )
    by_kind = sorted((m.destination, m.kind, len(m.items)) for m in messages)
    assert by_kind == [("BD", KIND_DIRECTORY, 1), ("BD", KIND_EVIDENCE_BATCH, 2), ("LY", KIND_EVIDENCE, 1)]
    (batch,) = [m for m in messages if m.kind == KIND_EVIDENCE_BATCH]
    assert parse_evidence_batch(batch.body, DEFAULT_LIMITS) == [_evidence(1), _evidence(3)]
    assert batch.message_id == "batch/BD"
    (single,) = [m for m in messages if m.kind == KIND_EVIDENCE]
    assert single.body == _evidence(2)


def test_batches_stay_within_the_byte_limit() -> None:
    limits = Limits(max_evidence_batch_bytes=4096)
    items = [_evidence(1000) for _ in range(10)]
    messages = batch_outgoing(
        items,
        destination=lambda _item: "BD",
        kind=lambda _item: KIND_EVIDENCE,
        body=lambda item: item,
        message_id=lambda _item: "id",
        batch_id=lambda destination: f"batch/{destination}",
        limits=limits,
    )
    assert sum(len(m.items) for m in messages) == 10
    assert len(messages) > 1
    for message in messages:
        assert len(message.body) <= limits.max_evidence_batch_bytes
        if message.kind == KIND_EVIDENCE_BATCH:
            assert parse_evidence_batch(message.body, limits) == list(message.items)
