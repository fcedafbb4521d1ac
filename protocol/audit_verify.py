"""The auditor's verification of an audit log, offline, from its entries and checkpoints.

`verify_audit_log` checks, in this order, and stops at the first problem,
naming the entry (or checkpoint) where it is:

1. every leaf parses as exactly one known kind, and its identity is the one
   its content implies (so no event can be logged twice under two names);
2. every leaf carries the log's receipt for its own index and hash: an entry
   changed, deleted, inserted or moved in a stored copy is named exactly;
3. directory leaves are signed by the directory authority, versions only grow,
   and nothing but a directory comes first;
4. evidence leaves verify under a key the directory in force gives their
   issuer, who is allowed to issue that type;
5. each message's evidence is a legal sequence: a relay follows an accepted
   submission, delivery follows a relay to that recipient, retrieval follows
   delivery; recipient evidence names the digest the gateway accepted, i.e.
   the recipient signed over the very header the sender signed;
6. every checkpoint is signed by a log key of the gateway for the log's
   origin, sizes never shrink, two checkpoints of one size never disagree (a
   fork), and the Merkle tree rebuilt from the leaves has each checkpoint's
   root at its size;
7. every cosignature a checkpoint carries verifies under the witnessing
   agency's key; a checkpoint with two or more is *published*;
8. the log is consistent with the state the auditor verified last time (the
   same root at that size): nobody rewrote what was already seen.

Each kind of failure has its own `FailureKind`, which the command line turns
into a distinct exit status.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from protocol.auditlog import DirectoryLeaf, EvidenceLeaf, decode_leaf, verify_leaf_receipt
from protocol.checkpoint import Checkpoint, SignedCheckpoint, verify_checkpoint, verify_cosignature
from protocol.directory import Directory, PublishedSigningKey
from protocol.errors import ProtocolError
from protocol.evidence import EvidenceStatement, EvidenceType, verify_evidence_as_of_its_time
from protocol.ids import parse_agency_id
from protocol.keys import SigningPublicKey
from protocol.merkle import MerkleTree, leaf_hash
from protocol.model import parse_model
from protocol.signing import PAYLOAD_TYPE_DIRECTORY, verify_statement

PUBLISHED_AFTER: Final = 2
"""Cosignatures that make a checkpoint published."""


class FailureKind(StrEnum):
    """What kind of problem the audit found; each maps to one exit status."""

    LEAF_INVALID = "LEAF_INVALID"
    DIRECTORY_INVALID = "DIRECTORY_INVALID"
    EVIDENCE_INVALID = "EVIDENCE_INVALID"
    SEQUENCE_INVALID = "SEQUENCE_INVALID"
    CHECKPOINT_INVALID = "CHECKPOINT_INVALID"
    TREE_MISMATCH = "TREE_MISMATCH"
    RECEIPT_INVALID = "RECEIPT_INVALID"
    COSIGNATURE_INVALID = "COSIGNATURE_INVALID"
    FORK_DETECTED = "FORK_DETECTED"
    INCONSISTENT_WITH_PREVIOUS = "INCONSISTENT_WITH_PREVIOUS"


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One entry of the log as stored: the leaf's bytes and the log's receipt for it."""

    leaf: bytes
    receipt: bytes


@dataclass(frozen=True, slots=True)
class VerifiedState:
    """What an auditor remembers of a log it verified: its origin, a size and the root at that size."""

    origin: str
    size: int
    root_hash: bytes


@dataclass(frozen=True, slots=True)
class AuditProblem:
    """The first problem found, and where."""

    kind: FailureKind
    detail: str
    index: int | None = None
    identity: str | None = None
    checkpoint: int | None = None


@dataclass(frozen=True, slots=True)
class AuditReport:
    """The verdict over a log, with counts of what was checked."""

    leaves: int
    evidence: int
    directories: int
    messages: int
    checkpoints: int
    cosignatures: int
    latest: Checkpoint | None
    published_size: int
    problem: AuditProblem | None
    state: VerifiedState | None = None

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
    """Checks 1-5 over the leaves, in order."""

    def __init__(self, authority: SigningPublicKey) -> None:
        self.authority = authority
        self.directory: Directory | None = None
        self.log_keys: list[PublishedSigningKey] = []
        self.directories = 0
        self.evidence = 0
        self.trails: dict[tuple[str, str], _MessageTrail] = {}

    def entry(self, index: int, entry: LogEntry) -> AuditProblem | None:
        try:
            leaf = decode_leaf(entry.leaf)
        except ProtocolError as exc:
            return AuditProblem(FailureKind.LEAF_INVALID, f"leaf does not parse: {exc.detail}", index)
        if index == 0 and not isinstance(leaf, DirectoryLeaf):
            return AuditProblem(
                FailureKind.DIRECTORY_INVALID, "the log does not begin with a directory", index, leaf.identity
            )
        if isinstance(leaf, DirectoryLeaf):
            problem = self._directory(index, leaf)
            if problem is not None:
                return problem
        problem = self._receipt(index, entry, leaf.identity)
        if problem is not None or not isinstance(leaf, EvidenceLeaf):
            return problem
        return self._evidence(index, leaf)

    def _receipt(self, index: int, entry: LogEntry, identity: str) -> AuditProblem | None:
        assert self.directory is not None  # the first leaf is a directory (checked above)
        digest = leaf_hash(entry.leaf)
        origin = self.directory.gateway.log_origin
        for key in self.log_keys:
            try:
                verify_leaf_receipt(origin, index, digest, entry.receipt, key.verifier)
            except ProtocolError:
                continue
            return None
        return AuditProblem(
            FailureKind.RECEIPT_INVALID,
            "the log's receipt does not vouch for this leaf at this index: the entry was changed, or entries "
            "were deleted, inserted or moved before it",
            index,
            identity,
        )

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
        known = {key.key_id for key in self.log_keys}
        self.log_keys += [key for key in directory.gateway.log_keys if key.key_id not in known]
        self.directories += 1
        return None

    def _evidence(self, index: int, leaf: EvidenceLeaf) -> AuditProblem | None:
        assert self.directory is not None
        try:
            verified = verify_evidence_as_of_its_time(leaf.evidence, self.directory)
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
        if statement.message_id is None or statement.evidence_type == EvidenceType.SUBMISSION_REJECTED:
            return None  # rejections are about what a publisher sent, not about an accepted message
        trail = self.trails.setdefault((statement.sender, str(statement.message_id)), _MessageTrail())
        if statement.evidence_type == EvidenceType.SUBMISSION_ACCEPTED:
            if trail.accepted_digest not in (None, statement.message_digest):
                return AuditProblem(
                    FailureKind.SEQUENCE_INVALID, "one message accepted with two digests", index, identity
                )
            trail.accepted_digest = statement.message_digest
        else:
            seen = trail.seen.get(statement.recipient, set())
            missing = [name for name in _REQUIRES.get(statement.evidence_type, ()) if name not in seen]
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


@dataclass
class _CheckpointTally:
    latest: Checkpoint | None = None
    count: int = 0
    cosignatures: int = 0
    published_size: int = 0
    roots_by_size: dict[int, bytes] = field(default_factory=dict)


def _signed_checkpoint(note: str, walk: _Walk, position: int) -> Checkpoint | AuditProblem:
    """The checkpoint, if a log key of any directory seen signed it for the log's origin."""
    assert walk.directory is not None
    origin = walk.directory.gateway.log_origin
    failures: list[str] = []
    for key in walk.log_keys:
        try:
            return verify_checkpoint(note, origin, key.verifier, origin=origin)
        except ProtocolError as exc:
            failures.append(exc.detail)
    return AuditProblem(
        FailureKind.CHECKPOINT_INVALID,
        "not signed by a log key of the gateway: " + "; ".join(failures),
        checkpoint=position,
    )


def _against_tree(
    checkpoint: Checkpoint, tree: MerkleTree, tally: _CheckpointTally, position: int
) -> AuditProblem | None:
    """The checkpoint neither forks, shrinks, overreaches nor disagrees with the tree rebuilt from the leaves."""
    held = tally.roots_by_size.get(checkpoint.size)
    problem: AuditProblem | None = None
    if held is not None and held != checkpoint.root_hash:
        problem = AuditProblem(
            FailureKind.FORK_DETECTED,
            f"two signed checkpoints of size {checkpoint.size} with different roots",
            checkpoint=position,
        )
    elif tally.latest is not None and checkpoint.size < tally.latest.size:
        problem = AuditProblem(
            FailureKind.TREE_MISMATCH,
            f"checkpoint of size {checkpoint.size} signed after one of size {tally.latest.size}",
            checkpoint=position,
        )
    elif checkpoint.size > tree.size:
        problem = AuditProblem(
            FailureKind.TREE_MISMATCH,
            f"checkpoint covers {checkpoint.size} leaves, the log holds {tree.size}: entries from {tree.size} "
            "on are missing",
            index=tree.size,
            checkpoint=position,
        )
    elif tree.root(checkpoint.size) != checkpoint.root_hash:
        problem = AuditProblem(
            FailureKind.TREE_MISMATCH,
            f"the tree of the first {checkpoint.size} leaves does not have this checkpoint's root",
            index=checkpoint.size - 1 if checkpoint.size else None,
            checkpoint=position,
        )
    return problem


def _check_checkpoints(
    notes: Sequence[str], walk: _Walk, tree: MerkleTree, tally: _CheckpointTally
) -> AuditProblem | None:
    """Checks 6 and 7 over every checkpoint, in signing order."""
    assert walk.directory is not None
    for position, note in enumerate(notes):
        checkpoint = _signed_checkpoint(note, walk, position)
        if isinstance(checkpoint, AuditProblem):
            return checkpoint
        problem = _against_tree(checkpoint, tree, tally, position) or _check_cosignatures(
            note, walk.directory, position
        )
        if problem is not None:
            return problem
        witnesses = len(SignedCheckpoint.parse(note).signatures) - 1
        tally.cosignatures += witnesses
        if witnesses >= PUBLISHED_AFTER:
            tally.published_size = max(tally.published_size, checkpoint.size)
        tally.roots_by_size[checkpoint.size] = checkpoint.root_hash
        tally.latest = checkpoint
        tally.count += 1
    return None


def _check_cosignatures(note: str, directory: Directory, position: int) -> AuditProblem | None:
    signed = SignedCheckpoint.parse(note)
    for signature in signed.signatures[1:]:
        try:
            witness = directory.agency(parse_agency_id(signature.key_name))
        except ProtocolError:
            return AuditProblem(
                FailureKind.COSIGNATURE_INVALID,
                f"cosignature by {signature.key_name[:64]!r}, not an agency of the directory",
                checkpoint=position,
            )
        for key in witness.signing_keys:
            try:
                verify_cosignature(signed, witness.agency_id, key.verifier)
                break
            except ProtocolError:
                continue
        else:
            return AuditProblem(
                FailureKind.COSIGNATURE_INVALID,
                f"cosignature by {witness.agency_id} does not verify",
                checkpoint=position,
            )
    return None


def _check_previous(previous: VerifiedState, origin: str, tree: MerkleTree) -> AuditProblem | None:
    """Check 8: the first `previous.size` entries still have the root verified last time."""
    if previous.origin != origin:
        return AuditProblem(
            FailureKind.INCONSISTENT_WITH_PREVIOUS, f"the remembered state is of log {previous.origin!r}, not this one"
        )
    if previous.size > tree.size or tree.root(previous.size) != previous.root_hash:
        return AuditProblem(
            FailureKind.INCONSISTENT_WITH_PREVIOUS,
            f"the first {previous.size} entries no longer have the root verified last time: history was rewritten",
        )
    return None


def verify_audit_log(
    entries: Sequence[LogEntry],
    checkpoints: Sequence[str],
    *,
    authority: SigningPublicKey,
    previous: VerifiedState | None = None,
) -> AuditReport:
    """Verify a log's entries (in index order) and its checkpoints (in signing order)."""
    walk = _Walk(authority)
    tree = MerkleTree()
    tally = _CheckpointTally()

    def report(problem: AuditProblem | None) -> AuditReport:
        state = None
        if problem is None and tally.latest is not None:
            state = VerifiedState(tally.latest.origin, tally.latest.size, tally.latest.root_hash)
        return AuditReport(
            leaves=len(entries),
            evidence=walk.evidence,
            directories=walk.directories,
            messages=len(walk.trails),
            checkpoints=tally.count,
            cosignatures=tally.cosignatures,
            latest=tally.latest,
            published_size=tally.published_size,
            problem=problem,
            state=state,
        )

    for index, entry in enumerate(entries):
        problem = walk.entry(index, entry)
        if problem is not None:
            return report(problem)
        tree.append(leaf_hash(entry.leaf))
    if walk.directory is None:
        return report(AuditProblem(FailureKind.DIRECTORY_INVALID, "the log holds no directory"))
    if not checkpoints:
        return report(AuditProblem(FailureKind.CHECKPOINT_INVALID, "the log comes with no checkpoint"))
    problem = _check_checkpoints(checkpoints, walk, tree, tally)
    if problem is None and previous is not None:
        problem = _check_previous(previous, walk.directory.gateway.log_origin, tree)
    if problem is not None:
        return report(problem)
    return report(None)


__all__ = [
    "PUBLISHED_AFTER",
    "AuditProblem",
    "AuditReport",
    "FailureKind",
    "LogEntry",
    "VerifiedState",
    "verify_audit_log",
]
