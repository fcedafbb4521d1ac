"""`rogatory dev up / down`: a local network of real processes on a real RabbitMQ.

`up` on an empty state directory creates a network (keys and directory by the
site commands' functions, `deploy.localnet.network`; the broker's vhost, users,
permissions and queues from the signed directory, as `rogatory broker
provision` makes them, `provision_broker`), starts the gateway and one agent per
agency as separate processes, waits until each answers `/healthz`, and writes
`stack.json` (docs/API.md). `up` on a directory that holds a network provisions
the broker again (idempotent), renews the directory if it is about to expire,
and starts whatever is not running, with its data and keys. `down` stops what
`up` started and keeps the data.

A network made with `hosts` (`rogatory dev up --host A,B,C`, the bench's
`--agencies-per-process`) runs each group of agencies in one agent process
(`agents.hosting`) named `agents-host-N`: `up` writes each hosted agency's
variables into `<state>/agents/agents-host-N/hosted/<AGENCY>.env` (what its
own process would have been given, less the listener's) and starts
`python -m agents` with `ROGATORY_HOSTED_AGENCIES_DIR` pointing there;
`stack.json` gives each hosted agency the host's URL and pid (docs/API.md).

`up` is also the dev network's supervisor: a service that exited (killed,
or stopped by its own watchdog with status 70) is started again by the next
`up`, and the data it left is all it needs. The broker may be one node or
a cluster (`ROGATORY_SYSTEM_AMQP_URL` lists the nodes, comma-separated); the
gateway is given the management API of the first node for its operator's
queue view.

Services reach the machine's broker over TLS: `amqps://…@localhost:5671`,
verifying the broker's certificate and host name against the CA that
`deploy/ensure-rabbitmq.sh` made (`deploy.provision.tls`); `stack.json` gives the same
URLs. Other nodes (private test nodes, proxies) keep the URL they were given.

The gateway serves HTTPS (`https://localhost:<port>`) with a certificate of
the network's own CA, made by `up` in `<state>/tls/` (`rogatory tls`) and
issued again when it nears its end: agents verify it with that CA
(`ROGATORY_GATEWAY_CA_FILE`), and `stack.json` names the CA (`gateway.ca_file`)
for the clients of the audit and blob APIs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import aiohttp
from cryptography import x509

from agents.hosting import HOSTED_AGENCIES_VARIABLE, PROCESS_VARIABLES
from deploy.localnet.network import (
    NetworkDescription,
    NetworkPaths,
    create_network,
    load_network,
    renew_directory_if_due,
    sha256_token,
    write_private,
)
from deploy.provision.broker import (
    ManagementClient,
    ManagementEndpoint,
    delete_network,
    management_url_from_amqp,
)
from deploy.provision.tls import (
    RENEW_BEFORE,
    BrokerTlsFiles,
    TlsError,
    ensure_ca,
    issue_document_signing_files,
    issue_server_files,
    machine_broker_tls,
    service_amqp_url,
)
from deploy.site.broker import plan_for, provision_from_directory, read_verified_directory
from deploy.site.secrets import SiteError, write_secret
from protocol.directory import Directory, KeyExpiryWarning, key_expiry_warnings
from protocol.errors import ErrorCode
from protocol.signing import SignedStatement
from runtime.tls import client_context

DEFAULT_AMQP_URL: Final = "amqp://guest:guest@127.0.0.1:5672/"
READY_TIMEOUT_S: Final = 60.0
"""How long `up` waits for every service's `/healthz` before giving up (a small network)."""
READY_TIMEOUT_PER_AGENCY_S: Final = 1.0
"""And this much more per agency: a network of hundreds has as many keystores to unlock and inboxes to open."""
KEY_WARNING_WINDOW: Final = timedelta(days=30)
"""`up` warns about keys expiring sooner than this with no successor: time to rotate."""
STOP_TIMEOUT_S: Final = 15.0
"""How long `down` waits after SIGTERM before SIGKILL."""

GATEWAY_TLS_NAME: Final = "localhost"
DEV_TSA_INTERVAL_S: Final = "2"
"""The dev network time-stamps a checkpoint every 2 s (a real TSA is asked once a minute, the default)."""
GATEWAY_DOCUMENT_NAME: Final = "rogatory-dev-gateway"
"""The common name of the dev gateway's document-signing certificate: the signer a PDF reader shows."""
"""The name the dev network's gateway is reached and verified by (its certificate also holds 127.0.0.1)."""

Say = Callable[[str], None]


class DevStackError(Exception):
    """`dev up` or `dev down` could not do what was asked; the message says why."""


@dataclass(frozen=True, slots=True)
class ServiceLaunch:
    """How to start one service of the network."""

    name: str
    module: str
    port: int
    environment: dict[str, str]


def _amqp_url(description: NetworkDescription, user: str, password: str) -> str:
    """A service's broker URL: over TLS to the machine's broker (`deploy.provision.tls.service_amqp_url`)."""
    return service_amqp_url(description.amqp_url(user, password), machine_broker_tls(os.environ))


def _watched_certificates(paths: NetworkPaths) -> dict[str, str]:
    """The gateway's console watches its HTTPS certificate and CA, and the broker's (`deploy.provision.tls`)."""
    https = _gateway_tls(paths)
    watched = [https.ca_cert, https.certificate, https.document_certificate]
    tls_dir = machine_broker_tls(os.environ)
    if tls_dir is not None:
        watched += [BrokerTlsFiles(tls_dir).ca_cert, BrokerTlsFiles(tls_dir).server_cert]
    return {"ROGATORY_WATCHED_CERTIFICATES": ",".join(map(str, watched))}


@dataclass(frozen=True, slots=True)
class GatewayTls:
    """The dev network's CA and the gateway's HTTPS certificate, under `<state>/tls/`."""

    ca_dir: Path
    certificate: Path
    key: Path
    document_certificate: Path
    """The gateway's document-signing certificate (it signs the case reports), from the same CA."""
    document_key: Path

    @property
    def ca_cert(self) -> Path:
        """What agents and clients verify the gateway with."""
        return BrokerTlsFiles(self.ca_dir).ca_cert


def _gateway_tls(paths: NetworkPaths) -> GatewayTls:
    tls = paths.root / "tls"
    gateway = tls / "gateway"
    return GatewayTls(
        tls / "ca",
        gateway / f"{GATEWAY_TLS_NAME}.pem",
        gateway / f"{GATEWAY_TLS_NAME}-key.pem",
        gateway / f"{GATEWAY_DOCUMENT_NAME}-documents.pem",
        gateway / f"{GATEWAY_DOCUMENT_NAME}-documents-key.pem",
    )


def _fresh(certificate: Path, key: Path, now: datetime) -> bool:
    try:
        current = x509.load_pem_x509_certificate(certificate.read_bytes())
    except (OSError, ValueError):
        return False
    return current.not_valid_after_utc - now > RENEW_BEFORE and key.is_file()


def ensure_gateway_tls(paths: NetworkPaths, *, now: datetime) -> GatewayTls:
    """The network's CA (made once), the gateway's HTTPS and document-signing certificates.

    Each certificate is issued again within `RENEW_BEFORE` of its end.
    """
    files = _gateway_tls(paths)
    ensure_ca(files.ca_dir, "Rogatory development network CA", now=now)
    if not _fresh(files.certificate, files.key, now):
        issue_server_files(files.ca_dir, GATEWAY_TLS_NAME, files.certificate.parent, also=("127.0.0.1",), now=now)
    if not _fresh(files.document_certificate, files.document_key, now):
        issue_document_signing_files(files.ca_dir, GATEWAY_DOCUMENT_NAME, files.document_certificate.parent, now=now)
    return files


def gateway_url(description: NetworkDescription) -> str:
    """The dev network's gateway, over HTTPS."""
    return f"https://{GATEWAY_TLS_NAME}:{description.gateway.http_port}"


def _service_environment(
    description: NetworkDescription,
    paths: NetworkPaths,
    service: str,
    management: ManagementEndpoint | None = None,
) -> dict[str, str]:
    common = description.service_environment | {
        "ROGATORY_HTTP_HOST": "127.0.0.1",
        "ROGATORY_DATA_DIR": str(paths.data(service)),
        "ROGATORY_DIRECTORY_FILE": str(paths.directory),
        "ROGATORY_AUTHORITY_KEY": description.authority_key,
        "ROGATORY_KEYSTORE_FILE": str(paths.keystore(service)),
        "ROGATORY_KEYSTORE_PASSPHRASE_FILE": str(paths.passphrase(service)),
        "ROGATORY_LOG_FORMAT": "json",
    }
    if service == "gateway":
        gateway = description.gateway
        operations: dict[str, str] = {}
        if management is not None:
            password_file = paths.service_dir("gateway") / "management-password"
            write_private(password_file, management.password.encode("utf-8"))
            operations = {
                "ROGATORY_MANAGEMENT_URL": management.base_url,
                "ROGATORY_MANAGEMENT_USER": management.username,
                "ROGATORY_MANAGEMENT_PASSWORD_FILE": str(password_file),
            }
        https = _gateway_tls(paths)
        if description.tsa_port is not None:
            operations |= {"ROGATORY_TSA_URL": tsa_url(description), "ROGATORY_TSA_INTERVAL_S": DEV_TSA_INTERVAL_S}
        common = _watched_certificates(paths) | common | operations  # a network's own setting wins
        return common | {
            "ROGATORY_HTTP_TLS_CERT_FILE": str(https.certificate),
            "ROGATORY_HTTP_TLS_KEY_FILE": str(https.key),
            "ROGATORY_REPORT_SIGNING_CERT_FILE": str(https.document_certificate),
            "ROGATORY_REPORT_SIGNING_KEY_FILE": str(https.document_key),
            "ROGATORY_REPORT_SIGNING_CA_FILE": str(https.ca_cert),
            "ROGATORY_AMQP_URL": _amqp_url(description, gateway.broker_user, gateway.broker_password),
            "ROGATORY_HTTP_PORT": str(gateway.http_port),
            "ROGATORY_BROKER_USER_PREFIX": description.broker_user_prefix,
            "ROGATORY_OPERATOR_TOKEN_SHA256": sha256_token(gateway.operator_token),
            "ROGATORY_AUDITOR_TOKEN_SHA256": sha256_token(gateway.auditor_token),
            "ROGATORY_READER_TOKENS_SHA256": sha256_token(gateway.reader_token),
            "ROGATORY_METRICS_TOKENS_SHA256": sha256_token(gateway.metrics_token),
        }
    agent = description.agents[service]
    token_file = paths.service_dir(service) / "gateway-token"
    if not token_file.exists():
        write_private(token_file, description.gateway.reader_token.encode("utf-8"))
    # A dev network's case systems run on this machine: its agents may call loopback webhooks (a setting of
    # the network's own wins).
    common = {"ROGATORY_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8,::1/128"} | common
    return common | {
        "ROGATORY_GATEWAY_URL": gateway_url(description),
        "ROGATORY_GATEWAY_CA_FILE": str(_gateway_tls(paths).ca_cert),
        "ROGATORY_GATEWAY_TOKEN_FILE": str(token_file),
        "ROGATORY_AGENCY": service,
        "ROGATORY_AMQP_URL": _amqp_url(description, agent.broker_user, agent.broker_password),
        "ROGATORY_HTTP_PORT": str(agent.http_port),
        "ROGATORY_API_TOKENS_SHA256": sha256_token(agent.token),
        "ROGATORY_GATEWAY_BROKER_USER": description.gateway.broker_user,
    }


def tsa_url(description: NetworkDescription) -> str:
    """The dev network's time-stamp authority."""
    return f"http://127.0.0.1:{description.tsa_port}/"


def launches(
    description: NetworkDescription, paths: NetworkPaths, management: ManagementEndpoint | None = None
) -> list[ServiceLaunch]:
    """The time-stamp authority (if the network has one), the gateway, then one agent per agency."""
    services = []
    if description.tsa_port is not None:
        services.append(
            ServiceLaunch(
                "tsa",
                "deploy.localnet.tsa",
                description.tsa_port,
                {"ROGATORY_TSA_DIR": str(paths.tsa), "ROGATORY_HTTP_PORT": str(description.tsa_port)},
            )
        )
    services += [
        ServiceLaunch(
            "gateway",
            "gateway",
            description.gateway.http_port,
            _service_environment(description, paths, "gateway", management),
        )
    ]
    services += [
        ServiceLaunch(agency, "agents", entry.http_port, _service_environment(description, paths, agency))
        for agency, entry in description.agents.items()
        if description.host_of(agency) is None
    ]
    services += [_host_launch(description, paths, name) for name in description.agent_hosts]
    return services


def _host_launch(description: NetworkDescription, paths: NetworkPaths, name: str) -> ServiceLaunch:
    """One agent process hosting several agencies: each agency's variables in its own file (`agents.hosting`).

    The files are written again at each `up` (0600, in `<state>/agents/<host>/hosted/`), from the same
    network description: an agency's settings are those it would have in a process of its own, less the
    listener's, which the host process has.
    """
    host = description.agent_hosts[name]
    folder = paths.service_dir(name) / "hosted"
    process: dict[str, str] = {}
    for agency in host.agencies:
        environment = _service_environment(description, paths, agency)
        process |= {key: value for key, value in environment.items() if key in PROCESS_VARIABLES}
        lines = [f"{key}={value}" for key, value in environment.items() if key not in PROCESS_VARIABLES]
        write_private(folder / f"{agency}.env", ("\n".join(lines) + "\n").encode("utf-8"))
    process |= {"ROGATORY_HTTP_PORT": str(host.http_port), HOSTED_AGENCIES_VARIABLE: str(folder)}
    return ServiceLaunch(name, "agents", host.http_port, process)


def _process_alive(pid: int, module: str, root: Path) -> bool:
    """Whether `pid` is our `python -m <module>` for this state directory (not a recycled pid, not a zombie)."""
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    proc = Path(f"/proc/{pid}")
    if not Path("/proc/self").exists():
        return True  # no procfs (not Linux): trust the signal probe
    try:
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        if state in {"Z", "X"}:
            return False
        cmdline = (proc / "cmdline").read_bytes()
        environ = (proc / "environ").read_bytes()
    except (OSError, IndexError):
        return False
    return f"-m\0{module}".encode() in cmdline and str(root).encode() in environ


def _reap(pid: int) -> None:
    """Collect the exit status of `pid` if it is a child of this process (so it is not a zombie)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _start(launch: ServiceLaunch, paths: NetworkPaths) -> int:
    """Start `python -m <module>` in its own session, output appended to its log; return its pid.

    `posix_spawn` rather than `subprocess.Popen`: the service outlives this
    process (`--detach`), so there is no `Popen` object to keep; `down` reaps
    it if it is our child.
    """
    paths.data(launch.name).mkdir(parents=True, exist_ok=True)
    environment = {key: value for key, value in os.environ.items() if not key.startswith("ROGATORY_")}
    environment.update(launch.environment)
    log_path = str(paths.log(launch.name))
    return os.posix_spawn(
        sys.executable,
        [sys.executable, "-m", launch.module],
        environment,
        file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600),
            (os.POSIX_SPAWN_DUP2, 1, 2),
        ],
        setsid=True,
    )


def _running(pid: int, module: str, root: Path) -> bool:
    """Whether `pid` runs: exactly, for a child of this process (one just started may not have exec'd yet)."""
    try:
        exited, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        # Not our child (started by an earlier `up`): ask /proc.
        return _process_alive(pid, module, root)
    # posix_spawn can return before the child's new image shows its arguments in /proc (an empty
    # cmdline for a few milliseconds): `_process_alive` would call a starting service dead.
    return exited == 0


async def _wait_ready(launch: ServiceLaunch, pid: int, paths: NetworkPaths, deadline: float) -> None:
    https = launch.name == "gateway"
    host = GATEWAY_TLS_NAME if https else "127.0.0.1"
    url = f"{'https' if https else 'http'}://{host}:{launch.port}/healthz"
    connector = aiohttp.TCPConnector(ssl=client_context(_gateway_tls(paths).ca_cert) if https else True)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2), connector=connector) as session:
        while True:
            if not _running(pid, launch.module, paths.root):
                raise DevStackError(
                    f"{launch.name} exited during start-up; its log says:\n{_tail(paths.log(launch.name))}"
                )
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            if time.monotonic() > deadline:
                raise DevStackError(
                    f"{launch.name} did not become ready at {url} in time; its log says:\n"
                    f"{_tail(paths.log(launch.name))}"
                )
            await asyncio.sleep(0.2)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def gateway_ca(stack: dict[str, Any]) -> Path | None:
    """The CA a stack's gateway is verified with (`stack.json`'s `gateway.ca_file`), if it names one."""
    ca_file = (stack.get("gateway") or {}).get("ca_file")
    return Path(ca_file) if isinstance(ca_file, str) else None


def trusting(stack: dict[str, Any]) -> aiohttp.TCPConnector:
    """A connector for a client session that reaches the stack's HTTPS gateway (and its HTTP agents)."""
    ca_file = gateway_ca(stack)
    return aiohttp.TCPConnector(ssl=True if ca_file is None else client_context(ca_file))


def read_stack(root: Path) -> dict[str, Any] | None:
    """The `stack.json` of `root`, if any."""
    path = NetworkPaths(root).stack
    if not path.exists():
        return None
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def _stack_document(
    description: NetworkDescription, paths: NetworkPaths, pids: dict[str, int | None]
) -> dict[str, Any]:
    gateway = description.gateway
    return {
        "gateway": {
            "url": gateway_url(description),
            "ca_file": str(_gateway_tls(paths).ca_cert),
            "operator_token": gateway.operator_token,
            "auditor_token": gateway.auditor_token,
            "reader_token": gateway.reader_token,
            "metrics_token": gateway.metrics_token,
            "pid": pids.get("gateway"),
        },
        "agents": {
            agency: {
                "url": f"http://127.0.0.1:{_agent_port(description, agency)}",
                "token": entry.token,
                "amqp_url": _amqp_url(description, entry.broker_user, entry.broker_password),
                "pid": pids.get(description.host_of(agency) or agency),
                **({} if description.host_of(agency) is None else {"host": description.host_of(agency)}),
            }
            for agency, entry in description.agents.items()
        },
        **(
            {
                "agent_hosts": {
                    name: {
                        "url": f"http://127.0.0.1:{host.http_port}",
                        "agencies": list(host.agencies),
                        "pid": pids.get(name),
                    }
                    for name, host in description.agent_hosts.items()
                }
            }
            if description.agent_hosts
            else {}
        ),
        **({"tsa": {"url": tsa_url(description), "pid": pids.get("tsa")}} if description.tsa_port is not None else {}),
        "network": {
            "network_id": description.network_id,
            "vhost": description.vhost,
            "state_dir": str(paths.root),
            "directory_file": str(paths.directory),
            "authority_key": description.authority_key,
            "amqp_admin_note": "agency and gateway identities above; the admin account is ROGATORY_SYSTEM_AMQP_URL's",
        },
    }


def _agent_port(description: NetworkDescription, agency: str) -> int:
    """The port `agency`'s API is served on: its own process's, or its host's."""
    host = description.host_of(agency)
    return description.agents[agency].http_port if host is None else description.agent_hosts[host].http_port


def _stack_entry(stack: dict[str, Any], name: str) -> dict[str, Any]:
    """The `stack.json` entry of one launched process (the gateway, the TSA, an agent or an agent host)."""
    if name in {"gateway", "tsa"}:
        return stack.get(name) or {}
    entry: dict[str, Any] = (stack.get("agent_hosts") or {}).get(name) or stack["agents"].get(name) or {}
    return entry


async def up(
    root: Path,
    *,
    amqp_url: str,
    management_url: str | None = None,
    say: Say = print,
    service_environment: dict[str, str] | None = None,
    bench_pairs: int = 0,
    hosts: Sequence[Sequence[str]] = (),
) -> dict[str, Any]:
    """Create or restart the network in `root`; return the `stack.json` document.

    `amqp_url` is one broker or the comma-separated nodes of a cluster (as the
    administrator); `service_environment` (extra `ROGATORY_*` settings for every
    service) is kept with a new network and ignored for an existing one, as are
    `bench_pairs` (pairs of agencies added for `rogatory bench`) and `hosts`
    (groups of agencies each run by one agent process, `agents.hosting`).
    """
    root = root.resolve()
    paths = NetworkPaths(root)
    now = datetime.now(UTC)
    _ensure_tls(paths, now=now, say=say)
    description = load_network(root)
    try:
        if description is None:
            say(f"creating a new network in {root}")
            description = create_network(
                root,
                amqp_url=amqp_url,
                now=now,
                service_environment=service_environment,
                bench_pairs=bench_pairs,
                hosts=hosts,
                say=say,
            )
        else:
            say(f"restarting network {description.network_id} from {root}")
            renewed = renew_directory_if_due(root, description, now=now)
            if renewed is not None:
                say(f"signed directory version {renewed} (the previous one was about to expire)")
    except SiteError as exc:
        raise DevStackError(f"{exc} (remove {root}, or `rogatory dev destroy`, to make a new network)") from exc
    for warning in key_warnings(root, now=now):
        say(
            f"WARNING: {warning.purpose} key {warning.key_id} of {warning.owner} expires at "
            f"{warning.valid_until.isoformat()} and no successor is listed: rotate it"
        )
    endpoint = management_url_from_amqp(_first(amqp_url), base_url=management_url)
    say(f"provisioning vhost {description.vhost} on {endpoint.base_url}")
    async with ManagementClient.from_endpoint(endpoint) as admin:
        await provision_broker(admin, description, paths, now=now)

    previous = read_stack(root) or {}
    previous_pids = {
        "gateway": (previous.get("gateway") or {}).get("pid"),
        "tsa": (previous.get("tsa") or {}).get("pid"),
    }
    previous_pids.update({name: entry.get("pid") for name, entry in (previous.get("agents") or {}).items()})
    previous_pids.update({name: entry.get("pid") for name, entry in (previous.get("agent_hosts") or {}).items()})
    pids: dict[str, int | None] = {}
    deadline = time.monotonic() + READY_TIMEOUT_S + READY_TIMEOUT_PER_AGENCY_S * len(description.agents)
    for launch in launches(description, paths, endpoint):
        pid = previous_pids.get(launch.name)
        if isinstance(pid, int) and _process_alive(pid, launch.module, root):
            say(f"  {launch.name:<18} already running (pid {pid})")
        else:
            pid = _start(launch, paths)
            say(f"  {launch.name:<18} started (pid {pid}, port {launch.port})")
        pids[launch.name] = pid
        # What runs is written down at once: a start that fails later leaves `down` what to stop.
        write_private(paths.stack, json.dumps(_stack_document(description, paths, pids), indent=2).encode("utf-8"))
        # The gateway first: agents' evidence goes through it.
        if launch.name == "gateway":
            await _wait_ready(launch, pid, paths, deadline)
    for launch in launches(description, paths):
        pid = pids[launch.name]
        assert pid is not None
        await _wait_ready(launch, pid, paths, deadline)
    stack = _stack_document(description, paths, pids)
    write_private(paths.stack, json.dumps(stack, indent=2).encode("utf-8"))
    say(f"ready: {paths.stack}")
    return stack


async def provision_broker(
    admin: ManagementClient, description: NetworkDescription, paths: NetworkPaths, *, now: datetime
) -> None:
    """`rogatory broker provision --auth password`: the broker from the signed directory, verified first.

    The one difference from the command: the passwords are the ones `network.json`
    gave the services, put where the command keeps them (`NetworkPaths.broker_secrets`)
    before it reads them; the command would generate them on its first run.
    """
    try:
        directory = read_verified_directory(paths.directory, description.authority_key, now=now)
    except SiteError as exc:
        raise DevStackError(str(exc)) from exc
    plan = plan_for(
        directory,
        vhost=description.vhost,
        user_prefix=description.broker_user_prefix,
        gateway_user=description.gateway.broker_user,
        now=now,
    )
    for user, password in description.passwords().items():
        write_secret(paths.broker_secrets / f"{user}.password", password.encode("utf-8"))
    await provision_from_directory(
        admin,
        replace(plan, quorum_group_size=description.quorum_group_size),
        user_prefix=description.broker_user_prefix,
        secrets_dir=paths.broker_secrets,
    )


def _ensure_tls(paths: NetworkPaths, *, now: datetime, say: Say) -> None:
    """The broker's TLS must be there (or plain AMQP asked for, with a warning); the gateway's HTTPS is made."""
    try:
        if machine_broker_tls(os.environ) is None:
            say("WARNING: ROGATORY_UNSAFE_PLAIN_AMQP=1: services talk to the broker without TLS")
        paths.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        ensure_gateway_tls(paths, now=now)
    except TlsError as exc:
        raise DevStackError(str(exc)) from exc


def key_warnings(root: Path, *, now: datetime) -> tuple[KeyExpiryWarning, ...]:
    """Keys of the network's directory that expire within `KEY_WARNING_WINDOW` without a successor."""
    signed = SignedStatement.from_json(NetworkPaths(root).directory.read_bytes(), code=ErrorCode.MALFORMED_DIRECTORY)
    directory = Directory.model_validate_json(signed.payload)
    return key_expiry_warnings(directory, now=now, within=KEY_WARNING_WINDOW)


def _first(amqp_url: str) -> str:
    """The first node of a comma-separated list of AMQP URLs (the one whose management API is used)."""
    return amqp_url.split(",", 1)[0].strip()


def down(root: Path, *, say: Say = print) -> None:
    """Stop every process `up` started in `root` (SIGTERM, then SIGKILL); keep the data."""
    root = root.resolve()
    paths = NetworkPaths(root)
    stack = read_stack(root)
    description = load_network(root)
    if stack is None or description is None:
        raise DevStackError(f"no network in {root} (no stack.json)")
    running: dict[str, tuple[int, str]] = {}
    for launch in launches(description, paths):
        pid = _stack_entry(stack, launch.name).get("pid")
        if isinstance(pid, int) and _process_alive(pid, launch.module, root):
            running[launch.name] = (pid, launch.module)
    # Agents first, so their last evidence still reaches a running gateway; the TSA last.
    for name in sorted(running, key=lambda n: (n == "tsa", n == "gateway")):
        pid, _ = running[name]
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        say(f"  {name:<18} stopping (pid {pid})")
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for name, (pid, module) in running.items():
        while _process_alive(pid, module, root) and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.1)
        if _process_alive(pid, module, root):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            say(f"  {name:<18} killed after {STOP_TIMEOUT_S:.0f} s")
        _reap(pid)
    stack["gateway"]["pid"] = None
    if "tsa" in stack:
        stack["tsa"]["pid"] = None
    for entry in (*stack["agents"].values(), *(stack.get("agent_hosts") or {}).values()):
        entry["pid"] = None
    write_private(paths.stack, json.dumps(stack, indent=2).encode("utf-8"))
    say(f"stopped; data kept in {root}")


async def destroy(root: Path, *, amqp_url: str, management_url: str | None = None) -> None:
    """Delete a stopped network: its vhost and broker users, then its state directory."""
    root = root.resolve()
    description = load_network(root)
    if description is not None:
        endpoint = management_url_from_amqp(_first(amqp_url), base_url=management_url)
        async with ManagementClient.from_endpoint(endpoint) as admin:
            await delete_network(admin, description.plan())
    shutil.rmtree(root, ignore_errors=True)


__all__ = [
    "DEFAULT_AMQP_URL",
    "DevStackError",
    "GatewayTls",
    "destroy",
    "down",
    "ensure_gateway_tls",
    "gateway_ca",
    "gateway_url",
    "launches",
    "provision_broker",
    "read_stack",
    "trusting",
    "up",
]
