"""Directory changes go live everywhere: the gateway pushes each new version, agents verify and apply it.

The gateway's side is its real directory wiring (`gateway.service`): the
holder, the watch over its file, the outgoing relay publishing on a real
RabbitMQ network, and `GET /v1/directory` served by `gateway.directory_api`.
The agent's side is its real wiring (`agents.service`): a watch over its OWN
file (never the gateway's), the receiver behind a real inbox consumer, and
the poll of the gateway's HTTP API. Nothing reaches the agent but by the
exchange or that poll.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import test_utils, web
from structlog.testing import capture_logs

from agents.cases import CaseBook
from agents.directory_feed import gateway_directory_source
from agents.held_directory import HELD_FILE, remember_directory
from agents.receiving import InboxDelivery, Receiver, ReceiverKeys
from agents.store import AgentStore
from agents.transport import inbox_consumer
from gateway.auditlog import AuditLog
from gateway.directory import DirectoryHolder
from gateway.directory_api import VERSION_HEADER, DirectoryApi
from gateway.outgoing import OutgoingRelay
from gateway.store import GatewayStore
from gateway.transport import deliver_publisher
from protocol.directory import Directory
from protocol.encoding import pae
from protocol.errors import ErrorCode
from protocol.keys import SigningPrivateKey
from protocol.limits import DEFAULT_LIMITS
from protocol.signing import SignedStatement
from protocol.storage import StorageKey
from protocol.topology import KIND_DIRECTORY, KIND_SEALED_MESSAGE, inbox_queue
from runtime.broker import FailoverConnector, service_endpoints
from runtime.directory import DirectoryWatch
from tests.integration.conftest import BrokerNetworkFactory, BrokerTestNetwork
from tests.security.test_directory_reload import bd_message, revoking_bd, sign, write
from tests.support.network import LY, NOW, LocalNetwork

INTERVAL_S = 0.2
"""`ROGATORY_DIRECTORY_RELOAD_S` of these tests, at the gateway and at the agent."""
PUSH_BOUND_S = INTERVAL_S + 1.0 + 2.0
"""The push's bound: the gateway's look at its file, the relay's poll (1 s), and the broker's delivery, with room."""
POLL_BOUND_S = 2 * INTERVAL_S + 2.0
"""The poll's bound: the gateway's look at its file, then the agent's poll of `GET /v1/directory`, with room."""


def amqp_url(network: BrokerTestNetwork, user: str) -> str:
    settings = network.settings
    credentials = f"{quote(user, safe='')}:{quote(network.passwords[user], safe='')}"
    return f"amqp://{credentials}@{settings.amqp_host}:{settings.amqp_port}/{quote(network.plan.vhost, safe='')}"


async def within(bound_s: float, condition: Callable[[], bool]) -> None:
    """Wait until `condition` holds, failing after `bound_s`."""
    async with asyncio.timeout(bound_s):
        while not condition():
            await asyncio.sleep(0.02)


@dataclass
class Site:
    """The hub (gateway: holder, watch, relay, HTTP) and LY's agent (watch, receiver, inbox consumer)."""

    net: LocalNetwork
    broker: BrokerTestNetwork
    gateway_file: Path
    gateway_watch: DirectoryWatch
    agent_file: Path
    agent_dir: Path
    agent_watch: DirectoryWatch
    receiver: Receiver
    gateway_http: test_utils.TestServer
    run: Callable[[str, Callable[[asyncio.Event], Awaitable[None]]], None]

    async def bd_message_at_ly(self) -> tuple[str, str | None]:
        delivery = InboxDelivery(bd_message(self.net), KIND_SEALED_MESSAGE, self.broker.gateway_user)
        received = await self.receiver.handle(delivery)
        return str(received.result), received.code


@contextlib.asynccontextmanager
async def site(
    tmp_path: Path, broker: BrokerTestNetwork, *, agent_online: bool = True, poll: bool = False
) -> AsyncIterator[Site]:
    """The hub and LY's agent on `broker`, both on version 1, their tasks running until the test ends."""
    net = LocalNetwork()
    gateway_file = write(tmp_path / "gateway-directory.json", net.signed_directory())
    agent_dir = tmp_path / "ly"
    agent_dir.mkdir()
    agent_file = write(agent_dir / "directory.json", net.signed_directory())
    stopping = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []

    def run(name: str, task: Callable[[asyncio.Event], Awaitable[None]]) -> None:
        tasks.append(asyncio.create_task(task(stopping), name=name))  # type: ignore[arg-type]

    store = await GatewayStore.open(tmp_path / "gateway.db")
    agent_store = await AgentStore.open(agent_dir / "agent.db", synchronous="NORMAL", storage_key=StorageKey.generate())
    session = aiohttp.ClientSession()
    gateway_http: test_utils.TestServer | None = None
    publisher = deliver_publisher(
        FailoverConnector(service_endpoints(amqp_url(broker, broker.gateway_user), heartbeat_s=30), service="gateway")
    )
    try:
        # The gateway, as `gateway.service` wires its directory.
        audit = await AuditLog.load(store, origin="rogatory.test/audit-log", log_key=net.log_key)
        holder = await DirectoryHolder.load(
            gateway_file, authority=net.authority.public_key, store=store, audit=audit, now=NOW, limits=net.limits
        )

        async def adopt_at_gateway(signed: SignedStatement, directory: Directory) -> None:
            await holder.adopt(signed, directory, store=store, audit=audit, now=NOW)

        gateway_watch = DirectoryWatch(
            gateway_file,
            authority=net.authority.public_key,
            directory=holder.current,
            clock=lambda: NOW,
            limits=net.limits,
            interval_s=INTERVAL_S,
            adopt=adopt_at_gateway,
        )
        app = web.Application()
        for method, route, handler in DirectoryApi(store).routes():
            app.router.add_route(method, route, handler)
        gateway_http = test_utils.TestServer(app)
        await gateway_http.start_server()

        # LY's agent, as `agents.service` wires its directory: its own file, remembered against rollback.
        remember_directory(agent_dir, net.directory())

        async def adopt_at_agent(_signed: SignedStatement, directory: Directory) -> None:
            await asyncio.to_thread(remember_directory, agent_dir, directory)

        source = gateway_directory_source(session, str(gateway_http.make_url("/")), limits=net.limits)
        agent_watch = DirectoryWatch(
            agent_file,
            authority=net.authority.public_key,
            directory=net.directory(),
            clock=lambda: NOW,
            limits=net.limits,
            interval_s=INTERVAL_S,
            adopt=adopt_at_agent,
            sources={"gateway": source} if poll else None,
        )
        receiver = Receiver(
            keys=ReceiverKeys(agency=LY, signing_key=net[LY].signing, encryption_keys=net[LY].decryption_keys),
            directory=agent_watch,
            store=agent_store,
            gateway_broker_user=broker.gateway_user,
            limits=DEFAULT_LIMITS,
            clock=lambda: NOW,
            cases=CaseBook(LY),
            on_opened=None,
            on_directory=lambda raw: agent_watch.offer(raw, source="push"),
        )
        run("gateway_directory", gateway_watch.run)
        run("outgoing", OutgoingRelay(store, publisher).run)
        run("agent_directory", agent_watch.run)
        if agent_online:
            ly_endpoints = service_endpoints(amqp_url(broker, broker.user(LY)), heartbeat_s=30)
            consumer = inbox_consumer(
                FailoverConnector(ly_endpoints, service="agent"), inbox_queue(LY), receiver.handle, prefetch=4
            )
            run("inbox", consumer.run)
        yield Site(
            net, broker, gateway_file, gateway_watch, agent_file, agent_dir, agent_watch, receiver, gateway_http, run
        )
    finally:
        stopping.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await publisher.close()
        if gateway_http is not None:
            await gateway_http.close()
        await session.close()
        await agent_store.close()
        await store.close()


@pytest.fixture
async def broker(broker_network_factory: BrokerNetworkFactory) -> BrokerTestNetwork:
    """A network of its own for each test (BD and LY), so no test sees another's pushes."""
    return await broker_network_factory()


async def test_a_new_version_dropped_at_the_gateway_reaches_a_running_agent_over_the_exchange_and_is_enforced(
    tmp_path: Path, broker: BrokerTestNetwork
) -> None:
    """BD revoked in version 2 at the gateway's file: LY's agent, not polling, takes it in the push bound."""
    async with site(tmp_path, broker) as hub:
        assert await hub.bd_message_at_ly() == ("delivered", None)
        write(hub.gateway_file, sign(hub.net, revoking_bd(hub.net, 2)))
        await within(PUSH_BOUND_S, lambda: hub.agent_watch.held.version == 2)
        assert await hub.bd_message_at_ly() == ("dropped", ErrorCode.KEY_REVOKED)
        assert hub.agent_file.read_bytes() == hub.gateway_file.read_bytes()  # a restart starts from version 2
        assert (hub.agent_dir / HELD_FILE).read_text().startswith("2 ")


async def test_an_agent_that_missed_the_push_gets_the_new_version_by_polling_the_gateway(
    tmp_path: Path, broker: BrokerTestNetwork
) -> None:
    """LY's agent takes nothing from its inbox: its poll of `GET /v1/directory` brings version 2 within the bound."""
    async with site(tmp_path, broker, agent_online=False, poll=True) as hub:
        write(hub.gateway_file, sign(hub.net, revoking_bd(hub.net, 2)))
        await within(POLL_BOUND_S, lambda: hub.agent_watch.held.version == 2)
        assert await hub.bd_message_at_ly() == ("dropped", ErrorCode.KEY_REVOKED)
        assert hub.agent_file.read_bytes() == hub.gateway_file.read_bytes()


async def test_a_forged_or_rolled_back_version_pushed_by_a_compromised_gateway_is_refused_and_the_current_stays(
    tmp_path: Path, broker: BrokerTestNetwork
) -> None:
    """With version 2 in force, the gateway's user pushes version 1 and a version 3 not signed by the authority."""
    async with site(tmp_path, broker) as hub:
        write(hub.gateway_file, sign(hub.net, revoking_bd(hub.net, 2)))
        await within(PUSH_BOUND_S, lambda: hub.agent_watch.held.version == 2)
        in_force = hub.agent_file.read_bytes()
        genuine = hub.net.signed_directory(version=3)  # BD's key not revoked: what a compromised hub would want
        forged = genuine.model_copy(
            update={"signature": SigningPrivateKey.generate().sign(pae(genuine.payload_type, genuine.payload))}
        )
        publisher = deliver_publisher(
            FailoverConnector(service_endpoints(amqp_url(broker, broker.gateway_user), heartbeat_s=30), service="gw")
        )
        with capture_logs() as logs:
            try:
                for pushed in (hub.net.signed_directory(version=1), forged):
                    body = pushed.model_dump_json().encode("utf-8")
                    await publisher.publish(routing_key=LY, body=body, kind=KIND_DIRECTORY, message_id="pushed")
            finally:
                await publisher.close()
            await within(PUSH_BOUND_S, lambda: sum(line["event"] == "directory_refused" for line in logs) == 2)
        refused = [line for line in logs if line["event"] == "directory_refused"]
        assert [line["code"] for line in refused] == [
            ErrorCode.DIRECTORY_ROLLBACK,
            ErrorCode.DIRECTORY_SIGNATURE_INVALID,
        ]
        assert all(line["source"] == "push" and line["version_in_force"] == 2 for line in refused)
        assert hub.agent_watch.held == revoking_bd(hub.net, 2)
        assert hub.agent_file.read_bytes() == in_force
        assert (hub.agent_dir / HELD_FILE).read_text().startswith("2 ")
        assert await hub.bd_message_at_ly() == ("dropped", ErrorCode.KEY_REVOKED)


async def test_get_directory_serves_the_exact_signed_bytes_of_each_version_without_a_token(
    tmp_path: Path, broker: BrokerTestNetwork
) -> None:
    """`GET /v1/directory` is the file the authority signed, byte for byte; older versions stay at their number."""
    async with site(tmp_path, broker) as hub, aiohttp.ClientSession() as client:
        first = hub.gateway_file.read_bytes()
        write(hub.gateway_file, sign(hub.net, revoking_bd(hub.net, 2)))
        await within(PUSH_BOUND_S, lambda: hub.gateway_watch.held.version == 2)
        second = hub.gateway_file.read_bytes()
        for path, version, body in (("/v1/directory", "2", second), ("/v1/directory/1", "1", first)):
            async with client.get(hub.gateway_http.make_url(path)) as answer:
                assert (answer.status, answer.headers[VERSION_HEADER], await answer.read()) == (200, version, body)
        for path, status in (("/v1/directory/3", 404), ("/v1/directory/x", 400)):
            async with client.get(hub.gateway_http.make_url(path)) as answer:
                assert answer.status == status
