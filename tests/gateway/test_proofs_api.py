"""The proofs endpoint as agents call it over HTTP: the largest request it promises to take fits its limit."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import test_utils

from agents.auditing import GatewayAuditClient, GatewayUnreachable
from gateway.api import MAX_IDENTITY_CHARS, MAX_PROOFS_PER_REQUEST, GatewayApi, Role, TokenTable
from protocol.auditlog import directory_leaf
from tests.gateway.conftest import Harness
from tests.support.network import NOW

READER_TOKEN = "reader-token-for-the-proofs-test"


@pytest.fixture
async def audit_client(harness: Harness) -> AsyncIterator[GatewayAuditClient]:
    """An agent's audit client talking HTTP to the gateway's real application."""
    api = GatewayApi(
        store=harness.store,
        audit=harness.audit,
        tokens=TokenTable(((hashlib.sha256(READER_TOKEN.encode()).hexdigest(), Role.READER),)),
        health=lambda: {"status": "ok"},
        directory=harness.net.directory,
        clock=lambda: NOW,
        authority=harness.net.authority.public_key,
    )
    server = test_utils.TestServer(api.app())
    await server.start_server()
    async with aiohttp.ClientSession() as session:
        yield GatewayAuditClient(session, str(server.make_url("")), READER_TOKEN)
    await server.close()


async def test_the_largest_proofs_request_the_gateway_promises_is_answered(harness: Harness, audit_client: Any):
    """500 identities of the longest length the gateway reads fit its request limit (not a bare 413)."""
    async with harness.audit.transaction() as atx:
        for version in range(2, 5):
            await atx.append(directory_leaf(harness.net.signed_directory(), version), at=NOW)
    identities = [f"evidence/{n:06d}/".ljust(MAX_IDENTITY_CHARS, "x") for n in range(MAX_PROOFS_PER_REQUEST)]
    proofs = await audit_client.inclusion_proofs(identities, harness.audit.size)
    assert proofs == {}  # none of them is logged: an answer, not a refusal


async def test_a_refused_request_is_reported_with_its_status(audit_client: Any):
    """A gateway refusal names its HTTP status, not a JSON decoding error of its body."""
    with pytest.raises(GatewayUnreachable, match="answered 4"):
        await audit_client.inclusion_proofs(["x"], 10**9)
