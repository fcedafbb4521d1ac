"""Webhooks for case systems, after the Standard Webhooks convention (https://www.standardwebhooks.com).

A case system subscribes (`POST /v1/subscriptions`: a URL and event types)
and receives each event as a `POST` of JSON `{"type", "timestamp", "data"}`
with the headers `webhook-id` (the event's id, the same on every attempt:
receivers dedupe on it), `webhook-timestamp` (Unix seconds of the attempt)
and `webhook-signature`: `v1,` and the base64 of
HMAC-SHA256(secret, "{webhook-id}.{webhook-timestamp}.{body}"), where the
secret is `whsec_` + base64 of 32 random bytes, shown once in the answer to
the `POST` and kept sealed under the agency's storage key.

Events (`EventType`) are thin: they say what happened and where to read it
(`GET /v1/inbox`, `GET /v1/messages/{id}`, `GET /v1/cases/{id}`), never the
document.

Durability: an event is written to `webhook_outbox` in the store transaction
of the change that causes it (the message stored, the evidence kept, the
deadline noticed), one row per subscription of its type, so a crash neither
loses nor invents one. `WebhookDispatcher` delivers each subscription's
events in order, one at a time, at least once; after a failure (no 2xx in
`timeout_s`, a redirect, a refused address) the subscription waits, with
exponential backoff and jitter, and tries the same event again. A
subscription failing `suspend_after_failures` times in a row for at least
`suspend_after_s` is suspended (`webhook_subscription_suspended`, the gauge
`rogatory_agent_webhook_subscriptions{state="suspended"}`): its events are
kept, at most `max_pending_events` (beyond, the oldest are dropped and
counted in `dropped`), until its owner resumes it.

Who gets what: subscribing takes a token with the `webhooks` and `read`
scopes; the subscription belongs to that token (only it lists, deletes,
resumes it) and receives only what the token could read through the API,
judged at each delivery: a token revoked or withdrawn suspends it, an event
about a message marked above the token's clearance is withheld.

Where it may call: `http` or `https` only, no credentials in the URL, never
a redirect followed, TLS verified (`ROGATORY_WEBHOOK_CA_FILE`), and the
address checked at subscription and again at every connection (so a DNS
name cannot be re-pointed inward later): public addresses, plus the networks
the operator allows (`ROGATORY_WEBHOOK_ALLOWED_NETWORKS`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import ipaddress
import json
import random
import secrets
import socket
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp
import structlog
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from agents.cases import CaseBook
from agents.guard import TOKEN, ApiToken, Clearance, Scope
from agents.store import AgentStore, Transaction, WebhookSubscription
from protocol.encoding import format_timestamp, parse_json_strict, parse_timestamp
from protocol.errors import ErrorCode, MalformedInput
from protocol.ids import parse_case_id
from protocol.mla import Deadline
from runtime.http import json_answer, problem

log = structlog.get_logger("rogatory.agent.webhooks")


class EventType(StrEnum):
    """What a case system can subscribe to."""

    MESSAGE_RECEIVED = "message.received"
    """A message for this agency was verified, stored and signed for (`DELIVERY`): read it in `GET /v1/inbox`."""
    MESSAGE_STATUS_CHANGED = "message.status_changed"
    """New evidence about a message this agency sent (its type, the status after it), or its expiry unsent."""
    CASE_DEADLINE_DUE = "case.deadline_due"
    """A deadline of a case falls today (UTC): once per deadline."""
    CASE_DEADLINE_OVERDUE = "case.deadline_overdue"
    """A deadline of a case has passed: once per deadline."""


DEADLINE_EVENTS: Final = (EventType.CASE_DEADLINE_DUE, EventType.CASE_DEADLINE_OVERDUE)
SECRET_PREFIX: Final = "whsec_"  # noqa: S105 - the prefix of the convention, not a secret
SECRET_BYTES: Final = 32
MAX_URL_LENGTH: Final = 2000
MAX_DESCRIPTION: Final = 200
MAX_ANSWER_BYTES: Final = 4096
"""A receiver's answer body is read at most this far (and then ignored): only the status counts."""
BATCH: Final = 100
"""Events of one subscription read at once (delivered one by one, in order)."""
USER_AGENT: Final = "rogatory-agent-webhooks/1"


# -- the Standard Webhooks signature --------------------------------------------------------


def new_secret() -> str:
    """A fresh signing secret: `whsec_` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def secret_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_...` secret: the bytes its base64 encodes."""
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)


def sign(key: bytes, event_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value: `v1,` + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))."""
    signed = f"{event_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode("ascii")


def verify(secret: str, headers: dict[str, str], body: bytes, *, now: float, tolerance_s: float = 300.0) -> bool:
    """What a receiver does: a `v1` signature of these headers and body matches, and the timestamp is recent."""
    try:
        event_id, timestamp = headers["webhook-id"], int(headers["webhook-timestamp"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance_s:
        return False
    expected = sign(secret_key(secret), event_id, timestamp, body)
    return any(hmac.compare_digest(expected, given) for given in headers.get("webhook-signature", "").split())


# -- events, written in the transaction of their cause --------------------------------------


def level_of(marking: object) -> int:
    """The clearance a reader needs for a message marked `marking` (unknown or missing: `SECRET`)."""
    return int(Clearance.__members__.get(marking, Clearance.SECRET) if isinstance(marking, str) else Clearance.SECRET)


def event_body(event_type: EventType, data: dict[str, Any], at: datetime) -> bytes:
    """The JSON body of one event, as every attempt sends it."""
    return json.dumps(
        {"type": str(event_type), "timestamp": format_timestamp(at), "data": data},
        ensure_ascii=False,
        separators=(",", ":"),
        sort_keys=True,
    ).encode("utf-8")


def new_event_id() -> str:
    """A fresh `webhook-id`."""
    return "evt_" + uuid.uuid4().hex


async def emit(tx: Transaction, event_type: EventType, data: dict[str, Any], *, level: int, at: datetime) -> int:
    """Owe one event to every subscription of its type, inside the caller's transaction; how many."""
    return await tx.emit_webhook_event(
        event_id=new_event_id(),
        event_type=str(event_type),
        level=level,
        payload=event_body(event_type, data, at),
        at=format_timestamp(at),
    )


# -- where a subscription may point ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    """Which addresses a webhook may reach: the operator's networks, and public ones if the operator says so."""

    allowed_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    allow_plain_http: bool = False
    allow_public: bool = False
    """Whether globally routable addresses are allowed besides the networks (off: the networks only)."""

    @classmethod
    def of(
        cls, networks: Sequence[str], *, allow_plain_http: bool = False, allow_public: bool = False
    ) -> AddressPolicy:
        """From the settings' CIDR strings."""
        return cls(tuple(ipaddress.ip_network(n, strict=False) for n in networks), allow_plain_http, allow_public)

    def allows(self, address: str) -> bool:
        """Whether one IP address may be called."""
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if any(ip in network for network in self.allowed_networks):
            return True
        return self.allow_public and ip.is_global and not ip.is_multicast


class WebhookUrlRefused(MalformedInput):
    """A subscription URL this agent will not call."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail, code=ErrorCode.WEBHOOK_URL_REFUSED)


def _is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url_form(url: str, policy: AddressPolicy) -> tuple[str, int]:
    """The URL's (host, port) if its form is acceptable; `WebhookUrlRefused` otherwise (addresses not yet checked)."""
    if len(url) > MAX_URL_LENGTH or not url.isascii() or not url.isprintable():
        raise WebhookUrlRefused(f"the URL must be at most {MAX_URL_LENGTH} printable ASCII characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise WebhookUrlRefused("the URL does not parse") from None
    if parts.scheme not in {"http", "https"}:
        raise WebhookUrlRefused("the URL must be http:// or https://")
    if not parts.hostname:
        raise WebhookUrlRefused("the URL names no host")
    if parts.username is not None or parts.password is not None:
        raise WebhookUrlRefused("the URL may not carry credentials (authenticate events by their signature)")
    if parts.fragment:
        raise WebhookUrlRefused("the URL may not carry a fragment")
    if parts.scheme == "http" and not policy.allow_plain_http and not _is_loopback_host(parts.hostname):
        raise WebhookUrlRefused("an http:// URL must be on a loopback address; use https://")
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


async def check_url(url: str, policy: AddressPolicy) -> None:
    """The URL's form, and every address its host resolves to now, are allowed; `WebhookUrlRefused` otherwise."""
    host, port = check_url_form(url, policy)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        raise WebhookUrlRefused(f"the host {host[:100]!r} does not resolve") from None
    refused = sorted({str(info[4][0]) for info in infos if not policy.allows(str(info[4][0]))})
    if refused or not infos:
        raise WebhookUrlRefused(
            f"the host {host[:100]!r} resolves to an address webhooks may not reach ({', '.join(refused)[:200]}); "
            "the agent's operator allows networks with ROGATORY_WEBHOOK_ALLOWED_NETWORKS"
        )


class GuardedResolver(AbstractResolver):
    """The system resolver, refusing any name that resolves to an address the policy does not allow."""

    def __init__(self, policy: AddressPolicy) -> None:
        self._policy = policy
        self._inner = aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Every address of `host`, or `OSError` if any is not allowed (a name re-pointed inward)."""
        found = await self._inner.resolve(host, port, family)
        if not found or not all(self._policy.allows(item["host"]) for item in found):
            raise OSError(f"{host[:100]} resolves to an address webhooks may not reach")
        return found

    async def close(self) -> None:
        """Close the inner resolver."""
        await self._inner.close()


# -- delivery -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    """How hard, how long and how often the dispatcher tries (the `ROGATORY_WEBHOOK_*` settings)."""

    timeout_s: float = 10.0
    retry_base_s: float = 2.0
    retry_max_s: float = 900.0
    suspend_after_failures: int = 10
    suspend_after_s: float = 24 * 3600.0
    max_pending_events: int = 10_000
    max_subscriptions: int = 100
    poll_s: float = 1.0
    deadline_scan_s: float = 300.0

    def backoff_s(self, failures: int) -> float:
        """The wait after `failures` consecutive failures: doubling from `retry_base_s`, capped, with jitter."""
        ceiling = min(self.retry_max_s, self.retry_base_s * 2 ** min(max(failures - 1, 0), 40))
        jitter: float = random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not a secret
        return float(ceiling) * jitter


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one attempt came to."""

    ok: bool
    error: str | None = None


class WebhookDispatcher:
    """Delivers the owed events of every active subscription; scans deadlines; bounds what is kept."""

    def __init__(
        self,
        *,
        store: AgentStore,
        owner: Callable[[str], ApiToken | None],
        clock: Callable[[], datetime],
        policy: DeliveryPolicy,
        addresses: AddressPolicy,
        tls: ssl.SSLContext,
        cases: CaseBook | None = None,
    ) -> None:
        """`owner` finds a subscription's token by its hash (None once revoked or withdrawn)."""
        self._store = store
        self._owner = owner
        self._clock = clock
        self._policy = policy
        self._addresses = addresses
        self._tls = tls
        self._cases = cases
        self._session: aiohttp.ClientSession | None = None
        self._wake = asyncio.Event()
        self._last_deadline_scan = float("-inf")

    def wake(self) -> None:
        """Look for events now rather than at the next poll."""
        self._wake.set()

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._tls, resolver=GuardedResolver(self._addresses)),
                timeout=aiohttp.ClientTimeout(total=self._policy.timeout_s),
                headers={"User-Agent": USER_AGENT},
            )
        return self._session

    async def close(self) -> None:
        """Close the HTTP client."""
        if self._session is not None:
            await self._session.close()

    async def run(self, stopping: asyncio.Event) -> None:
        """Deliver, scan and bound until `stopping` is set (what is undelivered stays owed, for the next start)."""
        while not stopping.is_set():
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the loop outlives one bad round, which is logged
                log.warning("webhook_round_failed", error=f"{type(exc).__name__}: {str(exc)[:200]}")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._policy.poll_s)

    async def tick(self) -> None:
        """One round: deadlines (when due), the bound, then every due subscription concurrently."""
        if time.monotonic() - self._last_deadline_scan >= self._policy.deadline_scan_s:
            self._last_deadline_scan = time.monotonic()
            await self.scan_deadlines()
        await self.bound()
        due = await self._store.webhook_due(format_timestamp(self._clock()))
        if due:
            await asyncio.gather(*(self._deliver_subscription(subscription) for subscription in due))

    async def bound(self) -> None:
        """Drop the oldest events of any subscription owed more than `max_pending_events`."""
        keep = self._policy.max_pending_events
        for subscription_id in await self._store.webhook_overfull(keep):
            async with self._store.transaction() as tx:
                dropped = await tx.drop_webhook_events_beyond(subscription_id, keep)
            log.warning("webhook_events_dropped", subscription_id=subscription_id, dropped=dropped, kept=keep)

    async def _deliver_subscription(self, subscription: WebhookSubscription) -> None:
        token = self._owner(subscription.owner_sha256)
        if token is None or Scope.READ not in token.scopes or Scope.WEBHOOKS not in token.scopes:
            await self._suspend(subscription, "owner_token_withdrawn")
            return
        consecutive, failing_since = subscription.consecutive_failures, subscription.failing_since
        for delivery in await self._store.webhook_pending(subscription.subscription_id, BATCH):
            now = self._clock()
            if delivery.level > token.clearance:
                async with self._store.transaction() as tx:
                    await tx.webhook_withheld(delivery.seq)
                continue
            attempt = await self._attempt(subscription, delivery.event_id, delivery.payload)
            if attempt.ok:
                async with self._store.transaction() as tx:
                    await tx.webhook_delivered(delivery.seq, subscription.subscription_id, format_timestamp(now))
                consecutive, failing_since = 0, None
                continue
            failures = consecutive + 1
            retry_at = now + timedelta(seconds=self._policy.backoff_s(failures))
            async with self._store.transaction() as tx:
                await tx.webhook_failed(
                    delivery.seq,
                    subscription.subscription_id,
                    error=str(attempt.error)[:300],
                    at=format_timestamp(now),
                    retry_at=format_timestamp(retry_at),
                )
            log.warning(
                "webhook_attempt_failed",
                subscription_id=subscription.subscription_id,
                event_id=delivery.event_id,
                attempt=delivery.attempts + 1,
                consecutive_failures=failures,
                error=str(attempt.error)[:300],
                retry_in_s=round((retry_at - now).total_seconds(), 3),
            )
            failing_for = (now - parse_timestamp(failing_since or format_timestamp(now))).total_seconds()
            if failures >= self._policy.suspend_after_failures and failing_for >= self._policy.suspend_after_s:
                await self._suspend(subscription, "failing", failures=failures, error=attempt.error)
            return

    async def _attempt(self, subscription: WebhookSubscription, event_id: str, body: bytes) -> Attempt:
        try:
            check_url_form(subscription.url, self._addresses)
            host = urlsplit(subscription.url).hostname or ""
            if _is_ip(host) and not self._addresses.allows(host):
                return Attempt(ok=False, error="address not allowed")
        except WebhookUrlRefused as exc:
            return Attempt(ok=False, error=exc.detail)
        timestamp = int(self._clock().timestamp())
        headers = {
            "Content-Type": "application/json",
            "webhook-id": event_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(subscription.secret, event_id, timestamp, body),
        }
        try:
            async with self._client().post(
                subscription.url, data=body, headers=headers, allow_redirects=False
            ) as response:
                await response.content.read(MAX_ANSWER_BYTES)  # bounded, and ignored: only the status counts
                if 200 <= response.status < 300:
                    return Attempt(ok=True)
                return Attempt(ok=False, error=f"HTTP {response.status}")
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            return Attempt(ok=False, error=f"{type(exc).__name__}: {str(exc)[:200]}")

    async def _suspend(
        self, subscription: WebhookSubscription, reason: str, *, failures: int = 0, error: str | None = None
    ) -> None:
        async with self._store.transaction() as tx:
            await tx.set_webhook_state(
                subscription.subscription_id, "suspended", reason, format_timestamp(self._clock())
            )
        log.warning(
            "webhook_subscription_suspended",
            subscription_id=subscription.subscription_id,
            reason=reason,
            consecutive_failures=failures,
            error=None if error is None else error[:300],
        )

    # -- deadlines --------------------------------------------------------------------------

    async def scan_deadlines(self) -> int:
        """Owe `case.deadline_due` / `case.deadline_overdue` once per deadline to each subscriber; how many."""
        if self._cases is None:
            return 0
        subscribers = await self._store.wants_webhook_event([str(kind) for kind in DEADLINE_EVENTS])
        if not subscribers:
            return 0
        subscriptions = [
            found
            for subscription_id in subscribers
            if (found := await self._store.webhook_subscription(subscription_id)) is not None
        ]
        owed = 0
        now = self._clock()
        async with self._store.transaction() as tx:
            case_ids = await tx.case_ids()
        for case_id in case_ids:
            async with self._store.transaction() as tx:
                owed += await self._scan_case(tx, case_id, subscriptions, now)
        return owed

    async def _scan_case(
        self, tx: Transaction, case_id: str, subscriptions: list[WebhookSubscription], now: datetime
    ) -> int:
        assert self._cases is not None
        try:
            case = await self._cases.case_file(tx, parse_case_id(case_id))
        except MalformedInput:
            return 0
        if case is None or case.view is None:
            return 0
        level = max((level_of(message.document.classification) for message in case.messages), default=0)
        today = now.astimezone(UTC).date()
        owed = 0
        for deadline in case.view.deadlines:
            if deadline.due > today:
                continue
            event_type = EventType.CASE_DEADLINE_OVERDUE if deadline.due < today else EventType.CASE_DEADLINE_DUE
            key = _deadline_key(case_id, deadline)
            body = event_body(event_type, _deadline_data(case_id, deadline, case.role), now)
            event_id = new_event_id()
            for subscription in subscriptions:
                if str(event_type) not in subscription.event_types:
                    continue
                if await tx.notice_deadline(subscription.subscription_id, key, str(event_type), format_timestamp(now)):
                    await tx.owe_webhook_event(
                        subscription.subscription_id,
                        event_id=event_id,
                        event_type=str(event_type),
                        level=level,
                        payload=body,
                        at=format_timestamp(now),
                    )
                    owed += 1
        return owed


def _deadline_key(case_id: str, deadline: Deadline) -> str:
    return "|".join(
        (
            case_id,
            str(deadline.kind),
            deadline.due.isoformat(),
            str(deadline.owed_by),
            str(deadline.set_by or ""),
            deadline.item_id or "",
        )
    )


def _deadline_data(case_id: str, deadline: Deadline, role: object) -> dict[str, Any]:
    return {
        "case_id": case_id,
        "kind": str(deadline.kind),
        "due": deadline.due.isoformat(),
        "owed_by": str(deadline.owed_by),
        "owed_by_this_agency": role is not None and str(role) == str(deadline.owed_by),
        "set_by": None if deadline.set_by is None else str(deadline.set_by),
        "item_id": deadline.item_id,
    }


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


# -- the API: /v1/subscriptions -------------------------------------------------------------


@dataclass
class Webhooks:
    """The subscription endpoints of the agent API and the dispatcher behind them."""

    store: AgentStore
    dispatcher: WebhookDispatcher
    addresses: AddressPolicy
    policy: DeliveryPolicy
    clock: Callable[[], datetime]
    _creating: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)

    def routes(self) -> list[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]]:
        """(method, path, handler) of the webhook endpoints."""
        return [
            ("POST", "/v1/subscriptions", self.subscribe),
            ("GET", "/v1/subscriptions", self.listing),
            ("GET", "/v1/subscriptions/{subscription_id}", self.get),
            ("DELETE", "/v1/subscriptions/{subscription_id}", self.delete),
            ("POST", "/v1/subscriptions/{subscription_id}/resume", self.resume),
        ]

    async def subscribe(self, request: web.Request) -> web.Response:
        """`POST /v1/subscriptions` `{"url", "event_types", "description"?}`: `201`, with the secret, shown once."""
        token = request[TOKEN]
        if Scope.READ not in token.scopes:
            return problem(403, ErrorCode.FORBIDDEN, "Forbidden", "subscribing takes a token with the read scope too")
        if request.content_type != "application/json":
            return problem(
                415,
                ErrorCode.UNSUPPORTED_MEDIA_TYPE,
                "Unsupported media type",
                f"expected application/json, found {request.content_type[:80]!r}",
            )
        url, event_types, description = _subscription_request(await request.read())
        await check_url(url, self.addresses)
        secret = new_secret()
        now = self.clock()
        subscription = WebhookSubscription(
            subscription_id="sub_" + uuid.uuid4().hex,
            url=url,
            event_types=event_types,
            secret=secret_key(secret),
            owner_sha256=token.sha256,
            description=description,
            created_at=format_timestamp(now),
            state="active",
            state_reason=None,
            state_changed_at=None,
            failing_since=None,
            consecutive_failures=0,
            next_attempt_at=None,
            last_error=None,
            last_success_at=None,
            delivered=0,
            failed_attempts=0,
            dropped=0,
        )
        async with self._creating:
            if len(await self.store.webhook_subscriptions()) >= self.policy.max_subscriptions:
                return problem(
                    409,
                    ErrorCode.TOO_MANY_SUBSCRIPTIONS,
                    "Too many subscriptions",
                    f"this agent keeps at most {self.policy.max_subscriptions} subscriptions",
                )
            async with self.store.transaction() as tx:
                await tx.insert_webhook_subscription(subscription)
        log.info(
            "webhook_subscribed",
            subscription_id=subscription.subscription_id,
            event_types=list(event_types),
            owner=token.label,
        )
        self.dispatcher.wake()
        return json_answer(_subscription_item(subscription) | {"secret": secret}, status=201)

    async def listing(self, request: web.Request) -> web.Response:
        """`GET /v1/subscriptions`: this token's subscriptions and their delivery state (never the secret)."""
        found = await self.store.webhook_subscriptions(request[TOKEN].sha256)
        return json_answer({"subscriptions": [_subscription_item(item) for item in found]})

    async def get(self, request: web.Request) -> web.Response:
        """`GET /v1/subscriptions/{id}`."""
        found = await self._own(request)
        if found is None:
            return _unknown(request)
        return json_answer(_subscription_item(found))

    async def delete(self, request: web.Request) -> web.Response:
        """`DELETE /v1/subscriptions/{id}`: the subscription and every event still owed to it are forgotten."""
        found = await self._own(request)
        if found is None:
            return _unknown(request)
        async with self.store.transaction() as tx:
            await tx.delete_webhook_subscription(found.subscription_id)
        log.info("webhook_unsubscribed", subscription_id=found.subscription_id, pending_dropped=found.pending)
        return web.Response(status=204)

    async def resume(self, request: web.Request) -> web.Response:
        """`POST /v1/subscriptions/{id}/resume`: active again, failures forgotten; its kept events flow in order."""
        found = await self._own(request)
        if found is None:
            return _unknown(request)
        async with self.store.transaction() as tx:
            await tx.set_webhook_state(found.subscription_id, "active", "resumed", format_timestamp(self.clock()))
        log.info("webhook_subscription_resumed", subscription_id=found.subscription_id, pending=found.pending)
        self.dispatcher.wake()
        resumed = await self.store.webhook_subscription(found.subscription_id)
        assert resumed is not None
        return json_answer(_subscription_item(resumed))

    async def _own(self, request: web.Request) -> WebhookSubscription | None:
        found = await self.store.webhook_subscription(request.match_info["subscription_id"][:100])
        return found if found is not None and found.owner_sha256 == request[TOKEN].sha256 else None


def _unknown(request: web.Request) -> web.Response:
    return problem(
        404,
        ErrorCode.NOT_FOUND,
        "Unknown subscription",
        f"no subscription {request.match_info['subscription_id'][:100]} of this token",
    )


def _subscription_request(raw: bytes) -> tuple[str, tuple[str, ...], str | None]:
    parsed = parse_json_strict(raw, max_bytes=16 * 1024, max_depth=4)
    if not isinstance(parsed, dict) or set(parsed) - {"url", "event_types", "description"}:
        raise MalformedInput(
            "expected an object with url, event_types and an optional description", code=ErrorCode.INVALID_PARAMETER
        )
    url, types, description = parsed.get("url"), parsed.get("event_types"), parsed.get("description")
    if not isinstance(url, str):
        raise WebhookUrlRefused("url must be a string")
    known = {str(kind) for kind in EventType}
    if not isinstance(types, list) or not types or not all(isinstance(name, str) and name in known for name in types):
        raise MalformedInput(
            f"event_types must be a non-empty list of {', '.join(sorted(known))}", code=ErrorCode.INVALID_PARAMETER
        )
    if description is not None and (not isinstance(description, str) or len(description) > MAX_DESCRIPTION):
        raise MalformedInput(
            f"description must be a string of at most {MAX_DESCRIPTION} characters", code=ErrorCode.INVALID_PARAMETER
        )
    return url, tuple(dict.fromkeys(types)), description


def _subscription_item(subscription: WebhookSubscription) -> dict[str, Any]:
    return {
        "subscription_id": subscription.subscription_id,
        "url": subscription.url,
        "event_types": list(subscription.event_types),
        "description": subscription.description,
        "created_at": subscription.created_at,
        "state": subscription.state,
        "state_reason": subscription.state_reason,
        "state_changed_at": subscription.state_changed_at,
        "pending_events": subscription.pending,
        "delivered_events": subscription.delivered,
        "failed_attempts": subscription.failed_attempts,
        "dropped_events": subscription.dropped,
        "consecutive_failures": subscription.consecutive_failures,
        "failing_since": subscription.failing_since,
        "next_attempt_at": subscription.next_attempt_at,
        "last_error": subscription.last_error,
        "last_success_at": subscription.last_success_at,
    }


__all__ = [
    "DEADLINE_EVENTS",
    "AddressPolicy",
    "DeliveryPolicy",
    "EventType",
    "GuardedResolver",
    "WebhookDispatcher",
    "WebhookUrlRefused",
    "Webhooks",
    "check_url",
    "check_url_form",
    "emit",
    "event_body",
    "level_of",
    "new_secret",
    "secret_key",
    "sign",
    "verify",
]
