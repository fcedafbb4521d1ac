"""The broker itself killed and started again mid-stream (a private node: the machine's broker is never touched)."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.faults.conftest import to_thread_ready
from tests.faults.harness import FaultNetwork, Supervisor, Traffic, count, say, settle

pytestmark = [pytest.mark.faults, pytest.mark.broker, pytest.mark.e2e]


async def test_broker_killed_and_restarted_mid_stream_loses_and_doubles_nothing(tmp_path, session, report, own_broker):
    """RabbitMQ SIGKILLed mid-stream and started again 5 s later: confirmed means durable, unconfirmed is
    published again, unacknowledged is delivered again and recognised; nothing lost or doubled."""
    started = time.monotonic()
    network = await FaultNetwork.start(
        tmp_path / "net", amqp_url=own_broker.amqp_url, management_url=own_broker.management_url
    )
    try:
        async with Supervisor(network):
            traffic = Traffic(network, session)
            await traffic.open_cases(3)
            sending = asyncio.create_task(traffic.send(traffic.notes(300), concurrency=8, per_second=40))
            await asyncio.sleep(3)
            await asyncio.to_thread(own_broker.kill)
            say("broker killed")
            await asyncio.sleep(5)
            await to_thread_ready(own_broker)
            say("broker back")
            await sending
            await settle(network, session, traffic)
        figures = await count(
            network, session, traffic, scenario="broker killed and restarted mid-stream", started=started
        )
        report(figures)
        figures.check()
        assert network.restarts == 0, "the services rode through without a restart"
    finally:
        await network.destroy()
