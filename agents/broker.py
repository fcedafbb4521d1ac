"""An agent's two broker roles: `OutboxRelay` (publishing) and `InboxConsumer`.

The agent declares nothing and may do nothing but publish to `mla.submit`
and read its own inbox: the broker enforces it. Every publish carries the
agency's broker user as `user_id` (RabbitMQ refuses any other), is
persistent, mandatory and confirmed. A submission leaves the outbox as
`queued` only once the broker confirmed it; until then it is published
again, with the same bytes and message id, which the gateway recognises.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import aio_pika
import aio_pika.abc
import aio_pika.exceptions
import structlog

from agents.errors import BrokerUnavailable, TransientFailure
from agents.receiving import InboxDelivery, Received
from agents.status import MessageStatus
from agents.store import AgentStore
from protocol.encoding import format_timestamp, parse_timestamp
from protocol.topology import KIND_EVIDENCE, KIND_SEALED_MESSAGE, SUBMIT_EXCHANGE

log = structlog.get_logger("rogatory.agent.broker")

_BROKER_ERRORS = (
    aio_pika.exceptions.AMQPError,
    ConnectionError,
    OSError,
    RuntimeError,
    asyncio.TimeoutError,
)


class SubmitPublisher:
    """Publishes to `mla.submit` under this agency's broker user, waiting for confirms."""

    def __init__(self, amqp_url: str, *, broker_user: str, routing_key: str, confirm_timeout: float = 30.0) -> None:
        self._url = amqp_url
        self._user = broker_user
        self._routing_key = routing_key
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
                self._exchange = await channel.get_exchange(SUBMIT_EXCHANGE, ensure=False)
            except _BROKER_ERRORS as exc:
                await self._drop()
                raise BrokerUnavailable(f"cannot open a publishing channel: {exc!r}") from exc
            return self._exchange

    async def _drop(self) -> None:
        connection, self._connection, self._exchange = self._connection, None, None
        if connection is not None and not connection.is_closed:
            with contextlib.suppress(*_BROKER_ERRORS):
                await connection.close()

    async def publish(self, *, body: bytes, kind: str, message_id: str) -> None:
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
            await exchange.publish(message, routing_key=self._routing_key, mandatory=True, timeout=self._timeout)
        except aio_pika.exceptions.DeliveryError as exc:
            # A return (no ingress queue bound) or a nack: both mean "not taken", try again later.
            raise BrokerUnavailable(f"the broker did not take the message: {exc!r}") from exc
        except _BROKER_ERRORS as exc:
            await self._drop()
            raise BrokerUnavailable(f"publish not confirmed: {exc!r}") from exc

    async def close(self) -> None:
        """Close the publishing connection."""
        async with self._lock:
            await self._drop()


class OutboxRelay:
    """Publishes queued submissions and issued evidence until the broker confirms them."""

    def __init__(
        self,
        store: AgentStore,
        publisher: SubmitPublisher,
        *,
        clock: Callable[[], datetime],
        poll_interval: float = 1.0,
    ) -> None:
        self._store = store
        self._publisher = publisher
        self._clock = clock
        self._poll_interval = poll_interval
        self._wake = asyncio.Event()
        self._retry_delay = 0.5

    def wake(self) -> None:
        """Something was committed: publish it soon."""
        self._wake.set()

    async def run(self, stopping: asyncio.Event) -> None:
        """Publish until `stopping` is set, with a capped backoff while the broker is away."""
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._poll_interval)
            self._wake.clear()
            try:
                await self.drain()
                self._retry_delay = 0.5
            except TransientFailure as exc:
                log.warning("outbox_retry", error=str(exc)[:300], retry_in_s=self._retry_delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), timeout=self._retry_delay)
                self._retry_delay = min(self._retry_delay * 2, 10.0)

    async def drain(self) -> None:
        """Publish everything pending; raise `TransientFailure` if the broker is away."""
        while True:
            queued = await self._store.queued()
            evidence = await self._store.pending_evidence()
            if not queued and not evidence:
                return
            for record in queued:
                now = self._clock()
                if now >= parse_timestamp(record.expires_at):
                    async with self._store.transaction() as tx:
                        await tx.set_status(record.message_id, MessageStatus.EXPIRED, "EXPIRED", format_timestamp(now))
                    log.warning("outbox_expired_unsent", message_id=record.message_id)
                    continue
                await self._publisher.publish(
                    body=record.sealed, kind=KIND_SEALED_MESSAGE, message_id=record.message_id
                )
                async with self._store.transaction() as tx:
                    await tx.mark_published(record.message_id, format_timestamp(self._clock()))
            done: list[int] = []
            try:
                for item in evidence:
                    await self._publisher.publish(body=item.body, kind=KIND_EVIDENCE, message_id=item.message_id)
                    done.append(item.evidence_out_id)
            finally:
                if done:
                    await self._store.delete_pending_evidence(done)


class InboxConsumer:
    """Consumes this agency's inbox queue one delivery at a time, acking after the durable write."""

    def __init__(
        self,
        amqp_url: str,
        queue_name: str,
        handle: Callable[[InboxDelivery], Awaitable[Received]],
        *,
        prefetch: int,
        retry_delay: float = 1.0,
        max_reconnect_delay: float = 15.0,
    ) -> None:
        self._url = amqp_url
        self._queue_name = queue_name
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
                log.warning("inbox_connection_lost", error=repr(exc)[:300], retry_in_s=delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), timeout=delay)
                delay = min(delay * 2, self._max_reconnect_delay)

    async def _consume(self, stopping: asyncio.Event) -> None:
        connection = await aio_pika.connect(self._url, timeout=15)
        try:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=self._prefetch)
            queue = await channel.get_queue(self._queue_name, ensure=False)
            closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

            def on_close(*_: object) -> None:
                if not closed.done():
                    closed.set_result(None)

            connection.close_callbacks.add(on_close)
            async with queue.iterator() as deliveries:
                self.connected.set()
                log.info("inbox_consuming", queue=self._queue_name)
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
        delivery = InboxDelivery(body=message.body, kind=message.type, user_id=message.user_id)
        try:
            received = await self._handle(delivery)
        except TransientFailure as exc:
            log.warning("inbox_retry", error=str(exc)[:300], message_id=message.message_id)
            await asyncio.sleep(self._retry_delay)
            await message.nack(requeue=True)
            return
        except Exception:
            # A bug, not a verdict on the input: hand it back; the delivery limit
            # dead-letters it if it keeps failing.
            log.exception("inbox_unexpected_error", message_id=message.message_id)
            await asyncio.sleep(self._retry_delay)
            await message.nack(requeue=True)
            return
        await message.ack()
        log.info(
            "inbox_processed",
            kind=received.kind,
            result=received.result,
            code=received.code,
            message_id=received.message_id,
            sender=received.sender,
        )


__all__ = ["InboxConsumer", "OutboxRelay", "SubmitPublisher"]
