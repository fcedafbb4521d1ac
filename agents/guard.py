"""Who may call the agent API, for what, and how often: tokens, scopes, revocation, rate limits.

A token is never stored: the agent holds the SHA-256 of each token it
accepts, each with its scopes (`ROGATORY_API_TOKENS_SHA256` entries are
`HEX` for every scope, or `HEX:submit+read` for some):

| scope      | allows                                                                      |
| ---------- | --------------------------------------------------------------------------- |
| `submit`   | `POST /v1/messages`, `POST /v1/attachments`, `POST /v1/connectivity-tests`  |
| `read`     | every `GET` (statuses, lists, cases, tests, schemas, downloads, `/metrics`) |
| `ack`      | `POST /v1/inbox/{message_id}/ack`                                           |
| `webhooks` | every method of `/v1/subscriptions` (with `read` too, to subscribe)         |

A token also carries a clearance, the highest protective marking of a
message document (`classification`: `UNCLASSIFIED` < `RESTRICTED` <
`CONFIDENTIAL` < `SECRET`) it may see: `HEX@RESTRICTED`,
`HEX:read@CONFIDENTIAL`. An entry without one is cleared for `SECRET`
(`DEFAULT_CLEARANCE`), so that entries written before clearances existed
keep reading what they read. A message marked above the token's clearance
is neither listed nor served (`cleared_for`), exactly as if it were not
there; a missing or unknown marking counts as `SECRET`.

A token is revoked by adding its SHA-256 to the revocation file
(`ROGATORY_API_TOKENS_REVOKED_FILE`, one hash a line): the file is read
again whenever it changes, so a revocation holds from the next request on,
without a restart. Each client (a token, or an address before it is
authenticated) has a token bucket: past it, `429` with `Retry-After`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from pathlib import Path
from typing import Final

import structlog
from aiohttp import web

log = structlog.get_logger("rogatory.agent.guard")

_HEX_SHA256: Final = re.compile(r"^[0-9a-f]{64}$")
MAX_CLIENTS: Final = 10_000
"""Buckets kept at once; beyond, the fullest (idle) ones are forgotten, so a flood of addresses cannot grow memory."""


class Scope(StrEnum):
    """What a token may do."""

    SUBMIT = "submit"
    READ = "read"
    ACK = "ack"
    WEBHOOKS = "webhooks"


ALL_SCOPES: Final = frozenset(Scope)


class Clearance(IntEnum):
    """The highest protective marking a token may see, in the order of `protocol.mla.Classification`."""

    UNCLASSIFIED = 0
    RESTRICTED = 1
    CONFIDENTIAL = 2
    SECRET = 3


DEFAULT_CLEARANCE: Final = Clearance.SECRET
"""The clearance of an entry that names none: what every token could read before clearances existed."""


def cleared_for(clearance: Clearance, marking: object) -> bool:
    """Whether `clearance` reaches `marking`; a missing or unknown marking counts as `SECRET` (fail closed)."""
    level = Clearance.__members__.get(marking, Clearance.SECRET) if isinstance(marking, str) else Clearance.SECRET
    return clearance >= level


def marking_of(document: bytes) -> object:
    """The `classification` of a stored message document (JSON the agent verified), or None."""
    try:
        parsed = json.loads(document)
    except ValueError:
        return None
    return parsed.get("classification") if isinstance(parsed, dict) else None


class TokenSpecInvalid(ValueError):
    """A token entry that is not `HEX[:scope+scope][@CLEARANCE]` (the message never quotes the entry)."""


def hash_token(token: str) -> str:
    """The SHA-256 (hex) under which a token is held."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass(frozen=True, slots=True)
class ApiToken:
    """An accepted token: its hash and scopes. `label` (a hash prefix) names it in logs."""

    sha256: str
    scopes: frozenset[Scope]
    clearance: Clearance = DEFAULT_CLEARANCE

    @property
    def label(self) -> str:
        """A short, non-secret name for logs and rate-limit buckets."""
        return self.sha256[:12]


def parse_token_specs(specs: Sequence[str]) -> tuple[ApiToken, ...]:
    """`HEX` (every scope) or `HEX:submit+read+ack` entries, each optionally `@CLEARANCE`, as settings give them."""
    tokens = []
    for index, spec in enumerate(specs):
        granted, has_clearance, level = spec.strip().partition("@")
        if has_clearance and level not in Clearance.__members__:
            raise TokenSpecInvalid(
                f"token entry {index + 1} names a clearance other than {', '.join(Clearance.__members__)}"
            )
        clearance = Clearance[level] if has_clearance else DEFAULT_CLEARANCE
        digest, _, scopes = granted.partition(":")
        digest = digest.lower()
        if not _HEX_SHA256.match(digest):
            raise TokenSpecInvalid(f"token entry {index + 1} is not the SHA-256 (64 hex digits) of a token")
        if not scopes:
            tokens.append(ApiToken(digest, ALL_SCOPES, clearance))
            continue
        try:
            chosen = frozenset(Scope(name) for name in scopes.split("+"))
        except ValueError:
            raise TokenSpecInvalid(
                f"token entry {index + 1} names a scope other than {', '.join(sorted(ALL_SCOPES))}"
            ) from None
        tokens.append(ApiToken(digest, chosen, clearance))
    return tuple(tokens)


OPEN_PATHS: Final = frozenset({"/healthz", "/openapi.json"})


def required_scope(method: str, path: str) -> Scope | None:
    """The scope a request needs; None for the open endpoints (`OPEN_PATHS`); anything else needs a token."""
    if path in OPEN_PATHS:
        return None
    if path == "/v1/subscriptions" or path.startswith("/v1/subscriptions/"):
        return Scope.WEBHOOKS
    if method in {"GET", "HEAD"}:
        return Scope.READ
    if method == "POST" and path.startswith("/v1/inbox/") and path.endswith("/ack"):
        return Scope.ACK
    return Scope.SUBMIT


@dataclass
class RevocationList:
    """Hashes of revoked tokens, from a file read again whenever its size or time changes."""

    path: Path | None
    _seen: tuple[float, int] | None = field(default=None, init=False)
    _revoked: frozenset[str] = field(default=frozenset(), init=False)

    def revoked(self) -> frozenset[str]:
        """The revoked hashes now. An unreadable file revokes nothing new but keeps what it revoked."""
        if self.path is None:
            return self._revoked
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return self._revoked
        except OSError as exc:
            log.warning("revocation_file_unreadable", error=type(exc).__name__)
            return self._revoked
        seen = (stat.st_mtime, stat.st_size)
        if seen != self._seen:
            try:
                lines = self.path.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                log.warning("revocation_file_unreadable", error=type(exc).__name__)
                return self._revoked
            self._revoked = self._revoked | frozenset(
                line.strip().lower() for line in lines if _HEX_SHA256.match(line.strip().lower())
            )
            self._seen = seen
            log.info("revocations_loaded", revoked=len(self._revoked))
        return self._revoked


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A token bucket: `per_second` sustained, `burst` at once."""

    per_second: float = 500.0
    """Sustained requests per second of one client: an agency system submits a few messages a minute, but
    reads statuses in bursts (hundreds at once after an outage); a flood runs into this."""
    burst: int = 5000
    """Requests at once: room for a system re-reading the status of thousands of messages after a restart."""


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """One token bucket per client; `admit` says how long to wait, or 0."""

    def __init__(self, limit: RateLimit, clock: Callable[[], float]) -> None:
        self._limit = limit
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def admit(self, client: str) -> float:
        """0 if `client` may go on now (one token taken), else the seconds until it may."""
        now = self._clock()
        bucket = self._buckets.get(client)
        if bucket is None:
            if len(self._buckets) >= MAX_CLIENTS:
                self._forget_idle(now)
            bucket = self._buckets[client] = _Bucket(float(self._limit.burst), now)
        bucket.tokens = min(float(self._limit.burst), bucket.tokens + (now - bucket.at) * self._limit.per_second)
        bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self._limit.per_second

    def _forget_idle(self, now: float) -> None:
        full = [
            client
            for client, bucket in self._buckets.items()
            if bucket.tokens + (now - bucket.at) * self._limit.per_second >= self._limit.burst
        ]
        for client in full or list(self._buckets)[: len(self._buckets) // 2]:
            del self._buckets[client]


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the guard decided about one request."""

    status: int
    """200 to go on; 401, 403 or 429 to refuse."""
    token: ApiToken | None = None
    retry_after_s: int = 0


class ApiGuard:
    """Authenticates a request's bearer token, checks its scope and its client's rate."""

    def __init__(
        self,
        tokens: Sequence[ApiToken],
        *,
        revocations: RevocationList | None = None,
        rate: RateLimit | None = None,
        clock: Callable[[], float],
    ) -> None:
        self._tokens = tuple(tokens)
        self._revocations = revocations or RevocationList(None)
        self._limiter = RateLimiter(rate or RateLimit(), clock)

    def holder(self, sha256: str) -> ApiToken | None:
        """The accepted, unrevoked token held under `sha256` (a subscription's owner), if it still is."""
        found = next((token for token in self._tokens if token.sha256 == sha256), None)
        if found is None or found.sha256 in self._revocations.revoked():
            return None
        return found

    def authenticate(self, token: str) -> ApiToken | None:
        """The accepted, unrevoked token whose hash matches (compared in constant time against every one)."""
        digest = hash_token(token)
        found = None
        for candidate in self._tokens:
            if hmac.compare_digest(digest, candidate.sha256):
                found = candidate
        if found is None or found.sha256 in self._revocations.revoked():
            return None
        return found

    def check(self, *, authorization: str, method: str, path: str, peer: str) -> Verdict:
        """Rate first (so that guessing tokens is slow too), then token, then scope."""
        scope = required_scope(method, path)
        if scope is None:
            return Verdict(200)
        scheme, _, presented = authorization.partition(" ")
        presented = presented.strip()
        token = self.authenticate(presented) if scheme.lower() == "bearer" and presented else None
        wait = self._limiter.admit(f"token:{token.label}" if token is not None else f"peer:{peer}")
        if wait > 0:
            return Verdict(429, token, retry_after_s=max(1, math.ceil(wait)))
        if token is None:
            return Verdict(401)
        if scope not in token.scopes:
            return Verdict(403, token)
        return Verdict(200, token)


CLEARANCE: Final = web.RequestKey("rogatory.clearance", Clearance)
"""Where `_authenticate` leaves the token's `Clearance` on the request, for every handler that reads messages."""
TOKEN: Final = web.RequestKey("rogatory.token", ApiToken)
"""Where `_authenticate` leaves the accepted token itself (its hash owns the webhook subscriptions it made)."""


def readable(request: web.Request, marked: bytes | str, *, message_id: str) -> bool:
    """Whether the request's token is cleared for a message (its stored document, or its marking).

    A refusal is logged (`classified_read_refused`, with the marking and the clearance, never the content):
    the agent keeps no audit trail of reads of its own, so this line is what oversight can see.
    """
    clearance = request.get(CLEARANCE, Clearance.UNCLASSIFIED)
    marking = marking_of(marked) if isinstance(marked, bytes) else marked
    if cleared_for(clearance, marking):
        return True
    log.warning(
        "classified_read_refused",
        message_id=message_id[:64],
        classification=str(marking)[:20],
        clearance=clearance.name,
        method=request.method[:10],
        path=request.path[:120],
    )
    return False


def refusal_code(response: object) -> str:
    """The stable `code` of a problem+json answer, for the refusal log line ("-" if it has none)."""
    body = getattr(response, "body", None)
    if not isinstance(body, bytes) or len(body) > 64 * 1024:
        return "-"
    try:
        code = json.loads(body).get("code")
    except (ValueError, AttributeError):
        return "-"
    return str(code)[:60] if code else "-"


__all__ = [
    "ALL_SCOPES",
    "CLEARANCE",
    "DEFAULT_CLEARANCE",
    "OPEN_PATHS",
    "TOKEN",
    "ApiGuard",
    "ApiToken",
    "Clearance",
    "RateLimit",
    "RateLimiter",
    "RevocationList",
    "Scope",
    "TokenSpecInvalid",
    "Verdict",
    "cleared_for",
    "hash_token",
    "marking_of",
    "parse_token_specs",
    "readable",
    "refusal_code",
    "required_scope",
]
