"""A whole local network (`rogatory dev up`) of real processes on the real RabbitMQ, for session fixtures."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from deploy.configuration import system_amqp_url, system_management_url
from deploy.localnet.devstack import destroy, down, up
from protocol.directory import NOTHING_HELD, Directory, verify_directory
from protocol.encoding import b64decode
from protocol.errors import ErrorCode
from protocol.keys import SigningPublicKey
from protocol.limits import DEFAULT_LIMITS
from protocol.signing import SignedStatement

AMQP_URL = system_amqp_url(os.environ)
MANAGEMENT_URL = system_management_url(os.environ)


@contextlib.contextmanager
def running_stack(root: Path) -> Iterator[dict[str, Any]]:
    """`rogatory dev up` in `root` (its stack.json as a dict); `down` and removal of its vhost afterwards."""
    try:
        yield asyncio.run(up(root, amqp_url=AMQP_URL, management_url=MANAGEMENT_URL, say=lambda _: None))
    finally:
        down(root, say=lambda _: None)
        asyncio.run(destroy(root, amqp_url=AMQP_URL, management_url=MANAGEMENT_URL))


def verified_directory(stack: dict[str, Any]) -> Directory:
    """The network's directory, verified against its authority key."""
    network = stack["network"]
    signed = SignedStatement.from_json(Path(network["directory_file"]).read_bytes(), code=ErrorCode.MALFORMED_DIRECTORY)
    return verify_directory(
        signed,
        SigningPublicKey(b64decode(network["authority_key"])),
        now=datetime.now(UTC),
        held_version=NOTHING_HELD,
        limits=DEFAULT_LIMITS,
    )


__all__ = ["AMQP_URL", "MANAGEMENT_URL", "running_stack", "verified_directory"]
