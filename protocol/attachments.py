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
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import nacl.bindings as sodium
import nacl.exceptions
import nacl.utils

from protocol.encoding import canonical_json, pae
from protocol.errors import AuthenticationFailed, ErrorCode, MalformedInput

CHUNK_BYTES: Final = 64 * 1024
"""Plaintext bytes per chunk: large enough to stream fast, small enough to bound memory."""
KEY_BYTES: Final = sodium.crypto_secretstream_xchacha20poly1305_KEYBYTES
HEADER_BYTES: Final = sodium.crypto_secretstream_xchacha20poly1305_HEADERBYTES
CHUNK_OVERHEAD: Final = sodium.crypto_secretstream_xchacha20poly1305_ABYTES
CIPHERTEXT_CHUNK_BYTES: Final = CHUNK_BYTES + CHUNK_OVERHEAD
_TAG_MESSAGE: Final = sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
_TAG_FINAL: Final = sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL
_AD_TYPE: Final = "application/vnd.rogatory.attachment-ad+json; version=1"


def attachment_ad(message_id: str, attachment_id: str) -> bytes:
    """The associated data of every chunk: binds the stream to its message and attachment."""
    return pae(_AD_TYPE, canonical_json({"message_id": message_id, "attachment_id": attachment_id}))


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


__all__ = [
    "CHUNK_BYTES",
    "CIPHERTEXT_CHUNK_BYTES",
    "HEADER_BYTES",
    "KEY_BYTES",
    "StreamDecryptor",
    "StreamEncryptor",
    "attachment_ad",
    "ciphertext_length",
]
