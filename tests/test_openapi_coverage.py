"""Each HTTP route the services register is described in their OpenAPI documents, method by method, fully.

The routes are read from the modules that declare them (the route tables of
`gateway/*.py` and `agents/*.py`), so a new endpoint without its description
fails here rather than surprising an integrator. Described means: an
`operationId` (camelCase, unique in its document), and a schema for every
answer, success or refusal (only a HEAD answer, which has no body, may go
without); and the whole document is valid OpenAPI 3.1 (openapi-spec-validator).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate

from agents.openapi import OPENAPI as AGENT_OPENAPI
from gateway.openapi import OPENAPI

DOCUMENTS = pytest.mark.parametrize("document", [AGENT_OPENAPI, OPENAPI], ids=["agent", "gateway"])
OPERATION_ID = re.compile(r"^[a-z][A-Za-z0-9]+$")
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}

ROOT = Path(__file__).resolve().parents[1]
ROUTE_TUPLE = re.compile(r'\(\s*"(GET|POST|PUT|HEAD|DELETE|PATCH)",\s*"(/[^"]*)"')
ROUTER_CALL = re.compile(r'router\.add_(get|post|put|head|delete|patch)\(\s*"(/[^"]*)"')


def declared_routes(package: str) -> set[tuple[str, str]]:
    """(method, OpenAPI path) of every route declared in `package`'s modules."""
    found: set[tuple[str, str]] = set()
    for module in (ROOT / package).glob("*.py"):
        text = module.read_text(encoding="utf-8")
        for method, path in [*ROUTE_TUPLE.findall(text), *ROUTER_CALL.findall(text)]:
            found.add((method.lower(), re.sub(r"\{(\w+):[^/]*\}(?=/|$)", r"{\1}", path)))
    return found


def undocumented(routes: set[tuple[str, str]], document: dict[str, Any]) -> list[tuple[str, str]]:
    return sorted((method, path) for method, path in routes if method not in document["paths"].get(path, {}))


def test_every_gateway_route_is_in_the_gateway_openapi_document():
    routes = declared_routes("gateway")
    assert len(routes) > 20, "the route tables were not found: is the pattern still right?"
    assert undocumented(routes, OPENAPI) == []


def test_every_agent_route_is_in_the_agent_openapi_document():
    routes = declared_routes("agents")
    routes -= {(method, path) for method, path in routes if path.startswith("/v1/audit/")}  # the gateway's, called
    assert len(routes) > 8, "the route tables were not found: is the pattern still right?"
    assert undocumented(routes, AGENT_OPENAPI) == []


def test_the_coverage_check_catches_an_undocumented_route():
    with pytest.raises(AssertionError):
        assert undocumented({("get", "/v1/not-described")}, OPENAPI) == []


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    ]


def incomplete(document: dict[str, Any]) -> list[str]:
    """What the contract lacks: operations without an operationId, answers without a schema."""
    found: list[str] = []
    seen: set[str] = set()
    for method, path, operation in operations(document):
        operation_id = operation.get("operationId")
        if not isinstance(operation_id, str) or not OPERATION_ID.match(operation_id):
            found.append(f"{method.upper()} {path}: no camelCase operationId")
        elif operation_id in seen:
            found.append(f"{method.upper()} {path}: operationId {operation_id} used twice")
        seen.add(str(operation_id))
        responses = operation.get("responses") or {}
        if not responses:
            found.append(f"{method.upper()} {path}: no responses")
        for status, answer in responses.items():
            if method == "head" or status == "204":
                continue  # a HEAD answer and a 204 have no body: headers only
            content = answer.get("content") or {}
            if not content:
                found.append(f"{method.upper()} {path} {status}: no content")
            for media, described in content.items():
                if "schema" not in described:
                    found.append(f"{method.upper()} {path} {status} {media}: no schema")
            if str(status).startswith("4") and "application/problem+json" not in content:
                found.append(f"{method.upper()} {path} {status}: a refusal that is not a problem")
    return found


@DOCUMENTS
def test_every_operation_has_an_operation_id_and_every_answer_a_schema(document):
    assert len(operations(document)) > 10
    assert incomplete(document) == []


@DOCUMENTS
def test_the_documents_are_valid_openapi(document):
    validate(document)


def test_the_contract_check_catches_a_missing_operation_id_and_a_schemaless_answer():
    document = {
        "paths": {
            "/v1/new": {
                "get": {"responses": {"200": {"description": "OK"}}},
                "post": {
                    "operationId": "makeNew",
                    "responses": {"201": {"description": "x", "content": {"application/json": {}}}},
                },
            }
        }
    }
    assert incomplete(document) == [
        "GET /v1/new: no camelCase operationId",
        "GET /v1/new 200: no content",
        "POST /v1/new 201 application/json: no schema",
    ]
