"""`Leadership`: which of several gateway processes sharing one PostgreSQL log does the singleton duties.

Every gateway process verifies, routes, logs and issues evidence; a few
duties must be done by one process at a time, the *leader*:

* signing checkpoints (`AuditLog.checkpoint_if_due`): one signer, so the
  checkpoints follow one another, each over a log at least as large as the
  one before, and none is signed twice for nothing;
* time-stamping checkpoints (`gateway.timestamping`);
* the deadline sweep (`gateway.deadlines`): safe in every process (each
  negative evidence is checked again inside its transaction, so a second
  sweeper issues nothing), but only wasted work there;
* the blob sweeper (`gateway.blobs.BlobSweeper`): deletions and their
  `blob_deleted` leaves (idempotent on identity, but a second sweeper would
  race the first on the files).

Everything else runs in every process (`gateway.service` says which):
the ingress and dead-letter consumers (competing consumers of the same
queues), the outbox relay (each row claimed by one process:
`GatewayStore.outgoing_batch`), the directory watch (two processes adopting
the same version log one leaf: appends are idempotent on the leaf's
identity, `directory/<version>`), the HTTP API.

The leader is the process holding a session-level PostgreSQL advisory lock
(`pg_try_advisory_lock(LEADER_LOCK_KEY)`) on a connection of its own, not
one of the store's pool. Each process tries to take it every `retry_s`
seconds; the holder checks its connection as often. When that connection
drops (the process died, the network or the server went away), PostgreSQL
releases the lock and another process takes it at its next try: a handover
within `retry_s` of the loss being noticed. The old leader stops acting as
one as soon as its connection is seen to be gone (asyncpg's termination
callback, or a failed check), and a process stopping gracefully lets go
only after its last checkpoint (`close`, a closer of the service).

With SQLite (one process on its data directory) the process always leads.

Leadership changes are logged (`leadership_acquired`, `leadership_lost`)
and shown in `/healthz` (`leader`) and in `/metrics`
(`rogatory_gateway_leader`).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final

import asyncpg
import structlog

from gateway.db import redacted_url

log = structlog.get_logger("rogatory.gateway.leadership")

LEADER_LOCK_KEY: Final = 0x526F6C64  # "Rold": the lock the leading gateway process holds for its session
"""The advisory lock of the leader (distinct from `gateway.db`'s writers' transaction lock)."""
DEFAULT_RETRY_S: Final = 2.0
"""Seconds between two tries to lead, and between two checks of the leader's connection."""
CHECK_TIMEOUT_S: Final = 5.0
"""A check of the leader's connection that takes longer than this counts as a lost connection."""

_PG_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, asyncio.TimeoutError)


class Leadership:
    """Whether this process leads: always with SQLite (`url` None); with PostgreSQL, while it holds the lock."""

    def __init__(self, url: str | None, *, retry_s: float = DEFAULT_RETRY_S, key: int = LEADER_LOCK_KEY) -> None:
        self._url = url
        self._retry_s = retry_s
        self._key = key
        self._connection: asyncpg.Connection | None = None
        self._leading = url is None
        self._closed = False

    @property
    def leading(self) -> bool:
        """Whether this process is the leader now."""
        return self._leading

    @property
    def shared(self) -> bool:
        """Whether leadership is contested at all (a shared PostgreSQL store)."""
        return self._url is not None

    async def run(self, stopping: asyncio.Event) -> None:
        """Try to lead every `retry_s` seconds, and check the lock's connection as often, until `stopping` is set.

        The lock is kept when `stopping` is set (the last checkpoint is still
        the leader's to sign): `close` lets go.
        """
        if self._url is None:
            await stopping.wait()
            return
        while not stopping.is_set() and not self._closed:
            await self._step()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=self._retry_s)

    async def _step(self) -> None:
        """One try to lead, or one check that the lock's connection is still there."""
        try:
            connection = self._connection
            if connection is None or connection.is_closed():
                self._connection = None
                connection = await asyncpg.connect(self._url, timeout=CHECK_TIMEOUT_S)
                connection.add_termination_listener(self._terminated)
                self._connection = connection
            if self._leading:
                await connection.fetchval("SELECT 1", timeout=CHECK_TIMEOUT_S)
                return
            if self._closed:
                return
            if await connection.fetchval("SELECT pg_try_advisory_lock($1)", self._key, timeout=CHECK_TIMEOUT_S):
                self._set(leading=True)
        except _PG_ERRORS as exc:
            self._set(leading=False, error=str(exc)[:300])
            await self._drop()

    def _terminated(self, connection: object) -> None:  # noqa: ARG002 - asyncpg's listener signature
        """The lock's connection closed: the server released the lock, so this process leads no more."""
        self._set(leading=False, error="the connection holding the lock closed")

    def _set(self, *, leading: bool, error: str | None = None) -> None:
        if leading == self._leading:
            return
        self._leading = leading
        if leading:
            log.info("leadership_acquired", database=redacted_url(self._url or ""))
        else:
            log.warning("leadership_lost", error=error)

    async def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(*_PG_ERRORS):
                await asyncio.wait_for(connection.close(), timeout=CHECK_TIMEOUT_S)
            if not connection.is_closed():
                connection.terminate()

    async def close(self) -> None:
        """Let go of the lock (closing its connection releases it) for good: another process leads at its next try."""
        if self._url is None:
            return
        self._closed = True
        was_leading = self._leading
        if self._connection is not None:
            self._connection.remove_termination_listener(self._terminated)
        self._leading = False
        await self._drop()
        if was_leading:
            log.info("leadership_released")

    def status(self) -> dict[str, object]:
        """What `/healthz` shows."""
        return {"leader": self._leading, "leadership": "shared" if self.shared else "single"}


__all__ = ["CHECK_TIMEOUT_S", "DEFAULT_RETRY_S", "LEADER_LOCK_KEY", "Leadership"]
