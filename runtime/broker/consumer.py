"""`QueueConsumer`: consumes one queue, acknowledging each delivery only after its handler's durable writes.

Up to `prefetch` deliveries are in hand at once, in the broker's order for
each message id. It handles what plain aio-pika connections leave to their
user:

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
`runtime.supervision.ConsumerWatchdog` turns into an exit for the supervisor
to restart a wedged process.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

import aio_pika.abc
import structlog

from protocol.topology import BROKER_MAX_MESSAGE_BYTES
from runtime.broker.connection import BROKER_ERRORS, CLOSE_TIMEOUT_S, FailoverConnector, cancelled_by_the_library
from runtime.errors import TransientFailure
from runtime.supervision import KeyedLocks

log = structlog.get_logger("rogatory.broker.consumer")

D = TypeVar("D")
R = TypeVar("R")


ResultT = TypeVar("ResultT", bound=str)


@dataclass(frozen=True, slots=True)
class Handled(Generic[ResultT]):
    """What a handler did with one delivery: the fields of its summary log line and of the metrics' labels."""

    kind: str
    result: ResultT
    code: str | None = None
    message_id: str | None = None
    sender: str | None = None
    batch: Mapping[str, int] | None = None
    """For a delivery of several items (a batch of evidence): how many ended how, logged on its one line."""

    def summary(self) -> Mapping[str, object]:
        """The fields the consumer logs once the delivery is acknowledged."""
        return {
            "kind": self.kind,
            "result": self.result,
            "code": self.code,
            "message_id": self.message_id,
            "sender": self.sender,
            **(self.batch or {}),
        }


class _ConsumerLost(ConnectionError):
    """The consumer's connection, channel or subscription is gone: consume again on a new connection."""


MAX_CONSUMER_BUFFER_BYTES: Final = 1024**3
"""The most a consumer may hold in deliveries received and not yet acknowledged: `prefetch` times
the broker's own message limit (`BROKER_MAX_MESSAGE_BYTES`, which the broker enforces before any
consumer sees a message). The default prefetch of 32 holds at most 256 MiB."""


@dataclass(frozen=True, slots=True)
class ConsumerPolicy:
    """How a consumer paces itself: prefetch, retries in place, reconnects."""

    prefetch: int
    concurrency: int | None = None
    """Deliveries handled at once (None: as many as `prefetch` lets the broker send)."""
    retry_delay_s: float = 1.0
    max_retry_delay_s: float = 10.0
    max_reconnect_delay_s: float = 15.0

    def __post_init__(self) -> None:
        if self.max_buffered_bytes > MAX_CONSUMER_BUFFER_BYTES:
            raise ValueError(
                f"prefetch {self.prefetch} could buffer {self.max_buffered_bytes} bytes of deliveries, "
                f"more than {MAX_CONSUMER_BUFFER_BYTES}"
            )

    @property
    def max_buffered_bytes(self) -> int:
        """The most this consumer holds at once: `prefetch` deliveries of the broker's largest message."""
        return self.prefetch * BROKER_MAX_MESSAGE_BYTES


@dataclass(frozen=True, slots=True)
class ConsumerRole(Generic[D, R]):
    """What one consumer is: its name, its queue, how a delivery becomes the handler's input, what it logs."""

    name: str
    queue: str
    convert: Callable[[aio_pika.abc.AbstractIncomingMessage], D]
    summary: Callable[[R], Mapping[str, object]]
    processed_event: str | None
    """The event logged, with `summary`'s fields, for each delivery acknowledged; `None` for a role whose
    handler writes the delivery's one line itself (the canonical `message_processed`, `runtime.logs`)."""


class QueueConsumer(Generic[D, R]):
    """Consumes one queue, up to `prefetch` deliveries at once, acknowledging each after its `handle` returned."""

    def __init__(
        self,
        connector: FailoverConnector,
        role: ConsumerRole[D, R],
        handle: Callable[[D], Awaitable[R]],
        *,
        policy: ConsumerPolicy,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = role.name
        self._role = role
        self._connector = connector
        self._handle = handle
        self._policy = policy
        self._clock = clock
        self.connected = asyncio.Event()
        self._down_since: float | None = clock()
        self._consumed = False
        self._turns = KeyedLocks()

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
                if not cancelled_by_the_library():
                    raise
                self._mark_down()
                log.warning(
                    "consumer_connection_lost", consumer=self.name, error="cancelled by aiormq", retry_in_s=delay
                )
                await _wait(stopping, delay)
            except (*BROKER_ERRORS, TransientFailure) as exc:
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
            queue = await channel.get_queue(self._role.queue, ensure=False)
            iterator = queue.iterator()
            await iterator.consume()
            self._mark_consuming()
            log.info("consumer_consuming", consumer=self.name, queue=self._role.queue)
            await self._dispatch(iterator, stopping, lost, lose)
        finally:
            self._mark_down()
            if iterator is not None:
                # Hands the buffered deliveries back (or finds the channel gone: they come back anyway).
                with contextlib.suppress(*BROKER_ERRORS, ExceptionGroup):
                    await asyncio.wait_for(iterator.close(), timeout=CLOSE_TIMEOUT_S)
            with contextlib.suppress(*BROKER_ERRORS):
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
            if not cancelled_by_the_library():
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
            async with self._turns.hold(message.message_id):
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
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration, *BROKER_ERRORS):
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
        delivery = self._role.convert(message)
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
        if self._role.processed_event is not None:
            log.info(self._role.processed_event, **self._role.summary(result))

    async def _settle(self, operation: Awaitable[None], what: str) -> None:
        """Acknowledge or hand back; a channel gone means the broker redelivers: consume again."""
        try:
            await asyncio.wait_for(operation, timeout=CLOSE_TIMEOUT_S)
        except BROKER_ERRORS as exc:
            log.warning("consumer_settle_lost", consumer=self.name, action=what, error=repr(exc)[:200])
            raise _ConsumerLost(f"could not {what} a delivery: {exc!r}") from exc
        except asyncio.CancelledError as exc:
            if not cancelled_by_the_library():
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


def consumers_down(consumers: Sequence[QueueConsumer[Any, Any]]) -> dict[str, float]:
    """Seconds each consumer has not been consuming, by name."""
    return {consumer.name: consumer.down_for() for consumer in consumers}


__all__ = ["ConsumerPolicy", "ConsumerRole", "Handled", "QueueConsumer", "consumers_down"]
