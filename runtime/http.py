"""The HTTP pieces both services' APIs share: JSON and problem+json answers, the error middleware, common routes.

Every refusal is an RFC 9457 `application/problem+json` answer with a stable
`code` (`protocol.errors.ErrorCode`), whichever service gives it:
`problem_for` maps each kind of protocol refusal to its status once, and
`error_middleware` turns what a handler raised into that answer (a transient
failure is a 503 with `Retry-After`, never a 500; an expired directory is a 503
with its own code, `DIRECTORY_EXPIRED`). `/healthz` answers 200
while the service is `ok` and 503 otherwise; `/openapi.json` serves the API's
own document; `/metrics` serves a Prometheus exposition read at scrape time.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

import structlog
from aiohttp import web

from protocol.errors import (
    ContentInvalid,
    ErrorCode,
    IllegalTransition,
    KeyRejected,
    LimitExceeded,
    MalformedInput,
    PolicyDenied,
    ProtocolError,
)
from runtime.errors import DirectoryExpired, TransientFailure

log = structlog.get_logger("rogatory.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Health = Callable[[], Mapping[str, Any]]
"""A service's health as `/healthz` answers it: `status` is `ok` or `degraded`, then what it looked at."""
Exposition = Callable[[], Awaitable[tuple[bytes, str]]]
"""Prometheus exposition read now, and its content type."""
ServiceErrors = Callable[[Exception], web.StreamResponse | None]
"""A service's own errors as answers (None: not one of its own, let it propagate)."""

PROBLEM_CONTENT_TYPE: Final = "application/problem+json"

_dumps = functools.partial(json.dumps, ensure_ascii=False, separators=(",", ":"))


def json_answer(body: object, status: int = 200) -> web.Response:
    """A JSON answer in UTF-8 (Arabic and Bengali text as it is, not escaped)."""
    return web.json_response(body, status=status, dumps=_dumps)


def problem(
    status: int,
    code: str,
    title: str,
    detail: str,
    errors: list[dict[str, Any]] | None = None,
    *,
    extra: dict[str, Any] | None = None,
) -> web.Response:
    """An RFC 9457 problem answer with a stable `code` (the field errors of an invalid document, `extra` members)."""
    body: dict[str, Any] = {
        "type": f"urn:rogatory:error:{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    if errors is not None:
        body["errors"] = errors
    body |= extra or {}
    return web.json_response(body, status=status, content_type=PROBLEM_CONTENT_TYPE, dumps=_dumps)


def problem_for(error: ProtocolError) -> web.Response:  # noqa: PLR0911 - one answer per kind of refusal
    """The HTTP answer to a protocol refusal."""
    if isinstance(error, ContentInvalid):
        return problem(
            422,
            error.code,
            "Invalid message document",
            error.detail,
            [{"loc": list(e.loc), "msg": e.msg} for e in error.errors],
        )
    if isinstance(error, LimitExceeded) and error.code == ErrorCode.TOO_LARGE:
        return problem(413, error.code, "Too large", error.detail)
    if isinstance(error, PolicyDenied):
        if error.code == ErrorCode.UNKNOWN_AGENCY:
            return problem(422, error.code, "Unknown agency", error.detail)
        return problem(403, error.code, "Not allowed", error.detail)
    if isinstance(error, KeyRejected):
        return problem(422, error.code, "No usable key", error.detail)
    if isinstance(error, IllegalTransition):
        return problem(409, error.code, "Not allowed in the case as it stands", error.detail)
    if isinstance(error, MalformedInput):
        return problem(400, error.code, "Malformed request", error.detail)
    return problem(400, error.code, "Refused", error.detail)


def unavailable() -> web.Response:
    """503 with `Retry-After`: something the service depends on is away for a moment."""
    response = problem(503, ErrorCode.SERVICE_UNAVAILABLE, "Unavailable", "try again shortly")
    response.headers["Retry-After"] = "1"
    return response


def directory_expired(detail: str) -> web.Response:
    """503 `DIRECTORY_EXPIRED`: the directory in force expired; nothing that needs it is done until a newer one."""
    response = problem(503, ErrorCode.DIRECTORY_EXPIRED, "Directory expired", detail)
    response.headers["Retry-After"] = "60"
    return response


def unauthorized(realm: str) -> web.Response:
    """401 with the bearer challenge of `realm`."""
    response = problem(401, ErrorCode.UNAUTHORIZED, "Unauthorized", "a valid bearer token is required")
    response.headers["WWW-Authenticate"] = f'Bearer realm="{realm}"'
    return response


def _no_service_errors(_error: Exception) -> web.StreamResponse | None:
    return None


def error_middleware(service_errors: ServiceErrors = _no_service_errors) -> Any:  # noqa: ANN401 - aiohttp's middleware type
    """Turns what a handler raised into its problem answer: routing, size, protocol refusals, transient failures."""

    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:  # noqa: PLR0911 - one answer per kind of failure
        try:
            return await handler(request)
        except web.HTTPNotFound:
            return problem(404, ErrorCode.NOT_FOUND, "Not found", f"no resource at {request.path[:200]}")
        except web.HTTPMethodNotAllowed:
            return problem(
                405, ErrorCode.METHOD_NOT_ALLOWED, "Method not allowed", f"{request.method[:20]} is not allowed here"
            )
        except web.HTTPRequestEntityTooLarge:
            return problem(413, ErrorCode.TOO_LARGE, "Too large", "the request body is over the limit")
        except ProtocolError as exc:
            return problem_for(exc)
        except DirectoryExpired as exc:
            log.warning("api_directory_expired", error=str(exc)[:300])
            return directory_expired(str(exc))
        except TransientFailure as exc:
            log.warning("api_transient_failure", error=str(exc)[:300])
            return unavailable()
        except Exception as exc:
            answer = service_errors(exc)
            if answer is None:
                raise
            return answer

    return errors


HEALTHY_STATUSES: Final = frozenset({"ok", "recovering"})
"""`recovering`: a gateway whose log is held after a lost disk; its witnesses must reach it to bring the log back."""


def health_handler(health: Health) -> Handler:
    """`GET /healthz`: the service's health, 200 while `ok` (or `recovering`: up, and must stay reachable), else 503."""

    async def healthz(_request: web.Request) -> web.Response:
        """Liveness and readiness."""
        answer = dict(health())
        return json_answer(answer, status=200 if answer.get("status") in HEALTHY_STATUSES else 503)

    return healthz


def openapi_handler(document: Mapping[str, Any]) -> Handler:
    """`GET /openapi.json`: the API's own OpenAPI document."""

    async def openapi(_request: web.Request) -> web.Response:
        """The OpenAPI document of this API."""
        return json_answer(document)

    return openapi


def metrics_handler(exposition: Exposition) -> Handler:
    """`GET /metrics`: Prometheus exposition, with the state read at scrape time."""

    async def metrics(_request: web.Request) -> web.Response:
        """Prometheus exposition of this service's metrics."""
        body, content_type = await exposition()
        response = web.Response(body=body)
        response.headers["Content-Type"] = content_type
        return response

    return metrics


__all__ = [
    "PROBLEM_CONTENT_TYPE",
    "Exposition",
    "Handler",
    "Health",
    "ServiceErrors",
    "directory_expired",
    "error_middleware",
    "health_handler",
    "json_answer",
    "metrics_handler",
    "openapi_handler",
    "problem",
    "problem_for",
    "unauthorized",
    "unavailable",
]
