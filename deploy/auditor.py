"""`rogatory audit verify | export`: the auditor's view of a gateway's log.

`export` writes the checkpoint and every leaf, verbatim, to one JSON file.
`verify` reads the same from a gateway or from an export and runs
`protocol.audit_verify.verify_audit_log` over it, against the directory
authority key the auditor trusts (never one taken from the data checked).

Exit status: 0 the log is consistent and complete; 2 usage; 3 the gateway
could not be read; 4 the export could not be read; 10 and up, one per
`FailureKind` (see `EXIT_STATUS`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiohttp

from protocol.audit_verify import AuditReport, FailureKind, verify_audit_log
from protocol.encoding import b64decode, b64encode
from protocol.errors import ProtocolError
from protocol.keys import SigningPublicKey

EXPORT_FORMAT: Final = "rogatory-audit-export/1"
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
}


class AuditSourceError(Exception):
    """The log could not be read from where the auditor pointed."""


@dataclass(frozen=True, slots=True)
class LogSnapshot:
    """A checkpoint and the leaves read with it."""

    checkpoint: str
    leaves: tuple[bytes, ...]


async def fetch_snapshot(gateway_url: str, token: str) -> LogSnapshot:
    """Read the latest checkpoint, then every leaf up to at least its size."""
    headers = {"Authorization": f"Bearer {token}"}
    base = gateway_url.rstrip("/")
    try:
        async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=60)) as session:
            checkpoint = await _get(session, f"{base}/v1/audit/checkpoint")
            size = int(checkpoint["tree_size"])
            leaves: list[bytes] = []
            start: int | None = 0
            while start is not None and (len(leaves) < size or start == 0):
                page = await _get(session, f"{base}/v1/audit/entries?start={start}&limit={PAGE}")
                for entry in page["entries"]:
                    if entry["index"] != len(leaves):
                        raise AuditSourceError(f"gateway skipped entry {len(leaves)} (sent {entry['index']})")
                    leaves.append(b64decode(entry["leaf"]))
                start = page["next_start"]
    except (aiohttp.ClientError, TimeoutError, KeyError, ValueError, TypeError) as exc:
        raise AuditSourceError(f"cannot read the audit log from {base}: {exc!r}") from exc
    return LogSnapshot(checkpoint=str(checkpoint["checkpoint"]), leaves=tuple(leaves))


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
        "checkpoint": snapshot.checkpoint,
        "leaves": [b64encode(leaf) for leaf in snapshot.leaves],
    }
    path.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")


def read_export(path: Path) -> LogSnapshot:
    """Read an export file written by `write_export`."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        export_format = document.get("format")
        snapshot = LogSnapshot(
            checkpoint=str(document["checkpoint"]),
            leaves=tuple(b64decode(leaf) for leaf in document["leaves"]),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError, ProtocolError) as exc:
        raise AuditSourceError(f"cannot read export {path}: {exc!r}") from exc
    if export_format != EXPORT_FORMAT:
        raise AuditSourceError(f"{path} is not a {EXPORT_FORMAT} file")
    return snapshot


def verify_snapshot(snapshot: LogSnapshot, authority_key: str) -> AuditReport:
    """Verify a snapshot against the directory authority's base64 public key."""
    return verify_audit_log(snapshot.leaves, snapshot.checkpoint, authority=SigningPublicKey(b64decode(authority_key)))


def describe(report: AuditReport) -> list[str]:
    """The verdict for people, first line first."""
    size = report.checkpoint.size if report.checkpoint is not None else "?"
    if report.consistent:
        lines = [f"VERDICT: CONSISTENT - the audit log of {report.leaves} entries verifies (checkpoint size {size})"]
    else:
        problem = report.problem
        assert problem is not None
        where = f" at entry {problem.index}" if problem.index is not None else ""
        named = f" ({problem.identity})" if problem.identity else ""
        lines = [f"VERDICT: NOT CONSISTENT - {problem.kind}{where}{named}: {problem.detail}"]
    lines.append(
        f"  checked: {report.leaves} leaves, {report.directories} directory versions, "
        f"{report.evidence} evidence statements about {report.messages} messages"
    )
    return lines


def exit_status(report: AuditReport) -> int:
    """0 when consistent, else the status of the problem's kind."""
    return EXIT_CONSISTENT if report.problem is None else EXIT_STATUS[report.problem.kind]


__all__ = [
    "EXIT_STATUS",
    "AuditSourceError",
    "LogSnapshot",
    "describe",
    "exit_status",
    "fetch_snapshot",
    "read_export",
    "verify_snapshot",
    "write_export",
]
