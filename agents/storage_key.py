"""The agency's storage key: read from its keystore, added to it on the agent's first start.

What the agent keeps decrypted is sealed under this key (`protocol.storage`).
A keystore made before the key existed holds none; the agent has the
passphrase, so it adds one: it locks the keys it unlocked plus a fresh
`storage` key under the same passphrase and Argon2id parameters (a new salt)
and replaces the file atomically, 0600. If it cannot write the keystore it
does not start. The agent's store then refuses to open rows sealed under
another key (`agents.store.seal_plain_rows`), so a keystore restored from
before the key was added stops the agent rather than losing its documents.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import structlog

from protocol.errors import ProtocolError
from protocol.keystore import KeystoreFile, lock_keystore, unlock_keystore
from protocol.model import parse_model
from protocol.storage import STORAGE_KEY_NAME, StorageKey
from runtime.errors import ConfigurationError
from runtime.private_files import write_private

log = structlog.get_logger("rogatory.agent")


def storage_key(keys: Mapping[str, bytes], keystore_file: Path, passphrase_file: Path) -> StorageKey:
    """The `storage` key of the unlocked `keys`; made and written into the keystore if it holds none."""
    try:
        if STORAGE_KEY_NAME in keys:
            return StorageKey(keys[STORAGE_KEY_NAME])
        raw = keystore_file.read_bytes()
        kdf = parse_model(KeystoreFile, raw, what="keystore").kdf
        passphrase = passphrase_file.read_bytes().strip()
        key = StorageKey.generate()
        locked = lock_keystore(
            {**keys, STORAGE_KEY_NAME: key.raw}, passphrase, opslimit=kdf.opslimit, memlimit=kdf.memlimit
        )
        unlock_keystore(locked, passphrase)  # what is written opens
        write_private(keystore_file, locked)
    except (OSError, ProtocolError, ValueError) as exc:
        raise ConfigurationError(f"cannot add a storage key to the keystore {keystore_file}: {exc}") from exc
    log.warning("storage_key_added", keystore=str(keystore_file))
    return key


__all__ = ["storage_key"]
