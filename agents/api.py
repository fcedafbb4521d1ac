"""The agent's HTTP API for agency systems (docs/API.md, "Agent HTTP API").

Every answer is JSON in UTF-8 (Arabic and Bengali travel as themselves, not
as escapes); every error is `application/problem+json` (RFC 9457) with a
stable `code` and, for invalid content, `errors: [{"loc", "msg"}]`. Invalid
input is a 4xx, never a 5xx.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import structlog
from aiohttp import web

from agents.attachments import Attachments
from agents.auditing import GatewayUnreachable
from agents.bundles import BundleExporter, MessageRef
from agents.cases import CaseBook, CaseFile, CaseMessage, Direction
from agents.connectivity import Connectivity
from agents.errors import Conflict, ContentPurged
from agents.evidence_view import evidence_item, lifecycle_order
from agents.guard import (
    CLEARANCE,
    TOKEN,
    ApiGuard,
    Clearance,
    parse_token_specs,
    readable,
    refusal_code,
    required_scope,
)
from agents.lists import (
    MAX_CURSOR_POSITION,
    Listing,
    Lists,
    case_filter_value,
    flag,
    invalid,
    message_type_filter,
    page_answer,
    start_of,
)
from agents.openapi import OPENAPI
from agents.store import AgentStore, InboxFilter, InboxRecord
from agents.submission import SenderKeys, Submission, no_attachment_bodies
from agents.webhooks import Webhooks
from protocol.bundle import MEDIA_TYPE as BUNDLE_MEDIA_TYPE
from protocol.bundle import bundle_name
from protocol.directory import Directory
from protocol.encoding import format_timestamp, sha256_hex
from protocol.errors import (
    ErrorCode,
    MalformedInput,
)
from protocol.evidence import EvidenceType, issue_evidence, new_statement
from protocol.ids import AgencyId, MessageId, parse_agency_id, parse_case_id, parse_message_id
from protocol.limits import Limits
from protocol.mla import Deadline, MessageType, document_json_schema
from runtime.http import (
    Handler,
    error_middleware,
    health_handler,
    json_answer,
    metrics_handler,
    openapi_handler,
    problem,
    unauthorized,
)

log = structlog.get_logger("rogatory.agent.api")

MAX_INBOX_PAGE = 500
MAX_IDEMPOTENCY_KEY = 200


@dataclass(frozen=True, slots=True)
class ApiContext:
    """What the handlers need: passed in, never global."""

    agency: AgencyId
    sender: SenderKeys
    store: AgentStore
    directory: Callable[[], Directory]
    limits: Limits
    message_ttl: timedelta
    token_hashes: tuple[str, ...]
    clock: Callable[[], datetime]
    wake_relay: Callable[[], None]
    health: Callable[[], dict[str, Any]]
    cases: CaseBook | None = None
    """The case book shared with the receiver; the API makes one of its own if none is given."""
    metrics: Callable[[], Awaitable[tuple[bytes, str]]] | None = None
    """Prometheus exposition and its content type (`agents.metrics`), served at `/metrics` to token holders."""
    attachments: Attachments | None = None
    """Attachment bodies (`agents.attachments`); without it, every attachment travels as a description only."""
    guard: ApiGuard | None = None
    """Tokens, scopes, revocations, rate limits (`agents.guard`); by default: `token_hashes`, default rates."""
    webhooks: Webhooks | None = None
    """The `/v1/subscriptions` endpoints (`agents.webhooks`); without it, no webhooks."""
    connectivity: Connectivity | None = None
    """Connectivity tests (`agents.connectivity`); without it, `/v1/connectivity-tests` is not served."""
    bundles: BundleExporter | None = None
    """Evidence bundles (`agents.bundles`); without the gateway's audit API configured, none (503)."""


def _agent_errors(error: Exception) -> web.Response | None:
    """The agent's own refusals: an id or idempotency key reused for another document is a 409; purged content 410."""
    if isinstance(error, Conflict):
        return problem(409, error.code, "Conflict", error.detail)
    if isinstance(error, ContentPurged):
        return content_purged(error.detail, error.purged_at)
    return None


def content_purged(detail: str, purged_at: str) -> web.Response:
    """`410 CONTENT_PURGED`: retention removed the content; `content_purged_at` says when."""
    return problem(410, ErrorCode.CONTENT_PURGED, "Content purged", detail, extra={"content_purged_at": purged_at})


class AgentApi:
    """Builds the aiohttp application of one agent."""

    def __init__(self, context: ApiContext) -> None:
        self._ctx = context
        self._cases = context.cases if context.cases is not None else CaseBook(context.agency)
        self._guard = context.guard or ApiGuard(parse_token_specs(context.token_hashes), clock=time.monotonic)
        self._submission = Submission(
            sender=context.sender,
            store=context.store,
            cases=self._cases,
            directory=context.directory,
            limits=context.limits,
            message_ttl=context.message_ttl,
            clock=context.clock,
            wake_relay=context.wake_relay,
            attachment_bodies=no_attachment_bodies if context.attachments is None else context.attachments.keys_for,
        )

    def app(self) -> web.Application:
        """The application, with authentication and problem+json middlewares."""
        app = web.Application(
            middlewares=[self._record_refusals, error_middleware(_agent_errors), self._authenticate],
            client_max_size=self._ctx.limits.max_document_bytes + 1024,
        )
        router = app.router
        router.add_get("/healthz", health_handler(self._ctx.health))
        router.add_get("/openapi.json", openapi_handler(OPENAPI))
        router.add_post("/v1/messages", self.submit)
        router.add_get("/v1/messages/{message_id}", self.message_status)
        router.add_get("/v1/messages/{message_id}/evidence-bundle", self.sent_bundle)
        router.add_get("/v1/inbox", self.inbox)
        router.add_post("/v1/inbox/{message_id}/ack", self.ack)
        router.add_get("/v1/inbox/{message_id}/evidence-bundle", self.received_bundle)
        router.add_get("/v1/schema/{message_type}", self.schema)
        router.add_get("/v1/cases/{case_id:[^{}]+}/evidence-bundle", self.case_bundle)
        router.add_get("/v1/cases/{case_id:[^{}]+}", self.case)
        lists = Lists(store=self._ctx.store, cases=self._cases, clock=self._ctx.clock)
        for method, path, handler in lists.routes():
            router.add_route(method, path, handler)
        if self._ctx.connectivity is not None:
            for method, path, handler in self._ctx.connectivity.routes():
                router.add_route(method, path, handler)
        if self._ctx.metrics is not None:
            router.add_get("/metrics", metrics_handler(self._ctx.metrics))
        if self._ctx.attachments is not None:
            for method, path, handler in self._ctx.attachments.routes():
                router.add_route(method, path, handler)
        if self._ctx.webhooks is not None:
            for method, path, handler in self._ctx.webhooks.routes():
                router.add_route(method, path, handler)
        return app

    # -- middlewares -------------------------------------------------------------------

    @web.middleware
    async def _record_refusals(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Every refused request leaves one log line with its status and stable code (never the body or token)."""
        response = await handler(request)
        if response.status >= 400:
            log.warning(
                "api_request_refused",
                status=response.status,
                code=refusal_code(response),
                method=request.method[:10],
                path=request.path[:120],
            )
        return response

    @web.middleware
    async def _authenticate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        verdict = self._guard.check(
            authorization=request.headers.get("Authorization", ""),
            method=request.method,
            path=request.path,
            peer=request.remote or "-",
        )
        if verdict.status == 429:
            response = problem(429, ErrorCode.RATE_LIMITED, "Too many requests", "this client is over its rate limit")
            response.headers["Retry-After"] = str(verdict.retry_after_s)
            return response
        if verdict.status == 401:
            return unauthorized("rogatory-agent")
        if verdict.status == 403:
            scope = required_scope(request.method, request.path)
            return problem(403, ErrorCode.FORBIDDEN, "Forbidden", f"this token does not have the {scope} scope")
        request[CLEARANCE] = verdict.token.clearance if verdict.token is not None else Clearance.UNCLASSIFIED
        if verdict.token is not None:
            request[TOKEN] = verdict.token
        return await handler(request)

    # -- handlers ----------------------------------------------------------------------

    async def submit(self, request: web.Request) -> web.Response:
        """`POST /v1/messages`: validate, seal and queue one message document."""
        if request.content_type != "application/json":
            return problem(
                415,
                ErrorCode.UNSUPPORTED_MEDIA_TYPE,
                "Unsupported media type",
                f"expected application/json, found {request.content_type[:80]!r}",
            )
        idempotency_key = request.headers.get("Idempotency-Key")
        if idempotency_key is not None and not _valid_idempotency_key(idempotency_key):
            return problem(
                400,
                ErrorCode.INVALID_PARAMETER,
                "Invalid Idempotency-Key",
                f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters",
            )
        accepted = await self._submission.submit(await request.read(), idempotency_key=idempotency_key)
        return json_answer({"message_id": accepted.message_id, "status": accepted.status}, status=202)

    async def message_status(self, request: web.Request) -> web.Response:
        """`GET /v1/messages/{id}`: status and evidence chain of a sent message."""
        message_id = str(_message_id(request))
        record = await self._ctx.store.outbox(message_id)
        if record is None or not readable(
            request, await self._marking(record.document, record.content_purged_at, message_id), message_id=message_id
        ):
            return problem(404, ErrorCode.NOT_FOUND, "Unknown message", f"no sent message {message_id}")
        evidence = sorted(await self._ctx.store.evidence_for(message_id), key=lifecycle_order)
        return json_answer(
            {
                "message_id": message_id,
                "status": record.status,
                "status_reason": record.status_reason,
                "recipient": record.recipient,
                "message_type": record.message_type,
                "case_id": record.case_id,
                "message_digest": record.digest,
                "sealed_bytes": len(record.sealed),
                "created_at": record.created_at,
                "expires_at": record.expires_at,
                "evidence": [evidence_item(item) for item in evidence],
                "content_purged_at": record.content_purged_at,
            }
        )

    async def _marking(self, document: bytes, purged_at: str | None, message_id: str) -> bytes | str:
        """What `readable` judges by: the document, or for purged content the marking the trail kept."""
        if purged_at is None:
            return document
        trail = await self._ctx.store.purges(message_id=message_id)
        return trail[0].classification if trail else ""  # nothing kept: treated as SECRET (fail closed)

    async def inbox(self, request: web.Request) -> web.Response:
        """`GET /v1/inbox`: received messages after the cursor, oldest first, filtered (`agents.lists`)."""
        if "cursor" in request.query and "after" in request.query:
            raise invalid("give either 'cursor' or 'after', not both")
        after = (
            start_of(request, Listing.INBOX)
            if "cursor" in request.query
            else _int_query(request, "after", default=0, maximum=MAX_CURSOR_POSITION)
        )
        limit = _int_query(request, "limit", default=100, maximum=MAX_INBOX_PAGE, minimum=1)
        wanted = InboxFilter(
            unacknowledged=flag(request, "unacknowledged"),
            message_type=message_type_filter(request),
            case_id=case_filter_value(request),
        )
        fetched = await self._ctx.store.inbox_page(after, limit, wanted)
        last = fetched[-1].seq if fetched else after
        records = [
            record
            for record in fetched
            if readable(
                request,
                await self._marking(record.document, record.content_purged_at, record.message_id),
                message_id=record.message_id,
            )
        ]
        items = [_inbox_item(record) for record in records]
        if self._ctx.attachments is not None:
            for record, item in zip(records, items, strict=True):
                item["attachments"] = (
                    []
                    if record.content_purged_at is not None
                    else await self._ctx.attachments.describe(record.sender, record.message_id, item["document"])
                )
        page = page_answer(request, Listing.INBOX, "messages", items, last=last, full=len(fetched) == limit)
        return json_answer(page | {"next": str(last)})

    async def _received(self, request: web.Request) -> InboxRecord | web.Response:
        """The one received message the path (and `?sender=`) names and the token may read, or the refusal."""
        message_id = _message_id(request)
        sender = request.query.get("sender")
        candidates = await self._ctx.store.inbox_by_message_id(str(message_id))
        if sender is not None:
            wanted = parse_agency_id(sender)
            candidates = [record for record in candidates if record.sender == wanted]
        candidates = [
            record
            for record in candidates
            if readable(
                request,
                await self._marking(record.document, record.content_purged_at, record.message_id),
                message_id=record.message_id,
            )
        ]
        if not candidates:
            return problem(404, ErrorCode.NOT_FOUND, "Unknown message", f"no received message {message_id}")
        if len(candidates) > 1:
            return problem(
                409,
                ErrorCode.AMBIGUOUS_MESSAGE_ID,
                "Ambiguous message id",
                "several senders used this message id; add ?sender=AGENCY-ID",
            )
        return candidates[0]

    async def ack(self, request: web.Request) -> web.Response:
        """`POST /v1/inbox/{id}/ack`: the agency system took the message; issue `RETRIEVAL`."""
        message_id = _message_id(request)
        record = await self._received(request)
        if isinstance(record, web.Response):
            return record
        if record.content_purged_at is not None and record.retrieved_at is None:
            return content_purged(f"the content of message {message_id} was purged", record.content_purged_at)
        retrieved_at = await self._retrieve(record)
        return json_answer({"message_id": str(message_id), "sender": record.sender, "retrieved_at": retrieved_at})

    async def _retrieve(self, record: InboxRecord) -> str:
        now = self._ctx.clock()
        if record.retrieved_at is not None:
            return record.retrieved_at
        statement = new_statement(
            EvidenceType.RETRIEVAL,
            message_id=MessageId(uuid.UUID(record.message_id)),
            message_digest=record.digest,
            sender=AgencyId(record.sender),
            recipient=self._ctx.agency,
            message_type=record.message_type,
            case_id=record.case_id,
            issuer=self._ctx.agency,
            at=now,
        )
        signed = issue_evidence(statement, self._ctx.sender.signing_key)
        at = format_timestamp(now)
        async with self._ctx.store.transaction() as tx:
            current = await tx.inbox_entry(record.sender, record.message_id)
            if current is not None and current.retrieved_at is not None:
                return current.retrieved_at
            await tx.mark_retrieved(record.seq, at)
            await tx.enqueue_evidence(
                statement.identity, record.message_id, signed.model_dump_json().encode("utf-8"), at
            )
        self._ctx.wake_relay()
        log.info("message_retrieved", message_id=record.message_id, sender=record.sender)
        return at

    async def case(self, request: web.Request) -> web.Response:
        """`GET /v1/cases/{case_id}`: the case state, its messages both ways in order, deadlines, what is overdue."""
        case_id = parse_case_id(request.match_info["case_id"])
        try:
            async with self._ctx.store.transaction() as tx:
                found = await self._cases.case_file(tx, case_id)
        except ContentPurged:
            trail = await self._ctx.store.purges(case_id=case_id)
            if trail and all(readable(request, item.classification, message_id=item.message_id) for item in trail):
                raise
            return problem(404, ErrorCode.NOT_FOUND, "Unknown case", f"no message of case {case_id} is held here")
        # The case's state, items and deadlines are read from every message of it: a case holding a message
        # above the token's clearance is withheld whole, as if unknown, rather than shown in part.
        if found is None or not all(
            readable(request, message.document.classification, message_id=message.entry.message_id)
            for message in found.messages
        ):
            return problem(404, ErrorCode.NOT_FOUND, "Unknown case", f"no message of case {case_id} is held here")
        return json_answer(_case_answer(found, self._ctx.clock()))

    # -- evidence bundles ------------------------------------------------------------------------

    async def _bundle(self, refs: list[MessageRef], *, scope: Literal["message", "case"], subject: str) -> web.Response:
        """The bundle of `refs` as a ZIP download; 503 without the audit API, 409 while proofs are pending."""
        if self._ctx.bundles is None:
            return problem(
                503,
                ErrorCode.SERVICE_UNAVAILABLE,
                "No audit API",
                "evidence bundles need the gateway's audit API (ROGATORY_GATEWAY_URL and its token)",
            )
        try:
            raw = await self._ctx.bundles.export(refs, scope=scope, subject=subject)
        except GatewayUnreachable as exc:
            log.warning("evidence_bundle_gateway_unreachable", error=str(exc)[:300])
            response = problem(503, ErrorCode.SERVICE_UNAVAILABLE, "Gateway unreachable", "try again shortly")
            response.headers["Retry-After"] = "5"
            return response
        name = bundle_name(scope, subject, self._ctx.clock())
        return web.Response(
            body=raw,
            content_type=BUNDLE_MEDIA_TYPE,
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    async def sent_bundle(self, request: web.Request) -> web.Response:
        """`GET /v1/messages/{id}/evidence-bundle`: the evidence bundle of a sent message."""
        message_id = str(_message_id(request))
        record = await self._ctx.store.outbox(message_id)
        if record is None or not readable(request, record.document, message_id=message_id):
            return problem(404, ErrorCode.NOT_FOUND, "Unknown message", f"no sent message {message_id}")
        return await self._bundle(
            [MessageRef("sent", self._ctx.agency, message_id)], scope="message", subject=message_id
        )

    async def received_bundle(self, request: web.Request) -> web.Response:
        """`GET /v1/inbox/{id}/evidence-bundle`: the evidence bundle of a received message."""
        record = await self._received(request)
        if isinstance(record, web.Response):
            return record
        return await self._bundle(
            [MessageRef("received", record.sender, record.message_id)], scope="message", subject=record.message_id
        )

    async def case_bundle(self, request: web.Request) -> web.Response:
        """`GET /v1/cases/{case_id}/evidence-bundle`: every message of the case, both ways, in one bundle."""
        case_id = parse_case_id(request.match_info["case_id"])
        async with self._ctx.store.transaction() as tx:
            found = await self._cases.case_file(tx, case_id)
        if found is None or not all(
            readable(request, message.document.classification, message_id=message.entry.message_id)
            for message in found.messages
        ):
            return problem(404, ErrorCode.NOT_FOUND, "Unknown case", f"no message of case {case_id} is held here")
        refs = [
            MessageRef(message.entry.direction, message.entry.sender, message.entry.message_id)
            for message in found.messages
        ]
        return await self._bundle(refs, scope="case", subject=case_id)

    async def schema(self, request: web.Request) -> web.Response:
        """`GET /v1/schema/{message_type}`: the JSON Schema of one message type."""
        name = request.match_info["message_type"]
        try:
            message_type = MessageType(name)
        except ValueError:
            return problem(404, ErrorCode.NOT_FOUND, "Unknown message type", f"no message type {name[:80]!r}")
        return json_answer(document_json_schema(message_type))


def _valid_idempotency_key(key: str) -> bool:
    return 0 < len(key) <= MAX_IDEMPOTENCY_KEY and key.isascii() and key.isprintable()


def _message_id(request: web.Request) -> MessageId:
    return parse_message_id(request.match_info["message_id"])


def _int_query(request: web.Request, name: str, *, default: int, maximum: int, minimum: int = 0) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19:
        raise MalformedInput(
            f"query parameter {name!r} must be a non-negative integer", code=ErrorCode.INVALID_PARAMETER
        )
    value = int(raw)
    if not minimum <= value <= maximum:
        raise MalformedInput(
            f"query parameter {name!r} must be between {minimum} and {maximum}", code=ErrorCode.INVALID_PARAMETER
        )
    return value


def _case_answer(case: CaseFile, now: datetime) -> dict[str, Any]:
    view = case.view
    return {
        "case_id": case.case_id,
        "state": case.state,
        "role": case.role,
        "requesting": None if view is None else view.requesting,
        "requested": None if view is None else view.requested,
        "items": {} if view is None else dict(view.items),
        "may_send": sorted(case.may_send()),
        "messages": [_case_message(message) for message in case.messages],
        "deadlines": [] if view is None else [_deadline(deadline, now) for deadline in view.deadlines],
        "overdue": [] if view is None else [_deadline(deadline, now) for deadline in view.overdue(now)],
        "as_of": format_timestamp(now),
    }


def _case_message(message: CaseMessage) -> dict[str, Any]:
    document, entry = message.document, message.entry
    item: dict[str, Any] = {
        "message_id": entry.message_id,
        "direction": message.direction,
        "message_type": entry.message_type,
        "sender": entry.sender,
        "recipient": entry.recipient,
        "sequence": document.sequence,
        "created_at": None if document.created_at is None else format_timestamp(document.created_at),
        "in_reply_to": None if document.in_reply_to is None else str(document.in_reply_to),
        "applied": message.not_applied is None,
    }
    if message.not_applied is not None:
        item["not_applied"] = message.not_applied
    if message.direction is Direction.SENT:
        item |= {"status": entry.status, "status_reason": entry.status_reason}
    else:
        item |= {"received_at": entry.received_at, "retrieved_at": entry.retrieved_at}
    return item


def _deadline(deadline: Deadline, now: datetime) -> dict[str, Any]:
    return {
        "kind": deadline.kind,
        "due": deadline.due.isoformat(),
        "owed_by": deadline.owed_by,
        "set_by": None if deadline.set_by is None else str(deadline.set_by),
        "item_id": deadline.item_id,
        "overdue": deadline.is_overdue(now),
    }


def _inbox_item(record: InboxRecord) -> dict[str, Any]:
    if record.content_purged_at is not None:
        return {
            "message_id": record.message_id,
            "sender": record.sender,
            "message_type": record.message_type,
            "case_id": record.case_id,
            "in_reply_to": record.in_reply_to,
            "received_at": record.received_at,
            "retrieved_at": record.retrieved_at,
            "message_digest": record.digest,
            "document_sha256": None,
            "document": None,
            "content_purged_at": record.content_purged_at,
        }
    return {
        "message_id": record.message_id,
        "sender": record.sender,
        "message_type": record.message_type,
        "case_id": record.case_id,
        "in_reply_to": record.in_reply_to,
        "received_at": record.received_at,
        "retrieved_at": record.retrieved_at,
        "message_digest": record.digest,
        "document_sha256": sha256_hex(record.document),
        "document": json.loads(record.document),
        "content_purged_at": None,
    }


__all__ = ["AgentApi", "ApiContext"]
