"""The command line as a user runs it: demo, bench, dev up on an existing network."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import aiohttp
import pytest

from deploy.client.agent_api import AgentClient, document_of
from deploy.client.samples import REQUEST_SAMPLE, sample
from deploy.localnet.devstack import destroy, read_stack
from tests.e2e.conftest import AMQP_URL, MANAGEMENT_URL

pytestmark = [pytest.mark.e2e, pytest.mark.broker]


def rogatory(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deploy", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def test_demo_succeeds_and_prints_evidence_and_verdict():
    """`rogatory demo` exits 0 and shows both evidence chains, each evidence with a verified inclusion proof,
    and a consistent, witnessed audit log."""
    result = rogatory("demo")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "Demo succeeded" in out
    assert "VERDICT: CONSISTENT" in out
    for evidence in ("SUBMISSION_ACCEPTED", "RELAY_ACCEPTED", "DELIVERY", "RETRIEVAL"):
        assert out.count(evidence) >= 2, evidence
    assert out.count("signature ok, in the audit log at #") == 8
    assert "published (cosigned by 2+ witnesses) up to size" in out


def test_dev_up_on_an_existing_network_restarts_what_is_down_with_its_data(tmp_path):
    """A killed agent is restarted by `dev up` with its data and keys; what was sent meanwhile arrives."""
    root = tmp_path / "net"
    first = rogatory("dev", "up", "--state-dir", str(root), "--detach")
    assert first.returncode == 0, first.stdout + first.stderr
    try:
        stack = read_stack(root)
        assert stack is not None
        assert set(stack) >= {"gateway", "agents"}
        assert set(stack["agents"]) == {"BD-MOHA-PSD", "BD-POLICE-CID-HTU", "LY-MLA-CA", "LY-AGO"}
        for entry in stack["agents"].values():
            assert set(entry) >= {"url", "token", "amqp_url", "pid"}
        assert set(stack["gateway"]) >= {"url", "operator_token", "auditor_token", "pid"}
        ly_pid = stack["agents"]["LY-MLA-CA"]["pid"]
        os.kill(ly_pid, signal.SIGKILL)
        request = sample(REQUEST_SAMPLE)
        request["message_id"] = str(uuid.uuid4())

        async def send_while_down() -> None:
            async with aiohttp.ClientSession() as session:
                entry = stack["agents"]["BD-MOHA-PSD"]
                await AgentClient(session, entry["url"], entry["token"]).submit(request)

        asyncio.run(send_while_down())
        time.sleep(1)
        again = rogatory("dev", "up", "--state-dir", str(root), "--detach")
        assert again.returncode == 0, again.stdout + again.stderr
        assert "LY-MLA-CA          started" in again.stdout
        assert "BD-MOHA-PSD        already running" in again.stdout
        restarted = read_stack(root)
        assert restarted is not None
        assert restarted["agents"]["LY-MLA-CA"]["pid"] != ly_pid
        assert restarted["agents"]["LY-MLA-CA"]["url"] == stack["agents"]["LY-MLA-CA"]["url"]

        async def receive() -> None:
            async with aiohttp.ClientSession() as session:
                ly = restarted["agents"]["LY-MLA-CA"]
                received = await AgentClient(session, ly["url"], ly["token"]).wait_for_inbox(request["message_id"])
                assert document_of(received)["payload"] == request["payload"]

        asyncio.run(receive())
    finally:
        down = rogatory("dev", "down", "--state-dir", str(root))
        assert down.returncode == 0, down.stdout + down.stderr
        stopped = read_stack(root)
        assert stopped is not None
        assert stopped["gateway"]["pid"] is None
        asyncio.run(destroy(Path(root), amqp_url=AMQP_URL, management_url=MANAGEMENT_URL))
