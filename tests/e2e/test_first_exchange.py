"""The first real exchange, end to end over RabbitMQ, through a `dev up` network of real processes."""

from __future__ import annotations

import copy
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from deploy.client.agent_api import AgentApiError, AgentClient, document_of
from deploy.client.samples import ACKNOWLEDGEMENT_SAMPLE, REQUEST_SAMPLE, sample
from deploy.localnet.devstack import trusting
from protocol.encoding import b64encode, canonical_json, sha256_hex
from protocol.evidence import verify_evidence
from protocol.keys import SigningPrivateKey
from protocol.signing import SignedStatement

pytestmark = [pytest.mark.e2e, pytest.mark.broker]
BD, LY, BD_POLICE = "BD-MOHA-PSD", "LY-MLA-CA", "BD-POLICE-CID-HTU"


def fresh(document: dict[str, Any], case_id: str | None = None) -> dict[str, Any]:
    """A sample under a new message id and case, so tests sharing one network do not collide (a case has
    one request: a second MLA_REQUEST in a case is refused as an illegal transition)."""
    copied = copy.deepcopy(document)
    copied["message_id"] = str(uuid.uuid4())
    copied["case_id"] = case_id or f"BD-LY-E2E-{uuid.uuid4().hex[:12].upper()}"
    return copied


def strings_of(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for key, item in value.items() for s in (key, *strings_of(item))]
    if isinstance(value, list):
        return [s for item in value for s in strings_of(item)]
    return []


@pytest.fixture
async def session(stack: dict[str, Any]) -> AsyncIterator[aiohttp.ClientSession]:
    """A client of the stack's agents and of its HTTPS gateway (verified with the network's CA)."""
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout, connector=trusting(stack)) as client_session:
        yield client_session


def agent(stack: dict[str, Any], session: aiohttp.ClientSession, agency: str) -> AgentClient:
    entry = stack["agents"][agency]
    return AgentClient(session, entry["url"], entry["token"])


async def test_request_arrives_byte_identical_and_every_step_is_signed_evidence(stack, directory, session):
    """BD -> LY: the document arrives byte-identical (Arabic, Bengali included), status reaches
    `retrieved`, and every evidence statement verifies against the directory and names the digest."""
    bd, ly = agent(stack, session, BD), agent(stack, session, LY)
    request = fresh(sample(REQUEST_SAMPLE))
    accepted = await bd.submit(request)
    assert accepted == {"message_id": request["message_id"], "status": "queued"}

    received = await ly.wait_for_inbox(request["message_id"])
    for key, value in request.items():
        if key == "integrity":  # as sent, plus the document's own signature the sending agent adds (a JWS by BD)
            delivered = dict(document_of(received)[key])
            assert delivered.pop("signature")["signer"] == BD
            assert delivered == value
        else:
            assert document_of(received)[key] == value, key
    text = strings_of(document_of(received))
    assert any("\u0600" <= ch <= "\u06ff" for s in text for ch in s), "Arabic text arrived"
    assert any("\u0980" <= ch <= "\u09ff" for s in text for ch in s), "Bengali text arrived"
    assert sorted(strings_of(document_of(received)["payload"])) == sorted(strings_of(request["payload"]))
    assert sha256_hex(canonical_json(document_of(received))) == received["document_sha256"]
    assert (received["sender"], received["message_type"]) == (BD, "MLA_REQUEST")

    await ly.ack(request["message_id"])
    status = await bd.wait_for_status(request["message_id"], {"retrieved"})
    chain = {item["type"]: item for item in status["evidence"]}
    assert list(chain) == ["SUBMISSION_ACCEPTED", "RELAY_ACCEPTED", "DELIVERY", "RETRIEVAL"]
    for item in status["evidence"]:
        verified = verify_evidence(SignedStatement.model_validate(item["statement"]), directory, now=datetime.now(UTC))
        assert verified.statement.message_digest == status["message_digest"]
        assert str(verified.statement.message_id) == request["message_id"]
    assert (chain["DELIVERY"]["signed_by"], chain["RETRIEVAL"]["signed_by"]) == (LY, LY)
    assert chain["SUBMISSION_ACCEPTED"]["signed_by"] == directory.gateway.gateway_id


async def test_the_answer_flows_back_with_its_own_evidence(stack, session):
    """LY answers with an ACKNOWLEDGEMENT; BD receives it and LY sees it delivered and retrieved."""
    bd, ly = agent(stack, session, BD), agent(stack, session, LY)
    case = f"BD-LY-2025-{uuid.uuid4().hex[:4].upper()}"
    request = fresh(sample(REQUEST_SAMPLE), case)
    await bd.submit(request)
    await ly.wait_for_inbox(request["message_id"])
    answer = fresh(sample(ACKNOWLEDGEMENT_SAMPLE), case)
    answer["in_reply_to"] = request["message_id"]
    await ly.submit(answer)
    received = await bd.wait_for_inbox(answer["message_id"])
    assert received["in_reply_to"] == request["message_id"]
    assert document_of(received)["payload"]["note"] == answer["payload"]["note"]
    await bd.ack(answer["message_id"])
    await ly.wait_for_status(answer["message_id"], {"retrieved"})


async def test_exchange_without_an_agreement_is_refused_at_the_agent(stack, session):
    """BD's police unit may not write to Libya directly: 403 POLICY_DENIED, nothing queued."""
    police = agent(stack, session, BD_POLICE)
    request = fresh(sample(REQUEST_SAMPLE))
    request["sender"]["authority_id"] = BD_POLICE
    with pytest.raises(AgentApiError) as refused:
        await police.submit(request)
    assert refused.value.status == 403
    assert refused.value.problem["code"] == "POLICY_DENIED"


async def test_sending_as_another_agency_is_refused(stack, session):
    """An agency system cannot submit a document whose sender is another agency."""
    with pytest.raises(AgentApiError) as refused:
        await agent(stack, session, LY).submit(fresh(sample(REQUEST_SAMPLE)))
    assert (refused.value.status, refused.value.problem["code"]) == (403, "SENDER_NOT_OWN_AGENCY")


async def test_invalid_document_gets_every_field_error_at_once(stack, session):
    """A request missing required elements is 422 with each missing field located."""
    request = fresh(sample(REQUEST_SAMPLE))
    del request["payload"]["facts_summary"]
    del request["payload"]["purpose"]
    with pytest.raises(AgentApiError) as refused:
        await agent(stack, session, BD).submit(request)
    assert refused.value.status == 422
    locations = {tuple(error["loc"]) for error in refused.value.problem["errors"]}
    assert ("payload", "facts_summary") in locations
    assert ("payload", "purpose") in locations


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        (b"{not json", "application/json", 400, "MALFORMED_JSON"),
        (b'{"a":1,"a":2}', "application/json", 400, "DUPLICATE_KEY"),
        (b'{"schema":"mla-exchange/1.0"}', "text/plain", 415, "UNSUPPORTED_MEDIA_TYPE"),
        (b"[]", "application/json", 422, "CONTENT_INVALID"),
    ],
)
async def test_malformed_submissions_get_a_clear_4xx(stack, session, body, content_type, status, code):
    """Bad bodies are refused with their stable code and a problem+json answer."""
    entry = stack["agents"][BD]
    async with session.post(
        f"{entry['url']}/v1/messages",
        data=body,
        headers={"Authorization": f"Bearer {entry['token']}", "Content-Type": content_type},
    ) as response:
        assert response.status == status
        assert response.content_type == "application/problem+json"
        assert (await response.json())["code"] == code


async def test_missing_or_wrong_token_is_401(stack, session):
    """No token, or another agency's token, is 401 on every endpoint but /healthz and /openapi.json."""
    url = stack["agents"][BD]["url"]
    for headers in ({}, {"Authorization": f"Bearer {stack['agents'][LY]['token']}"}, {"Authorization": "Basic x"}):
        async with session.get(f"{url}/v1/inbox", headers=headers) as response:
            assert response.status == 401
            assert (await response.json())["code"] == "UNAUTHORIZED"
    async with session.get(f"{url}/healthz") as response:
        assert response.status == 200


async def test_resubmission_is_idempotent_and_reuse_for_another_document_is_409(stack, session):
    """Same id and document: same answer; same id or Idempotency-Key with another document: 409."""
    bd = agent(stack, session, BD)
    request = fresh(sample(REQUEST_SAMPLE))
    first = await bd.submit(request, idempotency_key=f"key-{request['message_id']}")
    again = await bd.submit(request, idempotency_key=f"key-{request['message_id']}")
    assert again["message_id"] == first["message_id"]
    changed = copy.deepcopy(request)
    changed["requesting_ref"] = "PSD/MLA/OUT/2025/9999"
    with pytest.raises(AgentApiError) as refused:
        await bd.submit(changed)
    assert (refused.value.status, refused.value.problem["code"]) == (409, "MESSAGE_ID_CONFLICT")
    changed.pop("message_id")
    with pytest.raises(AgentApiError) as refused:
        await bd.submit(changed, idempotency_key=f"key-{request['message_id']}")
    assert (refused.value.status, refused.value.problem["code"]) == (409, "IDEMPOTENCY_KEY_REUSED")


async def test_schema_and_openapi_are_served(stack, session):
    """The agent serves its OpenAPI document and the JSON Schema of each message type."""
    entry = stack["agents"][BD]
    async with session.get(f"{entry['url']}/openapi.json") as response:
        document = await response.json()
    assert "/v1/messages" in document["paths"]
    async with session.get(
        f"{entry['url']}/v1/schema/MLA_REQUEST", headers={"Authorization": f"Bearer {entry['token']}"}
    ) as response:
        assert response.status == 200
        assert "properties" in await response.json()


def test_audit_log_verifies_from_the_command_line(stack):
    """`rogatory audit verify --gateway URL` exits 0 and says the log is consistent."""
    state_dir = stack["network"]["state_dir"]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "deploy",
            "audit",
            "verify",
            "--gateway",
            stack["gateway"]["url"],
            "--state-dir",
            state_dir,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "VERDICT: CONSISTENT" in result.stdout


def test_audit_verify_with_a_wrong_authority_key_fails(stack):
    """Against another authority key, the same log does not verify (exit status of DIRECTORY_INVALID)."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "deploy",
            "audit",
            "verify",
            "--gateway",
            stack["gateway"]["url"],
            "--ca-file",
            stack["gateway"]["ca_file"],
            "--token",
            stack["gateway"]["auditor_token"],
            "--authority-key",
            b64encode(SigningPrivateKey.generate().public_key.raw),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 11, result.stdout + result.stderr
    assert "NOT CONSISTENT" in result.stdout


async def test_the_dev_stack_serves_the_gateway_over_https(stack, session):
    """`stack.json`'s gateway URL is https://, verified with the network's CA; a client without it is refused."""
    gateway = stack["gateway"]
    assert gateway["url"].startswith("https://")
    async with session.get(f"{gateway['url']}/healthz") as response:
        assert response.status == 200
    async with aiohttp.ClientSession() as untrusting:
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await untrusting.get(f"{gateway['url']}/healthz")
