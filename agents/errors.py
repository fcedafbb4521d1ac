"""Errors of the agent's own machinery, beyond those of the shared shell (`runtime.errors`).

Tree::

    ServiceError                   (runtime.errors: transient, configuration, unhealthy)
     +-- AgentError
          +-- Conflict             a message id or idempotency key reused for another document
          +-- ContentPurged        retention removed the content asked for (HTTP 410 `CONTENT_PURGED`)
"""

from __future__ import annotations

from protocol.errors import ErrorCode
from runtime.errors import ServiceError


class AgentError(ServiceError):
    """Root of the errors only the agent raises."""


class Conflict(AgentError):
    """The request reuses a message id or an idempotency key for a different document."""

    def __init__(self, detail: str, code: ErrorCode) -> None:
        super().__init__(detail)
        self.detail = detail
        self.code = code


class ContentPurged(AgentError):
    """Retention purged the content asked for (`agents.retention`): its metadata and evidence remain."""

    code = ErrorCode.CONTENT_PURGED

    def __init__(self, detail: str, *, purged_at: str) -> None:
        super().__init__(detail)
        self.detail = detail
        self.purged_at = purged_at


__all__ = ["AgentError", "Conflict", "ContentPurged"]
