"""The agent API's tokens: held as hashes, scoped, revocable at once; rate (429) and size (413) limits per client."""

from __future__ import annotations

import dataclasses
import io
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import test_utils

from agents.api import AgentApi
from agents.guard import (
    ALL_SCOPES,
    ApiGuard,
    RateLimit,
    RateLimiter,
    RevocationList,
    Scope,
    TokenSpecInvalid,
    hash_token,
    parse_token_specs,
    required_scope,
)
from agents.settings import AgentSettings
from runtime.errors import ConfigurationError
from tests.agents.harness import start_agent
from tests.security.test_adversarial_http import body_of, request_document
from tests.support.network import BD, LocalNetwork

SUBMITTER, READER, ACKER, EVERYTHING = "submitter-token-1", "reader-token-22", "acker-token-333", "all-scopes-4444"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def guarded(tmp_path: Path) -> AsyncIterator[tuple[test_utils.TestClient[Any, Any], Path, Clock]]:
    """The real agent API with four tokens of different scopes, a revocation file and a small rate limit."""
    net = LocalNetwork()
    agent = await start_agent(net, net.directory(), BD, tmp_path)
    revoked = tmp_path / "revoked-tokens"
    clock = Clock()
    guard = ApiGuard(
        parse_token_specs(
            [
                f"{hash_token(SUBMITTER)}:submit",
                f"{hash_token(READER)}:read",
                f"{hash_token(ACKER)}:ack+read",
                hash_token(EVERYTHING),
            ]
        ),
        revocations=RevocationList(revoked),
        rate=RateLimit(per_second=1.0, burst=5),
        clock=clock,
    )
    # The same application as the agent's, with this guard instead of the default one.
    context = dataclasses.replace(agent_context(agent), guard=guard)
    client: test_utils.TestClient[Any, Any] = test_utils.TestClient(test_utils.TestServer(AgentApi(context).app()))
    await client.start_server()
    try:
        yield client, revoked, clock
    finally:
        await client.close()
        await agent.close()


def agent_context(agent: Any) -> Any:
    """The `ApiContext` the harness built for `agent`."""
    for handler in agent.http.server.app.router.routes():
        owner = getattr(handler.handler, "__self__", None)
        if isinstance(owner, AgentApi):
            return owner._ctx
    raise AssertionError("no AgentApi in the harness")


async def call(
    client: test_utils.TestClient[Any, Any], method: str, path: str, token: str, body: bytes | None = None
) -> tuple[int, dict[str, Any], dict[str, str]]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    data = None if body is None else io.BytesIO(body)
    async with client.request(method, path, data=data, headers=headers) as response:
        return response.status, await response.json(content_type=None), dict(response.headers)


async def test_each_scope_allows_only_its_own_routes(guarded) -> None:
    """submit, read and ack are separate: a token without the scope gets 403 FORBIDDEN, with it goes through."""
    client, _, clock = guarded
    document = request_document()
    status, answer, _ = await call(client, "POST", "/v1/messages", READER, body_of(document))
    assert (status, answer["code"]) == (403, "FORBIDDEN")
    status, answer, _ = await call(client, "POST", "/v1/messages", SUBMITTER, body_of(document))
    assert status == 202, answer
    clock.now += 10
    status, answer, _ = await call(client, "GET", f"/v1/messages/{document['message_id']}", SUBMITTER)
    assert (status, answer["code"]) == (403, "FORBIDDEN")
    status, answer, _ = await call(client, "GET", f"/v1/messages/{document['message_id']}", READER)
    assert (status, answer["status"]) == (200, "queued")
    status, answer, _ = await call(client, "POST", f"/v1/inbox/{uuid.uuid4()}/ack", READER, b"")
    assert (status, answer["code"]) == (403, "FORBIDDEN")
    status, answer, _ = await call(client, "POST", f"/v1/inbox/{uuid.uuid4()}/ack", ACKER, b"")
    assert (status, answer["code"]) == (404, "NOT_FOUND")  # allowed; there is just no such message


async def test_revoked_token_is_refused_from_the_next_request_without_a_restart(guarded) -> None:
    """A hash added to the revocation file shuts its token out at once; other tokens go on."""
    client, revoked, _ = guarded
    assert (await call(client, "GET", "/v1/inbox", EVERYTHING))[0] == 200
    revoked.write_text(f"# revoked by the operator\n{hash_token(EVERYTHING)}\n")
    status, answer, _ = await call(client, "GET", "/v1/inbox", EVERYTHING)
    assert (status, answer["code"]) == (401, "UNAUTHORIZED")
    assert (await call(client, "GET", "/v1/inbox", READER))[0] == 200


async def test_client_over_its_rate_gets_429_with_retry_after_and_others_are_not_slowed(guarded) -> None:
    """A client past its bucket gets 429 RATE_LIMITED with Retry-After; another client is unaffected; it refills."""
    client, _, clock = guarded
    statuses = [(await call(client, "GET", "/v1/inbox", READER))[0] for _ in range(6)]
    assert statuses == [200] * 5 + [429]
    status, answer, headers = await call(client, "GET", "/v1/inbox", READER)
    assert (status, answer["code"]) == (429, "RATE_LIMITED")
    assert int(headers["Retry-After"]) >= 1
    assert (await call(client, "GET", "/v1/inbox", ACKER))[0] == 200
    clock.now += 2
    assert (await call(client, "GET", "/v1/inbox", READER))[0] == 200


async def test_guessing_tokens_is_rate_limited_too(guarded) -> None:
    """Wrong tokens from one address are counted against that address: guessing gets 429, not endless 401s."""
    client, _, _ = guarded
    statuses = [(await call(client, "GET", "/v1/inbox", f"guess-{index}"))[0] for index in range(7)]
    assert statuses[:5] == [401] * 5
    assert statuses[5:] == [429, 429]


async def test_body_over_the_size_limit_gets_413(guarded) -> None:
    """A body over the document limit is refused with 413 TOO_LARGE before it is read whole."""
    client, _, _ = guarded
    status, answer, _ = await call(client, "POST", "/v1/messages", SUBMITTER, b"[" + b" " * (5 * 1024 * 1024) + b"]")
    assert (status, answer["code"]) == (413, "TOO_LARGE")


def test_token_entries_name_only_known_scopes() -> None:
    """Settings refuse a token entry that is not a SHA-256 or names an unknown scope, and never echo it."""
    assert parse_token_specs([hash_token("x")])[0].scopes == ALL_SCOPES
    assert parse_token_specs([hash_token("x") + ":read+ack"])[0].scopes == {Scope.READ, Scope.ACK}
    with pytest.raises(TokenSpecInvalid) as refused:
        parse_token_specs(["plaintext-token-in-settings"])
    assert "plaintext-token-in-settings" not in str(refused.value)
    with pytest.raises(TokenSpecInvalid):
        parse_token_specs([hash_token("x") + ":admin"])
    environ = {
        "ROGATORY_AGENCY": BD,
        "ROGATORY_AMQP_URL": "amqps://u:p@localhost:5671/v",
        "ROGATORY_DATA_DIR": "/nonexistent/x",
        "ROGATORY_DIRECTORY_FILE": "/nonexistent/d",
        "ROGATORY_AUTHORITY_KEY": "k",
        "ROGATORY_KEYSTORE_FILE": "/nonexistent/k",
        "ROGATORY_KEYSTORE_PASSPHRASE_FILE": "/nonexistent/p",
        "ROGATORY_GATEWAY_BROKER_USER": "g",
        "ROGATORY_API_TOKENS_SHA256": "my-secret-token",
    }
    with pytest.raises(ConfigurationError) as invalid:
        AgentSettings.from_environ(environ)
    assert "my-secret-token" not in str(invalid.value)


def test_routes_need_the_scopes_the_guard_documents() -> None:
    """Reads need `read`, submissions and uploads `submit`, acks `ack`; only health and OpenAPI are open."""
    assert required_scope("GET", "/v1/inbox") == Scope.READ
    assert required_scope("GET", "/metrics") == Scope.READ
    assert required_scope("POST", "/v1/messages") == Scope.SUBMIT
    assert required_scope("POST", "/v1/attachments") == Scope.SUBMIT
    assert required_scope("POST", f"/v1/inbox/{uuid.uuid4()}/ack") == Scope.ACK
    assert required_scope("GET", "/healthz") is None
    assert required_scope("GET", "/openapi.json") is None


def test_rate_limiter_forgets_idle_clients_instead_of_growing() -> None:
    """A flood of distinct clients cannot grow the limiter without bound."""
    clock = Clock()
    limiter = RateLimiter(RateLimit(per_second=1.0, burst=2), clock)
    for index in range(20_000):
        limiter.admit(f"peer:{index}")
    assert len(limiter._buckets) <= 10_000
