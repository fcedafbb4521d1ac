"""The bench's many-agencies scenario run K agencies to an agent process (`--agencies-per-process`)."""

from __future__ import annotations

from typing import Any

from deploy.bench.processes import hosted_once
from deploy.localnet.network import bench_hosts, bench_pair


def test_every_benchmark_agency_is_hosted_once_and_pairs_stay_together():
    """250 pairs, 500 to a process: all in one host; 100 to a process: five hosts of 100, each pair in one."""
    assert bench_hosts(250, 0) == ()
    (everyone,) = bench_hosts(250, 500)
    assert sorted(everyone) == sorted(agency for index in range(1, 251) for agency in bench_pair(index))
    hosts = bench_hosts(250, 100)
    assert [len(host) for host in hosts] == [100] * 5
    assert len({agency for host in hosts for agency in host}) == 500
    for index in range(1, 251):
        sender, recipient = bench_pair(index)
        assert any(sender in host and recipient in host for host in hosts)


def test_a_host_process_is_measured_once_not_once_per_agency():
    """Ten hosted agencies share one pid: the bench counts that process once, under the host's name."""
    stack: dict[str, Any] = {
        "agents": {
            **{f"BD-BENCH-{index:02d}": {"pid": 7, "host": "agents-host-1"} for index in range(1, 11)},
            "LY-MLA-CA": {"pid": 8},
        }
    }
    pids = {"gateway": 5, **{name: entry["pid"] for name, entry in stack["agents"].items()}}
    assert hosted_once(pids, stack) == {"gateway": 5, "agents-host-1": 7, "LY-MLA-CA": 8}
