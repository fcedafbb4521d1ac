"""`Relay`: publishes what a service committed, one confirm window at a time, until the broker confirmed it.

A service commits what it owes the broker (an agent's outbox, the gateway's
outgoing evidence) in the same transaction as the state it belongs to, then
wakes its relay. The relay publishes every pending item at once (one confirm
window), waits for each confirm, and settles the confirmed ones together; a
crash in between publishes them again, and the receivers drop the duplicates
by identity. The broker away and the disk away are the same to this loop: it
backs off and tries again, and never ends before shutdown (a relay that died
would leave work unsent while the service looks healthy). At shutdown it
makes one last, bounded attempt; what is left waits for the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, TypeVar

import structlog

from runtime.errors import TransientFailure

log = structlog.get_logger("rogatory.broker.relay")

T = TypeVar("T")

FIRST_RETRY_DELAY_S: Final = 0.5
MAX_RETRY_DELAY_S: Final = 10.0
LAST_DRAIN_S: Final = 5.0
"""At shutdown, how long the last attempt to publish what is committed may take (the rest waits for the next start)."""


async def publish_window(
    items: Sequence[T], publish: Callable[[T], Awaitable[None]]
) -> tuple[list[T], BaseException | None]:
    """Publish every item at once, each awaited for its own confirm: the confirmed ones, and the first failure."""
    outcomes = await asyncio.gather(*(publish(item) for item in items), return_exceptions=True)
    confirmed = [item for item, outcome in zip(items, outcomes, strict=True) if outcome is None]
    failure = next((outcome for outcome in outcomes if isinstance(outcome, BaseException)), None)
    return confirmed, failure


class Relay(ABC):
    """Runs `drain` whenever woken (or every `poll_interval`), with a capped backoff while something is away."""

    name: str = "relay"

    def __init__(self, *, poll_interval: float = 1.0) -> None:
        self._poll_interval = poll_interval
        self._wake = asyncio.Event()
        self._retry_delay = FIRST_RETRY_DELAY_S
        self._retry_event = self.name + "_retry"

    def wake(self) -> None:
        """Something was committed: publish it soon."""
        self._wake.set()

    @abstractmethod
    async def drain(self) -> None:
        """Publish everything pending; raise `TransientFailure` if the broker or the disk is away."""

    async def run(self, stopping: asyncio.Event) -> None:
        """Publish until `stopping` is set, then make one last, bounded attempt."""
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._poll_interval)
            self._wake.clear()
            try:
                await self.drain()
            except TransientFailure as exc:
                log.warning(self._retry_event, error=str(exc)[:300], retry_in_s=self._retry_delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), timeout=self._retry_delay)
                self._retry_delay = min(self._retry_delay * 2, MAX_RETRY_DELAY_S)
            else:
                self._retry_delay = FIRST_RETRY_DELAY_S
        with contextlib.suppress(TransientFailure, TimeoutError):
            await asyncio.wait_for(self.drain(), timeout=LAST_DRAIN_S)


__all__ = ["LAST_DRAIN_S", "Relay", "publish_window"]
