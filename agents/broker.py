"""An agent's broker roles: `SubmitPublisher` with its `OutboxRelay`, and `InboxConsumer`.

The agent declares nothing and may do nothing but publish to `mla.submit`
and read its own inbox: the broker enforces it. Every publish carries the
agency's broker user as `user_id` (RabbitMQ refuses any other), is
persistent, mandatory and confirmed; a return (no ingress bound) or a nack
is a failure like a lost connection. A submission leaves the outbox as
`queued` only once the broker confirmed it; until then it is published
again, with the same bytes and message id, which the gateway recognises
(a lost confirm costs a duplicate the gateway drops, never a loss).

Connections go through a `FailoverConnector`: one broker, or the nodes of a
cluster (`ROGATORY_AMQP_URL` lists them, comma-separated), tried in order
from the one after the last used; AMQP heartbeats drop a connection that
froze. Consuming the inbox (`QueueConsumer`, up to `prefetch` deliveries at
once, in the broker's order for each message id) acks
only after the durable write, retries a transient failure in place while
holding the delivery (every return counts toward the queue's delivery
limit), and consumes again on a new connection whenever the connection, the
channel or the subscription is lost or an acknowledgement could not be sent
(the broker redelivers; the receiver recognises the duplicate). Each
consumer says since when it has been down (`down_for`), which
`agents.watchdog` turns into an exit for the supervisor.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Generic, TypeVar
from urllib.parse import unquote, urlsplit

import aio_pika
import aio_pika.abc
import aio_pika.exceptions
import structlog

from agents.receiving import InboxDelivery, Received
from agents.status import MessageStatus
from agents.store import AgentStore, OutboxRecord
from protocol.encoding import format_timestamp, parse_timestamp
from protocol.topology import KIND_EVIDENCE, KIND_SEALED_MESSAGE, SUBMIT_EXCHANGE
from runtime.errors import BrokerUnavailable, TransientFailure

log = structlog.get_logger("rogatory.agent.broker")

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
                    client_properties={"connection_name": f"rogatory agent {role}"},
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


class SubmitPublisher:
    """Publishes to `mla.submit` under this agency's broker user, waiting for confirms."""

    def __init__(self, connector: FailoverConnector, *, routing_key: str, confirm_timeout: float = 30.0) -> None:
        self._connector = connector
        self._user = connector.endpoints.broker_user
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
                self._connection = await self._connector.connect("publisher")
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
                await asyncio.wait_for(connection.close(), timeout=CLOSE_TIMEOUT_S)

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
            async with self._lock:
                await self._drop()
            raise BrokerUnavailable(f"publish not confirmed: {exc!r}") from exc
        except asyncio.CancelledError as exc:
            if not _cancelled_by_the_library():
                raise
            async with self._lock:
                await self._drop()
            raise BrokerUnavailable("publish not confirmed: its connection was dropped") from exc

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
        """Publish until `stopping` is set, with a capped backoff while the broker (or the disk) is away."""
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
        """Publish everything pending; raise `TransientFailure` if the broker is away.

        Each batch is one confirm window: every publish in flight at once, each
        awaited for its own confirm; what was confirmed is then marked (or
        deleted) in one transaction. A submission is marked published only
        after its own confirm.
        """
        while True:
            queued = await self._store.queued()
            evidence = await self._store.pending_evidence()
            if not queued and not evidence:
                return
            sendable = await self._expire(queued)
            outcomes = await asyncio.gather(
                *(
                    self._publisher.publish(body=record.sealed, kind=KIND_SEALED_MESSAGE, message_id=record.message_id)
                    for record in sendable
                ),
                *(
                    self._publisher.publish(body=item.body, kind=KIND_EVIDENCE, message_id=item.message_id)
                    for item in evidence
                ),
                return_exceptions=True,
            )
            await self._settle(
                [record for record, outcome in zip(sendable, outcomes, strict=False) if outcome is None],
                [
                    item.evidence_out_id
                    for item, outcome in zip(evidence, outcomes[len(sendable) :], strict=True)
                    if outcome is None
                ],
            )
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome

    async def _expire(self, queued: list[OutboxRecord]) -> list[OutboxRecord]:
        """Mark the submissions that expired unsent; the others, still to be published."""
        now = self._clock()
        expired = [record for record in queued if now >= parse_timestamp(record.expires_at)]
        if expired:
            async with self._store.transaction() as tx:
                for record in expired:
                    await tx.set_status(record.message_id, MessageStatus.EXPIRED, "EXPIRED", format_timestamp(now))
            for record in expired:
                log.warning("outbox_expired_unsent", message_id=record.message_id)
        return [record for record in queued if now < parse_timestamp(record.expires_at)]

    async def _settle(self, published: list[OutboxRecord], sent_evidence: list[int]) -> None:
        """Mark the confirmed submissions published and forget the confirmed evidence, in one transaction."""
        if published or sent_evidence:
            async with self._store.transaction() as tx:
                at = format_timestamp(self._clock())
                for record in published:
                    await tx.mark_published(record.message_id, at)
                await tx.delete_pending_evidence(sent_evidence)


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


def _inbox_delivery(message: aio_pika.abc.AbstractIncomingMessage) -> InboxDelivery:
    return InboxDelivery(body=message.body, kind=message.type, user_id=message.user_id)


def _received_summary(received: Received) -> Mapping[str, object]:
    return {
        "kind": received.kind,
        "result": received.result,
        "code": received.code,
        "message_id": received.message_id,
        "sender": received.sender,
    }


class InboxConsumer(QueueConsumer[InboxDelivery, Received]):
    """Consumes this agency's inbox queue; logs `inbox_processed` for each delivery acknowledged."""

    def __init__(
        self,
        connector: FailoverConnector,
        queue_name: str,
        handle: Callable[[InboxDelivery], Awaitable[Received]],
        *,
        prefetch: int,
    ) -> None:
        super().__init__(
            connector,
            name="inbox",
            queue=queue_name,
            convert=_inbox_delivery,
            handle=handle,
            summary=_received_summary,
            processed_event="inbox_processed",
            policy=ConsumerPolicy(prefetch=prefetch),
        )


def endpoints_from_setting(amqp_url: str, *, heartbeat_s: int) -> BrokerEndpoints:
    """The endpoints of `ROGATORY_AMQP_URL` (one URL, or several separated by commas)."""
    urls = tuple(part.strip() for part in amqp_url.split(",") if part.strip())
    return BrokerEndpoints(urls=urls, heartbeat_s=heartbeat_s)


__all__ = [
    "BrokerEndpoints",
    "ConsumerPolicy",
    "FailoverConnector",
    "InboxConsumer",
    "OutboxRelay",
    "QueueConsumer",
    "SubmitPublisher",
    "endpoints_from_setting",
    "node_of",
]
