"""The envelope parser under coverage-guided fuzzing (atheris), a few thousand inputs per run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("atheris", reason="atheris has wheels for x86_64 Linux only")

ROOT = Path(__file__).resolve().parents[2]


def test_coverage_guided_fuzzing_finds_no_crash_in_the_envelope_parser():
    """libFuzzer mutates an honest sealed message 5,000 times: every input is opened or refused with a code."""
    result = subprocess.run(
        [sys.executable, "-m", "tests.security.atheris_envelope", "-runs=5000", "-seed=20261129", "-max_len=8192"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Done 5000 runs" in result.stderr
