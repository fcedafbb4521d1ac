"""The three-site test's figures: printed by the test, and again in the terminal summary so CI shows them."""

from __future__ import annotations

from collections.abc import Callable

import pytest

_FIGURES = pytest.StashKey[list[str]]()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    """The figures of every three-site run, at the end of the run."""
    lines = config.stash.get(_FIGURES, [])
    if lines:
        terminalreporter.section("three-site figures")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture
def figure(request: pytest.FixtureRequest, record_property: Callable[[str, object], None]) -> Callable[[str], None]:
    """Print one figure and file it for the terminal summary and the JUnit XML."""

    def file(line: str) -> None:
        print(line)
        request.config.stash.setdefault(_FIGURES, []).append(line)
        record_property("figure", line)

    return file
