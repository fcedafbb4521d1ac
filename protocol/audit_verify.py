"""The auditor's verification of an audit log, offline, from its entries and checkpoints.

`verify_audit_log` checks, in this order, and stops at the first problem,
naming the entry (or checkpoint) where it is:

1. every leaf parses as exactly one known kind;
2. every leaf carries the log's receipt for its own index and hash: an entry
   changed, deleted, inserted or moved in a stored copy is named exactly;
3. no identity is logged twice (one event, one leaf): the second is named,
   with the index of the first;
4. each leaf holds as far as it can be checked offline. Directory leaves are
   signed by the directory authority, versions only grow, and nothing but a
   directory comes first. Evidence verifies under a key the directory in force
   gives its issuer, who may issue that type. An `attachments` leaf holds a
   header its sender signed (under a key of the directory in force, unrevoked
   when the gateway logged it) that commits to exactly the bodies listed. A
   `blob_deleted` leaf names a body that logged attachments of the messages it
   names carried, from its uploader, at its length, read only by their
   recipients (none for `unreferenced`). Every leaf's identity is the one its
   content implies (`operator_action`: under `operator/`), so no leaf can take
   another event's name;
5. each message's evidence is a legal sequence: a relay follows an accepted
   submission, delivery follows a relay to that recipient, retrieval follows
   delivery; recipient evidence names the digest the gateway accepted, i.e.
   the recipient signed over the very header the sender signed, as does the
   message's attachments leaf;
6. the log key that signed each receipt was not revoked at that point of the
   log (see *Revocation* below);
7. every checkpoint is signed by a log key of the gateway for the log's
   origin, unrevoked when it was signed; sizes never shrink, two checkpoints
   of one size never disagree (a fork), and the Merkle tree rebuilt from the
   leaves has each checkpoint's root at its size;
8. every cosignature names an agency of the directory in force at the
   checkpoint's size, under a key that directory gives it, and verifies. A
   checkpoint is *published* once two distinct agencies cosigned it under
   keys unrevoked when they cosigned (lines are not witnesses: one agency's
   two lines count once; a revoked key's line verifies but counts for none);
9. the log is consistent with the state the auditor verified last time (the
   same root at that size): nobody rewrote what was already seen.

Revocation. `protocol.directory` records a revocation as `revoked_at` on a
key: the key vouches for what was made before that time and nothing from it
on. The verifier takes, for every key, the earliest `revoked_at` that any
authority-signed directory version in the log gives it: the version in force
at that point and any later one alike, since a later version may say the key
was compromised before anyone knew, and no version can lift a revocation.
The log's own clock is the latest time the authority (a directory's
`issued_at`) or the gateway (its evidence, the `at` of its other leaves)
stated in any leaf so far; agencies' evidence times do not move it. A
receipt is refused once the log's clock at its entry reached its key's
revocation; a checkpoint once the clock at its size, or the time it states,
did; a cosignature once that time, or the witness's own timestamp, did.

Each kind of failure has its own `FailureKind`, which the command line turns
into a distinct exit status.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Final

from protocol.auditlog import (
    AttachmentsLeaf,
    AuditLeaf,
    BlobDeletedLeaf,
    DeadLetterLeaf,
    DirectoryLeaf,
    EvidenceLeaf,
    OperatorActionLeaf,
    RejectedInputLeaf,
    ReportSignedLeaf,
    dead_letter_identity,
    decode_leaf,
    verify_attachments_leaf,
    verify_leaf_receipt,
    verify_report_leaf,
)
from protocol.checkpoint import (
    Checkpoint,
    SignedCheckpoint,
    cosignature_key_hash,
    verify_checkpoint,
    verify_cosignature,
)
from protocol.directory import Directory, PublishedSigningKey
from protocol.encoding import parse_timestamp
from protocol.errors import ProtocolError
from protocol.evidence import EvidenceStatement, EvidenceType, verify_evidence_as_of_its_time
from protocol.ids import AgencyId, KeyId, parse_agency_id
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
    TIMESTAMP_INVALID = "TIMESTAMP_INVALID"


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One entry of the log as stored: the leaf's bytes and the log's receipt for it."""

    leaf: bytes
    receipt: bytes


@dataclass(frozen=True, slots=True)
class CheckpointStamp:
    """An RFC 3161 token the gateway kept for the checkpoint at `position` (signing order)."""

    position: int
    token: bytes


StampCheck = Callable[[bytes, bytes, Sequence[bytes]], datetime]
"""Verify a time-stamp `token` over `data` against trusted `roots` (DER) and return its time, or raise
`ProofInvalid`: `runtime.timestamps.verify_timestamp`, passed in so that this module stays pure."""

STAMP_BEFORE_CHECKPOINT_TOLERANCE: Final = timedelta(minutes=5)
"""A checkpoint whose own `time` line is later than its trusted time-stamp by more than this is mis-dated."""


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
    timestamps: int = 0
    """RFC 3161 tokens verified over checkpoints."""

    @property
    def consistent(self) -> bool:
        """Whether every check held."""
        return self.problem is None


@dataclass
class _MessageTrail:
    """The evidence of one message seen so far, by recipient, and the header digest its attachments name."""

    accepted_digest: str | None = None
    attachments_digest: str | None = None
    seen: dict[str | None, set[EvidenceType]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Revocation:
    """From when a key vouches for nothing, and the directory version that says so first."""

    at: datetime
    version: int


@dataclass(frozen=True, slots=True)
class _CarriedBody:
    """An attachment body one logged message committed to: who sent it, to whom, and its length."""

    sender: AgencyId
    recipients: frozenset[AgencyId]
    length: int


_REQUIRES: dict[EvidenceType, tuple[EvidenceType, ...]] = {
    EvidenceType.RELAY_ACCEPTED: (EvidenceType.SUBMISSION_ACCEPTED,),
    EvidenceType.RELAY_FAILED: (EvidenceType.SUBMISSION_ACCEPTED,),
    EvidenceType.DELIVERY: (EvidenceType.RELAY_ACCEPTED,),
    EvidenceType.NON_DELIVERY: (EvidenceType.SUBMISSION_ACCEPTED,),
    EvidenceType.RETRIEVAL: (EvidenceType.DELIVERY,),
    EvidenceType.NON_RETRIEVAL: (EvidenceType.DELIVERY,),
}

_Decoded = AuditLeaf | ProtocolError


def _decode_all(entries: Sequence[LogEntry]) -> list[_Decoded]:
    decoded: list[_Decoded] = []
    for entry in entries:
        try:
            decoded.append(decode_leaf(entry.leaf))
        except ProtocolError as exc:
            decoded.append(exc)
    return decoded


def _signed_directory(leaf: DirectoryLeaf, authority: SigningPublicKey) -> Directory:
    payload = verify_statement(leaf.directory, PAYLOAD_TYPE_DIRECTORY, authority)
    return parse_model(Directory, payload, what="directory")


def _revocations(leaves: Sequence[_Decoded], authority: SigningPublicKey) -> dict[KeyId, _Revocation]:
    """Every signing key a directory in the log revokes, from the earliest time any authority-signed version gives.

    A later version can move a revocation earlier (the key was compromised
    before anyone knew), never lift it.
    """
    found: dict[KeyId, _Revocation] = {}
    for leaf in leaves:
        if not isinstance(leaf, DirectoryLeaf):
            continue
        try:
            directory = _signed_directory(leaf, authority)
        except ProtocolError:
            continue  # the walk names it where it stands
        keys = [key for entry in directory.agencies for key in entry.signing_keys]
        keys += [*directory.gateway.evidence_keys, *directory.gateway.log_keys]
        for key in keys:
            held = found.get(key.key_id)
            if key.revoked_at is not None and (held is None or key.revoked_at < held.at):
                found[key.key_id] = _Revocation(key.revoked_at, directory.version)
    return found


def _posix(seconds: int) -> datetime:
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, ValueError, OSError):
        return datetime.max.replace(tzinfo=UTC)


class _Walk:
    """Checks 1-6 over the leaves, in order."""

    def __init__(self, authority: SigningPublicKey, revoked: dict[KeyId, _Revocation]) -> None:
        self.authority = authority
        self.revoked = revoked
        self.directory: Directory | None = None
        self.in_force: list[tuple[int, Directory]] = []
        self.log_keys: list[PublishedSigningKey] = []
        self.directories = 0
        self.evidence = 0
        self.trails: dict[tuple[str, str], _MessageTrail] = {}
        self.identities: dict[str, int] = {}
        self.bodies: dict[str, dict[str, _CarriedBody]] = {}
        self.clock = datetime.min.replace(tzinfo=UTC)
        self.clocks: list[datetime] = []

    # -- what the walk learnt, for the checkpoints --------------------------------------------

    def directory_at(self, size: int) -> Directory:
        """The directory in force over the first `size` leaves: the last one among them (the first for size 0)."""
        in_force = self.in_force[0][1]
        for index, directory in self.in_force:
            if index >= size:
                break
            in_force = directory
        return in_force

    def time_of(self, checkpoint: Checkpoint) -> datetime:
        """The earliest a checkpoint can have been signed: after its leaves, and not before the time it states."""
        leaves = min(checkpoint.size, len(self.clocks))
        when = self.clocks[leaves - 1] if leaves else self.clock
        for line in checkpoint.extensions:
            stated = line.removeprefix("time ")
            if stated != line and stated.isascii() and stated.isdigit():
                when = max(when, _posix(int(stated)))
        return when

    def revoked_at(self, key: PublishedSigningKey, when: datetime) -> _Revocation | None:
        """The revocation of `key` in force at `when`, if any."""
        revocation = self.revoked.get(key.key_id)
        return revocation if revocation is not None and revocation.at <= when else None

    # -- one entry ------------------------------------------------------------------------------

    def entry(self, index: int, entry: LogEntry, leaf: _Decoded) -> AuditProblem | None:
        """Checks 1-6 for one entry: it parses, the log vouches for it, it is new, its content holds."""
        if isinstance(leaf, ProtocolError):
            return AuditProblem(FailureKind.LEAF_INVALID, f"leaf does not parse: {leaf.detail}", index)
        if index == 0 and not isinstance(leaf, DirectoryLeaf):
            return AuditProblem(
                FailureKind.DIRECTORY_INVALID, "the log does not begin with a directory", index, leaf.identity
            )
        problem = self._directory(index, leaf) if isinstance(leaf, DirectoryLeaf) else None
        receipt_key = problem or self._receipt(index, entry, leaf.identity)
        if isinstance(receipt_key, AuditProblem):
            return receipt_key
        return (
            self._unique(index, leaf.identity)
            or self._content(index, leaf)
            or self._receipt_in_force(index, receipt_key, leaf.identity)
        )

    def _unique(self, index: int, identity: str) -> AuditProblem | None:
        """No identity twice: one event is one leaf (a redelivery adds none)."""
        first = self.identities.setdefault(identity, index)
        if first == index:
            return None
        return AuditProblem(
            FailureKind.LEAF_INVALID,
            f"identity already logged at index {first}: one event is one leaf",
            index,
            identity,
        )

    def _receipt_in_force(self, index: int, key: PublishedSigningKey, identity: str) -> AuditProblem | None:
        """The log key that signed the receipt was not revoked when the log reached this entry."""
        self.clocks.append(self.clock)
        revocation = self.revoked_at(key, self.clock)
        if revocation is None:
            return None
        return AuditProblem(
            FailureKind.RECEIPT_INVALID,
            f"the receipt is by log key {key.key_id}, revoked from {revocation.at.isoformat()} by directory "
            f"version {revocation.version}; the log is at {self.clock.isoformat()} here",
            index,
            identity,
        )

    def _tick(self, at: datetime) -> None:
        """The log's clock: the latest time the gateway or the authority stated in any leaf so far."""
        self.clock = max(self.clock, at)

    def _content(self, index: int, leaf: AuditLeaf) -> AuditProblem | None:
        """Each kind of leaf verified as far as it can be offline: signatures, identity, references."""
        assert self.directory is not None  # the first leaf is a directory (checked above)
        if isinstance(leaf, DirectoryLeaf):
            self._tick(self.directory.issued_at)
            return None
        if isinstance(leaf, EvidenceLeaf):
            return self._evidence(index, leaf)
        if isinstance(leaf, AttachmentsLeaf):
            return self._attachments(index, leaf)
        if isinstance(leaf, BlobDeletedLeaf):
            return self._blob_deleted(index, leaf)
        self._tick(leaf.at)
        if isinstance(leaf, ReportSignedLeaf):
            return self._report_signed(index, leaf)
        if isinstance(leaf, RejectedInputLeaf):
            implied = f"rejected/{leaf.publisher or '-'}/{leaf.body_sha256}"
        elif isinstance(leaf, DeadLetterLeaf):
            implied = dead_letter_identity(leaf.queue, leaf.died_at, leaf.body_sha256)
        else:
            assert isinstance(leaf, OperatorActionLeaf)
            implied = (
                leaf.identity if leaf.identity.startswith("operator/") and len(leaf.identity) > 9 else "operator/…"
            )
        return self._named(index, leaf.identity, implied)

    def _report_signed(self, index: int, leaf: ReportSignedLeaf) -> AuditProblem | None:
        """The agency's signed request names the PDF and the report endpoint; the identity follows from them."""
        assert self.directory is not None
        try:
            verify_report_leaf(leaf, self.directory)
        except ProtocolError as exc:
            return AuditProblem(FailureKind.LEAF_INVALID, exc.detail, index, leaf.identity)
        return None

    @staticmethod
    def _named(index: int, identity: str, implied: str) -> AuditProblem | None:
        if identity == implied:
            return None
        return AuditProblem(
            FailureKind.LEAF_INVALID, f"leaf is logged as {identity[:120]!r}, its content is {implied[:120]!r}", index
        )

    def _receipt(self, index: int, entry: LogEntry, identity: str) -> PublishedSigningKey | AuditProblem:
        assert self.directory is not None
        digest = leaf_hash(entry.leaf)
        origin = self.directory.gateway.log_origin
        for key in self.log_keys:
            try:
                verify_leaf_receipt(origin, index, digest, entry.receipt, key.verifier)
            except ProtocolError:
                continue
            return key
        return AuditProblem(
            FailureKind.RECEIPT_INVALID,
            "the log's receipt does not vouch for this leaf at this index: the entry was changed, or entries "
            "were deleted, inserted or moved before it",
            index,
            identity,
        )

    def _directory(self, index: int, leaf: DirectoryLeaf) -> AuditProblem | None:
        try:
            directory = _signed_directory(leaf, self.authority)
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
        self.in_force.append((index, directory))
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
        if statement.issuer == self.directory.gateway.gateway_id:
            self._tick(statement.at)  # an agency's clock does not move the log's
        self.evidence += 1
        return self._sequence(index, statement, leaf.identity)

    def _attachments(self, index: int, leaf: AttachmentsLeaf) -> AuditProblem | None:
        """The sender signed the header, which commits to exactly these bodies, and names this message."""
        assert self.directory is not None
        self._tick(leaf.at)
        try:
            header = verify_attachments_leaf(leaf, self.directory, now=leaf.at)
        except ProtocolError as exc:
            return AuditProblem(FailureKind.LEAF_INVALID, exc.detail, index, leaf.identity)
        problem = self._named(index, leaf.identity, f"attachments/{leaf.sender}/{leaf.message_id}")
        if problem is not None:
            return problem
        trail = self.trails.setdefault((leaf.sender, leaf.message_id), _MessageTrail())
        if trail.accepted_digest not in (None, leaf.message_digest):
            return AuditProblem(
                FailureKind.SEQUENCE_INVALID,
                "attachments of another header than the one the gateway accepted for this message",
                index,
                leaf.identity,
            )
        trail.attachments_digest = leaf.message_digest
        recipients = frozenset(header.recipient_agencies)
        for body in leaf.attachments:
            carried = _CarriedBody(header.sender, recipients, body.ciphertext_length)
            self.bodies.setdefault(body.ciphertext_sha256, {})[leaf.message_id] = carried
        return None

    def _blob_deleted(self, index: int, leaf: BlobDeletedLeaf) -> AuditProblem | None:
        """The deleted body is one the messages it names carried, uploaded by their sender, read by their recipients."""
        self._tick(leaf.at)
        prefix = f"blob_deleted/{leaf.ciphertext_sha256}/"
        try:
            stored_at = parse_timestamp(leaf.identity.removeprefix(prefix))
        except ProtocolError:
            stored_at = None
        if not leaf.identity.startswith(prefix) or stored_at != leaf.stored_at:
            return self._named(index, leaf.identity, f"{prefix}{leaf.stored_at.isoformat()}")
        carried = self.bodies.get(leaf.ciphertext_sha256, {})
        problem: str | None = None
        if leaf.reason == "unreferenced":
            if leaf.messages or leaf.retrieved_by:
                problem = "a body deleted as unreferenced names messages or readers"
        elif not leaf.messages:
            problem = f"a body deleted as {leaf.reason} names no message that carried it"
        else:
            readers: set[AgencyId] = set()
            for message in leaf.messages:
                body = carried.get(message)
                if body is None or body.sender != leaf.uploader or body.length != leaf.ciphertext_length:
                    problem = (
                        f"no attachments leaf before it shows message {message[:100]} carrying this body "
                        f"({leaf.ciphertext_length} bytes from {leaf.uploader})"
                    )
                    break
                readers |= body.recipients
            else:
                strangers = sorted(set(leaf.retrieved_by) - readers)
                if strangers:
                    problem = f"read by {', '.join(strangers)}, not a recipient of the messages that carried it"
        if problem is None:
            return None
        return AuditProblem(FailureKind.LEAF_INVALID, problem, index, leaf.identity)

    def _sequence(self, index: int, statement: EvidenceStatement, identity: str) -> AuditProblem | None:
        if statement.message_id is None or statement.evidence_type == EvidenceType.SUBMISSION_REJECTED:
            return None  # rejections are about what a publisher sent, not about an accepted message
        trail = self.trails.setdefault((statement.sender, str(statement.message_id)), _MessageTrail())
        if statement.evidence_type == EvidenceType.SUBMISSION_ACCEPTED:
            if trail.accepted_digest not in (None, statement.message_digest):
                return AuditProblem(
                    FailureKind.SEQUENCE_INVALID, "one message accepted with two digests", index, identity
                )
            if trail.attachments_digest not in (None, statement.message_digest):
                return AuditProblem(
                    FailureKind.SEQUENCE_INVALID,
                    "message accepted with another digest than the header its attachments leaf holds",
                    index,
                    identity,
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
    timestamps: int = 0


def _signed_checkpoint(note: str, walk: _Walk, position: int) -> Checkpoint | AuditProblem:
    """The checkpoint, if a log key of a directory seen signed it for the log's origin, unrevoked when it signed."""
    assert walk.directory is not None
    origin = walk.directory.gateway.log_origin
    failures: list[str] = []
    for key in walk.log_keys:
        try:
            checkpoint = verify_checkpoint(note, origin, key.verifier, origin=origin)
        except ProtocolError as exc:
            failures.append(exc.detail)
            continue
        when = walk.time_of(checkpoint)
        revocation = walk.revoked_at(key, when)
        if revocation is None:
            return checkpoint
        failures.append(
            f"signed by log key {key.key_id}, revoked from {revocation.at.isoformat()} by directory version "
            f"{revocation.version}, at {when.isoformat()} or later"
        )
    return AuditProblem(
        FailureKind.CHECKPOINT_INVALID,
        "not signed by an unrevoked log key of the gateway: " + "; ".join(failures),
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


@dataclass(frozen=True, slots=True)
class _Stamps:
    """The tokens by checkpoint position, and how to verify one (None: tokens are counted as unchecked)."""

    by_position: dict[int, list[bytes]]
    check: StampCheck | None


def _check_stamps(note: str, checkpoint: Checkpoint, walk: _Walk, stamps: _Stamps, position: int) -> int | AuditProblem:
    """The number of this checkpoint's tokens, each verified, or the first problem.

    A token must verify over the checkpoint's signed note under a TSA its directory lists, and must not
    say the checkpoint existed before the time it claims (beyond the tolerance).
    """
    tokens = stamps.by_position.get(position, [])
    if not tokens or stamps.check is None:
        return 0
    origin = walk.directory_at(checkpoint.size).gateway.log_origin
    data = SignedCheckpoint.parse(note).signed_only_by(origin).to_text().encode()
    roots = walk.directory_at(checkpoint.size).timestamp_roots()
    claimed = walk.time_of(checkpoint)
    for token in tokens:
        try:
            stamped = stamps.check(token, data, roots)
        except ProtocolError as exc:
            return AuditProblem(FailureKind.TIMESTAMP_INVALID, exc.detail, checkpoint=position)
        if claimed - stamped > STAMP_BEFORE_CHECKPOINT_TOLERANCE:
            return AuditProblem(
                FailureKind.TIMESTAMP_INVALID,
                f"time-stamped at {stamped.isoformat()}, before the time the checkpoint claims "
                f"({claimed.isoformat()}): the gateway's clock was ahead or the checkpoint is mis-dated",
                checkpoint=position,
            )
    return len(tokens)


def _check_checkpoints(
    notes: Sequence[str], walk: _Walk, tree: MerkleTree, tally: _CheckpointTally, stamps: _Stamps
) -> AuditProblem | None:
    """Checks 7 and 8 over every checkpoint, in signing order, and its time-stamps where it has any."""
    for position, note in enumerate(notes):
        checkpoint = _signed_checkpoint(note, walk, position)
        if isinstance(checkpoint, AuditProblem):
            return checkpoint
        problem = _against_tree(checkpoint, tree, tally, position)
        if problem is not None:
            return problem
        witnesses = _witnesses(SignedCheckpoint.parse(note), walk, position)
        if isinstance(witnesses, AuditProblem):
            return witnesses
        tally.cosignatures += len(witnesses)
        stamped = _check_stamps(note, checkpoint, walk, stamps, position)
        if isinstance(stamped, AuditProblem):
            return stamped
        tally.timestamps += stamped
        if len(witnesses) >= PUBLISHED_AFTER:
            tally.published_size = max(tally.published_size, checkpoint.size)
        tally.roots_by_size[checkpoint.size] = checkpoint.root_hash
        tally.latest = checkpoint
        tally.count += 1
    return None


def _witnesses(signed: SignedCheckpoint, walk: _Walk, position: int) -> set[AgencyId] | AuditProblem:
    """The distinct agencies whose cosignatures verify under a key unrevoked when they cosigned.

    Witnesses and their keys are those of the directory in force at the
    checkpoint's size; a line that names no agency of it, or a key it does not
    give that agency, or that does not verify, is refused. A line under a
    revoked key verifies but does not count: its holder may be anyone.
    """
    checkpoint = signed.checkpoint
    directory = walk.directory_at(checkpoint.size)
    when = walk.time_of(checkpoint)
    counted: set[AgencyId] = set()
    for signature in signed.signatures:
        if signature.key_name == checkpoint.origin:
            continue  # the log's own lines: `_signed_checkpoint` verified them
        try:
            witness = directory.agency(parse_agency_id(signature.key_name))
        except ProtocolError:
            return AuditProblem(
                FailureKind.COSIGNATURE_INVALID,
                f"cosignature by {signature.key_name[:64]!r}, not an agency of directory version {directory.version}",
                checkpoint=position,
            )
        keys = [
            key
            for key in witness.signing_keys
            if cosignature_key_hash(witness.agency_id, key.verifier) == signature.key_hash
        ]
        if not keys:
            return AuditProblem(
                FailureKind.COSIGNATURE_INVALID,
                f"cosignature by {witness.agency_id} under a key directory version {directory.version} does not "
                "give it",
                checkpoint=position,
            )
        try:
            cosigned_at = _posix(verify_cosignature(signed, witness.agency_id, keys[0].verifier))
        except ProtocolError:
            return AuditProblem(
                FailureKind.COSIGNATURE_INVALID,
                f"cosignature by {witness.agency_id} does not verify",
                checkpoint=position,
            )
        if walk.revoked_at(keys[0], max(when, cosigned_at)) is None:
            counted.add(witness.agency_id)
    return counted


def _check_previous(previous: VerifiedState, origin: str, tree: MerkleTree) -> AuditProblem | None:
    """Check 9: the first `previous.size` entries still have the root verified last time."""
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
    stamps: Sequence[CheckpointStamp] = (),
    check_stamp: StampCheck | None = None,
) -> AuditReport:
    """Verify a log's entries (in index order) and its checkpoints (in signing order).

    `stamps` are RFC 3161 tokens over checkpoints, verified with `check_stamp` against the time-stamp
    authorities of the directory in force at each checkpoint's size.
    """
    leaves = _decode_all(entries)
    walk = _Walk(authority, _revocations(leaves, authority))
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
            timestamps=tally.timestamps,
        )

    for index, entry in enumerate(entries):
        problem = walk.entry(index, entry, leaves[index])
        if problem is not None:
            return report(problem)
        tree.append(leaf_hash(entry.leaf))
    if walk.directory is None:
        return report(AuditProblem(FailureKind.DIRECTORY_INVALID, "the log holds no directory"))
    if not checkpoints:
        return report(AuditProblem(FailureKind.CHECKPOINT_INVALID, "the log comes with no checkpoint"))
    by_position: dict[int, list[bytes]] = {}
    for stamp in stamps:
        by_position.setdefault(stamp.position, []).append(stamp.token)
    problem = _check_checkpoints(checkpoints, walk, tree, tally, _Stamps(by_position, check_stamp))
    if problem is None and previous is not None:
        problem = _check_previous(previous, walk.directory.gateway.log_origin, tree)
    if problem is not None:
        return report(problem)
    return report(None)


__all__ = [
    "PUBLISHED_AFTER",
    "AuditProblem",
    "AuditReport",
    "CheckpointStamp",
    "FailureKind",
    "LogEntry",
    "StampCheck",
    "VerifiedState",
    "verify_audit_log",
]
