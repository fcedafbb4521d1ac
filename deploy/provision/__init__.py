"""Provisioning: what a network needs of its broker before any service starts.

`deploy.provision.broker` provisions a network's vhost, exchanges, queues,
users and permissions from its directory through the management API (and
revokes, closes and deletes them); `deploy.provision.tls` makes the broker's
CA, its certificate, client certificates and its TLS configuration, and is
also a command (`python -m deploy.provision.tls`, run as root by
`deploy/ensure-rabbitmq.sh`); `deploy.provision.broker_limits` writes the
broker's own message size limit into its configuration (also run as root by
that script).

The package re-exports nothing and imports nothing: running the TLS command
as root then loads only what that command needs (no HTTP client), and the
command's module is not imported twice. Import the names from the two modules.
"""

__all__ = ["broker", "broker_limits", "tls"]
