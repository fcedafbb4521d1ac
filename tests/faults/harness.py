"""The fault-injection harness: a real network of processes, real traffic, real faults, real records.

`FaultNetwork` is a `rogatory dev up` network (gateway and four agents as
separate processes) on a broker of the test's choosing: the machine's
RabbitMQ through a `FaultProxy`, a private node the test may kill, or a
private cluster. It kills services with SIGKILL and starts them again the
way operators do, with `rogatory dev up` on the same state directory;
`Supervisor` does that by itself, like systemd's `Restart=always`.

`Traffic` is an agency system: it opens cases (each `MLA_REQUEST` delivered
before its notes), then submits notes of about 2 KB from `BD-MOHA-PSD` to
`LY-MLA-CA`, retrying each submission with the same message id until its
agent answers `202` (an agent being killed answers nothing).

`settle` waits until every accepted message has reached an end (delivered,
or negative evidence) and its sender holds every evidence the log has about
it; `count` then reads the figures from the agents' APIs, the gateway's
audit API and the services' logs (`tests.faults.figures`).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import os
import secrets
import signal
import ssl
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self, TypeVar

import aiohttp

from deploy.bench.scenarios import bench_case, bench_note
from deploy.cli.auditor import describe, fetch_snapshot, verify_snapshot
from deploy.client.agent_api import AgentApiError, AgentClient, MessageStatus
from deploy.client.samples import REQUEST_SAMPLE, sample
from deploy.localnet.devstack import DevStackError, destroy, down, gateway_ca, read_stack, up
from deploy.localnet.network import NetworkPaths, load_network
from deploy.provision.broker import BrokerAdminError
from protocol.directory import NOTHING_HELD, Directory, verify_directory
from protocol.encoding import b64decode
from protocol.errors import ErrorCode
from protocol.evidence import verify_evidence_as_of_its_time
from protocol.keys import SigningPublicKey
from protocol.limits import DEFAULT_LIMITS
from protocol.signing import SignedStatement
from runtime.tls import client_context
from tests.faults.figures import (
    DELIVERED_STATUSES,
    NEGATIVE_STATUSES,
    Figures,
    duplicates_from_logs,
    log_events,
    notable_events,
)

SENDER = "BD-MOHA-PSD"
RECIPIENT = "LY-MLA-CA"
CASE_SIZE = 100
"""Notes per case: an agent folds a case's messages on each admission, so cases stay small."""
FAULT_SETTINGS = {
    "ROGATORY_AMQP_HEARTBEAT_S": "5",
    "ROGATORY_WATCHDOG_S": "60",
    "ROGATORY_CHECKPOINT_INTERVAL_S": "1",
}
"""Every fault network: a frozen connection is noticed in ~18 s (3 heartbeats), a wedged consumer in 60 s."""

T = TypeVar("T")


def say(line: str) -> None:
    """Progress for whoever runs with `-s`; the figures are reported separately."""
    print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)


@dataclass
class FaultNetwork:
    """A dev network of real processes, and the operator's hands on it."""

    root: Path
    amqp_url: str
    management_url: str | None
    stack: dict[str, Any]
    restarts: int = 0

    @classmethod
    async def start(
        cls,
        root: Path,
        *,
        amqp_url: str,
        management_url: str | None,
        settings: dict[str, str] | None = None,
    ) -> FaultNetwork:
        """`rogatory dev up` in `root` (creating the network if it is new)."""
        environment = FAULT_SETTINGS | (settings or {})
        stack = await up(
            root, amqp_url=amqp_url, management_url=management_url, say=lambda _: None, service_environment=environment
        )
        return cls(root=root, amqp_url=amqp_url, management_url=management_url, stack=stack)

    @property
    def paths(self) -> NetworkPaths:
        """Where the network's files are."""
        return NetworkPaths(self.root.resolve())

    def pid(self, service: str) -> int | None:
        """The process id `dev up` recorded for `service`."""
        stack = read_stack(self.root) or self.stack
        entry = stack["gateway"] if service == "gateway" else stack["agents"][service]
        pid = entry.get("pid")
        return pid if isinstance(pid, int) else None

    def alive(self, service: str) -> bool:
        """Whether `service` runs (a zombie does not)."""
        pid = self.pid(service)
        if pid is None:
            return False
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        return state not in {"Z", "X"}

    def services(self) -> list[str]:
        """The gateway and every agency."""
        return ["gateway", *self.stack["agents"]]

    def kill(self, service: str) -> None:
        """SIGKILL one service: no shutdown, no last drain, no goodbye."""
        pid = self.pid(service)
        assert pid is not None, service
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while self.alive(service) and time.monotonic() < deadline:
            time.sleep(0.05)
        say(f"killed {service} (pid {pid})")

    async def terminate(self, service: str) -> None:
        """Stop one service gracefully (SIGTERM, as `dev down` does) and wait until it exited."""
        pid = self.pid(service)
        assert pid is not None, service
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while self.alive(service) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        say(f"stopped {service} gracefully (pid {pid})")

    async def restart(self) -> None:
        """`rogatory dev up` again: whatever is down starts, with its data."""
        self.stack = await up(self.root, amqp_url=self.amqp_url, management_url=self.management_url, say=lambda _: None)
        self.restarts += 1

    async def stop(self) -> None:
        """`rogatory dev down` (SIGTERM, graceful), keeping the data."""
        await asyncio.to_thread(down, self.root, say=lambda _: None)

    async def destroy(self) -> None:
        """Stop everything and delete the network's vhost and users."""
        with contextlib.suppress(DevStackError):
            await self.stop()
        with contextlib.suppress(BrokerAdminError, OSError):
            await destroy(self.root, amqp_url=self.amqp_url, management_url=self.management_url)

    def agent(self, session: aiohttp.ClientSession, agency: str) -> AgentClient:
        """A client of one agent's API."""
        entry = self.stack["agents"][agency]
        return AgentClient(session, entry["url"], entry["token"])

    def directory(self) -> Directory:
        """The network's directory, verified against its authority key."""
        network = self.stack["network"]
        signed = SignedStatement.from_json(
            Path(network["directory_file"]).read_bytes(), code=ErrorCode.MALFORMED_DIRECTORY
        )
        authority = SigningPublicKey(b64decode(network["authority_key"]))
        return verify_directory(
            signed, authority, now=datetime.now(UTC), held_version=NOTHING_HELD, limits=DEFAULT_LIMITS
        )

    def broker_password(self, user: str) -> str:
        """A broker user's password, from `network.json` (the test acts as that user to misbehave)."""
        description = load_network(self.root)
        assert description is not None
        return description.passwords()[user]


class Supervisor:
    """Starts again, with `rogatory dev up`, any service of the network that is not running."""

    def __init__(self, network: FaultNetwork, *, every_s: float = 1.0) -> None:
        self._network = network
        self._every_s = every_s
        self.held: set[str] = set()
        """Services left down on purpose (an agency offline)."""
        self.failures: list[str] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._every_s)
            down_now = [s for s in self._network.services() if s not in self.held and not self._network.alive(s)]
            if not down_now:
                continue
            if self.held:
                # `dev up` starts everything that is down; hold the offline agency by keeping it out of the way.
                continue
            say(f"supervisor: {', '.join(down_now)} down; rogatory dev up")
            try:
                await self._network.restart()
            except (DevStackError, BrokerAdminError, OSError) as exc:
                self.failures.append(str(exc)[:200])
                say(f"supervisor: dev up failed ({str(exc)[-600:]}); trying again")


@dataclass
class Traffic:
    """An agency system submitting notes, and what it was told."""

    network: FaultNetwork
    session: aiohttp.ClientSession
    submitted: list[str] = field(default_factory=list)
    accepted: set[str] = field(default_factory=set)
    refused: dict[str, int] = field(default_factory=dict)
    cases: list[str] = field(default_factory=list)
    _request: dict[str, Any] = field(default_factory=lambda: sample(REQUEST_SAMPLE))

    def _sender(self) -> AgentClient:
        return self.network.agent(self.session, SENDER)

    async def open_cases(self, count: int, *, within_s: float = 120.0) -> None:
        """Open `count` cases (one `MLA_REQUEST` each) and wait until each is delivered."""
        opened: list[str] = []
        for _ in range(count):
            case_id = f"BD-LY-2026-{secrets.token_hex(2).upper()}{len(self.cases) + len(opened):04d}"[:64]
            opener = bench_case(self._request, case_id)
            opener["message_id"] = str(uuid.uuid4())
            await self._submit(opener)
            opened.append(opener["message_id"])
            self.cases.append(case_id)
        deadline = time.monotonic() + within_s
        for message_id in opened:
            await self._sender().wait_for_status(
                message_id, DELIVERED_STATUSES, within_s=max(1.0, deadline - time.monotonic())
            )

    def notes(self, count: int) -> list[dict[str, Any]]:
        """`count` new notes over the open cases, `CASE_SIZE` per case at most."""
        documents = []
        for index in range(count):
            case_id = self.cases[index // CASE_SIZE % len(self.cases)]
            note = bench_note(self._request, case_id, len(self.submitted) + index)
            note["message_id"] = str(uuid.uuid4())
            documents.append(note)
        return documents

    async def send(self, documents: list[dict[str, Any]], *, concurrency: int = 8, per_second: float = 0.0) -> None:
        """Submit every document (each until answered), `concurrency` at a time, at most `per_second`."""
        gate = asyncio.Semaphore(concurrency)
        started = time.monotonic()

        async def one(index: int, document: dict[str, Any]) -> None:
            if per_second > 0:
                await asyncio.sleep(max(0.0, started + index / per_second - time.monotonic()))
            async with gate:
                await self._submit(document)

        await asyncio.gather(*(one(i, d) for i, d in enumerate(documents)))

    async def _submit(self, document: dict[str, Any], *, within_s: float = 300.0) -> None:
        self.submitted.append(document["message_id"])
        deadline = time.monotonic() + within_s
        while True:
            try:
                answer = await self._sender().submit(copy.deepcopy(document))
            except AgentApiError as exc:
                if exc.status < 500:
                    self.refused[document["message_id"]] = exc.status
                    return
            except (aiohttp.ClientError, TimeoutError, OSError):
                pass
            else:
                self.accepted.add(answer["message_id"])
                return
            if time.monotonic() > deadline:
                return
            await asyncio.sleep(0.5)


async def _gather_limited(calls: Iterable[Callable[[], Awaitable[T]]], limit: int = 16) -> list[T]:
    gate = asyncio.Semaphore(limit)

    async def one(call: Callable[[], Awaitable[T]]) -> T:
        async with gate:
            return await call()

    return await asyncio.gather(*(one(call) for call in calls))


async def _retrying(call: Callable[[], Awaitable[T]], *, within_s: float = 60.0) -> T:
    """An API call that is retried while its service restarts."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            return await call()
        except (aiohttp.ClientError, TimeoutError, OSError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def statuses(
    network: FaultNetwork, session: aiohttp.ClientSession, ids: Iterable[str]
) -> dict[str, MessageStatus]:
    """Each message's status and evidence at its sender."""
    sender = network.agent(session, SENDER)
    ids = list(ids)
    answers = await _gather_limited([functools.partial(_retrying, functools.partial(sender.message, m)) for m in ids])
    return dict(zip(ids, answers, strict=True))


async def inbox_counts(network: FaultNetwork, session: aiohttp.ClientSession) -> Counter[str]:
    """How many times each message id is in the recipient's inbox."""
    recipient = network.agent(session, RECIPIENT)
    counts: Counter[str] = Counter()
    cursor = "0"
    while True:
        page = await _retrying(functools.partial(recipient.inbox, after=cursor, limit=500))
        if not page["messages"]:
            return counts
        counts.update(item["message_id"] for item in page["messages"])
        cursor = page["next"]


def gateway_ssl(stack: dict[str, Any]) -> ssl.SSLContext:
    """The TLS context of requests to the stack's HTTPS gateway: its network's CA."""
    return client_context(gateway_ca(stack))


async def audit_entries(network: FaultNetwork, session: aiohttp.ClientSession) -> list[dict[str, Any]]:
    """Every entry of the gateway's log (auditor token from stack.json)."""
    gateway = network.stack["gateway"]
    headers = {"Authorization": f"Bearer {gateway['auditor_token']}"}
    https = gateway_ssl(network.stack)
    entries: list[dict[str, Any]] = []
    start: int | None = 0
    while start is not None:

        async def page(at: int = start) -> dict[str, Any]:
            url = f"{gateway['url']}/v1/audit/entries?start={at}&limit=1000"
            async with session.get(url, headers=headers, ssl=https) as r:
                r.raise_for_status()
                answer: dict[str, Any] = await r.json()
                return answer

        answer = await _retrying(page)
        entries += answer["entries"]
        start = answer["next_start"]
    return entries


def _evidence_identities(answer: MessageStatus, directory: Directory) -> set[str]:
    identities = set()
    for item in answer["evidence"]:
        verified = verify_evidence_as_of_its_time(SignedStatement.model_validate(item["statement"]), directory)
        identities.add(verified.statement.identity)
    return identities


async def settle(
    network: FaultNetwork, session: aiohttp.ClientSession, traffic: Traffic, *, within_s: float = 240.0
) -> None:
    """Wait until every accepted message ended and its sender holds all the log has about it."""
    deadline = time.monotonic() + within_s
    pending = set(traffic.accepted)
    last_report = 0.0
    while pending and time.monotonic() < deadline:
        answers = await statuses(network, session, sorted(pending))
        pending = {m for m, a in answers.items() if a["status"] not in DELIVERED_STATUSES | NEGATIVE_STATUSES}
        if pending and time.monotonic() - last_report > 10:
            say(f"settling: {len(pending)} of {len(traffic.accepted)} messages not yet at an end")
            last_report = time.monotonic()
        if pending:
            await asyncio.sleep(1.0)
    directory = network.directory()
    while time.monotonic() < deadline:
        entries = await audit_entries(network, session)
        logged = _logged_evidence(entries, traffic.accepted)
        answers = await statuses(network, session, traffic.accepted)
        held = set().union(*(_evidence_identities(a, directory) for a in answers.values()))
        if logged <= held:
            break
        await asyncio.sleep(1.0)
    await asyncio.sleep(2.5)  # a checkpoint covers the last leaves (one a second)


def _logged_evidence(entries: list[dict[str, Any]], ids: set[str]) -> set[str]:
    return {e["identity"] for e in entries if e["kind"] == "evidence" and e["message_id"] in ids}


async def count(
    network: FaultNetwork, session: aiohttp.ClientSession, traffic: Traffic, *, scenario: str, started: float
) -> Figures:
    """The figures of the scenario, from the durable records (`tests.faults.figures`)."""
    directory = network.directory()
    answers = await statuses(network, session, traffic.accepted)
    inbox = await inbox_counts(network, session)
    entries = await audit_entries(network, session)
    evidence_entries = [e for e in entries if e["kind"] == "evidence" and e["message_id"] in traffic.accepted]
    logged = Counter(e["identity"] for e in evidence_entries)
    held: set[str] = set()
    delivered_once = negative = lost = contradictions = 0
    negative_by: Counter[str] = Counter()
    for message_id, answer in answers.items():
        held |= _evidence_identities(answer, directory)
        status = answer["status"]
        copies = inbox.get(message_id, 0)
        if status in NEGATIVE_STATUSES:
            negative += 1
            for item in answer["evidence"]:
                if item["reason"] is not None:
                    negative_by[f"{item['type']}/{item['reason']['code']}"] += 1
            contradictions += copies > 0
        elif status in DELIVERED_STATUSES and copies >= 1:
            delivered_once += 1
        else:
            lost += 1
    gateway = network.stack["gateway"]
    snapshot = await fetch_snapshot(gateway["url"], gateway["auditor_token"], ca_file=gateway_ca(network.stack))
    report = verify_snapshot(snapshot, network.stack["network"]["authority_key"])
    others = Counter(e["kind"] for e in entries if e["kind"] != "evidence")
    duplicates = duplicates_from_logs(network.paths.root)
    events = notable_events(network.paths.root)
    return Figures(
        scenario=scenario,
        submitted=len(set(traffic.submitted)),
        accepted=len(traffic.accepted),
        delivered_once=delivered_once,
        duplicates_suppressed=sum(duplicates.values()),
        duplicates_suppressed_by=duplicates,
        duplicates_in_inbox=sum(copies - 1 for message_id, copies in inbox.items() if copies > 1),
        lost=lost,
        negative=negative,
        negative_by=dict(negative_by),
        contradictions=contradictions,
        audit_evidence_leaves=sum(logged.values()),
        audit_events=len(held),
        audit_missing=len(held - set(logged)),
        audit_extra=len(set(logged) - held) + sum(n - 1 for n in logged.values() if n > 1),
        audit_other_leaves=dict(others),
        audit_verdict=describe(report)[0],
        audit_consistent=report.consistent,
        seconds=time.monotonic() - started,
        notes=(
            f"services restarted by dev up: {network.restarts}",
            "logged: " + (", ".join(f"{event} {n}" for event, n in sorted(events.items())) or "nothing notable"),
            *(
                f"task ended: {record.get('service')} {record.get('task')}: {str(record.get('error'))[:160]}"
                for record in log_events(network.paths.root, "task_ended")
            ),
        ),
    )
