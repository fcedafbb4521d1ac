"""The gateway's HTTP API: audit log, proofs, health (docs/API.md, "Gateway HTTP API").

Roles by bearer token (compared by SHA-256, in constant time), each token an
account with a name (`gateway.accounts`):

* operator  — everything, including operations endpoints;
* auditor   — read-only: audit entries, checkpoints, proofs;
* reader    — agents: checkpoints and proofs only;
* metrics   — a Prometheus scraper: `/metrics` only (which operators and auditors may read too).

The authentication middleware leaves the account on the request
(`ACCOUNT`), for the handlers that name who acts (whoami, the operator's
decisions).

The gateway holds no content, so no role can see any. Errors are
`application/problem+json` with a stable `code`.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Final, Protocol, TypeGuard

from aiohttp import web

from gateway.accounts import Account, Role, TokenTable
from gateway.auditlog import AuditLog
from gateway.openapi import OPENAPI
from gateway.recovery import LogRecovery, OfferedLeaf
from gateway.store import CheckpointRecord, GatewayStore, LeafRecord
from protocol.audit_verify import LogEntry, verify_audit_log
from protocol.auditlog import decode_leaf
from protocol.directory import Directory
from protocol.encoding import b64decode, b64encode, format_timestamp, parse_json_strict, parse_timestamp
from protocol.errors import ErrorCode, MalformedInput, ProofInvalid
from protocol.ids import parse_agency_id, parse_message_id
from protocol.keys import SigningPublicKey
from runtime.http import Handler, error_middleware, health_handler, openapi_handler, problem, unauthorized

MAX_PAGE = 1000


ACCOUNT: Final = web.RequestKey("account", Account)
"""The account that authenticated the request (set by the middleware on every route that needs a token)."""


MAX_REQUEST_BYTES: Final = 256 * 1024
"""The largest request body: a proofs request of `MAX_PROOFS_PER_REQUEST` identities of the longest length fits."""
MAX_PROOFS_PER_REQUEST: Final = 500
MAX_IDENTITY_CHARS: Final = 300

ANYONE_WITH_A_TOKEN = frozenset({Role.OPERATOR, Role.AUDITOR, Role.READER})
AUDITORS = frozenset({Role.OPERATOR, Role.AUDITOR})
OPERATORS = frozenset({Role.OPERATOR})


class OperatorRoutes(Protocol):
    """Endpoints only the operator may use (`gateway.deadletters.OperationsApi`)."""

    def routes(self) -> list[tuple[str, str, Handler]]:
        """(method, path, handler) of each endpoint."""


class GatewayApi:
    """Builds the aiohttp application over the store and the log."""

    def __init__(
        self,
        *,
        store: GatewayStore,
        audit: AuditLog,
        recovery: LogRecovery | None = None,
        tokens: TokenTable,
        health: Callable[[], dict[str, Any]],
        directory: Callable[[], Directory],
        clock: Callable[[], datetime],
        authority: SigningPublicKey,
        operations: OperatorRoutes | None = None,
        extra_routes: Sequence[tuple[str, str, Handler, frozenset[Role] | None]] = (),
    ) -> None:
        self._operations = operations
        self._extra_routes = tuple(extra_routes)  # the consoles and /metrics (gateway.console_api)
        self._authority = authority
        self._store = store
        self._audit = audit
        self._recovery = recovery
        self._tokens = tokens
        self._health = health
        self._directory = directory
        self._clock = clock
        self._roles: dict[tuple[str, str], frozenset[Role]] = {}

    def app(self) -> web.Application:
        """The application, with authentication and problem+json middlewares."""
        app = web.Application(middlewares=[error_middleware(), self._authenticate], client_max_size=MAX_REQUEST_BYTES)
        routes: list[tuple[str, str, Handler, frozenset[Role] | None]] = [
            ("GET", "/healthz", health_handler(self._health), None),
            ("GET", "/openapi.json", openapi_handler(OPENAPI), None),
            ("GET", "/v1/audit/checkpoint", self.checkpoint, ANYONE_WITH_A_TOKEN),
            ("GET", "/v1/audit/checkpoints", self.checkpoints, AUDITORS),
            ("POST", "/v1/audit/cosignatures", self.cosign, ANYONE_WITH_A_TOKEN),
            ("GET", "/v1/audit/entries", self.entries, AUDITORS),
            ("GET", "/v1/audit/proof/inclusion", self.inclusion_proof, ANYONE_WITH_A_TOKEN),
            ("POST", "/v1/audit/proofs", self.inclusion_proofs, ANYONE_WITH_A_TOKEN),
            ("GET", "/v1/audit/proof/consistency", self.consistency_proof, ANYONE_WITH_A_TOKEN),
            ("GET", "/v1/audit/verification", self.verification, AUDITORS),
            ("POST", "/v1/audit/witnessed", self.present_witnessed, ANYONE_WITH_A_TOKEN),
            ("POST", "/v1/audit/recovery/leaves", self.offer_recovery_leaves, ANYONE_WITH_A_TOKEN),
            ("GET", "/v1/audit/recovery", self.log_recovery, AUDITORS),
        ]
        if self._operations is not None:
            routes += [(method, path, handler, OPERATORS) for method, path, handler in self._operations.routes()]
        routes += self._extra_routes
        for method, path, handler, roles in routes:
            app.router.add_route(method, path, handler)
            if roles is not None:
                self._roles[method, path] = roles
        return app

    # -- middlewares -------------------------------------------------------------------

    @web.middleware
    async def _authenticate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        roles = self._roles.get((request.method, resource.canonical)) if resource is not None else None
        if roles is None:
            return await handler(request)
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        account = self._tokens.account_of(token.strip()) if scheme.lower() == "bearer" and token.strip() else None
        if account is None:
            return unauthorized("rogatory-gateway")
        if account.role not in roles:
            return problem(403, ErrorCode.FORBIDDEN, "Forbidden", f"the {account.role} role may not use this endpoint")
        request[ACCOUNT] = account
        return await handler(request)

    # -- handlers ----------------------------------------------------------------------

    async def checkpoint(self, _request: web.Request) -> web.Response:
        """The latest signed checkpoint with its cosignatures (published once two witnesses cosigned).

        None while the log is held (`gateway.recovery`): the latest one kept is older than what witnesses hold.
        """
        if self._recovery is not None and self._recovery.recovering:
            return _recovering(self._recovery)
        latest = await self._store.latest_checkpoint()
        if latest is None:
            return problem(404, ErrorCode.NOT_FOUND, "No checkpoint", "no checkpoint has been signed yet")
        if self._recovery is not None and self._recovery.below_witnessed(latest.tree_size):
            return _recovering(self._recovery)  # the one kept from before the loss, until the next is signed
        return web.json_response(_checkpoint_body(latest))

    async def checkpoints(self, request: web.Request) -> web.Response:
        """Every checkpoint in signing order, with cosignatures (for exports)."""
        after = _int_param(request.query, "after", default=0, minimum=0)
        limit = _int_param(request.query, "limit", default=MAX_PAGE, minimum=1, maximum=MAX_PAGE)
        records = await self._store.checkpoints(after_id=after, limit=limit)
        return web.json_response(
            {
                "checkpoints": [_checkpoint_body(record) for record in records],
                "next_after": records[-1].checkpoint_id if len(records) == limit else None,
            }
        )

    async def cosign(self, request: web.Request) -> web.Response:
        """A witness sends its cosignature line for one checkpoint; it is verified, then kept."""
        body = await _json_object(request)
        checkpoint_id = body.get("checkpoint_id")
        line = body.get("cosignature")
        if not _is_int(checkpoint_id) or not isinstance(line, str):
            raise MalformedInput(
                'expected {"checkpoint_id": int, "cosignature": line}', code=ErrorCode.INVALID_PARAMETER
            )
        try:
            added = await self._audit.add_cosignature(checkpoint_id, line, self._directory(), now=self._clock())
        except ProofInvalid as exc:
            return problem(422, exc.code, "Cosignature refused", exc.detail)
        record = await self._store.checkpoint(checkpoint_id)
        assert record is not None  # add_cosignature found it
        return web.json_response(_checkpoint_body(record), status=201 if added else 200)

    async def present_witnessed(self, request: web.Request) -> web.Response:
        """A witness presents its latest witnessed checkpoint, cosigned afresh: the log checks itself against it."""
        body = await _json_object(request)
        note, line = body.get("checkpoint"), body.get("cosignature")
        if not isinstance(note, str) or not isinstance(line, str):
            raise MalformedInput('expected {"checkpoint": note, "cosignature": line}', code=ErrorCode.INVALID_PARAMETER)
        if self._recovery is None:
            return web.json_response({"recovering": False, "tree_size": self._audit.size})
        try:
            status = await self._recovery.present(note, line)
        except ProofInvalid as exc:
            return problem(422, exc.code, "Checkpoint refused", exc.detail)
        return web.json_response(status)

    async def offer_recovery_leaves(self, request: web.Request) -> web.Response:
        """A witness gives back leaves it holds (`{"leaves": [{"index": int | null, "leaf": base64}]}`) while held."""
        body = await _json_object(request)
        listed = body.get("leaves")
        if not isinstance(listed, list) or len(listed) > MAX_RECOVERY_LEAVES:
            raise MalformedInput(
                f'expected {{"leaves": [...]}} of at most {MAX_RECOVERY_LEAVES}', code=ErrorCode.INVALID_PARAMETER
            )
        offered = []
        for item in listed:
            index = item.get("index") if isinstance(item, dict) else None
            data = item.get("leaf") if isinstance(item, dict) else None
            if not isinstance(data, str) or not (index is None or (_is_int(index) and index >= 0)):
                raise MalformedInput("each leaf is {index, leaf}", code=ErrorCode.INVALID_PARAMETER)
            offered.append(OfferedLeaf(index, b64decode(data)))
        if self._recovery is None:
            return web.json_response({"recovering": False, "tree_size": self._audit.size})
        return web.json_response(await self._recovery.offer(offered))

    async def log_recovery(self, _request: web.Request) -> web.Response:
        """Where the recovery of the log stands, and the messages the log names that the gateway lost."""
        if self._recovery is None:
            return web.json_response({"recovering": False, "tree_size": self._audit.size, "unrecorded_messages": []})
        unrecorded = await self._recovery.unrecorded_messages()
        return web.json_response(self._recovery.status() | {"unrecorded_messages": unrecorded})

    async def entries(self, request: web.Request) -> web.Response:
        """Log entries with their indexes, oldest first, filtered."""
        query = request.query
        start = _int_param(query, "start", default=0, minimum=0)
        limit = _int_param(query, "limit", default=100, minimum=1, maximum=MAX_PAGE)
        message_id = str(parse_message_id(query["message_id"])) if "message_id" in query else None
        agency = parse_agency_id(query["agency"]) if "agency" in query else None
        since = _since(query["since"]) if "since" in query else None
        records = await self._store.leaves(start=start, limit=limit, message_id=message_id, agency=agency, since=since)
        next_start = records[-1].index + 1 if len(records) == limit else None
        return web.json_response(
            {
                "entries": [_entry(record) for record in records],
                "next_start": next_start,
                "tree_size": await self._audit.current_size(),
            }
        )

    async def inclusion_proof(self, request: web.Request) -> web.Response:
        """An inclusion proof of leaf `index` (or the leaf with `identity`) in the tree of `size`."""
        size = _int_param(request.query, "size", minimum=1, maximum=await self._audit.current_size())
        identity = request.query.get("identity")
        if identity is not None:
            record = await self._store.leaf_by_identity(identity[:300])
            if record is None or record.index >= size:
                return problem(404, ErrorCode.NOT_FOUND, "No such entry", "no leaf with this identity in that tree")
            index = record.index
        else:
            index = _int_param(request.query, "index", minimum=0, maximum=size - 1)
        return web.json_response(await self._proof_body(index, size))

    async def inclusion_proofs(self, request: web.Request) -> web.Response:
        """Inclusion proofs of several leaves, named by identity, in the tree of `size` (at most 500)."""
        body = await _json_object(request)
        size = body.get("size")
        listed = body.get("identities")
        if not _is_int(size) or not isinstance(listed, list):
            raise MalformedInput('expected {"size": int, "identities": [...]}', code=ErrorCode.INVALID_PARAMETER)
        identities = [str(identity)[:MAX_IDENTITY_CHARS] for identity in listed][:MAX_PROOFS_PER_REQUEST]
        if not 1 <= size <= await self._audit.current_size():
            raise MalformedInput(f"size must be between 1 and {self._audit.size}", code=ErrorCode.INVALID_PARAMETER)
        logged = await self._store.leaves_by_identity(identities)  # one query, then one read of the tree's nodes
        found = [(i, logged[i]) for i in identities if i in logged and logged[i].index < size]
        paths = await self._audit.inclusion_proofs({record.index for _, record in found}, size)
        proofs: dict[str, Any] = {}
        for identity, record in found:
            digest, path = paths[record.index]
            proofs[identity] = _proof(record.index, size, digest, path)
            if record.kind in LEAVES_SHOWN_BY_IDENTITY:
                proofs[identity]["leaf"] = b64encode(record.leaf)
        checkpoint = await self._store.checkpoint_at(size)
        return web.json_response(
            {
                "tree_size": size,
                "checkpoint": None if checkpoint is None else _checkpoint_body(checkpoint),
                "proofs": proofs,
            }
        )

    async def _proof_body(self, index: int, size: int) -> dict[str, Any]:
        digest, path = await self._audit.inclusion_proof(index, size)
        body = _proof(index, size, digest, path)
        checkpoint = await self._store.checkpoint_at(size)
        body["checkpoint"] = None if checkpoint is None else _checkpoint_body(checkpoint)
        return body

    async def verification(self, _request: web.Request) -> web.Response:
        """The auditor's checks (`protocol.audit_verify`) run over this gateway's own log, now."""
        checkpoints: list[CheckpointRecord] = []
        while True:
            page = await self._store.checkpoints(after_id=checkpoints[-1].checkpoint_id if checkpoints else 0)
            if not page:
                break
            checkpoints += page
        size = checkpoints[-1].tree_size if checkpoints else 0
        entries: list[LogEntry] = []
        while len(entries) < size:
            page_leaves = await self._store.leaves(start=len(entries), limit=MAX_PAGE)
            if not page_leaves:
                break
            entries += [LogEntry(record.leaf, record.receipt) for record in page_leaves]
        notes = [record.note + "".join(record.cosignatures) for record in checkpoints]
        report = verify_audit_log(entries[:size], notes, authority=self._authority)
        problem = report.problem
        return web.json_response(
            {
                "consistent": report.consistent,
                "entries": report.leaves,
                "directories": report.directories,
                "evidence": report.evidence,
                "messages": report.messages,
                "checkpoints": report.checkpoints,
                "cosignatures": report.cosignatures,
                "checkpoint_size": None if report.latest is None else report.latest.size,
                "published_size": report.published_size,
                "problem": None
                if problem is None
                else {
                    "kind": problem.kind,
                    "detail": problem.detail,
                    "index": problem.index,
                    "identity": problem.identity,
                    "checkpoint": problem.checkpoint,
                },
            }
        )

    async def consistency_proof(self, request: web.Request) -> web.Response:
        """A consistency proof between tree sizes `from` and `to`."""
        new_size = _int_param(request.query, "to", minimum=0, maximum=await self._audit.current_size())
        old_size = _int_param(request.query, "from", minimum=0, maximum=new_size)
        proof = await self._audit.consistency_proof(old_size, new_size)
        return web.json_response({"from": old_size, "to": new_size, "proof": [b64encode(node) for node in proof]})


def _proof(index: int, size: int, digest: bytes, path: list[bytes]) -> dict[str, Any]:
    """An inclusion proof as the API gives it."""
    return {
        "index": index,
        "tree_size": size,
        "leaf_hash": b64encode(digest),
        "proof": [b64encode(node) for node in path],
    }


def _entry(record: LeafRecord) -> dict[str, Any]:
    return {
        "index": record.index,
        "identity": record.identity,
        "kind": record.kind,
        "message_id": record.message_id,
        "appended_at": record.appended_at,
        "leaf": b64encode(record.leaf),
        "leaf_hash": b64encode(record.leaf_hash),
        "receipt": b64encode(record.receipt),
        "content": decode_leaf(record.leaf).model_dump(mode="json"),
    }


LEAVES_SHOWN_BY_IDENTITY: Final = frozenset({"evidence", "directory"})
"""Kinds of leaf whose bytes a proofs answer carries, to any token holder that names them by identity.

An evidence leaf's identity holds the SHA-256 of the message header it is about: only who holds the
header (its sender, its recipients, an auditor) can name it, and the leaf tells them nothing the header
does not, but who did what when. Directory versions are public. So an agency can put the gateway's
evidence about a message it received, and the directory versions, in an evidence bundle.
"""

PUBLISHED_AFTER_COSIGNATURES = 2
"""A checkpoint counts as published once this many witnesses cosigned it."""


MAX_RECOVERY_LEAVES: Final = 100
"""Leaves given back in one request (each up to a few KiB, inside `MAX_REQUEST_BYTES` with room)."""


def _recovering(recovery: LogRecovery) -> web.Response:
    """`503 LOG_RECOVERING`: no checkpoint is served while the log is held; the body says why and how far."""
    status = recovery.status()
    reason = status["reason"] or "the log is back to the witnessed size; its checkpoint is being signed"
    response = problem(503, ErrorCode.LOG_RECOVERING, "Audit log recovering", str(reason))
    response.headers["Retry-After"] = "5"
    return response


def _checkpoint_body(record: CheckpointRecord) -> dict[str, Any]:
    """A checkpoint as the API gives it: the note with every cosignature line, and the lines apart."""
    return {
        "checkpoint_id": record.checkpoint_id,
        "tree_size": record.tree_size,
        "signed_at": record.signed_at,
        "checkpoint": record.note + "".join(record.cosignatures),
        "cosignatures": list(record.cosignatures),
        "published": len(record.cosignatures) >= PUBLISHED_AFTER_COSIGNATURES,
        "timestamps": [
            {
                "authority": stamp.authority,
                "stamped_time": stamp.stamped_time,
                "token": base64.b64encode(stamp.token).decode(),
            }
            for stamp in record.timestamps
        ],
    }


MAX_REQUEST_DEPTH: Final = 4
"""A cosignature or proofs request nests two levels; deeper is refused before anything is read."""


async def _json_object(request: web.Request) -> dict[str, Any]:
    """The body as one JSON object, parsed strictly: any parser failure is a 400 with its own code, never a 500."""
    body = parse_json_strict(await request.read(), max_bytes=MAX_REQUEST_BYTES, max_depth=MAX_REQUEST_DEPTH)
    if not isinstance(body, dict):
        raise MalformedInput("the body must be a JSON object", code=ErrorCode.INVALID_PARAMETER)
    return body


def _is_int(value: object) -> TypeGuard[int]:
    """A JSON integer (`true` is no number here); the strict parser already bounded it."""
    return isinstance(value, int) and not isinstance(value, bool)


def _since(text: str) -> str:
    """`since` as the log writes its times (UTC, milliseconds, `Z`), so comparing the text compares instants.

    The log's `appended_at` is always `format_timestamp`'s form, which sorts as time does; a `since` given
    with another offset (Dhaka's `+06:00`) or other digits is the same instant in that form, rounded up to the
    next millisecond so that nothing before it is included.
    """
    moment = parse_timestamp(text)
    if moment.microsecond % 1000:
        moment += timedelta(microseconds=1000 - moment.microsecond % 1000)
    return format_timestamp(moment)


def _int_param(
    query: Any,  # noqa: ANN401 - aiohttp's MultiDictProxy
    name: str,
    *,
    default: int | None = None,
    minimum: int = 0,
    maximum: int | None = None,
) -> int:
    raw = query.get(name)
    if raw is None:
        if default is None:
            raise MalformedInput(f"query parameter {name!r} is required", code=ErrorCode.INVALID_PARAMETER)
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise MalformedInput(
            f"query parameter {name!r} must be a non-negative integer", code=ErrorCode.INVALID_PARAMETER
        )
    value = int(raw)
    if value < minimum or (maximum is not None and value > maximum):
        raise MalformedInput(
            f"query parameter {name!r} must be between {minimum} and {maximum}, found {value}",
            code=ErrorCode.INVALID_PARAMETER,
        )
    return value


__all__ = ["ACCOUNT", "PUBLISHED_AFTER_COSIGNATURES", "GatewayApi", "OperatorRoutes", "Role", "TokenTable"]
