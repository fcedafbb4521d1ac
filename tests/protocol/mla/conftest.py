"""Fixtures for the MLA content tests: where the samples are, and the samples themselves."""

from pathlib import Path

import pytest

SAMPLES_DIR = Path(__file__).resolve().parents[3] / "deploy" / "samples"


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    """The directory of the positive samples, `deploy/samples`, found from this file."""
    return SAMPLES_DIR


@pytest.fixture(scope="session")
def negative_dir(samples_dir: Path) -> Path:
    """The directory of the negative samples."""
    return samples_dir / "negative"
