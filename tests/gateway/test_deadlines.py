"""Negative evidence when time runs out: NON_DELIVERY after expiry, NON_RETRIEVAL after the retrieval deadline."""

from __future__ import annotations

import uuid
from datetime import timedelta

from gateway.deadlines import DeadlineWatcher
from protocol.evidence import EvidenceType, issue_evidence, new_statement
from protocol.ids import MessageId
from protocol.topology import KIND_EVIDENCE
from tests.gateway.conftest import Harness
from tests.support.network import BD, LY, NOW

GRACE = timedelta(minutes=5)
RETRIEVAL = timedelta(days=7)


def watcher(harness: Harness) -> DeadlineWatcher:
    return DeadlineWatcher(
        identity=harness.identity,
        store=harness.store,
        audit=harness.audit,
        clock=lambda: harness.clock[0],
        delivery_grace=GRACE,
        retrieval_deadline=RETRIEVAL,
    )


async def relay_one(harness: Harness, ttl: timedelta = timedelta(hours=1)) -> tuple[MessageId, str]:
    sealed = harness.net.seal(ttl=ttl)
    await harness.pipeline.handle(harness.delivery(sealed.to_bytes(), publisher=BD))
    return MessageId(uuid.UUID(harness.broker.confirmed[-1].message_id)), sealed.digest


async def recipient_says(harness: Harness, evidence_type: EvidenceType, message_id: MessageId, digest: str) -> None:
    statement = new_statement(
        evidence_type,
        message_id=message_id,
        message_digest=digest,
        sender=BD,
        recipient=LY,
        issuer=LY,
        at=harness.clock[0],
    )
    body = issue_evidence(statement, harness.net[LY].signing).model_dump_json().encode()
    await harness.pipeline.handle(harness.delivery(body, publisher=LY, kind=KIND_EVIDENCE))


async def test_undelivered_message_gets_non_delivery_after_expiry_and_grace(harness):
    """A copy never delivered gets NON_DELIVERY (EXPIRED), issued by the gateway, once expiry plus grace passed."""
    await relay_one(harness)
    harness.clock[0] = NOW + timedelta(hours=1) + GRACE - timedelta(seconds=1)
    assert await watcher(harness).sweep() == 0
    harness.clock[0] = NOW + timedelta(hours=1) + GRACE + timedelta(seconds=1)
    assert await watcher(harness).sweep() == 1
    assert (BD, EvidenceType.NON_DELIVERY) in await harness.outgoing()
    assert await watcher(harness).sweep() == 0  # once only
    assert (await harness.evidence_types()).count("NON_DELIVERY") == 1


async def test_delivered_message_is_never_declared_undelivered(harness):
    """DELIVERY before the deadline means no NON_DELIVERY, however late the sweep."""
    message_id, digest = await relay_one(harness)
    await recipient_says(harness, EvidenceType.DELIVERY, message_id, digest)
    harness.clock[0] = NOW + timedelta(hours=2)
    assert await watcher(harness).sweep() == 0


async def test_delivered_but_not_retrieved_gets_non_retrieval(harness):
    """A copy delivered and not taken within the retrieval deadline gets NON_RETRIEVAL."""
    message_id, digest = await relay_one(harness, ttl=timedelta(days=7))
    await recipient_says(harness, EvidenceType.DELIVERY, message_id, digest)
    harness.clock[0] = NOW + RETRIEVAL + timedelta(minutes=1)
    assert await watcher(harness).sweep() == 1
    assert (BD, EvidenceType.NON_RETRIEVAL) in await harness.outgoing()


async def test_retrieved_message_gets_no_non_retrieval(harness):
    """RETRIEVAL in time means no NON_RETRIEVAL."""
    message_id, digest = await relay_one(harness, ttl=timedelta(days=7))
    await recipient_says(harness, EvidenceType.DELIVERY, message_id, digest)
    await recipient_says(harness, EvidenceType.RETRIEVAL, message_id, digest)
    harness.clock[0] = NOW + RETRIEVAL + timedelta(days=1)
    assert await watcher(harness).sweep() == 0


async def test_retrieval_logged_before_its_delivery_still_counts_as_retrieved(harness):
    """Two gateway processes may log a recipient's RETRIEVAL before its DELIVERY: the copy stays retrieved, so
    the sweep never declares it unretrieved, and both are forwarded."""
    message_id, digest = await relay_one(harness, ttl=timedelta(days=7))
    await recipient_says(harness, EvidenceType.RETRIEVAL, message_id, digest)
    await recipient_says(harness, EvidenceType.DELIVERY, message_id, digest)
    harness.clock[0] = NOW + RETRIEVAL + timedelta(days=1)
    assert await watcher(harness).sweep() == 0
    forwarded = await harness.outgoing()
    assert (BD, EvidenceType.RETRIEVAL) in forwarded
    assert (BD, EvidenceType.DELIVERY) in forwarded
