"""One `rogatory dev up` network of real processes on the real RabbitMQ (over TLS), for the security tests."""

from __future__ import annotations

import copy
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from deploy.client.agent_api import AgentClient
from deploy.client.samples import REQUEST_SAMPLE, sample
from deploy.localnet.devstack import trusting
from protocol.directory import Directory
from tests.support.devstack import running_stack, verified_directory

BD, LY = "BD-MOHA-PSD", "LY-MLA-CA"


@pytest.fixture(scope="session")
def security_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """`rogatory dev up` in a fresh state directory; `down` and removal of its vhost afterwards."""
    with running_stack(tmp_path_factory.mktemp("security-stack")) as running:
        yield running


@pytest.fixture(scope="session")
def security_directory(security_stack: dict[str, Any]) -> Directory:
    """The network's directory, verified against its authority key."""
    return verified_directory(security_stack)


@pytest.fixture
async def session(security_stack: dict[str, Any]) -> AsyncIterator[aiohttp.ClientSession]:
    """A client of the stack's agents and of its HTTPS gateway (verified with the network's CA)."""
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout, connector=trusting(security_stack)) as client_session:
        yield client_session


def agent(stack: dict[str, Any], session: aiohttp.ClientSession, agency: str) -> AgentClient:
    """A client of `agency`'s agent API with its token."""
    entry = stack["agents"][agency]
    return AgentClient(session, entry["url"], entry["token"])


def fresh_request(marker: str | None = None) -> dict[str, Any]:
    """The sample MLA request from BD to LY under a new message id and case (with `marker` as its reference)."""
    document = copy.deepcopy(sample(REQUEST_SAMPLE))
    document["message_id"] = str(uuid.uuid4())
    document["case_id"] = f"BD-LY-SEC-{uuid.uuid4().hex[:12].upper()}"
    if marker is not None:
        document["requesting_ref"] = marker
    return document


async def good_message_flows(stack: dict[str, Any], session: aiohttp.ClientSession) -> None:
    """A valid request from BD reaches LY's inbox and comes back `delivered`: the service is up and flowing."""
    bd, ly = agent(stack, session, BD), agent(stack, session, LY)
    request = fresh_request()
    await bd.submit(request)
    await ly.wait_for_inbox(request["message_id"], within_s=60)
    await bd.wait_for_status(request["message_id"], {"delivered", "retrieved"}, within_s=60)
