"""Retention: the decrypted content of a closed case is purged once the agency's retention period has passed.

An agent serves one agency, so the policy is the agent's setting:
`ROGATORY_RETENTION_AFTER_CLOSE_DAYS` (unset: keep everything, the default).
A case is due when its state is `CLOSED` (folded from its signed documents,
`agents.cases`) and its latest message was stored here at least that many
days ago: a message arriving after the closure (a use-consent request, say)
moves the date on.

What goes, for every message of the case, sent and received:

* the document as stored (`outbox.document`, `inbox.document`) and the sealed
  envelope (`sealed`; the recipient could open it again), emptied in place,
  in one transaction per case; `content_purged_at` says when;
* received attachment bodies (`<data>/attachments/received/*`) and the keys
  that open them; sent bodies (`<data>/attachments/blobs/*`) and their keys,
  by the plaintext digests the sent documents listed.

What stays: each row's metadata, digest and status, the evidence held
(signed statements and inclusion proofs), the gateway's audit log. The
evidence chain still verifies: it signs the digest, not the content. After
the rows are emptied, the WAL is checkpointed (the database runs with
`secure_delete`, so freed pages are zeroed, and the old pages leave the WAL).

The trail is the `purges` table of `agent.db` (one row per message: case,
direction, sender, recipient, message id and type, marking, the closing date
used, the policy in days, when) and one `case_content_purged` log line per
case. `rogatory retention show` lists what is due; `rogatory retention purge`
purges it now; the agent runs the same every `ROGATORY_RETENTION_INTERVAL_S`.

A purged case takes no more messages (`ILLEGAL_TRANSITION` with code
`CONTENT_PURGED`: its state cannot be folded without its documents), and its
content is answered `410 CONTENT_PURGED`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from agents.attachments import AttachmentStore
from agents.cases import CaseBook
from agents.errors import ContentPurged
from agents.store import AgentStore, PurgeRecord, Transaction
from protocol.encoding import format_timestamp, parse_timestamp
from protocol.ids import AgencyId
from protocol.mla import CaseState
from runtime.errors import TransientFailure

log = structlog.get_logger("rogatory.agent.retention")


@dataclass(frozen=True, slots=True)
class DueCase:
    """A closed case past its retention period, with content still held."""

    case_id: str
    closed_at: str
    """When this agent stored the case's latest message (the period runs from there)."""
    messages: tuple[str, ...]
    """`sent <id>` or `received <id> from <sender>`, each message whose content would go."""


class Retention:
    """Finds the closed cases past the period and purges their content."""

    def __init__(
        self,
        *,
        agency: AgencyId,
        store: AgentStore,
        cases: CaseBook,
        attachments: AttachmentStore | None,
        after_close_days: int | None,
        clock: Callable[[], datetime],
    ) -> None:
        self._agency = agency
        self._store = store
        self._cases = cases
        self._attachments = attachments
        self._days = after_close_days
        self._clock = clock

    @property
    def after_close_days(self) -> int | None:
        """The policy: days after closure (None: keep everything)."""
        return self._days

    async def due(self) -> list[DueCase]:
        """The cases that `purge` would purge now (none without a policy)."""
        if self._days is None:
            return []
        now = self._clock()
        found = []
        for case_id in sorted(await self._store.unpurged_case_ids()):
            async with self._store.transaction() as tx:
                case = await self._due_case(tx, case_id, now)
            if case is not None:
                found.append(case)
        return found

    async def _due_case(self, tx: Transaction, case_id: str, now: datetime) -> DueCase | None:
        if self._days is None:
            return None
        try:
            case = await self._cases.case_file(tx, case_id)
        except ContentPurged:
            return None
        if case is None or case.state is not CaseState.CLOSED:
            return None
        entries = await tx.case_entries(case_id, self._agency)
        stored = [parse_timestamp(entry.stored_at) for entry in entries if entry.stored_at is not None]
        if not stored:
            return None
        last = max(stored)
        if now - last < timedelta(days=self._days):
            return None
        return DueCase(
            case_id=case_id,
            closed_at=format_timestamp(last),
            messages=tuple(
                f"sent {entry.message_id}"
                if entry.direction == "sent"
                else f"received {entry.message_id} from {entry.sender}"
                for entry in entries
            ),
        )

    async def purge(self) -> list[PurgeRecord]:
        """Purge every case due now, then the bodies of every purged message; the trail of what was purged."""
        purged: list[PurgeRecord] = []
        if self._days is not None:
            for due in await self.due():
                now = self._clock()
                async with self._store.transaction() as tx:
                    case = await self._due_case(tx, due.case_id, now)
                    if case is None:
                        continue
                    records = await tx.purge_case(
                        case.case_id, closed_at=case.closed_at, retention_days=self._days, at=format_timestamp(now)
                    )
                self._cases.forget(case.case_id)
                purged += records
                log.info(
                    "case_content_purged",
                    case_id=case.case_id,
                    closed_at=case.closed_at,
                    retention_days=self._days,
                    messages=[record.message_id for record in records],
                    purged_at=format_timestamp(now),
                )
            if purged:
                await self._store.forget_purged_bytes()
        await self._purge_bodies()
        return purged

    async def _purge_bodies(self) -> None:
        """The bodies of purged messages not yet removed (also those a crash left after their rows were purged)."""
        pending = await self._store.purges(attachments_pending=True)
        if not pending:
            return
        at = format_timestamp(self._clock())
        removed = 0
        if self._attachments is not None:
            for record in pending:
                if record.direction == "received":
                    removed += await self._attachments.purge_received(record.sender, record.message_id, at)
                elif record.attachment_sha256:
                    removed += await self._attachments.purge_uploads(record.attachment_sha256)
            await self._attachments.forget_purged_bytes()
        async with self._store.transaction() as tx:
            await tx.mark_attachments_purged([record.purge_id for record in pending], at)
        log.info("attachment_bodies_purged", messages=len(pending), bodies=removed)

    async def run(self, stopping: asyncio.Event, *, interval: float) -> None:
        """Purge what is due every `interval` seconds until `stopping` is set."""
        while not stopping.is_set():
            try:
                await self.purge()
            except TransientFailure as exc:
                log.warning("retention_purge_postponed", error=str(exc)[:300])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=interval)


__all__ = ["DueCase", "Retention"]
