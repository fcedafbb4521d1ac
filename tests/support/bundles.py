"""A valid evidence bundle built from protocol pieces only (no services): for the verifier's tampering tests.

Two messages of one case, BD to LY and LY back to BD, each with its four
evidence statements in a log of two checkpoints: the first message's evidence
proven to the first checkpoint (with a consistency proof to the second), the
rest to the second, both cosigned by BD and LY.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import timedelta

from asn1crypto import tsp

from deploy.localnet.tsa import TimestampAuthorityKeys
from protocol.auditlog import directory_leaf, encode_leaf, evidence_leaf
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
from protocol.directory import TimestampAuthorityEntry
from protocol.document_signature import sign_document
from protocol.encoding import b64encode, canonical_json
from protocol.envelope import Recipient, seal_with_content_proof
from protocol.evidence import EvidenceType, Reason, issue_evidence, new_statement
from protocol.ids import AgencyId, CaseId, MessageId
from protocol.keys import SigningPublicKey
from runtime.bundles import pack_bundle
from runtime.timestamps import timestamp_request
from tests.support.auditlog import ORIGIN, BuiltLog
from tests.support.network import BD, LY, NOW, LocalNetwork

CASE = "BD-LY-2025-0007"


@dataclass(frozen=True)
class BuiltBundle:
    """A bundle's bytes and the one key an auditor needs to check it."""

    raw: bytes
    authority: SigningPublicKey
    net: LocalNetwork
    message_ids: tuple[str, ...]


def _document(message_id: str, sender: AgencyId, recipient: AgencyId) -> dict[str, object]:
    return {
        "schema": "mla-exchange/1.0",
        "message_id": message_id,
        "message_type": "MLA_REQUEST",
        "case_id": CASE,
        "sender": {"authority_id": sender, "name": f"{sender} (test)"},
        "recipient": {"authority_id": recipient, "name": f"{recipient} (test)"},
        "languages": {"primary": "en", "available": ["bn"]},
        "payload": {"summary": "test"},
    }


def stamp(tsa: TimestampAuthorityKeys, note: str) -> bytes:
    """A real RFC 3161 token by `tsa` over a checkpoint's signed note (cosignatures left out, as the gateway stamps)."""
    request, _ = timestamp_request(SignedCheckpoint.parse(note).signed_only_by(ORIGIN).to_text().encode())
    answer: bytes = tsa.stamper().request_tsa_response(tsp.TimeStampReq.load(request)).dump()
    return answer


def build_bundle(*, refused: bool = False, tsa: TimestampAuthorityKeys | None = None) -> BuiltBundle:
    """The bundle of one case of two messages, as BD's agent would export it; with `refused`, BD refused LY's
    message (NON_DELIVERY, signed by BD) instead of taking it."""
    net = LocalNetwork()
    log = BuiltLog(net)
    listed = None if tsa is None else (TimestampAuthorityEntry(name="Test TSA", root_certificate=tsa.root_der),)
    signed_directory = net.signed_directory(timestamp_authorities=listed)
    log.append(encode_leaf(directory_leaf(signed_directory, 1)))
    staged: list[tuple[MessagePart, list[tuple[bytes, int, str, str]]]] = []
    sizes: list[int] = []
    for number, (sender, recipient) in enumerate(((BD, LY), (LY, BD))):
        message_id = str(uuid.uuid4())
        document = canonical_json(sign_document(_document(message_id, sender, recipient), sender, net[sender].signing))
        created_at = NOW + timedelta(minutes=10 * number)
        sealed, proof = seal_with_content_proof(
            document,
            message_id=MessageId(uuid.UUID(message_id)),
            sender=sender,
            signing_key=net[sender].signing,
            recipients=[Recipient(recipient, net[recipient].encryption.public_key)],
            archive_key=net[sender].encryption.public_key,
            message_type="MLA_REQUEST",
            case_id=CaseId(CASE),
            created_at=created_at,
            expires_at=created_at + timedelta(days=1),
            limits=net.limits,
        )
        leaves: list[tuple[bytes, int, str, str]] = []
        steps = [
            (EvidenceType.SUBMISSION_ACCEPTED, "gateway.test", net.evidence_key),
            (EvidenceType.RELAY_ACCEPTED, "gateway.test", net.evidence_key),
            (EvidenceType.DELIVERY, recipient, net[recipient].signing),
            (EvidenceType.RETRIEVAL, recipient, net[recipient].signing),
        ]
        if refused and number == 1:
            steps[2:] = [(EvidenceType.NON_DELIVERY, recipient, net[recipient].signing)]
        for minutes, (evidence_type, issuer, key) in enumerate(steps, start=1):
            statement = new_statement(
                evidence_type,
                message_id=MessageId(uuid.UUID(message_id)),
                message_digest=sealed.digest,
                sender=sender,
                recipient=recipient,
                message_type="MLA_REQUEST",
                case_id=CASE,
                issuer=issuer,
                at=created_at + timedelta(minutes=minutes),
                reason=Reason(code="ILLEGAL_TRANSITION", detail="refused in the test")
                if evidence_type == EvidenceType.NON_DELIVERY
                else None,
            )
            signed = issue_evidence(statement, key)
            leaf = encode_leaf(evidence_leaf(signed, statement))
            leaves.append((signed.model_dump_json().encode(), log.tree.size, evidence_type.value, recipient))
            log.append(leaf)
        log.checkpoint(time=int((created_at + timedelta(minutes=5)).timestamp()))
        sizes.append(log.tree.size)
        staged.append(
            (
                MessagePart(
                    message_id=message_id,
                    direction="sent" if sender == BD else "received",
                    sender=sender,
                    sender_key=net[sender].signing.key_id,
                    recipients=(recipient,),
                    message_type="MLA_REQUEST",
                    case_id=CASE,
                    document=document,
                    header=sealed.header_bytes,
                    header_signature=sealed.header_signature,
                    content_statement=proof.statement,
                    content_signature=proof.signature,
                    evidence=(),
                ),
                leaves,
            )
        )
    first_size, latest = sizes
    messages = []
    for position, (part, leaves) in enumerate(staged):
        size = first_size if position == 0 else latest
        evidence = tuple(
            EvidencePart(
                signed=signed,
                evidence_type=evidence_type,
                recipient=recipient,
                inclusion=InclusionProof(
                    leaf_index=index,
                    tree_size=size,
                    nodes=tuple(b64encode(node) for node in log.tree.inclusion_proof(index, size)),
                ),
            )
            for signed, index, evidence_type, recipient in leaves
        )
        messages.append(replace(part, evidence=evidence))
    parts = BundleParts(
        scope="case",
        subject=CASE,
        exported_by=BD,
        exported_at=NOW + timedelta(hours=1),
        log_origin=ORIGIN,
        messages=tuple(messages),
        directories=(
            DirectoryPart(
                version=1,
                signed=signed_directory.model_dump_json().encode(),
                inclusion=InclusionProof(
                    leaf_index=0,
                    tree_size=latest,
                    nodes=tuple(b64encode(node) for node in log.tree.inclusion_proof(0, latest)),
                ),
            ),
        ),
        checkpoints=(
            CheckpointPart(tree_size=first_size, note=log.checkpoints[0]),
            CheckpointPart(
                tree_size=latest,
                note=log.checkpoints[1],
                timestamps=() if tsa is None else (("CN=Rogatory Test TSA", stamp(tsa, log.checkpoints[1])),),
            ),
        ),
        latest_tree_size=latest,
        consistency=(
            ConsistencyItem(
                from_size=first_size,
                to_size=latest,
                nodes=tuple(b64encode(node) for node in log.tree.consistency_proof(first_size, latest)),
            ),
        ),
    )
    raw = pack_bundle(assemble_bundle(parts, net[BD].signing))
    return BuiltBundle(raw, net.authority.public_key, net, tuple(part.message_id for part, _ in staged))


__all__ = ["CASE", "BuiltBundle", "build_bundle"]
