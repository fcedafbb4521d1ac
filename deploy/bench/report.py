"""The report of `rogatory bench`: the headline figures, the targets, and the printed table.

Targets are reported, never enforced: nothing here fails on a number.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from deploy.bench.baseline import Baseline, baseline_for
from deploy.bench.scenarios import ScenarioFigures

TARGET_RATIO: Final = 0.15
"""Issue 20: the whole path at saturation at least 0.15 of one raw hop measured in the same run..."""
STRETCH_RATIO: Final = 0.30
"""...on the way to 0.3."""
TARGET_P99_MS: Final = 100.0
TARGET_GROWTH_MB: Final = 50.0
TARGET_BROKER_MESSAGES: Final = 2.5
"""At most this many broker messages (published) per exchange at saturation."""


@dataclass(frozen=True, slots=True)
class BenchFigures:
    """What one run measured; the headline figures first (the 2 KB pair at saturation)."""

    messages: int
    whole_path_per_s: float
    raw_broker_per_s: float
    ratio: float
    latency_p50_ms: float
    latency_p95_ms: float
    latency_p99_ms: float
    latency_max_ms: float
    fixed_load_per_s: float | None
    fixed_load_p99_ms: float | None
    targets: dict[str, dict[str, Any]]
    scenarios: list[ScenarioFigures]
    baselines: list[Baseline]
    note: str = (
        "figures from a shared machine: other work runs beside the benchmark, so absolute numbers drift; "
        "the baseline is measured in the same run on the same broker for that reason"
    )


def bench_figures(scenarios: list[ScenarioFigures], baselines: list[Baseline], *, soak_messages: int) -> BenchFigures:
    """The headline figures and the targets of a run (the 2 KB pair at saturation first, then at half its load)."""
    saturated, fixed = scenarios[0], scenarios[1]
    raw = baseline_for(baselines, saturated.sealed_bytes)
    raw_rate = raw.per_s if raw is not None else 0.0
    ratio = round(saturated.whole_path_per_s / raw_rate, 3) if raw_rate else 0.0
    soak = next((s for s in scenarios if s.memory_growth_mb is not None), None)
    growth = max(soak.memory_growth_mb.values()) if soak is not None and soak.memory_growth_mb else None
    complete = all(s.complete for s in scenarios)
    targets: dict[str, dict[str, Any]] = {
        "throughput_ratio": {
            "target": f">= {TARGET_RATIO} (on the way to {STRETCH_RATIO})",
            "measured": ratio,
            "met": complete and ratio >= TARGET_RATIO,
        },
        "p99_ms_at_half_load": {
            "target": f"< {TARGET_P99_MS}",
            "offered_per_s": fixed.offered_per_s,
            "measured": fixed.latency.p99_ms,
            "met": complete and fixed.latency.count > 0 and fixed.latency.p99_ms < TARGET_P99_MS,
        },
        "broker_messages_per_exchange": {
            "target": f"<= {TARGET_BROKER_MESSAGES}",
            "measured": saturated.broker_published_per_exchange,
            "met": None
            if saturated.broker_published_per_exchange is None
            else saturated.broker_published_per_exchange <= TARGET_BROKER_MESSAGES,
        },
        "memory_growth_mb": {
            "target": f"< {TARGET_GROWTH_MB} over {soak_messages or 100_000} messages",
            "measured": growth,
            "met": None if growth is None else (complete and growth < TARGET_GROWTH_MB),
        },
    }
    return BenchFigures(
        messages=saturated.messages,
        whole_path_per_s=saturated.whole_path_per_s,
        raw_broker_per_s=raw_rate,
        ratio=ratio,
        latency_p50_ms=saturated.latency.p50_ms,
        latency_p95_ms=saturated.latency.p95_ms,
        latency_p99_ms=saturated.latency.p99_ms,
        latency_max_ms=saturated.latency.max_ms,
        fixed_load_per_s=fixed.whole_path_per_s,
        fixed_load_p99_ms=fixed.latency.p99_ms,
        targets=targets,
        scenarios=scenarios,
        baselines=baselines,
    )


def _print_broker(scenario: ScenarioFigures, raw: Baseline | None, say: Callable[[str], None]) -> None:
    """The broker's CPU per message in raw hops and, at saturation, the rate it alone would allow."""
    if not scenario.broker_cpu_ms_per_message:
        return
    hop = raw.broker_cpu_ms_per_message if raw else None
    hops = f", as much as {scenario.broker_cpu_ms_per_message / hop:.1f} raw hops" if hop else ""
    say(f"    {'rabbitmq (beam.smp)':<20} cpu {scenario.broker_cpu_ms_per_message:.2f} ms a message{hops}")
    if scenario.offered_per_s is None and raw and raw.per_s:
        ceiling = 1000 / scenario.broker_cpu_ms_per_message
        say(
            f"    {'':<20} the broker alone, on a core of its own, would carry at most {ceiling:.0f} msg/s "
            f"of this path ({ceiling / raw.per_s:.3f} of raw)"
        )


def _print_costs(scenario: ScenarioFigures, raw: Baseline | None, say: Callable[[str], None]) -> None:
    """CPU and memory of each process (and its CPU an exchange), the broker's CPU and its message count."""
    for process in scenario.processes:
        per_exchange = 1000 * process.cpu_s / scenario.messages if scenario.messages else 0.0
        say(
            f"    {process.name:<20} cpu {process.cpu_s:>7.2f} s, {per_exchange:>5.2f} ms an exchange "
            f"({process.cpu_percent_of_one_core:>5.1f}% of a core, waiting for a cpu "
            f"{process.waiting_for_cpu_percent:>5.1f}%), peak {process.peak_rss_mb:>6.1f} MB, "
            f"now {process.rss_mb:>6.1f} MB"
        )
    total_cpu = sum(process.cpu_s for process in scenario.processes)
    if scenario.messages:
        say(f"    {'all processes':<20} cpu {1000 * total_cpu / scenario.messages:.2f} ms an exchange")
    _print_broker(scenario, raw, say)
    if scenario.broker_published_per_exchange is not None:
        say(
            f"    broker messages an exchange: {scenario.broker_published_per_exchange:.2f} published, "
            f"{scenario.broker_delivered_per_exchange:.2f} delivered (the broker's own count; a raw hop is "
            f"1 and 1; target at most {TARGET_BROKER_MESSAGES})"
        )


def print_figures(figures: BenchFigures, say: Callable[[str], None]) -> None:
    """Each scenario beside the baseline of its size, then the baselines, the ratio and the targets."""
    for scenario in figures.scenarios:
        raw = baseline_for(figures.baselines, scenario.sealed_bytes)
        ratio = f"{scenario.whole_path_per_s / raw.per_s:.3f} of raw" if raw and raw.per_s else "no baseline"
        say(
            f"\n  {scenario.name} ({scenario.agencies} agencies, document {scenario.document_bytes} B, "
            f"sealed {scenario.sealed_bytes} B, {'complete' if scenario.complete else 'INCOMPLETE'})"
        )
        offered = "" if scenario.offered_per_s is None else f", offered {scenario.offered_per_s}/s"
        say(
            f"    whole path {scenario.whole_path_per_s:>7.1f} msg/s ({ratio}), "
            f"submitted {scenario.submitted_per_s}/s{offered}"
        )
        say(f"    {'latency (ms)':<30} {'p50':>8} {'p95':>8} {'p99':>8} {'max':>8}")
        rows = [("submit -> DELIVERY", scenario.latency)] + [(f"  {k}", v) for k, v in scenario.stages.items()]
        for label, latency in rows:
            say(f"    {label:<30} {latency.p50_ms:>8} {latency.p95_ms:>8} {latency.p99_ms:>8} {latency.max_ms:>8}")
        append = scenario.audit_append
        if append.get("appends"):
            say(
                f"    {'  audit_append (in gateway)':<30} {append.get('p50_ms'):>8} {append.get('p95_ms'):>8} "
                f"{append.get('p99_ms'):>8} {append.get('max_ms'):>8}"
            )
        _print_costs(scenario, raw, say)
        if scenario.memory_growth_mb is not None:
            say(f"    resident growth after the first tenth (MB): {scenario.memory_growth_mb}")
            say(f"    resident growth over the second half (MB): {scenario.memory_growth_second_half_mb}")
    for baseline in figures.baselines:
        say(
            f"\n  raw broker:  {baseline.per_s:>8.1f} messages/s of {baseline.sealed_bytes} B "
            f"(aio-pika over {baseline.transport}, persistent, confirmed, acked, one quorum queue, same broker, "
            "same run)"
        )
        if baseline.broker_cpu_ms_per_message is not None:
            say(f"               rabbitmq (beam.smp) cpu {baseline.broker_cpu_ms_per_message:.2f} ms a message")
    say(f"  ratio:       {figures.ratio:.3f} of the raw single-hop rate (2 KB pair at saturation)")
    for name, target in figures.targets.items():
        met = {True: "met", False: "NOT met", None: "not measured"}[target["met"]]
        say(f"  target {name:<22} {target['target']:<36} measured {target['measured']}: {met}")
    say(f"  note: {figures.note}")


__all__ = ["BenchFigures", "bench_figures", "print_figures"]
