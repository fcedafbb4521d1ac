"""`rogatory bench` runs every scenario at a tiny size and writes complete, well-formed figures.

Nothing here asserts a speed: the figures of a shared machine are not a test
verdict. What is checked is that the benchmark measures what it claims (every
stage, every process, the baseline beside it, the targets) and that every
benchmark message got all its evidence and audit entries.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from deploy.bench import scenarios
from deploy.bench.baseline import Baseline, baseline_for
from deploy.bench.scenarios import STAGES, Latency
from deploy.provision.broker import ManagementUnreachable

pytestmark = [pytest.mark.e2e, pytest.mark.broker]


def test_latency_figures_are_the_percentiles_of_the_samples():
    """p50/p95/p99/max are read off the sorted samples; no samples give zeros, not an error."""
    figures = Latency.of([float(n) for n in range(100, 0, -1)])
    assert (figures.count, figures.p50_ms, figures.p99_ms, figures.max_ms) == (100, 51.0, 99.0, 100.0)
    assert Latency.of([]).count == 0


def test_each_scenario_is_compared_with_the_baseline_of_its_size():
    """A 64 KB scenario is never divided by the 2 KB baseline, nor the reverse."""
    small, large = Baseline(4830, 2000, 900.0, "amqp"), Baseline(66832, 2000, 400.0, "amqp")
    assert baseline_for([small, large], 4836) is small
    assert baseline_for([small, large], 66830) is large


async def test_a_failed_cleanup_is_said_and_never_hides_the_figures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The management API not answering at the end of a run: a warning naming what was left, no exception."""

    async def unreachable(*_args: object, **_kwargs: object) -> None:
        raise ManagementUnreachable("management API timed out")

    monkeypatch.setattr(scenarios, "destroy", unreachable)
    said: list[str] = []
    network = scenarios.BenchNetwork(
        tmp_path / "pair", amqp_url="amqp://127.0.0.1:1/", management_url=None, bench_pairs=0, say=said.append
    )
    await network.destroy()
    assert len(said) == 1
    assert "could not delete the bench network" in said[0]
    assert "management API timed out" in said[0]


@pytest.fixture(scope="module")
def figures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench") / "figures.json"
    result = subprocess.run(
        [sys.executable, "-m", "deploy", "bench", "--messages", "8", "--pairs", "1", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=420,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "raw broker" in result.stdout
    assert "target throughput_ratio" in result.stdout
    loaded: dict[str, Any] = json.loads(Path(out).read_text())
    return loaded


def test_bench_covers_pair_fixed_load_mla_requests_large_messages_and_many_agencies(figures: dict[str, Any]):
    """Five scenarios: 2 KB at saturation and at half its load, the sample MLA request (each opening a case),
    64 KB, and several pairs of agencies."""
    names = [scenario["name"] for scenario in figures["scenarios"]]
    assert names == [
        "pair-2KB-saturation",
        "pair-2KB-fixed-half-load",
        "pair-mla-requests-saturation",
        "pair-64KB-saturation",
        "many-2-agencies-2KB-saturation",
    ]
    sizes = {scenario["name"]: scenario["content_bytes"] for scenario in figures["scenarios"]}
    assert sizes["pair-64KB-saturation"] == 64_000
    requests = next(s for s in figures["scenarios"] if s["name"] == "pair-mla-requests-saturation")
    assert requests["kind"] == "requests"
    assert requests["document_bytes"] > 10_000  # the sample request, Arabic and Bengali included
    fixed = figures["scenarios"][1]
    assert fixed["offered_per_s"] is not None
    assert fixed["offered_per_s"] > 0


def test_every_message_has_its_evidence_and_audit_entries_and_every_stage_is_measured(figures: dict[str, Any]):
    """Each scenario is complete (3 evidence at the sender, 3 audit entries) with figures for each stage."""
    for scenario in figures["scenarios"]:
        assert scenario["complete"], scenario["incomplete"]
        assert scenario["latency"]["count"] == scenario["messages"] > 0
        latency = scenario["latency"]
        assert latency["p50_ms"] <= latency["p95_ms"] <= latency["p99_ms"] <= latency["max_ms"]
        assert set(scenario["stages"]) == set(STAGES)
        assert all(stage["count"] == scenario["messages"] for stage in scenario["stages"].values())
        assert scenario["audit_append"]["appends"] > 0
        assert scenario["sealed_bytes"] > scenario["content_bytes"]


def test_cpu_and_memory_are_read_for_every_process_of_the_path(figures: dict[str, Any]):
    """The gateway and each agent of the scenario report CPU time and peak resident memory."""
    for scenario in figures["scenarios"]:
        names = {process["name"] for process in scenario["processes"]}
        assert "gateway" in names
        assert len(names) == scenario["agencies"] + 1
        for process in scenario["processes"]:
            assert process["cpu_s"] > 0
            assert process["peak_rss_mb"] >= process["rss_mb"] > 0


def test_baseline_ratio_and_targets_are_reported(figures: dict[str, Any]):
    """The raw baseline of each size is in the same run, the ratio is derived from it, the targets are judged."""
    assert {baseline["sealed_bytes"] > 60_000 for baseline in figures["baselines"]} == {True, False}
    assert figures["raw_broker_per_s"] > 0
    assert figures["ratio"] == pytest.approx(figures["whole_path_per_s"] / figures["raw_broker_per_s"], abs=0.001)
    targets = figures["targets"]
    assert isinstance(targets["throughput_ratio"]["met"], bool)
    assert isinstance(targets["p99_ms_at_half_load"]["met"], bool)
    assert targets["memory_growth_mb"]["met"] is None  # no soak asked for


def test_the_brokers_cpu_per_message_is_measured_beside_its_cpu_per_raw_hop(figures: dict[str, Any]):
    """With the broker on this machine (as in CI), its CPU per whole-path message and per raw hop are both read."""
    for scenario in figures["scenarios"]:
        assert scenario["broker_cpu_ms_per_message"] > 0
    for baseline in figures["baselines"]:
        assert baseline["broker_cpu_ms_per_message"] > 0


def test_the_broker_messages_an_exchange_costs_are_counted_by_the_broker(figures: dict[str, Any]):
    """The counting scenarios read the broker's own publish and delivery counters: every exchange costs at least
    its submission and its relay; the target is judged on the 2 KB pair."""
    counted = {"pair-2KB-saturation", "pair-mla-requests-saturation", "many-2-agencies-2KB-saturation"}
    for scenario in figures["scenarios"]:
        if scenario["name"] not in counted:
            assert scenario["broker_published_per_exchange"] is None
            continue
        assert scenario["broker_published_per_exchange"] >= 2, scenario["name"]
        assert scenario["broker_delivered_per_exchange"] >= 2, scenario["name"]
    assert isinstance(figures["targets"]["broker_messages_per_exchange"]["met"], bool)


def test_bench_runs_on_two_gateway_processes_sharing_one_postgresql_log(tmp_path: Path):
    """`--gateways 2`: a second gateway process on a throwaway PostgreSQL database; every message complete, the
    second process measured beside the first. With the many-agencies scenario (its agencies hosted two to a
    process) too: each network gets a database of its own (one holding another network's directory is refused)."""
    out = tmp_path / "figures.json"
    small = ["--messages", "8", "--pairs", "1", "--agencies-per-process", "2", "--no-large", "--no-requests"]
    where = ["--state-dir", str(tmp_path / "state"), "--json", str(out)]
    result = subprocess.run(
        [sys.executable, "-m", "deploy", "bench", *small, "--gateways", "2", *where],
        capture_output=True,
        text=True,
        timeout=420,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "2 gateway processes on PostgreSQL" in result.stdout
    assert "the pair network's gateway records in a throwaway PostgreSQL database" in result.stdout
    assert "the many network's gateway records in a throwaway PostgreSQL database" in result.stdout
    figures: dict[str, Any] = json.loads(out.read_text())
    for scenario in figures["scenarios"]:
        assert scenario["complete"], scenario["incomplete"]
        assert {"gateway", "gateway-2"} <= {process["name"] for process in scenario["processes"]}
