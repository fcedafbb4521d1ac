"""The service runner: the HTTP site stops taking connections as soon as the stop begins, tasks finish after."""

from __future__ import annotations

import asyncio
import pstats
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
from aiohttp import web

from runtime.runner import Service, run_service
from runtime.settings import ServiceSettings


class _Settings(ServiceSettings):
    """The least a service's settings hold."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_a_stopping_service_takes_no_new_connection_while_its_tasks_finish(tmp_path: Path):
    """Once the stop begins, a new connection is refused, though a task is still finishing its work."""
    port = _free_port()
    settings = _Settings.model_validate(
        {
            "amqp_url": "amqp://u:p@127.0.0.1:5672/v",
            "http_port": port,
            "data_dir": tmp_path,
            "directory_file": tmp_path / "directory.json",
            "authority_key": "unused",
            "keystore_file": tmp_path / "keystore",
            "keystore_passphrase_file": tmp_path / "passphrase",
        }
    )
    app = web.Application()

    async def hello(_request: web.Request) -> web.Response:
        return web.Response(text="hello")

    app.router.add_get("/", hello)
    stopping = asyncio.Event()
    finishing = asyncio.Event()
    release = asyncio.Event()

    async def slow_to_finish(stop: asyncio.Event) -> None:
        await stop.wait()
        finishing.set()
        await release.wait()

    service = Service(name="agent", settings=settings, app=app, tasks={"slow": slow_to_finish}, closers=[])
    running = asyncio.create_task(run_service(service, stopping))
    url = f"http://127.0.0.1:{port}/"
    async with aiohttp.ClientSession() as session:
        for _ in range(100):
            try:
                async with session.get(url) as response:
                    assert await response.text() == "hello"
                    break
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)
        else:
            raise AssertionError("the service never answered")
        stopping.set()
        await asyncio.wait_for(finishing.wait(), timeout=5)
        await asyncio.sleep(0.1)
        refused = False
        try:
            async with aiohttp.ClientSession() as fresh, fresh.get(url) as response:
                await response.read()
        except aiohttp.ClientConnectionError:
            refused = True
        assert refused, "a new connection was served after the stop began"
    release.set()
    await asyncio.wait_for(running, timeout=15)


PROFILED_SERVICE = """
import asyncio, sys
from pathlib import Path
from runtime.runner import service_main
from runtime.settings import ServiceSettings

async def run(_settings):
    await asyncio.sleep(0)

profile_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else None
service_main(
    "agent",
    read_settings=lambda _env: ServiceSettings.model_construct(log_format="json", profile_dir=profile_dir),
    run=run,
)
"""


def test_a_service_asked_to_profile_itself_writes_its_profile_when_it_stops(tmp_path: Path):
    """With `profile_dir` set, the process's cProfile is written there at exit; without it, nothing is."""
    profiles = tmp_path / "profiles"
    subprocess.run([sys.executable, "-c", PROFILED_SERVICE, str(profiles)], check=True, capture_output=True)
    written = list(profiles.glob("agent-*.prof"))
    assert len(written) == 1
    assert pstats.Stats(str(written[0])).get_stats_profile().func_profiles  # calls, as pstats reads them

    subprocess.run([sys.executable, "-c", PROFILED_SERVICE], check=True, capture_output=True, cwd=tmp_path)
    assert list(tmp_path.rglob("*.prof")) == written
