"""The sender's view of the audit log in the envelope header, and the comparison of two views (finding 3).

The header carries the latest checkpoint the sender witnessed; old headers,
made before the field existed, still verify (known answer in
`vectors/envelope.json`). Two checkpoints of one log are one history only if
equal sizes have equal roots and a consistency proof joins different sizes.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from protocol.checkpoint import SignedCheckpoint, check_one_history
from protocol.encoding import pae
from protocol.envelope import (
    MAX_LOG_CHECKPOINT_CHARS,
    EnvelopeHeader,
    Recipient,
    SealedMessage,
    authenticate_header,
    open_sealed,
    seal,
)
from protocol.errors import ErrorCode, LimitExceeded, ProofInvalid, ProtocolError
from protocol.ids import CaseId, MessageId
from protocol.keys import EncryptionPrivateKey, SigningPrivateKey
from protocol.signing import PAYLOAD_TYPE_HEADER
from tests.support.auditlog import ORIGIN, BuiltLog, build_log, message_evidence
from tests.support.network import BD, LY, NOW, AgencyKeys, LocalNetwork

VECTORS: dict[str, Any] = json.loads((Path(__file__).parent / "vectors" / "envelope.json").read_text(encoding="utf-8"))


def sealed_with_view(net: LocalNetwork, note: str | None) -> SealedMessage:
    return seal(
        b'{"hello":"world"}',
        message_id=MessageId(uuid.uuid4()),
        sender=BD,
        signing_key=net[BD].signing,
        recipients=[Recipient(LY, net[LY].encryption.public_key)],
        archive_key=net[BD].encryption.public_key,
        message_type="MLA_REQUEST",
        case_id=CaseId("BD-LY-2025-0007"),
        created_at=NOW,
        expires_at=NOW.replace(day=30),
        limits=net.limits,
        log_checkpoint=note,
    )


def log_only(note: str) -> str:
    return SignedCheckpoint.parse(note).signed_only_by(ORIGIN).to_text()


def test_a_header_made_before_the_log_view_existed_still_verifies_and_opens():
    """Known answer: a sealed message of the old header format authenticates and opens, its view absent."""
    vector = VECTORS["envelope_v1_without_log_checkpoint"]
    net = LocalNetwork(
        agencies={
            BD: AgencyKeys(
                BD,
                SigningPrivateKey(bytes.fromhex(vector["bd_signing_seed"])),
                EncryptionPrivateKey(bytes.fromhex(vector["bd_encryption_key"])),
            ),
            LY: AgencyKeys(
                LY,
                SigningPrivateKey(bytes.fromhex(vector["ly_signing_seed"])),
                EncryptionPrivateKey(bytes.fromhex(vector["ly_encryption_key"])),
            ),
        }
    )
    sealed = SealedMessage.from_bytes(bytes.fromhex(vector["sealed"]), net.limits)
    opened = open_sealed(
        sealed,
        net.directory(),
        recipient=LY,
        recipient_keys=net[LY].decryption_keys,
        now=datetime.fromisoformat(vector["now"]),
        limits=net.limits,
    )
    assert sealed.header_bytes.decode() == vector["header"]
    assert opened.digest == vector["digest"]
    assert opened.document == vector["document"].encode()
    assert opened.header.log_checkpoint is None
    assert b"log_checkpoint" not in sealed.header_bytes


def test_the_senders_log_view_travels_signed_in_the_header():
    """The sealed header carries the sender's checkpoint note, and changing it breaks the sender's signature."""
    net = LocalNetwork()
    built = build_log(1, net)
    note = log_only(built.checkpoints[-1])
    sealed = sealed_with_view(net, note)
    assert authenticate_header(sealed, net.directory(), now=NOW).header.log_checkpoint == note
    other = log_only(build_log(2, net).checkpoints[-1])
    header = EnvelopeHeader.model_validate_json(sealed.header_bytes).model_copy(update={"log_checkpoint": other})
    swapped = dataclasses.replace(sealed, header_bytes=header.canonical_bytes())
    with pytest.raises(ProtocolError) as refused:
        authenticate_header(swapped, net.directory(), now=NOW)
    assert refused.value.code == ErrorCode.BAD_SIGNATURE


def test_a_header_without_a_log_view_keeps_its_exact_bytes():
    """A sender that witnessed nothing seals a header with no `log_checkpoint` key at all."""
    net = LocalNetwork()
    assert b"log_checkpoint" not in sealed_with_view(net, None).header_bytes


@pytest.mark.parametrize(
    "bad_view",
    ["", "not a note", "rogatory.test/audit-log\n1\nAAAA\n\n\u2014 x AAAA\n", "x" * (MAX_LOG_CHECKPOINT_CHARS + 1)],
    ids=["empty", "junk", "bad root", "too long"],
)
def test_a_signed_header_with_a_malformed_log_view_is_refused(bad_view):
    """A validly signed header whose log view is no checkpoint note is refused as malformed, never half-read."""
    net = LocalNetwork()
    sealed = net.seal()
    fields = json.loads(sealed.header_bytes) | {"log_checkpoint": bad_view}
    header_bytes = json.dumps(fields).encode()
    forged = dataclasses.replace(
        sealed, header_bytes=header_bytes, header_signature=net[BD].signing.sign(pae(PAYLOAD_TYPE_HEADER, header_bytes))
    )
    with pytest.raises(ProtocolError) as refused:
        authenticate_header(forged, net.directory(), now=NOW)
    assert refused.value.code == ErrorCode.MALFORMED_ENVELOPE


def test_the_sender_cannot_seal_a_log_view_no_recipient_would_read():
    """Sealing refuses a view that is not a checkpoint note, or over the limit, with our errors."""
    net = LocalNetwork()
    with pytest.raises(ProofInvalid):
        sealed_with_view(net, "not a note")
    with pytest.raises(LimitExceeded):
        sealed_with_view(net, "x" * (MAX_LOG_CHECKPOINT_CHARS + 1))


def checkpoint_of(note: str):
    return SignedCheckpoint.parse(note).checkpoint


def forked_logs(net: LocalNetwork) -> tuple[BuiltLog, BuiltLog]:
    """Two histories that share the directory leaf and then differ: what a split view shows two agencies."""
    first, second = build_log(2, net), build_log(2, net)
    return first, second


def test_two_views_of_a_forked_log_are_not_one_history():
    """Checkpoints of two forked logs fail at equal sizes and with any proof the gateway could give."""
    first, second = forked_logs(LocalNetwork())
    ours, theirs = checkpoint_of(first.checkpoints[-1]), checkpoint_of(second.checkpoints[-1])
    with pytest.raises(ProofInvalid, match="different roots"):
        check_one_history(ours, theirs, [])
    smaller = checkpoint_of(second.checkpoints[1])
    for proof in (second.tree.consistency_proof(smaller.size, ours.size), first.tree.consistency_proof(5, 9)):
        with pytest.raises(ProofInvalid, match="no valid consistency proof"):
            check_one_history(ours, smaller, proof)


def test_two_views_of_an_honest_log_are_one_history():
    """An earlier and a later checkpoint of one log are joined by its consistency proof, either way round."""
    built = build_log(3, LocalNetwork())
    for leaf in message_evidence(built.net, 9):
        built.append(leaf)
    built.checkpoint()
    early, late = checkpoint_of(built.checkpoints[1]), checkpoint_of(built.checkpoints[-1])
    proof = built.tree.consistency_proof(early.size, late.size)
    check_one_history(early, late, proof)
    check_one_history(late, early, proof)
    check_one_history(late, late, [])
