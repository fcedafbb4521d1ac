"""Isolation by permission on a real RabbitMQ: what each party can and cannot do.

A is BD-MOHA-PSD, B is LY-MLA-CA (see `conftest.BROKER_TEST_AGENCIES`). Every
refusal is asserted with its AMQP reply (403 ACCESS_REFUSED, 406
PRECONDITION_FAILED), and every "nothing got through" is checked by a marker
message sent after the attack: queues are FIFO, so the marker arriving first
proves the attack's message is not there.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import TYPE_CHECKING, Any

import pytest
from aio_pika import Message
from aio_pika.exceptions import (
    ChannelPreconditionFailed,
    ConnectionClosed,
    ProbableAuthenticationError,
    PublishError,
)
from aiormq.exceptions import ChannelAccessRefused

from deploy.provision.broker import close_connections_of, revoke_agency
from protocol.ids import AgencyId
from protocol.topology import (
    DEAD_LETTER_EXCHANGE,
    DEAD_LETTER_QUEUE,
    DELIVER_EXCHANGE,
    INGRESS_QUEUE,
    KIND_EVIDENCE,
    KIND_SEALED_MESSAGE,
    SUBMIT_EXCHANGE,
    inbox_queue,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage

    from deploy.provision.broker import ManagementClient
    from tests.integration.conftest import BrokerNetworkFactory, BrokerTestNetwork

pytestmark = pytest.mark.broker

A = AgencyId("BD-MOHA-PSD")
B = AgencyId("LY-MLA-CA")
DEFAULT_EXCHANGE = ""
WAIT_SECONDS = 5.0


def _message_id() -> str:
    return str(uuid.uuid4())


def _message(user_id: str | None, message_id: str, kind: str = KIND_SEALED_MESSAGE) -> Message:
    return Message(
        f"body of {message_id}".encode(),
        message_id=message_id,
        user_id=user_id,
        type=kind,
        content_type="application/octet-stream",
    )


async def _publish(
    channel: AbstractChannel,
    exchange: str,
    message: Message,
    routing_key: str,
) -> None:
    target = (
        channel.default_exchange if exchange == DEFAULT_EXCHANGE else await channel.get_exchange(exchange, ensure=False)
    )
    await target.publish(message, routing_key=routing_key, mandatory=True)


async def _submit(network: BrokerTestNetwork, agency: AgencyId, message_id: str) -> None:
    """`agency` submits `message_id` the way an agent does, confirmed by the broker."""
    async with await network.connect(network.user(agency)) as connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        await _publish(channel, SUBMIT_EXCHANGE, _message(network.user(agency), message_id), B)


async def _deliver(network: BrokerTestNetwork, agency: AgencyId, message_id: str) -> None:
    """The gateway delivers `message_id` to `agency`'s inbox, confirmed by the broker."""
    async with await network.connect(network.gateway_user) as connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        message = _message(network.gateway_user, message_id, KIND_EVIDENCE)
        await _publish(channel, DELIVER_EXCHANGE, message, agency)


def _x_death(message: AbstractIncomingMessage) -> dict[str, Any]:
    deaths = message.headers.get("x-death")
    assert isinstance(deaths, list), f"no x-death header in {message.headers}"
    assert len(deaths) == 1, deaths
    death = deaths[0]
    assert isinstance(death, dict)
    return death


# --- Submitting ---------------------------------------------------------------


async def test_agency_submission_reaches_gateway_with_its_broker_identity(
    broker_network: BrokerTestNetwork,
) -> None:
    """A submission published with the agency's own user_id reaches the gateway's ingress."""
    message_id = _message_id()
    await _submit(broker_network, A, message_id)

    async with await broker_network.connect(broker_network.gateway_user) as gateway:
        channel = await gateway.channel()
        *_, received = await broker_network.receive_until(channel, INGRESS_QUEUE, message_id)
        assert received.user_id == broker_network.user(A)
        assert received.exchange == SUBMIT_EXCHANGE
        assert received.type == KIND_SEALED_MESSAGE
        await received.ack()


async def test_submission_with_another_agencys_user_id_is_refused(
    broker_network: BrokerTestNetwork,
) -> None:
    """Publishing with B's user_id closes A's channel (406) and nothing reaches the ingress."""
    forged_id, marker_id = _message_id(), _message_id()
    async with await broker_network.connect(broker_network.user(A)) as connection:
        channel = await connection.channel(publisher_confirms=True)
        with pytest.raises(ChannelPreconditionFailed, match=r"PRECONDITION_FAILED - user_id property set to"):
            await _publish(channel, SUBMIT_EXCHANGE, _message(broker_network.user(B), forged_id), B)
        assert channel.is_closed
    await _submit(broker_network, A, marker_id)

    async with await broker_network.connect(broker_network.gateway_user) as gateway:
        channel = await gateway.channel()
        received = await broker_network.receive_until(channel, INGRESS_QUEUE, marker_id)
        assert forged_id not in [m.message_id for m in received]
        await received[-1].ack()


async def test_submission_without_user_id_passes_the_broker_so_the_gateway_must_refuse_it(
    broker_network: BrokerTestNetwork,
) -> None:
    """The broker checks user_id only when present: a submission without one arrives bare."""
    message_id = _message_id()
    async with await broker_network.connect(broker_network.user(A)) as connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        await _publish(channel, SUBMIT_EXCHANGE, _message(None, message_id), B)

    async with await broker_network.connect(broker_network.gateway_user) as gateway:
        channel = await gateway.channel()
        *_, received = await broker_network.receive_until(channel, INGRESS_QUEUE, message_id)
        assert received.user_id is None  # gateway: BROKER_USER_MISMATCH
        await received.ack()


# --- Reading --------------------------------------------------------------------


async def _leave_unacked(_message: AbstractIncomingMessage) -> None:
    """A consumer callback that does nothing: the message returns to the queue on cancel."""


async def _consume_once(channel: AbstractChannel, queue_name: str) -> None:
    queue = await channel.get_queue(queue_name, ensure=False)
    tag = await queue.consume(_leave_unacked)
    await queue.cancel(tag)


async def _get_once(channel: AbstractChannel, queue_name: str) -> None:
    queue = await channel.get_queue(queue_name, ensure=False)
    await queue.get(fail=False)


@pytest.mark.parametrize("read", [_consume_once, _get_once], ids=["consume", "get"])
@pytest.mark.parametrize("queue_name", [inbox_queue(B), INGRESS_QUEUE, DEAD_LETTER_QUEUE])
async def test_agency_cannot_read_any_queue_but_its_inbox(
    broker_network: BrokerTestNetwork,
    read: Callable[[AbstractChannel, str], Awaitable[None]],
    queue_name: str,
) -> None:
    """A cannot consume or get from B's inbox, the ingress or the dead letters (403)."""
    async with await broker_network.connect(broker_network.user(A)) as connection:
        channel = await connection.channel()
        with pytest.raises(ChannelAccessRefused, match=re.escape(f"queue '{queue_name}'")):
            await read(channel, queue_name)


async def test_agency_receives_what_the_gateway_delivers_to_it(
    broker_network: BrokerTestNetwork,
) -> None:
    """The gateway delivers to B through mla.deliver and B consumes it from its own inbox."""
    message_id = _message_id()
    await _deliver(broker_network, B, message_id)

    async with await broker_network.connect(broker_network.user(B)) as connection:
        channel = await connection.channel()
        *_, received = await broker_network.receive_until(channel, inbox_queue(B), message_id)
        assert received.user_id == broker_network.gateway_user
        assert received.exchange == DELIVER_EXCHANGE
        assert received.routing_key == B
        await received.ack()


async def test_agency_can_consume_its_own_inbox(broker_network: BrokerTestNetwork) -> None:
    """A may consume and get from its own inbox."""
    async with await broker_network.connect(broker_network.user(A)) as connection:
        channel = await connection.channel()
        await _consume_once(channel, inbox_queue(A))
        await _get_once(channel, inbox_queue(A))


# --- Writing --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exchange", "resource"),
    [
        (DELIVER_EXCHANGE, DELIVER_EXCHANGE),
        (DEFAULT_EXCHANGE, "amq.default"),
        (DEAD_LETTER_EXCHANGE, DEAD_LETTER_EXCHANGE),
        ("amq.direct", "amq.direct"),
    ],
    ids=["deliver", "default", "dead", "amq.direct"],
)
async def test_agency_cannot_publish_anywhere_but_submit(
    broker_network: BrokerTestNetwork, exchange: str, resource: str
) -> None:
    """A cannot publish to mla.deliver, the default exchange or any other (403), even as itself."""
    attack_id, marker_id = _message_id(), _message_id()
    async with await broker_network.connect(broker_network.user(A)) as connection:
        channel = await connection.channel(publisher_confirms=True)
        with pytest.raises(ChannelAccessRefused, match=re.escape(f"exchange '{resource}'")):
            await _publish(channel, exchange, _message(broker_network.user(A), attack_id), inbox_queue(B))
    # Aimed straight at B's inbox (default exchange, key = queue name): the
    # marker delivered after it must reach B without it.
    await _deliver(broker_network, B, marker_id)
    async with await broker_network.connect(broker_network.user(B)) as connection:
        channel = await connection.channel()
        received = await broker_network.receive_until(channel, inbox_queue(B), marker_id)
        assert attack_id not in [m.message_id for m in received]
        await received[-1].ack()


@pytest.mark.parametrize(
    ("exchange", "resource"),
    [
        (SUBMIT_EXCHANGE, SUBMIT_EXCHANGE),
        (DEAD_LETTER_EXCHANGE, DEAD_LETTER_EXCHANGE),
        (DEFAULT_EXCHANGE, "amq.default"),
    ],
    ids=["submit", "dead", "default"],
)
async def test_gateway_cannot_publish_anywhere_but_deliver(
    broker_network: BrokerTestNetwork, exchange: str, resource: str
) -> None:
    """The gateway cannot inject submissions or dead letters, nor bypass mla.deliver (403)."""
    async with await broker_network.connect(broker_network.gateway_user) as connection:
        channel = await connection.channel(publisher_confirms=True)
        message = _message(broker_network.gateway_user, _message_id())
        with pytest.raises(ChannelAccessRefused, match=re.escape(f"exchange '{resource}'")):
            await _publish(channel, exchange, message, INGRESS_QUEUE)


async def test_gateway_cannot_read_an_agency_inbox(broker_network: BrokerTestNetwork) -> None:
    """The gateway writes inboxes through mla.deliver but cannot read them (403)."""
    async with await broker_network.connect(broker_network.gateway_user) as connection:
        channel = await connection.channel()
        with pytest.raises(ChannelAccessRefused, match="ACCESS_REFUSED"):
            await _consume_once(channel, inbox_queue(A))


async def test_unroutable_delivery_comes_back_to_the_gateway(
    broker_network: BrokerTestNetwork,
) -> None:
    """A mandatory delivery to a routing key without an inbox is returned as an error."""
    async with await broker_network.connect(broker_network.gateway_user) as connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        message = _message(broker_network.gateway_user, _message_id())
        with pytest.raises(PublishError, match="NO_ROUTE"):
            await _publish(channel, DELIVER_EXCHANGE, message, "ZZ-NOBODY")


# --- Topology -------------------------------------------------------------------


async def _bind_queue(channel: AbstractChannel, queue: str, exchange: str, key: str) -> object:
    return await (await channel.get_queue(queue, ensure=False)).bind(exchange, key)


async def _unbind_queue(channel: AbstractChannel, queue: str, exchange: str, key: str) -> object:
    return await (await channel.get_queue(queue, ensure=False)).unbind(exchange, key)


async def _bind_exchange(channel: AbstractChannel, dest: str, source: str, key: str) -> object:
    return await (await channel.get_exchange(dest, ensure=False)).bind(source, key)


_TOPOLOGY_ATTACKS: dict[str, Callable[[AbstractChannel], Awaitable[object]]] = {
    "declare a new queue": lambda ch: ch.declare_queue("mla.evil", durable=True),
    "declare a server-named queue": lambda ch: ch.declare_queue(exclusive=True),
    "redeclare its own inbox": lambda ch: ch.declare_queue(
        inbox_queue(A), durable=True, arguments={"x-queue-type": "quorum"}
    ),
    "declare a new exchange": lambda ch: ch.declare_exchange("mla.evil", durable=True),
    "redeclare mla.submit": lambda ch: ch.declare_exchange(SUBMIT_EXCHANGE, "topic", durable=True),
    "bind its inbox to mla.submit": lambda ch: _bind_queue(ch, inbox_queue(A), SUBMIT_EXCHANGE, "#"),
    "bind its inbox to B's deliveries": lambda ch: _bind_queue(ch, inbox_queue(A), DELIVER_EXCHANGE, B),
    "bind mla.deliver into mla.submit": lambda ch: _bind_exchange(ch, SUBMIT_EXCHANGE, DELIVER_EXCHANGE, B),
    "unbind the ingress": lambda ch: _unbind_queue(ch, INGRESS_QUEUE, SUBMIT_EXCHANGE, "#"),
    "delete the ingress": lambda ch: ch.queue_delete(INGRESS_QUEUE),
    "delete its own inbox": lambda ch: ch.queue_delete(inbox_queue(A)),
    "delete mla.submit": lambda ch: ch.exchange_delete(SUBMIT_EXCHANGE),
    "delete mla.dead": lambda ch: ch.exchange_delete(DEAD_LETTER_EXCHANGE),
}


@pytest.mark.parametrize("attack", list(_TOPOLOGY_ATTACKS))
async def test_agency_cannot_change_the_topology(broker_network: BrokerTestNetwork, attack: str) -> None:
    """An agency cannot declare, bind, unbind or delete any queue or exchange (403)."""
    async with await broker_network.connect(broker_network.user(A)) as connection:
        channel = await connection.channel()
        with pytest.raises(ChannelAccessRefused, match="ACCESS_REFUSED"):
            await _TOPOLOGY_ATTACKS[attack](channel)


async def test_passive_declare_of_own_inbox_works(broker_network: BrokerTestNetwork) -> None:
    """An agent may check that its inbox exists (a passive declare needs no permission)."""
    async with await broker_network.connect(broker_network.user(A)) as connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(inbox_queue(A), passive=True)
        assert queue.declaration_result.message_count is not None


async def test_passive_declare_reveals_other_queues_depth_known_limit(
    broker_network: BrokerTestNetwork,
) -> None:
    """RabbitMQ 3.10 does not check passive declares: A learns B's inbox depth, nothing more."""
    async with await broker_network.connect(broker_network.user(A)) as connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(inbox_queue(B), passive=True)
        assert queue.declaration_result.message_count is not None
        with pytest.raises(ChannelAccessRefused):
            await _get_once(channel, inbox_queue(B))


async def test_agency_whose_id_prefixes_another_cannot_read_its_inbox(
    broker_network_factory: BrokerNetworkFactory,
) -> None:
    """Read permissions are anchored: LY-MLA cannot read mla.inbox.LY-MLA-CA."""
    short, long = AgencyId("LY-MLA"), AgencyId("LY-MLA-CA")
    network = await broker_network_factory(agencies=(short, long))
    async with await network.connect(network.user(short)) as connection:
        channel = await connection.channel()
        await _consume_once(channel, inbox_queue(short))
        with pytest.raises(ChannelAccessRefused, match=re.escape(f"queue '{inbox_queue(long)}'")):
            await _consume_once(channel, inbox_queue(long))


# --- Dead letters ---------------------------------------------------------------


async def test_rejected_delivery_is_dead_lettered_with_its_origin(
    broker_network: BrokerTestNetwork,
) -> None:
    """A message B rejects lands in mla.dead with x-death naming reason, queue and key."""
    message_id = _message_id()
    await _deliver(broker_network, B, message_id)
    async with await broker_network.connect(broker_network.user(B)) as connection:
        channel = await connection.channel()
        *_, received = await broker_network.receive_until(channel, inbox_queue(B), message_id)
        await received.nack(requeue=False)

    async with await broker_network.connect(broker_network.gateway_user) as gateway:
        channel = await gateway.channel()
        *_, dead = await broker_network.receive_until(channel, DEAD_LETTER_QUEUE, message_id)
        death = _x_death(dead)
        assert death["reason"] == "rejected"
        assert death["queue"] == inbox_queue(B)
        assert death["exchange"] == DELIVER_EXCHANGE
        assert death["routing-keys"] == [B]
        assert death["count"] == 1
        assert dead.headers["x-first-death-reason"] == "rejected"
        assert dead.headers["x-first-death-queue"] == inbox_queue(B)
        assert dead.headers["x-first-death-exchange"] == DELIVER_EXCHANGE
        # Properties survive dead lettering: the broker-checked sender is still known.
        assert dead.user_id == broker_network.gateway_user
        assert dead.body == f"body of {message_id}".encode()
        await dead.ack()


async def test_poison_submission_is_dead_lettered_after_the_delivery_limit(
    broker_network: BrokerTestNetwork,
) -> None:
    """A submission nacked with requeue is delivered 1 + delivery_limit times, then dead-lettered."""
    limit = broker_network.plan.delivery_limit
    message_id = _message_id()
    await _submit(broker_network, A, message_id)

    delivery_counts: list[object] = []
    async with await broker_network.connect(broker_network.gateway_user) as gateway:
        channel = await gateway.channel()
        ingress = await channel.get_queue(INGRESS_QUEUE, ensure=False)
        dead_letters = await channel.get_queue(DEAD_LETTER_QUEUE, ensure=False)
        dead: AbstractIncomingMessage | None = None
        async with asyncio.timeout(WAIT_SECONDS):
            while dead is None:
                message = await ingress.get(fail=False)
                if message is not None:
                    if message.message_id == message_id:
                        delivery_counts.append(message.headers.get("x-delivery-count"))
                        await message.nack(requeue=True)  # the gateway "crashes" on it
                    else:
                        await message.ack()
                    continue
                candidate = await dead_letters.get(fail=False)
                if candidate is None:
                    await asyncio.sleep(0.02)
                elif candidate.message_id == message_id:
                    dead = candidate
                else:
                    await candidate.ack()

        # Delivered once, then redelivered `limit` times, counted by the broker.
        assert delivery_counts == list(range(limit + 1))
        death = _x_death(dead)
        assert death["reason"] == "delivery_limit"
        assert death["queue"] == INGRESS_QUEUE
        assert death["exchange"] == SUBMIT_EXCHANGE
        assert dead.headers["x-first-death-reason"] == "delivery_limit"
        assert dead.user_id == broker_network.user(A)
        await dead.ack()


async def test_gateway_redrives_a_dead_delivery_through_deliver(
    broker_network: BrokerTestNetwork,
) -> None:
    """With its usual permissions the gateway re-drives a dead delivery to its recipient."""
    message_id = _message_id()
    await _deliver(broker_network, B, message_id)
    async with await broker_network.connect(broker_network.user(B)) as recipient:
        channel = await recipient.channel()
        *_, received = await broker_network.receive_until(channel, inbox_queue(B), message_id)
        await received.nack(requeue=False)

    async with await broker_network.connect(broker_network.gateway_user) as gateway:
        channel = await gateway.channel()
        *_, dead = await broker_network.receive_until(channel, DEAD_LETTER_QUEUE, message_id)
        (recipient_key,) = _x_death(dead)["routing-keys"]
        confirming = await gateway.channel(publisher_confirms=True, on_return_raises=True)
        redriven = Message(dead.body, message_id=dead.message_id, user_id=broker_network.gateway_user)
        await _publish(confirming, DELIVER_EXCHANGE, redriven, recipient_key)
        await dead.ack()  # after the broker confirmed the new copy

    async with await broker_network.connect(broker_network.user(B)) as recipient:
        channel = await recipient.channel()
        *_, again = await broker_network.receive_until(channel, inbox_queue(B), message_id)
        assert again.body == f"body of {message_id}".encode()
        await again.ack()


async def test_dead_letter_is_kept_while_mla_dead_cannot_take_it(
    broker_network_factory: BrokerNetworkFactory, broker_admin: ManagementClient
) -> None:
    """At-least-once dead lettering: with no route to mla.dead, the queue keeps the dead letter."""
    network = await broker_network_factory()
    vhost = network.plan.vhost
    await broker_admin.delete(
        ("bindings", vhost, "e", DEAD_LETTER_EXCHANGE, "q", DEAD_LETTER_QUEUE, "~"),
        action="break the dead-letter route",
    )
    message_id = _message_id()
    await _deliver(network, B, message_id)
    async with await network.connect(network.user(B)) as connection:
        channel = await connection.channel()
        *_, received = await network.receive_until(channel, inbox_queue(B), message_id)
        await received.nack(requeue=False)

    # At-most-once would drop it: messages_dlx counts what waits for mla.dead.
    held: object = None
    async with asyncio.timeout(20.0):  # queue statistics are emitted every 5 s
        while held != 1:
            info = await broker_admin.get_json(("queues", vhost, inbox_queue(B)), action="read inbox statistics")
            held = info.get("messages_dlx")
            if held != 1:
                await asyncio.sleep(0.2)


# --- Revocation -----------------------------------------------------------------


async def _wait_listed(admin: ManagementClient, user: str) -> None:
    async with asyncio.timeout(WAIT_SECONDS):
        while not await admin.get_json(("connections", "username", user), action="list"):
            await asyncio.sleep(0.02)


def _watch_close(connection: AbstractConnection) -> asyncio.Future[BaseException | None]:
    closed: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

    def on_close(_sender: object, exc: BaseException | None) -> None:
        if not closed.done():
            closed.set_result(exc)

    connection.close_callbacks.add(on_close)
    return closed


async def test_revoked_agency_is_cut_off_at_once(
    broker_network_factory: BrokerNetworkFactory, broker_admin: ManagementClient
) -> None:
    """revoke_agency closes A's open connection before it returns, and A cannot log in again."""
    network = await broker_network_factory()
    user_a = network.user(A)
    connection_a = await network.connect(user_a)
    connection_b = await network.connect(network.user(B))
    async with connection_a, connection_b:
        channel_a = await connection_a.channel()
        await _consume_once(channel_a, inbox_queue(A))
        closed_a = _watch_close(connection_a)
        await _wait_listed(broker_admin, user_a)

        await revoke_agency(broker_admin, network.plan, A)

        assert await broker_admin.get_json(("connections", "username", user_a), action="x") == []
        reason = await asyncio.wait_for(closed_a, WAIT_SECONDS)
        assert isinstance(reason, ConnectionClosed)
        assert "CONNECTION_FORCED" in str(reason)
        with pytest.raises(ProbableAuthenticationError, match="ACCESS_REFUSED"):
            await network.connect(user_a)
        # B is untouched.
        await _consume_once(await connection_b.channel(), inbox_queue(B))


async def test_closing_a_users_connections_reaches_a_connection_just_opened(
    broker_network_factory: BrokerNetworkFactory, broker_admin: ManagementClient
) -> None:
    """close_connections_of closes a fresh connection, even before statistics list it."""
    network = await broker_network_factory()
    user_a = network.user(A)
    connection_a = await network.connect(user_a)
    async with connection_a:
        closed_a = _watch_close(connection_a)
        await _wait_listed(broker_admin, user_a)

        closed = await close_connections_of(broker_admin, user_a, reason="test: cut off")

        assert closed == 1
        reason = await asyncio.wait_for(closed_a, WAIT_SECONDS)
        assert "cut off" in str(reason)
