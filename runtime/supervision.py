"""Supervision: a process that is up but no longer consumes exits for its supervisor; keyed turns.

Consumers reconnect by themselves (`runtime.broker`), and every background
task handles the failures it expects. What neither can handle is a loop that
wedges or a task that ends by a bug: the process would stay up, answer
`/healthz` as degraded forever, and hold nothing back. So:

* `ConsumerWatchdog` raises `ServiceUnhealthy` once a consumer has not been
  consuming for longer than its limit (`ROGATORY_WATCHDOG_S`);
* `supervise` waits for shutdown, or for the first task to end before it:
  that task's failure becomes the process's, and the service stops
  gracefully and exits non-zero (`EXIT_UNHEALTHY`), for systemd, a container
  runtime or `rogatory dev up` to start it again, with its data.

A restart is safe at any moment: every delivery not yet acknowledged comes
back and every handler is idempotent.

`KeyedLocks` serialises work per key (deliveries of one message id, the
submissions of one case) and forgets a key's lock once nobody holds or waits
for it, so the map stays as small as the work in hand.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Final, Protocol

import structlog

from runtime.errors import ServiceUnhealthy

log = structlog.get_logger("rogatory.supervision")

EXIT_UNHEALTHY: Final = 70
"""Exit status of a process its watchdog stopped (EX_SOFTWARE): restart it."""


class Watched(Protocol):
    """A consumer as the watchdog sees it."""

    @property
    def name(self) -> str:
        """What the logs call it."""

    def down_for(self) -> float:
        """Seconds since it last stopped consuming (0 while it consumes)."""


class ConsumerWatchdog:
    """Ends with `ServiceUnhealthy` once any consumer has been down for longer than `limit_s`."""

    def __init__(self, consumers: Sequence[Watched], *, limit_s: float, check_every_s: float = 1.0) -> None:
        self._consumers = tuple(consumers)
        self._limit_s = limit_s
        self._check_every_s = check_every_s

    async def run(self, stopping: asyncio.Event) -> None:
        """Check every `check_every_s` until `stopping` is set."""
        while not stopping.is_set():
            for consumer in self._consumers:
                down = consumer.down_for()
                if down > self._limit_s:
                    log.error("watchdog_expired", consumer=consumer.name, down_s=round(down, 1), limit_s=self._limit_s)
                    raise ServiceUnhealthy(
                        f"consumer {consumer.name} has not been consuming for {down:.0f} s "
                        f"(limit {self._limit_s:.0f} s)"
                    )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=self._check_every_s)


async def supervise(tasks: Sequence[asyncio.Task[None]], stopping: asyncio.Event) -> ServiceUnhealthy | None:
    """Wait for `stopping`, or for a task to end first (then set `stopping` and return why)."""
    stop_wait = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait({stop_wait, *tasks}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop_wait.cancel()
    if stopping.is_set():
        return None
    task = next(task for task in tasks if task.done())
    error = None if task.cancelled() else task.exception()
    log.error("task_ended", task=task.get_name(), error=repr(error)[:500])
    stopping.set()
    if isinstance(error, ServiceUnhealthy):
        return error
    failure = ServiceUnhealthy(f"task {task.get_name()} ended: {error!r}"[:500])
    failure.__cause__ = error
    return failure


class KeyedLocks:
    """One lock per key while anyone holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    def __len__(self) -> int:
        """How many keys are held or waited for now."""
        return len(self._locks)

    @contextlib.asynccontextmanager
    async def hold(self, key: str | None) -> AsyncIterator[None]:
        """Hold `key`'s lock, after those who came before (no lock to wait for without a key)."""
        if key is None:
            yield
            return
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class TryLocks:
    """Keys in use now: a second user of a key is turned away at once, never queued; a released key is forgotten.

    For work that must not run twice at once and whose caller can answer
    "busy" instead of waiting (a resumable upload): the map holds only keys in
    use, so it cannot grow with the keys ever seen.
    """

    def __init__(self) -> None:
        self._held: set[str] = set()

    def __len__(self) -> int:
        """How many keys are held now."""
        return len(self._held)

    def __contains__(self, key: object) -> bool:
        """Whether `key` is held now."""
        return key in self._held

    @contextlib.contextmanager
    def try_hold(self, key: str) -> Iterator[bool]:
        """Hold `key` and yield True, or yield False (holding nothing) if someone holds it already."""
        if key in self._held:
            yield False
            return
        self._held.add(key)
        try:
            yield True
        finally:
            self._held.discard(key)


async def finish(tasks: Sequence[asyncio.Task[None]], *, timeout_s: float) -> None:
    """Let the tasks end by themselves for up to `timeout_s` (graceful shutdown), then leave the rest."""
    _, pending = await asyncio.wait(tasks, timeout=timeout_s)
    for task in pending:
        log.warning("task_not_finished_at_shutdown", task=task.get_name(), waited_s=timeout_s)


__all__ = ["EXIT_UNHEALTHY", "ConsumerWatchdog", "KeyedLocks", "TryLocks", "Watched", "finish", "supervise"]
