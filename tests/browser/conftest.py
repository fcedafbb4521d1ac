"""Headless Chromium (Debian's `chromium`, driven by Playwright) against a `rogatory dev up` network.

Playwright never downloads a browser here: it launches `/usr/bin/chromium`,
which `deploy/run test` installs with apt-get (`deploy/ensure-chromium.sh`).
The tests skip, saying why, only when that browser or the Playwright package
is missing, or when Playwright's bundled driver cannot start (a library such
as libatomic.so.1 missing, which `deploy/ensure-chromium.sh` installs).
Screenshots go to `test-artifacts/browser/` at the top of the repository
(ignored by git), or to `$ROGATORY_SCREENSHOTS`.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deploy.configuration import system_amqp_url, system_management_url
from deploy.localnet.devstack import destroy, down, up

CHROMIUM = Path(os.environ.get("ROGATORY_CHROMIUM", "/usr/bin/chromium"))
AMQP_URL = system_amqp_url(os.environ)
MANAGEMENT_URL = system_management_url(os.environ)
REPOSITORY = Path(__file__).resolve().parents[2]
SCREENSHOTS = Path(os.environ.get("ROGATORY_SCREENSHOTS", REPOSITORY / "test-artifacts" / "browser"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Skip the tests that drive the browser, with the reason, when it cannot be driven (never silently); the
    tests here that only talk HTTP to the network still run."""
    browser_items = [item for item in items if "chromium" in getattr(item, "fixturenames", ())]
    if not browser_items:
        return
    reason = None
    if not _importable("playwright"):
        reason = "the playwright package is not installed (pip install -e '.[test]')"
    elif not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing: deploy/run test installs Debian's chromium with apt-get"
    else:
        reason = _driver_cannot_start()
    if reason is None:
        return
    for item in browser_items:
        item.add_marker(pytest.mark.skip(reason=reason))


def _driver_cannot_start() -> str | None:
    """Why Playwright's bundled Node cannot start here, or None when `node --version` answers."""
    import playwright  # noqa: PLC0415 - only once it is known to be importable

    node = os.environ.get("PLAYWRIGHT_NODEJS_PATH") or str(Path(playwright.__file__).parent / "driver" / "node")
    try:
        result = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=60, check=False)
    except OSError as exc:
        return f"Playwright's driver {node} cannot start: {exc}"
    if result.returncode == 0:
        return None
    said = (result.stderr.strip().splitlines() or ["no message"])[-1]
    return f"Playwright's driver cannot start: {said} (deploy/ensure-chromium.sh installs libatomic1 for it)"


def _importable(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


@pytest.fixture(scope="session")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A dev network of its own (the tests stop one of its agents), torn down afterwards."""
    root = tmp_path_factory.mktemp("browser-net")
    try:
        stack = asyncio.run(up(root, amqp_url=AMQP_URL, management_url=MANAGEMENT_URL, say=lambda _: None))
        yield stack | {"root": root}
    finally:
        down(root, say=lambda _: None)
        asyncio.run(destroy(root, amqp_url=AMQP_URL, management_url=MANAGEMENT_URL))


@pytest.fixture
def chromium() -> Iterator[Any]:
    """A headless Chromium for one test. Not shared across tests: Playwright's sync API holds an event loop
    on this thread while it runs, which must be gone before the next asyncio test starts."""
    from playwright.sync_api import sync_playwright  # noqa: PLC0415 - only once the skip above passed

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"], headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    """Where a person finds the pictures of each page the tests looked at."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
