"""The broker refuses a message larger than the protocol allows, before anyone buffers it (SECURITY.md, finding 7)."""

from __future__ import annotations

import uuid

import aio_pika
import pytest
from aiormq.exceptions import AMQPError

from protocol.limits import DEFAULT_LIMITS
from protocol.topology import BROKER_MAX_MESSAGE_BYTES
from runtime.broker.consumer import ConsumerPolicy
from tests.integration.conftest import BrokerSettings

pytestmark = pytest.mark.broker


async def test_a_publish_over_the_broker_limit_closes_the_channel_and_the_next_message_flows(
    broker_settings: BrokerSettings,
) -> None:
    """A message of `BROKER_MAX_MESSAGE_BYTES` + 1 is refused by the real broker (the channel closes);
    one just over the protocol's own limit still passes (the gateway refuses and audits it), and the next
    good message flows on a new channel."""
    url = (
        f"amqp://{broker_settings.admin_user}:{broker_settings.admin_password}"
        f"@{broker_settings.amqp_host}:{broker_settings.amqp_port}/"
    )
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue(f"rogatory-test-limits-{uuid.uuid4().hex}", exclusive=True)

        async def publish_too_large() -> None:
            await channel.default_exchange.publish(
                aio_pika.Message(b"x" * (BROKER_MAX_MESSAGE_BYTES + 1)), routing_key=queue.name
            )

        with pytest.raises((AMQPError, aio_pika.exceptions.ChannelInvalidStateError)):
            await publish_too_large()
        assert channel.is_closed, "the broker closed the publisher's channel"

        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue(f"rogatory-test-limits-{uuid.uuid4().hex}", exclusive=True)
        just_over_the_protocol = b"y" * (DEFAULT_LIMITS.max_sealed_bytes + 1)
        await channel.default_exchange.publish(aio_pika.Message(just_over_the_protocol), routing_key=queue.name)
        await channel.default_exchange.publish(aio_pika.Message(b"good"), routing_key=queue.name)
        first = await queue.get(timeout=10)
        second = await queue.get(timeout=10)
        assert (len(first.body), second.body) == (len(just_over_the_protocol), b"good")
        await first.ack()
        await second.ack()
    finally:
        await connection.close()


def test_what_a_consumer_buffers_is_bounded_by_prefetch_times_the_broker_limit() -> None:
    """A consumer holds at most `prefetch` deliveries, each at most the broker's limit: the default
    prefetch buffers at most 256 MiB, and a prefetch that would buffer more than 1 GiB is refused."""
    assert ConsumerPolicy(prefetch=32).max_buffered_bytes == 32 * BROKER_MAX_MESSAGE_BYTES <= 256 * 1024**2
    with pytest.raises(ValueError, match="buffer"):
        ConsumerPolicy(prefetch=1024)
