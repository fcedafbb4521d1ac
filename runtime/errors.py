"""Errors of the I/O shell both services share (the protocol's refusals live in `protocol.errors`).

Tree::

    ServiceError
     +-- TransientFailure            retry later: the broker or the disk is away
     |    +-- BrokerUnavailable      a publish was not confirmed, or the connection dropped
     |    +-- StoreUnavailable       the database could not commit
     |    +-- ManagementUnavailable  the broker's management API did not answer (operator views only)
     |    +-- DirectoryExpired       the directory in force expired: wait for a newer version
     +-- RoutingFailed               the broker returned a mandatory publish: no queue bound for it
     +-- ConfigurationError          settings, keys or directory unusable at start-up
     +-- ServiceUnhealthy            a watchdog found the process wedged: it exits for its supervisor
 +-- UnreadableCertificate       a watched TLS certificate file does not parse (an operator alert)

Each service roots its own errors under this one (`agents.errors.AgentError`,
`gateway.errors.GatewayError`). A transient failure is retried while the
delivery is held unacknowledged (not handed back: every return counts toward
the queue's delivery limit); a permanent one is answered with negative
evidence.
"""

from __future__ import annotations


class ServiceError(Exception):
    """Root of the errors of a Rogatory service's own machinery."""


class TransientFailure(ServiceError):
    """Something the service depends on is away; the work must be retried."""


class BrokerUnavailable(TransientFailure):
    """The broker did not confirm a publish, or the connection is gone."""


class StoreUnavailable(TransientFailure):
    """The database could not commit."""


class ManagementUnavailable(TransientFailure):
    """The broker's management API did not answer as expected (or is not configured)."""


class DirectoryExpired(TransientFailure):
    """The directory in force has expired: nothing that needs it is done until a newer version takes effect.

    Transient on purpose: a delivery is held (not refused, not dead-lettered)
    and an HTTP request answered 503 `DIRECTORY_EXPIRED`, so nothing is
    verified under keys and revocations nobody vouches for any more, and
    nothing is lost while the authority issues the next version.
    """


class RoutingFailed(ServiceError):
    """The broker returned a mandatory publish: no queue is bound for that routing key."""


class ConfigurationError(ServiceError):
    """Settings, keys or directory are unusable; the service does not start."""


class ServiceUnhealthy(ServiceError):
    """A consumer stayed down past the watchdog's limit, or a task of the service ended: exit, be restarted."""


class UnreadableCertificate(ServiceError):
    """A file a service watches holds no PEM certificate that parses (`runtime.certificates`)."""


__all__ = [
    "BrokerUnavailable",
    "ConfigurationError",
    "DirectoryExpired",
    "ManagementUnavailable",
    "RoutingFailed",
    "ServiceError",
    "ServiceUnhealthy",
    "StoreUnavailable",
    "TransientFailure",
    "UnreadableCertificate",
]
