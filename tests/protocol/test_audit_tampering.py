"""The auditor's verdict: any single tampering of a stored log is detected, and named."""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.attachments import AttachmentCommitment, AttachmentKey, StreamEncryptor, attachment_ad
from protocol.audit_verify import AuditReport, FailureKind, VerifiedState, verify_audit_log
from protocol.auditlog import (
    AttachmentsLeaf,
    AuditLeaf,
    BlobDeletedLeaf,
    DeadLetterLeaf,
    OperatorActionLeaf,
    RejectedInputLeaf,
    dead_letter_identity,
    directory_leaf,
    encode_leaf,
)
from protocol.checkpoint import Checkpoint, SignedCheckpoint, cosign_checkpoint, sign_checkpoint
from protocol.directory import PublishedSigningKey, sign_directory
from protocol.encoding import format_timestamp, pae
from protocol.envelope import EnvelopeHeader, Recipient, SealedMessage, seal
from protocol.evidence import Reason
from protocol.ids import AgencyId, CaseId, MessageId
from protocol.keys import SigningPrivateKey
from protocol.signing import PAYLOAD_TYPE_HEADER
from tests.support.auditlog import ORIGIN, BuiltLog, build_log, message_evidence
from tests.support.network import BD, LY, LY_AGO, NOW, LocalNetwork, published

LOG = build_log(messages=3)
AUTHORITY = LOG.net.authority.public_key


def verify(entries=None, checkpoints=None, previous=None):
    return verify_audit_log(
        LOG.entries if entries is None else entries,
        LOG.checkpoints if checkpoints is None else checkpoints,
        authority=AUTHORITY,
        previous=previous,
    )


def test_untampered_log_is_consistent_and_published():
    """The log as written verifies: every entry, checkpoint and cosignature; published to its end."""
    report = verify()
    assert report.consistent, report.problem
    assert (report.leaves, report.evidence, report.directories, report.checkpoints) == (13, 12, 1, 4)
    assert report.published_size == 13
    assert report.cosignatures == 8


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_changing_any_byte_of_any_leaf_is_detected_and_located(data):
    """One changed byte anywhere in a stored leaf is found, at that leaf's index."""
    index = data.draw(st.integers(0, len(LOG.entries) - 1))
    leaf = LOG.entries[index].leaf
    position = data.draw(st.integers(0, len(leaf) - 1))
    mask = data.draw(st.integers(1, 255))
    changed = bytearray(leaf)
    changed[position] ^= mask
    entries = list(LOG.entries)
    entries[index] = dataclasses.replace(entries[index], leaf=bytes(changed))
    report = verify(entries)
    assert not report.consistent
    assert report.problem is not None
    assert report.problem.index == index


def test_changing_the_first_middle_and_last_byte_of_every_leaf_is_located():
    """Exhaustively over leaves: the change is found at the right index."""
    for index, entry in enumerate(LOG.entries):
        for position in (0, len(entry.leaf) // 2, len(entry.leaf) - 1):
            changed = bytearray(entry.leaf)
            changed[position] ^= 0x01
            entries = list(LOG.entries)
            entries[index] = dataclasses.replace(entry, leaf=bytes(changed))
            problem = verify(entries).problem
            assert problem is not None
            assert problem.index == index


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_changing_any_byte_of_any_checkpoint_is_detected_and_located(data):
    """One changed byte in a checkpoint or its cosignatures is found, naming that checkpoint."""
    number = data.draw(st.integers(0, len(LOG.checkpoints) - 1))
    note = LOG.checkpoints[number].encode()
    position = data.draw(st.integers(0, len(note) - 1))
    changed = bytearray(note)
    changed[position] ^= data.draw(st.integers(1, 127))
    checkpoints = list(LOG.checkpoints)
    checkpoints[number] = bytes(changed).decode("utf-8", errors="replace")
    report = verify(checkpoints=checkpoints)
    assert not report.consistent
    assert report.problem is not None
    assert report.problem.checkpoint == number


@pytest.mark.parametrize("index", range(1, 13))
def test_deleting_a_leaf_is_detected_at_its_index(index):
    """A deleted entry is named: the next one no longer carries a receipt for that index."""
    entries = LOG.entries[:index] + LOG.entries[index + 1 :]
    problem = verify(entries).problem
    assert problem is not None
    assert problem.index == index


@pytest.mark.parametrize("index", range(1, 13))
def test_inserting_a_leaf_is_detected_at_its_index(index):
    """An inserted copy of another entry (not one of its neighbours) is named where it was inserted."""
    entries = [*LOG.entries[:index], LOG.entries[(index + 2) % len(LOG.entries)], *LOG.entries[index:]]
    problem = verify(entries).problem
    assert problem is not None
    assert problem.index == index


@pytest.mark.parametrize(("first", "second"), [(1, 2), (3, 7), (5, 12), (11, 12)])
def test_reordering_leaves_is_detected_at_the_first_moved(first, second):
    """Two entries swapped: the first of them is named."""
    entries = list(LOG.entries)
    entries[first], entries[second] = entries[second], entries[first]
    problem = verify(entries).problem
    assert problem is not None
    assert problem.index == first


def test_dropping_the_tail_is_detected():
    """A log cut short no longer reaches its checkpoints."""
    problem = verify(LOG.entries[:-2]).problem
    assert problem is not None
    assert problem.kind == FailureKind.TREE_MISMATCH


def test_receipts_swapped_with_their_leaves_do_not_pass():
    """Moving an entry together with its receipt is still caught: the receipt names the old index."""
    entries = list(LOG.entries)
    entries[2], entries[3] = entries[3], entries[2]
    problem = verify(entries).problem
    assert problem is not None
    assert problem.kind == FailureKind.RECEIPT_INVALID
    assert problem.index == 2


def test_forked_checkpoints_are_detected():
    """Two signed checkpoints of one size with different roots prove a fork."""
    fork = sign_checkpoint(Checkpoint(ORIGIN, 5, bytes(32), ("time 1",)), ORIGIN, LOG.net.log_key).to_text()
    problem = verify(checkpoints=[*LOG.checkpoints, fork]).problem
    assert problem is not None
    assert problem.kind in {FailureKind.FORK_DETECTED, FailureKind.TREE_MISMATCH}
    assert problem.checkpoint == len(LOG.checkpoints)


def test_checkpoint_signed_by_another_key_is_refused():
    """Only the gateway's log key signs checkpoints."""
    impostor = SigningPrivateKey.generate()
    note = sign_checkpoint(Checkpoint(ORIGIN, 13, LOG.tree.root(), ()), ORIGIN, impostor).to_text()
    problem = verify(checkpoints=[note]).problem
    assert problem is not None
    assert problem.kind == FailureKind.CHECKPOINT_INVALID


def test_cosignature_by_a_non_agency_is_refused():
    """A cosignature line must be an agency of the directory, signing with its key."""
    signed = SignedCheckpoint.parse(LOG.checkpoints[-1])
    forged = signed.with_signature(cosign_checkpoint(signed, LY_AGO, SigningPrivateKey.generate(), 5))
    problem = verify(checkpoints=[*LOG.checkpoints[:-1], forged.to_text()]).problem
    assert problem is not None
    assert problem.kind == FailureKind.COSIGNATURE_INVALID


def test_rewritten_history_is_caught_against_what_was_verified_before():
    """The gateway rebuilds a different, internally valid log: the auditor's remembered root exposes it."""
    first = verify()
    assert first.state is not None
    rewritten = build_log(messages=3, net=LOG.net)
    report = verify_audit_log(rewritten.entries, rewritten.checkpoints, authority=AUTHORITY, previous=first.state)
    assert report.problem is not None
    assert report.problem.kind == FailureKind.INCONSISTENT_WITH_PREVIOUS


def test_the_remembered_state_of_the_same_log_passes():
    """Verifying the same log again against what was remembered is consistent."""
    first = verify()
    assert first.state is not None
    assert verify(previous=first.state).consistent
    assert verify(previous=VerifiedState(ORIGIN, 5, LOG.tree.root(5))).consistent


def test_an_empty_log_is_not_consistent():
    """No directory, no checkpoint: nothing to vouch for."""
    assert not verify(entries=[], checkpoints=[]).consistent
    assert not verify(checkpoints=[]).consistent


# -- finding 8 of issue 15: what the offline verifier used to let through ------------------------


def posix(moment: datetime) -> int:
    return int(moment.timestamp())


def directory_version(
    net: LocalNetwork,
    version: int,
    *,
    issued_at: datetime = NOW - timedelta(hours=1),
    revoked: Mapping[str, datetime] | None = None,
    without: tuple[AgencyId, ...] = (),
    log_keys: tuple[PublishedSigningKey, ...] | None = None,
) -> bytes:
    """The leaf of directory `version` of `net`, with keys `revoked` (by key id) and agencies `without`."""
    revoked = revoked or {}
    base = net.directory()

    def revoke(key: PublishedSigningKey) -> PublishedSigningKey:
        return key.model_copy(update={"revoked_at": revoked[key.key_id]}) if key.key_id in revoked else key

    agencies = tuple(
        entry.model_copy(update={"signing_keys": tuple(revoke(key) for key in entry.signing_keys)})
        for entry in base.agencies
        if entry.agency_id not in without
    )
    gateway = base.gateway.model_copy(
        update={"log_keys": tuple(revoke(key) for key in (log_keys or base.gateway.log_keys))}
    )
    signed = sign_directory(
        net.directory(version=version, issued_at=issued_at, agencies=agencies, gateway=gateway), net.authority
    )
    return encode_leaf(directory_leaf(signed, version))


def listed(key: SigningPrivateKey) -> PublishedSigningKey:
    return PublishedSigningKey.model_validate(published(key))


def started(net: LocalNetwork | None = None, **directory: Any) -> BuiltLog:
    """A log of directory version 1 and one message (at NOW), checkpointed a minute later."""
    built = BuiltLog(net or LocalNetwork())
    built.append(directory_version(built.net, 1, **directory))
    for leaf in message_evidence(built.net, 0):
        built.append(leaf)
    built.checkpoint(time=posix(NOW + timedelta(minutes=1)))
    return built


def check(built: BuiltLog) -> AuditReport:
    return verify_audit_log(built.entries, built.checkpoints, authority=built.net.authority.public_key)


def rotate_log_key(built: BuiltLog, *, revoked_at: datetime, issued_at: datetime) -> SigningPrivateKey:
    """Directory version 2: a new log key, the old one revoked from `revoked_at`; logged under the new key."""
    old, new = built.net.log_key, SigningPrivateKey.generate()
    keys = (listed(old), listed(new))
    built.append(
        directory_version(built.net, 2, issued_at=issued_at, revoked={old.key_id: revoked_at}, log_keys=keys),
        log_key=new,
    )
    return new


def test_receipt_by_a_revoked_log_key_is_refused():
    """Once a directory in the log revokes the log key, an entry it vouches for after that is refused, by index."""
    built = started()
    old, revoked_at = built.net.log_key, NOW + timedelta(minutes=30)
    new = rotate_log_key(built, revoked_at=revoked_at, issued_at=revoked_at)
    built.checkpoint(time=posix(revoked_at + timedelta(minutes=1)), log_key=new)
    assert check(built).consistent, check(built).problem
    for leaf in message_evidence(built.net, 40):
        built.append(leaf, log_key=old)
    built.checkpoint(time=posix(NOW + timedelta(minutes=41)), log_key=new)
    problem = check(built).problem
    assert problem is not None
    assert (problem.kind, problem.index) == (FailureKind.RECEIPT_INVALID, 6)
    assert old.key_id in problem.detail


def test_checkpoint_signed_by_a_revoked_log_key_is_refused():
    """A checkpoint the revoked log key signs is refused even when it claims a time before the revocation."""
    built = started()
    old, revoked_at = built.net.log_key, NOW + timedelta(minutes=30)
    new = rotate_log_key(built, revoked_at=revoked_at, issued_at=revoked_at)
    built.checkpoint(time=posix(revoked_at + timedelta(minutes=1)), log_key=new)
    built.checkpoint(time=posix(NOW), log_key=old)
    problem = check(built).problem
    assert problem is not None
    assert (problem.kind, problem.checkpoint) == (FailureKind.CHECKPOINT_INVALID, 2)
    assert "revoked" in problem.detail


def test_a_later_revocation_refuses_what_the_log_key_signed_after_its_compromise():
    """A later directory that revokes the log key from an earlier time refuses the first entry it signed from then."""
    built = started()
    for minutes in (10, 20):
        for leaf in message_evidence(built.net, minutes):
            built.append(leaf)
    new = rotate_log_key(built, revoked_at=NOW + timedelta(minutes=5), issued_at=NOW + timedelta(minutes=25))
    built.checkpoint(time=posix(NOW + timedelta(minutes=26)), log_key=new)
    problem = check(built).problem
    assert problem is not None
    assert (problem.kind, problem.index) == (FailureKind.RECEIPT_INVALID, 5)


def sealed_with_attachment(net: LocalNetwork, message_id: MessageId) -> SealedMessage:
    stream_id = uuid.uuid4().hex
    encryptor = StreamEncryptor.new(attachment_ad(BD, stream_id))
    encryptor.update(b"a scanned bank statement")
    encryptor.finish()
    key = AttachmentKey(
        attachment_id="A1",
        stream_id=stream_id,
        key=encryptor.key,
        plaintext_sha256=hashlib.sha256(b"a scanned bank statement").hexdigest(),
        plaintext_length=24,
        ciphertext_sha256=encryptor.ciphertext_sha256,
        ciphertext_length=encryptor.ciphertext_length,
    )
    return seal(
        b'{"hello":"world"}',
        message_id=message_id,
        sender=BD,
        signing_key=net[BD].signing,
        recipients=[Recipient(LY, net[LY].encryption.public_key)],
        archive_key=None,
        message_type="MLA_REQUEST",
        case_id=CaseId("BD-LY-2025-0007"),
        created_at=NOW,
        expires_at=NOW + timedelta(days=1),
        limits=net.limits,
        attachments=[key],
    )


def attachments_leaf(sealed: SealedMessage, **changes: Any) -> AttachmentsLeaf:
    header = EnvelopeHeader.model_validate_json(sealed.header_bytes)
    fields: dict[str, Any] = {
        "identity": f"attachments/{BD}/{header.message_id}",
        "at": NOW + timedelta(seconds=1),
        "sender": BD,
        "message_id": str(header.message_id),
        "message_digest": sealed.digest,
        "signer_key_id": sealed.signer_key_id,
        "header": sealed.header_bytes,
        "header_signature": sealed.header_signature,
        "attachments": header.attachments,
    }
    fields.update(changes)
    return AttachmentsLeaf(**fields)


def blob_deleted_leaf(sealed: SealedMessage, **changes: Any) -> BlobDeletedLeaf:
    header = EnvelopeHeader.model_validate_json(sealed.header_bytes)
    assert header.attachments is not None
    body = header.attachments[0]
    stored_at = NOW - timedelta(minutes=5)
    fields: dict[str, Any] = {
        "identity": f"blob_deleted/{body.ciphertext_sha256}/{format_timestamp(stored_at)}",
        "at": NOW + timedelta(minutes=50),
        "ciphertext_sha256": body.ciphertext_sha256,
        "ciphertext_length": body.ciphertext_length,
        "uploader": BD,
        "stored_at": stored_at,
        "reason": "retrieved",
        "messages": (str(header.message_id),),
        "retrieved_by": (LY,),
    }
    fields.update(changes)
    return BlobDeletedLeaf(**fields)


DIGEST = "ab" * 32


def other_leaves() -> dict[str, AuditLeaf]:
    """One honest leaf of each kind that is neither evidence nor a directory (attachments apart)."""
    died_at = "2026-11-29T10:20:00Z"
    return {
        "rejected_input": RejectedInputLeaf(
            identity=f"rejected/{BD}/{DIGEST}",
            at=NOW + timedelta(minutes=20),
            publisher=BD,
            input_kind="message",
            body_sha256=DIGEST,
            body_length=12,
            reason=Reason(code="BAD_SIGNATURE", detail="the header signature does not verify"),
        ),
        "dead_letter": DeadLetterLeaf(
            identity=dead_letter_identity("mla.inbox.LY-MLA-CA", died_at, DIGEST),
            at=NOW + timedelta(minutes=21),
            queue="mla.inbox.LY-MLA-CA",
            reason="delivery_limit",
            died_at=died_at,
            death_count=3,
            publisher="gateway",
            input_kind="message",
            message_id=None,
            body_sha256=DIGEST,
            body_length=12,
        ),
        "operator_action": OperatorActionLeaf(
            identity="operator/discard/dead-letter/1",
            at=NOW + timedelta(minutes=22),
            operator="operator",
            action="discard_dead_letter",
            target="dead-letter/1",
            detail="a poison message",
        ),
    }


def every_kind_of_leaf() -> tuple[BuiltLog, SealedMessage]:
    """A log holding one honest leaf of every kind the gateway appends, the attachments with their message."""
    built = started()
    message_id = MessageId(uuid.uuid4())
    sealed = sealed_with_attachment(built.net, message_id)
    built.append(encode_leaf(attachments_leaf(sealed)))
    for leaf in message_evidence(built.net, 10, message_id=message_id, digest=sealed.digest):
        built.append(leaf)
    for other in other_leaves().values():
        built.append(encode_leaf(other))
    return built, sealed


def test_every_kind_of_leaf_the_gateway_appends_verifies():
    """One honest leaf of each kind (attachments, blob deletion, dead letter, rejection, operator) verifies."""
    built, sealed = every_kind_of_leaf()
    built.append(encode_leaf(blob_deleted_leaf(sealed)))
    built.checkpoint(time=posix(NOW + timedelta(minutes=51)))
    report = check(built)
    assert report.consistent, report.problem
    assert report.published_size == len(built.entries)


def test_forged_attachments_leaf_is_refused():
    """An attachments leaf whose header the sender did not sign is refused, naming that entry."""
    built = started()
    sealed = sealed_with_attachment(built.net, MessageId(uuid.uuid4()))
    forged = SigningPrivateKey.generate().sign(pae(PAYLOAD_TYPE_HEADER, sealed.header_bytes))
    built.append(encode_leaf(attachments_leaf(sealed, header_signature=forged)))
    built.checkpoint(time=posix(NOW + timedelta(minutes=2)))
    problem = check(built).problem
    assert problem is not None
    assert (problem.kind, problem.index) == (FailureKind.LEAF_INVALID, 5)


def test_attachments_leaf_listing_bodies_its_header_does_not_commit_to_is_refused():
    """An attachments leaf cannot add a body to what the sender's signed header committed to."""
    built = started()
    sealed = sealed_with_attachment(built.net, MessageId(uuid.uuid4()))
    leaf = attachments_leaf(sealed)
    extra = AttachmentCommitment(attachment_id="A2", ciphertext_sha256=DIGEST, ciphertext_length=40)
    built.append(encode_leaf(leaf.model_copy(update={"attachments": (*leaf.attachments, extra)})))
    built.checkpoint(time=posix(NOW + timedelta(minutes=2)))
    problem = check(built).problem
    assert problem is not None
    assert (problem.kind, problem.index) == (FailureKind.LEAF_INVALID, 5)


def test_attachments_of_another_header_than_the_accepted_message_are_refused():
    """The attachments leaf and the acceptance of its message must name one header digest."""
    built = started()
    message_id = MessageId(uuid.uuid4())
    sealed = sealed_with_attachment(built.net, message_id)
    built.append(encode_leaf(attachments_leaf(sealed)))
    for leaf in message_evidence(built.net, 10, message_id=message_id, digest=DIGEST):
        built.append(leaf)
    built.checkpoint(time=posix(NOW + timedelta(minutes=11)))
    problem = check(built).problem
    assert problem is not None
    assert (problem.kind, problem.index) == (FailureKind.SEQUENCE_INVALID, 6)


@pytest.mark.parametrize(
    ("kind", "identity"),
    [
        ("rejected_input", f"rejected/{LY}/{DIGEST}"),
        ("dead_letter", f"dead/mla.inbox.LY-MLA-CA/2026-11-29T10:21:00Z/{DIGEST}"),
        ("operator_action", f"evidence/DELIVERY/{BD}/-/{LY}/{DIGEST}"),
    ],
)
def test_a_leaf_under_an_identity_its_content_does_not_imply_is_refused(kind, identity):
    """A leaf cannot take another event's name (and so make the gateway skip that event as a duplicate)."""
    built = started()
    leaf = other_leaves()[kind]
    built.append(encode_leaf(leaf.model_copy(update={"identity": identity})))
    built.checkpoint(time=posix(NOW + timedelta(minutes=30)))
    problem = check(built).problem
    assert problem is not None
    assert (problem.kind, problem.index) == (FailureKind.LEAF_INVALID, 5)


def test_attachments_leaf_under_another_messages_identity_is_refused():
    """An attachments leaf names the sender and message its signed header names."""
    built = started()
    sealed = sealed_with_attachment(built.net, MessageId(uuid.uuid4()))
    built.append(encode_leaf(attachments_leaf(sealed, identity=f"attachments/{BD}/{uuid.uuid4()}")))
    built.checkpoint(time=posix(NOW + timedelta(minutes=2)))
    problem = check(built).problem
    assert problem is not None
    assert (problem.kind, problem.index) == (FailureKind.LEAF_INVALID, 5)


@pytest.mark.parametrize(
    "changes",
    [
        {"messages": ()},
        {"uploader": LY},
        {"ciphertext_length": 7},
        {"retrieved_by": (LY, LY_AGO)},
        {"reason": "unreferenced"},
    ],
    ids=["no-message", "other-uploader", "other-length", "not-a-recipient", "unreferenced-but-carried"],
)
def test_deletion_of_a_body_no_logged_message_carried_is_refused(changes):
    """A blob deletion names bodies, messages and readers that the log's attachments leaves account for."""
    built, sealed = every_kind_of_leaf()
    built.append(encode_leaf(blob_deleted_leaf(sealed, **changes)))
    built.checkpoint(time=posix(NOW + timedelta(minutes=51)))
    problem = check(built).problem
    assert problem is not None
    assert (problem.kind, problem.index) == (FailureKind.LEAF_INVALID, len(built.entries) - 1)


def test_evidence_logged_twice_is_refused_at_the_second():
    """The same leaf identity twice in one log is refused at the second, naming the first."""
    built = started()
    built.append(built.entries[3].leaf)
    built.checkpoint(time=posix(NOW + timedelta(minutes=2)))
    problem = check(built).problem
    assert problem is not None
    assert (problem.kind, problem.index) == (FailureKind.LEAF_INVALID, 5)
    assert "index 3" in problem.detail


def test_attachments_leaf_logged_twice_is_refused_at_the_second():
    """One message's attachments logged twice (even with another time) is refused at the second."""
    built = started()
    sealed = sealed_with_attachment(built.net, MessageId(uuid.uuid4()))
    built.append(encode_leaf(attachments_leaf(sealed)))
    built.append(encode_leaf(attachments_leaf(sealed, at=NOW + timedelta(seconds=2))))
    built.checkpoint(time=posix(NOW + timedelta(minutes=2)))
    problem = check(built).problem
    assert problem is not None
    assert (problem.kind, problem.index) == (FailureKind.LEAF_INVALID, 6)
    assert "index 5" in problem.detail


def test_cosignature_by_an_agency_not_yet_in_the_directory_is_refused():
    """A checkpoint's witnesses are the agencies of the directory in force at its size, not of a later one."""
    built = started(without=(LY_AGO,))
    built.checkpoint(cosigners=(BD, LY_AGO), time=posix(NOW + timedelta(minutes=2)))
    built.append(directory_version(built.net, 2, issued_at=NOW + timedelta(minutes=3)))
    built.checkpoint(time=posix(NOW + timedelta(minutes=4)))
    problem = check(built).problem
    assert problem is not None
    assert (problem.kind, problem.checkpoint) == (FailureKind.COSIGNATURE_INVALID, 1)


def test_a_witness_key_rotated_out_later_still_vouches_for_what_it_cosigned():
    """Cosignatures are checked against the directory in force then: a later rotation does not void them."""
    built = started()
    built.net.agencies[LY].signing = SigningPrivateKey.generate()
    built.append(directory_version(built.net, 2, issued_at=NOW + timedelta(minutes=3)))
    built.checkpoint(time=posix(NOW + timedelta(minutes=4)))
    report = check(built)
    assert report.consistent, report.problem
    assert report.published_size == 6


def test_one_agency_cosigning_twice_counts_as_one_witness():
    """Two cosignature lines of one agency are one witness: the checkpoint is not published by them."""
    built = started()
    built.append(encode_leaf(other_leaves()["rejected_input"]))
    signed = SignedCheckpoint.parse(built.checkpoint(cosigners=(BD,), time=posix(NOW + timedelta(minutes=21))))
    again = cosign_checkpoint(signed, BD, built.net[BD].signing, posix(NOW + timedelta(minutes=22)))
    built.checkpoints[-1] = SignedCheckpoint(signed.checkpoint, (*signed.signatures, again)).to_text()
    report = check(built)
    assert report.consistent, report.problem
    assert report.published_size == 5
    assert report.cosignatures == 3


def test_cosignature_by_a_revoked_witness_key_does_not_count():
    """A witness whose key was revoked before the checkpoint does not make it published."""
    net = LocalNetwork()
    built = started(net, revoked={net[LY].signing.key_id: NOW + timedelta(minutes=10)})
    built.append(encode_leaf(other_leaves()["rejected_input"]))
    built.checkpoint(time=posix(NOW + timedelta(minutes=21)))
    report = check(built)
    assert report.consistent, report.problem
    assert report.published_size == 5
    assert report.cosignatures == 3
