"""Versioned schemas: each store's tables as an ordered list of numbered migration steps.

A store's `Schema` is a tuple of `Migration`s numbered 1, 2, 3...; version 1
is the schema of release 504c590 exactly (the first with versions), each later
step changes it. The database records in `schema_migrations` every step
applied to it, with its name and when (SQLite and PostgreSQL alike); its
version is the highest recorded.

Opening a store migrates it forward (`migrate_sqlite`, `migrate_postgres`):
every pending step, and its record, in ONE transaction, so a database is at
one version or the next, never between (SQLite and PostgreSQL both run DDL
inside transactions). `rogatory db migrate` does the same by command, and
`rogatory db status` shows where each store is (`sqlite_status`,
`postgres_status`).

* A database made before versioning (some of version 1's tables present, no
  `schema_migrations`) is adopted as version 1: version 1's statements are
  idempotent (`CREATE ... IF NOT EXISTS`), run again, and recorded as adopted.
* A database of a version newer than this release knows is refused with
  `SchemaTooNew` (code `SCHEMA_TOO_NEW`, a `ConfigurationError`: the service
  exits with the configuration status, 2); nothing is written to it.
* Steps never delete rows: a step that reshapes a table copies every row.

Adding a step is appending one `Migration(version=n + 1, name=..., statements=...)`
to the store's tuple: portable SQL (`?`-free DDL; `BLOB` and
`INTEGER PRIMARY KEY AUTOINCREMENT` are translated for PostgreSQL by the
store's `translate`), or functions for each engine when SQL alone cannot say
it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from runtime.errors import ConfigurationError, StoreUnavailable

VERSION_TABLE: Final = "schema_migrations"
_VERSION_DDL: Final = f"""CREATE TABLE IF NOT EXISTS {VERSION_TABLE} (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at TEXT NOT NULL,
    adopted INTEGER NOT NULL DEFAULT 0
)"""
_MIGRATION_LOCK_KEY: Final = 0x526F6753  # "RogS": migrations of one PostgreSQL database, one at a time

SqliteStep = Callable[[sqlite3.Connection], None]
"""Work of a step on SQLite, inside the migration's transaction (no COMMIT, no `executescript`)."""
PostgresStep = Callable[[Any], Awaitable[None]]
"""Work of a step on PostgreSQL: given an asyncpg connection inside the migration's transaction."""


class SchemaError(ConfigurationError):
    """A database whose schema this release cannot use; `code` is stable."""

    code: str = "SCHEMA_ERROR"


class SchemaTooNew(SchemaError):
    """The database was migrated by a newer release: this one would misread it."""

    code = "SCHEMA_TOO_NEW"

    def __init__(self, store: str, location: str, found: int, supported: int) -> None:
        self.store = store
        self.location = location
        self.found = found
        self.supported = supported
        super().__init__(
            f"{SchemaTooNew.code}: the {store} database {location} is at schema version {found}, newer than "
            f"version {supported}, the newest this release knows; it was migrated by a newer release. Run that "
            f"release (or newer) on it, or restore a backup taken before the upgrade: this release does not "
            f"downgrade a database."
        )


class InvalidSchema(SchemaError):
    """A store's list of steps is not 1, 2, 3... (a programming error, caught at import)."""

    code = "INVALID_SCHEMA"


@dataclass(frozen=True, slots=True)
class Migration:
    """One numbered step of a store's schema."""

    version: int
    name: str
    statements: str = ""
    """Portable SQL, statements separated by `;` (none may contain one)."""
    sqlite: SqliteStep | None = None
    """Run after `statements` on SQLite."""
    postgres: PostgresStep | None = None
    """Run after `statements` on PostgreSQL."""

    def sql(self) -> list[str]:
        """The statements, one by one."""
        return [part.strip() for part in self.statements.split(";") if part.strip()]


@dataclass(frozen=True, slots=True)
class Schema:
    """A store's schema: its steps in order, and what a database of it made before versioning holds."""

    store: str
    """What the operator calls the store: `agent`, `agent attachments`, `gateway`, `gateway blobs`."""
    migrations: tuple[Migration, ...]
    adopts: tuple[str, ...] = field(default=())
    """Tables whose presence (without `schema_migrations`) means a database made before versioning."""

    def __post_init__(self) -> None:
        versions = [step.version for step in self.migrations]
        if versions != list(range(1, len(versions) + 1)):
            raise InvalidSchema(f"the {self.store} schema's steps are numbered {versions}, not 1, 2, 3...")

    @property
    def latest(self) -> int:
        """The version this release migrates to."""
        return len(self.migrations)

    def pending(self, version: int) -> tuple[Migration, ...]:
        """The steps a database at `version` still needs."""
        return self.migrations[version:]


@dataclass(frozen=True, slots=True)
class AppliedStep:
    """A step recorded in a database."""

    version: int
    name: str
    applied_at: str
    adopted: bool


@dataclass(frozen=True, slots=True)
class SchemaStatus:
    """Where one database stands."""

    store: str
    location: str
    exists: bool
    """False: no database yet (or an empty one): opening it creates the latest schema."""
    version: int
    """0: nothing recorded and nothing to adopt; 1 for a database made before versioning."""
    latest: int
    applied: tuple[AppliedStep, ...]
    pending: tuple[Migration, ...]
    unversioned: bool
    """Made before versioning: it is adopted as version 1 when migrated."""

    @property
    def too_new(self) -> bool:
        """Migrated by a newer release."""
        return self.version > self.latest


@dataclass(frozen=True, slots=True)
class MigrationReport:
    """What one migration did."""

    store: str
    location: str
    from_version: int
    to_version: int
    applied: tuple[str, ...]
    """`<version> <name>` of each step applied (an adopted version 1 says so)."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# -- SQLite -----------------------------------------------------------------------------------


def _sqlite_tables(connection: sqlite3.Connection) -> set[str]:
    return {str(row[0]) for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _sqlite_recorded(connection: sqlite3.Connection) -> tuple[AppliedStep, ...]:
    rows = connection.execute(
        f"SELECT version, name, applied_at, adopted FROM {VERSION_TABLE} ORDER BY version"  # noqa: S608 - constant
    ).fetchall()
    return tuple(AppliedStep(int(r[0]), str(r[1]), str(r[2]), bool(r[3])) for r in rows)


def _sqlite_state(connection: sqlite3.Connection, schema: Schema) -> tuple[int, tuple[AppliedStep, ...], bool]:
    """(version, steps recorded, made before versioning)."""
    tables = _sqlite_tables(connection)
    if VERSION_TABLE in tables:
        applied = _sqlite_recorded(connection)
        return (max((step.version for step in applied), default=0), applied, False)
    if tables & set(schema.adopts):
        return 1, (), True
    return 0, (), False


def sqlite_status(path: Path, schema: Schema) -> SchemaStatus:
    """The schema version of the SQLite database at `path` (read only; a missing file is version 0)."""
    if not path.exists():
        return SchemaStatus(
            schema.store,
            str(path),
            exists=False,
            version=0,
            latest=schema.latest,
            applied=(),
            pending=schema.migrations,
            unversioned=False,
        )
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            version, applied, unversioned = _sqlite_state(connection, schema)
        finally:
            connection.close()
    except sqlite3.Error as exc:
        raise StoreUnavailable(f"cannot read the schema version of {path}: {exc}") from exc
    return SchemaStatus(
        schema.store,
        str(path),
        version > 0,
        version,
        schema.latest,
        applied,
        schema.pending(version) if version <= schema.latest else (),
        unversioned,
    )


def migrate_sqlite(path: Path, schema: Schema, *, now: Callable[[], str] = _now) -> MigrationReport:
    """Bring the SQLite database at `path` (created if missing) to `schema.latest`, in one transaction.

    Blocking: services call it in a thread before they open their connections.
    Raises `SchemaTooNew` (nothing written) or `StoreUnavailable`.
    """
    try:
        connection = sqlite3.connect(path, isolation_level=None, timeout=30)
    except sqlite3.Error as exc:
        raise StoreUnavailable(f"cannot open {path} to migrate it: {exc}") from exc
    try:
        connection.execute("BEGIN IMMEDIATE")
        try:
            report = _migrate_sqlite_locked(connection, path, schema, now)
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")
    except sqlite3.Error as exc:
        raise StoreUnavailable(f"cannot migrate the {schema.store} database {path}: {exc}") from exc
    finally:
        connection.close()
    return report


def _migrate_sqlite_locked(
    connection: sqlite3.Connection, path: Path, schema: Schema, now: Callable[[], str]
) -> MigrationReport:
    version, _, unversioned = _sqlite_state(connection, schema)
    if version > schema.latest:
        raise SchemaTooNew(schema.store, str(path), version, schema.latest)
    applied: list[str] = []
    connection.execute(_VERSION_DDL)
    # Made before versioning: version 1 again (idempotent: it fills in what an older file lacks), recorded as adopted.
    steps: Sequence[Migration] = schema.migrations if unversioned else schema.pending(version)
    for step in steps:
        for statement in step.sql():
            connection.execute(statement)
        if step.sqlite is not None:
            step.sqlite(connection)
        adopted = unversioned and step.version == 1
        connection.execute(
            f"INSERT INTO {VERSION_TABLE} (version, name, applied_at, adopted) VALUES (?, ?, ?, ?)",  # noqa: S608
            (step.version, step.name, now(), int(adopted)),
        )
        applied.append(f"{step.version} {step.name}" + (" (adopted: made before versioning)" if adopted else ""))
    return MigrationReport(schema.store, str(path), version, schema.latest, tuple(applied))


# -- PostgreSQL -------------------------------------------------------------------------------


async def _postgres_state(
    connection: Any,  # noqa: ANN401 - an asyncpg connection
    schema: Schema,
) -> tuple[int, tuple[AppliedStep, ...], bool]:
    present = await connection.fetchval("SELECT to_regclass($1) IS NOT NULL", VERSION_TABLE)
    if present:
        rows = await connection.fetch(
            f"SELECT version, name, applied_at, adopted FROM {VERSION_TABLE} ORDER BY version"  # noqa: S608
        )
        applied = tuple(AppliedStep(int(r[0]), str(r[1]), str(r[2]), bool(r[3])) for r in rows)
        return max((step.version for step in applied), default=0), applied, False
    for table in schema.adopts:
        if await connection.fetchval("SELECT to_regclass($1) IS NOT NULL", table):
            return 1, (), True
    return 0, (), False


async def postgres_status(
    connection: Any,  # noqa: ANN401 - an asyncpg connection
    schema: Schema,
    location: str,
) -> SchemaStatus:
    """The schema version of the PostgreSQL database `connection` is connected to."""
    version, applied, unversioned = await _postgres_state(connection, schema)
    return SchemaStatus(
        schema.store,
        location,
        version > 0,
        version,
        schema.latest,
        applied,
        schema.pending(version) if version <= schema.latest else (),
        unversioned,
    )


async def migrate_postgres(
    connection: Any,  # noqa: ANN401 - an asyncpg connection
    schema: Schema,
    location: str,
    *,
    translate: Callable[[str], str],
    now: Callable[[], str] = _now,
) -> MigrationReport:
    """Bring the PostgreSQL database to `schema.latest` in one transaction (`translate`: SQL to its dialect).

    Two gateways starting at once on one database migrate one after the other
    (an advisory lock); the second finds nothing pending.
    """
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK_KEY)
        version, _, unversioned = await _postgres_state(connection, schema)
        if version > schema.latest:
            raise SchemaTooNew(schema.store, location, version, schema.latest)
        await connection.execute(translate(_VERSION_DDL))
        steps = schema.migrations if unversioned else schema.pending(version)
        applied: list[str] = []
        for step in steps:
            for statement in step.sql():
                await connection.execute(translate(statement))
            if step.postgres is not None:
                await step.postgres(connection)
            adopted = unversioned and step.version == 1
            await connection.execute(
                f"INSERT INTO {VERSION_TABLE} (version, name, applied_at, adopted) VALUES ($1, $2, $3, $4)",  # noqa: S608
                step.version,
                step.name,
                now(),
                int(adopted),
            )
            applied.append(f"{step.version} {step.name}" + (" (adopted: made before versioning)" if adopted else ""))
    return MigrationReport(schema.store, location, version, schema.latest, tuple(applied))


__all__ = [
    "VERSION_TABLE",
    "AppliedStep",
    "InvalidSchema",
    "Migration",
    "MigrationReport",
    "PostgresStep",
    "Schema",
    "SchemaError",
    "SchemaStatus",
    "SchemaTooNew",
    "SqliteStep",
    "migrate_postgres",
    "migrate_sqlite",
    "postgres_status",
    "sqlite_status",
]
