"""Group commit: many write transactions of one SQLite connection share one COMMIT (one fsync).

Callers keep the contract of a plain transaction: the body runs alone (one
writer at a time), an error in the body undoes only that body, and leaving
the `async with` block means the body's writes are durable. What changes is
who pays the fsync: a body that finishes while other writers are already
waiting for the connection leaves the SQLite transaction open; the next
body runs inside it (under a savepoint of its own), and the last body of the
series, the one nobody waits behind, commits for all of them. Every member
of the series is released only once that COMMIT returned, and every member
fails (`StoreUnavailable`, a transient failure: the work is retried) if it
did not. `synchronous=FULL` is untouched: the durability of each COMMIT is
what it was, there are just fewer of them under load.

Callbacks registered with `after_commit` run right after the COMMIT, in the
order of the bodies (the gateway's audit log extends its in-memory tree there, so the
tree's order is the leaf indexes' order).

If SQLite ended the transaction by itself (it does on some I/O errors, a
full disk), every member of the series fails and nothing more joins it: a
member never finishes "committed" on a transaction that is gone.

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
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiosqlite

from runtime.errors import StoreUnavailable
from runtime.private_files import create_private, restrict
from runtime.schema import Schema, migrate_sqlite

MAX_BATCH: Final = 256
"""Bodies that may share one COMMIT: bounds the latency a long series adds to its first member."""

_SAVEPOINT: Final = "rogatory_member"
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


@dataclass(slots=True)
class _Batch:
    """One SQLite transaction shared by a series of bodies."""

    done: asyncio.Future[None]
    members: int = 0
    broken: str | None = None
    hooks: list[Callable[[], None]] = field(default_factory=list)
    committer: asyncio.Task[None] | None = None


class Member:
    """What one body may do beside its SQL: ask for a callback once it is durable."""

    def __init__(self) -> None:
        self.hooks: list[Callable[[], None]] = []

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run `callback` once this body's writes are committed (never if they are not)."""
        self.hooks.append(callback)


class GroupCommitter:
    """Serialises the write transactions of one connection and shares COMMITs between them."""

    def __init__(self, db: LoopSqlite, *, max_batch: int = MAX_BATCH) -> None:
        self._db = db
        self._max_batch = max_batch
        self._lock = asyncio.Lock()
        self._waiting = 0
        self._batch: _Batch | None = None
        self.commits = 0
        """COMMITs issued (for tests and the benchmark: bodies per COMMIT under load)."""

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Member]:
        """One body: alone on the connection; durable when the block is left; undone alone on error."""
        self._waiting += 1
        try:
            await self._lock.acquire()
        finally:
            self._waiting -= 1
        try:
            batch = await self._join()
        except BaseException:
            self._lock.release()
            raise
        try:
            member = Member()
            try:
                yield member
            except BaseException:
                await self._undo_member(batch)
                raise
            await self._keep_member(batch, member)
        finally:
            try:
                await self._settle(batch)
            finally:
                self._lock.release()
        await asyncio.shield(batch.done)

    async def _join(self) -> _Batch:
        """The open series (beginning one if there is none, or the last one broke), under a new savepoint."""
        batch = self._batch
        if batch is not None and (batch.broken is not None or not self._db.in_transaction):
            await self._end(batch)
            batch = None
        if batch is None:
            try:
                await self._db.begin_immediate()
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"cannot begin a transaction: {exc}") from exc
            batch = _Batch(asyncio.get_running_loop().create_future())
            self._batch = batch
        try:
            await self._db.execute(f"SAVEPOINT {_SAVEPOINT}")
        except sqlite3.Error as exc:
            batch.broken = f"cannot open a savepoint: {exc}"
            await self._end(batch)
            raise StoreUnavailable(batch.broken) from exc
        return batch

    async def _undo_member(self, batch: _Batch) -> None:
        """Undo this body alone; if SQLite already ended the transaction, the whole series is broken."""
        try:
            if not self._db.in_transaction:
                raise sqlite3.OperationalError("the transaction was ended by SQLite")
            await self._db.execute(f"ROLLBACK TO {_SAVEPOINT}")
            await self._db.execute(f"RELEASE {_SAVEPOINT}")
        except sqlite3.Error as exc:
            batch.broken = f"the transaction was lost: {exc}"

    async def _keep_member(self, batch: _Batch, member: Member) -> None:
        try:
            if not self._db.in_transaction:
                raise sqlite3.OperationalError("the transaction was ended by SQLite")
            await self._db.execute(f"RELEASE {_SAVEPOINT}")
        except sqlite3.Error as exc:
            batch.broken = f"the transaction was lost: {exc}"
            return
        batch.members += 1
        batch.hooks.extend(member.hooks)

    async def _settle(self, batch: _Batch) -> None:
        """Commit now unless another body is about to join (then one of them, or the committer, will)."""
        if batch is not self._batch:
            return
        if batch.broken is None and self._waiting > 0 and batch.members < self._max_batch:
            if batch.committer is None:
                # If the bodies waiting give up before their turn, this one commits the series.
                batch.committer = asyncio.get_running_loop().create_task(self._commit_later(batch))
            return
        await self._end_shielded(batch)

    async def _commit_later(self, batch: _Batch) -> None:
        async with self._lock:
            if batch is self._batch:
                await self._end_shielded(batch)

    async def _end_shielded(self, batch: _Batch) -> None:
        """`_end`, finished even if the caller is cancelled (members wait on its outcome), the lock still held."""
        ending = asyncio.get_running_loop().create_task(self._end(batch))
        try:
            await asyncio.shield(ending)
        except asyncio.CancelledError:
            if not ending.done():
                await asyncio.wait({ending})
            raise

    async def _end(self, batch: _Batch) -> None:
        """COMMIT the series (or roll back a broken one) and release its members."""
        self._batch = None
        failure = batch.broken
        if failure is None and not self._db.in_transaction:
            failure = "the transaction was ended by SQLite"
        if failure is None and batch.members == 0:
            failure = ""  # nothing to keep: every body was undone
        if failure is None:
            try:
                await self._db.execute_off_loop("COMMIT")
                self.commits += 1
            except sqlite3.Error as exc:
                failure = f"cannot commit: {exc}"
        if failure is not None:
            await self._rollback()
            if not batch.done.done():
                batch.done.set_exception(StoreUnavailable(failure or "no body to commit"))
                batch.done.exception()  # retrieved here: members that failed on their own never await it
            return
        try:
            for hook in batch.hooks:
                hook()
        finally:
            if not batch.done.done():
                batch.done.set_result(None)

    async def _rollback(self) -> None:
        if not self._db.in_transaction:
            return
        try:
            await self._db.execute("ROLLBACK")
        except sqlite3.Error:
            # No transaction left to roll back (SQLite ends it by itself on some I/O errors).
            return


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
