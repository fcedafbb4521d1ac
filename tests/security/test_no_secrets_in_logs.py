"""No secrets in logs: the logs of every service after a whole exchange hold no key, token, password or content."""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from deploy.client.agent_api import document_of
from deploy.localnet.network import NetworkPaths, load_network
from protocol.keystore import unlock_keystore
from tests.security.conftest import BD, LY, agent, fresh_request

pytestmark = [pytest.mark.e2e, pytest.mark.broker]


def encodings(secret: bytes) -> list[bytes]:
    """The ways a secret could show up in a log line."""
    forms = [secret, secret.hex().encode(), base64.b64encode(secret), base64.urlsafe_b64encode(secret).rstrip(b"=")]
    return [form for form in forms if len(form) >= 8]


def secrets_of(root: Path) -> dict[str, bytes]:
    """Every secret of the dev network: tokens, broker passwords, passphrases, private keys."""
    description = load_network(root)
    assert description is not None
    paths = NetworkPaths(root)
    found: dict[str, bytes] = {
        "operator token": description.gateway.operator_token.encode(),
        "auditor token": description.gateway.auditor_token.encode(),
        "reader token": description.gateway.reader_token.encode(),
        "metrics token": description.gateway.metrics_token.encode(),
        "gateway broker password": description.gateway.broker_password.encode(),
        "gateway passphrase": description.gateway.keystore_passphrase.encode(),
        "authority passphrase": description.authority_passphrase.encode(),
    }
    for agency, entry in description.agents.items():
        found[f"{agency} token"] = entry.token.encode()
        found[f"{agency} broker password"] = entry.broker_password.encode()
        found[f"{agency} broker password (URL-quoted)"] = quote(entry.broker_password, safe="").encode()
        found[f"{agency} passphrase"] = entry.keystore_passphrase.encode()
        keys = unlock_keystore(paths.keystore(agency).read_bytes(), paths.passphrase(agency).read_bytes().strip())
        found |= {f"{agency} {name} key": secret for name, secret in keys.items()}
    gateway_keys = unlock_keystore(
        paths.keystore("gateway").read_bytes(), paths.passphrase("gateway").read_bytes().strip()
    )
    found |= {f"gateway {name} key": secret for name, secret in gateway_keys.items()}
    return found


async def test_logs_of_a_whole_exchange_hold_no_key_token_password_or_content(security_stack: dict[str, Any]) -> None:
    """Request, delivery, retrieval and the answer: no service's log holds a secret or a word of the documents."""
    marker = f"PLAINTEXT-{uuid.uuid4().hex}"
    request = fresh_request(marker=marker)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        bd, ly = agent(security_stack, session, BD), agent(security_stack, session, LY)
        await bd.submit(request)
        received = await ly.wait_for_inbox(request["message_id"], within_s=60)
        assert document_of(received)["requesting_ref"] == marker
        await ly.ack(request["message_id"])
        await bd.wait_for_status(request["message_id"], {"retrieved"}, within_s=60)
        async with session.get(
            f"{security_stack['agents'][BD]['url']}/v1/inbox", headers={"Authorization": "Bearer x"}
        ):
            pass  # a refused token is logged as a refusal, never as itself
    root = Path(security_stack["network"]["state_dir"])
    paths = NetworkPaths(root)
    logs = {service: paths.log(service).read_bytes() for service in ("gateway", *security_stack["agents"])}
    assert request["message_id"].encode() in logs[BD], "the logs were captured and name the message"
    assert all(logs.values())
    content = [
        marker,
        *(str(value) for value in request["payload"].values() if isinstance(value, str) and len(value) > 12),
    ]
    leaks = []
    for service, text in logs.items():
        for name, secret in secrets_of(root).items():
            leaks += [f"{service}: {name}" for form in encodings(secret) if form in text]
        leaks += [f"{service}: document content {value[:20]!r}" for value in content if value.encode() in text]
        leaks += [f"{service}: PEM private key" for _ in range(text.count(b"PRIVATE KEY"))]
        for line in text.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and ("document" in entry or "plaintext" in entry):
                leaks.append(f"{service}: a log field named document/plaintext")
    assert leaks == []
