"""The gateway's disk full mid-stream (a small tmpfs filled to the last byte): nothing acked unwritten."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from deploy.localnet.network import NetworkPaths, create_network
from tests.faults.conftest import SYSTEM_AMQP_URL, SYSTEM_MANAGEMENT_URL
from tests.faults.figures import log_events
from tests.faults.harness import FAULT_SETTINGS, FaultNetwork, Supervisor, Traffic, count, say, settle

pytestmark = [pytest.mark.faults, pytest.mark.broker, pytest.mark.e2e]


@contextlib.contextmanager
def small_disk(where: Path, size: str = "48m") -> Iterator[Path]:
    """A tmpfs of `size` mounted at `where` (root only), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs to fill needs root (CI runs as root)")
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(disk: Path) -> Path:
    """Write a file until the disk refuses one more byte (ENOSPC); return it."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as out:
        for chunk in (1 << 20, 1 << 12, 1):
            while True:
                try:
                    out.write(b"\0" * chunk)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    return filler


async def _first_refused_write(root: Path, *, within_s: float) -> None:
    """Wait until the gateway's ingress consumer met the full disk (and retried in place)."""
    deadline = time.monotonic() + within_s
    while not [e for e in log_events(root, "consumer_retry") if "full" in str(e.get("error"))]:
        assert time.monotonic() < deadline, "the gateway's database never met the full disk"
        await asyncio.sleep(0.5)


async def test_gateway_disk_full_mid_stream_holds_deliveries_and_recovers(tmp_path, session, report):
    """With the gateway's database disk full (20 s after the first refused write) the gateway stays up,
    acknowledges nothing it could not write, dead-letters nothing by retrying, and once space is back
    delivers everything, once."""
    root = tmp_path / "net"
    management = SYSTEM_MANAGEMENT_URL or f"http://{urlsplit(SYSTEM_AMQP_URL).hostname or '127.0.0.1'}:15672"
    create_network(root, amqp_url=SYSTEM_AMQP_URL, now=datetime.now(UTC), service_environment=FAULT_SETTINGS)
    with small_disk(NetworkPaths(root.resolve()).data("gateway")) as disk:
        started = time.monotonic()
        network = await FaultNetwork.start(root, amqp_url=SYSTEM_AMQP_URL, management_url=management)
        try:
            async with Supervisor(network):
                traffic = Traffic(network, session)
                await traffic.open_cases(4)
                sending = asyncio.create_task(traffic.send(traffic.notes(400), concurrency=8, per_second=40))
                await asyncio.sleep(2.5)
                filler = await asyncio.to_thread(fill, disk)
                say(f"gateway disk full ({filler.stat().st_size >> 20} MiB of filler)")
                # SQLite first reuses the WAL's blocks; the first write that needs a new one fails.
                await _first_refused_write(network.paths.root, within_s=60)
                say("the gateway's database refused a write; 20 s more without space")
                await asyncio.sleep(20)
                assert network.alive("gateway"), "the gateway stays up while its disk is full"
                filler.unlink()
                say("disk space back")
                await sending
                await settle(network, session, traffic)
            figures = await count(
                network,
                session,
                traffic,
                scenario="gateway disk full mid-stream (20 s after the first refused write)",
                started=started,
            )
            report(figures)
            figures.check()
            assert network.restarts == 0, "the gateway never had to be restarted"
            assert figures.audit_other_leaves.get("dead_letter", 0) == 0, "no delivery was dead-lettered"
        finally:
            await network.destroy()
