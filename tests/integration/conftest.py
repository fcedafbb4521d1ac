"""Fixtures for tests against a real RabbitMQ: its management API and AMQP.

Broker fixtures are all named `broker_*`. Each test module gets its own network
(`broker_network`): a vhost and users named with a random token, provisioned
by `deploy.provision.broker.provision` and deleted afterwards, so runs never see each
other's messages and leave nothing behind. Tests that change a network (revoke,
re-provision, break a binding) make their own with `broker_network_factory`.

A broker that does not answer FAILS the test, never skips it: CI relies on
that. `deploy/ensure-rabbitmq.sh` starts one locally. Where it is, from the
environment: ROGATORY_TEST_AMQP_HOST (127.0.0.1), ROGATORY_TEST_AMQP_PORT (5672),
ROGATORY_TEST_MANAGEMENT_URL (http://127.0.0.1:15672), ROGATORY_TEST_ADMIN_USER
and ROGATORY_TEST_ADMIN_PASSWORD (guest/guest).
"""

from __future__ import annotations

import asyncio
import os
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Protocol

import aio_pika
import pytest
import pytest_asyncio
from aio_pika.exceptions import AMQPError

from deploy.provision.broker import (
    BrokerAdminError,
    ManagementClient,
    NetworkPlan,
    delete_network,
    provision,
)
from protocol.ids import AgencyId

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator, Mapping

    from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage

BROKER_MESSAGE_TIMEOUT_SECONDS: Final = 5.0
"""How long a test waits for a message the broker routes at once (it takes milliseconds)."""

BROKER_STATS_TIMEOUT_SECONDS: Final = 15.0
"""How long a test waits for management statistics (emitted every 5 s by default)."""

BROKER_CONNECT_TIMEOUT_SECONDS: Final = 5.0
"""AMQP connection timeout: a broker that takes longer is as good as absent."""

BROKER_TEST_AGENCIES: Final = (
    AgencyId("BD-MOHA-PSD"),
    AgencyId("LY-MLA-CA"),
    AgencyId("BD-POLICE-CID-HTU"),
)
"""Agencies of the per-module network: two that talk, one that stays idle."""

BROKER_TEST_DELIVERY_LIMIT: Final = 2
"""Small, so poison-message tests need few redeliveries."""

_NAME_PREFIX: Final = "rogatory-test"


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    """Where the test broker is and who administers it."""

    amqp_host: str
    amqp_port: int
    management_url: str
    admin_user: str
    admin_password: str = field(repr=False)

    @classmethod
    def from_environment(cls) -> BrokerSettings:
        """Read the settings named in the module docstring."""
        return cls(
            amqp_host=os.environ.get("ROGATORY_TEST_AMQP_HOST", "127.0.0.1"),
            amqp_port=int(os.environ.get("ROGATORY_TEST_AMQP_PORT", "5672")),
            management_url=os.environ.get("ROGATORY_TEST_MANAGEMENT_URL", "http://127.0.0.1:15672"),
            admin_user=os.environ.get("ROGATORY_TEST_ADMIN_USER", "guest"),
            admin_password=os.environ.get("ROGATORY_TEST_ADMIN_PASSWORD", "guest"),
        )

    def management_client(self) -> ManagementClient:
        """A client of the management API as the administrator (use with `async with`)."""
        return ManagementClient(self.management_url, self.admin_user, self.admin_password)


@dataclass(frozen=True)
class BrokerTestNetwork:
    """A provisioned network: its plan, its users' passwords, and AMQP helpers."""

    settings: BrokerSettings
    plan: NetworkPlan
    passwords: Mapping[str, str] = field(repr=False)

    @property
    def gateway_user(self) -> str:
        """The gateway's broker username."""
        return self.plan.gateway_user

    def user(self, agency: AgencyId) -> str:
        """The broker username of `agency`."""
        return self.plan.agency_users[agency]

    async def connect(self, user: str) -> AbstractConnection:
        """An AMQP connection to the network's vhost as `user` (not robust: no reconnects)."""
        return await aio_pika.connect(
            host=self.settings.amqp_host,
            port=self.settings.amqp_port,
            login=user,
            password=self.passwords[user],
            virtualhost=self.plan.vhost,
            timeout=BROKER_CONNECT_TIMEOUT_SECONDS,
        )

    @staticmethod
    async def receive_until(
        channel: AbstractChannel,
        queue_name: str,
        message_id: str,
        *,
        timeout: float = BROKER_MESSAGE_TIMEOUT_SECONDS,
    ) -> list[AbstractIncomingMessage]:
        """Consume `queue_name` until the message `message_id`; fail the test after `timeout`.

        Returns every message received, in order. The last is `message_id`, left
        unacknowledged for the caller; the ones before it were acknowledged.
        Prefetch 1, so no other message is held (and returned) behind it.
        """
        await channel.set_qos(prefetch_count=1)
        queue = await channel.get_queue(queue_name, ensure=False)
        received: list[AbstractIncomingMessage] = []
        try:
            async with asyncio.timeout(timeout), queue.iterator() as messages:
                async for message in messages:
                    received.append(message)
                    if message.message_id == message_id:
                        return received
                    await message.ack()
        except TimeoutError:
            pass
        seen = [m.message_id for m in received]
        pytest.fail(f"message {message_id!r} not on {queue_name!r} within {timeout}s; saw {seen}")


def _check_broker(settings: BrokerSettings) -> None:
    async def check() -> None:
        async with settings.management_client() as admin:
            await admin.overview()
        connection = await aio_pika.connect(
            host=settings.amqp_host,
            port=settings.amqp_port,
            login=settings.admin_user,
            password=settings.admin_password,
            timeout=BROKER_CONNECT_TIMEOUT_SECONDS,
        )
        await connection.close()

    try:
        asyncio.run(check())
    except (BrokerAdminError, AMQPError, OSError, TimeoutError) as exc:
        pytest.fail(
            f"RabbitMQ is not usable at amqp://{settings.amqp_host}:{settings.amqp_port} "
            f"with its management API at {settings.management_url}: "
            f"{type(exc).__name__}: {exc}. Start it with deploy/ensure-rabbitmq.sh "
            "(broker tests fail rather than skip).",
            pytrace=False,
        )


def _random_plan(agencies: tuple[AgencyId, ...], delivery_limit: int) -> NetworkPlan:
    token = secrets.token_hex(4)
    return NetworkPlan(
        vhost=f"{_NAME_PREFIX}-{token}",
        gateway_user=f"{_NAME_PREFIX}-{token}-gateway",
        agency_users={agency: f"{_NAME_PREFIX}-{token}-{agency}" for agency in agencies},
        delivery_limit=delivery_limit,
    )


async def _provision_network(
    settings: BrokerSettings, plan: NetworkPlan, known: Mapping[str, str] | None = None
) -> BrokerTestNetwork:
    known = known or {}
    passwords = {user: known.get(user) or secrets.token_urlsafe(18) for user in plan.users}
    async with settings.management_client() as admin:
        await provision(admin, plan, passwords)
    return BrokerTestNetwork(settings=settings, plan=plan, passwords=passwords)


async def _delete_and_check(settings: BrokerSettings, plans: list[NetworkPlan]) -> None:
    async with settings.management_client() as admin:
        for plan in plans:
            await delete_network(admin, plan)
        leftovers = [
            path
            for plan in plans
            for path in (("vhosts", plan.vhost), *(("users", u) for u in plan.users))
            if await admin.get_json(path, action="check clean-up", missing_ok=True) is not None
        ]
    assert not leftovers, f"broker test left {leftovers} behind"


@pytest.fixture(scope="session")
def broker_settings() -> BrokerSettings:
    """The test broker's settings; fails the session's broker tests if it does not answer."""
    settings = BrokerSettings.from_environment()
    _check_broker(settings)
    return settings


@pytest.fixture(scope="module")
def broker_network(broker_settings: BrokerSettings) -> Iterator[BrokerTestNetwork]:
    """A fresh network for the test module, deleted (and checked gone) afterwards.

    Synchronous, with its own short event loop for provisioning, so the tests
    that use it keep pytest-asyncio's default per-test loop.
    """
    plan = _random_plan(BROKER_TEST_AGENCIES, BROKER_TEST_DELIVERY_LIMIT)
    try:
        try:
            network = asyncio.run(_provision_network(broker_settings, plan))
        except BrokerAdminError as exc:
            pytest.fail(f"provisioning the test network failed: {exc}", pytrace=False)
        yield network
    finally:
        asyncio.run(_delete_and_check(broker_settings, [plan]))


@pytest_asyncio.fixture
async def broker_admin(broker_settings: BrokerSettings) -> AsyncIterator[ManagementClient]:
    """A management API client as the administrator, for the test's own loop."""
    async with broker_settings.management_client() as admin:
        yield admin


class BrokerNetworkFactory(Protocol):
    """Provisions a network inside a test; see `broker_network_factory`."""

    async def __call__(
        self,
        *,
        agencies: tuple[AgencyId, ...] = ...,
        delivery_limit: int = ...,
        plan: NetworkPlan | None = None,
        passwords: Mapping[str, str] | None = None,
    ) -> BrokerTestNetwork: ...


@pytest_asyncio.fixture
async def broker_network_factory(
    broker_settings: BrokerSettings,
) -> AsyncIterator[BrokerNetworkFactory]:
    """Make networks inside a test: `await make(agencies=..., delivery_limit=...)`.

    `make(plan=..., passwords=...)` provisions a given plan instead (say, an existing
    network with one more agency; users without a password get a random one).
    Every plan provisioned is deleted, and checked gone, when the test ends.
    """
    plans: list[NetworkPlan] = []

    async def make(
        *,
        agencies: tuple[AgencyId, ...] = BROKER_TEST_AGENCIES[:2],
        delivery_limit: int = BROKER_TEST_DELIVERY_LIMIT,
        plan: NetworkPlan | None = None,
        passwords: Mapping[str, str] | None = None,
    ) -> BrokerTestNetwork:
        plan = plan or _random_plan(agencies, delivery_limit)
        plans.append(plan)
        return await _provision_network(broker_settings, plan, passwords)

    yield make
    await _delete_and_check(broker_settings, plans)
