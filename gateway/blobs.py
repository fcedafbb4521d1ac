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
* **Signed for what they carry, once.** The signature covers method, path,
  `Upload-Offset`, `Upload-Length`, the SHA-256 of the body sent and a
  nonce: a body other than the signed one is refused (`BODY_DIGEST_MISMATCH`,
  and an upload's partial file goes back to where the request started), and
  so is a nonce seen within the signature window (`REPLAYED`, `ReplayCache`).
* **Resumable.** `HEAD` answers `Upload-Offset` (bytes of a partial upload
  durably received); `PUT` continues from that offset. `GET` honours `Range`.
* **Bounded per agency.** The bytes an agency holds here, stored and partial
  (a partial upload counts for its whole `Upload-Length` from its first
  byte), stay under its quota (`QUOTA_EXCEEDED`, 413); a partial upload left
  alone for the partial expiry is removed by the sweeper.
* **Deleted after retrieval.** A recipient confirms retrieval after it has
  verified the body; once every recipient did and the retention period has
  passed (or the message expired unretrieved, plus the retention period), the
  body is deleted and a `blob_deleted` leaf records it. The sweeper runs in
  the gateway's leading process only (`gateway.leadership`).
* **Shared by the gateway's processes.** Bodies and their index live in the
  data directory, or in `ROGATORY_BLOB_DIR`, which every process of a gateway
  sharing one PostgreSQL database must be given (one machine's local disk:
  the index is SQLite, safe across processes there, not over NFS). The
  replay cache of signed requests is each process's own.

The gateway pipeline refuses (with `SUBMISSION_REJECTED`, `ATTACHMENT_MISSING`
or `ATTACHMENT_MISMATCH`) an envelope whose committed bodies are not stored,
have another length, or were uploaded by another agency (`AttachmentGate`).
"""

from __future__ import annotations

import asyncio
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
from protocol.attachments import BLOB_REQUEST_WINDOW, BlobRequest, check_body_digest, verify_blob_request
from protocol.auditlog import AttachmentsLeaf, BlobDeletedLeaf
from protocol.directory import Directory
from protocol.encoding import format_timestamp, parse_timestamp
from protocol.envelope import AuthenticatedHeader, SealedMessage
from protocol.errors import AuthenticationFailed, ErrorCode, FreshnessViolation, PolicyDenied, ProtocolError
from protocol.ids import AgencyId
from runtime.errors import StoreUnavailable
from runtime.http import Handler, problem
from runtime.schema import Migration, Schema
from runtime.sqlite import open_index
from runtime.supervision import TryLocks

log = structlog.get_logger("rogatory.gateway.blobs")

IO_CHUNK_BYTES: Final = 1024 * 1024
"""Bytes read or written at once: memory stays at a few of these whatever the body's size."""
DEFAULT_QUOTA_BYTES: Final = 128 * 1024**3
"""Stored and partial bytes one agency may hold here (`ROGATORY_BLOB_QUOTA_BYTES`): two bodies of the
largest size by default, so one agency cannot fill the gateway's disk for all."""
DEFAULT_PARTIAL_EXPIRY: Final = timedelta(days=1)
"""A partial upload nobody continued for this long is removed (`ROGATORY_BLOB_PARTIAL_EXPIRY_S`)."""
REPLAY_CACHE_PER_AGENCY: Final = 20_000
"""Nonces remembered per agency at once: ~30 signed requests a second across the window of two
`BLOB_REQUEST_WINDOW`s a nonce may stay valid in. Past it, the agency is told to slow down (429)."""
MAX_EMPTY_REQUEST_BYTES: Final = 4096
"""What a request that should have no body may carry before it is refused unread."""
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
CREATE TABLE IF NOT EXISTS partials (
    uploader TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    length INTEGER NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (uploader, sha256)
);
"""

BLOB_SCHEMA = Schema(
    "gateway blobs", (Migration(1, "release 504c590", _SCHEMA),), adopts=("blobs", "grants", "partials")
)
"""`blobs.db`, step by step (`runtime.schema`): append a step to change it."""


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
        self.uploads = TryLocks()
        """Uploads in progress, by `<agency>/<sha256>`: one at a time, forgotten once over."""

    @classmethod
    async def open(cls, data_dir: Path) -> BlobStore:
        """Open (creating if needed) the store under `data_dir`."""
        root = data_dir / "blobs"
        (root / "objects").mkdir(parents=True, exist_ok=True)
        (root / "partial").mkdir(parents=True, exist_ok=True)
        db = await open_index(data_dir / "blobs.db", BLOB_SCHEMA, what="blob index")
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

    @staticmethod
    def upload_key(agency: str, sha256: str) -> str:
        """The key of one agency's upload of one body in `uploads`."""
        return f"{agency}/{sha256}"

    async def usage(self, agency: str, *, besides: str | None = None) -> int:
        """Bytes `agency` holds here: its stored bodies, and its partial uploads at their announced length.

        `besides` leaves out the partial upload of that body (the one being asked for).
        """
        async with self._db.execute(
            "SELECT COALESCE(SUM(length), 0) FROM blobs WHERE uploader = ? AND deleted_at IS NULL", (agency,)
        ) as cursor:
            row = await cursor.fetchone()
        stored = int(row[0]) if row is not None else 0
        async with self._db.execute(
            "SELECT COALESCE(SUM(length), 0) FROM partials WHERE uploader = ? AND sha256 IS NOT ?", (agency, besides)
        ) as cursor:
            row = await cursor.fetchone()
        return stored + (int(row[0]) if row is not None else 0)

    async def reserve(self, agency: str, sha256: str, *, length: int, quota: int, now: datetime) -> None:
        """Count `length` bytes of a partial upload against `agency`'s quota; raise `QUOTA_EXCEEDED` past it."""
        used = await self.usage(agency, besides=sha256)
        if used + length > quota:
            raise PolicyDenied(
                f"{agency} holds {used} bytes here; {length} more would pass its quota of {quota} bytes",
                code=ErrorCode.QUOTA_EXCEEDED,
            )
        await self._write(
            "INSERT INTO partials (uploader, sha256, length, updated_at) VALUES (?,?,?,?) "
            "ON CONFLICT (uploader, sha256) DO UPDATE SET length = excluded.length, updated_at = excluded.updated_at",
            (agency, sha256, length, format_timestamp(now)),
        )

    async def _drop_partial(self, agency: str, sha256: str) -> None:
        self.partial_path(agency, sha256).unlink(missing_ok=True)
        await self._write("DELETE FROM partials WHERE uploader = ? AND sha256 = ?", (agency, sha256))

    async def expire_partials(self, now: datetime, *, older_than: timedelta) -> int:
        """Remove partial uploads nobody continued for `older_than` (not one in progress); return how many."""
        async with self._db.execute("SELECT uploader, sha256, updated_at FROM partials") as cursor:
            rows = [(str(r[0]), str(r[1]), str(r[2])) for r in await cursor.fetchall()]
        expired = 0
        for agency, sha256, updated_at in rows:
            if now < parse_timestamp(updated_at) + older_than or self.upload_key(agency, sha256) in self.uploads:
                continue
            await self._drop_partial(agency, sha256)
            log.info("blob_partial_expired", sha256=sha256, uploader=agency, updated_at=updated_at)
            expired += 1
        return expired

    async def receive(
        self,
        agency: str,
        sha256: str,
        *,
        offset: int,
        length: int,
        chunks: AsyncIterator[bytes],
        signed: BlobRequest,
        now: datetime,
    ) -> int:
        """Append `chunks` to the partial upload at `offset`; store the body once complete and verified.

        Returns the bytes received so far (`length` once stored). What this
        request sent is kept only if its digest is the one `signed` covers:
        otherwise, or if the request breaks off, the partial upload goes back
        to `offset` (`BODY_DIGEST_MISMATCH`). A body whose digest is not its
        address is discarded and refused.
        """
        partial = self.partial_path(agency, sha256)
        partial.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256() if offset == 0 else None
        sent = hashlib.sha256()
        received = offset
        with open(partial, "r+b" if offset else "wb") as sink:  # noqa: PTH123, ASYNC230 - large sequential I/O, chunked
            sink.truncate(offset)
            sink.seek(offset)
            kept = False
            try:
                async for chunk in chunks:
                    if received + len(chunk) > length:
                        raise PolicyDenied(
                            f"the body is longer than its Upload-Length of {length}", code=ErrorCode.ATTACHMENT_MISMATCH
                        )
                    await asyncio.to_thread(sink.write, chunk)
                    if digest is not None:
                        digest.update(chunk)
                    sent.update(chunk)
                    received += len(chunk)
                check_body_digest(signed, sent.hexdigest())
                kept = True
            finally:
                if not kept:
                    # Nothing unauthenticated stays: the partial upload is as it was before this request.
                    sink.truncate(offset)
                await asyncio.to_thread(_flush, sink)
        if received < length:
            return received
        actual = digest.hexdigest() if digest is not None else await asyncio.to_thread(_file_sha256, partial)
        if actual != sha256:
            await self._drop_partial(agency, sha256)
            raise PolicyDenied(
                f"the body uploaded has digest {actual}, not the {sha256} it is addressed by",
                code=ErrorCode.ATTACHMENT_MISMATCH,
            )
        target = self.object_path(sha256)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial.replace(target)
        await self._write("DELETE FROM partials WHERE uploader = ? AND sha256 = ?", (agency, sha256))
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
        partial_expiry: timedelta = DEFAULT_PARTIAL_EXPIRY,
    ) -> None:
        self._store = store
        self._audit = audit
        self._clock = clock
        self._retention = retention
        self._unreferenced = unreferenced
        self._partial_expiry = partial_expiry

    async def sweep(self) -> int:
        """Delete what is due, and partial uploads left alone too long; return how many bodies were deleted."""
        now = self._clock()
        await self._store.expire_partials(now, older_than=self._partial_expiry)
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


# -- HTTP --------------------------------------------------------------------------------------


class ReplayCache:
    """The nonces of signed blob requests seen while they could still verify: bounded, expiring, in memory.

    A nonce is remembered until its request's time plus `BLOB_REQUEST_WINDOW`,
    after which the request is refused as stale anyway; each agency has at most
    `per_agency` nonces at once, so one agency cannot grow it for all. Not
    persisted: after a restart, a request captured in the window before it
    could be replayed once, and every blob request is idempotent by then (its
    body and offsets are bound: SECURITY.md, finding 9).
    """

    def __init__(self, *, per_agency: int = REPLAY_CACHE_PER_AGENCY) -> None:
        self._per_agency = per_agency
        self._seen: dict[str, dict[str, datetime]] = {}

    def __len__(self) -> int:
        """Nonces remembered now, over every agency."""
        return sum(len(nonces) for nonces in self._seen.values())

    def admit(self, request: BlobRequest, now: datetime) -> None:
        """Remember this request's nonce; raise `REPLAYED` if it was seen, `RATE_LIMITED` past the bound."""
        nonces = self._seen.setdefault(str(request.agency), {})
        if len(nonces) >= self._per_agency:
            for nonce, until in list(nonces.items()):
                if until < now:
                    del nonces[nonce]
        if request.nonce in nonces:
            raise FreshnessViolation(f"nonce {request.nonce} was used already", code=ErrorCode.REPLAYED)
        if len(nonces) >= self._per_agency:
            raise FreshnessViolation(
                f"{len(nonces)} signed requests of {request.agency} are within the window", code=ErrorCode.RATE_LIMITED
            )
        nonces[request.nonce] = request.at + BLOB_REQUEST_WINDOW


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
        quota_bytes: int = DEFAULT_QUOTA_BYTES,
        replay_cache: ReplayCache | None = None,
    ) -> None:
        self._store = store
        self._directory = directory
        self._clock = clock
        self._max_bytes = max_blob_bytes
        self._quota = quota_bytes
        self._replays = replay_cache or ReplayCache()

    def routes(self) -> list[tuple[str, str, Handler]]:
        """(method, path, handler) of each endpoint; each authenticates its own signed requests."""
        return [
            ("PUT", "/v1/blobs/{sha256}", _answering(self.put)),
            ("HEAD", "/v1/blobs/{sha256}", _answering(self.head)),
            ("GET", "/v1/blobs/{sha256}", _answering(self.get)),
            ("POST", "/v1/blobs/{sha256}/retrieved", _answering(self.retrieved)),
        ]

    def _signed(self, request: web.Request) -> tuple[BlobRequest, str]:
        """(signed statement, sha256) of a request signed for its method, path and offsets, with a fresh nonce.

        Raise a 401 (400, 429) answer otherwise. The handler checks the body.
        """
        sha256 = request.match_info["sha256"]
        if not _SHA256.match(sha256):
            raise _Refused(
                problem(400, ErrorCode.INVALID_PARAMETER, "Invalid address", "expected the hex SHA-256 of a ciphertext")
            )
        now = self._clock()
        try:
            signed = verify_blob_request(
                request.headers.get("Authorization", ""),
                method=request.method,
                path=request.path,
                upload_offset=_header_int(request, "Upload-Offset"),
                upload_length=_header_int(request, "Upload-Length"),
                directory=self._directory(),
                now=now,
            )
            self._replays.admit(signed, now)
        except ProtocolError as exc:
            if exc.code == ErrorCode.RATE_LIMITED:
                response = problem(429, exc.code, "Too many requests", exc.detail)
                response.headers["Retry-After"] = "5"
                raise _Refused(response) from exc
            code = ErrorCode.REPLAYED if exc.code == ErrorCode.REPLAYED else ErrorCode.UNAUTHORIZED
            response = problem(401, code, "Unauthorized", f"a signed request is required: {exc}")
            response.headers["WWW-Authenticate"] = "Rogatory-Signed"
            raise _Refused(response) from exc
        return signed, sha256

    async def _caller(self, request: web.Request) -> tuple[str, str]:
        """(agency, sha256) of a signed request without a body (or an empty one); raise its answer otherwise."""
        signed, sha256 = self._signed(request)
        body = await request.content.read(MAX_EMPTY_REQUEST_BYTES + 1)
        if len(body) > MAX_EMPTY_REQUEST_BYTES:
            raise _Refused(problem(413, ErrorCode.TOO_LARGE, "Too large", "this request takes no body"))
        try:
            check_body_digest(signed, hashlib.sha256(body).hexdigest())
        except ProtocolError as exc:
            raise _Refused(problem(400, exc.code, "Body not signed", exc.detail)) from exc
        return str(signed.agency), sha256

    async def head(self, request: web.Request) -> web.StreamResponse:
        """200 with `Upload-Offset` = length if the caller may read it; else 404 with its partial offset."""
        agency, sha256 = await self._caller(request)
        blob = await self._store.blob(sha256)
        if blob is not None and await self._store.may_read(agency, sha256):
            return web.Response(status=200, headers={"Upload-Offset": str(blob.length), "Upload-Complete": "?1"})
        offset = self._store.received_bytes(agency, sha256)
        return web.Response(status=404, headers={"Upload-Offset": str(offset), "Upload-Complete": "?0"})

    async def put(self, request: web.Request) -> web.StreamResponse:  # noqa: PLR0911 - one answer per outcome
        """Receive the body from `Upload-Offset` (default 0) towards `Upload-Length`; 201 once stored."""
        signed, sha256 = self._signed(request)
        agency = str(signed.agency)
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
        with self._store.uploads.try_hold(self._store.upload_key(agency, sha256)) as held:
            if not held:
                return problem(409, ErrorCode.UPLOAD_OFFSET_MISMATCH, "Busy", "this body is being uploaded already")
            have = self._store.received_bytes(agency, sha256)
            if offset != have:
                response = problem(
                    409, ErrorCode.UPLOAD_OFFSET_MISMATCH, "Wrong offset", f"{have} bytes are held, not {offset}"
                )
                response.headers["Upload-Offset"] = str(have)
                return response
            received = await self._receive(request, signed, sha256, offset=offset, length=length)
            if isinstance(received, web.StreamResponse):
                return received
        if received < length:
            return web.json_response(
                {"sha256": sha256, "offset": received, "complete": False},
                status=200,
                headers={"Upload-Offset": str(received)},
            )
        return web.json_response({"sha256": sha256, "size_bytes": length, "complete": True}, status=201)

    async def _receive(
        self, request: web.Request, signed: BlobRequest, sha256: str, *, offset: int, length: int
    ) -> int | web.StreamResponse:
        """Within the agency's quota, the bytes held once this request's body is in; or the answer refusing it."""
        agency = str(signed.agency)
        try:
            await self._store.reserve(agency, sha256, length=length, quota=self._quota, now=self._clock())
            return await self._store.receive(
                agency,
                sha256,
                offset=offset,
                length=length,
                chunks=request.content.iter_chunked(IO_CHUNK_BYTES),
                signed=signed,
                now=self._clock(),
            )
        except PolicyDenied as exc:
            status = 413 if exc.code == ErrorCode.QUOTA_EXCEEDED else 422
            return problem(status, exc.code, "Refused", exc.detail)
        except AuthenticationFailed as exc:
            return problem(400, exc.code, "Body not signed", exc.detail)
        except (aiohttp.ClientError, ConnectionError) as exc:
            log.info("blob_upload_interrupted", sha256=sha256, uploader=agency, error=str(exc)[:200])
            raise
        except OSError as exc:
            log.warning("blob_store_unwritable", sha256=sha256, error=str(exc)[:200])
            response = problem(503, ErrorCode.SERVICE_UNAVAILABLE, "Unavailable", "the blob store cannot write")
            response.headers["Retry-After"] = "5"
            return response

    async def get(self, request: web.Request) -> web.StreamResponse:
        """The body, streamed from disk (with `Range`), to its uploader or an agency it was addressed to."""
        agency, sha256 = await self._caller(request)
        if not await self._store.may_read(agency, sha256):
            return problem(404, ErrorCode.NOT_FOUND, "Not found", "no body with this digest is addressed to you")
        return web.FileResponse(self._store.object_path(sha256), chunk_size=256 * 1024)

    async def retrieved(self, request: web.Request) -> web.StreamResponse:
        """The caller verified its copy: start the retention period before deletion."""
        agency, sha256 = await self._caller(request)
        if not await self._store.may_read(agency, sha256):
            return problem(404, ErrorCode.NOT_FOUND, "Not found", "no body with this digest is addressed to you")
        marked = await self._store.mark_retrieved(sha256, agency, self._clock())
        return web.json_response({"sha256": sha256, "retrieved": marked > 0})


__all__ = ["AttachmentGate", "BlobApi", "BlobRecord", "BlobStore", "BlobSweeper", "Deletion", "ReplayCache"]
