"""Errors of the gateway's own machinery (the protocol's refusals live in `protocol.errors`).

Tree::

    GatewayError
     +-- TransientFailure          retry later: the broker or the disk is away
     |    +-- BrokerUnavailable    a publish was not confirmed, or the connection dropped
     |    +-- StoreUnavailable     the database could not commit
     +-- RoutingFailed             the broker returned a mandatory publish: no such inbox
     +-- ConfigurationError        settings, keys or directory unusable at start-up

A transient failure leaves the ingress delivery unacknowledged so that it
comes back; a permanent one is answered with negative evidence.
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


class RoutingFailed(GatewayError):
    """The broker returned a mandatory publish: no queue is bound for that routing key."""


class ConfigurationError(GatewayError):
    """Settings, keys or directory are unusable; the gateway does not start."""


__all__ = [
    "BrokerUnavailable",
    "ConfigurationError",
    "GatewayError",
    "RoutingFailed",
    "StoreUnavailable",
    "TransientFailure",
]
