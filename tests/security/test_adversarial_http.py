"""Adversarial input over the agent's HTTP API: each bad request gets a clear 4xx with a stable code.

The agent runs in this process behind a real HTTP server on loopback (the
real API, store, case book). Every refusal is an `application/problem+json`
answer with its `code` and one `api_request_refused` log line naming that
code; requests so broken that the HTTP parser refuses them get a bare 400.
After the whole corpus, the agent still answers and a good message is
accepted.
"""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from tests.agents.harness import TOKEN, InProcessAgent, start_agent
from tests.security.attacks import valid_document
from tests.support.network import BD, LocalNetwork

AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON = {"Content-Type": "application/json"}


def request_document(**changes: object) -> dict[str, Any]:
    """The sample MLA request from BD to LY under a new id, with `changes`."""
    document: dict[str, Any] = json.loads(valid_document(uuid.uuid4()))  # type: ignore[arg-type]
    document["case_id"] = f"BD-LY-HTTP-{uuid.uuid4().hex[:10].upper()}"
    document.update(changes)
    return document


def body_of(document: dict[str, Any]) -> bytes:
    return json.dumps(document, ensure_ascii=False).encode("utf-8")


@dataclass(frozen=True)
class BadRequest:
    """One bad request and the answer it must get."""

    name: str
    status: int
    code: str
    method: str = "POST"
    path: str = "/v1/messages"
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=lambda: AUTH | JSON)


def out_of_range_submissions(sample: bytes) -> dict[str, tuple[bytes, str]]:
    """A real document with a number no parser may let through in its `sequence` or deep in its payload."""
    in_sequence = sample[:-1] + b', "sequence": %s}'
    in_payload = sample.replace(b'"payload": {', b'"payload": {"x-number": %s, ', 1)
    assert in_payload != sample
    return {
        "huge_integer": (in_sequence % (b"9" * 5000), "NUMBER_OUT_OF_RANGE"),
        "huge_negative_integer_in_payload": (in_payload % (b"-" + b"9" * 5000), "NUMBER_OUT_OF_RANGE"),
        "integer_beyond_2_53": (in_sequence % str(2**63).encode(), "NUMBER_OUT_OF_RANGE"),
        "overflowing_float_in_payload": (in_payload % b"1e400", "NUMBER_OUT_OF_RANGE"),
        "infinity": (in_sequence % b"Infinity", "MALFORMED_JSON"),
        "minus_infinity_in_payload": (in_payload % b"-Infinity", "MALFORMED_JSON"),
        "nan_in_payload": (in_payload % b"NaN", "MALFORMED_JSON"),
    }


def corpus() -> list[BadRequest]:
    """At least 30 bad requests over the API."""
    sample = body_of(request_document())
    lookalike_id = str(uuid.uuid4())[:-1] + "\u0430"  # Cyrillic a in a message id
    return [
        # Malformed and truncated JSON
        BadRequest("malformed_json", 400, "MALFORMED_JSON", body=b"{"),
        BadRequest("truncated_json", 400, "MALFORMED_JSON", body=sample.rsplit(b",", 3)[0]),
        BadRequest("empty_body", 400, "MALFORMED_JSON", body=b""),
        BadRequest("byte_order_mark", 400, "MALFORMED_JSON", body=b"\xef\xbb\xbf" + sample),
        BadRequest("nan_constant", 400, "MALFORMED_JSON", body=b'{"sequence": NaN}'),
        *(
            BadRequest(f"number_{name}", 400, code, body=body)
            for name, (body, code) in out_of_range_submissions(sample).items()
        ),
        BadRequest("duplicate_key", 400, "DUPLICATE_KEY", body=sample[:-1] + b', "case_id": "X"}'),
        # Deep nesting, huge strings and arrays
        BadRequest("deep_nesting", 400, "NESTING_TOO_DEEP", body=b"[" * 5000 + b"]" * 5000),
        BadRequest("huge_string", 413, "TOO_LARGE", body=b'{"x": "' + b"A" * (5 * 1024 * 1024) + b'"}'),
        BadRequest("huge_array", 422, "CONTENT_INVALID", body=body_of(request_document(languages=[1] * 200_000))),
        # Invalid UTF-8 and null bytes
        BadRequest("invalid_utf8", 400, "INVALID_UNICODE", body=b'{"case_id": "\xff\xfe"}'),
        BadRequest("null_byte_in_string", 400, "INVALID_UNICODE", body=body_of(request_document(case_id="A\x00B"))),
        BadRequest("lone_surrogate", 400, "INVALID_UNICODE", body=b'{"case_id": "\\ud800"}'),
        # Wrong types
        BadRequest("top_level_array", 422, "CONTENT_INVALID", body=b"[1, 2, 3]"),
        BadRequest("top_level_null", 422, "CONTENT_INVALID", body=b"null"),
        BadRequest("message_type_number", 422, "CONTENT_INVALID", body=body_of(request_document(message_type=5))),
        BadRequest("payload_string", 422, "CONTENT_INVALID", body=body_of(request_document(payload="x"))),
        BadRequest("sequence_float", 422, "CONTENT_INVALID", body=body_of(request_document(sequence=1.5))),
        # Look-alike Unicode in ids
        BadRequest(
            "lookalike_sender",
            422,
            "CONTENT_INVALID",
            body=body_of(
                request_document(sender={"state": "BD", "authority_id": "\u0412D-MOHA-PSD", "role": "requesting"})
            ),
        ),
        BadRequest(
            "lookalike_recipient",
            422,
            "CONTENT_INVALID",
            body=body_of(
                request_document(recipient={"state": "LY", "authority_id": "LY-MLA-\u0421A", "role": "requested"})
            ),
        ),
        BadRequest(
            "lookalike_message_id", 422, "CONTENT_INVALID", body=body_of(request_document(message_id=lookalike_id))
        ),
        BadRequest("lookalike_in_path", 400, "INVALID_IDENTIFIER", method="GET", path=f"/v1/messages/{lookalike_id}"),
        # Bad or missing auth
        BadRequest("no_token", 401, "UNAUTHORIZED", body=sample, headers=JSON),
        BadRequest("wrong_token", 401, "UNAUTHORIZED", body=sample, headers=JSON | {"Authorization": "Bearer nope"}),
        BadRequest(
            "basic_scheme", 401, "UNAUTHORIZED", body=sample, headers=JSON | {"Authorization": f"Basic {TOKEN}"}
        ),
        BadRequest("empty_bearer", 401, "UNAUTHORIZED", body=sample, headers=JSON | {"Authorization": "Bearer "}),
        BadRequest(
            "huge_token", 401, "UNAUTHORIZED", body=sample, headers=JSON | {"Authorization": "Bearer " + "t" * 6000}
        ),
        BadRequest(
            "token_prefix", 401, "UNAUTHORIZED", body=sample, headers=JSON | {"Authorization": f"Bearer {TOKEN[:-1]}"}
        ),
        # Wrong content types
        BadRequest(
            "text_plain", 415, "UNSUPPORTED_MEDIA_TYPE", body=sample, headers=AUTH | {"Content-Type": "text/plain"}
        ),
        BadRequest(
            "form",
            415,
            "UNSUPPORTED_MEDIA_TYPE",
            body=b"a=b",
            headers=AUTH | {"Content-Type": "application/x-www-form-urlencoded"},
        ),
        BadRequest("no_content_type", 415, "UNSUPPORTED_MEDIA_TYPE", body=sample, headers=AUTH),
        # Absurd headers and parameters
        BadRequest(
            "idempotency_key_too_long",
            400,
            "INVALID_PARAMETER",
            body=sample,
            headers=AUTH | JSON | {"Idempotency-Key": "k" * 500},
        ),
        BadRequest(
            "idempotency_key_unicode",
            400,
            "INVALID_PARAMETER",
            body=sample,
            headers=AUTH | JSON | {"Idempotency-Key": "\u202ekey"},
        ),
        BadRequest(
            "many_junk_headers",
            401,
            "UNAUTHORIZED",
            body=sample,
            headers=JSON | {f"X-Junk-{i}": "j" * 50 for i in range(80)},
        ),
        BadRequest("negative_limit", 400, "INVALID_PARAMETER", method="GET", path="/v1/inbox?limit=-1"),
        BadRequest("non_numeric_limit", 400, "INVALID_PARAMETER", method="GET", path="/v1/inbox?limit=abc"),
        BadRequest("huge_limit", 400, "INVALID_PARAMETER", method="GET", path="/v1/inbox?limit=99999999999999999999"),
        BadRequest("unknown_message", 404, "NOT_FOUND", method="GET", path=f"/v1/messages/{uuid.uuid4()}"),
        BadRequest("ack_unknown_message", 404, "NOT_FOUND", path=f"/v1/inbox/{uuid.uuid4()}/ack", body=b""),
        BadRequest("unknown_schema", 404, "NOT_FOUND", method="GET", path="/v1/schema/MLA_REQUE\u0405T"),
        BadRequest(
            "wrong_method", 405, "METHOD_NOT_ALLOWED", method="DELETE", path="/v1/messages/" + str(uuid.uuid4())
        ),
        BadRequest(
            "sender_not_own_agency",
            403,
            "SENDER_NOT_OWN_AGENCY",
            body=body_of(
                request_document(sender={"state": "BD", "authority_id": "BD-POLICE-CID-HTU", "role": "requesting"})
            ),
        ),
    ]


RAW_REQUESTS = [
    b"GARBAGE\r\n\r\n",
    b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
    b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"GET /v1/inbox HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n",
    b"GET /v1/inbox HTTP/1.1\r\nHost: x\r\nBad\x00Header: 1\r\n\r\n",
]
"""Requests the HTTP parser itself refuses: a bare 4xx, before any handler runs."""


@pytest.fixture
async def bd_agent(tmp_path: Path) -> AsyncIterator[InProcessAgent]:
    net = LocalNetwork()
    agent = await start_agent(net, net.directory(), BD, tmp_path)
    yield agent
    await agent.close()


async def raw_exchange(agent: InProcessAgent, request: bytes) -> int:
    """Send raw bytes to the agent's port; the status of its answer."""
    server = agent.http.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(request)
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), timeout=10)
    finally:
        writer.close()
    return int(status_line.split()[1])


async def test_bad_http_requests_each_get_a_4xx_with_a_stable_code_and_a_log_entry(bd_agent: InProcessAgent) -> None:
    """30+ bad requests: each answered with its status and problem code, each refusal logged with that code."""
    requests = corpus()
    assert len(requests) >= 30
    answers: dict[str, tuple[int, str | None]] = {}
    with capture_logs() as logs:
        for item in requests:
            data = None if item.body is None else io.BytesIO(item.body)
            async with bd_agent.http.request(item.method, item.path, data=data, headers=item.headers) as response:
                problem = await response.json(content_type=None)
                answers[item.name] = (response.status, problem.get("code") if isinstance(problem, dict) else None)
                assert response.content_type == "application/problem+json", item.name
    assert answers == {item.name: (item.status, item.code) for item in requests}
    refusals = [entry for entry in logs if entry["event"] == "api_request_refused"]
    assert [(entry["status"], entry["code"]) for entry in refusals] == [(item.status, item.code) for item in requests]
    status, answer = await bd_agent.submit(request_document())
    assert status == 202, answer


async def test_requests_the_http_parser_refuses_get_a_bare_4xx_and_the_agent_stays_up(bd_agent: InProcessAgent) -> None:
    """Broken HTTP (bad request line, bad lengths, huge or NUL headers) is a 4xx; the agent answers afterwards."""
    statuses = [await raw_exchange(bd_agent, request) for request in RAW_REQUESTS]
    assert all(400 <= status < 500 for status in statuses), statuses
    status, answer = await bd_agent.submit(request_document())
    assert status == 202, answer


async def test_huge_integers_and_infinities_in_a_submission_get_400_with_a_stable_code(
    bd_agent: InProcessAgent,
) -> None:
    """A number past Python's digit limit or 2^53, `1e400`, `Infinity` or `NaN` in a submission is a 400, not a 500."""
    for name, (body, code) in out_of_range_submissions(body_of(request_document())).items():
        async with bd_agent.http.request("POST", "/v1/messages", data=body, headers=AUTH | JSON) as response:
            problem = await response.json(content_type=None)
            assert (response.status, problem.get("code")) == (400, code), (name, problem)
    status, answer = await bd_agent.submit(request_document())
    assert status == 202, answer
