"""Deployment: broker provisioning, the local development network, the `rogatory` command line, the benchmarks.

One subpackage by job:

- `deploy.provision`: the broker's vhost, users, permissions and queues from
  the directory, and its TLS (CA, certificates, configuration);
- `deploy.localnet`: a local network of real processes (`rogatory dev up`);
- `deploy.client`: what an agency's system does with a running network (the
  agent API, attachment transfers, the sample documents);
- `deploy.cli`: the `rogatory` command line, the demo and the auditor's commands;
- `deploy.bench`: `rogatory bench` and `rogatory bench-attachments`.

Services never import this package.
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
