"""Helpers shared by the MLA tests: reading samples, editing them, re-sealing their digest."""

import copy
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from protocol.encoding import canonical_json, sha256_hex
from protocol.mla import MessageDocument, validate_document

SAMPLES_DIR = Path(__file__).resolve().parents[3] / "deploy" / "samples"

FINAL_STATES = {
    "BD-LY-2025-0007": "CLOSED",
    "LY-BD-2025-0003": "ACKNOWLEDGED",
    "BD-LY-2025-0011": "CLOSED",
    "BD-LY-2025-0014": "IN_EXECUTION",
    "LY-BD-2025-0009": "SUBMITTED",
}
"""The final state of each sample case, as NOTES.md §5 gives it."""


def sample_paths() -> list[Path]:
    """Every positive sample, in file-name order (case, then sequence)."""
    return sorted(SAMPLES_DIR.glob("*.json"))


def read_json(path: Path) -> Any:
    """The JSON value of a file."""
    return json.loads(path.read_bytes())


def load_sample(name: str) -> dict[str, Any]:
    """A positive sample as a JSON object, to be edited by a test."""
    value = read_json(SAMPLES_DIR / name)
    assert isinstance(value, dict)
    return value


def encode(document: dict[str, Any], *, reseal: bool = True) -> bytes:
    """Bytes of a document; with `reseal`, its payload digest recomputed first."""
    document = copy.deepcopy(document)
    if reseal and "integrity" in document and "payload" in document:
        document["integrity"]["payload_sha256"] = sha256_hex(canonical_json(document["payload"]))
    return json.dumps(document, ensure_ascii=False).encode("utf-8")


def cases() -> dict[str, list[MessageDocument]]:
    """The validated positive samples, grouped by case, in order."""
    grouped: dict[str, list[MessageDocument]] = defaultdict(list)
    for path in sample_paths():
        document = validate_document(path.read_bytes())
        grouped[document.case_id].append(document)
    return dict(grouped)
