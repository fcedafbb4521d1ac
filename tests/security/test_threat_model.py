"""SECURITY.md names tests that exist: the threat model cannot point at a test that was renamed or removed."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_REFERENCE = re.compile(r"`(tests/[\w/]+\.py)(?:::(\w+))?`|`::(\w+)`")


def defined_tests(path: Path) -> set[str]:
    """Names of the test functions defined in a test module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_")
    }


def test_every_test_security_md_names_exists() -> None:
    """Each `tests/x.py::test_y` (and each `::test_y` after it, same module) is a test function in that file."""
    text = (ROOT / "SECURITY.md").read_text(encoding="utf-8")
    current: Path | None = None
    missing, named = [], 0
    for module, name, short in _REFERENCE.findall(text):
        if module:
            current = ROOT / module
            assert current.is_file(), module
        assert current is not None
        wanted = name or short
        if wanted:
            named += 1
            if wanted not in defined_tests(current):
                missing.append(f"{current.relative_to(ROOT)}::{wanted}")
    assert missing == []
    assert named >= 50
