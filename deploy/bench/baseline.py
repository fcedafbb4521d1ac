"""The raw broker: the single hop every exchange pays at least, measured beside the whole path.

On the same broker, in the same run, over the transport the services use:
persistent messages of a scenario's sealed size through one quorum queue,
with publisher confirms and manual acks (aio-pika), in a vhost of its own
that is deleted afterwards.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import aio_pika
import aio_pika.abc

from deploy.bench.processes import broker_cpu_seconds, broker_cpu_spent, broker_pids
from deploy.bench.scenarios import CONCURRENCY
from deploy.provision.broker import ManagementClient, management_url_from_amqp

RAW_MIN_MESSAGES: Final = 2000
"""The baseline sends at least this many messages, so that its rate is not a start-up figure."""


@dataclass(frozen=True, slots=True)
class Baseline:
    """The raw broker: persistent, confirmed, acked, one quorum queue."""

    sealed_bytes: int
    messages: int
    per_s: float
    transport: str
    broker_cpu_ms_per_message: float | None = None
    """CPU of the local RabbitMQ node per message of the baseline (one hop); None when the broker is not local."""


def baseline_for(baselines: Sequence[Baseline], sealed_bytes: int) -> Baseline | None:
    """The baseline of the size nearest `sealed_bytes`."""
    return min(baselines, key=lambda b: abs(b.sealed_bytes - sealed_bytes), default=None)


def _service_transport(amqp_url: str) -> tuple[str, str]:
    """The broker URL as the services use it (AMQPS when the machine's broker has TLS), and its name."""
    try:
        from deploy.provision.tls import TlsError, machine_broker_tls, service_amqp_url  # noqa: PLC0415 - optional TLS
    except ImportError:
        return amqp_url, "amqp"
    try:
        converted = service_amqp_url(amqp_url, machine_broker_tls(os.environ))
    except TlsError:
        return amqp_url, "amqp"
    return converted, converted.split("://", 1)[0]


async def raw_broker(amqp_url: str, management_url: str | None, count: int, size: int) -> Baseline:
    """Persistent, confirmed, manually acked messages through one quorum queue."""
    vhost = f"rogatory-bench-raw-{secrets.token_hex(4)}"
    endpoint = management_url_from_amqp(amqp_url, base_url=management_url)
    url, transport = _service_transport(amqp_url)
    async with ManagementClient.from_endpoint(endpoint) as admin:
        await admin.put_json(("vhosts", vhost), {}, action="create the baseline vhost")
        await admin.put_json(
            ("permissions", vhost, endpoint.username),
            {"configure": ".*", "write": ".*", "read": ".*"},
            action="grant the baseline vhost",
        )
        try:
            # One connection to publish and one to consume, as the services do.
            publisher_connection = await aio_pika.connect(_with_vhost(url, vhost))
            consumer_connection = await aio_pika.connect(_with_vhost(url, vhost))
            node_pids = broker_pids(amqp_url)
            broker_cpu_before = broker_cpu_seconds(node_pids)
            try:
                rate = await _raw_rate(publisher_connection, consumer_connection, count, size)
                broker_cpu = broker_cpu_spent(broker_cpu_before)
            finally:
                await publisher_connection.close()
                await consumer_connection.close()
        finally:
            await admin.delete(("vhosts", vhost), action="delete the baseline vhost", missing_ok=True)
    return Baseline(
        sealed_bytes=size,
        messages=count,
        per_s=round(rate, 1),
        transport=transport,
        broker_cpu_ms_per_message=round(1000 * broker_cpu / count, 3) if node_pids else None,
    )


def _with_vhost(amqp_url: str, vhost: str) -> str:
    scheme, rest = amqp_url.split("://", 1)
    authority, _, tail = rest.partition("/")
    query = tail.partition("?")[2]
    return f"{scheme}://{authority}/{vhost}" + (f"?{query}" if query else "")


async def _raw_rate(
    publisher_connection: aio_pika.abc.AbstractConnection,
    consumer_connection: aio_pika.abc.AbstractConnection,
    count: int,
    size: int,
) -> float:
    publish_channel = await publisher_connection.channel(publisher_confirms=True)
    queue = await publish_channel.declare_queue("bench.raw", durable=True, arguments={"x-queue-type": "quorum"})
    consume_channel = await consumer_connection.channel()
    await consume_channel.set_qos(prefetch_count=CONCURRENCY)
    consume_queue = await consume_channel.get_queue("bench.raw", ensure=False)
    body = secrets.token_bytes(size)
    received = 0
    finished = asyncio.Event()

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        nonlocal received
        await message.ack()
        received += 1
        if received == count:
            finished.set()

    await consume_queue.consume(on_message)
    gate = asyncio.Semaphore(CONCURRENCY)

    async def publish() -> None:
        async with gate:
            await publish_channel.default_exchange.publish(
                aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, message_id=str(uuid.uuid4())),
                routing_key=queue.name,
            )

    started = time.perf_counter()
    await asyncio.gather(*(publish() for _ in range(count)))
    await asyncio.wait_for(finished.wait(), timeout=max(60.0, count / 10))
    return count / (time.perf_counter() - started)


__all__ = ["RAW_MIN_MESSAGES", "Baseline", "baseline_for", "raw_broker"]
