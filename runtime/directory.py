"""`DirectoryWatch`: the directory in force in a running service, reloaded from its file, enforced until it expires.

Both services start on a verified directory (`runtime.runner.read_directory`)
and hand the watch, or its `current`, to everything that verifies traffic.
The watch's task looks at the file every `interval_s` seconds
(`ROGATORY_DIRECTORY_RELOAD_S`). When the file's bytes changed it verifies
them against the authority's key (`protocol.directory.verify_directory`),
refuses a lower version (rollback) and another document under the version in
force (`DIRECTORY_ROLLBACK`), lets the service make the new version durable
(`adopt`: the gateway appends it to the audit log, an agent remembers it
against rollback across restarts) and only then puts it in force. A refused
file is logged once (`directory_refused`, with its code) and the version in
force stays. A new version therefore takes effect within `interval_s` (plus
the time to read and verify it) of being written, without a restart.

Expiry is checked at each use, not at each look: from the directory's
`expires_at` on, `current` raises `DirectoryExpired` (a transient failure),
so a consumer holds its deliveries unacknowledged and an API answers 503
`DIRECTORY_EXPIRED` until a newer version takes effect. `held` is the
version in force whatever its expiry, for health and the operator's views;
`health()` reports the version and its expiry, `alarms()` an expired one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from protocol.directory import Directory, verify_directory
from protocol.encoding import format_timestamp
from protocol.errors import DirectoryRejected, ErrorCode, ProtocolError
from protocol.keys import SigningPublicKey
from protocol.limits import Limits
from protocol.signing import SignedStatement
from runtime.errors import ConfigurationError, DirectoryExpired, TransientFailure

log = structlog.get_logger("rogatory.directory")

Adopt = Callable[[SignedStatement, Directory], Awaitable[None]]
"""Make a verified, newer version durable before it takes effect; raise `ConfigurationError` or
`DirectoryRejected` to refuse it, `TransientFailure` to try again at the next look."""


async def _nothing_to_record(_signed: SignedStatement, _directory: Directory) -> None:
    return None


class DirectoryWatch:
    """The directory in force: `current` for traffic (refused once expired), `run` to take newer versions."""

    def __init__(
        self,
        path: Path,
        *,
        authority: SigningPublicKey,
        directory: Directory,
        clock: Callable[[], datetime],
        limits: Limits,
        interval_s: float,
        adopt: Adopt = _nothing_to_record,
    ) -> None:
        self._path = path
        self._authority = authority
        self._directory = directory
        self._clock = clock
        self._limits = limits
        self._interval_s = interval_s
        self._adopt = adopt
        self._looked_at: bytes | None = None
        """Digest of the file's bytes last judged (taken or refused for good): unchanged bytes are not judged again."""
        self._unreadable = False
        self._expiry_logged = False

    # -- the version in force ------------------------------------------------------------------

    @property
    def held(self) -> Directory:
        """The version in force, expired or not: for health and the operator's views, never to verify traffic."""
        return self._directory

    @property
    def current(self) -> Directory:
        """The version in force, to verify traffic with; `DirectoryExpired` from its expiry on."""
        directory = self._directory
        if self._clock() >= directory.expires_at:
            raise DirectoryExpired(
                f"{ErrorCode.DIRECTORY_EXPIRED}: directory version {directory.version} expired at "
                f"{format_timestamp(directory.expires_at)}; nothing that needs it is done until a newer version "
                "takes effect"
            )
        return directory

    def __call__(self) -> Directory:
        """`current`, as the `directory()` callable the services' parts take."""
        return self.current

    def expired(self) -> bool:
        """Whether the version in force has expired (traffic that needs it is refused)."""
        return self._clock() >= self._directory.expires_at

    def health(self) -> dict[str, Any]:
        """What `/healthz` says of the directory: its version, its expiry, whether it expired."""
        return {
            "directory_version": self._directory.version,
            "directory_expires_at": format_timestamp(self._directory.expires_at),
            "directory_expired": self.expired(),
        }

    def alarms(self) -> list[str]:
        """The health alarm of an expired directory (none while it is in force)."""
        if not self.expired():
            return []
        expired_at = format_timestamp(self._directory.expires_at)
        alarm = f"directory version {self._directory.version} expired at {expired_at}: traffic that needs it is refused"
        return [alarm + " until a newer version arrives"]

    # -- taking newer versions -----------------------------------------------------------------

    async def check(self) -> bool:
        """One look at the file: True if a newer version took effect (refusals are logged, never raised)."""
        try:
            raw = await asyncio.to_thread(self._path.read_bytes)
        except OSError as exc:
            if not self._unreadable:
                log.error("directory_unreadable", file=str(self._path), error=type(exc).__name__)
            self._unreadable = True
            return False
        self._unreadable = False
        digest = hashlib.sha256(raw).digest()
        if digest == self._looked_at:
            return False
        held = self._directory
        try:
            signed = SignedStatement.from_json(raw, code=ErrorCode.MALFORMED_DIRECTORY)
            directory = verify_directory(
                signed, self._authority, now=self._clock(), held_version=held.version, limits=self._limits
            )
            if directory.version == held.version:
                if directory != held:
                    raise DirectoryRejected(
                        f"directory version {directory.version} is another document than the one in force "
                        "under that version",
                        code=ErrorCode.DIRECTORY_ROLLBACK,
                    )
                self._looked_at = digest
                return False
            await self._adopt(signed, directory)
        except TransientFailure as exc:
            log.warning("directory_reload_postponed", file=str(self._path), error=str(exc)[:300])
            return False
        except (ProtocolError, ConfigurationError) as exc:
            self._looked_at = digest
            code = exc.code if isinstance(exc, ProtocolError) else None
            log.error(
                "directory_refused",
                file=str(self._path),
                code=None if code is None else str(code),
                error=str(exc)[:500],
                version_in_force=held.version,
            )
            return False
        self._looked_at = digest
        self._directory = directory
        self._expiry_logged = False
        log.info(
            "directory_reloaded",
            version=directory.version,
            previous_version=held.version,
            expires_at=format_timestamp(directory.expires_at),
        )
        return True

    async def run(self, stopping: asyncio.Event) -> None:
        """Look at the file every `interval_s` s until `stopping` is set; log once when the one in force expires."""
        while not stopping.is_set():
            await self.check()
            if self.expired() and not self._expiry_logged:
                self._expiry_logged = True
                log.error(
                    "directory_expired",
                    version=self._directory.version,
                    expired_at=format_timestamp(self._directory.expires_at),
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=self._interval_s)


__all__ = ["Adopt", "DirectoryWatch"]
