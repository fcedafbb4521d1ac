"""The gateway pipeline, step by step, on a real store (SQLite and PostgreSQL) and an in-memory broker port."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from protocol.audit_verify import LogEntry, verify_audit_log
from protocol.checkpoint import Checkpoint, sign_checkpoint
from protocol.errors import ErrorCode
from protocol.evidence import EvidenceType, issue_evidence, new_statement
from protocol.ids import MessageId
from protocol.topology import KIND_EVIDENCE
from runtime.errors import BrokerUnavailable
from tests.support.network import BD, BD_POLICE, LY, LY_AGO, NOW


async def test_accepted_message_is_logged_then_relayed_with_evidence(harness):
    """A valid message is logged as accepted, relayed unchanged to its recipient, and the sender told both."""
    sealed = harness.net.seal()
    outcome = await harness.pipeline.handle(harness.delivery(sealed.to_bytes(), publisher=BD))
    assert outcome.result == "relayed"
    assert [(p.routing_key, p.body) for p in harness.broker.confirmed] == [(LY, sealed.to_bytes())]
    assert await harness.evidence_types() == ["SUBMISSION_ACCEPTED", "RELAY_ACCEPTED"]
    assert await harness.outgoing() == [(BD, EvidenceType.SUBMISSION_ACCEPTED), (BD, EvidenceType.RELAY_ACCEPTED)]


async def test_redelivered_message_adds_no_second_leaf(harness):
    """A broker redelivery of the same envelope is recognised: no second relay, no second leaf."""
    wire = harness.net.seal().to_bytes()
    await harness.pipeline.handle(harness.delivery(wire, publisher=BD))
    leaves = await harness.leaves()
    outcome = await harness.pipeline.handle(harness.delivery(wire, publisher=BD))
    assert outcome.result == "duplicate"
    assert await harness.leaves() == leaves
    assert len(harness.broker.confirmed) == 1


async def test_replayed_message_id_with_other_content_is_refused(harness):
    """Another envelope under a message id already accepted is REPLAYED, logged and told to the publisher."""
    message_id = MessageId(uuid.uuid4())
    await harness.pipeline.handle(harness.delivery(harness.net.seal(message_id=message_id).to_bytes(), publisher=BD))
    second = harness.net.seal(b'{"other":1}', message_id=message_id)
    outcome = await harness.pipeline.handle(
        harness.delivery(second.to_bytes(), publisher=BD, message_id=str(message_id))
    )
    assert outcome.code == ErrorCode.REPLAYED
    assert (BD, EvidenceType.SUBMISSION_REJECTED) in await harness.outgoing()
    assert len(harness.broker.confirmed) == 1


async def test_publisher_other_than_the_signed_sender_is_refused(harness):
    """LY-AGO's broker identity publishing BD's signed envelope is refused (impersonation or replay)."""
    outcome = await harness.pipeline.handle(harness.delivery(harness.net.seal().to_bytes(), publisher=LY_AGO))
    assert outcome.code == ErrorCode.BROKER_USER_MISMATCH
    assert harness.broker.confirmed == []
    assert await harness.outgoing() == [(LY_AGO, EvidenceType.SUBMISSION_REJECTED)]


async def test_publisher_that_is_no_agency_is_logged_as_rejected_input(harness):
    """A delivery without an agency's user_id cannot be answered; it is logged, nothing is relayed."""
    outcome = await harness.pipeline.handle(harness.delivery(b"garbage", publisher=None))
    assert outcome.result == "rejected"
    assert (await harness.leaves())[-1]["kind"] == "rejected_input"
    assert harness.broker.confirmed == []


async def test_exchange_without_an_agreement_is_refused(harness):
    """BD's police unit may not write to Libya directly: POLICY_DENIED, logged, told."""
    sealed = harness.net.seal(sender=BD_POLICE, recipients=(LY,))
    outcome = await harness.pipeline.handle(harness.delivery(sealed.to_bytes(), publisher=BD_POLICE))
    assert outcome.code == ErrorCode.POLICY_DENIED
    assert await harness.outgoing() == [(BD_POLICE, EvidenceType.SUBMISSION_REJECTED)]


async def test_expired_message_is_refused(harness):
    """A message past its expiry is refused at the gateway."""
    sealed = harness.net.seal(ttl=timedelta(minutes=5))
    harness.clock[0] = NOW + timedelta(minutes=6)
    outcome = await harness.pipeline.handle(harness.delivery(sealed.to_bytes(), publisher=BD))
    assert outcome.code == ErrorCode.EXPIRED


async def test_garbage_is_refused_and_the_next_message_flows(harness):
    """Malformed bytes are refused with a code; the next good message is relayed as usual."""
    bad = await harness.pipeline.handle(harness.delivery(b"RGTY\x01 not really", publisher=BD))
    assert bad.code == ErrorCode.MALFORMED_ENVELOPE
    good = await harness.pipeline.handle(harness.delivery(harness.net.seal().to_bytes(), publisher=BD))
    assert good.result == "relayed"


async def test_unroutable_recipient_gets_relay_failed(harness):
    """When the broker returns the copy (no inbox bound), the sender gets RELAY_FAILED with a reason."""
    harness.broker.unroutable.add(LY)
    await harness.pipeline.handle(harness.delivery(harness.net.seal().to_bytes(), publisher=BD))
    assert await harness.outgoing() == [(BD, EvidenceType.SUBMISSION_ACCEPTED), (BD, EvidenceType.RELAY_FAILED)]


async def test_broker_away_during_relay_is_retried_without_duplicates(harness):
    """A relay that is not confirmed raises for a retry; the retry completes without a second leaf."""
    wire = harness.net.seal().to_bytes()
    harness.broker.down = True
    with pytest.raises(BrokerUnavailable):
        await harness.pipeline.handle(harness.delivery(wire, publisher=BD))
    assert await harness.evidence_types() == ["SUBMISSION_ACCEPTED"]
    harness.broker.down = False
    outcome = await harness.pipeline.handle(harness.delivery(wire, publisher=BD))
    assert outcome.result == "duplicate"
    assert await harness.evidence_types() == ["SUBMISSION_ACCEPTED", "RELAY_ACCEPTED"]
    assert len(harness.broker.confirmed) == 1


async def test_recipient_evidence_is_verified_logged_and_forwarded(harness):
    """DELIVERY signed by the recipient about a relayed message goes to the sender, once."""
    sealed = harness.net.seal()
    await harness.pipeline.handle(harness.delivery(sealed.to_bytes(), publisher=BD))
    header_id = MessageId(uuid.UUID(harness.broker.confirmed[0].message_id))
    delivery = (
        issue_evidence(
            new_statement(
                EvidenceType.DELIVERY,
                message_id=header_id,
                message_digest=sealed.digest,
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
    outcome = await harness.pipeline.handle(harness.delivery(delivery, publisher=LY, kind=KIND_EVIDENCE))
    assert outcome.result == "forwarded"
    again = await harness.pipeline.handle(harness.delivery(delivery, publisher=LY, kind=KIND_EVIDENCE))
    assert again.result == "duplicate"
    assert (await harness.outgoing()).count((BD, EvidenceType.DELIVERY)) == 1


async def test_evidence_about_a_message_never_relayed_is_refused(harness):
    """A recipient cannot log DELIVERY of something the gateway never relayed to it."""
    forged = (
        issue_evidence(
            new_statement(
                EvidenceType.DELIVERY,
                message_id=MessageId(uuid.uuid4()),
                message_digest="aa" * 32,
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
    outcome = await harness.pipeline.handle(harness.delivery(forged, publisher=LY, kind=KIND_EVIDENCE))
    assert outcome.code == ErrorCode.EVIDENCE_MISMATCH
    assert (await harness.leaves())[-1]["kind"] == "rejected_input"


async def test_evidence_published_by_another_agency_is_refused(harness):
    """LY's signed DELIVERY republished by LY-AGO's broker identity is refused."""
    sealed = harness.net.seal()
    await harness.pipeline.handle(harness.delivery(sealed.to_bytes(), publisher=BD))
    delivery = (
        issue_evidence(
            new_statement(
                EvidenceType.DELIVERY,
                message_id=MessageId(uuid.UUID(harness.broker.confirmed[0].message_id)),
                message_digest=sealed.digest,
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
    outcome = await harness.pipeline.handle(harness.delivery(delivery, publisher=LY_AGO, kind=KIND_EVIDENCE))
    assert outcome.code == ErrorCode.BROKER_USER_MISMATCH


async def test_log_of_a_busy_pipeline_verifies(harness):
    """After accepted, refused, duplicated and forwarded traffic, the audit log verifies end to end."""
    sealed = harness.net.seal()
    await harness.pipeline.handle(harness.delivery(sealed.to_bytes(), publisher=BD))
    await harness.pipeline.handle(harness.delivery(sealed.to_bytes(), publisher=BD))
    await harness.pipeline.handle(harness.delivery(b"junk", publisher=LY))
    await harness.pipeline.handle(harness.delivery(harness.net.seal(sender=BD_POLICE).to_bytes(), publisher=BD_POLICE))
    statement = new_statement(
        EvidenceType.DELIVERY,
        message_id=MessageId(uuid.UUID(harness.broker.confirmed[0].message_id)),
        message_digest=sealed.digest,
        sender=BD,
        recipient=LY,
        issuer=LY,
        at=NOW,
    )
    await harness.pipeline.handle(
        harness.delivery(
            issue_evidence(statement, harness.net[LY].signing).model_dump_json().encode(),
            publisher=LY,
            kind=KIND_EVIDENCE,
        )
    )
    entries = [LogEntry(record.leaf, record.receipt) for record in await harness.store.leaves(limit=1000)]
    size = await harness.audit.current_size()
    note = sign_checkpoint(
        Checkpoint("rogatory.test/audit-log", size, await harness.audit.root(size)),
        "rogatory.test/audit-log",
        harness.net.log_key,
    ).to_text()
    report = verify_audit_log(entries, [note], authority=harness.net.authority.public_key)
    assert report.consistent, report.problem
    assert report.evidence == 5


async def test_recipient_evidence_before_the_relay_is_logged_keeps_the_log_in_order(harness):
    """The copy reached LY but logging its relay failed (its confirm lost, a disk full): LY's DELIVERY comes first.

    The gateway logs RELAY_ACCEPTED before the DELIVERY (only a copy it published can produce the recipient's
    statement), the submission coming back routes no second copy and adds nothing, and the log verifies.
    """
    message_id = MessageId(uuid.uuid4())
    sealed = harness.net.seal(message_id=message_id)
    harness.broker.down = True
    with pytest.raises(BrokerUnavailable):
        await harness.pipeline.handle(harness.delivery(sealed.to_bytes(), publisher=BD))
    harness.broker.down = False
    statement = new_statement(
        EvidenceType.DELIVERY,
        message_id=message_id,
        message_digest=sealed.digest,
        sender=BD,
        recipient=LY,
        issuer=LY,
        at=NOW,
    )
    evidence = issue_evidence(statement, harness.net[LY].signing).model_dump_json().encode()
    outcome = await harness.pipeline.handle(harness.delivery(evidence, publisher=LY, kind=KIND_EVIDENCE))
    assert outcome.result == "forwarded"
    again = await harness.pipeline.handle(harness.delivery(sealed.to_bytes(), publisher=BD))
    assert again.result == "duplicate"
    assert harness.broker.confirmed == []  # no second copy
    assert await harness.evidence_types() == ["SUBMISSION_ACCEPTED", "RELAY_ACCEPTED", "DELIVERY"]
    assert sorted(t for _, t in await harness.outgoing()) == sorted(
        [EvidenceType.SUBMISSION_ACCEPTED, EvidenceType.RELAY_ACCEPTED, EvidenceType.DELIVERY]
    )
    entries = [LogEntry(record.leaf, record.receipt) for record in await harness.store.leaves(limit=1000)]
    size = await harness.audit.current_size()
    note = sign_checkpoint(
        Checkpoint("rogatory.test/audit-log", size, await harness.audit.root(size)),
        "rogatory.test/audit-log",
        harness.net.log_key,
    ).to_text()
    report = verify_audit_log(entries, [note], authority=harness.net.authority.public_key)
    assert report.consistent, report.problem
