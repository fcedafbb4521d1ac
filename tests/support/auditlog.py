"""A small, valid audit log built from protocol pieces only: for tampering tests."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import timedelta

from protocol.audit_verify import LogEntry
from protocol.auditlog import directory_leaf, encode_leaf, evidence_leaf, sign_leaf_receipt
from protocol.checkpoint import Checkpoint, SignedCheckpoint, cosign_checkpoint, sign_checkpoint
from protocol.evidence import EvidenceType, issue_evidence, new_statement
from protocol.ids import AgencyId, MessageId
from protocol.keys import SigningPrivateKey
from protocol.merkle import MerkleTree, leaf_hash
from tests.support.network import BD, LY, NOW, LocalNetwork

ORIGIN = "rogatory.test/audit-log"


@dataclass
class BuiltLog:
    """Entries, checkpoints (with two cosignatures each) and the network that signed them."""

    net: LocalNetwork
    entries: list[LogEntry] = field(default_factory=list)
    checkpoints: list[str] = field(default_factory=list)
    tree: MerkleTree = field(default_factory=MerkleTree)

    def append(self, leaf_bytes: bytes, *, log_key: SigningPrivateKey | None = None) -> None:
        """Append a leaf with its receipt, signed by the network's log key unless `log_key` is given."""
        index = self.tree.size
        digest = leaf_hash(leaf_bytes)
        receipt = sign_leaf_receipt(ORIGIN, index, digest, log_key or self.net.log_key)
        self.entries.append(LogEntry(leaf_bytes, receipt))
        self.tree.append(digest)

    def checkpoint(
        self,
        *,
        cosigners: tuple[AgencyId, ...] = (BD, LY),
        time: int = 1_800_000_000,
        log_key: SigningPrivateKey | None = None,
    ) -> str:
        """Sign a checkpoint of the whole tree (by `log_key` if given), cosigned by `cosigners` at `time`."""
        body = Checkpoint(ORIGIN, self.tree.size, self.tree.root(), extensions=(f"time {time}",))
        signed = sign_checkpoint(body, ORIGIN, log_key or self.net.log_key)
        for witness in cosigners:
            signed = signed.with_signature(cosign_checkpoint(signed, witness, self.net[witness].signing, time))
        note = signed.to_text()
        self.checkpoints.append(note)
        return note


def message_evidence(
    net: LocalNetwork, at_minutes: int, *, message_id: MessageId | None = None, digest: str | None = None
) -> list[bytes]:
    """The four leaves of one message's life, BD to LY (of `message_id` and `digest` when given)."""
    message_id = message_id or MessageId(uuid.uuid4())
    digest = digest or uuid.uuid4().hex * 2
    leaves = []
    for evidence_type, issuer, key in (
        (EvidenceType.SUBMISSION_ACCEPTED, "gateway.test", net.evidence_key),
        (EvidenceType.RELAY_ACCEPTED, "gateway.test", net.evidence_key),
        (EvidenceType.DELIVERY, LY, net[LY].signing),
        (EvidenceType.RETRIEVAL, LY, net[LY].signing),
    ):
        statement = new_statement(
            evidence_type,
            message_id=message_id,
            message_digest=digest,
            sender=BD,
            recipient=LY,
            issuer=issuer,
            at=NOW + timedelta(minutes=at_minutes),
        )
        leaves.append(encode_leaf(evidence_leaf(issue_evidence(statement, key), statement)))
    return leaves


def build_log(messages: int = 3, net: LocalNetwork | None = None) -> BuiltLog:
    """A directory leaf, then `messages` messages of four evidence leaves each, a checkpoint after each."""
    built = BuiltLog(net or LocalNetwork())
    built.append(encode_leaf(directory_leaf(built.net.signed_directory(), 1)))
    built.checkpoint()
    for number in range(messages):
        for leaf in message_evidence(built.net, number):
            built.append(leaf)
        built.checkpoint(time=1_800_000_000 + number + 1)
    return built


__all__ = ["ORIGIN", "BuiltLog", "SignedCheckpoint", "build_log", "message_evidence"]
