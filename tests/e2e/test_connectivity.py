"""Checking a link with real processes: `rogatory ping` through the agents, the gateway and RabbitMQ of a `dev up`
network of its own (one agent is stopped and started again here, so the session's network is left alone)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from deploy.client.agent_api import AgentApiError, AgentClient
from deploy.localnet.devstack import read_stack, up
from protocol.directory import Directory
from protocol.evidence import parse_signed_evidence, verify_evidence_as_of_its_time
from protocol.limits import DEFAULT_LIMITS
from tests.support.devstack import AMQP_URL, MANAGEMENT_URL, running_stack, verified_directory

pytestmark = [pytest.mark.e2e, pytest.mark.broker]
BD, LY, BD_POLICE = "BD-MOHA-PSD", "LY-MLA-CA", "BD-POLICE-CID-HTU"


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, Any]]]:
    root = tmp_path_factory.mktemp("linknet")
    with running_stack(root) as stack:
        yield root, stack


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as client_session:
        yield client_session


def client(stack: dict[str, Any], session: aiohttp.ClientSession, agency: str) -> AgentClient:
    entry = stack["agents"][agency]
    return AgentClient(session, entry["url"], entry["token"])


def ping_command(root: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deploy", "ping", "--state-dir", str(root), *arguments],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def verified(items: list[dict[str, Any]], directory: Directory) -> list[tuple[str, str, str]]:
    """(type, issuer, message id) of each signed statement, each verified against the directory."""
    found = []
    for item in items:
        raw = json.dumps(item.get("statement", item)).encode()
        statement = verify_evidence_as_of_its_time(parse_signed_evidence(raw, DEFAULT_LIMITS), directory).statement
        found.append((str(statement.evidence_type), str(statement.issuer), str(statement.message_id)))
    return found


async def wait_until(agent: AgentClient, test_id: str, states: set[str], *, within_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + within_s
    while True:
        test = await agent.connectivity_test(test_id)
        if test["state"] in states or time.monotonic() > deadline:
            return test
        await asyncio.sleep(0.3)


def test_rogatory_ping_goes_and_comes_back_with_evidence_on_both_legs(network: tuple[Path, dict[str, Any]]) -> None:
    """BD pings LY: the gateway accepts and relays the ping (its signed evidence), LY's agent signs DELIVERY and
    RETRIEVAL and answers; the pong arrives and BD signs for it. Every statement verifies; nothing enters a case."""
    root, stack = network
    result = ping_command(root, "--to", LY, "--timeout", "60", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    test = json.loads(result.stdout)
    assert (test["state"], test["failure"]) == ("completed", None)
    directory = verified_directory(stack)
    gateway = directory.gateway.gateway_id
    ping_id, pong_id = test["ping"]["message_id"], test["pong"]["message_id"]
    assert verified(test["pong"]["evidence"], directory) == [("DELIVERY", BD, pong_id), ("RETRIEVAL", BD, pong_id)]
    assert test["timings"]["round_trip_ms"] is not None
    assert test["timings"]["round_trip_ms"] >= 0

    async def whole_chain_and_no_case() -> dict[str, Any]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            bd = client(stack, session, BD)
            wanted = {"SUBMISSION_ACCEPTED", "RELAY_ACCEPTED", "DELIVERY", "RETRIEVAL"}
            deadline = time.monotonic() + 30
            full = await bd.connectivity_test(test["test_id"])
            while {item["type"] for item in full["ping"]["evidence"]} < wanted and time.monotonic() < deadline:
                await asyncio.sleep(0.3)
                full = await bd.connectivity_test(test["test_id"])
            for agency in (BD, LY):
                agent = client(stack, session, agency)
                for path in ("/v1/inbox?limit=500", "/v1/messages?limit=500"):
                    page = await agent.list_page(path)
                    assert {ping_id, pong_id}.isdisjoint(item["message_id"] for item in page["messages"]), path
                cases = await agent.list_page("/v1/cases?limit=500")
                assert not any(item["case_id"].startswith("LINK-") for item in cases["cases"])
            return full

    full = asyncio.run(whole_chain_and_no_case())
    assert (full["state"], full["ping"]["status"]) == ("completed", "retrieved")
    assert set(verified(full["ping"]["evidence"], directory)) == {
        ("SUBMISSION_ACCEPTED", gateway, ping_id),
        ("RELAY_ACCEPTED", gateway, ping_id),
        ("DELIVERY", LY, ping_id),
        ("RETRIEVAL", LY, ping_id),
    }
    human = ping_command(root, "--to", LY, "--timeout", "60")
    assert human.returncode == 0, human.stdout + human.stderr
    assert f"to {LY}: completed" in human.stdout
    assert "DELIVERY by LY-MLA-CA" in human.stdout


async def test_a_ping_to_an_agency_without_agreement_is_refused(
    network: tuple[Path, dict[str, Any]], session: aiohttp.ClientSession
) -> None:
    """BD-POLICE-CID-HTU and LY-MLA-CA share no agreement: 403 POLICY_DENIED, and `rogatory ping` exits 1."""
    root, stack = network
    with pytest.raises(AgentApiError) as refused:
        await client(stack, session, BD_POLICE).start_connectivity_test(LY)
    assert (refused.value.status, refused.value.problem["code"]) == (403, "POLICY_DENIED")
    with pytest.raises(AgentApiError) as unknown:
        await client(stack, session, BD).start_connectivity_test("ZZ-NOWHERE")
    assert (unknown.value.status, unknown.value.problem["code"]) == (422, "UNKNOWN_AGENCY")
    result = await asyncio.to_thread(ping_command, root, "--agency", BD_POLICE, "--to", LY)
    assert result.returncode == 1
    assert "POLICY_DENIED" in result.stderr


def stop(root: Path, agency: str) -> None:
    """SIGTERM one agent of the network (as `dev down` does) and wait until it is gone."""
    stack = read_stack(root)
    assert stack is not None
    pid = stack["agents"][agency]["pid"]
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return
        if state in {"Z", "X"}:
            return
        time.sleep(0.1)
    raise AssertionError(f"{agency} did not stop")


async def test_with_the_recipient_down_the_test_stays_pending_then_completes_or_times_out(
    network: tuple[Path, dict[str, Any]], session: aiohttp.ClientSession
) -> None:
    """LY's agent stopped: a ping waits in LY's queue, `pending`; LY back before the deadline answers it
    (`completed`). A ping whose deadline passes while LY is down is `timed_out` (`TIMED_OUT`); LY, back, refuses it
    as expired, and the test stays timed out."""
    root, stack = network
    bd = client(stack, session, BD)
    await asyncio.to_thread(stop, root, LY)
    try:
        waiting = await bd.start_connectivity_test(LY, timeout_s=120)
        short = await bd.start_connectivity_test(LY, timeout_s=5)
        relayed = await wait_until(bd, waiting["test_id"], {"completed"}, within_s=3)
        assert relayed["state"] == "pending"
        timed_out = await wait_until(bd, short["test_id"], {"timed_out"}, within_s=30)
        assert (timed_out["state"], timed_out["failure"]["code"]) == ("timed_out", "TIMED_OUT")
        assert (await bd.connectivity_test(waiting["test_id"]))["state"] == "pending"
    finally:
        await up(root, amqp_url=AMQP_URL, management_url=MANAGEMENT_URL, say=lambda _: None)
    completed = await wait_until(bd, waiting["test_id"], {"completed"}, within_s=60)
    assert completed["state"] == "completed", completed
    deadline = time.monotonic() + 30  # LY's evidence about the ping may come after its pong
    while completed["ping"]["status"] != "retrieved" and time.monotonic() < deadline:
        await asyncio.sleep(0.3)
        completed = await bd.connectivity_test(waiting["test_id"])
    assert {item["type"] for item in completed["ping"]["evidence"] if item["signed_by"] == LY} == {
        "DELIVERY",
        "RETRIEVAL",
    }
    late = await wait_until(bd, short["test_id"], {"never"}, within_s=0)
    deadline = time.monotonic() + 60
    while late["ping"]["status"] not in {"expired", "failed"} and time.monotonic() < deadline:
        await asyncio.sleep(0.3)
        late = await bd.connectivity_test(short["test_id"])
    assert (late["state"], late["ping"]["status"], late["pong"]) == ("timed_out", "expired", None)
