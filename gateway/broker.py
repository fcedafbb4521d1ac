"""The gateway's broker roles: `ConfirmedPublisher`, `IngressConsumer`, `DeadLetterConsumer`.

Each holds its own connection (RabbitMQ's advice: flow control on a
publishing connection must not stall consumption) and reconnects by itself
with a capped backoff, through a `FailoverConnector`: the broker is one node
or the nodes of a cluster (`ROGATORY_AMQP_URL` lists them, comma-separated),
tried in order from the one after the last used, so a reconnect moves away
from a node that just failed. AMQP heartbeats are on, so a connection that
froze (a cable pulled, a node paused) is detected and dropped instead of
waiting forever. The gateway declares nothing: topology is provisioned from
the directory (`deploy.broker`), and the gateway user has no configure
permission.

Every publish is persistent, mandatory and confirmed: a return means the
recipient has no inbox (`RoutingFailed`), a nack or a lost connection means
"try again" (`BrokerUnavailable`).

Consuming (`QueueConsumer`, up to `prefetch` deliveries at
once, in the broker's order for each message id) handles what plain
aio-pika connections leave to their user:

* a delivery is acknowledged only after its handler returned, i.e. after its
  durable writes; an acknowledgement that cannot be sent (its channel died)
  ends the connection: the broker redelivers and the idempotent handler
  recognises the duplicate;
* a transient failure (`TransientFailure`: disk or broker away) is retried in
  place with backoff while the delivery is held, never handed back: every
  return counts toward the queue's delivery limit, and a disk that is full
  for a minute must not dead-letter good messages;
* a connection closed, a channel closed, a consumer cancelled by the broker or
  a queue iterator that ended all end the consumer's connection, and the loop
  consumes again on a new one (deliveries buffered from the old channel are
  never processed: they will come again);
* a bug in a handler hands the delivery back after a pause: the delivery limit
  dead-letters it if it keeps failing;
* at shutdown the delivery in hand is finished (or handed back) and the
  buffered ones are handed back.

Each consumer says since when it has not been consuming (`down_for`), which
`gateway.watchdog` turns into an exit for the supervisor to restart a wedged
process.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Generic, TypeVar
from urllib.parse import quote, unquote, urlsplit

import aio_pika
import aio_pika.abc
import aio_pika.exceptions
import aiohttp
import structlog

from gateway.pipeline import IngressDelivery, Outcome
from protocol.topology import DEAD_LETTER_QUEUE, DELIVER_EXCHANGE, INGRESS_QUEUE
from runtime.errors import BrokerUnavailable, ManagementUnavailable, RoutingFailed, TransientFailure

log = structlog.get_logger("rogatory.gateway.broker")

_BROKER_ERRORS = (
    aio_pika.exceptions.AMQPError,
    ConnectionError,
    OSError,
    RuntimeError,
    asyncio.TimeoutError,
)


def _cancelled_by_the_library() -> bool:
    """Whether a `CancelledError` came from aiormq, not from a cancellation of the running task.

    aiormq cancels the futures of a connection it drops (a stuck one, say): that must count as a lost
    connection. A cancellation of the running task (shutdown) must go on propagating.
    """
    task = asyncio.current_task()
    return task is not None and task.cancelling() == 0


CLOSE_TIMEOUT_S: Final = 5.0
"""How long closing a consumer or a connection may take before it is abandoned (a frozen peer)."""
DEAD_LETTER_PREFETCH: Final = 4
"""Dead letters held unacknowledged at once: they are rare and handled one at a time."""


class _ConsumerLost(ConnectionError):
    """The consumer's connection, channel or subscription is gone: consume again on a new connection."""


class _Turns:
    """One lock per key while anyone holds or waits for it: deliveries of one message id are handled in order."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def turn(self, key: str | None) -> AsyncIterator[None]:
        """Hold `key`'s turn (no turn to wait for without a key)."""
        if key is None:
            yield
            return
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


@dataclass(frozen=True, slots=True)
class BrokerEndpoints:
    """The broker nodes one identity may connect to, and how connections are kept alive.

    `urls` are AMQP URLs with the same user, password and vhost (the nodes of
    one cluster, or one broker). `heartbeat_s` is the AMQP heartbeat: a peer
    silent for about three heartbeats is dropped (0 disables heartbeats).
    """

    urls: tuple[str, ...]
    heartbeat_s: int = 10
    connect_timeout_s: float = 15.0

    def __post_init__(self) -> None:
        if not self.urls:
            raise ValueError("at least one AMQP URL is needed")

    @property
    def broker_user(self) -> str:
        """The user name every URL logs in as: what RabbitMQ checks `user_id` against."""
        return unquote(urlsplit(self.urls[0]).username or "")

    @property
    def vhost(self) -> str:
        """The vhost of the URLs (`/` when they name none)."""
        path = urlsplit(self.urls[0]).path
        return unquote(path[1:]) if len(path) > 1 else "/"


def node_of(url: str) -> str:
    """`host:port` of an AMQP URL, for logs (never the credentials)."""
    parts = urlsplit(url)
    default = 5671 if parts.scheme == "amqps" else 5672
    return f"{parts.hostname}:{parts.port or default}"


class FailoverConnector:
    """Opens connections to the first node that answers, starting after the node used last."""

    def __init__(self, endpoints: BrokerEndpoints) -> None:
        self._endpoints = endpoints
        self._next = 0

    @property
    def endpoints(self) -> BrokerEndpoints:
        """The nodes and settings this connector uses."""
        return self._endpoints

    async def connect(self, role: str) -> aio_pika.abc.AbstractConnection:
        """A new connection for `role`; `BrokerUnavailable` if no node answered."""
        urls = self._endpoints.urls
        failures: list[str] = []
        for offset in range(len(urls)):
            index = (self._next + offset) % len(urls)
            try:
                connection = await aio_pika.connect(
                    urls[index],
                    timeout=self._endpoints.connect_timeout_s,
                    heartbeat=self._endpoints.heartbeat_s,
                    client_properties={"connection_name": f"rogatory gateway {role}"},
                )
            except _BROKER_ERRORS as exc:
                failures.append(f"{node_of(urls[index])}: {exc!r}"[:200])
                continue
            except asyncio.CancelledError:
                if not _cancelled_by_the_library():
                    raise
                failures.append(f"{node_of(urls[index])}: connection dropped while opening")
                continue
            self._next = (index + 1) % len(urls)
            log.info("broker_connected", role=role, node=node_of(urls[index]))
            return connection
        self._next = (self._next + 1) % len(urls)
        raise BrokerUnavailable(f"no broker node answered: {'; '.join(failures)}")


class ConfirmedPublisher:
    """Publishes to `mla.deliver` and waits for the broker's confirm."""

    def __init__(self, connector: FailoverConnector, *, confirm_timeout: float = 30.0) -> None:
        self._connector = connector
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
                self._exchange = await channel.get_exchange(DELIVER_EXCHANGE, ensure=False)
            except _BROKER_ERRORS as exc:
                await self._drop()
                raise BrokerUnavailable(f"cannot open a publishing channel: {exc!r}") from exc
            return self._exchange

    async def _drop(self) -> None:
        connection, self._connection, self._exchange = self._connection, None, None
        if connection is not None and not connection.is_closed:
            with contextlib.suppress(*_BROKER_ERRORS):
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
            raise RoutingFailed(f"the broker returned the message: no inbox is bound for {routing_key!r}") from exc
        except aio_pika.exceptions.DeliveryError as exc:
            raise BrokerUnavailable(f"the broker refused the message for {routing_key!r} (nack)") from exc
        except _BROKER_ERRORS as exc:
            async with self._lock:
                await self._drop()
            raise BrokerUnavailable(f"publish to {routing_key!r} not confirmed: {exc!r}") from exc
        except asyncio.CancelledError as exc:
            if not _cancelled_by_the_library():
                raise
            async with self._lock:
                await self._drop()
            raise BrokerUnavailable(f"publish to {routing_key!r} not confirmed: its connection was dropped") from exc

    async def close(self) -> None:
        """Close the publishing connection."""
        async with self._lock:
            await self._drop()


D = TypeVar("D")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class ConsumerPolicy:
    """How a consumer paces itself: prefetch, retries in place, reconnects."""

    prefetch: int
    concurrency: int | None = None
    """Deliveries handled at once (None: as many as `prefetch` lets the broker send)."""
    retry_delay_s: float = 1.0
    max_retry_delay_s: float = 10.0
    max_reconnect_delay_s: float = 15.0


class QueueConsumer(Generic[D, R]):
    """Consumes one queue, up to `prefetch` deliveries at once, acknowledging each after its `handle` returned."""

    def __init__(
        self,
        connector: FailoverConnector,
        *,
        name: str,
        queue: str,
        convert: Callable[[aio_pika.abc.AbstractIncomingMessage], D],
        handle: Callable[[D], Awaitable[R]],
        summary: Callable[[R], Mapping[str, object]],
        processed_event: str,
        policy: ConsumerPolicy,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._processed_event = processed_event
        self._connector = connector
        self._queue = queue
        self._convert = convert
        self._handle = handle
        self._summary = summary
        self._policy = policy
        self._clock = clock
        self.connected = asyncio.Event()
        self._down_since: float | None = clock()
        self._consumed = False
        self._turns = _Turns()

    def down_for(self) -> float:
        """Seconds since this consumer last stopped consuming (0 while it consumes)."""
        return 0.0 if self._down_since is None else self._clock() - self._down_since

    def _mark_consuming(self) -> None:
        self._down_since = None
        self._consumed = True
        self.connected.set()

    def _mark_down(self) -> None:
        if self._down_since is None:
            self._down_since = self._clock()
        self.connected.clear()

    async def run(self, stopping: asyncio.Event) -> None:
        """Consume until `stopping` is set, consuming again on a new connection whenever one is lost."""
        delay = 0.5
        while not stopping.is_set():
            try:
                await self._consume(stopping)
                delay = 0.5
            except asyncio.CancelledError:
                if not _cancelled_by_the_library():
                    raise
                self._mark_down()
                log.warning(
                    "consumer_connection_lost", consumer=self.name, error="cancelled by aiormq", retry_in_s=delay
                )
                await _wait(stopping, delay)
            except (*_BROKER_ERRORS, TransientFailure) as exc:
                if self._consumed:
                    delay = 0.5  # it had been consuming: a fresh failure, not the next of a series
                self._consumed = False
                self._mark_down()
                log.warning("consumer_connection_lost", consumer=self.name, error=repr(exc)[:300], retry_in_s=delay)
                await _wait(stopping, delay)
                delay = min(delay * 2, self._policy.max_reconnect_delay_s)

    async def _consume(self, stopping: asyncio.Event) -> None:
        connection = await self._connector.connect(self.name)
        iterator: aio_pika.abc.AbstractQueueIterator | None = None
        lost: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        def lose(reason: str) -> None:
            if not lost.done():
                lost.set_result(reason)

        try:
            connection.close_callbacks.add(lambda *_: lose("the connection closed"))
            channel = await connection.channel()
            channel.close_callbacks.add(lambda *_: lose("the channel closed"))
            underlay = await channel.get_underlay_channel()
            underlay.on_consumer_cancel_callbacks.add(lambda *_: lose("the broker cancelled the consumer"))
            await channel.set_qos(prefetch_count=self._policy.prefetch)
            queue = await channel.get_queue(self._queue, ensure=False)
            iterator = queue.iterator()
            await iterator.consume()
            self._mark_consuming()
            log.info("consumer_consuming", consumer=self.name, queue=self._queue)
            await self._dispatch(iterator, stopping, lost, lose)
        finally:
            self._mark_down()
            if iterator is not None:
                # Hands the buffered deliveries back (or finds the channel gone: they come back anyway).
                with contextlib.suppress(*_BROKER_ERRORS, ExceptionGroup):
                    await asyncio.wait_for(iterator.close(), timeout=CLOSE_TIMEOUT_S)
            with contextlib.suppress(*_BROKER_ERRORS):
                await asyncio.wait_for(connection.close(), timeout=CLOSE_TIMEOUT_S)

    async def _dispatch(
        self,
        iterator: aio_pika.abc.AbstractQueueIterator,
        stopping: asyncio.Event,
        lost: asyncio.Future[str],
        lose: Callable[[str], None],
    ) -> None:
        """Hand each delivery to a task of its own: at most `prefetch` in hand, one at a time per message id."""
        in_flight: set[asyncio.Task[None]] = set()
        slots = asyncio.Semaphore(self._policy.concurrency or self._policy.prefetch)
        try:
            while not stopping.is_set():
                await slots.acquire()
                message = await self._next(iterator, stopping, lost)
                if message is None:
                    slots.release()
                    break
                task = asyncio.get_running_loop().create_task(self._process_in_turn(message, stopping, lost, lose))
                task.add_done_callback(lambda _: slots.release())
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
        except asyncio.CancelledError:
            if not _cancelled_by_the_library():
                # Shutdown by cancellation: the deliveries in hand stop too (unacknowledged, they come back).
                for task in in_flight:
                    task.cancel()
            raise
        finally:
            # Every delivery in hand is finished (acknowledged) or handed back before the connection goes.
            if in_flight:
                await asyncio.wait(set(in_flight))

    async def _process_in_turn(
        self,
        message: aio_pika.abc.AbstractIncomingMessage,
        stopping: asyncio.Event,
        lost: asyncio.Future[str],
        lose: Callable[[str], None],
    ) -> None:
        """`_process` after the deliveries of the same message id that came before (the broker's order)."""
        try:
            async with self._turns.turn(message.message_id):
                if lost.done():
                    return  # its channel is gone: the broker delivers it again
                await self._process(message, stopping, lost)
        except _ConsumerLost as exc:
            lose(str(exc))
        except Exception:
            # Not a verdict on the input (`_process` handles the handler's errors): consume again afresh.
            log.exception("consumer_unexpected_error", consumer=self.name, message_id=message.message_id)
            lose("unexpected error while processing a delivery")

    async def _next(
        self, iterator: aio_pika.abc.AbstractQueueIterator, stopping: asyncio.Event, lost: asyncio.Future[str]
    ) -> aio_pika.abc.AbstractIncomingMessage | None:
        """The next delivery; None once `stopping` is set; `ConsumerLost` once the subscription is gone."""
        next_delivery = asyncio.ensure_future(anext(iterator))
        stop_wait = asyncio.ensure_future(stopping.wait())
        waiters: set[asyncio.Future[Any]] = {next_delivery, stop_wait, lost}
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        stop_wait.cancel()
        if lost.done() or not next_delivery.done():
            next_delivery.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration, *_BROKER_ERRORS):
                await next_delivery
            if lost.done():
                raise _ConsumerLost(lost.result())
            return None
        try:
            return next_delivery.result()
        except StopAsyncIteration:
            raise _ConsumerLost("the queue iterator ended") from None

    async def _process(
        self, message: aio_pika.abc.AbstractIncomingMessage, stopping: asyncio.Event, lost: asyncio.Future[str]
    ) -> None:
        delivery = self._convert(message)
        delay = self._policy.retry_delay_s
        while True:
            try:
                result = await self._handle(delivery)
                break
            except TransientFailure as exc:
                if lost.done() or stopping.is_set():
                    log.warning(
                        "consumer_handed_back", consumer=self.name, error=str(exc)[:300], message_id=message.message_id
                    )
                    await self._settle(message.nack(requeue=True), "hand back")
                    return
                log.warning(
                    "consumer_retry",
                    consumer=self.name,
                    error=str(exc)[:300],
                    message_id=message.message_id,
                    retry_in_s=delay,
                )
                await _wait_any(stopping, lost, delay)
                delay = min(delay * 2, self._policy.max_retry_delay_s)
            except Exception:
                # A bug, not a verdict on the input: hand it back; the delivery limit
                # dead-letters it if it keeps failing, and the operator sees it there.
                log.exception("consumer_unexpected_error", consumer=self.name, message_id=message.message_id)
                await _wait_any(stopping, lost, self._policy.retry_delay_s)
                await self._settle(message.nack(requeue=True), "hand back")
                return
        await self._settle(message.ack(), "acknowledge")
        log.info(self._processed_event, **self._summary(result))

    async def _settle(self, operation: Awaitable[None], what: str) -> None:
        """Acknowledge or hand back; a channel gone means the broker redelivers: consume again."""
        try:
            await asyncio.wait_for(operation, timeout=CLOSE_TIMEOUT_S)
        except _BROKER_ERRORS as exc:
            log.warning("consumer_settle_lost", consumer=self.name, action=what, error=repr(exc)[:200])
            raise _ConsumerLost(f"could not {what} a delivery: {exc!r}") from exc
        except asyncio.CancelledError as exc:
            if not _cancelled_by_the_library():
                raise
            log.warning("consumer_settle_lost", consumer=self.name, action=what, error="cancelled by aiormq")
            raise _ConsumerLost(f"could not {what} a delivery: its connection was dropped") from exc


async def _wait(event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout=seconds)


async def _wait_any(stopping: asyncio.Event, lost: asyncio.Future[str], seconds: float) -> None:
    stop_wait = asyncio.ensure_future(stopping.wait())
    waiters: set[asyncio.Future[Any]] = {stop_wait, lost}
    await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    stop_wait.cancel()


def _ingress_delivery(message: aio_pika.abc.AbstractIncomingMessage) -> IngressDelivery:
    return IngressDelivery(
        body=message.body, kind=message.type, user_id=message.user_id, amqp_message_id=message.message_id
    )


def _outcome_summary(outcome: Outcome) -> Mapping[str, object]:
    return {
        "kind": outcome.kind,
        "result": outcome.result,
        "code": outcome.code,
        "message_id": outcome.message_id,
        "sender": outcome.sender,
    }


class IngressConsumer(QueueConsumer[IngressDelivery, Outcome]):
    """Consumes `mla.gateway.ingress`; logs `ingress_processed` for each delivery acknowledged."""

    def __init__(
        self, connector: FailoverConnector, handle: Callable[[IngressDelivery], Awaitable[Outcome]], *, prefetch: int
    ) -> None:
        super().__init__(
            connector,
            name="ingress",
            queue=INGRESS_QUEUE,
            convert=_ingress_delivery,
            handle=handle,
            summary=_outcome_summary,
            processed_event="ingress_processed",
            policy=ConsumerPolicy(prefetch=prefetch),
        )


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


class DeadLetterConsumer(QueueConsumer[DeadDelivery, R]):
    """Consumes `mla.dead`; logs `dead_letter_processed` for each dead letter recorded."""

    def __init__(
        self,
        connector: FailoverConnector,
        handle: Callable[[DeadDelivery], Awaitable[R]],
        summary: Callable[[R], Mapping[str, object]],
    ) -> None:
        super().__init__(
            connector,
            name="dead_letter",
            queue=DEAD_LETTER_QUEUE,
            convert=_dead_delivery,
            handle=handle,
            summary=summary,
            processed_event="dead_letter_processed",
            policy=ConsumerPolicy(prefetch=DEAD_LETTER_PREFETCH, concurrency=1),
        )


@dataclass(frozen=True, slots=True)
class ManagementAccess:
    """Read access to the broker's management HTTP API (only for the operator's queue view)."""

    base_url: str
    username: str
    password: str = field(repr=False)


async def queue_figures(access: ManagementAccess, vhost: str, *, timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """Per queue of `vhost`: messages ready and unacknowledged, consumers, publish and deliver rates."""
    url = f"{access.base_url.rstrip('/')}/api/queues/{quote(vhost, safe='')}"
    # Built here: aiohttp.BasicAuth is deprecated since aiohttp 3.13.
    token = base64.b64encode(f"{access.username}:{access.password}".encode()).decode("ascii")
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session,
            session.get(url, headers={"Authorization": f"Basic {token}"}) as response,
        ):
            if response.status != 200:
                raise ManagementUnavailable(f"the management API answered {response.status} for the queues")
            answer = await response.json()
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise ManagementUnavailable(f"the management API did not answer: {exc!r}"[:300]) from exc
    if not isinstance(answer, list):
        raise ManagementUnavailable("the management API answered something other than a list of queues")
    return sorted((_queue_figure(item) for item in answer if isinstance(item, dict)), key=lambda q: str(q["name"]))


def _queue_figure(item: Mapping[str, Any]) -> dict[str, Any]:
    stats = item.get("message_stats")
    stats = stats if isinstance(stats, dict) else {}

    def rate(name: str) -> float | None:
        details = stats.get(name)
        value = details.get("rate") if isinstance(details, dict) else None
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

    def count(name: str) -> int | None:
        value = item.get(name)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    return {
        "name": str(item.get("name")),
        "type": item.get("type") if isinstance(item.get("type"), str) else None,
        "messages_ready": count("messages_ready"),
        "messages_unacknowledged": count("messages_unacknowledged"),
        "consumers": count("consumers"),
        "publish_rate": rate("publish_details"),
        "deliver_rate": rate("deliver_get_details"),
    }


def endpoints_from_setting(amqp_url: str, *, heartbeat_s: int) -> BrokerEndpoints:
    """The endpoints of `ROGATORY_AMQP_URL` (one URL, or several separated by commas)."""
    return BrokerEndpoints(urls=split_amqp_urls(amqp_url), heartbeat_s=heartbeat_s)


def split_amqp_urls(amqp_url: str) -> tuple[str, ...]:
    """The URLs of a comma-separated list, blanks dropped."""
    return tuple(part.strip() for part in amqp_url.split(",") if part.strip())


def consumers_down(consumers: Sequence[QueueConsumer[Any, Any]]) -> dict[str, float]:
    """Seconds each consumer has not been consuming, by name."""
    return {consumer.name: consumer.down_for() for consumer in consumers}


__all__ = [
    "BrokerEndpoints",
    "ConfirmedPublisher",
    "ConsumerPolicy",
    "DeadDelivery",
    "DeadLetterConsumer",
    "FailoverConnector",
    "IngressConsumer",
    "ManagementAccess",
    "QueueConsumer",
    "consumers_down",
    "endpoints_from_setting",
    "node_of",
    "queue_figures",
    "split_amqp_urls",
]
