"""The JSON Schema files in docs/schemas are exactly what the models generate."""

import json
import re
from pathlib import Path

import pytest

from protocol import ids
from protocol.mla import MessageType, document_json_schema, render_schemas, schema_file_name
from protocol.mla.values import AGENCY_ID_PATTERN, CASE_ID_PATTERN

SCHEMA_DIR = Path(__file__).resolve().parents[3] / "docs" / "schemas"


def test_schema_files_on_disk_are_regenerated_exactly() -> None:
    """Rendering the schemas from the models gives the files on disk, byte for byte, and no others."""
    rendered = render_schemas()
    on_disk = {path.name: path.read_bytes() for path in SCHEMA_DIR.glob("*.schema.json")}
    assert set(on_disk) == set(rendered), "run: python -m tests.protocol.mla.regenerate_schemas"
    for name, content in rendered.items():
        assert on_disk[name] == content, f"{name} is stale; run: python -m tests.protocol.mla.regenerate_schemas"


def test_there_is_one_schema_per_message_type() -> None:
    """Every message type has its schema file, named after the type."""
    assert {schema_file_name(message_type) for message_type in MessageType} == set(render_schemas())
    assert schema_file_name(MessageType.MLA_REQUEST) == "MLA_REQUEST.schema.json"


@pytest.mark.parametrize("message_type", list(MessageType))
def test_schema_pins_its_message_type_and_payload(message_type: MessageType) -> None:
    """Each schema is draft 2020-12, closed, fixes message_type and types the payload."""
    schema = document_json_schema(message_type)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["additionalProperties"] is False
    assert schema["properties"]["message_type"]["const"] == message_type.value
    assert "$ref" in schema["properties"]["payload"]
    assert "payload" in schema["required"]
    assert "message_id" not in schema["required"]
    json.dumps(schema)


def test_schema_patterns_agree_with_the_identifier_parsers() -> None:
    """The JSON Schema patterns of agency and case ids are those `protocol.ids` enforces."""
    assert f"^{ids._AGENCY_ID.pattern.replace('(?:', '(')}$" == AGENCY_ID_PATTERN
    assert f"^{ids._CASE_ID.pattern}$" == CASE_ID_PATTERN
    for good in ("BD-MOHA-PSD", "LY-AGO", "LY-AGO-ZUW"):
        assert re.fullmatch(AGENCY_ID_PATTERN.strip("^$"), good)
