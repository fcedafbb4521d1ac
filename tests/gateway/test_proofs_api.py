"""The proofs endpoint as agents call it over HTTP: the largest request it promises to take fits its limit."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import test_utils

from agents.auditing import GatewayAuditClient, GatewayUnreachable
from gateway.api import MAX_IDENTITY_CHARS, MAX_PROOFS_PER_REQUEST, GatewayApi, Role, TokenTable
from gateway.auditlog import AuditLog
from protocol.auditlog import decode_leaf, directory_leaf
from protocol.checkpoint import verify_checkpoint
from protocol.encoding import b64decode
from protocol.merkle import leaf_hash, verify_consistency, verify_inclusion
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


HUGE_INTEGER = "9" * 5000
"""Beyond Python's default digit limit (4,300): `json.loads` raises a bare `ValueError` on it."""
OUT_OF_RANGE_NUMBERS = {
    "huge_integer": (HUGE_INTEGER, "NUMBER_OUT_OF_RANGE"),
    "integer_beyond_2_53": (str(2**63), "NUMBER_OUT_OF_RANGE"),
    "overflowing_float": ("1e400", "NUMBER_OUT_OF_RANGE"),
    "infinity": ("Infinity", "MALFORMED_JSON"),
    "minus_infinity": ("-Infinity", "MALFORMED_JSON"),
    "nan": ("NaN", "MALFORMED_JSON"),
}


@pytest.fixture
async def reader_session(harness: Harness) -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    """A raw HTTP session to the gateway's application and its base URL, with the reader token set."""
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
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {READER_TOKEN}"}) as session:
        yield session, str(server.make_url("")).rstrip("/")
    await server.close()


@pytest.mark.parametrize("number", OUT_OF_RANGE_NUMBERS.values(), ids=OUT_OF_RANGE_NUMBERS.keys())
@pytest.mark.parametrize(
    ("path", "template"),
    [
        ("/v1/audit/cosignatures", '{"checkpoint_id": %s, "cosignature": "x"}'),
        ("/v1/audit/proofs", '{"size": %s, "identities": []}'),
        ("/v1/audit/proofs", '{"size": 1, "identities": [%s]}'),
    ],
    ids=["cosignature_id", "proofs_size", "proofs_identity"],
)
async def test_huge_or_infinite_numbers_in_audit_requests_are_refused_with_400(
    reader_session: tuple[aiohttp.ClientSession, str], path: str, template: str, number: tuple[str, str]
):
    """A huge integer, `Infinity`, `NaN` or `1e400` in a cosignature or proofs request is a 400 with its code."""
    session, base = reader_session
    text, code = number
    async with session.post(
        base + path, data=(template % text).encode(), headers={"Content-Type": "application/json"}
    ) as answer:
        assert answer.status == 400, await answer.text()
        assert (await answer.json())["code"] == code


async def test_the_proofs_answer_carries_the_bytes_of_directory_and_evidence_leaves(
    harness: Harness, audit_client: Any
):
    """An agent naming a directory version by identity gets its leaf with the proof (for its evidence bundle)."""
    signed = harness.net.signed_directory()
    async with harness.audit.transaction() as atx:
        await atx.append(directory_leaf(signed, 2), at=NOW)
    answer = await audit_client.inclusion_proofs(["directory/2"], harness.audit.size)
    assert decode_leaf(b64decode(answer["directory/2"]["leaf"])) == directory_leaf(signed, 2)


async def test_proofs_cover_leaves_another_gateway_process_appended(harness: Harness, audit_client: Any):
    """The API's log appended none of them: sizes, roots and proofs come from the database, not from this process.

    A second `AuditLog` on the same store stands for a second gateway process; it signs the checkpoint.
    """
    other = await AuditLog.load(harness.store, origin=harness.audit.origin, log_key=harness.net.log_key)
    async with other.transaction() as atx:
        for version in range(2, 9):
            await atx.append(directory_leaf(harness.net.signed_directory(), version), at=NOW)
    assert harness.audit.size == 1  # as this process last saw it
    note = await other.checkpoint_if_due(NOW, idle_interval=timedelta(hours=1))
    assert note is not None
    checkpoint = verify_checkpoint(note, harness.audit.origin, harness.net.log_key.public_key)
    assert checkpoint.size == 8

    identities = [f"directory/{version}" for version in range(1, 9)]
    answer = await audit_client.proofs_answer(identities, checkpoint.size)
    assert answer["checkpoint"]["tree_size"] == checkpoint.size
    for index, identity in enumerate(identities):
        proof = answer["proofs"][identity]
        assert proof["index"] == index
        nodes = [b64decode(node) for node in proof["proof"]]
        verify_inclusion(leaf_hash(b64decode(proof["leaf"])), index, checkpoint.size, nodes, checkpoint.root_hash)
    consistency = await audit_client.consistency_proof(3, checkpoint.size)
    verify_consistency(3, checkpoint.size, await harness.audit.root(3), checkpoint.root_hash, consistency)
    assert harness.audit.size == checkpoint.size  # the API read the database's size
