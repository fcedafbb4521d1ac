"""The benchmarks: `rogatory bench` (the whole path beside the raw broker) and `rogatory bench-attachments`.

`deploy.bench.run` runs `rogatory bench`: the scenarios
(`deploy.bench.scenarios`), each on a network started afresh, the raw-broker
baseline beside them (`deploy.bench.baseline`), the processes' CPU and
memory read from /proc (`deploy.bench.processes`), and the figures, targets
and table (`deploy.bench.report`). `deploy.bench.attachments` moves one
large file through the whole path against a plain copy. The command line
loads this package only when a benchmark runs; nothing fails on a number.
"""

from deploy.bench.attachments import AttachmentFigures, run_attachment_bench
from deploy.bench.baseline import Baseline
from deploy.bench.report import BenchFigures
from deploy.bench.run import BenchOptions, run_bench
from deploy.bench.scenarios import BenchFailed, Latency, Scenario, ScenarioFigures, bench_case, bench_note

__all__ = [
    "AttachmentFigures",
    "Baseline",
    "BenchFailed",
    "BenchFigures",
    "BenchOptions",
    "Latency",
    "Scenario",
    "ScenarioFigures",
    "bench_case",
    "bench_note",
    "run_attachment_bench",
    "run_bench",
]
