"""Three sites on one machine: a hub, Dhaka and Tripoli, each a network namespace with its own address.

The hub runs a private RabbitMQ node (with its own `epmd`) and the gateway;
Dhaka runs BD-MOHA-PSD's agent, Tripoli LY-MLA-CA's. Each service binds to
its site's address; agents reach the broker and the gateway at the hub's.
Every site is set up only by the provisioning commands (docs/DEPLOY.md
sections 1-4) and the files an operator carries between sites: enrolment
requests to the authority, the signed directory, the authority's public key
and the network CA's certificate to every site, each agency's broker
certificate signing request to the hub and its certificate back, and the
gateway's reader token to each agency. The authority is a directory on no
network at all. Every service reaches the broker over AMQPS and logs in with
its client certificate (EXTERNAL): no broker password exists anywhere, and
each agency's broker key never leaves its site.

Then, each from the site that would do it: a request and its answer travel
with their evidence; a cut and restored link loses nothing; a key revoked at
the authority is in force at every site within the bound, without a
restart; the audit log verifies from every site.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import os
import secrets
import shutil
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import quote, urlencode

import aiohttp
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from deploy.cli.commands import main
from deploy.client.agent_api import AgentApiError, AgentClient, MessageStatus, document_of, poll
from deploy.client.samples import ACKNOWLEDGEMENT_SAMPLE, REQUEST_SAMPLE, sample
from protocol.directory import Directory
from protocol.encoding import b64encode
from protocol.ids import AgencyId
from protocol.keystore import unlock_keystore
from protocol.signing import SignedStatement
from runtime.tls import client_context
from tests.support.rabbitnode import RabbitNode, free_port
from tests.support.sites import SiteNetwork, namespaces_available

pytestmark = pytest.mark.sites

T = TypeVar("T")

HUB, DHAKA, TRIPOLI = "hub", "dhaka", "tripoli"
SITES: Final = (HUB, DHAKA, TRIPOLI)
BD, LY = "BD-MOHA-PSD", "LY-MLA-CA"
AGENCY_OF: Final = {DHAKA: BD, TRIPOLI: LY}
COUNTRY_OF: Final = {BD: ("Public Security Division, Ministry of Home Affairs", "BD"), LY: ("Central authority", "LY")}
NETWORK: Final = "mla-bd-ly"
PREFIX: Final = f"{NETWORK}."
GATEWAY_USER: Final = f"{PREFIX}gateway"
GATEWAY_PORT: Final = 8700
AGENT_PORT: Final = 8710
NETWORK_CA: Final = "network-ca.pem"
"""The hub's network CA certificate, as carried to each site (public material)."""
RELOAD_S: Final = 1.0
"""The gateway's `ROGATORY_DIRECTORY_RELOAD_S`: how soon it looks at its file."""
AGENT_RELOAD_S: Final = 30.0
"""The agents' `ROGATORY_DIRECTORY_RELOAD_S`, long on purpose: their poll cannot beat the push under test."""
REVOCATION_BOUND_S: Final = RELOAD_S + 9.0
"""docs/DEPLOY.md section 6, pushed: the gateway's look at its file, then seconds; with room for a busy machine."""
HEARTBEAT_S: Final = 2
"""The agents' AMQP heartbeat: a cut longer than ~3 of these drops the connection, so restoring means reconnecting."""
CUT_MESSAGES: Final = 20
CUT_HOLD_S: Final = 8.0
"""The link stays down at least this long after the last message reached the hub (past the heartbeat's drop)."""
READY_S: Final = 60.0
STEP_S: Final = 60.0


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _fresh(document: dict[str, Any]) -> dict[str, Any]:
    """The sample under a new message id and case (a case has one request)."""
    copied = copy.deepcopy(document)
    copied["message_id"] = str(uuid.uuid4())
    copied["case_id"] = f"BD-LY-SITES-{uuid.uuid4().hex[:10].upper()}"
    return copied


def _directory(path: Path) -> Directory:
    """The directory a site holds in its file (its signature was checked by the service that wrote it)."""
    return Directory.model_validate_json(SignedStatement.from_json(path.read_bytes()).payload)


def _events(log: Path) -> list[dict[str, Any]]:
    """The JSON lines of a service's log (other lines, from libraries, are skipped)."""
    events = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            if isinstance(event, dict) and "event" in event:
                events.append(event)
    return events


async def _inbox_ids(client: AgentClient) -> list[str]:
    """Every message id in an agent's inbox, in order, repeats kept."""
    seen: list[str] = []
    cursor = "0"
    while True:
        page = await client.inbox(after=cursor, limit=500)
        if not page["messages"]:
            return seen
        seen += [item["message_id"] for item in page["messages"]]
        cursor = page["next"]


def _run(*argv: str) -> None:
    """A `rogatory` command at a site with no network (the authority) or on its own files (init)."""
    assert main(list(argv)) == 0, f"rogatory {' '.join(argv[:2])} failed"


def _carry(source: Path, target: Path) -> Path:
    """An operator carrying one file to another site."""
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target


def _secret(path: Path, value: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(value)
    path.chmod(0o600)
    return path


def _replace(path: Path, content: bytes) -> None:
    """Write a file whole, as docs/DEPLOY.md section 6 asks: a temporary file, then a rename."""
    temporary = path.with_name(path.name + ".new")
    temporary.write_bytes(content)
    temporary.rename(path)


@dataclass
class Service:
    """One service's process, started in its site's namespace."""

    name: str
    site: str
    url: str
    log: Path
    process: subprocess.Popen[bytes]

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@dataclass
class Network:
    """The sites, their directories and what runs in them."""

    root: Path
    net: SiteNetwork
    authority_key: str = ""
    amqps_port: int = 0
    tokens: dict[str, str] = field(default_factory=dict)
    services: dict[str, Service] = field(default_factory=dict)

    def site_dir(self, site: str) -> Path:
        return self.root / site

    @property
    def authority(self) -> Path:
        return self.root / "authority"

    @property
    def hub_address(self) -> str:
        return self.net.addresses[HUB]

    @property
    def gateway_url(self) -> str:
        return f"https://{self.hub_address}:{GATEWAY_PORT}"

    def agent_url(self, site: str) -> str:
        return f"https://{self.net.addresses[site]}:{AGENT_PORT}"

    def trusted(self, site: str) -> ssl.SSLContext:
        """What a client at `site` trusts: the network CA (the gateway), and the site's own CA (its agent's API)."""
        context = client_context(self.site_dir(site) / NETWORK_CA)
        own = self.site_dir(site) / "local-ca" / "ca.pem"
        if own.exists():
            context.load_verify_locations(cafile=str(own))
        return context

    def at(self, site: str, work: Callable[[aiohttp.ClientSession], Awaitable[T]]) -> T:
        """`work` run from inside `site`'s namespace, with a session of its own trusting that site's CAs."""

        async def run() -> T:
            async with aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=15), connector=aiohttp.TCPConnector(ssl=self.trusted(site))
            ) as session:
                return await work(session)

        return self.net.inside(site, lambda: asyncio.run(run()))

    def agent(self, session: aiohttp.ClientSession, site: str) -> AgentClient:
        return AgentClient(session, self.agent_url(site), self.tokens[site])

    def start(self, name: str, site: str, module: str, url: str, environment: dict[str, str]) -> Service:
        log = self.site_dir(site) / f"{name}.log"
        base = {key: value for key, value in os.environ.items() if not key.startswith("ROGATORY_")}
        with log.open("ab") as output:
            process = subprocess.Popen(
                self.net.command(site, [sys.executable, "-m", module]),
                env=base | environment | {"ROGATORY_LOG_FORMAT": "json"},
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        service = Service(name, site, url, log, process)
        self.services[name] = service
        return service

    def health(self, name: str) -> dict[str, Any]:
        service = self.services[name]

        async def get(session: aiohttp.ClientSession) -> dict[str, Any]:
            async with session.get(f"{service.url}/healthz") as response:
                answer: dict[str, Any] = await response.json()
                return answer

        return self.at(service.site, get)

    def wait_ready(self, name: str) -> None:
        service = self.services[name]
        deadline = time.monotonic() + READY_S
        while True:
            if service.process.poll() is not None:
                pytest.fail(f"{name} exited during start-up:\n{service.tail()}")
            try:
                if self.health(name).get("status") == "ok":
                    return
            except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"{name} not ready within {READY_S:.0f} s:\n{service.tail()}")
            time.sleep(0.3)

    def stop(self) -> None:
        for service in self.services.values():
            if service.process.poll() is None:
                service.process.terminate()
        for service in self.services.values():
            try:
                service.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                service.process.kill()
                service.process.wait(timeout=15)


@pytest.fixture
def sites(tmp_path: Path) -> Iterator[Network]:
    """The three namespaces and their links, removed at the end whatever happened."""
    reason = namespaces_available()
    if reason is not None:
        pytest.skip(reason)
    net = SiteNetwork(f"rg16-{secrets.token_hex(3)}", (HUB, DHAKA, TRIPOLI))
    network = Network(tmp_path, net)
    with ExitStack() as cleanup:
        cleanup.callback(net.close)
        net.open()
        cleanup.callback(network.stop)
        yield network


# -- provisioning, site by site ------------------------------------------------------------------------


def _broker_tls_config(network: Network) -> tuple[str, ...]:
    """The hub node's AMQPS listener on the hub's address, certificates required, EXTERNAL the only login.

    As `tests/security/test_client_certificates.py` configures its node, with the network CA's files and
    `fail_if_no_peer_cert = true`: every client here has a certificate, so one without is refused at the handshake.
    """
    tls = network.root / HUB / "tls"
    return (
        f"listeners.ssl.default = {network.hub_address}:{network.amqps_port}",
        f"ssl_options.cacertfile = {network.root / HUB / 'ca' / 'ca.pem'}",
        f"ssl_options.certfile = {tls / 'broker.hub.pem'}",
        f"ssl_options.keyfile = {tls / 'broker.hub-key.pem'}",
        "ssl_options.verify = verify_peer",
        "ssl_options.fail_if_no_peer_cert = true",
        "ssl_options.versions.1 = tlsv1.3",
        "ssl_options.versions.2 = tlsv1.2",
        "ssl_cert_login_from = common_name",
        "auth_mechanisms.1 = EXTERNAL",
    )


def _amqps_url(network: Network, user: str, ca_file: Path, tls_dir: Path) -> str:
    """A service's broker URL: AMQPS to the hub, EXTERNAL login with its certificate.

    The user stays in the URL though EXTERNAL sends none (aiormq's EXTERNAL ignores it): the service reads its
    broker user there for `user_id`, which RabbitMQ checks against the certificate's common name.
    """
    query = urlencode(
        {
            "auth": "external",
            "cafile": str(ca_file),
            "certfile": str(tls_dir / "client.pem"),
            "keyfile": str(tls_dir / "client-key.pem"),
        }
    )
    return f"amqps://{quote(user, safe='')}@{network.hub_address}:{network.amqps_port}/{NETWORK}?{query}"


def _provision(network: Network) -> RabbitNode:
    """docs/DEPLOY.md sections 1-3, each command at its own site, carrying only what an operator carries."""
    root = network.root
    auth = network.authority
    passphrases = {
        site: _secret(root / site / "passphrase", secrets.token_urlsafe(16)) for site in (HUB, DHAKA, TRIPOLI)
    }
    auth_pass = _secret(root / "authority-passphrase", secrets.token_urlsafe(16))

    # 1. The authority (offline): its key; the public key is carried to every site.
    _run("authority", "init", "--dir", str(auth), "--network", NETWORK, "--passphrase-file", str(auth_pass))
    network.authority_key = json.loads((auth / "authority.json").read_text())["authority_key"]

    # 2. Each agency enrols at its own site; 3. the gateway at the hub. Requests go to the authority.
    for site, agency in AGENCY_OF.items():
        name, country = COUNTRY_OF[agency]
        _run(
            "agency", "init", "--agency", agency, "--name", name, "--country", country,
            "--dir", str(root / site / "agent"), "--passphrase-file", str(passphrases[site]),
        )  # fmt: skip
        _carry(root / site / "agent" / "enrolment.json", auth / "requests" / f"{agency}.json")
    _run(
        "gateway", "init", "--gateway-id", "gateway.mla-bd-ly.test", "--log-origin", "mla-bd-ly.test/audit-log",
        "--dir", str(root / HUB / "gateway"), "--passphrase-file", str(passphrases[HUB]),
    )  # fmt: skip
    _carry(root / HUB / "gateway" / "enrolment.json", auth / "requests" / "gateway.json")

    # 4. The authority lists them, makes the agreement, signs; directory.json goes to the hub and each agency.
    for agency in AGENCY_OF.values():
        _run("authority", "add-agency", str(auth / "requests" / f"{agency}.json"), "--dir", str(auth))
    _run("authority", "add-gateway", str(auth / "requests" / "gateway.json"), "--dir", str(auth))
    _run(
        "authority", "add-agreement", "--dir", str(auth), "--id", "BD-LY-UNTOC",
        "--from", BD, "--to", LY, "--types", "*", "--both-ways",
    )  # fmt: skip
    _run("authority", "sign", "--dir", str(auth), "--out", str(auth / "directory.json"),
         "--passphrase-file", str(auth_pass))  # fmt: skip
    for site in (HUB, DHAKA, TRIPOLI):
        _carry(auth / "directory.json", root / site / "directory.json")

    # 5. The hub's network CA (docs/DEPLOY.md section 4): it certifies the broker's AMQPS listener and the gateway's
    # HTTPS one, for the hub's address; only its certificate travels, to every site.
    _run("tls", "ca", "--ca-dir", str(root / HUB / "ca"))
    for name in ("gateway.hub", "broker.hub"):
        _run(
            "tls", "server-cert", "--name", name, "--also", network.hub_address,
            "--ca-dir", str(root / HUB / "ca"), "--out-dir", str(root / HUB / "tls"),
        )  # fmt: skip
    # The gateway's document-signing certificate, from the same CA: it signs the agencies' case reports (PAdES).
    _run(
        "tls", "document-cert", "--name", "gateway.hub",
        "--ca-dir", str(root / HUB / "ca"), "--out-dir", str(root / HUB / "tls"),
    )  # fmt: skip
    for site in (HUB, DHAKA, TRIPOLI):
        _carry(root / HUB / "ca" / "ca.pem", root / site / NETWORK_CA)

    # 6. The hub: a private broker node in the hub's namespace, provisioned from the directory there. Remote sites
    # reach it over AMQPS only, logging in with a client certificate (EXTERNAL); plain AMQP stays on the hub's loopback.
    node = RabbitNode.create(root / HUB / "rabbit", f"rogatory-sites-{secrets.token_hex(3)}")
    node.netns = network.net.namespace(HUB)
    network.amqps_port = free_port()
    node.extra_plugins = ("rabbitmq_auth_mechanism_ssl",)
    node.extra_config = _broker_tls_config(network)
    node.start()
    node.wait_ready()
    admin_password = _secret(root / HUB / "broker-admin", "guest")
    provision = subprocess.run(
        network.net.command(
            HUB,
            [
                sys.executable, "-m", "deploy", "broker", "provision",
                "--directory", str(root / HUB / "directory.json"), "--authority-key", network.authority_key,
                "--management-url", node.management_url, "--admin", "guest",
                "--admin-password-file", str(admin_password), "--auth", "external",
            ],
        ),
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert provision.returncode == 0, provision.stderr + provision.stdout
    assert not list(root.rglob("*.password")), "a broker password was written somewhere"

    # 7. Broker certificates: each agency makes its key and a signing request at its site; only the request travels
    # to the hub, which certifies it for that agency's broker user; only the certificate travels back. The gateway's
    # key is made at the hub, where it runs.
    for site, agency in AGENCY_OF.items():
        _run("tls", "client-request", "--agency", agency, "--user-prefix", PREFIX,
             "--out-dir", str(root / site / "broker-tls"))  # fmt: skip
        request = _carry(root / site / "broker-tls" / "client.csr", root / HUB / "requests" / f"{agency}.csr")
        _run(
            "tls", "sign-client", "--request", str(request), "--agency", agency, "--user-prefix", PREFIX,
            "--ca-dir", str(root / HUB / "ca"), "--out-dir", str(root / HUB / "issued" / agency),
        )  # fmt: skip
        _carry(root / HUB / "issued" / agency / "client.pem", root / site / "broker-tls" / "client.pem")
    _run("tls", "client-cert", "--user", GATEWAY_USER, "--ca-dir", str(root / HUB / "ca"),
         "--out-dir", str(root / HUB / "gateway-broker-tls"))  # fmt: skip

    # Secrets handed over by a secure channel: the gateway's reader token to each agency (no broker password at all).
    network.tokens["reader"] = secrets.token_urlsafe(24)
    network.tokens["auditor"] = secrets.token_urlsafe(24)
    network.tokens["operator"] = secrets.token_urlsafe(24)
    for site in AGENCY_OF:
        _secret(root / site / "gateway-token", network.tokens["reader"])
        network.tokens[site] = secrets.token_urlsafe(24)

    # 8. Each agency serves its own API with a certificate of its own CA, made at its site.
    for site in AGENCY_OF:
        _run("tls", "ca", "--ca-dir", str(root / site / "local-ca"))
        _run(
            "tls", "server-cert", "--name", f"agent.{site}", "--also", network.net.addresses[site],
            "--ca-dir", str(root / site / "local-ca"), "--out-dir", str(root / site / "tls"),
        )  # fmt: skip
    return node


def _private_keys(keystore: Path, passphrase: Path) -> list[bytes]:
    keys = unlock_keystore(keystore.read_bytes(), passphrase.read_bytes())
    return [form for key in keys.values() for form in (key, b64encode(key).encode(), key.hex().encode())]


def _tls_private_keys(site_dir: Path) -> list[bytes]:
    """Every TLS private key made at a site (`*key.pem`), as PEM, as PKCS#8 DER and as its raw scalar."""
    forms: list[bytes] = []
    for path in sorted(site_dir.rglob("*key.pem")):
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey), path
        der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())  # fmt: skip
        forms += [path.read_bytes(), der, key.private_numbers().private_value.to_bytes(32, "big")]
    return forms


def _assert_no_site_holds_anothers_keys(network: Network) -> None:
    """No site's directory holds another's keystore, nor any of another site's private keys in any file.

    The keys are the keystores' and the TLS ones: the hub's CA, broker and gateway keys; each agency's own API CA
    and API key, and its broker key, which exists at its site only (the hub certified it from a request).
    """
    root = network.root
    owners = {
        HUB: (root / HUB / "gateway" / "keystore.json", root / HUB / "passphrase"),
        DHAKA: (root / DHAKA / "agent" / "keystore.json", root / DHAKA / "passphrase"),
        TRIPOLI: (root / TRIPOLI / "agent" / "keystore.json", root / TRIPOLI / "passphrase"),
    }
    private = {site: _private_keys(*files) + _tls_private_keys(root / site) for site, files in owners.items()}
    private["authority"] = _private_keys(network.authority / "keystore.json", root / "authority-passphrase")
    for site in AGENCY_OF:
        broker_key = root / site / "broker-tls" / "client-key.pem"
        assert broker_key.read_bytes() in private[site], f"{site} made no broker key of its own"
        assert broker_key.stat().st_mode & 0o077 == 0, f"{broker_key} is readable by others"
    for site in (HUB, DHAKA, TRIPOLI):
        keystores = sorted(root.joinpath(site).rglob("keystore.json"))
        assert keystores == [owners[site][0]], f"{site} holds keystores {keystores}"
        for path in root.joinpath(site).rglob("*"):
            if not path.is_file() or (root / HUB / "rabbit") in path.parents:
                continue
            content = path.read_bytes()
            for other, forms in private.items():
                if other != site:
                    assert not any(form in content for form in forms), f"{path} holds a private key of {other}"


def _start_services(network: Network) -> None:
    root = network.root
    hub = network.hub_address
    common = {"ROGATORY_AUTHORITY_KEY": network.authority_key}
    gateway_amqp_url = _amqps_url(network, GATEWAY_USER, root / HUB / NETWORK_CA, root / HUB / "gateway-broker-tls")
    network.start(
        "gateway", HUB, "gateway", network.gateway_url,
        common | {
            "ROGATORY_AMQP_URL": gateway_amqp_url,
            "ROGATORY_HTTP_HOST": hub,
            "ROGATORY_HTTP_PORT": str(GATEWAY_PORT),
            "ROGATORY_HTTP_TLS_CERT_FILE": str(root / HUB / "tls" / "gateway.hub.pem"),
            "ROGATORY_HTTP_TLS_KEY_FILE": str(root / HUB / "tls" / "gateway.hub-key.pem"),
            "ROGATORY_REPORT_SIGNING_CERT_FILE": str(root / HUB / "tls" / "gateway.hub-documents.pem"),
            "ROGATORY_REPORT_SIGNING_KEY_FILE": str(root / HUB / "tls" / "gateway.hub-documents-key.pem"),
            "ROGATORY_REPORT_SIGNING_CA_FILE": str(root / HUB / "ca" / "ca.pem"),
            "ROGATORY_DATA_DIR": str(root / HUB / "gateway-data"),
            "ROGATORY_DIRECTORY_FILE": str(root / HUB / "directory.json"),
            "ROGATORY_KEYSTORE_FILE": str(root / HUB / "gateway" / "keystore.json"),
            "ROGATORY_KEYSTORE_PASSPHRASE_FILE": str(root / HUB / "passphrase"),
            "ROGATORY_BROKER_USER_PREFIX": PREFIX,
            "ROGATORY_DIRECTORY_RELOAD_S": str(RELOAD_S),
            "ROGATORY_OPERATOR_TOKEN_SHA256": _sha256(network.tokens["operator"]),
            "ROGATORY_AUDITOR_TOKEN_SHA256": _sha256(network.tokens["auditor"]),
            "ROGATORY_READER_TOKENS_SHA256": _sha256(network.tokens["reader"]),
        },
    )  # fmt: skip
    network.wait_ready("gateway")
    for site, agency in AGENCY_OF.items():
        address = network.net.addresses[site]
        amqp_url = _amqps_url(network, f"{PREFIX}{agency}", root / site / NETWORK_CA, root / site / "broker-tls")
        network.start(
            agency, site, "agents", network.agent_url(site),
            common | {
                "ROGATORY_AGENCY": agency,
                "ROGATORY_AMQP_URL": amqp_url,
                "ROGATORY_AMQP_HEARTBEAT_S": str(HEARTBEAT_S),
                "ROGATORY_HTTP_HOST": address,
                "ROGATORY_HTTP_PORT": str(AGENT_PORT),
                "ROGATORY_HTTP_TLS_CERT_FILE": str(root / site / "tls" / f"agent.{site}.pem"),
                "ROGATORY_HTTP_TLS_KEY_FILE": str(root / site / "tls" / f"agent.{site}-key.pem"),
                "ROGATORY_GATEWAY_CA_FILE": str(root / site / NETWORK_CA),
                "ROGATORY_DATA_DIR": str(root / site / "data"),
                "ROGATORY_DIRECTORY_FILE": str(root / site / "directory.json"),
                "ROGATORY_KEYSTORE_FILE": str(root / site / "agent" / "keystore.json"),
                "ROGATORY_KEYSTORE_PASSPHRASE_FILE": str(root / site / "passphrase"),
                "ROGATORY_API_TOKENS_SHA256": _sha256(network.tokens[site]),
                "ROGATORY_GATEWAY_BROKER_USER": GATEWAY_USER,
                "ROGATORY_DIRECTORY_RELOAD_S": str(AGENT_RELOAD_S),
                "ROGATORY_GATEWAY_URL": network.gateway_url,
                "ROGATORY_GATEWAY_TOKEN_FILE": str(root / site / "gateway-token"),
            },
        )  # fmt: skip
    for agency in AGENCY_OF.values():
        network.wait_ready(agency)


def _assert_every_broker_login_is_a_certificate(node: RabbitNode, figure: Callable[[str], None]) -> None:
    """Every connection at the hub's broker is TLS with an EXTERNAL login, as the user its certificate names."""
    listed = node.ctl("list_connections", "user", "auth_mechanism", "ssl", "--quiet", "--no-table-headers").stdout
    rows = [tuple(line.split("\t")) for line in listed.splitlines() if line.count("\t") == 2]
    assert rows, f"no broker connections listed:\n{listed}"
    assert all(mechanism == "EXTERNAL" and tls == "true" for _, mechanism, tls in rows), rows
    users = {user for user, _, _ in rows}
    assert users == {GATEWAY_USER, *(f"{PREFIX}{agency}" for agency in AGENCY_OF.values())}, users
    figure(f"broker: {len(rows)} connections, every one AMQPS with an EXTERNAL (certificate) login, as {sorted(users)}")


def _assert_nothing_listens_on_another_sites_loopback(network: Network) -> None:
    """Each service listens on its own site's address only (`ss` inside each namespace)."""
    for site in (HUB, DHAKA, TRIPOLI):
        listening = subprocess.run(
            network.net.command(site, ["ss", "-Hltn"]), capture_output=True, text=True, timeout=15, check=True
        ).stdout
        own = {network.net.addresses[site], "127.0.0.1", "[::1]"}  # the site's own address and loopback
        for line in listening.splitlines():
            local = line.split()[3]
            host = local.rsplit(":", 1)[0]
            assert host in own, f"{site}: something listens on {local}"
        if site != HUB:
            assert f"{network.net.addresses[site]}:{AGENT_PORT}" in listening


# -- the scenario ---------------------------------------------------------------------------------------


def _exchange(network: Network) -> tuple[str, str]:
    """The sample request from Dhaka, read and answered at Tripoli; both evidence chains complete."""
    request = sample(REQUEST_SAMPLE)
    answer = sample(ACKNOWLEDGEMENT_SAMPLE)

    async def submit(session: aiohttp.ClientSession) -> str:
        accepted = await network.agent(session, DHAKA).submit(request, idempotency_key="sites-request")
        return str(accepted["message_id"])

    request_id = network.at(DHAKA, submit)

    async def read_and_answer(session: aiohttp.ClientSession) -> str:
        ly = network.agent(session, TRIPOLI)
        received = await ly.wait_for_inbox(request_id, within_s=STEP_S)
        assert received["sender"] == BD
        assert document_of(received)["payload"] == request["payload"]
        await ly.ack(request_id)
        accepted = await ly.submit(answer, idempotency_key="sites-answer")
        return str(accepted["message_id"])

    answer_id = network.at(TRIPOLI, read_and_answer)

    async def take_answer(session: aiohttp.ClientSession) -> MessageStatus:
        bd = network.agent(session, DHAKA)
        received = await bd.wait_for_inbox(answer_id, within_s=STEP_S)
        assert received["sender"] == LY
        await bd.ack(answer_id)
        return await bd.wait_for_status(request_id, {"retrieved"}, within_s=STEP_S)

    status = network.at(DHAKA, take_answer)
    types = [item["type"] for item in status["evidence"]]
    for wanted in ("SUBMISSION_ACCEPTED", "RELAY_ACCEPTED", "DELIVERY", "RETRIEVAL"):
        assert wanted in types, f"{wanted} missing from the request's evidence at Dhaka: {types}"

    async def answer_evidence(session: aiohttp.ClientSession) -> MessageStatus:
        return await network.agent(session, TRIPOLI).wait_for_status(answer_id, {"retrieved"}, within_s=STEP_S)

    answered = network.at(TRIPOLI, answer_evidence)
    assert {"DELIVERY", "RETRIEVAL"} <= {item["type"] for item in answered["evidence"]}
    return request_id, answer_id


def _cut_and_restore(network: Network, figure: Callable[[str], None]) -> None:
    """Tripoli's link down while Dhaka sends; up again; every message delivered once, with DELIVERY evidence."""
    documents = [_fresh(sample(REQUEST_SAMPLE)) for _ in range(CUT_MESSAGES)]
    ids = [document["message_id"] for document in documents]

    events_before = len(_events(network.services[LY].log))
    network.net.cut(TRIPOLI)
    cut_at = time.monotonic()
    try:

        async def send_during_cut(session: aiohttp.ClientSession) -> None:
            bd = network.agent(session, DHAKA)
            for document in documents:
                await bd.submit(document, idempotency_key=f"sites-cut-{document['message_id']}")
            # Every one accepted and relayed into Tripoli's inbox queue at the hub, none delivered.
            for message_id in ids:
                status = await bd.wait_for_status(message_id, {"relayed", "delivered", "retrieved"}, within_s=STEP_S)
                assert status["status"] == "relayed", f"{message_id} is {status['status']} while Tripoli is cut off"

        network.at(DHAKA, send_during_cut)
        time.sleep(max(0.0, CUT_HOLD_S - (time.monotonic() - cut_at)))
    finally:
        network.net.restore(TRIPOLI)
    restored_at = time.monotonic()

    async def delivered(session: aiohttp.ClientSession) -> list[MessageStatus]:
        bd = network.agent(session, DHAKA)

        async def all_delivered() -> list[MessageStatus] | None:
            statuses = [await bd.message(message_id) for message_id in ids]
            done = all("DELIVERY" in {item["type"] for item in status["evidence"]} for status in statuses)
            return statuses if done else None

        return await poll(all_delivered, within_s=120, what=f"DELIVERY of {CUT_MESSAGES} messages", interval=0.2)

    statuses = network.at(DHAKA, delivered)
    drain_s = time.monotonic() - restored_at

    async def inbox(session: aiohttp.ClientSession) -> list[str]:
        return await _inbox_ids(network.agent(session, TRIPOLI))

    seen = network.at(TRIPOLI, inbox)
    dropped = sum(
        1 for event in _events(network.services[LY].log)[events_before:] if event["event"] == "consumer_connection_lost"
    )
    for message_id, status in zip(ids, statuses, strict=True):
        assert seen.count(message_id) == 1, f"{message_id} is {seen.count(message_id)} times in Tripoli's inbox"
        deliveries = [item for item in status["evidence"] if item["type"] == "DELIVERY"]
        assert len(deliveries) == 1, f"{message_id} has {len(deliveries)} DELIVERY statements"
    figure(
        f"cut and restore: {CUT_MESSAGES} messages sent during a cut of {restored_at - cut_at:.1f} s; "
        f"all delivered exactly once, {drain_s:.1f} s after the link came back "
        f"(Tripoli's broker consumers dropped and reconnected: {dropped})"
    )


def _revoke(network: Network, figure: Callable[[str], None]) -> None:
    """BD's signing key revoked at the authority; the new version is in force at every site within the bound."""
    auth = network.authority
    key_id = _directory(network.root / HUB / "directory.json").agency(AgencyId(BD)).signing_keys[0].key_id
    _run("authority", "revoke-key", key_id, "--dir", str(auth))
    _run("authority", "sign", "--dir", str(auth), "--out", str(auth / "directory.json"),
         "--passphrase-file", str(network.root / "authority-passphrase"))  # fmt: skip

    dropped_at = time.monotonic()
    _replace(network.root / HUB / "directory.json", (auth / "directory.json").read_bytes())
    observed: dict[str, float] = {}
    names = {"gateway": HUB, BD: DHAKA, LY: TRIPOLI}
    while len(observed) < len(names):
        for name in names:
            if name not in observed and network.health(name).get("directory_version") == 2:
                observed[name] = time.monotonic() - dropped_at
        if time.monotonic() - dropped_at > REVOCATION_BOUND_S:
            break
        time.sleep(0.05)
    assert set(observed) == set(names), f"version 2 not in force within {REVOCATION_BOUND_S} s at: {observed}"
    for name, service in network.services.items():
        assert service.process.poll() is None, f"{name} restarted or exited"
    # Each agency site took the version from the gateway's push and wrote it to its own file.
    for site, agency in AGENCY_OF.items():
        held = _directory(network.root / site / "directory.json")
        assert held.version == 2
        assert held.agency(AgencyId(BD)).signing_keys[0].revoked_at is not None
        reloads = [event for event in _events(network.services[agency].log) if event["event"] == "directory_reloaded"]
        assert [(event["source"], event["version"]) for event in reloads] == [("push", 2)], reloads

    document = _fresh(sample(REQUEST_SAMPLE))

    async def refused(session: aiohttp.ClientSession) -> str:
        bd = network.agent(session, DHAKA)
        try:
            await bd.submit(document, idempotency_key="sites-after-revocation")
        except AgentApiError as exc:
            return f"Dhaka's agent refused it: HTTP {exc.status} {exc.problem.get('code')}"
        status = await bd.wait_for_status(
            document["message_id"], {"rejected", "relayed", "delivered", "retrieved"}, within_s=STEP_S
        )
        assert status["status"] == "rejected", f"a message under the revoked key ended {status['status']}"
        rejected = [item for item in status["evidence"] if item["type"] == "SUBMISSION_REJECTED"]
        assert rejected, status
        reason = rejected[0].get("reason")
        assert reason is not None, rejected[0]
        assert reason["code"] == "KEY_REVOKED", rejected[0]
        return "the hub's gateway refused it: SUBMISSION_REJECTED KEY_REVOKED"

    how = network.at(DHAKA, refused)

    async def tripoli_inbox(session: aiohttp.ClientSession) -> list[str]:
        return await _inbox_ids(network.agent(session, TRIPOLI))

    assert document["message_id"] not in network.at(TRIPOLI, tripoli_inbox)
    figure(
        f"revocation: version 2 in force at the hub {observed['gateway']:.1f} s, Dhaka {observed[BD]:.1f} s, "
        f"Tripoli {observed[LY]:.1f} s after the file was dropped (bound {REVOCATION_BOUND_S:.0f} s); "
        f"a new message from Dhaka under the revoked key: {how}"
    )


def _audit_verifies_from_every_site(network: Network, figure: Callable[[str], None]) -> None:
    """`rogatory audit verify` against the gateway, run inside each site's namespace, exits 0.

    Each site's auditor remembers what it verified in its own state file (never the machine's shared one).
    """
    for site in (HUB, DHAKA, TRIPOLI):
        deadline = time.monotonic() + STEP_S
        while True:
            result = subprocess.run(
                network.net.command(
                    site,
                    [
                        sys.executable, "-m", "deploy", "audit", "verify", "--gateway", network.gateway_url,
                        "--token", network.tokens["auditor"], "--authority-key", network.authority_key,
                        "--ca-file", str(network.site_dir(site) / NETWORK_CA),
                        "--state-file", str(network.site_dir(site) / "audit-state.json"),
                    ],
                ),
                capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            if result.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(1.0)  # the latest checkpoint may not cover the newest entries yet
        assert result.returncode == 0, f"audit verify from {site}:\n{result.stdout}\n{result.stderr}"
        verdict = result.stdout.strip().splitlines()[0] if result.stdout.strip() else ""
        figure(f"audit verify from {site}: exit 0: {verdict}")


def test_three_sites_exchange_survive_a_cut_and_take_a_revocation(sites: Network, figure):
    """Hub, Dhaka and Tripoli as namespaces, set up by the site commands alone: the exchange, a cut link, a
    revocation and the audit log all hold across sites."""
    started = time.monotonic()
    node = _provision(sites)
    try:
        _assert_no_site_holds_anothers_keys(sites)
        _start_services(sites)
        _assert_nothing_listens_on_another_sites_loopback(sites)
        _assert_every_broker_login_is_a_certificate(node, figure)
        figure(f"three sites up in {time.monotonic() - started:.1f} s")

        request_id, answer_id = _exchange(sites)
        figure(f"exchange: request {request_id} and answer {answer_id}, DELIVERY and RETRIEVAL evidence at both ends")
        _cut_and_restore(sites, figure)
        _revoke(sites, figure)
        _audit_verifies_from_every_site(sites, figure)
    finally:
        sites.stop()
        node.stop()
    figure(f"three-site test: {time.monotonic() - started:.1f} s")
