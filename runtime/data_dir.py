"""A service's claim on its data directory: one process at a time, and who the data belongs to.

At start, a service takes an exclusive advisory lock (`flock`) on
`<data>/service.lock`, held until it stops (or dies: the kernel releases
it), and writes `<data>/identity.json`: its kind (`agent` or `gateway`),
the agency or gateway id it speaks for and the fingerprints of its public
signing keys (current and rotated-out). Nothing secret is in it.

`rogatory backup` records that identity in a backup's manifest, and
`rogatory restore` refuses a backup of another identity and a data
directory whose lock is held (a running service, or another restore):
`data_dir_in_use`. A second process started on a directory already
claimed waits a little for it (a predecessor finishing its stop), then
refuses to start (`ConfigurationError`).

Several processes of one gateway sharing a PostgreSQL database each claim a
data directory of their own: each writes the same identity (the gateway's)
into its own, and nothing compares the directories with one another.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import structlog

from runtime.errors import ConfigurationError
from runtime.private_files import private_directory, write_private

LOCK_FILE: Final = "service.lock"
IDENTITY_FILE: Final = "identity.json"
CLAIM_WAIT_S: Final = 15.0
"""How long a starting service waits for another process to release the data directory."""

ServiceKind = Literal["agent", "gateway"]
log = structlog.get_logger("rogatory.data_dir")


@dataclass(frozen=True, slots=True)
class ServiceIdentity:
    """Who a data directory belongs to: public facts only."""

    kind: ServiceKind
    name: str
    """The agency id (`BD-MOHA-PSD`) or the gateway id."""
    signing_keys: tuple[str, ...]
    """SHA-256 (hex) of each public signing key the service holds, current first."""

    def to_json(self) -> dict[str, object]:
        """The identity as `identity.json` and a backup's manifest hold it."""
        return {"kind": self.kind, "name": self.name, "signing_keys": list(self.signing_keys)}

    @classmethod
    def from_json(cls, document: object) -> ServiceIdentity | None:
        """An identity read back; None when `document` is not one."""
        if not isinstance(document, dict):
            return None
        kind, name, keys = document.get("kind"), document.get("name"), document.get("signing_keys")
        if kind not in ("agent", "gateway") or not isinstance(name, str) or not isinstance(keys, list):
            return None
        if not all(isinstance(key, str) for key in keys):
            return None
        return cls(kind=kind, name=name, signing_keys=tuple(keys))

    def same_owner(self, other: ServiceIdentity) -> bool:
        """Same kind and id, and at least one signing key in common (a rotation keeps the old key)."""
        return (
            self.kind == other.kind
            and self.name == other.name
            and bool(set(self.signing_keys) & set(other.signing_keys))
        )

    def describe(self) -> str:
        """`agent BD-MOHA-PSD (key 3f2a…)` for messages."""
        key = self.signing_keys[0][:16] if self.signing_keys else "none"
        return f"{self.kind} {self.name} (signing key sha256 {key}…)"


def key_fingerprint(public_key: bytes) -> str:
    """SHA-256 (hex) of a raw public key."""
    return hashlib.sha256(public_key).hexdigest()


def identity_of(kind: ServiceKind, name: str, public_keys: Iterable[bytes]) -> ServiceIdentity:
    """The identity of a service holding these public signing keys (current first)."""
    return ServiceIdentity(kind=kind, name=name, signing_keys=tuple(dict.fromkeys(map(key_fingerprint, public_keys))))


def read_identity(data_dir: Path) -> ServiceIdentity | None:
    """The identity a service wrote into `data_dir`; None when there is none (or it is unreadable)."""
    try:
        document = json.loads((data_dir / IDENTITY_FILE).read_bytes())
    except (OSError, ValueError):
        return None
    return ServiceIdentity.from_json(document)


class DataDirClaim:
    """The lock a running service holds on its data directory; `release` at stop."""

    def __init__(self, descriptor: int) -> None:
        self._descriptor: int | None = descriptor

    def release(self) -> None:
        """Let go of the directory (idempotent)."""
        if self._descriptor is not None:
            with contextlib.suppress(OSError):
                os.close(self._descriptor)
            self._descriptor = None


def released(claim: DataDirClaim) -> Callable[[], Awaitable[None]]:
    """A service's closer that releases `claim` (the last one, after its stores closed)."""

    async def release() -> None:
        claim.release()

    return release


def _try_lock(path: Path) -> int | None:
    """An open descriptor of `path` holding its exclusive lock; None when someone else holds it."""
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        return None
    except OSError:
        os.close(descriptor)
        raise
    return descriptor


def claim_data_dir(data_dir: Path, identity: ServiceIdentity, *, wait_s: float = CLAIM_WAIT_S) -> DataDirClaim:
    """Lock `data_dir` for this process and write its identity; `ConfigurationError` if another holds it."""
    private_directory(data_dir)
    deadline = time.monotonic() + wait_s
    try:
        while (descriptor := _try_lock(data_dir / LOCK_FILE)) is None:
            if time.monotonic() >= deadline:
                raise ConfigurationError(
                    f"the data directory {data_dir} is in use by another process (a running service, or a restore)"
                )
            time.sleep(0.5)
    except OSError as exc:
        raise ConfigurationError(f"cannot lock the data directory {data_dir}: {exc}") from exc
    try:
        if read_identity(data_dir) != identity:
            write_private(data_dir / IDENTITY_FILE, (json.dumps(identity.to_json(), indent=1) + "\n").encode())
    except OSError as exc:  # a full disk must not stop a start: the identity only serves backups
        log.warning("identity_not_written", path=str(data_dir / IDENTITY_FILE), error=str(exc)[:300])
    return DataDirClaim(descriptor)


def data_dir_in_use(data_dir: Path) -> bool:
    """Whether a process holds `data_dir`'s lock now (a missing directory or lock file: no)."""
    if not (data_dir / LOCK_FILE).exists():
        return False
    descriptor = _try_lock(data_dir / LOCK_FILE)
    if descriptor is None:
        return True
    os.close(descriptor)
    return False


def hold_data_dir(data_dir: Path) -> DataDirClaim | None:
    """The lock of `data_dir` for a restore (made if missing); None when a process holds it."""
    descriptor = _try_lock(data_dir / LOCK_FILE)
    return None if descriptor is None else DataDirClaim(descriptor)


__all__ = [
    "IDENTITY_FILE",
    "LOCK_FILE",
    "DataDirClaim",
    "ServiceIdentity",
    "ServiceKind",
    "claim_data_dir",
    "data_dir_in_use",
    "hold_data_dir",
    "identity_of",
    "key_fingerprint",
    "read_identity",
    "released",
]
