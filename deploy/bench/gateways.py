"""Several gateway processes for `rogatory bench --gateways N`: one PostgreSQL log, a data directory each.

With `N` > 1 the bench network's gateway keeps its records in PostgreSQL
(`ROGATORY_DATABASE_URL`: the database given with `--database-url`, or a
throwaway one made on the local server and dropped at the end,
`throwaway_database`), its attachment bodies in one shared directory
(`ROGATORY_BLOB_DIR`), and `N - 1` more processes of the same gateway
(same keys, same directory, same environment as the one `dev up` starts,
their own data directory and port) consume the same ingress queue
(`ExtraGateways`). One of them leads (`gateway.leadership`). With `N` = 1
the bench runs as it always did (SQLite in the gateway's data directory),
or on PostgreSQL when `--database-url` is given (the fair comparison with
`N` > 1: the same store).

The bench reads the gateway's records to time the stages (`GatewayRecords`):
from the SQLite file, or from PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import asyncpg

from deploy.localnet.devstack import launches
from deploy.localnet.network import NetworkPaths, free_port, load_network
from gateway.db import redacted_url, to_postgres

LOCAL_POSTGRES_URL: Final = "postgresql://rogatory:rogatory@127.0.0.1:5432/postgres"
"""The server `deploy/ensure-postgresql.sh` sets up (role `rogatory`, allowed to create databases)."""
STOP_TIMEOUT_S: Final = 20.0
"""How long a stopping extra gateway process may take (its last drain and checkpoint) before SIGKILL."""


class BenchSetupError(Exception):
    """The bench could not set up its gateway processes (no PostgreSQL, a process that would not start)."""


@asynccontextmanager
async def throwaway_database(admin_url: str) -> AsyncIterator[str]:
    """A new, empty database on the server of `admin_url`, dropped when the bench is over; its URL."""
    name = f"rogatory_bench_{secrets.token_hex(4)}"
    try:
        admin = await asyncpg.connect(admin_url, timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        raise BenchSetupError(
            f"--gateways needs PostgreSQL: {redacted_url(admin_url)} is not usable ({exc}); give --database-url, "
            "or start the local server with deploy/ensure-postgresql.sh"
        ) from exc
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield admin_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with contextlib.suppress(OSError, asyncpg.PostgresError):
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def shared_environment(root: Path, database_url: str) -> dict[str, str]:
    """The settings every gateway process of a bench network gets: the one log, the one blob directory."""
    return {"ROGATORY_DATABASE_URL": database_url, "ROGATORY_BLOB_DIR": str(root.resolve() / "blobs")}


@dataclass
class ExtraGateways:
    """Gateway processes 2..N of a dev network, started after `dev up` and stopped before `dev down`."""

    root: Path
    count: int
    processes: dict[str, subprocess.Popen[bytes]]

    @classmethod
    def none(cls, root: Path) -> ExtraGateways:
        """No extra process (one gateway)."""
        return cls(root, 0, {})

    def start(self, count: int) -> None:
        """Start `count` more processes of the network's gateway (each its own data directory and port)."""
        description = load_network(self.root)
        if description is None:
            raise BenchSetupError(f"no network in {self.root}")
        paths = NetworkPaths(self.root.resolve())
        gateway = next(launch for launch in launches(description, paths) if launch.name == "gateway")
        base = {key: value for key, value in os.environ.items() if not key.startswith("ROGATORY_")}
        for number in range(2, count + 2):
            name = f"gateway-{number}"
            home = paths.root / name
            home.mkdir(parents=True, exist_ok=True)
            environment = (
                base
                | gateway.environment
                | {"ROGATORY_DATA_DIR": str(home / "data"), "ROGATORY_HTTP_PORT": str(free_port())}
            )
            with (home / "gateway.log").open("ab") as sink:
                self.processes[name] = subprocess.Popen(
                    [sys.executable, "-m", "gateway"],
                    env=environment,
                    stdin=subprocess.DEVNULL,
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        self.count = count

    def pids(self) -> dict[str, int]:
        """The running extra processes' pids, by name (`gateway-2`...)."""
        return {name: process.pid for name, process in self.processes.items() if process.poll() is None}

    async def wait_consuming(self, *, within_s: float = 60.0) -> None:
        """Wait until each extra process logged that it started (its consumers are then being set up)."""
        deadline = time.monotonic() + within_s
        for name, process in self.processes.items():
            log = self.root.resolve() / name / "gateway.log"
            while '"gateway_started"' not in _text(log):
                if process.poll() is not None:
                    raise BenchSetupError(f"{name} exited during start-up:\n{_text(log)[-2000:]}")
                if time.monotonic() > deadline:
                    raise BenchSetupError(f"{name} did not start within {within_s:.0f} s")
                await asyncio.sleep(0.2)

    def stop(self) -> None:
        """SIGTERM each (a graceful stop), SIGKILL what is left after `STOP_TIMEOUT_S`."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for process in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            if process.poll() is None:
                process.kill()
                process.wait()
        self.processes.clear()


def _text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


@dataclass(frozen=True, slots=True)
class GatewayRecords:
    """Read-only queries of the gateway's records: its SQLite file, or the PostgreSQL database all processes share."""

    sqlite_path: Path
    database_url: str | None = None

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Every row of `sql` (`?` placeholders)."""
        if self.database_url is None:
            with sqlite3.connect(f"file:{self.sqlite_path}?mode=ro", uri=True, timeout=30) as db:
                return [tuple(row) for row in db.execute(sql, tuple(params)).fetchall()]
        return _in_a_thread(self.database_url, to_postgres(sql), params)


def _in_a_thread(url: str, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    """Run one PostgreSQL query from synchronous code called on a running event loop (its own loop, a thread)."""
    found: list[tuple[Any, ...]] = []
    failure: list[BaseException] = []

    async def fetch() -> None:
        connection = await asyncpg.connect(url, timeout=30)
        try:
            found.extend(tuple(row) for row in await connection.fetch(sql, *params))
        finally:
            await connection.close()

    def run() -> None:
        try:
            asyncio.run(fetch())
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread, raised there
            failure.append(exc)

    worker = threading.Thread(target=run, name="bench-gateway-records")
    worker.start()
    worker.join()
    if failure:
        raise failure[0]
    return found


__all__ = [
    "LOCAL_POSTGRES_URL",
    "BenchSetupError",
    "ExtraGateways",
    "GatewayRecords",
    "shared_environment",
    "throwaway_database",
]
