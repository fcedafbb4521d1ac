"""A local development network: its agencies, keys, directory, secrets and files.

`create_network` makes everything a network needs in a state directory; the
services never see this module, only the files and environment it prepares.

    DIR/network.json                 ids, ports, broker users and secrets (mode 0600)
    DIR/authority/keystore.json      the directory authority's signing key (encrypted)
    DIR/directory.json               the signed directory
    DIR/gateway/                     keystore.json, passphrase, data/, gateway.log
    DIR/agents/<AGENCY>/             keystore.json, passphrase, data/, agent.log
    DIR/stack.json                   what `dev up` started (docs/API.md)

A network lives on one broker, or on the nodes of a cluster: `create_network`
takes one AMQP URL or several (comma-separated, same credentials); each
service is then given every node (it connects to the first that answers and
moves to the next when that one fails) and the queues are replicated on all
of them. `service_environment` holds extra `ROGATORY_*` settings given to
every service of the network (a shorter heartbeat or watchdog for a fault
drill, say), kept with the network so that a restart gives the same.

The dev agreements follow UNTOC art. 18(13): requests between states go
from central authority to central authority (`BD-MOHA-PSD` <-> `LY-MLA-CA`),
and each central authority exchanges with its own domestic agencies.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field

from deploy.provision.broker import NetworkPlan
from protocol.directory import (
    AgencyEntry,
    Agreement,
    AgreementRule,
    Directory,
    GatewayEntry,
    PublishedEncryptionKey,
    PublishedSigningKey,
    sign_directory,
)
from protocol.encoding import b64decode, b64encode, truncate_to_millis
from protocol.ids import AgencyId, GatewayId
from protocol.keys import EncryptionPrivateKey, SigningPrivateKey, SigningPublicKey
from protocol.keystore import lock_keystore, unlock_keystore
from protocol.storage import STORAGE_KEY_NAME, StorageKey

NETWORK_FORMAT: Final = "rogatory-devnet/1"
DEV_AGENCIES: Final[dict[str, tuple[str, str]]] = {
    "BD-MOHA-PSD": ("Public Security Division, Ministry of Home Affairs (Bangladesh central authority)", "BD"),
    "BD-POLICE-CID-HTU": ("Bangladesh Police CID, Human Trafficking Investigation Unit", "BD"),
    "LY-MLA-CA": ("Central authority for mutual legal assistance of Libya (placeholder)", "LY"),
    "LY-AGO": ("Office of the Attorney General of Libya", "LY"),
}
CENTRAL_AUTHORITIES: Final = {"BD": "BD-MOHA-PSD", "LY": "LY-MLA-CA"}
KEY_VALIDITY: Final = timedelta(days=365)
DIRECTORY_VALIDITY: Final = timedelta(days=90)
DIRECTORY_RENEW_BEFORE: Final = timedelta(days=30)
"""`dev up` signs a new directory version when the one in force expires sooner than this."""


class ServiceSecrets(BaseModel):
    """One service's broker identity, port and API token(s)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    broker_user: str
    broker_password: str
    http_port: int
    keystore_passphrase: str


class AgentEntry(ServiceSecrets):
    """An agent: its service secrets and its API token."""

    token: str


class GatewayEntryFile(ServiceSecrets):
    """The gateway: its service secrets and its operator, auditor, reader and metrics scrape tokens."""

    operator_token: str
    auditor_token: str
    reader_token: str
    metrics_token: str = Field(default_factory=lambda: secrets.token_urlsafe(32))
    """A network made before scrapes needed a token gets one each time it is read (never written back)."""


class NetworkDescription(BaseModel):
    """`network.json`: everything about a dev network that is not a key or a directory."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: str = NETWORK_FORMAT
    network_id: str
    vhost: str
    broker_user_prefix: str
    amqp_host: str
    amqp_port: int
    amqp_alternates: tuple[str, ...] = ()
    """Further broker nodes of a cluster, as `host:port`, after `amqp_host:amqp_port`."""
    quorum_group_size: int | None = None
    """Replicas of each quorum queue (the number of nodes, on a cluster); None on one broker."""
    service_environment: dict[str, str] = {}
    """Extra `ROGATORY_*` settings for every service of this network."""
    authority_key: str
    authority_passphrase: str
    gateway: GatewayEntryFile
    agents: dict[str, AgentEntry]

    def amqp_url(self, user: str, password: str) -> str:
        """The AMQP URL of one broker identity in this network's vhost (one per node, comma-separated)."""
        credentials = f"{quote(user, safe='')}:{quote(password, safe='')}"
        nodes = (f"{self.amqp_host}:{self.amqp_port}", *self.amqp_alternates)
        return ",".join(
            urlunsplit(("amqp", f"{credentials}@{node}", "/" + quote(self.vhost, safe=""), "", "")) for node in nodes
        )

    def plan(self) -> NetworkPlan:
        """The broker plan (vhost, users, permissions) of this network."""
        return NetworkPlan(
            vhost=self.vhost,
            gateway_user=self.gateway.broker_user,
            agency_users={AgencyId(agency): entry.broker_user for agency, entry in self.agents.items()},
            quorum_group_size=self.quorum_group_size,
        )

    def passwords(self) -> dict[str, str]:
        """Broker passwords by user name."""
        found = {self.gateway.broker_user: self.gateway.broker_password}
        found.update({entry.broker_user: entry.broker_password for entry in self.agents.values()})
        return found


@dataclass(frozen=True, slots=True)
class NetworkPaths:
    """Where each file of a network lives."""

    root: Path

    @property
    def description(self) -> Path:
        """`network.json`."""
        return self.root / "network.json"

    @property
    def directory(self) -> Path:
        """The signed directory."""
        return self.root / "directory.json"

    @property
    def authority_keystore(self) -> Path:
        """The directory authority's keystore."""
        return self.root / "authority" / "keystore.json"

    @property
    def stack(self) -> Path:
        """`stack.json`."""
        return self.root / "stack.json"

    def service_dir(self, service: str) -> Path:
        """`gateway/` or `agents/<AGENCY>/`."""
        return self.root / "gateway" if service == "gateway" else self.root / "agents" / service

    def keystore(self, service: str) -> Path:
        """A service's keystore."""
        return self.service_dir(service) / "keystore.json"

    def passphrase(self, service: str) -> Path:
        """A service's keystore passphrase file."""
        return self.service_dir(service) / "passphrase"

    def data(self, service: str) -> Path:
        """A service's data directory."""
        return self.service_dir(service) / "data"

    def log(self, service: str) -> Path:
        """A service's log file."""
        return self.service_dir(service) / ("gateway.log" if service == "gateway" else "agent.log")


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically, readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    temporary.replace(path)


def sha256_token(token: str) -> str:
    """What services are configured with: the SHA-256 of a token, never the token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _published(key: SigningPrivateKey | EncryptionPrivateKey, now: datetime) -> dict[str, Any]:
    return {
        "key_id": key.key_id,
        "public_key": key.public_key.raw,
        "valid_from": truncate_to_millis(now - timedelta(minutes=5)),
        "valid_until": truncate_to_millis(now + KEY_VALIDITY),
    }


def _passphrase() -> str:
    return secrets.token_urlsafe(24)


def create_network(
    root: Path,
    *,
    amqp_url: str,
    now: datetime,
    service_environment: dict[str, str] | None = None,
    bench_pairs: int = 0,
) -> NetworkDescription:
    """Generate keys, directory, secrets and files of a new dev network in `root`.

    `amqp_url` is one broker, or the comma-separated nodes of a cluster.
    `bench_pairs` adds that many pairs of agencies (`bench_pair`) for `rogatory bench`.
    """
    paths = NetworkPaths(root)
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    network_id = secrets.token_hex(4)
    prefix = f"rogatory-{network_id}."
    nodes = [urlsplit(part.strip()) for part in amqp_url.split(",") if part.strip()]
    broker = nodes[0]

    authority = SigningPrivateKey.generate()
    authority_passphrase = _passphrase()
    write_private(paths.authority_keystore, lock_keystore({"signing": authority.seed}, authority_passphrase.encode()))

    agent_entries: dict[str, AgentEntry] = {}
    agency_entries: list[AgencyEntry] = []
    for agency, (name, country) in (DEV_AGENCIES | bench_agencies(bench_pairs)).items():
        agent_entries[agency], published = _create_agency(paths, agency, name, country, prefix=prefix, now=now)
        agency_entries.append(published)

    gateway_entry, gateway_passphrase = _create_gateway_keys(paths, network_id, now)
    description = NetworkDescription(
        network_id=network_id,
        vhost=f"rogatory-{network_id}",
        broker_user_prefix=prefix,
        amqp_host=broker.hostname or "127.0.0.1",
        amqp_port=broker.port or 5672,
        amqp_alternates=tuple(f"{node.hostname or '127.0.0.1'}:{node.port or 5672}" for node in nodes[1:]),
        quorum_group_size=len(nodes) if len(nodes) > 1 else None,
        service_environment=dict(service_environment or {}),
        authority_key=b64encode(authority.public_key.raw),
        authority_passphrase=authority_passphrase,
        gateway=GatewayEntryFile(
            broker_user=prefix + "gateway",
            broker_password=secrets.token_urlsafe(24),
            http_port=_free_port(),
            keystore_passphrase=gateway_passphrase,
            operator_token=secrets.token_urlsafe(32),
            auditor_token=secrets.token_urlsafe(32),
            reader_token=secrets.token_urlsafe(32),
            metrics_token=secrets.token_urlsafe(32),
        ),
        agents=agent_entries,
    )
    directory = Directory(
        network=network_id,
        version=1,
        issued_at=now,
        expires_at=now + DIRECTORY_VALIDITY,
        authority_key=authority.key_id,
        agencies=tuple(agency_entries),
        gateway=gateway_entry,
        agreements=dev_agreements(now) + bench_agreements(bench_pairs, now),
    )
    write_private(paths.directory, sign_directory(directory, authority).model_dump_json().encode("utf-8"))
    write_private(paths.description, description.model_dump_json(indent=2).encode("utf-8"))
    return description


def _create_agency(
    paths: NetworkPaths, agency: str, name: str, country: str, *, prefix: str, now: datetime
) -> tuple[AgentEntry, AgencyEntry]:
    """An agency's keys in its keystore, its agent's secrets, and its entry in the directory."""
    signing, encryption = SigningPrivateKey.generate(), EncryptionPrivateKey.generate()
    passphrase = _passphrase()
    write_private(
        paths.keystore(agency),
        lock_keystore(
            {"signing": signing.seed, "encryption": encryption.raw, STORAGE_KEY_NAME: StorageKey.generate().raw},
            passphrase.encode(),
        ),
    )
    write_private(paths.passphrase(agency), passphrase.encode())
    agent = AgentEntry(
        broker_user=prefix + agency,
        broker_password=secrets.token_urlsafe(24),
        http_port=_free_port(),
        keystore_passphrase=passphrase,
        token=secrets.token_urlsafe(32),
    )
    published = AgencyEntry.model_validate(
        {
            "agency_id": agency,
            "name": name,
            "country": country,
            "signing_keys": (PublishedSigningKey.model_validate(_published(signing, now)),),
            "encryption_keys": (PublishedEncryptionKey.model_validate(_published(encryption, now)),),
        }
    )
    return agent, published


def _create_gateway_keys(paths: NetworkPaths, network_id: str, now: datetime) -> tuple[GatewayEntry, str]:
    """The gateway's evidence and log keys in its keystore; its directory entry and the keystore's passphrase."""
    evidence_key, log_key = SigningPrivateKey.generate(), SigningPrivateKey.generate()
    passphrase = _passphrase()
    write_private(
        paths.keystore("gateway"),
        lock_keystore({"evidence": evidence_key.seed, "log": log_key.seed}, passphrase.encode()),
    )
    write_private(paths.passphrase("gateway"), passphrase.encode())
    entry = GatewayEntry(
        gateway_id=GatewayId(f"gateway.{network_id}.rogatory.test"),
        evidence_keys=(PublishedSigningKey.model_validate(_published(evidence_key, now)),),
        log_keys=(PublishedSigningKey.model_validate(_published(log_key, now)),),
        log_origin=f"rogatory.test/{network_id}/audit-log",
    )
    return entry, passphrase


def dev_agreements(now: datetime) -> tuple[Agreement, ...]:
    """The dev network's agreements (see the module docstring)."""
    valid = {"valid_from": now - timedelta(days=1), "valid_until": now + timedelta(days=3650)}
    everything = ("*",)
    bd, ly = AgencyId(CENTRAL_AUTHORITIES["BD"]), AgencyId(CENTRAL_AUTHORITIES["LY"])
    bd_police, ly_ago = AgencyId("BD-POLICE-CID-HTU"), AgencyId("LY-AGO")
    return (
        Agreement(
            agreement_id="BD-LY-UNTOC-2025",
            title="Bangladesh-Libya mutual legal assistance under UNTOC art. 18 (central authorities)",
            rules=(
                AgreementRule(senders=(bd,), recipients=(ly,), message_types=everything),
                AgreementRule(senders=(ly,), recipients=(bd,), message_types=everything),
            ),
            **valid,
        ),
        Agreement(
            agreement_id="BD-DOMESTIC",
            title="Bangladesh: central authority and investigating agencies",
            rules=(
                AgreementRule(senders=(bd,), recipients=(bd_police,), message_types=everything),
                AgreementRule(senders=(bd_police,), recipients=(bd,), message_types=everything),
            ),
            **valid,
        ),
        Agreement(
            agreement_id="LY-DOMESTIC",
            title="Libya: central authority and prosecution",
            rules=(
                AgreementRule(senders=(ly,), recipients=(ly_ago,), message_types=everything),
                AgreementRule(senders=(ly_ago,), recipients=(ly,), message_types=everything),
            ),
            **valid,
        ),
    )


def bench_pair(index: int) -> tuple[AgencyId, AgencyId]:
    """The `index`-th pair of benchmark agencies: a sender in BD and a recipient in LY."""
    return AgencyId(f"BD-BENCH-{index:02d}"), AgencyId(f"LY-BENCH-{index:02d}")


def bench_agencies(pairs: int) -> dict[str, tuple[str, str]]:
    """The agencies of `pairs` benchmark pairs, as `DEV_AGENCIES` lists them."""
    agencies: dict[str, tuple[str, str]] = {}
    for index in range(1, pairs + 1):
        sender, recipient = bench_pair(index)
        agencies[sender] = (f"Benchmark sender {index}", "BD")
        agencies[recipient] = (f"Benchmark recipient {index}", "LY")
    return agencies


def bench_agreements(pairs: int, now: datetime) -> tuple[Agreement, ...]:
    """One agreement per benchmark pair, both ways, every message type."""
    valid = {"valid_from": now - timedelta(days=1), "valid_until": now + timedelta(days=3650)}
    agreements = []
    for index in range(1, pairs + 1):
        sender, recipient = bench_pair(index)
        agreements.append(
            Agreement(
                agreement_id=f"BENCH-{index:02d}",
                title=f"Benchmark pair {index}",
                rules=(
                    AgreementRule(senders=(sender,), recipients=(recipient,), message_types=("*",)),
                    AgreementRule(senders=(recipient,), recipients=(sender,), message_types=("*",)),
                ),
                **valid,
            )
        )
    return tuple(agreements)


def load_network(root: Path) -> NetworkDescription | None:
    """The network in `root`, or None if there is none."""
    paths = NetworkPaths(root)
    if not paths.description.exists():
        return None
    return NetworkDescription.model_validate_json(paths.description.read_bytes())


def renew_directory_if_due(root: Path, description: NetworkDescription, *, now: datetime) -> int | None:
    """Sign the next directory version if the one in force expires within `DIRECTORY_RENEW_BEFORE`."""
    paths = NetworkPaths(root)
    signed = json.loads(paths.directory.read_bytes())
    directory = Directory.model_validate_json(b64decode(signed["payload"]))
    if directory.expires_at - now > DIRECTORY_RENEW_BEFORE:
        return None
    keys = unlock_keystore(paths.authority_keystore.read_bytes(), description.authority_passphrase.encode())
    authority = SigningPrivateKey(keys["signing"])
    if SigningPublicKey(b64decode(description.authority_key)).key_id != authority.key_id:
        raise ValueError("the authority keystore does not match network.json")
    renewed = directory.model_copy(
        update={"version": directory.version + 1, "issued_at": now, "expires_at": now + DIRECTORY_VALIDITY}
    )
    write_private(paths.directory, sign_directory(renewed, authority).model_dump_json().encode("utf-8"))
    return renewed.version


__all__ = [
    "DEV_AGENCIES",
    "AgentEntry",
    "GatewayEntryFile",
    "NetworkDescription",
    "NetworkPaths",
    "bench_agencies",
    "bench_agreements",
    "bench_pair",
    "create_network",
    "dev_agreements",
    "load_network",
    "renew_directory_if_due",
    "sha256_token",
    "write_private",
]
