"""Files and directories only their owner may read: 0600 and 0700, whatever the process umask.

A service's data (an agent's decrypted documents, attachment bodies, the
directory it holds) is written with these modes set at creation, not left to
the umask, and an existing path is narrowed when found wider (a data
directory made before, a database that SQLite created).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO, Final, Literal

FILE_MODE: Final = 0o600
DIRECTORY_MODE: Final = 0o700
PRIVATE_UMASK: Final = 0o077
"""The umask a service sets at start, in addition: what it creates by other means is private too."""


def private_directory(path: Path) -> Path:
    """`path` (and missing parents) made if needed; `path` itself narrowed to 0700."""
    path.mkdir(parents=True, exist_ok=True, mode=DIRECTORY_MODE)
    restrict(path)
    return path


def restrict(path: Path) -> None:
    """Narrow an existing file to 0600 or directory to 0700 (a missing path is left alone)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return
    wanted = DIRECTORY_MODE if stat.S_ISDIR(mode) else FILE_MODE
    if stat.S_IMODE(mode) != wanted:
        path.chmod(wanted)


def create_private(path: Path) -> None:
    """Make `path` an empty 0600 file unless it exists (then narrowed): for files another library opens."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        restrict(path)
        return
    os.close(fd)
    restrict(path)


def open_private(path: Path, mode: Literal["wb", "r+b"]) -> BinaryIO:
    """`path` opened for `mode` (binary, writing), created 0600 when new, narrowed to 0600 if it was wider."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC if mode == "wb" else os.O_RDWR | os.O_CREAT
    fd = os.open(path, flags, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    except OSError:
        os.close(fd)
        raise
    return os.fdopen(fd, mode)


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically (a 0600 temporary file, fsync, rename)."""
    temporary = path.with_name(path.name + ".tmp")
    with open_private(temporary, "wb") as sink:
        sink.write(data)
        sink.flush()
        os.fsync(sink.fileno())
    temporary.replace(path)


__all__ = [
    "DIRECTORY_MODE",
    "FILE_MODE",
    "PRIVATE_UMASK",
    "create_private",
    "open_private",
    "private_directory",
    "restrict",
    "write_private",
]
