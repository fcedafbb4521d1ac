"""`rogatory db status` and `rogatory db migrate`: the schema version of each store of a service (`runtime.schema`).

A service's data directory holds the stores it has: an agent `agent.db` and
`attachments.db`, a gateway `gateway.db` (unless its records are in
PostgreSQL, `--database-url`) and `blobs.db`. Services migrate their stores
when they start; `migrate` does it beforehand (stop the service first, take
a backup: a database migrated forward is not taken back by an older release).

Exit status: 0; 1 when a store cannot be read or migrated; 2 when one was
migrated by a newer release than this one (`SCHEMA_TOO_NEW`).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import asyncpg

from agents.attachments import ATTACHMENT_SCHEMA
from agents.store import AGENT_SCHEMA
from gateway.blobs import BLOB_SCHEMA
from gateway.db import redacted_url, to_postgres
from gateway.store import GATEWAY_SCHEMA
from runtime.errors import StoreUnavailable
from runtime.schema import (
    MigrationReport,
    Schema,
    SchemaStatus,
    SchemaTooNew,
    migrate_postgres,
    migrate_sqlite,
    postgres_status,
    sqlite_status,
)

EXIT_FAILED: Final = 1
EXIT_TOO_NEW: Final = 2
"""As a service refusing the database at start (`runtime.runner.EXIT_CONFIGURATION`)."""

SQLITE_STORES: Final = (
    ("agent.db", AGENT_SCHEMA),
    ("attachments.db", ATTACHMENT_SCHEMA),
    ("gateway.db", GATEWAY_SCHEMA),
    ("blobs.db", BLOB_SCHEMA),
)
"""Each SQLite file a data directory may hold, and its schema."""


@dataclass(frozen=True, slots=True)
class StoreLocation:
    """One store of a service: a SQLite file, or the gateway's PostgreSQL database."""

    schema: Schema
    path: Path | None = None
    database_url: str | None = None


def stores_of(data_dir: Path, database_url: str | None) -> list[StoreLocation]:
    """The stores present in `data_dir` (and the PostgreSQL database, which replaces `gateway.db`)."""
    found = [
        StoreLocation(schema, path=data_dir / name)
        for name, schema in SQLITE_STORES
        if (data_dir / name).exists() and not (database_url and schema is GATEWAY_SCHEMA)
    ]
    if database_url:
        found.append(StoreLocation(GATEWAY_SCHEMA, database_url=database_url))
    return found


async def _status(store: StoreLocation) -> SchemaStatus:
    if store.path is not None:
        return await asyncio.to_thread(sqlite_status, store.path, store.schema)
    url = str(store.database_url)
    connection = await asyncpg.connect(url, timeout=15)
    try:
        return await postgres_status(connection, store.schema, redacted_url(url))
    finally:
        await connection.close()


async def migrate_store(store: StoreLocation) -> MigrationReport:
    """Migrate one store to this release's latest version of its schema."""
    if store.path is not None:
        return await asyncio.to_thread(migrate_sqlite, store.path, store.schema)
    url = str(store.database_url)
    connection = await asyncpg.connect(url, timeout=15)
    try:
        return await migrate_postgres(connection, store.schema, redacted_url(url), translate=to_postgres)
    finally:
        await connection.close()


def describe_status(status: SchemaStatus) -> str:
    """One line about one store."""
    head = f"{status.store:<18} {status.location}: "
    if not status.exists:
        return head + f"no database yet (created at version {status.latest})"
    if status.too_new:
        return head + f"version {status.version}, NEWER than {status.latest} (this release): refused"
    version = f"version {status.version}" + (
        " (made before versioning, adopted at migration)" if status.unversioned else ""
    )
    if not status.pending:
        return head + f"{version}, up to date"
    steps = ", ".join(f"{step.version} {step.name}" for step in status.pending)
    return head + f"{version} of {status.latest}; pending: {steps}"


def _run_each(args: argparse.Namespace, act: Callable[[StoreLocation], Any]) -> int:
    data_dir = Path(args.data_dir)
    stores = stores_of(data_dir, args.database_url)
    if not stores:
        sys.stderr.write(f"no store in {data_dir} (agent.db, attachments.db, gateway.db, blobs.db)\n")
        return EXIT_FAILED
    status = 0
    for store in stores:
        try:
            sys.stdout.write(f"{asyncio.run(act(store))}\n")
        except SchemaTooNew as exc:
            sys.stderr.write(f"{exc}\n")
            status = max(status, EXIT_TOO_NEW)
        except (StoreUnavailable, OSError, asyncpg.PostgresError) as exc:
            sys.stderr.write(f"{store.schema.store}: {exc}\n")
            status = max(status, EXIT_FAILED)
    return status


def _cmd_status(args: argparse.Namespace) -> int:
    async def one(store: StoreLocation) -> str:
        status = await _status(store)
        if status.too_new:
            raise SchemaTooNew(status.store, status.location, status.version, status.latest)
        return describe_status(status)

    return _run_each(args, one)


def _cmd_migrate(args: argparse.Namespace) -> int:
    async def one(store: StoreLocation) -> str:
        report = await migrate_store(store)
        head = f"{report.store:<18} {report.location}: "
        if not report.applied:
            return head + f"version {report.to_version}, nothing to do"
        return head + f"version {report.from_version} -> {report.to_version}: applied " + "; ".join(report.applied)

    return _run_each(args, one)


def add_db_commands(commands: Any) -> None:  # noqa: ANN401 - argparse's private _SubParsersAction
    """Add `db status` and `db migrate` to the `rogatory` parser's sub-commands."""
    db = commands.add_parser("db", help="schema versions of a service's databases").add_subparsers(
        dest="db", required=True
    )
    for name, run, text in (
        ("status", _cmd_status, "each store's schema version and the steps pending"),
        ("migrate", _cmd_migrate, "apply the pending steps (stop the service and back up first)"),
    ):
        command = db.add_parser(name, help=text)
        command.add_argument("--data-dir", required=True, help="the service's ROGATORY_DATA_DIR")
        command.add_argument(
            "--database-url", help="the gateway's PostgreSQL database (ROGATORY_DATABASE_URL), if it uses one"
        )
        command.set_defaults(run=run)


__all__ = ["SQLITE_STORES", "StoreLocation", "add_db_commands", "describe_status", "migrate_store", "stores_of"]
