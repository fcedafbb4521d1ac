"""`DirectoryHolder`: the directory version in force at the gateway, and how it changes.

A version is accepted only if the directory authority signed it, it is not
older than the version already held (remembered in the store, so a restart
cannot roll back) and it has not expired. Each accepted version becomes an
audit-log leaf before it is used, and in the same transaction a copy of it
is committed to the outgoing table for every agency it lists (`KIND_DIRECTORY`,
published by `gateway.outgoing.OutgoingRelay`, so a crash cannot lose the
push). The leaves keep every version as the authority signed it:
`signed_version` reads one back for `GET /v1/directory[/{version}]`.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path

import structlog

from gateway.auditlog import AuditLog
from gateway.store import GatewayStore
from protocol.auditlog import DirectoryLeaf, decode_leaf, directory_leaf
from protocol.directory import Directory, verify_directory
from protocol.encoding import format_timestamp, sha256_hex
from protocol.errors import ErrorCode, ProtocolError
from protocol.keys import SigningPublicKey
from protocol.limits import Limits
from protocol.signing import SignedStatement
from protocol.topology import KIND_DIRECTORY
from runtime.errors import ConfigurationError

log = structlog.get_logger("rogatory.gateway.directory")

_HELD_VERSION = "directory_version"
_HELD_DIGEST = "directory_sha256"


class DirectoryHolder:
    """Holds the directory in force; `load` reads it, `adopt` (`runtime.directory.DirectoryWatch`) takes newer ones."""

    def __init__(self, directory: Directory, signed: SignedStatement) -> None:
        self._directory = directory
        self._signed = signed

    @property
    def current(self) -> Directory:
        """The directory version in force."""
        return self._directory

    @property
    def signed(self) -> SignedStatement:
        """The signed form of the version in force, as the authority issued it."""
        return self._signed

    @classmethod
    async def load(
        cls,
        path: Path,
        *,
        authority: SigningPublicKey,
        store: GatewayStore,
        audit: AuditLog,
        now: datetime,
        limits: Limits,
    ) -> DirectoryHolder:
        """Verify the directory at `path`, log it if it is new, and hold it."""
        directory, signed = await _accept(path, authority=authority, store=store, audit=audit, now=now, limits=limits)
        return cls(directory, signed)

    async def adopt(
        self, signed: SignedStatement, directory: Directory, *, store: GatewayStore, audit: AuditLog, now: datetime
    ) -> None:
        """Hold `directory` (verified from `signed`) once it is a leaf; `ConfigurationError` under the version held."""
        await _record(signed, directory, store=store, audit=audit, now=now)
        self._directory, self._signed = directory, signed

    async def reload(
        self,
        path: Path,
        *,
        authority: SigningPublicKey,
        store: GatewayStore,
        audit: AuditLog,
        now: datetime,
        limits: Limits,
    ) -> bool:
        """Take a newer version from `path`; False (and the old one kept) if it is refused."""
        try:
            self._directory, self._signed = await _accept(
                path, authority=authority, store=store, audit=audit, now=now, limits=limits
            )
        except ConfigurationError as exc:
            log.error("directory_refused", error=str(exc))
            return False
        return True


async def _accept(
    path: Path,
    *,
    authority: SigningPublicKey,
    store: GatewayStore,
    audit: AuditLog,
    now: datetime,
    limits: Limits,
) -> tuple[Directory, SignedStatement]:
    try:
        raw = await asyncio.to_thread(path.read_bytes)
    except OSError as exc:
        raise ConfigurationError(f"cannot read directory {path}: {exc}") from exc
    held = int(await store.setting(_HELD_VERSION) or 0)
    try:
        signed = SignedStatement.from_json(raw, code=ErrorCode.MALFORMED_DIRECTORY)
        directory = verify_directory(signed, authority, now=now, held_version=held, limits=limits)
    except ProtocolError as exc:
        raise ConfigurationError(f"directory {path} refused: {exc}") from exc
    await _record(signed, directory, store=store, audit=audit, now=now)
    return directory, signed


async def _record(
    signed: SignedStatement, directory: Directory, *, store: GatewayStore, audit: AuditLog, now: datetime
) -> None:
    """Append `directory` to the audit log and remember it as the version held, unless the store holds a newer one."""
    held = int(await store.setting(_HELD_VERSION) or 0)
    if directory.version < held:
        raise ConfigurationError(
            f"{ErrorCode.DIRECTORY_ROLLBACK}: directory version {directory.version} is older than "
            f"version {held} already held"
        )
    digest = sha256_hex(signed.payload)
    if directory.version == held and digest != await store.setting(_HELD_DIGEST):
        raise ConfigurationError(
            f"{ErrorCode.DIRECTORY_ROLLBACK}: directory version {held}, already in force, "
            "is another document than this one"
        )
    at = format_timestamp(now)
    async with audit.transaction() as atx:
        # Checked again where writers are serialised: another gateway process on the same database
        # may have taken a newer version since the check above (then nothing is logged: rolled back).
        newer = int(await atx.tx.setting(_HELD_VERSION) or 0)
        if directory.version < newer:
            raise ConfigurationError(
                f"{ErrorCode.DIRECTORY_ROLLBACK}: directory version {directory.version} is older than "
                f"version {newer}, taken meanwhile by another gateway process"
            )
        appended = await atx.append(directory_leaf(signed, directory.version), at=now)
        await atx.tx.set_setting(_HELD_VERSION, str(directory.version))
        await atx.tx.set_setting(_HELD_DIGEST, digest)
        if appended.added:
            body = signed.model_dump_json().encode("utf-8")
            for entry in directory.agencies:
                await atx.tx.enqueue(entry.agency_id, KIND_DIRECTORY, f"directory/{directory.version}", body, at)
    if appended.added:
        log.info("directory_accepted", version=directory.version, leaf_index=appended.index)


async def held_version(store: GatewayStore) -> int | None:
    """The version of the directory the gateway holds (the newest logged), None before the first."""
    held = await store.setting(_HELD_VERSION)
    return None if held is None else int(held)


async def signed_version(store: GatewayStore, version: int) -> SignedStatement | None:
    """Directory version `version` as the authority signed it, from its audit leaf; None if never held."""
    record = await store.leaf_by_identity(f"directory/{version}")  # `protocol.auditlog.directory_leaf`'s identity
    if record is None:
        return None
    leaf = decode_leaf(record.leaf)
    if not isinstance(leaf, DirectoryLeaf):  # an identity of the directory's form names a directory leaf
        return None
    return leaf.directory


__all__ = ["DirectoryHolder", "held_version", "signed_version"]
