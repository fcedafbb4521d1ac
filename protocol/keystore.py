"""Private keys at rest: encrypted under a passphrase (Argon2id, then XSalsa20-Poly1305).

A keystore holds named private keys (signing seeds and X25519 keys) of one
agency or of the gateway. The file is JSON; the keys are inside a secretbox
whose key is derived from the passphrase with Argon2id (libsodium's
`crypto_pwhash`), parameters and salt stored beside it. The services do the
file I/O; this module only turns bytes into keys and back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final, Literal

import nacl.exceptions
import nacl.pwhash
import nacl.secret
import nacl.utils
from pydantic import Field

from protocol.encoding import Base64Bytes, parse_json_strict
from protocol.errors import AuthenticationFailed, ErrorCode
from protocol.model import FrozenModel, parse_model

KEYSTORE_FORMAT: Final = "rogatory-keystore/1"
# libsodium's "interactive" Argon2id parameters: about 0.1 s and 64 MiB per unlock.
DEFAULT_OPSLIMIT: Final = nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE
DEFAULT_MEMLIMIT: Final = nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE
_MIN_PASSPHRASE_BYTES: Final = 12


class KdfParameters(FrozenModel):
    """How the passphrase became the box key."""

    algorithm: Literal["argon2id13"] = "argon2id13"
    opslimit: int = Field(ge=1)
    memlimit: int = Field(ge=8192)
    salt: Base64Bytes


class KeystoreFile(FrozenModel):
    """The keystore as it lies on disk."""

    format: Literal["rogatory-keystore/1"] = KEYSTORE_FORMAT
    kdf: KdfParameters
    box: Base64Bytes


class _KeystoreContent(FrozenModel):
    keys: dict[str, Base64Bytes]


def _derive(passphrase: bytes, kdf: KdfParameters) -> bytes:
    return nacl.pwhash.argon2id.kdf(
        nacl.secret.SecretBox.KEY_SIZE, passphrase, kdf.salt, opslimit=kdf.opslimit, memlimit=kdf.memlimit
    )


def lock_keystore(
    keys: Mapping[str, bytes],
    passphrase: bytes,
    *,
    opslimit: int = DEFAULT_OPSLIMIT,
    memlimit: int = DEFAULT_MEMLIMIT,
    random_bytes: Callable[[int], bytes] = nacl.utils.random,
) -> bytes:
    """Encrypt `keys` under `passphrase`; returns the file's bytes."""
    if len(passphrase) < _MIN_PASSPHRASE_BYTES:
        raise ValueError(f"passphrase must be at least {_MIN_PASSPHRASE_BYTES} bytes")
    kdf = KdfParameters(opslimit=opslimit, memlimit=memlimit, salt=random_bytes(nacl.pwhash.argon2id.SALTBYTES))
    content = _KeystoreContent(keys=dict(keys)).canonical_bytes()
    box = nacl.secret.SecretBox(_derive(passphrase, kdf)).encrypt(
        content, random_bytes(nacl.secret.SecretBox.NONCE_SIZE)
    )
    return KeystoreFile(kdf=kdf, box=bytes(box)).model_dump_json().encode("utf-8")


def unlock_keystore(raw: bytes, passphrase: bytes) -> dict[str, bytes]:
    """Decrypt a keystore file; `AuthenticationFailed` if the passphrase is wrong or the file altered."""
    parse_json_strict(raw, max_bytes=1 << 20, max_depth=4)
    stored = parse_model(KeystoreFile, raw, what="keystore", code=ErrorCode.MALFORMED_JSON)
    try:
        content = nacl.secret.SecretBox(_derive(passphrase, stored.kdf)).decrypt(stored.box)
    except nacl.exceptions.CryptoError as exc:
        raise AuthenticationFailed(
            "keystore does not open: wrong passphrase or altered file", code=ErrorCode.KEY_UNWRAP_FAILED
        ) from exc
    return dict(parse_model(_KeystoreContent, content, what="keystore content").keys)


PREVIOUS_SEPARATOR: Final = ".previous."


def rotate_key(keys: Mapping[str, bytes], name: str, new_secret: bytes) -> dict[str, bytes]:
    """The keystore content with `new_secret` under `name` and the key it replaces kept as `name.previous.N`.

    Rotation without downtime: a recipient keeps its previous encryption
    keys until every message wrapped to them has expired, so messages in
    flight when the directory starts listing the new key still open.
    """
    if name not in keys:
        raise ValueError(f"no key {name!r} to rotate")
    rotated = dict(keys)
    taken = {key for key in keys if key.startswith(name + PREVIOUS_SEPARATOR)}
    rotated[f"{name}{PREVIOUS_SEPARATOR}{len(taken) + 1}"] = keys[name]
    rotated[name] = new_secret
    return rotated


def previous_keys(keys: Mapping[str, bytes], name: str) -> tuple[bytes, ...]:
    """The keys `rotate_key` retired from `name`, oldest first."""
    prefix = name + PREVIOUS_SEPARATOR
    retired = [(int(key.removeprefix(prefix)), secret) for key, secret in keys.items() if key.startswith(prefix)]
    return tuple(secret for _, secret in sorted(retired))


__all__ = [
    "KEYSTORE_FORMAT",
    "KdfParameters",
    "KeystoreFile",
    "lock_keystore",
    "previous_keys",
    "rotate_key",
    "unlock_keystore",
]
