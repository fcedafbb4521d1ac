"""The gateway's durable records: messages seen, audit leaves, checkpoints, cosignatures, outgoing.

Nothing is kept only in the broker. The SQL is written once (`gateway.db`)
and runs on SQLite by default (WAL, `synchronous=FULL`, so a committed
transaction survives a crash before the ingress delivery is acked) or on
PostgreSQL when a deployment outgrows one machine.

Tables:

* `messages`     one row per (sender, message id) accepted: replay detection and
                 where the pipeline got to;
* `relays`       one row per (message, recipient): relayed, delivered, retrieved...;
* `leaves`       the audit log, append-only, `identity` unique (idempotent append),
                 each with the log's signed receipt over (index, leaf hash);
* `tree_nodes`   the log's Merkle tree: the hash of every complete, power-of-two
                 aligned subtree of level >= 1 (level 0 is `leaves.leaf_hash`),
                 written in the transaction that appends the leaf closing it, so
                 that any gateway process reads roots and proofs from here
                 (`gateway.auditlog`) instead of holding the tree;
* `checkpoints`  every signed tree head, in signing order;
* `cosignatures` witnesses' cosignatures of checkpoints;
* `checkpoint_timestamps` RFC 3161 time-stamps over checkpoints (`gateway.timestamping`);
* `outgoing`     evidence committed for publication, deleted once the broker
                 confirmed it (the gateway's outbox);
* `settings`     small pieces of kept state (the directory version held);
* `dead_letters` deliveries the broker dead-lettered, held for the operator
                 (`gateway.deadletters`): metadata, the sealed body for a
                 re-drive, what was done about them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

from gateway.db import Connection, Database, PostgresDatabase, Row, SqliteDatabase
from protocol.evidence import RECIPIENT_EVIDENCE, EvidenceType
from protocol.merkle import Frontier, NodeId
from runtime.errors import StoreUnavailable
from runtime.schema import Migration, Schema

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    sender TEXT NOT NULL,
    message_id TEXT NOT NULL,
    digest TEXT NOT NULL,
    message_type TEXT NOT NULL,
    case_id TEXT NOT NULL,
    recipients TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    state TEXT NOT NULL,
    received_at TEXT NOT NULL,
    PRIMARY KEY (sender, message_id)
);
CREATE INDEX IF NOT EXISTS messages_case ON messages (case_id);
CREATE TABLE IF NOT EXISTS relays (
    sender TEXT NOT NULL,
    message_id TEXT NOT NULL,
    recipient TEXT NOT NULL,
    state TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    expires_at TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (sender, message_id, recipient)
);
CREATE INDEX IF NOT EXISTS relays_state ON relays (state, expires_at);
CREATE TABLE IF NOT EXISTS leaves (
    leaf_index INTEGER PRIMARY KEY,
    identity TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    message_id TEXT,
    agencies TEXT NOT NULL,
    leaf BLOB NOT NULL,
    leaf_hash BLOB NOT NULL,
    receipt BLOB NOT NULL,
    appended_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS leaves_message ON leaves (message_id);
CREATE TABLE IF NOT EXISTS checkpoints (
    checkpoint_id INTEGER PRIMARY KEY AUTOINCREMENT,
    tree_size INTEGER NOT NULL,
    note TEXT NOT NULL,
    signed_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS checkpoints_size ON checkpoints (tree_size);
CREATE TABLE IF NOT EXISTS cosignatures (
    checkpoint_id INTEGER NOT NULL,
    witness TEXT NOT NULL,
    signature_line TEXT NOT NULL,
    cosigned_at TEXT NOT NULL,
    PRIMARY KEY (checkpoint_id, witness)
);
CREATE TABLE IF NOT EXISTS outgoing (
    outgoing_id INTEGER PRIMARY KEY AUTOINCREMENT,
    routing_key TEXT NOT NULL,
    kind TEXT NOT NULL,
    message_id TEXT NOT NULL,
    body BLOB NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS dead_letters (
    dead_letter_id INTEGER PRIMARY KEY AUTOINCREMENT,
    identity TEXT NOT NULL UNIQUE,
    queue TEXT NOT NULL,
    reason TEXT NOT NULL,
    death_count INTEGER NOT NULL,
    died_at TEXT NOT NULL,
    kind TEXT NOT NULL,
    publisher TEXT,
    amqp_message_id TEXT,
    sender TEXT,
    message_id TEXT,
    recipient TEXT,
    body BLOB NOT NULL,
    body_sha256 TEXT NOT NULL,
    body_length INTEGER NOT NULL,
    evidence TEXT,
    state TEXT NOT NULL,
    note TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
)
"""

CHECKPOINT_TIMESTAMPS_DDL = """
CREATE TABLE IF NOT EXISTS checkpoint_timestamps (
    checkpoint_id BIGINT PRIMARY KEY,
    token BLOB NOT NULL,
    stamped_time TEXT NOT NULL,
    authority TEXT NOT NULL,
    recorded_at TEXT NOT NULL
)
"""
"""A time-stamp authority's token over a checkpoint's signed note (kept only once verified)."""

TREE_NODES_DDL = """
CREATE TABLE IF NOT EXISTS tree_nodes (
    level INTEGER NOT NULL,
    node_index BIGINT NOT NULL,
    hash BLOB NOT NULL,
    PRIMARY KEY (level, node_index)
)
"""
"""The hash of each complete subtree of the audit log's tree of level >= 1: leaves `[node_index << level, ...)`."""

_INSERT_NODE = "INSERT INTO tree_nodes (level, node_index, hash) VALUES (?,?,?)"
FILL_BATCH: Final = 10_000
"""Leaves read (and nodes written) at a time when step 3 computes the tree of an existing log."""


def _closed_rows(closed: Sequence[tuple[NodeId, bytes]]) -> list[tuple[int, int, bytes]]:
    return [(level, index, value) for (level, index), value in closed]


def _fill_tree_nodes_sqlite(connection: sqlite3.Connection) -> None:
    """Step 3 on SQLite: the tree of the leaves already logged, a batch of leaves at a time (O(log n) in memory)."""
    frontier = Frontier.empty()
    while True:
        rows = connection.execute(
            "SELECT leaf_index, leaf_hash FROM leaves WHERE leaf_index >= ? ORDER BY leaf_index LIMIT ?",
            (frontier.size, FILL_BATCH),
        ).fetchall()
        if not rows:
            return
        frontier, closed = _extend_checked(frontier, rows)
        connection.executemany(_INSERT_NODE, _closed_rows(closed))


async def _fill_tree_nodes_postgres(connection: Any) -> None:  # noqa: ANN401 - an asyncpg connection
    """Step 3 on PostgreSQL: as on SQLite."""
    frontier = Frontier.empty()
    while True:
        rows = await connection.fetch(
            "SELECT leaf_index, leaf_hash FROM leaves WHERE leaf_index >= $1 ORDER BY leaf_index LIMIT $2",
            frontier.size,
            FILL_BATCH,
        )
        if not rows:
            return
        frontier, closed = _extend_checked(frontier, [tuple(row) for row in rows])
        await connection.executemany(
            "INSERT INTO tree_nodes (level, node_index, hash) VALUES ($1, $2, $3)", _closed_rows(closed)
        )


def _extend_checked(frontier: Frontier, rows: Sequence[Row]) -> tuple[Frontier, list[tuple[NodeId, bytes]]]:
    closed: list[tuple[NodeId, bytes]] = []
    for index, value in rows:
        if int(index) != frontier.size:
            raise StoreUnavailable(f"audit log has a gap: index {frontier.size} is missing")
        frontier, more = frontier.append(bytes(value))
        closed += more
    return frontier, closed


GATEWAY_SCHEMA = Schema(
    "gateway",
    (
        Migration(1, "release 504c590", SCHEMA),
        Migration(2, "checkpoint time-stamps", CHECKPOINT_TIMESTAMPS_DDL),
        Migration(
            3,
            "audit tree nodes",
            TREE_NODES_DDL,
            sqlite=_fill_tree_nodes_sqlite,
            postgres=_fill_tree_nodes_postgres,
        ),
    ),
    adopts=("messages", "relays", "leaves", "checkpoints", "cosignatures", "outgoing", "settings", "dead_letters"),
)
"""`gateway.db` or the PostgreSQL database, step by step (`runtime.schema`): append a step to change it."""


class MessageState(StrEnum):
    """Where the pipeline got to with one message; the values are what `messages.state` holds."""

    ACCEPTED = "accepted"
    RELAYED = "relayed"
    DEAD_LETTERED = "dead_lettered"
    """A submission the broker dead-lettered and `gateway.deadletters` refused: only a re-drive relays it."""


class RelayState(StrEnum):
    """Where one recipient's copy got to; the values are what `relays.state` holds."""

    RELAYED = "relayed"
    RELAY_FAILED = "relay_failed"
    DELIVERY = "delivery"
    NON_DELIVERY = "non_delivery"
    RETRIEVAL = "retrieval"
    NON_RETRIEVAL = "non_retrieval"

    @classmethod
    def after(cls, evidence_type: EvidenceType) -> RelayState:
        """The state a copy is in once `evidence_type` (recipient evidence, or the gateway's on time-out) is logged."""
        if evidence_type not in RECIPIENT_EVIDENCE:
            raise ValueError(f"{evidence_type} does not move a relayed copy")
        return cls(evidence_type.lower())


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """What the gateway remembers of one message."""

    sender: str
    message_id: str
    digest: str
    message_type: str
    case_id: str
    recipients: tuple[str, ...]
    created_at: str
    expires_at: str
    state: MessageState
    received_at: str


@dataclass(frozen=True, slots=True)
class LeafRecord:
    """One stored audit leaf with the log's receipt for it."""

    index: int
    identity: str
    kind: str
    message_id: str | None
    leaf: bytes
    leaf_hash: bytes
    receipt: bytes
    appended_at: str


@dataclass(frozen=True, slots=True)
class CheckpointRecord:
    """One signed checkpoint and the cosignature lines witnesses added to it."""

    checkpoint_id: int
    tree_size: int
    note: str
    signed_at: str
    cosignatures: tuple[str, ...] = ()
    timestamps: tuple[CheckpointTimestamp, ...] = ()


@dataclass(frozen=True, slots=True)
class CheckpointTimestamp:
    """A verified RFC 3161 time-stamp over a checkpoint's signed note."""

    token: bytes
    """The time-stamp authority's answer (DER TimeStampResp), as received."""
    stamped_time: str
    """Its `genTime` (RFC 3339, UTC)."""
    authority: str


@dataclass(frozen=True, slots=True)
class RelayRecord:
    """Where one recipient's copy of a message got to."""

    sender: str
    message_id: str
    recipient: str
    state: RelayState
    updated_at: str
    expires_at: str


@dataclass(frozen=True, slots=True)
class OutgoingRecord:
    """One publication committed but not yet confirmed by the broker."""

    outgoing_id: int
    routing_key: str
    kind: str
    message_id: str
    body: bytes


@dataclass(frozen=True, slots=True)
class OutgoingBatch:
    """Publications this process took to publish, and how to forget those the broker confirmed."""

    records: list[OutgoingRecord]
    forget: Callable[[Sequence[int]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class DeadLetterRecord:
    """One dead letter held for the operator (`gateway.deadletters`)."""

    dead_letter_id: int
    identity: str
    queue: str
    reason: str
    death_count: int
    died_at: str
    kind: str
    publisher: str | None
    amqp_message_id: str | None
    sender: str | None
    message_id: str | None
    recipient: str | None
    body: bytes
    body_sha256: str
    body_length: int
    evidence: str | None
    state: str
    note: str
    recorded_at: str
    updated_at: str


_DEAD_LETTER_COLUMNS = (
    "dead_letter_id, identity, queue, reason, death_count, died_at, kind, publisher, amqp_message_id, sender, "
    "message_id, recipient, body, body_sha256, body_length, evidence, state, note, recorded_at, updated_at"
)


def _dead_letter(row: Row) -> DeadLetterRecord:
    def text(value: object) -> str | None:
        return None if value is None else str(value)

    return DeadLetterRecord(
        dead_letter_id=int(row[0]),
        identity=str(row[1]),
        queue=str(row[2]),
        reason=str(row[3]),
        death_count=int(row[4]),
        died_at=str(row[5]),
        kind=str(row[6]),
        publisher=text(row[7]),
        amqp_message_id=text(row[8]),
        sender=text(row[9]),
        message_id=text(row[10]),
        recipient=text(row[11]),
        body=bytes(row[12]),
        body_sha256=str(row[13]),
        body_length=int(row[14]),
        evidence=text(row[15]),
        state=str(row[16]),
        note=str(row[17]),
        recorded_at=str(row[18]),
        updated_at=str(row[19]),
    )


_MESSAGE_COLUMNS = (
    "sender, message_id, digest, message_type, case_id, recipients, created_at, expires_at, state, received_at"
)
_LEAF_COLUMNS = "leaf_index, identity, kind, message_id, leaf, leaf_hash, receipt, appended_at"


_PENDING_OUTGOING = "SELECT outgoing_id, routing_key, kind, message_id, body FROM outgoing ORDER BY outgoing_id LIMIT ?"


def _outgoing(rows: list[Row]) -> list[OutgoingRecord]:
    return [OutgoingRecord(int(r[0]), str(r[1]), str(r[2]), str(r[3]), bytes(r[4])) for r in rows]


def _message(row: Row) -> MessageRecord:
    return MessageRecord(
        sender=str(row[0]),
        message_id=str(row[1]),
        digest=str(row[2]),
        message_type=str(row[3]),
        case_id=str(row[4]),
        recipients=tuple(str(row[5]).split(",")) if row[5] else (),
        created_at=str(row[6]),
        expires_at=str(row[7]),
        state=MessageState(str(row[8])),
        received_at=str(row[9]),
    )


def _leaf(row: Row) -> LeafRecord:
    return LeafRecord(
        index=int(row[0]),
        identity=str(row[1]),
        kind=str(row[2]),
        message_id=None if row[3] is None else str(row[3]),
        leaf=bytes(row[4]),
        leaf_hash=bytes(row[5]),
        receipt=bytes(row[6]),
        appended_at=str(row[7]),
    )


MAX_NODE_PARAMETERS: Final = 900
"""Parameters of one query reading tree nodes (below SQLite's oldest limit, 999): more nodes, more queries."""


async def _read_nodes(connection: Connection, wanted: Collection[NodeId]) -> dict[NodeId, bytes]:
    """The stored hashes of `wanted` nodes (level 0 from `leaves`), in one query per `MAX_NODE_PARAMETERS`."""
    by_level: dict[int, list[int]] = {}
    for level, index in wanted:
        by_level.setdefault(level, []).append(index)
    found: dict[NodeId, bytes] = {}
    chunks: list[list[tuple[int, list[int]]]] = [[]]
    used = 0
    for level, indexes in sorted(by_level.items()):
        for offset in range(0, len(indexes), MAX_NODE_PARAMETERS - 1):
            part = indexes[offset : offset + MAX_NODE_PARAMETERS - 1]
            if used + len(part) + 1 > MAX_NODE_PARAMETERS:
                chunks.append([])
                used = 0
            chunks[-1].append((level, part))
            used += len(part) + 1
    for chunk in chunks:
        selects, params = [], []
        for level, indexes in chunk:
            marks = ",".join("?" * len(indexes))
            if level == 0:
                selects.append(f"SELECT 0, leaf_index, leaf_hash FROM leaves WHERE leaf_index IN ({marks})")
                params += indexes
            else:
                selects.append(
                    f"SELECT level, node_index, hash FROM tree_nodes WHERE level = ? AND node_index IN ({marks})"
                )
                params += [level, *indexes]
        if selects:
            for level, index, value in await connection.fetchall(" UNION ALL ".join(selects), params):
                found[(int(level), int(index))] = bytes(value)
    return found


class Transaction:
    """The writes allowed inside one transaction (and the reads they depend on)."""

    def __init__(self, connection: Connection) -> None:
        self._c = connection

    async def message(self, sender: str, message_id: str) -> MessageRecord | None:
        """The record of (sender, message id), if any."""
        row = await self._c.fetchone(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE sender = ? AND message_id = ?", (sender, message_id)
        )
        return None if row is None else _message(row)

    async def insert_message(self, record: MessageRecord) -> None:
        """Record a message seen for the first time."""
        await self._c.execute(
            f"INSERT INTO messages ({_MESSAGE_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                record.sender,
                record.message_id,
                record.digest,
                record.message_type,
                record.case_id,
                ",".join(record.recipients),
                record.created_at,
                record.expires_at,
                record.state.value,
                record.received_at,
            ),
        )

    async def set_message_state(self, sender: str, message_id: str, state: MessageState) -> None:
        """Move a message to `state`."""
        await self._c.execute(
            "UPDATE messages SET state = ? WHERE sender = ? AND message_id = ?", (state.value, sender, message_id)
        )

    async def set_relay_state(
        self, sender: str, message_id: str, recipient: str, state: RelayState, at: str, *, expires_at: str | None = None
    ) -> None:
        """Record where the copy for one recipient got to (and, on first record, when it expires)."""
        await self._c.execute(
            "INSERT INTO relays (sender, message_id, recipient, state, updated_at, expires_at) VALUES (?,?,?,?,?,?) "
            "ON CONFLICT (sender, message_id, recipient) "
            "DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
            (sender, message_id, recipient, state.value, at, expires_at or ""),
        )

    async def relay_state(self, sender: str, message_id: str, recipient: str) -> RelayState | None:
        """Where the copy for `recipient` got to, if it was relayed."""
        row = await self._c.fetchone(
            "SELECT state FROM relays WHERE sender = ? AND message_id = ? AND recipient = ?",
            (sender, message_id, recipient),
        )
        return None if row is None else RelayState(str(row[0]))

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run `callback` once this transaction committed (in commit order; never if it did not)."""
        self._c.after_commit(callback)

    async def next_leaf_index(self) -> int:
        """The index the next leaf appended in this transaction takes (leaves are dense from 0)."""
        row = await self._c.fetchone("SELECT MAX(leaf_index) FROM leaves")
        return 0 if row is None or row[0] is None else int(row[0]) + 1

    async def leaf_index(self, identity: str) -> int | None:
        """The index of the leaf with this identity, if it was already appended."""
        row = await self._c.fetchone("SELECT leaf_index FROM leaves WHERE identity = ?", (identity,))
        return None if row is None else int(row[0])

    async def tree_nodes(self, wanted: Collection[NodeId]) -> dict[NodeId, bytes]:
        """The hashes of `wanted` tree nodes as this transaction sees them (those not stored are left out)."""
        return await _read_nodes(self._c, wanted)

    async def last_checkpoint_size(self) -> int | None:
        """The tree size of the newest checkpoint, as this transaction sees it."""
        row = await self._c.fetchone("SELECT tree_size FROM checkpoints ORDER BY checkpoint_id DESC LIMIT 1")
        return None if row is None else int(row[0])

    async def insert_leaf(
        self, record: LeafRecord, agencies: Sequence[str], closes: Sequence[tuple[NodeId, bytes]] = ()
    ) -> None:
        """Append one leaf at `record.index` (the caller keeps indexes dense) with the tree nodes it `closes`.

        `closes` is what `protocol.merkle.Frontier.append` gives for this
        leaf: the complete subtrees ending with it, stored in this same
        transaction, so that a committed leaf never lacks its tree.
        """
        await self._c.execute(
            "INSERT INTO leaves (leaf_index, identity, kind, message_id, agencies, leaf, leaf_hash, receipt, "
            "appended_at) VALUES (?,?,?,?,?,?,?,?,?)",
            (
                record.index,
                record.identity,
                record.kind,
                record.message_id,
                "," + ",".join(agencies) + ",",
                record.leaf,
                record.leaf_hash,
                record.receipt,
                record.appended_at,
            ),
        )
        if closes:
            await self._c.executemany(_INSERT_NODE, _closed_rows(closes))

    async def enqueue(self, routing_key: str, kind: str, message_id: str, body: bytes, at: str) -> None:
        """Commit a publication to be made once this transaction commits."""
        await self._c.execute(
            "INSERT INTO outgoing (routing_key, kind, message_id, body, created_at) VALUES (?,?,?,?,?)",
            (routing_key, kind, message_id, body, at),
        )

    async def insert_checkpoint(self, tree_size: int, note: str, at: str) -> None:
        """Keep a signed checkpoint."""
        await self._c.execute(
            "INSERT INTO checkpoints (tree_size, note, signed_at) VALUES (?,?,?)", (tree_size, note, at)
        )

    async def insert_checkpoint_timestamp(self, checkpoint_id: int, stamp: CheckpointTimestamp, at: str) -> bool:
        """Keep a verified time-stamp of a checkpoint; False if that checkpoint already had one."""
        changed = await self._c.execute(
            "INSERT INTO checkpoint_timestamps (checkpoint_id, token, stamped_time, authority, recorded_at) "
            "VALUES (?,?,?,?,?) ON CONFLICT (checkpoint_id) DO NOTHING",
            (checkpoint_id, stamp.token, stamp.stamped_time, stamp.authority, at),
        )
        return changed == 1

    async def insert_cosignature(self, checkpoint_id: int, witness: str, line: str, at: str) -> bool:
        """Keep a witness's cosignature of a checkpoint; False if that witness already cosigned it."""
        changed = await self._c.execute(
            "INSERT INTO cosignatures (checkpoint_id, witness, signature_line, cosigned_at) VALUES (?,?,?,?) "
            "ON CONFLICT (checkpoint_id, witness) DO NOTHING",
            (checkpoint_id, witness, line, at),
        )
        return changed == 1

    async def setting(self, name: str) -> str | None:
        """A small piece of kept state, as this transaction sees it."""
        row = await self._c.fetchone("SELECT value FROM settings WHERE name = ?", (name,))
        return None if row is None else str(row[0])

    async def set_setting(self, name: str, value: str) -> None:
        """Keep a small piece of state (the directory version held, for example)."""
        await self._c.execute(
            "INSERT INTO settings (name, value) VALUES (?,?) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (name, value),
        )

    async def delete_outgoing(self, outgoing_ids: Sequence[int]) -> None:
        """Forget publications the broker confirmed."""
        await self._c.executemany("DELETE FROM outgoing WHERE outgoing_id = ?", [(i,) for i in outgoing_ids])

    # -- dead letters (gateway.deadletters) -------------------------------------------

    async def dead_letter_by_identity(self, identity: str) -> DeadLetterRecord | None:
        """The dead letter recorded under `identity`, if any."""
        row = await self._c.fetchone(f"SELECT {_DEAD_LETTER_COLUMNS} FROM dead_letters WHERE identity = ?", (identity,))
        return None if row is None else _dead_letter(row)

    async def insert_dead_letter(self, record: DeadLetterRecord) -> None:
        """Hold a dead letter (its id is assigned here)."""
        columns = _DEAD_LETTER_COLUMNS.removeprefix("dead_letter_id, ")
        await self._c.execute(
            f"INSERT INTO dead_letters ({columns}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                record.identity,
                record.queue,
                record.reason,
                record.death_count,
                record.died_at,
                record.kind,
                record.publisher,
                record.amqp_message_id,
                record.sender,
                record.message_id,
                record.recipient,
                record.body,
                record.body_sha256,
                record.body_length,
                record.evidence,
                record.state,
                record.note,
                record.recorded_at,
                record.updated_at,
            ),
        )

    async def set_dead_letter_state(self, dead_letter_id: int, state: str, note: str, at: str) -> None:
        """Move a dead letter to `state` (an operator's re-drive or discard)."""
        await self._c.execute(
            "UPDATE dead_letters SET state = ?, note = ?, updated_at = ? WHERE dead_letter_id = ?",
            (state, note, at, dead_letter_id),
        )

    async def delete_message_in_state(self, sender: str, message_id: str, state: MessageState) -> int:
        """Forget a message's record if it is in `state` (a dead-lettered submission being re-driven)."""
        return await self._c.execute(
            "DELETE FROM messages WHERE sender = ? AND message_id = ? AND state = ?", (sender, message_id, state.value)
        )


class GatewayStore:
    """The database of one gateway (or of several gateway processes sharing PostgreSQL)."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._read = db.reader()
        self._lookup = db.lookup()  # the hot path's short reads (by key, or one bounded batch): on the loop

    @classmethod
    async def open(cls, path: Path, *, synchronous: str = "FULL") -> GatewayStore:
        """Open (creating if needed) the SQLite database at `path`."""
        return cls(await SqliteDatabase.open(path, GATEWAY_SCHEMA, synchronous=synchronous))

    @classmethod
    async def open_postgres(cls, url: str) -> GatewayStore:
        """Open the PostgreSQL database at `url` (creating the tables if needed)."""
        return cls(await PostgresDatabase.open(url, GATEWAY_SCHEMA))

    @property
    def dialect(self) -> str:
        """`sqlite` or `postgresql`."""
        return self._db.dialect

    async def close(self) -> None:
        """Close the connections."""
        await self._db.close()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """One write transaction; commits on success, rolls back on any error."""
        async with self._db.transaction() as connection:
            yield Transaction(connection)

    # -- reads ---------------------------------------------------------------------

    async def message(self, sender: str, message_id: str) -> MessageRecord | None:
        """The record of (sender, message id), if any."""
        return await Transaction(self._lookup).message(sender, message_id)

    async def relay_state(self, sender: str, message_id: str, recipient: str) -> RelayState | None:
        """Where the copy for `recipient` got to, if it was relayed."""
        return await Transaction(self._lookup).relay_state(sender, message_id, recipient)

    async def relays_in_state(
        self,
        state: RelayState,
        *,
        expires_before: str | None = None,
        updated_before: str | None = None,
        limit: int = 500,
    ) -> list[RelayRecord]:
        """Copies in `state`, expiring or last updated before the given times, oldest first."""
        query = "SELECT sender, message_id, recipient, state, updated_at, expires_at FROM relays WHERE state = ?"
        params: list[object] = [state.value]
        if expires_before is not None:
            query += " AND expires_at != '' AND expires_at < ?"
            params.append(expires_before)
        if updated_before is not None:
            query += " AND updated_at < ?"
            params.append(updated_before)
        rows = await self._read.fetchall(query + " ORDER BY updated_at LIMIT ?", (*params, limit))
        return [
            RelayRecord(
                sender=str(row[0]),
                message_id=str(row[1]),
                recipient=str(row[2]),
                state=RelayState(str(row[3])),
                updated_at=str(row[4]),
                expires_at=str(row[5]),
            )
            for row in rows
        ]

    async def tree_size(self) -> int:
        """The number of leaves committed (they are dense from 0)."""
        row = await self._lookup.fetchone("SELECT MAX(leaf_index) FROM leaves")
        return 0 if row is None or row[0] is None else int(row[0]) + 1

    async def tree_nodes(self, wanted: Collection[NodeId]) -> dict[NodeId, bytes]:
        """The committed hashes of `wanted` tree nodes (those not stored are left out), in one or few queries."""
        return await _read_nodes(self._lookup, wanted)

    async def last_checkpoint_size(self) -> int | None:
        """The tree size of the newest checkpoint, if any."""
        return await Transaction(self._lookup).last_checkpoint_size()

    async def leaf_hashes(self) -> list[bytes]:
        """Every leaf hash in index order (for tests and tools: the gateway itself reads `tree_nodes`)."""
        rows = await self._read.fetchall("SELECT leaf_index, leaf_hash FROM leaves ORDER BY leaf_index")
        hashes: list[bytes] = []
        for expected, (index, leaf_hash) in enumerate(rows):
            if index != expected:
                raise StoreUnavailable(f"audit log has a gap: index {expected} is missing")
            hashes.append(bytes(leaf_hash))
        return hashes

    async def leaves(
        self,
        *,
        start: int = 0,
        limit: int = 100,
        message_id: str | None = None,
        agency: str | None = None,
        since: str | None = None,
    ) -> list[LeafRecord]:
        """Leaves from index `start`, filtered, oldest first."""
        clauses = ["leaf_index >= ?"]
        params: list[object] = [start]
        if message_id is not None:
            clauses.append("message_id = ?")
            params.append(message_id)
        if agency is not None:
            clauses.append("agencies LIKE ?")
            params.append(f"%,{agency},%")
        if since is not None:
            clauses.append("appended_at >= ?")
            params.append(since)
        params.append(limit)
        query = f"SELECT {_LEAF_COLUMNS} FROM leaves WHERE {' AND '.join(clauses)} ORDER BY leaf_index LIMIT ?"
        return [_leaf(row) for row in await self._read.fetchall(query, params)]

    async def leaf_by_identity(self, identity: str) -> LeafRecord | None:
        """The leaf with this identity, if logged."""
        row = await self._lookup.fetchone(f"SELECT {_LEAF_COLUMNS} FROM leaves WHERE identity = ?", (identity,))
        return None if row is None else _leaf(row)

    async def leaves_by_identity(self, identities: Sequence[str]) -> dict[str, LeafRecord]:
        """The leaves logged under any of `identities` (at most `MAX_NODE_PARAMETERS` a query), by identity."""
        found: dict[str, LeafRecord] = {}
        unique = list(dict.fromkeys(identities))
        for offset in range(0, len(unique), MAX_NODE_PARAMETERS):
            part = unique[offset : offset + MAX_NODE_PARAMETERS]
            rows = await self._lookup.fetchall(
                f"SELECT {_LEAF_COLUMNS} FROM leaves WHERE identity IN ({','.join('?' * len(part))})", part
            )
            found |= {record.identity: record for record in map(_leaf, rows)}
        return found

    async def latest_checkpoint(self) -> CheckpointRecord | None:
        """The newest checkpoint with its cosignatures, if any."""
        row = await self._read.fetchone(
            "SELECT checkpoint_id, tree_size, note, signed_at FROM checkpoints ORDER BY checkpoint_id DESC LIMIT 1"
        )
        return None if row is None else await self._with_cosignatures(row)

    async def checkpoint_at(self, tree_size: int) -> CheckpointRecord | None:
        """The newest checkpoint of one tree size, if one was signed."""
        row = await self._read.fetchone(
            "SELECT checkpoint_id, tree_size, note, signed_at FROM checkpoints WHERE tree_size = ? "
            "ORDER BY checkpoint_id DESC LIMIT 1",
            (tree_size,),
        )
        return None if row is None else await self._with_cosignatures(row)

    async def checkpoint(self, checkpoint_id: int) -> CheckpointRecord | None:
        """One checkpoint by id."""
        row = await self._read.fetchone(
            "SELECT checkpoint_id, tree_size, note, signed_at FROM checkpoints WHERE checkpoint_id = ?",
            (checkpoint_id,),
        )
        return None if row is None else await self._with_cosignatures(row)

    async def checkpoints(self, *, after_id: int = 0, limit: int = 1000) -> list[CheckpointRecord]:
        """Checkpoints in signing order, with their cosignatures."""
        rows = await self._read.fetchall(
            "SELECT checkpoint_id, tree_size, note, signed_at FROM checkpoints WHERE checkpoint_id > ? "
            "ORDER BY checkpoint_id LIMIT ?",
            (after_id, limit),
        )
        return [await self._with_cosignatures(row) for row in rows]

    async def _with_cosignatures(self, row: Row) -> CheckpointRecord:
        lines = await self._read.fetchall(
            "SELECT signature_line FROM cosignatures WHERE checkpoint_id = ? ORDER BY witness", (int(row[0]),)
        )
        stamps = await self._read.fetchall(
            "SELECT token, stamped_time, authority FROM checkpoint_timestamps WHERE checkpoint_id = ?", (int(row[0]),)
        )
        return CheckpointRecord(
            checkpoint_id=int(row[0]),
            tree_size=int(row[1]),
            note=str(row[2]),
            signed_at=str(row[3]),
            cosignatures=tuple(str(line[0]) for line in lines),
            timestamps=tuple(CheckpointTimestamp(bytes(s[0]), str(s[1]), str(s[2])) for s in stamps),
        )

    async def last_timestamp(self) -> tuple[int, str] | None:
        """The newest time-stamped checkpoint's id and when its stamp was recorded, if any."""
        row = await self._read.fetchone(
            "SELECT checkpoint_id, recorded_at FROM checkpoint_timestamps ORDER BY checkpoint_id DESC LIMIT 1"
        )
        return None if row is None else (int(row[0]), str(row[1]))

    async def pending_outgoing(self, limit: int = 256) -> list[OutgoingRecord]:
        """Publications committed and not yet confirmed, oldest first."""
        return _outgoing(await self._lookup.fetchall(_PENDING_OUTGOING, (limit,)))

    async def delete_outgoing(self, outgoing_ids: Sequence[int]) -> None:
        """Forget publications the broker confirmed."""
        async with self.transaction() as tx:
            await tx.delete_outgoing(outgoing_ids)

    @asynccontextmanager
    async def outgoing_batch(self, limit: int = 256) -> AsyncIterator[OutgoingBatch]:
        """Publications to publish, oldest first, each taken by one gateway process at a time.

        PostgreSQL (several processes may share it): the rows are claimed
        (`FOR UPDATE SKIP LOCKED`) in a transaction held while they are
        published, so another process's batch skips them, and forgotten in
        it; a process that dies lets go of its claim with its connection.
        SQLite (one process): `pending_outgoing`, then `delete_outgoing`.
        """
        if isinstance(self._db, PostgresDatabase):
            async with self._db.claiming() as connection:
                rows = await connection.fetchall(_PENDING_OUTGOING + " FOR UPDATE SKIP LOCKED", (limit,))

                async def forget(outgoing_ids: Sequence[int]) -> None:
                    await connection.executemany(
                        "DELETE FROM outgoing WHERE outgoing_id = ?", [(i,) for i in outgoing_ids]
                    )

                yield OutgoingBatch(_outgoing(rows), forget)
            return
        yield OutgoingBatch(await self.pending_outgoing(limit), self.delete_outgoing)

    async def setting(self, name: str) -> str | None:
        """A small piece of kept state."""
        row = await self._read.fetchone("SELECT value FROM settings WHERE name = ?", (name,))
        return None if row is None else str(row[0])

    # -- dead letters (gateway.deadletters) -------------------------------------------

    async def dead_letter(self, dead_letter_id: int) -> DeadLetterRecord | None:
        """One dead letter by id."""
        row = await self._read.fetchone(
            f"SELECT {_DEAD_LETTER_COLUMNS} FROM dead_letters WHERE dead_letter_id = ?", (dead_letter_id,)
        )
        return None if row is None else _dead_letter(row)

    async def dead_letter_by_identity(self, identity: str) -> DeadLetterRecord | None:
        """The dead letter recorded under `identity`, if any."""
        return await Transaction(self._read).dead_letter_by_identity(identity)

    async def dead_letters(
        self, *, state: str | None = None, after: int = 0, limit: int = 100
    ) -> list[DeadLetterRecord]:
        """Dead letters with an id above `after`, oldest first, in `state` if given."""
        query = f"SELECT {_DEAD_LETTER_COLUMNS} FROM dead_letters WHERE dead_letter_id > ?"
        params: list[object] = [after]
        if state is not None:
            query += " AND state = ?"
            params.append(state)
        rows = await self._read.fetchall(query + " ORDER BY dead_letter_id LIMIT ?", (*params, limit))
        return [_dead_letter(row) for row in rows]


__all__ = [
    "CHECKPOINT_TIMESTAMPS_DDL",
    "GATEWAY_SCHEMA",
    "SCHEMA",
    "TREE_NODES_DDL",
    "CheckpointRecord",
    "CheckpointTimestamp",
    "DeadLetterRecord",
    "GatewayStore",
    "LeafRecord",
    "MessageRecord",
    "MessageState",
    "OutgoingBatch",
    "OutgoingRecord",
    "RelayRecord",
    "RelayState",
    "Transaction",
]
