"""Poison deliveries: the broker's delivery limit dead-letters them, the gateway holds them, the operator decides.

A consumer that keeps failing on one delivery is played by the test, with the
real broker identity of the service it stands for (an agent that crashes on a
message, a gateway that does): it hands the delivery back until the quorum
queue's delivery limit sends it to `mla.dead`, or rejects it outright.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aio_pika
import aiohttp
import pytest

from deploy.localnet.network import load_network
from deploy.provision.broker import DEFAULT_DELIVERY_LIMIT
from protocol.ids import AgencyId
from protocol.topology import INGRESS_QUEUE, inbox_queue
from tests.faults.conftest import SYSTEM_AMQP_URL
from tests.faults.harness import (
    RECIPIENT,
    SENDER,
    FaultNetwork,
    Traffic,
    audit_entries,
    count,
    gateway_ssl,
    say,
    settle,
    statuses,
)
from tests.faults.test_process_kills import _management

pytestmark = [pytest.mark.faults, pytest.mark.broker, pytest.mark.e2e]


async def _misbehave(amqp_url: str, queue: str, plan: dict[str, str], *, within_s: float = 60.0) -> dict[str, int]:
    """Take `queue`'s deliveries one by one: hand back (`nack`) or `reject` those `plan` names, until the
    queue has nothing more to give; hold the others unacknowledged meanwhile (returned once, at the end)."""
    handled: dict[str, int] = {}
    connection = await aio_pika.connect(amqp_url.split(",", maxsplit=1)[0], timeout=10)
    try:
        channel = await connection.channel()
        source = await channel.get_queue(queue, ensure=False)
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            message = await source.get(no_ack=False, fail=False, timeout=5)
            if message is None:
                break
            message_id = message.message_id or ""
            handled[message_id] = handled.get(message_id, 0) + 1
            action = plan.get(message_id)
            if action == "nack":
                await message.nack(requeue=True)
            elif action == "reject":
                await message.reject(requeue=False)
    finally:
        await connection.close()
    return handled


async def _ops(network: FaultNetwork, session: aiohttp.ClientSession, method: str, path: str, **kwargs: Any):
    gateway = network.stack["gateway"]
    token = kwargs.pop("token", gateway["operator_token"])
    async with session.request(
        method,
        f"{gateway['url']}{path}",
        headers={"Authorization": f"Bearer {token}"},
        ssl=gateway_ssl(network.stack),
        **kwargs,
    ) as response:
        return response.status, await response.json()


async def _held(network: FaultNetwork, session: aiohttp.ClientSession, wanted: int, within_s: float = 60.0):
    deadline = time.monotonic() + within_s
    while True:
        status, answer = await _ops(network, session, "GET", "/v1/ops/dead-letters?state=held")
        assert status == 200, answer
        if len(answer["dead_letters"]) >= wanted or time.monotonic() > deadline:
            return answer["dead_letters"]
        await asyncio.sleep(0.5)


async def test_poison_deliveries_are_dead_lettered_refused_with_evidence_and_redriven_by_the_operator(
    tmp_path, session, report
):
    """Over the delivery limit or rejected, in an inbox or at the ingress: each dead letter is held once, logged,
    answered with negative evidence to its sender; the operator lists them (never content), re-drives or
    discards them, each decision logged; nothing is lost and the log verifies."""
    started = time.monotonic()
    network = await FaultNetwork.start(tmp_path / "net", amqp_url=SYSTEM_AMQP_URL, management_url=_management())
    description = load_network(network.root)
    assert description is not None
    try:
        traffic = Traffic(network, session)
        await traffic.open_cases(1)

        # 1. The recipient's agent "crashes" on two deliveries: one handed back until the limit, one rejected.
        network.kill(RECIPIENT)
        notes = traffic.notes(3)
        await traffic.send(notes, concurrency=1)
        await _wait_status(network, session, [n["message_id"] for n in notes], {"relayed"})
        inbox_plan = {notes[0]["message_id"]: "nack", notes[1]["message_id"]: "reject"}
        handled = await _misbehave(
            network.stack["agents"][RECIPIENT]["amqp_url"],
            inbox_queue(AgencyId(RECIPIENT)),
            dict(inbox_plan),
        )
        say(f"inbox deliveries handed back or rejected: {handled}")
        assert handled[notes[0]["message_id"]] == 6, "delivered 1 + delivery limit (5) times, then dead"

        # 2. The gateway "crashes" on one submission until the ingress delivery limit.
        network.kill("gateway")
        poison = traffic.notes(2)
        await traffic.send(poison, concurrency=1)
        gateway_url = description.amqp_url(description.gateway.broker_user, description.gateway.broker_password)
        handled = await _misbehave(gateway_url, INGRESS_QUEUE, {poison[0]["message_id"]: "nack"})
        say(f"ingress deliveries handed back: {handled}")
        await network.restart()  # the gateway and the recipient's agent, with their data

        held = await _held(network, session, 3)
        assert len(held) == 3, held
        by_message = {item["message_id"]: item for item in held}
        assert by_message[notes[0]["message_id"]]["reason"] == "delivery_limit"
        assert by_message[notes[1]["message_id"]]["reason"] == "rejected"
        assert by_message[poison[0]["message_id"]]["queue"] == INGRESS_QUEUE
        assert {item["evidence"] for item in held} == {"NON_DELIVERY", "SUBMISSION_REJECTED"}
        for item in held:
            assert "body" not in item, "the operator sees metadata, never content"

        await settle(network, session, traffic)
        figures = await count(
            network,
            session,
            traffic,
            scenario="poison deliveries dead-lettered (inbox x2, ingress x1)",
            started=started,
        )
        report(figures)
        figures.check()
        assert figures.negative == 3
        assert figures.audit_other_leaves.get("dead_letter") == 3

        # 3. The operator: the auditor may not act; re-drive two, discard one; each decision is logged.
        status, _ = await _ops(
            network, session, "GET", "/v1/ops/dead-letters", token=network.stack["gateway"]["auditor_token"]
        )
        assert status == 403
        redrive_inbox, discard, redrive_ingress = (
            by_message[notes[0]["message_id"]],
            by_message[notes[1]["message_id"]],
            by_message[poison[0]["message_id"]],
        )
        for item, action in ((redrive_inbox, "redrive"), (discard, "discard"), (redrive_ingress, "redrive")):
            status, answer = await _ops(
                network, session, "POST", f"/v1/ops/dead-letters/{item['id']}/{action}", json={"reason": "drill"}
            )
            assert status == 200, answer
            assert answer["state"] == ("redriven" if action == "redrive" else "discarded"), answer
        status, answer = await _ops(network, session, "POST", f"/v1/ops/dead-letters/{discard['id']}/redrive")
        assert status == 409, "a discarded dead letter stays discarded"
        recipient = network.agent(session, RECIPIENT)
        for message_id in (notes[0]["message_id"], poison[0]["message_id"]):
            await recipient.wait_for_inbox(message_id, within_s=60)
        await _wait_evidence(network, session, [notes[0]["message_id"], poison[0]["message_id"]], "DELIVERY")
        entries = await audit_entries(network, session)
        actions = [e["content"]["action"] for e in entries if e["kind"] == "operator_action"]
        assert sorted(actions) == ["discard_dead_letter", "redrive_dead_letter", "redrive_dead_letter"]
        status, answer = await _ops(network, session, "GET", "/v1/ops/queues")
        assert status == 200, answer
        assert {"mla.dead", INGRESS_QUEUE} <= {queue["name"] for queue in answer["queues"]}
        after = await count(network, session, traffic, scenario="after the operator's decisions", started=started)
        assert after.duplicates_in_inbox == 0, after.table()
        assert after.lost == 0, after.table()
        assert after.audit_consistent, after.table()
    finally:
        await network.destroy()


async def _wait_status(network, session, ids: list[str], wanted: set[str], within_s: float = 60.0) -> None:
    deadline = time.monotonic() + within_s
    while True:
        answers = await statuses(network, session, ids)
        if all(answer["status"] in wanted for answer in answers.values()):
            return
        assert time.monotonic() < deadline, {m: a["status"] for m, a in answers.items()}
        await asyncio.sleep(0.5)


async def _wait_evidence(network, session, ids: list[str], evidence_type: str, within_s: float = 60.0) -> None:
    deadline = time.monotonic() + within_s
    while True:
        answers = await statuses(network, session, ids)
        if all(any(e["type"] == evidence_type for e in answer["evidence"]) for answer in answers.values()):
            return
        assert time.monotonic() < deadline, {m: [e["type"] for e in a["evidence"]] for m, a in answers.items()}
        await asyncio.sleep(0.5)


__all__ = ["SENDER"]


async def test_a_dead_submission_the_gateway_had_accepted_is_finished_not_refused(
    tmp_path, session, report, own_broker
):
    """The gateway accepts a submission, its copy's confirm never comes (the broker blocks publishers: memory
    alarm), it is killed, and then it "crashes" on everything about that message until the submission and the
    recipient's DELIVERY both die at the ingress: once back, it finishes both through its pipeline rather than
    refuse what it accepted, and the sender gets the whole chain, once."""
    started = time.monotonic()
    network = await FaultNetwork.start(
        tmp_path / "net", amqp_url=own_broker.amqp_url, management_url=own_broker.management_url
    )
    description = load_network(network.root)
    assert description is not None
    try:
        traffic = Traffic(network, session)
        await traffic.open_cases(1)
        network.kill("gateway")
        (note,) = traffic.notes(1)
        await traffic.send([note])
        await asyncio.sleep(1)  # the sender's agent publishes it to the ingress
        await asyncio.to_thread(own_broker.ctl, "set_vm_memory_high_watermark", "0")
        try:
            await network.restart()
            await _wait_logged(network, session, note["message_id"], "SUBMISSION_ACCEPTED")
            network.kill("gateway")  # accepted, not relayed: the publisher was blocked
        finally:
            await asyncio.to_thread(own_broker.ctl, "set_vm_memory_high_watermark", "0.4")
        gateway_url = description.amqp_url(description.gateway.broker_user, description.gateway.broker_password)
        # Both the submission and the recipient's DELIVERY must die at the ingress. The DELIVERY reaches the ingress
        # only once the recipient's own publish, blocked by the same memory alarm, is confirmed: hand back until
        # both have been handed back to the delivery limit, however late the second comes. The submission travels
        # under its message id, the recipient's evidence under the one id all its evidence takes (`evidence/<AGENCY>`).
        evidence_id = f"evidence/{RECIPIENT}"
        plan = {note["message_id"]: "nack", evidence_id: "nack"}
        handled: dict[str, int] = {}
        deadline = time.monotonic() + 90

        last_round: dict[str, int] = {}

        def died(key: str) -> bool:
            # Handed back to the limit; or one short of it and gone from the queue: the gateway killed while it
            # held the submission returned it once already (a delivery attempt the broker counted, not this loop).
            taken = handled.get(key, 0)
            return taken >= DEFAULT_DELIVERY_LIMIT or (taken == DEFAULT_DELIVERY_LIMIT - 1 and not last_round.get(key))

        def both_died() -> bool:
            return all(died(key) for key in plan)

        while not both_died() and time.monotonic() < deadline:
            last_round = await _misbehave(gateway_url, INGRESS_QUEUE, plan)
            handled = {key: handled.get(key, 0) + last_round.get(key, 0) for key in handled.keys() | last_round.keys()}
        say(f"ingress deliveries handed back: {handled}")
        assert both_died(), handled
        await network.restart()
        await _dead_letters(network, session, 2)
        await settle(network, session, traffic)
        figures = await count(
            network, session, traffic, scenario="accepted, then dead at the ingress: finished", started=started
        )
        report(figures)
        figures.check()
        assert figures.negative == 0
        items = await _dead_letters(network, session, 2)
        assert {(i["kind"], i["state"], i["evidence"]) for i in items} == {
            ("rogatory.sealed-message.v1", "resumed", None),
            ("rogatory.evidence.v1", "resumed", None),
        }, items
    finally:
        await network.destroy()


async def _dead_letters(network: FaultNetwork, session: aiohttp.ClientSession, wanted: int, within_s: float = 60.0):
    deadline = time.monotonic() + within_s
    while True:
        status, answer = await _ops(network, session, "GET", "/v1/ops/dead-letters")
        assert status == 200, answer
        if len(answer["dead_letters"]) >= wanted or time.monotonic() > deadline:
            return answer["dead_letters"]
        await asyncio.sleep(0.5)


async def _wait_logged(
    network: FaultNetwork, session: aiohttp.ClientSession, message_id: str, evidence_type: str, within_s: float = 30.0
) -> None:
    deadline = time.monotonic() + within_s
    while True:
        entries = await audit_entries(network, session)
        if any(
            e["message_id"] == message_id and e["identity"].startswith(f"evidence/{evidence_type}/") for e in entries
        ):
            return
        assert time.monotonic() < deadline, f"{evidence_type} of {message_id} never logged"
        await asyncio.sleep(0.3)
