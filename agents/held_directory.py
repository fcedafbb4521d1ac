"""The highest directory version this agent has accepted, remembered across restarts: no rollback.

`verify_directory` refuses an unsigned or expired directory; only the agent
can know that it once held a newer one. An older signed directory (one that
still lists a key revoked since, say) is refused at start with
`DIRECTORY_ROLLBACK`, as is another document under the version held.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from protocol.directory import Directory
from protocol.encoding import sha256_hex
from protocol.errors import ErrorCode
from runtime.errors import ConfigurationError
from runtime.private_files import private_directory, write_private

HELD_FILE: Final = "directory-held"
"""In the data directory: `<version> <sha256 of the directory's canonical bytes>`."""


def remember_directory(data_dir: Path, directory: Directory) -> None:
    """Accept `directory` unless older than the one held (or another one of the same version); remember it."""
    path = data_dir / HELD_FILE
    digest = sha256_hex(directory.canonical_bytes())
    try:
        held_version, held_digest = path.read_text(encoding="ascii").split()
    except FileNotFoundError:
        held_version, held_digest = "0", ""
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"cannot read the directory version held in {path}: {type(exc).__name__}") from exc
    if directory.version < int(held_version):
        raise ConfigurationError(
            f"{ErrorCode.DIRECTORY_ROLLBACK}: directory version {directory.version} is older than "
            f"version {held_version} this agent already accepted"
        )
    if directory.version == int(held_version) and digest != held_digest:
        raise ConfigurationError(
            f"{ErrorCode.DIRECTORY_ROLLBACK}: directory version {directory.version} is another document "
            "than the one this agent accepted under that version"
        )
    private_directory(data_dir)
    write_private(path, f"{directory.version} {digest}\n".encode("ascii"))


__all__ = ["HELD_FILE", "remember_directory"]
