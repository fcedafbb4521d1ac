"""Proof of every step on a live network: inclusion proofs at the sender, witnessed checkpoints, the
auditor's export and offline verification, and tampering of the stored log caught and named."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from deploy.client.agent_api import AgentClient, MessageStatus, poll
from deploy.client.samples import REQUEST_SAMPLE, sample
from deploy.localnet.devstack import destroy, down, trusting, up
from protocol.auditlog import encode_leaf, evidence_leaf
from protocol.checkpoint import verify_checkpoint
from protocol.encoding import b64decode
from protocol.evidence import verify_evidence
from protocol.merkle import leaf_hash, verify_inclusion
from protocol.signing import SignedStatement
from tests.e2e.conftest import AMQP_URL, MANAGEMENT_URL

pytestmark = [pytest.mark.e2e, pytest.mark.broker]
BD, LY = "BD-MOHA-PSD", "LY-MLA-CA"


def rogatory(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deploy", *args], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture
async def session(stack: dict[str, Any]) -> AsyncIterator[aiohttp.ClientSession]:
    """A client of the stack's agents and of its HTTPS gateway (verified with the network's CA)."""
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout, connector=trusting(stack)) as client_session:
        yield client_session


async def exchange(stack: dict[str, Any], session: aiohttp.ClientSession) -> str:
    """BD sends a request to LY, LY takes it; returns the message id once BD sees it retrieved."""
    bd = AgentClient(session, stack["agents"][BD]["url"], stack["agents"][BD]["token"])
    ly = AgentClient(session, stack["agents"][LY]["url"], stack["agents"][LY]["token"])
    request = sample(REQUEST_SAMPLE)
    request["message_id"] = str(uuid.uuid4())
    request["case_id"] = f"BD-LY-2025-{uuid.uuid4().hex[:4].upper()}"
    await bd.submit(request)
    await ly.wait_for_inbox(request["message_id"])
    await ly.ack(request["message_id"])
    await bd.wait_for_status(request["message_id"], {"retrieved"})
    return str(request["message_id"])


async def test_every_evidence_the_sender_holds_gets_a_verified_inclusion_proof(stack, directory, session):
    """Each evidence item at the sender carries an inclusion proof to a checkpoint, and it verifies here too."""
    message_id = await exchange(stack, session)
    bd = AgentClient(session, stack["agents"][BD]["url"], stack["agents"][BD]["token"])

    async def with_proofs() -> MessageStatus | None:
        answer = await bd.message(message_id)
        return answer if all(item["inclusion_proof"] for item in answer["evidence"]) else None

    answer = await poll(with_proofs, within_s=30, what="inclusion proofs at the sender")
    gateway = directory.gateway
    for item in answer["evidence"]:
        signed = SignedStatement.model_validate(item["statement"])
        statement = verify_evidence(signed, directory, now=datetime.now(UTC)).statement
        proof = item["inclusion_proof"]
        assert proof is not None, item
        checkpoint = verify_checkpoint(
            proof["checkpoint"], gateway.log_origin, gateway.log_keys[0].verifier, origin=gateway.log_origin
        )
        verify_inclusion(
            leaf_hash(encode_leaf(evidence_leaf(signed, statement))),
            proof["leaf_index"],
            checkpoint.size,
            [b64decode(node) for node in proof["proof"]],
            checkpoint.root_hash,
        )


async def test_checkpoints_are_cosigned_by_the_agencies_and_published(stack, session):
    """The agents witness the gateway's checkpoints: the latest one gathers two or more cosignatures."""
    gateway = stack["gateway"]

    async def published() -> dict[str, Any] | None:
        async with session.get(
            f"{gateway['url']}/v1/audit/checkpoint", headers={"Authorization": f"Bearer {gateway['auditor_token']}"}
        ) as response:
            body: dict[str, Any] = await response.json()
        return body if body["published"] else None

    checkpoint = await poll(published, within_s=30, what="a published checkpoint")
    assert len(checkpoint["cosignatures"]) >= 2
    assert checkpoint["checkpoint"].count("\u2014 ") == 1 + len(checkpoint["cosignatures"])


async def test_the_gateway_runs_the_auditors_checks_on_its_own_log(stack, session):
    """`GET /v1/audit/verification` reports a consistent log (auditor role only)."""
    gateway = stack["gateway"]
    headers = {"Authorization": f"Bearer {gateway['auditor_token']}"}
    async with session.get(f"{gateway['url']}/v1/audit/verification", headers=headers) as response:
        report = await response.json()
    assert report["consistent"], report["problem"]
    reader = {"Authorization": f"Bearer {gateway['reader_token']}"}
    async with session.get(f"{gateway['url']}/v1/audit/verification", headers=reader) as response:
        assert response.status == 403


def test_export_then_offline_verification_is_consistent(stack, tmp_path):
    """`audit export` then `audit verify --export` with the trusted authority key: exit 0."""
    export = tmp_path / "log.json"
    exported = rogatory(
        "audit",
        "export",
        "--gateway",
        stack["gateway"]["url"],
        "--out",
        str(export),
        "--token",
        stack["gateway"]["auditor_token"],
        "--ca-file",
        stack["gateway"]["ca_file"],
    )
    assert exported.returncode == 0, exported.stderr
    state = tmp_path / "state.json"
    verified = rogatory(
        "audit",
        "verify",
        "--export",
        str(export),
        "--authority-key",
        stack["network"]["authority_key"],
        "--state-file",
        str(state),
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "VERDICT: CONSISTENT" in verified.stdout
    assert state.exists()
    again = rogatory(
        "audit",
        "verify",
        "--export",
        str(export),
        "--authority-key",
        stack["network"]["authority_key"],
        "--state-file",
        str(state),
    )
    assert again.returncode == 0, again.stdout


async def test_the_dev_networks_tsa_time_stamps_checkpoints_and_the_auditor_verifies_the_tokens(
    stack, session, tmp_path
):
    """The dev network's own RFC 3161 authority stamps checkpoints; an export carries and verifies the tokens."""
    gateway = stack["gateway"]
    headers = {"Authorization": f"Bearer {gateway['auditor_token']}"}

    async def stamped() -> list[dict[str, Any]] | None:
        async with session.get(f"{gateway['url']}/v1/audit/checkpoints", headers=headers) as response:
            body: dict[str, Any] = await response.json()
        stamps = [stamp for checkpoint in body["checkpoints"] for stamp in checkpoint["timestamps"]]
        return stamps or None

    stamps = await poll(stamped, within_s=30, what="a time-stamped checkpoint")
    assert stamps[0]["authority"].startswith("CN=Rogatory Dev TSA")
    export = tmp_path / "log.json"
    exported = rogatory(
        "audit", "export", "--gateway", gateway["url"], "--out", str(export),
        "--token", gateway["auditor_token"], "--ca-file", gateway["ca_file"],
    )  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    verified = rogatory(
        "audit", "verify", "--export", str(export), "--authority-key", stack["network"]["authority_key"], "--no-state"
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    counted = re.search(r"(\d+) RFC 3161 time-stamps over checkpoints verified", verified.stdout)
    assert counted is not None, verified.stdout
    assert int(counted.group(1)) >= len(stamps)


def test_tampering_with_the_stored_log_is_detected_and_the_entry_named(tmp_path):
    """Change one byte of one leaf in the gateway's database: verification fails, naming that entry."""
    root = tmp_path / "net"
    stack = asyncio.run(up(root, amqp_url=AMQP_URL, management_url=MANAGEMENT_URL, say=lambda _: None))
    try:

        async def traffic() -> None:
            async with aiohttp.ClientSession() as client_session:
                await exchange(stack, client_session)

        asyncio.run(traffic())
        clean = rogatory(
            "audit", "verify", "--gateway", stack["gateway"]["url"], "--state-dir", str(root), "--no-state"
        )
        assert clean.returncode == 0, clean.stdout + clean.stderr
        database = Path(root) / "gateway" / "data" / "gateway.db"
        with sqlite3.connect(database) as db:
            (leaf,) = db.execute("SELECT leaf FROM leaves WHERE leaf_index = 3").fetchone()
            tampered = bytearray(leaf)
            tampered[len(tampered) // 2] ^= 0x01
            db.execute("UPDATE leaves SET leaf = ? WHERE leaf_index = 3", (bytes(tampered),))
        caught = rogatory(
            "audit", "verify", "--gateway", stack["gateway"]["url"], "--state-dir", str(root), "--no-state"
        )
        assert caught.returncode in {10, 12, 16}, caught.stdout + caught.stderr
        assert "NOT CONSISTENT" in caught.stdout
        assert "at entry 3" in caught.stdout
    finally:
        down(root, say=lambda _: None)
        asyncio.run(destroy(root, amqp_url=AMQP_URL, management_url=MANAGEMENT_URL))
