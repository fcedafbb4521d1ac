"""An agent's durable records in SQLite: outbox, inbox, evidence, idempotency keys.

Nothing is kept only in the broker. One connection, one writer at a time,
WAL journal, `synchronous=FULL` by default: a submission answered `202` and
a delivery acknowledged to the broker are on disk first.

Tables:

* `outbox`       every message this agency submitted: the document as sealed, the
                 sealed bytes (published until the broker confirms), its status;
* `idempotency`  `Idempotency-Key` -> (request digest, message id);
* `evidence`     signed evidence received about our messages, one row per identity;
* `inbox`        messages received, verified and decrypted, unique on (sender, id);
* `evidence_out` evidence this agency issued (DELIVERY, RETRIEVAL), until confirmed.

A case's messages are read across `outbox` and `inbox` by their `case_id`
(`Transaction.case_entries`); the case order and state are `agents.cases`'.

Documents at rest: the `document` column of `outbox` and `inbox` holds the
document sealed under the agency's storage key (`protocol.storage`), bound to
its row (`outbox` by message id, `inbox` by sender and message id), so a value
copied into another row does not open. Rows are sealed and opened here and
nowhere else: every record this module returns holds the plaintext. A database
from before sealing existed is sealed in place when opened (`seal_plain_rows`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

import aiosqlite

from protocol.storage import MAGIC, StorageKey
from runtime.errors import StoreUnavailable
from runtime.private_files import private_directory
from runtime.sqlite import GroupCommitter, LoopSqlite, create_private_database, restrict_database

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    message_id TEXT PRIMARY KEY,
    recipient TEXT NOT NULL,
    message_type TEXT NOT NULL,
    case_id TEXT NOT NULL,
    in_reply_to TEXT,
    document BLOB NOT NULL,
    request_sha256 TEXT NOT NULL,
    sealed BLOB NOT NULL,
    digest TEXT NOT NULL,
    status TEXT NOT NULL,
    status_reason TEXT,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    published_at TEXT,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_status ON outbox (status);
CREATE INDEX IF NOT EXISTS outbox_case ON outbox (case_id);
CREATE TABLE IF NOT EXISTS idempotency (
    idempotency_key TEXT PRIMARY KEY,
    request_sha256 TEXT NOT NULL,
    message_id TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS evidence (
    identity TEXT PRIMARY KEY,
    message_id TEXT NOT NULL,
    evidence_type TEXT NOT NULL,
    at TEXT NOT NULL,
    issuer TEXT NOT NULL,
    recipient TEXT,
    reason_code TEXT,
    reason_detail TEXT,
    signed BLOB NOT NULL,
    received_at TEXT NOT NULL,
    inclusion_proof TEXT
);
CREATE INDEX IF NOT EXISTS evidence_message ON evidence (message_id);
CREATE TABLE IF NOT EXISTS inbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    sender TEXT NOT NULL,
    message_id TEXT NOT NULL,
    digest TEXT NOT NULL,
    message_type TEXT NOT NULL,
    case_id TEXT NOT NULL,
    in_reply_to TEXT,
    document BLOB NOT NULL,
    sealed BLOB NOT NULL,
    received_at TEXT NOT NULL,
    retrieved_at TEXT,
    UNIQUE (sender, message_id)
);
CREATE INDEX IF NOT EXISTS inbox_message ON inbox (message_id);
CREATE INDEX IF NOT EXISTS inbox_case ON inbox (case_id);
CREATE TABLE IF NOT EXISTS evidence_out (
    evidence_out_id INTEGER PRIMARY KEY AUTOINCREMENT,
    identity TEXT NOT NULL UNIQUE,
    message_id TEXT NOT NULL,
    body BLOB NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS witnessed (
    tree_size INTEGER NOT NULL,
    root_hash BLOB NOT NULL,
    checkpoint_id INTEGER NOT NULL,
    note TEXT NOT NULL,
    witnessed_at TEXT NOT NULL,
    PRIMARY KEY (tree_size, root_hash)
);
CREATE TABLE IF NOT EXISTS forks (
    fork_id INTEGER PRIMARY KEY AUTOINCREMENT,
    detail TEXT NOT NULL,
    held_note TEXT NOT NULL,
    offered_note TEXT NOT NULL,
    detected_at TEXT NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    """One message this agency submitted."""

    message_id: str
    recipient: str
    message_type: str
    case_id: str
    in_reply_to: str | None
    document: bytes
    request_sha256: str
    sealed: bytes
    digest: str
    status: str
    status_reason: str | None
    created_at: str
    expires_at: str
    published_at: str | None
    updated_at: str


@dataclass(frozen=True, slots=True)
class EvidenceRecord:
    """One piece of evidence held about one of our messages."""

    identity: str
    message_id: str
    evidence_type: str
    at: str
    issuer: str
    recipient: str | None
    reason_code: str | None
    reason_detail: str | None
    signed: bytes
    received_at: str
    inclusion_proof: str | None


@dataclass(frozen=True, slots=True)
class InboxRecord:
    """One message received, verified and decrypted."""

    seq: int
    sender: str
    message_id: str
    digest: str
    message_type: str
    case_id: str
    in_reply_to: str | None
    document: bytes
    sealed: bytes
    received_at: str
    retrieved_at: str | None


@dataclass(frozen=True, slots=True)
class PendingEvidence:
    """Evidence issued by this agency and not yet confirmed by the broker."""

    evidence_out_id: int
    identity: str
    message_id: str
    body: bytes


@dataclass(frozen=True, slots=True)
class CaseEntry:
    """One message of a case as stored, without its bytes: one this agency sent, or one it received."""

    direction: Literal["sent", "received"]
    message_id: str
    sender: str
    recipient: str
    message_type: str
    status: str | None
    """Sent: the outbox status."""
    status_reason: str | None
    delivered: bool
    """Sent: the recipient signed `DELIVERY` (or evidence that implies it); received: always."""
    received_at: str | None
    retrieved_at: str | None


_CASE_ENTRIES = """
SELECT 'sent', message_id, ?1, recipient, message_type, status, status_reason,
       EXISTS (SELECT 1 FROM evidence WHERE evidence.message_id = outbox.message_id
               AND evidence_type IN ('DELIVERY', 'RETRIEVAL', 'NON_RETRIEVAL')),
       NULL, NULL
  FROM outbox WHERE case_id = ?2
UNION ALL
SELECT 'received', message_id, sender, ?1, message_type, NULL, NULL, 1, received_at, retrieved_at
  FROM inbox WHERE case_id = ?2
"""


_DOCUMENT = 5
"""The index of `document` in a row of `outbox` and of `inbox` (`SELECT *`)."""
_INBOX_DOCUMENT = 7
_MIGRATION_BATCH = 500
"""Plain rows sealed per transaction when a database from before is opened."""


def outbox_identity(message_id: str) -> dict[str, str]:
    """What an outbox document is bound to."""
    return {"record": "outbox", "message_id": message_id}


def inbox_identity(sender: str, message_id: str) -> dict[str, str]:
    """What an inbox document is bound to."""
    return {"record": "inbox", "sender": sender, "message_id": message_id}


def _outbox(row: Sequence[object], key: StorageKey) -> OutboxRecord:
    values = list(row)
    values[_DOCUMENT] = key.open(bytes(cast("bytes", values[_DOCUMENT])), outbox_identity(str(values[0])))
    return OutboxRecord(*values)  # type: ignore[arg-type]


def _evidence(row: Sequence[object]) -> EvidenceRecord:
    return EvidenceRecord(*row)  # type: ignore[arg-type]


def _inbox(row: Sequence[object], key: StorageKey) -> InboxRecord:
    values = list(row)
    identity = inbox_identity(str(values[1]), str(values[2]))
    values[_INBOX_DOCUMENT] = key.open(bytes(cast("bytes", values[_INBOX_DOCUMENT])), identity)
    return InboxRecord(*values)  # type: ignore[arg-type]


async def seal_plain_rows(db: LoopSqlite, key: StorageKey) -> int:
    """Seal in place every document written in plain (before sealing existed); returns how many.

    Then one sealed document, if any, must open: a storage key that is not the
    one the rows were sealed under (a keystore restored from before the key was
    added, say) stops the agent here instead of at the first read.
    """
    sealed = 0
    for table, columns in (("outbox", "rowid, message_id"), ("inbox", "rowid, sender, message_id")):
        while True:
            rows = await db.fetchall(
                f"SELECT {columns}, document FROM {table} WHERE substr(document, 1, ?) != ? LIMIT ?",  # noqa: S608 - constant names
                (len(MAGIC), MAGIC, _MIGRATION_BATCH),
            )
            if not rows:
                break
            await db.begin_immediate()
            try:
                await db.executemany(
                    f"UPDATE {table} SET document = ? WHERE rowid = ?",  # noqa: S608 - constant names
                    [
                        (
                            key.seal(
                                bytes(row[-1]),
                                outbox_identity(str(row[1]))
                                if table == "outbox"
                                else inbox_identity(str(row[1]), str(row[2])),
                            ),
                            row[0],
                        )
                        for row in rows
                    ],
                )
                await db.execute("COMMIT")
            except BaseException:
                await db.execute("ROLLBACK")
                raise
            sealed += len(rows)
    for query, build in (
        ("SELECT * FROM outbox LIMIT 1", _outbox),
        ("SELECT * FROM inbox LIMIT 1", _inbox),
    ):
        row = await db.fetchone(query)
        if row is not None:
            build(row, key)  # raises if the key is not the one the rows were sealed under
    if sealed:
        # The plain bytes the sealed rows replaced leave the WAL too (secure_delete cleared the pages).
        await db.execute_off_loop("PRAGMA wal_checkpoint(TRUNCATE)")
    return sealed


class Transaction:
    """Writes allowed inside one transaction."""

    def __init__(self, db: LoopSqlite, key: StorageKey) -> None:
        self._db = db
        self._key = key

    async def outbox(self, message_id: str) -> OutboxRecord | None:
        """The outbox row of `message_id`, if any."""
        row = await self._db.fetchone("SELECT * FROM outbox WHERE message_id = ?", (message_id,))
        return None if row is None else _outbox(row, self._key)

    async def insert_outbox(self, record: OutboxRecord) -> None:
        """Record a new submission (status `queued`)."""
        await self._db.execute(
            "INSERT INTO outbox VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                record.message_id,
                record.recipient,
                record.message_type,
                record.case_id,
                record.in_reply_to,
                self._key.seal(record.document, outbox_identity(record.message_id)),
                record.request_sha256,
                record.sealed,
                record.digest,
                record.status,
                record.status_reason,
                record.created_at,
                record.expires_at,
                record.published_at,
                record.updated_at,
            ),
        )

    async def idempotency(self, key: str) -> tuple[str, str] | None:
        """(request digest, message id) recorded under `key`, if any."""
        row = await self._db.fetchone(
            "SELECT request_sha256, message_id FROM idempotency WHERE idempotency_key = ?", (key,)
        )
        return None if row is None else (str(row[0]), str(row[1]))

    async def insert_idempotency(self, key: str, request_sha256: str, message_id: str, at: str) -> None:
        """Remember which message an idempotency key produced."""
        await self._db.execute("INSERT INTO idempotency VALUES (?,?,?,?)", (key, request_sha256, message_id, at))

    async def set_status(self, message_id: str, status: str, reason: str | None, at: str) -> None:
        """Move an outbox message to `status`."""
        await self._db.execute(
            "UPDATE outbox SET status = ?, status_reason = ?, updated_at = ? WHERE message_id = ?",
            (status, reason, at, message_id),
        )

    async def mark_published(self, message_id: str, at: str) -> None:
        """The broker confirmed the submission: `queued` becomes `submitted`."""
        await self._db.execute(
            "UPDATE outbox SET published_at = COALESCE(published_at, ?), updated_at = ?, "
            "status = CASE WHEN status = 'queued' THEN 'submitted' ELSE status END WHERE message_id = ?",
            (at, at, message_id),
        )

    async def insert_evidence(self, record: EvidenceRecord) -> bool:
        """Keep evidence; False if evidence with this identity is already held."""
        inserted = await self._db.execute(
            "INSERT OR IGNORE INTO evidence VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                record.identity,
                record.message_id,
                record.evidence_type,
                record.at,
                record.issuer,
                record.recipient,
                record.reason_code,
                record.reason_detail,
                record.signed,
                record.received_at,
                record.inclusion_proof,
            ),
        )
        return inserted == 1

    async def evidence_types(self, message_id: str) -> list[str]:
        """Types of evidence held about `message_id`."""
        rows = await self._db.fetchall("SELECT evidence_type FROM evidence WHERE message_id = ?", (message_id,))
        return [str(row[0]) for row in rows]

    async def inbox_entry(self, sender: str, message_id: str) -> InboxRecord | None:
        """The inbox row of (sender, message id), if any."""
        row = await self._db.fetchone("SELECT * FROM inbox WHERE sender = ? AND message_id = ?", (sender, message_id))
        return None if row is None else _inbox(row, self._key)

    async def insert_inbox(self, record: InboxRecord) -> None:
        """Keep a received message (its `seq` is assigned here)."""
        await self._db.execute(
            "INSERT INTO inbox (sender, message_id, digest, message_type, case_id, in_reply_to, document, sealed, "
            "received_at, retrieved_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                record.sender,
                record.message_id,
                record.digest,
                record.message_type,
                record.case_id,
                record.in_reply_to,
                self._key.seal(record.document, inbox_identity(record.sender, record.message_id)),
                record.sealed,
                record.received_at,
                record.retrieved_at,
            ),
        )

    async def mark_retrieved(self, seq: int, at: str) -> None:
        """The agency system took the message."""
        await self._db.execute("UPDATE inbox SET retrieved_at = COALESCE(retrieved_at, ?) WHERE seq = ?", (at, seq))

    async def set_inclusion_proof(self, identity: str, proof: str) -> None:
        """Keep the verified inclusion proof (JSON) of one piece of evidence."""
        await self._db.execute("UPDATE evidence SET inclusion_proof = ? WHERE identity = ?", (proof, identity))

    async def insert_witnessed(self, tree_size: int, root_hash: bytes, checkpoint_id: int, note: str, at: str) -> None:
        """Remember a checkpoint this agent verified and cosigned, as a witness."""
        await self._db.execute(
            "INSERT INTO witnessed VALUES (?,?,?,?,?) ON CONFLICT (tree_size, root_hash) DO NOTHING",
            (tree_size, root_hash, checkpoint_id, note, at),
        )

    async def insert_fork(self, detail: str, held_note: str, offered_note: str, at: str) -> None:
        """Keep the proof of a forked log: the checkpoint held and the one that contradicts it."""
        await self._db.execute(
            "INSERT INTO forks (detail, held_note, offered_note, detected_at) VALUES (?,?,?,?)",
            (detail, held_note, offered_note, at),
        )

    async def delete_pending_evidence(self, ids: Sequence[int]) -> None:
        """Forget issued evidence the broker confirmed."""
        await self._db.executemany("DELETE FROM evidence_out WHERE evidence_out_id = ?", [(i,) for i in ids])

    async def enqueue_evidence(self, identity: str, message_id: str, body: bytes, at: str) -> None:
        """Commit evidence this agency issued, for publication (once per identity)."""
        await self._db.execute(
            "INSERT OR IGNORE INTO evidence_out (identity, message_id, body, created_at) VALUES (?,?,?,?)",
            (identity, message_id, body, at),
        )

    async def case_entries(self, case_id: str, agency: str) -> list[CaseEntry]:
        """Every message of `case_id` this agency (`agency`) sent or received, without bytes, in no order."""
        rows = await self._db.fetchall(_CASE_ENTRIES, (agency, case_id))
        return [
            CaseEntry(
                direction="sent" if row[0] == "sent" else "received",
                message_id=str(row[1]),
                sender=str(row[2]),
                recipient=str(row[3]),
                message_type=str(row[4]),
                status=None if row[5] is None else str(row[5]),
                status_reason=None if row[6] is None else str(row[6]),
                delivered=bool(row[7]),
                received_at=None if row[8] is None else str(row[8]),
                retrieved_at=None if row[9] is None else str(row[9]),
            )
            for row in rows
        ]

    async def case_document(self, entry: CaseEntry) -> bytes:
        """The document bytes of one message of a case, as sealed or as received."""
        if entry.direction == "sent":
            query, params = "SELECT document FROM outbox WHERE message_id = ?", [entry.message_id]
            identity = outbox_identity(entry.message_id)
        else:
            query, params = (
                "SELECT document FROM inbox WHERE sender = ? AND message_id = ?",
                [entry.sender, entry.message_id],
            )
            identity = inbox_identity(entry.sender, entry.message_id)
        row = await self._db.fetchone(query, params)
        if row is None:
            raise StoreUnavailable(f"the document of {entry.direction} message {entry.message_id} is missing")
        return self._key.open(bytes(row[0]), identity)


class AgentStore:
    """The SQLite database of one agent."""

    def __init__(
        self, db: LoopSqlite, relay_reader: LoopSqlite, scan_reader: aiosqlite.Connection, storage_key: StorageKey
    ) -> None:
        self._db = db
        self._key = storage_key
        # Writes share COMMITs under load (`agents.groupcommit`); their statements run on the event loop,
        # each COMMIT in a thread. What the relays publish is read on a connection of its own, which sees
        # committed rows only (WAL), never a series still open: one bounded batch at a time, on the loop too.
        # Aggregates over whole tables (`agents.metrics`) run in aiosqlite's thread, off the loop.
        self._committer = GroupCommitter(db)
        self._relay_db = relay_reader
        self._scan_db = scan_reader

    @classmethod
    async def open(cls, path: Path, *, storage_key: StorageKey, synchronous: str = "FULL") -> AgentStore:
        """Open (creating if needed) the database at `path`: 0600, with its WAL, in a 0700 directory."""
        try:
            private_directory(path.parent)
            create_private_database(path)
            db = await LoopSqlite.connect(path)
            # Rows rewritten or deleted leave no old bytes in free pages.
            await db.execute("PRAGMA secure_delete=ON")
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute(f"PRAGMA synchronous={synchronous}")
            await db.executescript(_SCHEMA)
            await seal_plain_rows(db, storage_key)
            relay_reader = await LoopSqlite.connect(path)
            scan_reader = await aiosqlite.connect(path, isolation_level=None)
            restrict_database(path)
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnavailable(f"cannot open agent database {path}: {exc}") from exc
        return cls(db, relay_reader, scan_reader, storage_key)

    @property
    def storage_key(self) -> StorageKey:
        """The key this store seals documents under: the agent's other stores use it too."""
        return self._key

    async def close(self) -> None:
        """Close the connections."""
        await self._scan_db.close()
        await self._relay_db.close()
        await self._db.close()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """One write transaction; durable once the block is left (its COMMIT possibly shared), undone alone on error."""
        async with self._committer.transaction():
            yield Transaction(self._db, self._key)

    # -- reads --------------------------------------------------------------------------

    async def outbox(self, message_id: str) -> OutboxRecord | None:
        """The outbox row of `message_id`, if any."""
        row = await self._db.fetchone("SELECT * FROM outbox WHERE message_id = ?", (message_id,))
        return None if row is None else _outbox(row, self._key)

    async def queued(self, limit: int = 100) -> list[OutboxRecord]:
        """Submissions not yet confirmed by the broker, oldest first."""
        rows = await self._relay_db.fetchall(
            "SELECT * FROM outbox WHERE status = 'queued' ORDER BY created_at LIMIT ?", (limit,)
        )
        return [_outbox(row, self._key) for row in rows]

    async def evidence_for(self, message_id: str) -> list[EvidenceRecord]:
        """Evidence held about `message_id`, in the order it was issued."""
        rows = await self._db.fetchall(
            "SELECT * FROM evidence WHERE message_id = ? ORDER BY at, received_at", (message_id,)
        )
        return [_evidence(row) for row in rows]

    async def inbox_after(self, after: int, limit: int) -> list[InboxRecord]:
        """Received messages with `seq` > `after`, oldest first."""
        rows = await self._db.fetchall("SELECT * FROM inbox WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit))
        return [_inbox(row, self._key) for row in rows]

    async def inbox_entry_of(self, sender: str, message_id: str) -> InboxRecord | None:
        """The inbox row of (sender, message id), if any."""
        row = await self._db.fetchone("SELECT * FROM inbox WHERE sender = ? AND message_id = ?", (sender, message_id))
        return None if row is None else _inbox(row, self._key)

    async def inbox_by_message_id(self, message_id: str) -> list[InboxRecord]:
        """Received messages with this id (from any sender)."""
        rows = await self._db.fetchall("SELECT * FROM inbox WHERE message_id = ?", (message_id,))
        return [_inbox(row, self._key) for row in rows]

    async def evidence_without_proof(self, limit: int = 500) -> list[EvidenceRecord]:
        """Evidence held without a verified inclusion proof yet, oldest first."""
        rows = await self._db.fetchall(
            "SELECT * FROM evidence WHERE inclusion_proof IS NULL ORDER BY received_at LIMIT ?", (limit,)
        )
        return [_evidence(row) for row in rows]

    async def evidence_for_recovery(self, limit: int = 20_000) -> list[EvidenceRecord]:
        """The most recent evidence held, newest first: the leaves a recovering gateway may have lost."""
        rows = await self._db.fetchall("SELECT * FROM evidence ORDER BY received_at DESC LIMIT ?", (limit,))
        return [_evidence(row) for row in rows]

    async def latest_witnessed(self) -> tuple[int, bytes, str] | None:
        """The largest checkpoint this agent witnessed: (size, root hash, note)."""
        row = await self._db.fetchone(
            "SELECT tree_size, root_hash, note FROM witnessed ORDER BY tree_size DESC, witnessed_at DESC LIMIT 1"
        )
        return None if row is None else (int(row[0]), bytes(row[1]), str(row[2]))

    async def witnessed_root(self, tree_size: int) -> bytes | None:
        """The root this agent witnessed at `tree_size`, if any."""
        row = await self._db.fetchone("SELECT root_hash FROM witnessed WHERE tree_size = ? LIMIT 1", (tree_size,))
        return None if row is None else bytes(row[0])

    async def fork_count(self) -> int:
        """How many forks of the gateway's log this agent has proof of."""
        row = await self._db.fetchone("SELECT COUNT(*) FROM forks")
        return 0 if row is None else int(row[0])

    async def pending_evidence(self, limit: int = 256) -> list[PendingEvidence]:
        """Evidence issued and not yet confirmed, oldest first."""
        rows = await self._relay_db.fetchall(
            "SELECT evidence_out_id, identity, message_id, body FROM evidence_out ORDER BY evidence_out_id LIMIT ?",
            (limit,),
        )
        return [PendingEvidence(int(r[0]), str(r[1]), str(r[2]), bytes(r[3])) for r in rows]


__all__ = [
    "AgentStore",
    "CaseEntry",
    "EvidenceRecord",
    "InboxRecord",
    "OutboxRecord",
    "PendingEvidence",
    "Transaction",
    "inbox_identity",
    "outbox_identity",
    "seal_plain_rows",
]
