"""`rogatory bench`: the whole path measured beside the raw broker, in one run.

Whole path: an agency system submits documents (`POST /v1/messages`); each
is validated, sealed, stored and published by the sender's agent; verified,
checked against policy, logged and relayed by the gateway; verified,
decrypted and stored by the recipient's agent, whose signed `DELIVERY`
evidence travels back through the gateway (logged again) to the sender. A
message counts once its `DELIVERY` is held by the sender's agent, and the
run checks that every message also has its `SUBMISSION_ACCEPTED` and
`RELAY_ACCEPTED` evidence and its three entries in the audit log.

Scenarios (each on freshly started processes, so that CPU time and peak
memory are the scenario's own): one pair (`BD-MOHA-PSD` -> `LY-MLA-CA`) at
saturation with about 2 KB of content, the same at a fixed offered load of
half the saturation throughput, the pair with about 64 KB, and many
agencies (`--pairs` pairs of benchmark agencies, each sending to its
partner). `--soak-messages N` adds a long run at saturation that samples the
resident memory of every process (the "flat over 100,000 messages" target).

Stages come from the timestamps the services record, all from this
machine's one clock: the sender's agent (accepted -> broker confirmed), the
broker hop into the gateway (and the wait in its ingress queue), the gateway
pipeline (received -> relay confirmed and logged), the hop to the recipient
(relay -> the recipient starts on it), and the recipient with the evidence's
way back (-> `DELIVERY` held by the sender). The audit append (from asking
for an append to its durable commit) is measured inside the gateway and
reported in its log when it stops.

Baseline: on the same broker, in the same run (right after the saturation
scenario of the same size, as the machine's load drifts), persistent
messages of the same sealed size through one quorum queue with publisher
confirms and manual acks (aio-pika), over the transport the services use:
the single hop every exchange pays at least. Targets (at least 30% of the raw rate; p99 under
200 ms at half the saturation load; under 50 MB of resident growth in the
soak) are reported, never enforced: nothing here fails on a number.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import os
import secrets
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import aio_pika
import aio_pika.abc
import aiohttp

from deploy.client.agent_api import AgentApiError, AgentClient
from deploy.client.samples import REQUEST_SAMPLE, REQUESTED, REQUESTING, sample
from deploy.localnet.devstack import destroy, down, up
from deploy.localnet.network import NetworkPaths, bench_pair
from deploy.provision.broker import ManagementClient, management_url_from_amqp
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
DEFAULT_PAIRS: Final = 10
"""Benchmark pairs of the many-agencies scenario (20 agencies beside the 4 of the dev network)."""
POLL_S: Final = 0.25
"""How often the run looks for `DELIVERY` evidence at the senders."""
RAW_MIN_MESSAGES: Final = 2000
"""The baseline sends at least this many messages, so that its rate is not a start-up figure."""
SOAK_SAMPLE_S: Final = 5.0
"""How often the soak samples resident memory."""
TARGET_RATIO: Final = 0.30
TARGET_P99_MS: Final = 200.0
TARGET_GROWTH_MB: Final = 50.0

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
class ProcessFigures:
    """CPU and memory of one dev-stack process over one scenario (from /proc)."""

    name: str
    pid: int
    cpu_s: float
    cpu_percent_of_one_core: float
    waiting_for_cpu_percent: float
    """Time its threads were runnable but not running (/proc schedstat): how starved of CPU the machine left it."""
    peak_rss_mb: float
    rss_mb: float


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


@dataclass(frozen=True, slots=True)
class Baseline:
    """The raw broker: persistent, confirmed, acked, one quorum queue."""

    sealed_bytes: int
    messages: int
    per_s: float
    transport: str
    broker_cpu_ms_per_message: float | None = None
    """CPU of the local RabbitMQ node per message of the baseline (one hop); None when the broker is not local."""


@dataclass(frozen=True, slots=True)
class BenchFigures:
    """What one run measured; the headline figures first (the 2 KB pair at saturation)."""

    messages: int
    whole_path_per_s: float
    raw_broker_per_s: float
    ratio: float
    latency_p50_ms: float
    latency_p95_ms: float
    latency_p99_ms: float
    latency_max_ms: float
    fixed_load_per_s: float | None
    fixed_load_p99_ms: float | None
    targets: dict[str, dict[str, Any]]
    scenarios: list[ScenarioFigures]
    baselines: list[Baseline]
    note: str = (
        "figures from a shared machine: other work runs beside the benchmark, so absolute numbers drift; "
        "the baseline is measured in the same run on the same broker for that reason"
    )


def _percentile(ordered: Sequence[float], fraction: float) -> float:
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


# -- processes ---------------------------------------------------------------------------------

_CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU time of `pid` so far (fields 14 and 15 of /proc/<pid>/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def _runqueue_seconds(pid: int) -> float:
    """Seconds the threads of `pid` spent runnable but waiting for a CPU (second field of each schedstat)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue  # a thread that ended meanwhile, or a kernel without schedstat
    return total / 1e9


def _memory_mb(pid: int) -> tuple[float, float]:
    """(VmHWM, VmRSS) of `pid` in MB: its peak and its current resident memory."""
    values: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmHWM", "VmRSS"):
            values[name] = int(rest.split()[0]) / 1024
    return round(values.get("VmHWM", 0.0), 1), round(values.get("VmRSS", 0.0), 1)


def _broker_pids(amqp_url: str) -> list[int]:
    """The RabbitMQ node on this machine that listens on `amqp_url`'s port (`beam.smp`); none if it is elsewhere.

    Its CPU is part of what a message costs: every hop of the whole path is
    work for the broker, and the raw baseline is one such hop. Only the node
    serving the benchmark counts (not other nodes a test suite may be
    stopping); other vhosts' traffic on it counts too, another reason the
    figures are a shared machine's.
    """
    url = urlsplit(amqp_url.split(",", maxsplit=1)[0])
    port = url.port or (5671 if url.scheme == "amqps" else 5672)
    sockets = {f"socket:[{inode}]" for inode in _listening_socket_inodes(port)}
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "beam.smp":
                continue
            if any(str(fd.readlink()) in sockets for fd in (entry / "fd").iterdir()):
                found.append(int(entry.name))
        except OSError:
            continue  # a process that ended meanwhile, or one this user may not look into
    return found


def _listening_socket_inodes(port: int) -> set[str]:
    """Inodes of the TCP sockets listening on `port` (/proc/net/tcp and tcp6: state 0A is LISTEN)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def _broker_cpu_seconds(pids: Sequence[int]) -> dict[int, float]:
    found = {}
    for pid in pids:
        try:
            found[pid] = _cpu_seconds(pid)
        except OSError:
            continue
    return found


def _broker_cpu_spent(before: dict[int, float]) -> float:
    """CPU seconds the broker node(s) spent since `before` (a node that went away meanwhile is left out)."""
    after = _broker_cpu_seconds(list(before))
    return sum(after[pid] - before[pid] for pid in before if pid in after)


def _stack_pids(stack: dict[str, Any], names: Sequence[str]) -> dict[str, int]:
    pids = {"gateway": int(stack["gateway"]["pid"])}
    pids.update({name: int(stack["agents"][name]["pid"]) for name in names})
    return pids


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


@dataclass(slots=True)
class _Sent:
    sender: str
    message_id: str


class _Network:
    """A dev network in `root` whose processes each scenario starts afresh."""

    def __init__(
        self, root: Path, *, amqp_url: str, management_url: str | None, bench_pairs: int, say: Callable[[str], None]
    ) -> None:
        self.root = root
        self.paths = NetworkPaths(root)
        self.amqp_url = amqp_url
        self._management_url = management_url
        self._bench_pairs = bench_pairs
        self._say = say
        self.cases: dict[tuple[str, str], list[str]] = {}

    async def start(self) -> dict[str, Any]:
        return await up(
            self.root,
            amqp_url=self.amqp_url,
            management_url=self._management_url,
            say=lambda _: None,
            service_environment=BENCH_ENVIRONMENT,
            bench_pairs=self._bench_pairs,
        )

    def stop(self) -> None:
        down(self.root, say=lambda _: None)

    async def destroy(self) -> None:
        await destroy(self.root, amqp_url=self.amqp_url, management_url=self._management_url)

    def agent_db(self, agency: str) -> Path:
        return self.paths.data(agency) / "agent.db"

    def gateway_db(self) -> Path:
        return self.paths.data("gateway") / "gateway.db"

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
    network: _Network, clients: dict[str, AgentClient], pairs: Sequence[tuple[str, str]], per_pair: int
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
    network: _Network, sent: list[_Sent], since: str, deadline_s: float, sample: Callable[[], None]
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
    network: _Network, sent: list[_Sent], first_leaf: int
) -> tuple[list[float], dict[str, list[float]], float, list[str]]:
    """Per-message totals and stages (ms), the whole-path span (s), and what is missing."""
    by_sender: dict[str, list[str]] = {}
    for item in sent:
        by_sender.setdefault(item.sender, []).append(item.message_id)
    with _read_only(network.gateway_db()) as gateway:
        gateway_received = {
            (str(r[0]), str(r[1])): parse_timestamp(str(r[2]))
            for r in gateway.execute("SELECT sender, message_id, received_at FROM messages")
        }
        leaves: dict[str, int] = {}
        for row in gateway.execute(
            "SELECT message_id FROM leaves WHERE leaf_index >= ? AND kind = 'evidence'", (first_leaf,)
        ):
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


def _max_leaf(network: _Network) -> int:
    with _read_only(network.gateway_db()) as gateway:
        row = gateway.execute("SELECT MAX(leaf_index) FROM leaves").fetchone()
    return 0 if row is None or row[0] is None else int(row[0]) + 1


def _sealed_size(network: _Network, sent: list[_Sent]) -> int:
    if not sent:
        return 0
    with _read_only(network.agent_db(sent[0].sender)) as db:
        row = db.execute("SELECT length(sealed) FROM outbox WHERE message_id = ?", (sent[0].message_id,)).fetchone()
    return 0 if row is None else int(row[0])


def _process_figures(
    pids: dict[str, int], cpu_before: dict[str, float], waiting_before: dict[str, float], wall: float
) -> list[ProcessFigures]:
    """CPU over the scenario's `wall` seconds and memory now, of each process."""
    processes = []
    for name, pid in pids.items():
        cpu = _cpu_seconds(pid) - cpu_before[name]
        waiting = _runqueue_seconds(pid) - waiting_before[name]
        peak, current = _memory_mb(pid)
        processes.append(
            ProcessFigures(
                name, pid, round(cpu, 2), round(100 * cpu / wall, 1), round(100 * waiting / wall, 1), peak, current
            )
        )
    return processes


async def _run_scenario(network: _Network, scenario: Scenario, say: Callable[[str], None]) -> ScenarioFigures:
    stack = await network.start()
    try:
        agencies = sorted({agency for pair in scenario.pairs for agency in pair})
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
            clients = {
                name: AgentClient(session, stack["agents"][name]["url"], stack["agents"][name]["token"])
                for name in agencies
            }
            per_pair = max(1, scenario.messages // len(scenario.pairs))
            # Each scenario opens cases of its own: cases carried over from the last one would grow past
            # MESSAGES_PER_CASE, and its freshly started agents would fold each of them from cold (a restart's
            # one-off cost, every stored document validated again), not the steady state measured here.
            network.cases.clear()
            await _open_cases(network, clients, scenario.pairs, max(1, per_pair // MESSAGES_PER_CASE))
            requests = {pair: request_between(*pair) for pair in scenario.pairs}

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

            pids = _stack_pids(stack, agencies)
            broker_pids = _broker_pids(network.amqp_url)
            broker_cpu_before = _broker_cpu_seconds(broker_pids)
            cpu_before = {name: _cpu_seconds(pid) for name, pid in pids.items()}
            waiting_before = {name: _runqueue_seconds(pid) for name, pid in pids.items()}
            first_leaf = _max_leaf(network)
            since = _now_text()
            rss: dict[str, list[float]] = {name: [] for name in pids}
            last_sample = [0.0]

            def sample() -> None:
                if scenario.soak and time.monotonic() - last_sample[0] >= SOAK_SAMPLE_S:
                    last_sample[0] = time.monotonic()
                    for name, pid in pids.items():
                        rss[name].append(_memory_mb(pid)[1])

            rate = "saturation" if scenario.offered_per_s is None else f"{scenario.offered_per_s:.1f}/s offered"
            say(f"  {scenario.name}: {scenario.messages} messages, {len(scenario.pairs)} pair(s), {rate}")
            started = time.perf_counter()
            submitter = asyncio.create_task(_submit_all(scenario, document, clients))
            while not submitter.done():
                await asyncio.sleep(POLL_S)
                sample()
            sent, submit_s = await submitter
            await _wait_delivered(network, sent, since, max(120.0, scenario.messages / 5), sample)
            wall = time.perf_counter() - started
            broker_cpu = _broker_cpu_spent(broker_cpu_before)
            processes = _process_figures(pids, cpu_before, waiting_before, wall)
    finally:
        network.stop()
    totals, stages, span, missing = _message_stages(network, sent, first_leaf)
    growth = second_half = None
    if scenario.soak:
        # Growth after the first tenth (start-up, pools filled) to the end, and over the second half.
        growth = {name: round(samples[-1] - samples[len(samples) // 10], 1) for name, samples in rss.items() if samples}
        second_half = {
            name: round(samples[-1] - samples[len(samples) // 2], 1) for name, samples in rss.items() if samples
        }
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
        broker_cpu_ms_per_message=round(1000 * broker_cpu / len(sent), 3) if broker_pids and sent else None,
    )


def _now_text() -> str:
    return format_timestamp(datetime.now(UTC))


# -- the raw baseline ---------------------------------------------------------------------------


def _service_transport(amqp_url: str) -> tuple[str, str]:
    """The broker URL as the services use it (AMQPS when the machine's broker has TLS), and its name."""
    try:
        from deploy.provision.tls import TlsError, machine_broker_tls, service_amqp_url  # noqa: PLC0415 - optional TLS
    except ImportError:
        return amqp_url, "amqp"
    try:
        converted = service_amqp_url(amqp_url, machine_broker_tls(os.environ))
    except TlsError:
        return amqp_url, "amqp"
    return converted, converted.split("://", 1)[0]


async def _raw_broker(amqp_url: str, management_url: str | None, count: int, size: int) -> Baseline:
    """Persistent, confirmed, manually acked messages through one quorum queue."""
    vhost = f"rogatory-bench-raw-{secrets.token_hex(4)}"
    endpoint = management_url_from_amqp(amqp_url, base_url=management_url)
    url, transport = _service_transport(amqp_url)
    async with ManagementClient.from_endpoint(endpoint) as admin:
        await admin.put_json(("vhosts", vhost), {}, action="create the baseline vhost")
        await admin.put_json(
            ("permissions", vhost, endpoint.username),
            {"configure": ".*", "write": ".*", "read": ".*"},
            action="grant the baseline vhost",
        )
        try:
            # One connection to publish and one to consume, as the services do.
            publisher_connection = await aio_pika.connect(_with_vhost(url, vhost))
            consumer_connection = await aio_pika.connect(_with_vhost(url, vhost))
            broker_pids = _broker_pids(amqp_url)
            broker_cpu_before = _broker_cpu_seconds(broker_pids)
            try:
                rate = await _raw_rate(publisher_connection, consumer_connection, count, size)
                broker_cpu = _broker_cpu_spent(broker_cpu_before)
            finally:
                await publisher_connection.close()
                await consumer_connection.close()
        finally:
            await admin.delete(("vhosts", vhost), action="delete the baseline vhost", missing_ok=True)
    return Baseline(
        sealed_bytes=size,
        messages=count,
        per_s=round(rate, 1),
        transport=transport,
        broker_cpu_ms_per_message=round(1000 * broker_cpu / count, 3) if broker_pids else None,
    )


def _with_vhost(amqp_url: str, vhost: str) -> str:
    scheme, rest = amqp_url.split("://", 1)
    authority, _, tail = rest.partition("/")
    query = tail.partition("?")[2]
    return f"{scheme}://{authority}/{vhost}" + (f"?{query}" if query else "")


async def _raw_rate(
    publisher_connection: aio_pika.abc.AbstractConnection,
    consumer_connection: aio_pika.abc.AbstractConnection,
    count: int,
    size: int,
) -> float:
    publish_channel = await publisher_connection.channel(publisher_confirms=True)
    queue = await publish_channel.declare_queue("bench.raw", durable=True, arguments={"x-queue-type": "quorum"})
    consume_channel = await consumer_connection.channel()
    await consume_channel.set_qos(prefetch_count=CONCURRENCY)
    consume_queue = await consume_channel.get_queue("bench.raw", ensure=False)
    body = secrets.token_bytes(size)
    received = 0
    finished = asyncio.Event()

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        nonlocal received
        await message.ack()
        received += 1
        if received == count:
            finished.set()

    await consume_queue.consume(on_message)
    gate = asyncio.Semaphore(CONCURRENCY)

    async def publish() -> None:
        async with gate:
            await publish_channel.default_exchange.publish(
                aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, message_id=str(uuid.uuid4())),
                routing_key=queue.name,
            )

    started = time.perf_counter()
    await asyncio.gather(*(publish() for _ in range(count)))
    await asyncio.wait_for(finished.wait(), timeout=max(60.0, count / 10))
    return count / (time.perf_counter() - started)


# -- the run ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BenchOptions:
    """What `rogatory bench` was asked to run."""

    messages: int = 500
    pairs: int = DEFAULT_PAIRS
    large: bool = True
    soak_messages: int = 0


def run_bench(
    *,
    amqp_url: str,
    management_url: str | None,
    messages: int,
    state_dir: Path | None,
    json_out: Path | None,
    options: BenchOptions | None = None,
    say: Callable[[str], None] = print,
) -> int:
    """Run the benchmark, print its figures and write them as JSON; 0 unless something broke."""
    options = options or BenchOptions(messages=messages)
    root = state_dir or Path(tempfile.mkdtemp(prefix="rogatory-bench-"))
    out = json_out or root / "bench.json"
    say(f"Rogatory bench: {options.messages} messages a scenario, whole path vs. raw broker")
    figures = asyncio.run(_run(root, amqp_url, management_url, options, say))
    _print(figures, say)
    out.write_text(json.dumps(asdict(figures), indent=2, ensure_ascii=False) + "\n")
    say(f"  figures written to {out}")
    return 0


async def _run(
    root: Path, amqp_url: str, management_url: str | None, options: BenchOptions, say: Callable[[str], None]
) -> BenchFigures:
    pair_net = _Network(root / "pair", amqp_url=amqp_url, management_url=management_url, bench_pairs=0, say=say)
    scenarios: list[ScenarioFigures] = []
    baselines: list[Baseline] = []
    one_pair = ((REQUESTING, REQUESTED),)

    async def baseline_beside(scenario: ScenarioFigures) -> None:
        """The raw rate for this size, right after the scenario (the machine's load drifts between minutes)."""
        say(f"  raw broker baseline for {scenario.sealed_bytes} B (same broker, same run)")
        count = max(RAW_MIN_MESSAGES, options.messages)
        baselines.append(await _raw_broker(amqp_url, management_url, count, scenario.sealed_bytes))

    try:
        saturated = await _run_scenario(
            pair_net, Scenario("pair-2KB-saturation", one_pair, SMALL_CONTENT_BYTES, options.messages), say
        )
        scenarios.append(saturated)
        await baseline_beside(saturated)
        half = max(1.0, round(saturated.whole_path_per_s / 2, 1))
        fixed = await _run_scenario(
            pair_net, Scenario("pair-2KB-fixed-half-load", one_pair, SMALL_CONTENT_BYTES, options.messages, half), say
        )
        scenarios.append(fixed)
        if options.large:
            large = await _run_scenario(
                pair_net,
                Scenario("pair-64KB-saturation", one_pair, LARGE_CONTENT_BYTES, max(20, options.messages // 2)),
                say,
            )
            scenarios.append(large)
            await baseline_beside(large)
        if options.soak_messages:
            scenarios.append(
                await _run_scenario(
                    pair_net,
                    Scenario("pair-2KB-soak", one_pair, SMALL_CONTENT_BYTES, options.soak_messages, soak=True),
                    say,
                )
            )
    finally:
        await pair_net.destroy()
    if options.pairs:
        many_net = _Network(
            root / "many", amqp_url=amqp_url, management_url=management_url, bench_pairs=options.pairs, say=say
        )
        pairs = tuple(bench_pair(index) for index in range(1, options.pairs + 1))
        try:
            scenarios.append(
                await _run_scenario(
                    many_net,
                    Scenario(
                        f"many-{2 * options.pairs}-agencies-2KB-saturation",
                        pairs,
                        SMALL_CONTENT_BYTES,
                        max(options.messages, 2 * options.pairs),
                    ),
                    say,
                )
            )
        finally:
            await many_net.destroy()
    return _figures(options, scenarios, baselines)


def _baseline_for(baselines: Sequence[Baseline], sealed_bytes: int) -> Baseline | None:
    """The baseline of the size nearest `sealed_bytes`."""
    return min(baselines, key=lambda b: abs(b.sealed_bytes - sealed_bytes), default=None)


def _figures(options: BenchOptions, scenarios: list[ScenarioFigures], baselines: list[Baseline]) -> BenchFigures:
    saturated, fixed = scenarios[0], scenarios[1]
    raw = _baseline_for(baselines, saturated.sealed_bytes)
    raw_rate = raw.per_s if raw is not None else 0.0
    ratio = round(saturated.whole_path_per_s / raw_rate, 3) if raw_rate else 0.0
    soak = next((s for s in scenarios if s.memory_growth_mb is not None), None)
    growth = max(soak.memory_growth_mb.values()) if soak is not None and soak.memory_growth_mb else None
    complete = all(s.complete for s in scenarios)
    targets: dict[str, dict[str, Any]] = {
        "throughput_ratio": {
            "target": f">= {TARGET_RATIO}",
            "measured": ratio,
            "met": complete and ratio >= TARGET_RATIO,
        },
        "p99_ms_at_half_load": {
            "target": f"< {TARGET_P99_MS}",
            "offered_per_s": fixed.offered_per_s,
            "measured": fixed.latency.p99_ms,
            "met": complete and fixed.latency.count > 0 and fixed.latency.p99_ms < TARGET_P99_MS,
        },
        "memory_growth_mb": {
            "target": f"< {TARGET_GROWTH_MB} over {options.soak_messages or 100_000} messages",
            "measured": growth,
            "met": None if growth is None else (complete and growth < TARGET_GROWTH_MB),
        },
    }
    return BenchFigures(
        messages=saturated.messages,
        whole_path_per_s=saturated.whole_path_per_s,
        raw_broker_per_s=raw_rate,
        ratio=ratio,
        latency_p50_ms=saturated.latency.p50_ms,
        latency_p95_ms=saturated.latency.p95_ms,
        latency_p99_ms=saturated.latency.p99_ms,
        latency_max_ms=saturated.latency.max_ms,
        fixed_load_per_s=fixed.whole_path_per_s,
        fixed_load_p99_ms=fixed.latency.p99_ms,
        targets=targets,
        scenarios=scenarios,
        baselines=baselines,
    )


def _print_broker(scenario: ScenarioFigures, raw: Baseline | None, say: Callable[[str], None]) -> None:
    """The broker's CPU per message in raw hops and, at saturation, the rate it alone would allow."""
    if not scenario.broker_cpu_ms_per_message:
        return
    hop = raw.broker_cpu_ms_per_message if raw else None
    hops = f", as much as {scenario.broker_cpu_ms_per_message / hop:.1f} raw hops" if hop else ""
    say(f"    {'rabbitmq (beam.smp)':<20} cpu {scenario.broker_cpu_ms_per_message:.2f} ms a message{hops}")
    if scenario.offered_per_s is None and raw and raw.per_s:
        ceiling = 1000 / scenario.broker_cpu_ms_per_message
        say(
            f"    {'':<20} the broker alone, on a core of its own, would carry at most {ceiling:.0f} msg/s "
            f"of this path ({ceiling / raw.per_s:.3f} of raw)"
        )


def _print(figures: BenchFigures, say: Callable[[str], None]) -> None:
    for scenario in figures.scenarios:
        raw = _baseline_for(figures.baselines, scenario.sealed_bytes)
        ratio = f"{scenario.whole_path_per_s / raw.per_s:.3f} of raw" if raw and raw.per_s else "no baseline"
        say(
            f"\n  {scenario.name} ({scenario.agencies} agencies, document {scenario.document_bytes} B, "
            f"sealed {scenario.sealed_bytes} B, {'complete' if scenario.complete else 'INCOMPLETE'})"
        )
        offered = "" if scenario.offered_per_s is None else f", offered {scenario.offered_per_s}/s"
        say(
            f"    whole path {scenario.whole_path_per_s:>7.1f} msg/s ({ratio}), "
            f"submitted {scenario.submitted_per_s}/s{offered}"
        )
        say(f"    {'latency (ms)':<30} {'p50':>8} {'p95':>8} {'p99':>8} {'max':>8}")
        rows = [("submit -> DELIVERY", scenario.latency)] + [(f"  {k}", v) for k, v in scenario.stages.items()]
        for label, latency in rows:
            say(f"    {label:<30} {latency.p50_ms:>8} {latency.p95_ms:>8} {latency.p99_ms:>8} {latency.max_ms:>8}")
        append = scenario.audit_append
        if append.get("appends"):
            say(
                f"    {'  audit_append (in gateway)':<30} {append.get('p50_ms'):>8} {append.get('p95_ms'):>8} "
                f"{append.get('p99_ms'):>8} {append.get('max_ms'):>8}"
            )
        for process in scenario.processes:
            say(
                f"    {process.name:<20} cpu {process.cpu_s:>7.2f} s ({process.cpu_percent_of_one_core:>5.1f}% of a "
                f"core, waiting for a cpu {process.waiting_for_cpu_percent:>5.1f}%), "
                f"peak {process.peak_rss_mb:>6.1f} MB, now {process.rss_mb:>6.1f} MB"
            )
        _print_broker(scenario, raw, say)
        if scenario.memory_growth_mb is not None:
            say(f"    resident growth after the first tenth (MB): {scenario.memory_growth_mb}")
            say(f"    resident growth over the second half (MB): {scenario.memory_growth_second_half_mb}")
    for baseline in figures.baselines:
        say(
            f"\n  raw broker:  {baseline.per_s:>8.1f} messages/s of {baseline.sealed_bytes} B "
            f"(aio-pika over {baseline.transport}, persistent, confirmed, acked, one quorum queue, same broker, "
            "same run)"
        )
        if baseline.broker_cpu_ms_per_message is not None:
            say(f"               rabbitmq (beam.smp) cpu {baseline.broker_cpu_ms_per_message:.2f} ms a message")
    say(f"  ratio:       {figures.ratio:.3f} of the raw single-hop rate (2 KB pair at saturation)")
    for name, target in figures.targets.items():
        met = {True: "met", False: "NOT met", None: "not measured"}[target["met"]]
        say(f"  target {name:<22} {target['target']:<36} measured {target['measured']}: {met}")
    say(f"  note: {figures.note}")


__all__ = [
    "Baseline",
    "BenchFailed",
    "BenchFigures",
    "BenchOptions",
    "Latency",
    "ProcessFigures",
    "Scenario",
    "ScenarioFigures",
    "bench_case",
    "bench_note",
    "request_between",
    "run_bench",
]
