"""Attachments: large files encrypted as streams, each under its own key.

An attachment body is encrypted with libsodium's secretstream
(XChaCha20-Poly1305) in chunks of `CHUNK_BYTES` of plaintext:

    header (24 bytes) | chunk 1 (CHUNK_BYTES + 17) | ... | last chunk (<= CHUNK_BYTES + 17, tag FINAL)

Every chunk is authenticated and chained to the previous ones, so a changed,
dropped, repeated or reordered chunk fails to decrypt; the last chunk carries
the FINAL tag, so a truncated stream (one that ends without it) is refused,
and so is anything after it. The associated data of every chunk binds the
stream to its attachment id and message, so a stream cannot be moved to
another attachment.

The key travels inside the encrypted document (only recipients see it); the
ciphertext's SHA-256 and length are committed in the signed envelope header,
so the gateway and auditors can prove which file travelled without seeing it.
Memory stays bounded by one chunk whatever the file's size: nothing here
holds a whole stream.

The stream is made when the body is uploaded to the sending agent, before
any message names it, so its associated data binds it to its sender and a
random *stream id*; the sender's signed content statement then binds stream
id, key, plaintext digest, message and attachment id together
(`AttachmentKey`), and the signed header commits to the ciphertext
(`AttachmentCommitment`).

Agencies authenticate to the gateway's blob store with *signed requests*
(`sign_blob_request`, `verify_blob_request`): an Ed25519 signature, by the
key the directory lists for the agency, over the method, the path, the
`Upload-Offset` and `Upload-Length` headers, the SHA-256 of the request body
(for an upload, of the chunk sent), a random nonce and the time. No new
secret is provisioned, and the gateway checks them with the directory it
already trusts; it refuses a nonce it has seen (`REPLAYED`) and a body whose
digest is not the signed one (`check_body_digest`, `BODY_DIGEST_MISMATCH`).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

import nacl.bindings as sodium
import nacl.exceptions
import nacl.utils
from pydantic import Field, model_validator

from protocol.directory import Directory
from protocol.encoding import Base64Bytes, UtcTimestamp, b64decode, b64encode, canonical_json, pae
from protocol.errors import AuthenticationFailed, ErrorCode, FreshnessViolation, MalformedInput
from protocol.ids import AgencyId, AgencyIdField, KeyIdField, parse_key_id
from protocol.keys import SigningPrivateKey
from protocol.model import FrozenModel, parse_model

CHUNK_BYTES: Final = 64 * 1024
"""Plaintext bytes per chunk: large enough to stream fast, small enough to bound memory."""
KEY_BYTES: Final = sodium.crypto_secretstream_xchacha20poly1305_KEYBYTES
HEADER_BYTES: Final = sodium.crypto_secretstream_xchacha20poly1305_HEADERBYTES
CHUNK_OVERHEAD: Final = sodium.crypto_secretstream_xchacha20poly1305_ABYTES
CIPHERTEXT_CHUNK_BYTES: Final = CHUNK_BYTES + CHUNK_OVERHEAD
_TAG_MESSAGE: Final = sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
_TAG_FINAL: Final = sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL
_AD_TYPE: Final = "application/vnd.rogatory.attachment-ad+json; version=1"


MAX_ATTACHMENTS: Final = 64
"""Attachment bodies one message may carry: keeps the signed header small."""
_ATTACHMENT_ID = r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,63}$"
_SHA256 = r"^[0-9a-f]{64}$"
_STREAM_ID = r"^[0-9a-f]{32}$"


def attachment_ad(sender: str, stream_id: str) -> bytes:
    """The associated data of every chunk: binds the stream to its sender and stream id."""
    return pae(_AD_TYPE, canonical_json({"sender": sender, "stream_id": stream_id}))


class AttachmentCommitment(FrozenModel):
    """What the signed header says about one attachment body: its ciphertext, never its content."""

    attachment_id: str = Field(pattern=_ATTACHMENT_ID)
    ciphertext_sha256: str = Field(pattern=_SHA256)
    ciphertext_length: int = Field(ge=0)


class AttachmentKey(FrozenModel):
    """What only the recipients see about one attachment body, inside the signed content statement."""

    attachment_id: str = Field(pattern=_ATTACHMENT_ID)
    stream_id: str = Field(pattern=_STREAM_ID)
    key: Base64Bytes
    plaintext_sha256: str = Field(pattern=_SHA256)
    plaintext_length: int = Field(ge=0)
    ciphertext_sha256: str = Field(pattern=_SHA256)
    ciphertext_length: int = Field(ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> AttachmentKey:
        if len(self.key) != KEY_BYTES:
            raise ValueError(f"an attachment key is {KEY_BYTES} bytes")
        if self.ciphertext_length != ciphertext_length(self.plaintext_length):
            raise ValueError("ciphertext_length does not follow from plaintext_length")
        return self

    def commitment(self) -> AttachmentCommitment:
        """The part of this key that the header commits to."""
        return AttachmentCommitment(
            attachment_id=self.attachment_id,
            ciphertext_sha256=self.ciphertext_sha256,
            ciphertext_length=self.ciphertext_length,
        )

    def decryptor(self, sender: str) -> StreamDecryptor:
        """A decryptor of this body as `sender` encrypted it."""
        return StreamDecryptor(self.key, attachment_ad(sender, self.stream_id))


def check_attachment_ids(ids: list[str]) -> None:
    """At most `MAX_ATTACHMENTS`, each id once."""
    if len(ids) > MAX_ATTACHMENTS:
        raise ValueError(f"at most {MAX_ATTACHMENTS} attachment bodies per message")
    if len(set(ids)) != len(ids):
        raise ValueError("an attachment is listed twice")


def ciphertext_length(plaintext_length: int) -> int:
    """The exact length of the encrypted stream of `plaintext_length` bytes."""
    chunks = max(1, -(-plaintext_length // CHUNK_BYTES))
    return HEADER_BYTES + plaintext_length + chunks * CHUNK_OVERHEAD


@dataclass
class StreamEncryptor:
    """Encrypts one attachment, chunk by chunk; feed plaintext, then `finish`."""

    key: bytes
    associated_data: bytes
    _state: sodium.crypto_secretstream_xchacha20poly1305_state = field(init=False, repr=False)
    _buffer: bytearray = field(default_factory=bytearray, repr=False)
    _hash: hashlib._Hash = field(default_factory=hashlib.sha256, repr=False)
    plaintext_hash: hashlib._Hash = field(default_factory=hashlib.sha256, repr=False)
    header: bytes = field(init=False)
    plaintext_length: int = 0
    ciphertext_length: int = 0
    _finished: bool = False

    def __post_init__(self) -> None:
        if len(self.key) != KEY_BYTES:
            raise MalformedInput("attachment key must be 32 bytes")
        self._state = sodium.crypto_secretstream_xchacha20poly1305_state()
        self.header = sodium.crypto_secretstream_xchacha20poly1305_init_push(self._state, self.key)
        self._hash.update(self.header)
        self.ciphertext_length = len(self.header)

    @classmethod
    def new(cls, associated_data: bytes, random_bytes: Callable[[int], bytes] = nacl.utils.random) -> StreamEncryptor:
        """An encryptor under a fresh random key."""
        return cls(random_bytes(KEY_BYTES), associated_data)

    def update(self, plaintext: bytes) -> bytes:
        """Take more plaintext; return the ciphertext of every chunk now complete."""
        if self._finished:
            raise MalformedInput("the stream is already finished")
        self.plaintext_length += len(plaintext)
        self.plaintext_hash.update(plaintext)
        self._buffer += plaintext
        out = bytearray()
        # Keep at least one byte back: only `finish` knows which chunk is the last.
        while len(self._buffer) > CHUNK_BYTES:
            out += self._push(bytes(self._buffer[:CHUNK_BYTES]), _TAG_MESSAGE)
            del self._buffer[:CHUNK_BYTES]
        return bytes(out)

    def finish(self) -> bytes:
        """The last chunk, tagged FINAL (possibly empty of plaintext)."""
        if self._finished:
            raise MalformedInput("the stream is already finished")
        self._finished = True
        last = self._push(bytes(self._buffer), _TAG_FINAL)
        self._buffer.clear()
        return last

    def _push(self, chunk: bytes, tag: int) -> bytes:
        ciphertext: bytes = sodium.crypto_secretstream_xchacha20poly1305_push(
            self._state, chunk, self.associated_data, tag
        )
        self._hash.update(ciphertext)
        self.ciphertext_length += len(ciphertext)
        return ciphertext

    @property
    def ciphertext_sha256(self) -> str:
        """SHA-256 (hex) of everything produced so far: the header and every chunk."""
        return self._hash.hexdigest()


@dataclass
class StreamDecryptor:
    """Decrypts one attachment stream fed in arbitrary pieces; refuses any change, cut or reorder."""

    key: bytes
    associated_data: bytes
    _state: sodium.crypto_secretstream_xchacha20poly1305_state = field(init=False, repr=False)
    _buffer: bytearray = field(default_factory=bytearray, repr=False)
    _started: bool = False
    _finished: bool = False
    plaintext_hash: hashlib._Hash = field(default_factory=hashlib.sha256, repr=False)
    plaintext_length: int = 0

    def __post_init__(self) -> None:
        if len(self.key) != KEY_BYTES:
            raise MalformedInput("attachment key must be 32 bytes")
        self._state = sodium.crypto_secretstream_xchacha20poly1305_state()

    def update(self, ciphertext: bytes) -> bytes:
        """Take more ciphertext; return the plaintext of every chunk now complete and authentic."""
        if self._finished and ciphertext:
            raise AuthenticationFailed("data after the final chunk", code=ErrorCode.DECRYPTION_FAILED)
        self._buffer += ciphertext
        out = bytearray()
        if not self._started:
            if len(self._buffer) < HEADER_BYTES:
                return b""
            header = bytes(self._buffer[:HEADER_BYTES])
            del self._buffer[:HEADER_BYTES]
            sodium.crypto_secretstream_xchacha20poly1305_init_pull(self._state, header, self.key)
            self._started = True
        # A full-size chunk may still be the final one: decrypt a chunk only once more bytes follow it.
        while len(self._buffer) > CIPHERTEXT_CHUNK_BYTES:
            plaintext, _ = self._pull(bytes(self._buffer[:CIPHERTEXT_CHUNK_BYTES]))
            out += plaintext
            del self._buffer[:CIPHERTEXT_CHUNK_BYTES]
        return bytes(out)

    def finish(self) -> bytes:
        """Decrypt what is left, which must be the final chunk; refuse a truncated stream."""
        if not self._started:
            raise AuthenticationFailed("stream shorter than its header", code=ErrorCode.DECRYPTION_FAILED)
        if self._finished:
            if self._buffer:
                raise AuthenticationFailed("data after the final chunk", code=ErrorCode.DECRYPTION_FAILED)
            return b""
        if not self._buffer:
            raise AuthenticationFailed("stream ends without its final chunk", code=ErrorCode.DECRYPTION_FAILED)
        last, final = self._pull(bytes(self._buffer))
        self._buffer.clear()
        if not final:
            raise AuthenticationFailed("stream ends without its final chunk", code=ErrorCode.DECRYPTION_FAILED)
        return last

    def _pull(self, chunk: bytes) -> tuple[bytes, bool]:
        if self._finished:
            raise AuthenticationFailed("data after the final chunk", code=ErrorCode.DECRYPTION_FAILED)
        try:
            plaintext, tag = sodium.crypto_secretstream_xchacha20poly1305_pull(self._state, chunk, self.associated_data)
        except (nacl.exceptions.CryptoError, ValueError, RuntimeError) as exc:
            raise AuthenticationFailed(
                "an attachment chunk does not authenticate (changed, moved or cut)", code=ErrorCode.DECRYPTION_FAILED
            ) from exc
        final = tag == _TAG_FINAL
        self._finished = final
        self.plaintext_length += len(plaintext)
        self.plaintext_hash.update(plaintext)
        return bytes(plaintext), final


# -- signed requests to the gateway's blob store ------------------------------------------

BLOB_AUTH_SCHEME: Final = "Rogatory-Signed"
PAYLOAD_TYPE_BLOB_REQUEST: Final = "application/vnd.rogatory.blob-request+json; version=2"
"""Version 2 binds the offsets, the body digest and a nonce; a version-1 statement does not verify."""
BLOB_REQUEST_WINDOW: Final = timedelta(minutes=5)
"""How far a signed request's time may be from the gateway's clock: bounds how long a nonce is remembered."""
NONCE_BYTES: Final = 16
"""Random bytes of a request's nonce: 128 bits never collide by chance within a window."""
EMPTY_BODY_SHA256: Final = hashlib.sha256(b"").hexdigest()
"""The body digest of a request without a body (`HEAD`, `GET`, `POST .../retrieved`)."""


class BlobRequest(FrozenModel):
    """What an agency signs to use the gateway's blob store: who, what request and body, once, when.

    The request is the method, the path and the `Upload-Offset` and
    `Upload-Length` headers (absent: None); the body is its SHA-256; the nonce
    makes each signature good for one request.
    """

    agency: AgencyIdField
    key_id: KeyIdField
    method: str = Field(pattern=r"^[A-Z]{3,7}$")
    path: str = Field(min_length=1, max_length=300)
    upload_offset: int | None = Field(default=None, ge=0)
    upload_length: int | None = Field(default=None, ge=0)
    body_sha256: str = Field(pattern=_SHA256)
    nonce: str = Field(pattern=rf"^[0-9a-f]{{{2 * NONCE_BYTES}}}$")
    at: UtcTimestamp


def sign_blob_request(
    *,
    agency: AgencyId,
    key: SigningPrivateKey,
    method: str,
    path: str,
    now: datetime,
    body_sha256: str = EMPTY_BODY_SHA256,
    upload_offset: int | None = None,
    upload_length: int | None = None,
    random_bytes: Callable[[int], bytes] = nacl.utils.random,
) -> str:
    """The `Authorization` header value of one request to the blob store, under a fresh nonce.

    `upload_offset` and `upload_length` are the values of the `Upload-Offset` and
    `Upload-Length` headers the request carries (None: the header is absent);
    `body_sha256` is the SHA-256 (hex) of exactly the body it sends.
    """
    statement = BlobRequest(
        agency=agency,
        key_id=key.key_id,
        method=method,
        path=path,
        upload_offset=upload_offset,
        upload_length=upload_length,
        body_sha256=body_sha256,
        nonce=random_bytes(NONCE_BYTES).hex(),
        at=now,
    ).canonical_bytes()
    signature = key.sign(pae(PAYLOAD_TYPE_BLOB_REQUEST, statement))
    return f"{BLOB_AUTH_SCHEME} {key.key_id}.{b64encode(statement)}.{b64encode(signature)}"


def verify_blob_request(
    authorization: str,
    *,
    method: str,
    path: str,
    upload_offset: int | None = None,
    upload_length: int | None = None,
    directory: Directory,
    now: datetime,
) -> BlobRequest:
    """The statement an agency signed for exactly this request, recently; or raise.

    Verify first (the key id names a signing key of the directory, the
    signature holds over the statement's exact bytes), then parse and check
    that the statement names the key's owner, this method, path and offsets,
    and a time within `BLOB_REQUEST_WINDOW` of `now`. The caller then checks
    the body against `body_sha256` (`check_body_digest`) and the nonce against
    the ones it has seen within the window.
    """
    scheme, _, credentials = authorization.partition(" ")
    parts = credentials.strip().split(".")
    if scheme != BLOB_AUTH_SCHEME or len(parts) != 3:
        raise AuthenticationFailed(f"expected a {BLOB_AUTH_SCHEME} authorization", code=ErrorCode.UNAUTHORIZED)
    try:
        key_id = parse_key_id(parts[0])
        statement, signature = b64decode(parts[1]), b64decode(parts[2])
    except MalformedInput as exc:
        raise AuthenticationFailed("malformed signed request", code=ErrorCode.UNAUTHORIZED) from exc
    owner, key = directory.agency_signing_key(key_id)
    key.verifier.verify(pae(PAYLOAD_TYPE_BLOB_REQUEST, statement), signature, code=ErrorCode.UNAUTHORIZED)
    request = parse_model(BlobRequest, statement, what="signed blob request", code=ErrorCode.UNAUTHORIZED)
    if request.agency != owner.agency_id or request.key_id != key_id:
        raise AuthenticationFailed("the request names another agency than the key's owner", code=ErrorCode.UNAUTHORIZED)
    if request.method != method or not hmac.compare_digest(request.path.encode(), path.encode()):
        raise AuthenticationFailed("the request was signed for another method or path", code=ErrorCode.UNAUTHORIZED)
    if (request.upload_offset, request.upload_length) != (upload_offset, upload_length):
        raise AuthenticationFailed(
            f"the request was signed for Upload-Offset {request.upload_offset} and Upload-Length "
            f"{request.upload_length}, it carries {upload_offset} and {upload_length}",
            code=ErrorCode.UNAUTHORIZED,
        )
    if abs(now - request.at) > BLOB_REQUEST_WINDOW:
        raise FreshnessViolation(
            f"signed at {request.at.isoformat()}, more than {BLOB_REQUEST_WINDOW} from now", code=ErrorCode.STALE
        )
    key.check_usable(created_at=request.at, now=now, what="signing")
    return request


def check_body_digest(request: BlobRequest, body_sha256: str) -> None:
    """The body received is the one signed for; raise `BODY_DIGEST_MISMATCH` otherwise."""
    if not hmac.compare_digest(request.body_sha256.encode(), body_sha256.encode()):
        raise AuthenticationFailed(
            f"the request body has SHA-256 {body_sha256}, the signature covers {request.body_sha256}",
            code=ErrorCode.BODY_DIGEST_MISMATCH,
        )


__all__ = [
    "BLOB_AUTH_SCHEME",
    "BLOB_REQUEST_WINDOW",
    "CHUNK_BYTES",
    "CIPHERTEXT_CHUNK_BYTES",
    "EMPTY_BODY_SHA256",
    "HEADER_BYTES",
    "KEY_BYTES",
    "MAX_ATTACHMENTS",
    "NONCE_BYTES",
    "AttachmentCommitment",
    "AttachmentKey",
    "BlobRequest",
    "StreamDecryptor",
    "StreamEncryptor",
    "attachment_ad",
    "check_attachment_ids",
    "check_body_digest",
    "ciphertext_length",
    "sign_blob_request",
    "verify_blob_request",
]
