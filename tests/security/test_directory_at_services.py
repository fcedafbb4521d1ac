"""The directory at the services: the gateway refuses an unsigned, forged or rolled-back directory; the agent too."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agents.held_directory import HELD_FILE, remember_directory
from agents.settings import AgentSettings
from gateway.auditlog import AuditLog
from gateway.directory import DirectoryHolder
from gateway.store import GatewayStore
from protocol.keys import SigningPrivateKey
from protocol.signing import SignedStatement
from runtime.errors import ConfigurationError
from runtime.runner import read_directory
from tests.support.network import LY, NOW, LocalNetwork


def write(path: Path, signed: SignedStatement) -> Path:
    path.write_bytes(signed.model_dump_json().encode("utf-8"))
    return path


def unsigned(net: LocalNetwork) -> bytes:
    document = json.loads(net.signed_directory().model_dump_json())
    document["signature"] = ""
    return json.dumps(document).encode("utf-8")


async def test_gateway_refuses_rollback_unsigned_and_forged_directories_and_keeps_the_one_in_force(
    tmp_path: Path,
) -> None:
    """Version 2 in force: version 1, an unsigned and a forged directory are refused; version 2 stays in force."""
    net = LocalNetwork()
    store = await GatewayStore.open(tmp_path / "gateway.db")
    try:
        audit = await AuditLog.load(store, origin="rogatory.test/audit-log", log_key=net.log_key)
        arguments = {
            "authority": net.authority.public_key,
            "store": store,
            "audit": audit,
            "now": NOW,
            "limits": net.limits,
        }
        net.version = 2
        holder = await DirectoryHolder.load(write(tmp_path / "v2.json", net.signed_directory()), **arguments)  # type: ignore[arg-type]
        net.version = 1
        with pytest.raises(ConfigurationError, match="DIRECTORY_ROLLBACK"):
            await DirectoryHolder.load(write(tmp_path / "v1.json", net.signed_directory()), **arguments)  # type: ignore[arg-type]
        assert await holder.reload(tmp_path / "v1.json", **arguments) is False  # type: ignore[arg-type]
        (tmp_path / "unsigned.json").write_bytes(unsigned(net))
        assert await holder.reload(tmp_path / "unsigned.json", **arguments) is False  # type: ignore[arg-type]
        forger = SigningPrivateKey.generate()
        net.version = 3
        forged = net.signed_directory()
        forged = forged.model_copy(update={"signature": forger.sign(forged.payload)})
        assert await holder.reload(write(tmp_path / "forged.json", forged), **arguments) is False  # type: ignore[arg-type]
        assert holder.current.version == 2
    finally:
        await store.close()


def test_agent_refuses_an_unsigned_or_expired_directory_at_start(tmp_path: Path) -> None:
    """An agent does not start on a directory that is unsigned, or expired."""
    net = LocalNetwork()
    settings = AgentSettings.model_validate(
        {
            "agency": LY,
            "amqp_url": "amqps://u:p@localhost:5671/v",
            "data_dir": tmp_path,
            "directory_file": tmp_path / "directory.json",
            "authority_key": "unused",
            "keystore_file": tmp_path / "keystore.json",
            "keystore_passphrase_file": tmp_path / "passphrase",
            "api_tokens_sha256": ("0" * 64,),
            "gateway_broker_user": "gateway",
        }
    )
    (tmp_path / "directory.json").write_bytes(unsigned(net))
    with pytest.raises(ConfigurationError, match="DIRECTORY_SIGNATURE_INVALID"):
        read_directory(settings.directory_file, net.authority.public_key, now=NOW, limits=settings.limits)
    write(tmp_path / "directory.json", net.signed_directory())
    assert (
        read_directory(settings.directory_file, net.authority.public_key, now=NOW, limits=settings.limits).version == 1
    )
    with pytest.raises(ConfigurationError, match="DIRECTORY_EXPIRED"):
        read_directory(
            settings.directory_file,
            net.authority.public_key,
            now=NOW.replace(year=NOW.year + 1),
            limits=settings.limits,
        )


def test_agent_refuses_a_directory_older_than_one_it_accepted_before(tmp_path: Path) -> None:
    """An agent that once accepted version 2 refuses version 1 (rollback) and another document as version 2."""
    net = LocalNetwork()
    net.version = 2
    remember_directory(tmp_path, net.directory())
    remember_directory(tmp_path, net.directory())  # the same version again is fine (a restart)
    net.version = 1
    with pytest.raises(ConfigurationError, match="DIRECTORY_ROLLBACK"):
        remember_directory(tmp_path, net.directory())
    net.version = 2
    with pytest.raises(ConfigurationError, match="DIRECTORY_ROLLBACK"):
        remember_directory(tmp_path, net.directory(network="another"))
    net.version = 3
    remember_directory(tmp_path, net.directory())
    assert (tmp_path / HELD_FILE).read_text().startswith("3 ")
