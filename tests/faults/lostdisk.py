"""The lost-disk drills' hands and figures: a service's data back to its last backup, and what that cost.

The drills (`tests.faults.test_lost_disk`) run on the fault harness's real
network (`FaultNetwork`: gateway and four agents as processes, the machine's
RabbitMQ). A "lost disk" is a SIGKILL and the data directory replaced by the
service's last backup (`tests.support.backup`, the way `rogatory backup` /
`rogatory restore` copy it); the operator's step after a gateway restore is
`rogatory log-recovery hold` (`deploy.cli.recovery`).
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

import aiohttp

from deploy.cli.auditor import describe, fetch_snapshot, verify_snapshot
from deploy.client.agent_api import AgentApiError
from deploy.localnet.devstack import gateway_ca
from tests.faults.figures import DELIVERED_STATUSES
from tests.faults.harness import (
    RECIPIENT,
    SENDER,
    FaultNetwork,
    audit_entries,
    gateway_ssl,
    inbox_counts,
    say,
    statuses,
)


@dataclass
class LostDiskFigures:
    """One drill's outcome: the messages on each side of the backup, and the log's sizes."""

    scenario: str
    rows: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, name: str, value: object) -> None:
        self.rows.append((name, str(value)))

    def table(self) -> str:
        """The figures as the drill prints them (the fault drills' layout)."""
        rows = [*self.rows, ("took", f"{self.seconds:.1f} s")]
        width = max(len(name) for name, _ in rows)
        lines = [f"== {self.scenario} =="]
        lines += [f"  {name:<{width}}  {value}" for name, value in rows]
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


async def gateway_get(network: FaultNetwork, session: aiohttp.ClientSession, path: str) -> tuple[int, dict[str, Any]]:
    """A GET on the gateway with the auditor's token: (status, JSON body)."""
    gateway = network.stack["gateway"]
    headers = {"Authorization": f"Bearer {gateway['auditor_token']}"}
    async with session.get(f"{gateway['url']}{path}", headers=headers, ssl=gateway_ssl(network.stack)) as answer:
        body: dict[str, Any] = await answer.json(content_type=None)
        return answer.status, body


async def log_size(network: FaultNetwork, session: aiohttp.ClientSession) -> int:
    """The gateway's log size now."""
    _, body = await gateway_get(network, session, "/v1/audit/entries?start=0&limit=1")
    return int(body["tree_size"])


async def wait_until(what: str, probe: Any, *, within_s: float = 90.0, every_s: float = 0.5) -> Any:
    """Poll `probe()` (a coroutine function) until it answers something true; that answer."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            answer = await probe()
        except (aiohttp.ClientError, TimeoutError, OSError):
            answer = None
        if answer:
            return answer
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within_s:.0f} s: {what}")
        await asyncio.sleep(every_s)


async def at_status(
    network: FaultNetwork, session: aiohttp.ClientSession, ids: Iterable[str], wanted: frozenset[str]
) -> bool:
    """Whether every message of `ids` has one of the `wanted` statuses at its sender."""
    answers = await statuses(network, session, ids)
    return all(answer["status"] in wanted for answer in answers.values())


async def witnessed_everywhere(network: FaultNetwork, session: aiohttp.ClientSession) -> int:
    """Wait until every running agent cosigned a checkpoint of the whole log; the witnessed size.

    The log must be quiet: nothing appended meanwhile.
    """
    witnesses = sum(1 for agency in network.stack["agents"] if network.alive(agency))

    seen: list[str] = []

    async def cosigned() -> int | None:
        size = await log_size(network, session)
        status, latest = await gateway_get(network, session, "/v1/audit/checkpoint")
        seen[:] = [f"log size {size}, latest checkpoint ({status}): {str(latest)[:600]}"]
        if status != 200 or latest["tree_size"] != size or len(latest["cosignatures"]) < witnesses:
            return None
        return size

    try:
        size: int = await wait_until(f"{witnesses} witnesses cosigned the whole log", cosigned)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last seen: {seen}") from None
    return size


async def proofs_held(network: FaultNetwork, session: aiohttp.ClientSession, ids: Iterable[str]) -> bool:
    """Whether the sender holds an inclusion proof of every evidence it holds about `ids`."""
    answers = await statuses(network, session, ids)
    return all(item["inclusion_proof"] is not None for answer in answers.values() for item in answer["evidence"])


async def rogatory(*args: str) -> str:
    """Run the `rogatory` command line as an operator does; its standard output."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "deploy", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    assert process.returncode == 0, f"rogatory {' '.join(args)}: {err.decode()[-800:]}"
    return out.decode()


def leaves_in(database: Path) -> int:
    """Leaves in a (backed-up) gateway database."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        (count,) = db.execute("SELECT COUNT(*) FROM leaves").fetchone()
    db.close()
    return int(count)


def witness_state(agent_db: Path) -> tuple[int, list[str]]:
    """(largest size witnessed, the forks recorded) in an agent's database."""
    with sqlite3.connect(f"file:{agent_db}?mode=ro", uri=True) as db:
        (size,) = db.execute("SELECT COALESCE(MAX(tree_size), 0) FROM witnessed").fetchone()
        forks = [str(detail) for (detail,) in db.execute("SELECT detail FROM forks")]
    db.close()
    return int(size), forks


async def delivery_counts(
    network: FaultNetwork, session: aiohttp.ClientSession, ids: Iterable[str]
) -> tuple[Counter[str], dict[str, str]]:
    """How often each message is in the recipient's inbox, and each one's status at its sender."""
    inbox = await inbox_counts(network, session)
    answers = await statuses(network, session, ids)
    return inbox, {message_id: str(answer["status"]) for message_id, answer in answers.items()}


def delivered(inbox: Counter[str], status: dict[str, str], ids: Iterable[str]) -> int:
    """Messages in the recipient's inbox whose sender holds the DELIVERY."""
    return sum(1 for m in ids if inbox.get(m, 0) >= 1 and status.get(m) in DELIVERED_STATUSES)


async def audit_verdict(network: FaultNetwork) -> tuple[str, bool]:
    """The auditor's offline verification of the gateway's whole log: (verdict, consistent)."""
    gateway = network.stack["gateway"]
    snapshot = await fetch_snapshot(gateway["url"], gateway["auditor_token"], ca_file=gateway_ca(network.stack))
    report = verify_snapshot(snapshot, network.stack["network"]["authority_key"])
    return describe(report)[0], report.consistent


__all__ = [
    "RECIPIENT",
    "SENDER",
    "AgencyLoss",
    "LostDiskFigures",
    "agency_loss",
    "at_status",
    "audit_verdict",
    "delivered",
    "delivery_counts",
    "gateway_get",
    "leaves_in",
    "log_size",
    "proofs_held",
    "rogatory",
    "say",
    "wait_until",
    "witness_state",
    "witnessed_everywhere",
]


@dataclass(frozen=True)
class AgencyLoss:
    """What the gateway's log names about one agency that its agent no longer holds."""

    sent_unknown: frozenset[str]
    """Messages the log names with the agency as sender that are not in its agent's outbox."""
    received_unknown: frozenset[str]
    """Messages the agency's agent signed a DELIVERY for (in the log) that are not in its inbox."""


async def agency_loss(network: FaultNetwork, session: aiohttp.ClientSession, agency: str) -> AgencyLoss:
    """The report after an agent's disk was lost: the gateway's log against the agent's records (auditor token).

    Evidence identities read `evidence/<type>/<sender>/<message id>/<recipient>/<digest>`.
    """
    sent: set[str] = set()
    received: set[str] = set()
    for entry in await audit_entries(network, session):
        if entry["kind"] != "evidence":
            continue
        _, evidence_type, sender, message_id, recipient, _ = entry["identity"].split("/")
        if sender == agency:
            sent.add(message_id)
        if recipient == agency and evidence_type == "DELIVERY":
            received.add(message_id)
    agent = network.agent(session, agency)
    sent_unknown = set()
    for message_id in sorted(sent):
        try:
            await agent.message(message_id)
        except AgentApiError as exc:
            if exc.status != HTTPStatus.NOT_FOUND:
                raise
            sent_unknown.add(message_id)
    inbox: set[str] = set()
    cursor = "0"
    while True:
        page = await agent.inbox(after=cursor, limit=500)
        if not page["messages"]:
            break
        inbox.update(item["message_id"] for item in page["messages"])
        cursor = page["next"]
    return AgencyLoss(frozenset(sent_unknown), frozenset(received - inbox))
