"""A local development network: its agencies, keys, directory, secrets and files.

`create_network` makes everything a network needs in a state directory; the
services never see this module, only the files and environment it prepares.
Keys and the directory are made by the site commands' own functions
(`deploy.site`, docs/DEPLOY.md sections 1-3), each site in its own directory,
as operators run them: `authority init`; `agency init` in each agency's
directory and `gateway init` in the gateway's, each writing its keystore and
a signed enrolment request; the authority's `add-agency` and `add-gateway`
from those requests only, `add-agreement`, and `sign` into `directory.json`.
The directory the services start with is the one `sign` wrote; a renewal is
the authority's `sign` again (`renew_directory_if_due`).

    DIR/network.json                 ids, ports, broker users and secrets (mode 0600)
    DIR/authority/                   the authority's site: keystore.json, authority.json, draft.json, versions/
    DIR/directory.json               the signed directory (the last version `sign` wrote)
    DIR/gateway/                     keystore.json, enrolment.json, passphrase, data/, gateway.log
    DIR/agents/<AGENCY>/             keystore.json, enrolment.json, passphrase, data/, agent.log
    DIR/broker-secrets/<USER>.password  the broker passwords `rogatory broker provision` reads (0600)
    DIR/stack.json                   what `dev up` started (docs/API.md)

A site command that refuses (a keystore already there, say, left by an
interrupted `create_network`) raises `deploy.site.secrets.SiteError`.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field

from deploy.localnet.tsa import TimestampAuthorityKeys
from deploy.provision.broker import NetworkPlan
from deploy.site.authority import (
    AuthorityFiles,
    add_agency,
    add_agreement,
    add_gateway,
    add_timestamp_authority,
    init_authority,
    load_info,
    sign_version,
)
from deploy.site.enrol import SiteFiles, init_agency, init_gateway
from deploy.site.secrets import SiteError
from protocol.directory import Directory
from protocol.encoding import b64decode, truncate_to_millis
from protocol.ids import AgencyId

NETWORK_FORMAT: Final = "rogatory-devnet/1"
DEV_AGENCIES: Final[dict[str, tuple[str, str]]] = {
    "BD-MOHA-PSD": ("Public Security Division, Ministry of Home Affairs (Bangladesh central authority)", "BD"),
    "BD-POLICE-CID-HTU": ("Bangladesh Police CID, Human Trafficking Investigation Unit", "BD"),
    "LY-MLA-CA": ("Central authority for mutual legal assistance of Libya (placeholder)", "LY"),
    "LY-AGO": ("Office of the Attorney General of Libya", "LY"),
}
CENTRAL_AUTHORITIES: Final = {"BD": "BD-MOHA-PSD", "LY": "LY-MLA-CA"}
KEY_VALIDITY: Final = timedelta(days=365)
"""How long the authority lists each dev key (`add-agency --key-validity-days 365`, its default)."""
DIRECTORY_VALIDITY: Final = timedelta(days=90)
"""How long each signed dev version is in force (`sign --valid-days 90`, its default)."""
AGREEMENT_VALIDITY: Final = timedelta(days=3650)
DIRECTORY_RENEW_BEFORE: Final = timedelta(days=30)
DEV_TSA_NAME: Final = "Dev network TSA"
"""The directory's name for the dev network's own time-stamp authority (`deploy.localnet.tsa`)."""
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


class AgentHostEntry(BaseModel):
    """One agent process hosting several agencies (`agents.hosting`): its port and its agencies."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    http_port: int
    agencies: tuple[str, ...]


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
    tsa_port: int | None = None
    """The dev time-stamp authority's port (`deploy.localnet.tsa`); None for a network made before it existed."""
    agent_hosts: dict[str, AgentHostEntry] = {}
    """Agent processes hosting several agencies, by name (`agents-host-1`...); every other agency has its own."""

    def host_of(self, agency: str) -> str | None:
        """The name of the host process that runs `agency`, or None if it runs in a process of its own."""
        return next((name for name, host in self.agent_hosts.items() if agency in host.agencies), None)

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
    def tsa(self) -> Path:
        """The dev time-stamp authority's keys and certificates."""
        return self.root / "tsa"

    @property
    def authority(self) -> Path:
        """The directory authority's site (`rogatory authority ... --dir`)."""
        return self.root / "authority"

    @property
    def authority_keystore(self) -> Path:
        """The directory authority's keystore."""
        return AuthorityFiles(self.authority).keystore

    @property
    def broker_secrets(self) -> Path:
        """The hub's broker passwords, one `<user>.password` each (`rogatory broker provision --secrets`)."""
        return self.root / "broker-secrets"

    @property
    def stack(self) -> Path:
        """`stack.json`."""
        return self.root / "stack.json"

    def service_dir(self, service: str) -> Path:
        """`gateway/` or `agents/<AGENCY>/`."""
        return self.root / "gateway" if service == "gateway" else self.root / "agents" / service

    def keystore(self, service: str) -> Path:
        """A service's keystore (made by `agency init` or `gateway init` in its site directory)."""
        return SiteFiles(self.service_dir(service)).keystore

    def enrolment(self, service: str) -> Path:
        """A service's enrolment request, as its site's `init` wrote it for the authority."""
        return SiteFiles(self.service_dir(service)).enrolment

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


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` right now (for a service of a local network)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _passphrase() -> str:
    return secrets.token_urlsafe(24)


@dataclass(frozen=True, slots=True)
class DevAgreement:
    """An agreement of the dev network, as `authority add-agreement --both-ways --types '*'` takes it."""

    agreement_id: str
    title: str
    senders: tuple[str, ...]
    recipients: tuple[str, ...]


def create_network(
    root: Path,
    *,
    amqp_url: str,
    now: datetime,
    service_environment: dict[str, str] | None = None,
    bench_pairs: int = 0,
    hosts: Sequence[Sequence[str]] = (),
    say: Callable[[str], None] | None = None,
) -> NetworkDescription:
    """Make the keys, signed directory, secrets and files of a new dev network in `root`, by the site commands.

    `amqp_url` is one broker, or the comma-separated nodes of a cluster.
    `bench_pairs` adds that many pairs of agencies (`bench_pair`) for `rogatory bench`.
    `hosts` groups agencies that run together in one agent process each (`agents.hosting`);
    `say` is told the progress of a large network's enrolment.
    """
    paths = NetworkPaths(root)
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    now = truncate_to_millis(now)
    network_id = secrets.token_hex(4)
    prefix = f"rogatory-{network_id}."
    nodes = [urlsplit(part.strip()) for part in amqp_url.split(",") if part.strip()]
    broker = nodes[0]

    authority_passphrase = _passphrase()
    info = init_authority(paths.authority, network=network_id, passphrase=authority_passphrase.encode())
    agencies = DEV_AGENCIES | bench_agencies(bench_pairs)
    unknown = sorted({agency for group in hosts for agency in group} - set(agencies))
    if unknown:
        raise SiteError(f"cannot host agencies the network does not have: {', '.join(unknown)}")
    agent_entries: dict[str, AgentEntry] = {}
    for agency, (name, country) in agencies.items():
        agent_entries[agency] = _init_agency_site(paths, agency, name, country, prefix=prefix)
        _progress(say, "agency sites made", len(agent_entries), len(agencies))
    gateway_passphrase = _init_gateway_site(paths, network_id)
    for count, agency in enumerate(agent_entries, start=1):
        add_agency(paths.authority, paths.enrolment(agency), now=now, key_validity=KEY_VALIDITY)
        _progress(say, "agencies enrolled", count, len(agent_entries))
    add_gateway(paths.authority, paths.enrolment("gateway"), now=now, key_validity=KEY_VALIDITY)
    for agreement in dev_agreements() + bench_agreements(bench_pairs):
        add_agreement(
            paths.authority,
            agreement_id=agreement.agreement_id,
            title=agreement.title,
            senders=agreement.senders,
            recipients=agreement.recipients,
            message_types=("*",),
            both_ways=True,
            now=now,
            validity=AGREEMENT_VALIDITY,
        )
    tsa_root = TimestampAuthorityKeys.generate(f"Rogatory Dev TSA {network_id}").save(paths.tsa)
    add_timestamp_authority(paths.authority, DEV_TSA_NAME, tsa_root)
    sign_version(
        paths.authority,
        out=paths.directory,
        passphrase=authority_passphrase.encode(),
        now=now,
        validity=DIRECTORY_VALIDITY,
    )
    description = NetworkDescription(
        network_id=network_id,
        vhost=f"rogatory-{network_id}",
        broker_user_prefix=prefix,
        amqp_host=broker.hostname or "127.0.0.1",
        amqp_port=broker.port or 5672,
        amqp_alternates=tuple(f"{node.hostname or '127.0.0.1'}:{node.port or 5672}" for node in nodes[1:]),
        quorum_group_size=len(nodes) if len(nodes) > 1 else None,
        service_environment=dict(service_environment or {}),
        authority_key=info.authority_key,
        authority_passphrase=authority_passphrase,
        gateway=GatewayEntryFile(
            broker_user=prefix + "gateway",
            broker_password=secrets.token_urlsafe(24),
            http_port=free_port(),
            keystore_passphrase=gateway_passphrase,
            operator_token=secrets.token_urlsafe(32),
            auditor_token=secrets.token_urlsafe(32),
            reader_token=secrets.token_urlsafe(32),
            metrics_token=secrets.token_urlsafe(32),
        ),
        agents=agent_entries,
        tsa_port=free_port(),
        agent_hosts={
            f"agents-host-{index}": AgentHostEntry(http_port=free_port(), agencies=tuple(group))
            for index, group in enumerate((group for group in hosts if group), start=1)
        },
    )
    write_private(paths.description, description.model_dump_json(indent=2).encode("utf-8"))
    return description


PROGRESS_EVERY: Final = 50
"""A network of more agencies than this tells its enrolment's progress every this many."""


def _progress(say: Callable[[str], None] | None, what: str, done: int, total: int) -> None:
    if say is not None and total > PROGRESS_EVERY and (done % PROGRESS_EVERY == 0 or done == total):
        say(f"  {what}: {done}/{total}")


def _init_agency_site(paths: NetworkPaths, agency: str, name: str, country: str, *, prefix: str) -> AgentEntry:
    """`agency init` in the agency's own directory, its passphrase kept beside it; its agent's secrets."""
    passphrase = _passphrase()
    init_agency(paths.service_dir(agency), agency=agency, name=name, country=country, passphrase=passphrase.encode())
    write_private(paths.passphrase(agency), passphrase.encode())
    return AgentEntry(
        broker_user=prefix + agency,
        broker_password=secrets.token_urlsafe(24),
        http_port=free_port(),
        keystore_passphrase=passphrase,
        token=secrets.token_urlsafe(32),
    )


def _init_gateway_site(paths: NetworkPaths, network_id: str) -> str:
    """`gateway init` in the gateway's directory, its passphrase kept beside it; returns the passphrase."""
    passphrase = _passphrase()
    init_gateway(
        paths.service_dir("gateway"),
        gateway_id=f"gateway.{network_id}.rogatory.test",
        log_origin=f"rogatory.test/{network_id}/audit-log",
        passphrase=passphrase.encode(),
    )
    write_private(paths.passphrase("gateway"), passphrase.encode())
    return passphrase


def dev_agreements() -> tuple[DevAgreement, ...]:
    """The dev network's agreements (see the module docstring), each both ways, every message type."""
    bd, ly = CENTRAL_AUTHORITIES["BD"], CENTRAL_AUTHORITIES["LY"]
    return (
        DevAgreement(
            "BD-LY-UNTOC-2025",
            "Bangladesh-Libya mutual legal assistance under UNTOC art. 18 (central authorities)",
            (bd,),
            (ly,),
        ),
        DevAgreement(
            "BD-DOMESTIC", "Bangladesh: central authority and investigating agencies", (bd,), ("BD-POLICE-CID-HTU",)
        ),
        DevAgreement("LY-DOMESTIC", "Libya: central authority and prosecution", (ly,), ("LY-AGO",)),
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


def bench_hosts(pairs: int, per_process: int) -> tuple[tuple[str, ...], ...]:
    """The agencies of `pairs` benchmark pairs, `per_process` to an agent process (none hosted if 0).

    Each pair stays in one process where it can, so that a host's agencies mostly exchange between themselves
    as the pairs of single-agency processes do between two processes: the path is the same (broker, gateway).
    """
    if per_process <= 0:
        return ()
    agencies = [agency for index in range(1, pairs + 1) for agency in bench_pair(index)]
    return tuple(tuple(agencies[start : start + per_process]) for start in range(0, len(agencies), per_process))


def bench_agreements(pairs: int) -> tuple[DevAgreement, ...]:
    """One agreement per benchmark pair, both ways, every message type."""
    agreements = []
    for index in range(1, pairs + 1):
        sender, recipient = bench_pair(index)
        agreements.append(DevAgreement(f"BENCH-{index:02d}", f"Benchmark pair {index}", (sender,), (recipient,)))
    return tuple(agreements)


def load_network(root: Path) -> NetworkDescription | None:
    """The network in `root`, or None if there is none."""
    paths = NetworkPaths(root)
    if not paths.description.exists():
        return None
    return NetworkDescription.model_validate_json(paths.description.read_bytes())


def renew_directory_if_due(root: Path, description: NetworkDescription, *, now: datetime) -> int | None:
    """The authority's `sign` of the next version if the one in force expires within `DIRECTORY_RENEW_BEFORE`.

    Raises `SiteError` if the network's authority cannot sign (a network made
    before `create_network` ran the site commands has no `authority.json`).
    """
    paths = NetworkPaths(root)
    signed = json.loads(paths.directory.read_bytes())
    directory = Directory.model_validate_json(b64decode(signed["payload"]))
    if directory.expires_at - now > DIRECTORY_RENEW_BEFORE:
        return None
    if load_info(AuthorityFiles(paths.authority)).authority_key != description.authority_key:
        raise SiteError(f"the authority in {paths.authority} is not the one network.json names")
    renewed = sign_version(
        paths.authority,
        out=paths.directory,
        passphrase=description.authority_passphrase.encode(),
        now=truncate_to_millis(now),
        validity=DIRECTORY_VALIDITY,
    )
    return renewed.version


__all__ = [
    "DEV_AGENCIES",
    "AgentEntry",
    "AgentHostEntry",
    "DevAgreement",
    "GatewayEntryFile",
    "NetworkDescription",
    "NetworkPaths",
    "bench_agencies",
    "bench_agreements",
    "bench_hosts",
    "bench_pair",
    "create_network",
    "dev_agreements",
    "free_port",
    "load_network",
    "renew_directory_if_due",
    "sha256_token",
    "write_private",
]
