"""What every test shares: nothing a test runs may write outside the test's own directories."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True, scope="session")
def private_state_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """`rogatory audit verify` remembers what it verified under `$XDG_STATE_HOME`: during the tests, in a temporary
    directory (for the test process and every command it starts), never in the user's `~/.local/state`."""
    before = os.environ.get("XDG_STATE_HOME")
    os.environ["XDG_STATE_HOME"] = str(tmp_path_factory.mktemp("xdg-state"))
    yield
    if before is None:
        os.environ.pop("XDG_STATE_HOME", None)
    else:
        os.environ["XDG_STATE_HOME"] = before
