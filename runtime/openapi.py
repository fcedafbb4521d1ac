"""The parts of an OpenAPI 3.1 document both services' APIs share: problems, error codes, bearer tokens.

A refusal is described with `refusal(description, *codes)`: its problem schema
and, in `x-error-codes`, the stable codes it can carry (docs/GUIDE.md's error
table is tested against the agent's).

Each service describes its own paths (`agents.openapi`, `gateway.openapi`);
how a refusal looks (RFC 9457, with a stable `code` from
`protocol.errors.ErrorCode`) and how a client authenticates are written here
once, so the two documents cannot disagree about them.
"""

from __future__ import annotations

from typing import Any, Final

from protocol.errors import ErrorCode

PROBLEM_REF: Final = {"$ref": "#/components/schemas/Problem"}

ERROR_CODE_SCHEMA: Final[dict[str, Any]] = {"type": "string", "enum": [c.value for c in ErrorCode]}
PROBLEM_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["type", "title", "status", "code"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"$ref": "#/components/schemas/ErrorCode"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "loc": {"type": "array", "items": {"type": ["string", "integer"]}},
                    "msg": {"type": "string"},
                },
            },
        },
    },
}
"""An RFC 9457 problem; `errors` lists the fields of an invalid document."""

BEARER_SCHEME: Final[dict[str, Any]] = {"bearer": {"type": "http", "scheme": "bearer"}}


def shared_schemas() -> dict[str, Any]:
    """The component schemas every Rogatory API document holds: `Problem` and `ErrorCode`."""
    return {"ErrorCode": ERROR_CODE_SCHEMA, "Problem": PROBLEM_SCHEMA}


def problem_response(description: str) -> dict[str, Any]:
    """A response that is a problem (`application/problem+json`)."""
    return {"description": description, "content": {"application/problem+json": {"schema": PROBLEM_REF}}}


def refusal(description: str, *codes: ErrorCode) -> dict[str, Any]:
    """A problem response and the stable codes it can carry (`x-error-codes`, also named in its description)."""
    answer = problem_response(f"{description} ({', '.join(f'`{code}`' for code in codes)})")
    answer["x-error-codes"] = [code.value for code in codes]
    return answer


def error_codes(document: dict[str, Any]) -> frozenset[ErrorCode]:
    """Every code the refusals of `document` list in `x-error-codes`."""
    return frozenset(
        ErrorCode(code)
        for item in document["paths"].values()
        for operation in item.values()
        if isinstance(operation, dict) and "responses" in operation
        for answer in operation["responses"].values()
        for code in answer.get("x-error-codes", ())
    )


def json_response(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON response of `schema`."""
    return {"description": description, "content": {"application/json": {"schema": schema}}}


__all__ = [
    "BEARER_SCHEME",
    "ERROR_CODE_SCHEMA",
    "PROBLEM_REF",
    "PROBLEM_SCHEMA",
    "error_codes",
    "json_response",
    "problem_response",
    "refusal",
    "shared_schemas",
]
