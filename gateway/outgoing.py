"""`OutgoingRelay`: publishes what the pipeline committed to the `outgoing` table.

Evidence for senders is first committed with the audit leaf it belongs to,
then published from here with confirms, then deleted. A crash in between
publishes it again; agents drop the duplicate by the evidence's identity.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from gateway.errors import RoutingFailed, TransientFailure
from gateway.pipeline import Publisher
from gateway.store import GatewayStore

log = structlog.get_logger("rogatory.gateway.outgoing")


class OutgoingRelay:
    """Drains the gateway's outbox to the broker, oldest first."""

    def __init__(self, store: GatewayStore, publisher: Publisher, *, poll_interval: float = 1.0) -> None:
        self._store = store
        self._publisher = publisher
        self._poll_interval = poll_interval
        self._wake = asyncio.Event()
        self._retry_delay = 0.5

    def wake(self) -> None:
        """Something was committed: publish it soon."""
        self._wake.set()

    async def run(self, stopping: asyncio.Event) -> None:
        """Publish until `stopping` is set, then one last drain."""
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._poll_interval)
            self._wake.clear()
            if not await self.drain():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), timeout=self._retry_delay)
                self._retry_delay = min(self._retry_delay * 2, 10.0)
            else:
                self._retry_delay = 0.5
        await self.drain()

    async def drain(self) -> bool:
        """Publish everything pending; False if the broker was away (try again later)."""
        while True:
            pending = await self._store.pending_outgoing()
            if not pending:
                return True
            done: list[int] = []
            try:
                for record in pending:
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
                    done.append(record.outgoing_id)
            except TransientFailure as exc:
                log.warning("outgoing_retry", error=str(exc)[:300], pending=len(pending) - len(done))
                return False
            finally:
                if done:
                    await self._store.delete_outgoing(done)


__all__ = ["OutgoingRelay"]
