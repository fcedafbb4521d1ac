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
* `evidence_out` evidence this agency issued (DELIVERY, RETRIEVAL), until confirmed;
* `webhook_subscriptions`, `webhook_outbox`, `webhook_deadline_notices`: the case
                 systems' webhook subscriptions (secret sealed), the events each is
                 still owed (written in the transaction of the change that caused
                 them), and the deadlines already announced (`agents.webhooks`).
* `content_proofs` the sender's signed content statement of every message sent or
                 received (`CONTENT_PROOF_TABLES_DDL`): with the sealed header kept in
                 `outbox.sealed` / `inbox.sealed`, what proves who sent exactly which
                 document, and when (the evidence bundle, `agents.bundles`).

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

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, cast

import aiosqlite

from agents.status import FINAL_NEGATIVE
from protocol.connectivity import CONNECTIVITY_TEST
from protocol.storage import MAGIC, StorageKey
from runtime.errors import StoreUnavailable
from runtime.private_files import private_directory
from runtime.schema import Migration, Schema, migrate_sqlite
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

CONTENT_PROOF_TABLES_DDL = """
CREATE TABLE IF NOT EXISTS content_proofs (
    sender TEXT NOT NULL,
    message_id TEXT NOT NULL,
    direction TEXT NOT NULL,
    statement BLOB NOT NULL,
    signature BLOB NOT NULL,
    stored_at TEXT NOT NULL,
    PRIMARY KEY (sender, message_id)
);
"""
"""The sender's signed content statement of every message sent or received, kept with it (proof of origin).

The statement holds the attachment keys, so it is sealed at rest like the documents (`content_proof_identity`).
"""

LIST_TABLES_DDL = """
CREATE TABLE IF NOT EXISTS outbox_order (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS case_index (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    case_id TEXT NOT NULL UNIQUE,
    counterpart TEXT NOT NULL,
    stale INTEGER NOT NULL DEFAULT 1,
    held INTEGER NOT NULL DEFAULT 0,
    state TEXT,
    role TEXT,
    marking INTEGER NOT NULL DEFAULT 3,
    next_due TEXT,
    updated_at TEXT
);
CREATE INDEX IF NOT EXISTS outbox_message_type ON outbox (message_type);
CREATE INDEX IF NOT EXISTS outbox_created ON outbox (created_at);
CREATE INDEX IF NOT EXISTS inbox_message_type ON inbox (message_type);
CREATE INDEX IF NOT EXISTS inbox_unacknowledged ON inbox (seq) WHERE retrieved_at IS NULL;
CREATE INDEX IF NOT EXISTS case_index_state ON case_index (state);
CREATE INDEX IF NOT EXISTS case_index_counterpart ON case_index (counterpart);
CREATE INDEX IF NOT EXISTS case_index_next_due ON case_index (next_due);
CREATE INDEX IF NOT EXISTS case_index_stale ON case_index (seq) WHERE stale = 1;
"""
"""The listings (`agents.lists`): each a keyset on a sequence that only grows, assigned in the writer's
transaction, so that rows committed later always sort after every row already visible.

* `outbox_order` numbers the sent messages (`outbox` has no sequence of its own);
* `case_index` numbers the cases in the order this agency first held a message of them, with what the list
  filters on: the counterpart, and the fold's state, role, highest marking (`Clearance` rank) and earliest
  open deadline (`next_due`, a UTC day), written by `agents.lists.refresh_case_index` for each `stale` row.
  A message stored in the case, or one of its sent messages ending refused, marks the row stale.
"""

CONNECTIVITY_TABLES_DDL = """
CREATE TABLE IF NOT EXISTS connectivity_tests (
    test_id TEXT PRIMARY KEY,
    peer TEXT NOT NULL,
    ping_id TEXT NOT NULL UNIQUE,
    started_at TEXT NOT NULL,
    deadline TEXT NOT NULL,
    pong_id TEXT,
    pong_digest TEXT,
    pong_sent_at TEXT,
    pong_received_at TEXT,
    pong_evidence BLOB
);
CREATE TABLE IF NOT EXISTS connectivity_received (
    sender TEXT NOT NULL,
    message_id TEXT NOT NULL,
    digest TEXT NOT NULL,
    kind TEXT NOT NULL,
    test_id TEXT NOT NULL,
    received_at TEXT NOT NULL,
    PRIMARY KEY (sender, message_id)
);
"""
"""Connectivity tests (`agents.connectivity`): each ping this agency sent (its pong once back, with the evidence
this agency signed for it), and every probe received (replay detection). Pings and pongs travel through the
outbox like any message, with their evidence in `evidence`, but are never numbered in `outbox_order` nor
indexed as cases, and never enter the inbox."""

_INDEX_EXISTING_OUTBOX = """
INSERT OR IGNORE INTO outbox_order (message_id)
SELECT message_id FROM outbox WHERE message_type != 'CONNECTIVITY_TEST' ORDER BY created_at, rowid
"""
_INDEX_EXISTING_CASES = """
INSERT OR IGNORE INTO case_index (case_id, counterpart)
SELECT case_id, counterpart FROM (
    SELECT case_id, recipient AS counterpart, created_at AS at FROM outbox WHERE message_type != 'CONNECTIVITY_TEST'
    UNION ALL
    SELECT case_id, sender, received_at FROM inbox
) ORDER BY at
"""
_MARK_CASE = """
INSERT INTO case_index (case_id, counterpart) VALUES (?, ?) ON CONFLICT (case_id) DO UPDATE SET stale = 1
"""


WEBHOOK_TABLES_DDL = """
CREATE TABLE IF NOT EXISTS webhook_subscriptions (
    subscription_id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    event_types TEXT NOT NULL,
    secret BLOB NOT NULL,
    owner_sha256 TEXT NOT NULL,
    description TEXT,
    created_at TEXT NOT NULL,
    state TEXT NOT NULL,
    state_reason TEXT,
    state_changed_at TEXT,
    failing_since TEXT,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT,
    last_error TEXT,
    last_success_at TEXT,
    delivered INTEGER NOT NULL DEFAULT 0,
    failed_attempts INTEGER NOT NULL DEFAULT 0,
    dropped INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS webhook_subscriptions_owner ON webhook_subscriptions (owner_sha256);
CREATE TABLE IF NOT EXISTS webhook_outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    subscription_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    level INTEGER NOT NULL,
    payload BLOB NOT NULL,
    created_at TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    UNIQUE (subscription_id, event_id)
);
CREATE INDEX IF NOT EXISTS webhook_outbox_subscription ON webhook_outbox (subscription_id, seq);
CREATE TABLE IF NOT EXISTS webhook_deadline_notices (
    subscription_id TEXT NOT NULL,
    deadline TEXT NOT NULL,
    phase TEXT NOT NULL,
    noticed_at TEXT NOT NULL,
    PRIMARY KEY (subscription_id, deadline, phase)
);
"""
"""Webhook subscriptions and their durable outbox (`agents.webhooks`): run after `_SCHEMA`, idempotent."""


@dataclass(frozen=True, slots=True)
class WebhookSubscription:
    """One case system's subscription, its secret opened; its delivery state."""

    subscription_id: str
    url: str
    event_types: tuple[str, ...]
    secret: bytes
    owner_sha256: str
    description: str | None
    created_at: str
    state: str
    """`active` or `suspended`."""
    state_reason: str | None
    state_changed_at: str | None
    failing_since: str | None
    consecutive_failures: int
    next_attempt_at: str | None
    last_error: str | None
    last_success_at: str | None
    delivered: int
    failed_attempts: int
    dropped: int
    pending: int = 0
    """Events held for it, not yet delivered."""


@dataclass(frozen=True, slots=True)
class WebhookDelivery:
    """One event owed to one subscription: the exact body to send, signed at each attempt."""

    seq: int
    subscription_id: str
    event_id: str
    event_type: str
    level: int
    """The clearance (`agents.guard.Clearance`) a reader of the event's subject needs."""
    payload: bytes
    created_at: str
    attempts: int


def webhook_secret_identity(subscription_id: str) -> dict[str, str]:
    """What a subscription's sealed secret is bound to."""
    return {"record": "webhook_subscription", "subscription_id": subscription_id}


def _event_types_column(types: Sequence[str]) -> str:
    """Stored as ` a b c `, so that `instr(event_types, ' a ')` selects the subscribers of `a`."""
    return " " + " ".join(types) + " "


_SUBSCRIPTION_COLUMNS = (
    "s.subscription_id, url, event_types, secret, owner_sha256, description, s.created_at, state, state_reason, "
    "state_changed_at, failing_since, consecutive_failures, next_attempt_at, last_error, last_success_at, "
    "delivered, failed_attempts, dropped, "
    "(SELECT COUNT(*) FROM webhook_outbox o WHERE o.subscription_id = s.subscription_id)"
)


def _subscription(row: Sequence[object], key: StorageKey) -> WebhookSubscription:
    values = list(row)
    values[2] = tuple(str(values[2]).split())
    values[3] = key.open(bytes(cast("bytes", values[3])), webhook_secret_identity(str(values[0])))
    return WebhookSubscription(*values)  # type: ignore[arg-type]


RETENTION_DDL = """
ALTER TABLE outbox ADD COLUMN content_purged_at TEXT;
ALTER TABLE inbox ADD COLUMN content_purged_at TEXT;
CREATE TABLE IF NOT EXISTS purges (
    purge_id INTEGER PRIMARY KEY AUTOINCREMENT,
    case_id TEXT NOT NULL,
    direction TEXT NOT NULL,
    sender TEXT NOT NULL,
    recipient TEXT NOT NULL,
    message_id TEXT NOT NULL,
    message_type TEXT NOT NULL,
    classification TEXT NOT NULL,
    attachment_sha256 TEXT NOT NULL,
    case_closed_at TEXT NOT NULL,
    retention_days INTEGER NOT NULL,
    purged_at TEXT NOT NULL,
    attachments_purged_at TEXT
);
CREATE INDEX IF NOT EXISTS purges_message ON purges (message_id);
CREATE INDEX IF NOT EXISTS purges_attachments ON purges (attachments_purged_at)
"""
"""Version 2: retention (`agents.retention`). A purged row keeps its metadata and digest, loses `document`
and `sealed` (emptied), and says when (`content_purged_at`); `purges` is the trail of what was purged, when,
under which policy: one row per message."""


def _index_existing_rows(connection: sqlite3.Connection) -> None:
    """Number the sent messages and cases a database held before the listings existed (step 4, tables empty).

    Sent messages in the order they were created, cases in the order of their first message; each case is
    marked stale, so the first case list folds it.
    """
    connection.execute(_INDEX_EXISTING_OUTBOX)
    connection.execute(_INDEX_EXISTING_CASES)


AGENT_SCHEMA = Schema(
    "agent",
    (
        Migration(1, "release 504c590", _SCHEMA),
        Migration(2, "retention", RETENTION_DDL),
        Migration(3, "webhooks", WEBHOOK_TABLES_DDL),
        Migration(
            4, "lists and connectivity tests", LIST_TABLES_DDL + CONNECTIVITY_TABLES_DDL, sqlite=_index_existing_rows
        ),
        Migration(5, "proof of origin", CONTENT_PROOF_TABLES_DDL),
    ),
    adopts=("outbox", "inbox", "evidence", "idempotency", "evidence_out", "witnessed", "forks"),
)
"""`agent.db`, step by step (`runtime.schema`): append a step to change it."""


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
    content_purged_at: str | None = None
    """Set when retention purged the document and the sealed bytes (`document` is then empty)."""


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
    content_purged_at: str | None = None
    """Set when retention purged the document and the sealed bytes (`document` is then empty)."""


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
    stored_at: str | None = None
    """When this agent stored it: sent, its submission; received, its arrival."""
    content_purged_at: str | None = None
    """When retention purged its content, if it did."""


@dataclass(frozen=True, slots=True)
class ConnectivityTest:
    """One connectivity test this agency started: its ping and, once back, its pong."""

    test_id: str
    peer: str
    ping_id: str
    started_at: str
    deadline: str
    pong_id: str | None = None
    pong_digest: str | None = None
    pong_sent_at: str | None = None
    """The peer's clock, as its signed pong says."""
    pong_received_at: str | None = None
    pong_evidence: bytes | None = None
    """JSON list of the signed evidence this agency issued for the pong (DELIVERY, RETRIEVAL)."""


_TEST_COLUMNS: Final = (
    "test_id, peer, ping_id, started_at, deadline, pong_id, pong_digest, pong_sent_at, pong_received_at, pong_evidence"
)


@dataclass(frozen=True, slots=True)
class CaseSummary:
    """One row of `case_index`: a case as the case list filters and shows it."""

    seq: int
    case_id: str
    counterpart: str
    state: str | None
    role: str | None
    marking: int
    next_due: str | None
    updated_at: str | None


@dataclass(frozen=True, slots=True)
class SentFilter:
    """What `GET /v1/messages` keeps: every field given must match (statuses: any of them)."""

    statuses: tuple[str, ...] = ()
    case_id: str | None = None
    message_type: str | None = None
    created_from: str | None = None
    """Inclusive, a `format_timestamp` string (compared as text: one format, one order)."""
    created_before: str | None = None
    """Exclusive."""


@dataclass(frozen=True, slots=True)
class InboxFilter:
    """What `GET /v1/inbox` keeps."""

    unacknowledged: bool = False
    message_type: str | None = None
    case_id: str | None = None


@dataclass(frozen=True, slots=True)
class CaseFilter:
    """What `GET /v1/cases` keeps (`max_marking`: the token's clearance rank)."""

    max_marking: int
    states: tuple[str, ...] = ()
    counterpart: str | None = None
    due_by: str | None = None
    """A deadline open and due on or before this UTC day (`YYYY-MM-DD`)."""
    overdue_on: str | None = None
    """A deadline open and due before this UTC day: overdue on it."""


_CASE_ENTRIES = """
SELECT 'sent', message_id, ?1, recipient, message_type, status, status_reason,
       EXISTS (SELECT 1 FROM evidence WHERE evidence.message_id = outbox.message_id
               AND evidence_type IN ('DELIVERY', 'RETRIEVAL', 'NON_RETRIEVAL')),
       NULL, NULL, created_at, content_purged_at
  FROM outbox WHERE case_id = ?2 AND message_type != 'CONNECTIVITY_TEST'
UNION ALL
SELECT 'received', message_id, sender, ?1, message_type, NULL, NULL, 1, received_at, retrieved_at, received_at,
       content_purged_at
  FROM inbox WHERE case_id = ?2
"""


@dataclass(frozen=True, slots=True)
class PurgeRecord:
    """One message whose content retention purged: the trail of the purge."""

    purge_id: int
    case_id: str
    direction: Literal["sent", "received"]
    sender: str
    recipient: str
    message_id: str
    message_type: str
    classification: str
    attachment_sha256: tuple[str, ...]
    """The plaintext digests of the bodies it carried (sent: which uploads to remove)."""
    case_closed_at: str
    retention_days: int
    purged_at: str
    attachments_purged_at: str | None


_DOCUMENT = 5
"""The index of `document` in a row of `outbox` and of `inbox` (`SELECT *`)."""
_INBOX_DOCUMENT = 7
_OUTBOX_COLUMNS = 16
_INBOX_COLUMNS = 12
"""Columns of `outbox` and `inbox` as records hold them (`SELECT *` may return more: later steps' columns)."""
_MIGRATION_BATCH = 500
"""Plain rows sealed per transaction when a database from before is opened."""


def outbox_identity(message_id: str) -> dict[str, str]:
    """What an outbox document is bound to."""
    return {"record": "outbox", "message_id": message_id}


def inbox_identity(sender: str, message_id: str) -> dict[str, str]:
    """What an inbox document is bound to."""
    return {"record": "inbox", "sender": sender, "message_id": message_id}


def content_proof_identity(sender: str, message_id: str) -> dict[str, str]:
    """What a stored content statement is bound to."""
    return {"record": "content_proof", "sender": sender, "message_id": message_id}


@dataclass(frozen=True, slots=True)
class ContentProofRecord:
    """The sender's content statement and signature over it, exactly as signed, of one message."""

    sender: str
    message_id: str
    direction: Literal["sent", "received"]
    statement: bytes
    signature: bytes


def _outbox(row: Sequence[object], key: StorageKey) -> OutboxRecord:
    values = list(row)[:_OUTBOX_COLUMNS]
    if values[-1] is None:  # content_purged_at: a purged document stays empty
        values[_DOCUMENT] = key.open(bytes(cast("bytes", values[_DOCUMENT])), outbox_identity(str(values[0])))
    return OutboxRecord(*values)  # type: ignore[arg-type]


def _evidence(row: Sequence[object]) -> EvidenceRecord:
    return EvidenceRecord(*row)  # type: ignore[arg-type]


def _inbox(row: Sequence[object], key: StorageKey) -> InboxRecord:
    values = list(row)[:_INBOX_COLUMNS]
    if values[-1] is None:  # content_purged_at: a purged document stays empty
        identity = inbox_identity(str(values[1]), str(values[2]))
        values[_INBOX_DOCUMENT] = key.open(bytes(cast("bytes", values[_INBOX_DOCUMENT])), identity)
    return InboxRecord(*values)  # type: ignore[arg-type]


def _purge(row: Sequence[object]) -> PurgeRecord:
    values = list(row)
    values[8] = tuple(json.loads(str(values[8])))
    return PurgeRecord(*values)  # type: ignore[arg-type]


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
                f"SELECT {columns}, document FROM {table} "  # noqa: S608 - constant names
                "WHERE substr(document, 1, ?) != ? AND content_purged_at IS NULL LIMIT ?",
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
        ("SELECT * FROM outbox WHERE content_purged_at IS NULL LIMIT 1", _outbox),
        ("SELECT * FROM inbox WHERE content_purged_at IS NULL LIMIT 1", _inbox),
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

    async def outbox_status(self, message_id: str) -> str | None:
        """The status of outbox row `message_id`, if any: read without the row's bytes."""
        row = await self._db.fetchone("SELECT status FROM outbox WHERE message_id = ?", (message_id,))
        return None if row is None else str(row[0])

    async def insert_outbox(self, record: OutboxRecord) -> None:
        """Record a new submission (status `queued`)."""
        await self._db.execute(
            "INSERT INTO outbox (message_id, recipient, message_type, case_id, in_reply_to, document, request_sha256, "
            "sealed, digest, status, status_reason, created_at, expires_at, published_at, updated_at) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
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
        if record.message_type != CONNECTIVITY_TEST:
            await self._db.execute("INSERT INTO outbox_order (message_id) VALUES (?)", (record.message_id,))
            await self._db.execute(_MARK_CASE, (record.case_id, record.recipient))

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
        if status in FINAL_NEGATIVE:
            # A sent message refused on its way may leave its case: the case's summary is folded again.
            await self._db.execute(
                "UPDATE case_index SET stale = 1 WHERE case_id = (SELECT case_id FROM outbox WHERE message_id = ?)",
                (message_id,),
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
        await self._db.execute(_MARK_CASE, (record.case_id, record.sender))

    async def insert_content_proof(self, record: ContentProofRecord, at: str) -> None:
        """Keep the sender's signed content statement of a message sent or received (once)."""
        await self._db.execute(
            "INSERT OR IGNORE INTO content_proofs VALUES (?,?,?,?,?,?)",
            (
                record.sender,
                record.message_id,
                record.direction,
                self._key.seal(record.statement, content_proof_identity(record.sender, record.message_id)),
                record.signature,
                at,
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

    async def set_case_summary(
        self,
        case_id: str,
        *,
        held: bool,
        state: str | None,
        role: str | None,
        marking: int,
        next_due: str | None,
        at: str,
    ) -> None:
        """Write what the fold of `case_id` is now into its `case_index` row, and clear its `stale` mark."""
        await self._db.execute(
            "UPDATE case_index SET stale = 0, held = ?, state = ?, role = ?, marking = ?, next_due = ?, "
            "updated_at = ? WHERE case_id = ?",
            (int(held), state, role, marking, next_due, at, case_id),
        )

    async def insert_connectivity_test(self, test: ConnectivityTest) -> None:
        """Record a ping sent (its outbox row is written in the same transaction)."""
        await self._db.execute(
            "INSERT INTO connectivity_tests (test_id, peer, ping_id, started_at, deadline) VALUES (?,?,?,?,?)",
            (test.test_id, test.peer, test.ping_id, test.started_at, test.deadline),
        )

    async def connectivity_received(self, sender: str, message_id: str) -> str | None:
        """The digest of a probe received from `sender` under `message_id`, if any."""
        row = await self._db.fetchone(
            "SELECT digest FROM connectivity_received WHERE sender = ? AND message_id = ?", (sender, message_id)
        )
        return None if row is None else str(row[0])

    async def insert_connectivity_received(
        self, sender: str, message_id: str, *, digest: str, kind: str, test_id: str, at: str
    ) -> None:
        """Remember a probe received (a second copy of it is a redelivery)."""
        await self._db.execute(
            "INSERT INTO connectivity_received VALUES (?,?,?,?,?,?)", (sender, message_id, digest, kind, test_id, at)
        )

    async def connectivity_test_of_ping(self, ping_id: str) -> ConnectivityTest | None:
        """The test whose ping had this message id."""
        row = await self._db.fetchone(f"SELECT {_TEST_COLUMNS} FROM connectivity_tests WHERE ping_id = ?", (ping_id,))  # noqa: S608 - constant columns
        return None if row is None else ConnectivityTest(*row)

    async def record_pong(
        self, test_id: str, *, pong_id: str, digest: str, sent_at: str, received_at: str, evidence: bytes
    ) -> None:
        """The test's pong arrived: what it was, when, and the evidence this agency signed for it."""
        await self._db.execute(
            "UPDATE connectivity_tests SET pong_id = ?, pong_digest = ?, pong_sent_at = ?, pong_received_at = ?, "
            "pong_evidence = ? WHERE test_id = ? AND pong_id IS NULL",
            (pong_id, digest, sent_at, received_at, evidence, test_id),
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
                stored_at=None if row[10] is None else str(row[10]),
                content_purged_at=None if row[11] is None else str(row[11]),
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

    # -- webhooks (`agents.webhooks`) ------------------------------------------------------

    async def emit_webhook_event(self, *, event_id: str, event_type: str, level: int, payload: bytes, at: str) -> int:
        """Owe one event to every subscription (active or suspended) of `event_type`, in this transaction.

        Returns how many subscriptions it is owed to (0 when none subscribes: nothing is kept).
        """
        return await self._db.execute(
            "INSERT OR IGNORE INTO webhook_outbox (subscription_id, event_id, event_type, level, payload, created_at) "
            "SELECT subscription_id, ?, ?, ?, ?, ? FROM webhook_subscriptions WHERE instr(event_types, ?) > 0",
            (event_id, event_type, level, payload, at, f" {event_type} "),
        )

    async def owe_webhook_event(
        self, subscription_id: str, *, event_id: str, event_type: str, level: int, payload: bytes, at: str
    ) -> None:
        """Owe one event to one subscription (a deadline announced to it)."""
        await self._db.execute(
            "INSERT OR IGNORE INTO webhook_outbox (subscription_id, event_id, event_type, level, payload, created_at) "
            "VALUES (?,?,?,?,?,?)",
            (subscription_id, event_id, event_type, level, payload, at),
        )

    async def notice_deadline(self, subscription_id: str, deadline: str, phase: str, at: str) -> bool:
        """Remember that `deadline` reached `phase` for this subscription; False if it was noticed before."""
        inserted = await self._db.execute(
            "INSERT OR IGNORE INTO webhook_deadline_notices VALUES (?,?,?,?)", (subscription_id, deadline, phase, at)
        )
        return inserted == 1

    async def insert_webhook_subscription(self, subscription: WebhookSubscription) -> None:
        """Keep a new subscription, its secret sealed under the storage key."""
        await self._db.execute(
            "INSERT INTO webhook_subscriptions (subscription_id, url, event_types, secret, owner_sha256, description, "
            "created_at, state) VALUES (?,?,?,?,?,?,?,?)",
            (
                subscription.subscription_id,
                subscription.url,
                _event_types_column(subscription.event_types),
                self._key.seal(subscription.secret, webhook_secret_identity(subscription.subscription_id)),
                subscription.owner_sha256,
                subscription.description,
                subscription.created_at,
                subscription.state,
            ),
        )

    async def delete_webhook_subscription(self, subscription_id: str) -> None:
        """Forget a subscription and everything still owed to it."""
        for table in ("webhook_outbox", "webhook_deadline_notices", "webhook_subscriptions"):
            await self._db.execute(
                f"DELETE FROM {table} WHERE subscription_id = ?",  # noqa: S608 - constant names
                (subscription_id,),
            )

    async def set_webhook_state(self, subscription_id: str, state: str, reason: str | None, at: str) -> None:
        """Suspend a subscription, or make it active again (its failure count and backoff cleared)."""
        if state == "active":
            await self._db.execute(
                "UPDATE webhook_subscriptions SET state = ?, state_reason = ?, state_changed_at = ?, "
                "failing_since = NULL, consecutive_failures = 0, next_attempt_at = NULL WHERE subscription_id = ?",
                (state, reason, at, subscription_id),
            )
        else:
            await self._db.execute(
                "UPDATE webhook_subscriptions SET state = ?, state_reason = ?, state_changed_at = ? "
                "WHERE subscription_id = ?",
                (state, reason, at, subscription_id),
            )

    async def webhook_delivered(self, seq: int, subscription_id: str, at: str) -> None:
        """One event reached its subscriber (a 2xx): forget it; the subscription is healthy again."""
        await self._db.execute("DELETE FROM webhook_outbox WHERE seq = ?", (seq,))
        await self._db.execute(
            "UPDATE webhook_subscriptions SET delivered = delivered + 1, last_success_at = ?, failing_since = NULL, "
            "consecutive_failures = 0, next_attempt_at = NULL, last_error = NULL WHERE subscription_id = ?",
            (at, subscription_id),
        )

    async def webhook_withheld(self, seq: int) -> None:
        """Forget an event its subscriber's token may no longer read (never sent)."""
        await self._db.execute("DELETE FROM webhook_outbox WHERE seq = ?", (seq,))

    async def webhook_failed(self, seq: int, subscription_id: str, *, error: str, at: str, retry_at: str) -> None:
        """One attempt failed: counted on the event and the subscription, which waits until `retry_at`."""
        await self._db.execute("UPDATE webhook_outbox SET attempts = attempts + 1 WHERE seq = ?", (seq,))
        await self._db.execute(
            "UPDATE webhook_subscriptions SET failing_since = COALESCE(failing_since, ?), "
            "consecutive_failures = consecutive_failures + 1, failed_attempts = failed_attempts + 1, "
            "next_attempt_at = ?, last_error = ? WHERE subscription_id = ?",
            (at, retry_at, error, subscription_id),
        )

    async def drop_webhook_events_beyond(self, subscription_id: str, keep: int) -> int:
        """Forget the oldest events owed to a subscription beyond the newest `keep`; how many were forgotten."""
        dropped = await self._db.execute(
            "DELETE FROM webhook_outbox WHERE subscription_id = ?1 AND seq <= ("
            "SELECT seq FROM webhook_outbox WHERE subscription_id = ?1 ORDER BY seq DESC LIMIT 1 OFFSET ?2)",
            (subscription_id, keep),
        )
        if dropped:
            await self._db.execute(
                "UPDATE webhook_subscriptions SET dropped = dropped + ? WHERE subscription_id = ?",
                (dropped, subscription_id),
            )
        return dropped

    async def inbox_seq(self, sender: str, message_id: str) -> int | None:
        """The inbox cursor position (`seq`) of (sender, message id), if held."""
        row = await self._db.fetchone("SELECT seq FROM inbox WHERE sender = ? AND message_id = ?", (sender, message_id))
        return None if row is None else int(row[0])

    async def case_ids(self) -> list[str]:
        """Every case this agency sent or received a message of."""
        rows = await self._db.fetchall("SELECT case_id FROM outbox UNION SELECT case_id FROM inbox")
        return [str(row[0]) for row in rows]

    async def purge_case(self, case_id: str, *, closed_at: str, retention_days: int, at: str) -> list[PurgeRecord]:
        """Empty the documents and sealed bytes of every message of `case_id` not yet purged; record each purge.

        The rows stay (metadata, digest, status, evidence): only the content
        goes. What each carried (its marking, its bodies' digests) is read
        first, from the document, into the trail.
        """
        purged: list[PurgeRecord] = []
        for table, direction in (("outbox", "sent"), ("inbox", "received")):
            rows = await self._db.fetchall(
                f"SELECT * FROM {table} WHERE case_id = ? AND content_purged_at IS NULL",  # noqa: S608 - constant
                (case_id,),
            )
            for row in rows:
                if direction == "sent":
                    sent = _outbox(row, self._key)
                    document, message_id, sender, recipient = sent.document, sent.message_id, "", sent.recipient
                    message_type = sent.message_type
                    await self._db.execute(
                        "UPDATE outbox SET document = x'', sealed = x'', content_purged_at = ? WHERE message_id = ?",
                        (at, message_id),
                    )
                else:
                    received = _inbox(row, self._key)
                    document, message_id, sender = received.document, received.message_id, received.sender
                    recipient, message_type = "", received.message_type
                    await self._db.execute(
                        "UPDATE inbox SET document = x'', sealed = x'', content_purged_at = ? WHERE seq = ?",
                        (at, received.seq),
                    )
                parsed = json.loads(document)
                sender = sender or str(parsed.get("sender", {}).get("authority_id", ""))
                recipient = recipient or str(parsed.get("recipient", {}).get("authority_id", ""))
                digests = sorted(
                    {str(item["sha256"]) for item in parsed.get("attachments") or () if isinstance(item, dict)}
                )
                await self._db.execute(
                    "INSERT INTO purges (case_id, direction, sender, recipient, message_id, message_type, "
                    "classification, attachment_sha256, case_closed_at, retention_days, purged_at) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        case_id,
                        direction,
                        sender,
                        recipient,
                        message_id,
                        message_type,
                        str(parsed.get("classification", "")),
                        json.dumps(digests),
                        closed_at,
                        retention_days,
                        at,
                    ),
                )
                row_id = await self._db.fetchone("SELECT last_insert_rowid()")
                purged.append(
                    PurgeRecord(
                        int(row_id[0]) if row_id else 0,
                        case_id,
                        "sent" if direction == "sent" else "received",
                        sender,
                        recipient,
                        message_id,
                        message_type,
                        str(parsed.get("classification", "")),
                        tuple(digests),
                        closed_at,
                        retention_days,
                        at,
                        None,
                    )
                )
        return purged

    async def mark_attachments_purged(self, purge_ids: Sequence[int], at: str) -> None:
        """The bodies of these purged messages are gone too."""
        await self._db.executemany(
            "UPDATE purges SET attachments_purged_at = ? WHERE purge_id = ?", [(at, i) for i in purge_ids]
        )


class AgentStore:
    """The SQLite database of one agent."""

    def __init__(
        self,
        db: LoopSqlite,
        relay_reader: LoopSqlite,
        scan_reader: aiosqlite.Connection,
        storage_key: StorageKey,
        list_reader: LoopSqlite | None = None,
    ) -> None:
        self._db = db
        # The listings read on a connection of their own, which sees committed rows only: a page never shows a
        # row of a series of transactions still open (it could still roll back, and its sequence be reused).
        self._list_db = list_reader or relay_reader
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
            await asyncio.to_thread(migrate_sqlite, path, AGENT_SCHEMA)
            db = await LoopSqlite.connect(path)
            # Rows rewritten or deleted leave no old bytes in free pages.
            await db.execute("PRAGMA secure_delete=ON")
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute(f"PRAGMA synchronous={synchronous}")
            await seal_plain_rows(db, storage_key)
            relay_reader = await LoopSqlite.connect(path)
            list_reader = await LoopSqlite.connect(path)
            scan_reader = await aiosqlite.connect(path, isolation_level=None)
            restrict_database(path)
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnavailable(f"cannot open agent database {path}: {exc}") from exc
        return cls(db, relay_reader, scan_reader, storage_key, list_reader)

    @property
    def storage_key(self) -> StorageKey:
        """The key this store seals documents under: the agent's other stores use it too."""
        return self._key

    async def close(self) -> None:
        """Close the connections."""
        await self._scan_db.close()
        if self._list_db is not self._relay_db:
            await self._list_db.close()
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

    async def sent_page(self, after: int, limit: int, wanted: SentFilter) -> list[tuple[int, OutboxRecord]]:
        """Sent messages numbered after `after` that match `wanted`, in their order, with their numbers."""
        clauses, params = ["o.seq > ?"], list[object]([after])
        if wanted.statuses:
            clauses.append(f"outbox.status IN ({','.join('?' * len(wanted.statuses))})")
            params.extend(wanted.statuses)
        for column, value in (("case_id", wanted.case_id), ("message_type", wanted.message_type)):
            if value is not None:
                clauses.append(f"outbox.{column} = ?")
                params.append(value)
        if wanted.created_from is not None:
            clauses.append("outbox.created_at >= ?")
            params.append(wanted.created_from)
        if wanted.created_before is not None:
            clauses.append("outbox.created_at < ?")
            params.append(wanted.created_before)
        rows = await self._list_db.fetchall(
            "SELECT o.seq, outbox.* FROM outbox_order AS o JOIN outbox ON outbox.message_id = o.message_id "  # noqa: S608 - constant clauses, values bound
            f"WHERE {' AND '.join(clauses)} ORDER BY o.seq LIMIT ?",
            (*params, limit),
        )
        return [(int(row[0]), _outbox(row[1:], self._key)) for row in rows]

    async def inbox_page(self, after: int, limit: int, wanted: InboxFilter) -> list[InboxRecord]:
        """Received messages with `seq` > `after` that match `wanted`, oldest first."""
        clauses, params = ["seq > ?"], list[object]([after])
        if wanted.unacknowledged:
            clauses.append("retrieved_at IS NULL")
        for column, value in (("case_id", wanted.case_id), ("message_type", wanted.message_type)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        rows = await self._list_db.fetchall(
            f"SELECT * FROM inbox WHERE {' AND '.join(clauses)} ORDER BY seq LIMIT ?",  # noqa: S608 - constant clauses, values bound
            (*params, limit),
        )
        return [_inbox(row, self._key) for row in rows]

    async def case_page(self, after: int, limit: int, wanted: CaseFilter) -> list[CaseSummary]:
        """Cases held, numbered after `after`, that match `wanted` (as last summarised), in their order."""
        clauses, params = ["seq > ?", "held = 1", "marking <= ?"], list[object]([after, wanted.max_marking])
        if wanted.states:
            clauses.append(f"state IN ({','.join('?' * len(wanted.states))})")
            params.extend(wanted.states)
        if wanted.counterpart is not None:
            clauses.append("counterpart = ?")
            params.append(wanted.counterpart)
        if wanted.due_by is not None:
            clauses.append("next_due <= ?")
            params.append(wanted.due_by)
        if wanted.overdue_on is not None:
            clauses.append("next_due < ?")
            params.append(wanted.overdue_on)
        rows = await self._list_db.fetchall(
            "SELECT seq, case_id, counterpart, state, role, marking, next_due, updated_at FROM case_index "  # noqa: S608 - constant clauses, values bound
            f"WHERE {' AND '.join(clauses)} ORDER BY seq LIMIT ?",
            (*params, limit),
        )
        return [CaseSummary(*row) for row in rows]

    async def connectivity_test(self, test_id: str) -> ConnectivityTest | None:
        """One connectivity test this agency started."""
        row = await self._db.fetchone(f"SELECT {_TEST_COLUMNS} FROM connectivity_tests WHERE test_id = ?", (test_id,))  # noqa: S608 - constant columns
        return None if row is None else ConnectivityTest(*row)

    async def stale_cases(self, limit: int) -> list[str]:
        """Cases whose summary must be folded again before the case list is read (oldest first)."""
        rows = await self._db.fetchall("SELECT case_id FROM case_index WHERE stale = 1 ORDER BY seq LIMIT ?", (limit,))
        return [str(row[0]) for row in rows]

    async def inbox_entry_of(self, sender: str, message_id: str) -> InboxRecord | None:
        """The inbox row of (sender, message id), if any."""
        row = await self._db.fetchone("SELECT * FROM inbox WHERE sender = ? AND message_id = ?", (sender, message_id))
        return None if row is None else _inbox(row, self._key)

    async def inbox_case_id(self, sender: str, message_id: str) -> str | None:
        """The case of inbox row (sender, message id), if any: read without the row's bytes."""
        row = await self._db.fetchone(
            "SELECT case_id FROM inbox WHERE sender = ? AND message_id = ?", (sender, message_id)
        )
        return None if row is None else str(row[0])

    async def outbox_summary(self, message_id: str) -> tuple[str, str, str] | None:
        """(case id, recipient, created at) of outbox row `message_id`, if any: read without the row's bytes."""
        row = await self._db.fetchone(
            "SELECT case_id, recipient, created_at FROM outbox WHERE message_id = ?", (message_id,)
        )
        return None if row is None else (str(row[0]), str(row[1]), str(row[2]))

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

    async def content_proof(self, sender: str, message_id: str) -> ContentProofRecord | None:
        """The sender's signed content statement of (sender, message id), if kept."""
        row = await self._db.fetchone(
            "SELECT direction, statement, signature FROM content_proofs WHERE sender = ? AND message_id = ?",
            (sender, message_id),
        )
        if row is None:
            return None
        statement = self._key.open(bytes(row[1]), content_proof_identity(sender, message_id))
        direction: Literal["sent", "received"] = "sent" if row[0] == "sent" else "received"
        return ContentProofRecord(sender, message_id, direction, statement, bytes(row[2]))

    async def fork_count(self) -> int:
        """How many forks of the gateway's log this agent has proof of."""
        row = await self._db.fetchone("SELECT COUNT(*) FROM forks")
        return 0 if row is None else int(row[0])

    async def webhook_subscription(self, subscription_id: str) -> WebhookSubscription | None:
        """One subscription, its secret opened, with the number of events still owed to it."""
        row = await self._db.fetchone(
            f"SELECT {_SUBSCRIPTION_COLUMNS} FROM webhook_subscriptions s WHERE subscription_id = ?",  # noqa: S608
            (subscription_id,),
        )
        return None if row is None else _subscription(row, self._key)

    async def webhook_subscriptions(self, owner_sha256: str | None = None) -> list[WebhookSubscription]:
        """Every subscription (of one token, when `owner_sha256` is given), oldest first."""
        where, params = ("WHERE owner_sha256 = ?", (owner_sha256,)) if owner_sha256 is not None else ("", ())
        rows = await self._db.fetchall(
            f"SELECT {_SUBSCRIPTION_COLUMNS} FROM webhook_subscriptions s {where} ORDER BY s.created_at",  # noqa: S608
            params,
        )
        return [_subscription(row, self._key) for row in rows]

    async def webhook_due(self, now: str) -> list[WebhookSubscription]:
        """Active subscriptions owed events whose backoff (if any) has ended."""
        rows = await self._relay_db.fetchall(
            f"SELECT {_SUBSCRIPTION_COLUMNS} FROM webhook_subscriptions s WHERE state = 'active' "  # noqa: S608
            "AND (next_attempt_at IS NULL OR next_attempt_at <= ?) "
            "AND EXISTS (SELECT 1 FROM webhook_outbox o WHERE o.subscription_id = s.subscription_id)",
            (now,),
        )
        return [_subscription(row, self._key) for row in rows]

    async def webhook_pending(self, subscription_id: str, limit: int) -> list[WebhookDelivery]:
        """The oldest events owed to a subscription, in the order they happened."""
        rows = await self._relay_db.fetchall(
            "SELECT seq, subscription_id, event_id, event_type, level, payload, created_at, attempts "
            "FROM webhook_outbox WHERE subscription_id = ? ORDER BY seq LIMIT ?",
            (subscription_id, limit),
        )
        return [
            WebhookDelivery(int(r[0]), str(r[1]), str(r[2]), str(r[3]), int(r[4]), bytes(r[5]), str(r[6]), int(r[7]))
            for r in rows
        ]

    async def webhook_overfull(self, keep: int) -> list[str]:
        """Subscriptions owed more than `keep` events."""
        rows = await self._relay_db.fetchall(
            "SELECT subscription_id FROM webhook_outbox GROUP BY subscription_id HAVING COUNT(*) > ?", (keep,)
        )
        return [str(row[0]) for row in rows]

    async def wants_webhook_event(self, event_types: Sequence[str]) -> list[str]:
        """The subscriptions (any state) to any of `event_types`."""
        rows = await self._relay_db.fetchall(
            "SELECT subscription_id FROM webhook_subscriptions WHERE "  # noqa: S608 - placeholders only
            + " OR ".join("instr(event_types, ?) > 0" for _ in event_types),
            [f" {name} " for name in event_types],
        )
        return [str(row[0]) for row in rows]

    async def unpurged_case_ids(self) -> list[str]:
        """Cases with content still held, in no particular order."""
        rows = await self._db.fetchall(
            "SELECT case_id FROM outbox WHERE content_purged_at IS NULL "
            "UNION SELECT case_id FROM inbox WHERE content_purged_at IS NULL"
        )
        return [str(row[0]) for row in rows]

    async def purges(
        self, *, message_id: str | None = None, case_id: str | None = None, attachments_pending: bool = False
    ) -> list[PurgeRecord]:
        """The purge trail: every purge, those of a message or a case, or those whose bodies are not yet removed."""
        query, params = "SELECT * FROM purges", ()  # type: tuple[str, tuple[object, ...]]
        if message_id is not None:
            query, params = "SELECT * FROM purges WHERE message_id = ?", (message_id,)
        elif case_id is not None:
            query, params = "SELECT * FROM purges WHERE case_id = ?", (case_id,)
        elif attachments_pending:
            query = "SELECT * FROM purges WHERE attachments_purged_at IS NULL"
        rows = await self._db.fetchall(query + " ORDER BY purge_id", params)
        return [_purge(row) for row in rows]

    async def forget_purged_bytes(self) -> None:
        """Checkpoint the WAL: the pages that held purged bytes leave it (`secure_delete` zeroed them in the file).

        On the scanning connection, in its thread: the checkpoint waits on the disk, and its answer row is read
        to the end (a statement left open would block the writer's next savepoint).
        """
        async with self._scan_db.execute("PRAGMA wal_checkpoint(TRUNCATE)") as cursor:
            await cursor.fetchall()

    async def pending_evidence(self, limit: int = 256) -> list[PendingEvidence]:
        """Evidence issued and not yet confirmed, oldest first."""
        rows = await self._relay_db.fetchall(
            "SELECT evidence_out_id, identity, message_id, body FROM evidence_out ORDER BY evidence_out_id LIMIT ?",
            (limit,),
        )
        return [PendingEvidence(int(r[0]), str(r[1]), str(r[2]), bytes(r[3])) for r in rows]


__all__ = [
    "AGENT_SCHEMA",
    "CONNECTIVITY_TABLES_DDL",
    "CONTENT_PROOF_TABLES_DDL",
    "LIST_TABLES_DDL",
    "RETENTION_DDL",
    "WEBHOOK_TABLES_DDL",
    "AgentStore",
    "CaseEntry",
    "CaseFilter",
    "CaseSummary",
    "ConnectivityTest",
    "ContentProofRecord",
    "EvidenceRecord",
    "InboxFilter",
    "InboxRecord",
    "OutboxRecord",
    "PendingEvidence",
    "PurgeRecord",
    "SentFilter",
    "Transaction",
    "WebhookDelivery",
    "WebhookSubscription",
    "content_proof_identity",
    "inbox_identity",
    "outbox_identity",
    "seal_plain_rows",
    "webhook_secret_identity",
]
