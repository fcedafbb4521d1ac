"""The gateway's blob store: attachment bodies, encrypted by their senders, held until retrieved.

Attachment bodies travel out of band of the broker (docs/ATTACHMENTS.md says
why): the sending agent uploads each body's ciphertext here before it
publishes the envelope that commits to it, and the recipient agents download
it from here after they accepted that envelope. The gateway never holds a key
that opens a body; it proves which ciphertext travelled (the signed header
commits to its SHA-256 and length, logged in an `attachments` leaf).

* **Content-addressed.** A body is stored under the SHA-256 of its ciphertext,
  `<data>/blobs/objects/<aa>/<sha256>`; an upload is written to a partial file
  of its uploader and renamed into place only once its length and digest are
  the ones it is addressed by. Nothing unverified is ever readable.
* **Each agency sees its own.** Every request is signed by the agency's
  directory key (`protocol.attachments.verify_blob_request`). An agency may
  upload, resume and read back its own uploads, and read a body only once the
  gateway accepted a message addressed to it that commits to that body (a
  *grant*, recorded at acceptance).
* **Resumable.** `HEAD` answers `Upload-Offset` (bytes of a partial upload
  durably received); `PUT` continues from that offset. `GET` honours `Range`.
* **Deleted after retrieval.** A recipient confirms retrieval after it has
  verified the body; once every recipient did and the retention period has
  passed (or the message expired unretrieved, plus the retention period), the
  body is deleted and a `blob_deleted` leaf records it.

The gateway pipeline refuses (with `SUBMISSION_REJECTED`, `ATTACHMENT_MISSING`
or `ATTACHMENT_MISMATCH`) an envelope whose committed bodies are not stored,
have another length, or were uploaded by another agency (`AttachmentGate`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final, Literal

import aiohttp
import aiosqlite
import structlog
from aiohttp import web

from gateway.auditlog import AuditLog
from protocol.attachments import verify_blob_request
from protocol.auditlog import AttachmentsLeaf, BlobDeletedLeaf
from protocol.directory import Directory
from protocol.encoding import format_timestamp, parse_timestamp
from protocol.envelope import AuthenticatedHeader, SealedMessage
from protocol.errors import ErrorCode, PolicyDenied, ProtocolError
from protocol.ids import AgencyId
from runtime.errors import StoreUnavailable, TransientFailure
from runtime.http import Handler, problem
from runtime.sqlite import open_index

log = structlog.get_logger("rogatory.gateway.blobs")

IO_CHUNK_BYTES: Final = 1024 * 1024
"""Bytes read or written at once: memory stays at a few of these whatever the body's size."""
_SHA256 = re.compile(r"^[0-9a-f]{64}$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS blobs (
    sha256 TEXT PRIMARY KEY,
    length INTEGER NOT NULL,
    uploader TEXT NOT NULL,
    stored_at TEXT NOT NULL,
    deleted_at TEXT
);
CREATE TABLE IF NOT EXISTS grants (
    sha256 TEXT NOT NULL,
    sender TEXT NOT NULL,
    message_id TEXT NOT NULL,
    recipient TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    retrieved_at TEXT,
    PRIMARY KEY (sha256, sender, message_id, recipient)
);
CREATE INDEX IF NOT EXISTS grants_recipient ON grants (recipient, sha256);
"""


@dataclass(frozen=True, slots=True)
class BlobRecord:
    """One stored body."""

    sha256: str
    length: int
    uploader: str
    stored_at: str


@dataclass(frozen=True, slots=True)
class Deletion:
    """A body due for deletion, and why."""

    blob: BlobRecord
    reason: Literal["retrieved", "expired", "unreferenced"]
    messages: tuple[str, ...]
    retrieved_by: tuple[str, ...]


class BlobStore:
    """Bodies on the filesystem, their uploaders and grants in SQLite (`<data>/blobs.db`)."""

    def __init__(self, root: Path, db: aiosqlite.Connection) -> None:
        self._root = root
        self._db = db
        self._write_lock = asyncio.Lock()
        self._upload_locks: dict[tuple[str, str], asyncio.Lock] = {}

    @classmethod
    async def open(cls, data_dir: Path) -> BlobStore:
        """Open (creating if needed) the store under `data_dir`."""
        root = data_dir / "blobs"
        (root / "objects").mkdir(parents=True, exist_ok=True)
        (root / "partial").mkdir(parents=True, exist_ok=True)
        db = await open_index(data_dir / "blobs.db", _SCHEMA, what="blob index")
        return cls(root, db)

    async def close(self) -> None:
        """Close the index."""
        await self._db.close()

    def object_path(self, sha256: str) -> Path:
        """Where a complete body lives."""
        return self._root / "objects" / sha256[:2] / sha256

    def partial_path(self, agency: str, sha256: str) -> Path:
        """Where an agency's partial upload of a body lives."""
        return self._root / "partial" / agency / sha256

    async def _write(self, query: str, params: tuple[object, ...]) -> int:
        async with self._write_lock:
            try:
                cursor = await self._db.execute(query, params)
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"cannot write the blob index: {exc}") from exc
            return cursor.rowcount

    async def blob(self, sha256: str) -> BlobRecord | None:
        """The stored (not deleted) body with this digest, if any."""
        async with self._db.execute(
            "SELECT sha256, length, uploader, stored_at FROM blobs WHERE sha256 = ? AND deleted_at IS NULL", (sha256,)
        ) as cursor:
            row = await cursor.fetchone()
        return None if row is None else BlobRecord(str(row[0]), int(row[1]), str(row[2]), str(row[3]))

    async def may_read(self, agency: str, sha256: str) -> bool:
        """The agency uploaded this body, or a message addressed to it that commits to it was accepted."""
        blob = await self.blob(sha256)
        if blob is None:
            return False
        if blob.uploader == agency:
            return True
        async with self._db.execute(
            "SELECT 1 FROM grants WHERE sha256 = ? AND recipient = ? LIMIT 1", (sha256, agency)
        ) as cursor:
            return await cursor.fetchone() is not None

    def received_bytes(self, agency: str, sha256: str) -> int:
        """Bytes of `agency`'s partial upload of `sha256` on disk (0 if none)."""
        try:
            return self.partial_path(agency, sha256).stat().st_size
        except FileNotFoundError:
            return 0

    def upload_lock(self, agency: str, sha256: str) -> asyncio.Lock:
        """One upload of one body by one agency at a time."""
        return self._upload_locks.setdefault((agency, sha256), asyncio.Lock())

    async def receive(
        self, agency: str, sha256: str, *, offset: int, length: int, chunks: AsyncIterator[bytes], now: datetime
    ) -> int:
        """Append `chunks` to the partial upload at `offset`; store the body once complete and verified.

        Returns the bytes received so far (`length` once stored). A body whose
        digest is not its address is discarded and refused.
        """
        partial = self.partial_path(agency, sha256)
        partial.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256() if offset == 0 else None
        received = offset
        with open(partial, "r+b" if offset else "wb") as sink:  # noqa: PTH123, ASYNC230 - large sequential I/O, chunked
            sink.truncate(offset)
            sink.seek(offset)
            try:
                async for chunk in chunks:
                    if received + len(chunk) > length:
                        raise PolicyDenied(
                            f"the body is longer than its Upload-Length of {length}", code=ErrorCode.ATTACHMENT_MISMATCH
                        )
                    await asyncio.to_thread(sink.write, chunk)
                    if digest is not None:
                        digest.update(chunk)
                    received += len(chunk)
            finally:
                await asyncio.to_thread(_flush, sink)
        if received < length:
            return received
        actual = digest.hexdigest() if digest is not None else await asyncio.to_thread(_file_sha256, partial)
        if actual != sha256:
            partial.unlink(missing_ok=True)
            raise PolicyDenied(
                f"the body uploaded has digest {actual}, not the {sha256} it is addressed by",
                code=ErrorCode.ATTACHMENT_MISMATCH,
            )
        target = self.object_path(sha256)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial.replace(target)
        await self._write(
            "INSERT INTO blobs (sha256, length, uploader, stored_at) VALUES (?,?,?,?) "
            "ON CONFLICT (sha256) DO UPDATE SET deleted_at = NULL, uploader = excluded.uploader, "
            "stored_at = excluded.stored_at WHERE blobs.deleted_at IS NOT NULL",
            (sha256, length, agency, format_timestamp(now)),
        )
        log.info("blob_stored", sha256=sha256, length=length, uploader=agency)
        return length

    async def grant(self, sha256: str, *, sender: str, message_id: str, recipient: str, expires_at: str) -> None:
        """Let `recipient` read `sha256`: an accepted message addressed to it commits to it."""
        await self._write(
            "INSERT OR IGNORE INTO grants (sha256, sender, message_id, recipient, expires_at) VALUES (?,?,?,?,?)",
            (sha256, sender, message_id, recipient, expires_at),
        )

    async def mark_retrieved(self, sha256: str, recipient: str, now: datetime) -> int:
        """The recipient verified its copy: count down to deletion. Returns the grants marked."""
        return await self._write(
            "UPDATE grants SET retrieved_at = COALESCE(retrieved_at, ?) WHERE sha256 = ? AND recipient = ?",
            (format_timestamp(now), sha256, recipient),
        )

    async def due_for_deletion(self, now: datetime, *, retention: timedelta, unreferenced: timedelta) -> list[Deletion]:
        """Bodies whose every recipient retrieved them (or whose messages expired), plus `retention`, are over."""
        async with self._db.execute(
            "SELECT sha256, length, uploader, stored_at FROM blobs WHERE deleted_at IS NULL"
        ) as cursor:
            blobs = [BlobRecord(str(r[0]), int(r[1]), str(r[2]), str(r[3])) for r in await cursor.fetchall()]
        due: list[Deletion] = []
        for blob in blobs:
            async with self._db.execute(
                "SELECT message_id, recipient, expires_at, retrieved_at FROM grants WHERE sha256 = ?", (blob.sha256,)
            ) as cursor:
                grants = list(await cursor.fetchall())
            messages = tuple(sorted({str(g[0]) for g in grants}))
            retrieved_by = tuple(sorted({str(g[1]) for g in grants if g[3] is not None}))
            if not grants:
                if now >= parse_timestamp(blob.stored_at) + unreferenced:
                    due.append(Deletion(blob, "unreferenced", messages, retrieved_by))
            elif all(g[3] is not None for g in grants):
                if now >= max(parse_timestamp(str(g[3])) for g in grants) + retention:
                    due.append(Deletion(blob, "retrieved", messages, retrieved_by))
            elif now >= max(parse_timestamp(str(g[2])) for g in grants) + retention:
                due.append(Deletion(blob, "expired", messages, retrieved_by))
        return due

    async def forget(self, sha256: str, now: datetime) -> None:
        """Mark the body deleted and remove its file."""
        await self._write(
            "UPDATE blobs SET deleted_at = ? WHERE sha256 = ? AND deleted_at IS NULL", (format_timestamp(now), sha256)
        )
        self.object_path(sha256).unlink(missing_ok=True)


def _flush(sink: object) -> None:
    sink.flush()  # type: ignore[attr-defined]
    os.fsync(sink.fileno())  # type: ignore[attr-defined]


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as source:  # noqa: PTH123 - chunked read
        while chunk := source.read(IO_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


# -- the pipeline's step: bodies present before acceptance ------------------------------------


class AttachmentGate:
    """What the ingress pipeline asks of the blob store, and what it records in the log."""

    def __init__(self, store: BlobStore) -> None:
        self._store = store

    async def check(self, authenticated: AuthenticatedHeader) -> None:
        """Every body the header commits to is stored, with that length, uploaded by the sender."""
        header = authenticated.header
        for commitment in header.attachments or ():
            blob = await self._store.blob(commitment.ciphertext_sha256)
            if blob is None:
                raise PolicyDenied(
                    f"attachment {commitment.attachment_id}: no body {commitment.ciphertext_sha256} was uploaded",
                    code=ErrorCode.ATTACHMENT_MISSING,
                )
            if blob.length != commitment.ciphertext_length or blob.uploader != header.sender:
                raise PolicyDenied(
                    f"attachment {commitment.attachment_id}: the body stored under {commitment.ciphertext_sha256} "
                    f"is {blob.length} bytes from {blob.uploader}, the header commits to "
                    f"{commitment.ciphertext_length} bytes from {header.sender}",
                    code=ErrorCode.ATTACHMENT_MISMATCH,
                )

    async def record(
        self, audit: AuditLog, authenticated: AuthenticatedHeader, sealed: SealedMessage, now: datetime
    ) -> None:
        """Log the bodies with the signed header that commits to them; let each recipient read them."""
        header = authenticated.header
        if not header.attachments:
            return
        leaf = AttachmentsLeaf(
            identity=f"attachments/{header.sender}/{header.message_id}",
            at=now,
            sender=header.sender,
            message_id=str(header.message_id),
            message_digest=authenticated.digest,
            signer_key_id=sealed.signer_key_id,
            header=sealed.header_bytes,
            header_signature=sealed.header_signature,
            attachments=header.attachments,
        )
        async with audit.transaction() as atx:
            await atx.append(
                leaf, at=now, message_id=str(header.message_id), agencies=(header.sender, *header.recipient_agencies)
            )
        for commitment in header.attachments:
            for recipient in header.recipient_agencies:
                await self._store.grant(
                    commitment.ciphertext_sha256,
                    sender=header.sender,
                    message_id=str(header.message_id),
                    recipient=recipient,
                    expires_at=format_timestamp(header.expires_at),
                )


# -- deletion after retrieval ------------------------------------------------------------------


class BlobSweeper:
    """Deletes bodies whose time is over, each deletion first recorded in the audit log."""

    def __init__(
        self,
        store: BlobStore,
        audit: AuditLog,
        *,
        clock: Callable[[], datetime],
        retention: timedelta,
        unreferenced: timedelta,
    ) -> None:
        self._store = store
        self._audit = audit
        self._clock = clock
        self._retention = retention
        self._unreferenced = unreferenced

    async def sweep(self) -> int:
        """Delete what is due; return how many bodies were deleted."""
        now = self._clock()
        due = await self._store.due_for_deletion(now, retention=self._retention, unreferenced=self._unreferenced)
        for deletion in due:
            blob = deletion.blob
            leaf = BlobDeletedLeaf(
                identity=f"blob_deleted/{blob.sha256}/{blob.stored_at}",
                at=now,
                ciphertext_sha256=blob.sha256,
                ciphertext_length=blob.length,
                uploader=AgencyId(blob.uploader),
                stored_at=parse_timestamp(blob.stored_at),
                reason=deletion.reason,
                messages=deletion.messages,
                retrieved_by=tuple(AgencyId(agency) for agency in deletion.retrieved_by),
            )
            async with self._audit.transaction() as atx:
                await atx.append(leaf, at=now, agencies=(blob.uploader, *deletion.retrieved_by))
            await self._store.forget(blob.sha256, now)
            log.info("blob_deleted", sha256=blob.sha256, reason=deletion.reason, length=blob.length)
        return len(due)

    async def run(self, stopping: asyncio.Event, *, interval: float) -> None:
        """Sweep every `interval` seconds until `stopping` is set."""
        while not stopping.is_set():
            try:
                await self.sweep()
            except TransientFailure as exc:
                log.warning("blob_sweep_failed", error=str(exc)[:300])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=interval)


# -- HTTP --------------------------------------------------------------------------------------


class _Refused(Exception):
    """A request refused before its handler did anything: the answer to give."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


def _header_int(request: web.Request, name: str, default: int | None = None) -> int | None:
    raw = request.headers.get(name)
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19:
        raise _Refused(problem(400, ErrorCode.INVALID_PARAMETER, "Invalid header", f"{name} must be an integer"))
    return int(raw)


def _answering(handler: Handler) -> Handler:
    async def answer(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except _Refused as refused:
            return refused.response

    return answer


class BlobApi:
    """`/v1/blobs/{sha256}`: upload (`PUT`, resumable), probe (`HEAD`), download (`GET`, ranges), confirm."""

    def __init__(
        self,
        store: BlobStore,
        *,
        directory: Callable[[], Directory],
        clock: Callable[[], datetime],
        max_blob_bytes: int,
    ) -> None:
        self._store = store
        self._directory = directory
        self._clock = clock
        self._max_bytes = max_blob_bytes

    def routes(self) -> list[tuple[str, str, Handler]]:
        """(method, path, handler) of each endpoint; each authenticates its own signed requests."""
        return [
            ("PUT", "/v1/blobs/{sha256}", _answering(self.put)),
            ("HEAD", "/v1/blobs/{sha256}", _answering(self.head)),
            ("GET", "/v1/blobs/{sha256}", _answering(self.get)),
            ("POST", "/v1/blobs/{sha256}/retrieved", _answering(self.retrieved)),
        ]

    def _caller(self, request: web.Request) -> tuple[str, str]:
        """(agency, sha256) of a signed request; raise a 401 or 400 answer otherwise."""
        sha256 = request.match_info["sha256"]
        if not _SHA256.match(sha256):
            raise _Refused(
                problem(400, ErrorCode.INVALID_PARAMETER, "Invalid address", "expected the hex SHA-256 of a ciphertext")
            )
        try:
            agency = verify_blob_request(
                request.headers.get("Authorization", ""),
                method=request.method,
                path=request.path,
                directory=self._directory(),
                now=self._clock(),
            )
        except ProtocolError as exc:
            response = problem(401, ErrorCode.UNAUTHORIZED, "Unauthorized", f"a signed request is required: {exc}")
            response.headers["WWW-Authenticate"] = "Rogatory-Signed"
            raise _Refused(response) from exc
        return agency, sha256

    async def head(self, request: web.Request) -> web.StreamResponse:
        """200 with `Upload-Offset` = length if the caller may read it; else 404 with its partial offset."""
        agency, sha256 = self._caller(request)
        blob = await self._store.blob(sha256)
        if blob is not None and await self._store.may_read(agency, sha256):
            return web.Response(status=200, headers={"Upload-Offset": str(blob.length), "Upload-Complete": "?1"})
        offset = self._store.received_bytes(agency, sha256)
        return web.Response(status=404, headers={"Upload-Offset": str(offset), "Upload-Complete": "?0"})

    async def put(self, request: web.Request) -> web.StreamResponse:  # noqa: PLR0911 - one answer per outcome
        """Receive the body from `Upload-Offset` (default 0) towards `Upload-Length`; 201 once stored."""
        agency, sha256 = self._caller(request)
        length = _header_int(request, "Upload-Length")
        offset = _header_int(request, "Upload-Offset", 0)
        assert offset is not None
        if length is None or length > self._max_bytes:
            return problem(
                413 if length is not None else 400,
                ErrorCode.TOO_LARGE if length is not None else ErrorCode.INVALID_PARAMETER,
                "Upload-Length",
                f"Upload-Length is required and at most {self._max_bytes} bytes",
            )
        existing = await self._store.blob(sha256)
        if existing is not None:
            if existing.uploader != agency:
                return problem(409, ErrorCode.FORBIDDEN, "Stored", "another agency stored this body")
            return web.json_response({"sha256": sha256, "size_bytes": existing.length}, status=200)
        lock = self._store.upload_lock(agency, sha256)
        if lock.locked():
            return problem(409, ErrorCode.UPLOAD_OFFSET_MISMATCH, "Busy", "this body is being uploaded already")
        async with lock:
            have = self._store.received_bytes(agency, sha256)
            if offset != have:
                response = problem(
                    409, ErrorCode.UPLOAD_OFFSET_MISMATCH, "Wrong offset", f"{have} bytes are held, not {offset}"
                )
                response.headers["Upload-Offset"] = str(have)
                return response
            try:
                received = await self._store.receive(
                    agency,
                    sha256,
                    offset=offset,
                    length=length,
                    chunks=request.content.iter_chunked(IO_CHUNK_BYTES),
                    now=self._clock(),
                )
            except PolicyDenied as exc:
                return problem(422, exc.code, "Refused", exc.detail)
            except (aiohttp.ClientError, ConnectionError) as exc:
                log.info("blob_upload_interrupted", sha256=sha256, uploader=agency, error=str(exc)[:200])
                raise
            except OSError as exc:
                log.warning("blob_store_unwritable", sha256=sha256, error=str(exc)[:200])
                response = problem(503, ErrorCode.SERVICE_UNAVAILABLE, "Unavailable", "the blob store cannot write")
                response.headers["Retry-After"] = "5"
                return response
        if received < length:
            return web.json_response(
                {"sha256": sha256, "offset": received, "complete": False},
                status=200,
                headers={"Upload-Offset": str(received)},
            )
        return web.json_response({"sha256": sha256, "size_bytes": length, "complete": True}, status=201)

    async def get(self, request: web.Request) -> web.StreamResponse:
        """The body, streamed from disk (with `Range`), to its uploader or an agency it was addressed to."""
        agency, sha256 = self._caller(request)
        if not await self._store.may_read(agency, sha256):
            return problem(404, ErrorCode.NOT_FOUND, "Not found", "no body with this digest is addressed to you")
        return web.FileResponse(self._store.object_path(sha256), chunk_size=256 * 1024)

    async def retrieved(self, request: web.Request) -> web.StreamResponse:
        """The caller verified its copy: start the retention period before deletion."""
        agency, sha256 = self._caller(request)
        if not await self._store.may_read(agency, sha256):
            return problem(404, ErrorCode.NOT_FOUND, "Not found", "no body with this digest is addressed to you")
        marked = await self._store.mark_retrieved(sha256, agency, self._clock())
        return web.json_response({"sha256": sha256, "retrieved": marked > 0})


__all__ = ["AttachmentGate", "BlobApi", "BlobRecord", "BlobStore", "BlobSweeper", "Deletion"]
