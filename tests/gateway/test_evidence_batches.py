"""Evidence in batches at the gateway: what it sends an agency, and what it takes from a recipient.

On a real store (SQLite and PostgreSQL) with the in-memory broker port of
`conftest.py`. The outgoing relay is `gateway.outgoing.OutgoingRelay`, the
one the service runs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from dataclasses import dataclass

from gateway.outgoing import OutgoingRelay
from protocol.audit_verify import LogEntry, verify_audit_log
from protocol.checkpoint import Checkpoint, sign_checkpoint
from protocol.encoding import sha256_hex
from protocol.envelope import SealedMessage
from protocol.errors import ErrorCode
from protocol.evidence import (
    EvidenceType,
    encode_evidence_batch,
    issue_evidence,
    new_statement,
    parse_evidence_batch,
    parse_signed_evidence,
    verify_evidence,
)
from protocol.ids import MessageId
from protocol.topology import KIND_EVIDENCE, KIND_EVIDENCE_BATCH
from tests.gateway.conftest import Harness, InMemoryBroker, Published
from tests.support.network import BD, LY, NOW


@dataclass(frozen=True)
class Relayed:
    sealed: SealedMessage
    message_id: MessageId


async def _relayed(harness: Harness, count: int) -> list[Relayed]:
    """`count` messages BD -> LY taken through the pipeline (accepted, relayed, their evidence committed)."""
    relayed = []
    for _ in range(count):
        sealed = harness.net.seal()
        await harness.pipeline.handle(harness.delivery(sealed.to_bytes(), publisher=BD))
        relayed.append(Relayed(sealed, MessageId(uuid.UUID(harness.broker.confirmed[-1].message_id))))
    return relayed


def _delivery_by_ly(harness: Harness, relayed: Relayed, *, digest: str | None = None) -> bytes:
    statement = new_statement(
        EvidenceType.DELIVERY,
        message_id=relayed.message_id,
        message_digest=digest or relayed.sealed.digest,
        sender=BD,
        recipient=LY,
        issuer=LY,
        at=NOW,
    )
    return issue_evidence(statement, harness.net[LY].signing).model_dump_json().encode()


def _batch(statements: list[bytes]) -> bytes:
    return encode_evidence_batch(statements)


def _evidence_types(published: Published, harness: Harness) -> list[EvidenceType]:
    bodies = (
        [published.body]
        if published.kind == KIND_EVIDENCE
        else parse_evidence_batch(published.body, harness.net.limits)
    )
    directory = harness.net.directory()
    return [
        verify_evidence(parse_signed_evidence(body, harness.net.limits), directory, now=NOW).statement.evidence_type
        for body in bodies
    ]


# -- gateway -> agency ---------------------------------------------------------------------------


async def test_evidence_owed_to_an_agency_leaves_as_one_batch(harness: Harness) -> None:
    """Two exchanges' SUBMISSION_ACCEPTED and RELAY_ACCEPTED for BD: one broker message, four statements."""
    await _relayed(harness, 2)
    broker = InMemoryBroker()
    await OutgoingRelay(harness.store, broker, limits=harness.net.limits).drain()
    assert [(p.routing_key, p.kind) for p in broker.confirmed] == [(BD, KIND_EVIDENCE_BATCH)]
    assert sorted(_evidence_types(broker.confirmed[0], harness)) == sorted(
        [EvidenceType.SUBMISSION_ACCEPTED, EvidenceType.RELAY_ACCEPTED] * 2
    )
    assert await harness.store.pending_outgoing() == []


async def test_a_single_statement_leaves_alone_as_the_old_kind(harness: Harness) -> None:
    """Nothing else waiting: one statement is published as `KIND_EVIDENCE`, byte for byte what it was."""
    outcome = await harness.pipeline.handle(harness.delivery(b"not a sealed message", publisher=BD))
    assert outcome.result == "rejected"
    (pending,) = await harness.store.pending_outgoing()
    broker = InMemoryBroker()
    await OutgoingRelay(harness.store, broker, limits=harness.net.limits).drain()
    assert [(p.routing_key, p.kind, p.body) for p in broker.confirmed] == [(BD, KIND_EVIDENCE, pending.body)]


async def test_a_batch_is_bounded_by_the_statement_limit(harness: Harness) -> None:
    """Five statements for BD under a limit of two a batch: batches of two, two and the last one alone."""
    await _relayed(harness, 2)
    await harness.pipeline.handle(harness.delivery(b"garbage", publisher=BD))
    limits = dataclasses.replace(harness.net.limits, max_evidence_batch_statements=2)
    broker = InMemoryBroker()
    await OutgoingRelay(harness.store, broker, limits=limits).drain()
    assert sorted(p.kind for p in broker.confirmed) == sorted([KIND_EVIDENCE, KIND_EVIDENCE_BATCH, KIND_EVIDENCE_BATCH])
    assert sum(len(_evidence_types(p, harness)) for p in broker.confirmed) == 5


async def test_an_exchanges_acceptance_and_relay_wake_the_relay_once_together(harness: Harness) -> None:
    """The relay is not woken at the acceptance, only once RELAY_ACCEPTED is committed too: both leave together."""
    wakes: list[int] = []
    harness.pipeline._wake_relay = lambda: wakes.append(1)  # the service passes `OutgoingRelay.wake`
    await _relayed(harness, 1)
    assert len(wakes) == 1
    assert sorted(t for _, t in await harness.outgoing()) == sorted(
        [EvidenceType.SUBMISSION_ACCEPTED, EvidenceType.RELAY_ACCEPTED]
    )


async def test_batch_forms_under_concurrency_while_a_publish_is_in_flight(harness: Harness) -> None:
    """Group commit: the first statement leaves at once and alone; what is committed meanwhile leaves together."""
    first_in_flight = asyncio.Event()
    release = asyncio.Event()

    class SlowConfirms(InMemoryBroker):
        async def publish(self, *, routing_key: str, body: bytes, kind: str, message_id: str) -> None:
            if not self.confirmed and not first_in_flight.is_set():
                first_in_flight.set()
                await release.wait()
            await super().publish(routing_key=routing_key, body=body, kind=kind, message_id=message_id)

    broker = SlowConfirms()
    relay = OutgoingRelay(harness.store, broker, limits=harness.net.limits, poll_interval=0.05)
    harness.pipeline._wake_relay = relay.wake
    stopping = asyncio.Event()
    running = asyncio.create_task(relay.run(stopping))
    try:
        await harness.pipeline.handle(harness.delivery(b"garbage", publisher=BD))  # one SUBMISSION_REJECTED
        await asyncio.wait_for(first_in_flight.wait(), timeout=30)
        await asyncio.gather(*(harness.pipeline.handle(harness.delivery(b"x" * n, publisher=BD)) for n in range(2, 8)))
        release.set()
        for _ in range(600):
            if not await harness.store.pending_outgoing():
                break
            await asyncio.sleep(0.05)
    finally:
        stopping.set()
        await running
    assert [p.kind for p in broker.confirmed] == [KIND_EVIDENCE, KIND_EVIDENCE_BATCH]
    assert len(_evidence_types(broker.confirmed[1], harness)) == 6


# -- recipient -> gateway ----------------------------------------------------------------------


async def test_batch_of_deliveries_is_logged_and_forwarded_statement_by_statement(harness: Harness) -> None:
    first, second = await _relayed(harness, 2)
    batch = _batch([_delivery_by_ly(harness, first), _delivery_by_ly(harness, second)])
    outcome = await harness.pipeline.handle(harness.delivery(batch, publisher=LY, kind=KIND_EVIDENCE_BATCH))
    assert outcome.result == "forwarded"
    assert (await harness.outgoing()).count((BD, EvidenceType.DELIVERY)) == 2
    assert (await harness.evidence_types()).count("DELIVERY") == 2


async def test_bad_statement_in_a_batch_is_refused_alone_and_the_good_ones_kept(harness: Harness) -> None:
    """A DELIVERY naming a digest the gateway never relayed is refused with its own audit entry; its neighbours pass."""
    first, second = await _relayed(harness, 2)
    forged = _delivery_by_ly(harness, first, digest="aa" * 32)
    batch = _batch([_delivery_by_ly(harness, first), forged, _delivery_by_ly(harness, second)])
    outcome = await harness.pipeline.handle(harness.delivery(batch, publisher=LY, kind=KIND_EVIDENCE_BATCH))
    assert outcome.result == "forwarded"
    assert (await harness.outgoing()).count((BD, EvidenceType.DELIVERY)) == 2
    rejected = [leaf for leaf in await harness.leaves() if leaf["kind"] == "rejected_input"]
    assert [leaf["identity"] for leaf in rejected] == [f"rejected/{'net.' + LY}/{sha256_hex(forged)}"]


async def test_statement_published_by_another_agency_in_a_batch_is_refused(harness: Harness) -> None:
    """LY's DELIVERY inside a batch LY-AGO published: refused, as it is alone."""
    (first,) = await _relayed(harness, 1)
    batch = _batch([_delivery_by_ly(harness, first), _delivery_by_ly(harness, first)])
    outcome = await harness.pipeline.handle(harness.delivery(batch, publisher=BD, kind=KIND_EVIDENCE_BATCH))
    assert outcome.result == "rejected"
    assert (await harness.outgoing()).count((BD, EvidenceType.DELIVERY)) == 0


async def test_redelivered_batch_is_a_no_op(harness: Harness) -> None:
    first, second = await _relayed(harness, 2)
    batch = _batch([_delivery_by_ly(harness, first), _delivery_by_ly(harness, second)])
    await harness.pipeline.handle(harness.delivery(batch, publisher=LY, kind=KIND_EVIDENCE_BATCH))
    leaves = await harness.leaves()
    outgoing = await harness.outgoing()
    again = await harness.pipeline.handle(harness.delivery(batch, publisher=LY, kind=KIND_EVIDENCE_BATCH))
    assert again.result == "duplicate"
    assert await harness.leaves() == leaves
    assert await harness.outgoing() == outgoing


async def test_statement_seen_alone_before_adds_nothing_in_a_batch(harness: Harness) -> None:
    """The old single kind and the batch meet: identity per statement, not per delivery."""
    first, second = await _relayed(harness, 2)
    single = _delivery_by_ly(harness, first)
    alone = await harness.pipeline.handle(harness.delivery(single, publisher=LY, kind=KIND_EVIDENCE))
    assert alone.result == "forwarded"
    batch = _batch([single, _delivery_by_ly(harness, second)])
    await harness.pipeline.handle(harness.delivery(batch, publisher=LY, kind=KIND_EVIDENCE_BATCH))
    assert (await harness.outgoing()).count((BD, EvidenceType.DELIVERY)) == 2
    assert (await harness.evidence_types()).count("DELIVERY") == 2


async def test_batch_that_is_no_batch_is_refused_whole(harness: Harness) -> None:
    """Not a batch at all: one `rejected_input` entry for the delivery, as for a malformed single evidence."""
    for body in (b"[]", b'{"format":"rogatory-evidence-batch/1","statements":[{"a":1}]}', b"\xff"):
        outcome = await harness.pipeline.handle(harness.delivery(body, publisher=LY, kind=KIND_EVIDENCE_BATCH))
        assert outcome.result == "rejected"
        assert outcome.code is not None
    rejected = [leaf for leaf in await harness.leaves() if leaf["kind"] == "rejected_input"]
    assert len(rejected) == 3


async def test_batch_over_the_statement_limit_is_refused_whole(harness: Harness) -> None:
    (first,) = await _relayed(harness, 1)
    statement = _delivery_by_ly(harness, first)
    batch = _batch([statement] * (harness.net.limits.max_evidence_batch_statements + 1))
    outcome = await harness.pipeline.handle(harness.delivery(batch, publisher=LY, kind=KIND_EVIDENCE_BATCH))
    assert (outcome.result, outcome.code) == ("rejected", ErrorCode.TOO_LARGE)
    assert (await harness.outgoing()).count((BD, EvidenceType.DELIVERY)) == 0


async def test_statements_about_one_message_are_logged_in_their_order_within_a_batch(harness: Harness) -> None:
    """DELIVERY then RETRIEVAL of one message in one batch, beside another message's: the log keeps their order."""
    first, second = await _relayed(harness, 2)
    retrieval = (
        issue_evidence(
            new_statement(
                EvidenceType.RETRIEVAL,
                message_id=first.message_id,
                message_digest=first.sealed.digest,
                sender=BD,
                recipient=LY,
                issuer=LY,
                at=NOW,
            ),
            harness.net[LY].signing,
        )
        .model_dump_json()
        .encode()
    )
    batch = _batch([_delivery_by_ly(harness, first), _delivery_by_ly(harness, second), retrieval])
    outcome = await harness.pipeline.handle(harness.delivery(batch, publisher=LY, kind=KIND_EVIDENCE_BATCH))
    assert outcome.result == "forwarded"
    entries = [LogEntry(record.leaf, record.receipt) for record in await harness.store.leaves(limit=1000)]
    size = await harness.audit.current_size()
    note = sign_checkpoint(
        Checkpoint("rogatory.test/audit-log", size, await harness.audit.root(size)),
        "rogatory.test/audit-log",
        harness.net.log_key,
    ).to_text()
    report = verify_audit_log(entries, [note], authority=harness.net.authority.public_key)
    assert report.consistent, report.problem
    assert (await harness.evidence_types()).count("RETRIEVAL") == 1
