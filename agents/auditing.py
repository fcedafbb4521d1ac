"""The agent as an auditor of the gateway: witness of its log, follower of its proofs.

`Witness` polls the gateway's latest checkpoint, verifies the log's signature,
checks that it is consistent with the last checkpoint this agent witnessed
(a consistency proof, RFC 9162 2.1.4), cosigns it (C2SP tlog-cosignature,
with the agency's signing key under the agency id as key name) and sends the
cosignature back. A checkpoint that contradicts what the agent witnessed
(same size and another root, a smaller size, or no valid consistency proof)
is proof of a forked log: kept with both notes, reported, never cosigned.
It also checks the other witnesses' cosignatures on what it fetches: a line
naming an agency of the directory that does not verify under a key the
directory gives that agency is a forgery, counted and reported (an alarm; the
checkpoint itself, signed by the log and consistent, is still cosigned).

One witness's history alone cannot show a split view: a gateway may show
each agency a consistent history of its own. So every message header carries
its sender's latest witnessed checkpoint (`log_checkpoint`, signed by the
sender and by the log), the receiver hands it to `SenderViews`, and the
witness compares each claimed view with its own (`compare_sender_views`):
equal sizes need equal roots, other sizes a consistency proof from the
gateway between the two, verified against both roots. A mismatch is a fork,
recorded like the witness's own (both notes kept), logged
(`audit_log_fork_detected`, with `seen_by`) and counted in `forks_detected`.
The message is delivered all the same: the view is evidence about the
gateway, not a reason to refuse the sender's mail.

`ProofFollower` fetches, for each piece of evidence this agency holds, its
inclusion proof against the latest checkpoint the agent witnessed, verifies it
over the leaf it rebuilds from the evidence itself (never over a hash the
gateway supplies), and keeps it with the evidence. Evidence without a proof
after the maximum merge delay raises an alarm (health, log, count).

A gateway that lost its disk and was restored from a backup holds a shorter
log than the one its witnesses cosigned. So at every round the witness first
presents its latest witnessed checkpoint (`present_witnessed`, cosigned
afresh so the gateway knows whose it is): a gateway behind it holds its log
(`gateway.recovery`) and answers `recovering`; the witness then gives back
the leaves it holds past the gateway's size (each evidence statement it
received is, verbatim, one leaf, and its inclusion proof names the index)
and cosigns nothing that round. The gateway puts them back only if they
rebuild the witnessed root, so the witness's history is never rewritten.

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
from protocol.checkpoint import (
    Checkpoint,
    NoteSignature,
    SignedCheckpoint,
    check_one_history,
    cosign_checkpoint,
    cosignature_key_hash,
    verify_checkpoint,
    verify_cosignature,
)
from protocol.directory import Directory
from protocol.encoding import b64decode, b64encode, format_timestamp, parse_json_strict, parse_timestamp
from protocol.errors import ErrorCode, MalformedInput, ProofInvalid, ProtocolError
from protocol.evidence import EvidenceStatement
from protocol.ids import AgencyId, parse_agency_id
from protocol.keys import SigningPrivateKey
from protocol.merkle import leaf_hash, verify_consistency, verify_inclusion
from protocol.signing import SignedStatement
from runtime.errors import TransientFailure

MAX_PENDING_VIEWS: Final = 1000
"""Distinct views senders claimed, waiting for the next witness round: many messages carry one view (a checkpoint
is signed at most every second), so this is minutes of traffic; past it a view is dropped with a warning."""

MAX_REMEMBERED_FORGERIES: Final = 1000
"""Forged cosignature lines remembered so that each alarms once; past it a new one still counts and alarms."""

LEAVES_PER_OFFER: Final = 100
"""Leaves given back in one request to a recovering gateway (its limit per request)."""
REOFFER_AFTER: Final = timedelta(minutes=1)
"""A held gateway whose sizes did not move is given the leaves again after this (it keeps candidates in memory)."""
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

    async def present_witnessed(self, note: str, line: str) -> dict[str, Any]:
        """Present this witness's latest witnessed checkpoint with a fresh cosignature; the log's recovery state."""

    async def offer_leaves(self, leaves: list[dict[str, Any]]) -> dict[str, Any]:
        """Give back leaves (`index` or None, base64 `leaf`) to a gateway that is recovering its log."""


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

    async def proofs_answer(self, identities: list[str], size: int) -> dict[str, Any]:
        """`POST /v1/audit/proofs`, the whole answer: the checkpoint of `size` with its cosignatures, the proofs."""
        return await self._call("POST", "/v1/audit/proofs", {"identities": identities, "size": size})

    async def present_witnessed(self, note: str, line: str) -> dict[str, Any]:
        """`POST /v1/audit/witnessed`."""
        return await self._call("POST", "/v1/audit/witnessed", {"checkpoint": note, "cosignature": line})

    async def offer_leaves(self, leaves: list[dict[str, Any]]) -> dict[str, Any]:
        """`POST /v1/audit/recovery/leaves`."""
        return await self._call("POST", "/v1/audit/recovery/leaves", {"leaves": leaves})


@dataclass(frozen=True, slots=True)
class ClaimedView:
    """A sender's latest witnessed checkpoint, as its signed message header carried it; verified by the witness."""

    sender: AgencyId
    note: str


class SenderViews:
    """The views of the log senders claimed, waiting for the witness to compare them with its own (bounded)."""

    def __init__(self, *, limit: int = MAX_PENDING_VIEWS) -> None:
        self._limit = limit
        self._pending: dict[str, AgencyId] = {}
        self.dropped = 0

    def offer(self, sender: AgencyId, note: str) -> None:
        """Keep `note`, claimed by `sender`, for the next round; a view already waiting is kept once."""
        if note in self._pending:
            return
        if len(self._pending) >= self._limit:
            self.dropped += 1
            log.warning("sender_log_view_dropped", sender=sender, pending=len(self._pending))
            return
        self._pending[note] = sender

    def take(self) -> list[ClaimedView]:
        """Every view waiting, oldest first; they are no longer held."""
        taken = [ClaimedView(sender, note) for note, sender in self._pending.items()]
        self._pending.clear()
        return taken

    def put_back(self, views: list[ClaimedView]) -> None:
        """Views a round could not compare (the gateway did not answer): compared at the next round."""
        for view in views:
            self.offer(view.sender, view.note)


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
        sender_views: SenderViews | None = None,
    ) -> None:
        """`sender_views` is what the receiver fills from message headers (none: this witness compares none)."""
        self._agency = agency
        self._key = signing_key
        self._directory = directory
        self._store = store
        self._gateway = gateway
        self._clock = clock
        self._views = sender_views or SenderViews()
        self.forks_detected = 0
        self.forged_cosignatures = 0
        self.gateway_recovering = False
        """The gateway said, at the last round, that its log is held behind a witnessed checkpoint."""
        self.leaves_given_back = 0
        self._offered: tuple[int, int, datetime] | None = None
        self.last_witnessed_at: datetime | None = None
        self._cosigned: set[tuple[int, bytes]] = set()
        """(checkpoint id, note text) cosigned: a gateway restored from a backup numbers its checkpoints again."""
        self._forgeries_seen: set[str] = set()
        self._forked_views: set[str] = set()

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
        """One round: present, fetch, verify, check consistency, cosign. None if nothing new was witnessed."""
        if await self._present():
            return None
        answer = await self._gateway.latest_checkpoint()
        note = str(answer["checkpoint"])
        checkpoint_id = int(answer["checkpoint_id"])
        checkpoint = self.verify_note(note)
        self._alarm_on_forged_cosignatures(note, checkpoint)
        held = await self._store.latest_witnessed()
        now = self._clock()
        if held is not None:
            held_size, held_root, held_note = held
            problem = await self._contradiction(checkpoint, held_size, held_root)
            if problem is not None:
                await self._record_fork(problem, held_note, note, now)
                return None
        if (checkpoint_id, checkpoint.body()) in self._cosigned:
            return None
        line = cosign_checkpoint(SignedCheckpoint.parse(note), self._agency, self._key, int(now.timestamp()))
        await self._gateway.cosign(checkpoint_id, line.to_line())
        async with self._store.transaction() as tx:
            await tx.insert_witnessed(checkpoint.size, checkpoint.root_hash, checkpoint_id, note, format_timestamp(now))
        self._cosigned.add((checkpoint_id, checkpoint.body()))
        self.last_witnessed_at = now
        return WitnessedCheckpoint(checkpoint, note)

    async def _present(self) -> bool:
        """Present the latest witnessed checkpoint; whether the gateway is recovering its log (then give back leaves).

        A gateway that does not know the endpoint (an older one) is not recovering anything.
        """
        held = await self._store.latest_witnessed()
        if held is None:
            return False
        _, _, note = held
        line = cosign_checkpoint(SignedCheckpoint.parse(note), self._agency, self._key, int(self._clock().timestamp()))
        try:
            status = await self._gateway.present_witnessed(note, line.to_line())
        except GatewayUnreachable as exc:
            log.debug("witnessed_checkpoint_not_presented", error=str(exc)[:200])
            self.gateway_recovering = False
            return False
        self.gateway_recovering = bool(status.get("recovering"))
        if not self.gateway_recovering:
            return False
        tree_size, witnessed_size = status.get("tree_size"), status.get("witnessed_size")
        given = 0
        if isinstance(tree_size, int) and isinstance(witnessed_size, int):
            given = await self._give_back(tree_size, witnessed_size)
        log.warning(
            "gateway_log_recovering",
            tree_size=tree_size,
            witnessed_size=witnessed_size,
            leaves_given_back=given,
            reason=str(status.get("reason"))[:300],
        )
        return True

    async def _give_back(self, tree_size: int, witnessed_size: int) -> int:
        """Give the held gateway the leaves it may lack, if due; how many were given."""
        if not self._offer_due(tree_size, witnessed_size):
            return 0
        leaves = await self._leaves_to_give_back(tree_size, witnessed_size)
        for start in range(0, len(leaves), LEAVES_PER_OFFER):
            await self._gateway.offer_leaves(leaves[start : start + LEAVES_PER_OFFER])
        self.leaves_given_back += len(leaves)
        self._offered = (tree_size, witnessed_size, self._clock())
        return len(leaves)

    def _offer_due(self, tree_size: int, witnessed_size: int) -> bool:
        """Give back leaves when the gateway's sizes changed, or again after `REOFFER_AFTER` (it may have restarted)."""
        if witnessed_size <= tree_size:
            return False
        if self._offered is None:
            return True
        offered_tree, offered_witnessed, at = self._offered
        return (offered_tree, offered_witnessed) != (tree_size, witnessed_size) or self._clock() - at >= REOFFER_AFTER

    async def _leaves_to_give_back(self, tree_size: int, witnessed_size: int) -> list[dict[str, Any]]:
        """The evidence this agent holds, as leaves, that a log of `tree_size` may lack.

        Those whose proof puts them in [tree_size, witnessed_size), and those
        without a proof yet (the gateway places them, and keeps them only if
        the witnessed root comes out).
        """
        leaves = []
        for record in await self._store.evidence_for_recovery():
            index: int | None = None
            if record.inclusion_proof is not None:
                index = int(json.loads(record.inclusion_proof)["leaf_index"])
                if not tree_size <= index < witnessed_size:
                    continue
            signed = SignedStatement.model_validate_json(record.signed)
            statement = EvidenceStatement.model_validate_json(signed.payload)
            leaves.append({"index": index, "leaf": b64encode(encode_leaf(evidence_leaf(signed, statement)))})
        return leaves

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

    async def _record_fork(
        self, detail: str, held_note: str, offered_note: str, now: datetime, *, seen_by: AgencyId | None = None
    ) -> None:
        async with self._store.transaction() as tx:
            await tx.insert_fork(detail, held_note, offered_note, format_timestamp(now))
        self.forks_detected += 1
        log.error("audit_log_fork_detected", detail=detail, seen_by=seen_by or self._agency)

    def forged_cosignature_lines(self, note: str) -> list[NoteSignature]:
        """The lines of `note` that name an agency of the directory but do not verify under a key it gives it.

        Lines of the log and of names no agency of the directory bears are not
        looked at (C2SP verifiers ignore unknown keys; the offline verifier
        refuses a log that keeps them). A line under a revoked key verifies:
        it is not a forgery, though it vouches for nothing.
        """
        directory = self._directory()
        signed = SignedCheckpoint.parse(note)
        forged = []
        for line in signed.signatures:
            if line.key_name == directory.gateway.log_origin:
                continue
            try:
                agency = directory.agency(parse_agency_id(line.key_name))
            except ProtocolError:
                continue
            keys = [
                key
                for key in agency.signing_keys
                if cosignature_key_hash(agency.agency_id, key.verifier) == line.key_hash
            ]
            try:
                if not keys:
                    raise ProofInvalid(f"no key of {agency.agency_id} has key ID {line.key_hash.hex()}")
                verify_cosignature(SignedCheckpoint(signed.checkpoint, (line,)), agency.agency_id, keys[0].verifier)
            except ProtocolError:
                forged.append(line)
        return forged

    def _alarm_on_forged_cosignatures(self, note: str, checkpoint: Checkpoint) -> None:
        """Count and log (once each) the forged cosignature lines the gateway served with `checkpoint`."""
        for line in self.forged_cosignature_lines(note):
            text = line.to_line()
            if text in self._forgeries_seen:
                continue
            if len(self._forgeries_seen) < MAX_REMEMBERED_FORGERIES:
                self._forgeries_seen.add(text)
            self.forged_cosignatures += 1
            log.error(
                "audit_log_cosignature_forged",
                witness=line.key_name[:64],
                key_hash=line.key_hash.hex(),
                tree_size=checkpoint.size,
            )

    async def compare_sender_views(self) -> int:
        """Compare each view senders claimed since the last round with this agent's own; the forks found.

        Views wait while this agent has witnessed nothing. A view whose note the
        log did not sign is the sender's word only: logged, not compared.
        """
        held = await self._store.latest_witnessed()
        if held is None:
            return 0
        views = self._views.take()
        found = 0
        for position, view in enumerate(views):
            try:
                found += await self._compare_view(view, held)
            except GatewayUnreachable:
                self._views.put_back(views[position:])
                raise
        return found

    async def _compare_view(self, view: ClaimedView, held: tuple[int, bytes, str]) -> int:
        """1 if `view` and this agent's latest witnessed checkpoint are not one history (a fork, recorded), else 0."""
        if view.note in self._forked_views:
            return 0
        try:
            theirs = self.verify_note(view.note)
        except ProtocolError as exc:
            log.warning("sender_log_view_unverified", sender=view.sender, error=exc.detail[:300])
            return 0
        _, _, held_note = held
        ours = SignedCheckpoint.parse(held_note).checkpoint
        proof: list[bytes] = []
        if theirs.size != ours.size:
            witnessed_root = await self._store.witnessed_root(theirs.size)
            if witnessed_root is not None:  # this agent witnessed that very size: compare roots, no proof needed
                ours = Checkpoint(ours.origin, theirs.size, witnessed_root)
            else:
                smaller, larger = sorted((theirs.size, ours.size))
                proof = await self._gateway.consistency_proof(smaller, larger)
        try:
            check_one_history(ours, theirs, proof)
        except ProofInvalid as exc:
            if len(self._forked_views) < MAX_PENDING_VIEWS:
                self._forked_views.add(view.note)
            detail = f"{view.sender} witnessed another history than this agent: {exc.detail}"
            await self._record_fork(detail, held_note, view.note, self._clock(), seen_by=view.sender)
            return 1
        return 0

    async def run(self, stopping: asyncio.Event, *, interval: float) -> None:
        """Observe every `interval` seconds until `stopping` is set."""
        while not stopping.is_set():
            try:
                await self.observe()
            except (GatewayUnreachable, ProtocolError, TransientFailure) as exc:
                # TransientFailure: the store away, or the directory expired (no cosigning without one in force).
                log.warning("witness_round_failed", error=str(exc)[:300])
            try:
                await self.compare_sender_views()
            except (GatewayUnreachable, ProtocolError) as exc:
                log.warning("sender_views_round_failed", error=str(exc)[:300])
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
    gateway: GatewayAuditClient | None = None
    """The audit API client the two use (the evidence bundles' source of proofs, `agents.bundles`)."""

    def health(self) -> dict[str, Any]:
        """What `/healthz` says of the audit log: the last cosignature, forks, late proofs (and alarms for both)."""
        witness, proofs = self.witness, self.proofs
        answer: dict[str, Any] = {
            "witness_last_cosigned_at": None
            if witness.last_witnessed_at is None
            else witness.last_witnessed_at.isoformat(),
            "forks_detected": witness.forks_detected,
            "cosignatures_forged": witness.forged_cosignatures,
            "inclusion_proofs_overdue": proofs.overdue,
            "gateway_log_recovering": witness.gateway_recovering,
            "leaves_given_back": witness.leaves_given_back,
        }
        alarms = [
            *(["the gateway's audit log is forked"] if witness.forks_detected else []),
            *(["a cosignature on the gateway's checkpoint does not verify"] if witness.forged_cosignatures else []),
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
    "ClaimedView",
    "GatewayAuditApi",
    "GatewayAuditClient",
    "GatewayUnreachable",
    "ProofFollower",
    "SenderViews",
    "Witness",
    "WitnessedCheckpoint",
]
