"""Passphrases and the files a site writes: private ones 0600 in a 0700 directory, public ones 0644.

A passphrase comes from `--passphrase-file`, else from the environment
variable `ROGATORY_PASSPHRASE`, else from a prompt on the terminal (twice
when a keystore is made). It is never written by these commands: the
operator keeps it (a service reads it from its `ROGATORY_KEYSTORE_PASSPHRASE_FILE`).
"""

from __future__ import annotations

import getpass
import os
from pathlib import Path
from typing import Final

from runtime.private_files import private_directory, write_private

PASSPHRASE_VARIABLE: Final = "ROGATORY_PASSPHRASE"  # noqa: S105 - the variable's name, not a secret
PUBLIC_MODE: Final = 0o644


class SiteError(Exception):
    """A site command cannot go on: the message says what was checked and what was found."""


def read_passphrase(passphrase_file: str | None, *, confirm: bool) -> bytes:
    """The passphrase from the file, the environment or the terminal (see the module docstring)."""
    if passphrase_file:
        try:
            return Path(passphrase_file).read_bytes().strip()
        except OSError as exc:
            raise SiteError(f"cannot read the passphrase file {passphrase_file}: {exc.strerror}") from exc
    from_environment = os.environ.get(PASSPHRASE_VARIABLE)
    if from_environment:
        return from_environment.encode("utf-8")
    try:
        first = getpass.getpass("keystore passphrase: ")
        if confirm and getpass.getpass("again: ") != first:
            raise SiteError("the two passphrases differ")
    except EOFError as exc:
        raise SiteError(f"no passphrase: give --passphrase-file or {PASSPHRASE_VARIABLE}") from exc
    return first.encode("utf-8")


def write_secret(path: Path, data: bytes) -> None:
    """Write `data` atomically, 0600, in a directory only its owner may enter."""
    private_directory(path.parent)
    write_private(path, data)


def write_public(path: Path, data: bytes) -> None:
    """Write public material atomically (0644): it is meant to be carried to other sites."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(data)
    temporary.chmod(PUBLIC_MODE)
    temporary.replace(path)


def refuse_existing(path: Path, what: str) -> None:
    """`SiteError` if `path` exists: a site never overwrites a key it made."""
    if path.exists():
        raise SiteError(f"{what} {path} exists already: refusing to overwrite it")


__all__ = [
    "PASSPHRASE_VARIABLE",
    "SiteError",
    "read_passphrase",
    "refuse_existing",
    "write_public",
    "write_secret",
]
