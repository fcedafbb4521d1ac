"""Each HTTP route the services register is described in their OpenAPI documents, method by method.

The routes are read from the modules that declare them (the route tables of
`gateway/*.py` and `agents/*.py`), so a new endpoint without its description
fails here rather than surprising an integrator.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from agents.openapi import OPENAPI as AGENT_OPENAPI
from gateway.openapi import OPENAPI

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
