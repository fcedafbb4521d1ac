"""Provisioning through the management API on a real RabbitMQ: idempotent, fail-closed, observable.

The network's plan is the directory's view of the broker; running `provision`
again must converge on it without disturbing what is there, and the operator's
numbers (`queue_stats`) must come from the broker itself.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from aio_pika import Message
from aio_pika.exceptions import DeliveryError
from aiormq.exceptions import ChannelAccessRefused
from pamqp.commands import Basic

from deploy.provision.broker import (
    DEFAULT_MAX_QUEUE_BYTES,
    OPERATOR_POLICY_NAME,
    BrokerAdminError,
    ManagementClient,
    ManagementRequestFailed,
    ManagementUnreachable,
    NetworkPlan,
    PlanInvalid,
    TopologyConflict,
    delete_network,
    management_url_from_amqp,
    operator_policy_for,
    permissions_for,
    provision,
    queue_stats,
    revoke_agency,
    topology_for,
)
from protocol.ids import AgencyId
from protocol.topology import (
    DEAD_LETTER_QUEUE,
    DELIVER_EXCHANGE,
    INGRESS_QUEUE,
    inbox_queue,
)

if TYPE_CHECKING:
    from tests.integration.conftest import BrokerNetworkFactory, BrokerSettings, BrokerTestNetwork

pytestmark = pytest.mark.broker

A = AgencyId("BD-MOHA-PSD")
B = AgencyId("LY-MLA-CA")
IDLE = AgencyId("BD-POLICE-CID-HTU")  # in the module network, nobody reads its inbox
LATER = AgencyId("LY-AGO")
STATS_WAIT_SECONDS = 20.0  # quorum queue statistics are emitted every 5 s
TINY_QUEUE_BYTES = 1000  # a few test messages fill it
TEST_BODY_BYTES = 400


async def _snapshot(admin: ManagementClient, plan: NetworkPlan) -> dict[str, Any]:
    """What the broker holds for `plan`, in a form that compares equal when nothing changed."""
    definitions = await admin.get_json(("definitions", plan.vhost), action="export vhost")
    users = {}
    for user in plan.users:
        record = await admin.get_json(("users", user), action="read user")
        permissions = await admin.get_json(("permissions", plan.vhost, user), action="read perms")
        users[user] = {"tags": record["tags"], "permissions": permissions}
    return {
        "queues": sorted(definitions["queues"], key=lambda q: q["name"]),
        "exchanges": sorted(definitions["exchanges"], key=lambda e: e["name"]),
        "bindings": sorted(definitions["bindings"], key=lambda b: (b["source"], b["destination"])),
        "policies": definitions["policies"],
        "operator_policies": await admin.get_json(("operator-policies", plan.vhost), action="read operator policies"),
        "users": users,
    }


async def _queue_once_policed(admin: ManagementClient, vhost: str, name: str) -> dict[str, Any]:
    """The queue's management object, once its statistics name an operator policy (or the wait ends)."""
    async with asyncio.timeout(STATS_WAIT_SECONDS):
        while True:
            queue = await admin.get_json(("queues", vhost, name), action="read queue")
            if queue.get("operator_policy") is not None:
                return dict(queue)
            await asyncio.sleep(0.2)


async def _deliver(network: BrokerTestNetwork, agency: AgencyId, message_id: str) -> None:
    async with await network.connect(network.gateway_user) as connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        exchange = await channel.get_exchange(DELIVER_EXCHANGE, ensure=False)
        message = Message(b"evidence", message_id=message_id, user_id=network.gateway_user)
        await exchange.publish(message, routing_key=agency, mandatory=True)


# --- Idempotence --------------------------------------------------------------


async def test_provision_twice_leaves_the_same_state(
    broker_network: BrokerTestNetwork, broker_admin: ManagementClient
) -> None:
    """Running provision again on a network raises nothing and changes nothing."""
    plan = broker_network.plan
    before = await _snapshot(broker_admin, plan)

    await provision(broker_admin, plan, broker_network.passwords)

    after = await _snapshot(broker_admin, plan)
    assert after == before
    # ...and the state is the plan, not merely stable.
    expected = permissions_for(plan)
    for user, held in after["users"].items():
        assert held["tags"] == []
        assert (held["permissions"]["configure"], held["permissions"]["write"], held["permissions"]["read"]) == (
            expected[user].configure,
            expected[user].write,
            expected[user].read,
        )
    declared = {q["name"]: q["arguments"] for q in after["queues"]}
    assert declared == {q.name: dict(q.arguments) for q in topology_for(plan).queues}
    assert all(q["durable"] for q in after["queues"])
    # Passwords were re-set to the same values: agents keep logging in.
    async with await broker_network.connect(broker_network.user(A)):
        pass


async def test_agency_added_later_gets_user_inbox_binding_and_permissions(
    broker_network_factory: BrokerNetworkFactory,
) -> None:
    """Re-provisioning with a new agency gives it a user, an inbox, a binding and its permissions only."""
    network = await broker_network_factory(agencies=(A, B))
    plan = network.plan
    bigger = NetworkPlan(
        vhost=plan.vhost,
        gateway_user=plan.gateway_user,
        agency_users={**plan.agency_users, LATER: f"{plan.gateway_user.removesuffix('gateway')}{LATER}"},
        delivery_limit=plan.delivery_limit,
    )
    grown = await broker_network_factory(plan=bigger, passwords=network.passwords)

    await _deliver(grown, LATER, "for-the-newcomer")
    async with await grown.connect(grown.user(LATER)) as connection:
        channel = await connection.channel()
        *_, received = await grown.receive_until(channel, inbox_queue(LATER), "for-the-newcomer")
        await received.ack()
        with pytest.raises(ChannelAccessRefused):
            await (await channel.get_queue(inbox_queue(A), ensure=False)).get(fail=False)
    # Existing parties are undisturbed, passwords included.
    async with await grown.connect(grown.user(A)):
        pass


async def test_conflicting_queue_is_reported_not_replaced(
    broker_network_factory: BrokerNetworkFactory, broker_admin: ManagementClient
) -> None:
    """A queue re-declared with other arguments makes provision fail with TopologyConflict, untouched."""
    network = await broker_network_factory()
    vhost = network.plan.vhost
    await broker_admin.delete(("queues", vhost, DEAD_LETTER_QUEUE), action="drop the dead-letter queue")
    await broker_admin.put_json(
        ("queues", vhost, DEAD_LETTER_QUEUE),
        {"durable": True, "arguments": {"x-queue-type": "classic"}},
        action="declare a classic dead-letter queue",
    )

    with pytest.raises(TopologyConflict, match=re.escape(f"queue '{DEAD_LETTER_QUEUE}'")) as caught:
        await provision(broker_admin, network.plan, network.passwords)

    assert caught.value.status == 400
    held = await broker_admin.get_json(("queues", vhost, DEAD_LETTER_QUEUE), action="read queue")
    assert held["type"] == "classic"


async def test_missing_password_fails_before_anything_is_created(
    broker_settings: BrokerSettings, broker_admin: ManagementClient
) -> None:
    """Provision refuses a plan without every password, and creates nothing."""
    plan = NetworkPlan(
        vhost="rogatory-test-never-created",
        gateway_user="rogatory-test-never-created-gateway",
        agency_users={A: "rogatory-test-never-created-a"},
    )
    with pytest.raises(PlanInvalid, match="missing for"):
        await provision(broker_admin, plan, {plan.gateway_user: "only-this-one"})
    assert await broker_admin.get_json(("vhosts", plan.vhost), action="read vhost", missing_ok=True) is None
    assert await broker_admin.get_json(("users", plan.gateway_user), action="read", missing_ok=True) is None


async def test_delete_network_tolerates_parts_already_gone(
    broker_network_factory: BrokerNetworkFactory, broker_admin: ManagementClient
) -> None:
    """delete_network and revoke_agency can be run again on what they already removed."""
    network = await broker_network_factory()
    await revoke_agency(broker_admin, network.plan, A)
    await revoke_agency(broker_admin, network.plan, A)
    await delete_network(broker_admin, network.plan)
    await delete_network(broker_admin, network.plan)
    assert await broker_admin.get_json(("vhosts", network.plan.vhost), action="read", missing_ok=True) is None


async def test_deleting_a_network_removes_its_operator_policy(
    broker_network_factory: BrokerNetworkFactory, broker_admin: ManagementClient
) -> None:
    """delete_network leaves no operator policy of the network behind."""
    network = await broker_network_factory()
    path = ("operator-policies", network.plan.vhost, OPERATOR_POLICY_NAME)
    assert await broker_admin.get_json(path, action="read policy", missing_ok=True) is not None

    await delete_network(broker_admin, network.plan)

    assert await broker_admin.get_json(path, action="read policy", missing_ok=True) is None
    everywhere = await broker_admin.get_json(("operator-policies",), action="list operator policies")
    assert all(policy["vhost"] != network.plan.vhost for policy in everywhere)


async def test_revoking_an_agency_outside_the_plan_is_refused(
    broker_network: BrokerTestNetwork, broker_admin: ManagementClient
) -> None:
    """revoke_agency names the agency it does not know instead of deleting anything."""
    with pytest.raises(PlanInvalid, match="LY-AGO"):
        await revoke_agency(broker_admin, broker_network.plan, LATER)


# --- Limits (operator policy) ----------------------------------------------------


async def test_operator_policy_bounds_the_ingress_and_inboxes(
    broker_network: BrokerTestNetwork, broker_admin: ManagementClient
) -> None:
    """After provisioning, the vhost's operator policy holds the byte and delivery limits and applies to an inbox."""
    plan = broker_network.plan
    held = await broker_admin.get_json(("operator-policies", plan.vhost, OPERATOR_POLICY_NAME), action="read policy")

    assert held["apply-to"] == "queues"
    assert held["definition"] == {"max-length-bytes": DEFAULT_MAX_QUEUE_BYTES, "delivery-limit": plan.delivery_limit}
    assert {key: held[key] for key in ("pattern", "apply-to", "priority", "definition")} == (
        operator_policy_for(plan).body()
    )
    inbox = await _queue_once_policed(broker_admin, plan.vhost, inbox_queue(IDLE))
    assert inbox["operator_policy"] == OPERATOR_POLICY_NAME
    assert inbox["effective_policy_definition"] == held["definition"]
    assert inbox["arguments"]["x-overflow"] == "reject-publish"


async def test_full_inbox_refuses_the_gateways_publish_until_drained(
    broker_network_factory: BrokerNetworkFactory,
) -> None:
    """An inbox at its byte limit nacks the gateway's publish; once the agency drains it, the next one is accepted."""
    first = await broker_network_factory(agencies=(A,))
    network = await broker_network_factory(
        plan=dataclasses.replace(first.plan, max_queue_bytes=TINY_QUEUE_BYTES), passwords=first.passwords
    )
    async with network.settings.management_client() as admin:
        await _queue_once_policed(admin, network.plan.vhost, inbox_queue(A))

    async with await network.connect(network.gateway_user) as gateway:
        channel = await gateway.channel(publisher_confirms=True, on_return_raises=True)
        exchange = await channel.get_exchange(DELIVER_EXCHANGE, ensure=False)

        async def publish(n: int) -> None:
            message = Message(b"x" * TEST_BODY_BYTES, message_id=f"m{n}", user_id=network.gateway_user)
            await exchange.publish(message, routing_key=A, mandatory=True)

        async def refusal(n: int) -> object:
            """The frame refusing publish `n` (a nack, or a return), None if it was confirmed."""
            try:
                await publish(n)
            except DeliveryError as exc:
                return exc.frame
            return None

        # RabbitMQ takes a publish while the queue holds less than the limit: at most one over it.
        most = TINY_QUEUE_BYTES // TEST_BODY_BYTES + 1
        accepted = 0
        while (frame := await refusal(accepted)) is None:
            accepted += 1
            assert accepted <= most, f"{accepted} messages of {TEST_BODY_BYTES} bytes taken under {TINY_QUEUE_BYTES}"
        assert isinstance(frame, Basic.Nack), frame
        assert accepted >= 1

        async with await network.connect(network.user(A)) as agency:
            inbox = await (await agency.channel()).get_queue(inbox_queue(A), ensure=False)
            for _ in range(accepted):
                received = await inbox.get(timeout=5)
                await received.ack()
            assert await inbox.get(fail=False) is None

        await publish(accepted + 1)  # on the same channel: the refusal was not sticky


# --- Observation ----------------------------------------------------------------


async def test_queue_stats_reports_every_queue_with_its_depth(
    broker_network: BrokerTestNetwork, broker_admin: ManagementClient
) -> None:
    """queue_stats lists each queue of the network, quorum, with the broker's message counts."""
    await _deliver(broker_network, IDLE, "waiting-for-an-idle-agency")

    idle_inbox = inbox_queue(IDLE)
    async with asyncio.timeout(STATS_WAIT_SECONDS):
        while True:
            stats = {s.name: s for s in await queue_stats(broker_admin, broker_network.plan.vhost)}
            # Depth and consumer count come from two different emissions of the broker's statistics.
            if stats[idle_inbox].messages_ready == 1 and stats[idle_inbox].consumers is not None:
                break
            await asyncio.sleep(0.2)

    assert set(stats) == {q.name for q in topology_for(broker_network.plan).queues}
    assert {INGRESS_QUEUE, DEAD_LETTER_QUEUE} <= set(stats)
    assert {s.queue_type for s in stats.values()} == {"quorum"}
    assert stats[idle_inbox].messages_unacknowledged == 0
    assert stats[idle_inbox].consumers == 0


# --- The client's failures -------------------------------------------------------


async def test_unreachable_management_api_is_reported_as_unreachable() -> None:
    """No management API: a ManagementUnreachable naming the URL, caused by the HTTP error."""
    async with ManagementClient("http://127.0.0.1:9", "guest", "guest", timeout_seconds=2.0) as admin:
        with pytest.raises(ManagementUnreachable, match=re.escape("http://127.0.0.1:9")) as caught:
            await admin.overview()
    assert isinstance(caught.value.__cause__, aiohttp.ClientError)
    assert isinstance(caught.value, BrokerAdminError)


async def test_wrong_admin_password_is_reported_with_its_status(broker_settings: BrokerSettings) -> None:
    """Bad administrator credentials: ManagementRequestFailed with status 401, password not shown."""
    password = "not-the-password-7d1e"
    async with ManagementClient(broker_settings.management_url, broker_settings.admin_user, password) as admin:
        with pytest.raises(ManagementRequestFailed, match="found 401") as caught:
            await admin.overview()
    assert caught.value.status == 401
    assert password not in str(caught.value)


# --- Pure parts of the module (no broker needed, kept beside their callers) --------


@pytest.mark.parametrize(
    ("amqp_url", "base_url", "username", "password"),
    [
        ("amqp://guest:guest@127.0.0.1:5672/", "http://127.0.0.1:15672", "guest", "guest"),
        ("amqps://ops:s%3Acret@broker.example:5671/net", "https://broker.example:15671", "ops", "s:cret"),
        ("amqp://broker.example", "http://broker.example:15672", "guest", "guest"),
    ],
)
def test_management_endpoint_is_derived_from_the_amqp_url(
    amqp_url: str, base_url: str, username: str, password: str
) -> None:
    """The management endpoint has the AMQP URL's host and credentials, on the management port."""
    endpoint = management_url_from_amqp(amqp_url)
    assert (endpoint.base_url, endpoint.username, endpoint.password) == (base_url, username, password)
    assert "password" not in repr(endpoint)


def test_management_endpoint_parts_can_be_overridden() -> None:
    """Callers can point at another management URL or administrator."""
    endpoint = management_url_from_amqp(
        "amqp://agent:pw@10.0.0.5/", base_url="https://mgmt.example/", username="admin", password="root"
    )
    assert (endpoint.base_url, endpoint.username, endpoint.password) == ("https://mgmt.example", "admin", "root")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"agency_users": {A: "same", B: "same"}}, "shared"),
        ({"gateway_user": "rogatory-a", "agency_users": {A: "rogatory-a"}}, "shared"),
        ({"agency_users": {AgencyId("bd-moha"): "x"}}, "agency id"),
        ({"delivery_limit": 0}, "delivery_limit"),
        ({"max_queue_bytes": 0}, "max_queue_bytes"),
        ({"vhost": ""}, "vhost"),
    ],
    ids=[
        "two agencies one user",
        "gateway shares a user",
        "bad agency id",
        "no delivery limit",
        "no queue bytes",
        "no vhost",
    ],
)
def test_plan_that_would_break_isolation_is_refused(change: dict[str, Any], message: str) -> None:
    """A plan where parties share a broker identity, or that is malformed, cannot be built."""
    fields: dict[str, Any] = {"vhost": "v", "gateway_user": "gw", "agency_users": {A: "a"}} | change
    with pytest.raises(PlanInvalid, match=message):
        NetworkPlan(**fields)


def test_permissions_are_anchored_and_escaped() -> None:
    """Each regex matches exactly its own name: no prefix, no suffix, no '.' wildcard."""
    plan = NetworkPlan(vhost="v", gateway_user="gw", agency_users={AgencyId("LY-MLA"): "short"})
    read = permissions_for(plan)["short"].read
    assert re.search(read, "mla.inbox.LY-MLA")
    for other in ("mla.inbox.LY-MLA-CA", "xmla.inbox.LY-MLA", "mla.inboxXLY-MLA", "mla.inbox.LY-MLAB"):
        assert not re.search(read, other), other
    gateway = permissions_for(plan)["gw"]
    assert re.search(gateway.read, INGRESS_QUEUE)
    assert re.search(gateway.read, DEAD_LETTER_QUEUE)
    assert not re.search(gateway.read, inbox_queue(AgencyId("LY-MLA")))
    assert not re.search(gateway.configure, "anything")


def test_operator_policy_matches_the_ingress_and_inboxes_only() -> None:
    """The limits apply to the reject-publish queues, never to mla.dead (which would drop dead letters)."""
    pattern = operator_policy_for(NetworkPlan(vhost="v", gateway_user="gw", agency_users={A: "a"})).pattern
    assert re.search(pattern, INGRESS_QUEUE)
    assert re.search(pattern, inbox_queue(A))
    for other in (DEAD_LETTER_QUEUE, "mla.inbox.", "xmla.gateway.ingress", "mla.gateway.ingress.x", "mlaXinbox.A"):
        assert not re.search(pattern, other), other
