"""`rogatory backup` and `rogatory restore`: one service's data directory, online, in one verified archive.

    rogatory backup --data-dir DIR --out FILE [--database-url URL] [--include-keystore]
    rogatory restore FILE --data-dir DIR [--database-url URL]

A backup is taken while the service runs. Each SQLite database is copied
with SQLite's online backup API (one read transaction: a consistent
snapshot that does not stop the service's writers, WAL); a gateway whose
records are in PostgreSQL (`--database-url`, default `ROGATORY_DATABASE_URL`)
is dumped with `pg_dump` (custom format), whose one REPEATABLE READ
transaction is a consistent snapshot of every table, and whose restore
(`pg_restore --single-transaction`) brings back the schema of the backup
with its rows, whatever version the target's tables are at. The records
are taken first, then the attachment indexes they point into, then the
body files those indexes name: a body written after its index's snapshot
is an unused extra, and a body the index names but that the service
deleted meanwhile is caught (the index is snapshotted again until every
body it names is in the archive). Transient files (partial uploads and
downloads, scratch files), SQLite's `-wal`/`-shm` files and the lock are
not copied; a restored service starts those transfers again.

The keystore (`keystore.json`, in the data directory under the systemd
units) is left out unless `--include-keystore`: it holds the private keys
and, at an agent, the storage key without which `agent.db` cannot be read.
Keep it apart (it is encrypted under its passphrase) or include it knowingly.

The archive is a tar file: `data/<path>` members, `postgresql.dump` for a
gateway on PostgreSQL, then `manifest.json` (format, service kind, identity
(`runtime.data_dir`), creation time, software version, each store's schema
version, every member with its size and SHA-256) and `manifest.sha256`,
the digest of the manifest. It detects damage, not forgery: keep backups
where only operators can write them.

`restore` verifies everything before it touches the data directory:
digest, every member's size and SHA-256, nothing missing or added, each
SQLite database's `PRAGMA integrity_check`, the service kind and identity
against the target's; it refuses a data directory a running service holds.
It builds the restored directory beside the target, then swaps it in and
keeps the previous one as `DIR.previous-<UTC time>` (and, on PostgreSQL, a
dump of the database it replaced beside it). The target's own keystore
stays with it.

Exit statuses: 0 done, 1 failed (I/O, pg_dump), 2 usage, 3 damaged backup,
4 foreign backup, 5 data directory in use, 6 backup of an unknown format.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import importlib.metadata
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import IO, Any, Final
from urllib.parse import unquote, urlsplit, urlunsplit

from deploy.cli.recovery import hold_log
from runtime.data_dir import (
    LOCK_FILE,
    ServiceIdentity,
    ServiceKind,
    data_dir_in_use,
    hold_data_dir,
    read_identity,
)

FORMAT: Final = "rogatory-backup/1"
MANIFEST: Final = "manifest.json"
MANIFEST_DIGEST: Final = "manifest.sha256"
DATA_PREFIX: Final = "data/"
POSTGRES_MEMBER: Final = "postgresql.dump"
KEYSTORE_NAME: Final = "keystore.json"
SCHEMA_VERSION_TABLE: Final = "schema_migrations"
"""Where a store records its schema version (`runtime.schema`, when present): the highest `version`."""

EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_DAMAGED: Final = 3
EXIT_FOREIGN: Final = 4
EXIT_IN_USE: Final = 5
EXIT_UNSUPPORTED: Final = 6

SQLITE_HEADER: Final = b"SQLite format 3\x00"
SQLITE_SIDE_FILES: Final = ("-wal", "-shm", "-journal")
TRANSIENT_SUFFIXES: Final = (".tmp", ".part", ".ciphertext", ".partial")
"""Files in the middle of being written: uploads and downloads in progress, scratch files."""
TRANSIENT_DIRECTORIES: Final = ("blobs/partial",)
"""The gateway's partial uploads: an uploader resumes from what the restored service holds (nothing)."""
MAIN_DATABASES: Final = ("agent.db", "gateway.db")
"""Snapshotted first: the records, before the indexes of the bodies they point to."""
REFERENCE_ROUNDS: Final = 5
CHUNK: Final = 1024 * 1024
PROGRESS_EVERY_S: Final = 2.0


class BackupError(Exception):
    """A backup or restore that cannot go on; `status` is the command's exit status."""

    def __init__(self, message: str, status: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.status = status


# -- what a data directory holds ------------------------------------------------------------------


def _read_only(database: Path) -> str:
    """A SQLite URI opening `database` read-only (its path percent-encoded)."""
    return database.resolve().as_uri() + "?mode=ro"


def schema_version(database: Path) -> int | None:
    """The schema version a SQLite store records (`schema_migrations`), None when it records none."""
    with contextlib.closing(sqlite3.connect(_read_only(database), uri=True)) as connection:
        try:
            row = connection.execute(f"SELECT MAX(version) FROM {SCHEMA_VERSION_TABLE}").fetchone()  # noqa: S608
        except sqlite3.Error:
            return None
    return None if row is None or row[0] is None else int(row[0])


async def postgres_schema_version(url: str) -> int | None:
    """The schema version the gateway's PostgreSQL database records, None when it records none."""
    import asyncpg  # noqa: PLC0415 - only a gateway on PostgreSQL needs it

    connection = await asyncpg.connect(url)
    try:
        value = await connection.fetchval(
            f"SELECT MAX(version) FROM {SCHEMA_VERSION_TABLE}"  # noqa: S608 - a constant name
            if await connection.fetchval("SELECT to_regclass($1) IS NOT NULL", SCHEMA_VERSION_TABLE)
            else "SELECT NULL"
        )
    finally:
        await connection.close()
    return None if value is None else int(value)


def _is_sqlite(path: Path) -> bool:
    try:
        with path.open("rb") as file:
            return file.read(len(SQLITE_HEADER)) == SQLITE_HEADER
    except OSError:
        return False


def _is_store(name: str, path: Path) -> bool:
    """A service's SQLite database: `*.db` at the top of the data directory (never a body that happens to be one)."""
    return "/" not in name and name.endswith(".db") and _is_sqlite(path)


def _skipped(relative: PurePosixPath, *, include_keystore: bool) -> bool:
    """Whether a file of the data directory stays out of the backup."""
    name = relative.name
    if str(relative) == LOCK_FILE or name.endswith(SQLITE_SIDE_FILES):
        return True
    if str(relative) == KEYSTORE_NAME:
        return not include_keystore
    if name.startswith(".") or name.endswith(TRANSIENT_SUFFIXES):
        return True
    return any(str(relative).startswith(prefix + "/") for prefix in TRANSIENT_DIRECTORIES)


def service_kind(data_dir: Path) -> ServiceKind | None:
    """`agent` or `gateway` by what the directory holds (its identity file first); None if neither."""
    identity = read_identity(data_dir)
    if identity is not None:
        return identity.kind
    if (data_dir / "agent.db").exists() or (data_dir / "attachments.db").exists():
        return "agent"
    if (data_dir / "gateway.db").exists() or (data_dir / "blobs.db").exists():
        return "gateway"
    return None


def referenced_files(kind: ServiceKind, index: Path) -> set[str]:
    """Body files (relative to the data directory) a snapshot of an attachment index names."""
    with contextlib.closing(sqlite3.connect(_read_only(index), uri=True)) as connection:
        try:
            if kind == "gateway":
                rows = connection.execute("SELECT sha256 FROM blobs WHERE deleted_at IS NULL").fetchall()
                return {f"blobs/objects/{sha[:2]}/{sha}" for (sha,) in rows}
            uploads = connection.execute("SELECT ciphertext_sha256 FROM uploads").fetchall()
            received = connection.execute("SELECT received_id FROM received WHERE state = 'available'").fetchall()
        except sqlite3.Error:
            return set()
    return {f"attachments/blobs/{sha}" for (sha,) in uploads} | {
        f"attachments/received/{number}.sealed" for (number,) in received
    }


INDEXES: Final[dict[str, str]] = {"gateway": "blobs.db", "agent": "attachments.db"}


# -- progress -------------------------------------------------------------------------------------


@dataclass
class Progress:
    """Members and bytes done, said on standard error at most every few seconds."""

    verb: str
    total_bytes: int
    members: int = 0
    done_bytes: int = 0
    started: float = field(default_factory=time.monotonic)
    _said: float = field(default_factory=time.monotonic)

    def add(self, size: int, *, member: bool = False) -> None:
        """Count bytes (and a finished member)."""
        self.done_bytes += size
        self.members += int(member)
        now = time.monotonic()
        if now - self._said >= PROGRESS_EVERY_S:
            self._said = now
            sys.stderr.write(
                f"{self.verb}: {self.members} members, {_mib(self.done_bytes)} of ~{_mib(self.total_bytes)}\n"
            )

    def seconds(self) -> float:
        """Seconds since the start."""
        return time.monotonic() - self.started


def _mib(size: int) -> str:
    return f"{size / 1024**2:.1f} MiB"


# -- archive writing ------------------------------------------------------------------------------


@dataclass
class _Writer:
    """Members appended to a tar file, each hashed as it is written."""

    tar: tarfile.TarFile
    progress: Progress
    members: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add_file(self, name: str, source: Path) -> bool:
        """Add `source` as `name`; False if it vanished first. A file that changes while read is an error."""
        try:
            stream = source.open("rb")
        except FileNotFoundError:
            return False
        with stream:
            size = os.fstat(stream.fileno()).st_size
            digest = hashlib.sha256()
            reader = _HashingReader(stream, digest, size, self.progress)
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = size, 0o600, int(time.time())
            self.tar.addfile(info, reader)
            if reader.read_bytes != size:
                raise BackupError(f"{source} changed while it was copied")
        self.members[name] = {"name": name, "size": size, "sha256": digest.hexdigest()}
        self.progress.add(0, member=True)
        return True

    def add_bytes(self, name: str, data: bytes) -> None:
        """Add a small member from memory (not listed in the manifest: the manifest and its digest)."""
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), 0o600, int(time.time())
        self.tar.addfile(info, io.BytesIO(data))


class _HashingReader(io.RawIOBase):
    """A file read through for `tarfile`, hashed, never past `limit` bytes."""

    def __init__(self, stream: IO[bytes], digest: hashlib._Hash, limit: int, progress: Progress) -> None:
        self._stream, self._digest, self._left, self._progress = stream, digest, limit, progress
        self.read_bytes = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        wanted = self._left if size < 0 else min(size, self._left)
        data = self._stream.read(wanted) if wanted > 0 else b""
        self._left -= len(data)
        self.read_bytes += len(data)
        self._digest.update(data)
        self._progress.add(len(data))
        if len(data) < wanted:  # the file shrank: pad so that the tar stays well formed, refused after
            return data + b"\0" * (wanted - len(data))
        return data


def _snapshot_sqlite(source: Path, target: Path) -> None:
    """A consistent copy of a live SQLite database (the online backup API, in one step)."""
    target.unlink(missing_ok=True)
    with (
        contextlib.closing(sqlite3.connect(_read_only(source), uri=True)) as live,
        contextlib.closing(sqlite3.connect(target)) as copy,
    ):
        live.backup(copy)
        copy.execute("PRAGMA journal_mode=DELETE")


def _postgres_environment(url: str) -> tuple[str, dict[str, str]]:
    """The URL without its password, and an environment giving the password to libpq (not on the command line)."""
    parts = urlsplit(url)
    environment = dict(os.environ)
    if parts.password is not None:
        environment["PGPASSWORD"] = unquote(parts.password)
        host = parts.hostname or ""
        user = f"{parts.username}@" if parts.username else ""
        netloc = f"{user}{host}" + (f":{parts.port}" if parts.port else "")
        parts = parts._replace(netloc=netloc)
    return urlunsplit(parts), environment


def _run_postgres_tool(arguments: list[str], url: str) -> None:
    """Run `pg_dump` / `pg_restore` against `url`; `BackupError` with its message when it fails."""
    if shutil.which(arguments[0]) is None:
        raise BackupError(
            f"{arguments[0]} is not installed: install the PostgreSQL client (Debian: apt-get install "
            "postgresql-client, of the server's major version or newer)"
        )
    bare, environment = _postgres_environment(url)
    completed = subprocess.run(  # noqa: S603 - fixed tool, arguments we built
        [*arguments, f"--dbname={bare}"], env=environment, capture_output=True, text=True, check=False
    )
    if completed.returncode != 0:
        raise BackupError(f"{arguments[0]} failed: {completed.stderr.strip()[:1000]}")


def _pg_dump(url: str, out: Path) -> None:
    _run_postgres_tool(["pg_dump", "--format=custom", "--no-owner", "--no-privileges", f"--file={out}"], url)


@dataclass(frozen=True, slots=True)
class BackupSummary:
    """What `backup` wrote."""

    out: Path
    members: int
    bytes: int
    seconds: float
    kind: ServiceKind
    identity: ServiceIdentity | None
    keystore: str
    absent_at_source: tuple[str, ...]


def _data_files(data_dir: Path, *, include_keystore: bool) -> Iterator[tuple[str, Path]]:
    for path in sorted(data_dir.rglob("*")):
        relative = PurePosixPath(path.relative_to(data_dir).as_posix())
        if path.is_symlink() or not path.is_file() or _skipped(relative, include_keystore=include_keystore):
            continue
        yield str(relative), path


def _check_source(data_dir: Path, *, database_url: str | None, include_keystore: bool) -> ServiceKind:
    """The kind of service whose data directory this is; `BackupError` when the options do not fit it."""
    if not data_dir.is_dir():
        raise BackupError(f"{data_dir} is not a directory", EXIT_USAGE)
    kind = service_kind(data_dir)
    if kind is None:
        raise BackupError(f"{data_dir} holds no agent.db, gateway.db or blobs.db: not a Rogatory data directory")
    if kind == "agent" and database_url is not None:
        raise BackupError(
            "--database-url is for a gateway on PostgreSQL; this is an agent's data directory", EXIT_USAGE
        )
    if kind == "gateway" and database_url is None and not (data_dir / "gateway.db").exists():
        raise BackupError(
            f"{data_dir} holds no gateway.db: the gateway's records are in PostgreSQL; give --database-url "
            "(or ROGATORY_DATABASE_URL)",
            EXIT_USAGE,
        )
    keystore_file = data_dir / KEYSTORE_NAME
    if include_keystore and not keystore_file.exists():
        raise BackupError(
            f"--include-keystore: {data_dir} holds no {KEYSTORE_NAME} (the service's ROGATORY_KEYSTORE_FILE is "
            "elsewhere): back that file up on its own",
            EXIT_USAGE,
        )
    return kind


def _write_archive(
    kind: ServiceKind,
    data_dir: Path,
    partial: Path,
    *,
    databases: list[tuple[str, Path]],
    bodies: list[tuple[str, Path]],
    database_url: str | None,
    progress: Progress,
    header: dict[str, Any],
) -> tuple[ServiceIdentity | None, set[str], int]:
    """Snapshot the stores, then write every member and the manifest to `partial`; (identity, absent, members)."""
    stores: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix=".rogatory-backup-", dir=partial.parent) as staging_name:
        staging = Path(staging_name)
        if database_url is not None:
            _pg_dump(database_url, staging / POSTGRES_MEMBER)
            stores["postgresql"] = {"schema_version": asyncio.run(postgres_schema_version(database_url))}
        for name, path in databases:  # the records first, then the indexes of the bodies they point to
            sys.stderr.write(f"backup: snapshot of {name} ({_mib(path.stat().st_size)} without its WAL)\n")
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            _snapshot_sqlite(path, staging / name)
        with partial.open("wb") as sink, tarfile.open(fileobj=sink, mode="w", format=tarfile.PAX_FORMAT) as tar:
            writer = _Writer(tar, progress)
            for name, path in bodies:
                writer.add_file(DATA_PREFIX + name, path)
            absent = _complete_references(kind, data_dir, staging, writer)
            if database_url is not None:
                writer.add_file(POSTGRES_MEMBER, staging / POSTGRES_MEMBER)
            for name, _ in databases:
                stores[name] = {"schema_version": schema_version(staging / name)}
                writer.add_file(DATA_PREFIX + name, staging / name)
            identity = read_identity(data_dir)
            manifest = {
                "format": FORMAT,
                "kind": kind,
                "identity": None if identity is None else identity.to_json(),
                "created_at": header["created_at"],
                "software_version": _software_version(),
                "source": str(data_dir),
                "database": "postgresql" if database_url is not None else "sqlite",
                "keystore_included": header["include_keystore"],
                "stores": stores,
                "absent_at_source": sorted(absent),
                "members": sorted(writer.members.values(), key=lambda member: str(member["name"])),
            }
            encoded = (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()
            writer.add_bytes(MANIFEST, encoded)
            writer.add_bytes(MANIFEST_DIGEST, f"{hashlib.sha256(encoded).hexdigest()}  {MANIFEST}\n".encode())
        with partial.open("rb") as written:
            os.fsync(written.fileno())
    return identity, absent, len(writer.members)


def backup(
    data_dir: Path, out: Path, *, database_url: str | None = None, include_keystore: bool = False
) -> BackupSummary:
    """Write a backup of `data_dir` (and the gateway's PostgreSQL database) to `out`."""
    data_dir = data_dir.resolve()
    kind = _check_source(data_dir, database_url=database_url, include_keystore=include_keystore)
    keystore_file = data_dir / KEYSTORE_NAME
    files = list(_data_files(data_dir, include_keystore=include_keystore))
    databases = [(name, path) for name, path in files if _is_store(name, path)]
    databases.sort(key=lambda item: (item[0] not in MAIN_DATABASES, item[0]))
    bodies = [(name, path) for name, path in files if (name, path) not in databases]
    progress = Progress("backup", total_bytes=sum(path.stat().st_size for _, path in files))
    out = out.resolve()
    if out.is_relative_to(data_dir):
        raise BackupError(f"--out {out} is inside the data directory it backs up: write it elsewhere", EXIT_USAGE)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    started_at = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    try:
        identity, absent, members = _write_archive(
            kind,
            data_dir,
            partial,
            databases=databases,
            bodies=bodies,
            database_url=database_url,
            progress=progress,
            header={"created_at": started_at, "include_keystore": include_keystore},
        )
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(out)
    keystore = (
        "included"
        if include_keystore
        else f"excluded: {keystore_file}"
        if keystore_file.exists()
        else "not in the data directory"
    )
    return BackupSummary(
        out=out,
        members=members,
        bytes=out.stat().st_size,
        seconds=progress.seconds(),
        kind=kind,
        identity=identity,
        keystore=keystore,
        absent_at_source=tuple(sorted(absent)),
    )


def _complete_references(kind: ServiceKind, data_dir: Path, staging: Path, writer: _Writer) -> set[str]:
    """Add every body the index snapshot names; snapshot the index again for those deleted meanwhile.

    Returns the bodies the index still names but the data directory lacks
    (an inconsistency of the source itself, reported, not hidden).
    """
    index = INDEXES[kind]
    if not (staging / index).exists():
        return set()
    missing: set[str] = set()
    for _ in range(REFERENCE_ROUNDS):
        named = referenced_files(kind, staging / index)
        missing = {name for name in named if DATA_PREFIX + name not in writer.members}
        for name in sorted(missing):
            if writer.add_file(DATA_PREFIX + name, data_dir / name):
                missing.discard(name)
        if not missing:
            return set()
        _snapshot_sqlite(data_dir / index, staging / index)  # deleted since the snapshot? its row is gone now
    return missing


def _software_version() -> str:
    try:
        return importlib.metadata.version("rogatory")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


# -- restore --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RestoreSummary:
    """What `restore` did."""

    data_dir: Path
    previous: Path | None
    previous_database: Path | None
    members: int
    bytes: int
    seconds: float
    manifest: dict[str, Any]
    notes: tuple[str, ...]


def _member_path(name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise BackupError(f"the backup holds a member outside its tree: {name!r}", EXIT_DAMAGED)
    return path


def _extract(archive: Path, staging: Path, progress: Progress) -> tuple[dict[str, tuple[int, str]], bytes, str]:
    """Every member into `staging`, hashed: (name -> (size, sha256)), the manifest's bytes, its digest line."""
    found: dict[str, tuple[int, str]] = {}
    manifest = digest_line = None
    try:
        with tarfile.open(archive, mode="r:") as tar:
            for info in tar:
                name = str(_member_path(info.name))
                if not info.isfile():
                    raise BackupError(f"the backup holds {name!r}, which is not a file", EXIT_DAMAGED)
                if (
                    name in found
                    or (name == MANIFEST and manifest is not None)
                    or (name == MANIFEST_DIGEST and digest_line is not None)
                ):
                    raise BackupError(f"the backup holds {name!r} twice", EXIT_DAMAGED)
                source = tar.extractfile(info)
                if source is None:
                    raise BackupError(f"the backup's member {name!r} cannot be read", EXIT_DAMAGED)
                if name == MANIFEST:
                    manifest = source.read()
                    continue
                if name == MANIFEST_DIGEST:
                    digest_line = source.read().decode("ascii", "replace")
                    continue
                target = staging / name
                target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                digest = hashlib.sha256()
                size = 0
                with target.open("wb") as sink:
                    while chunk := source.read(CHUNK):
                        digest.update(chunk)
                        sink.write(chunk)
                        size += len(chunk)
                        progress.add(len(chunk))
                    sink.flush()
                    os.fsync(sink.fileno())
                target.chmod(0o600)
                found[name] = (size, digest.hexdigest())
                progress.add(0, member=True)
    except (tarfile.TarError, EOFError) as exc:
        raise BackupError(f"the backup is damaged or truncated: {exc}", EXIT_DAMAGED) from exc
    if manifest is None or digest_line is None:
        raise BackupError(
            "the backup is damaged or truncated: its manifest or the manifest's digest is missing", EXIT_DAMAGED
        )
    return found, manifest, digest_line


def verify_archive(archive: Path, staging: Path, progress: Progress) -> dict[str, Any]:
    """Extract `archive` into `staging` and check it whole; the manifest, or `BackupError` (3 or 6)."""
    found, encoded, digest_line = _extract(archive, staging, progress)
    expected = digest_line.split()[0] if digest_line.split() else ""
    if hashlib.sha256(encoded).hexdigest() != expected:
        raise BackupError("the backup is damaged: its manifest does not match the manifest's digest", EXIT_DAMAGED)
    try:
        manifest = json.loads(encoded)
        members = {str(member["name"]): (int(member["size"]), str(member["sha256"])) for member in manifest["members"]}
        backup_format = manifest["format"]
    except (ValueError, KeyError, TypeError) as exc:
        raise BackupError(f"the backup is damaged: its manifest cannot be read ({exc})", EXIT_DAMAGED) from exc
    if backup_format != FORMAT:
        raise BackupError(f"the backup is of format {backup_format!r}; this release reads {FORMAT!r}", EXIT_UNSUPPORTED)
    for name, (size, sha256) in sorted(members.items()):
        if name not in found:
            raise BackupError(f"the backup is damaged: member {name} is missing", EXIT_DAMAGED)
        if found[name] != (size, sha256):
            raise BackupError(
                f"the backup is damaged: member {name} is {found[name][0]} bytes of SHA-256 {found[name][1][:16]}…, "
                f"the manifest says {size} bytes of {sha256[:16]}…",
                EXIT_DAMAGED,
            )
    extra = sorted(set(found) - set(members))
    if extra:
        raise BackupError(f"the backup is damaged: members not in its manifest: {', '.join(extra[:5])}", EXIT_DAMAGED)
    return dict(manifest)


def _check_databases(restored: Path) -> None:
    for path in sorted(restored.glob("*.db")):
        if path.is_file() and _is_store(path.name, path):
            with contextlib.closing(sqlite3.connect(_read_only(path), uri=True)) as connection:
                verdict = [row[0] for row in connection.execute("PRAGMA integrity_check").fetchall()]
            if verdict != ["ok"]:
                raise BackupError(
                    f"the backup is damaged: {path.name} fails integrity_check: {verdict[:3]}", EXIT_DAMAGED
                )


def _check_owner(manifest: dict[str, Any], target: Path) -> list[str]:
    """Refuse a backup of another kind or identity than the target's (exit 4); notes on what could not be checked."""
    kind = manifest.get("kind")
    identity = ServiceIdentity.from_json(manifest.get("identity"))
    notes: list[str] = []
    target_kind = service_kind(target) if target.is_dir() else None
    if target_kind is not None and target_kind != kind:
        raise BackupError(f"this is a backup of an {kind}; {target} is a {target_kind}'s data directory", EXIT_FOREIGN)
    held = read_identity(target) if target.is_dir() else None
    if held is not None and identity is not None and not held.same_owner(identity):
        raise BackupError(
            f"this is a backup of {identity.describe()}; {target} belongs to {held.describe()}", EXIT_FOREIGN
        )
    if held is None:
        notes.append(f"{target} records no identity: restoring {kind} data without comparing identities")
    elif identity is None:
        notes.append("the backup records no identity: restoring without comparing identities")
    return notes


def _carry_keystore(target: Path, restored: Path, notes: list[str]) -> None:
    """The target's keystore stays: it holds the keys in force (a backup's may predate a rotation)."""
    current = target / KEYSTORE_NAME
    if not current.exists():
        return
    if (restored / KEYSTORE_NAME).exists() and (restored / KEYSTORE_NAME).read_bytes() != current.read_bytes():
        notes.append(f"kept the target's {KEYSTORE_NAME}, not the backup's (which differs)")
    shutil.copy2(current, restored / KEYSTORE_NAME)


def processes_using(directory: Path) -> list[int]:
    """Processes (other than this one) with a file open under `directory`, as far as /proc shows them.

    Besides the lock (`runtime.data_dir`): it also sees a service of a
    release before the lock, or a `sqlite3` shell. Run as root, it sees
    every process; as another user, only that user's.
    """
    inside = str(directory)
    found: list[int] = []
    for descriptors in Path("/proc").glob("[0-9]*/fd"):
        if descriptors.parent.name == str(os.getpid()):
            continue
        try:
            links = [str(link.readlink()) for link in descriptors.iterdir()]
        except OSError:
            continue
        if any(link == inside or link.startswith(inside + "/") for link in links):
            found.append(int(descriptors.parent.name))
    return sorted(found)


def _target_of(data_dir: Path) -> Path:
    """The real data directory (systemd's `DynamicUser=` makes `/var/lib/rogatory/…` a link)."""
    return data_dir.resolve() if data_dir.exists() else data_dir.parent.resolve() / data_dir.name


def _database_to_restore(staging: Path, given: str | None, default: str | None) -> str | None:
    """The database to restore the backup's dump into: `--database-url` (else `default`) exactly when it has one."""
    has_dump = (staging / POSTGRES_MEMBER).exists()
    if not has_dump and given is not None:
        raise BackupError("--database-url given, but this backup holds no PostgreSQL dump", EXIT_USAGE)
    if has_dump and (given or default) is None:
        raise BackupError(
            "this backup holds the gateway's PostgreSQL records: give --database-url (or ROGATORY_DATABASE_URL)",
            EXIT_USAGE,
        )
    return (given or default) if has_dump else None


def _restore_database(staging: Path, database_url: str, kept: Path) -> None:
    """Dump the database being replaced to `kept`, then restore the backup's in one transaction."""
    _pg_dump(database_url, kept)
    _run_postgres_tool(
        [
            "pg_restore",
            "--clean",
            "--if-exists",
            "--no-owner",
            "--no-privileges",
            "--single-transaction",
            "--exit-on-error",
            str(staging / POSTGRES_MEMBER),
        ],
        database_url,
    )


def _swap(target: Path, restored: Path, previous: Path) -> Path | None:
    """Put `restored` in `target`'s place (its mode and owner), the old one renamed `previous`; that path or None."""
    if not target.exists():
        restored.rename(target)
        return None
    held = target.stat()
    restored.chmod(held.st_mode & 0o7777)
    if os.geteuid() == 0:
        for path in [restored, *restored.rglob("*")]:
            os.chown(path, held.st_uid, held.st_gid, follow_symlinks=False)
    target.rename(previous)
    restored.rename(target)
    return previous


def restore(
    archive: Path, data_dir: Path, *, database_url: str | None = None, default_database_url: str | None = None
) -> RestoreSummary:
    """Verify `archive`, then replace `data_dir` (and the PostgreSQL database) with its content.

    `default_database_url` (`ROGATORY_DATABASE_URL`) is used only for a backup that holds a PostgreSQL dump.
    """
    if not archive.is_file():
        raise BackupError(f"{archive} is not a file", EXIT_USAGE)
    target = _target_of(data_dir)
    if target.is_dir() and data_dir_in_use(target):
        raise BackupError(f"{target} is in use by a running service (or a restore): stop it first", EXIT_IN_USE)
    if target.is_dir() and (users := processes_using(target)):
        raise BackupError(
            f"{target} is in use: process {', '.join(map(str, users))} has files open in it; stop it first",
            EXIT_IN_USE,
        )
    progress = Progress("restore", total_bytes=archive.stat().st_size)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.restore-", dir=target.parent))
    claim = None
    try:
        manifest = verify_archive(archive, staging, progress)
        restored = staging / "data"
        restored.mkdir(exist_ok=True, mode=0o700)
        database_url = _database_to_restore(staging, database_url, default_database_url)
        notes = _check_owner(manifest, target)
        _check_databases(restored)
        if target.is_dir():
            claim = hold_data_dir(target)
            if claim is None:
                raise BackupError(f"{target} is in use by a running service (a restore?): stop it", EXIT_IN_USE)
            _carry_keystore(target, restored, notes)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        previous_database = None
        if database_url is not None:
            previous_database = target.with_name(f"{target.name}.previous-{stamp}.postgresql.dump")
            _restore_database(staging, database_url, previous_database)
        previous = _swap(target, restored, target.with_name(f"{target.name}.previous-{stamp}"))
    finally:
        if claim is not None:
            claim.release()
        shutil.rmtree(staging, ignore_errors=True)
    return RestoreSummary(
        data_dir=target,
        previous=previous,
        previous_database=previous_database,
        members=len(manifest["members"]),
        bytes=archive.stat().st_size,
        seconds=progress.seconds(),
        manifest=manifest,
        notes=tuple(notes),
    )


# -- the commands ---------------------------------------------------------------------------------


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")


def _fail(error: BackupError) -> int:
    sys.stderr.write(f"rogatory: {error}\n")
    return error.status


def _environment_database_url() -> str | None:
    """`ROGATORY_DATABASE_URL`, the gateway's setting: the default where a gateway's PostgreSQL is meant."""
    return os.environ.get("ROGATORY_DATABASE_URL") or None


def _cmd_backup(args: argparse.Namespace) -> int:
    try:
        summary = backup(
            Path(args.data_dir),
            Path(args.out),
            database_url=args.database_url
            or (_environment_database_url() if service_kind(Path(args.data_dir)) == "gateway" else None),
            include_keystore=args.include_keystore,
        )
    except BackupError as exc:
        return _fail(exc)
    except (OSError, sqlite3.Error) as exc:
        return _fail(BackupError(f"backup failed: {exc}"))
    who = "no identity recorded" if summary.identity is None else summary.identity.describe()
    _say(f"backup of {who}")
    if summary.keystore.startswith("excluded"):
        _say(
            f"keystore {summary.keystore} (not in the backup: keep it apart, it is encrypted under its passphrase; "
            "without it the agent's data cannot be read; --include-keystore puts it in)"
        )
    elif summary.keystore == "included":
        _say("WARNING: the keystore is in this backup: whoever holds the backup and the passphrase holds the keys")
    else:
        _say("keystore: not in the data directory (ROGATORY_KEYSTORE_FILE elsewhere): back it up on its own")
    for name in summary.absent_at_source:
        _say(f"WARNING: the index names {name}, which the data directory lacks (not a backup error: the source's)")
    _say(
        f"wrote {summary.out}: {summary.members} members, {summary.bytes} bytes ({_mib(summary.bytes)}) "
        f"in {summary.seconds:.1f} s"
    )
    return 0


def _cmd_restore(args: argparse.Namespace) -> int:
    try:
        summary = restore(
            Path(args.file),
            Path(args.data_dir),
            database_url=args.database_url,
            default_database_url=_environment_database_url(),
        )
    except BackupError as exc:
        return _fail(exc)
    except (OSError, sqlite3.Error) as exc:
        return _fail(BackupError(f"restore failed: {exc}"))
    manifest = summary.manifest
    for note in summary.notes:
        _say(f"note: {note}")
    _say(f"restored a backup of {manifest['kind']} taken {manifest['created_at']} into {summary.data_dir}")
    if summary.previous is not None:
        _say(f"the previous data directory is kept as {summary.previous}")
    if summary.previous_database is not None:
        _say(f"the previous PostgreSQL database is kept as {summary.previous_database} (pg_restore format)")
    _say(
        f"restored {summary.members} members, {summary.bytes} bytes ({_mib(summary.bytes)}) in {summary.seconds:.1f} s"
    )
    if manifest["kind"] == "gateway" and not args.no_log_hold:
        # A restored log is behind what its witnesses cosigned: it starts held, never forking (docs/OPERATIONS.md).
        database_url = args.database_url or (_environment_database_url() if summary.previous_database else None)
        size = asyncio.run(hold_log(summary.data_dir, database_url))
        _say(
            f"the audit log ({size} entries) starts held until every witness presented its latest checkpoint and "
            "their leaves rebuilt it (`rogatory log-recovery status`; docs/OPERATIONS.md, Lost disk)"
        )
    return 0


def add_backup_commands(commands: Any) -> None:  # noqa: ANN401 - argparse's private subparsers action
    """`rogatory backup` and `rogatory restore`."""
    made = commands.add_parser(
        "backup",
        help="back up a service's data directory (online, consistent) into one verified archive",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    made.add_argument("--data-dir", required=True, help="the service's ROGATORY_DATA_DIR")
    made.add_argument("--out", required=True, help="the archive to write (replaced atomically)")
    made.add_argument(
        "--database-url", help="the gateway's PostgreSQL (default: ROGATORY_DATABASE_URL), dumped with pg_dump"
    )
    made.add_argument(
        "--include-keystore",
        action="store_true",
        help="put the data directory's keystore.json in the backup (private keys, encrypted: left out by default)",
    )
    made.set_defaults(run=_cmd_backup)
    back = commands.add_parser(
        "restore",
        help="verify a backup, then replace a stopped service's data directory with it (the old one kept aside)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    back.add_argument("file", help="an archive written by `rogatory backup`")
    back.add_argument("--data-dir", required=True, help="the service's ROGATORY_DATA_DIR")
    back.add_argument(
        "--database-url", help="the gateway's PostgreSQL (default: ROGATORY_DATABASE_URL), restored with pg_restore"
    )
    back.add_argument(
        "--no-log-hold",
        action="store_true",
        help="a gateway's audit log starts without the hold (only when nothing was appended after the backup: no "
        "witness can hold a larger checkpoint)",
    )
    back.set_defaults(run=_cmd_restore)


__all__ = [
    "EXIT_DAMAGED",
    "EXIT_FAILED",
    "EXIT_FOREIGN",
    "EXIT_IN_USE",
    "EXIT_UNSUPPORTED",
    "EXIT_USAGE",
    "FORMAT",
    "BackupError",
    "BackupSummary",
    "RestoreSummary",
    "add_backup_commands",
    "backup",
    "postgres_schema_version",
    "processes_using",
    "restore",
    "schema_version",
    "verify_archive",
]
