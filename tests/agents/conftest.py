"""Two in-process agents, Bangladesh's and Libya's central authorities, on one in-memory network."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.agents.harness import InProcessAgent, start_agent
from tests.support.network import BD, LY, LocalNetwork


@pytest.fixture
async def agents(tmp_path: Path) -> AsyncIterator[tuple[InProcessAgent, InProcessAgent]]:
    """(BD-MOHA-PSD, LY-MLA-CA), each with its own store, sharing one signed directory."""
    net = LocalNetwork()
    directory = net.directory()
    bd = await start_agent(net, directory, BD, tmp_path)
    ly = await start_agent(net, directory, LY, tmp_path)
    try:
        yield bd, ly
    finally:
        await bd.close()
        await ly.close()
