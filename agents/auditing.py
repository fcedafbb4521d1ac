"""The agent as an auditor of the gateway: witness of its log, follower of its proofs.

`Witness` polls the gateway's latest checkpoint, verifies the log's signature,
checks that it is consistent with the last checkpoint this agent witnessed
(a consistency proof, RFC 9162 2.1.4), cosigns it (C2SP tlog-cosignature,
with the agency's signing key under the agency id as key name) and sends the
cosignature back. A checkpoint that contradicts what the agent witnessed
(same size and another root, a smaller size, or no valid consistency proof)
is proof of a forked log: kept with both notes, reported, never cosigned.

`ProofFollower` fetches, for each piece of evidence this agency holds, its
inclusion proof against the latest checkpoint the agent witnessed, verifies it
over the leaf it rebuilds from the evidence itself (never over a hash the
gateway supplies), and keeps it with the evidence. Evidence without a proof
after the maximum merge delay raises an alarm (health, log, count).

Nothing here trusts the gateway: every answer is checked against the
directory and this agent's own history.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, Protocol

import aiohttp
import structlog

from agents.store import AgentStore, EvidenceRecord
from protocol.auditlog import encode_leaf, evidence_leaf
from protocol.checkpoint import Checkpoint, SignedCheckpoint, cosign_checkpoint, verify_checkpoint
from protocol.directory import Directory
from protocol.encoding import b64decode, b64encode, format_timestamp, parse_json_strict, parse_timestamp
from protocol.errors import ErrorCode, MalformedInput, ProofInvalid, ProtocolError
from protocol.evidence import EvidenceStatement
from protocol.ids import AgencyId
from protocol.keys import SigningPrivateKey
from protocol.merkle import leaf_hash, verify_consistency, verify_inclusion
from protocol.signing import SignedStatement

PROOFS_PER_REQUEST: Final = 100
MAX_GATEWAY_ANSWER_BYTES: Final = 16 << 20
"""The largest gateway answer read: a proofs answer of `PROOFS_PER_REQUEST` leaves of a 2^40 tree is < 1 MiB."""
MAX_GATEWAY_ANSWER_DEPTH: Final = 8
"""A proofs answer nests four levels (answer, proofs, proof, nodes); the rest leaves room."""
"""Identities asked for in one `POST /v1/audit/proofs`: a round's backlog (up to 500) goes in several requests,
each well inside the gateway's request size limit whatever the identities' length."""

log = structlog.get_logger("rogatory.agent.auditing")


class GatewayUnreachable(Exception):
    """The gateway's audit API did not answer as expected (retried at the next poll)."""


class GatewayAuditApi(Protocol):
    """What the witness and the proof follower ask of the gateway (a port: HTTP in production)."""

    async def latest_checkpoint(self) -> dict[str, Any]:
        """The latest checkpoint: `checkpoint_id`, `checkpoint` (the note), `tree_size`."""

    async def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        """A consistency proof between two sizes."""

    async def cosign(self, checkpoint_id: int, line: str) -> None:
        """Send a cosignature line."""

    async def inclusion_proofs(self, identities: list[str], size: int) -> dict[str, Any]:
        """Proofs by leaf identity in the tree of `size`: `index` and `proof` (base64 nodes)."""


class GatewayAuditClient:
    """The few audit endpoints an agent calls, with its reader token (the HTTP `GatewayAuditApi`)."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, token: str) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}

    async def _call(self, method: str, path: str, body: object | None = None) -> dict[str, Any]:
        try:
            async with self._session.request(method, self._base + path, json=body, headers=self._headers) as answer:
                if answer.status not in {200, 201}:
                    text = await answer.text()
                    raise GatewayUnreachable(f"{method} {path} answered {answer.status}: {text[:200]}")
                raw = await answer.read()
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise GatewayUnreachable(f"{method} {path}: {exc!r}") from exc
        # Strictly: a hostile gateway's `Infinity` or huge integer is a refusal, not an OverflowError later.
        payload = parse_json_strict(raw, max_bytes=MAX_GATEWAY_ANSWER_BYTES, max_depth=MAX_GATEWAY_ANSWER_DEPTH)
        if not isinstance(payload, dict):
            raise MalformedInput(f"{method} {path} answered JSON that is not an object", code=ErrorCode.MALFORMED_JSON)
        return payload

    async def latest_checkpoint(self) -> dict[str, Any]:
        """`GET /v1/audit/checkpoint`."""
        return await self._call("GET", "/v1/audit/checkpoint")

    async def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        """`GET /v1/audit/proof/consistency`."""
        answer = await self._call("GET", f"/v1/audit/proof/consistency?from={old_size}&to={new_size}")
        return [b64decode(node) for node in answer["proof"]]

    async def cosign(self, checkpoint_id: int, line: str) -> None:
        """`POST /v1/audit/cosignatures`."""
        await self._call("POST", "/v1/audit/cosignatures", {"checkpoint_id": checkpoint_id, "cosignature": line})

    async def inclusion_proofs(self, identities: list[str], size: int) -> dict[str, Any]:
        """`POST /v1/audit/proofs`: proofs by identity in the tree of `size`."""
        answer = await self._call("POST", "/v1/audit/proofs", {"identities": identities, "size": size})
        proofs: dict[str, Any] = answer["proofs"]
        return proofs


@dataclass(frozen=True, slots=True)
class WitnessedCheckpoint:
    """A checkpoint this agent verified and found consistent with its history."""

    checkpoint: Checkpoint
    note: str


class Witness:
    """Verifies, checks consistency of, and cosigns the gateway's checkpoints."""

    def __init__(
        self,
        *,
        agency: AgencyId,
        signing_key: SigningPrivateKey,
        directory: Callable[[], Directory],
        store: AgentStore,
        gateway: GatewayAuditApi,
        clock: Callable[[], datetime],
    ) -> None:
        self._agency = agency
        self._key = signing_key
        self._directory = directory
        self._store = store
        self._gateway = gateway
        self._clock = clock
        self.forks_detected = 0
        self.last_witnessed_at: datetime | None = None
        self._cosigned: set[int] = set()

    def verify_note(self, note: str) -> Checkpoint:
        """The checkpoint, if a log key of the directory's gateway signed it for the log's origin."""
        gateway = self._directory().gateway
        failures: list[str] = []
        for key in gateway.log_keys:
            try:
                return verify_checkpoint(note, gateway.log_origin, key.verifier, origin=gateway.log_origin)
            except ProtocolError as exc:
                failures.append(exc.detail)
        raise ProofInvalid(
            "checkpoint not signed by a log key of the gateway: " + "; ".join(failures),
            code=ErrorCode.CHECKPOINT_INVALID,
        )

    async def observe(self) -> WitnessedCheckpoint | None:
        """One round: fetch, verify, check consistency, cosign. None if nothing new was witnessed."""
        answer = await self._gateway.latest_checkpoint()
        note = str(answer["checkpoint"])
        checkpoint_id = int(answer["checkpoint_id"])
        checkpoint = self.verify_note(note)
        held = await self._store.latest_witnessed()
        now = self._clock()
        if held is not None:
            held_size, held_root, held_note = held
            problem = await self._contradiction(checkpoint, held_size, held_root)
            if problem is not None:
                await self._record_fork(problem, held_note, note, now)
                return None
        if checkpoint_id in self._cosigned:
            return None
        line = cosign_checkpoint(SignedCheckpoint.parse(note), self._agency, self._key, int(now.timestamp()))
        await self._gateway.cosign(checkpoint_id, line.to_line())
        async with self._store.transaction() as tx:
            await tx.insert_witnessed(checkpoint.size, checkpoint.root_hash, checkpoint_id, note, format_timestamp(now))
        self._cosigned.add(checkpoint_id)
        self.last_witnessed_at = now
        return WitnessedCheckpoint(checkpoint, note)

    async def _contradiction(self, checkpoint: Checkpoint, held_size: int, held_root: bytes) -> str | None:
        """Why `checkpoint` cannot extend the history this agent witnessed, or None if it does."""
        if checkpoint.size < held_size:
            return f"the log shrank: checkpoint of size {checkpoint.size} after one of size {held_size}"
        if checkpoint.size == held_size:
            if checkpoint.root_hash != held_root:
                return f"two checkpoints of size {held_size} with different roots"
            return None
        proof = await self._gateway.consistency_proof(held_size, checkpoint.size)
        try:
            verify_consistency(held_size, checkpoint.size, held_root, checkpoint.root_hash, proof)
        except ProofInvalid as exc:
            return f"no valid consistency proof from size {held_size} to {checkpoint.size}: {exc.detail}"
        return None

    async def _record_fork(self, detail: str, held_note: str, offered_note: str, now: datetime) -> None:
        async with self._store.transaction() as tx:
            await tx.insert_fork(detail, held_note, offered_note, format_timestamp(now))
        self.forks_detected += 1
        log.error("audit_log_fork_detected", detail=detail)

    async def run(self, stopping: asyncio.Event, *, interval: float) -> None:
        """Observe every `interval` seconds until `stopping` is set."""
        while not stopping.is_set():
            try:
                await self.observe()
            except (GatewayUnreachable, ProtocolError) as exc:
                log.warning("witness_round_failed", error=str(exc)[:300])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=interval)


class ProofFollower:
    """Fetches and verifies the inclusion proof of each piece of evidence held; alarms when one is late."""

    def __init__(
        self,
        *,
        store: AgentStore,
        gateway: GatewayAuditApi,
        clock: Callable[[], datetime],
        max_merge_delay: timedelta,
    ) -> None:
        self._store = store
        self._gateway = gateway
        self._clock = clock
        self._max_merge_delay = max_merge_delay
        self.overdue = 0
        self._alarmed: set[str] = set()

    async def follow(self) -> int:
        """Verify and keep every proof now available; count what is overdue. Returns proofs kept."""
        held = await self._store.latest_witnessed()
        pending = await self._store.evidence_without_proof()
        kept: dict[str, str] = {}
        if held is not None and pending:
            size, root, note = held
            proofs: dict[str, Any] = {}
            for start in range(0, len(pending), PROOFS_PER_REQUEST):
                chunk = pending[start : start + PROOFS_PER_REQUEST]
                proofs.update(await self._gateway.inclusion_proofs([record.identity for record in chunk], size))
            for record in pending:
                offered = proofs.get(record.identity)
                if offered is None:
                    continue
                try:
                    proof = self.verified_proof(
                        record.signed, record.identity, offered=offered, size=size, root=root, note=note
                    )
                except (ProofInvalid, ValueError, KeyError, TypeError) as exc:
                    log.error("inclusion_proof_invalid", identity=record.identity, error=str(exc)[:300])
                    continue
                kept[record.identity] = json.dumps(proof)
            if kept:
                async with self._store.transaction() as tx:  # one transaction for the round: one COMMIT
                    for identity, proof_json in kept.items():
                        await tx.set_inclusion_proof(identity, proof_json)
        self._count_overdue([record for record in pending if record.identity not in kept])
        return len(kept)

    @staticmethod
    def verified_proof(
        signed_json: bytes, identity: str, *, offered: dict[str, Any], size: int, root: bytes, note: str
    ) -> dict[str, Any]:
        """The proof to keep, once it verifies over the leaf rebuilt from the evidence itself."""
        signed = SignedStatement.model_validate_json(signed_json)
        statement = EvidenceStatement.model_validate_json(signed.payload)
        if statement.identity != identity:
            raise ProofInvalid("stored evidence does not have the identity it is kept under")
        own_leaf_hash = leaf_hash(encode_leaf(evidence_leaf(signed, statement)))
        index = int(offered["index"])
        nodes = [b64decode(node) for node in offered["proof"]]
        verify_inclusion(own_leaf_hash, index, size, nodes, root)
        return {
            "leaf_index": index,
            "tree_size": size,
            "leaf_hash": b64encode(own_leaf_hash),
            "proof": offered["proof"],
            "root_hash": b64encode(root),
            "checkpoint": note,
        }

    def _count_overdue(self, still_pending: list[EvidenceRecord]) -> None:
        """Count (and raise once each) the evidence still without a proof after the merge delay, oldest first."""
        now = self._clock()
        overdue = 0
        for record in still_pending:
            if now - parse_timestamp(record.received_at) > self._max_merge_delay:
                overdue += 1
                if record.identity not in self._alarmed:
                    self._alarmed.add(record.identity)
                    log.error(
                        "inclusion_proof_overdue",
                        identity=record.identity,
                        message_id=record.message_id,
                        max_merge_delay_s=self._max_merge_delay.total_seconds(),
                    )
        self.overdue = overdue
        # Forget alarms of evidence that got its proof since: the set holds what is still overdue, not history.
        self._alarmed.intersection_update(record.identity for record in still_pending)

    async def run(self, stopping: asyncio.Event, *, interval: float) -> None:
        """Follow every `interval` seconds until `stopping` is set."""
        while not stopping.is_set():
            try:
                await self.follow()
            except (GatewayUnreachable, ProtocolError) as exc:
                log.warning("proof_round_failed", error=str(exc)[:300])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=interval)


@dataclass(frozen=True, slots=True)
class Auditing:
    """The agent's part in the audit log: its witness and its proof follower, over one client session."""

    session: aiohttp.ClientSession
    witness: Witness
    proofs: ProofFollower

    def health(self) -> dict[str, Any]:
        """What `/healthz` says of the audit log: the last cosignature, forks, late proofs (and alarms for both)."""
        witness, proofs = self.witness, self.proofs
        answer: dict[str, Any] = {
            "witness_last_cosigned_at": None
            if witness.last_witnessed_at is None
            else witness.last_witnessed_at.isoformat(),
            "forks_detected": witness.forks_detected,
            "inclusion_proofs_overdue": proofs.overdue,
        }
        alarms = [
            *(["the gateway's audit log is forked"] if witness.forks_detected else []),
            *([f"{proofs.overdue} evidence without an inclusion proof"] if proofs.overdue else []),
        ]
        if alarms:
            answer["alarms"] = alarms
        return answer

    def tasks(self, *, interval: float) -> dict[str, Callable[[asyncio.Event], Coroutine[Any, Any, None]]]:
        """The witness's and the follower's rounds, every `interval` seconds."""
        return {
            "witness": functools.partial(self.witness.run, interval=interval),
            "proofs": functools.partial(self.proofs.run, interval=interval),
        }

    async def close(self) -> None:
        """Close the client session."""
        await self.session.close()


__all__ = [
    "Auditing",
    "GatewayAuditApi",
    "GatewayAuditClient",
    "GatewayUnreachable",
    "ProofFollower",
    "Witness",
    "WitnessedCheckpoint",
]
