"""The gateway's `/metrics` is for operators: it needs a scrape credential, and a flood of scrapes costs one refresh.

The exposition names per-inbox traffic, counts by message type and key ids,
and each refresh runs store queries and a broker management call; the port
is one that every agency reaches (for attachment bodies).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import test_utils

from gateway.api import GatewayApi, Role, TokenTable
from gateway.console_api import ConsoleApi
from gateway.metrics import GatewayMetrics
from tests.gateway.conftest import Harness
from tests.support.network import NOW

TOKENS = {role: f"{role}-token-for-the-metrics-test" for role in Role}
INTERVAL_S = 5.0


class CountingMetrics(GatewayMetrics):
    """The gateway's metrics, counting how often their state is read from the store and the broker."""

    def __init__(self) -> None:
        super().__init__()
        self.refreshes = 0

    async def refresh(self, **state: Any) -> None:
        self.refreshes += 1
        await super().refresh(**state)


class Gateway:
    """The gateway's real application on loopback, with a hand-driven monotonic clock."""

    def __init__(self, base: str, session: aiohttp.ClientSession, metrics: CountingMetrics, clock: list[float]) -> None:
        self.base, self.session, self.metrics, self.clock = base, session, metrics, clock

    async def get(self, path: str, role: Role | None) -> tuple[int, str]:
        headers = {} if role is None else {"Authorization": f"Bearer {TOKENS[role]}"}
        async with self.session.get(self.base + path, headers=headers) as answer:
            return answer.status, await answer.text()


@pytest.fixture
async def gateway(harness: Harness) -> AsyncIterator[Gateway]:
    tokens = TokenTable(tuple((hashlib.sha256(token.encode()).hexdigest(), role) for role, token in TOKENS.items()))
    metrics = CountingMetrics()
    clock = [1000.0]
    consoles = ConsoleApi(
        store=harness.store,
        tree_size=lambda: harness.audit.size,
        directory=harness.net.directory,
        health=lambda: {"status": "ok"},
        metrics=metrics,
        management=None,
        vhost="/",
        clock=lambda: NOW,
        monotonic=lambda: clock[0],
        metrics_refresh_interval_s=INTERVAL_S,
    )
    api = GatewayApi(
        store=harness.store,
        audit=harness.audit,
        tokens=tokens,
        health=lambda: {"status": "ok"},
        directory=harness.net.directory,
        clock=lambda: NOW,
        authority=harness.net.authority.public_key,
        extra_routes=consoles.routes(),
    )
    server = test_utils.TestServer(api.app())
    await server.start_server()
    async with aiohttp.ClientSession() as session:
        yield Gateway(str(server.make_url("")).rstrip("/"), session, metrics, clock)
    await server.close()


async def test_an_anonymous_scrape_of_the_gateway_metrics_is_refused(gateway: Gateway):
    """Without a token `/metrics` answers 401 (and runs no query); an agency's reader token gets 403."""
    status, _ = await gateway.get("/metrics", None)
    assert status == 401
    status, _ = await gateway.get("/metrics", Role.READER)
    assert status == 403
    assert gateway.metrics.refreshes == 0


async def test_a_scrape_with_the_metrics_credential_is_answered_and_opens_nothing_else(gateway: Gateway):
    """The metrics token (and the operator's and auditor's) reads `/metrics`; the metrics token reads nothing else."""
    for role in (Role.METRICS, Role.OPERATOR, Role.AUDITOR):
        status, text = await gateway.get("/metrics", role)
        assert status == 200, role
        assert "rogatory_gateway_entries_awaiting_checkpoint" in text
    for path in ("/v1/audit/entries", "/v1/audit/checkpoint", "/v1/console/overview", "/v1/console/whoami"):
        status, _ = await gateway.get(path, Role.METRICS)
        assert status == 403, path


async def test_a_flood_of_scrapes_within_the_interval_runs_one_refresh(gateway: Gateway):
    """50 concurrent scrapes in the interval read the store once, get one exposition; the next interval reads again."""
    answers = {text for _, text in await asyncio.gather(*(gateway.get("/metrics", Role.METRICS) for _ in range(50)))}
    assert gateway.metrics.refreshes == 1
    assert len(answers) == 1
    gateway.clock[0] += INTERVAL_S - 0.1
    await gateway.get("/metrics", Role.METRICS)
    assert gateway.metrics.refreshes == 1
    gateway.clock[0] += 0.1
    await gateway.get("/metrics", Role.METRICS)
    assert gateway.metrics.refreshes == 2
