"""A whole local network (`rogatory dev up`) of real processes on the real RabbitMQ, per test session."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from protocol.directory import Directory
from tests.support.devstack import AMQP_URL, MANAGEMENT_URL, running_stack, verified_directory


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """`rogatory dev up` in a fresh state directory; `down` and removal of its vhost afterwards."""
    with running_stack(tmp_path_factory.mktemp("stack")) as running:
        yield running


@pytest.fixture(scope="session")
def directory(stack: dict[str, Any]) -> Directory:
    """The network's directory, verified against its authority key."""
    return verified_directory(stack)


__all__ = ["AMQP_URL", "MANAGEMENT_URL"]
