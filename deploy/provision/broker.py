r"""Provisioning of one network's RabbitMQ topology, users and permissions.

Everything goes through the management HTTP API (the `rabbitmq_management`
plugin): users and permissions cannot be made over AMQP, and agents and the
gateway declare nothing, so the topology below is the whole broker-side
contract. One network is one vhost; isolation is by permission.

Topology (names from `protocol.topology`)::

    [mla.submit]  topic, durable   --"#"-->        (mla.gateway.ingress)  quorum
    [mla.deliver] direct, durable  --<AGENCY>-->   (mla.inbox.<AGENCY>)   quorum, one per agency
    [mla.dead]    fanout, durable  -->             (mla.dead)             quorum

The ingress and inbox queues carry `x-delivery-limit` (a poison message is
dead-lettered instead of looping), `x-dead-letter-exchange: mla.dead`, and
`x-dead-letter-strategy: at-least-once` with `x-overflow: reject-publish`
(required by that strategy): a dead letter leaves its queue only once
`mla.dead` has confirmed it, so nothing is lost on the way. Checked on RabbitMQ
3.10.8: with no route to `mla.dead`, a rejected message is held by its queue
(`messages_dlx` in its statistics) and reaches `mla.dead` on the broker's next
retry once the route is back (180 s later, observed). Dead letters carry
`x-death` (reason `rejected` or `delivery_limit`, queue, exchange, routing
keys, count, time) and `x-first-death-reason/queue/exchange`; their properties,
`user_id` included, are kept.
`mla.dead` itself has no delivery limit and no dead-letter exchange: a dead
letter is never dropped by the broker, only by an operator's decision.
Queues are quorum queues, not a choice: the delivery limit and at-least-once
dead lettering exist only for them. On a cluster, a plan with
`quorum_group_size` (3 for three nodes) adds `x-quorum-initial-group-size`
to every queue, so each is replicated on that many nodes from the start and
survives the loss of a minority of them; without it the broker's own default
applies (and a single node needs none).

Limits: the operator policy `rogatory-limits` (`OPERATOR_POLICY_NAME`) on the
vhost applies to the ingress and inbox queues `max-length-bytes` (the plan's
`max_queue_bytes`, `DEFAULT_MAX_QUEUE_BYTES`) and `delivery-limit` (the plan's,
as the queue argument: RabbitMQ takes the smaller of the two). An operator
policy cannot be overridden by users' policies and applies to queues already
declared, so existing networks get it on the next `provision`. With their
`x-overflow: reject-publish`, a full queue refuses the publish: the publisher
gets a nack (checked on 3.10.8: the queue takes publishes while it holds less
than the limit, so it can go over by one message, and takes them again once
drained). Back-pressure: to a full inbox the gateway's publish is nacked, which
it takes as transient (`BrokerUnavailable`) and retries, holding the ingress
delivery (a message) or keeping the row in its `outgoing` table (evidence);
a full ingress nacks the agents' submissions, which stay in their outboxes
(`agents.outbox.OutboxRelay`) until confirmed. The backlog of an
agency that stops consuming stays at its senders and the gateway, not on the
hub's broker disk; held deliveries count against the gateway's prefetch, so
a long-full inbox can stall the ingress for everyone: watch `queue_stats`.
`mla.dead` is left out of the pattern on purpose: it keeps the default
overflow, `drop-head`, so a byte limit there makes the broker drop the oldest
dead letters (checked). RabbitMQ 3.10 accepts as operator policy keys
`max-length`, `max-length-bytes`, `message-ttl`, `expires`,
`max-in-memory-length`, `max-in-memory-bytes` and `delivery-limit`; `overflow`
is refused ("not recognised policy settings"), which is why the overflow
mode stays a queue argument.

Permissions (regexes anchored, names escaped: agency ids contain "-")::

    user            configure  write              read
    agency X        ^$         ^mla\.submit$      ^mla\.inbox\.X$
    gateway         ^$         ^mla\.deliver$     ^(mla\.gateway\.ingress|mla\.dead)$

- configure `^$` for everyone: nobody but this module declares, deletes or
  re-arguments anything, so an agent can neither create a queue bound to
  someone else's traffic nor delete the gateway's ingress.
- write is checked on the exchange of a publish (and on the destination of a
  bind): an agent can only submit, never deliver, and not through the default
  exchange (`amq.default`) either. Every publish carries `user_id`, which the
  broker checks against the authenticated user (PRECONDITION_FAILED if not),
  so the gateway learns the sender's broker identity from the broker.
- read is checked on the queue of a consume/get (and on the source exchange of
  a bind): an agent reads its own inbox and nothing else.
- Passive declares are not permission-checked by RabbitMQ 3.10: any user of the
  vhost can learn whether a queue exists and its message count. Names are
  public (the directory lists the agencies), so this leaks only traffic volume.
- Purge needs only read: an agency can empty its own inbox. That destroys only
  copies addressed to itself; the gateway's records and time-outs (negative
  evidence) still account for them.
- The broker checks `user_id` only when it is set: the gateway must refuse a
  submission without one.

Re-driving dead letters needs no extra permission for the gateway: a dead
inbox message goes back through `mla.deliver` (routing key = its recipient,
kept in the `x-death` header), which it may write already. A dead submission
is re-processed straight from `mla.dead`: its `user_id` was checked by the
broker when the agency published it and dead lettering keeps the properties;
since nobody may write to the `mla.dead` exchange, what is in `mla.dead` was
put there by the broker. Publishing it back to `mla.submit` would need the
`impersonator` tag (to keep the agency's `user_id`), which would let the
gateway forge any agency's broker identity: refused on purpose.

Error tree::

    BrokerAdminError                  every failure of this module
     +-- PlanInvalid                  a plan or its passwords that cannot be provisioned
     +-- ManagementUnreachable        the management API did not answer (refused, timeout)
     +-- ManagementRequestFailed      it answered with an unexpected HTTP status (`.status`)
     |    +-- TopologyConflict        an exchange or queue exists with other properties
     +-- ManagementAnswerInvalid      it answered 2xx with a body that is not what was asked
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any, Final, Self
from urllib.parse import quote

import aiohttp
import yarl

from protocol.errors import MalformedInput
from protocol.ids import AgencyId, parse_agency_id
from protocol.topology import (
    DEAD_LETTER_EXCHANGE,
    DEAD_LETTER_QUEUE,
    DELIVER_EXCHANGE,
    INBOX_QUEUE_PREFIX,
    INGRESS_QUEUE,
    SUBMIT_EXCHANGE,
    inbox_queue,
)
from runtime.broker.management import queue_figure

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

DEFAULT_MANAGEMENT_PORT: Final = 15672
"""Port of the management API over plain HTTP (RabbitMQ's default)."""

DEFAULT_MANAGEMENT_TLS_PORT: Final = 15671
"""Port of the management API over HTTPS (RabbitMQ's default), used for `amqps://` URLs."""

DEFAULT_REQUEST_TIMEOUT_SECONDS: Final = 15.0
"""Whole-request timeout: declaring a quorum queue waits for its Raft group to elect a leader."""

DEFAULT_DELIVERY_LIMIT: Final = 5
"""Returns allowed (nack with requeue, or a channel closed holding it): a message is
delivered at most 1 + limit times, then dead-lettered with reason `delivery_limit`."""

DEFAULT_MAX_QUEUE_BYTES: Final = 8 * 1024**3
"""Bytes one ingress or inbox queue may hold on the broker's disk (8 GiB): about a thousand
of the largest messages (`BROKER_MAX_MESSAGE_BYTES`, 8 MiB), so an agency that stops
consuming cannot fill the hub's disk. Size the disk for one such queue per agency plus
the ingress, or the node's disk alarm blocks every publisher first."""

OPERATOR_POLICY_NAME: Final = "rogatory-limits"
"""Name of the operator policy holding the queue limits on a network's vhost."""

OPERATOR_POLICY_PRIORITY: Final = 0
"""Priority of that policy; an administrator's operator policy of higher priority on the vhost replaces it."""

CONNECTION_CLOSE_TIMEOUT_SECONDS: Final = 5.0
"""How long `close_connections_of` waits for the broker to list no connection of a user."""

CONNECTION_CLOSE_POLL_SECONDS: Final = 0.05
"""Pause between two listings while connections are closing (each takes milliseconds)."""

REVOCATION_REASON: Final = "rogatory: agency revoked"
"""Close reason the broker sends to a revoked agency's connections."""

_QUEUE_TYPE: Final = "quorum"


class BrokerAdminError(Exception):
    """Root of every failure of broker provisioning."""


class PlanInvalid(BrokerAdminError):
    """A network plan, or its passwords, that cannot be provisioned."""


class ManagementUnreachable(BrokerAdminError):
    """The management API did not answer: connection refused, reset or timed out."""


class ManagementRequestFailed(BrokerAdminError):
    """The management API answered with an HTTP status the request did not expect."""

    def __init__(self, detail: str, *, status: int) -> None:
        super().__init__(detail)
        self.status = status


class TopologyConflict(ManagementRequestFailed):
    """An exchange or queue already exists with other type or arguments; migrate it first."""


class ManagementAnswerInvalid(BrokerAdminError):
    """The management API answered with a body that is not the JSON that was asked for."""


# --- Values -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ManagementEndpoint:
    """Where the management API is and as whom to call it."""

    base_url: str
    username: str
    password: str = field(repr=False)


def management_url_from_amqp(
    amqp_url: str,
    *,
    base_url: str | None = None,
    username: str | None = None,
    password: str | None = None,
) -> ManagementEndpoint:
    """The management endpoint of the broker at `amqp_url`, with the same credentials.

    `amqp://u:p@host:5672/vh` gives `http://host:15672` as `u`/`p`; `amqps://` gives
    `https://host:15671`. Each part can be overridden (the management API often
    listens elsewhere or needs an administrator other than the AMQP user).
    """
    try:
        url = yarl.URL(amqp_url)
    except (TypeError, ValueError) as exc:
        raise PlanInvalid(f"AMQP URL: expected amqp:// or amqps://, found {exc}") from exc
    if url.scheme not in {"amqp", "amqps"} or not url.host:
        raise PlanInvalid(
            f"AMQP URL: expected amqp:// or amqps:// with a host, found scheme {url.scheme!r} and host {url.host!r}"
        )
    if base_url is None:
        tls = url.scheme == "amqps"
        derived = yarl.URL.build(
            scheme="https" if tls else "http",
            host=url.host,
            port=DEFAULT_MANAGEMENT_TLS_PORT if tls else DEFAULT_MANAGEMENT_PORT,
        )
        base_url = str(derived)
    return ManagementEndpoint(
        base_url=base_url.rstrip("/"),
        # RabbitMQ's own defaults when the URL carries no credentials.
        username=username if username is not None else (url.user or "guest"),
        password=password if password is not None else (url.password or "guest"),
    )


@dataclass(frozen=True, slots=True)
class Permissions:
    """A user's configure, write and read regexes on one vhost (RabbitMQ's terms)."""

    configure: str
    write: str
    read: str


@dataclass(frozen=True, slots=True)
class ExchangeSpec:
    """A durable exchange of the topology."""

    name: str
    type: str


@dataclass(frozen=True, slots=True)
class QueueSpec:
    """A durable quorum queue of the topology, with its `x-` arguments."""

    name: str
    arguments: Mapping[str, str | int] = field(hash=False)


@dataclass(frozen=True, slots=True)
class BindingSpec:
    """A binding from an exchange to a queue."""

    exchange: str
    queue: str
    routing_key: str


@dataclass(frozen=True, slots=True)
class Topology:
    """Everything declared in the vhost of one network."""

    exchanges: tuple[ExchangeSpec, ...]
    queues: tuple[QueueSpec, ...]
    bindings: tuple[BindingSpec, ...]


@dataclass(frozen=True, slots=True)
class OperatorPolicy:
    """An operator policy of a vhost: its name, the queues it matches and the limits it sets."""

    name: str
    pattern: str
    apply_to: str
    priority: int
    definition: Mapping[str, int] = field(hash=False)

    def body(self) -> dict[str, object]:
        """The management API's representation, as PUT and as read back."""
        return {
            "pattern": self.pattern,
            "apply-to": self.apply_to,
            "priority": self.priority,
            "definition": dict(self.definition),
        }


@dataclass(frozen=True)
class NetworkPlan:
    """One network on the broker: its vhost, the gateway's user and each agency's user.

    Comes from the directory. Broker usernames are what travels as AMQP `user_id`;
    they must be distinct, or two parties would share one identity and one inbox.
    """

    vhost: str
    gateway_user: str
    agency_users: Mapping[AgencyId, str] = field(hash=False)
    delivery_limit: int = DEFAULT_DELIVERY_LIMIT
    quorum_group_size: int | None = None
    """Replicas of each quorum queue at declaration (`x-quorum-initial-group-size`); None: the broker decides."""
    max_queue_bytes: int = DEFAULT_MAX_QUEUE_BYTES
    """Bytes each ingress or inbox queue may hold (operator policy `max-length-bytes`); then publishes are nacked."""

    def __post_init__(self) -> None:
        if not self.vhost:
            raise PlanInvalid("vhost: expected a non-empty name, found ''")
        for agency in self.agency_users:
            try:
                parse_agency_id(agency)
            except MalformedInput as exc:
                raise PlanInvalid(f"agency_users: {exc.detail}") from exc
        users = [self.gateway_user, *self.agency_users.values()]
        if any(not user for user in users):
            raise PlanInvalid("users: expected non-empty broker usernames, found ''")
        shared = sorted({user for user in users if users.count(user) > 1})
        if shared:
            raise PlanInvalid(f"users: expected one broker user per party, found shared {shared}")
        if isinstance(self.delivery_limit, bool) or not isinstance(self.delivery_limit, int) or self.delivery_limit < 1:
            raise PlanInvalid(f"delivery_limit: expected an integer >= 1, found {self.delivery_limit!r}")
        limit = self.max_queue_bytes
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise PlanInvalid(f"max_queue_bytes: expected an integer >= 1, found {limit!r}")
        size = self.quorum_group_size
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            raise PlanInvalid(f"quorum_group_size: expected an integer >= 1 or None, found {size!r}")
        # A private copy, read-only: the plan cannot change under a running provision.
        object.__setattr__(self, "agency_users", MappingProxyType(dict(self.agency_users)))

    @property
    def users(self) -> tuple[str, ...]:
        """Every broker user of the network, the gateway's first."""
        return (self.gateway_user, *self.agency_users.values())


@dataclass(frozen=True, slots=True)
class QueueStats:
    """What an operator watches on one queue; `None` until the broker has measured it."""

    name: str
    queue_type: str | None
    messages_ready: int | None
    messages_unacknowledged: int | None
    consumers: int | None
    publish_rate: float | None
    """Messages per second published into the queue, over the last sample."""
    deliver_rate: float | None
    """Messages per second delivered (or fetched) from the queue, over the last sample."""


# --- The plan as data -------------------------------------------------------


def _exact(name: str) -> str:
    return f"^{re.escape(name)}$"


def permissions_for(plan: NetworkPlan) -> dict[str, Permissions]:
    """The permissions of each broker user of `plan` (see the table in the module docstring)."""
    nothing = "^$"
    table = {
        # Re-driving dead letters needs nothing more (see the module docstring): dead
        # deliveries go back through mla.deliver; dead submissions are re-processed
        # from mla.dead, which only the broker can fill. No write on mla.submit,
        # mla.dead or amq.default: the gateway cannot forge a submission or a dead
        # letter, nor reach an inbox except through mla.deliver's bindings.
        plan.gateway_user: Permissions(
            configure=nothing,
            write=_exact(DELIVER_EXCHANGE),
            read=f"^({re.escape(INGRESS_QUEUE)}|{re.escape(DEAD_LETTER_QUEUE)})$",
        )
    }
    for agency, user in plan.agency_users.items():
        table[user] = Permissions(
            configure=nothing,
            write=_exact(SUBMIT_EXCHANGE),
            read=_exact(inbox_queue(agency)),
        )
    return table


def topology_for(plan: NetworkPlan) -> Topology:
    """The exchanges, queues and bindings of `plan` (see the module docstring)."""
    guarded: dict[str, str | int] = {
        "x-queue-type": _QUEUE_TYPE,
        "x-delivery-limit": plan.delivery_limit,
        "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
        "x-dead-letter-strategy": "at-least-once",
        # at-least-once dead lettering is ignored by RabbitMQ unless overflow is
        # reject-publish; with no length limit set, nothing is ever rejected for it.
        "x-overflow": "reject-publish",
    }
    replicas: dict[str, str | int] = (
        {} if plan.quorum_group_size is None else {"x-quorum-initial-group-size": plan.quorum_group_size}
    )
    guarded |= replicas
    inboxes = sorted(plan.agency_users)
    return Topology(
        exchanges=(
            ExchangeSpec(SUBMIT_EXCHANGE, "topic"),
            ExchangeSpec(DELIVER_EXCHANGE, "direct"),
            ExchangeSpec(DEAD_LETTER_EXCHANGE, "fanout"),
        ),
        queues=(
            QueueSpec(DEAD_LETTER_QUEUE, MappingProxyType({"x-queue-type": _QUEUE_TYPE} | replicas)),
            QueueSpec(INGRESS_QUEUE, MappingProxyType(dict(guarded))),
            *(QueueSpec(inbox_queue(a), MappingProxyType(dict(guarded))) for a in inboxes),
        ),
        bindings=(
            BindingSpec(DEAD_LETTER_EXCHANGE, DEAD_LETTER_QUEUE, ""),
            BindingSpec(SUBMIT_EXCHANGE, INGRESS_QUEUE, "#"),
            *(BindingSpec(DELIVER_EXCHANGE, inbox_queue(a), a) for a in inboxes),
        ),
    )


def operator_policy_for(plan: NetworkPlan) -> OperatorPolicy:
    """The operator policy bounding `plan`'s ingress and inboxes (see Limits in the module docstring)."""
    # Only the queues with x-overflow: reject-publish; mla.dead would drop its head.
    pattern = f"^({re.escape(INGRESS_QUEUE)}|{re.escape(INBOX_QUEUE_PREFIX)}.+)$"
    return OperatorPolicy(
        name=OPERATOR_POLICY_NAME,
        pattern=pattern,
        apply_to="queues",
        priority=OPERATOR_POLICY_PRIORITY,
        definition=MappingProxyType({"max-length-bytes": plan.max_queue_bytes, "delivery-limit": plan.delivery_limit}),
    )


# --- The management API client ----------------------------------------------


class ManagementClient:
    """An async client of the RabbitMQ management HTTP API, as an administrator.

    Use as `async with ManagementClient(url, user, password) as admin:`. Every
    failure is a `BrokerAdminError` naming what was attempted and what was found.
    """

    def __init__(
        self,
        base_url: str,
        username: str,
        password: str,
        *,
        timeout_seconds: float = DEFAULT_REQUEST_TIMEOUT_SECONDS,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._username = username
        self._authorization = _basic_authorization(username, password)
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_endpoint(
        cls,
        endpoint: ManagementEndpoint,
        *,
        timeout_seconds: float = DEFAULT_REQUEST_TIMEOUT_SECONDS,
    ) -> Self:
        """A client of `endpoint` (see `management_url_from_amqp`)."""
        return cls(
            endpoint.base_url,
            endpoint.username,
            endpoint.password,
            timeout_seconds=timeout_seconds,
        )

    @property
    def base_url(self) -> str:
        """The API's base URL, without `/api`."""
        return self._base_url

    @property
    def username(self) -> str:
        """The administrator this client acts as."""
        return self._username

    def __repr__(self) -> str:
        return f"ManagementClient({self._base_url!r}, {self._username!r})"

    async def __aenter__(self) -> Self:
        self._session = aiohttp.ClientSession(headers={"Authorization": self._authorization}, timeout=self._timeout)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def overview(self) -> dict[str, Any]:
        """The broker's `/api/overview` (version, node, totals): a readiness probe."""
        answer = await self.get_json(("overview",), action="read the broker overview")
        if not isinstance(answer, dict):
            raise ManagementAnswerInvalid(
                f"read the broker overview: expected a JSON object, found {type(answer).__name__}"
            )
        return answer

    async def get_json(
        self,
        path: Iterable[str],
        *,
        action: str,
        missing_ok: bool = False,
    ) -> Any:  # noqa: ANN401 - the management API answers arbitrary JSON; callers narrow it
        """GET `/api/<path>` (segments escaped); `None` on 404 when `missing_ok`."""
        status, body = await self._request("GET", path, action=action, expected={200}, missing_ok=missing_ok)
        if status == 404:
            return None
        return body

    async def put_json(self, path: Iterable[str], body: object, *, action: str) -> None:
        """PUT `body` at `/api/<path>`: create, or update in place (201 or 204)."""
        await self._request("PUT", path, action=action, expected={201, 204}, body=body)

    async def post_json(self, path: Iterable[str], body: object, *, action: str) -> None:
        """POST `body` to `/api/<path>` (201 or 204)."""
        await self._request("POST", path, action=action, expected={201, 204}, body=body)

    async def delete(
        self,
        path: Iterable[str],
        *,
        action: str,
        missing_ok: bool = False,
        reason: str | None = None,
    ) -> bool:
        """DELETE `/api/<path>`; False if it was already gone and `missing_ok`.

        `reason` is sent as `X-Reason`, which RabbitMQ passes on when closing a connection.
        """
        headers = {"X-Reason": reason} if reason is not None else None
        status, _ = await self._request(
            "DELETE", path, action=action, expected={204}, missing_ok=missing_ok, headers=headers
        )
        return status != 404

    def _url(self, path: Iterable[str]) -> yarl.URL:
        # Each segment fully escaped ("/" -> %2F: the default vhost is "/"), and the
        # URL marked encoded so nothing decodes it back into a path separator.
        segments = "/".join(quote(segment, safe="") for segment in path)
        return yarl.URL(f"{self._base_url}/api/{segments}", encoded=True)

    async def _request(
        self,
        method: str,
        path: Iterable[str],
        *,
        action: str,
        expected: set[int],
        missing_ok: bool = False,
        body: object = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, Any]:
        if self._session is None:
            raise BrokerAdminError(f"{action}: ManagementClient used outside `async with`")
        url = self._url(path)
        where = f"{method} {url.raw_path}"
        try:
            async with self._session.request(
                method,
                url,
                json=body if method in {"PUT", "POST"} else None,
                headers=headers,
            ) as response:
                status = response.status
                # Decoded leniently: the text is only parsed as JSON or quoted in an error.
                text = (await response.read()).decode("utf-8", errors="replace")
                content_type = response.content_type
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ManagementUnreachable(
                f"{action}: no answer from the management API at {self._base_url} "
                f"({where}): {type(exc).__name__}: {exc}"
            ) from exc
        if status == 404 and missing_ok:
            return status, None
        if status not in expected:
            raise _failure(action, where, status, expected, text)
        if status == 204 or not text:
            return status, None
        if content_type != "application/json":
            raise ManagementAnswerInvalid(f"{action}: expected application/json from {where}, found {content_type!r}")
        try:
            return status, _loads(text)
        except ValueError as exc:
            raise ManagementAnswerInvalid(f"{action}: expected JSON from {where}, found unparsable body") from exc


def _basic_authorization(username: str, password: str) -> str:
    # Built here: aiohttp.BasicAuth is deprecated since 3.13 and its replacement
    # (`encode_basic_auth`) does not exist in the oldest aiohttp we accept.
    if ":" in username:
        raise PlanInvalid(f"admin username: expected no ':' (HTTP Basic), found {username!r}")
    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


def _loads(text: str) -> Any:  # noqa: ANN401 - JSON of the management API, narrowed by callers
    return json.loads(text)


def _failure(action: str, where: str, status: int, expected: set[int], text: str) -> ManagementRequestFailed:
    reason = _reason(text)
    wanted = " or ".join(str(code) for code in sorted(expected))
    detail = f"{action}: expected HTTP {wanted} from {where}, found {status}"
    if reason:
        detail += f": {reason}"
    if status == 401:
        detail += " (check the administrator's username and password)"
        return ManagementRequestFailed(detail, status=status)
    if status == 400 and "inequivalent" in reason:
        return TopologyConflict(detail, status=status)
    return ManagementRequestFailed(detail, status=status)


def _reason(text: str) -> str:
    try:
        answer = _loads(text)
    except ValueError:
        return text[:200]
    if isinstance(answer, dict):
        return str(answer.get("reason") or answer.get("error") or "")[:300]
    return ""


# --- Operations -------------------------------------------------------------


async def provision(admin: ManagementClient, plan: NetworkPlan, passwords: Mapping[str, str]) -> None:
    """Make the broker hold exactly `plan`'s vhost, topology, limits, users and permissions.

    Idempotent: run it again on an existing network (after adding an agency, say)
    and it creates what is missing and re-asserts the rest. Passwords are keyed by
    broker username. An exchange or queue that exists with other arguments raises
    `TopologyConflict` rather than being replaced (that would drop its messages).
    Users dropped from the plan are not deleted here: use `revoke_agency`.
    """
    missing = sorted(user for user in plan.users if user not in passwords)
    if missing:
        raise PlanInvalid(f"passwords: expected one for each broker user, missing for {missing}")
    vhost = plan.vhost
    await admin.put_json(
        ("vhosts", vhost),
        {"description": "rogatory network", "tracing": False},
        action=f"create vhost {vhost!r}",
    )
    # The management API declares through the administrator's own permissions on
    # the vhost; RabbitMQ grants them to the creator of a vhost, but not when the
    # vhost was created otherwise (rabbitmqctl, definitions import).
    await _set_permissions(admin, vhost, admin.username, Permissions(".*", ".*", ".*"))

    topology = topology_for(plan)
    for exchange in topology.exchanges:
        await admin.put_json(
            ("exchanges", vhost, exchange.name),
            {
                "type": exchange.type,
                "durable": True,
                "auto_delete": False,
                "internal": False,
                "arguments": {},
            },
            action=f"declare {exchange.type} exchange {exchange.name!r} in vhost {vhost!r}",
        )
    for queue in topology.queues:
        await admin.put_json(
            ("queues", vhost, queue.name),
            {"durable": True, "auto_delete": False, "arguments": dict(queue.arguments)},
            action=f"declare quorum queue {queue.name!r} in vhost {vhost!r}",
        )
    for binding in topology.bindings:
        # Re-binding with the same key and arguments is a no-op for RabbitMQ.
        await admin.post_json(
            ("bindings", vhost, "e", binding.exchange, "q", binding.queue),
            {"routing_key": binding.routing_key, "arguments": {}},
            action=(
                f"bind queue {binding.queue!r} to exchange {binding.exchange!r} "
                f"with key {binding.routing_key!r} in vhost {vhost!r}"
            ),
        )

    # Before any user exists, so no party ever publishes into an unbounded queue.
    # PUT of the same policy is a no-op for RabbitMQ (204).
    policy = operator_policy_for(plan)
    await admin.put_json(
        ("operator-policies", vhost, policy.name),
        policy.body(),
        action=f"set operator policy {policy.name!r} on vhost {vhost!r}",
    )

    # Users last: no party can log in to a half-made network.
    for user, permissions in permissions_for(plan).items():
        await admin.put_json(
            ("users", user),
            # No tags: not a management, monitoring or administrator user.
            {"password": passwords[user], "tags": ""},
            action=f"create or update broker user {user!r}",
        )
        await _set_permissions(admin, vhost, user, permissions)


async def _set_permissions(admin: ManagementClient, vhost: str, user: str, permissions: Permissions) -> None:
    await admin.put_json(
        ("permissions", vhost, user),
        {
            "configure": permissions.configure,
            "write": permissions.write,
            "read": permissions.read,
        },
        action=f"set permissions of {user!r} on vhost {vhost!r}",
    )


async def revoke_agency(admin: ManagementClient, plan: NetworkPlan, agency: AgencyId) -> None:
    """Cut `agency` off the broker now: delete its user and close its open connections.

    Deleting the user removes its permissions and refuses new logins. RabbitMQ
    3.10 also closes the connections of a deleted user by itself
    (CONNECTION_FORCED); this does not rely on it (open channels cache their
    permission checks, so a surviving connection would keep its access): it
    closes them through the management API too and returns once the broker
    lists none. The inbox queue and its messages stay: they are the record of
    what was not delivered. Drop the agency from the plan, or the next
    `provision` brings its user back.
    """
    try:
        user = plan.agency_users[agency]
    except KeyError:
        raise PlanInvalid(f"revoke: expected an agency of vhost {plan.vhost!r}, found {agency!r}") from None
    # User first, so no new connection can be opened while the old ones are closed.
    await admin.delete(("users", user), action=f"delete broker user {user!r}", missing_ok=True)
    await close_connections_of(admin, user, reason=REVOCATION_REASON)


async def close_connections_of(
    admin: ManagementClient,
    user: str,
    *,
    reason: str,
    timeout_seconds: float = CONNECTION_CLOSE_TIMEOUT_SECONDS,
) -> int:
    """Close every open connection of broker user `user`, in any vhost; return how many were open.

    Uses the broker's connection tracking (`/api/connections/username/<user>`),
    which sees a connection as soon as it is open; `DELETE /api/connections/<name>`
    only finds connections once statistics have been emitted (up to 5 s later
    on 3.10: a fresh connection would escape). Closes again until the broker
    lists none, or raises `BrokerAdminError` after `timeout_seconds`.
    """
    action = f"close the connections of broker user {user!r}"
    open_at_start = len(await _connections_of(admin, user))
    deadline = asyncio.get_running_loop().time() + timeout_seconds
    while True:
        # Closes also what opened since the listing: the call needs no names.
        try:
            await admin.delete(("connections", "username", user), action=action, reason=reason)
        except ManagementRequestFailed as exc:
            # 3.10 answers 500 when a connection ends on its own while being closed
            # (the broker closes a deleted user's connections too); the listing
            # below tells whether anything is left.
            if exc.status != 500:
                raise
            failure: ManagementRequestFailed | None = exc
        else:
            failure = None
        remaining = await _connections_of(admin, user)
        if not remaining:
            return open_at_start
        if asyncio.get_running_loop().time() >= deadline:
            raise BrokerAdminError(
                f"{action}: expected none open after {timeout_seconds}s, found {len(remaining)} still listed"
            ) from failure
        await asyncio.sleep(CONNECTION_CLOSE_POLL_SECONDS)


async def _connections_of(admin: ManagementClient, user: str) -> list[object]:
    connections = await admin.get_json(
        ("connections", "username", user), action=f"list connections of broker user {user!r}"
    )
    if not isinstance(connections, list):
        raise ManagementAnswerInvalid(
            f"list connections of broker user {user!r}: expected a JSON list, found {type(connections).__name__}"
        )
    return connections


async def delete_network(admin: ManagementClient, plan: NetworkPlan) -> None:
    """Delete `plan`'s operator policy, its vhost (queues, messages, connections) and all its users.

    Tolerates parts that are already gone, so a failed set-up can be cleaned up.
    """
    # Deleting the vhost would take the policy with it; said here, not left implied.
    await admin.delete(
        ("operator-policies", plan.vhost, OPERATOR_POLICY_NAME),
        action=f"delete operator policy {OPERATOR_POLICY_NAME!r} of vhost {plan.vhost!r}",
        missing_ok=True,
    )
    await admin.delete(("vhosts", plan.vhost), action=f"delete vhost {plan.vhost!r}", missing_ok=True)
    for user in plan.users:
        await admin.delete(("users", user), action=f"delete broker user {user!r}", missing_ok=True)


async def queue_stats(admin: ManagementClient, vhost: str) -> list[QueueStats]:
    """The queues of `vhost` with their depth, consumers and rates, by name.

    Counts come from the broker's statistics, which lag by up to its emission
    interval (`collect_statistics_interval`, 5 s by default).
    """
    answer = await admin.get_json(("queues", vhost), action=f"list queues of vhost {vhost!r}")
    if not isinstance(answer, list):
        raise ManagementAnswerInvalid(
            f"list queues of vhost {vhost!r}: expected a JSON list, found {type(answer).__name__}"
        )
    stats = [_queue_stats(item, vhost) for item in answer]
    return sorted(stats, key=lambda s: s.name)


def _queue_stats(item: object, vhost: str) -> QueueStats:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise ManagementAnswerInvalid(
            f"list queues of vhost {vhost!r}: expected objects with a name, found {item!r:.80}"
        )
    figure = queue_figure(item)  # the one reading of the management API's queue statistics (runtime.broker)
    return QueueStats(
        name=figure["name"],
        queue_type=figure["type"],
        messages_ready=figure["messages_ready"],
        messages_unacknowledged=figure["messages_unacknowledged"],
        consumers=figure["consumers"],
        publish_rate=figure["publish_rate"],
        deliver_rate=figure["deliver_rate"],
    )


__all__ = [
    "CONNECTION_CLOSE_POLL_SECONDS",
    "CONNECTION_CLOSE_TIMEOUT_SECONDS",
    "DEFAULT_DELIVERY_LIMIT",
    "DEFAULT_MANAGEMENT_PORT",
    "DEFAULT_MANAGEMENT_TLS_PORT",
    "DEFAULT_MAX_QUEUE_BYTES",
    "DEFAULT_REQUEST_TIMEOUT_SECONDS",
    "OPERATOR_POLICY_NAME",
    "OPERATOR_POLICY_PRIORITY",
    "REVOCATION_REASON",
    "BindingSpec",
    "BrokerAdminError",
    "ExchangeSpec",
    "ManagementAnswerInvalid",
    "ManagementClient",
    "ManagementEndpoint",
    "ManagementRequestFailed",
    "ManagementUnreachable",
    "NetworkPlan",
    "OperatorPolicy",
    "Permissions",
    "PlanInvalid",
    "QueueSpec",
    "QueueStats",
    "Topology",
    "TopologyConflict",
    "close_connections_of",
    "delete_network",
    "management_url_from_amqp",
    "operator_policy_for",
    "permissions_for",
    "provision",
    "queue_stats",
    "revoke_agency",
]
