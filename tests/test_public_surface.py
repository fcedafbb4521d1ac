"""Each package's public surface is deliberate: pinned here, every name real, every module listing `__all__`."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PINNED = {
    "protocol": {
        "DEFAULT_LIMITS",
        "AgencyId",
        "CaseId",
        "Directory",
        "ErrorCode",
        "EvidenceStatement",
        "EvidenceType",
        "KeyId",
        "Limits",
        "MessageId",
        "OpenedMessage",
        "ProtocolError",
        "SealedMessage",
        "authenticate_header",
        "check_freshness",
        "issue_evidence",
        "open_sealed",
        "seal",
        "verify_directory",
        "verify_evidence",
    },
    "runtime": {
        "BrokerUnavailable",
        "ConfigurationError",
        "ManagementUnavailable",
        "RoutingFailed",
        "ServiceError",
        "ServiceUnhealthy",
        "StoreUnavailable",
        "TransientFailure",
    },
    "gateway": {"GatewaySettings", "run_gateway"},
    "agents": {"AgentSettings", "run_agent"},
    "deploy": {"main"},
}


@pytest.mark.parametrize("package", sorted(PINNED))
def test_package_exports_exactly_its_pinned_names(package):
    """A name joins or leaves a package's public surface only by changing this test."""
    module = importlib.import_module(package)
    assert set(module.__all__) == PINNED[package]
    for name in module.__all__:
        assert hasattr(module, name), name


def test_every_module_declares_its_public_names():
    """Every module of the five packages lists `__all__` (entry points and `__init__` aside)."""
    missing = []
    for package in PINNED:
        for path in (ROOT / package).rglob("*.py"):
            if path.name == "__main__.py":
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"))
            names = {
                target.id
                for node in tree.body
                if isinstance(node, ast.Assign | ast.AnnAssign)
                for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
                if isinstance(target, ast.Name)
            }
            if "__all__" not in names and path.name != "__init__.py":
                missing.append(str(path.relative_to(ROOT)))
    assert not missing, missing


LAYERS: dict[str, set[str]] = {
    "protocol": {"runtime", "agents", "gateway", "deploy"},
    "runtime": {"agents", "gateway", "deploy"},
    "agents": {"gateway", "deploy"},
    "gateway": {"agents", "deploy"},
}
"""What each package may never import: `protocol <- runtime <- agents, gateway <- deploy`."""


def test_imports_run_one_way_from_protocol_to_deploy():
    """`protocol` imports none of ours, `runtime` only `protocol`, and `agents` and `gateway` never each other."""
    offenders = []
    for package, forbidden in LAYERS.items():
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                roots = []
                if isinstance(node, ast.Import):
                    roots = [alias.name.split(".")[0] for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    roots = [node.module.split(".")[0]]
                offenders += [f"{path.relative_to(ROOT)} imports {root}" for root in roots if root in forbidden]
    assert not offenders, offenders
