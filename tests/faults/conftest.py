"""Fixtures of the fault-injection suite: brokers to break, a session, and where the figures go.

Each scenario prints its figures (`Figures.table`) and files them here; they
are printed again together at the end of the run, in a "fault-injection
figures" section of the terminal summary, so CI output shows them without
`-s`. They also go to the JUnit XML as the test's `figures` property.

Brokers: the machine's RabbitMQ (`ROGATORY_SYSTEM_AMQP_URL`; never stopped here); `own_broker`,
a private node this suite may kill and restart; `own_cluster`, three private
nodes in one cluster (`tests.support.rabbitnode`). The private nodes live as long as
this package's tests, so they do not slow down the rest of the suite.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from deploy.configuration import system_amqp_url, system_management_url
from tests.faults.figures import Figures
from tests.support.rabbitnode import RabbitCluster, RabbitNode

SYSTEM_AMQP_URL = system_amqp_url(os.environ)
SYSTEM_MANAGEMENT_URL = system_management_url(os.environ)
_FIGURES = pytest.StashKey[list[str]]()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    """Every scenario's figures, together, at the end of the run."""
    tables = config.stash.get(_FIGURES, [])
    if tables:
        terminalreporter.section("fault-injection figures")
        for table in tables:
            terminalreporter.write_line(table)


@pytest.fixture
def report(request: pytest.FixtureRequest, record_property: Callable[[str, object], None]) -> Callable[[Figures], None]:
    """Print a scenario's figures and file them for the terminal summary and the JUnit XML."""

    def file(figures: Figures) -> None:
        table = figures.table()
        print(table)
        request.config.stash.setdefault(_FIGURES, []).append(table)
        record_property("figures", table)

    return file


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as client_session:
        yield client_session


@pytest.fixture(scope="package")
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitNode]:
    """A private RabbitMQ node (its own name, ports and data) that tests may kill and restart."""
    node = RabbitNode.create(Path(tmp_path_factory.mktemp("rabbit")), f"rogatory-faults-{os.getpid()}")
    node.start()
    try:
        node.wait_ready()
        yield node
    finally:
        node.kill()


@pytest.fixture(scope="package")
def own_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitCluster]:
    """Three private RabbitMQ nodes joined in one cluster."""
    cluster = RabbitCluster.create(Path(tmp_path_factory.mktemp("cluster")), 3)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.kill()


async def to_thread_ready(node: RabbitNode) -> None:
    """Start a node again and wait for it, without blocking the test's event loop."""
    node.start()
    await asyncio.to_thread(node.wait_ready)
