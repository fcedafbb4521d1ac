"""The JSON Schema files kept in the repository, rendered from the models.

`docs/schemas/<MESSAGE_TYPE>.schema.json` holds, for every message type, the
JSON Schema (2020-12) of a whole document of that type, as
`protocol.mla.document.document_json_schema` generates it. A test renders
them again and compares with the files, so they cannot drift from the
models. Rendering is pure (bytes out): `protocol/` does no I/O, so the
files are written by `python -m tests.protocol.mla.regenerate_schemas`.
"""

import json
from collections.abc import Mapping
from types import MappingProxyType

from protocol.mla.catalogue import MessageType
from protocol.mla.document import document_json_schema


def schema_file_name(message_type: MessageType) -> str:
    """The file name of the schema of `message_type`: `MLA_REQUEST.schema.json`."""
    return f"{message_type.value}.schema.json"


def render_schema(message_type: MessageType) -> bytes:
    """The schema file of `message_type`: UTF-8 JSON, two-space indent, final newline."""
    text = json.dumps(document_json_schema(message_type), indent=2, ensure_ascii=False)
    return (text + "\n").encode("utf-8")


def render_schemas() -> Mapping[str, bytes]:
    """Every schema file, by file name."""
    return MappingProxyType(
        {schema_file_name(message_type): render_schema(message_type) for message_type in MessageType}
    )


__all__ = ["render_schema", "render_schemas", "schema_file_name"]
