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
half the saturation throughput, the pair sending the sample MLA request
(about 17 KB, Arabic and Bengali included, each opening a new case: the
case bookkeeping a real request costs), the pair with about 64 KB, and many
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
the single hop every exchange pays at least. Each scenario also counts the
broker messages an exchange costs, as the broker counts them
(`deploy.bench.broker_messages`), and the CPU each process spends an
exchange. Targets (issue 20: at least 0.15 of the raw rate, on the way to
0.3; at most 2.5 broker messages an exchange; p99 under 100 ms at half the
saturation load; under 50 MB of resident growth in the soak) are reported,
never enforced: nothing here fails on a number.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

from deploy.bench.baseline import RAW_MIN_MESSAGES, Baseline, raw_broker
from deploy.bench.gateways import LOCAL_POSTGRES_URL, throwaway_database
from deploy.bench.report import BenchFigures, bench_figures, print_figures
from deploy.bench.scenarios import (
    LARGE_CONTENT_BYTES,
    REQUESTS,
    SMALL_CONTENT_BYTES,
    BenchNetwork,
    Scenario,
    ScenarioFigures,
    run_scenario,
)
from deploy.client.samples import REQUESTED, REQUESTING
from deploy.localnet.network import bench_hosts, bench_pair
from gateway.db import redacted_url

DEFAULT_PAIRS: Final = 10
"""Benchmark pairs of the many-agencies scenario (20 agencies beside the 4 of the dev network)."""


@dataclass(frozen=True, slots=True)
class BenchOptions:
    """What `rogatory bench` was asked to run."""

    messages: int = 500
    pairs: int = DEFAULT_PAIRS
    large: bool = True
    soak_messages: int = 0
    requests: bool = True
    """Also the sample MLA request (about 17 KB, each opening a new case), not only notes in open cases."""
    gateways: int = 1
    """Gateway processes (1, 2 or 3); more than one share one PostgreSQL log (`deploy.bench.gateways`)."""
    database_url: str | None = None
    """The gateway's PostgreSQL database, whatever `gateways` (None: SQLite for one process, a throwaway
    database on `postgres_admin_url`'s server for more)."""
    postgres_admin_url: str = LOCAL_POSTGRES_URL
    """Where a throwaway database is made when `database_url` is None."""
    profile_dir: Path | None = None
    """Where each service process writes its cProfile when it stops (`ROGATORY_PROFILE_DIR`); none if `None`."""
    agencies_per_process: int = 0
    """The many-agencies scenario's agencies run this many to an agent process (`agents.hosting`); 0: one each."""


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
    store = "SQLite" if options.gateways == 1 and options.database_url is None else "PostgreSQL"
    processes = f"{options.gateways} gateway process{'es' if options.gateways > 1 else ''} on {store}"
    say(f"Rogatory bench: {options.messages} messages a scenario, whole path vs. raw broker; {processes}")
    figures = asyncio.run(_run_with_database(root, amqp_url, management_url, options, say))
    print_figures(figures, say)
    out.write_text(json.dumps(asdict(figures), indent=2, ensure_ascii=False) + "\n")
    say(f"  figures written to {out}")
    return 0


class _NetworkDatabases:
    """The gateway's store of each bench network: SQLite for one process, else a PostgreSQL database of its own.

    Two networks never share one: each logs its own directory as version 1,
    and a gateway refuses a database holding another network's (`DIRECTORY_ROLLBACK`).
    A given `--database-url` serves the first network; the next gets a
    throwaway database on that server, as every network does without one.
    """

    def __init__(self, options: BenchOptions, say: Callable[[str], None], cleanup: contextlib.AsyncExitStack) -> None:
        self._options = options
        self._say = say
        self._cleanup = cleanup
        self._given_taken = False

    async def open(self, network: str) -> str | None:
        """The database URL of `network`'s gateway processes (None: SQLite in its data directory)."""
        options = self._options
        if options.gateways == 1 and options.database_url is None:
            return None
        if options.database_url is not None and not self._given_taken:
            self._given_taken = True
            return options.database_url
        server = options.database_url or options.postgres_admin_url
        url = await self._cleanup.enter_async_context(throwaway_database(server))
        self._say(f"  the {network} network's gateway records in a throwaway PostgreSQL database: {redacted_url(url)}")
        return url


async def _run_with_database(
    root: Path, amqp_url: str, management_url: str | None, options: BenchOptions, say: Callable[[str], None]
) -> BenchFigures:
    """The bench, each of its networks on a gateway store of its own (dropped at the end if made for it)."""
    async with contextlib.AsyncExitStack() as cleanup:
        return await _run(
            root, amqp_url, management_url, options, say, databases=_NetworkDatabases(options, say, cleanup)
        )


async def _run(
    root: Path,
    amqp_url: str,
    management_url: str | None,
    options: BenchOptions,
    say: Callable[[str], None],
    *,
    databases: _NetworkDatabases,
) -> BenchFigures:
    database_url = await databases.open("pair")
    pair_net = BenchNetwork(
        root / "pair",
        amqp_url=amqp_url,
        management_url=management_url,
        bench_pairs=0,
        say=say,
        gateways=options.gateways,
        database_url=database_url,
        profile_dir=options.profile_dir,
    )
    scenarios: list[ScenarioFigures] = []
    baselines: list[Baseline] = []
    one_pair = ((REQUESTING, REQUESTED),)

    async def baseline_beside(scenario: ScenarioFigures) -> None:
        """The raw rate for this size, right after the scenario (the machine's load drifts between minutes)."""
        say(f"  raw broker baseline for {scenario.sealed_bytes} B (same broker, same run)")
        count = max(RAW_MIN_MESSAGES, options.messages)
        baselines.append(await raw_broker(amqp_url, management_url, count, scenario.sealed_bytes))

    try:
        saturated = await run_scenario(
            pair_net,
            Scenario(
                "pair-2KB-saturation", one_pair, SMALL_CONTENT_BYTES, options.messages, count_broker_messages=True
            ),
            say,
        )
        scenarios.append(saturated)
        await baseline_beside(saturated)
        half = max(1.0, round(saturated.whole_path_per_s / 2, 1))
        fixed = await run_scenario(
            pair_net, Scenario("pair-2KB-fixed-half-load", one_pair, SMALL_CONTENT_BYTES, options.messages, half), say
        )
        scenarios.append(fixed)
        if options.requests:
            requests = await run_scenario(
                pair_net,
                Scenario(
                    "pair-mla-requests-saturation",
                    one_pair,
                    0,
                    max(20, options.messages // 2),
                    kind=REQUESTS,
                    count_broker_messages=True,
                ),
                say,
            )
            scenarios.append(requests)
            await baseline_beside(requests)
        if options.large:
            large = await run_scenario(
                pair_net,
                Scenario("pair-64KB-saturation", one_pair, LARGE_CONTENT_BYTES, max(20, options.messages // 2)),
                say,
            )
            scenarios.append(large)
            await baseline_beside(large)
        if options.soak_messages:
            scenarios.append(
                await run_scenario(
                    pair_net,
                    Scenario("pair-2KB-soak", one_pair, SMALL_CONTENT_BYTES, options.soak_messages, soak=True),
                    say,
                )
            )
    finally:
        await pair_net.destroy()
    if options.pairs:
        many_net = BenchNetwork(
            root / "many",
            amqp_url=amqp_url,
            management_url=management_url,
            bench_pairs=options.pairs,
            say=say,
            gateways=options.gateways,
            database_url=await databases.open("many"),
            profile_dir=options.profile_dir,
        )
        many_net.hosts = bench_hosts(options.pairs, options.agencies_per_process)
        pairs = tuple(bench_pair(index) for index in range(1, options.pairs + 1))
        try:
            scenarios.append(
                await run_scenario(
                    many_net,
                    Scenario(
                        f"many-{2 * options.pairs}-agencies-2KB-saturation",
                        pairs,
                        SMALL_CONTENT_BYTES,
                        max(options.messages, 2 * options.pairs),
                        count_broker_messages=True,
                    ),
                    say,
                )
            )
        finally:
            await many_net.destroy()
    return bench_figures(scenarios, baselines, soak_messages=options.soak_messages)


__all__ = ["DEFAULT_PAIRS", "BenchOptions", "run_bench"]
