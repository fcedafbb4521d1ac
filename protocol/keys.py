"""Keys: Ed25519 for signing, X25519 for encryption, never one for the other.

Signing and encryption keys are distinct types, so a function that wants one
cannot be handed the other. A key id is derived from the algorithm name and
the public key bytes, so ids of the two kinds never collide:

    key_id = hex(SHA-256("rogatory/key-id/v1" 0x00 algorithm 0x00 public_key)[:16])

Private keys never appear in `repr`. All primitives are libsodium's, through
PyNaCl; errors from it are turned into ours at this boundary.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Final

import nacl.exceptions
import nacl.public
import nacl.signing

from protocol.errors import AuthenticationFailed, ErrorCode, MalformedInput
from protocol.ids import KEY_ID_BYTES, KeyId

SIGNING_ALGORITHM: Final = "ed25519"
ENCRYPTION_ALGORITHM: Final = "x25519"
PUBLIC_KEY_BYTES: Final = 32
SIGNATURE_BYTES: Final = 64


def derive_key_id(algorithm: str, public_key: bytes) -> KeyId:
    """The key id of a public key (see the module docstring)."""
    digest = hashlib.sha256(b"rogatory/key-id/v1\x00" + algorithm.encode("ascii") + b"\x00" + public_key)
    return KeyId(digest.digest()[:KEY_ID_BYTES].hex())


@dataclass(frozen=True, slots=True)
class SigningPublicKey:
    """An Ed25519 verification key."""

    raw: bytes

    def __post_init__(self) -> None:
        if len(self.raw) != PUBLIC_KEY_BYTES:
            raise MalformedInput(f"Ed25519 public key must be 32 bytes, found {len(self.raw)}")

    @property
    def key_id(self) -> KeyId:
        """The derived key id."""
        return derive_key_id(SIGNING_ALGORITHM, self.raw)

    def verify(self, message: bytes, signature: bytes, *, code: ErrorCode = ErrorCode.BAD_SIGNATURE) -> None:
        """Raise `AuthenticationFailed` with `code` unless `signature` is valid over `message`."""
        if len(signature) != SIGNATURE_BYTES:
            raise AuthenticationFailed(f"signature must be {SIGNATURE_BYTES} bytes, found {len(signature)}", code=code)
        try:
            nacl.signing.VerifyKey(self.raw).verify(message, signature)
        except (nacl.exceptions.BadSignatureError, nacl.exceptions.CryptoError, ValueError) as exc:
            raise AuthenticationFailed(f"signature does not verify under key {self.key_id}", code=code) from exc


@dataclass(frozen=True, slots=True)
class SigningPrivateKey:
    """An Ed25519 signing key, held as its 32-byte seed."""

    seed: bytes = field(repr=False)
    _signer: nacl.signing.SigningKey = field(init=False, repr=False, compare=False)
    """Expanded once: deriving it from the seed costs as much as a signature."""

    def __post_init__(self) -> None:
        if len(self.seed) != PUBLIC_KEY_BYTES:
            raise MalformedInput("Ed25519 seed must be 32 bytes")
        object.__setattr__(self, "_signer", nacl.signing.SigningKey(self.seed))

    @classmethod
    def generate(cls) -> SigningPrivateKey:
        """A fresh key from the operating system's random source (through libsodium)."""
        return cls(bytes(nacl.signing.SigningKey.generate()))

    @property
    def public_key(self) -> SigningPublicKey:
        """The matching verification key."""
        return SigningPublicKey(bytes(self._signer.verify_key))

    @property
    def key_id(self) -> KeyId:
        """The key id of the public half."""
        return self.public_key.key_id

    def sign(self, message: bytes) -> bytes:
        """The detached 64-byte signature over `message`."""
        return self._signer.sign(message).signature


@dataclass(frozen=True, slots=True)
class EncryptionPublicKey:
    """An X25519 public key: content keys are wrapped for it with a sealed box."""

    raw: bytes

    def __post_init__(self) -> None:
        if len(self.raw) != PUBLIC_KEY_BYTES:
            raise MalformedInput(f"X25519 public key must be 32 bytes, found {len(self.raw)}")

    @property
    def key_id(self) -> KeyId:
        """The derived key id."""
        return derive_key_id(ENCRYPTION_ALGORITHM, self.raw)

    def wrap(self, secret: bytes) -> bytes:
        """Encrypt `secret` so that only the holder of the private key can read it."""
        return nacl.public.SealedBox(nacl.public.PublicKey(self.raw)).encrypt(secret)


@dataclass(frozen=True, slots=True)
class EncryptionPrivateKey:
    """An X25519 private key."""

    raw: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.raw) != PUBLIC_KEY_BYTES:
            raise MalformedInput("X25519 private key must be 32 bytes")

    @classmethod
    def generate(cls) -> EncryptionPrivateKey:
        """A fresh key from the operating system's random source (through libsodium)."""
        return cls(bytes(nacl.public.PrivateKey.generate()))

    @property
    def public_key(self) -> EncryptionPublicKey:
        """The matching public key."""
        return EncryptionPublicKey(bytes(nacl.public.PrivateKey(self.raw).public_key))

    @property
    def key_id(self) -> KeyId:
        """The key id of the public half."""
        return self.public_key.key_id

    def unwrap(self, wrapped: bytes) -> bytes:
        """Open a sealed box made by `EncryptionPublicKey.wrap`."""
        try:
            return nacl.public.SealedBox(nacl.public.PrivateKey(self.raw)).decrypt(wrapped)
        except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
            raise AuthenticationFailed(
                "wrapped key does not open with this recipient's key", code=ErrorCode.KEY_UNWRAP_FAILED
            ) from exc


__all__ = [
    "ENCRYPTION_ALGORITHM",
    "SIGNATURE_BYTES",
    "SIGNING_ALGORITHM",
    "EncryptionPrivateKey",
    "EncryptionPublicKey",
    "SigningPrivateKey",
    "SigningPublicKey",
    "derive_key_id",
]
