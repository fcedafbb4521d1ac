"""Evidence in batches at an agent: the DELIVERY statements it sends, and the evidence batches it receives.

Two in-process agents on real stores (`tests.agents.harness`); the outbox
relay is `agents.outbox.OutboxRelay`, the one the service runs, publishing
to a recording port in place of the broker.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agents.outbox import OutboxRelay
from agents.receiving import InboxDelivery
from protocol.evidence import (
    EvidenceType,
    encode_evidence_batch,
    issue_evidence,
    new_statement,
    parse_evidence_batch,
    parse_signed_evidence,
    verify_evidence,
)
from protocol.ids import parse_message_id
from protocol.limits import DEFAULT_LIMITS
from protocol.topology import KIND_EVIDENCE, KIND_EVIDENCE_BATCH
from tests.agents.harness import GATEWAY_USER, InProcessAgent
from tests.agents.test_cases import fresh, new_case, sample
from tests.support.network import BD, LY, NOW

REQUEST = "BD-LY-2025-0011_01_MLA_REQUEST.json"


@dataclass
class RecordingPort:
    """Takes what the relay publishes, as the broker would confirm it."""

    published: list[tuple[str, str, bytes]] = field(default_factory=list)

    async def publish(self, *, body: bytes, kind: str, message_id: str) -> None:
        self.published.append((kind, message_id, body))


async def _delivered(bd: InProcessAgent, ly: InProcessAgent, count: int) -> list[str]:
    """`count` requests BD -> LY delivered to LY's agent; LY's DELIVERY statements wait in its outbox."""
    ids = []
    for _ in range(count):
        status, answer = await bd.submit(fresh(sample(REQUEST), new_case()))
        assert status == 202
        ids.append(answer["message_id"])
    for record in await bd.store.queued():
        assert (await ly.receiver.receive_message(record.sealed)).result == "delivered"
    return ids


async def _deliveries_sent_by(ly: InProcessAgent) -> RecordingPort:
    port = RecordingPort()
    await OutboxRelay(ly.store, port, clock=lambda: NOW, agency=ly.agency).drain()
    return port


async def _evidence_types(agent: InProcessAgent, message_id: str) -> list[str]:
    return [record.evidence_type for record in await agent.store.evidence_for(message_id)]


def _inbox(body: bytes, kind: str = KIND_EVIDENCE_BATCH) -> InboxDelivery:
    return InboxDelivery(body=body, kind=kind, user_id=GATEWAY_USER)


async def test_recipients_deliveries_leave_as_one_batch(agents: tuple[InProcessAgent, InProcessAgent]) -> None:
    """One broker message, under the AMQP message id all of LY's evidence travels under (the gateway's order)."""
    bd, ly = agents
    await _delivered(bd, ly, 3)
    port = await _deliveries_sent_by(ly)
    assert [(kind, amqp_id) for kind, amqp_id, _ in port.published] == [(KIND_EVIDENCE_BATCH, f"evidence/{LY}")]
    assert len(parse_evidence_batch(port.published[0][2], DEFAULT_LIMITS)) == 3
    assert await ly.store.pending_evidence() == []


async def test_a_single_delivery_leaves_alone_as_the_old_kind(agents: tuple[InProcessAgent, InProcessAgent]) -> None:
    bd, ly = agents
    (message_id,) = await _delivered(bd, ly, 1)
    port = await _deliveries_sent_by(ly)
    ((kind, amqp_id, body),) = port.published
    assert (kind, amqp_id) == (KIND_EVIDENCE, f"evidence/{LY}")
    statement = verify_evidence(parse_signed_evidence(body, DEFAULT_LIMITS), ly.directory, now=NOW).statement
    assert (statement.evidence_type, str(statement.message_id)) == (EvidenceType.DELIVERY, message_id)


async def test_batch_moves_each_message_and_a_redelivered_batch_is_a_no_op(
    agents: tuple[InProcessAgent, InProcessAgent],
) -> None:
    bd, ly = agents
    ids = await _delivered(bd, ly, 2)
    ((_, _, batch),) = (await _deliveries_sent_by(ly)).published
    first = await bd.receiver.handle(_inbox(batch))
    assert first.result == "kept"
    for message_id in ids:
        assert await _evidence_types(bd, message_id) == [EvidenceType.DELIVERY]
    again = await bd.receiver.handle(_inbox(batch))
    assert again.result == "duplicate"
    for message_id in ids:
        assert await _evidence_types(bd, message_id) == [EvidenceType.DELIVERY]


async def test_bad_statement_in_a_batch_is_refused_alone_and_the_good_ones_kept(
    agents: tuple[InProcessAgent, InProcessAgent],
) -> None:
    """A DELIVERY naming a digest BD never sealed sits between two good ones: only it is refused."""
    bd, ly = agents
    ids = await _delivered(bd, ly, 2)
    ((_, _, batch),) = (await _deliveries_sent_by(ly)).published
    good = parse_evidence_batch(batch, DEFAULT_LIMITS)
    forged = (
        issue_evidence(
            new_statement(
                EvidenceType.RETRIEVAL,
                message_id=parse_message_id(ids[0]),
                message_digest="aa" * 32,
                sender=BD,
                recipient=LY,
                issuer=LY,
                at=NOW,
            ),
            ly.keys.signing,
        )
        .model_dump_json()
        .encode()
    )
    mixed = encode_evidence_batch([good[0], forged, good[1]])
    assert (await bd.receiver.handle(_inbox(mixed))).result == "kept"
    for message_id in ids:
        assert await _evidence_types(bd, message_id) == [EvidenceType.DELIVERY]


async def test_old_single_statement_kind_is_still_accepted(agents: tuple[InProcessAgent, InProcessAgent]) -> None:
    """A gateway not yet upgraded sends one statement a message: taken as before, and a batch after it adds nothing."""
    bd, ly = agents
    (message_id,) = await _delivered(bd, ly, 1)
    ((kind, _, single),) = (await _deliveries_sent_by(ly)).published
    assert kind == KIND_EVIDENCE
    assert (await bd.receiver.handle(_inbox(single, KIND_EVIDENCE))).result == "kept"
    assert (await bd.receiver.handle(_inbox(encode_evidence_batch([single, single])))).result == "duplicate"
    assert await _evidence_types(bd, message_id) == [EvidenceType.DELIVERY]


async def test_batch_that_is_no_batch_is_refused_whole(agents: tuple[InProcessAgent, InProcessAgent]) -> None:
    bd, _ = agents
    for body in (b"{}", b'{"format":"other/1","statements":["x"]}', b'{"format":"rogatory-evidence-batch/1"}'):
        received = await bd.receiver.handle(_inbox(body))
        assert (received.result, received.kind) == ("refused", "evidence-batch")


async def test_batch_not_published_by_the_gateway_is_dropped(agents: tuple[InProcessAgent, InProcessAgent]) -> None:
    bd, ly = agents
    await _delivered(bd, ly, 2)
    ((_, _, batch),) = (await _deliveries_sent_by(ly)).published
    received = await bd.receiver.handle(InboxDelivery(body=batch, kind=KIND_EVIDENCE_BATCH, user_id="net.LY-MLA-CA"))
    assert received.result == "dropped"
