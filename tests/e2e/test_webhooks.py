"""Webhooks end to end: real agent processes over the real RabbitMQ, a case system's endpoint on loopback.

A case system written against docs/GUIDE.md ("Webhooks") subscribes at both
ends, then never polls: it hears of each message its agency received and of
each evidence of each message it sent, signed per Standard Webhooks. Its
endpoint then goes down, a message arrives, and the recipient's agent is
killed (SIGKILL) with the event still owed: started again, the agent
delivers it. Each event is counted by its `webhook-id`, as a receiver
dedupes.
"""

from __future__ import annotations

import copy
import uuid
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from deploy.client.agent_api import AgentClient, poll
from deploy.client.samples import REQUEST_SAMPLE, sample
from tests.faults.conftest import SYSTEM_AMQP_URL, SYSTEM_MANAGEMENT_URL
from tests.faults.harness import FaultNetwork
from tests.support.webhooks import WebhookReceiver, standard_signature_valid

pytestmark = [pytest.mark.e2e, pytest.mark.broker]
BD, LY = "BD-MOHA-PSD", "LY-MLA-CA"
WEBHOOK_SETTINGS = {  # loopback is allowed on a dev network by default
    "ROGATORY_WEBHOOK_RETRY_BASE_S": "0.1",
    "ROGATORY_WEBHOOK_RETRY_MAX_S": "0.5",
    "ROGATORY_WEBHOOK_POLL_S": "0.1",
    "ROGATORY_WEBHOOK_TIMEOUT_S": "5",
}


def _management() -> str:
    return SYSTEM_MANAGEMENT_URL or f"http://{urlsplit(SYSTEM_AMQP_URL).hostname or '127.0.0.1'}:15672"


def fresh_request() -> dict[str, Any]:
    document = copy.deepcopy(sample(REQUEST_SAMPLE))
    document["message_id"] = str(uuid.uuid4())
    document["case_id"] = f"BD-LY-HOOK-{uuid.uuid4().hex[:10].upper()}"
    return document


def unique_events(receiver: WebhookReceiver, event_type: str) -> dict[str, dict[str, Any]]:
    """The events of one type by `webhook-id`: a redelivery counts once, as the receiver dedupes."""
    return {hook.event_id: hook.event for hook in receiver.hooks if hook.event["type"] == event_type}


async def test_a_case_system_hears_of_each_message_and_each_evidence_and_loses_nothing_to_a_killed_agent(tmp_path):
    receiver = await WebhookReceiver().start()
    network = await FaultNetwork.start(
        tmp_path / "net", amqp_url=SYSTEM_AMQP_URL, management_url=_management(), settings=WEBHOOK_SETTINGS
    )
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            bd, ly = network.agent(session, BD), network.agent(session, LY)
            ly_sub = await ly.subscribe(receiver.url, ["message.received"], description="LY case system")
            bd_sub = await bd.subscribe(receiver.url, ["message.status_changed"], description="BD case system")
            secrets = {"message.received": ly_sub["secret"], "message.status_changed": bd_sub["secret"]}

            request = fresh_request()
            await bd.submit(request)
            await ly.wait_for_inbox(request["message_id"])
            await ly.ack(request["message_id"])
            await bd.wait_for_status(request["message_id"], {"retrieved"})
            await _evidence_heard(bd, receiver, request["message_id"])
            chain = await bd.message(request["message_id"])
            heard = {
                event["data"]["evidence_type"]
                for event in unique_events(receiver, "message.status_changed").values()
                if event["data"]["message_id"] == request["message_id"]
            }
            assert heard == {item["type"] for item in chain["evidence"]}
            assert {"SUBMISSION_ACCEPTED", "RELAY_ACCEPTED", "DELIVERY", "RETRIEVAL"} <= heard
            (received,) = unique_events(receiver, "message.received").values()
            assert (received["data"]["message_id"], received["data"]["sender"]) == (request["message_id"], BD)
            for hook in receiver.hooks:
                assert standard_signature_valid(secrets[hook.event["type"]], hook.headers, hook.body)

            await receiver.stop()
            second = fresh_request()
            await bd.submit(second)
            await ly.wait_for_inbox(second["message_id"])
            owed = await poll(lambda: _owed(ly), within_s=30, what="the event to be owed and retried")
            assert owed["failed_attempts"] >= 1
            network.kill(LY)
            await receiver.start()
            await network.restart()
            ly = network.agent(session, LY)

            async def second_heard() -> bool | None:
                ids = {event["data"]["message_id"] for event in unique_events(receiver, "message.received").values()}
                return True if second["message_id"] in ids else None

            await poll(second_heard, within_s=60, what="the event owed before the kill to arrive after the restart")
            events = unique_events(receiver, "message.received")
            assert sorted(event["data"]["message_id"] for event in events.values()) == sorted(
                [request["message_id"], second["message_id"]]
            )
            (after,) = await ly.subscriptions()
            assert (after["state"], after["pending_events"]) == ("active", 0)
            assert after["failed_attempts"] >= owed["failed_attempts"]
    finally:
        await network.destroy()
        await receiver.stop()


async def _owed(ly: AgentClient) -> dict[str, Any] | None:
    (subscription,) = await ly.subscriptions()
    return subscription if subscription["pending_events"] >= 1 and subscription["failed_attempts"] >= 1 else None


async def _evidence_heard(bd: AgentClient, receiver: WebhookReceiver, message_id: str) -> None:
    """Until the case system heard of every evidence BD holds about `message_id` (inclusion proofs aside)."""

    async def complete() -> bool | None:
        held = {item["type"] for item in (await bd.message(message_id))["evidence"]}
        heard = {
            event["data"]["evidence_type"]
            for event in unique_events(receiver, "message.status_changed").values()
            if event["data"]["message_id"] == message_id
        }
        return True if "RETRIEVAL" in held and held == heard else None

    await poll(complete, within_s=60, what="an event for each evidence")
