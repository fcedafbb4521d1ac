"""How the agent API shows evidence: one item per signed statement, in the order of the message's life."""

from __future__ import annotations

import json
from typing import Any

from agents.store import EvidenceRecord
from protocol.evidence import EvidenceType

_LIFECYCLE = {name: rank for rank, name in enumerate(EvidenceType)}


def lifecycle_order(record: EvidenceRecord) -> tuple[int, str]:
    """Evidence in the order of the message's life (each party stamps its own clock)."""
    return _LIFECYCLE.get(EvidenceType(record.evidence_type), len(_LIFECYCLE)), record.at


def evidence_item(record: EvidenceRecord) -> dict[str, Any]:
    """One piece of evidence as `GET /v1/messages/{id}` shows it: who signed what when, the statement, its proof."""
    return {
        "type": record.evidence_type,
        "at": record.at,
        "signed_by": record.issuer,
        "recipient": record.recipient,
        "reason": None if record.reason_code is None else {"code": record.reason_code, "detail": record.reason_detail},
        "statement": json.loads(record.signed),
        "received_at": record.received_at,
        "inclusion_proof": None if record.inclusion_proof is None else json.loads(record.inclusion_proof),
    }


__all__ = ["evidence_item", "lifecycle_order"]
