"""A consumer handles deliveries concurrently, yet those of one message id one after the other, in the
broker's order, and acknowledges each only after its own handler returned (real RabbitMQ)."""

from __future__ import annotations

import asyncio
from urllib.parse import quote

import aio_pika
import pytest

from protocol.ids import AgencyId
from protocol.topology import DELIVER_EXCHANGE, KIND_EVIDENCE, inbox_queue
from runtime.broker import BrokerEndpoints, ConsumerPolicy, ConsumerRole, FailoverConnector, QueueConsumer
from tests.integration.conftest import BrokerTestNetwork

pytestmark = pytest.mark.broker

AGENCY = AgencyId("LY-MLA-CA")
KEYS = ("message-a", "message-b", "message-c")
PER_KEY = 4


def _url(network: BrokerTestNetwork, user: str) -> str:
    settings = network.settings
    return (
        f"amqp://{quote(user, safe='')}:{quote(network.passwords[user], safe='')}@"
        f"{settings.amqp_host}:{settings.amqp_port}/{quote(network.plan.vhost, safe='')}"
    )


async def test_deliveries_of_one_message_id_are_handled_in_order_and_others_concurrently(
    broker_network: BrokerTestNetwork,
):
    """Interleaved deliveries of three message ids: each id's in publish order, never two of one id at once,
    several ids at once, and every delivery acknowledged (the queue is empty afterwards)."""
    async with await broker_network.connect(broker_network.gateway_user) as connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        exchange = await channel.get_exchange(DELIVER_EXCHANGE, ensure=False)
        for index in range(PER_KEY):
            for key in KEYS:
                message = aio_pika.Message(
                    f"{key}/{index}".encode(), message_id=key, user_id=broker_network.gateway_user, type=KIND_EVIDENCE
                )
                await exchange.publish(message, routing_key=AGENCY, mandatory=True)

    handled: dict[str, list[str]] = {key: [] for key in KEYS}
    busy: set[str] = set()
    overlaps: list[str] = []
    most_at_once = 0
    done = asyncio.Event()
    stopping = asyncio.Event()

    async def handle(delivery: tuple[str, str]) -> str:
        nonlocal most_at_once
        key, body = delivery
        if key in busy:
            overlaps.append(body)
        busy.add(key)
        most_at_once = max(most_at_once, len(busy))
        await asyncio.sleep(0.05)
        busy.discard(key)
        handled[key].append(body)
        if sum(len(bodies) for bodies in handled.values()) == len(KEYS) * PER_KEY:
            done.set()
        return body

    consumer: QueueConsumer[tuple[str, str], str] = QueueConsumer(
        FailoverConnector(BrokerEndpoints(urls=(_url(broker_network, broker_network.user(AGENCY)),)), service="test"),
        ConsumerRole(
            name="test",
            queue=inbox_queue(AGENCY),
            convert=lambda message: (str(message.message_id), message.body.decode()),
            summary=lambda body: {"body": body},
            processed_event="test_processed",
        ),
        handle,
        policy=ConsumerPolicy(prefetch=16),
    )
    running = asyncio.create_task(consumer.run(stopping))
    try:
        await asyncio.wait_for(done.wait(), timeout=30)
    finally:
        stopping.set()
        await asyncio.wait_for(running, timeout=30)

    assert handled == {key: [f"{key}/{index}" for index in range(PER_KEY)] for key in KEYS}
    assert overlaps == []
    assert most_at_once > 1
    async with await broker_network.connect(broker_network.user(AGENCY)) as connection:
        channel = await connection.channel()
        queue = await channel.get_queue(inbox_queue(AGENCY), ensure=False)
        assert await queue.get(fail=False) is None
