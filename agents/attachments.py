"""Attachment bodies at the agent: upload, encrypt, push to the gateway; fetch, verify, serve.

Sending (docs/ATTACHMENTS.md has the whole picture):

1. `POST /v1/attachments` streams a body to a partial file (resumable: an
   `Upload-Id` names it, `HEAD /v1/attachments/uploads/{id}` says how many
   bytes are held, the next `POST` continues at `Upload-Offset`). Once whole,
   it is encrypted, file to file in chunks, as a secretstream under a fresh
   key (`protocol.attachments`) into `<data>/attachments/blobs/<ciphertext
   sha256>`; the plaintext copy is removed. Answer: `201 {"sha256", "size_bytes"}`.
2. At submission, each `attachments` entry of the document whose `sha256` is
   an uploaded body's gets that body's key and digests (`keys_for`), which
   the envelope carries: key and plaintext digest in the signed, encrypted
   content statement; ciphertext digest and length in the signed header. An
   entry without an uploaded body travels as a description only.
3. Before the outbox relay publishes an envelope, `BlobPushingPublisher`
   uploads each body it commits to into the gateway's blob store (resuming a
   partial upload), so the gateway never sees an envelope before its bodies.

Receiving:

4. When the receiver has opened a message, `accept_opened` checks that each
   body's key names an entry of the document with the same plaintext digest
   (else the message is refused, `ATTACHMENT_MISMATCH`), and records the body
   as `pending` before the message is stored.
5. `fetch_pending` (a background task) downloads each pending body from the
   gateway with `Range` (resuming after an interruption), checks the
   ciphertext's digest and length against the signed header, decrypts it as a
   stream (a changed, cut, reordered or truncated stream is refused), checks
   the plaintext digest the sender signed, keeps the ciphertext (never the
   plaintext) in `<data>/attachments/received/`, then tells the gateway it
   was retrieved.
6. `GET /v1/inbox/{message_id}/attachments/{attachment_id}` serves it,
   decrypted as it is sent (with `Range`); the inbox lists each entry's
   state: `description_only`, `pending`, `available` or `failed`.

At rest (SECURITY.md, finding 10): bodies lie on disk only encrypted, and the
keys that open them (`uploads.key`, `received.key_json`) are sealed under the
agency's storage key, bound to their row (`protocol.storage`). An index or
received body from before this was sealed or encrypted in place on open.

Memory stays flat: every step reads and writes `IO_CHUNK_BYTES` at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import shutil
import sqlite3
import ssl
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final

import aiohttp
import aiosqlite
import structlog
from aiohttp import web
from pydantic import ValidationError

from agents.errors import Conflict
from agents.guard import readable
from agents.store import AgentStore
from agents.transport import SubmitPublisher
from protocol.attachments import (
    EMPTY_BODY_SHA256,
    AttachmentKey,
    StreamEncryptor,
    attachment_ad,
    sign_blob_request,
)
from protocol.encoding import b64encode, format_timestamp, parse_timestamp
from protocol.envelope import EnvelopeHeader, OpenedMessage, SealedMessage
from protocol.errors import (
    AuthenticationFailed,
    ContentInvalid,
    ErrorCode,
    FieldError,
    LimitExceeded,
    MalformedInput,
    ProtocolError,
)
from protocol.ids import AgencyId
from protocol.keys import SigningPrivateKey
from protocol.limits import Limits
from protocol.mla import MessageDocument
from protocol.model import parse_model
from protocol.storage import MAGIC, StorageKey
from protocol.topology import KIND_SEALED_MESSAGE
from runtime.broker import FailoverConnector
from runtime.errors import StoreUnavailable, TransientFailure
from runtime.http import problem
from runtime.private_files import open_private, private_directory, restrict
from runtime.schema import Migration, Schema
from runtime.sqlite import open_index
from runtime.supervision import TryLocks

log = structlog.get_logger("rogatory.agent.attachments")

IO_CHUNK_BYTES: Final = 1024 * 1024
"""Bytes read or written at once: memory stays at a few of these whatever the body's size."""
UPLOAD_CHUNK_BYTES: Final = 64 * 1024 * 1024
"""Bytes one `PUT` to the gateway carries, each signed over its digest: what an interruption costs."""
DEFAULT_MAX_RECEIVED_BODY_BYTES: Final = 16 * 1024**3
"""The largest body this agent downloads for a received message (`ROGATORY_MAX_RECEIVED_BODY_BYTES`);
a larger one is refused unread, whatever its sender committed to."""
DIGESTS_PER_QUERY: Final = 500
"""Digests looked up in one query (`uploads_of`): under SQLite's limit on a statement's variables."""
ORPHAN_AFTER: Final = timedelta(minutes=5)
"""A body recorded for a message that never reached the inbox (refused after opening) is dropped after this."""
_UPLOAD_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS uploads (
    upload_id TEXT PRIMARY KEY,
    plaintext_sha256 TEXT NOT NULL,
    plaintext_length INTEGER NOT NULL,
    stream_id TEXT NOT NULL,
    key BLOB NOT NULL,
    ciphertext_sha256 TEXT NOT NULL,
    ciphertext_length INTEGER NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS uploads_plaintext ON uploads (plaintext_sha256);
CREATE TABLE IF NOT EXISTS received (
    received_id INTEGER PRIMARY KEY AUTOINCREMENT,
    sender TEXT NOT NULL,
    message_id TEXT NOT NULL,
    attachment_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    state TEXT NOT NULL,
    detail TEXT,
    confirmed INTEGER NOT NULL DEFAULT 0,
    recorded_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (sender, message_id, attachment_id)
);
CREATE INDEX IF NOT EXISTS received_state ON received (state);
"""

ATTACHMENT_SCHEMA = Schema(
    "agent attachments", (Migration(1, "release 504c590", _SCHEMA),), adopts=("uploads", "received")
)
"""`attachments.db`, step by step (`runtime.schema`): append a step to change it."""

PENDING, AVAILABLE, FAILED, ORPHANED = "pending", "available", "failed", "orphaned"
PURGED = "purged"
"""Retention removed the body and its key (`agents.retention`); the row says which and when."""
DESCRIPTION_ONLY = "description_only"


class GatewayUnavailable(TransientFailure):
    """The gateway's blob store did not answer as expected; try again later."""


@dataclass(frozen=True, slots=True)
class Upload:
    """A body uploaded to this agent and encrypted under its own key."""

    upload_id: str
    plaintext_sha256: str
    plaintext_length: int
    stream_id: str
    key: bytes
    ciphertext_sha256: str
    ciphertext_length: int
    created_at: str

    def key_for(self, attachment_id: str) -> AttachmentKey:
        """What the envelope carries about this body as attachment `attachment_id`."""
        return AttachmentKey(
            attachment_id=attachment_id,
            stream_id=self.stream_id,
            key=self.key,
            plaintext_sha256=self.plaintext_sha256,
            plaintext_length=self.plaintext_length,
            ciphertext_sha256=self.ciphertext_sha256,
            ciphertext_length=self.ciphertext_length,
        )


@dataclass(frozen=True, slots=True)
class ReceivedBody:
    """A body a received message carries, and how far it got."""

    received_id: int
    sender: str
    message_id: str
    attachment_id: str
    key: AttachmentKey
    state: str
    detail: str | None
    confirmed: bool
    recorded_at: str


def upload_identity(upload_id: str) -> dict[str, str]:
    """What the key of an uploaded body is bound to."""
    return {"record": "upload", "upload_id": upload_id}


def received_identity(sender: str, message_id: str, attachment_id: str) -> dict[str, str]:
    """What the key of a received body is bound to."""
    return {"record": "received", "sender": sender, "message_id": message_id, "attachment_id": attachment_id}


def _received(row: Sequence[Any], storage_key: StorageKey) -> ReceivedBody:
    sender, message_id, attachment_id = str(row[1]), str(row[2]), str(row[3])
    key_json = storage_key.open(bytes(row[4]), received_identity(sender, message_id, attachment_id))
    return ReceivedBody(
        received_id=int(row[0]),
        sender=sender,
        message_id=message_id,
        attachment_id=attachment_id,
        key=parse_model(AttachmentKey, key_json, what="attachment key"),
        state=str(row[5]),
        detail=None if row[6] is None else str(row[6]),
        confirmed=bool(row[7]),
        recorded_at=str(row[8]),
    )


_RECEIVED_COLUMNS = "received_id, sender, message_id, attachment_id, key_json, state, detail, confirmed, recorded_at"


class AttachmentStore:
    """Bodies on disk under `<data>/attachments/`, what is known of them in `<data>/attachments.db`."""

    def __init__(self, root: Path, db: aiosqlite.Connection, storage_key: StorageKey) -> None:
        self.root = root
        self._db = db
        self._key = storage_key
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, data_dir: Path, *, storage_key: StorageKey) -> AttachmentStore:
        """Open (creating if needed) the store under `data_dir`; seal what an index from before holds in plain."""
        root = private_directory(data_dir / "attachments")
        for sub in ("uploads", "blobs", "received"):
            private_directory(root / sub)
        db = await open_index(data_dir / "attachments.db", ATTACHMENT_SCHEMA, what="attachment index")
        store = cls(root, db, storage_key)
        try:
            await store._seal_plain_rows()
            await store._encrypt_plain_bodies()
        except (sqlite3.Error, OSError) as exc:
            await db.close()
            raise StoreUnavailable(f"cannot seal the attachment index: {exc}") from exc
        return store

    async def _seal_plain_rows(self) -> None:
        """Keys written in plain before sealing existed: a raw 32-byte `uploads.key`, a JSON `key_json`."""
        async with self._db.execute("SELECT upload_id, key FROM uploads WHERE length(key) = 32") as cursor:
            uploads = [(str(row[0]), bytes(row[1])) for row in await cursor.fetchall()]
        await self._db.executemany(
            "UPDATE uploads SET key = ? WHERE upload_id = ?",
            [(self._key.seal(key, upload_identity(upload_id)), upload_id) for upload_id, key in uploads],
        )
        async with self._db.execute(
            "SELECT received_id, sender, message_id, attachment_id, key_json FROM received "
            "WHERE substr(key_json, 1, ?) != ? AND state != ?",
            (len(MAGIC), MAGIC, PURGED),
        ) as cursor:
            received = list(await cursor.fetchall())
        await self._db.executemany(
            "UPDATE received SET key_json = ? WHERE received_id = ?",
            [
                (
                    self._key.seal(
                        row[4] if isinstance(row[4], bytes) else str(row[4]).encode("utf-8"),
                        received_identity(str(row[1]), str(row[2]), str(row[3])),
                    ),
                    row[0],
                )
                for row in received
            ],
        )
        if uploads or received:
            await self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    async def _encrypt_plain_bodies(self) -> None:
        """Received bodies kept in plain before (`<id>.body`) are encrypted in place under their own key."""
        async with self._db.execute(
            f"SELECT {_RECEIVED_COLUMNS} FROM received WHERE state = ?",  # noqa: S608 - constant columns
            (AVAILABLE,),
        ) as cursor:
            rows = list(await cursor.fetchall())
        for row in rows:
            body = _received(tuple(row), self._key)
            plain = (self.root / "received" / str(body.received_id)).with_suffix(".body")
            if plain.exists():
                _, kept = self.received_paths(body)
                await asyncio.to_thread(_encrypt_plain_body, plain, kept, body.key, body.sender)

    async def close(self) -> None:
        """Close the index."""
        await self._db.close()

    def part_path(self, upload_id: str) -> Path:
        """The plaintext of an upload in progress."""
        return self.root / "uploads" / f"{upload_id}.part"

    def blob_path(self, ciphertext_sha256: str) -> Path:
        """The ciphertext of an uploaded body."""
        return self.root / "blobs" / ciphertext_sha256

    def received_paths(self, body: ReceivedBody) -> tuple[Path, Path]:
        """(ciphertext being downloaded, ciphertext kept once verified) of a received body."""
        base = self.root / "received" / str(body.received_id)
        return base.with_suffix(".ciphertext"), base.with_suffix(".sealed")

    async def _write(self, query: str, params: tuple[object, ...]) -> None:
        async with self._lock:
            try:
                await self._db.execute(query, params)
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"cannot write the attachment index: {exc}") from exc

    async def insert_upload(self, upload: Upload) -> None:
        """Remember an encrypted body."""
        await self._write(
            "INSERT OR REPLACE INTO uploads VALUES (?,?,?,?,?,?,?,?)",
            (
                upload.upload_id,
                upload.plaintext_sha256,
                upload.plaintext_length,
                upload.stream_id,
                self._key.seal(upload.key, upload_identity(upload.upload_id)),
                upload.ciphertext_sha256,
                upload.ciphertext_length,
                upload.created_at,
            ),
        )

    async def upload(self, upload_id: str) -> Upload | None:
        """The finished upload of this id, if any."""
        async with self._db.execute("SELECT * FROM uploads WHERE upload_id = ?", (upload_id,)) as cursor:
            row = await cursor.fetchone()
        return None if row is None else self._upload(row)

    def _upload(self, row: Sequence[Any]) -> Upload:
        values = list(row)
        values[4] = self._key.open(bytes(values[4]), upload_identity(str(values[0])))
        return Upload(*values)

    async def upload_of(self, plaintext_sha256: str) -> Upload | None:
        """The latest finished upload whose plaintext has this digest, with its ciphertext on disk."""
        async with self._db.execute(
            "SELECT * FROM uploads WHERE plaintext_sha256 = ? ORDER BY created_at DESC", (plaintext_sha256,)
        ) as cursor:
            rows = await cursor.fetchall()
        for row in rows:
            upload = self._upload(row)
            if self.blob_path(upload.ciphertext_sha256).exists():
                return upload
        return None

    async def uploads_of(self, plaintext_sha256s: Sequence[str]) -> dict[str, Upload]:
        """`upload_of` each digest that has one, in one query a chunk of digests (a request lists several)."""
        wanted = sorted(set(plaintext_sha256s))
        found: dict[str, Upload] = {}
        for start in range(0, len(wanted), DIGESTS_PER_QUERY):
            chunk = wanted[start : start + DIGESTS_PER_QUERY]
            marks = ",".join("?" * len(chunk))
            async with self._db.execute(
                f"SELECT * FROM uploads WHERE plaintext_sha256 IN ({marks}) ORDER BY created_at DESC",  # noqa: S608 - marks only
                chunk,
            ) as cursor:
                rows = await cursor.fetchall()
            for row in rows:
                upload = self._upload(row)
                if upload.plaintext_sha256 not in found and self.blob_path(upload.ciphertext_sha256).exists():
                    found[upload.plaintext_sha256] = upload
        return found

    async def record_received(self, sender: str, message_id: str, keys: Sequence[AttachmentKey], at: str) -> None:
        """Remember the bodies a received message carries, as `pending` (once per body)."""
        async with self._lock:
            try:
                await self._db.executemany(
                    "INSERT OR IGNORE INTO received (sender, message_id, attachment_id, key_json, state, "
                    "recorded_at, updated_at) VALUES (?,?,?,?,?,?,?)",
                    [
                        (
                            sender,
                            message_id,
                            key.attachment_id,
                            self._key.seal(
                                key.model_dump_json().encode("utf-8"),
                                received_identity(sender, message_id, key.attachment_id),
                            ),
                            PENDING,
                            at,
                            at,
                        )
                        for key in keys
                    ],
                )
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"cannot write the attachment index: {exc}") from exc

    async def received_for(self, sender: str, message_id: str) -> list[ReceivedBody]:
        """The bodies of one received message."""
        async with self._db.execute(
            f"SELECT {_RECEIVED_COLUMNS} FROM received WHERE sender = ? AND message_id = ? AND state != ?",  # noqa: S608 - constant columns
            (sender, message_id, PURGED),
        ) as cursor:
            return [_received(tuple(row), self._key) for row in await cursor.fetchall()]

    async def to_fetch(self, limit: int = 50) -> list[ReceivedBody]:
        """Bodies still to download, or downloaded and not yet confirmed to the gateway."""
        async with self._db.execute(
            f"SELECT {_RECEIVED_COLUMNS} FROM received WHERE state = ? OR (state = ? AND confirmed = 0) "  # noqa: S608 - constant columns
            "ORDER BY received_id LIMIT ?",
            (PENDING, AVAILABLE, limit),
        ) as cursor:
            return [_received(tuple(row), self._key) for row in await cursor.fetchall()]

    async def set_state(self, received_id: int, state: str, detail: str | None, at: str) -> None:
        """Move a received body to `state`."""
        await self._write(
            "UPDATE received SET state = ?, detail = ?, updated_at = ? WHERE received_id = ?",
            (state, detail, at, received_id),
        )

    async def mark_confirmed(self, received_id: int) -> None:
        """The gateway knows this body was retrieved."""
        await self._write("UPDATE received SET confirmed = 1 WHERE received_id = ?", (received_id,))

    async def purge_received(self, sender: str, message_id: str, at: str) -> int:
        """Remove the bodies of one received message from disk and their keys from the index; how many."""
        async with self._db.execute(
            "SELECT received_id FROM received WHERE sender = ? AND message_id = ? AND state != ?",
            (sender, message_id, PURGED),
        ) as cursor:
            ids = [int(row[0]) for row in await cursor.fetchall()]
        for received_id in ids:
            base = self.root / "received" / str(received_id)
            for suffix in (".ciphertext", ".sealed", ".body"):
                await asyncio.to_thread(base.with_suffix(suffix).unlink, missing_ok=True)
            await self._write(
                "UPDATE received SET state = ?, key_json = x'', detail = NULL, updated_at = ? WHERE received_id = ?",
                (PURGED, at, received_id),
            )
        return len(ids)

    async def purge_uploads(self, plaintext_sha256: Sequence[str]) -> int:
        """Remove the encrypted bodies uploaded with these plaintext digests, and their keys; how many."""
        removed = 0
        for digest in plaintext_sha256:
            async with self._db.execute(
                "SELECT upload_id, ciphertext_sha256 FROM uploads WHERE plaintext_sha256 = ?", (digest,)
            ) as cursor:
                rows = [(str(row[0]), str(row[1])) for row in await cursor.fetchall()]
            for upload_id, ciphertext_sha256 in rows:
                await asyncio.to_thread(self.blob_path(ciphertext_sha256).unlink, missing_ok=True)
                await asyncio.to_thread(self.part_path(upload_id).unlink, missing_ok=True)
                await self._write("DELETE FROM uploads WHERE upload_id = ?", (upload_id,))
                removed += 1
        return removed

    async def forget_purged_bytes(self) -> None:
        """Checkpoint the WAL: the pages that held purged keys leave it (`secure_delete` zeroed them in the file)."""
        async with self._lock, self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)") as cursor:
            await cursor.fetchall()


# -- file work, in a thread: chunked, never a whole body in memory ----------------------------


def _encrypt_file(part: Path, blobs: Path, *, upload_id: str, sender: str, at: str) -> Upload:
    """Encrypt the plaintext at `part` into `blobs/<ciphertext sha256>`; remove the plaintext."""
    stream_id = uuid.uuid4().hex
    encryptor = StreamEncryptor.new(attachment_ad(sender, stream_id))
    scratch = blobs / f".{upload_id}.tmp"
    with part.open("rb") as source, open_private(scratch, "wb") as sink:
        sink.write(encryptor.header)
        while chunk := source.read(IO_CHUNK_BYTES):
            sink.write(encryptor.update(chunk))
        sink.write(encryptor.finish())
        sink.flush()
        os.fsync(sink.fileno())
    scratch.replace(blobs / encryptor.ciphertext_sha256)
    part.unlink()
    return Upload(
        upload_id=upload_id,
        plaintext_sha256=encryptor.plaintext_hash.hexdigest(),
        plaintext_length=encryptor.plaintext_length,
        stream_id=stream_id,
        key=encryptor.key,
        ciphertext_sha256=encryptor.ciphertext_sha256,
        ciphertext_length=encryptor.ciphertext_length,
        created_at=at,
    )


def _file_digest(path: Path) -> tuple[str, int]:
    digest, length = hashlib.sha256(), 0
    with path.open("rb") as source:
        while chunk := source.read(IO_CHUNK_BYTES):
            digest.update(chunk)
            length += len(chunk)
    return digest.hexdigest(), length


def _verify_file(ciphertext: Path, kept: Path, key: AttachmentKey, sender: str) -> None:
    """Check the ciphertext against the signed header, decrypt it, check the plaintext the sender signed.

    The plaintext is not written: the ciphertext, verified, is kept at `kept`.
    """
    digest, length = _file_digest(ciphertext)
    if digest != key.ciphertext_sha256 or length != key.ciphertext_length:
        raise AuthenticationFailed(
            f"the body downloaded ({length} bytes, SHA-256 {digest}) is not the one the sender's header commits to",
            code=ErrorCode.ATTACHMENT_MISMATCH,
        )
    decryptor = key.decryptor(sender)
    with ciphertext.open("rb") as source:
        while chunk := source.read(IO_CHUNK_BYTES):
            decryptor.update(chunk)
        decryptor.finish()
    if decryptor.plaintext_hash.hexdigest() != key.plaintext_sha256 or decryptor.plaintext_length != (
        key.plaintext_length
    ):
        raise AuthenticationFailed(
            "the decrypted body is not the one the sender signed", code=ErrorCode.ATTACHMENT_MISMATCH
        )
    ciphertext.replace(kept)


def _encrypt_plain_body(plain: Path, kept: Path, key: AttachmentKey, sender: str) -> None:
    """A body kept in plain before: encrypted under its own key (a fresh stream header) into `kept`, then removed."""
    encryptor = StreamEncryptor(key.key, attachment_ad(sender, key.stream_id))
    scratch = kept.with_suffix(".tmp")
    with plain.open("rb") as source, open_private(scratch, "wb") as sink:
        sink.write(encryptor.header)
        while chunk := source.read(IO_CHUNK_BYTES):
            sink.write(encryptor.update(chunk))
        sink.write(encryptor.finish())
        sink.flush()
        os.fsync(sink.fileno())
    scratch.replace(kept)
    plain.unlink()


async def _decrypted_range(kept: Path, key: AttachmentKey, sender: str, start: int, stop: int) -> AsyncIterator[bytes]:
    """Plaintext bytes `start` to `stop` of a kept body, decrypted from its beginning (a stream does not seek)."""
    decryptor = key.decryptor(sender)
    position = 0
    with kept.open("rb") as source:
        while position < stop:
            chunk = await asyncio.to_thread(source.read, IO_CHUNK_BYTES)
            plain = decryptor.update(chunk) if chunk else decryptor.finish()
            if not chunk and not plain:
                return
            first, last = max(start, position), min(stop, position + len(plain))
            if first < last:
                yield plain[first - position : last - position]
            position += len(plain)


async def _file_chunks(path: Path, offset: int, end: int) -> AsyncIterator[bytes]:
    with path.open("rb") as source:
        source.seek(offset)
        while offset < end and (chunk := await asyncio.to_thread(source.read, min(IO_CHUNK_BYTES, end - offset))):
            offset += len(chunk)
            yield chunk


def _range_sha256(path: Path, offset: int, end: int) -> str:
    """SHA-256 (hex) of the bytes `offset` to `end` of the file at `path`: what one `PUT` sends."""
    digest = hashlib.sha256()
    with path.open("rb") as source:
        source.seek(offset)
        while offset < end and (chunk := source.read(min(IO_CHUNK_BYTES, end - offset))):
            offset += len(chunk)
            digest.update(chunk)
    return digest.hexdigest()


def _size_within(path: Path, length: int) -> int:
    """Bytes held at `path`; a file longer than `length` cannot be a prefix of the body and is removed."""
    have = path.stat().st_size if path.exists() else 0
    if have > length:
        path.unlink()
        return 0
    return have


def _link_or_copy(source: Path, target: Path) -> None:
    """`target` holds `source`'s bytes: a hard link (no second copy on disk) where the filesystem allows it."""
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
        restrict(target)


def _flush(sink: Any) -> None:  # noqa: ANN401 - a binary file
    sink.flush()
    os.fsync(sink.fileno())


# -- the gateway's blob store, by signed requests -------------------------------------------------


class GatewayBlobClient:
    """Signed requests to the gateway's `/v1/blobs/{sha256}` (gateway.blobs)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        *,
        agency: AgencyId,
        signing_key: SigningPrivateKey,
        clock: Callable[[], datetime],
    ) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._agency = agency
        self._key = signing_key
        self._clock = clock

    def _headers(
        self,
        method: str,
        path: str,
        *,
        body_sha256: str = EMPTY_BODY_SHA256,
        upload_offset: int | None = None,
        upload_length: int | None = None,
    ) -> dict[str, str]:
        """A fresh signature for exactly this request (and its offset headers, when given)."""
        headers = {
            "Authorization": sign_blob_request(
                agency=self._agency,
                key=self._key,
                method=method,
                path=path,
                now=self._clock(),
                body_sha256=body_sha256,
                upload_offset=upload_offset,
                upload_length=upload_length,
            )
        }
        if upload_offset is not None:
            headers["Upload-Offset"] = str(upload_offset)
        if upload_length is not None:
            headers["Upload-Length"] = str(upload_length)
        return headers

    async def offset(self, sha256: str) -> tuple[bool, int]:
        """(stored and readable, bytes held): what `HEAD` says."""
        path = f"/v1/blobs/{sha256}"
        try:
            async with self._session.head(self._base + path, headers=self._headers("HEAD", path)) as response:
                if response.status not in (200, 404):
                    raise GatewayUnavailable(f"HEAD {path}: HTTP {response.status}")
                return response.status == 200, int(response.headers.get("Upload-Offset", "0"))
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise GatewayUnavailable(f"HEAD {path}: {exc!r}") from exc

    async def push(self, sha256: str, path: Path, length: int) -> bool:
        """Upload the body at `path` unless stored, resuming a partial upload; False if the gateway refuses it.

        One `PUT` per `UPLOAD_CHUNK_BYTES`, each signed over the digest of
        exactly the bytes it sends and its offsets.
        """
        stored, offset = await self.offset(sha256)
        if stored:
            return True
        url_path = f"/v1/blobs/{sha256}"
        while True:
            end = min(length, offset + UPLOAD_CHUNK_BYTES)
            chunk_sha256 = await asyncio.to_thread(_range_sha256, path, offset, end)
            headers = self._headers(
                "PUT", url_path, body_sha256=chunk_sha256, upload_offset=offset, upload_length=length
            ) | {"Content-Type": "application/octet-stream"}
            try:
                async with self._session.put(
                    self._base + url_path, data=_file_chunks(path, offset, end), headers=headers
                ) as response:
                    body = await response.text()
                    if response.status == 201 or (response.status == 200 and end >= length):
                        return True
                    if response.status == 200:
                        if "Upload-Offset" not in response.headers:
                            return True  # stored meanwhile
                        offset = int(response.headers["Upload-Offset"])
                        continue
                    if response.status in (409, 429) or response.status >= 500:
                        raise GatewayUnavailable(f"PUT {url_path}: HTTP {response.status}: {body[:200]}")
                    log.warning("blob_push_refused", sha256=sha256, status=response.status, answer=body[:300])
                    return False
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
                raise GatewayUnavailable(f"PUT {url_path}: {exc!r}") from exc

    async def download(self, sha256: str, sink_path: Path, length: int) -> None:
        """Download into `sink_path`, continuing from what it holds (`Range`), until `length` bytes are there."""
        url_path = f"/v1/blobs/{sha256}"
        have = await asyncio.to_thread(_size_within, sink_path, length)
        if have == length:
            return
        headers = self._headers("GET", url_path) | {"Range": f"bytes={have}-"}
        try:
            async with self._session.get(self._base + url_path, headers=headers) as response:
                if response.status == 404:
                    raise AuthenticationFailed(
                        f"the gateway holds no body {sha256} for this agency", code=ErrorCode.ATTACHMENT_MISSING
                    )
                if response.status not in (200, 206):
                    raise GatewayUnavailable(f"GET {url_path}: HTTP {response.status}")
                if response.status == 200:
                    have = 0
                with open_private(sink_path, "r+b" if have else "wb") as sink:
                    sink.truncate(have)
                    sink.seek(have)
                    try:
                        async for chunk in response.content.iter_chunked(IO_CHUNK_BYTES):
                            have += len(chunk)
                            if have > length:
                                # Never more than the sender committed to, whatever the gateway sends.
                                sink.truncate(0)
                                raise AuthenticationFailed(
                                    f"the gateway sends more than the {length} bytes of body {sha256}",
                                    code=ErrorCode.ATTACHMENT_MISMATCH,
                                )
                            await asyncio.to_thread(sink.write, chunk)
                    finally:
                        await asyncio.to_thread(_flush, sink)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise GatewayUnavailable(f"GET {url_path}: {exc!r}") from exc

    async def confirm(self, sha256: str) -> None:
        """Tell the gateway this agency verified its copy."""
        url_path = f"/v1/blobs/{sha256}/retrieved"
        try:
            async with self._session.post(self._base + url_path, headers=self._headers("POST", url_path)) as response:
                # 404: the gateway no longer holds the body (deleted after expiry): nothing left to confirm.
                if response.status not in (200, 404):
                    raise GatewayUnavailable(f"POST {url_path}: HTTP {response.status}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise GatewayUnavailable(f"POST {url_path}: {exc!r}") from exc


class BlobPushingPublisher(SubmitPublisher):
    """The outbox relay's publisher: an envelope goes out only after the bodies it commits to are at the gateway."""

    def __init__(
        self, connector: FailoverConnector, *, routing_key: str, push: Callable[[bytes], Awaitable[None]]
    ) -> None:
        super().__init__(connector, routing_key=routing_key)
        self._push = push

    async def publish(self, *, body: bytes, kind: str, message_id: str) -> None:
        """Push the bodies (raises `TransientFailure` while the gateway is away), then publish."""
        if kind == KIND_SEALED_MESSAGE:
            await self._push(body)
        await super().publish(body=body, kind=kind, message_id=message_id)


# -- the service ---------------------------------------------------------------------------------


def _range_bounds(asked: slice, total: int) -> tuple[int, int]:
    """[start, stop) of a body of `total` bytes that a parsed `Range` asks for (start >= stop: unsatisfiable)."""
    start, stop = asked.start, asked.stop
    if start is None and stop is None:
        return 0, 0
    if start is not None and start < 0:  # the last -start bytes
        return max(0, total + start), total
    return start or 0, total if stop is None else min(stop, total)


async def _serve_decrypted(request: web.Request, kept: Path, body: ReceivedBody) -> web.StreamResponse:
    """The plaintext of a kept body, or the part `Range` asks for (206), decrypted as it is sent."""
    total = body.key.plaintext_length
    try:
        asked = request.http_range
    except ValueError:
        asked = slice(0, 0)
    start, stop, status = 0, total, 200
    if request.headers.get("Range") is not None:
        start, stop = _range_bounds(asked, total)
        if start >= stop:
            response = problem(416, ErrorCode.INVALID_PARAMETER, "Range not satisfiable", f"the body has {total} bytes")
            response.headers["Content-Range"] = f"bytes */{total}"
            return response
        status = 206
    served = web.StreamResponse(status=status)
    served.content_type = "application/octet-stream"
    served.content_length = stop - start
    served.headers["Accept-Ranges"] = "bytes"
    served.headers["Repr-Digest"] = f"sha-256=:{b64encode(bytes.fromhex(body.key.plaintext_sha256))}:"
    if status == 206:
        served.headers["Content-Range"] = f"bytes {start}-{stop - 1}/{total}"
    await served.prepare(request)
    async for piece in _decrypted_range(kept, body.key, body.sender, start, stop):
        await served.write(piece)
    await served.write_eof()
    return served


def _header_int(request: web.Request, name: str) -> int | None:
    raw = request.headers.get(name)
    if raw is None:
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19:
        raise MalformedInput(f"header {name} must be a non-negative integer", code=ErrorCode.INVALID_PARAMETER)
    return int(raw)


class Attachments:
    """Everything about attachment bodies in one agent (the module docstring, steps 1-6)."""

    def __init__(
        self,
        *,
        agency: AgencyId,
        store: AttachmentStore,
        agent_store: AgentStore,
        gateway: GatewayBlobClient,
        limits: Limits,
        clock: Callable[[], datetime],
        max_body_bytes: int = 64 * 1024**3,
        max_received_body_bytes: int = DEFAULT_MAX_RECEIVED_BODY_BYTES,
    ) -> None:
        self._agency = agency
        self._store = store
        self._agent_store = agent_store
        self._gateway = gateway
        self._limits = limits
        self._clock = clock
        self._max_bytes = max_body_bytes
        self._max_received_bytes = max_received_body_bytes
        self._uploads = TryLocks()
        """Uploads in progress, by upload id: one at a time, forgotten once over."""
        self._wake = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None

    @property
    def store(self) -> AttachmentStore:
        """The bodies on disk and their index."""
        return self._store

    @classmethod
    async def open(
        cls,
        *,
        data_dir: Path,
        gateway_url: str,
        gateway_tls: ssl.SSLContext | None = None,
        agency: AgencyId,
        signing_key: SigningPrivateKey,
        storage_key: StorageKey,
        agent_store: AgentStore,
        limits: Limits,
        clock: Callable[[], datetime],
        max_received_body_bytes: int = DEFAULT_MAX_RECEIVED_BODY_BYTES,
    ) -> Attachments:
        """The attachment service of one agent, with its own store and HTTP session to the gateway.

        `gateway_tls` verifies an https:// gateway (None: the system's store).
        """
        store = await AttachmentStore.open(data_dir, storage_key=storage_key)
        # No total timeout: a body of gigabytes takes its time; a stalled socket does not.
        session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60),
            connector=aiohttp.TCPConnector(ssl=True if gateway_tls is None else gateway_tls),
        )
        client = GatewayBlobClient(session, gateway_url, agency=agency, signing_key=signing_key, clock=clock)
        service = cls(
            agency=agency,
            store=store,
            agent_store=agent_store,
            gateway=client,
            limits=limits,
            clock=clock,
            max_received_body_bytes=max_received_body_bytes,
        )
        service._session = session
        return service

    async def close(self) -> None:
        """Close the HTTP session and the store."""
        if self._session is not None:
            await self._session.close()
        await self._store.close()

    # -- 1. upload ---------------------------------------------------------------------------

    def routes(self) -> list[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]]:
        """(method, path, handler) of the attachment endpoints of the agent API."""
        return [
            ("POST", "/v1/attachments", self.upload),
            ("HEAD", "/v1/attachments/uploads/{upload_id}", self.upload_offset),
            ("GET", "/v1/inbox/{message_id}/attachments/{attachment_id:[^{}]+}", self.download),
        ]

    async def upload(self, request: web.Request) -> web.StreamResponse:
        """`POST /v1/attachments`: stream a body in (resumable); `201 {"sha256", "size_bytes"}` once whole."""
        if request.content_type != "application/octet-stream":
            return problem(
                415,
                ErrorCode.UNSUPPORTED_MEDIA_TYPE,
                "Unsupported media type",
                f"expected application/octet-stream, found {request.content_type[:80]!r}",
            )
        upload_id = request.headers.get("Upload-Id") or uuid.uuid4().hex
        if not _UPLOAD_ID.match(upload_id):
            raise MalformedInput("Upload-Id must be 1 to 64 of A-Z a-z 0-9 _ -", code=ErrorCode.INVALID_PARAMETER)
        offset = _header_int(request, "Upload-Offset") or 0
        length = _header_int(request, "Upload-Length")
        if length is not None and length > self._max_bytes:
            return problem(413, ErrorCode.TOO_LARGE, "Too large", f"a body is at most {self._max_bytes} bytes")
        done = await self._store.upload(upload_id)
        if done is not None:
            return self._uploaded(done)
        with self._uploads.try_hold(upload_id) as held:
            if not held:
                raise Conflict(f"upload {upload_id} is in progress", ErrorCode.UPLOAD_OFFSET_MISMATCH)
            part = self._store.part_path(upload_id)
            have = part.stat().st_size if part.exists() else 0
            if offset != have:
                response = problem(
                    409, ErrorCode.UPLOAD_OFFSET_MISMATCH, "Wrong offset", f"{have} bytes are held, not {offset}"
                )
                response.headers["Upload-Offset"] = str(have)
                return response
            try:
                received = await self._receive(request, part, offset, length)
            except OSError as exc:
                raise StoreUnavailable(f"cannot write upload {upload_id}: {exc}") from exc
            if length is not None and received < length:
                return web.json_response(
                    {"upload_id": upload_id, "offset": received, "complete": False},
                    headers={"Upload-Offset": str(received)},
                )
            upload = await asyncio.to_thread(
                _encrypt_file,
                part,
                self._store.root / "blobs",
                upload_id=upload_id,
                sender=self._agency,
                at=format_timestamp(self._clock()),
            )
            await self._store.insert_upload(upload)
        log.info("attachment_uploaded", upload_id=upload_id, size_bytes=upload.plaintext_length)
        return self._uploaded(upload)

    async def _receive(self, request: web.Request, part: Path, offset: int, length: int | None) -> int:
        received = offset
        limit = self._max_bytes if length is None else length
        with open_private(part, "r+b" if offset else "wb") as sink:
            sink.truncate(offset)
            sink.seek(offset)
            try:
                async for chunk in request.content.iter_chunked(IO_CHUNK_BYTES):
                    received += len(chunk)
                    if received > limit:
                        raise ContentInvalid(
                            f"the body is longer than {limit} bytes",
                            (FieldError(("Upload-Length",), "the body is longer than announced"),),
                        )
                    await asyncio.to_thread(sink.write, chunk)
            finally:
                await asyncio.to_thread(_flush, sink)
        return received

    def _uploaded(self, upload: Upload) -> web.Response:
        return web.json_response(
            {
                "sha256": upload.plaintext_sha256,
                "size_bytes": upload.plaintext_length,
                "upload_id": upload.upload_id,
            },
            status=201,
        )

    async def upload_offset(self, request: web.Request) -> web.StreamResponse:
        """`HEAD /v1/attachments/uploads/{id}`: `Upload-Offset` of a partial upload (or the size of a whole one)."""
        upload_id = request.match_info["upload_id"]
        if not _UPLOAD_ID.match(upload_id):
            return web.Response(status=404)
        done = await self._store.upload(upload_id)
        if done is not None:
            return web.Response(headers={"Upload-Offset": str(done.plaintext_length), "Upload-Complete": "?1"})
        part = self._store.part_path(upload_id)
        if not part.exists():
            return web.Response(status=404)
        return web.Response(headers={"Upload-Offset": str(part.stat().st_size), "Upload-Complete": "?0"})

    # -- 2. submission -------------------------------------------------------------------------

    async def keys_for(self, fields: Mapping[str, Any]) -> tuple[AttachmentKey, ...]:
        """The key of each listed attachment whose body was uploaded here (matched by `sha256`)."""
        entries = fields.get("attachments")
        if not isinstance(entries, list):
            return ()
        keys: list[AttachmentKey] = []
        uploads = await self._store.uploads_of(
            [entry["sha256"] for entry in entries if isinstance(entry, dict) and isinstance(entry.get("sha256"), str)]
        )
        for index, entry in enumerate(entries):
            if not isinstance(entry, dict):
                continue
            attachment_id, sha256 = entry.get("attachment_id"), entry.get("sha256")
            if not isinstance(attachment_id, str) or not isinstance(sha256, str):
                continue  # the content model reports it
            upload = uploads.get(sha256)
            if upload is None:
                continue  # a description only
            size = entry.get("size_bytes")
            if size is not None and size != upload.plaintext_length:
                raise ContentInvalid(
                    f"attachment {attachment_id[:64]!r}: size_bytes says {size}, the body uploaded with this "
                    f"sha256 has {upload.plaintext_length} bytes",
                    (FieldError(("attachments", index, "size_bytes"), "does not match the uploaded body"),),
                )
            try:
                keys.append(upload.key_for(attachment_id))
            except ValidationError:
                continue  # an invalid attachment id: the content model reports it
        return tuple(keys)

    # -- 3. push before publishing ---------------------------------------------------------------

    async def push_for(self, sealed_bytes: bytes) -> None:
        """Upload to the gateway every body this (own, outgoing) envelope commits to."""
        try:
            sealed = SealedMessage.from_bytes(sealed_bytes, self._limits)
            header = parse_model(EnvelopeHeader, sealed.header_bytes, what="envelope header")
        except ProtocolError as exc:
            log.warning("outgoing_header_unreadable", error=exc.detail[:200])
            return
        for commitment in header.attachments or ():
            path = self._store.blob_path(commitment.ciphertext_sha256)
            if not path.exists():
                # The gateway will refuse the envelope (ATTACHMENT_MISSING): negative evidence for the sender.
                log.warning("attachment_body_missing", message_id=str(header.message_id), sha256=path.name)
                continue
            pushed = await self._gateway.push(commitment.ciphertext_sha256, path, commitment.ciphertext_length)
            log.info(
                "attachment_pushed" if pushed else "attachment_push_refused",
                message_id=str(header.message_id),
                attachment_id=commitment.attachment_id,
                size_bytes=commitment.ciphertext_length,
            )

    # -- 4. receiving ------------------------------------------------------------------------------

    async def accept_opened(self, opened: OpenedMessage, document: MessageDocument) -> None:
        """Each body's key names an entry of the document with its plaintext digest; record them as pending."""
        if not opened.attachments:
            return
        entries = {entry.attachment_id: entry for entry in document.attachments}
        for key in opened.attachments:
            entry = entries.get(key.attachment_id)
            if (
                entry is None
                or entry.sha256 != key.plaintext_sha256
                or (entry.size_bytes is not None and entry.size_bytes != key.plaintext_length)
            ):
                raise AuthenticationFailed(
                    f"attachment body {key.attachment_id} is not the one the document lists",
                    code=ErrorCode.ATTACHMENT_MISMATCH,
                )
        header = opened.header
        await self._store.record_received(
            header.sender, str(header.message_id), opened.attachments, format_timestamp(self._clock())
        )
        self._wake.set()

    # -- 5. fetching -------------------------------------------------------------------------------

    async def run(self, stopping: asyncio.Event, *, interval: float = 2.0) -> None:
        """Fetch pending bodies until `stopping` is set."""
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=interval)
            self._wake.clear()
            try:
                await self.fetch_pending()
            except (TransientFailure, OSError) as exc:  # the gateway away, or the disk full: try again later
                log.warning("attachment_fetch_retry", error=str(exc)[:300])
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), timeout=interval)

    async def fetch_pending(self) -> int:
        """Download, verify and decrypt what is pending; returns how many bodies became available."""
        made = 0
        for body in await self._store.to_fetch():
            now = self._clock()
            if body.state == AVAILABLE:
                await self._gateway.confirm(body.key.ciphertext_sha256)
                await self._store.mark_confirmed(body.received_id)
                continue
            if await self._agent_store.inbox_entry_of(body.sender, body.message_id) is None:
                if now - parse_timestamp(body.recorded_at) > ORPHAN_AFTER:
                    await self._store.set_state(
                        body.received_id, ORPHANED, "the message was not stored", format_timestamp(now)
                    )
                continue
            ciphertext, kept = self._store.received_paths(body)
            try:
                if await self._copied_from_sibling(body, kept):
                    await self._store.set_state(body.received_id, AVAILABLE, None, format_timestamp(self._clock()))
                    await self._store.mark_confirmed(body.received_id)
                    made += 1
                    continue
                if body.key.ciphertext_length > self._max_received_bytes:
                    raise LimitExceeded(
                        f"the body is {body.key.ciphertext_length} bytes, this agent downloads at most "
                        f"{self._max_received_bytes}",
                        code=ErrorCode.TOO_LARGE,
                    )
                await self._gateway.download(body.key.ciphertext_sha256, ciphertext, body.key.ciphertext_length)
                await asyncio.to_thread(_verify_file, ciphertext, kept, body.key, body.sender)
            except ProtocolError as exc:
                ciphertext.unlink(missing_ok=True)
                await self._store.set_state(
                    body.received_id, FAILED, f"{exc.code}: {exc.detail[:300]}", format_timestamp(now)
                )
                log.warning(
                    "attachment_refused", message_id=body.message_id, attachment_id=body.attachment_id, code=exc.code
                )
                continue
            await self._store.set_state(body.received_id, AVAILABLE, None, format_timestamp(self._clock()))
            made += 1
            log.info("attachment_received", message_id=body.message_id, attachment_id=body.attachment_id)
            await self._gateway.confirm(body.key.ciphertext_sha256)
            await self._store.mark_confirmed(body.received_id)
        return made

    async def _copied_from_sibling(self, body: ReceivedBody, kept: Path) -> bool:
        """Whether an earlier body of the same message with the same ciphertext gave this one its copy.

        A message may name one body under several attachment ids; it is
        downloaded once. The same ciphertext under another key is refused
        (`ATTACHMENT_MISMATCH`), as it is refused again when it would not
        decrypt; one that failed fails its siblings without a second download.
        """
        siblings = [
            other
            for other in await self._store.received_for(body.sender, body.message_id)
            if other.received_id < body.received_id and other.key.ciphertext_sha256 == body.key.ciphertext_sha256
        ]
        if not siblings:
            return False
        first = siblings[0]
        if first.key.model_copy(update={"attachment_id": body.key.attachment_id}) != body.key:
            raise AuthenticationFailed(
                f"attachment {body.attachment_id} names the body of {first.attachment_id} under another key",
                code=ErrorCode.ATTACHMENT_MISMATCH,
            )
        if first.state == FAILED:
            raise AuthenticationFailed(
                f"the same body as attachment {first.attachment_id}, refused: {first.detail}",
                code=ErrorCode.ATTACHMENT_MISMATCH,
            )
        if first.state != AVAILABLE:
            raise GatewayUnavailable(f"attachment {first.attachment_id}, the same body, is not fetched yet")
        _, source = self._store.received_paths(first)
        await asyncio.to_thread(_link_or_copy, source, kept)
        return True

    # -- 6. the inbox and downloads -------------------------------------------------------------------

    async def describe(self, sender: str, message_id: str, document: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Each attachment entry of a received document with the state of its body."""
        bodies = {body.attachment_id: body for body in await self._store.received_for(sender, message_id)}
        described = []
        for entry in document.get("attachments") or ():
            if not isinstance(entry, dict):
                continue
            body = bodies.get(str(entry.get("attachment_id")))
            item: dict[str, Any] = {
                "attachment_id": entry.get("attachment_id"),
                "sha256": entry.get("sha256"),
                "size_bytes": None if body is None else body.key.plaintext_length,
                "state": DESCRIPTION_ONLY if body is None else body.state,
            }
            if body is not None and body.detail is not None:
                item["detail"] = body.detail
            described.append(item)
        return described

    async def download(self, request: web.Request) -> web.StreamResponse:  # noqa: PLR0911 - one answer per refusal
        """`GET /v1/inbox/{message_id}/attachments/{attachment_id}`: the verified plaintext, with `Range`."""
        message_id = request.match_info["message_id"]
        attachment_id = request.match_info["attachment_id"]
        records = await self._agent_store.inbox_by_message_id(message_id)
        sender = request.query.get("sender")
        if sender is not None:
            records = [record for record in records if record.sender == sender]
        purged = [record for record in records if record.content_purged_at is not None]
        records = [  # above the token's clearance (the message's marking or the attachment's own): as if not there
            record
            for record in records
            if record.content_purged_at is None
            and readable(request, record.document, message_id=record.message_id)
            and readable(request, _listed_marking(record.document, attachment_id), message_id=record.message_id)
        ]
        if not records and purged:
            trail = await self._agent_store.purges(message_id=purged[0].message_id)
            if readable(request, trail[0].classification if trail else "", message_id=purged[0].message_id):
                return problem(
                    410,
                    ErrorCode.CONTENT_PURGED,
                    "Content purged",
                    f"the content of message {message_id[:64]} and its attachments were purged (retention)",
                    extra={"content_purged_at": purged[0].content_purged_at},
                )
        if not records:
            return problem(404, ErrorCode.NOT_FOUND, "Unknown message", f"no received message {message_id[:64]}")
        if len(records) > 1:
            return problem(
                409, ErrorCode.AMBIGUOUS_MESSAGE_ID, "Ambiguous message id", "add ?sender=AGENCY-ID to choose one"
            )
        record = records[0]
        bodies = await self._store.received_for(record.sender, record.message_id)
        body = next((body for body in bodies if body.attachment_id == attachment_id), None)
        if body is None:
            return problem(
                404,
                ErrorCode.NOT_FOUND,
                "No body",
                f"attachment {attachment_id[:64]!r} travelled as a description only, or is not listed",
            )
        if body.state == PENDING:
            response = problem(503, ErrorCode.ATTACHMENT_NOT_READY, "Not yet", "the body is being fetched and verified")
            response.headers["Retry-After"] = "2"
            return response
        if body.state != AVAILABLE:
            return problem(409, ErrorCode.ATTACHMENT_MISMATCH, "Body refused", body.detail or "the body did not verify")
        _, kept = self._store.received_paths(body)
        return await _serve_decrypted(request, kept, body)


def _listed_marking(document: bytes, attachment_id: str) -> str:
    """The marking the document gives the attachment, else `UNCLASSIFIED` (the message's own then governs)."""
    parsed = json.loads(document)
    for listed in parsed.get("attachments") or ():
        if isinstance(listed, dict) and listed.get("attachment_id") == attachment_id:
            return str(listed.get("classification") or "UNCLASSIFIED")
    return "UNCLASSIFIED"


__all__ = [
    "AttachmentStore",
    "Attachments",
    "BlobPushingPublisher",
    "GatewayBlobClient",
    "GatewayUnavailable",
    "Upload",
]
