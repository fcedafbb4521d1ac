"""Death headers an agency forges on its own submission, on the real RabbitMQ (3.10: it keeps them).

The gateway's dead-letter desk runs on a real store with its real consumer of
`mla.dead` and its real publisher to `mla.deliver`; the test plays the agency
(publishing as its broker user, with any headers it likes) and a gateway or
agent that fails on a delivery (rejecting it, so the broker dead-letters it).
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aio_pika
import pytest

from gateway.auditlog import AuditLog
from gateway.deadletters import DeadLetters, Taken, taken_summary
from gateway.errors import OperationConflict
from gateway.pipeline import GatewayIdentity, IngressPipeline
from gateway.store import DeadLetterRecord, GatewayStore
from gateway.transport import INGRESS, DeadDelivery, dead_letter_consumer, deliver_publisher
from protocol.auditlog import directory_leaf
from protocol.directory import Directory
from protocol.ids import AgencyId, MessageId
from protocol.topology import DEAD_LETTER_QUEUE, INGRESS_QUEUE, KIND_SEALED_MESSAGE, SUBMIT_EXCHANGE, inbox_queue
from runtime.broker import ConfirmedPublisher, FailoverConnector, service_endpoints
from tests.gateway.conftest import StaticDirectory
from tests.integration.conftest import BrokerTestNetwork
from tests.support.network import BD, BD_POLICE, LY, NOW, LocalNetwork

pytestmark = pytest.mark.broker

FORGED_INBOX: Any = "mla.inbox." + "Q" * 240
"""A queue name as long as a forged header likes (the audit leaf's identity holds 300 characters)."""


def _url(network: BrokerTestNetwork, user: str) -> str:
    settings = network.settings
    return (
        f"amqp://{quote(user, safe='')}:{quote(network.passwords[user], safe='')}@"
        f"{settings.amqp_host}:{settings.amqp_port}/{quote(network.plan.vhost, safe='')}"
    )


@dataclass
class Desk:
    """The gateway's dead-letter desk on a real store, publishing through the real broker."""

    net: LocalNetwork
    store: GatewayStore
    dead_letters: DeadLetters
    publisher: ConfirmedPublisher
    connector: FailoverConnector
    taken: dict[str, int]

    async def take(self, delivery: DeadDelivery) -> Taken:
        key = delivery.amqp_message_id or "-"
        self.taken[key] = self.taken.get(key, 0) + 1
        return await self.dead_letters.take(delivery)

    async def by_message(self, amqp_message_id: str) -> DeadLetterRecord | None:
        records = await self.store.dead_letters(limit=500)
        return next((r for r in records if r.amqp_message_id == amqp_message_id), None)

    async def run_until(self, amqp_message_ids: list[str], within_s: float = 20.0) -> list[DeadLetterRecord]:
        """Consume `mla.dead` until each of these is recorded (or the time is up); stop; the records found."""
        consumer = dead_letter_consumer(self.connector, self.take, taken_summary)
        stopping = asyncio.Event()
        task = asyncio.create_task(consumer.run(stopping))
        deadline = time.monotonic() + within_s
        found: list[DeadLetterRecord | None] = []
        try:
            while time.monotonic() < deadline:
                found = [await self.by_message(m) for m in amqp_message_ids]
                if all(found):
                    await asyncio.sleep(1.5)  # long enough to see a delivery handed back and taken again
                    break
                await asyncio.sleep(0.2)
        finally:
            stopping.set()
            await task
        return [record for record in found if record is not None]


@pytest.fixture(params=[False])
async def desk(
    broker_network: BrokerTestNetwork, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Desk]:
    """A gateway's desk; with the parameter True, one whose directory raises (a bug)."""
    net = LocalNetwork()
    store = await GatewayStore.open(tmp_path / "gateway.db")
    audit = await AuditLog.load(store, origin="rogatory.test/audit-log", log_key=net.log_key)
    async with audit.transaction() as atx:
        await atx.append(directory_leaf(net.signed_directory(), 1), at=NOW)
    endpoints = service_endpoints(_url(broker_network, broker_network.gateway_user), heartbeat_s=10)
    publisher = deliver_publisher(FailoverConnector(endpoints, service="gateway"))
    identity = GatewayIdentity(
        gateway_id="gateway.test",
        evidence_key=net.evidence_key,
        broker_user_prefix=broker_network.user(BD).removesuffix(BD),
    )
    pipeline = IngressPipeline(
        identity=identity,
        directory=StaticDirectory(net.directory()),
        store=store,
        audit=audit,
        publisher=publisher,
        limits=net.limits,
        clock=lambda: NOW,
        attachments=None,
    )

    def failing_directory() -> Directory:
        raise RuntimeError("a bug in the directory (test)")

    dead_letters = DeadLetters(
        identity=identity,
        directory=failing_directory if request.param else net.directory,
        store=store,
        audit=audit,
        pipeline=pipeline,
        publisher=publisher,
        limits=net.limits,
        clock=lambda: NOW,
        gateway_user=broker_network.gateway_user,
    )
    yield Desk(net, store, dead_letters, publisher, FailoverConnector(endpoints, service="gateway"), {})
    await publisher.close()
    await store.close()


async def _submit(
    network: BrokerTestNetwork,
    agency: AgencyId,
    body: bytes,
    headers: Mapping[str, Any],
    *,
    kind: str,
    message_id: str | None = None,
) -> str:
    """Publish to `mla.submit` as `agency`'s broker user (its own `user_id`), with `headers`; the message id."""
    message_id = message_id or str(uuid.uuid4())
    connection = await network.connect(network.user(agency))
    try:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        exchange = await channel.get_exchange(SUBMIT_EXCHANGE, ensure=False)
        message = aio_pika.Message(
            body, type=kind, message_id=message_id, user_id=network.user(agency), headers=dict(headers)
        )
        await exchange.publish(message, routing_key=agency, mandatory=True, timeout=10)
    finally:
        await connection.close()
    return message_id


async def _fail_on(network: BrokerTestNetwork, user: str, queue: str, message_id: str) -> None:
    """A consumer (as `user`) that gives up on `message_id`: rejected, so the broker dead-letters it."""
    connection = await network.connect(user)
    try:
        channel = await connection.channel()
        received = await network.receive_until(channel, queue, message_id)
        await received[-1].reject(requeue=False)
    finally:
        await connection.close()


async def _ready(network: BrokerTestNetwork, user: str, queue: str) -> int:
    connection = await network.connect(user)
    try:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        assert declared.declaration_result.message_count is not None
        return declared.declaration_result.message_count
    finally:
        await connection.close()


def _forged_death(queue: str, reason: str, **extra: object) -> dict[str, object]:
    """Death headers as a publisher writes them: RabbitMQ 3.10 keeps them on the dead letter."""
    return {
        "x-first-death-queue": queue,
        "x-first-death-reason": reason,
        "x-first-death-exchange": "mla.deliver",
        "x-death": [
            {
                "queue": queue,
                "reason": reason,
                "count": 10**12,
                "time": datetime(2020, 1, 1, tzinfo=UTC),
                "exchange": "mla.deliver",
                "routing-keys": [LY],
            }
        ],
        **extra,
    }


async def test_forged_death_headers_with_an_over_long_queue_do_not_wedge_the_dead_letter_consumer(
    broker_network: BrokerTestNetwork, desk: Desk
) -> None:
    """A forged x-death/x-first-death-* with an over-long queue and a bad reason is recorded as an ingress death,
    acknowledged once, and the next dead letter is still recorded."""
    forged = await _submit(
        broker_network,
        BD,
        b"forged death " + secrets.token_bytes(8),
        _forged_death(FORGED_INBOX, "Delivery Limit!"),
        kind=KIND_SEALED_MESSAGE,
    )
    honest = await _submit(broker_network, BD, b"honest death " + secrets.token_bytes(8), {}, kind=KIND_SEALED_MESSAGE)
    for message_id in (forged, honest):
        await _fail_on(broker_network, broker_network.gateway_user, INGRESS_QUEUE, message_id)
    records = await desk.run_until([forged, honest])
    assert {(r.amqp_message_id, r.queue, r.reason, r.death_count) for r in records} == {
        (forged, INGRESS_QUEUE, "rejected", 1),
        (honest, INGRESS_QUEUE, "rejected", 1),
    }, "the queue follows from the publisher; reason and count are the broker's newest entry"
    assert desk.taken[forged] == 1, "taken once, never handed back"
    assert await _ready(broker_network, broker_network.gateway_user, DEAD_LETTER_QUEUE) == 0


async def test_a_policy_refused_message_relabelled_as_died_in_an_inbox_is_not_redrivable_into_it(
    broker_network: BrokerTestNetwork, desk: Desk
) -> None:
    """BD's police unit (no agreement with LY) relabels its submission as dead in LY's inbox: it is held as an
    ingress death, refused to its publisher, and a re-drive runs the pipeline, which refuses it again."""
    sealed = desk.net.seal(sender=BD_POLICE, recipients=(LY,))
    message_id = await _submit(
        broker_network,
        BD_POLICE,
        sealed.to_bytes(),
        _forged_death(inbox_queue(LY), "delivery_limit"),
        kind=KIND_SEALED_MESSAGE,
    )
    await _fail_on(broker_network, broker_network.gateway_user, INGRESS_QUEUE, message_id)
    (record,) = await desk.run_until([message_id])
    assert (record.queue, record.recipient, record.evidence) == (INGRESS_QUEUE, None, "SUBMISSION_REJECTED")
    redriven = await desk.dead_letters.redrive(
        record.dead_letter_id, detail="operator believes the header", operator="amina"
    )
    assert "rejected (POLICY_DENIED)" in redriven.note, redriven.note
    assert await _ready(broker_network, broker_network.user(LY), inbox_queue(LY)) == 0, "nothing reached LY's inbox"


async def test_only_a_copy_the_gateway_relayed_is_redriven_into_an_inbox_and_without_the_agencys_headers(
    broker_network: BrokerTestNetwork, desk: Desk
) -> None:
    """The gateway relays a new message of its own (no agency header reaches the inbox); when LY's agent gives up
    on it, the broker's own x-death names LY's inbox, NON_DELIVERY is issued, and a re-drive delivers it again."""
    message_id = str(uuid.uuid4())
    sealed = desk.net.seal(sender=BD, recipients=(LY,), message_id=MessageId(uuid.UUID(message_id)))
    forged_headers = _forged_death(FORGED_INBOX, "expired", **{"x-agency-note": "junk", "BCC": [LY]})
    await _submit(
        broker_network, BD, sealed.to_bytes(), forged_headers, kind=KIND_SEALED_MESSAGE, message_id=message_id
    )
    connection = await broker_network.connect(broker_network.gateway_user)
    try:
        received = await broker_network.receive_until(await connection.channel(), INGRESS_QUEUE, message_id)
        outcome = await desk.dead_letters._pipeline.handle(INGRESS.convert(received[-1]))
        await received[-1].ack()
    finally:
        await connection.close()
    assert outcome.result == "relayed", outcome
    recipient = await broker_network.connect(broker_network.user(LY))
    try:
        (copy,) = (await broker_network.receive_until(await recipient.channel(), inbox_queue(LY), message_id))[-1:]
        assert copy.user_id == broker_network.gateway_user
        assert not copy.headers, f"the relayed copy carries headers: {sorted(copy.headers or {})}"
        await copy.reject(requeue=False)
    finally:
        await recipient.close()
    (record,) = await desk.run_until([message_id])
    assert (record.queue, record.recipient, record.reason, record.evidence) == (
        inbox_queue(LY),
        LY,
        "rejected",
        "NON_DELIVERY",
    )
    redriven = await desk.dead_letters.redrive(record.dead_letter_id, detail="LY's agent is fixed", operator="amina")
    assert redriven.state == "redriven", redriven
    assert await _ready(broker_network, broker_network.user(LY), inbox_queue(LY)) == 1


@pytest.mark.parametrize("desk", [True], indirect=True, ids=["directory_fails"])
async def test_a_poison_message_on_mla_dead_is_parked_not_redelivered_for_ever(
    broker_network: BrokerTestNetwork, desk: Desk
) -> None:
    """A dead letter the desk fails on (a bug) is parked, kept with the error and acknowledged once; the operator
    may discard it, not re-drive it."""
    message_id = await _submit(broker_network, BD, b"poison " + secrets.token_bytes(8), {}, kind=KIND_SEALED_MESSAGE)
    await _fail_on(broker_network, broker_network.gateway_user, INGRESS_QUEUE, message_id)
    (record,) = await desk.run_until([message_id])
    assert (record.state, record.reason) == ("parked", "unreadable"), record
    assert "a bug in the directory" in record.note
    assert desk.taken[message_id] == 1, "taken once, never handed back"
    assert await _ready(broker_network, broker_network.gateway_user, DEAD_LETTER_QUEUE) == 0
    with pytest.raises(OperationConflict):
        await desk.dead_letters.redrive(record.dead_letter_id, detail="try again", operator="amina")
    discarded = await desk.dead_letters.discard(record.dead_letter_id, detail="unreadable, reported", operator="amina")
    assert discarded.state == "discarded"
