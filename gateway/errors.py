"""Errors of the gateway's own machinery (the protocol's refusals live in `protocol.errors`).

Tree::

    GatewayError
     +-- TransientFailure          retry later: the broker or the disk is away
     |    +-- BrokerUnavailable    a publish was not confirmed, or the connection dropped
     |    +-- StoreUnavailable     the database could not commit
     |    +-- ManagementUnavailable  the broker's management API did not answer (operator views only)
     +-- RoutingFailed             the broker returned a mandatory publish: no such inbox
     +-- ConfigurationError        settings, keys or directory unusable at start-up
     +-- ServiceUnhealthy          a watchdog found the process wedged: it exits for its supervisor
     +-- OperationConflict         an operator's action the target's state does not allow (HTTP 409)
     +-- UnreadableCertificate     a watched TLS certificate file does not parse (an operator alert)

A transient failure is retried while the ingress delivery is held
unacknowledged (not handed back: every return counts toward the queue's
delivery limit); a permanent one is answered with negative evidence.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Root of the gateway's own errors."""


class TransientFailure(GatewayError):
    """Something the gateway depends on is away; the work must be retried."""


class BrokerUnavailable(TransientFailure):
    """The broker did not confirm a publish, or the connection is gone."""


class StoreUnavailable(TransientFailure):
    """The database could not commit."""


class ManagementUnavailable(TransientFailure):
    """The broker's management API did not answer as expected (or is not configured)."""


class RoutingFailed(GatewayError):
    """The broker returned a mandatory publish: no queue is bound for that routing key."""


class ConfigurationError(GatewayError):
    """Settings, keys or directory are unusable; the gateway does not start."""


class ServiceUnhealthy(GatewayError):
    """A consumer stayed down past the watchdog's limit, or a task of the service ended: exit, be restarted."""


class OperationConflict(GatewayError):
    """An operator asked for something the target's state does not allow (a dead letter decided already)."""


class UnreadableCertificate(GatewayError):
    """A file the console watches holds no PEM certificate that parses."""


__all__ = [
    "BrokerUnavailable",
    "ConfigurationError",
    "GatewayError",
    "ManagementUnavailable",
    "OperationConflict",
    "RoutingFailed",
    "ServiceUnhealthy",
    "StoreUnavailable",
    "TransientFailure",
    "UnreadableCertificate",
]
