"""An agent's broker roles: it publishes to `mla.submit` and reads its own inbox, nothing else.

The broker enforces that: the agent declares nothing, every publish carries
the agency's broker user as `user_id` (RabbitMQ refuses any other). The
mechanics (failover, confirms, acknowledging after the durable write,
retries in place, reconnects) are `runtime.broker`'s; this module says which
exchange and queue, how a delivery becomes the receiver's input, and what
each processed delivery logs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import aio_pika.abc

from agents.receiving import InboxDelivery, Received
from protocol.topology import SUBMIT_EXCHANGE
from runtime.broker import ConfirmedPublisher, ConsumerPolicy, ConsumerRole, FailoverConnector, QueueConsumer
from runtime.errors import BrokerUnavailable, RoutingFailed


class SubmitPublisher:
    """Publishes to `mla.submit` under this agency's broker user, waiting for confirms.

    A return (no ingress queue bound) means the same to an agent as a nack or
    a lost connection: not taken, try again later (`BrokerUnavailable`).
    """

    def __init__(self, connector: FailoverConnector, *, routing_key: str, confirm_timeout: float = 30.0) -> None:
        self._publisher = ConfirmedPublisher(connector, exchange=SUBMIT_EXCHANGE, confirm_timeout=confirm_timeout)
        self._routing_key = routing_key

    async def publish(self, *, body: bytes, kind: str, message_id: str) -> None:
        """Publish one persistent, mandatory message; return once the broker confirmed it."""
        try:
            await self._publisher.publish(routing_key=self._routing_key, body=body, kind=kind, message_id=message_id)
        except RoutingFailed as exc:
            raise BrokerUnavailable(f"the broker did not take the message: {exc}") from exc

    async def close(self) -> None:
        """Close the publishing connection."""
        await self._publisher.close()


def _inbox_delivery(message: aio_pika.abc.AbstractIncomingMessage) -> InboxDelivery:
    return InboxDelivery(body=message.body, kind=message.type, user_id=message.user_id)


def inbox_consumer(
    connector: FailoverConnector,
    queue_name: str,
    handle: Callable[[InboxDelivery], Awaitable[Received]],
    *,
    prefetch: int,
) -> QueueConsumer[InboxDelivery, Received]:
    """Consumes this agency's inbox queue; each delivery's line is the handler's `message_processed`."""
    role: ConsumerRole[InboxDelivery, Received] = ConsumerRole(
        name="inbox",
        queue=queue_name,
        convert=_inbox_delivery,
        summary=Received.summary,
        processed_event=None,  # the measured handler logs the delivery's one line (`agents.metrics`)
    )
    return QueueConsumer(connector, role, handle, policy=ConsumerPolicy(prefetch=prefetch))


__all__ = ["SubmitPublisher", "inbox_consumer"]
