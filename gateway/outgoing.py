"""`OutgoingRelay`: publishes what the pipeline committed to the `outgoing` table.

Evidence for senders is first committed with the audit leaf it belongs to,
then published from here with confirms, then deleted. A crash in between
publishes it again; agents drop the duplicate by the evidence's identity.
The broker away and the disk away are the same to this loop: it backs off
and tries again, and never ends before shutdown (a relay that died would
leave evidence unsent while the gateway looks healthy).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final

import structlog

from gateway.pipeline import Publisher
from gateway.store import GatewayStore, OutgoingRecord
from runtime.errors import RoutingFailed, TransientFailure

log = structlog.get_logger("rogatory.gateway.outgoing")

FIRST_RETRY_DELAY_S: Final = 0.5
MAX_RETRY_DELAY_S: Final = 10.0
LAST_DRAIN_S: Final = 5.0
"""At shutdown, how long the last attempt to publish what is committed may take (the rest waits for the next start)."""


class OutgoingRelay:
    """Drains the gateway's outbox to the broker, oldest first."""

    def __init__(self, store: GatewayStore, publisher: Publisher, *, poll_interval: float = 1.0) -> None:
        self._store = store
        self._publisher = publisher
        self._poll_interval = poll_interval
        self._wake = asyncio.Event()
        self._retry_delay = FIRST_RETRY_DELAY_S

    def wake(self) -> None:
        """Something was committed: publish it soon."""
        self._wake.set()

    async def run(self, stopping: asyncio.Event) -> None:
        """Publish until `stopping` is set, then make one last, bounded attempt."""
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._poll_interval)
            self._wake.clear()
            try:
                await self.drain()
            except TransientFailure as exc:
                log.warning("outgoing_retry", error=str(exc)[:300], retry_in_s=self._retry_delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), timeout=self._retry_delay)
                self._retry_delay = min(self._retry_delay * 2, MAX_RETRY_DELAY_S)
            else:
                self._retry_delay = FIRST_RETRY_DELAY_S
        with contextlib.suppress(TransientFailure, TimeoutError):
            await asyncio.wait_for(self.drain(), timeout=LAST_DRAIN_S)

    async def drain(self) -> None:
        """Publish everything pending; raise `TransientFailure` if the broker or the disk is away.

        A batch is published as one confirm window (every publish in flight at
        once, each awaited for its own confirm), then the confirmed ones are
        deleted together: the broker's round trip and the delete are paid once
        per batch, not once per evidence.
        """
        while True:
            pending = await self._store.pending_outgoing()
            if not pending:
                return
            outcomes = await asyncio.gather(*(self._publish(record) for record in pending), return_exceptions=True)
            done = [record.outgoing_id for record, outcome in zip(pending, outcomes, strict=True) if outcome is None]
            if done:
                # Published and confirmed: forget them (if this fails, they are published again: harmless).
                await self._store.delete_outgoing(done)
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome

    async def _publish(self, record: OutgoingRecord) -> None:
        try:
            await self._publisher.publish(
                routing_key=record.routing_key,
                body=record.body,
                kind=record.kind,
                message_id=record.message_id,
            )
        except RoutingFailed:
            # The agency's inbox is gone (agency removed from the network): the
            # evidence stays in the audit log, where the agency can still prove it.
            log.warning("outgoing_unroutable", routing_key=record.routing_key, message_id=record.message_id)


__all__ = ["OutgoingRelay"]
