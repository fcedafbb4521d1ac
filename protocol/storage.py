"""Decrypted content at rest: sealed under the agency's storage key, bound to the record it belongs to.

An agent keeps what it decrypted (documents in its outbox and inbox, the keys
of attachment bodies) so that its agency's systems can read it later. On disk
each such value is sealed with XChaCha20-Poly1305 (libsodium's IETF AEAD)
under a 32-byte key held in the agency's keystore under the name `storage`,
with a fresh random nonce, and with the identity of its record as associated
data: a value copied into another row (another message, another sender,
another table) does not open there.

Stored form: `MAGIC || nonce (24) || ciphertext and tag`. `MAGIC` begins
with a NUL byte, which no JSON document and no key shorter than
`MIN_SEALED_BYTES` can be mistaken for, so a reader can tell a sealed value
from one written in plain before this existed (`is_sealed`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final

import nacl.bindings
import nacl.exceptions
import nacl.utils

from protocol.encoding import canonical_json, pae
from protocol.errors import AuthenticationFailed, ErrorCode, MalformedInput

STORAGE_KEY_NAME: Final = "storage"
"""The name of the storage key in the agency's keystore."""
KEY_BYTES: Final = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_KEYBYTES
NONCE_BYTES: Final = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
TAG_BYTES: Final = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_ABYTES
MAGIC: Final = b"\x00rgs1"
"""Starts every sealed value: version 1 of this form."""
MIN_SEALED_BYTES: Final = len(MAGIC) + NONCE_BYTES + TAG_BYTES
_AD_TYPE: Final = "application/vnd.rogatory.stored-record+json; version=1"


def record_ad(identity: Mapping[str, str]) -> bytes:
    """The associated data of a sealed value: the identity of its record (table and key columns)."""
    return pae(_AD_TYPE, canonical_json(dict(identity)))


def is_sealed(stored: bytes) -> bool:
    """Whether `stored` is in the sealed form (else it was written in plain, before sealing existed)."""
    return len(stored) >= MIN_SEALED_BYTES and stored.startswith(MAGIC)


class StorageKey:
    """The agency's key for what its agent keeps decrypted. Never printed."""

    __slots__ = ("_raw",)

    def __init__(self, raw: bytes) -> None:
        if len(raw) != KEY_BYTES:
            raise MalformedInput(f"a storage key is {KEY_BYTES} bytes")
        self._raw = bytes(raw)

    @classmethod
    def generate(cls, random_bytes: Callable[[int], bytes] = nacl.utils.random) -> StorageKey:
        """A fresh key from the operating system's random source (through libsodium)."""
        return cls(random_bytes(KEY_BYTES))

    @property
    def raw(self) -> bytes:
        """The key's bytes, for the keystore."""
        return self._raw

    def __repr__(self) -> str:
        return "StorageKey(<secret>)"

    def seal(
        self,
        plaintext: bytes,
        identity: Mapping[str, str],
        *,
        random_bytes: Callable[[int], bytes] = nacl.utils.random,
    ) -> bytes:
        """`plaintext` sealed for the record named by `identity`."""
        nonce = random_bytes(NONCE_BYTES)
        ciphertext: bytes = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
            plaintext, record_ad(identity), nonce, self._raw
        )
        return MAGIC + nonce + ciphertext

    def open(self, stored: bytes, identity: Mapping[str, str]) -> bytes:
        """The plaintext of a value sealed for the record named by `identity`.

        `AuthenticationFailed` (`DECRYPTION_FAILED`) if it was changed, sealed
        for another record, or under another key; `MalformedInput` if it is not
        in the sealed form at all.
        """
        if not is_sealed(stored):
            raise MalformedInput("a stored value is not in the sealed form", code=ErrorCode.DECRYPTION_FAILED)
        nonce = stored[len(MAGIC) : len(MAGIC) + NONCE_BYTES]
        try:
            plaintext: bytes = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
                stored[len(MAGIC) + NONCE_BYTES :], record_ad(identity), nonce, self._raw
            )
        except nacl.exceptions.CryptoError as exc:
            record = ", ".join(f"{name}={value[:80]}" for name, value in sorted(identity.items()))
            raise AuthenticationFailed(
                f"a stored value does not open as the record ({record}): altered, moved from another record, "
                "or sealed under another storage key",
                code=ErrorCode.DECRYPTION_FAILED,
            ) from exc
        return plaintext


__all__ = ["KEY_BYTES", "MAGIC", "STORAGE_KEY_NAME", "StorageKey", "is_sealed", "record_ad"]
