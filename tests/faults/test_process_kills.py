"""Services killed with SIGKILL mid-stream, and a recipient agency offline for a long time."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

import pytest

from tests.faults.conftest import SYSTEM_AMQP_URL, SYSTEM_MANAGEMENT_URL
from tests.faults.harness import RECIPIENT, SENDER, FaultNetwork, Supervisor, Traffic, count, say, settle

pytestmark = [pytest.mark.faults, pytest.mark.broker, pytest.mark.e2e]


def _management() -> str:
    return SYSTEM_MANAGEMENT_URL or f"http://{urlsplit(SYSTEM_AMQP_URL).hostname or '127.0.0.1'}:15672"


async def test_gateway_and_agents_killed_mid_stream_lose_and_double_nothing(tmp_path, session, report):
    """SIGKILL of the gateway (twice), the recipient's agent and the sender's agent while messages flow, then a
    graceful stop (SIGTERM) of the recipient's agent; `dev up` starts each again with its data: nothing lost,
    nothing twice, each event logged once."""
    started = time.monotonic()
    network = await FaultNetwork.start(tmp_path / "net", amqp_url=SYSTEM_AMQP_URL, management_url=_management())
    try:
        async with Supervisor(network):
            traffic = Traffic(network, session)
            await traffic.open_cases(3)
            sending = asyncio.create_task(traffic.send(traffic.notes(300), concurrency=8, per_second=30))
            for pause, victim in ((2.5, "gateway"), (3.0, RECIPIENT), (3.0, SENDER), (3.0, "gateway")):
                await asyncio.sleep(pause)
                network.kill(victim)
            await asyncio.sleep(2.0)
            await network.terminate(RECIPIENT)
            await sending
            await settle(network, session, traffic)
        figures = await count(
            network,
            session,
            traffic,
            scenario="gateway (twice), recipient, sender SIGKILLed, recipient SIGTERMed mid-stream",
            started=started,
        )
        report(figures)
        figures.check()
        assert network.restarts >= 1
    finally:
        await network.destroy()


async def test_recipient_offline_for_long_then_back_receives_everything_once(tmp_path, session, report):
    """The recipient's agent is down while 300 messages are sent and relayed, and 45 s more; once started again
    it receives each exactly once and the senders get every DELIVERY."""
    started = time.monotonic()
    network = await FaultNetwork.start(tmp_path / "net", amqp_url=SYSTEM_AMQP_URL, management_url=_management())
    try:
        traffic = Traffic(network, session)
        await traffic.open_cases(3)
        network.kill(RECIPIENT)
        await traffic.send(traffic.notes(300), concurrency=8)
        waiting = await _relayed(network, session, traffic)
        say(f"recipient offline; {waiting} messages relayed and waiting in its queue")
        await asyncio.sleep(45)
        await network.restart()
        say("recipient back")
        await settle(network, session, traffic)
        figures = await count(network, session, traffic, scenario="recipient offline ~60 s, then back", started=started)
        report(figures)
        figures.check()
        assert waiting >= 250, "most messages waited for the recipient in its queue"
    finally:
        await network.destroy()


async def _relayed(network: FaultNetwork, session, traffic: Traffic, within_s: float = 60.0) -> int:
    """Wait until the gateway has relayed what it was sent (the recipient being away), and say how many."""
    from tests.faults.harness import statuses  # noqa: PLC0415 - kept beside its only use

    deadline = time.monotonic() + within_s
    while True:
        answers = await statuses(network, session, traffic.accepted)
        relayed = sum(int(answer["status"] == "relayed") for answer in answers.values())
        if (
            relayed + sum(answer["status"] in {"delivered", "retrieved"} for answer in answers.values())
            >= len(traffic.accepted)
            or time.monotonic() > deadline
        ):
            return relayed
        await asyncio.sleep(1)
