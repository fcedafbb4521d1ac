"""The scenarios of `rogatory bench`: their documents, a network started afresh for each, and what each measured.

A scenario opens its cases, submits its notes (as fast as the path takes
them, or at an offered rate), waits until the sender holds every message's
`DELIVERY` evidence, and reads each message's stages from the timestamps
the services recorded (see `deploy.bench.run`).
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import secrets
import sqlite3
import statistics
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import aiohttp

from deploy.bench.broker_messages import settled_counts
from deploy.bench.gateways import ExtraGateways, GatewayRecords, shared_environment
from deploy.bench.processes import (
    ProcessFigures,
    broker_cpu_seconds,
    broker_cpu_spent,
    broker_pids,
    cpu_seconds,
    hosted_once,
    memory_mb,
    process_figures,
    runqueue_seconds,
    stack_pids,
)
from deploy.client.agent_api import AgentApiError, AgentClient
from deploy.client.samples import REQUEST_SAMPLE, sample
from deploy.localnet.devstack import destroy, down, up
from deploy.localnet.network import NetworkPaths
from protocol.encoding import canonical_json, format_timestamp, parse_timestamp

CONCURRENCY: Final = 64
"""Submissions in flight at once at saturation (each agent handles them concurrently)."""
SMALL_CONTENT_BYTES: Final = 2000
"""Bytes of free text in a small benchmark message: "about 2 KB of content"."""
LARGE_CONTENT_BYTES: Final = 64_000
"""Bytes of free text in a large benchmark message: "about 64 KB of content"."""
MESSAGES_PER_CASE: Final = 25
"""Notes per case: cases are folded on every admission, and real cases hold tens of messages, not thousands."""
ACTIVE_CASES: Final = 16
"""Cases receiving notes at any one time (an agency works on some cases at once, not on all of them)."""
POLL_S: Final = 0.25
"""How often the run looks for `DELIVERY` evidence at the senders."""
SOAK_SAMPLE_S: Final = 5.0
"""How often the soak samples resident memory."""
NOTES: Final = "notes"
REQUESTS: Final = "requests"
BENCH_ENVIRONMENT: Final = {"ROGATORY_API_RATE_PER_S": "100000", "ROGATORY_API_RATE_BURST": "100000"}
"""The agency system here is the benchmark's one client: its API rate limit must not be what is measured."""
EVIDENCE_LEAVES: Final = 3
"""Audit entries of each benchmark message: SUBMISSION_ACCEPTED, RELAY_ACCEPTED, DELIVERY."""
STAGES: Final = (
    "agent",
    "broker_to_gateway",
    "gateway_pipeline",
    "broker_to_recipient",
    "recipient_and_evidence_back",
)
NOTE_TEXT: Final = (
    "Further to our request, the investigating officer reports that the second victim has been located in "
    "Tripoli and is willing to give evidence by video link. "
    "أفاد ضابط التحقيق بأن الضحية الثانية موجودة في طرابلس ومستعدة للإدلاء بشهادتها عبر الفيديو. "
    "তদন্তকারী কর্মকর্তা জানিয়েছেন যে দ্বিতীয় ভুক্তভোগীকে ত্রিপোলিতে পাওয়া গেছে। "
)


class BenchFailed(Exception):
    """The benchmark could not complete a scenario (not a slow figure: a broken run)."""


# -- documents ---------------------------------------------------------------------------------


def _text_of(content_bytes: int) -> str:
    text = NOTE_TEXT * (1 + content_bytes // len(NOTE_TEXT.encode()))
    encoded = text.encode()[:content_bytes]
    return encoded.decode("utf-8", errors="ignore")


def bench_note(
    request: dict[str, Any], case_id: str, index: int, *, content_bytes: int = SMALL_CONTENT_BYTES
) -> dict[str, Any]:
    """A NOTE with about `content_bytes` of content in `case_id`, in English, Arabic and Bengali."""
    return {
        "schema": request["schema"],
        "test_data": True,
        "message_type": "NOTE",
        "case_id": case_id,
        "sender": request["sender"],
        "recipient": request["recipient"],
        "channel": request["channel"],
        "classification": request["classification"],
        "languages": {"primary": "en", "available": ["en", "ar", "bn"]},
        "requesting_ref": f"{request['requesting_ref']}/{index}",
        "payload": {"text": {"lang": "en", "value": _text_of(content_bytes)}},
    }


def bench_case(request: dict[str, Any], case_id: str) -> dict[str, Any]:
    """The request that opens a benchmark case (its notes need a case to belong to)."""
    opener = copy.deepcopy(request)
    for field_name in ("message_id", "integrity"):
        opener.pop(field_name, None)
    opener["case_id"] = case_id
    return opener


def request_between(sender: str, recipient: str) -> dict[str, Any]:
    """The sample request, addressed from `sender` to `recipient` (benchmark agencies keep the sample's states)."""
    request = sample(REQUEST_SAMPLE)
    request["sender"]["authority_id"] = sender
    request["recipient"]["authority_id"] = recipient
    return request


# -- figures ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Latency:
    """Milliseconds: the percentiles and the worst of one set of samples."""

    count: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float

    @classmethod
    def of(cls, samples_ms: Sequence[float]) -> Latency:
        """The figures of `samples_ms` (all zero when there are none)."""
        if not samples_ms:
            return cls(0, 0.0, 0.0, 0.0, 0.0, 0.0)
        ordered = sorted(samples_ms)
        return cls(
            count=len(ordered),
            p50_ms=round(_percentile(ordered, 0.50), 1),
            p95_ms=round(_percentile(ordered, 0.95), 1),
            p99_ms=round(_percentile(ordered, 0.99), 1),
            max_ms=round(ordered[-1], 1),
            mean_ms=round(statistics.fmean(ordered), 1),
        )


@dataclass(frozen=True, slots=True)
class ScenarioFigures:
    """What one scenario measured."""

    name: str
    agencies: int
    pairs: int
    content_bytes: int
    document_bytes: int
    sealed_bytes: int
    messages: int
    offered_per_s: float | None
    submitted_per_s: float
    whole_path_per_s: float
    latency: Latency
    stages: dict[str, Latency]
    audit_append: dict[str, float | int]
    processes: list[ProcessFigures]
    complete: bool
    incomplete: list[str] = field(default_factory=list)
    memory_growth_mb: dict[str, float] | None = None
    """Resident growth per process from the end of the soak's first tenth to its end."""
    memory_growth_second_half_mb: dict[str, float] | None = None
    """The same over the soak's second half: caches filled by then, a leak still shows."""
    broker_cpu_ms_per_message: float | None = None
    """CPU of the local RabbitMQ node (`beam.smp`) per whole-path message; None when the broker is not local."""
    broker_published_per_exchange: float | None = None
    """AMQP messages published into the network's vhost per exchange, as the broker counts them
    (`deploy.bench.broker_messages`); None without the management API."""
    broker_delivered_per_exchange: float | None = None
    """AMQP messages the broker handed to consumers per exchange."""
    kind: str = "notes"


def _percentile(ordered: Sequence[float], fraction: float) -> float:
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


# -- one scenario ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Scenario:
    """What to send: between which pairs, how much, how fast (None: as fast as the path takes it)."""

    name: str
    pairs: tuple[tuple[str, str], ...]
    content_bytes: int
    messages: int
    offered_per_s: float | None = None
    soak: bool = False
    kind: str = NOTES
    """`notes` (each a NOTE in an open case) or `requests` (each the sample MLA request, opening a new case)."""
    count_broker_messages: bool = False
    """Read the broker's message counters before and after (`deploy.bench.broker_messages`: seconds each)."""


@dataclass(slots=True)
class _Sent:
    sender: str
    message_id: str


class BenchNetwork:
    """A dev network in `root` whose processes each scenario starts afresh."""

    def __init__(
        self,
        root: Path,
        *,
        amqp_url: str,
        management_url: str | None,
        bench_pairs: int,
        say: Callable[[str], None],
        gateways: int = 1,
        database_url: str | None = None,
        profile_dir: Path | None = None,
    ) -> None:
        self.root = root
        self._environment = dict(BENCH_ENVIRONMENT)
        if profile_dir is not None:
            self._environment["ROGATORY_PROFILE_DIR"] = str(profile_dir.resolve())
        self.paths = NetworkPaths(root)
        self.amqp_url = amqp_url
        self.management_url = management_url
        self._bench_pairs = bench_pairs
        self._say = say
        self.cases: dict[tuple[str, str], list[str]] = {}
        self.gateways = gateways
        """Gateway processes (`deploy.bench.gateways`): more than one share `database_url`."""
        self.database_url = database_url
        """The gateway's PostgreSQL database (None: SQLite in its data directory, one process only)."""
        self.extra_gateways = ExtraGateways.none(root)
        self.hosts: tuple[tuple[str, ...], ...] = ()
        """Groups of agencies each run by one agent process (`agents.hosting`); set before the first start."""

    async def start(self) -> dict[str, Any]:
        """Start (or restart) the network's processes, and the extra gateway processes; its `stack.json`."""
        environment = dict(self._environment)
        if self.database_url is not None:
            environment |= shared_environment(self.root, self.database_url)
        stack = await up(
            self.root,
            amqp_url=self.amqp_url,
            management_url=self.management_url,
            say=self._enrolment_progress,
            service_environment=environment,
            bench_pairs=self._bench_pairs,
            hosts=self.hosts,
        )
        if self.gateways > 1:
            self.extra_gateways.start(self.gateways - 1)
            await self.extra_gateways.wait_consuming()
        return stack

    def _enrolment_progress(self, line: str) -> None:
        """Of what `dev up` says, only how far a large network's enrolment is (`agency sites made: 50/504`)."""
        if line.lstrip().startswith(("agency sites made", "agencies enrolled")):
            self._say(line)

    def stop(self) -> None:
        """Stop its processes (the extra gateway processes first), keeping their data."""
        self.extra_gateways.stop()
        down(self.root, say=lambda _: None)

    async def destroy(self) -> None:
        """Delete the stopped network: its vhost, broker users and state directory.

        A cleanup that fails (the management API not answering on a loaded
        machine) is said, never raised: it must not hide the figures already
        measured, nor the error that ended a scenario.
        """
        self.extra_gateways.stop()
        try:
            await destroy(self.root, amqp_url=self.amqp_url, management_url=self.management_url)
        except Exception as exc:  # noqa: BLE001 - any cleanup failure is reported the same way
            self._say(
                f"  WARNING: could not delete the bench network in {self.root} ({type(exc).__name__}: {exc}); "
                "its vhost and broker users are left behind: delete them with rabbitmqctl"
            )

    def agent_db(self, agency: str) -> Path:
        """The database of `agency`'s agent."""
        return self.paths.data(agency) / "agent.db"

    def gateway_records(self) -> GatewayRecords:
        """The gateway's records: its SQLite file, or the PostgreSQL database its processes share."""
        return GatewayRecords(self.paths.data("gateway") / "gateway.db", self.database_url)

    def audit_append(self) -> dict[str, float | int]:
        """The gateway's last `audit_append_latency` log line (written when it stops)."""
        found: dict[str, float | int] = {}
        try:
            lines = self.paths.log("gateway").read_text(errors="replace").splitlines()
        except OSError:
            return found
        for line in reversed(lines):
            if '"audit_append_latency"' in line:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                return {k: v for k, v in entry.items() if k in {"appends", "p50_ms", "p95_ms", "p99_ms", "max_ms"}}
        return found


def _read_only(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)


def _delivered(db_path: Path, since: str) -> set[str]:
    """Message ids with `DELIVERY` evidence received by the sender since `since`."""
    with _read_only(db_path) as db:
        rows = db.execute(
            "SELECT message_id FROM evidence WHERE evidence_type = 'DELIVERY' AND received_at >= ?", (since,)
        ).fetchall()
    return {str(row[0]) for row in rows}


async def _open_cases(
    network: BenchNetwork, clients: dict[str, AgentClient], pairs: Sequence[tuple[str, str]], per_pair: int
) -> None:
    """Open `per_pair` cases for each pair that has fewer, and wait until their requests are delivered."""
    since = _now_text()
    gate = asyncio.Semaphore(CONCURRENCY)
    opened: list[_Sent] = []

    async def open_case(pair: tuple[str, str], request: dict[str, Any]) -> None:
        case_id = f"BENCH-{secrets.token_hex(4).upper()}"
        async with gate:
            answer = await clients[pair[0]].submit(bench_case(request, case_id))
        network.cases[pair].append(case_id)
        opened.append(_Sent(pair[0], str(answer["message_id"])))

    openings: list[Coroutine[Any, Any, None]] = []
    for pair in pairs:
        cases = network.cases.setdefault(pair, [])
        request = request_between(*pair)
        openings.extend(open_case(pair, request) for _ in range(per_pair - len(cases)))
    await asyncio.gather(*openings)
    await _wait_delivered(network, opened, since, max(120.0, len(opened) / 5), lambda: None)


async def _submit_all(
    scenario: Scenario, document: Callable[[int], tuple[str, dict[str, Any]]], clients: dict[str, AgentClient]
) -> tuple[list[_Sent], float]:
    """Submit every document (saturating, or at the offered rate); the sent ids and the submission time."""
    sent: list[_Sent] = []
    failures: list[BaseException] = []
    in_flight: set[asyncio.Task[None]] = set()
    gate = asyncio.Semaphore(CONCURRENCY if scenario.offered_per_s is None else 4 * CONCURRENCY)

    async def submit(index: int) -> None:
        try:
            sender, body = document(index)
            answer = await clients[sender].submit(body)
            sent.append(_Sent(sender, str(answer["message_id"])))
        except (AgentApiError, aiohttp.ClientError, TimeoutError) as exc:
            failures.append(exc)
        finally:
            gate.release()

    started = time.perf_counter()
    for index in range(scenario.messages):
        if failures:
            break
        if scenario.offered_per_s is not None:
            delay = started + index / scenario.offered_per_s - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        await gate.acquire()
        task = asyncio.create_task(submit(index))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    if in_flight:
        await asyncio.wait(set(in_flight))
    if failures:
        raise BenchFailed(f"{len(failures)} submissions failed, the first with: {failures[0]}")
    return sent, time.perf_counter() - started


async def _wait_delivered(
    network: BenchNetwork, sent: list[_Sent], since: str, deadline_s: float, sample: Callable[[], None]
) -> None:
    pending: dict[str, set[str]] = {}
    for item in sent:
        pending.setdefault(item.sender, set()).add(item.message_id)
    deadline = time.monotonic() + deadline_s
    while any(pending.values()):
        if time.monotonic() > deadline:
            missing = sum(len(ids) for ids in pending.values())
            raise BenchFailed(f"{missing} of {len(sent)} messages got no DELIVERY evidence within {deadline_s:.0f} s")
        await asyncio.sleep(POLL_S)
        sample()
        for sender, ids in pending.items():
            if ids:
                ids.difference_update(_delivered(network.agent_db(sender), since))


def _message_stages(
    network: BenchNetwork, sent: list[_Sent], first_leaf: int
) -> tuple[list[float], dict[str, list[float]], float, list[str]]:
    """Per-message totals and stages (ms), the whole-path span (s), and what is missing."""
    by_sender: dict[str, list[str]] = {}
    for item in sent:
        by_sender.setdefault(item.sender, []).append(item.message_id)
    gateway = network.gateway_records()
    gateway_received = {
        (str(r[0]), str(r[1])): parse_timestamp(str(r[2]))
        for r in gateway.rows("SELECT sender, message_id, received_at FROM messages")
    }
    leaves: dict[str, int] = {}
    for row in gateway.rows("SELECT message_id FROM leaves WHERE leaf_index >= ? AND kind = 'evidence'", (first_leaf,)):
        leaves[str(row[0])] = leaves.get(str(row[0]), 0) + 1
    totals: list[float] = []
    stages: dict[str, list[float]] = {stage: [] for stage in STAGES}
    missing: list[str] = []
    first: datetime | None = None
    last: datetime | None = None
    for sender, ids in by_sender.items():
        wanted = set(ids)
        with _read_only(network.agent_db(sender)) as db:
            outbox = {
                str(r[0]): (parse_timestamp(str(r[1])), parse_timestamp(str(r[2])) if r[2] else None)
                for r in db.execute("SELECT message_id, created_at, published_at FROM outbox")
                if str(r[0]) in wanted
            }
            evidence: dict[tuple[str, str], tuple[datetime, datetime]] = {}
            for r in db.execute("SELECT message_id, evidence_type, at, received_at FROM evidence"):
                if str(r[0]) in wanted:
                    evidence[(str(r[0]), str(r[1]))] = (parse_timestamp(str(r[2])), parse_timestamp(str(r[3])))
        for message_id in ids:
            created, published = outbox.get(message_id, (None, None))
            accepted = evidence.get((message_id, "SUBMISSION_ACCEPTED"))
            relayed = evidence.get((message_id, "RELAY_ACCEPTED"))
            delivered = evidence.get((message_id, "DELIVERY"))
            at_gateway = gateway_received.get((sender, message_id))
            if (
                created is None
                or published is None
                or accepted is None
                or relayed is None
                or delivered is None
                or at_gateway is None
                or leaves.get(message_id, 0) < EVIDENCE_LEAVES
            ):
                missing.append(message_id)
                continue
            marks = (created, published, at_gateway, relayed[0], delivered[0], delivered[1])
            for stage, (begin, end) in zip(STAGES, itertools.pairwise(marks), strict=True):
                stages[stage].append((end - begin).total_seconds() * 1000)
            totals.append((delivered[1] - created).total_seconds() * 1000)
            first = created if first is None else min(first, created)
            last = delivered[1] if last is None else max(last, delivered[1])
    span = (last - first).total_seconds() if first is not None and last is not None else 0.0
    return totals, stages, span, missing


def _max_leaf(network: BenchNetwork) -> int:
    rows = network.gateway_records().rows("SELECT MAX(leaf_index) FROM leaves")
    return 0 if not rows or rows[0][0] is None else int(rows[0][0]) + 1


def _sealed_size(network: BenchNetwork, sent: list[_Sent]) -> int:
    if not sent:
        return 0
    with _read_only(network.agent_db(sent[0].sender)) as db:
        row = db.execute("SELECT length(sealed) FROM outbox WHERE message_id = ?", (sent[0].message_id,)).fetchone()
    return 0 if row is None else int(row[0])


async def run_scenario(network: BenchNetwork, scenario: Scenario, say: Callable[[str], None]) -> ScenarioFigures:
    """Start the network afresh, open cases, send every message, wait for its `DELIVERY`, stop; the figures."""
    stack = await network.start()
    agencies = sorted({agency for pair in scenario.pairs for agency in pair})
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
            clients = {
                name: AgentClient(session, stack["agents"][name]["url"], stack["agents"][name]["token"])
                for name in agencies
            }
            document = await _prepare(network, scenario, clients)
            vhost = str(stack["network"]["vhost"])
            counting = scenario.count_broker_messages
            counts_before = await settled_counts(network.amqp_url, network.management_url, vhost) if counting else None
            pids = hosted_once(stack_pids(stack, agencies), stack) | network.extra_gateways.pids()
            meter = _Meter.start(network, pids, soak=scenario.soak)
            rate = "saturation" if scenario.offered_per_s is None else f"{scenario.offered_per_s:.1f}/s offered"
            say(f"  {scenario.name}: {scenario.messages} messages, {len(scenario.pairs)} pair(s), {rate}")
            sent, submit_s, wall = await _send(network, scenario, document, clients, meter)
            broker_cpu = broker_cpu_spent(meter.broker_cpu_before)
            processes = process_figures(meter.pids, meter.cpu_before, meter.waiting_before, wall)
            counts_after = await settled_counts(network.amqp_url, network.management_url, vhost) if counting else None
    finally:
        network.stop()
    counted = counts_after.minus(counts_before) if counts_before and counts_after and sent else None
    totals, stages, span, missing = _message_stages(network, sent, meter.first_leaf)
    growth, second_half = meter.growth()
    return ScenarioFigures(
        name=scenario.name,
        agencies=len(agencies),
        pairs=len(scenario.pairs),
        content_bytes=scenario.content_bytes,
        document_bytes=len(canonical_json(document(0)[1])),
        sealed_bytes=_sealed_size(network, sent),
        messages=len(sent),
        offered_per_s=scenario.offered_per_s,
        submitted_per_s=round(len(sent) / submit_s, 1),
        whole_path_per_s=round(len(totals) / span, 1) if span > 0 else 0.0,
        latency=Latency.of(totals),
        stages={stage: Latency.of(values) for stage, values in stages.items()},
        audit_append=network.audit_append(),
        processes=processes,
        complete=not missing,
        incomplete=missing[:20],
        memory_growth_mb=growth,
        memory_growth_second_half_mb=second_half,
        broker_cpu_ms_per_message=round(1000 * broker_cpu / len(sent), 3) if meter.broker_pids and sent else None,
        broker_published_per_exchange=round(counted.published / len(sent), 2) if counted else None,
        broker_delivered_per_exchange=round(counted.delivered / len(sent), 2) if counted else None,
        kind=scenario.kind,
    )


async def _prepare(
    network: BenchNetwork, scenario: Scenario, clients: dict[str, AgentClient]
) -> Callable[[int], tuple[str, dict[str, Any]]]:
    """Open the scenario's cases; the function that makes its `index`th document (sender, body)."""
    requests = {pair: request_between(*pair) for pair in scenario.pairs}
    if scenario.kind == REQUESTS:

        def opening(index: int) -> tuple[str, dict[str, Any]]:
            """The sample MLA request (about 17 KB, Arabic and Bengali included), each opening a case of its own."""
            pair = scenario.pairs[index % len(scenario.pairs)]
            return pair[0], bench_case(requests[pair], f"BENCH-{index:06d}-{secrets.token_hex(3).upper()}")

        return opening
    per_pair = max(1, scenario.messages // len(scenario.pairs))
    # Each scenario opens cases of its own: cases carried over from the last one would grow past
    # MESSAGES_PER_CASE, and its freshly started agents would fold each of them from cold (a restart's
    # one-off cost, every stored document validated again), not the steady state measured here.
    network.cases.clear()
    await _open_cases(network, clients, scenario.pairs, max(1, per_pair // MESSAGES_PER_CASE))

    def document(index: int) -> tuple[str, dict[str, Any]]:
        """Made when submitted: a long soak does not hold every document at once."""
        pair = scenario.pairs[index % len(scenario.pairs)]
        cases = network.cases[pair]
        nth = index // len(scenario.pairs)  # the pair's nth note
        # A window of ACTIVE_CASES cases takes the next notes in turn until each holds MESSAGES_PER_CASE,
        # then the next window: cases fill over a while, as real ones do, rather than all at once.
        window, turn = divmod(nth, ACTIVE_CASES * MESSAGES_PER_CASE)
        case_id = cases[(window * ACTIVE_CASES + turn % ACTIVE_CASES) % len(cases)]
        return pair[0], bench_note(requests[pair], case_id, index, content_bytes=scenario.content_bytes)

    return document


@dataclass(slots=True)
class _Meter:
    """What a scenario reads before it sends, to subtract at its end, and the soak's samples of resident memory."""

    pids: dict[str, int]
    broker_pids: list[int]
    broker_cpu_before: dict[int, float]
    cpu_before: dict[str, float]
    waiting_before: dict[str, float]
    first_leaf: int
    since: str
    soak: bool
    rss: dict[str, list[float]]
    last_sample: float = 0.0

    @classmethod
    def start(cls, network: BenchNetwork, pids: dict[str, int], *, soak: bool) -> _Meter:
        """Read CPU so far (the services' and the broker's), the audit log's end and the time."""
        broker = broker_pids(network.amqp_url)
        return cls(
            pids=pids,
            broker_pids=broker,
            broker_cpu_before=broker_cpu_seconds(broker),
            cpu_before={name: cpu_seconds(pid) for name, pid in pids.items()},
            waiting_before={name: runqueue_seconds(pid) for name, pid in pids.items()},
            first_leaf=_max_leaf(network),
            since=_now_text(),
            soak=soak,
            rss={name: [] for name in pids},
        )

    def sample(self) -> None:
        """In a soak, every `SOAK_SAMPLE_S`: the resident memory of each process."""
        if self.soak and time.monotonic() - self.last_sample >= SOAK_SAMPLE_S:
            self.last_sample = time.monotonic()
            for name, pid in self.pids.items():
                self.rss[name].append(memory_mb(pid)[1])

    def growth(self) -> tuple[dict[str, float] | None, dict[str, float] | None]:
        """In a soak, resident growth after the first tenth (start-up, pools filled) and over the second half."""
        if not self.soak:
            return None, None
        rss = self.rss
        growth = {name: round(samples[-1] - samples[len(samples) // 10], 1) for name, samples in rss.items() if samples}
        second_half = {
            name: round(samples[-1] - samples[len(samples) // 2], 1) for name, samples in rss.items() if samples
        }
        return growth, second_half


async def _send(
    network: BenchNetwork,
    scenario: Scenario,
    document: Callable[[int], tuple[str, dict[str, Any]]],
    clients: dict[str, AgentClient],
    meter: _Meter,
) -> tuple[list[_Sent], float, float]:
    """Submit every document and wait for its `DELIVERY`; what was sent, the submission time and the wall time."""
    started = time.perf_counter()
    submitter = asyncio.create_task(_submit_all(scenario, document, clients))
    while not submitter.done():
        await asyncio.sleep(POLL_S)
        meter.sample()
    sent, submit_s = await submitter
    await _wait_delivered(network, sent, meter.since, max(120.0, scenario.messages / 5), meter.sample)
    return sent, submit_s, time.perf_counter() - started


def _now_text() -> str:
    return format_timestamp(datetime.now(UTC))


__all__ = [
    "CONCURRENCY",
    "LARGE_CONTENT_BYTES",
    "NOTES",
    "REQUESTS",
    "SMALL_CONTENT_BYTES",
    "STAGES",
    "BenchFailed",
    "BenchNetwork",
    "Latency",
    "Scenario",
    "ScenarioFigures",
    "bench_case",
    "bench_note",
    "request_between",
    "run_scenario",
]
