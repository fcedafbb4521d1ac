"""Process statistics from /proc: CPU time, time waiting for a CPU, resident memory, the broker's CPU.

Read before and after each scenario of `rogatory bench`, so that the
figures are the scenario's own.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit


@dataclass(frozen=True, slots=True)
class ProcessFigures:
    """CPU and memory of one dev-stack process over one scenario (from /proc)."""

    name: str
    pid: int
    cpu_s: float
    cpu_percent_of_one_core: float
    waiting_for_cpu_percent: float
    """Time its threads were runnable but not running (/proc schedstat): how starved of CPU the machine left it."""
    peak_rss_mb: float
    rss_mb: float


_CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of `pid` so far (fields 14 and 15 of /proc/<pid>/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def runqueue_seconds(pid: int) -> float:
    """Seconds the threads of `pid` spent runnable but waiting for a CPU (second field of each schedstat)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue  # a thread that ended meanwhile, or a kernel without schedstat
    return total / 1e9


def memory_mb(pid: int) -> tuple[float, float]:
    """(VmHWM, VmRSS) of `pid` in MB: its peak and its current resident memory."""
    values: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmHWM", "VmRSS"):
            values[name] = int(rest.split()[0]) / 1024
    return round(values.get("VmHWM", 0.0), 1), round(values.get("VmRSS", 0.0), 1)


def broker_pids(amqp_url: str) -> list[int]:
    """The RabbitMQ node on this machine that listens on `amqp_url`'s port (`beam.smp`); none if it is elsewhere.

    Its CPU is part of what a message costs: every hop of the whole path is
    work for the broker, and the raw baseline is one such hop. Only the node
    serving the benchmark counts (not other nodes a test suite may be
    stopping); other vhosts' traffic on it counts too, another reason the
    figures are a shared machine's.
    """
    url = urlsplit(amqp_url.split(",", maxsplit=1)[0])
    port = url.port or (5671 if url.scheme == "amqps" else 5672)
    sockets = {f"socket:[{inode}]" for inode in _listening_socket_inodes(port)}
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "beam.smp":
                continue
            if any(str(fd.readlink()) in sockets for fd in (entry / "fd").iterdir()):
                found.append(int(entry.name))
        except OSError:
            continue  # a process that ended meanwhile, or one this user may not look into
    return found


def _listening_socket_inodes(port: int) -> set[str]:
    """Inodes of the TCP sockets listening on `port` (/proc/net/tcp and tcp6: state 0A is LISTEN)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def broker_cpu_seconds(pids: Sequence[int]) -> dict[int, float]:
    """CPU seconds so far of each of `pids` that is still running."""
    found = {}
    for pid in pids:
        try:
            found[pid] = cpu_seconds(pid)
        except OSError:
            continue
    return found


def broker_cpu_spent(before: dict[int, float]) -> float:
    """CPU seconds the broker node(s) spent since `before` (a node that went away meanwhile is left out)."""
    after = broker_cpu_seconds(list(before))
    return sum(after[pid] - before[pid] for pid in before if pid in after)


def stack_pids(stack: dict[str, Any], names: Sequence[str]) -> dict[str, int]:
    """The pids of the gateway and of the agents of `names` in a dev stack's `stack.json`."""
    pids = {"gateway": int(stack["gateway"]["pid"])}
    pids.update({name: int(stack["agents"][name]["pid"]) for name in names})
    return pids


def hosted_once(pids: dict[str, int], stack: dict[str, Any]) -> dict[str, int]:
    """`pids` with the agencies an agent host runs (`agents.hosting`) counted once, under the host's name."""
    hosts = {agency: entry["host"] for agency, entry in stack["agents"].items() if entry.get("host")}
    return {hosts.get(name, name): pid for name, pid in pids.items()}


def process_figures(
    pids: dict[str, int], cpu_before: dict[str, float], waiting_before: dict[str, float], wall: float
) -> list[ProcessFigures]:
    """CPU over the scenario's `wall` seconds and memory now, of each process."""
    processes = []
    for name, pid in pids.items():
        cpu = cpu_seconds(pid) - cpu_before[name]
        waiting = runqueue_seconds(pid) - waiting_before[name]
        peak, current = memory_mb(pid)
        processes.append(
            ProcessFigures(
                name, pid, round(cpu, 2), round(100 * cpu / wall, 1), round(100 * waiting / wall, 1), peak, current
            )
        )
    return processes


__all__ = [
    "ProcessFigures",
    "broker_cpu_seconds",
    "broker_cpu_spent",
    "broker_pids",
    "cpu_seconds",
    "hosted_once",
    "memory_mb",
    "process_figures",
    "runqueue_seconds",
    "stack_pids",
]
