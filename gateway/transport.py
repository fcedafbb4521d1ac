"""The gateway's broker roles: what it consumes (`mla.gateway.ingress`, `mla.dead`) and where it publishes.

The mechanics (failover, confirms, acknowledging after the durable write,
retries in place, reconnects) are `runtime.broker`'s; this module says only
which queues the gateway reads, how a delivery becomes the pipeline's input,
and what each processed delivery logs. The gateway publishes to
`mla.deliver` only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Final, TypeVar

import aio_pika.abc
import structlog

from gateway.pipeline import IngressDelivery, Outcome
from protocol.topology import DEAD_LETTER_QUEUE, DELIVER_EXCHANGE, INGRESS_QUEUE
from runtime.broker import ConfirmedPublisher, ConsumerPolicy, ConsumerRole, FailoverConnector, QueueConsumer

R = TypeVar("R")

DEAD_LETTER_PREFETCH: Final = 4
"""Dead letters held unacknowledged at once: they are rare and handled one at a time."""


BROKER_HEADERS: Final = ("x-death", "x-first-death-", "x-last-death-", "cc", "bcc")
"""Headers the broker writes or routes by: on a submission they can only be the publishing agency's own."""

log = structlog.get_logger("rogatory.gateway.transport")


def _ingress_delivery(message: aio_pika.abc.AbstractIncomingMessage) -> IngressDelivery:
    """Body, kind and the broker-checked `user_id`: no header of the agency's reaches the pipeline.

    Nothing dead-letters into the ingress, so death headers on a submission
    are forged; they are logged here and dropped. They stay on the broker's
    copy (a consumer cannot change a delivery), which is why `gateway.deadletters`
    never reads a death from an agency's headers, and the gateway relays a new
    message with properties of its own (`ConfirmedPublisher`), never the agency's.
    """
    forged = sorted(name[:60] for name in (message.headers or {}) if name.lower().startswith(BROKER_HEADERS))[:10]
    if forged:
        log.warning("ingress_broker_headers_ignored", headers=forged, user_id=(message.user_id or "")[:200] or None)
    return IngressDelivery(
        body=message.body, kind=message.type, user_id=message.user_id, amqp_message_id=message.message_id
    )


INGRESS: Final[ConsumerRole[IngressDelivery, Outcome]] = ConsumerRole(
    name="ingress",
    queue=INGRESS_QUEUE,
    convert=_ingress_delivery,
    summary=Outcome.summary,
    processed_event=None,
)
"""`mla.gateway.ingress`: what agencies submit, handed to `IngressPipeline.handle` (whose measured handler
logs each delivery's one line, `message_processed`: one line a delivery, not two)."""


def ingress_consumer(
    connector: FailoverConnector, handle: Callable[[IngressDelivery], Awaitable[Outcome]], *, prefetch: int
) -> QueueConsumer[IngressDelivery, Outcome]:
    """Consumes `mla.gateway.ingress`; each delivery's line is the handler's `message_processed`."""
    return QueueConsumer(connector, INGRESS, handle, policy=ConsumerPolicy(prefetch=prefetch))


@dataclass(frozen=True, slots=True)
class DeadDelivery:
    """One delivery from `mla.dead`, as the broker dead-lettered it; nothing in it is trusted but `user_id`."""

    body: bytes
    kind: str | None
    user_id: str | None
    amqp_message_id: str | None
    headers: Mapping[str, object] = field(hash=False)


def _dead_delivery(message: aio_pika.abc.AbstractIncomingMessage) -> DeadDelivery:
    return DeadDelivery(
        body=message.body,
        kind=message.type,
        user_id=message.user_id,
        amqp_message_id=message.message_id,
        headers=dict(message.headers or {}),
    )


def dead_letter_consumer(
    connector: FailoverConnector,
    handle: Callable[[DeadDelivery], Awaitable[R]],
    summary: Callable[[R], Mapping[str, object]],
) -> QueueConsumer[DeadDelivery, R]:
    """Consumes `mla.dead`, one dead letter at a time; logs `dead_letter_processed` for each one recorded."""
    role: ConsumerRole[DeadDelivery, R] = ConsumerRole(
        name="dead_letter",
        queue=DEAD_LETTER_QUEUE,
        convert=_dead_delivery,
        summary=summary,
        processed_event="dead_letter_processed",
    )
    return QueueConsumer(connector, role, handle, policy=ConsumerPolicy(prefetch=DEAD_LETTER_PREFETCH, concurrency=1))


def deliver_publisher(connector: FailoverConnector) -> ConfirmedPublisher:
    """The gateway's one publisher: to `mla.deliver`, routed by the recipient agency's id."""
    return ConfirmedPublisher(connector, exchange=DELIVER_EXCHANGE)


__all__ = ["INGRESS", "DeadDelivery", "dead_letter_consumer", "deliver_publisher", "ingress_consumer"]
