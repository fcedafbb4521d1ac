"""Errors of the gateway's own machinery, beyond those of the shared shell (`runtime.errors`).

Tree::

    ServiceError                     (runtime.errors: transient, routing, configuration, unhealthy)
     +-- GatewayError
          +-- OperationConflict      an operator's action the target's state does not allow (HTTP 409)
          +-- AccountsFileInvalid    the accounts file holds a malformed line (gateway.accounts)
"""

from __future__ import annotations

from runtime.errors import ServiceError


class GatewayError(ServiceError):
    """Root of the errors only the gateway raises."""


class OperationConflict(GatewayError):
    """An operator asked for something the target's state does not allow (a dead letter decided already)."""


__all__ = ["GatewayError", "OperationConflict"]
