"""`rogatory audit verify | export`: the auditor's view of a gateway's log.

`export` writes every checkpoint (with its cosignatures) and every entry up
to the latest checkpoint (leaf and receipt, verbatim) to one JSON file.
`verify` reads the same from a gateway or from an export and runs
`protocol.audit_verify.verify_audit_log` over it, against the directory
authority key the auditor trusts (never one taken from the data checked),
and against the state it verified last time (kept in a small state file), so
that a rewritten history is caught even if it is internally consistent.

Exit status: 0 the log is consistent and complete; 2 usage; 3 the gateway
could not be read; 4 the export could not be read; 10 and up, one per
`FailureKind` (see `EXIT_STATUS`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import aiohttp

from protocol.audit_verify import (
    AuditReport,
    CheckpointStamp,
    FailureKind,
    LogEntry,
    VerifiedState,
    verify_audit_log,
)
from protocol.encoding import b64decode, b64encode
from protocol.errors import ProtocolError
from protocol.keys import SigningPublicKey
from runtime.errors import ConfigurationError
from runtime.timestamps import verify_timestamp
from runtime.tls import client_context

EXPORT_FORMAT: Final = "rogatory-audit-export/1"
STATE_FORMAT: Final = "rogatory-audit-state/1"
PAGE: Final = 1000
EXIT_CONSISTENT: Final = 0
EXIT_GATEWAY_UNREADABLE: Final = 3
EXIT_EXPORT_UNREADABLE: Final = 4
EXIT_STATUS: Final[dict[FailureKind, int]] = {
    FailureKind.LEAF_INVALID: 10,
    FailureKind.DIRECTORY_INVALID: 11,
    FailureKind.EVIDENCE_INVALID: 12,
    FailureKind.SEQUENCE_INVALID: 13,
    FailureKind.CHECKPOINT_INVALID: 14,
    FailureKind.TREE_MISMATCH: 15,
    FailureKind.RECEIPT_INVALID: 16,
    FailureKind.COSIGNATURE_INVALID: 17,
    FailureKind.FORK_DETECTED: 18,
    FailureKind.INCONSISTENT_WITH_PREVIOUS: 19,
    FailureKind.TIMESTAMP_INVALID: 20,
}


class AuditSourceError(Exception):
    """The log could not be read from where the auditor pointed."""


@dataclass(frozen=True, slots=True)
class LogSnapshot:
    """Checkpoints (signing order) and the entries up to the latest one's size."""

    checkpoints: tuple[str, ...]
    entries: tuple[LogEntry, ...]
    stamps: tuple[CheckpointStamp, ...] = ()
    """RFC 3161 tokens the gateway kept over checkpoints (by position in `checkpoints`)."""


async def fetch_snapshot(gateway_url: str, token: str, *, ca_file: Path | None = None) -> LogSnapshot:
    """Read every checkpoint, then every entry up to the latest checkpoint's size.

    An https:// gateway is verified against `ca_file` (None: the system's store).
    """
    headers = {"Authorization": f"Bearer {token}"}
    base = gateway_url.rstrip("/")
    try:
        async with aiohttp.ClientSession(
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=120),
            connector=aiohttp.TCPConnector(ssl=client_context(ca_file)),
        ) as session:
            checkpoints: list[dict[str, Any]] = []
            after: int | None = 0
            while after is not None:
                page = await _get(session, f"{base}/v1/audit/checkpoints?after={after}&limit={PAGE}")
                checkpoints += page["checkpoints"]
                after = page["next_after"]
            size = int(checkpoints[-1]["tree_size"]) if checkpoints else 0
            entries: list[LogEntry] = []
            while len(entries) < size:
                page = await _get(session, f"{base}/v1/audit/entries?start={len(entries)}&limit={PAGE}")
                if not page["entries"]:
                    raise AuditSourceError(f"gateway stopped at entry {len(entries)} of {size}")
                for entry in page["entries"]:
                    if entry["index"] != len(entries):
                        raise AuditSourceError(f"gateway skipped entry {len(entries)} (sent {entry['index']})")
                    entries.append(LogEntry(b64decode(entry["leaf"]), b64decode(entry["receipt"])))
    except (
        aiohttp.ClientError,
        TimeoutError,
        KeyError,
        ValueError,
        TypeError,
        ProtocolError,
        ConfigurationError,
    ) as exc:
        raise AuditSourceError(f"cannot read the audit log from {base}: {exc!r}") from exc
    return LogSnapshot(
        tuple(str(c["checkpoint"]) for c in checkpoints),
        tuple(entries[:size]),
        _stamps_of(checkpoints),
    )


def _stamps_of(checkpoints: list[dict[str, Any]]) -> tuple[CheckpointStamp, ...]:
    """The time-stamp tokens of each checkpoint (an older gateway sends none)."""
    return tuple(
        CheckpointStamp(position, b64decode(str(stamp["token"])))
        for position, checkpoint in enumerate(checkpoints)
        for stamp in checkpoint.get("timestamps", ())
    )


async def _get(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with session.get(url) as response:
        if response.status != 200:
            body = (await response.text())[:300]
            raise AuditSourceError(f"GET {url} answered {response.status}: {body}")
        answer: dict[str, Any] = await response.json()
        return answer


def write_export(snapshot: LogSnapshot, path: Path) -> None:
    """Write `snapshot` as an export file."""
    document = {
        "format": EXPORT_FORMAT,
        "checkpoints": list(snapshot.checkpoints),
        "entries": [{"leaf": b64encode(e.leaf), "receipt": b64encode(e.receipt)} for e in snapshot.entries],
        "timestamps": [{"checkpoint": s.position, "token": b64encode(s.token)} for s in snapshot.stamps],
    }
    path.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")


def read_export(path: Path) -> LogSnapshot:
    """Read an export file written by `write_export`."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        export_format = document.get("format")
        snapshot = LogSnapshot(
            checkpoints=tuple(str(note) for note in document["checkpoints"]),
            entries=tuple(LogEntry(b64decode(e["leaf"]), b64decode(e["receipt"])) for e in document["entries"]),
            stamps=tuple(
                CheckpointStamp(int(s["checkpoint"]), b64decode(s["token"])) for s in document.get("timestamps", ())
            ),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError, ProtocolError) as exc:
        raise AuditSourceError(f"cannot read export {path}: {exc!r}") from exc
    if export_format != EXPORT_FORMAT:
        raise AuditSourceError(f"{path} is not a {EXPORT_FORMAT} file")
    return snapshot


def default_state_file() -> Path:
    """Where `verify` remembers what it verified: `$XDG_STATE_HOME/rogatory/audit-state.json`."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "rogatory" / "audit-state.json"


def load_state(path: Path) -> dict[str, VerifiedState]:
    """States remembered per log origin (an unreadable file is an error, not a fresh start)."""
    if not path.exists():
        return {}
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        if document.get("format") != STATE_FORMAT:
            raise AuditSourceError(f"{path} is not a {STATE_FORMAT} file")
        states = {
            origin: VerifiedState(origin, int(item["size"]), b64decode(item["root_hash"]))
            for origin, item in document["logs"].items()
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError, ProtocolError) as exc:
        raise AuditSourceError(f"cannot read the audit state {path}: {exc!r}") from exc
    return states


def save_state(path: Path, states: dict[str, VerifiedState]) -> None:
    """Remember the verified state of each log (atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "format": STATE_FORMAT,
        "logs": {o: {"size": s.size, "root_hash": b64encode(s.root_hash)} for o, s in sorted(states.items())},
    }
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    temporary.replace(path)


def verify_snapshot(snapshot: LogSnapshot, authority_key: str, *, state_file: Path | None = None) -> AuditReport:
    """Verify a snapshot against the authority key and, with a state file, against what was verified before."""
    authority = SigningPublicKey(b64decode(authority_key))
    states = load_state(state_file) if state_file is not None else {}
    first = verify_audit_log(
        snapshot.entries, snapshot.checkpoints, authority=authority, stamps=snapshot.stamps, check_stamp=_stamp_time
    )
    origin = first.latest.origin if first.latest is not None else None
    previous = states.get(origin) if origin is not None else None
    report = (
        first
        if previous is None
        else verify_audit_log(
            snapshot.entries,
            snapshot.checkpoints,
            authority=authority,
            previous=previous,
            stamps=snapshot.stamps,
            check_stamp=_stamp_time,
        )
    )
    if state_file is not None and report.state is not None:
        kept = states.get(report.state.origin)
        if kept is None or report.state.size >= kept.size:
            states[report.state.origin] = report.state
            save_state(state_file, states)
    return report


def _stamp_time(token: bytes, data: bytes, roots: Sequence[bytes]) -> datetime:
    """The time a checkpoint's RFC 3161 token vouches for (`ProofInvalid` if it does not verify)."""
    return verify_timestamp(token, data, roots).time


def describe(report: AuditReport) -> list[str]:
    """The verdict for people, first line first."""
    size = report.latest.size if report.latest is not None else "?"
    if report.consistent:
        lines = [f"VERDICT: CONSISTENT - the audit log of {report.leaves} entries verifies (checkpoint size {size})"]
    else:
        problem = report.problem
        assert problem is not None
        where = f" at entry {problem.index}" if problem.index is not None else ""
        where += f" (checkpoint #{problem.checkpoint + 1})" if problem.checkpoint is not None else ""
        named = f" [{problem.identity}]" if problem.identity else ""
        lines = [f"VERDICT: NOT CONSISTENT - {problem.kind}{where}{named}: {problem.detail}"]
    lines.append(
        f"  checked: {report.leaves} entries with their receipts, {report.directories} directory versions, "
        f"{report.evidence} evidence statements about {report.messages} messages, {report.checkpoints} checkpoints "
        f"with {report.cosignatures} cosignatures; published (cosigned by 2+ witnesses) up to size "
        f"{report.published_size}; {report.timestamps} RFC 3161 time-stamps over checkpoints verified"
    )
    return lines


def exit_status(report: AuditReport) -> int:
    """0 when consistent, else the status of the problem's kind."""
    return EXIT_CONSISTENT if report.problem is None else EXIT_STATUS[report.problem.kind]


__all__ = [
    "EXIT_STATUS",
    "AuditSourceError",
    "LogSnapshot",
    "default_state_file",
    "describe",
    "exit_status",
    "fetch_snapshot",
    "load_state",
    "read_export",
    "save_state",
    "verify_snapshot",
    "write_export",
]
