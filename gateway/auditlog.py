"""The gateway's audit log: leaves and the Merkle tree in the store, signed checkpoints.

Appends happen inside the same database transaction as the state they
record, so a leaf exists exactly when its effect does. Each leaf is stored
with the log's receipt (its index and hash, signed) and with the hashes of
the complete subtrees it closes (`tree_nodes`, `protocol.merkle.Frontier`):
the tree lives in the database, not in the process. Appends are
idempotent on the leaf's identity.

The tree is read, never held: a root or proof needs O(log n) complete
subtrees (`protocol.merkle.root_nodes`, `inclusion_nodes`,
`consistency_nodes`), read in one query (or a few, for a batch of proofs)
through a bounded LRU cache (`NODE_CACHE_ENTRIES`; a complete subtree's
hash never changes). Memory does not grow with the log, start-up reads no
leaf, and several gateway processes sharing one PostgreSQL database serve
the same roots and proofs: the size is the database's (`current_size`),
each writer reads the tree's right edge as its transaction sees it (the
one it cached after its last commit, if no other process appended since),
and a checkpoint signs the size and root the signing transaction sees.

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
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Collection, Sequence
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
from protocol.merkle import (
    Frontier,
    NodeId,
    consistency_nodes,
    consistency_proof_from_nodes,
    inclusion_nodes,
    inclusion_proof_from_nodes,
    leaf_hash,
    root_from_nodes,
    root_nodes,
)
from protocol.model import parse_model
from runtime.errors import StoreUnavailable, TransientFailure

log = structlog.get_logger("rogatory.gateway.auditlog")

APPEND_SAMPLES: Final = 20_000
"""Append latencies kept for `append_latency` (the most recent ones: a bounded window, not a growing list)."""
TIME_EXTENSION = "time "
"""Prefix of the checkpoint extension line carrying the signing time (POSIX seconds)."""
NODE_CACHE_ENTRIES: Final = 8_192
"""Tree nodes kept in memory, least recently used out first: about 2.7 MB (~330 bytes each), whatever the log's size.

The nodes every proof shares (the upper levels, the right edge) stay in; a proof of an old leaf reads its
lower nodes (one query with the rest). The whole tree of a million leaves would take 66 MB.
"""


class NodeCache:
    """A bounded LRU map of tree nodes, (level, index) -> hash: only committed complete subtrees go in."""

    def __init__(self, entries: int = NODE_CACHE_ENTRIES) -> None:
        self._entries = entries
        self._nodes: OrderedDict[NodeId, bytes] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._nodes)

    def get_many(self, wanted: Collection[NodeId]) -> tuple[dict[NodeId, bytes], list[NodeId]]:
        """The cached hashes among `wanted`, and the nodes not cached."""
        found: dict[NodeId, bytes] = {}
        missing: list[NodeId] = []
        for node in wanted:
            value = self._nodes.get(node)
            if value is None:
                missing.append(node)
            else:
                self._nodes.move_to_end(node)
                found[node] = value
        self.hits += len(found)
        self.misses += len(missing)
        return found, missing

    def put_many(self, nodes: dict[NodeId, bytes]) -> None:
        """Keep `nodes`, forgetting the least recently used beyond the bound."""
        for node, value in nodes.items():
            self._nodes[node] = value
            self._nodes.move_to_end(node)
        while len(self._nodes) > self._entries:
            self._nodes.popitem(last=False)


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
        edge: Frontier | None = None,
    ) -> None:
        self.tx = tx
        self._held = held
        self.base_size = base_size
        self._origin = origin
        self._log_key = log_key
        self.pending: list[bytes] = []
        self.frontier: Frontier | None = edge if edge is not None and edge.size == base_size else None
        """The tree's right edge after this transaction's appends (read from the database at the first one)."""

    async def _edge(self) -> Frontier:
        """The right edge where the next leaf goes: cached if it is of the size this transaction sees, else read."""
        if self.frontier is None:
            wanted = root_nodes(self.base_size)
            nodes = await self.tx.tree_nodes(wanted)
            if len(nodes) != len(wanted):
                missing = [node for node in wanted if node not in nodes]
                raise StoreUnavailable(
                    f"the audit tree lacks nodes {missing[:4]} (level, index) of size {self.base_size}"
                )
            self.frontier = Frontier.from_nodes(self.base_size, nodes)
        return self.frontier

    async def insert(self, record: LeafRecord, agencies: Sequence[str]) -> None:
        """Store `record` at the end of the log with the tree nodes it closes (no identity or hold check)."""
        frontier = await self._edge()
        if record.index != frontier.size:
            raise StoreUnavailable(f"leaf {record.index} appended where the tree ends at {frontier.size}")
        after, closed = frontier.append(record.leaf_hash)
        await self.tx.insert_leaf(record, agencies, closed)
        self.frontier = after
        self.pending.append(record.leaf_hash)

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
        await self.insert(
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
        return AppendedLeaf(index, added=True)


class AuditLog:
    """Append-only Merkle log with signed checkpoints (RFC 9162 hashing, C2SP notes), its tree in the store."""

    def __init__(
        self,
        store: GatewayStore,
        *,
        origin: str,
        log_key: SigningPrivateKey,
        size: int = 0,
        cache_entries: int = NODE_CACHE_ENTRIES,
    ) -> None:
        self._store = store
        self._origin = origin
        self._log_key = log_key
        self._size = size
        self._edge: Frontier | None = None
        self.cache = NodeCache(cache_entries)
        """The tree nodes kept in memory (bounded)."""
        self._last_checkpoint_at: datetime | None = None
        self._append_seconds: deque[float] = deque(maxlen=APPEND_SAMPLES)
        self.hold: str | None = None
        """Why nothing may be appended nor signed (the log is behind what witnesses cosigned), or None."""

    @classmethod
    async def load(
        cls,
        store: GatewayStore,
        *,
        origin: str,
        log_key: SigningPrivateKey,
        cache_entries: int = NODE_CACHE_ENTRIES,
    ) -> AuditLog:
        """The log of `store`: its size is read; nothing else (the tree is read when needed)."""
        return cls(store, origin=origin, log_key=log_key, size=await store.tree_size(), cache_entries=cache_entries)

    @property
    def size(self) -> int:
        """Number of leaves committed, as last read from the database or committed here (`current_size` reads it)."""
        return self._size

    async def current_size(self) -> int:
        """Number of leaves committed in the database now (by this process or any other sharing it)."""
        self._size = max(self._size, await self._store.tree_size())
        return self._size

    @property
    def origin(self) -> str:
        """The log's origin line in checkpoints (also the log key's name)."""
        return self._origin

    # -- reading the tree ------------------------------------------------------------

    async def _nodes(self, wanted: Collection[NodeId], tx: Transaction | None = None) -> dict[NodeId, bytes]:
        """The hashes of `wanted` (committed) nodes: the cache's, the rest in one read (or a few)."""
        found, missing = self.cache.get_many(wanted)
        if missing:
            read = await (self._store.tree_nodes(missing) if tx is None else tx.tree_nodes(missing))
            if len(read) != len(missing):
                lacking = sorted(node for node in missing if node not in read)
                raise StoreUnavailable(
                    f"the audit tree lacks nodes {lacking[:4]} (level, index): {len(lacking)} missing"
                )
            if tx is None:  # read in a transaction: kept only once committed (`_committed`)
                self.cache.put_many(read)
            found |= read
        return found

    async def _require_size(self, size: int) -> None:
        if size > self._size and size > await self.current_size():
            raise ProofInvalid(f"tree size {size} is larger than the log, which has {self._size} leaves")

    async def root(self, size: int | None = None) -> bytes:
        """MTH of the first `size` leaves (default: all committed now)."""
        size = await self.current_size() if size is None else size
        await self._require_size(size)
        return root_from_nodes(size, await self._nodes(root_nodes(size)))

    async def frontier(self, size: int) -> Frontier:
        """The right edge of the tree of `size` (to extend it with leaves not yet appended, and see its root)."""
        await self._require_size(size)
        return Frontier.from_nodes(size, await self._nodes(root_nodes(size)))

    async def inclusion_proof(self, index: int, size: int) -> tuple[bytes, list[bytes]]:
        """The leaf hash at `index` and PATH(index, D[size])."""
        return (await self.inclusion_proofs([index], size))[index]

    async def inclusion_proofs(self, indexes: Collection[int], size: int) -> dict[int, tuple[bytes, list[bytes]]]:
        """Leaf hash and PATH(index, D[size]) of each of `indexes`, their nodes read together (one or few queries)."""
        await self._require_size(size)
        wanted: dict[NodeId, None] = {}
        for index in indexes:
            wanted[(0, index)] = None
            wanted.update(dict.fromkeys(inclusion_nodes(index, size)))
        nodes = await self._nodes(list(wanted))
        return {index: (nodes[(0, index)], inclusion_proof_from_nodes(index, size, nodes)) for index in indexes}

    async def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        """PROOF(old_size, D[new_size]) (empty when the sizes are 0 or equal)."""
        await self._require_size(new_size)
        return consistency_proof_from_nodes(
            old_size, new_size, await self._nodes(consistency_nodes(old_size, new_size))
        )

    # -- writing ---------------------------------------------------------------------

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AuditTransaction]:
        """A write transaction; leaves appended in it, with the tree nodes they close, commit with it.

        Indexes come from the leaves already in the database as this
        transaction sees them (one writer at a time, whichever process), so
        transactions that share a COMMIT (`gateway.groupcommit`) take
        consecutive indexes.
        """
        started = time.perf_counter()
        async with self._store.transaction() as tx:
            audit_tx = AuditTransaction(
                tx,
                await tx.next_leaf_index(),
                origin=self._origin,
                log_key=self._log_key,
                held=lambda: self.hold,
                edge=self._edge,
            )
            yield audit_tx
            if audit_tx.pending:
                tx.after_commit(partial(self._committed, audit_tx.frontier))
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

    def _committed(self, edge: Frontier | None) -> None:
        """Leaves committed here up to `edge.size`: the size known grows, and the edge is kept for the next writer."""
        if edge is None:
            return
        self._size = max(self._size, edge.size)
        if self._edge is None or edge.size >= self._edge.size:
            self._edge = edge  # checked against the size the next transaction sees: another process may append first
        self.cache.put_many(edge.nodes())

    async def checkpoint_if_due(self, now: datetime, *, idle_interval: timedelta) -> str | None:
        """Sign and keep a checkpoint if the log grew, or if the last one is older than `idle_interval`.

        The size and root signed are the database's, read in the signing
        transaction (writers are serialised, so checkpoints are kept in the
        order of their sizes, whichever process signs). Never while the log
        is held: a checkpoint of this tree would be smaller than one
        witnesses cosigned.
        """
        if self.hold is not None:
            return None
        last = await self._store.last_checkpoint_size()
        grew = last is None or await self.current_size() != last
        idle_due = self._last_checkpoint_at is None or now - self._last_checkpoint_at >= idle_interval
        if not grew and not idle_due:
            return None
        async with self._store.transaction() as tx:
            size = await tx.next_leaf_index()
            if not idle_due and await tx.last_checkpoint_size() == size:
                return None  # another process signed this size since the look above
            edge = self._edge if self._edge is not None and self._edge.size == size else None
            root = edge.root() if edge is not None else root_from_nodes(size, await self._nodes(root_nodes(size), tx))
            checkpoint = Checkpoint(
                origin=self._origin,
                size=size,
                root_hash=root,
                extensions=(f"{TIME_EXTENSION}{int(now.timestamp())}",),
            )
            note = sign_checkpoint(checkpoint, self._origin, self._log_key).to_text()
            await tx.insert_checkpoint(size, note, format_timestamp(now))
        self._size = max(self._size, size)
        self._last_checkpoint_at = now
        return note

    async def import_leaves(self, first_index: int, leaves: Sequence[bytes], *, at: datetime) -> None:
        """Put back leaves this log lost, at `first_index` on: the caller verified they rebuild a witnessed root.

        Each gets its receipt again (Ed25519 is deterministic: the very
        receipt signed the first time). The time of the first append is
        lost with the disk: `appended_at` is the time of the import.
        """
        async with self._store.transaction() as tx:
            size = await tx.next_leaf_index()
            if first_index != size:
                raise ProofInvalid(f"leaves imported at {first_index} onto a log of {size}")
            audit_tx = AuditTransaction(tx, size, origin=self._origin, log_key=self._log_key, edge=self._edge)
            for offset, data in enumerate(leaves):
                leaf = decode_leaf(data)
                digest = leaf_hash(data)
                index = first_index + offset
                message_id, agencies = leaf_parties(leaf)
                await audit_tx.insert(
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
            if audit_tx.pending:
                tx.after_commit(partial(self._committed, audit_tx.frontier))

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


__all__ = [
    "NODE_CACHE_ENTRIES",
    "TIME_EXTENSION",
    "AppendedLeaf",
    "AuditLog",
    "AuditTransaction",
    "NodeCache",
    "leaf_parties",
]
