"""Several agencies in one agent process (`agents.hosting`), on a `dev up` network of real processes.

Three agencies (`BD-MOHA-PSD`, `BD-POLICE-CID-HTU`, `LY-AGO`) run in one host
process; `LY-MLA-CA` runs in its own. Each hosted agency keeps its own keys,
store, tokens and broker identity: the exchanges below go through the broker
and the gateway exactly as between agents in processes of their own, and a
token of one hosted agency is, for the others' data, a stranger's token.
"""

from __future__ import annotations

import asyncio
import copy
import os
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import test_utils, web

from agents.directory_feed import DirectoryUnavailable, gateway_directory_source
from agents.hosting import (
    HOSTED_AGENCIES_VARIABLE,
    HostSettings,
    SharedDirectories,
    SharedDirectorySource,
    open_agencies,
    read_env_file,
)
from deploy.bench.scenarios import request_between
from deploy.client.agent_api import AgentApiError, AgentClient
from deploy.localnet.devstack import destroy, down, trusting, up
from protocol.limits import DEFAULT_LIMITS
from runtime.errors import ConfigurationError
from tests.support.devstack import AMQP_URL, MANAGEMENT_URL

pytestmark = [pytest.mark.e2e, pytest.mark.broker]

BD, BD_POLICE, LY, LY_AGO = "BD-MOHA-PSD", "BD-POLICE-CID-HTU", "LY-MLA-CA", "LY-AGO"
HOSTED = (BD, BD_POLICE, LY_AGO)
HOST = "agents-host-1"


@pytest.fixture(scope="module")
def hosted_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A dev network whose three agencies run in one agent process, the fourth in its own."""
    root = tmp_path_factory.mktemp("hosted")
    try:
        yield asyncio.run(
            up(root, amqp_url=AMQP_URL, management_url=MANAGEMENT_URL, say=lambda _: None, hosts=[HOSTED])
        )
    finally:
        down(root, say=lambda _: None)
        asyncio.run(destroy(root, amqp_url=AMQP_URL, management_url=MANAGEMENT_URL))


@pytest.fixture
async def session(hosted_stack: dict[str, Any]) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=30), connector=trusting(hosted_stack)
    ) as client_session:
        yield client_session


def agent(stack: dict[str, Any], session: aiohttp.ClientSession, agency: str) -> AgentClient:
    entry = stack["agents"][agency]
    return AgentClient(session, entry["url"], entry["token"])


def request(sender: str, recipient: str) -> dict[str, Any]:
    """The sample request from `sender` to `recipient`, under a new message id and case."""
    document = copy.deepcopy(request_between(sender, recipient))
    document["message_id"] = str(uuid.uuid4())
    document["case_id"] = f"BD-LY-HOST-{uuid.uuid4().hex[:12].upper()}"
    return document


async def inbox_ids(client: AgentClient) -> set[str]:
    found, cursor = set(), "0"
    while True:
        page = await client.inbox(after=cursor, limit=500)
        found |= {message["message_id"] for message in page["messages"]}
        if not page["messages"]:
            return found
        cursor = page["next"]


def test_the_hosted_agencies_share_one_process_and_one_listener(hosted_stack):
    """`stack.json` gives each hosted agency the host's URL and pid; the fourth agency has its own."""
    agents, host = hosted_stack["agents"], hosted_stack["agent_hosts"][HOST]
    assert sorted(host["agencies"]) == sorted(HOSTED)
    assert {agents[agency]["pid"] for agency in HOSTED} == {host["pid"]}
    assert {agents[agency]["url"] for agency in HOSTED} == {host["url"]}
    assert agents[LY]["pid"] != host["pid"]
    assert agents[LY]["url"] != host["url"]
    assert len({agents[agency]["token"] for agency in HOSTED}) == len(HOSTED)


async def test_health_answers_for_every_hosted_agency(hosted_stack, session):
    async with session.get(hosted_stack["agent_hosts"][HOST]["url"] + "/healthz") as response:
        assert response.status == 200
        health = await response.json()
    assert health["hosted_agencies"] == len(HOSTED)
    assert sorted(health["agencies"]) == sorted(HOSTED)
    for agency, answer in health["agencies"].items():
        assert answer["agency"] == agency
        assert answer["inbox_connected"] is True


async def test_a_hosted_agency_exchanges_with_an_agency_in_its_own_process(hosted_stack, session):
    """BD (hosted) -> LY (own process) and back: delivered, retrieved, evidence held by BD alone."""
    bd, ly = agent(hosted_stack, session, BD), agent(hosted_stack, session, LY)
    sent = request(BD, LY)
    await bd.submit(sent)
    await ly.wait_for_inbox(sent["message_id"])
    await ly.ack(sent["message_id"])
    status = await bd.wait_for_status(sent["message_id"], {"retrieved"})
    assert {"SUBMISSION_ACCEPTED", "RELAY_ACCEPTED", "DELIVERY", "RETRIEVAL"} <= {
        item["type"] for item in status["evidence"]
    }
    for other in (BD_POLICE, LY_AGO):  # its evidence is BD's: the other hosted agencies hold no such message
        with pytest.raises(AgentApiError) as unknown:
            await agent(hosted_stack, session, other).message(sent["message_id"])
        assert unknown.value.status == 404


async def test_two_hosted_agencies_exchange_through_the_broker_and_the_gateway(hosted_stack, session):
    """BD pings its police unit, both hosted: the ping and its pong go through the broker and the gateway
    (each step signed by the gateway, the delivery by the police unit), as between two processes."""
    bd = agent(hosted_stack, session, BD)
    test = await bd.start_connectivity_test(BD_POLICE, timeout_s=30)
    wanted = {"SUBMISSION_ACCEPTED", "RELAY_ACCEPTED", "DELIVERY", "RETRIEVAL"}
    full = await bd.connectivity_test(test["test_id"])
    for _ in range(150):
        if full["state"] == "completed" and wanted <= {item["type"] for item in full["ping"]["evidence"]}:
            break
        await asyncio.sleep(0.2)
        full = await bd.connectivity_test(test["test_id"])
    assert (full["state"], full["ping"]["status"]) == ("completed", "retrieved")
    delivery = next(item for item in full["ping"]["evidence"] if item["type"] == "DELIVERY")
    assert delivery["signed_by"] == BD_POLICE
    with pytest.raises(AgentApiError) as foreign:  # the test is BD's: the police unit's token does not see it
        await agent(hosted_stack, session, BD_POLICE).connectivity_test(test["test_id"])
    assert foreign.value.status == 404


async def test_a_token_of_one_hosted_agency_never_reaches_another_agencys_data(hosted_stack, session):
    """BD's police unit's token on BD's message ids, case and subscription: 404, as for ids it never held."""
    bd, police = agent(hosted_stack, session, BD), agent(hosted_stack, session, BD_POLICE)
    sent = request(BD, LY)
    await bd.submit(sent)
    await agent(hosted_stack, session, LY).wait_for_inbox(sent["message_id"])
    subscription = await bd.subscribe("http://127.0.0.1:9/hook", ["message.received"])

    async def refused(call: Any) -> int:
        with pytest.raises(AgentApiError) as refusal:
            await call
        return refusal.value.status

    assert await refused(police.message(sent["message_id"])) == 404
    assert await refused(police.case(sent["case_id"])) == 404
    assert await refused(police.subscription(subscription["subscription_id"])) == 404
    assert await refused(police.unsubscribe(subscription["subscription_id"])) == 404
    assert subscription["subscription_id"] not in {item["subscription_id"] for item in await police.subscriptions()}
    assert sent["message_id"] not in {item["message_id"] for item in (await police.sent_messages())["messages"]}
    assert await bd.subscription(subscription["subscription_id"])  # still BD's, untouched
    await bd.unsubscribe(subscription["subscription_id"])

    url = hosted_stack["agent_hosts"][HOST]["url"]
    for token in ("not-a-token-of-any-agency", hosted_stack["gateway"]["reader_token"]):
        async with session.get(f"{url}/v1/inbox", headers={"Authorization": f"Bearer {token}"}) as response:
            assert response.status == 401
    async with session.get(f"{url}/v1/inbox") as response:
        assert response.status == 401


async def test_messages_wait_in_each_agencys_queue_while_the_host_is_stopped(hosted_stack, session):
    """The host stopped (SIGTERM: exit status 0), LY pings two of its agencies: the pings wait in their own
    queues; once `up` starts the host again, each is delivered to its own agency, which answers."""
    root = Path(hosted_stack["network"]["state_dir"])
    ly = agent(hosted_stack, session, LY)
    host_pid = hosted_stack["agent_hosts"][HOST]["pid"]
    os.kill(host_pid, signal.SIGTERM)
    assert await _exit_status(host_pid) == 0  # every agency stopped cleanly
    pings = {agency: await ly.start_connectivity_test(agency, timeout_s=120) for agency in (BD, LY_AGO)}
    for test in pings.values():
        answer = await ly.connectivity_test(test["test_id"])
        for _ in range(100):
            if answer["ping"]["status"] == "relayed":
                break
            await asyncio.sleep(0.2)
            answer = await ly.connectivity_test(test["test_id"])
        assert answer["ping"]["status"] == "relayed"  # through the gateway, waiting in the stopped agency's queue
    restarted = await up(root, amqp_url=AMQP_URL, management_url=MANAGEMENT_URL, say=lambda _: None)
    assert restarted["agent_hosts"][HOST]["pid"] != host_pid
    hosted_stack["agent_hosts"][HOST]["pid"] = restarted["agent_hosts"][HOST]["pid"]
    for agency, test in pings.items():
        # The pong and the ping's DELIVERY travel separately (the evidence in a batch): either may come first.
        answer = await ly.connectivity_test(test["test_id"])
        for _ in range(150):
            if answer["state"] == "completed" and _delivery(answer) is not None:
                break
            await asyncio.sleep(0.2)
            answer = await ly.connectivity_test(test["test_id"])
        assert answer["state"] == "completed", agency
        delivery = _delivery(answer)
        assert delivery is not None, answer["ping"]["evidence"]
        assert delivery["signed_by"] == agency


def _delivery(answer: dict[str, Any]) -> dict[str, Any] | None:
    """The ping's `DELIVERY` evidence in a connectivity test's answer, once its sender holds it."""
    return next((item for item in answer["ping"]["evidence"] if item["type"] == "DELIVERY"), None)


async def _exit_status(pid: int) -> int:
    """The exit status of a child process of this test process (the fixture's `up` started it)."""
    for _ in range(300):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return os.waitstatus_to_exitcode(status)
        await asyncio.sleep(0.1)
    raise AssertionError(f"process {pid} did not stop within 30 s")


async def test_an_agency_that_cannot_start_is_named_and_the_others_are_closed(hosted_stack, tmp_path):
    """A hosted agency whose keystore does not unlock stops the start with an error naming it; the agency
    opened before it is closed again (its data directory's lock released, so that it opens again at once)."""
    folder = Path(hosted_stack["network"]["state_dir"]) / "agents" / HOST / "hosted"
    copied = tmp_path / "hosted"
    copied.mkdir()
    for agency in (BD, BD_POLICE, LY_AGO):  # BD opens first (files are read in name order), the police unit fails
        values = read_env_file(folder / f"{agency}.env")
        values["ROGATORY_DATA_DIR"] = str(tmp_path / agency / "data")  # the running host holds the real ones
        if agency == BD_POLICE:
            wrong = tmp_path / "wrong-passphrase"
            wrong.write_text("not the passphrase\n")
            values["ROGATORY_KEYSTORE_PASSPHRASE_FILE"] = str(wrong)
        (copied / f"{agency}.env").write_text("".join(f"{key}={value}\n" for key, value in values.items()))
    host = HostSettings.from_environ({HOSTED_AGENCIES_VARIABLE: str(copied), "ROGATORY_HTTP_PORT": "0"})
    shared = SharedDirectories()
    try:
        with pytest.raises(ConfigurationError, match=f"hosted agency {BD_POLICE} cannot start"):
            await open_agencies(host, shared)
        # BD was opened and closed: its data directory can be claimed again at once.
        (copied / f"{BD_POLICE}.env").unlink()
        reopened = await open_agencies(
            HostSettings.from_environ({HOSTED_AGENCIES_VARIABLE: str(copied), "ROGATORY_HTTP_PORT": "0"}), shared
        )
        assert [parts.agency for parts in reopened] == [BD, LY_AGO]
        assert len(shared.directories) == 1  # the two agencies hold one parsed directory, not one each
        for parts in reopened:
            await parts.close()
    finally:
        await shared.close()


def _host_files(folder: Path, files: dict[str, dict[str, str]]) -> dict[str, str]:
    """Hosted agency files in `folder` over a process environment holding what they share."""
    folder.mkdir(exist_ok=True)
    for name, values in files.items():
        (folder / f"{name}.env").write_text("".join(f"{key}={value}\n" for key, value in values.items()))
    return {
        HOSTED_AGENCIES_VARIABLE: str(folder),
        "ROGATORY_AMQP_URL": "amqp://user:password@127.0.0.1:5672/vhost",
        "ROGATORY_DIRECTORY_FILE": str(folder / "directory.json"),
        "ROGATORY_AUTHORITY_KEY": "AAAA",
        "ROGATORY_GATEWAY_BROKER_USER": "gateway",
    }


def _agency_file(agency: str, token_sha256: str) -> dict[str, str]:
    return {
        "ROGATORY_AGENCY": agency,
        "ROGATORY_DATA_DIR": f"/nonexistent/{agency}/data",
        "ROGATORY_KEYSTORE_FILE": f"/nonexistent/{agency}/keystore.json",
        "ROGATORY_KEYSTORE_PASSPHRASE_FILE": f"/nonexistent/{agency}/passphrase",
        "ROGATORY_API_TOKENS_SHA256": token_sha256,
    }


def test_one_token_configured_for_two_hosted_agencies_is_refused(tmp_path):
    """A token two agencies accept could not be routed to one of them: the host refuses to start."""
    shared = "a" * 64
    environ = _host_files(tmp_path / "hosted", {BD: _agency_file(BD, shared), LY_AGO: _agency_file(LY_AGO, shared)})
    with pytest.raises(ConfigurationError, match=f"agencies {BD} and {LY_AGO} accept the same API token"):
        HostSettings.from_environ(environ)


def test_a_hosted_agency_file_cannot_move_the_listener(tmp_path):
    """The listener is the process's: an agency's file setting its port is refused, naming the file."""
    own = _agency_file(BD, "b" * 64) | {"ROGATORY_HTTP_PORT": "9999"}
    environ = _host_files(tmp_path / "hosted", {BD: own})
    with pytest.raises(ConfigurationError, match=r"BD-MOHA-PSD\.env: ROGATORY_HTTP_PORT belong to the host process"):
        HostSettings.from_environ(environ)


def test_an_invalid_hosted_agency_file_is_named(tmp_path):
    broken = _agency_file(BD, "c" * 64) | {"ROGATORY_AGENCY": "not an agency"}
    environ = _host_files(tmp_path / "hosted", {BD: broken, LY_AGO: _agency_file(LY_AGO, "d" * 64)})
    with pytest.raises(ConfigurationError, match=r"hosted agency file .*BD-MOHA-PSD\.env: .*ROGATORY_AGENCY"):
        HostSettings.from_environ(environ)
    assert HostSettings.from_environ(_host_files(tmp_path / "two", {LY_AGO: _agency_file(LY_AGO, "d" * 64)}))


async def test_a_host_asks_the_gateway_for_its_directory_once_per_interval_not_once_per_agency():
    """Hundreds of hosted agencies poll the directory: one fetch serves all within the interval, a failed
    one too (an away gateway is not asked again by each agency), and the next interval fetches again."""
    now = [0.0]
    fetched: list[float] = []
    answers: list[bytes | Exception] = [b"v1", DirectoryUnavailable("gateway away"), b"v2"]

    async def fetch() -> bytes:
        fetched.append(now[0])
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    shared = SharedDirectorySource(fetch, max_age_s=5.0, clock=lambda: now[0])
    assert await asyncio.gather(*(shared() for _ in range(300))) == [b"v1"] * 300
    now[0] = 5.0
    for _ in range(3):
        with pytest.raises(DirectoryUnavailable):
            await shared()
    now[0] = 10.0
    assert await shared() == b"v2"
    assert fetched == [0.0, 5.0, 10.0]


async def test_a_directory_of_hundreds_of_agencies_is_read_whole_from_the_gateway():
    """A directory of 500 agencies is ~460 KB, more than one read of the answer returns: the poll reads it all
    (a first chunk alone was refused as malformed, every 5 s, by every agency)."""
    body = b'{"payload": "' + b"A" * 700_000 + b'"}'

    async def directory(_request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(_request)
        for start in range(0, len(body), 8192):  # in small writes, as a large answer arrives
            await response.write(body[start : start + 8192])
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/v1/directory", directory)
    async with test_utils.TestServer(app) as server, aiohttp.ClientSession() as client:
        fetch = gateway_directory_source(client, str(server.make_url("/")), limits=DEFAULT_LIMITS)
        assert await fetch() == body
