"""The service runner both services start on: keys, directory, HTTP site, tasks, signals, graceful stop.

`run_service` serves one aiohttp application, runs the service's background
tasks under supervision and stops everything in one order, whatever the
reason: at SIGTERM or SIGINT (or when `stopping` is set) the HTTP site stops
taking requests, each task finishes the work in hand (a consumer its
delivery, a relay its last bounded drain), the service's `last_words` run
(the gateway signs a last checkpoint), and its resources close in the order
given. If a task ends on its own, or a watchdog finds a consumer down for too
long (`runtime.supervision`), the same stop runs and `ServiceUnhealthy` is
raised: `service_main` turns it into exit status 70 for the supervisor
(systemd, a container runtime, `rogatory dev up`) to start the process again.
A configuration that cannot work is exit status 2, said in one log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal, TypeVar

import structlog
from aiohttp import web

from protocol.directory import NOTHING_HELD, Directory, verify_directory
from protocol.encoding import b64decode
from protocol.errors import ErrorCode, ProtocolError
from protocol.keys import SigningPublicKey
from protocol.keystore import unlock_keystore
from protocol.limits import Limits
from protocol.signing import SignedStatement
from runtime.errors import ConfigurationError, ServiceUnhealthy
from runtime.logs import configure_logging
from runtime.settings import ServiceSettings
from runtime.supervision import EXIT_UNHEALTHY, finish, supervise
from runtime.tls import listener_context

log = structlog.get_logger("rogatory.runner")

Clock = Callable[[], datetime]
Task = Callable[[asyncio.Event], Coroutine[Any, Any, None]]
"""A background task of a service: it runs until the event is set, then finishes what it holds."""

SHUTDOWN_TIMEOUT_S: Final = 10.0
"""How long the tasks may take to finish at shutdown before they are cancelled."""
EXIT_CONFIGURATION: Final = 2
"""Exit status of a process whose settings, keys or directory cannot work: starting it again would not help."""


def utc_now() -> datetime:
    """The wall clock, in UTC: the only clock a service reads."""
    return datetime.now(UTC)


# -- what every service reads at start ------------------------------------------------------------


def authority_key(encoded: str) -> SigningPublicKey:
    """The directory authority's public key from `ROGATORY_AUTHORITY_KEY` (base64 Ed25519)."""
    try:
        return SigningPublicKey(b64decode(encoded))
    except ProtocolError as exc:
        raise ConfigurationError("ROGATORY_AUTHORITY_KEY is not a base64 Ed25519 public key") from exc


def unlock_keys(keystore_file: Path, passphrase_file: Path) -> Mapping[str, bytes]:
    """The secrets of an encrypted keystore, by name (`ConfigurationError` if it cannot be unlocked)."""
    try:
        passphrase = passphrase_file.read_bytes().strip()
        return unlock_keystore(keystore_file.read_bytes(), passphrase)
    except (OSError, ProtocolError) as exc:
        raise ConfigurationError(f"cannot unlock the keystore {keystore_file}: {exc}") from exc


def key_named(keys: Mapping[str, bytes], name: str, keystore_file: Path) -> bytes:
    """One secret of an unlocked keystore (`ConfigurationError` if it holds none of that name)."""
    try:
        return keys[name]
    except KeyError as exc:
        raise ConfigurationError(f"the keystore {keystore_file} holds no {name} key") from exc


def read_directory(path: Path, authority: SigningPublicKey, *, now: datetime, limits: Limits) -> Directory:
    """The signed directory at `path`, verified against the authority's key (`ConfigurationError` if refused)."""
    try:
        signed = SignedStatement.from_json(path.read_bytes(), code=ErrorCode.MALFORMED_DIRECTORY)
        # The service checks the version it held before right after (agents.held_directory, gateway.directory).
        return verify_directory(signed, authority, now=now, held_version=NOTHING_HELD, limits=limits)
    except (OSError, ProtocolError) as exc:
        raise ConfigurationError(f"directory {path} refused: {exc}") from exc


# -- running --------------------------------------------------------------------------------------


async def _nothing() -> None:
    return None


@dataclass(frozen=True, slots=True)
class Service:
    """One service process as the runner sees it: what it serves, what runs beside, what closes after."""

    name: Literal["agent", "gateway"]
    settings: ServiceSettings
    app: web.Application
    tasks: Mapping[str, Task]
    """Background tasks by name (the name is what the logs and the supervisor's verdict call it)."""
    closers: Sequence[Callable[[], Awaitable[None]]]
    """What to close after the tasks ended, in this order (publishers, stores last)."""
    last_words: Callable[[], Awaitable[None]] = _nothing
    """Run once the tasks finished, before anything closes (the gateway's last checkpoint)."""
    started: Mapping[str, object] = field(default_factory=dict)
    """Figures for the `<name>_started` log line."""


async def run_service(service: Service, stopping: asyncio.Event) -> None:
    """Serve `service` until `stopping` is set (or SIGTERM/SIGINT), then stop it gracefully.

    Raises `ServiceUnhealthy` after the graceful stop if a task ended on its own.
    """
    runner = web.AppRunner(service.app, access_log=None)
    await runner.setup()
    tasks: list[asyncio.Task[None]] = []
    failure: ServiceUnhealthy | None = None
    try:
        host, port = service.settings.http_host, service.settings.http_port
        tls = listener_context(service.settings)
        site = web.TCPSite(runner, host, port, ssl_context=tls)
        await site.start()
        scheme = "https" if tls is not None else "http"
        log.info(_event(service.name, "started"), http=f"{scheme}://{host}:{port}", **service.started)
        _stop_on_signals(stopping)
        tasks = [asyncio.create_task(run(stopping), name=name) for name, run in service.tasks.items()]
        failure = await supervise(tasks, stopping)
        log.info(_event(service.name, "stopping"), reason="unhealthy" if failure is not None else "asked")
        await site.stop()  # no new connections from here on; requests in flight go on
        await runner.shutdown()
        await finish(tasks, timeout_s=SHUTDOWN_TIMEOUT_S)
        await service.last_words()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await runner.cleanup()
        for close in service.closers:
            await close()
        log.info(_event(service.name, "stopped"))
    if failure is not None:
        raise failure


def _event(service: str, what: str) -> str:
    """A log event of one service: `agent_started`, `gateway_stopping`..."""
    return f"{service}_{what}"


def _stop_on_signals(stopping: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stopping.set)


S = TypeVar("S", bound=ServiceSettings)


@contextlib.contextmanager
def _profiled(profile_dir: Path | None, name: str) -> Iterator[None]:
    """Run the body under cProfile and write `<name>-<pid>.prof` to `profile_dir` at the end; nothing if `None`.

    A diagnostic for `rogatory bench --profile-dir` (`ROGATORY_PROFILE_DIR`):
    the profile covers the whole life of the process, start and stop included.
    """
    if profile_dir is None:
        yield
        return
    import cProfile  # noqa: PLC0415 - only a profiled process needs it
    import os  # noqa: PLC0415 - the process id names the file

    profiler = cProfile.Profile()
    profiler.enable()
    try:
        yield
    finally:
        profiler.disable()
        profile_dir.mkdir(parents=True, exist_ok=True)
        path = profile_dir / f"{name}-{os.getpid()}.prof"
        profiler.dump_stats(path)
        log.info(_event(name, "profile_written"), path=str(path))


def service_main(
    name: Literal["agent", "gateway"],
    *,
    read_settings: Callable[[Mapping[str, str]], S],
    run: Callable[[S], Coroutine[Any, Any, None]],
) -> None:
    """The entry point of `python -m agents` / `python -m gateway`: settings, logs, run, exit status."""
    import os  # noqa: PLC0415 - the environment is read here and nowhere else

    try:
        settings = read_settings(os.environ)
    except ConfigurationError as exc:
        configure_logging("console", service=name)
        log.error(_event(name, "configuration_invalid"), error=str(exc))
        raise SystemExit(EXIT_CONFIGURATION) from exc
    configure_logging(settings.log_format, service=name)
    try:
        with _profiled(settings.profile_dir, name):
            asyncio.run(run(settings))
    except ConfigurationError as exc:
        log.error(_event(name, "configuration_invalid"), error=str(exc))
        raise SystemExit(EXIT_CONFIGURATION) from exc
    except ServiceUnhealthy as exc:
        log.error(_event(name, "exiting_unhealthy"), error=str(exc)[:500], exit_status=EXIT_UNHEALTHY)
        raise SystemExit(EXIT_UNHEALTHY) from exc


__all__ = [
    "EXIT_CONFIGURATION",
    "SHUTDOWN_TIMEOUT_S",
    "Clock",
    "Service",
    "Task",
    "authority_key",
    "key_named",
    "read_directory",
    "run_service",
    "service_main",
    "unlock_keys",
    "utc_now",
]
