"""The gateway's audit log: leaves in the store, the Merkle tree in memory, signed checkpoints.

Appends happen inside the same database transaction as the state they
record, so a leaf exists exactly when its effect does. Each leaf is stored
with the log's receipt (its index and hash, signed). The in-memory tree
(rebuilt from the stored leaf hashes at start-up) is extended only after
the transaction commits. Appends are idempotent on the leaf's identity.

Checkpoints (C2SP signed notes, with a `time <unix seconds>` extension line)
are signed by the log key, separate from the evidence key: at every interval
in which the log grew, and at least every idle interval otherwise, so that
witnesses can tell a live log from a stalled or hidden one. Witnesses (the
agencies' agents) send back cosignatures, which are verified and kept.

While the log is held (`hold`, set by `gateway.recovery` after a restored
disk: witnesses hold a checkpoint larger than this log), nothing is
appended (`TransientFailure`: the delivery waits, unacknowledged, and is
retried) and no checkpoint is signed: the only way forward is
`import_leaves`, the lost leaves given back, which `gateway.recovery` only
calls once they rebuild the witnessed root.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Final

import structlog

from gateway.store import GatewayStore, LeafRecord, Transaction
from protocol.auditlog import (
    AttachmentsLeaf,
    AuditLeaf,
    DirectoryLeaf,
    EvidenceLeaf,
    decode_leaf,
    encode_leaf,
    sign_leaf_receipt,
)
from protocol.checkpoint import Checkpoint, NoteSignature, SignedCheckpoint, sign_checkpoint, verify_cosignature
from protocol.directory import Directory
from protocol.encoding import format_timestamp
from protocol.errors import ErrorCode, ProofInvalid, ProtocolError
from protocol.evidence import EvidenceStatement
from protocol.ids import parse_agency_id
from protocol.keys import SigningPrivateKey
from protocol.merkle import MerkleTree, leaf_hash
from protocol.model import parse_model
from runtime.errors import TransientFailure

log = structlog.get_logger("rogatory.gateway.auditlog")

APPEND_SAMPLES: Final = 20_000
"""Append latencies kept for `append_latency` (the most recent ones: a bounded window, not a growing list)."""
TIME_EXTENSION = "time "
"""Prefix of the checkpoint extension line carrying the signing time (POSIX seconds)."""


@dataclass(frozen=True, slots=True)
class AppendedLeaf:
    """Where a leaf landed, and whether this call added it."""

    index: int
    added: bool


class AuditTransaction:
    """A store transaction that can also append leaves."""

    def __init__(
        self,
        tx: Transaction,
        base_size: int,
        *,
        origin: str,
        log_key: SigningPrivateKey,
        held: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.tx = tx
        self._held = held
        self.base_size = base_size
        self._origin = origin
        self._log_key = log_key
        self.pending: list[bytes] = []

    async def append(
        self,
        leaf: AuditLeaf,
        *,
        at: datetime,
        message_id: str | None = None,
        agencies: Sequence[str] = (),
    ) -> AppendedLeaf:
        """Append `leaf` unless a leaf with its identity is already in the log."""
        existing = await self.tx.leaf_index(leaf.identity)
        if existing is not None:
            return AppendedLeaf(existing, added=False)
        reason = self._held()
        if reason is not None:
            raise TransientFailure(f"the audit log is held: {reason}")
        data = encode_leaf(leaf)
        digest = leaf_hash(data)
        index = self.base_size + len(self.pending)
        await self.tx.insert_leaf(
            LeafRecord(
                index=index,
                identity=leaf.identity,
                kind=leaf.kind,
                message_id=message_id,
                leaf=data,
                leaf_hash=digest,
                receipt=sign_leaf_receipt(self._origin, index, digest, self._log_key),
                appended_at=format_timestamp(at),
            ),
            agencies,
        )
        self.pending.append(digest)
        return AppendedLeaf(index, added=True)


class AuditLog:
    """Append-only Merkle log with signed checkpoints (RFC 9162 hashing, C2SP notes)."""

    def __init__(self, store: GatewayStore, tree: MerkleTree, *, origin: str, log_key: SigningPrivateKey) -> None:
        self._store = store
        self._tree = tree
        self._origin = origin
        self._log_key = log_key
        self._last_checkpoint_size = -1
        self._last_checkpoint_at: datetime | None = None
        self._append_seconds: deque[float] = deque(maxlen=APPEND_SAMPLES)
        self.hold: str | None = None
        """Why nothing may be appended nor signed (the log is behind what witnesses cosigned), or None."""

    @classmethod
    async def load(cls, store: GatewayStore, *, origin: str, log_key: SigningPrivateKey) -> AuditLog:
        """Rebuild the tree from the stored leaves."""
        tree = MerkleTree.from_leaf_hashes(await store.leaf_hashes())
        log = cls(store, tree, origin=origin, log_key=log_key)
        latest = await store.latest_checkpoint()
        if latest is not None:
            log._last_checkpoint_size = latest.tree_size
        return log

    @property
    def size(self) -> int:
        """Number of leaves committed."""
        return self._tree.size

    @property
    def tree(self) -> MerkleTree:
        """The committed tree (read-only use: roots and proofs)."""
        return self._tree

    @property
    def origin(self) -> str:
        """The log's origin line in checkpoints (also the log key's name)."""
        return self._origin

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AuditTransaction]:
        """A write transaction; leaves appended in it join the tree once it commits.

        Indexes come from the leaves already in the database as this
        transaction sees them (one writer at a time), so transactions that
        share a COMMIT (`gateway.groupcommit`) take consecutive indexes; the
        tree is extended by the commit callbacks, which run in that same order.
        """
        started = time.perf_counter()
        async with self._store.transaction() as tx:
            audit_tx = AuditTransaction(
                tx, await tx.next_leaf_index(), origin=self._origin, log_key=self._log_key, held=lambda: self.hold
            )
            yield audit_tx
            if audit_tx.pending:
                tx.after_commit(partial(self._extend, audit_tx.base_size, tuple(audit_tx.pending)))
        if audit_tx.pending:
            self._append_seconds.append(time.perf_counter() - started)

    def append_latency(self) -> dict[str, float | int]:
        """Milliseconds from asking for an append to its durable commit (p50, p95, p99, max) over the last appends."""
        ordered = sorted(self._append_seconds)
        if not ordered:
            return {"appends": 0}

        def at(fraction: float) -> float:
            return round(1000 * ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))], 2)

        return {"appends": len(ordered), "p50_ms": at(0.5), "p95_ms": at(0.95), "p99_ms": at(0.99), "max_ms": at(1.0)}

    def _extend(self, first_index: int, digests: tuple[bytes, ...]) -> None:
        """Add committed leaves to the in-memory tree, which must end where they begin."""
        if self._tree.size != first_index:
            # Another process appended to a shared database: checkpoints go on signing the prefix this
            # tree holds (consistent, only stale) and the tree is rebuilt from the database at the next start.
            log.error("audit_tree_behind", tree_size=self._tree.size, first_index=first_index)
            return
        for digest in digests:
            self._tree.append(digest)

    async def checkpoint_if_due(self, now: datetime, *, idle_interval: timedelta) -> str | None:
        """Sign and keep a checkpoint if the tree grew, or if the last one is older than `idle_interval`.

        Never while the log is held: a checkpoint of this tree would be smaller than one witnesses cosigned.
        """
        if self.hold is not None:
            return None
        size = self._tree.size
        grew = size != self._last_checkpoint_size
        idle_due = self._last_checkpoint_at is None or now - self._last_checkpoint_at >= idle_interval
        if not grew and not idle_due:
            return None
        checkpoint = Checkpoint(
            origin=self._origin,
            size=size,
            root_hash=self._tree.root(size),
            extensions=(f"{TIME_EXTENSION}{int(now.timestamp())}",),
        )
        note = sign_checkpoint(checkpoint, self._origin, self._log_key).to_text()
        async with self._store.transaction() as tx:
            await tx.insert_checkpoint(size, note, format_timestamp(now))
        self._last_checkpoint_size = size
        self._last_checkpoint_at = now
        return note

    async def import_leaves(self, first_index: int, leaves: Sequence[bytes], *, at: datetime) -> None:
        """Put back leaves this log lost, at `first_index` on: the caller verified they rebuild a witnessed root.

        Each gets its receipt again (Ed25519 is deterministic: the very
        receipt signed the first time). The time of the first append is
        lost with the disk: `appended_at` is the time of the import.
        """
        if first_index != self._tree.size:
            raise ProofInvalid(f"leaves imported at {first_index} onto a log of {self._tree.size}")
        digests = []
        async with self._store.transaction() as tx:
            for offset, data in enumerate(leaves):
                leaf = decode_leaf(data)
                digest = leaf_hash(data)
                index = first_index + offset
                message_id, agencies = leaf_parties(leaf)
                await tx.insert_leaf(
                    LeafRecord(
                        index=index,
                        identity=leaf.identity,
                        kind=leaf.kind,
                        message_id=message_id,
                        leaf=data,
                        leaf_hash=digest,
                        receipt=sign_leaf_receipt(self._origin, index, digest, self._log_key),
                        appended_at=format_timestamp(at),
                    ),
                    agencies,
                )
                digests.append(digest)
            tx.after_commit(partial(self._extend, first_index, tuple(digests)))

    async def add_cosignature(
        self, checkpoint_id: int, signature_line: str, directory: Directory, *, now: datetime
    ) -> bool:
        """Verify a witness's cosignature line of checkpoint `checkpoint_id` and keep it.

        The witness is an agency of the directory, named by the line; its
        cosignature key is its signing key. Returns False if it had already
        cosigned this checkpoint.
        """
        record = await self._store.checkpoint(checkpoint_id)
        if record is None:
            raise ProofInvalid(f"no checkpoint {checkpoint_id}", code=ErrorCode.CHECKPOINT_INVALID)
        in_force = await self._directory_at(record.tree_size, current=directory)
        try:
            signature = NoteSignature.from_line(signature_line.rstrip("\n"))
            witness = in_force.agency(parse_agency_id(signature.key_name))
        except ProtocolError as exc:
            raise ProofInvalid(
                f"cosignature line is not by an agency of the directory: {exc.detail}",
                code=ErrorCode.CHECKPOINT_INVALID,
            ) from exc
        signed = SignedCheckpoint.parse(record.note).with_signature(signature)
        failures = []
        for key in witness.signing_keys:
            try:
                verify_cosignature(signed, witness.agency_id, key.verifier)
                break
            except ProtocolError as exc:
                failures.append(exc.detail)
        else:
            raise ProofInvalid(
                f"cosignature of {witness.agency_id} does not verify: {'; '.join(failures)}",
                code=ErrorCode.CHECKPOINT_INVALID,
            )
        async with self._store.transaction() as tx:
            return await tx.insert_cosignature(
                checkpoint_id, witness.agency_id, signature.to_line(), format_timestamp(now)
            )

    async def _directory_at(self, size: int, *, current: Directory) -> Directory:
        """The directory in force over the log's first `size` leaves: the last version logged among them.

        Cosignatures are judged by it, as the offline verifier judges them
        (`protocol.audit_verify`): a witness added, or a key rotated in, after
        a checkpoint cannot cosign that checkpoint. `current` where no version
        lies below `size` (a log whose first leaf is not yet a directory).
        """
        for version in range(current.version, 0, -1):
            record = await self._store.leaf_by_identity(f"directory/{version}")  # `directory_leaf`'s identity
            if record is None or record.index >= size:
                continue
            if version == current.version:
                return current
            leaf = decode_leaf(record.leaf)
            if isinstance(leaf, DirectoryLeaf):
                return parse_model(
                    Directory, leaf.directory.payload, what="directory", code=ErrorCode.MALFORMED_DIRECTORY
                )
        return current


def leaf_parties(leaf: AuditLeaf) -> tuple[str | None, tuple[str, ...]]:
    """The message id and the agencies a leaf concerns, as the log indexes them (evidence: sender and recipient)."""
    if isinstance(leaf, EvidenceLeaf):
        statement = parse_model(
            EvidenceStatement, leaf.evidence.payload, what="evidence", code=ErrorCode.MALFORMED_EVIDENCE
        )
        message_id = None if statement.message_id is None else str(statement.message_id)
        return message_id, tuple(a for a in (statement.sender, statement.recipient) if a is not None)
    if isinstance(leaf, AttachmentsLeaf):
        return leaf.message_id, (leaf.sender,)
    return None, ()


__all__ = ["TIME_EXTENSION", "AppendedLeaf", "AuditLog", "AuditTransaction", "leaf_parties"]
