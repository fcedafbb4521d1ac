"""The gateway's two broker roles: `IngressConsumer` and `ConfirmedPublisher`.

Each holds its own connection (RabbitMQ's advice: flow control on a
publishing connection must not stall consumption) and reconnects by itself
with a capped backoff. The gateway declares nothing: topology is
provisioned from the directory (`deploy.broker`), and the gateway user has
no configure permission.

Every publish is persistent, mandatory and confirmed: a return means the
recipient has no inbox (`RoutingFailed`), a nack or a lost connection means
"try again" (`BrokerUnavailable`). Every delivery is acknowledged only after
the pipeline returned, i.e. after its durable writes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
import aio_pika.abc
import aio_pika.exceptions
import structlog

from gateway.errors import BrokerUnavailable, RoutingFailed, TransientFailure
from gateway.pipeline import IngressDelivery, Outcome
from protocol.topology import DELIVER_EXCHANGE, INGRESS_QUEUE

log = structlog.get_logger("rogatory.gateway.broker")

_BROKER_ERRORS = (
    aio_pika.exceptions.AMQPError,
    ConnectionError,
    OSError,
    RuntimeError,
    asyncio.TimeoutError,
)


class ConfirmedPublisher:
    """Publishes to `mla.deliver` and waits for the broker's confirm."""

    def __init__(self, amqp_url: str, *, broker_user: str, confirm_timeout: float = 30.0) -> None:
        self._url = amqp_url
        self._user = broker_user
        self._timeout = confirm_timeout
        self._connection: aio_pika.abc.AbstractConnection | None = None
        self._exchange: aio_pika.abc.AbstractExchange | None = None
        self._lock = asyncio.Lock()

    async def _ensure_exchange(self) -> aio_pika.abc.AbstractExchange:
        async with self._lock:
            if self._exchange is not None and self._connection is not None and not self._connection.is_closed:
                return self._exchange
            await self._drop()
            try:
                self._connection = await aio_pika.connect(self._url, timeout=self._timeout)
                channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
                self._exchange = await channel.get_exchange(DELIVER_EXCHANGE, ensure=False)
            except _BROKER_ERRORS as exc:
                await self._drop()
                raise BrokerUnavailable(f"cannot open a publishing channel: {exc!r}") from exc
            return self._exchange

    async def _drop(self) -> None:
        connection, self._connection, self._exchange = self._connection, None, None
        if connection is not None and not connection.is_closed:
            with contextlib.suppress(*_BROKER_ERRORS):
                await connection.close()

    async def publish(self, *, routing_key: str, body: bytes, kind: str, message_id: str) -> None:
        """Publish one persistent, mandatory message; return once the broker confirmed it."""
        exchange = await self._ensure_exchange()
        message = aio_pika.Message(
            body,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            type=kind,
            message_id=message_id,
            user_id=self._user,
            content_type="application/octet-stream",
        )
        try:
            await exchange.publish(message, routing_key=routing_key, mandatory=True, timeout=self._timeout)
        except aio_pika.exceptions.PublishError as exc:
            raise RoutingFailed(f"the broker returned the message: no inbox is bound for {routing_key!r}") from exc
        except aio_pika.exceptions.DeliveryError as exc:
            raise BrokerUnavailable(f"the broker refused the message for {routing_key!r} (nack)") from exc
        except _BROKER_ERRORS as exc:
            await self._drop()
            raise BrokerUnavailable(f"publish to {routing_key!r} not confirmed: {exc!r}") from exc

    async def close(self) -> None:
        """Close the publishing connection."""
        async with self._lock:
            await self._drop()


class IngressConsumer:
    """Consumes `mla.gateway.ingress` one delivery at a time, acking after the pipeline returned."""

    def __init__(
        self,
        amqp_url: str,
        handle: Callable[[IngressDelivery], Awaitable[Outcome]],
        *,
        prefetch: int,
        retry_delay: float = 1.0,
        max_reconnect_delay: float = 15.0,
    ) -> None:
        self._url = amqp_url
        self._handle = handle
        self._prefetch = prefetch
        self._retry_delay = retry_delay
        self._max_reconnect_delay = max_reconnect_delay
        self.connected = asyncio.Event()

    async def run(self, stopping: asyncio.Event) -> None:
        """Consume until `stopping` is set, reconnecting with backoff whenever the broker goes away."""
        delay = 0.5
        while not stopping.is_set():
            try:
                await self._consume(stopping)
                delay = 0.5
            except _BROKER_ERRORS as exc:
                self.connected.clear()
                log.warning("ingress_connection_lost", error=repr(exc)[:300], retry_in_s=delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), timeout=delay)
                delay = min(delay * 2, self._max_reconnect_delay)

    async def _consume(self, stopping: asyncio.Event) -> None:
        connection = await aio_pika.connect(self._url, timeout=15)
        try:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=self._prefetch)
            queue = await channel.get_queue(INGRESS_QUEUE, ensure=False)
            closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

            def on_close(*_: object) -> None:
                if not closed.done():
                    closed.set_result(None)

            connection.close_callbacks.add(on_close)
            async with queue.iterator() as deliveries:
                self.connected.set()
                log.info("ingress_consuming", queue=INGRESS_QUEUE)
                iterator = aiter(deliveries)
                while not stopping.is_set():
                    next_delivery = asyncio.ensure_future(anext(iterator))
                    stop_wait = asyncio.ensure_future(stopping.wait())
                    waiters: set[asyncio.Future[Any]] = {next_delivery, stop_wait, closed}
                    done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                    stop_wait.cancel()
                    if next_delivery not in done:
                        next_delivery.cancel()
                        with contextlib.suppress(asyncio.CancelledError, *_BROKER_ERRORS):
                            await next_delivery
                        if closed in done:
                            raise ConnectionError("connection to the broker closed")
                        break
                    await self._process(next_delivery.result())
        finally:
            self.connected.clear()
            with contextlib.suppress(*_BROKER_ERRORS):
                await connection.close()

    async def _process(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        delivery = IngressDelivery(
            body=message.body,
            kind=message.type,
            user_id=message.user_id,
            amqp_message_id=message.message_id,
        )
        try:
            outcome = await self._handle(delivery)
        except TransientFailure as exc:
            log.warning("ingress_retry", error=str(exc)[:300], message_id=message.message_id)
            await asyncio.sleep(self._retry_delay)
            await message.nack(requeue=True)
            return
        except Exception:
            # A bug, not a verdict on the input: hand it back; the delivery limit
            # dead-letters it if it keeps failing, and the operator sees it there.
            log.exception("ingress_unexpected_error", message_id=message.message_id)
            await asyncio.sleep(self._retry_delay)
            await message.nack(requeue=True)
            return
        await message.ack()
        log.info(
            "ingress_processed",
            kind=outcome.kind,
            result=outcome.result,
            code=outcome.code,
            message_id=outcome.message_id,
            sender=outcome.sender,
        )


__all__ = ["ConfirmedPublisher", "IngressConsumer"]
