"""Errors of the agent's own machinery (the protocol's refusals live in `protocol.errors`).

Tree::

    AgentError
     +-- TransientFailure          retry later: the broker or the disk is away
     |    +-- BrokerUnavailable    a publish was not confirmed, or the connection dropped
     |    +-- StoreUnavailable     the database could not commit
     +-- Conflict                  a message id or idempotency key reused for another document
     +-- ConfigurationError        settings, keys or directory unusable at start-up
     +-- ServiceUnhealthy          a watchdog found the process wedged: it exits for its supervisor
"""

from __future__ import annotations

from protocol.errors import ErrorCode


class AgentError(Exception):
    """Root of the agent's own errors."""


class TransientFailure(AgentError):
    """Something the agent depends on is away; the work must be retried."""


class BrokerUnavailable(TransientFailure):
    """The broker did not confirm a publish, or the connection is gone."""


class StoreUnavailable(TransientFailure):
    """The database could not commit."""


class Conflict(AgentError):
    """The request reuses a message id or an idempotency key for a different document."""

    def __init__(self, detail: str, code: ErrorCode) -> None:
        super().__init__(detail)
        self.detail = detail
        self.code = code


class ConfigurationError(AgentError):
    """Settings, keys or directory are unusable; the agent does not start."""


class ServiceUnhealthy(AgentError):
    """A consumer stayed down past the watchdog's limit, or a task of the service ended: exit, be restarted."""


__all__ = [
    "AgentError",
    "BrokerUnavailable",
    "ConfigurationError",
    "Conflict",
    "ServiceUnhealthy",
    "StoreUnavailable",
    "TransientFailure",
]
