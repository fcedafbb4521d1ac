"""The figures of a fault scenario, counted from the durable records only.

* submitted, accepted: what the agency system sent, and what its agent answered `202` to
  (the harness retries a submission, same message id, until it is answered);
* delivered once: accepted messages in the recipient's inbox exactly once, whose sender
  holds the recipient's `DELIVERY` evidence (the chain reached the sender);
* duplicates suppressed: redeliveries the services recognised, from their JSON logs
  (the gateway's and agents' `message_processed` lines with `result=duplicate`);
* duplicates reaching an inbox: extra copies of a message in the recipient's inbox;
* lost: accepted messages neither delivered nor answered with negative evidence;
* negative evidence: accepted messages whose sender's status is `rejected`, `failed`
  or `expired`, with the evidence that made it so;
* audit leaves vs events: evidence leaves in the gateway's log about these messages,
  against the evidence identities their senders hold (each event once in the log,
  none missing, none extra), and whether the whole log verifies (`deploy.cli.auditor`).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.logs import CANONICAL_EVENT

NEGATIVE_STATUSES = frozenset({"rejected", "failed", "expired"})
DELIVERED_STATUSES = frozenset({"delivered", "retrieved"})


@dataclass(frozen=True)
class Figures:
    """One scenario's outcome."""

    scenario: str
    submitted: int
    accepted: int
    delivered_once: int
    duplicates_suppressed: int
    duplicates_suppressed_by: dict[str, int]
    duplicates_in_inbox: int
    lost: int
    negative: int
    negative_by: dict[str, int]
    contradictions: int
    audit_evidence_leaves: int
    audit_events: int
    audit_missing: int
    audit_extra: int
    audit_other_leaves: dict[str, int]
    audit_verdict: str
    audit_consistent: bool
    seconds: float
    notes: tuple[str, ...] = field(default=())

    def table(self) -> str:
        """The figures as the test prints them."""
        by = ", ".join(f"{name} {count}" for name, count in sorted(self.duplicates_suppressed_by.items()))
        negative = ", ".join(f"{name} {count}" for name, count in sorted(self.negative_by.items())) or "-"
        other = ", ".join(f"{kind} {count}" for kind, count in sorted(self.audit_other_leaves.items())) or "-"
        rows = [
            ("submitted", f"{self.submitted}"),
            ("accepted (202)", f"{self.accepted}"),
            ("delivered once", f"{self.delivered_once}"),
            ("duplicates suppressed", f"{self.duplicates_suppressed} ({by or 'none'})"),
            ("duplicates in an inbox", f"{self.duplicates_in_inbox}"),
            ("lost", f"{self.lost}"),
            ("negative evidence", f"{self.negative} ({negative})"),
            ("delivered and negative", f"{self.contradictions}"),
            (
                "audit leaves vs events",
                (
                    f"{self.audit_evidence_leaves} evidence leaves vs {self.audit_events} events "
                    f"(missing {self.audit_missing}, extra {self.audit_extra}); other leaves: {other}"
                ),
            ),
            ("audit log", self.audit_verdict),
            ("took", f"{self.seconds:.1f} s"),
        ]
        width = max(len(name) for name, _ in rows)
        lines = [f"== {self.scenario} =="]
        lines += [f"  {name:<{width}}  {value}" for name, value in rows]
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)

    def check(self) -> None:
        """The guarantee: nothing lost, nothing twice in an inbox, each event once in a log that verifies."""
        assert self.accepted == self.submitted, f"{self.submitted - self.accepted} submissions never answered 202"
        assert self.lost == 0, f"{self.lost} accepted messages lost\n{self.table()}"
        assert self.duplicates_in_inbox == 0, f"{self.duplicates_in_inbox} duplicates in an inbox\n{self.table()}"
        assert self.contradictions == 0, f"{self.contradictions} messages delivered and refused\n{self.table()}"
        assert self.delivered_once + self.negative == self.accepted, self.table()
        assert self.audit_missing == 0, f"{self.audit_missing} events missing from the audit log\n{self.table()}"
        assert self.audit_extra == 0, f"{self.audit_extra} evidence leaves no sender holds\n{self.table()}"
        assert self.audit_evidence_leaves == self.audit_events, self.table()
        assert self.audit_consistent, f"the audit log does not verify: {self.audit_verdict}"


def duplicates_from_logs(state_dir: Path) -> dict[str, int]:
    """Redeliveries recognised, by service, from the services' JSON log lines."""
    found: Counter[str] = Counter()
    logs = [("gateway", state_dir / "gateway" / "gateway.log", CANONICAL_EVENT)]
    logs += [(path.parent.name, path, CANONICAL_EVENT) for path in sorted((state_dir / "agents").glob("*/agent.log"))]
    for service, path, event in logs:
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            if '"duplicate"' not in line:
                continue
            try:
                record: dict[str, Any] = json.loads(line)
            except ValueError:
                continue
            if record.get("event") == event and record.get("result") == "duplicate":
                found[service] += 1
    return dict(found)


NOTABLE_EVENTS = (
    "consumer_connection_lost",
    "consumer_retry",
    "consumer_settle_lost",
    "consumer_handed_back",
    "consumer_unexpected_error",
    "watchdog_expired",
    "task_ended",
    "dead_letter_held",
)
"""What the services logged about the faults (a bug shows as `consumer_unexpected_error` or `task_ended`)."""


def notable_events(state_dir: Path) -> dict[str, int]:
    """How often each of `NOTABLE_EVENTS` was logged, by any service."""
    found: Counter[str] = Counter()
    paths = [state_dir / "gateway" / "gateway.log", *sorted((state_dir / "agents").glob("*/agent.log"))]
    for path in paths:
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            if '"consumer_' not in line and '"watchdog_' not in line and '"task_' not in line and "dead_" not in line:
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("event") in NOTABLE_EVENTS:
                found[str(record["event"])] += 1
    return dict(found)


def log_events(state_dir: Path, event: str) -> list[dict[str, Any]]:
    """Every JSON log line with this event name, from the gateway and the agents."""
    found: list[dict[str, Any]] = []
    paths = [state_dir / "gateway" / "gateway.log", *sorted((state_dir / "agents").glob("*/agent.log"))]
    for path in paths:
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            if event not in line:
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("event") == event:
                found.append(record)
    return found
