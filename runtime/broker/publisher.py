"""`ConfirmedPublisher`: every publish persistent, mandatory, under the service's own `user_id`, and confirmed.

A return (no queue bound for the routing key) is `RoutingFailed`; a nack or a
lost connection is `BrokerUnavailable` ("try again"). The publisher declares
nothing: topology is provisioned from the directory, and no service user has
configure permission.
"""

from __future__ import annotations

import asyncio
import contextlib

import aio_pika
import aio_pika.abc
import aio_pika.exceptions

from runtime.broker.connection import BROKER_ERRORS, CLOSE_TIMEOUT_S, FailoverConnector, cancelled_by_the_library
from runtime.errors import BrokerUnavailable, RoutingFailed


class ConfirmedPublisher:
    """Publishes to one exchange over a connection of its own and waits for the broker's confirm."""

    def __init__(self, connector: FailoverConnector, *, exchange: str, confirm_timeout: float = 30.0) -> None:
        self._connector = connector
        self._exchange_name = exchange
        self._user = connector.endpoints.broker_user
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
                self._connection = await self._connector.connect("publisher")
                channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
                self._exchange = await channel.get_exchange(self._exchange_name, ensure=False)
            except BROKER_ERRORS as exc:
                await self._drop()
                raise BrokerUnavailable(f"cannot open a publishing channel: {exc!r}") from exc
            return self._exchange

    async def _drop(self) -> None:
        connection, self._connection, self._exchange = self._connection, None, None
        if connection is not None and not connection.is_closed:
            with contextlib.suppress(*BROKER_ERRORS):
                await asyncio.wait_for(connection.close(), timeout=CLOSE_TIMEOUT_S)

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
            raise RoutingFailed(f"the broker returned the message: no queue is bound for {routing_key!r}") from exc
        except aio_pika.exceptions.DeliveryError as exc:
            raise BrokerUnavailable(f"the broker refused the message for {routing_key!r} (nack)") from exc
        except BROKER_ERRORS as exc:
            async with self._lock:
                await self._drop()
            raise BrokerUnavailable(f"publish to {routing_key!r} not confirmed: {exc!r}") from exc
        except asyncio.CancelledError as exc:
            if not cancelled_by_the_library():
                raise
            async with self._lock:
                await self._drop()
            raise BrokerUnavailable(f"publish to {routing_key!r} not confirmed: its connection was dropped") from exc

    async def close(self) -> None:
        """Close the publishing connection."""
        async with self._lock:
            await self._drop()


__all__ = ["ConfirmedPublisher"]
