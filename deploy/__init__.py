"""Deployment: broker provisioning, the local development network, the `rogatory` command line.

`deploy.provision.broker` provisions a network's vhost, users, permissions and queues;
`deploy.localnet.network` and `deploy.localnet.devstack` make and run a local network of real
processes; `deploy.demo`, `deploy.auditor` and `deploy.bench` are commands
of `deploy.cli`. Services never import this package.
"""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """The `rogatory` command line (`deploy.cli.main`), imported only when called.

    Importing the package loads nothing else, so `python -m deploy.provision.tls` (run
    as root by `deploy/ensure-rabbitmq.sh`) loads only what it needs.
    """
    from deploy.cli import main as run_cli  # noqa: PLC0415 - deferred on purpose, see above

    return run_cli(argv)


__all__ = ["main"]
