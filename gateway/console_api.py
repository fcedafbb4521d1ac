"""The consoles' side of the gateway's HTTP API: pages, `/metrics`, and read-only aggregates.

Mounted by `gateway.api.GatewayApi` (its `extra_routes`), under its
authentication middleware:

* `GET /`, `GET /console/{asset}` (anyone): the static console, HTML, JS and CSS
  shipped in `gateway/console/`; it holds no data and asks for a token;
* `GET /metrics` (the metrics scrape token, operators, auditors): Prometheus exposition
  (`gateway.metrics`), refreshed at most once per `METRICS_REFRESH_INTERVAL_S` however
  many scrapes arrive: a refresh runs queries and a broker management call;
* `GET /v1/console/whoami` (any token): the account's name and role, so the page shows who is
  signed in and its views;
* `GET /v1/console/overview` (operators): agencies, queues, log, dead letters, watched TLS
  certificates (`runtime.certificates`), alerts;
* `GET /v1/console/track?message_id=` or `?case_id=` (operators, auditors): messages
  with their relays and the audit-log timeline of each;
* `GET /v1/console/keys` (operators, auditors): the log's origin and public keys
  from the directory in force.

Everything here reads; the only writes an operator makes (re-drive,
discard) go through `/v1/ops/dead-letters`, which audit-logs them. No answer
holds content: the gateway has none.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import itertools
import re
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final

from aiohttp import web
from pydantic import ValidationError

from gateway.api import ACCOUNT, Role
from gateway.metrics import GatewayMetrics, store_witness_times
from gateway.store import GatewayStore, LeafRecord
from protocol.auditlog import decode_leaf
from protocol.directory import Directory
from protocol.encoding import b64encode, format_timestamp
from protocol.errors import ErrorCode, MalformedInput, ProtocolError
from protocol.evidence import EvidenceStatement
from protocol.ids import parse_message_id
from protocol.topology import INBOX_QUEUE_PREFIX
from runtime.broker import ManagementAccess, queue_figures
from runtime.certificates import CERTIFICATE_WARNING, read_watched
from runtime.errors import ManagementUnavailable
from runtime.http import Handler, problem
from runtime.metrics import CONTENT_TYPE, age_seconds

Route = tuple[str, str, Handler, frozenset[Role] | None]

OPERATORS: Final = frozenset({Role.OPERATOR})
AUDITORS: Final = frozenset({Role.OPERATOR, Role.AUDITOR})
ANY_TOKEN: Final = frozenset({Role.OPERATOR, Role.AUDITOR, Role.READER})
SCRAPERS: Final = frozenset({Role.METRICS, Role.OPERATOR, Role.AUDITOR})
"""Who may read `/metrics`: per-inbox traffic, counts by type and key ids are for operators, not agencies."""
METRICS_REFRESH_INTERVAL_S: Final = 5.0
"""How long one refreshed exposition is served again: shorter than any sane scrape interval (15 s and up)."""

ASSET_NAME: Final = re.compile(r"^[a-z0-9][a-z0-9-]{0,40}\.(html|js|css|svg)$")
ASSET_TYPES: Final = {
    "html": "text/html",
    "js": "text/javascript",
    "css": "text/css",
    "svg": "image/svg+xml",
}
SECURITY_HEADERS: Final = {
    # Only our own files: no CDN, no inline script, nothing fetched from elsewhere.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
CASE_ID: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,63}$")
MAX_TRACKED: Final = 200
"""Messages shown for one case: an MLA case has tens of messages; more is a query to narrow."""
MAX_TIMELINE: Final = 1000
"""Audit entries shown for one message: each step is one, a message has about ten."""


@dataclass(frozen=True, slots=True)
class AlertThresholds:
    """When the overview raises an alert; each a named figure with its unit and reason."""

    stale_checkpoint_s: float = 60.0
    """Entries waiting this long without a checkpoint: their inclusion proofs are late."""
    idle_checkpoint_s: float = 3600.0
    """With nothing new, a checkpoint is still signed this often; twice that is stale."""
    witness_grace_s: float = 120.0
    """A witness that has not cosigned anything new for this long is failing."""
    key_warning: timedelta = timedelta(days=30)
    """Keys (and the directory) expiring within this are flagged, in time to publish new ones."""
    certificate_warning: timedelta = CERTIFICATE_WARNING
    """TLS certificates expiring within this are flagged, as agents flag theirs (`runtime.certificates`)."""
    growth_window_s: float = 60.0
    """A queue whose ready count only rose over at least this long keeps growing."""
    growth_samples: int = 4
    """Samples needed in that window, so that two readings do not make a trend."""


@dataclass
class QueueHistory:
    """Recent ready counts per queue (sampled at most every `min_interval_s`), to see a queue that keeps growing."""

    min_interval_s: float = 5.0
    keep: int = 120
    samples: dict[str, deque[tuple[float, int]]] = field(default_factory=dict)

    def add(self, queue: str, at: float, ready: int) -> None:
        """Record one reading (ignored if the last one is more recent than `min_interval_s`)."""
        series = self.samples.setdefault(queue, deque(maxlen=self.keep))
        if series and at - series[-1][0] < self.min_interval_s:
            return
        series.append((at, ready))

    def growing(self, queue: str, *, window_s: float, min_samples: int) -> bool:
        """True if every reading in the last `window_s` (at least `min_samples` of them) rose or held, and rose."""
        series = list(self.samples.get(queue, ()))
        if len(series) < min_samples or series[-1][0] - series[0][0] < window_s:
            return False
        start = series[-1][0] - window_s
        recent = [ready for at, ready in series if at >= start]
        earlier = [reading for reading in series if reading[0] < start]
        if earlier:
            recent.insert(0, earlier[-1][1])
        if len(recent) < min_samples:
            return False
        return all(b >= a for a, b in itertools.pairwise(recent)) and recent[-1] > recent[0]


class ConsoleApi:
    """The console routes over the gateway's store, log and directory."""

    def __init__(
        self,
        *,
        store: GatewayStore,
        tree_size: Callable[[], int],
        directory: Callable[[], Directory],
        health: Callable[[], dict[str, Any]],
        metrics: GatewayMetrics,
        management: ManagementAccess | None,
        vhost: str,
        clock: Callable[[], datetime],
        thresholds: AlertThresholds | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        certificates: Sequence[Path] = (),
        metrics_refresh_interval_s: float = METRICS_REFRESH_INTERVAL_S,
    ) -> None:
        self._store = store
        self._tree_size = tree_size
        self._directory = directory
        self._health = health
        self._metrics = metrics
        self._management = management
        self._vhost = vhost
        self._clock = clock
        self._thresholds = thresholds or AlertThresholds()
        self._monotonic = monotonic
        self._certificates = tuple(certificates)
        self.history = QueueHistory()
        self._metrics_refresh_interval_s = metrics_refresh_interval_s
        self._exposition: tuple[float, bytes] | None = None  # (monotonic time of the refresh, exposition)
        self._exposition_lock = asyncio.Lock()  # concurrent scrapes wait for one refresh, not start their own

    def routes(self) -> list[Route]:
        """(method, path, handler, roles or None for anyone) of each route."""
        return [
            ("GET", "/", self.index, None),
            ("GET", "/console/{asset}", self.asset, None),
            ("GET", "/metrics", self.metrics, SCRAPERS),
            ("GET", "/v1/console/whoami", self.whoami, ANY_TOKEN),
            ("GET", "/v1/console/overview", self.overview, OPERATORS),
            ("GET", "/v1/console/track", self.track, AUDITORS),
            ("GET", "/v1/console/keys", self.keys, AUDITORS),
        ]

    # -- pages and metrics -------------------------------------------------------------

    async def index(self, _request: web.Request) -> web.StreamResponse:
        """The console's single page."""
        return _asset_response("index.html")

    async def asset(self, request: web.Request) -> web.StreamResponse:
        """One static file of the console, by a name from a strict pattern (no paths)."""
        name = request.match_info["asset"]
        if not ASSET_NAME.fullmatch(name):
            return problem(404, ErrorCode.NOT_FOUND, "Not found", "no such console file")
        return _asset_response(name)

    async def metrics(self, _request: web.Request) -> web.Response:
        """Prometheus exposition, with state read at most `metrics_refresh_interval_s` ago."""
        async with self._exposition_lock:
            if self._exposition is None or self._monotonic() - self._exposition[0] >= self._metrics_refresh_interval_s:
                await self._refresh_metrics()
                self._exposition = (self._monotonic(), self._metrics.render())
            body = self._exposition[1]
        response = web.Response(body=body)
        response.headers["Content-Type"] = CONTENT_TYPE
        return response

    async def _refresh_metrics(self) -> None:
        """Read the gauges now: store queries, the directory, certificates and a broker management call."""
        health = self._health()
        await self._metrics.refresh(
            store=self._store,
            tree_size=self._tree_size(),
            directory=self._directory(),
            consumers={
                "ingress": bool(health.get("ingress_connected")),
                "dead_letters": bool(health.get("dead_letters_connected")),
            },
            management=self._management,
            vhost=self._vhost,
            now=self._clock(),
            certificates=read_watched(self._certificates),
        )

    async def whoami(self, request: web.Request) -> web.Response:
        """The name and role of the account signed in (the middleware let only known, unrevoked tokens through)."""
        account = request[ACCOUNT]
        return web.json_response({"name": account.name, "role": str(account.role)})

    # -- overview ----------------------------------------------------------------------

    async def overview(self, _request: web.Request) -> web.Response:
        """Everything the operator's first screen shows, alerts included."""
        now = self._clock()
        directory = self._directory()
        health = self._health()
        queues, queues_error = await self._queues()
        by_name = {str(q["name"]): q for q in queues}
        latest = await self._store.latest_checkpoint()
        tree_size = self._tree_size()
        witnesses = await store_witness_times(self._store)
        held = await _count(self._store, "SELECT COUNT(*) FROM dead_letters WHERE state = 'held'")
        last_sent = dict(await _pairs(self._store, "SELECT sender, MAX(received_at) FROM messages GROUP BY sender"))
        last_received = dict(
            await _pairs(self._store, "SELECT recipient, MAX(updated_at) FROM relays GROUP BY recipient")
        )
        agencies = []
        for agency in directory.agencies:
            inbox = by_name.get(f"{INBOX_QUEUE_PREFIX}{agency.agency_id}")
            activity = [t for t in (last_sent.get(agency.agency_id), last_received.get(agency.agency_id)) if t]
            agencies.append(
                {
                    "agency_id": agency.agency_id,
                    "name": agency.name,
                    "inbox_queue": f"{INBOX_QUEUE_PREFIX}{agency.agency_id}",
                    "consumers": None if inbox is None else inbox["consumers"],
                    "connected": None if inbox is None else bool(inbox["consumers"]),
                    "last_activity": max(activity) if activity else None,
                    "last_cosigned_at": witnesses.get(agency.agency_id),
                    "keys": [
                        *(_key(k.key_id, "signing", k.valid_until, now) for k in agency.signing_keys),
                        *(_key(k.key_id, "encryption", k.valid_until, now) for k in agency.encryption_keys),
                    ],
                }
            )
        checkpoint = (
            None
            if latest is None
            else {
                "checkpoint_id": latest.checkpoint_id,
                "tree_size": latest.tree_size,
                "signed_at": latest.signed_at,
                "age_s": age_seconds(latest.signed_at, now),
                "cosignatures": len(latest.cosignatures),
            }
        )
        answer = {
            "generated_at": format_timestamp(now),
            "gateway": health,
            "directory": {"version": directory.version, "expires_at": format_timestamp(directory.expires_at)},
            "log": {
                "tree_size": tree_size,
                "awaiting_checkpoint": tree_size - (latest.tree_size if latest is not None else 0),
                "checkpoint": checkpoint,
            },
            "agencies": agencies,
            "queues": [q | {"growing": self._growing(str(q["name"]))} for q in queues],
            "queues_error": queues_error,
            "dead_letters": {"held": held},
            "certificates": self._certificate_views(now),
        }
        answer["alerts"] = self._alerts(answer, directory, witnesses, latest_signed_at=_at(latest), now=now)
        return web.json_response(answer)

    def _certificate_views(self, now: datetime) -> list[dict[str, Any]]:
        """Each watched certificate, `expiring` when within the warning threshold (or past it)."""
        # A few small local files, read on each refresh so that a renewed certificate shows at once.
        warning = self._thresholds.certificate_warning
        return [
            watched.view(now) | {"expiring": watched.expiring(now, warning)}
            for watched in read_watched(self._certificates)
        ]

    async def _queues(self) -> tuple[list[dict[str, Any]], str | None]:
        if self._management is None:
            return [], "the gateway has no access to the broker's management API (ROGATORY_MANAGEMENT_URL unset)"
        try:
            figures = await queue_figures(self._management, self._vhost, timeout_s=5.0)
        except ManagementUnavailable as exc:
            return [], str(exc)[:300]
        at = self._monotonic()
        for queue in figures:
            self.history.add(str(queue["name"]), at, int(queue["messages_ready"] or 0))
        return figures, None

    def _growing(self, queue: str) -> bool:
        t = self._thresholds
        return self.history.growing(queue, window_s=t.growth_window_s, min_samples=t.growth_samples)

    def _alerts(
        self,
        answer: dict[str, Any],
        directory: Directory,
        witnesses: dict[str, str],
        *,
        latest_signed_at: str | None,
        now: datetime,
    ) -> list[dict[str, str]]:
        """Every alert, the critical ones first."""
        t = self._thresholds
        alerts = [
            *_service_alerts(answer),
            *_queue_alerts(answer["queues"], t),
            *_log_alerts(answer["log"], t),
            *(
                _alert("warning", "witness_failing", f"Witness {agency.agency_id} is not cosigning", why)
                for agency in directory.agencies
                if (
                    why := _witness_failing(
                        witnesses.get(agency.agency_id), latest_signed_at, now=now, grace_s=t.witness_grace_s
                    )
                )
                is not None
            ),
            *_key_alerts(answer["agencies"], directory, t, now),
            *_certificate_alerts(answer["certificates"]),
        ]
        order = {"critical": 0, "warning": 1}
        return sorted(alerts, key=lambda a: order.get(a["severity"], 2))

    # -- tracking ----------------------------------------------------------------------

    async def track(self, request: web.Request) -> web.Response:
        """Messages by id or by case, each with its relays and its audit-log timeline."""
        query = request.query
        if "message_id" in query:
            message_id = str(parse_message_id(query["message_id"].strip()))
            rows = await _rows(self._store, _MESSAGES_BY_ID, [message_id])
            ids = [message_id]
        elif "case_id" in query:
            case_id = query["case_id"].strip()
            if not CASE_ID.fullmatch(case_id):
                raise MalformedInput("a case id is 1-64 letters, digits and . _ / -", code=ErrorCode.INVALID_PARAMETER)
            rows = await _rows(
                self._store,
                _MESSAGES_BY_CASE,
                [case_id, MAX_TRACKED],
            )
            ids = [str(row[1]) for row in rows]
        else:
            raise MalformedInput("give message_id or case_id", code=ErrorCode.INVALID_PARAMETER)
        messages = []
        known = set()
        for row in rows:
            message = _message(row)
            known.add(message["message_id"])
            message["relays"] = [
                {"recipient": str(r[0]), "state": str(r[1]), "updated_at": str(r[2])}
                for r in await _rows(
                    self._store,
                    "SELECT recipient, state, updated_at FROM relays WHERE sender = ? AND message_id = ? "
                    "ORDER BY recipient",
                    [message["sender"], message["message_id"]],
                )
            ]
            message["timeline"] = await self._timeline(message["message_id"])
            messages.append(message)
        for message_id in ids:
            if message_id not in known:
                timeline = await self._timeline(message_id)
                if timeline:  # refused before it was accepted: only the log knows it
                    messages.append({"message_id": message_id, "state": "not accepted", "timeline": timeline})
        return web.json_response({"messages": messages, "tree_size": self._tree_size()})

    async def _timeline(self, message_id: str) -> list[dict[str, Any]]:
        records = await self._store.leaves(message_id=message_id, limit=MAX_TIMELINE)
        return [_step(record) for record in records]

    async def keys(self, _request: web.Request) -> web.Response:
        """The log's origin and its public keys, as the directory in force lists them."""
        directory = self._directory()
        gateway = directory.gateway
        return web.json_response(
            {
                "log_origin": gateway.log_origin,
                "log_keys": [
                    {
                        "key_id": key.key_id,
                        "public_key": b64encode(key.public_key),
                        "valid_until": format_timestamp(key.valid_until),
                    }
                    for key in gateway.log_keys
                ],
                "directory_version": directory.version,
                "authority_key_id": directory.authority_key,
            }
        )


# -- helpers ---------------------------------------------------------------------------

_MESSAGES: Final = (
    "SELECT sender, message_id, message_type, case_id, recipients, created_at, expires_at, state, received_at, digest"
    " FROM messages"
)
_MESSAGES_BY_ID: Final = _MESSAGES + " WHERE message_id = ?"
_MESSAGES_BY_CASE: Final = _MESSAGES + " WHERE case_id = ? ORDER BY received_at LIMIT ?"


def _alert(severity: str, code: str, title: str, detail: str) -> dict[str, str]:
    return {"severity": severity, "code": code, "title": title, "detail": detail}


def _service_alerts(answer: dict[str, Any]) -> list[dict[str, str]]:
    alerts = []
    if not answer["gateway"].get("ingress_connected", True):
        alerts.append(
            _alert("critical", "gateway_not_consuming", "The gateway is not consuming", "its ingress consumer is down")
        )
    if answer["queues_error"]:
        alerts.append(_alert("warning", "queues_unavailable", "Queue figures unavailable", answer["queues_error"]))
    held = answer["dead_letters"]["held"]
    if held:
        alerts.append(
            _alert("warning", "dead_letters_present", f"{held} dead letter(s) held", "re-drive or discard them")
        )
    return alerts


def _queue_alerts(queues: list[dict[str, Any]], t: AlertThresholds) -> list[dict[str, str]]:
    alerts = []
    for queue in queues:
        name = str(queue["name"])
        if name.startswith(INBOX_QUEUE_PREFIX) and queue["consumers"] == 0:
            agency = name.removeprefix(INBOX_QUEUE_PREFIX)
            waiting = queue["messages_ready"] or 0
            alerts.append(
                _alert(
                    "critical",
                    "inbox_without_consumer",
                    f"{agency} is not connected",
                    f"nobody consumes {name}; {waiting} message(s) wait there",
                )
            )
        if queue["growing"]:
            ready = queue["messages_ready"]
            alerts.append(
                _alert(
                    "warning",
                    "queue_growing",
                    f"{name} keeps growing",
                    f"{ready} ready, rising for over {t.growth_window_s:.0f} s",
                )
            )
    return alerts


def _log_alerts(log_state: dict[str, Any], t: AlertThresholds) -> list[dict[str, str]]:
    checkpoint = log_state["checkpoint"]
    waiting = log_state["awaiting_checkpoint"]
    if waiting and (checkpoint is None or checkpoint["age_s"] > t.stale_checkpoint_s):
        latest = "missing" if checkpoint is None else f"{checkpoint['age_s']:.0f} s old"
        detail = f"{waiting} entries wait for a checkpoint; the latest is {latest}"
        return [_alert("critical", "checkpoint_stale", "The audit log's checkpoint is stale", detail)]
    if checkpoint is not None and checkpoint["age_s"] > 2 * t.idle_checkpoint_s:
        detail = f"{checkpoint['age_s']:.0f} s old"
        return [_alert("warning", "checkpoint_stale", "No checkpoint for a long time", detail)]
    return []


def _key_alerts(
    agencies: list[dict[str, Any]], directory: Directory, t: AlertThresholds, now: datetime
) -> list[dict[str, str]]:
    alerts = [
        _alert(
            "critical" if key["expires_in_s"] <= 0 else "warning",
            "key_expiring",
            f"{item['agency_id']}'s {key['use']} key expires {key['valid_until'][:10]}",
            f"key {key['key_id']}: publish its successor in the directory",
        )
        for item in agencies
        for key in item["keys"]
        if key["expires_in_s"] < t.key_warning.total_seconds()
    ]
    if (directory.expires_at - now) < t.key_warning:
        expires = format_timestamp(directory.expires_at)[:10]
        alerts.append(
            _alert(
                "warning",
                "directory_expiring",
                f"The directory expires {expires}",
                "the authority must sign a new version",
            )
        )
    return alerts


def _certificate_alerts(certificates: list[dict[str, Any]]) -> list[dict[str, str]]:
    """A watched certificate marked `expiring` (critical once expired), or one that could not be read."""
    alerts = []
    for item in certificates:
        if not item["readable"]:
            detail = f"{item['path']}: {item['problem']}"
            alerts.append(_alert("warning", "certificate_unreadable", "A watched certificate is unreadable", detail))
            continue
        if not item["expiring"]:
            continue
        left = item["expires_in_s"]
        days = item["days_left"]
        title = (
            f"Certificate {item['subject']} expired {item['not_after'][:10]}"
            if left <= 0
            else f"Certificate {item['subject']} expires in {days} day{'' if days == 1 else 's'}"
        )
        detail = f"{item['path']}, issued by {item['issuer']}, valid until {item['not_after']}: renew it"
        alerts.append(_alert("critical" if left <= 0 else "warning", "certificate_expiring", title, detail))
    return alerts


def _message(row: Sequence[Any]) -> dict[str, Any]:
    keys = (
        "sender",
        "message_id",
        "message_type",
        "case_id",
        "recipients",
        "created_at",
        "expires_at",
        "state",
        "received_at",
        "digest",
    )
    message = {key: str(value) for key, value in zip(keys, row, strict=True)}
    return message | {"recipients": [r for r in message["recipients"].split(",") if r]}


def _step(record: LeafRecord) -> dict[str, Any]:  # noqa: PLR0911 - one answer per kind of leaf
    """One audit-log entry as a step of a timeline: what, when, by whom; never content."""
    step: dict[str, Any] = {
        "index": record.index,
        "kind": record.kind,
        "identity": record.identity,
        "appended_at": record.appended_at,
    }
    try:
        leaf = decode_leaf(record.leaf)
    except ProtocolError:
        return step | {"label": "unreadable entry"}
    if leaf.kind == "evidence":
        try:
            statement = EvidenceStatement.model_validate_json(leaf.evidence.payload)
        except ValidationError:
            return step | {"label": "evidence (unreadable statement)"}
        reason = statement.reason
        return step | {
            "label": str(statement.evidence_type),
            "at": format_timestamp(statement.at),
            "issuer": statement.issuer,
            "recipient": statement.recipient,
            "reason": None if reason is None else f"{reason.code}: {reason.detail}",
        }
    if leaf.kind == "dead_letter":
        return step | {
            "label": "DEAD_LETTER",
            "at": format_timestamp(leaf.at),
            "issuer": "broker",
            "reason": f"{leaf.reason} in {leaf.queue} after {leaf.death_count} deliveries",
        }
    if leaf.kind == "operator_action":
        return step | {
            "label": f"OPERATOR_{leaf.action.upper()}",
            "at": format_timestamp(leaf.at),
            "issuer": leaf.operator,
            "reason": leaf.detail,
        }
    if leaf.kind == "rejected_input":
        return step | {
            "label": "INPUT_REJECTED",
            "at": format_timestamp(leaf.at),
            "reason": f"{leaf.reason.code}: {leaf.reason.detail}",
        }
    return step | {"label": leaf.kind.upper()}


def _key(key_id: str, use: str, valid_until: datetime, now: datetime) -> dict[str, Any]:
    return {
        "key_id": key_id,
        "use": use,
        "valid_until": format_timestamp(valid_until),
        "expires_in_s": (valid_until - now).total_seconds(),
    }


def _witness_failing(last: str | None, latest_signed_at: str | None, *, now: datetime, grace_s: float) -> str | None:
    """Why a witness counts as failing, or None: nothing cosigned for `grace_s` while there was something new."""
    if latest_signed_at is None:
        return None
    if last is None:
        if age_seconds(latest_signed_at, now) < grace_s:
            return None
        return (
            f"it has never cosigned a checkpoint; the latest was signed {age_seconds(latest_signed_at, now):.0f} s ago"
        )
    if last >= latest_signed_at or age_seconds(last, now) < grace_s:
        return None
    return f"its last cosignature is {age_seconds(last, now):.0f} s old; newer checkpoints wait"


def _at(record: Any) -> str | None:  # noqa: ANN401 - a CheckpointRecord or None
    return None if record is None else str(record.signed_at)


def _asset_response(name: str) -> web.StreamResponse:
    resource = importlib.resources.files("gateway").joinpath("console", name)
    if not resource.is_file():
        return problem(404, ErrorCode.NOT_FOUND, "Not found", "no such console file")
    extension = name.rsplit(".", 1)[1]
    response = web.Response(body=resource.read_bytes(), content_type=ASSET_TYPES[extension], charset="utf-8")
    response.headers.update(SECURITY_HEADERS)
    return response


async def _rows(store: GatewayStore, query: str, params: Sequence[object] = ()) -> Sequence[Sequence[Any]]:
    """Read-only queries over the store's reader connection (the consoles only)."""
    return await store._read.fetchall(query, params)  # noqa: SLF001 - read-only, kept out of the store's write API


async def _pairs(store: GatewayStore, query: str) -> list[tuple[str, str]]:
    return [(str(row[0]), str(row[1])) for row in await _rows(store, query) if row[1] is not None]


async def _count(store: GatewayStore, query: str) -> int:
    rows = await _rows(store, query)
    return int(str(rows[0][0])) if rows else 0


__all__ = ["AlertThresholds", "ConsoleApi", "QueueHistory"]
