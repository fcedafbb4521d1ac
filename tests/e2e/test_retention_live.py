"""Retention on a live network: a closed case purged by `rogatory retention purge` while the agents run.

The network is this module's own (`rogatory dev up` on the real RabbitMQ,
removed afterwards): the samples carry fixed message ids. Case
BD-LY-2025-0011 is played to its CLOSURE, the request of BD-LY-2025-0007
(with an attachment) stays open; then each agency's operator purges with a
policy of zero days. The closed case's content goes at both agencies, its
evidence chain and the gateway's audit log stay and verify, the open case is
untouched.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from deploy.cli.auditor import fetch_snapshot, verify_snapshot
from deploy.cli.commands import main
from deploy.client.agent_api import AgentClient, document_of
from deploy.client.transfer import attachment_entry, upload_file
from deploy.localnet.devstack import gateway_ca, trusting
from deploy.localnet.network import NetworkPaths
from protocol.directory import Directory
from protocol.evidence import verify_evidence_as_of_its_time
from protocol.signing import SignedStatement
from tests.protocol.mla.mla_samples import SAMPLES_DIR
from tests.support.devstack import running_stack, verified_directory

pytestmark = [pytest.mark.e2e, pytest.mark.broker]
BD, LY = "BD-MOHA-PSD", "LY-MLA-CA"
CLOSED, OPEN = "BD-LY-2025-0011", "BD-LY-2025-0007"


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, Any]]]:
    root = tmp_path_factory.mktemp("retention")
    with running_stack(root) as stack:
        yield root, stack


@pytest.fixture
async def session(network: tuple[Path, dict[str, Any]]) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=60), connector=trusting(network[1])
    ) as client_session:
        yield client_session


async def _status(session: aiohttp.ClientSession, url: str, token: str) -> tuple[int, dict[str, Any]]:
    async with session.get(url, headers={"Authorization": f"Bearer {token}"}) as response:
        return response.status, await response.json(content_type=None)


async def test_a_closed_case_is_purged_on_a_live_network_and_its_evidence_and_the_log_still_verify(
    network: tuple[Path, dict[str, Any]], session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    root, stack = network
    agents = stack["agents"]
    clients = {name: AgentClient(session, agents[name]["url"], agents[name]["token"]) for name in (BD, LY)}
    played: list[dict[str, Any]] = []
    names = [*sorted(p.name for p in SAMPLES_DIR.glob(f"{CLOSED}_*.json")), f"{OPEN}_01_MLA_REQUEST.json"]
    for name in names:
        document = json.loads((SAMPLES_DIR / name).read_bytes())
        sender, recipient = document["sender"]["authority_id"], document["recipient"]["authority_id"]
        if name.startswith(OPEN):
            annex = tmp_path / "annex.txt"
            annex.write_text("Fictional annex of the letter of request.\n" * 50)
            uploaded = await upload_file(session, agents[sender]["url"], agents[sender]["token"], annex)
            document["attachments"] = [attachment_entry(annex, uploaded["sha256"], uploaded["size_bytes"], "ATT-1")]
        await clients[sender].submit(document)
        await clients[recipient].wait_for_inbox(document["message_id"], within_s=60)
        await clients[recipient].ack(document["message_id"])
        await clients[sender].wait_for_status(document["message_id"], {"retrieved"}, within_s=60)
        played.append(document)
    closed = [d for d in played if d["case_id"] == CLOSED]
    opened = played[-1]
    assert (await clients[BD].case(CLOSED))["state"] == "CLOSED"

    paths = NetworkPaths(root)
    for agency in (BD, LY):
        arguments = [
            "--data-dir",
            str(paths.data(agency)),
            "--keystore-file",
            str(paths.keystore(agency)),
            "--passphrase-file",
            str(paths.passphrase(agency)),
            "--agency",
            agency,
            "--after-close-days",
            "0",
        ]
        assert await asyncio.to_thread(main, ["retention", "purge", *arguments]) == 0
        database = sqlite3.connect(f"file:{paths.data(agency) / 'agent.db'}?mode=ro", uri=True)
        trail = database.execute("SELECT case_id, message_id, purged_at FROM purges").fetchall()
        database.close()
        assert {row[0] for row in trail} == {CLOSED}
        assert sorted(row[1] for row in trail) == sorted(d["message_id"] for d in closed)

    directory: Directory = verified_directory(stack)
    for agency in (BD, LY):
        token = agents[agency]["token"]
        status, answer = await _status(session, f"{agents[agency]['url']}/v1/cases/{CLOSED}", token)
        assert (status, answer["code"]) == (410, "CONTENT_PURGED")
        status, answer = await _status(session, f"{agents[agency]['url']}/v1/cases/{OPEN}", token)
        assert (status, answer["state"]) == (200, "SUBMITTED")
        for document in closed:
            if document["sender"]["authority_id"] != agency:
                continue
            sent = await clients[agency].message(document["message_id"])
            assert sent["content_purged_at"] is not None
            assert sent["status"] == "retrieved"
            assert {"DELIVERY", "RETRIEVAL"} <= {item["type"] for item in sent["evidence"]}
            for item in sent["evidence"]:
                verified = verify_evidence_as_of_its_time(SignedStatement.model_validate(item["statement"]), directory)
                assert verified.statement.message_digest == sent["message_digest"]

    inbox = {item["message_id"]: item for item in (await clients[LY].inbox(limit=100))["messages"]}
    for document in closed:
        if document["recipient"]["authority_id"] == LY:
            assert inbox[document["message_id"]]["document"] is None
            assert inbox[document["message_id"]]["content_purged_at"] is not None
    kept = inbox[opened["message_id"]]
    assert document_of(kept)["message_id"] == opened["message_id"]
    assert kept["content_purged_at"] is None

    gateway = stack["gateway"]
    snapshot = await fetch_snapshot(gateway["url"], gateway["auditor_token"], ca_file=gateway_ca(stack))
    report = verify_snapshot(snapshot, stack["network"]["authority_key"])
    assert report.problem is None, report.problem
