"""A local network of real processes for the attachment tests, with a short blob retention."""

from __future__ import annotations

import asyncio
import copy
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from deploy.client.samples import REQUEST_SAMPLE, sample
from deploy.configuration import system_amqp_url, system_management_url
from deploy.localnet.devstack import destroy, down, trusting, up
from deploy.localnet.network import NetworkPaths
from protocol.directory import NOTHING_HELD, Directory, verify_directory
from protocol.encoding import b64decode
from protocol.errors import ErrorCode
from protocol.keys import SigningPrivateKey, SigningPublicKey
from protocol.keystore import unlock_keystore
from protocol.limits import DEFAULT_LIMITS
from protocol.signing import SignedStatement

AMQP_URL = system_amqp_url(os.environ)
MANAGEMENT_URL = system_management_url(os.environ)
BD, LY, LY_AGO, BD_POLICE = "BD-MOHA-PSD", "LY-MLA-CA", "LY-AGO", "BD-POLICE-CID-HTU"
RETENTION_S = 2.0
"""How long the gateway keeps a body after its recipient retrieved it, in this network."""


@dataclass(frozen=True)
class Network:
    """A running network: its stack document and where its files are."""

    root: Path
    stack: dict[str, Any]

    def agent(self, agency: str) -> tuple[str, str]:
        """(URL, token) of an agency's agent."""
        entry = self.stack["agents"][agency]
        return entry["url"], entry["token"]

    @property
    def gateway_url(self) -> str:
        return str(self.stack["gateway"]["url"])

    def signing_key(self, agency: str) -> SigningPrivateKey:
        """The agency's private signing key, from its keystore."""
        paths = NetworkPaths(self.root)
        keys = unlock_keystore(paths.keystore(agency).read_bytes(), paths.passphrase(agency).read_bytes().strip())
        return SigningPrivateKey(keys["signing"])

    def directory(self) -> Directory:
        network = self.stack["network"]
        signed = SignedStatement.from_json(
            Path(network["directory_file"]).read_bytes(), code=ErrorCode.MALFORMED_DIRECTORY
        )
        return verify_directory(
            signed,
            SigningPublicKey(b64decode(network["authority_key"])),
            now=datetime.now(UTC),
            held_version=NOTHING_HELD,
            limits=DEFAULT_LIMITS,
        )


@pytest.fixture(scope="session")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    """`rogatory dev up` with a short retention and a fast sweep of the gateway's blob store."""
    root = tmp_path_factory.mktemp("attachments-stack")
    environment = {"ROGATORY_BLOB_RETENTION_S": str(RETENTION_S), "ROGATORY_BLOB_SWEEP_S": "0.5"}
    try:
        stack = asyncio.run(
            up(
                root,
                amqp_url=AMQP_URL,
                management_url=MANAGEMENT_URL,
                say=lambda _: None,
                service_environment=environment,
            )
        )
        yield Network(root=root.resolve(), stack=stack)
    finally:
        down(root, say=lambda _: None)
        asyncio.run(destroy(root, amqp_url=AMQP_URL, management_url=MANAGEMENT_URL))


@pytest.fixture
async def session(network: Network) -> AsyncIterator[aiohttp.ClientSession]:
    """A client of the network's agents and of its HTTPS gateway (verified with the network's CA)."""
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout, connector=trusting(network.stack)) as client_session:
        yield client_session


def request_with(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """A fresh MLA request (new message id and case) listing `entries` beside the sample's own attachments."""
    document = copy.deepcopy(sample(REQUEST_SAMPLE))
    document["message_id"] = str(uuid.uuid4())
    document["case_id"] = f"BD-LY-ATT-{uuid.uuid4().hex[:12].upper()}"
    document["attachments"] = [*document.get("attachments", []), *entries]
    return document
