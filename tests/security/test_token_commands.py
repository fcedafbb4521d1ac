"""`rogatory tokens create / revoke`: a token made for a case system works on a real agent with exactly the scopes
it was made with, and is refused from the request after its revocation, without restarting the agent."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import test_utils

from agents.api import AgentApi
from agents.guard import ApiGuard, RateLimit, RevocationList, hash_token, parse_token_specs
from agents.settings import AgentSettings
from deploy.cli.commands import main
from tests.agents.harness import start_agent
from tests.security.test_adversarial_http import body_of, request_document
from tests.security.test_api_tokens import agent_context, call
from tests.support.network import BD, LocalNetwork

AGENT = {
    "ROGATORY_AMQP_URL": "amqp://u:p@127.0.0.1:5672/net",
    "ROGATORY_DATA_DIR": "/srv/rogatory",
    "ROGATORY_DIRECTORY_FILE": "/srv/rogatory/directory.json",
    "ROGATORY_AUTHORITY_KEY": "k",
    "ROGATORY_KEYSTORE_FILE": "/srv/rogatory/keystore.json",
    "ROGATORY_KEYSTORE_PASSPHRASE_FILE": "/srv/rogatory/passphrase",
    "ROGATORY_AGENCY": BD,
    "ROGATORY_GATEWAY_BROKER_USER": "gateway",
}


def rogatory(*args: str, **environ: str) -> subprocess.CompletedProcess[str]:
    """The `rogatory` command as a person runs it."""
    return subprocess.run(
        [sys.executable, "-m", "deploy", *args],
        env=os.environ | environ,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture
async def agent_with(tmp_path: Path) -> AsyncIterator[Any]:
    """Start the real agent API with these variables, its guard built from its settings as `agents.service` does."""
    net = LocalNetwork()
    agent = await start_agent(net, net.directory(), BD, tmp_path)
    clients: list[test_utils.TestClient[Any, Any]] = []

    async def start(environ: dict[str, str]) -> test_utils.TestClient[Any, Any]:
        settings = AgentSettings.from_environ(AGENT | environ)
        guard = ApiGuard(
            parse_token_specs(settings.api_tokens_sha256),
            revocations=RevocationList(settings.api_tokens_revoked_file),
            rate=RateLimit(settings.api_rate_per_s, settings.api_rate_burst),
            clock=time.monotonic,
        )
        context = dataclasses.replace(agent_context(agent), guard=guard)
        client: test_utils.TestClient[Any, Any] = test_utils.TestClient(test_utils.TestServer(AgentApi(context).app()))
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()
    await agent.close()


async def test_a_created_token_works_with_exactly_its_scopes_and_is_refused_after_tokens_revoke(agent_with, tmp_path):
    """`tokens create --scopes submit+read` prints a token and its entry; with that entry the agent lets it submit
    and read but not acknowledge; `tokens revoke TOKEN` shuts it out from the next request, another token goes on;
    revoking again (by hash) changes nothing."""
    created = rogatory("tokens", "create", "--scopes", "submit+read", "--name", "dhaka-case-system")
    assert created.returncode == 0, created.stderr
    token, entry = created.stdout.split()
    assert "dhaka-case-system" in created.stderr
    assert entry == f"{hash_token(token)}:read+submit"
    other = rogatory("tokens", "create", "--scopes", "read").stdout.split()
    revoked_file = tmp_path / "revoked-tokens"
    client = await agent_with(
        {"ROGATORY_API_TOKENS_SHA256": f"{entry},{other[1]}", "ROGATORY_API_TOKENS_REVOKED_FILE": str(revoked_file)}
    )

    document = request_document()
    status, answer, _ = await call(client, "POST", "/v1/messages", token, body_of(document))
    assert status == 202, answer
    status, answer, _ = await call(client, "GET", f"/v1/messages/{document['message_id']}", token)
    assert (status, answer["status"]) == (200, "queued")
    status, answer, _ = await call(client, "POST", f"/v1/inbox/{uuid.uuid4()}/ack", token, b"")
    assert (status, answer["code"]) == (403, "FORBIDDEN")

    done = rogatory("tokens", "revoke", token, ROGATORY_API_TOKENS_REVOKED_FILE=str(revoked_file))
    assert done.returncode == 0, done.stderr
    assert token not in revoked_file.read_text()
    status, answer, _ = await call(client, "GET", "/v1/inbox", token)
    assert (status, answer["code"]) == (401, "UNAUTHORIZED")
    assert (await call(client, "GET", "/v1/inbox", other[0]))[0] == 200

    assert main(["tokens", "revoke", hash_token(token), "--revoked-file", str(revoked_file)]) == 0
    assert revoked_file.read_text().count(hash_token(token)) == 1


def test_tokens_create_refuses_a_scope_the_agent_does_not_know():
    """`--scopes submit+admin` is a usage error (status 2) and prints no token."""
    done = rogatory("tokens", "create", "--scopes", "submit+admin")
    assert (done.returncode, done.stdout) == (2, "")
    assert "ack, read, submit" in done.stderr


def test_tokens_revoke_needs_to_know_the_revocation_file():
    """Without `--revoked-file` or `ROGATORY_API_TOKENS_REVOKED_FILE`, nothing is written and the status is 2."""
    environ = {k: v for k, v in os.environ.items() if k != "ROGATORY_API_TOKENS_REVOKED_FILE"}
    done = subprocess.run(
        [sys.executable, "-m", "deploy", "tokens", "revoke", "some-token"],
        env=environ,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "ROGATORY_API_TOKENS_REVOKED_FILE" in done.stderr
