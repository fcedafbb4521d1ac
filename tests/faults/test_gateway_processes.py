"""Two and three gateway processes on one PostgreSQL log; the one signing checkpoints is killed mid-traffic.

The network is a `rogatory dev up` network whose gateway keeps its records
in a fresh PostgreSQL database; one or two more gateway processes of the
same gateway (same keys and directory, a data directory each, one shared
blob directory) consume the same ingress queue. While notes flow, the
leader (`gateway.leadership`: the process that signs checkpoints) is killed
with SIGKILL; with three processes the next leader is killed too. `dev up`
starts the first process again (it then follows). Every message must get
its evidence exactly as with one process, and the log must verify with its
checkpoints in signing order: never smaller than the one before, each the
root of a prefix of the one log (no fork), and the signing going on past
each kill (no gap).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import pytest

from deploy.localnet.devstack import launches
from deploy.localnet.network import free_port, load_network
from protocol.checkpoint import SignedCheckpoint
from protocol.encoding import parse_timestamp
from protocol.merkle import MerkleTree
from tests.faults.conftest import SYSTEM_AMQP_URL, SYSTEM_MANAGEMENT_URL
from tests.faults.harness import FaultNetwork, Supervisor, Traffic, count, gateway_ssl, say, settle
from tests.gateway.conftest import fresh_postgres_database

pytestmark = [pytest.mark.faults, pytest.mark.broker, pytest.mark.e2e]

LEADER_RETRY_S = 1.0
HANDOVER_BOUND_S = 20.0
"""The longest a log that grows may go without a checkpoint across a kill: loss noticed, lock taken, signed."""


def _management() -> str:
    return SYSTEM_MANAGEMENT_URL or f"http://{urlsplit(SYSTEM_AMQP_URL).hostname or '127.0.0.1'}:15672"


@dataclass
class ExtraGateway:
    """One more process of the network's gateway: its own data directory and port, the same store."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"

    def alive(self) -> bool:
        return self.process.poll() is None


def _start_extra(network: FaultNetwork, number: int) -> ExtraGateway:
    """Start gateway process `number` with the environment `dev up` gives the gateway, but its own dir and port."""
    description = load_network(network.root)
    assert description is not None
    gateway = next(launch for launch in launches(description, network.paths) if launch.name == "gateway")
    home = network.root / f"gateway-{number}"
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    environment = {key: value for key, value in os.environ.items() if not key.startswith("ROGATORY_")}
    environment |= gateway.environment | {"ROGATORY_DATA_DIR": str(home / "data"), "ROGATORY_HTTP_PORT": str(port)}
    log = home / "gateway.log"
    with log.open("ab") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway"],
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return ExtraGateway(f"gateway-{number}", port, process, log)


async def _health(session: aiohttp.ClientSession, network: FaultNetwork, url: str) -> dict[str, Any] | None:
    try:
        async with session.get(f"{url}/healthz", ssl=gateway_ssl(network.stack)) as response:
            if response.status != 200:
                return None
            answer: dict[str, Any] = await response.json()
            return answer
    except (aiohttp.ClientError, TimeoutError, OSError):
        return None


async def _ready(session: aiohttp.ClientSession, network: FaultNetwork, extra: ExtraGateway) -> None:
    deadline = time.monotonic() + 60
    while await _health(session, network, extra.url) is None:
        assert extra.alive(), f"{extra.name} exited: {extra.log.read_text(errors='replace')[-2000:]}"
        assert time.monotonic() < deadline, f"{extra.name} did not become ready"
        await asyncio.sleep(0.3)


async def _leader(
    session: aiohttp.ClientSession, network: FaultNetwork, extras: list[ExtraGateway], *, within_s: float = 30.0
) -> str:
    """The one process that leads now (`gateway` for the one `dev up` started), after checking there is one."""
    deadline = time.monotonic() + within_s
    while True:
        urls = {"gateway": network.stack["gateway"]["url"]} | {e.name: e.url for e in extras if e.alive()}
        leading = [name for name, url in urls.items() if ((await _health(session, network, url)) or {}).get("leader")]
        assert len(leading) <= 1, f"two leaders at once: {leading}"
        if leading:
            return leading[0]
        assert time.monotonic() < deadline, "no process leads"
        await asyncio.sleep(0.3)


def _kill(network: FaultNetwork, extras: list[ExtraGateway], name: str) -> float:
    """SIGKILL one gateway process; when it died (monotonic)."""
    if name == "gateway":
        network.kill("gateway")
    else:
        extra = next(e for e in extras if e.name == name)
        extra.process.send_signal(signal.SIGKILL)
        extra.process.wait(timeout=10)
        say(f"killed {name} (pid {extra.process.pid})")
    return time.time()


async def _checkpoints_and_leaves(url: str) -> tuple[list[tuple[int, str, str]], list[bytes]]:
    connection = await asyncpg.connect(url)
    try:
        checkpoints = await connection.fetch(
            "SELECT tree_size, note, signed_at FROM checkpoints ORDER BY checkpoint_id"
        )
        leaves = await connection.fetch("SELECT leaf_hash FROM leaves ORDER BY leaf_index")
    finally:
        await connection.close()
    return [(int(r[0]), str(r[1]), str(r[2])) for r in checkpoints], [bytes(r[0]) for r in leaves]


def _check_checkpoints(checkpoints: list[tuple[int, str, str]], leaves: list[bytes], kills: list[float]) -> None:
    """In signing order: never smaller, each the root of a prefix of the one log, signing going on past each kill."""
    tree = MerkleTree.from_leaf_hashes(leaves)
    assert checkpoints, "checkpoints were signed"
    previous = 0
    for size, note, _ in checkpoints:
        checkpoint = SignedCheckpoint.parse(note).checkpoint
        assert checkpoint.size == size
        assert size >= previous, f"a checkpoint of {size} signed after one of {previous} (a gap or a rollback)"
        assert size <= tree.size, f"a checkpoint of {size} over a log of {tree.size}"
        assert tree.root(size) == checkpoint.root_hash, f"checkpoint of {size}: not a prefix of the log (a fork)"
        previous = size
    assert previous == tree.size, f"the last checkpoint ({previous}) does not cover the log ({tree.size})"
    times = [parse_timestamp(at).timestamp() for _, _, at in checkpoints]
    for killed in kills:
        before = [t for t in times if t <= killed]
        after = [t for t in times if t > killed]
        assert before, "a checkpoint was signed before the kill"
        assert after, "a checkpoint was signed after the kill: another process took over"
        assert after[0] - before[-1] < HANDOVER_BOUND_S, (
            f"no checkpoint for {after[0] - before[-1]:.1f} s across the kill at "
            f"{datetime.fromtimestamp(killed, UTC):%H:%M:%S}"
        )


def _processed(path: Path) -> int:
    """Ingress deliveries one gateway process took (its `message_processed` log lines: one a delivery)."""
    try:
        return sum('"message_processed"' in line for line in path.read_text(errors="replace").splitlines())
    except OSError:
        return 0


def _leadership_events(paths: list[Path]) -> list[str]:
    found = []
    for path in paths:
        with contextlib.suppress(OSError):
            for line in path.read_text(errors="replace").splitlines():
                with contextlib.suppress(ValueError):
                    record = json.loads(line)
                    if str(record.get("event", "")).startswith("leadership_"):
                        found.append(f"{path.parent.name}: {record['event']}")
    return found


@pytest.mark.parametrize("processes", [2, 3])
async def test_leader_of_several_gateway_processes_killed_mid_traffic_hands_over_without_gap_or_fork(
    tmp_path, session, report, processes
):
    """`processes` gateway processes on one PostgreSQL log; the leader SIGKILLed mid-traffic (with three, the next
    leader too): another signs on, every message gets its evidence once, the log verifies, no gap, no fork."""
    started = time.monotonic()
    async with fresh_postgres_database() as database_url:
        root = tmp_path / "net"
        network = await FaultNetwork.start(
            root,
            amqp_url=SYSTEM_AMQP_URL,
            management_url=_management(),
            settings={
                "ROGATORY_DATABASE_URL": database_url,
                "ROGATORY_BLOB_DIR": str(root / "blobs"),
                "ROGATORY_LEADER_RETRY_S": str(LEADER_RETRY_S),
            },
        )
        extras: list[ExtraGateway] = []
        try:
            extras = [_start_extra(network, number) for number in range(2, processes + 1)]
            for extra in extras:
                await _ready(session, network, extra)
            assert await _leader(session, network, extras) == "gateway", "the first process took the lead"
            kills: list[float] = []
            async with Supervisor(network):
                traffic = Traffic(network, session)
                await traffic.open_cases(3)
                sending = asyncio.create_task(traffic.send(traffic.notes(240), concurrency=8, per_second=30))
                for _ in range(processes - 1):
                    await asyncio.sleep(2.5)
                    leader = await _leader(session, network, extras)
                    kills.append(_kill(network, extras, leader))
                    successor = await _leader(session, network, extras)
                    say(f"{successor} leads after {leader} was killed")
                    assert successor != leader
                await sending
                await settle(network, session, traffic)
            figures = await count(
                network,
                session,
                traffic,
                scenario=f"{processes} gateway processes on PostgreSQL, leader SIGKILLed {processes - 1}x",
                started=started,
            )
            report(figures)
            checkpoints, leaves = await _checkpoints_and_leaves(database_url)
            events = _leadership_events([network.paths.log("gateway"), *(extra.log for extra in extras)])
            say(f"{len(checkpoints)} checkpoints over {len(leaves)} leaves; {', '.join(events)}")
            _check_checkpoints(checkpoints, leaves, kills)
            assert sum(event.endswith("leadership_acquired") for event in events) >= processes, events
            shares = {e.name: _processed(e.log) for e in extras} | {"gateway": _processed(network.paths.log("gateway"))}
            say(f"ingress deliveries taken: {shares}")
            assert all(shares.values()), f"every process took a share of the traffic: {shares}"
            figures.check()
        finally:
            with contextlib.suppress(Exception):
                await network.stop()
            for extra in extras:
                if extra.alive():
                    extra.process.terminate()
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        extra.process.wait(timeout=20)
                if extra.alive():
                    extra.process.kill()
                    extra.process.wait()
            await network.destroy()
