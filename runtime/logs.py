"""structlog for a Rogatory service, configured once at start-up.

JSON lines by default (one object per event, stable snake_case event names);
a readable rendering for a terminal (`ROGATORY_LOG_FORMAT=console`, in
colour when stderr is a terminal). Context such as `message_id` is bound
with contextvars at the edges. Logs are diagnostics, never the audit log:
no keys, no tokens, no content.

Each delivery (the gateway's ingress, an agent's inbox) ends in one canonical line, `message_processed`
(`log_message`), which always carries `message_id`, `case_id`, `sender` and
`recipient` (null where the input did not let them be known), with the
outcome, the error code and the time taken: the line to search for when
following one message through the logs.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Final, Literal

import structlog

CANONICAL_EVENT: Final = "message_processed"
CANONICAL_FIELDS: Final = ("message_id", "case_id", "sender", "recipient")


def configure_logging(log_format: Literal["json", "console"], *, service: str) -> None:
    """Configure structlog and the standard library's logging to write to stderr."""
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
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


def log_message(
    logger: Any,  # noqa: ANN401 - a structlog bound logger
    *,
    message_id: str | None,
    case_id: str | None,
    sender: str | None,
    recipient: str | None,
    **outcome: object,
) -> None:
    """The one canonical line of a message's pass through this service."""
    logger.info(CANONICAL_EVENT, message_id=message_id, case_id=case_id, sender=sender, recipient=recipient, **outcome)


__all__ = ["CANONICAL_EVENT", "CANONICAL_FIELDS", "configure_logging", "log_message"]
