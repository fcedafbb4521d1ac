"""`OutgoingRelay`: publishes what the pipeline committed to the `outgoing` table.

Evidence for senders is first committed with the audit leaf it belongs to,
then published from here with confirms, then deleted. A crash in between
publishes it again; agents drop the duplicate by the evidence's identity.
Several gateway processes on one PostgreSQL database each run a relay; each
row is claimed by one of them (`GatewayStore.outgoing_batch`), so a row is
published twice only when a process died between publishing and forgetting.
The evidence an agency is owed leaves in batches (`runtime.broker.batch_outgoing`):
what is pending for one agency when the relay drains is one broker message,
alone as `KIND_EVIDENCE` when it is one statement. The loop itself, its
backoff and its last drain at shutdown are `runtime.broker.Relay`'s.
"""

from __future__ import annotations

import structlog

from gateway.pipeline import Publisher
from gateway.store import GatewayStore, OutgoingBatch, OutgoingRecord
from protocol.limits import DEFAULT_LIMITS, Limits
from runtime.broker import Outgoing, Relay, batch_outgoing, publish_window
from runtime.errors import RoutingFailed

log = structlog.get_logger("rogatory.gateway.outgoing")


class OutgoingRelay(Relay):
    """Drains the gateway's outbox to the broker, oldest first."""

    name = "outgoing"

    def __init__(
        self,
        store: GatewayStore,
        publisher: Publisher,
        *,
        poll_interval: float = 1.0,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        super().__init__(poll_interval=poll_interval)
        self._store = store
        self._publisher = publisher
        self._limits = limits

    async def drain(self) -> None:
        """Publish everything pending; raise `TransientFailure` if the broker or the disk is away.

        What is pending is taken in batches this process alone publishes
        (`GatewayStore.outgoing_batch`: with several gateway processes on one
        PostgreSQL database, another process's relay skips them), grouped into
        one message per agency and batch (`batch_outgoing`), published as one
        confirm window (every publish in flight at once, each awaited for its
        own confirm), then the confirmed ones are forgotten together: the
        broker's round trip and the delete are paid once per drain, a broker
        message once per agency and batch.
        """
        while True:
            async with self._store.outgoing_batch() as batch:
                if not batch.records:
                    return
                failure = await self._publish_batch(batch)
            if failure is not None:
                raise failure

    async def _publish_batch(self, batch: OutgoingBatch) -> BaseException | None:
        """Publish one batch and forget what the broker confirmed; the failure that stopped the rest, if any."""
        messages = batch_outgoing(
            batch.records,
            destination=lambda record: record.routing_key,
            kind=lambda record: record.kind,
            body=lambda record: record.body,
            message_id=lambda record: record.message_id,
            batch_id=lambda agency: f"evidence-batch/{agency}",
            limits=self._limits,
        )
        confirmed, failure = await publish_window(messages, self._publish)
        if confirmed:
            # Published and confirmed: forget them (if this fails, they are published again: harmless).
            await batch.forget([record.outgoing_id for message in confirmed for record in message.items])
        return failure

    async def _publish(self, message: Outgoing[OutgoingRecord]) -> None:
        try:
            await self._publisher.publish(
                routing_key=message.destination,
                body=message.body,
                kind=message.kind,
                message_id=message.message_id,
            )
        except RoutingFailed:
            # The agency's inbox is gone (agency removed from the network): the
            # evidence stays in the audit log, where the agency can still prove it.
            log.warning(
                "outgoing_unroutable",
                routing_key=message.destination,
                message_id=message.message_id,
                statements=len(message.items),
            )


__all__ = ["OutgoingRelay"]
