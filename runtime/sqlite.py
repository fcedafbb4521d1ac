"""SQLite on the event loop: `LoopSqlite`, the connection that group commit (`runtime.groupcommit`) drives.

Many write transactions of one SQLite connection share one COMMIT (one
fsync): `GroupCommitter` (re-exported here) runs each body under a
savepoint of the series' transaction, and the last body nobody waits behind
commits for all (see `runtime.groupcommit` for the guarantees).
`synchronous=FULL` is untouched: the durability of each COMMIT is what it
was, there are just fewer of them under load.

The connection is a `LoopSqlite`: its statements run on the event loop
itself, and only what waits on the disk or on another process runs in a
thread of its own (COMMIT, which is the fsync; closing; BEGIN IMMEDIATE
when another connection holds the write lock, which it tries inline first).
A statement against pages already in memory costs microseconds; handing
each one to a thread and back, as aiosqlite does, cost more than the
statement and was the largest single cost of the whole path in the profile
(docs/PERFORMANCE.md).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final

import aiosqlite

from runtime.errors import StoreUnavailable
from runtime.groupcommit import MAX_BATCH, GroupCommitter, Member
from runtime.private_files import create_private, restrict
from runtime.schema import Schema, migrate_sqlite

_BUSY_TIMEOUT_MS: Final = 5000
"""How long a statement waits for a lock another connection holds (sqlite3's default)."""

Row = tuple[Any, ...]


class LoopSqlite:
    """One SQLite connection driven from the event loop (the writer of a database, or a reader of point lookups).

    `execute`, `fetchone`, `fetchall`, `executemany` and `executescript` run
    inline. `execute_off_loop` runs a statement in the connection's own thread;
    until it returns, every other call waits for it (nothing touches the
    connection meanwhile). Errors are SQLite's own (`sqlite3.Error`).
    """

    def __init__(self, connection: sqlite3.Connection, thread: ThreadPoolExecutor) -> None:
        self._connection = connection
        self._thread = thread
        self._off_loop: asyncio.Future[sqlite3.Cursor] | None = None

    @classmethod
    async def connect(cls, path: Path | str) -> LoopSqlite:
        """Open `path` in autocommit mode (transactions are explicit); the opening itself runs off the loop."""
        thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        loop = asyncio.get_running_loop()
        try:
            connection = await loop.run_in_executor(
                thread, lambda: sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            )
        except BaseException:
            thread.shutdown(wait=False)
            raise
        return cls(connection, thread)

    @property
    def in_transaction(self) -> bool:
        """Whether a transaction is open on the connection."""
        return self._connection.in_transaction

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; the number of rows it changed."""
        await self._settled()
        return self._connection.execute(sql, params).rowcount

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement for each row of parameters."""
        await self._settled()
        self._connection.executemany(sql, rows)

    async def executescript(self, script: str) -> None:
        """Run a script of statements (a schema)."""
        await self._settled()
        self._connection.executescript(script)

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        """The first row of a query, if any."""
        await self._settled()
        row = self._connection.execute(sql, params).fetchone()
        return None if row is None else tuple(row)

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Every row of a query."""
        await self._settled()
        return [tuple(row) for row in self._connection.execute(sql, params).fetchall()]

    async def begin_immediate(self) -> None:
        """BEGIN IMMEDIATE: inline if the write lock is free (no other connection writing), else in the thread."""
        await self._settled()
        self._connection.execute("PRAGMA busy_timeout = 0")
        try:
            self._connection.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                raise
        else:
            return
        finally:
            self._connection.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        await self.execute_off_loop("BEGIN IMMEDIATE")

    @property
    def errors(self) -> tuple[type[BaseException], ...]:
        """What a failed statement raises (`runtime.groupcommit.SeriesConnection`)."""
        return (sqlite3.Error,)

    async def begin(self) -> None:
        """The group committer's BEGIN: `begin_immediate`."""
        await self.begin_immediate()

    async def commit(self) -> None:
        """COMMIT, in the connection's thread (it is the fsync)."""
        await self.execute_off_loop("COMMIT")

    async def rollback(self) -> None:
        """ROLLBACK."""
        await self.execute("ROLLBACK")

    async def execute_off_loop(self, sql: str) -> None:
        """Run a statement that waits on the disk or on a lock in the connection's thread, alone on the connection."""
        await self._settled()
        running = asyncio.get_running_loop().run_in_executor(self._thread, self._connection.execute, sql)
        self._off_loop = running
        running.add_done_callback(self._returned)
        await asyncio.shield(running)  # if the caller is cancelled, the statement still ends before anything else runs

    async def close(self) -> None:
        """Close the connection (in its thread: the last close checkpoints the WAL) and end the thread."""
        await self._settled()
        try:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._connection.close)
        finally:
            self._thread.shutdown(wait=False)

    def _returned(self, running: asyncio.Future[sqlite3.Cursor]) -> None:
        if self._off_loop is running:
            self._off_loop = None
        if not running.cancelled():
            running.exception()  # retrieved here too: a cancelled caller never awaits it

    async def _settled(self) -> None:
        while self._off_loop is not None:
            await asyncio.wait({self._off_loop})


def create_private_database(path: Path) -> None:
    """Make the database file 0600 before SQLite opens it: its `-wal` and `-shm` take the file's mode."""
    create_private(path)
    restrict_database(path)


def restrict_database(path: Path) -> None:
    """Narrow the database and its `-wal`, `-shm` and `-journal` files (those that exist) to 0600."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        restrict(path.with_name(path.name + suffix))


async def open_index(path: Path, schema: Schema, *, what: str) -> aiosqlite.Connection:
    """A side index (attachments, blobs): one autocommit connection in WAL mode, migrated to `schema`'s latest.

    The database and its WAL are 0600 (`create_private_database`); what is
    deleted is overwritten (`secure_delete`). `StoreUnavailable` names `what`
    when it cannot be opened.
    """
    try:
        create_private_database(path)
        await asyncio.to_thread(migrate_sqlite, path, schema)
        db = await aiosqlite.connect(path, isolation_level=None)
        # Each pragma's cursor closed: one left open holds its lock, and another process (a second gateway
        # process sharing the blob directory) could not write.
        for pragma in ("PRAGMA secure_delete=ON", "PRAGMA journal_mode=WAL"):
            await (await db.execute(pragma)).close()
        restrict_database(path)
    except (sqlite3.Error, OSError) as exc:
        raise StoreUnavailable(f"cannot open the {what}: {exc}") from exc
    return db


__all__ = [
    "MAX_BATCH",
    "GroupCommitter",
    "LoopSqlite",
    "Member",
    "Row",
    "create_private_database",
    "open_index",
    "restrict_database",
]
