"""One small SQL interface over SQLite (the embedded default) and PostgreSQL (scale-out).

The gateway's store writes its SQL once, in a portable subset: `?`
placeholders, `ON CONFLICT ... DO NOTHING / DO UPDATE`, `BLOB` and
`INTEGER PRIMARY KEY AUTOINCREMENT` in the schema. `PostgresDatabase`
translates placeholders to `$n` and those two types to `BYTEA` and
`BIGSERIAL`; nothing else differs.

Both run one writer at a time (`transaction()`), which is what keeps audit
leaf indexes dense; PostgreSQL additionally takes an advisory lock so that
two gateway processes sharing one database serialise their appends. On both,
write transactions go through a `GroupCommitter` (`runtime.groupcommit`):
under load a series of them shares one database transaction (each under a
savepoint) and one COMMIT; on PostgreSQL the series runs on a dedicated
connection, and the advisory lock is taken once per series. Rows
that several processes would otherwise all take (the outbox) are claimed
in a PostgreSQL transaction of their own (`claiming()`), without that lock.

Database errors become `StoreUnavailable` (a transient failure: the work is
retried), whatever the engine.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal, Protocol

import aiosqlite
import asyncpg

from runtime.errors import StoreUnavailable
from runtime.groupcommit import GroupCommitter, Member
from runtime.schema import Schema, migrate_postgres, migrate_sqlite
from runtime.sqlite import LoopSqlite

Row = Sequence[Any]
_PLACEHOLDER = re.compile(r"\?")
_WRITER_LOCK_KEY = 0x526F6761  # "Roga": the advisory lock every gateway writer takes


class Connection(Protocol):
    """What the store needs of a connection, inside or outside a transaction."""

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; the number of rows it changed."""

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement for each row of parameters."""

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        """The first row of a query, if any."""

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Every row of a query."""

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run `callback` once this transaction committed, in order with other transactions' callbacks."""


class Database(Protocol):
    """A database the gateway's store can run on."""

    dialect: Literal["sqlite", "postgresql"]

    def transaction(self) -> Any:  # noqa: ANN401 - an async context manager yielding a Connection
        """One write transaction, one writer at a time; commits on success, rolls back on error."""

    def reader(self) -> Connection:
        """A connection for reads outside any transaction."""

    def lookup(self) -> Connection:
        """A connection for the hot path's short reads (a few rows by key, one bounded batch), outside transactions."""

    async def close(self) -> None:
        """Release the connections."""


# -- SQLite -------------------------------------------------------------------------------


class _SqliteInline:
    """The writer inside one transaction, or the lookup reader: statements run on the loop (`LoopSqlite`)."""

    def __init__(self, db: LoopSqlite, member: Member | None = None) -> None:
        self._db = db
        self._member = member

    def after_commit(self, callback: Callable[[], None]) -> None:
        if self._member is None:
            raise RuntimeError("after_commit outside a write transaction")
        self._member.after_commit(callback)

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        try:
            return await self._db.execute(sql, params)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite: {exc}") from exc

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        try:
            await self._db.executemany(sql, rows)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite: {exc}") from exc

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        try:
            return await self._db.fetchone(sql, params)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite: {exc}") from exc

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        try:
            return list(await self._db.fetchall(sql, params))  # list[Row] of the protocol: list is invariant
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite: {exc}") from exc


class _SqliteReading:
    """The reading connection: its queries run in aiosqlite's thread (a long console query never holds the loop)."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    def after_commit(self, callback: Callable[[], None]) -> None:  # noqa: ARG002 - the Connection protocol's
        raise RuntimeError("after_commit outside a write transaction")

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        try:
            cursor = await self._db.execute(sql, params)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite: {exc}") from exc
        return cursor.rowcount

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        try:
            await self._db.executemany(sql, rows)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite: {exc}") from exc

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        try:
            async with self._db.execute(sql, params) as cursor:
                row = await cursor.fetchone()
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite: {exc}") from exc
        return None if row is None else tuple(row)

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        try:
            async with self._db.execute(sql, params) as cursor:
                rows = await cursor.fetchall()
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite: {exc}") from exc
        return [tuple(row) for row in rows]


class SqliteDatabase:
    """Two connections in WAL mode, `synchronous=FULL` unless told otherwise: a writer and a reader.

    Write transactions go through a `GroupCommitter`: one writer at a time,
    each durable when its block is left, several sharing one COMMIT under load.
    The writer's statements run on the event loop, its COMMITs in a thread of
    its own (`LoopSqlite`). Reads have two connections of their own, which see
    committed rows only: the hot path's short reads (a few rows by key, one
    bounded batch of publications) run on the loop too; everything else
    (lists, scans, exports) runs in aiosqlite's thread, so a long query never
    holds the loop.
    """

    dialect: Literal["sqlite", "postgresql"] = "sqlite"

    def __init__(self, writer: LoopSqlite, reader: aiosqlite.Connection, lookup: LoopSqlite) -> None:
        self._db = writer
        self._reader_db = reader
        self._reader = _SqliteReading(reader)
        self._lookup_db = lookup
        self._lookup = _SqliteInline(lookup)
        self.committer = GroupCommitter(writer)

    @classmethod
    async def open(cls, path: Path, schema: Schema, *, synchronous: str = "FULL") -> SqliteDatabase:
        """Open (creating if needed) the database at `path`, migrated to `schema`'s latest version.

        Two connections: one writer, one reader. In WAL mode the reader sees only
        committed transactions, so nothing a rollback undoes is ever served.
        """
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            await asyncio.to_thread(migrate_sqlite, path, schema)
            writer = await LoopSqlite.connect(path)
            await writer.execute("PRAGMA journal_mode=WAL")
            await writer.execute(f"PRAGMA synchronous={synchronous}")
            reader = await aiosqlite.connect(path, isolation_level=None)
            lookup = await LoopSqlite.connect(path)
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnavailable(f"cannot open database {path}: {exc}") from exc
        return cls(writer, reader, lookup)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        """One write transaction (BEGIN IMMEDIATE ... COMMIT, the COMMIT possibly shared: `runtime.groupcommit`)."""
        async with self.committer.transaction() as member:
            yield _SqliteInline(self._db, member)

    def reader(self) -> Connection:
        """The reading connection: committed data only."""
        return self._reader

    def lookup(self) -> Connection:
        """The lookup connection: committed data only, read on the loop."""
        return self._lookup

    async def close(self) -> None:
        """Close the three connections."""
        await self._lookup_db.close()
        await self._reader_db.close()
        await self._db.close()


# -- PostgreSQL --------------------------------------------------------------------------


def to_postgres(sql: str) -> str:
    """`?` placeholders to `$1, $2, ...`; SQLite-only type names to PostgreSQL's."""
    counter = iter(range(1, 10_000))
    sql = _PLACEHOLDER.sub(lambda _: f"${next(counter)}", sql)
    return sql.replace("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGSERIAL PRIMARY KEY").replace("BLOB", "BYTEA")


def redacted_url(url: str) -> str:
    """`url` without its password, to name the database in messages."""
    return re.sub(r"(//[^:/@]*):[^@]*@", r"\1:***@", url)


def _rowcount(status: str) -> int:
    """Asyncpg answers 'INSERT 0 1', 'UPDATE 3', 'DELETE 0': the last number."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


_PG_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, asyncio.TimeoutError)


class _PostgresConnection:
    """A pooled connection (reads, claims), or the writer's connection inside one member of a series."""

    def __init__(self, connection: asyncpg.Connection | asyncpg.Pool, member: Member | None = None) -> None:
        self._connection = connection
        self._member = member

    def after_commit(self, callback: Callable[[], None]) -> None:
        if self._member is None:
            raise RuntimeError("after_commit outside a write transaction")
        self._member.after_commit(callback)

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        try:
            return _rowcount(await self._connection.execute(to_postgres(sql), *params))
        except _PG_ERRORS as exc:
            raise StoreUnavailable(f"PostgreSQL: {exc}") from exc

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        try:
            await self._connection.executemany(to_postgres(sql), rows)
        except _PG_ERRORS as exc:
            raise StoreUnavailable(f"PostgreSQL: {exc}") from exc

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        try:
            row = await self._connection.fetchrow(to_postgres(sql), *params)
        except _PG_ERRORS as exc:
            raise StoreUnavailable(f"PostgreSQL: {exc}") from exc
        return None if row is None else tuple(row)

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        try:
            rows = await self._connection.fetch(to_postgres(sql), *params)
        except _PG_ERRORS as exc:
            raise StoreUnavailable(f"PostgreSQL: {exc}") from exc
        return [tuple(row) for row in rows]


class _CommitRefused(Exception):
    """PostgreSQL answered COMMIT with ROLLBACK: the transaction had been aborted, nothing is durable."""


class PostgresWriter:
    """The dedicated connection of a process's write transactions (`runtime.groupcommit.SeriesConnection`).

    Not from the pool: a series of bodies keeps its transaction open on it
    between bodies. It is opened on the first BEGIN and opened again when it
    broke (the series it carried failed with it). A series begins with BEGIN
    and the writers' advisory lock (`pg_advisory_xact_lock`), which its
    COMMIT or ROLLBACK releases; another process's writers wait for it
    meanwhile.
    """

    errors: tuple[type[BaseException], ...] = (*_PG_ERRORS, _CommitRefused)

    def __init__(self, url: str, *, lock_key: int = _WRITER_LOCK_KEY) -> None:
        self._url = url
        self._lock_key = lock_key
        self._connection: asyncpg.Connection | None = None

    @property
    def lock_key(self) -> int:
        """The writers' advisory lock: every gateway process sharing the database takes the same."""
        return self._lock_key

    @property
    def connection(self) -> asyncpg.Connection:
        """The open connection (a series is under way on it)."""
        if self._connection is None:
            raise RuntimeError("no write transaction is open")
        return self._connection

    @property
    def in_transaction(self) -> bool:
        """Whether a transaction is open on a live connection."""
        connection = self._connection
        return connection is not None and not connection.is_closed() and connection.is_in_transaction()

    async def begin(self) -> None:
        """(Re)connect if needed, BEGIN, and wait for the writers' advisory lock; on failure, drop the connection."""
        try:
            if self._connection is None or self._connection.is_closed():
                self._connection = None
                self._connection = await asyncpg.connect(self._url, timeout=15)
            await self._connection.execute("BEGIN")
            await self._connection.execute("SELECT pg_advisory_xact_lock($1)", self._lock_key)
        except BaseException:
            await self._drop()
            raise

    async def execute(self, sql: str) -> object:
        """A statement without parameters (the series' savepoints)."""
        return await self.connection.execute(sql)

    async def commit(self) -> None:
        """COMMIT; an aborted transaction (answered ROLLBACK) or a lost connection raises."""
        status = await self.connection.execute("COMMIT")
        if status != "COMMIT":
            raise _CommitRefused(f"PostgreSQL answered {status!r} to COMMIT")

    async def rollback(self) -> None:
        """ROLLBACK; if even that fails, the connection is dropped (a new one is opened for the next series)."""
        try:
            await self.connection.execute("ROLLBACK")
        except BaseException:
            await self._drop()
            raise

    async def close(self) -> None:
        """Close the connection (the server rolls back whatever it holds)."""
        connection, self._connection = self._connection, None
        if connection is None or connection.is_closed():
            return
        try:
            await connection.close(timeout=5)
        except _PG_ERRORS:
            connection.terminate()

    async def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed():
            connection.terminate()


class PostgresDatabase:
    """An asyncpg pool for reads and claims, and a dedicated writer under group commit (`runtime.groupcommit`).

    Write transactions are serialised within the process by the committer and
    across processes by the writers' advisory lock, taken once per series.
    """

    dialect: Literal["sqlite", "postgresql"] = "postgresql"

    def __init__(self, pool: asyncpg.Pool, writer: PostgresWriter) -> None:
        self._pool = pool
        self.writer = writer
        self.committer = GroupCommitter(writer)

    @classmethod
    async def open(cls, url: str, schema: Schema, *, pool_size: int = 4) -> PostgresDatabase:
        """Connect to `url` and migrate the database to `schema`'s latest version (`runtime.schema`)."""
        try:
            pool = await asyncpg.create_pool(url, min_size=1, max_size=pool_size, timeout=15)
            try:
                async with pool.acquire() as connection:
                    await migrate_postgres(connection, schema, redacted_url(url), translate=to_postgres)
            except BaseException:
                await pool.close()
                raise
        except _PG_ERRORS as exc:
            raise StoreUnavailable(f"cannot open PostgreSQL database: {exc}") from exc
        return cls(pool, PostgresWriter(url))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        """One write transaction under the writers' advisory lock, its COMMIT possibly shared with others."""
        async with self.committer.transaction() as member:
            yield _PostgresConnection(self.writer.connection, member)

    @asynccontextmanager
    async def claiming(self) -> AsyncIterator[Connection]:
        """A transaction without the writers' lock, for rows claimed with `FOR UPDATE SKIP LOCKED`.

        The rows it locks are this process's until it ends (committed, rolled
        back, or its connection gone with a dead process): another process's
        claim skips them. Nothing appended to the log may run in it.
        """
        try:
            connection = await self._pool.acquire()
        except _PG_ERRORS as exc:
            raise StoreUnavailable(f"PostgreSQL: {exc}") from exc
        try:
            transaction = connection.transaction()
            try:
                await transaction.start()
            except _PG_ERRORS as exc:
                raise StoreUnavailable(f"PostgreSQL: {exc}") from exc
            try:
                yield _PostgresConnection(connection)
            except BaseException:
                await _quietly(transaction.rollback())
                raise
            try:
                await transaction.commit()
            except _PG_ERRORS as exc:
                await _quietly(transaction.rollback())
                raise StoreUnavailable(f"cannot commit: {exc}") from exc
        finally:
            await self._pool.release(connection)

    def reader(self) -> Connection:
        """Reads go to any pooled connection."""
        return _PostgresConnection(self._pool)

    def lookup(self) -> Connection:
        """Lookups too."""
        return _PostgresConnection(self._pool)

    async def close(self) -> None:
        """Close the writer's connection and the pool."""
        await self.writer.close()
        await self._pool.close()


async def _quietly(operation: Any) -> None:  # noqa: ANN401 - an awaitable of asyncpg
    try:
        await operation
    except _PG_ERRORS:
        return


__all__ = [
    "Connection",
    "Database",
    "PostgresDatabase",
    "PostgresWriter",
    "Row",
    "SqliteDatabase",
    "redacted_url",
    "to_postgres",
]
