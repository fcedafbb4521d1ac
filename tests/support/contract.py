"""Checks of requests and answers against an OpenAPI document's schemas, by operationId and status."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from jsonschema import Draft202012Validator

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def operations_by_id(document: dict[str, Any]) -> dict[str, tuple[str, str, dict[str, Any]]]:
    """operationId -> (method, path, operation)."""
    return {
        operation["operationId"]: (method, path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    }


def _json_schema(content: dict[str, Any]) -> dict[str, Any] | None:
    for media in ("application/json", "application/problem+json"):
        if media in content:
            schema: dict[str, Any] = content[media]["schema"]
            return schema
    return None


@dataclass
class ContractCheck:
    """Validates each (operationId, request body, status, answer) against `document`; counts what it checked."""

    document: dict[str, Any]
    checked: list[tuple[str, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._operations = operations_by_id(self.document)

    def _validate(self, schema: dict[str, Any], instance: object) -> None:
        # The document's refs (#/components/...) resolve against the document, so the schema is checked from it.
        wrapped = {"components": self.document["components"], "$ref": "#/x-checked", "x-checked": schema}
        errors = list(
            Draft202012Validator(wrapped, format_checker=Draft202012Validator.FORMAT_CHECKER).iter_errors(instance)
        )
        assert not errors, [f"{list(error.absolute_path)}: {error.message}" for error in errors]

    def __call__(self, operation_id: str, body: bytes | None, status: int, answer: object) -> None:
        """Raise AssertionError unless the call is one the document describes, request and answer alike.

        A request body is checked when the agent accepted it (a refused one may break the schema on purpose).
        """
        assert operation_id in self._operations, f"no operation {operation_id} in the document"
        _, _, operation = self._operations[operation_id]
        if body is not None and 200 <= status < 300:
            request_schema = _json_schema(operation["requestBody"]["content"])
            assert request_schema is not None, f"{operation_id} takes no JSON body"
            self._validate(request_schema, json.loads(body))
        responses = operation["responses"]
        assert str(status) in responses, f"{operation_id} answered {status}, not documented: {answer}"
        if status == 204:  # No Content: no body to check
            assert answer == {}, f"{operation_id} answered 204 with a body: {answer}"
            self.checked.append((operation_id, status))
            return
        schema = _json_schema(responses[str(status)].get("content") or {})
        assert schema is not None, f"{operation_id} {status} has no JSON schema"
        self._validate(schema, answer)
        self.checked.append((operation_id, status))


__all__ = ["ContractCheck", "operations_by_id"]
