"""Group commit: many write transactions of one connection share one COMMIT.

Callers keep the contract of a plain transaction: the body runs alone (one
writer at a time), an error in the body undoes only that body, and leaving
the `async with` block means the body's writes are durable. What changes is
who pays the COMMIT: a body that finishes while other writers are already
waiting for the connection leaves the database transaction open; the next
body runs inside it (under a savepoint of its own), and the last body of the
series, the one nobody waits behind, commits for all of them. Every member
of the series is released only once that COMMIT returned, and every member
fails (`StoreUnavailable`, a transient failure: the work is retried) if it
did not. The durability of each COMMIT is what it was, there are just fewer
of them under load.

Callbacks registered with `after_commit` run right after the COMMIT, in the
order of the bodies (the gateway's audit log extends its in-memory tree there, so the
tree's order is the leaf indexes' order).

If the database ended the transaction by itself (SQLite does on some I/O
errors, a full disk; a PostgreSQL connection can be lost), every member of
the series fails and nothing more joins it: a member never finishes
"committed" on a transaction that is gone. A body that leaves its block
normally although its savepoint cannot be released (a PostgreSQL statement
failed in it and the body swallowed the error: the transaction is aborted
until the savepoint is rolled back) has its writes undone alone and fails
with `StoreUnavailable`.

The engine is behind `SeriesConnection`: SQLite's writer (`runtime.sqlite.LoopSqlite`,
BEGIN IMMEDIATE, the COMMIT's fsync off the loop) and the gateway's
PostgreSQL writer (a dedicated connection; BEGIN then the writers' advisory
lock, released by the COMMIT) both are one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Final, Protocol

from runtime.errors import StoreUnavailable

MAX_BATCH: Final = 256
"""Bodies that may share one COMMIT: bounds the latency a long series adds to its first member."""

_SAVEPOINT: Final = "rogatory_member"


class SeriesConnection(Protocol):
    """The one connection a `GroupCommitter` drives: the series' transaction, its savepoints, its COMMIT."""

    @property
    def errors(self) -> tuple[type[BaseException], ...]:
        """What the engine raises when a statement fails or the connection is gone."""

    @property
    def in_transaction(self) -> bool:
        """Whether a transaction is open on the connection (False once the connection is gone)."""

    async def begin(self) -> None:
        """Begin the series' transaction, holding the database's write lock; no transaction left open on failure."""

    async def execute(self, sql: str) -> object:
        """Run one statement without parameters (SAVEPOINT, RELEASE, ROLLBACK TO)."""

    async def commit(self) -> None:
        """COMMIT; raises one of `errors` unless the transaction is durable."""

    async def rollback(self) -> None:
        """Roll back the open transaction; raises one of `errors` if it cannot."""


@dataclass(slots=True)
class _Batch:
    """One database transaction shared by a series of bodies."""

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

    def __init__(self, db: SeriesConnection, *, max_batch: int = MAX_BATCH) -> None:
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
        refused: str | None = None
        try:
            member = Member()
            try:
                yield member
            except BaseException:
                await self._undo_member(batch)
                raise
            refused = await self._keep_member(batch, member)
        finally:
            try:
                await self._settle(batch)
            finally:
                self._lock.release()
        if refused is not None:
            raise StoreUnavailable(refused)
        await asyncio.shield(batch.done)

    async def _join(self) -> _Batch:
        """The open series (beginning one if there is none, or the last one broke), under a new savepoint."""
        batch = self._batch
        if batch is not None and (batch.broken is not None or not self._db.in_transaction):
            await self._end(batch)
            batch = None
        if batch is None:
            try:
                await self._db.begin()
            except self._db.errors as exc:
                raise StoreUnavailable(f"cannot begin a transaction: {exc}") from exc
            batch = _Batch(asyncio.get_running_loop().create_future())
            self._batch = batch
        try:
            await self._db.execute(f"SAVEPOINT {_SAVEPOINT}")
        except self._db.errors as exc:
            batch.broken = f"cannot open a savepoint: {exc}"
            await self._end(batch)
            raise StoreUnavailable(batch.broken) from exc
        return batch

    async def _undo_member(self, batch: _Batch) -> None:
        """Undo this body alone; if the database already ended the transaction, the whole series is broken."""
        failure = await self._savepoint(f"ROLLBACK TO {_SAVEPOINT}", f"RELEASE {_SAVEPOINT}")
        if failure is not None:
            batch.broken = f"the transaction was lost: {failure}"

    async def _keep_member(self, batch: _Batch, member: Member) -> str | None:
        """Keep this body's writes in the series; else why not (they are undone, or the series is broken)."""
        failure = await self._savepoint(f"RELEASE {_SAVEPOINT}")
        if failure is not None:
            await self._undo_member(batch)
            return f"cannot keep the body's writes: {failure}"
        batch.members += 1
        batch.hooks.extend(member.hooks)
        return None

    async def _savepoint(self, *statements: str) -> str | None:
        """Run the statements in the open transaction; why they could not run, or None."""
        if not self._db.in_transaction:
            return "the transaction was ended by the database"
        try:
            for sql in statements:
                await self._db.execute(sql)
        except self._db.errors as exc:
            return str(exc) or type(exc).__name__
        return None

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
            failure = "the transaction was ended by the database"
        if failure is None and batch.members == 0:
            failure = ""  # nothing to keep: every body was undone
        if failure is None:
            try:
                await self._db.commit()
                self.commits += 1
            except self._db.errors as exc:
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
            await self._db.rollback()
        except self._db.errors:
            # No transaction left to roll back (SQLite ends it by itself on some I/O errors; a connection is gone).
            return


__all__ = ["MAX_BATCH", "GroupCommitter", "Member", "SeriesConnection"]
