"""Several agencies in one agent process, as one X-Road security server hosts many members.

Host mode is the agent started with `ROGATORY_HOSTED_AGENCIES_DIR` set: that
directory holds one `<AGENCY>.env` file per hosted agency (`KEY=VALUE`
lines of the agent's own `ROGATORY_*` variables, `#` comments). Each agency
is built exactly as a single agent is (`agents.service.open_agency`), from
the process environment with its file laid over it, and keeps everything of
its own: keystore and keys, data directory and store, API tokens, broker
identity (its own AMQP connections, user and client certificate), inbox
queue, outbox relay, witness, webhooks, retention. What the agencies share
is the process, its event loop and its one HTTP listener: the listener's
variables (`PROCESS_VARIABLES`) come from the process environment only, and
a hosted file that sets one is refused.

The API is the single agent's, path for path (docs/API.md): a request goes
to the agency its bearer token belongs to (`AgencyRouter`), and is answered
by that agency's own application, middlewares and guard included. A token
of agency A therefore never reaches B's store: B's message ids, cases and
subscriptions are, for A's token, ids A does not hold (404), exactly as a
single agent answers for a foreign id. A token hash configured for two hosted
agencies is refused at start (it could not be routed). `GET /healthz` (open)
answers for every hosted agency (`agencies: {AGENCY: answer}`, 503 unless
each is healthy); `GET /openapi.json` is the one API's; `GET /metrics` is the
token's agency's own exposition.

Start and stop: agencies open one after the other (progress logged every
`PROGRESS_EVERY`), and their tasks start `START_SPACING_S` apart; one
that cannot start (a keystore that does not unlock, a key the directory
does not list) stops the start with a configuration error
naming the agency, after closing those already opened. Each agency's tasks
run under the one runner's supervision, named `AGENCY/task` and logged with
the agency bound; stopping stops every agency's tasks, then closes every
agency's connections and stores (`runtime.runner`). A task of one agency that
ends on its own stops the process (exit status 70) for its supervisor to start
it again, as a single agent does: the agencies' data is all a restart needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import resource
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import aiohttp
import structlog
from aiohttp import web

from agents.directory_feed import DirectoryUnavailable, gateway_directory_source
from agents.guard import RateLimit, RateLimiter, hash_token, parse_token_specs, required_scope
from agents.service import AgencyParts, open_agency
from agents.settings import AgentSettings
from protocol.directory import Directory
from protocol.errors import ErrorCode
from protocol.ids import AgencyId
from protocol.keys import SigningPublicKey
from runtime.directory import Source
from runtime.errors import ConfigurationError, ServiceUnhealthy, TransientFailure
from runtime.http import HEALTHY_STATUSES, json_answer, problem, unauthorized
from runtime.logs import configure_logging
from runtime.runner import EXIT_CONFIGURATION, Clock, Service, Task, read_directory, run_service, utc_now
from runtime.supervision import EXIT_UNHEALTHY
from runtime.tls import client_context

log = structlog.get_logger("rogatory.agent.host")

HOSTED_AGENCIES_VARIABLE: Final = "ROGATORY_HOSTED_AGENCIES_DIR"
"""The variable that starts the agent in host mode: the directory of the hosted agencies' `.env` files."""
PROCESS_VARIABLES: Final = frozenset(
    {
        "ROGATORY_HTTP_HOST",
        "ROGATORY_HTTP_PORT",
        "ROGATORY_HTTP_TLS_CERT_FILE",
        "ROGATORY_HTTP_TLS_KEY_FILE",
        "ROGATORY_UNSAFE_PLAIN_HTTP",
        "ROGATORY_LOG_FORMAT",
        HOSTED_AGENCIES_VARIABLE,
    }
)
"""The process's own variables (its one listener, its logs): from its environment, never from a hosted file."""
PROGRESS_EVERY: Final = 50
"""A host logs its start-up progress every this many agencies opened."""
START_SPACING_S: Final = 0.05
"""Seconds between two hosted agencies' starts (their broker connections, TLS handshakes, first polls): a host of
500 starts over 25 s instead of opening 1,000 broker connections at once, which stalls a small broker for tens
of seconds, every other client's connections included."""


@dataclass(frozen=True, slots=True)
class HostSettings:
    """The agencies one host process runs, each with its own settings; the listener is the process's."""

    agencies: tuple[AgentSettings, ...]

    @property
    def listener(self) -> AgentSettings:
        """Whose `http_*` settings the one listener takes (they are the same for every hosted agency)."""
        return self.agencies[0]

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> HostSettings:
        """The hosted agencies of `ROGATORY_HOSTED_AGENCIES_DIR`, each file laid over the process environment.

        Raises `ConfigurationError` naming the file (and the variable) that cannot work.
        """
        raw = environ.get(HOSTED_AGENCIES_VARIABLE, "")
        if not raw:
            raise ConfigurationError(f"{HOSTED_AGENCIES_VARIABLE} is not set")
        folder = Path(raw)
        try:
            files = sorted(folder.glob("*.env"))
        except OSError as exc:
            raise ConfigurationError(f"{HOSTED_AGENCIES_VARIABLE}: cannot list {folder}: {exc}") from exc
        if not files:
            raise ConfigurationError(f"{HOSTED_AGENCIES_VARIABLE}: no hosted agency (no *.env file) in {folder}")
        base = {key: value for key, value in environ.items() if key != HOSTED_AGENCIES_VARIABLE}
        agencies = tuple(_agency_settings(path, base) for path in files)
        _check_distinct(agencies)
        return cls(agencies)


def read_env_file(path: Path) -> dict[str, str]:
    """`KEY=VALUE` lines (blank lines and `#` comments skipped; no quoting, no expansion)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeError) as exc:
        raise ConfigurationError(f"hosted agency file {path}: cannot read it: {exc}") from exc
    values: dict[str, str] = {}
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key, equals, value = stripped.partition("=")
        if not equals or not key.strip().startswith("ROGATORY_"):
            raise ConfigurationError(f"hosted agency file {path}, line {number}: expected ROGATORY_NAME=value")
        values[key.strip()] = value.strip()
    return values


def _agency_settings(path: Path, base: Mapping[str, str]) -> AgentSettings:
    values = read_env_file(path)
    own = sorted(set(values) & PROCESS_VARIABLES)
    if own:
        raise ConfigurationError(
            f"hosted agency file {path}: {', '.join(own)} belong to the host process (its environment), "
            "not to an agency"
        )
    try:
        return AgentSettings.from_environ({**base, **values})
    except ConfigurationError as exc:
        raise ConfigurationError(f"hosted agency file {path}: {exc}") from exc


def _check_distinct(agencies: Sequence[AgentSettings]) -> None:
    """Each agency once, each data directory and each API token its own (a shared token could not be routed)."""
    seen: dict[str, str] = {}
    data_dirs: dict[Path, str] = {}
    for settings in agencies:
        if settings.agency in seen.values():
            raise ConfigurationError(f"agency {settings.agency} is hosted twice")
        resolved = settings.data_dir.resolve()
        if resolved in data_dirs:
            raise ConfigurationError(
                f"agencies {data_dirs[resolved]} and {settings.agency} have the same data directory {resolved}"
            )
        data_dirs[resolved] = settings.agency
        for token in parse_token_specs(settings.api_tokens_sha256):
            other = seen.get(token.sha256)
            if other is not None:
                raise ConfigurationError(
                    f"agencies {other} and {settings.agency} accept the same API token ({token.label}): "
                    "each hosted agency has tokens of its own"
                )
            seen[token.sha256] = settings.agency


class AgencyRouter:
    """The host's one HTTP application: each request to the application of the agency its token belongs to.

    Routing compares the SHA-256 of the presented token with the hosted
    agencies' configured hashes; the agency's own guard then authenticates it
    again (revocations, scopes, rate limits) as a single agent does. A token
    no hosted agency accepts is a 401, rate-limited per peer like a guessed
    token at a single agent (429 past the limit).
    """

    def __init__(self, agencies: Sequence[AgencyParts], *, rate: RateLimit) -> None:
        if not agencies:
            raise ConfigurationError("a host runs at least one agency")
        self._agencies = tuple(agencies)
        self._by_token: dict[str, AgencyParts] = {
            token.sha256: parts
            for parts in self._agencies
            for token in parse_token_specs(parts.settings.api_tokens_sha256)
        }
        self._guessers = RateLimiter(rate, time.monotonic)
        for parts in self._agencies:
            parts.app.freeze()  # served through this application, never started on its own

    def app(self) -> web.Application:
        """The application the host's listener serves."""
        app = web.Application(client_max_size=max(parts.app._client_max_size for parts in self._agencies))  # noqa: SLF001 - the size each agency's own application takes
        app.router.add_get("/healthz", self.healthz)
        app.router.add_route("*", "/{path:.*}", self.dispatch)
        return app

    def agency_of(self, authorization: str) -> AgencyParts | None:
        """The hosted agency whose configured token this `Authorization` header presents, if any."""
        scheme, _, presented = authorization.partition(" ")
        presented = presented.strip()
        if scheme.lower() != "bearer" or not presented:
            return None
        # A lookup by hash: timing reveals at most something about a SHA-256 of the guess, nothing of a token.
        return self._by_token.get(hash_token(presented))

    async def healthz(self, _request: web.Request) -> web.Response:
        """`GET /healthz`: every hosted agency's answer; 200 while each is healthy, else 503."""
        answers = {str(parts.agency): dict(parts.health()) for parts in self._agencies}
        healthy = all(answer.get("status") in HEALTHY_STATUSES for answer in answers.values())
        unhealthy = sorted(agency for agency, answer in answers.items() if answer.get("status") not in HEALTHY_STATUSES)
        return json_answer(
            {
                "status": "ok" if healthy else "degraded",
                "service": "agent",
                "hosted_agencies": len(answers),
                **({"unhealthy_agencies": unhealthy} if unhealthy else {}),
                "agencies": answers,
            },
            status=200 if healthy else 503,
        )

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        """Hand the request, unchanged, to its agency's application (middlewares, guard and handlers)."""
        parts = self.agency_of(request.headers.get("Authorization", ""))
        if parts is None:
            if required_scope(request.method, request.path) is None:
                parts = self._agencies[0]  # an open endpoint (`/openapi.json`): the same for every agency
            else:
                wait = self._guessers.admit(f"peer:{request.remote or '-'}")
                if wait > 0:
                    response = problem(
                        429, ErrorCode.RATE_LIMITED, "Too many requests", "this client is over its rate limit"
                    )
                    response.headers["Retry-After"] = str(max(1, int(wait + 0.999)))
                    return response
                return unauthorized("rogatory-agent")
        with structlog.contextvars.bound_contextvars(agency=parts.agency):
            return await parts.app._handle(request)  # noqa: SLF001 - aiohttp's own entry to an application


class SharedDirectorySource:
    """One poll of a gateway's `GET /v1/directory` for every hosted agency that asks within `max_age_s`.

    Each agency's watch still verifies what it is given (`runtime.directory`); only the fetch is shared, so
    that a host of hundreds asks the gateway once per interval, not once per agency. A failed fetch is
    remembered for as long, so that an away gateway is not asked again by each agency.
    """

    def __init__(self, fetch: Source, *, max_age_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._fetch = fetch
        self._max_age_s = max_age_s
        self._clock = clock
        self._lock = asyncio.Lock()
        self._at: float | None = None
        self._answer: bytes = b""
        self._failure: str | None = None

    async def __call__(self) -> bytes:
        """The gateway's signed directory, as fetched at most `max_age_s` ago."""
        async with self._lock:
            if self._at is None or self._clock() - self._at >= self._max_age_s:
                try:
                    self._answer, self._failure = await self._fetch(), None
                except TransientFailure as exc:
                    self._failure = str(exc)
                self._at = self._clock()
            if self._failure is not None:
                raise DirectoryUnavailable(self._failure)  # a new one each time: none grows a traceback per agency
            return self._answer


@dataclass
class SharedDirectories:
    """What a host's agencies share of their directory: its polls, their sessions, its parsed versions.

    One poll of `GET /v1/directory` per gateway (URL and CA), and one parsed directory per file content.
    """

    sources: dict[tuple[str, Path | None], SharedDirectorySource] = field(default_factory=dict)
    sessions: list[aiohttp.ClientSession] = field(default_factory=list)
    directories: dict[tuple[bytes, bytes], Directory] = field(default_factory=dict)

    def for_agency(self, settings: AgentSettings) -> Source | None:
        """The poll of the agency's gateway, shared with the other agencies of the same gateway."""
        if settings.gateway_url is None:
            return None
        key = (settings.gateway_url, settings.gateway_ca_file)
        if key not in self.sources:
            session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=15),
                connector=aiohttp.TCPConnector(ssl=client_context(settings.gateway_ca_file)),
            )
            self.sessions.append(session)
            fetch = gateway_directory_source(session, settings.gateway_url, limits=settings.limits)
            self.sources[key] = SharedDirectorySource(fetch, max_age_s=settings.directory_reload_s)
        return self.sources[key]

    def read_directory(self, settings: AgentSettings, authority: SigningPublicKey, now: datetime) -> Directory:
        """The directory file verified once for every agency that starts from the same bytes and authority.

        The agencies then hold one parsed directory, not one each (a directory of 500 agencies is about 460 KB
        signed), until a newer version arrives.
        """
        try:
            raw = settings.directory_file.read_bytes()
        except OSError as exc:
            raise ConfigurationError(f"directory {settings.directory_file} refused: {exc}") from exc
        key = (hashlib.sha256(raw).digest(), authority.raw)
        if key not in self.directories:
            self.directories[key] = read_directory(settings.directory_file, authority, now=now, limits=settings.limits)
        return self.directories[key]

    async def close(self) -> None:
        """Close the sessions (after the agencies stopped)."""
        for session in self.sessions:
            await session.close()


async def open_agencies(host: HostSettings, shared: SharedDirectories, clock: Clock = utc_now) -> list[AgencyParts]:
    """Open every hosted agency, one after the other; on a failure, close those opened and name the agency.

    The agencies poll the gateway's directory through `shared`, which the caller closes after them.
    """
    opened: list[AgencyParts] = []
    started = time.monotonic()
    try:
        for settings in host.agencies:
            try:
                # In a task of its own, so that the agency the opening binds to the log context stays there.
                opening = open_agency(
                    settings,
                    clock,
                    directory_source=shared.for_agency(settings),
                    directory_reader=shared.read_directory,
                )
                opened.append(await asyncio.create_task(opening))
            except ConfigurationError as exc:
                raise ConfigurationError(f"hosted agency {settings.agency} cannot start: {exc}") from exc
            if len(opened) % PROGRESS_EVERY == 0 and len(opened) < len(host.agencies):
                log.info("host_opening", opened=len(opened), of=len(host.agencies))
    except BaseException:
        for parts in opened:
            await parts.close()
        raise
    log.info("host_opened", agencies=len(opened), seconds=round(time.monotonic() - started, 1))
    return opened


def _bound(agency: AgencyId, task: Task, *, after_s: float) -> Task:
    """The task, started `after_s` seconds late, with its agency bound to the log context (and its tasks')."""

    async def run(stopping: asyncio.Event) -> None:
        structlog.contextvars.bind_contextvars(agency=agency)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), timeout=after_s)
        await task(stopping)  # a task asked to stop before it began finishes at once

    return run


async def run_host(host: HostSettings, *, stopping: asyncio.Event | None = None, clock: Clock = utc_now) -> None:
    """Run every hosted agency in this process until `stopping` is set (or SIGTERM/SIGINT arrives)."""
    shared = SharedDirectories()
    try:
        opened = await open_agencies(host, shared, clock)
    except BaseException:
        await shared.close()
        raise
    listener = host.listener
    router = AgencyRouter(opened, rate=RateLimit(listener.api_rate_per_s, listener.api_rate_burst))
    tasks: dict[str, Task] = {
        f"{parts.agency}/{name}": _bound(parts.agency, task, after_s=index * START_SPACING_S)
        for index, parts in enumerate(opened)
        for name, task in parts.tasks.items()
    }
    started: dict[str, Any] = {"hosted_agencies": len(opened)}
    await run_service(
        Service(
            name="agent",
            settings=listener,
            app=router.app(),
            tasks=tasks,
            closers=[*(close for parts in opened for close in parts.closers), shared.close],
            started=started,
        ),
        stopping or asyncio.Event(),
    )


DESCRIPTORS_PER_AGENCY: Final = 16
"""About what one hosted agency holds open (measured: 14): AMQP and HTTP sockets, SQLite files and their WAL."""


def _raise_descriptor_limit(agencies: int) -> None:
    """Raise the soft limit on open files to the hard one; warn if even that is short for `agencies`."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    wanted = 64 + DESCRIPTORS_PER_AGENCY * agencies
    if soft != resource.RLIM_INFINITY and soft < wanted:
        log.warning("host_descriptor_limit_low", limit=soft, wanted=wanted, agencies=agencies)


def main(environ: Mapping[str, str]) -> None:
    """`python -m agents` with `ROGATORY_HOSTED_AGENCIES_DIR` set: settings, logs, run, exit status.

    The statuses are a single agent's (`runtime.runner.service_main`): 2 for a configuration that cannot
    work (naming the agency), 70 when a task ended on its own.
    """
    try:
        host = HostSettings.from_environ(environ)
    except ConfigurationError as exc:
        configure_logging("console", service="agent")
        log.error("agent_configuration_invalid", error=str(exc))
        raise SystemExit(EXIT_CONFIGURATION) from exc
    configure_logging(host.listener.log_format, service="agent")
    _raise_descriptor_limit(len(host.agencies))
    try:
        asyncio.run(run_host(host))
    except ConfigurationError as exc:
        log.error("agent_configuration_invalid", error=str(exc))
        raise SystemExit(EXIT_CONFIGURATION) from exc
    except ServiceUnhealthy as exc:
        log.error("agent_exiting_unhealthy", error=str(exc)[:500], exit_status=EXIT_UNHEALTHY)
        raise SystemExit(EXIT_UNHEALTHY) from exc


__all__ = [
    "HOSTED_AGENCIES_VARIABLE",
    "PROCESS_VARIABLES",
    "AgencyRouter",
    "HostSettings",
    "SharedDirectories",
    "SharedDirectorySource",
    "main",
    "open_agencies",
    "read_env_file",
    "run_host",
]
