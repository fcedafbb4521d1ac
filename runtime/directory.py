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

Versions also come from elsewhere than the file, with the same checks: an
agent's inbox hands the gateway's push to `offer` (`KIND_DIRECTORY`), and
each look also asks the watch's other `sources` (an agent's poll of the
gateway's `GET /v1/directory`, for the push it missed). Nothing is trusted
for where it came from: only the authority's signature and the version
count. A version adopted from elsewhere is first written to the file, so a
restart starts from it. Checks and adoptions take turns (one lock).

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
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from enum import StrEnum
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
from runtime.private_files import write_private

log = structlog.get_logger("rogatory.directory")

Adopt = Callable[[SignedStatement, Directory], Awaitable[None]]
"""Make a verified, newer version durable before it takes effect; raise `ConfigurationError` or
`DirectoryRejected` to refuse it, `TransientFailure` to try again at the next look."""


Source = Callable[[], Awaitable[bytes]]
"""Fetch the signed directory a source holds now; raise `TransientFailure` when it cannot be reached."""

FILE_SOURCE = "file"
"""The name, in logs, of the configured directory file as a source."""


class Offered(StrEnum):
    """What became of a version offered to the watch."""

    ADOPTED = "adopted"
    """Newer, verified, made durable, in force."""
    IN_FORCE = "in_force"
    """The very version in force: nothing to do."""
    REFUSED = "refused"
    """Unsigned, forged, expired, older, or another document under the version in force (logged)."""
    POSTPONED = "postponed"
    """A transient failure (disk, store) while making it durable: try again later."""


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
        sources: Mapping[str, Source] | None = None,
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
        self._sources = dict(sources or {})
        self._source_digests: dict[str, bytes] = {}
        """Digest of what each source answered last (judged for good): unchanged answers are not judged again."""
        self._sources_away: set[str] = set()
        self._judging = asyncio.Lock()

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
        async with self._judging:
            offered = await self._judge(raw, source=FILE_SOURCE)
        if offered is not Offered.POSTPONED:
            self._looked_at = digest
        return offered is Offered.ADOPTED

    async def offer(self, raw: bytes, *, source: str) -> Offered:
        """Judge a version that came from elsewhere than the file (the gateway's push or its HTTP API).

        The same checks as the file's: the authority's signature, no rollback,
        not expired. A version adopted from elsewhere is written to the file
        (atomically) before it is made durable, so a restart starts from it.
        Refusals are logged, never raised.
        """
        async with self._judging:
            return await self._judge(raw, source=source)

    async def _judge(self, raw: bytes, *, source: str) -> Offered:
        held = self._directory
        try:
            if len(raw) > max_signed_directory_bytes(self._limits):
                raise DirectoryRejected(
                    f"signed directory of {len(raw)} bytes is over the limit", code=ErrorCode.TOO_LARGE
                )
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
                return Offered.IN_FORCE
            if source != FILE_SOURCE:
                await self._keep_in_file(raw)
            await self._adopt(signed, directory)
        except TransientFailure as exc:
            log.warning("directory_reload_postponed", source=source, file=str(self._path), error=str(exc)[:300])
            return Offered.POSTPONED
        except (ProtocolError, ConfigurationError) as exc:
            code = exc.code if isinstance(exc, ProtocolError) else None
            log.error(
                "directory_refused",
                source=source,
                file=str(self._path),
                code=None if code is None else str(code),
                error=str(exc)[:500],
                version_in_force=held.version,
            )
            return Offered.REFUSED
        self._directory = directory
        self._expiry_logged = False
        log.info(
            "directory_reloaded",
            source=source,
            version=directory.version,
            previous_version=held.version,
            expires_at=format_timestamp(directory.expires_at),
        )
        return Offered.ADOPTED

    async def _keep_in_file(self, raw: bytes) -> None:
        """Write a version taken from elsewhere to the file, whole (temporary file, fsync, rename), unless it holds it.

        A file that already holds these bytes is left alone: where several
        services share one file (the dev stack), none rewrites it under another.
        """
        try:
            with contextlib.suppress(FileNotFoundError):
                if await asyncio.to_thread(self._path.read_bytes) == raw:
                    return
            await asyncio.to_thread(write_private, self._path, raw)
        except OSError as exc:
            raise TransientFailure(f"cannot write the directory file {self._path}: {type(exc).__name__}") from exc

    async def _look_at_sources(self) -> None:
        """Ask each other source (the gateway's `GET /v1/directory`) for its version; offer what is new."""
        for name, fetch in self._sources.items():
            try:
                raw = await fetch()
            except TransientFailure as exc:
                if name not in self._sources_away:
                    log.warning("directory_source_unavailable", source=name, error=str(exc)[:300])
                self._sources_away.add(name)
                continue
            self._sources_away.discard(name)
            digest = hashlib.sha256(raw).digest()
            if self._source_digests.get(name) == digest:
                continue
            if await self.offer(raw, source=name) is not Offered.POSTPONED:
                self._source_digests[name] = digest

    async def run(self, stopping: asyncio.Event) -> None:
        """Every `interval_s` s until `stopping`: the file, then the other sources; log once when expired."""
        while not stopping.is_set():
            await self.check()
            await self._look_at_sources()
            if self.expired() and not self._expiry_logged:
                self._expiry_logged = True
                log.error(
                    "directory_expired",
                    version=self._directory.version,
                    expired_at=format_timestamp(self._directory.expires_at),
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=self._interval_s)


def max_signed_directory_bytes(limits: Limits) -> int:
    """A signed directory's JSON: its payload in base64 (4/3) with room for the signature and names."""
    return limits.max_directory_bytes * 4 // 3 + 4096


__all__ = ["FILE_SOURCE", "Adopt", "DirectoryWatch", "Offered", "Source", "max_signed_directory_bytes"]
