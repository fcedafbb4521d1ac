"""`protocol/` is pure: it imports nothing that does I/O, reads the clock or the environment."""

from __future__ import annotations

import ast
from pathlib import Path

PROTOCOL = Path(__file__).resolve().parents[2] / "protocol"
ALLOWED = {
    "__future__",
    "base64",
    "binascii",
    "collections",
    "dataclasses",
    "datetime",
    "enum",
    "functools",
    "hashlib",
    "hmac",
    "itertools",
    "json",
    "math",
    "re",
    "struct",
    "typing",
    "unicodedata",
    "uuid",
    "nacl",
    "pydantic",
    "pydantic_core",
    "rfc8785",
    "protocol",
    "types",
    "abc",
    "operator",
    "bisect",
    "string",
    "decimal",
    "textwrap",
    "ipaddress",
}
FORBIDDEN_NAMES = {"datetime.now", "datetime.utcnow", "time.time", "date.today", "os.environ"}


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_protocol_imports_only_its_allow_list():
    """No asyncio, aiohttp, aio_pika, structlog, os, socket, time... anywhere in protocol/."""
    offenders = {
        f"{path.relative_to(PROTOCOL.parent)}: {root}"
        for path in PROTOCOL.rglob("*.py")
        for root in imported_roots(path) - ALLOWED
    }
    assert not offenders, f"protocol/ imports off its allow-list: {sorted(offenders)}"


def test_protocol_never_reads_the_clock():
    """No call to datetime.now() or similar: functions take `now`."""
    offenders = []
    for path in PROTOCOL.rglob("*.py"):
        source = path.read_text(encoding="utf-8")
        offenders += [f"{path.name}: {name}" for name in FORBIDDEN_NAMES if name + "(" in source]
    assert not offenders, offenders


def test_the_allow_list_check_catches_a_forbidden_import(tmp_path):
    """The check itself works: a module importing asyncio is reported."""
    module = tmp_path / "bad.py"
    module.write_text("import asyncio\nfrom os import path\n")
    assert imported_roots(module) - ALLOWED == {"asyncio", "os"}
