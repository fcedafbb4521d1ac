"""The soak: tens of thousands of messages through a three-node cluster while things keep breaking.

Opt-in (`ROGATORY_SOAK=1`; `ROGATORY_SOAK_MESSAGES`, default 20000;
`ROGATORY_SOAK_SEED` to replay a run). While the stream runs, every 10-40 s
one of these happens at random: the gateway, the sender's or the
recipient's agent is SIGKILLed (the supervisor starts it again with `dev
up`), or a broker node is SIGKILLed and started again 3-10 s later. The
figures are the same as the default suite's, and so is the verdict.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import time

import pytest

from tests.faults.conftest import to_thread_ready
from tests.faults.harness import RECIPIENT, SENDER, FaultNetwork, Supervisor, Traffic, count, say, settle
from tests.support.rabbitnode import RabbitCluster

pytestmark = [
    pytest.mark.soak,
    pytest.mark.faults,
    pytest.mark.cluster,
    pytest.mark.broker,
    pytest.mark.e2e,
    pytest.mark.skipif(os.environ.get("ROGATORY_SOAK") != "1", reason="the soak is opt-in: ROGATORY_SOAK=1"),
]

MESSAGES = int(os.environ.get("ROGATORY_SOAK_MESSAGES", "20000"))
SEED = int(os.environ.get("ROGATORY_SOAK_SEED", str(int(time.time()))))
VICTIMS = ("gateway", SENDER, RECIPIENT, "broker node")


async def _break_things(
    network: FaultNetwork, cluster: RabbitCluster, rng: random.Random, stop: asyncio.Event, log: list[str]
) -> None:
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), timeout=rng.uniform(10, 40))
        except TimeoutError:
            pass
        else:
            return
        victim = rng.choice(VICTIMS)
        if victim == "broker node":
            node = rng.choice(cluster.nodes)
            await asyncio.to_thread(node.kill)
            down = rng.uniform(3, 10)
            say(f"soak: killed broker node {node.spec.node} for {down:.0f} s")
            await asyncio.sleep(down)
            await to_thread_ready(node)
            await asyncio.to_thread(cluster.wait_clustered)
            log.append(f"node {node.spec.name}")
        elif network.alive(victim):
            network.kill(victim)
            log.append(victim)


async def test_soak_with_random_kills_loses_and_doubles_nothing(tmp_path, session, report, own_cluster):
    """Tens of thousands of messages, random SIGKILLs of services and broker nodes: nothing lost or doubled."""
    rng = random.Random(SEED)  # noqa: S311 - a replayable schedule of faults, not a secret
    say(f"soak: {MESSAGES} messages, seed {SEED}")
    started = time.monotonic()
    network = await FaultNetwork.start(
        tmp_path / "net", amqp_url=own_cluster.amqp_urls, management_url=own_cluster.management_url
    )
    faults: list[str] = []
    try:
        async with Supervisor(network):
            traffic = Traffic(network, session)
            await traffic.open_cases(max(1, MESSAGES // 100))
            stop = asyncio.Event()
            breaker = asyncio.create_task(_break_things(network, own_cluster, rng, stop, faults))

            async def progress() -> None:
                while not stop.is_set():
                    await asyncio.sleep(60)
                    say(f"soak: {len(traffic.accepted)} accepted, faults so far: {len(faults)}")

            reporter = asyncio.create_task(progress())
            try:
                for offset in range(0, MESSAGES, 1000):
                    await traffic.send(traffic.notes(min(1000, MESSAGES - offset)), concurrency=8, per_second=20)
            finally:
                stop.set()
                await breaker
                reporter.cancel()
            await settle(network, session, traffic, within_s=3600)
        figures = await count(
            network,
            session,
            traffic,
            scenario=f"soak: {MESSAGES} messages, {len(faults)} random kills",
            started=started,
        )
        figures = dataclasses.replace(figures, notes=(*figures.notes, f"seed {SEED}", f"kills: {', '.join(faults)}"))
        report(figures)
        figures.check()
    finally:
        await network.destroy()
