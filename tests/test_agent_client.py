"""The agent API client (`deploy.client.agent_api`): it slows down when an agent asks it to (`429` +
`Retry-After`), each method calls an operation of the agent's OpenAPI document, its typed answers have the
keys of the document's schemas, and the requests it sends and the answers a real agent gives match them."""

from __future__ import annotations

import inspect
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from agents.openapi import OPENAPI as AGENT_OPENAPI
from agents.webhooks import AddressPolicy, DeliveryPolicy
from deploy.client import agent_api as client_module
from deploy.client import transfer
from deploy.client.agent_api import BUNDLE_OPERATIONS, OPERATIONS, TRANSFER_OPERATIONS, AgentApiError, AgentClient
from deploy.client.samples import REQUEST_SAMPLE, sample
from tests.agents.harness import TOKEN, carry, return_evidence, start_agent
from tests.support.contract import ContractCheck, operations_by_id
from tests.support.network import BD, LY, LocalNetwork


@pytest.fixture
async def agent_that_limits() -> AsyncIterator[tuple[str, list[int]]]:
    """A stand-in agent that answers 429 (Retry-After: 0.2) to the first two requests of each path, then 200."""
    seen: list[int] = []

    async def message(request: web.Request) -> web.Response:
        seen.append(1)
        if request.match_info["message_id"] == "always-limited" or len(seen) <= 2:
            return web.json_response(
                {"code": "RATE_LIMITED", "detail": "slow down"}, status=429, headers={"Retry-After": "0.2"}
            )
        return web.json_response({"message_id": request.match_info["message_id"], "status": "delivered"})

    app = web.Application()
    app.router.add_get("/v1/messages/{message_id}", message)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()


async def test_a_rate_limited_call_waits_as_asked_and_then_succeeds(agent_that_limits):
    url, seen = agent_that_limits
    async with aiohttp.ClientSession() as session:
        answer = await AgentClient(session, url, "token").message("m-1")
    assert dict(answer) == {"message_id": "m-1", "status": "delivered"}
    assert len(seen) == 3


async def test_a_client_kept_waiting_too_long_gets_the_429(agent_that_limits, monkeypatch):
    url, seen = agent_that_limits
    monkeypatch.setattr(client_module, "MAX_RATE_LIMITED_WAIT_S", 0.5)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(AgentApiError) as refused:
            await AgentClient(session, url, "token").message("always-limited")
    assert (refused.value.status, refused.value.problem["code"]) == (429, "RATE_LIMITED")
    assert len(seen) == 3  # 0.2 + 0.2 waited; a third pause would pass 0.5 s


# -- the client and the agent's OpenAPI document hold together ------------------------------------------------


def client_methods() -> set[str]:
    """The public methods of `AgentClient` that call the agent (not the pollers built on them)."""
    return {
        name
        for name, member in inspect.getmembers(AgentClient, inspect.iscoroutinefunction)
        if not name.startswith(("_", "wait_for_"))
    }


def test_every_client_method_calls_an_operation_of_the_document():
    operation_ids = set(operations_by_id(AGENT_OPENAPI))
    assert set(OPERATIONS) == client_methods()
    assert set(OPERATIONS.values()) <= operation_ids
    assert set(TRANSFER_OPERATIONS.values()) <= operation_ids
    assert {name for name in TRANSFER_OPERATIONS if not callable(getattr(transfer, name, None))} == set()
    # Every operation of the document has a client, but the Prometheus scrape.
    called = set(OPERATIONS.values()) | set(TRANSFER_OPERATIONS.values()) | BUNDLE_OPERATIONS
    assert operation_ids - called == {"getMetrics"}


TYPED_ANSWERS: dict[str, Any] = {
    "Accepted": client_module.Accepted,
    "MessageStatus": client_module.MessageStatus,
    "Evidence": client_module.Evidence,
    "InboxPage": client_module.InboxPage,
    "InboxMessage": client_module.InboxMessage,
    "AttachmentState": client_module.AttachmentState,
    "Retrieved": client_module.Retrieved,
    "Case": client_module.Case,
    "CaseMessage": client_module.CaseMessage,
    "Deadline": client_module.Deadline,
    "Health": client_module.Health,
    "Problem": client_module.Problem,
}


@pytest.mark.parametrize("name", sorted(TYPED_ANSWERS))
def test_each_typed_answer_has_the_keys_of_its_schema(name):
    typed = TYPED_ANSWERS[name]
    schema = AGENT_OPENAPI["components"]["schemas"][name]
    assert set(typed.__required_keys__) == set(schema["required"]), "required keys differ"
    assert set(typed.__required_keys__ | typed.__optional_keys__) == set(schema["properties"]), "keys differ"


@pytest.fixture
async def two_agents(tmp_path):
    net = LocalNetwork()
    directory = net.directory()
    hooks = (DeliveryPolicy(), AddressPolicy.of(["127.0.0.0/8"]))
    bd = await start_agent(net, directory, BD, tmp_path, webhooks=hooks)
    ly = await start_agent(net, directory, LY, tmp_path, webhooks=hooks)
    try:
        yield bd, ly
    finally:
        await bd.close()
        await ly.close()


async def test_the_clients_requests_and_the_agents_real_answers_match_the_document(two_agents):
    """A whole exchange through `AgentClient` on two real agents: each request and answer, success or refusal,
    is validated against the schema the document gives its operation and status."""
    bd, ly = two_agents
    check = ContractCheck(AGENT_OPENAPI)
    request = sample(REQUEST_SAMPLE)
    request |= {"message_id": str(uuid.uuid4()), "case_id": "BD-LY-CLIENT-0001"}
    async with aiohttp.ClientSession() as session:
        bd_client = AgentClient(session, str(bd.http.make_url("")), TOKEN, observer=check)
        ly_client = AgentClient(session, str(ly.http.make_url("")), TOKEN, observer=check)
        accepted = await bd_client.submit(request, idempotency_key="PSD-OUT-CLIENT-0001-01")
        assert accepted == {"message_id": request["message_id"], "status": "queued"}
        await carry(bd, ly)
        page = await ly_client.inbox()
        assert [item["message_id"] for item in page["messages"]] == [request["message_id"]]
        retrieved = await ly_client.ack(request["message_id"], sender=BD)
        assert retrieved["sender"] == BD
        await return_evidence(ly, bd)
        status = await bd_client.message(request["message_id"])
        assert status["status"] == "retrieved"
        assert {item["type"] for item in status["evidence"]} >= {"DELIVERY", "RETRIEVAL"}
        assert (status["case_id"], status["expires_at"] > status["created_at"]) == ("BD-LY-CLIENT-0001", True)
        case = await bd_client.case("BD-LY-CLIENT-0001")
        assert case["state"] == "SUBMITTED"
        assert (await ly_client.case("BD-LY-CLIENT-0001"))["messages"][0]["direction"] == "received"
        assert (await bd_client.message_schema("MLA_REQUEST"))["type"] == "object"
        assert (await bd_client.health())["status"] == "ok"
        assert (await bd_client.openapi())["info"]["title"] == "Rogatory agent"
        sent = await bd_client.sent_messages("status=retrieved")
        assert [item["message_id"] for item in sent["messages"]] == [request["message_id"]]
        assert [item["case_id"] for item in (await bd_client.cases("counterpart=" + LY))["cases"]] == [
            "BD-LY-CLIENT-0001"
        ]
        assert (await ly_client.inbox_page("unacknowledged=true"))["messages"] == []
        assert len((await ly_client.list_page("/v1/inbox?limit=10"))["messages"]) == 1
        subscribed = await ly_client.subscribe("http://127.0.0.1:9/hooks", ["message.received"], "LY case system")
        assert subscribed["secret"].startswith("whsec_")
        assert [item["subscription_id"] for item in await ly_client.subscriptions()] == [subscribed["subscription_id"]]
        assert (await ly_client.subscription(subscribed["subscription_id"]))["state"] == "active"
        assert (await ly_client.resume_subscription(subscribed["subscription_id"]))["state"] == "active"
        await ly_client.unsubscribe(subscribed["subscription_id"])
        ping = await bd_client.start_connectivity_test(LY)
        assert (await bd_client.connectivity_test(ping["test_id"]))["state"] == "pending"
        refusals = []
        for call in (
            bd_client.submit(request | {"message_id": str(uuid.uuid4())}, idempotency_key="PSD-OUT-CLIENT-0001-01"),
            bd_client.submit(request | {"message_id": str(uuid.uuid4()), "payload": {}}),
            bd_client.submit(b"{not json", idempotency_key="PSD-OUT-CLIENT-0001-03"),
            bd_client.message(str(uuid.uuid4())),
            bd_client.message("not-a-uuid"),
            ly_client.ack(str(uuid.uuid4())),
            bd_client.case("BD-LY-NOTHING-HERE"),
            bd_client.inbox(after="x"),
            bd_client.evidence_bundle(f"/v1/messages/{request['message_id']}"),
        ):
            with pytest.raises(AgentApiError) as refused:
                await call
            refusals.append((refused.value.status, refused.value.problem["code"]))
    assert refusals == [
        (409, "IDEMPOTENCY_KEY_REUSED"),
        (422, "CONTENT_INVALID"),
        (400, "MALFORMED_JSON"),
        (404, "NOT_FOUND"),
        (400, "INVALID_IDENTIFIER"),
        (404, "NOT_FOUND"),
        (404, "NOT_FOUND"),
        (400, "INVALID_PARAMETER"),
        (503, "SERVICE_UNAVAILABLE"),  # these agents have no gateway audit API to prove anything with
    ]
    assert {operation for operation, _ in check.checked} == set(OPERATIONS.values())
    print(f"{len(check.checked)} calls checked against the document: {sorted(set(check.checked))}")


def test_the_contract_check_refuses_an_answer_its_schema_does_not_allow():
    check = ContractCheck(AGENT_OPENAPI)
    with pytest.raises(AssertionError, match="status_reason"):
        check("getMessageStatus", None, 200, {"message_id": str(uuid.uuid4()), "status": "queued", "evidence": []})
    with pytest.raises(AssertionError, match="not documented"):
        check("getCase", None, 418, {})
