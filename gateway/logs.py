"""structlog for the gateway, configured once at start-up.

JSON lines by default (one object per event, stable snake_case event names);
a readable rendering for a terminal. Context such as `message_id` is bound
with contextvars at the edges. Logs are diagnostics, never the audit log:
no keys, no tokens, no content.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog


def configure_logging(log_format: Literal["json", "console"], *, service: str) -> None:
    """Configure structlog and the standard library's logging to write to stderr."""
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if log_format == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")


__all__ = ["configure_logging"]
