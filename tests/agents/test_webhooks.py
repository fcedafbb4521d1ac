"""Webhooks to case systems: signed events, at least once, through a receiver that goes down, a restart, a suspension.

Two in-process agents on real SQLite stores (`tests.agents.harness`); the
events go over real HTTP to a real aiohttp endpoint on loopback
(`tests.support.webhooks`), which checks each signature as the Standard
Webhooks specification says. The dispatcher runs round by round (`tick`), so
nothing here waits on a timer but the short backoff the test chose.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog

from agents.guard import ALL_SCOPES, ApiToken
from agents.metrics import AgentMetrics
from agents.webhooks import (
    AddressPolicy,
    DeliveryPolicy,
    GuardedResolver,
    WebhookDispatcher,
    check_url_form,
    secret_key,
)
from protocol.encoding import canonical_json
from protocol.envelope import Recipient, seal
from protocol.ids import CaseId, MessageId
from protocol.limits import DEFAULT_LIMITS
from protocol.mla import validate_document
from protocol.storage import MAGIC, StorageKey
from runtime.tls import client_context
from tests.agents.harness import TOKEN, InProcessAgent, carry, return_evidence, start_agent
from tests.protocol.mla.mla_samples import SAMPLES_DIR, read_json
from tests.support.network import BD, LY, NOW, LocalNetwork
from tests.support.webhooks import WebhookReceiver, standard_signature_valid

LOOPBACK = AddressPolicy.of(["127.0.0.0/8"])
QUICK = DeliveryPolicy(
    timeout_s=2.0, retry_base_s=0.02, retry_max_s=0.1, suspend_after_failures=3, suspend_after_s=0.0, poll_s=0.05
)
PATIENT = DeliveryPolicy(
    timeout_s=2.0, retry_base_s=0.02, retry_max_s=0.1, suspend_after_failures=3, suspend_after_s=3600.0, poll_s=0.05
)
"""Suspends only after an hour of failures: a receiver down for a few rounds is retried, never suspended."""
RESTRICTED_TOKEN = "restricted-case-system"
READ_ONLY_TOKEN = "read-only-system"
OTHER_TOKEN = "another-case-system"


def _sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


EXTRA_TOKENS = (
    f"{_sha(RESTRICTED_TOKEN)}:read+webhooks@RESTRICTED",
    f"{_sha(READ_ONLY_TOKEN)}:read",
    f"{_sha(OTHER_TOKEN)}:read+webhooks",
)


def request_sample(case_id: str, **changes: Any) -> dict[str, Any]:
    document = read_json(SAMPLES_DIR / "BD-LY-2025-0011_01_MLA_REQUEST.json")
    assert isinstance(document, dict)
    return copy.deepcopy(document) | {"case_id": case_id, "message_id": str(uuid.uuid4())} | changes


def new_case() -> str:
    return f"BD-LY-W-{uuid.uuid4().hex[:8].upper()}"


async def start_pair(tmp_path: Path, policy: DeliveryPolicy) -> tuple[InProcessAgent, InProcessAgent]:
    """(BD, LY), both serving `/v1/subscriptions`, allowed to call loopback."""
    net = LocalNetwork()
    directory = net.directory()
    hooks = (policy, LOOPBACK)
    bd = await start_agent(net, directory, BD, tmp_path, tokens=EXTRA_TOKENS, webhooks=hooks)
    ly = await start_agent(net, directory, LY, tmp_path, tokens=EXTRA_TOKENS, webhooks=hooks)
    return bd, ly


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[InProcessAgent, InProcessAgent]]:
    """(BD, LY) delivering with `QUICK`: three failures in a row suspend."""
    bd, ly = await start_pair(tmp_path, QUICK)
    try:
        yield bd, ly
    finally:
        await bd.close()
        await ly.close()


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    """A case system's endpoint on 127.0.0.1."""
    endpoint = await WebhookReceiver().start()
    try:
        yield endpoint
    finally:
        await endpoint.stop()


async def subscribe(
    agent: InProcessAgent, url: str, types: list[str], token: str = TOKEN
) -> tuple[int, dict[str, Any]]:
    status, answer = await agent.call(
        "POST", "/v1/subscriptions", {"url": url, "event_types": types}, {"Authorization": f"Bearer {token}"}
    )
    return status, answer


async def deliver_all(agent: InProcessAgent, *, rounds: int = 50) -> None:
    """Rounds of the dispatcher until nothing is owed to an active subscription (backoff waited out)."""
    assert agent.webhooks is not None
    for _ in range(rounds):
        await agent.webhooks.dispatcher.tick()
        listed = await agent.store.webhook_subscriptions()
        if all(item.pending == 0 or item.state != "active" for item in listed):
            return
        await asyncio.sleep(QUICK.retry_max_s)
    raise AssertionError("events still owed after every round")


def verifier_of_the_guide() -> Callable[..., bool]:
    """The `verified` function docs/GUIDE.md gives integrators, taken from the guide itself."""
    guide = (Path(__file__).resolve().parents[2] / "docs" / "GUIDE.md").read_text(encoding="utf-8")
    code = guide.split("**Verify**", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec(code, namespace)  # noqa: S102 - the guide's own example, run as an integrator would
    verified: Callable[..., bool] = namespace["verified"]
    return verified


def stopped_at(moment: datetime) -> Callable[[], datetime]:
    """A clock stopped at `moment`."""
    return lambda: moment


def check_signed(hook_headers: dict[str, str], body: bytes, secret: str) -> None:
    assert hook_headers["webhook-id"].startswith("evt_")
    assert 0 <= int(hook_headers["webhook-timestamp"]) - int(NOW.timestamp()) < 60
    assert standard_signature_valid(secret, hook_headers, body)
    assert not standard_signature_valid("whsec_" + "A" * 44, hook_headers, body)


async def test_each_inbox_message_and_each_evidence_of_a_sent_message_is_a_signed_event(pair, receiver):
    """LY's case system hears of the request it received, BD's of each evidence of the request it sent
    (DELIVERY, then RETRIEVAL), each signed per Standard Webhooks and naming what to read."""
    bd, ly = pair
    status, ly_sub = await subscribe(ly, receiver.url, ["message.received"])
    assert status == 201, ly_sub
    assert ly_sub["secret"].startswith("whsec_")
    assert ly_sub["state"] == "active"
    status, bd_sub = await subscribe(bd, receiver.url, ["message.status_changed"])
    assert status == 201, bd_sub
    request = request_sample(new_case())
    assert (await bd.submit(request))[0] == 202
    assert [r.result for r in await carry(bd, ly)] == ["delivered"]
    await ly.ack(request["message_id"])
    await return_evidence(ly, bd)
    await deliver_all(ly)
    await deliver_all(bd)

    secrets = {"message.received": ly_sub["secret"], "message.status_changed": bd_sub["secret"]}
    guide_verified = verifier_of_the_guide()
    for hook in receiver.hooks:
        check_signed(hook.headers, hook.body, secrets[hook.event["type"]])
        assert guide_verified(secrets[hook.event["type"]], hook.headers, hook.body, tolerance_s=10**9)
        assert not guide_verified(secrets[hook.event["type"]], hook.headers, hook.body + b" ", tolerance_s=10**9)
    (received,) = receiver.events("message.received")
    assert received["data"]["message_id"] == request["message_id"]
    assert (received["data"]["sender"], received["data"]["case_id"]) == (BD, request["case_id"])
    inbox = (await ly.call("GET", f"/v1/inbox?after={received['data']['inbox_seq'] - 1}&limit=1"))[1]
    assert inbox["messages"][0]["message_id"] == request["message_id"]
    changes = [event["data"] for event in receiver.events("message.status_changed")]
    assert [(c["evidence_type"], c["previous_status"], c["status"]) for c in changes] == [
        ("DELIVERY", "submitted", "delivered"),
        ("RETRIEVAL", "delivered", "retrieved"),
    ]
    assert {c["message_id"] for c in changes} == {request["message_id"]}
    evidence = (await bd.message(request["message_id"]))["evidence"]
    assert {c["evidence_type"] for c in changes} == {item["type"] for item in evidence}
    assert len({hook.event_id for hook in receiver.hooks}) == len(receiver.hooks) == 3
    listed = (await bd.call("GET", "/v1/subscriptions"))[1]["subscriptions"]
    assert [(s["delivered_events"], s["pending_events"]) for s in listed] == [(2, 0)]
    assert "secret" not in listed[0]


async def test_a_receiver_down_for_a_while_gets_every_event_after_in_order_with_the_retries_counted(tmp_path, receiver):
    """Connections refused for five rounds (backing off; failing for less than the suspension period), then the
    endpoint is back: every event arrives once, in the order it happened, the failed attempts counted."""
    bd, ly = await start_pair(tmp_path, PATIENT)
    try:
        await _down_then_up(bd, ly, receiver)
    finally:
        await bd.close()
        await ly.close()


async def _down_then_up(bd: InProcessAgent, ly: InProcessAgent, receiver: WebhookReceiver) -> None:
    _, sub = await subscribe(ly, receiver.url, ["message.received"])
    await receiver.stop()
    sent = []
    for _ in range(3):
        request = request_sample(new_case())
        assert (await bd.submit(request))[0] == 202
        sent.append(request["message_id"])
    await carry(bd, ly)
    assert ly.webhooks is not None
    for _ in range(5):
        await ly.webhooks.dispatcher.tick()
        await asyncio.sleep(PATIENT.retry_max_s)
    (down,) = (await ly.call("GET", "/v1/subscriptions"))[1]["subscriptions"]
    assert down["pending_events"] == 3
    assert down["consecutive_failures"] == down["failed_attempts"] > PATIENT.suspend_after_failures
    assert down["state"] == "active"
    assert down["last_error"].startswith("ClientConnectorError")
    assert down["failing_since"] is not None
    await receiver.start()
    await deliver_all(ly)
    assert [event["data"]["message_id"] for event in receiver.events("message.received")] == sent
    for hook in receiver.hooks:
        assert standard_signature_valid(sub["secret"], hook.headers, hook.body)
    (up,) = (await ly.call("GET", "/v1/subscriptions"))[1]["subscriptions"]
    assert (up["pending_events"], up["delivered_events"], up["consecutive_failures"]) == (0, 3, 0)
    assert up["failed_attempts"] == down["failed_attempts"]


async def test_a_subscription_that_keeps_failing_is_suspended_logged_and_resumed_by_its_owner(pair, receiver):
    """Three answers of 500 suspend it (`webhook_subscription_suspended`, listed `suspended`); events go on being
    kept; resumed, the kept events flow to the repaired endpoint."""
    bd, ly = pair
    _, sub = await subscribe(ly, receiver.url, ["message.received"])
    receiver.answer_status = 500
    request = request_sample(new_case())
    await bd.submit(request)
    await carry(bd, ly)
    with structlog.testing.capture_logs() as logs:
        await deliver_all(ly)
    assert [entry["reason"] for entry in logs if entry["event"] == "webhook_subscription_suspended"] == ["failing"]
    (suspended,) = (await ly.call("GET", "/v1/subscriptions"))[1]["subscriptions"]
    assert (suspended["state"], suspended["state_reason"]) == ("suspended", "failing")
    assert suspended["consecutive_failures"] == QUICK.suspend_after_failures
    metrics = AgentMetrics()
    await metrics.refresh(ly.store, {}, NOW)
    exposition = metrics.render().decode()
    assert 'rogatory_agent_webhook_subscriptions{state="suspended"} 1.0' in exposition
    assert "rogatory_agent_webhook_pending_events 1.0" in exposition
    assert len(receiver.hooks) == QUICK.suspend_after_failures
    later = request_sample(new_case())
    await bd.submit(later)
    await carry(bd, ly)
    assert ly.webhooks is not None
    await ly.webhooks.dispatcher.tick()
    assert len(receiver.hooks) == QUICK.suspend_after_failures, "a suspended subscription is not called"
    receiver.answer_status = 204
    receiver.hooks.clear()
    status, resumed = await ly.call("POST", f"/v1/subscriptions/{sub['subscription_id']}/resume")
    assert (status, resumed["state"], resumed["pending_events"]) == (200, "active", 2)
    await deliver_all(ly)
    ids = [event["data"]["message_id"] for event in receiver.events("message.received")]
    assert ids == [request["message_id"], later["message_id"]]


async def test_a_success_between_failures_starts_the_count_again(pair, receiver):
    """Two failures, then the first event goes through and the second fails: one failure in a row, not three,
    so the subscription is not suspended (only failures in a row count)."""
    bd, ly = pair
    await subscribe(ly, receiver.url, ["message.received"])
    receiver.answers = [500, 500, 204]
    receiver.answer_status = 500
    for _ in range(2):
        await bd.submit(request_sample(new_case()))
    await carry(bd, ly)
    assert ly.webhooks is not None
    for _ in range(3):
        await ly.webhooks.dispatcher.tick()
        await asyncio.sleep(QUICK.retry_max_s)
    (listed,) = (await ly.call("GET", "/v1/subscriptions"))[1]["subscriptions"]
    assert (listed["state"], listed["delivered_events"], listed["pending_events"]) == ("active", 1, 1)
    assert (listed["consecutive_failures"], listed["failed_attempts"]) == (1, 3)


async def test_pending_events_survive_a_restart_none_lost_none_invented(tmp_path, receiver):
    """The agent stops with three events owed to a dead endpoint; the store reopened by a new agent (new
    dispatcher) delivers exactly those three, signed with the secret given before the restart (which the
    database holds sealed under the storage key, never in plain)."""
    net = LocalNetwork()
    directory = net.directory()
    key = StorageKey.generate()
    bd = await start_agent(net, directory, BD, tmp_path, webhooks=(QUICK, LOOPBACK))
    ly = await start_agent(net, directory, LY, tmp_path, webhooks=(QUICK, LOOPBACK), storage_key=key)
    _, sub = await subscribe(ly, receiver.url, ["message.received"])
    await receiver.stop()
    sent = []
    for _ in range(3):
        request = request_sample(new_case())
        await bd.submit(request)
        sent.append(request["message_id"])
    await carry(bd, ly)
    assert ly.webhooks is not None
    await ly.webhooks.dispatcher.tick()
    await ly.close()
    await bd.close()
    await receiver.start()
    with sqlite3.connect(tmp_path / f"{LY}.db") as raw:
        ((stored,),) = raw.execute("SELECT secret FROM webhook_subscriptions").fetchall()
    assert stored.startswith(MAGIC), "the secret is sealed at rest"
    assert secret_key(sub["secret"]) not in stored
    again = await start_agent(net, directory, LY, tmp_path, webhooks=(QUICK, LOOPBACK), storage_key=key)
    try:
        await deliver_all(again)
        assert [event["data"]["message_id"] for event in receiver.events("message.received")] == sent
        assert all(standard_signature_valid(sub["secret"], hook.headers, hook.body) for hook in receiver.hooks)
    finally:
        await again.close()


async def test_a_message_refused_by_its_case_makes_no_event(pair, receiver):
    """The event is written in the transaction that stores the message: a FINAL_EXECUTION sealed straight after
    the request (its case refuses it, the transaction is undone) is not stored, and no event announces it."""
    bd, ly = pair
    await subscribe(bd, receiver.url, ["message.received"])
    case_id = new_case()
    await bd.submit(request_sample(case_id))
    await carry(bd, ly)
    final = read_json(SAMPLES_DIR / "BD-LY-2025-0011_05_FINAL_EXECUTION.json")
    assert isinstance(final, dict)
    final |= {"case_id": case_id, "message_id": str(uuid.uuid4())}
    document = validate_document(canonical_json(final))
    sealed = seal(
        canonical_json(final),
        message_id=MessageId(uuid.UUID(final["message_id"])),
        sender=LY,
        signing_key=ly.keys.signing,
        recipients=[Recipient(BD, ly.directory.agency(BD).current_encryption_key(NOW).recipient_key)],
        archive_key=None,
        message_type=document.message_type,
        case_id=CaseId(case_id),
        created_at=NOW,
        expires_at=NOW + timedelta(hours=1),
        limits=DEFAULT_LIMITS,
    )
    refused = await bd.receiver.receive_message(sealed.to_bytes())
    assert (refused.result, refused.code) == ("refused", "ILLEGAL_TRANSITION")
    await deliver_all(bd)
    assert receiver.hooks == []
    assert (await bd.call("GET", "/v1/subscriptions"))[1]["subscriptions"][0]["pending_events"] == 0


async def test_deadlines_due_and_overdue_are_each_announced_once(pair, receiver):
    """On its due day a deadline is `case.deadline_due`, the day after `case.deadline_overdue`; scanning again
    announces neither a second time."""
    bd, ly = pair
    case_id = new_case()
    await subscribe(ly, receiver.url, ["case.deadline_due", "case.deadline_overdue"])
    await bd.submit(request_sample(case_id))
    await carry(bd, ly)
    deadlines = (await ly.case(case_id))["deadlines"]
    assert deadlines, "the request sets deadlines"
    first_due = min(date.fromisoformat(item["due"]) for item in deadlines)
    on_due_day = datetime.combine(first_due, time(12), tzinfo=UTC)
    day_after = on_due_day + timedelta(days=1)
    due_then = {(d["kind"], d["due"]) for d in deadlines if date.fromisoformat(d["due"]) == first_due}
    for moment in (on_due_day, on_due_day, day_after, day_after):
        dispatcher = WebhookDispatcher(
            store=ly.store,
            owner=lambda sha: ApiToken(sha, ALL_SCOPES),
            clock=stopped_at(moment),
            policy=QUICK,
            addresses=LOOPBACK,
            tls=client_context(None),
            cases=ly.cases,
        )
        try:
            await dispatcher.scan_deadlines()
            for _ in range(3):
                await dispatcher.tick()
        finally:
            await dispatcher.close()
    due = [(e["data"]["kind"], e["data"]["due"]) for e in receiver.events("case.deadline_due")]
    overdue = [(e["data"]["kind"], e["data"]["due"]) for e in receiver.events("case.deadline_overdue")]
    assert sorted(due) == sorted(due_then)
    assert sorted(overdue) == sorted(due_then)
    assert {e["data"]["case_id"] for e in receiver.events()} == {case_id}


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://127.0.0.1/hooks", "http:// or https://"),
        ("file:///etc/passwd", "http:// or https://"),
        ("http://user:pw@127.0.0.1/hooks", "credentials"),
        ("http://10.1.2.3/hooks", "loopback"),
        ("https://169.254.169.254/latest/meta-data", "may not reach"),
        ("https://10.0.0.7/hooks", "may not reach"),
        ("https://[::1]:8443/hooks", "may not reach"),
        ("https://localhost/hooks", "may not reach"),
        ("not a url", "http:// or https://"),
    ],
)
async def test_a_subscription_url_the_agent_may_not_call_is_refused(tmp_path, url, why):
    """Only http(s), no credentials, http only on loopback, and no address outside public ones and the
    operator's networks (here none): the cloud metadata address, private and loopback ones are refused."""
    net = LocalNetwork()
    agent = await start_agent(net, net.directory(), LY, tmp_path, webhooks=(QUICK, AddressPolicy()))
    try:
        status, answer = await subscribe(agent, url, ["message.received"])
        assert (status, answer["code"]) == (400, "WEBHOOK_URL_REFUSED"), answer
        assert why in answer["detail"]
        assert (await agent.call("GET", "/v1/subscriptions"))[1] == {"subscriptions": []}
    finally:
        await agent.close()


async def test_a_redirect_is_a_failure_never_followed(pair, receiver):
    """An endpoint answering 307 to an address inside is not followed: the attempt failed, nothing else called."""
    bd, ly = pair
    elsewhere = await WebhookReceiver().start()
    try:
        receiver.redirect_to = elsewhere.url
        await subscribe(ly, receiver.url, ["message.received"])
        await bd.submit(request_sample(new_case()))
        await carry(bd, ly)
        assert ly.webhooks is not None
        await ly.webhooks.dispatcher.tick()
        (listed,) = (await ly.call("GET", "/v1/subscriptions"))[1]["subscriptions"]
        assert (listed["pending_events"], listed["last_error"]) == (1, "HTTP 307")
        assert elsewhere.hooks == []
    finally:
        await elsewhere.stop()


async def test_a_subscriber_gets_only_what_its_token_may_read_and_manages_only_its_own(pair, receiver):
    """A RESTRICTED token is not told of a CONFIDENTIAL message; a token without `webhooks` cannot subscribe;
    another token neither sees nor deletes nor resumes someone else's subscription."""
    bd, ly = pair
    status, restricted = await subscribe(ly, receiver.url, ["message.received"], token=RESTRICTED_TOKEN)
    assert status == 201, restricted
    status, refused = await subscribe(ly, receiver.url, ["message.received"], token=READ_ONLY_TOKEN)
    assert (status, refused["code"]) == (403, "FORBIDDEN")
    secret_doc = request_sample(new_case(), classification="CONFIDENTIAL")
    open_doc = request_sample(new_case(), classification="RESTRICTED")
    await bd.submit(secret_doc)
    await bd.submit(open_doc)
    await carry(bd, ly)
    await deliver_all(ly)
    assert [e["data"]["message_id"] for e in receiver.events()] == [open_doc["message_id"]]
    other = {"Authorization": f"Bearer {OTHER_TOKEN}"}
    assert (await ly.call("GET", "/v1/subscriptions", headers=other))[1] == {"subscriptions": []}
    path = f"/v1/subscriptions/{restricted['subscription_id']}"
    assert (await ly.call("DELETE", path, headers=other))[0] == 404
    assert (await ly.call("POST", f"{path}/resume", headers=other))[0] == 404
    mine = {"Authorization": f"Bearer {RESTRICTED_TOKEN}"}
    assert (await ly.call("GET", path, headers=mine))[1]["delivered_events"] == 1
    deleted = await ly.http.request("DELETE", path, headers=mine)
    assert deleted.status == 204
    assert (await ly.call("GET", path, headers=mine))[0] == 404


async def test_a_subscription_whose_token_is_withdrawn_is_suspended_and_calls_nobody(pair, receiver):
    """The owner's token revoked (the guard no longer holds it): the dispatcher suspends the subscription
    (`owner_token_withdrawn`) rather than send what that token may no longer read."""
    bd, ly = pair
    _, sub = await subscribe(ly, receiver.url, ["message.received"])
    await bd.submit(request_sample(new_case()))
    await carry(bd, ly)
    revoked = WebhookDispatcher(
        store=ly.store,
        owner=lambda _sha: None,
        clock=stopped_at(NOW),
        policy=QUICK,
        addresses=LOOPBACK,
        tls=client_context(None),
    )
    try:
        with structlog.testing.capture_logs() as logs:
            await revoked.tick()
    finally:
        await revoked.close()
    assert receiver.hooks == []
    assert [entry["reason"] for entry in logs if entry["event"] == "webhook_subscription_suspended"] == [
        "owner_token_withdrawn"
    ]
    listed = (await ly.call("GET", f"/v1/subscriptions/{sub['subscription_id']}"))[1]
    assert (listed["state"], listed["state_reason"], listed["pending_events"]) == (
        "suspended",
        "owner_token_withdrawn",
        1,
    )


async def test_the_agent_keeps_at_most_its_number_of_subscriptions(tmp_path, receiver):
    """Past `max_subscriptions`, `409 TOO_MANY_SUBSCRIPTIONS`; deleting one makes room."""
    net = LocalNetwork()
    agent = await start_agent(
        net, net.directory(), LY, tmp_path, webhooks=(DeliveryPolicy(max_subscriptions=1), LOOPBACK)
    )
    try:
        status, first = await subscribe(agent, receiver.url, ["message.received"])
        assert status == 201
        status, refused = await subscribe(agent, receiver.url, ["case.deadline_due"])
        assert (status, refused["code"]) == (409, "TOO_MANY_SUBSCRIPTIONS")
        status, unknown = await subscribe(agent, receiver.url, ["message.deleted"])
        assert (status, unknown["code"]) == (400, "INVALID_PARAMETER")
        deleted = await agent.http.request(
            "DELETE", f"/v1/subscriptions/{first['subscription_id']}", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert deleted.status == 204
        assert (await subscribe(agent, receiver.url, ["case.deadline_due"]))[0] == 201
    finally:
        await agent.close()


async def test_events_kept_for_a_suspended_subscription_are_bounded_and_the_drop_counted(tmp_path, receiver):
    """With room for two, the third and fourth events push the oldest out; `dropped_events` says how many."""
    net = LocalNetwork()
    directory = net.directory()
    small = DeliveryPolicy(max_pending_events=2, poll_s=0.05)
    bd = await start_agent(net, directory, BD, tmp_path, webhooks=(small, LOOPBACK))
    ly = await start_agent(net, directory, LY, tmp_path, webhooks=(small, LOOPBACK))
    try:
        _, sub = await subscribe(ly, receiver.url, ["message.received"])
        async with ly.store.transaction() as tx:
            await tx.set_webhook_state(sub["subscription_id"], "suspended", "failing", "2026-11-29T10:00:00.000Z")
        sent = []
        for _ in range(4):
            request = request_sample(new_case())
            await bd.submit(request)
            sent.append(request["message_id"])
        await carry(bd, ly)
        assert ly.webhooks is not None
        await ly.webhooks.dispatcher.tick()
        (listed,) = (await ly.call("GET", "/v1/subscriptions"))[1]["subscriptions"]
        assert (listed["pending_events"], listed["dropped_events"]) == (2, 2)
        await ly.call("POST", f"/v1/subscriptions/{sub['subscription_id']}/resume")
        await deliver_all(ly)
        assert [event["data"]["message_id"] for event in receiver.events()] == sent[2:]
    finally:
        await bd.close()
        await ly.close()


def test_the_url_form_is_checked_before_any_address():
    """http:// beyond loopback is allowed only when the operator says so."""
    assert check_url_form("http://127.0.0.1:9/x", AddressPolicy()) == ("127.0.0.1", 9)
    assert check_url_form("http://case.example/x", AddressPolicy(allow_plain_http=True)) == ("case.example", 80)
    assert check_url_form("https://case.example/x", AddressPolicy()) == ("case.example", 443)


def test_only_the_operators_networks_are_reachable_and_public_addresses_only_when_allowed():
    """Nothing by default; the listed networks; public addresses only with the switch; never a mapped loopback."""
    assert not AddressPolicy().allows("93.184.216.34")
    assert AddressPolicy(allow_public=True).allows("93.184.216.34")
    assert not AddressPolicy(allow_public=True).allows("10.0.0.1")
    assert not AddressPolicy(allow_public=True).allows("169.254.169.254")
    assert not AddressPolicy(allow_public=True).allows("::ffff:127.0.0.1")
    assert AddressPolicy.of(["10.20.0.0/16"]).allows("10.20.3.4")
    assert not AddressPolicy.of(["10.20.0.0/16"]).allows("10.21.0.1")
    assert AddressPolicy.of(["127.0.0.0/8"]).allows("::ffff:127.0.0.1")


async def test_a_name_resolving_inward_is_refused_at_connection_time_too():
    """The client's resolver checks each connection's addresses, so a name re-pointed after subscribing fails."""
    refusing = GuardedResolver(AddressPolicy(allow_public=True))
    allowing = GuardedResolver(LOOPBACK)
    try:
        with pytest.raises(OSError, match="may not reach"):
            await refusing.resolve("localhost", 80)
        assert {item["host"] for item in await allowing.resolve("localhost", 80)} <= {"127.0.0.1", "::1"}
    finally:
        await refusing.close()
        await allowing.close()
