"""Private RabbitMQ nodes and clusters on one machine: for fault drills, never for production.

`RabbitNode` runs its own `rabbitmq-server` as a child process: its own node
name, AMQP, management and distribution ports on 127.0.0.1, its own data,
log and config directory and Erlang cookie; nothing of the machine's own
broker (`/etc/rabbitmq`, `/var/lib/rabbitmq`, port 5672) is read or touched,
so it can be killed, stopped and restarted while that broker serves others.
The shared `epmd` (port 4369) is fine: nodes register distinct names.
A node may also run inside a network namespace (`netns`, `tests/support/sites.py`):
every command is then run through `ip netns exec`, the node's loopback and its
`epmd` are the namespace's own, and AMQP listens on `amqp_ip`, the site's address.

`RabbitCluster` starts several such nodes with one cookie and joins them
(`stop_app`, `join_cluster`, `start_app` against the first), so that quorum
queues declared with `x-quorum-initial-group-size` = the number of nodes are
replicated on all of them. A killed node that is started again with its data
rejoins by itself.

Only the tests use it (the fault drills, the soak, the client-certificate
tests); operators can still rehearse failover with it from a checkout
(`rogatory dev up` takes a comma-separated `ROGATORY_SYSTEM_AMQP_URL` of these nodes). It needs the
RabbitMQ server scripts of the machine (Debian: `/usr/lib/rabbitmq/bin`,
else found on `PATH`, or `ROGATORY_RABBITMQ_SCRIPTS`) and calls them
directly, not through the distribution's wrapper, which switches to the
`rabbitmq` user and its home (and so its cookie).

Error tree::

    RabbitNodeError          a node did not start, stop or join as asked (the message has its log's tail)
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

DEBIAN_SCRIPTS: Final = Path("/usr/lib/rabbitmq/bin")
START_TIMEOUT_S: Final = 90.0
"""How long a node may take to boot (quorum queues recover their Raft logs first)."""
STOP_TIMEOUT_S: Final = 30.0
CTL_TIMEOUT_S: Final = 60.0
GUEST: Final = "guest"
"""The default administrator of a fresh node, allowed from loopback only (the only place nodes listen)."""


class RabbitNodeError(Exception):
    """A node did not start, stop or join as asked; the message says why and quotes its log."""


def scripts_dir() -> Path:
    """Where `rabbitmq-server` and `rabbitmqctl` are (see the module docstring)."""
    configured = os.environ.get("ROGATORY_RABBITMQ_SCRIPTS")
    if configured:
        return Path(configured)
    if (DEBIAN_SCRIPTS / "rabbitmq-server").exists():
        return DEBIAN_SCRIPTS
    found = shutil.which("rabbitmq-server")
    if found is None:
        raise RabbitNodeError("rabbitmq-server is not installed (set ROGATORY_RABBITMQ_SCRIPTS to its directory)")
    return Path(found).resolve().parent


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """Where one node lives: its name, ports and directory."""

    name: str
    amqp_port: int
    management_port: int
    dist_port: int
    base_dir: Path

    @property
    def node(self) -> str:
        """The Erlang node name, `name@localhost`."""
        return f"{self.name}@localhost"


@dataclass
class RabbitNode:
    """One private RabbitMQ node (see the module docstring)."""

    spec: NodeSpec
    cookie: str = field(repr=False)
    peers: tuple[str, ...] = ()
    """Node names to form a cluster with at first boot (classic peer discovery); empty for a lone node."""
    extra_config: tuple[str, ...] = ()
    """More `rabbitmq.conf` lines (a TLS listener, auth mechanisms: `tests/security/test_client_certificates.py`)."""
    extra_plugins: tuple[str, ...] = ()
    """Plugins beside the management plugin (`rabbitmq_auth_mechanism_ssl` for EXTERNAL)."""
    netns: str | None = None
    """The network namespace the node and its `rabbitmqctl` run in (`ip netns exec`); None: the caller's."""
    amqp_ip: str = "127.0.0.1"
    """The address AMQP listens on (management and distribution stay on the namespace's loopback)."""
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @classmethod
    def create(cls, base_dir: Path, name: str, *, cookie: str | None = None) -> RabbitNode:
        """A node with fresh free ports under `base_dir/name` (not started)."""
        spec = NodeSpec(
            name=name,
            amqp_port=free_port(),
            management_port=free_port(),
            dist_port=free_port(),
            base_dir=base_dir / name,
        )
        return cls(spec, cookie or secrets.token_hex(20))

    @property
    def amqp_url(self) -> str:
        """The administrator's AMQP URL of this node (default vhost)."""
        return f"amqp://{GUEST}:{GUEST}@{self.amqp_ip}:{self.spec.amqp_port}/"

    @property
    def management_url(self) -> str:
        """The management API of this node."""
        return f"http://127.0.0.1:{self.spec.management_port}"

    @property
    def running(self) -> bool:
        """Whether the node's process is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def log_file(self) -> Path:
        """The node's own log (RabbitMQ's), where start-up problems are told."""
        return self.spec.base_dir / "log" / f"{self.spec.node}.log"

    def _prepare(self) -> None:
        base = self.spec.base_dir
        base.mkdir(parents=True, exist_ok=True)
        (base / "rabbitmq.conf").write_text(
            "\n".join(
                (
                    f"management.tcp.port = {self.spec.management_port}",
                    "management.tcp.ip = 127.0.0.1",
                    "collect_statistics_interval = 2000",
                    "log.console = false",
                    *(("cluster_formation.peer_discovery_backend = classic_config",) if self.peers else ()),
                    *(f"cluster_formation.classic_config.nodes.{i} = {peer}" for i, peer in enumerate(self.peers, 1)),
                    *self.extra_config,
                    "",
                )
            )
        )
        (base / "enabled_plugins").write_text(f"[{','.join(('rabbitmq_management', *self.extra_plugins))}].\n")
        (base / "env.conf").write_text("")  # the machine's rabbitmq-env.conf names its own node: not ours
        cookie = base / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(self.cookie)
            cookie.chmod(0o400)

    def _environment(self) -> dict[str, str]:
        base = self.spec.base_dir
        return {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "HOME": str(base),  # the CLI and the node read the cookie from $HOME/.erlang.cookie
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "RABBITMQ_CONF_ENV_FILE": str(base / "env.conf"),
            "RABBITMQ_NODENAME": self.spec.node,
            "RABBITMQ_NODE_IP_ADDRESS": self.amqp_ip,
            "RABBITMQ_NODE_PORT": str(self.spec.amqp_port),
            "RABBITMQ_DIST_PORT": str(self.spec.dist_port),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }

    def _command(self, *argv: str) -> list[str]:
        """`argv`, run inside the node's network namespace when it has one."""
        return ["ip", "netns", "exec", self.netns, *argv] if self.netns else list(argv)

    def start(self) -> None:
        """Start the node's process (with its data, if it ran before); return at once."""
        if self.running:
            return
        self._prepare()
        output = (self.spec.base_dir / "server.out").open("ab")
        try:
            self._process = subprocess.Popen(
                self._command(str(scripts_dir() / "rabbitmq-server")),
                env=self._environment(),
                cwd=self.spec.base_dir,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: `kill` takes the whole VM
            )
        finally:
            output.close()

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Return once the node's broker application runs; raise `RabbitNodeError` otherwise."""
        deadline = time.monotonic() + timeout_s
        while True:
            if not self.running:
                raise RabbitNodeError(f"node {self.spec.node} exited while starting:\n{self.tail()}")
            if self.ctl("await_startup", "--timeout", "10", check=False).returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RabbitNodeError(f"node {self.spec.node} not ready after {timeout_s:.0f} s:\n{self.tail()}")
            time.sleep(0.5)

    def stop(self) -> None:
        """Stop the node gracefully (SIGTERM, as its start script expects), then wait for it."""
        if self._process is None:
            return
        if self.running:
            os.killpg(self._process.pid, signal.SIGTERM)
        try:
            self._process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL the node's whole process group: a crash, with no chance to flush or say goodbye."""
        if self._process is None:
            return
        if self.running:
            os.killpg(self._process.pid, signal.SIGKILL)
        self._process.wait(timeout=STOP_TIMEOUT_S)

    def ctl(self, *args: str, check: bool = True, timeout_s: float = CTL_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        """Run `rabbitmqctl -n <node> <args>` with this node's cookie."""
        try:
            result = subprocess.run(
                self._command(str(scripts_dir() / "rabbitmqctl"), "-n", self.spec.node, *args),
                env=self._environment(),
                capture_output=True,
                text=True,
                timeout=timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise RabbitNodeError(f"rabbitmqctl {' '.join(args)} on {self.spec.node} took over {timeout_s} s") from exc
        if check and result.returncode != 0:
            raise RabbitNodeError(
                f"rabbitmqctl {' '.join(args)} on {self.spec.node} failed ({result.returncode}): "
                f"{(result.stderr or result.stdout)[-800:]}"
            )
        return result

    def tail(self, lines: int = 25) -> str:
        """The end of the node's log and of its start script's output."""
        parts = []
        for path in (self.spec.base_dir / "server.out", self.log_file):
            try:
                parts.append(f"--- {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:]))
            except OSError:
                continue
        return "\n".join(parts) or "(no log yet)"


@dataclass
class RabbitCluster:
    """Several private nodes with one cookie, joined into one cluster."""

    nodes: list[RabbitNode]

    @classmethod
    def create(cls, base_dir: Path, size: int = 3, *, prefix: str | None = None) -> RabbitCluster:
        """`size` nodes named `<prefix>-1` ... under `base_dir` (not started)."""
        prefix = prefix or f"rogatory-{secrets.token_hex(3)}"
        cookie = secrets.token_hex(20)
        nodes = [RabbitNode.create(base_dir, f"{prefix}-{index}", cookie=cookie) for index in range(1, size + 1)]
        peers = tuple(node.spec.node for node in nodes)
        for node in nodes:
            node.peers = peers
        return cls(nodes)

    @property
    def amqp_urls(self) -> str:
        """The administrator's AMQP URLs of every node, comma-separated (what `rogatory dev up` takes)."""
        return ",".join(node.amqp_url for node in self.nodes)

    @property
    def management_url(self) -> str:
        """The management API of the first node (any node answers for the whole cluster)."""
        return self.nodes[0].management_url

    def start(self) -> None:
        """Start every node (they find each other at boot); join by hand any that did not; wait until clustered.

        Peer discovery at boot saves the `stop_app`/`join_cluster`/`start_app` round of each
        node (tens of seconds on a small machine); the explicit join covers a node that
        booted alone anyway.
        """
        for node in self.nodes:
            node.start()
        for node in self.nodes:
            node.wait_ready()
        first = self.nodes[0]
        for node in self.nodes[1:]:
            if node.spec.node in self.running_members():
                continue
            node.ctl("stop_app")
            node.ctl("join_cluster", first.spec.node)
            node.ctl("start_app")
            node.wait_ready()
        self.wait_clustered()

    def kill(self) -> None:
        """SIGKILL every node (the quickest end, when their data is thrown away)."""
        for node in self.nodes:
            node.kill()

    def wait_clustered(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Return once the first running node sees every node running in the cluster."""
        deadline = time.monotonic() + timeout_s
        wanted = {node.spec.node for node in self.nodes}
        while True:
            running = self.running_members()
            if running >= wanted:
                return
            if time.monotonic() > deadline:
                raise RabbitNodeError(f"cluster not formed after {timeout_s:.0f} s: running {sorted(running)}")
            time.sleep(0.5)

    def running_members(self) -> set[str]:
        """The nodes the cluster reports as running (asked of the first node that answers)."""
        for node in self.nodes:
            if not node.running:
                continue
            result = node.ctl("eval", "rabbit_nodes:all_running().", check=False)
            if result.returncode == 0:
                return {name.strip(" []'\n") for name in result.stdout.split(",") if "@" in name}
        return set()

    def stop(self) -> None:
        """Stop every node (gracefully, then by force)."""
        for node in self.nodes:
            node.stop()


__all__ = [
    "NodeSpec",
    "RabbitCluster",
    "RabbitNode",
    "RabbitNodeError",
    "free_port",
    "scripts_dir",
]
