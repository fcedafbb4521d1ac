"""Sites as Linux network namespaces on one machine: for the three-site test, never for production.

`SiteNetwork` makes one namespace per site (named `<prefix>-<site>`), each
with its own loopback and one address on a private test range
(`10.231.0.0/24`). The hub's namespace holds a bridge, its own address on it,
and one end of a veth pair per other site (the other end lives in that
site's namespace): the hub is the switch every site's link goes through,
and nothing is routed anywhere else: no end of any link lives in the
machine's own namespace. `cut`/`restore` bring one site's link down and up.
`close` kills whatever still runs in the namespaces (only this test's
processes can be there) and deletes them, which removes the links too.

Code of the test reaches a site's services from inside that site: `inside`
runs a function on a fresh thread that first joins the site's namespace
(`setns(2)` moves only the calling thread), so every socket it opens is the
site's. `command` prefixes an argv with `ip netns exec`.

Error tree::

    SiteNetworkError       a namespace or link could not be made (no root, no `ip`, no veth/bridge support)
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, TypeVar

T = TypeVar("T")

SUBNET: Final = "10.231.0"
"""The private test range of the links (a /24): inside this test's namespaces only."""
CLONE_NEWNET: Final = 0x40000000
IP_TIMEOUT_S: Final = 15.0
KILL_WAIT_S: Final = 10.0


class SiteNetworkError(Exception):
    """A namespace or link could not be made; the message quotes `ip`'s answer."""


def _ip(*args: str) -> None:
    try:
        result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SiteNetworkError(f"ip {' '.join(args)}: {exc}") from exc
    if result.returncode != 0:
        raise SiteNetworkError(f"ip {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")


@dataclass
class SiteNetwork:
    """A hub and other sites as namespaces joined through a bridge in the hub (see the module docstring)."""

    prefix: str
    sites: tuple[str, ...]
    """The hub first, then the other sites."""
    addresses: dict[str, str] = field(default_factory=dict)
    _made: list[str] = field(default_factory=list, repr=False)

    @property
    def hub(self) -> str:
        return self.sites[0]

    def namespace(self, site: str) -> str:
        return f"{self.prefix}-{site}"

    def _link(self, site: str) -> tuple[str, str]:
        """The names of a site's veth ends: (in the hub, in the site). Interface names are at most 15 bytes."""
        index = self.sites.index(site)
        return f"hub{index}", f"up{index}"

    def open(self) -> None:
        """Make the namespaces, the hub's bridge and one veth pair per other site, all up."""
        for index, site in enumerate(self.sites, start=1):
            namespace = self.namespace(site)
            _ip("netns", "add", namespace)
            self._made.append(namespace)
            _ip("-n", namespace, "link", "set", "lo", "up")
            self.addresses[site] = f"{SUBNET}.{index}"
        hub = self.namespace(self.hub)
        _ip("-n", hub, "link", "add", "br0", "type", "bridge")
        _ip("-n", hub, "addr", "add", f"{self.addresses[self.hub]}/24", "dev", "br0")
        _ip("-n", hub, "link", "set", "br0", "up")
        for site in self.sites[1:]:
            namespace = self.namespace(site)
            hub_end, site_end = self._link(site)
            _ip("-n", hub, "link", "add", hub_end, "type", "veth", "peer", "name", site_end, "netns", namespace)
            _ip("-n", hub, "link", "set", hub_end, "master", "br0")
            _ip("-n", hub, "link", "set", hub_end, "up")
            _ip("-n", namespace, "addr", "add", f"{self.addresses[site]}/24", "dev", site_end)
            _ip("-n", namespace, "link", "set", site_end, "up")

    def cut(self, site: str) -> None:
        """Bring the site's link down at the hub's end: nothing passes either way."""
        _ip("-n", self.namespace(self.hub), "link", "set", self._link(site)[0], "down")

    def restore(self, site: str) -> None:
        """Bring the site's link up again."""
        _ip("-n", self.namespace(self.hub), "link", "set", self._link(site)[0], "up")

    def command(self, site: str, argv: Sequence[str]) -> list[str]:
        """`argv`, run inside the site's namespace."""
        return ["ip", "netns", "exec", self.namespace(site), *argv]

    def inside(self, site: str, function: Callable[[], T]) -> T:
        """`function()`'s result, run on a thread that joined the site's namespace first."""
        outcome: list[T] = []
        failure: list[BaseException] = []

        def run() -> None:
            try:
                self._join(site)
                outcome.append(function())
            except BaseException as exc:  # handed to the caller's thread
                failure.append(exc)

        thread = threading.Thread(target=run, name=f"site-{site}")
        thread.start()
        thread.join()
        if failure:
            raise failure[0]
        return outcome[0]

    def _join(self, site: str) -> None:
        """Move the calling thread (only it) into the site's namespace."""
        libc = ctypes.CDLL(None, use_errno=True)
        with Path(f"/run/netns/{self.namespace(site)}").open("rb") as handle:
            if libc.setns(handle.fileno(), CLONE_NEWNET) != 0:
                error = ctypes.get_errno()
                raise SiteNetworkError(f"setns into {self.namespace(site)}: {os.strerror(error)}")

    def pids(self, site: str) -> list[int]:
        """The processes running in the site's namespace."""
        result = subprocess.run(
            ["ip", "netns", "pids", self.namespace(site)],
            capture_output=True,
            text=True,
            timeout=IP_TIMEOUT_S,
            check=False,
        )
        return [int(pid) for pid in result.stdout.split()]

    def close(self) -> None:
        """Kill what still runs in the namespaces (this test's processes, e.g. the hub's `epmd`), delete them."""
        for namespace in self._made:
            site = namespace.removeprefix(f"{self.prefix}-")
            for pid in self.pids(site):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + KILL_WAIT_S
            while self.pids(site) and time.monotonic() < deadline:
                time.sleep(0.1)
        for namespace in reversed(self._made):
            with contextlib.suppress(SiteNetworkError):
                _ip("netns", "del", namespace)
        self._made.clear()


def namespaces_available() -> str | None:
    """None when this process may make network namespaces, else why not (the test says so and is skipped)."""
    if os.geteuid() != 0:
        return "the three-site test needs root for network namespaces (ip netns)"
    probe = f"rogatory-probe-{os.getpid()}"
    try:
        _ip("netns", "add", probe)
    except SiteNetworkError as exc:
        return f"cannot make a network namespace: {exc}"
    try:
        _ip("-n", probe, "link", "add", "br0", "type", "bridge")
        _ip("-n", probe, "link", "add", "va", "type", "veth", "peer", "name", "vb")
    except SiteNetworkError as exc:
        return f"cannot make a bridge or veth pair in a namespace: {exc}"
    finally:
        with contextlib.suppress(SiteNetworkError):
            _ip("netns", "del", probe)
    return None


__all__ = ["SUBNET", "SiteNetwork", "SiteNetworkError", "namespaces_available"]
