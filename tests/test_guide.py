"""docs/GUIDE.md holds to the contract: its error table is the agent document's codes, each with its status,
and its JSON examples of answers match the schemas of those answers. (Its commands and Python run against a
live network in tests/e2e/test_guide_examples.py.)"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from agents.openapi import AGENT_ERROR_CODES, OPENAPI
from protocol.errors import ErrorCode

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "GUIDE.md"
ROW = re.compile(r"^\| (\d{3}) \| (`[A-Z_]+`(?:, `[A-Z_]+`)*) \|", re.MULTILINE)


def table_statuses(text: str) -> dict[str, set[int]]:
    """code -> the statuses the guide's error table gives it."""
    section = re.split(r"^## \d+\. Errors", text, maxsplit=1, flags=re.MULTILINE)[1]
    found: dict[str, set[int]] = defaultdict(set)
    for status, codes in ROW.findall(section):
        for code in re.findall(r"`([A-Z_]+)`", codes):
            found[code].add(int(status))
    return found


def document_statuses() -> dict[str, set[int]]:
    """code -> the statuses whose refusals list it in the agent's OpenAPI document."""
    found: dict[str, set[int]] = defaultdict(set)
    for item in OPENAPI["paths"].values():
        for operation in item.values():
            for status, answer in operation["responses"].items():
                for code in answer.get("x-error-codes", ()):
                    found[code].add(int(status))
    return found


def test_the_error_table_has_every_code_of_the_agent_api_with_its_statuses():
    in_guide = table_statuses(GUIDE.read_text(encoding="utf-8"))
    assert set(in_guide) <= {code.value for code in ErrorCode}, "the table names a code that does not exist"
    assert set(in_guide) == {code.value for code in AGENT_ERROR_CODES}
    assert dict(in_guide) == dict(document_statuses())


def test_the_table_check_catches_a_missing_code():
    text = GUIDE.read_text(encoding="utf-8").replace("| 429 | `RATE_LIMITED` |", "| 429 | `TOO_LARGE` |")
    assert "RATE_LIMITED" not in table_statuses(text)
    assert table_statuses(text)["TOO_LARGE"] == {413, 429}


def json_examples(text: str) -> list[Any]:
    return [json.loads(block) for block in re.findall(r"^```json\n(.*?)^```", text, re.MULTILINE | re.DOTALL)]


def schema_errors(name: str, instance: Any) -> list[str]:
    schema = {"components": OPENAPI["components"], "$ref": f"#/components/schemas/{name}"}
    return [f"{list(e.absolute_path)}: {e.message}" for e in Draft202012Validator(schema).iter_errors(instance)]


def test_the_guides_json_examples_are_answers_the_document_allows():
    case, problem = json_examples(GUIDE.read_text(encoding="utf-8"))
    assert schema_errors("Case", case) == []
    assert schema_errors("Problem", problem) == []


def test_the_guide_keys_each_message_on_its_own_never_by_its_case():
    """Each example's Idempotency-Key names one document; none is a case reference (`requesting_ref`, `case_id`),
    which every message of the case shares: the case's second message would be refused as a reused key."""
    text = GUIDE.read_text(encoding="utf-8")
    keyed: dict[str, set[str]] = defaultdict(set)
    for block in re.findall(r"^```(?:sh|python)\n(.*?)^```", text, re.MULTILINE | re.DOTALL):
        samples = re.findall(r"deploy/samples/([\w.-]+\.json)", block)
        keys = re.findall(r"Idempotency-Key: ([^'\"]+)'|idempotency_key=\"([^\"]+)\"", block)
        for key in {first or second for first, second in keys}:
            assert len(samples) == 1, f"a keyed example submits one sample: {block}"
            keyed[key].add(samples[0])
    assert len(keyed) >= 2
    assert all(len(documents) == 1 for documents in keyed.values()), keyed
    samples_dir = GUIDE.parents[1] / "deploy" / "samples"
    case_references = set()
    for name in {name for documents in keyed.values() for name in documents}:
        document = json.loads((samples_dir / name).read_text(encoding="utf-8"))
        case_references |= {document["case_id"], document.get("requesting_ref"), document.get("requested_ref")}
    assert case_references.isdisjoint(keyed)
