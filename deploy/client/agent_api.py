"""A small typed HTTP client of the agent API, for the command line, the demo, the benchmark and the tests.

Each method calls one operation of the agent's OpenAPI document
(`agents/openapi.py`), named by its `operationId` in `OPERATIONS`; each
answer is typed by a `TypedDict` that mirrors the document's schema of it,
key for key (tests/test_agent_client.py holds the two together, and checks
real answers of a real agent against the schemas). Attachment bodies stream
through `deploy.client.transfer` instead (`TRANSFER_OPERATIONS`).
"""

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Collection
from typing import Any, Final, Literal, NotRequired, TypedDict, TypeVar, cast
from urllib.parse import quote, urlencode

import aiohttp

T = TypeVar("T")

Status = Literal["queued", "submitted", "relayed", "delivered", "retrieved", "rejected", "failed", "expired"]
"""The `Status` schema: where a sent message is in its life."""


class Accepted(TypedDict):
    """`Accepted`: the answer to a submission."""

    message_id: str
    status: Status


class EvidenceReason(TypedDict):
    """Why, for negative evidence."""

    code: str
    detail: str | None


class Evidence(TypedDict):
    """`Evidence`: one signed step of a sent message's life."""

    type: str
    at: str
    signed_by: str
    statement: dict[str, Any]
    recipient: str | None
    reason: EvidenceReason | None
    received_at: str
    inclusion_proof: dict[str, Any] | None


class MessageStatus(TypedDict):
    """`MessageStatus`: a sent message's status and evidence chain."""

    message_id: str
    status: Status
    status_reason: str | None
    recipient: str
    message_type: str
    case_id: str
    message_digest: str
    sealed_bytes: int
    created_at: str
    expires_at: str
    evidence: list[Evidence]
    content_purged_at: NotRequired[str | None]


class AttachmentState(TypedDict):
    """`AttachmentState`: an attachment entry of a received document and the state of its body."""

    attachment_id: str
    sha256: str
    state: Literal["description_only", "pending", "available", "failed", "orphaned"]
    size_bytes: NotRequired[int | None]
    detail: NotRequired[str]


class InboxMessage(TypedDict):
    """`InboxMessage`: one received, verified, decrypted message."""

    message_id: str
    sender: str
    message_type: str
    case_id: str
    received_at: str
    document: dict[str, Any] | None
    """None once retention purged the content (`content_purged_at`)."""
    in_reply_to: NotRequired[str | None]
    retrieved_at: NotRequired[str | None]
    message_digest: NotRequired[str]
    document_sha256: NotRequired[str | None]
    content_purged_at: NotRequired[str | None]
    attachments: NotRequired[list[AttachmentState]]


class PageLinks(TypedDict):
    """`links` of a page: the same list and filters from `next_cursor`."""

    next: str


class InboxPage(TypedDict):
    """`InboxPage`: a page of the inbox; `next_cursor` (or, for older clients, `next`) is where the walk goes on."""

    messages: list[InboxMessage]
    next_cursor: str
    has_more: bool
    links: PageLinks
    next: str


class Retrieved(TypedDict):
    """`Retrieved`: the answer to an acknowledgement."""

    message_id: str
    sender: str
    retrieved_at: str


class Deadline(TypedDict):
    """`Deadline`: one open deadline of a case."""

    kind: str
    due: str
    owed_by: str
    overdue: bool
    set_by: NotRequired[str | None]
    item_id: NotRequired[str | None]


class CaseMessage(TypedDict):
    """`CaseMessage`: one message of a case, either way."""

    message_id: str
    direction: Literal["sent", "received"]
    message_type: str
    sender: str
    recipient: str
    applied: bool
    sequence: NotRequired[int | None]
    created_at: NotRequired[str | None]
    in_reply_to: NotRequired[str | None]
    not_applied: NotRequired[str]
    status: NotRequired[Status]
    status_reason: NotRequired[str | None]
    received_at: NotRequired[str]
    retrieved_at: NotRequired[str | None]


class Case(TypedDict):
    """`Case`: one MLA case as this agency knows it."""

    case_id: str
    state: str | None
    role: str | None
    items: dict[str, str]
    messages: list[CaseMessage]
    deadlines: list[Deadline]
    overdue: list[Deadline]
    requesting: NotRequired[str | None]
    requested: NotRequired[str | None]
    may_send: NotRequired[list[str]]
    as_of: NotRequired[str]


class Health(TypedDict):
    """`Health`: `/healthz`'s answer (more keys follow: what the agent looked at)."""

    status: Literal["ok", "degraded"]
    service: NotRequired[str]
    agency: NotRequired[str]
    inbox_connected: NotRequired[bool]
    alarms: NotRequired[list[str]]


class Problem(TypedDict):
    """`Problem`: an RFC 9457 refusal with its stable `code`."""

    type: str
    title: str
    status: int
    code: str
    detail: NotRequired[str]
    errors: NotRequired[list[dict[str, Any]]]


OPERATIONS: Final[dict[str, str]] = {
    "submit": "submitMessage",
    "message": "getMessageStatus",
    "inbox": "listInbox",
    "ack": "acknowledgeMessage",
    "case": "getCase",
    "message_schema": "getMessageSchema",
    "health": "getHealth",
    "openapi": "getOpenApiDocument",
    "sent_messages": "listSentMessages",
    "cases": "listCases",
    "inbox_page": "listInbox",
    "list_page": "listInbox",
    "subscribe": "createSubscription",
    "subscriptions": "listSubscriptions",
    "subscription": "getSubscription",
    "resume_subscription": "resumeSubscription",
    "unsubscribe": "deleteSubscription",
    "start_connectivity_test": "startConnectivityTest",
    "connectivity_test": "getConnectivityTest",
    "evidence_bundle": "getSentMessageEvidenceBundle",
}
"""Each `AgentClient` method and the operation it calls (`evidence_bundle` also calls the received message's and
the case's bundle operations, by its path: `BUNDLE_OPERATIONS`)."""
BUNDLE_OPERATIONS: Final = frozenset(
    {"getSentMessageEvidenceBundle", "getReceivedMessageEvidenceBundle", "getCaseEvidenceBundle"}
)
"""The evidence bundle operations, all called by `evidence_bundle`."""

TRANSFER_OPERATIONS: Final[dict[str, str]] = {
    "upload_file": "uploadAttachment",
    "upload_offset": "getUploadOffset",
    "download_attachment": "downloadAttachment",
}
"""Each streaming function of `deploy.client.transfer` and the operation it calls."""

Observer = Callable[[str, bytes | None, int, object], None]
"""Told of each call: (operationId, the request body or None, the status, the JSON answer)."""


HTTP_OK = 200
HTTP_CONFLICT = 409
HTTP_SERVICE_UNAVAILABLE = 503
HTTP_TOO_MANY_REQUESTS = 429
MAX_RATE_LIMITED_WAIT_S = 60.0
"""How long a call keeps waiting out `429 RATE_LIMITED` answers before it gives up with the last one."""


def _retry_after_s(response: aiohttp.ClientResponse) -> float:
    """The pause a `429` asks for (`Retry-After` in seconds; 1 s when absent or unreadable)."""
    try:
        return min(max(float(response.headers.get("Retry-After", "1")), 0.1), MAX_RATE_LIMITED_WAIT_S)
    except ValueError:
        return 1.0


def document_of(message: InboxMessage) -> dict[str, Any]:
    """The document of a received message; `ValueError` once retention purged it (`content_purged_at`)."""
    document = message["document"]
    if document is None:
        raise ValueError(f"the content of {message['message_id']} was purged at {message.get('content_purged_at')}")
    return document


def _listing(route: str, query: str) -> str:
    return f"{route}?{query.lstrip('?')}" if query else route


_BUNDLE_OPERATIONS: Final[dict[str, str]] = {
    "messages": "getSentMessageEvidenceBundle",
    "inbox": "getReceivedMessageEvidenceBundle",
    "cases": "getCaseEvidenceBundle",
}
"""The operation of each `evidence_bundle` path's collection."""


class AgentApiError(Exception):
    """The agent answered with an error; `status` and `problem` say which."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        super().__init__(f"HTTP {status}: {problem.get('code')}: {problem.get('detail')}")
        self.status = status
        self.problem = problem


class AgentClient:
    """Calls one agent's API with its bearer token.

    A `429` is the agent asking the client to slow down (its request was
    refused before anything was done): the call waits `Retry-After` seconds
    and asks again, for up to `MAX_RATE_LIMITED_WAIT_S` in all.
    """

    def __init__(
        self, session: aiohttp.ClientSession, base_url: str, token: str, *, observer: Observer | None = None
    ) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        self._observer = observer

    async def _call(
        self,
        operation_id: str,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        expect: int = 200,
        accept: Collection[int] = (),
    ) -> Any:  # noqa: ANN401 - each method casts the JSON answer to the TypedDict of its schema
        waited = 0.0
        while True:
            async with self._session.request(
                method, self._base + path, data=body, headers=self._headers | (headers or {})
            ) as response:
                text = await response.text()
                answer: Any = json.loads(text) if text else {}
                if self._observer is not None:
                    self._observer(operation_id, body, response.status, answer)
                if response.status == expect or response.status in accept:
                    return answer
                pause = _retry_after_s(response) if response.status == HTTP_TOO_MANY_REQUESTS else None
                if pause is None or waited + pause > MAX_RATE_LIMITED_WAIT_S:
                    raise AgentApiError(response.status, answer)
            await asyncio.sleep(pause)
            waited += pause

    async def submit(self, document: dict[str, Any] | bytes, *, idempotency_key: str | None = None) -> Accepted:
        """`submitMessage`: `POST /v1/messages`.

        `idempotency_key` is this one message's own key, never the case's: every message of a case needs its own.
        """
        body = document if isinstance(document, bytes) else json.dumps(document, ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json"}
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        return cast(
            "Accepted",
            await self._call("submitMessage", "POST", "/v1/messages", body=body, headers=headers, expect=202),
        )

    async def message(self, message_id: str) -> MessageStatus:
        """`getMessageStatus`: `GET /v1/messages/{id}`."""
        return cast(
            "MessageStatus", await self._call("getMessageStatus", "GET", f"/v1/messages/{quote(message_id, safe='')}")
        )

    async def inbox(self, after: str = "0", limit: int = 100) -> InboxPage:
        """`listInbox`: `GET /v1/inbox`."""
        query = urlencode({"after": after, "limit": limit})
        return cast("InboxPage", await self._call("listInbox", "GET", f"/v1/inbox?{query}"))

    async def ack(self, message_id: str, *, sender: str | None = None) -> Retrieved:
        """`acknowledgeMessage`: `POST /v1/inbox/{id}/ack` (`sender` when several senders used the id)."""
        query = "" if sender is None else "?" + urlencode({"sender": sender})
        path = f"/v1/inbox/{quote(message_id, safe='')}/ack{query}"
        return cast("Retrieved", await self._call("acknowledgeMessage", "POST", path))

    async def case(self, case_id: str) -> Case:
        """`getCase`: `GET /v1/cases/{case_id}`."""
        return cast("Case", await self._call("getCase", "GET", f"/v1/cases/{quote(case_id, safe='')}"))

    async def message_schema(self, message_type: str) -> dict[str, Any]:
        """`getMessageSchema`: `GET /v1/schema/{message_type}`, the JSON Schema of one message type."""
        path = f"/v1/schema/{quote(message_type, safe='')}"
        return cast("dict[str, Any]", await self._call("getMessageSchema", "GET", path))

    async def health(self) -> Health:
        """`getHealth`: `GET /healthz` (a degraded agent's 503 is an answer too, not an error)."""
        return cast("Health", await self._call("getHealth", "GET", "/healthz", accept=(503,)))

    async def openapi(self) -> dict[str, Any]:
        """`getOpenApiDocument`: `GET /openapi.json`, the agent's own OpenAPI document."""
        return cast("dict[str, Any]", await self._call("getOpenApiDocument", "GET", "/openapi.json"))

    async def sent_messages(self, query: str = "") -> dict[str, Any]:
        """`GET /v1/messages?...`: one page of what this agency sent, filtered (see the document)."""
        return cast("dict[str, Any]", await self._call("listSentMessages", "GET", _listing("/v1/messages", query)))

    async def cases(self, query: str = "") -> dict[str, Any]:
        """`GET /v1/cases?...`: one page of the cases held here (`state`, `counterpart`, `due_by`, `overdue`...)."""
        return cast("dict[str, Any]", await self._call("listCases", "GET", _listing("/v1/cases", query)))

    async def inbox_page(self, query: str = "") -> InboxPage:
        """`GET /v1/inbox?...` with the lists' filters and cursor (`unacknowledged`, `message_type`, `case_id`)."""
        return cast("InboxPage", await self._call("listInbox", "GET", _listing("/v1/inbox", query)))

    async def list_page(self, path: str) -> dict[str, Any]:
        """One page of a listing by its path and query (a `links.next` the agent gave, for instance)."""
        operation = {"/v1/messages": "listSentMessages", "/v1/cases": "listCases", "/v1/inbox": "listInbox"}
        route = path.split("?", 1)[0]
        if route not in operation:
            raise ValueError(f"{route} is not a list of the agent API")
        return cast("dict[str, Any]", await self._call(operation[route], "GET", path))

    async def subscribe(self, url: str, event_types: Collection[str], description: str | None = None) -> dict[str, Any]:
        """`POST /v1/subscriptions`: the subscription, with its `secret` (shown this once)."""
        request: dict[str, Any] = {"url": url, "event_types": list(event_types)}
        if description is not None:
            request["description"] = description
        body = json.dumps(request).encode()
        headers = {"Content-Type": "application/json"}
        answer = await self._call(
            "createSubscription", "POST", "/v1/subscriptions", body=body, headers=headers, expect=201
        )
        return cast("dict[str, Any]", answer)

    async def subscriptions(self) -> list[dict[str, Any]]:
        """`GET /v1/subscriptions`: this token's subscriptions and their delivery state."""
        found: list[dict[str, Any]] = (await self._call("listSubscriptions", "GET", "/v1/subscriptions"))[
            "subscriptions"
        ]
        return found

    async def subscription(self, subscription_id: str) -> dict[str, Any]:
        """`GET /v1/subscriptions/{id}`."""
        path = f"/v1/subscriptions/{quote(subscription_id, safe='')}"
        return cast("dict[str, Any]", await self._call("getSubscription", "GET", path))

    async def resume_subscription(self, subscription_id: str) -> dict[str, Any]:
        """`POST /v1/subscriptions/{id}/resume`."""
        path = f"/v1/subscriptions/{quote(subscription_id, safe='')}/resume"
        return cast("dict[str, Any]", await self._call("resumeSubscription", "POST", path))

    async def unsubscribe(self, subscription_id: str) -> None:
        """`DELETE /v1/subscriptions/{id}`."""
        path = f"/v1/subscriptions/{quote(subscription_id, safe='')}"
        await self._call("deleteSubscription", "DELETE", path, expect=204)

    async def start_connectivity_test(self, to: str, *, timeout_s: int | None = None) -> dict[str, Any]:
        """`POST /v1/connectivity-tests`: ping `to` through the whole path."""
        request: dict[str, Any] = {"to": to} | ({} if timeout_s is None else {"timeout_s": timeout_s})
        body = json.dumps(request).encode()
        headers = {"Content-Type": "application/json"}
        answer = await self._call(
            "startConnectivityTest", "POST", "/v1/connectivity-tests", body=body, headers=headers, expect=201
        )
        return cast("dict[str, Any]", answer)

    async def connectivity_test(self, test_id: str) -> dict[str, Any]:
        """`GET /v1/connectivity-tests/{test_id}`."""
        path = f"/v1/connectivity-tests/{quote(test_id, safe='')}"
        return cast("dict[str, Any]", await self._call("getConnectivityTest", "GET", path))

    async def evidence_bundle(self, path: str, *, query: str = "") -> bytes:
        """`GET {path}/evidence-bundle`, the ZIP (path: `/v1/messages/{id}`, `/v1/inbox/{id}`, `/v1/cases/{id}`)."""
        parts = path.split("/")
        operation = _BUNDLE_OPERATIONS.get(parts[2]) if len(parts) == 4 and parts[1] == "v1" else None
        if operation is None:
            raise ValueError(f"{path} has no evidence bundle")
        url = f"{self._base}{path}/evidence-bundle" + (f"?{query}" if query else "")
        async with self._session.get(url, headers=self._headers) as response:
            body = await response.read()
            answer: Any = body if response.status == HTTP_OK else (json.loads(body) if body else {})
            if self._observer is not None:
                self._observer(operation, None, response.status, answer)
            if response.status != HTTP_OK:
                raise AgentApiError(response.status, answer)
            return body

    async def wait_for_evidence_bundle(self, path: str, *, within_s: float = 60.0, query: str = "") -> bytes:
        """The evidence bundle of `path`, asked again while proofs are pending (409) or the gateway is away (503)."""

        async def probe() -> bytes | None:
            try:
                return await self.evidence_bundle(path, query=query)
            except AgentApiError as exc:
                if exc.status == HTTP_CONFLICT and exc.problem.get("code") == "PROOFS_PENDING":
                    return None
                if exc.status == HTTP_SERVICE_UNAVAILABLE:  # the gateway's audit API away a moment: ask again
                    return None
                raise

        return await poll(probe, within_s=within_s, what=f"the evidence bundle of {path}", interval=0.5)

    async def wait_for_status(
        self, message_id: str, wanted: Collection[str], *, within_s: float = 30.0
    ) -> MessageStatus:
        """Poll the message until its status is one of `wanted`."""

        async def probe() -> MessageStatus | None:
            answer = await self.message(message_id)
            return answer if answer["status"] in wanted else None

        return await poll(probe, within_s=within_s, what=f"message {message_id} to reach {sorted(wanted)}")

    async def wait_for_inbox(self, message_id: str, *, within_s: float = 30.0) -> InboxMessage:
        """Poll the inbox until `message_id` is in it."""

        async def probe() -> InboxMessage | None:
            cursor = "0"
            while True:
                page = await self.inbox(after=cursor, limit=500)
                for item in page["messages"]:
                    if item["message_id"] == message_id:
                        return item
                if not page["messages"]:
                    return None
                cursor = page["next"]

        return await poll(probe, within_s=within_s, what=f"message {message_id} in the inbox")


async def poll(probe: Callable[[], Awaitable[T | None]], *, within_s: float, what: str, interval: float = 0.1) -> T:
    """Call `probe` until it returns something, or raise `TimeoutError` naming `what`."""
    deadline = time.monotonic() + within_s
    while True:
        found = await probe()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {within_s:.0f} s waiting for {what}")
        await asyncio.sleep(interval)


__all__ = [
    "BUNDLE_OPERATIONS",
    "OPERATIONS",
    "TRANSFER_OPERATIONS",
    "Accepted",
    "AgentApiError",
    "AgentClient",
    "AttachmentState",
    "Case",
    "CaseMessage",
    "Deadline",
    "Evidence",
    "EvidenceReason",
    "Health",
    "InboxMessage",
    "InboxPage",
    "MessageStatus",
    "Observer",
    "Problem",
    "Retrieved",
    "Status",
    "document_of",
    "poll",
]
