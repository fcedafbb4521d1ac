"""Deployment: broker provisioning, the local development network, the `rogatory` command line.

`deploy.broker` provisions a network's vhost, users, permissions and queues;
`deploy.network` and `deploy.devstack` make and run a local network of real
processes; `deploy.demo`, `deploy.auditor` and `deploy.bench` are commands
of `deploy.cli`. Services never import this package.
"""

from deploy.cli import main

__all__ = ["main"]
