"""The agent API client (`deploy.client.agent_api`) slows down when an agent asks it to (`429` + `Retry-After`)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from deploy.client import agent_api as client_module
from deploy.client.agent_api import AgentApiError, AgentClient


@pytest.fixture
async def agent_that_limits() -> AsyncIterator[tuple[str, list[int]]]:
    """A stand-in agent that answers 429 (Retry-After: 0.2) to the first two requests of each path, then 200."""
    seen: list[int] = []

    async def message(request: web.Request) -> web.Response:
        seen.append(1)
        if request.match_info["message_id"] == "always-limited" or len(seen) <= 2:
            return web.json_response(
                {"code": "RATE_LIMITED", "detail": "slow down"}, status=429, headers={"Retry-After": "0.2"}
            )
        return web.json_response({"message_id": request.match_info["message_id"], "status": "delivered"})

    app = web.Application()
    app.router.add_get("/v1/messages/{message_id}", message)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()


async def test_a_rate_limited_call_waits_as_asked_and_then_succeeds(agent_that_limits):
    url, seen = agent_that_limits
    async with aiohttp.ClientSession() as session:
        answer = await AgentClient(session, url, "token").message("m-1")
    assert answer == {"message_id": "m-1", "status": "delivered"}
    assert len(seen) == 3


async def test_a_client_kept_waiting_too_long_gets_the_429(agent_that_limits, monkeypatch):
    url, seen = agent_that_limits
    monkeypatch.setattr(client_module, "MAX_RATE_LIMITED_WAIT_S", 0.5)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(AgentApiError) as refused:
            await AgentClient(session, url, "token").message("always-limited")
    assert (refused.value.status, refused.value.problem["code"]) == (429, "RATE_LIMITED")
    assert len(seen) == 3  # 0.2 + 0.2 waited; a third pause would pass 0.5 s
