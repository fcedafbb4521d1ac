"""The fictional sample documents shipped with the project (`deploy/samples/`), and the agencies of their case.

Case BD-LY-2025-0007 goes from Bangladesh's central authority
(`REQUESTING`) to Libya's (`REQUESTED`): the demo runs it, the benchmarks
and the tests build their documents from it.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

REQUESTING = "BD-MOHA-PSD"
REQUESTED = "LY-MLA-CA"
REQUEST_SAMPLE = "BD-LY-2025-0007_01_MLA_REQUEST.json"
ACKNOWLEDGEMENT_SAMPLE = "BD-LY-2025-0007_02_ACKNOWLEDGEMENT.json"


def sample(name: str) -> dict[str, Any]:
    """One of the fictional sample documents shipped with the project."""
    loaded: dict[str, Any] = json.loads(resources.files("deploy").joinpath("samples", name).read_text("utf-8"))
    return loaded


__all__ = ["ACKNOWLEDGEMENT_SAMPLE", "REQUESTED", "REQUESTING", "REQUEST_SAMPLE", "sample"]
