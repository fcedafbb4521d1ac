"""The gateway's durable records in SQLite: messages seen, audit leaves, checkpoints, outgoing.

Nothing is kept only in the broker. One connection, one writer at a time
(`transaction()` holds a lock), WAL journal and `synchronous=FULL` so that a
committed transaction survives a crash before the ingress delivery is acked.

Tables:

* `messages`    one row per (sender, message id) accepted or refused: replay
                detection and where the pipeline got to;
* `relays`      one row per (message, recipient): relayed, delivered, retrieved;
* `leaves`      the audit log, append-only, `identity` unique (idempotent append);
* `checkpoints` signed tree heads;
* `outgoing`    evidence and messages committed for publication, deleted once
                the broker confirmed them (the gateway's outbox).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

from gateway.errors import StoreUnavailable

_SCHEMA = """
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
    PRIMARY KEY (sender, message_id, recipient)
);
CREATE TABLE IF NOT EXISTS leaves (
    leaf_index INTEGER PRIMARY KEY,
    identity TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    message_id TEXT,
    agencies TEXT NOT NULL,
    leaf BLOB NOT NULL,
    leaf_hash BLOB NOT NULL,
    appended_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS leaves_message ON leaves (message_id);
CREATE TABLE IF NOT EXISTS checkpoints (
    tree_size INTEGER PRIMARY KEY,
    note TEXT NOT NULL,
    signed_at TEXT NOT NULL
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
"""


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
    state: str
    received_at: str


@dataclass(frozen=True, slots=True)
class LeafRecord:
    """One stored audit leaf."""

    index: int
    identity: str
    kind: str
    message_id: str | None
    leaf: bytes
    leaf_hash: bytes
    appended_at: str


@dataclass(frozen=True, slots=True)
class OutgoingRecord:
    """One publication committed but not yet confirmed by the broker."""

    outgoing_id: int
    routing_key: str
    kind: str
    message_id: str
    body: bytes


class Transaction:
    """The operations allowed inside one write transaction."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    async def message(self, sender: str, message_id: str) -> MessageRecord | None:
        """The record of (sender, message id), if any."""
        return await _fetch_message(self._db, sender, message_id)

    async def insert_message(self, record: MessageRecord) -> None:
        """Record a message seen for the first time."""
        await self._db.execute(
            "INSERT INTO messages VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                record.sender,
                record.message_id,
                record.digest,
                record.message_type,
                record.case_id,
                ",".join(record.recipients),
                record.created_at,
                record.expires_at,
                record.state,
                record.received_at,
            ),
        )

    async def set_message_state(self, sender: str, message_id: str, state: str) -> None:
        """Move a message to `state`."""
        await self._db.execute(
            "UPDATE messages SET state = ? WHERE sender = ? AND message_id = ?", (state, sender, message_id)
        )

    async def set_relay_state(self, sender: str, message_id: str, recipient: str, state: str, at: str) -> None:
        """Record where the copy for one recipient got to."""
        await self._db.execute(
            "INSERT INTO relays VALUES (?,?,?,?,?) ON CONFLICT (sender, message_id, recipient) "
            "DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
            (sender, message_id, recipient, state, at),
        )

    async def leaf_index(self, identity: str) -> int | None:
        """The index of the leaf with this identity, if it was already appended."""
        async with self._db.execute("SELECT leaf_index FROM leaves WHERE identity = ?", (identity,)) as cursor:
            row = await cursor.fetchone()
        return None if row is None else int(row[0])

    async def insert_leaf(self, record: LeafRecord, agencies: Sequence[str]) -> None:
        """Append one leaf at `record.index` (the caller keeps indexes dense)."""
        await self._db.execute(
            "INSERT INTO leaves VALUES (?,?,?,?,?,?,?,?)",
            (
                record.index,
                record.identity,
                record.kind,
                record.message_id,
                "," + ",".join(agencies) + ",",
                record.leaf,
                record.leaf_hash,
                record.appended_at,
            ),
        )

    async def enqueue(self, routing_key: str, kind: str, message_id: str, body: bytes, at: str) -> None:
        """Commit a publication to be made once this transaction commits."""
        await self._db.execute(
            "INSERT INTO outgoing (routing_key, kind, message_id, body, created_at) VALUES (?,?,?,?,?)",
            (routing_key, kind, message_id, body, at),
        )

    async def insert_checkpoint(self, tree_size: int, note: str, at: str) -> None:
        """Keep a signed checkpoint (one per tree size)."""
        await self._db.execute("INSERT OR IGNORE INTO checkpoints VALUES (?,?,?)", (tree_size, note, at))

    async def set_setting(self, name: str, value: str) -> None:
        """Keep a small piece of state (the directory version held, for example)."""
        await self._db.execute(
            "INSERT INTO settings VALUES (?,?) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (name, value),
        )


async def _fetch_message(db: aiosqlite.Connection, sender: str, message_id: str) -> MessageRecord | None:
    async with db.execute("SELECT * FROM messages WHERE sender = ? AND message_id = ?", (sender, message_id)) as cursor:
        row = await cursor.fetchone()
    if row is None:
        return None
    return MessageRecord(
        sender=row[0],
        message_id=row[1],
        digest=row[2],
        message_type=row[3],
        case_id=row[4],
        recipients=tuple(row[5].split(",")) if row[5] else (),
        created_at=row[6],
        expires_at=row[7],
        state=row[8],
        received_at=row[9],
    )


def _leaf(row: Sequence[Any]) -> LeafRecord:
    return LeafRecord(
        index=int(row[0]),
        identity=str(row[1]),
        kind=str(row[2]),
        message_id=None if row[3] is None else str(row[3]),
        leaf=bytes(row[5]),
        leaf_hash=bytes(row[6]),
        appended_at=str(row[7]),
    )


class GatewayStore:
    """The SQLite database of one gateway."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db
        self._write_lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path, *, synchronous: str = "FULL") -> GatewayStore:
        """Open (creating if needed) the database at `path`."""
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            db = await aiosqlite.connect(path, isolation_level=None)
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute(f"PRAGMA synchronous={synchronous}")
            await db.execute("PRAGMA foreign_keys=ON")
            await db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open gateway database {path}: {exc}") from exc
        return cls(db)

    async def close(self) -> None:
        """Close the connection."""
        await self._db.close()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """One write transaction; commits on success, rolls back on any error."""
        async with self._write_lock:
            try:
                await self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"cannot begin a transaction: {exc}") from exc
            try:
                yield Transaction(self._db)
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise
            try:
                await self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                await self._db.execute("ROLLBACK")
                raise StoreUnavailable(f"cannot commit: {exc}") from exc

    # -- reads ---------------------------------------------------------------------

    async def message(self, sender: str, message_id: str) -> MessageRecord | None:
        """The record of (sender, message id), if any."""
        return await _fetch_message(self._db, sender, message_id)

    async def relay_state(self, sender: str, message_id: str, recipient: str) -> str | None:
        """Where the copy for `recipient` got to, if it was relayed."""
        async with self._db.execute(
            "SELECT state FROM relays WHERE sender = ? AND message_id = ? AND recipient = ?",
            (sender, message_id, recipient),
        ) as cursor:
            row = await cursor.fetchone()
        return None if row is None else str(row[0])

    async def leaf_hashes(self) -> list[bytes]:
        """Every leaf hash in index order (to rebuild the tree at start-up)."""
        async with self._db.execute("SELECT leaf_index, leaf_hash FROM leaves ORDER BY leaf_index") as cursor:
            rows = await cursor.fetchall()
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
        query = f"SELECT * FROM leaves WHERE {' AND '.join(clauses)} ORDER BY leaf_index LIMIT ?"  # noqa: S608 - clauses are fixed strings
        async with self._db.execute(query, params) as cursor:
            rows = await cursor.fetchall()
        return [_leaf(tuple(row)) for row in rows]

    async def latest_checkpoint(self) -> tuple[int, str] | None:
        """The newest checkpoint (size, note), if any."""
        async with self._db.execute(
            "SELECT tree_size, note FROM checkpoints ORDER BY tree_size DESC LIMIT 1"
        ) as cursor:
            row = await cursor.fetchone()
        return None if row is None else (int(row[0]), str(row[1]))

    async def checkpoint_at(self, tree_size: int) -> str | None:
        """The checkpoint note of one tree size, if one was signed."""
        async with self._db.execute("SELECT note FROM checkpoints WHERE tree_size = ?", (tree_size,)) as cursor:
            row = await cursor.fetchone()
        return None if row is None else str(row[0])

    async def pending_outgoing(self, limit: int = 256) -> list[OutgoingRecord]:
        """Publications committed and not yet confirmed, oldest first."""
        async with self._db.execute(
            "SELECT outgoing_id, routing_key, kind, message_id, body FROM outgoing ORDER BY outgoing_id LIMIT ?",
            (limit,),
        ) as cursor:
            rows = await cursor.fetchall()
        return [OutgoingRecord(int(r[0]), str(r[1]), str(r[2]), str(r[3]), bytes(r[4])) for r in rows]

    async def delete_outgoing(self, outgoing_ids: Sequence[int]) -> None:
        """Forget publications the broker confirmed."""
        async with self.transaction():
            await self._db.executemany("DELETE FROM outgoing WHERE outgoing_id = ?", [(i,) for i in outgoing_ids])

    async def setting(self, name: str) -> str | None:
        """A small piece of kept state."""
        async with self._db.execute("SELECT value FROM settings WHERE name = ?", (name,)) as cursor:
            row = await cursor.fetchone()
        return None if row is None else str(row[0])


__all__ = ["GatewayStore", "LeafRecord", "MessageRecord", "OutgoingRecord", "Transaction"]
