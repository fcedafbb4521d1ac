"""The audit log after a lost disk: never sign below what witnesses cosigned; take the lost leaves back.

A gateway restored from a backup holds a shorter log than the one its
witnesses (the agents) cosigned. Signing a checkpoint of that shorter log, or
appending a new leaf where a lost one stood, would show the witnesses two
histories: a fork. So:

* The operator marks a restored store (`rogatory log-recovery hold`): the
  gateway then starts *held* (`AuditLog.hold`): it appends nothing (a delivery
  that would append waits, unacknowledged, in the broker), signs no checkpoint
  and answers `GET /v1/audit/checkpoint` with `503 LOG_RECOVERING`, until every
  witness of the directory has presented its latest witnessed checkpoint and
  the log has reached the largest of them.
* Every witness presents its latest witnessed checkpoint at every round
  (`POST /v1/audit/witnessed`), cosigned again by its agency's key so the
  gateway knows who presents it; the note must bear a log key's signature, so
  nobody can push the gateway to a size it never signed. A presented checkpoint
  beyond this log holds the log too, held or not (the backstop of an operator
  who forgot the mark); one that disagrees with this log at its own size is a
  contradiction: the log stays held for good, and the operator is told.
* The witnesses give back the leaves they hold (`POST /v1/audit/recovery/leaves`):
  every evidence statement an agent received is, verbatim, the bytes of one
  leaf, and its inclusion proof names its index. Once candidates fill every
  index from this log's size to the witnessed size, and only if the tree they
  make has the witnessed, cosigned root, they are put back (`import_leaves`):
  nothing forged or misplaced can pass that check. Candidates without a known
  index fill what remains in the order of their statements' times.
* Evidence the witnesses give back from past the witnessed size (appended
  after the last cosigned checkpoint: no root vouches for it) is appended
  anew once the log is released, each only if its signature verifies under
  the directory (`_append_unwitnessed`).
* If the leaves cannot be found (a gateway-only leaf: a rejected input, an
  operator action, a dead letter, an attachments or blob leaf), the log stays
  held and says how many are missing: continuing would fork it. SECURITY.md
  ("Lost disk") and docs/OPERATIONS.md ("## Lost disk") say what then.

The log's leaves also give back much of the gateway's state: the records of
the messages they accepted are rebuilt from them (`_rebuild_records`), so that
evidence still owed about them is matched when it comes and a replay is known.
What the leaves do not name (a message whose acceptance leaf was not put back)
has no record: `unrecorded_messages` names those the log mentions (the report
an operator reads).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

import structlog

from gateway.auditlog import AuditLog
from gateway.store import GatewayStore, MessageRecord, MessageState, RelayState
from protocol.auditlog import EvidenceLeaf, decode_leaf
from protocol.checkpoint import Checkpoint, NoteSignature, SignedCheckpoint, verify_checkpoint, verify_cosignature
from protocol.directory import Directory
from protocol.encoding import b64encode, format_timestamp
from protocol.errors import ErrorCode, ProofInvalid, ProtocolError
from protocol.evidence import (
    RECIPIENT_EVIDENCE,
    EvidenceStatement,
    EvidenceType,
    verify_evidence_as_of_its_time,
)
from protocol.ids import parse_agency_id
from protocol.limits import DEFAULT_LIMITS
from protocol.merkle import leaf_hash
from protocol.model import parse_model

log = structlog.get_logger("rogatory.gateway.recovery")

HOLD_SETTING: Final = "log_recovery_hold"
"""Set by `rogatory log-recovery hold` on a restored store: JSON `{"held_at", "restored_size"}`."""
FLOOR_SETTING: Final = "log_witnessed_floor"
"""The largest log-signed checkpoint a witness presented beyond this log (the note), kept across restarts."""
HEARD_SETTING: Final = "log_recovery_heard"
"""The witnesses that presented their latest checkpoint since the hold (JSON list)."""
RECOVERED_SETTING: Final = "log_recovery_recovered"
"""How many leaves were put back, and from where (JSON), once the log reached the witnessed size."""
MAX_CANDIDATES: Final = 200_000
"""Candidate leaves kept in memory while held: a day of a busy exchange; past it, offers are ignored."""


@dataclass(frozen=True, slots=True)
class OfferedLeaf:
    """A leaf a witness gives back: its bytes and, if its inclusion proof said so, its index."""

    index: int | None
    data: bytes


class LogRecovery:
    """Holds the log while it is behind its witnesses, and brings it back to their size."""

    def __init__(
        self,
        store: GatewayStore,
        audit: AuditLog,
        *,
        directory: Callable[[], Directory],
        clock: Callable[[], datetime],
        max_message_ttl: timedelta = DEFAULT_LIMITS.max_message_ttl,
    ) -> None:
        self._store = store
        self._clock = clock
        self._max_message_ttl = max_message_ttl
        self._audit = audit
        self._directory = directory
        self.held_at: str | None = None
        self.restored_size: int | None = None
        self.floor: Checkpoint | None = None
        self.heard: set[str] = set()
        self.contradiction: str | None = None
        self.recovered: dict[str, Any] | None = None
        self.missing = 0
        self.root_mismatch = False
        """The last candidates that filled every index did not rebuild the witnessed root (a wrong or forged leaf)."""
        self._indexed: dict[int, dict[bytes, bytes]] = {}
        self._unindexed: dict[str, tuple[str, bytes]] = {}
        self._spares: list[bytes] = []
        self._released = False
        """The log got back to the witnessed size: once no longer held, sign its checkpoint and append the spares."""
        """Candidates left once the log is back (evidence past the witnessed size), appended once it is released."""
        self._announced: tuple[str, int] | None = None

    @classmethod
    async def load(
        cls,
        store: GatewayStore,
        audit: AuditLog,
        *,
        directory: Callable[[], Directory],
        clock: Callable[[], datetime],
        max_message_ttl: timedelta = DEFAULT_LIMITS.max_message_ttl,
    ) -> LogRecovery:
        """The recovery state kept in the store, applied to the log (held before anything can append)."""
        recovery = cls(store, audit, directory=directory, clock=clock, max_message_ttl=max_message_ttl)
        hold = await store.setting(HOLD_SETTING)
        if hold is not None:
            kept = json.loads(hold)
            recovery.held_at = str(kept["held_at"])
            recovery.restored_size = int(kept["restored_size"])
        floor = await store.setting(FLOOR_SETTING)
        if floor is not None:
            recovery.floor = SignedCheckpoint.parse(floor).checkpoint
        heard = await store.setting(HEARD_SETTING)
        recovery.heard = set(json.loads(heard)) if heard is not None else set()
        recovered = await store.setting(RECOVERED_SETTING)
        recovery.recovered = json.loads(recovered) if recovered is not None else None
        recovery._apply()
        return recovery

    # -- state -------------------------------------------------------------------------

    def _witnesses(self) -> set[str]:
        return {str(agency.agency_id) for agency in self._directory().agencies}

    def reason(self) -> str | None:
        """Why the log is held, or None."""
        if self.contradiction is not None:
            return self.contradiction
        if self.floor is not None and self.floor.size > self._audit.size:
            return (
                f"witnesses cosigned a checkpoint of size {self.floor.size}; this log holds {self._audit.size} "
                f"leaves ({self.missing or self.floor.size - self._audit.size} missing)"
            )
        if self.held_at is not None:
            waiting = sorted(self._witnesses() - self.heard)
            if waiting:
                return f"restored from a backup: waiting for the latest witnessed checkpoint of {', '.join(waiting)}"
        return None

    @property
    def recovering(self) -> bool:
        """Whether the log is held."""
        return self._audit.hold is not None

    def below_witnessed(self, tree_size: int) -> bool:
        """Whether a checkpoint of `tree_size` is smaller than one a witness presented: never to be served."""
        return self.floor is not None and tree_size < self.floor.size

    def _apply(self) -> None:
        reason = self.reason()
        was = self._audit.hold
        self._audit.hold = reason
        if reason is not None and (was is None or self._announced != (reason[:40], self._audit.size)):
            self._announced = (reason[:40], self._audit.size)
            log.error(
                "audit_log_recovering",
                reason=reason,
                tree_size=self._audit.size,
                witnessed_size=None if self.floor is None else self.floor.size,
            )
        elif reason is None and was is not None:
            log.info("audit_log_recovery_done", tree_size=self._audit.size, recovered=self.recovered)

    def status(self) -> dict[str, Any]:
        """What health, metrics and `GET /v1/audit/recovery` say."""
        return {
            "recovering": self.recovering,
            "reason": self._audit.hold,
            "tree_size": self._audit.size,
            "witnessed_size": None if self.floor is None else self.floor.size,
            "restored_size": self.restored_size,
            "held_at": self.held_at,
            "witnesses_heard": sorted(self.heard),
            "missing_leaves": self.missing if self.recovering else 0,
            "root_mismatch": self.root_mismatch,
            "candidate_leaves": len(self._unindexed) + sum(len(c) for c in self._indexed.values()),
            "recovered": self.recovered,
        }

    # -- what witnesses present ------------------------------------------------------------

    def _verified(self, note: str, line: str) -> tuple[Checkpoint, str]:
        """The checkpoint, if a log key signed it, and the agency whose fresh cosignature `line` is."""
        directory = self._directory()
        gateway = directory.gateway
        checkpoint: Checkpoint | None = None
        failures: list[str] = []
        for key in gateway.log_keys:
            try:
                checkpoint = verify_checkpoint(note, gateway.log_origin, key.verifier, origin=gateway.log_origin)
                break
            except ProtocolError as exc:
                failures.append(exc.detail)
        if checkpoint is None:
            raise ProofInvalid(
                "the presented checkpoint is not signed by a log key: " + "; ".join(failures),
                code=ErrorCode.CHECKPOINT_INVALID,
            )
        try:
            signature = NoteSignature.from_line(line.rstrip("\n"))
            witness = directory.agency(parse_agency_id(signature.key_name))
        except ProtocolError as exc:
            raise ProofInvalid(
                f"the presenting cosignature is not by an agency: {exc.detail}", code=ErrorCode.CHECKPOINT_INVALID
            ) from exc
        signed = SignedCheckpoint.parse(note).with_signature(signature)
        for key in witness.signing_keys:
            try:
                verify_cosignature(signed, witness.agency_id, key.verifier)
                return checkpoint, str(witness.agency_id)
            except ProtocolError:
                continue
        raise ProofInvalid(
            f"the cosignature of {witness.agency_id} on the presented checkpoint does not verify",
            code=ErrorCode.CHECKPOINT_INVALID,
        )

    async def present(self, note: str, line: str) -> dict[str, Any]:
        """A witness's latest witnessed checkpoint (`note`), with its fresh cosignature `line`: check the log by it."""
        checkpoint, agency = self._verified(note, line)
        await self._audit.current_size()  # another gateway process sharing the database may have appended
        settings: dict[str, str] = {}  # written only when something changed: presentations come every round
        if agency not in self.heard:
            self.heard.add(agency)
            settings[HEARD_SETTING] = json.dumps(sorted(self.heard))
        if await self._judge(checkpoint, agency):
            self.floor = checkpoint
            settings[FLOOR_SETTING] = SignedCheckpoint.parse(note).signed_only_by(checkpoint.origin).to_text()
        if settings:
            async with self._store.transaction() as tx:
                for name, value in settings.items():
                    await tx.set_setting(name, value)
        self._apply()
        if self.recovering and self._indexed:
            await self._complete()
        await self._after_release()
        return self.status()

    async def _judge(self, checkpoint: Checkpoint, agency: str) -> bool:
        """Whether `checkpoint` is the new largest witnessed size this log is behind; a contradiction is recorded."""
        if checkpoint.size <= self._audit.size:
            if await self._audit.root(checkpoint.size) != checkpoint.root_hash:
                self.contradiction = (
                    f"{agency} holds a checkpoint of size {checkpoint.size} whose root is not this log's: "
                    "the log was appended to at a lost index (a fork); it stays held"
                )
            return False
        if self.floor is not None and checkpoint.size == self.floor.size:
            if checkpoint.root_hash != self.floor.root_hash:
                self.contradiction = f"witnesses hold two checkpoints of size {checkpoint.size} with other roots"
            return False
        if await self._store.leaves(start=checkpoint.size - 1, limit=1):
            return False  # the database holds it: another gateway process appended (this one's tree is behind)
        return self.floor is None or checkpoint.size > self.floor.size

    async def offer(self, leaves: list[OfferedLeaf]) -> dict[str, Any]:
        """Leaves a witness gives back; kept as candidates, put back once they rebuild the witnessed root."""
        floor = self.floor
        await self._audit.current_size()
        if floor is None or floor.size <= self._audit.size or self.contradiction is not None:
            return self.status()
        for offered in leaves:
            if len(self._unindexed) + len(self._indexed) >= MAX_CANDIDATES:
                log.warning("audit_log_recovery_candidates_full", limit=MAX_CANDIDATES)
                break
            try:
                leaf = decode_leaf(offered.data)
            except ProtocolError:
                continue
            if offered.index is not None:
                if self._audit.size <= offered.index < floor.size:
                    self._indexed.setdefault(offered.index, {})[leaf_hash(offered.data)] = offered.data
            else:
                self._unindexed[leaf.identity] = (_leaf_time(leaf), offered.data)
        await self._complete()
        return self.status()

    async def _complete(self) -> None:
        """Fill the missing indexes with candidates; put them back if (and only if) the witnessed root comes out."""
        floor = self.floor
        start = await self._audit.current_size()
        if floor is None or floor.size <= start:
            return
        placed = await self._placed(start, floor.size)
        self.missing = sum(1 for candidate in placed if candidate is None)
        if self.missing:
            return
        leaves = [data for data in placed if data is not None]
        rebuilt_edge, _ = (await self._audit.frontier(start)).extend(leaf_hash(d) for d in leaves)
        if rebuilt_edge.root() != floor.root_hash:
            log.warning(
                "audit_log_recovery_root_mismatch",
                tree_size=start,
                witnessed_size=floor.size,
                indexed=sum(1 for i in range(start, floor.size) if len(self._indexed.get(i, {})) == 1),
            )
            self.missing = sum(1 for i in range(start, floor.size) if len(self._indexed.get(i, {})) != 1)
            self.root_mismatch = True
            return
        self.root_mismatch = False
        at = self._clock()
        await self._audit.import_leaves(start, leaves, at=at)
        rebuilt = await self._rebuild_records(leaves, at)
        self.recovered = {
            "from_size": start,
            "to_size": floor.size,
            "leaves": len(leaves),
            "messages_rebuilt": rebuilt,
            "unwitnessed_appended": 0,
            "root_hash": b64encode(floor.root_hash),
            "at": format_timestamp(at),
        }
        async with self._store.transaction() as tx:
            await tx.set_setting(RECOVERED_SETTING, json.dumps(self.recovered))
        self._spares = [data for _, data in self._unindexed.values()]
        self._released = True
        self._indexed.clear()
        self._unindexed.clear()
        self.missing = 0
        self._apply()
        await self._after_release()

    async def _after_release(self) -> None:
        """Once the log is back and no longer held: its checkpoint at once, then the unwitnessed evidence."""
        if self.recovering or not self._released:
            return
        spares, self._spares, self._released = self._spares, [], False
        now = self._clock()
        await self._audit.checkpoint_if_due(now, idle_interval=timedelta(0))  # the one kept is below the witnessed
        await self._append_unwitnessed(spares, now)

    async def _append_unwitnessed(self, spares: list[bytes], now: datetime) -> None:
        """Evidence agents hold that the log lost past the witnessed size, appended anew once the log is back.

        No root vouches for these: each is appended only as what it is, a
        signed evidence statement that verifies under the directory (the
        gateway's evidence key or the issuing agency's key), once, at the end
        of the log and at the time of the recovery. Without it the agents
        holding them would wait for their inclusion proofs for ever.
        """
        appended: list[bytes] = []
        directory = self._directory()
        async with self._audit.transaction() as atx:
            for data in sorted(spares, key=lambda d: _leaf_time(decode_leaf(d))):
                leaf = decode_leaf(data)
                if not isinstance(leaf, EvidenceLeaf):
                    continue
                try:
                    statement = verify_evidence_as_of_its_time(leaf.evidence, directory).statement
                except ProtocolError as exc:
                    log.warning("audit_log_recovery_leaf_refused", identity=leaf.identity[:300], error=exc.detail[:300])
                    continue
                added = await atx.append(
                    leaf,
                    at=now,
                    message_id=None if statement.message_id is None else str(statement.message_id),
                    agencies=tuple(a for a in (statement.sender, statement.recipient) if a is not None),
                )
                if added.added:
                    appended.append(data)
        if appended:
            rebuilt = await self._rebuild_records(appended, now)
            self.recovered = (self.recovered or {}) | {
                "unwitnessed_appended": len(appended),
                "messages_rebuilt": ((self.recovered or {}).get("messages_rebuilt", 0) + rebuilt),
            }
            async with self._store.transaction() as tx:
                await tx.set_setting(RECOVERED_SETTING, json.dumps(self.recovered))
            log.info("audit_log_recovery_unwitnessed_appended", leaves=len(appended), messages_rebuilt=rebuilt)

    async def _rebuild_records(self, leaves: list[bytes], now: datetime) -> int:
        """The gateway's records of the messages the put-back leaves accepted, rebuilt from them; how many.

        A message's `SUBMISSION_ACCEPTED` statements give its sender, id, digest,
        type, case, recipients and acceptance time; each recipient's latest
        evidence gives its copy's state, so that evidence still owed (a
        DELIVERY, a RETRIEVAL) is matched when it comes, and a replay is known.
        Its expiry is not in the log: the acceptance time plus the longest
        lifetime allowed, an upper bound (a deadline may come late, never early).
        """
        accepted, copies = _acceptances_and_copies(leaves)
        rebuilt = 0
        async with self._store.transaction() as tx:
            for (sender, message_id), statements in accepted.items():
                if await tx.message(sender, message_id) is not None:
                    continue
                first = statements[0]
                recipients = tuple(dict.fromkeys(str(s.recipient) for s in statements))
                expires_at = format_timestamp(first.at + self._max_message_ttl)
                relayed = all((sender, message_id, r) in copies for r in recipients)
                await tx.insert_message(
                    MessageRecord(
                        sender=sender,
                        message_id=message_id,
                        digest=first.message_digest,
                        message_type=first.message_type or "",
                        case_id=first.case_id or "",
                        recipients=recipients,
                        created_at=format_timestamp(first.at),
                        expires_at=expires_at,
                        state=MessageState.RELAYED if relayed else MessageState.ACCEPTED,
                        received_at=format_timestamp(first.at),
                    )
                )
                rebuilt += 1
            for (sender, message_id, recipient), state in copies.items():
                record = await tx.message(sender, message_id)
                if record is not None:
                    await tx.set_relay_state(
                        sender, message_id, recipient, state, format_timestamp(now), expires_at=record.expires_at
                    )
        return rebuilt

    async def _placed(self, start: int, end: int) -> list[bytes | None]:
        """A candidate for each index in [start, end): the one offered at it, else the next unplaced by time."""
        placed: list[bytes | None] = []
        used: set[str] = set()
        for index in range(start, end):
            choices = list(self._indexed.get(index, {}).values())
            placed.append(choices[0] if len(choices) == 1 else None)
            if len(choices) == 1:
                used.add(decode_leaf(choices[0]).identity)
        spare: list[tuple[str, str, bytes]] = []
        for identity, (moment, candidate) in self._unindexed.items():
            if identity not in used and await self._store.leaf_by_identity(identity) is None:
                spare.append((moment, identity, candidate))
        spare.sort()
        unplaced = iter(spare)
        for position in range(len(placed)):
            if placed[position] is None:
                chosen = next(unplaced, None)
                placed[position] = None if chosen is None else chosen[2]
        return placed

    # -- the report --------------------------------------------------------------------

    async def unrecorded_messages(self, *, limit: int = 1000) -> list[dict[str, str]]:
        """Messages the log names after the restored size that the gateway has no record of (lost with the disk)."""
        if self.restored_size is None:
            return []
        found: dict[tuple[str, str], dict[str, str]] = {}
        start = self.restored_size
        while len(found) < limit:
            records = await self._store.leaves(start=start, limit=500)
            if not records:
                break
            for record in records:
                leaf = decode_leaf(record.leaf)
                if not isinstance(leaf, EvidenceLeaf):
                    continue
                statement = _statement(leaf)
                if statement.message_id is None:
                    continue
                key = (statement.sender, str(statement.message_id))
                if key in found or await self._store.message(*key) is not None:
                    continue
                found[key] = {
                    "sender": statement.sender,
                    "message_id": key[1],
                    "recipient": statement.recipient or "",
                    "last_evidence": str(statement.evidence_type),
                }
            start = records[-1].index + 1
        return list(found.values())


def _acceptances_and_copies(
    leaves: list[bytes],
) -> tuple[dict[tuple[str, str], list[EvidenceStatement]], dict[tuple[str, str, str], RelayState]]:
    """The `SUBMISSION_ACCEPTED` statements by (sender, message id), and each copy's state after its latest evidence."""
    accepted: dict[tuple[str, str], list[EvidenceStatement]] = {}
    copies: dict[tuple[str, str, str], RelayState] = {}
    for data in leaves:
        leaf = decode_leaf(data)
        if not isinstance(leaf, EvidenceLeaf):
            continue
        statement = _statement(leaf)
        if statement.message_id is None or statement.recipient is None:
            continue
        key = (statement.sender, str(statement.message_id))
        if statement.evidence_type == EvidenceType.SUBMISSION_ACCEPTED:
            accepted.setdefault(key, []).append(statement)
        elif statement.evidence_type in _COPY_STATES:
            copies[(*key, statement.recipient)] = _COPY_STATES[statement.evidence_type]
        elif statement.evidence_type in RECIPIENT_EVIDENCE:
            copies[(*key, statement.recipient)] = RelayState.after(statement.evidence_type)
    return accepted, copies


def _statement(leaf: EvidenceLeaf) -> EvidenceStatement:
    return parse_model(EvidenceStatement, leaf.evidence.payload, what="evidence", code=ErrorCode.MALFORMED_EVIDENCE)


_COPY_STATES: Final = {
    EvidenceType.RELAY_ACCEPTED: RelayState.RELAYED,
    EvidenceType.RELAY_FAILED: RelayState.RELAY_FAILED,
}
_LIFECYCLE: Final = {evidence_type: position // 2 for position, evidence_type in enumerate(EvidenceType)}
"""One message's evidence in the order it is logged (accepted, relayed, delivered, retrieved), for equal times."""


def _leaf_time(leaf: Any) -> str:  # noqa: ANN401 - any AuditLeaf
    """Where a leaf without an index goes among others: its event's time, then (evidence) its step in the lifecycle."""
    if isinstance(leaf, EvidenceLeaf):
        statement = _statement(leaf)
        return f"{format_timestamp(statement.at)} {_LIFECYCLE[statement.evidence_type]}"
    at = getattr(leaf, "at", None)
    return "" if at is None else f"{format_timestamp(at)} 9"


def hold_value(restored_size: int, now: datetime) -> str:
    """What `rogatory log-recovery hold` keeps in the store."""
    return json.dumps({"held_at": format_timestamp(now), "restored_size": restored_size})


__all__ = [
    "FLOOR_SETTING",
    "HEARD_SETTING",
    "HOLD_SETTING",
    "RECOVERED_SETTING",
    "LogRecovery",
    "OfferedLeaf",
    "hold_value",
]
