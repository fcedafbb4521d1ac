"""`OutgoingRelay`: publishes what the pipeline committed to the `outgoing` table.

Evidence for senders is first committed with the audit leaf it belongs to,
then published from here with confirms, then deleted. A crash in between
publishes it again; agents drop the duplicate by the evidence's identity.
The loop itself, its backoff and its last drain at shutdown are
`runtime.broker.Relay`'s.
"""

from __future__ import annotations

import structlog

from gateway.pipeline import Publisher
from gateway.store import GatewayStore, OutgoingRecord
from runtime.broker import Relay, publish_window
from runtime.errors import RoutingFailed

log = structlog.get_logger("rogatory.gateway.outgoing")


class OutgoingRelay(Relay):
    """Drains the gateway's outbox to the broker, oldest first."""

    name = "outgoing"

    def __init__(self, store: GatewayStore, publisher: Publisher, *, poll_interval: float = 1.0) -> None:
        super().__init__(poll_interval=poll_interval)
        self._store = store
        self._publisher = publisher

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
            confirmed, failure = await publish_window(pending, self._publish)
            if confirmed:
                # Published and confirmed: forget them (if this fails, they are published again: harmless).
                await self._store.delete_outgoing([record.outgoing_id for record in confirmed])
            if failure is not None:
                raise failure

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
