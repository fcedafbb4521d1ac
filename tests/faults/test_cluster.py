"""A three-node RabbitMQ cluster (private nodes, started by the test) losing one node, then another."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from deploy.provision.broker import ManagementClient, ManagementUnreachable
from protocol.ids import AgencyId
from protocol.topology import INGRESS_QUEUE, inbox_queue
from tests.faults.conftest import to_thread_ready
from tests.faults.harness import RECIPIENT, FaultNetwork, Supervisor, Traffic, count, say, settle
from tests.support.rabbitnode import RabbitCluster, RabbitNode

pytestmark = [pytest.mark.faults, pytest.mark.cluster, pytest.mark.broker, pytest.mark.e2e]


async def _queues(cluster: RabbitCluster, vhost: str) -> list[dict[str, Any]]:
    """The vhost's queues with their members and leader, from any node that answers."""
    for node in cluster.nodes:
        if not node.running:
            continue
        try:
            async with ManagementClient(node.management_url, "guest", "guest") as admin:
                answer = await admin.get_json(("queues", vhost), action="list queues")
        except ManagementUnreachable:
            continue
        assert isinstance(answer, list)
        return answer
    raise AssertionError("no node's management API answered")


def _node_named(cluster: RabbitCluster, name: str) -> RabbitNode:
    return next(node for node in cluster.nodes if node.spec.node == name)


async def _kill_and_return(cluster: RabbitCluster, node: RabbitNode, *, down_s: float) -> None:
    await asyncio.to_thread(node.kill)
    say(f"killed {node.spec.node}")
    await asyncio.sleep(down_s)
    await to_thread_ready(node)
    await asyncio.to_thread(cluster.wait_clustered)
    say(f"{node.spec.node} is back in the cluster")


async def test_cluster_loses_a_node_then_another_and_nothing_is_lost(tmp_path, session, report, own_cluster):
    """Queues replicated on all three nodes; the node leading the ingress queue is killed mid-stream, and once
    it is back the one leading the recipient's inbox: services fail over, nothing lost or doubled."""
    started = time.monotonic()
    network = await FaultNetwork.start(
        tmp_path / "net", amqp_url=own_cluster.amqp_urls, management_url=own_cluster.management_url
    )
    vhost = network.stack["network"]["vhost"]
    try:
        queues = await _queues(own_cluster, vhost)
        assert queues, "the network's queues exist"
        for queue in queues:
            assert len(queue.get("members", [])) == 3, f"{queue['name']} is replicated on all three nodes"
        async with Supervisor(network):
            traffic = Traffic(network, session)
            await traffic.open_cases(3)
            sending = asyncio.create_task(traffic.send(traffic.notes(300), concurrency=8, per_second=30))
            await asyncio.sleep(3)
            leaders = {queue["name"]: str(queue.get("leader")) for queue in await _queues(own_cluster, vhost)}
            first = _node_named(own_cluster, leaders[INGRESS_QUEUE])
            await _kill_and_return(own_cluster, first, down_s=5)
            leaders = {queue["name"]: str(queue.get("leader")) for queue in await _queues(own_cluster, vhost)}
            inbox_leader = leaders[inbox_queue(AgencyId(RECIPIENT))]
            second = (
                _node_named(own_cluster, inbox_leader)
                if inbox_leader != first.spec.node
                else next(node for node in own_cluster.nodes if node is not first)
            )
            await _kill_and_return(own_cluster, second, down_s=5)
            await sending
            await settle(network, session, traffic)
        figures = await count(
            network,
            session,
            traffic,
            scenario="3-node cluster: ingress leader killed, then inbox leader",
            started=started,
        )
        report(figures)
        figures.check()
        assert network.restarts == 0, "the services failed over without a restart"
    finally:
        await network.destroy()
