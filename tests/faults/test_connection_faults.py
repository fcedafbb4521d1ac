"""Connections between the services and the broker cut or frozen mid-stream, through a TCP proxy."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

import pytest

from tests.faults.conftest import SYSTEM_AMQP_URL, SYSTEM_MANAGEMENT_URL
from tests.faults.harness import FaultNetwork, Supervisor, Traffic, count, say, settle
from tests.faults.proxy import FaultProxy

pytestmark = [pytest.mark.faults, pytest.mark.broker, pytest.mark.e2e]


def _proxy_to_system_broker() -> FaultProxy:
    broker = urlsplit(SYSTEM_AMQP_URL)
    return FaultProxy(broker.hostname or "127.0.0.1", broker.port or 5672).start()


def _through(proxy: FaultProxy) -> str:
    broker = urlsplit(SYSTEM_AMQP_URL)
    return f"amqp://{broker.username or 'guest'}:{broker.password or 'guest'}@127.0.0.1:{proxy.port}/"


def _management() -> str:
    return SYSTEM_MANAGEMENT_URL or f"http://{urlsplit(SYSTEM_AMQP_URL).hostname or '127.0.0.1'}:15672"


async def test_connections_cut_mid_stream_lose_and_double_nothing(tmp_path, session, report):
    """Every broker connection reset twice mid-stream: consumers come back by themselves, nothing lost or doubled."""
    proxy = _proxy_to_system_broker()
    started = time.monotonic()
    network = await FaultNetwork.start(tmp_path / "net", amqp_url=_through(proxy), management_url=_management())
    try:
        async with Supervisor(network):
            traffic = Traffic(network, session)
            await traffic.open_cases(3)
            sending = asyncio.create_task(traffic.send(traffic.notes(300), concurrency=8, per_second=40))
            for pause in (3.0, 4.0):
                await asyncio.sleep(pause)
                say(f"cut {proxy.cut()} connections")
            await sending
            await settle(network, session, traffic)
        figures = await count(network, session, traffic, scenario="connections cut twice mid-stream", started=started)
        report(figures)
        figures.check()
        assert network.restarts == 0, "the services rode through without a restart"
    finally:
        await network.destroy()
        proxy.stop()


async def test_frozen_connections_are_detected_and_wedged_services_restart(tmp_path, session, report):
    """A black hole for 40 s mid-stream: heartbeats (4 s) drop the dead connections, the watchdog (15 s) ends the
    processes that cannot consume, `dev up` starts them again, and nothing is lost or doubled."""
    proxy = _proxy_to_system_broker()
    started = time.monotonic()
    network = await FaultNetwork.start(
        tmp_path / "net",
        amqp_url=_through(proxy),
        management_url=_management(),
        settings={"ROGATORY_WATCHDOG_S": "15", "ROGATORY_AMQP_HEARTBEAT_S": "4"},
    )
    try:
        async with Supervisor(network):
            traffic = Traffic(network, session)
            await traffic.open_cases(2)
            sending = asyncio.create_task(traffic.send(traffic.notes(200), concurrency=8, per_second=40))
            await asyncio.sleep(2.5)
            proxy.freeze()
            say("froze every connection")
            await asyncio.sleep(40)
            exited = [service for service in network.services() if not network.alive(service)]
            say(f"resume; exited meanwhile: {exited}")
            proxy.resume()
            await sending
            await settle(network, session, traffic)
        figures = await count(network, session, traffic, scenario="connections frozen 40 s mid-stream", started=started)
        report(figures)
        figures.check()
        assert network.restarts >= 1, "the watchdog ended the wedged processes and dev up started them again"
    finally:
        await network.destroy()
        proxy.stop()
