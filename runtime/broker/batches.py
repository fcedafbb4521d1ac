"""Evidence in batches: what a relay owes one destination, as few broker messages as the limits allow.

Both relays (an agent's outbox, the gateway's outgoing evidence) publish
what is committed and pending at the moment they drain. Batches form by
themselves, the way group commit does: when nothing waits, a statement is
published at once and alone (as `KIND_EVIDENCE`, exactly as before
batching); while a publish is in flight, whatever is committed meanwhile
waits for the next drain and leaves with it, grouped by destination into
`KIND_EVIDENCE_BATCH` messages bounded by `Limits.max_evidence_batch_statements`
and `Limits.max_evidence_batch_bytes`. No timer holds anything back.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

from protocol.evidence import encode_evidence_batch
from protocol.limits import Limits
from protocol.topology import KIND_EVIDENCE, KIND_EVIDENCE_BATCH

T = TypeVar("T")

BATCH_FRAMING_BYTES: Final = 64
"""What a batch adds around its statements (`{"format":...,"statements":[...]}`), rounded up."""


@dataclass(frozen=True, slots=True)
class Outgoing(Generic[T]):
    """One broker message a relay publishes: one item as it is, or several evidence statements as one batch."""

    destination: str
    kind: str
    message_id: str
    body: bytes
    items: tuple[T, ...]
    """What this message settles once the broker confirmed it."""


def _statement_cost(body: bytes) -> int:
    """The bytes a statement takes inside a batch (a JSON string with its separator)."""
    return len(json.dumps(body.decode("utf-8"), ensure_ascii=False).encode("utf-8")) + 1


def batch_outgoing(
    items: Sequence[T],
    *,
    destination: Callable[[T], str],
    kind: Callable[[T], str],
    body: Callable[[T], bytes],
    message_id: Callable[[T], str],
    batch_id: Callable[[str], str],
    limits: Limits,
) -> list[Outgoing[T]]:
    """Group the evidence among `items` by destination into bounded batches, oldest first; others go alone.

    A group of one is published as the single statement it is
    (`KIND_EVIDENCE`, under `message_id`), so a relay that is idle sends what
    it sent before batching existed. Items of any other kind are never
    batched. A batch's AMQP message id is `batch_id(destination)`: consumers
    take deliveries of one message id in the broker's order
    (`QueueConsumer`), so a constant id per publisher keeps its batches in
    the order it published them (a `RETRIEVAL` never overtakes the
    `DELIVERY` an earlier batch carried).
    """
    messages: list[Outgoing[T]] = []
    groups: dict[str, list[list[T]]] = {}
    sizes: dict[str, int] = {}
    for item in items:
        if kind(item) != KIND_EVIDENCE:
            messages.append(Outgoing(destination(item), kind(item), message_id(item), body(item), (item,)))
            continue
        key = destination(item)
        cost = _statement_cost(body(item))
        chunks = groups.setdefault(key, [[]])
        current = chunks[-1]
        if current and (
            len(current) >= limits.max_evidence_batch_statements or sizes[key] + cost > limits.max_evidence_batch_bytes
        ):
            current = []
            chunks.append(current)
        if not current:
            sizes[key] = BATCH_FRAMING_BYTES
        current.append(item)
        sizes[key] += cost
    for key, chunks in groups.items():
        for chunk in chunks:
            if len(chunk) == 1:
                (item,) = chunk
                messages.append(Outgoing(key, KIND_EVIDENCE, message_id(item), body(item), (item,)))
                continue
            batch = encode_evidence_batch([body(item) for item in chunk])
            messages.append(Outgoing(key, KIND_EVIDENCE_BATCH, batch_id(key), batch, tuple(chunk)))
    return messages


__all__ = ["BATCH_FRAMING_BYTES", "Outgoing", "batch_outgoing"]
