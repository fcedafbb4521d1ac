"""The evidence bundle of a message or a case, as this agency exports it (`protocol.bundle` is the format).

For each message, sent or received, the agent takes from its own store the
document, the sealed header and its signature (`outbox.sealed`,
`inbox.sealed`) and the sender's signed content statement (`content_proofs`).
Evidence: about a message it sent, the evidence it holds, with the inclusion
proof `agents.auditing.ProofFollower` verified and kept; about a message it
received, the gateway's and its own evidence, fetched from the audit log by
identity (only who holds the header can name it). Then the log's side from
the gateway: the latest checkpoint cosigned by at least two witnesses (the
gateway's latest, or else the latest this agent witnessed), each proving
checkpoint with its cosignatures, consistency proofs to the latest, and every
directory version with its inclusion proof. The manifest is signed with the
agency's signing key.

Nothing fetched is trusted: the bundle is checked by whoever verifies it
(`protocol.bundle_verify`), with the authority's key only. What is not yet
in a checkpoint two witnesses cosigned cannot be proven: `ProofsPending`
(409), to be asked again after the next checkpoint.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal, Protocol

from agents.errors import Conflict
from agents.store import AgentStore
from protocol.auditlog import DirectoryLeaf, EvidenceLeaf, decode_leaf
from protocol.bundle import (
    BundleParts,
    CheckpointPart,
    ConsistencyItem,
    DirectoryPart,
    EvidencePart,
    InclusionProof,
    MessagePart,
    assemble_bundle,
)
from protocol.checkpoint import SignedCheckpoint
from protocol.directory import Directory
from protocol.encoding import b64decode, b64encode
from protocol.envelope import SealedMessage
from protocol.errors import ErrorCode
from protocol.evidence import EvidenceStatement, EvidenceType
from protocol.ids import AgencyId
from protocol.keys import SigningPrivateKey
from protocol.limits import Limits
from protocol.signing import SignedStatement
from runtime.bundles import pack_bundle

MIN_WITNESSES = 2
"""Cosignatures the latest checkpoint of a bundle needs (`protocol.audit_verify.PUBLISHED_AFTER`)."""
IDENTITIES_PER_REQUEST = 100


class ProofsPending(Conflict):
    """Something to put in the bundle is not yet in a checkpoint two witnesses cosigned: ask again later."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail, ErrorCode.PROOFS_PENDING)


class BundleGateway(Protocol):
    """What the exporter asks of the gateway's audit API (`agents.auditing.GatewayAuditClient`)."""

    async def latest_checkpoint(self) -> dict[str, Any]:
        """The latest checkpoint: `checkpoint` (the note with cosignatures), `tree_size`."""

    async def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        """A consistency proof between two sizes."""

    async def proofs_answer(self, identities: list[str], size: int) -> dict[str, Any]:
        """`POST /v1/audit/proofs`: `checkpoint` (of that size, if any) and `proofs` by identity."""


@dataclass(frozen=True, slots=True)
class MessageRef:
    """One message to put in a bundle: which side this agency was on, who sent it, its id."""

    direction: Literal["sent", "received"]
    sender: str
    message_id: str


def _witness_count(note: str, origin: str) -> int:
    signed = SignedCheckpoint.parse(note)
    return len({line.key_name for line in signed.signatures if line.key_name != origin})


class BundleExporter:
    """Makes the evidence bundle of a message or a case from this agent's store and the gateway's proofs."""

    def __init__(
        self,
        *,
        agency: AgencyId,
        signing_key: SigningPrivateKey,
        store: AgentStore,
        gateway: BundleGateway,
        directory: Callable[[], Directory],
        limits: Limits,
        clock: Callable[[], datetime],
        report: Callable[[bytes], Awaitable[bytes | None]] | None = None,
    ) -> None:
        """`report` draws and has signed the clerk's PDF of a bundle (`agents.bundle_report`); None: no report."""
        self._report = report
        self._agency = agency
        self._key = signing_key
        self._store = store
        self._gateway = gateway
        self._directory = directory
        self._limits = limits
        self._clock = clock

    async def export(self, refs: Sequence[MessageRef], *, scope: Literal["message", "case"], subject: str) -> bytes:
        """The bundle (ZIP bytes) of the messages `refs`."""
        directory = self._directory()
        origin = directory.gateway.log_origin
        latest_size, latest_note = await self._latest(origin)
        notes: dict[int, str] = {latest_size: latest_note}
        messages = [await self._message(ref, latest_size, notes) for ref in refs]
        directories = await self._directories(directory.version, latest_size)
        consistency = []
        for size in sorted(notes):
            if size != latest_size:
                nodes = await self._gateway.consistency_proof(size, latest_size)
                consistency.append(
                    ConsistencyItem(from_size=size, to_size=latest_size, nodes=tuple(b64encode(n) for n in nodes))
                )
        parts = BundleParts(
            scope=scope,
            subject=subject,
            exported_by=self._agency,
            exported_at=self._clock(),
            log_origin=origin,
            messages=tuple(messages),
            directories=directories,
            checkpoints=tuple(
                [
                    CheckpointPart(tree_size=size, note=note, timestamps=await self._timestamps(size))
                    for size, note in sorted(notes.items())
                ]
            ),
            latest_tree_size=latest_size,
            consistency=tuple(consistency),
        )
        raw = pack_bundle(assemble_bundle(parts, self._key))
        if self._report is None:
            return raw
        signed_report = await self._report(raw)
        if signed_report is None:
            return raw
        return pack_bundle(assemble_bundle(replace(parts, report=signed_report), self._key))

    async def _latest(self, origin: str) -> tuple[int, str]:
        """The latest checkpoint at least two witnesses cosigned: the gateway's latest, or the latest witnessed."""
        answer = await self._gateway.latest_checkpoint()
        note = str(answer["checkpoint"])
        if _witness_count(note, origin) >= MIN_WITNESSES:
            return int(answer["tree_size"]), note
        held = await self._store.latest_witnessed()
        if held is not None:
            size = held[0]
            cosigned = (await self._gateway.proofs_answer([], size)).get("checkpoint")
            if isinstance(cosigned, dict) and _witness_count(str(cosigned["checkpoint"]), origin) >= MIN_WITNESSES:
                return size, str(cosigned["checkpoint"])
        raise ProofsPending("no checkpoint cosigned by two witnesses covers the log yet; ask again shortly")

    async def _timestamps(self, size: int) -> tuple[tuple[str, bytes], ...]:
        """The RFC 3161 tokens the gateway holds over the checkpoint of `size` (none where no TSA stamped it)."""
        answer = (await self._gateway.proofs_answer([], size)).get("checkpoint")
        stamps = answer.get("timestamps") if isinstance(answer, dict) else None
        if not isinstance(stamps, list):
            return ()
        return tuple((str(stamp["authority"]), b64decode(str(stamp["token"]))) for stamp in stamps)

    async def _checkpoint_note(self, size: int, stored_note: str, notes: dict[int, str]) -> None:
        """Keep the note of `size` with the cosignatures the gateway holds now (the stored one if it has none)."""
        if size in notes:
            return
        answer = (await self._gateway.proofs_answer([], size)).get("checkpoint")
        notes[size] = str(answer["checkpoint"]) if isinstance(answer, dict) else stored_note

    async def _fetched(self, identities: list[str], size: int) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(identities), IDENTITIES_PER_REQUEST):
            answer = await self._gateway.proofs_answer(identities[start : start + IDENTITIES_PER_REQUEST], size)
            found.update(answer.get("proofs") or {})
        return found

    async def _directories(self, current: int, latest_size: int) -> tuple[DirectoryPart, ...]:
        identities = [f"directory/{version}" for version in range(1, current + 1)]
        found = await self._fetched(identities, latest_size)
        parts = []
        for version in range(1, current + 1):
            offered = found.get(f"directory/{version}")
            if offered is None or "leaf" not in offered:
                continue  # a version the log does not hold by this size (the verifier needs those that signed keys)
            leaf = decode_leaf(b64decode(str(offered["leaf"])))
            if not isinstance(leaf, DirectoryLeaf) or leaf.version != version:
                raise ProofsPending(f"the gateway answered another leaf for directory/{version}")
            parts.append(
                DirectoryPart(
                    version=version,
                    signed=leaf.directory.model_dump_json().encode("utf-8"),
                    inclusion=_inclusion(offered, latest_size),
                )
            )
        if not parts:
            raise ProofsPending("the log holds no directory version by the latest checkpoint")
        return tuple(parts)

    async def _message(self, ref: MessageRef, latest_size: int, notes: dict[int, str]) -> MessagePart:
        if ref.direction == "sent":
            outbox = await self._store.outbox(ref.message_id)
            if outbox is None:
                raise ProofsPending(f"no sent message {ref.message_id}")
            document, sealed_bytes = outbox.document, outbox.sealed
        else:
            inbox = await self._store.inbox_entry_of(ref.sender, ref.message_id)
            if inbox is None:
                raise ProofsPending(f"no received message {ref.message_id} of {ref.sender}")
            document, sealed_bytes = inbox.document, inbox.sealed
        sealed = SealedMessage.from_bytes(sealed_bytes, self._limits)
        header = json.loads(sealed.header_bytes)
        proof = await self._store.content_proof(ref.sender, ref.message_id)
        if proof is None:
            raise Conflict(
                f"message {ref.message_id} was stored before content statements were kept: no proof of origin",
                ErrorCode.CONTENT_PROOF_MISSING,
            )
        recipients = tuple(str(wrapped["agency"]) for wrapped in header["recipients"])
        if ref.direction == "sent":
            evidence = await self._sent_evidence(ref.message_id, latest_size, notes)
        else:
            evidence = await self._received_evidence(ref, sealed.digest, latest_size)
        return MessagePart(
            message_id=ref.message_id,
            direction=ref.direction,
            sender=ref.sender,
            sender_key=sealed.signer_key_id,
            recipients=recipients,
            message_type=str(header["message_type"]),
            case_id=str(header["case_id"]),
            document=document,
            header=sealed.header_bytes,
            header_signature=sealed.header_signature,
            content_statement=proof.statement,
            content_signature=proof.signature,
            evidence=evidence,
        )

    async def _sent_evidence(
        self, message_id: str, latest_size: int, notes: dict[int, str]
    ) -> tuple[EvidencePart, ...]:
        """The evidence held about a sent message: with its kept proof, or one fetched against the latest."""
        records = await self._store.evidence_for(message_id)
        unproven = [record.identity for record in records if record.inclusion_proof is None]
        fetched = await self._fetched(unproven, latest_size) if unproven else {}
        parts = []
        for record in records:
            statement = EvidenceStatement.model_validate_json(
                SignedStatement.model_validate_json(record.signed).payload
            )
            if record.inclusion_proof is not None:
                kept = json.loads(record.inclusion_proof)
                size = int(kept["tree_size"])
                if size > latest_size:
                    size_note = await self._gateway.proofs_answer([record.identity], latest_size)
                    offered = (size_note.get("proofs") or {}).get(record.identity)
                    if offered is None:
                        raise ProofsPending(f"evidence {record.identity} is not yet in the latest cosigned checkpoint")
                    inclusion = _inclusion(offered, latest_size)
                else:
                    await self._checkpoint_note(size, str(kept["checkpoint"]), notes)
                    inclusion = InclusionProof(
                        leaf_index=int(kept["leaf_index"]), tree_size=size, nodes=tuple(kept["proof"])
                    )
            else:
                offered = fetched.get(record.identity)
                if offered is None:
                    raise ProofsPending(f"evidence {record.identity} is not yet in the latest cosigned checkpoint")
                inclusion = _inclusion(offered, latest_size)
            parts.append(
                EvidencePart(
                    signed=record.signed,
                    evidence_type=statement.evidence_type,
                    recipient=statement.recipient,
                    inclusion=inclusion,
                )
            )
        return tuple(parts)

    async def _received_evidence(self, ref: MessageRef, digest: str, latest_size: int) -> tuple[EvidencePart, ...]:
        """The gateway's and this agency's evidence about a received message, as the log holds it."""
        identities = [
            f"evidence/{evidence_type}/{ref.sender}/{ref.message_id}/{self._agency}/{digest}"
            for evidence_type in EvidenceType
            if evidence_type != EvidenceType.SUBMISSION_REJECTED
        ]
        found = await self._fetched(identities, latest_size)
        parts = []
        for identity in identities:
            offered = found.get(identity)
            if offered is None or "leaf" not in offered:
                continue
            leaf = decode_leaf(b64decode(str(offered["leaf"])))
            if not isinstance(leaf, EvidenceLeaf) or leaf.identity != identity:
                raise ProofsPending(f"the gateway answered another leaf for {identity}")
            statement = EvidenceStatement.model_validate_json(leaf.evidence.payload)
            parts.append(
                EvidencePart(
                    signed=leaf.evidence.model_dump_json().encode("utf-8"),
                    evidence_type=statement.evidence_type,
                    recipient=statement.recipient,
                    inclusion=_inclusion(offered, latest_size),
                )
            )
        if not parts:
            raise ProofsPending(f"no evidence about message {ref.message_id} is in the latest cosigned checkpoint yet")
        return tuple(sorted(parts, key=lambda part: _LIFECYCLE.index(part.evidence_type)))


_LIFECYCLE = [evidence_type.value for evidence_type in EvidenceType]


def _inclusion(offered: dict[str, Any], size: int) -> InclusionProof:
    return InclusionProof(
        leaf_index=int(offered["index"]), tree_size=size, nodes=tuple(str(node) for node in offered["proof"])
    )


__all__ = ["BundleExporter", "BundleGateway", "MessageRef", "ProofsPending"]
