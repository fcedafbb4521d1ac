"""Keys at rest open only with their passphrase, and any change to the file is detected."""

from __future__ import annotations

import json

import nacl.pwhash
import pytest

from protocol.encoding import b64decode, b64encode
from protocol.errors import AuthenticationFailed
from protocol.keystore import lock_keystore, unlock_keystore

OPS, MEM = nacl.pwhash.argon2id.OPSLIMIT_MIN, nacl.pwhash.argon2id.MEMLIMIT_MIN
KEYS = {"signing": bytes(range(32)), "encryption": bytes(range(32, 64))}


def test_keystore_round_trips_with_the_right_passphrase():
    """The keys come back exactly."""
    assert (
        unlock_keystore(
            lock_keystore(KEYS, b"correct horse battery", opslimit=OPS, memlimit=MEM), b"correct horse battery"
        )
        == KEYS
    )


def test_wrong_passphrase_is_refused():
    """Another passphrase does not open the keystore."""
    locked = lock_keystore(KEYS, b"correct horse battery", opslimit=OPS, memlimit=MEM)
    with pytest.raises(AuthenticationFailed):
        unlock_keystore(locked, b"incorrect horse battery")


def test_altered_keystore_is_refused():
    """A changed byte of the encrypted keys is detected."""
    document = json.loads(lock_keystore(KEYS, b"correct horse battery", opslimit=OPS, memlimit=MEM))
    box = bytearray(b64decode(document["box"]))
    box[-1] ^= 1
    document["box"] = b64encode(bytes(box))
    with pytest.raises(AuthenticationFailed):
        unlock_keystore(json.dumps(document).encode(), b"correct horse battery")


def test_keystore_holds_no_key_in_clear():
    """The file does not contain the private key bytes in any plain encoding."""
    locked = lock_keystore(KEYS, b"correct horse battery", opslimit=OPS, memlimit=MEM)
    for key in KEYS.values():
        assert key not in locked
        assert b64encode(key).encode() not in locked
        assert key.hex().encode() not in locked


def test_short_passphrase_is_refused():
    """A passphrase under 12 bytes is not accepted."""
    with pytest.raises(ValueError, match="at least"):
        lock_keystore(KEYS, b"short", opslimit=OPS, memlimit=MEM)
