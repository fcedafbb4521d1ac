"""Handling codes are enforced: a token sees only messages marked at or below its clearance.

A message above the token's clearance is answered exactly as a message that
is not there (404 `NOT_FOUND`, missing from lists): a 403 would tell the
holder of a RESTRICTED token that a SECRET message exists, with its id.
Each refusal leaves a `classified_read_refused` log line (and the 404s an
`api_request_refused` line).
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import test_utils
from structlog.testing import capture_logs

from agents.api import AgentApi
from agents.guard import ApiGuard, Clearance, TokenSpecInvalid, hash_token, parse_token_specs
from agents.receiving import InboxDelivery
from protocol.envelope import Recipient, seal
from protocol.ids import CaseId, MessageId
from protocol.topology import KIND_SEALED_MESSAGE
from tests.agents.harness import GATEWAY_USER, InProcessAgent, start_agent
from tests.security.attacks import everyone_may_talk, valid_document
from tests.security.test_adversarial_http import request_document
from tests.security.test_api_tokens import agent_context, call
from tests.support.network import BD, LY, NOW, LocalNetwork

RESTRICTED_READER, SECRET_READER, UNMARKED_READER = "restricted-desk-1", "secret-desk-22", "older-entry-333"


@dataclass
class Desks:
    """LY's agent holding a SECRET and a RESTRICTED request (a case each), and BD's holding a SECRET one it sent."""

    ly: test_utils.TestClient[Any, Any]
    bd: test_utils.TestClient[Any, Any]
    secret: str
    restricted: str
    sent_secret: str
    secret_case: str
    restricted_case: str


def sealed_request(net: LocalNetwork, marking: str) -> tuple[bytes, str, str]:
    """The sample request from BD to LY in a case of its own, marked `marking`: (wire, message id, case id)."""
    message_id = MessageId(uuid.uuid4())
    case_id = CaseId(f"BD-LY-2025-{uuid.uuid4().int % 10_000:04d}")
    document = json.loads(valid_document(message_id)) | {"classification": marking, "case_id": case_id}
    sealed = seal(
        json.dumps(document, ensure_ascii=False).encode("utf-8"),
        message_id=message_id,
        sender=BD,
        signing_key=net[BD].signing,
        recipients=[Recipient(LY, net[LY].encryption.public_key)],
        archive_key=net[BD].encryption.public_key,
        message_type="MLA_REQUEST",
        case_id=case_id,
        created_at=NOW,
        expires_at=NOW + timedelta(days=1),
        limits=net.limits,
    )
    return sealed.to_bytes(), str(message_id), case_id


def guarded(agent: InProcessAgent) -> test_utils.TestClient[Any, Any]:
    """`agent`'s real API with three reading tokens: cleared for RESTRICTED, for SECRET, and one naming no clearance."""
    guard = ApiGuard(
        parse_token_specs(
            [
                f"{hash_token(RESTRICTED_READER)}:read+ack+submit@RESTRICTED",
                f"{hash_token(SECRET_READER)}:read+ack@SECRET",
                f"{hash_token(UNMARKED_READER)}:read",
            ]
        ),
        clock=lambda: 0.0,
    )
    context = dataclasses.replace(agent_context(agent), guard=guard)
    return test_utils.TestClient(test_utils.TestServer(AgentApi(context).app()))


@pytest.fixture
async def desks(tmp_path: Path) -> AsyncIterator[Desks]:
    net = LocalNetwork()
    directory = everyone_may_talk(net)
    ly = await start_agent(net, directory, LY, tmp_path / "ly")
    bd = await start_agent(net, directory, BD, tmp_path / "bd")
    ids, cases = {}, {}
    for marking in ("SECRET", "RESTRICTED"):
        wire, ids[marking], cases[marking] = sealed_request(net, marking)
        received = await ly.receiver.handle(InboxDelivery(wire, KIND_SEALED_MESSAGE, GATEWAY_USER))
        assert received.result == "delivered", received
    sent = request_document(classification="SECRET")
    status, answer = await bd.submit(sent)
    assert status == 202, answer
    clients = guarded(ly), guarded(bd)
    for client in clients:
        await client.start_server()
    try:
        yield Desks(
            *clients, ids["SECRET"], ids["RESTRICTED"], sent["message_id"], cases["SECRET"], cases["RESTRICTED"]
        )
    finally:
        for client in clients:
            await client.close()
        await ly.close()
        await bd.close()


async def test_a_token_cleared_for_restricted_neither_lists_nor_reads_a_secret_message(desks: Desks) -> None:
    """RESTRICTED: the SECRET message is missing from the inbox; its case, ack and sent status are 404, and logged."""
    with capture_logs() as logs:
        status, inbox, _ = await call(desks.ly, "GET", "/v1/inbox", RESTRICTED_READER)
        assert status == 200
        assert [item["message_id"] for item in inbox["messages"]] == [desks.restricted]
        for client, method, path in (
            (desks.ly, "GET", f"/v1/cases/{desks.secret_case}"),
            (desks.ly, "POST", f"/v1/inbox/{desks.secret}/ack"),
            (desks.bd, "GET", f"/v1/messages/{desks.sent_secret}"),
        ):
            status, answer, _ = await call(client, method, path, RESTRICTED_READER, b"" if method == "POST" else None)
            assert (status, answer["code"]) == (404, "NOT_FOUND"), path
        status, answer, _ = await call(desks.ly, "POST", f"/v1/inbox/{desks.restricted}/ack", RESTRICTED_READER, b"")
        assert status == 200, answer
        assert (await call(desks.ly, "GET", f"/v1/cases/{desks.restricted_case}", RESTRICTED_READER))[0] == 200
    refused = [entry for entry in logs if entry["event"] == "classified_read_refused"]
    assert {entry["message_id"] for entry in refused} == {desks.secret, desks.sent_secret}
    assert {(entry["classification"], entry["clearance"]) for entry in refused} == {("SECRET", "RESTRICTED")}
    assert [entry["status"] for entry in logs if entry["event"] == "api_request_refused"] == [404, 404, 404]


async def test_a_token_cleared_for_secret_lists_and_reads_it(desks: Desks) -> None:
    """SECRET (and an entry naming no clearance, cleared for SECRET by default) lists, reads and acks the message."""
    for token in (SECRET_READER, UNMARKED_READER):
        status, inbox, _ = await call(desks.ly, "GET", "/v1/inbox", token)
        assert status == 200
        assert {item["message_id"] for item in inbox["messages"]} == {desks.secret, desks.restricted}
        status, case, _ = await call(desks.ly, "GET", f"/v1/cases/{desks.secret_case}", token)
        assert status == 200
        assert desks.secret in {message["message_id"] for message in case["messages"]}
        status, answer, _ = await call(desks.bd, "GET", f"/v1/messages/{desks.sent_secret}", token)
        assert status == 200, answer
    status, answer, _ = await call(desks.ly, "POST", f"/v1/inbox/{desks.secret}/ack", SECRET_READER, b"")
    assert status == 200, answer


def test_token_entries_carry_a_clearance_and_name_only_known_ones() -> None:
    """`HEX@LEVEL` and `HEX:scopes@LEVEL` set the clearance; a bare entry is cleared for SECRET; a typo is refused."""
    digest = hash_token("t")
    tokens = parse_token_specs([f"{digest}@RESTRICTED", f"{digest}:read@CONFIDENTIAL", digest, f"{digest}:read"])
    assert [token.clearance for token in tokens] == [
        Clearance.RESTRICTED,
        Clearance.CONFIDENTIAL,
        Clearance.SECRET,
        Clearance.SECRET,
    ]
    for bad in (f"{digest}@TOP_SECRET", f"{digest}:read@", f"{digest}@secret"):
        with pytest.raises(TokenSpecInvalid) as refused:
            parse_token_specs([bad])
        assert digest not in str(refused.value)


async def test_the_lists_leave_out_what_a_token_is_not_cleared_for(desks: Desks) -> None:
    """RESTRICTED: the SECRET sent message is missing from `GET /v1/messages`, the SECRET case from `GET /v1/cases`
    (whole, as its own page withholds it), and an unacknowledged filter does not bring them back; SECRET sees all."""
    for token, sent, cases in (
        (RESTRICTED_READER, [], [desks.restricted_case]),
        (SECRET_READER, [desks.sent_secret], [desks.secret_case, desks.restricted_case]),
    ):
        status, answer, _ = await call(desks.bd, "GET", "/v1/messages", token)
        assert status == 200, answer
        assert [item["message_id"] for item in answer["messages"]] == sent
        status, answer, _ = await call(desks.ly, "GET", "/v1/cases", token)
        assert status == 200, answer
        assert [item["case_id"] for item in answer["cases"]] == cases
        status, answer, _ = await call(desks.ly, "GET", "/v1/inbox?unacknowledged=true&message_type=MLA_REQUEST", token)
        assert status == 200, answer
        expected = [desks.restricted] if token == RESTRICTED_READER else [desks.secret, desks.restricted]
        assert [item["message_id"] for item in answer["messages"]] == expected
