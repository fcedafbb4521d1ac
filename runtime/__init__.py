"""The I/O shell both services share: broker roles, SQLite writers, supervision, logs, HTTP pieces, the runner.

It sits between the pure core and the two services: `protocol <- runtime <-
agents, gateway <- deploy`. Nothing here knows an agency's or the gateway's
own rules; each service wires these pieces to its use cases.
"""

from __future__ import annotations

from runtime.errors import (
    BrokerUnavailable,
    ConfigurationError,
    ManagementUnavailable,
    RoutingFailed,
    ServiceError,
    ServiceUnhealthy,
    StoreUnavailable,
    TransientFailure,
)

__all__ = [
    "BrokerUnavailable",
    "ConfigurationError",
    "ManagementUnavailable",
    "RoutingFailed",
    "ServiceError",
    "ServiceUnhealthy",
    "StoreUnavailable",
    "TransientFailure",
]
