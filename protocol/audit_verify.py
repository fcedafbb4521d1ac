"""The auditor's verification of an audit log, offline, from leaves and a checkpoint.

`verify_audit_log` checks, and stops at the first problem, naming the entry:

1. every leaf parses as exactly one known kind, and its identity is the one
   its content implies (so no event can be logged twice under two names);
2. directory leaves are signed by the directory authority, versions only grow,
   and no evidence comes before the first directory;
3. evidence leaves verify under a key the directory in force gives their
   issuer, who is allowed to issue that type;
4. each message's evidence is a legal sequence: a relay follows an accepted
   submission, delivery follows a relay to that recipient, retrieval follows
   delivery; recipient evidence names the digest the gateway accepted, i.e.
   the recipient signed over the very header the sender signed;
5. the checkpoint is signed by a log key of the gateway in the latest
   directory, for the log's origin;
6. the Merkle tree rebuilt from the leaves has the checkpoint's root at the
   checkpoint's size.

Each kind of failure has its own `FailureKind`, which the command line turns
into a distinct exit status.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from protocol.auditlog import DirectoryLeaf, EvidenceLeaf, decode_leaf
from protocol.checkpoint import Checkpoint, verify_checkpoint
from protocol.directory import Directory
from protocol.errors import ProtocolError
from protocol.evidence import EvidenceStatement, EvidenceType, verify_evidence
from protocol.keys import SigningPublicKey
from protocol.merkle import MerkleTree, leaf_hash
from protocol.model import parse_model
from protocol.signing import PAYLOAD_TYPE_DIRECTORY, verify_statement


class FailureKind(StrEnum):
    """What kind of problem the audit found; each maps to one exit status."""

    LEAF_INVALID = "LEAF_INVALID"
    DIRECTORY_INVALID = "DIRECTORY_INVALID"
    EVIDENCE_INVALID = "EVIDENCE_INVALID"
    SEQUENCE_INVALID = "SEQUENCE_INVALID"
    CHECKPOINT_INVALID = "CHECKPOINT_INVALID"
    TREE_MISMATCH = "TREE_MISMATCH"


@dataclass(frozen=True, slots=True)
class AuditProblem:
    """The first problem found, and where."""

    kind: FailureKind
    detail: str
    index: int | None = None
    identity: str | None = None


@dataclass(frozen=True, slots=True)
class AuditReport:
    """The verdict over a log, with counts of what was checked."""

    leaves: int
    evidence: int
    directories: int
    messages: int
    checkpoint: Checkpoint | None
    problem: AuditProblem | None

    @property
    def consistent(self) -> bool:
        """Whether every check held."""
        return self.problem is None


@dataclass
class _MessageTrail:
    """The evidence of one message seen so far, by recipient."""

    accepted_digest: str | None = None
    seen: dict[str | None, set[EvidenceType]] = field(default_factory=dict)


_REQUIRES: dict[EvidenceType, tuple[EvidenceType, ...]] = {
    EvidenceType.RELAY_ACCEPTED: (EvidenceType.SUBMISSION_ACCEPTED,),
    EvidenceType.RELAY_FAILED: (EvidenceType.SUBMISSION_ACCEPTED,),
    EvidenceType.DELIVERY: (EvidenceType.RELAY_ACCEPTED,),
    EvidenceType.NON_DELIVERY: (EvidenceType.SUBMISSION_ACCEPTED,),
    EvidenceType.RETRIEVAL: (EvidenceType.DELIVERY,),
    EvidenceType.NON_RETRIEVAL: (EvidenceType.DELIVERY,),
}


class _Walk:
    def __init__(self, authority: SigningPublicKey) -> None:
        self.authority = authority
        self.directory: Directory | None = None
        self.directories = 0
        self.evidence = 0
        self.trails: dict[tuple[str, str], _MessageTrail] = {}

    def leaf(self, index: int, raw: bytes) -> AuditProblem | None:
        try:
            leaf = decode_leaf(raw)
        except ProtocolError as exc:
            return AuditProblem(FailureKind.LEAF_INVALID, f"leaf does not parse: {exc.detail}", index)
        if isinstance(leaf, DirectoryLeaf):
            return self._directory(index, leaf)
        if isinstance(leaf, EvidenceLeaf):
            return self._evidence(index, leaf)
        return None

    def _directory(self, index: int, leaf: DirectoryLeaf) -> AuditProblem | None:
        try:
            payload = verify_statement(leaf.directory, PAYLOAD_TYPE_DIRECTORY, self.authority)
            directory = parse_model(Directory, payload, what="directory")
        except ProtocolError as exc:
            return AuditProblem(FailureKind.DIRECTORY_INVALID, exc.detail, index, leaf.identity)
        previous = 0 if self.directory is None else self.directory.version
        if directory.version != leaf.version or leaf.identity != f"directory/{directory.version}":
            return AuditProblem(
                FailureKind.DIRECTORY_INVALID, "leaf names another version than it holds", index, leaf.identity
            )
        if directory.version <= previous:
            return AuditProblem(
                FailureKind.DIRECTORY_INVALID,
                f"directory version {directory.version} follows version {previous}",
                index,
                leaf.identity,
            )
        self.directory = directory
        self.directories += 1
        return None

    def _evidence(self, index: int, leaf: EvidenceLeaf) -> AuditProblem | None:
        if self.directory is None:
            return AuditProblem(FailureKind.EVIDENCE_INVALID, "evidence before any directory", index, leaf.identity)
        try:
            verified = verify_evidence(leaf.evidence, self.directory, now=None)
        except ProtocolError as exc:
            return AuditProblem(FailureKind.EVIDENCE_INVALID, exc.detail, index, leaf.identity)
        statement = verified.statement
        if statement.identity != leaf.identity:
            return AuditProblem(
                FailureKind.EVIDENCE_INVALID, "leaf identity does not match its evidence", index, leaf.identity
            )
        self.evidence += 1
        return self._sequence(index, statement, leaf.identity)

    def _sequence(self, index: int, statement: EvidenceStatement, identity: str) -> AuditProblem | None:
        if statement.message_id is None:
            return None  # a rejected input that never became a message
        key = (statement.sender, str(statement.message_id))
        if statement.evidence_type == EvidenceType.SUBMISSION_REJECTED:
            return None  # rejections are about what a publisher sent, not about an accepted message
        trail = self.trails.setdefault(key, _MessageTrail())
        if statement.evidence_type == EvidenceType.SUBMISSION_ACCEPTED:
            if trail.accepted_digest not in (None, statement.message_digest):
                return AuditProblem(
                    FailureKind.SEQUENCE_INVALID, "one message accepted with two digests", index, identity
                )
            trail.accepted_digest = statement.message_digest
        else:
            required = _REQUIRES.get(statement.evidence_type, ())
            seen = trail.seen.get(statement.recipient, set())
            missing = [name for name in required if name not in seen]
            if missing:
                return AuditProblem(
                    FailureKind.SEQUENCE_INVALID,
                    f"{statement.evidence_type} for {statement.recipient} comes before {', '.join(missing)}",
                    index,
                    identity,
                )
            if statement.message_digest != trail.accepted_digest:
                return AuditProblem(
                    FailureKind.SEQUENCE_INVALID,
                    f"{statement.evidence_type} names digest {statement.message_digest[:16]}..., "
                    "not the one the sender signed and the gateway accepted",
                    index,
                    identity,
                )
        trail.seen.setdefault(statement.recipient, set()).add(statement.evidence_type)
        return None


def verify_audit_log(
    leaves: Sequence[bytes],
    checkpoint_note: str | bytes,
    *,
    authority: SigningPublicKey,
) -> AuditReport:
    """Verify `leaves` (in index order) against a signed checkpoint (see the module docstring)."""
    walk = _Walk(authority)
    tree = MerkleTree()

    def report(problem: AuditProblem | None, checkpoint: Checkpoint | None = None) -> AuditReport:
        return AuditReport(
            leaves=len(leaves),
            evidence=walk.evidence,
            directories=walk.directories,
            messages=len(walk.trails),
            checkpoint=checkpoint,
            problem=problem,
        )

    for index, raw in enumerate(leaves):
        problem = walk.leaf(index, raw)
        if problem is not None:
            return report(problem)
        tree.append(leaf_hash(raw))
    if walk.directory is None:
        return report(AuditProblem(FailureKind.DIRECTORY_INVALID, "the log holds no directory"))
    checkpoint: Checkpoint | None = None
    gateway = walk.directory.gateway
    failures: list[str] = []
    for key in gateway.log_keys:
        try:
            checkpoint = verify_checkpoint(checkpoint_note, gateway.log_origin, key.verifier, origin=gateway.log_origin)
            break
        except ProtocolError as exc:
            failures.append(exc.detail)
    if checkpoint is None:
        return report(
            AuditProblem(
                FailureKind.CHECKPOINT_INVALID,
                "checkpoint is not signed by a log key of the gateway: " + "; ".join(failures),
            )
        )
    if checkpoint.size > tree.size:
        return report(
            AuditProblem(
                FailureKind.TREE_MISMATCH, f"checkpoint covers {checkpoint.size} leaves, the log holds {tree.size}"
            ),
            checkpoint,
        )
    if tree.root(checkpoint.size) != checkpoint.root_hash:
        return report(
            AuditProblem(
                FailureKind.TREE_MISMATCH,
                f"the tree of the first {checkpoint.size} leaves does not have the checkpoint's root",
            ),
            checkpoint,
        )
    return report(None, checkpoint)


__all__ = ["AuditProblem", "AuditReport", "FailureKind", "verify_audit_log"]
