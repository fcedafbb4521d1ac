"""The status of a sent message, as a table over the evidence received.

Positive statuses only move forward (`queued` < `submitted` < `relayed` <
`delivered` < `retrieved`), whatever order evidence arrives in; a negative
status (`rejected`, `failed`, `expired`) is final.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from protocol.errors import ErrorCode
from protocol.evidence import EvidenceType


class MessageStatus(StrEnum):
    """Status names of docs/API.md."""

    QUEUED = "queued"
    SUBMITTED = "submitted"
    RELAYED = "relayed"
    DELIVERED = "delivered"
    RETRIEVED = "retrieved"
    REJECTED = "rejected"
    FAILED = "failed"
    EXPIRED = "expired"


_RANK: Final = {
    MessageStatus.QUEUED: 0,
    MessageStatus.SUBMITTED: 1,
    MessageStatus.RELAYED: 2,
    MessageStatus.DELIVERED: 3,
    MessageStatus.RETRIEVED: 4,
}
FINAL_NEGATIVE: Final = frozenset({MessageStatus.REJECTED, MessageStatus.FAILED, MessageStatus.EXPIRED})

_POSITIVE: Final = {
    EvidenceType.SUBMISSION_ACCEPTED: MessageStatus.SUBMITTED,
    EvidenceType.RELAY_ACCEPTED: MessageStatus.RELAYED,
    EvidenceType.DELIVERY: MessageStatus.DELIVERED,
    EvidenceType.RETRIEVAL: MessageStatus.RETRIEVED,
}


def status_after(current: MessageStatus, evidence_type: EvidenceType, reason_code: str | None) -> MessageStatus:
    """The status once evidence of `evidence_type` (with `reason_code` if negative) is held."""
    if current in FINAL_NEGATIVE:
        return current
    if evidence_type == EvidenceType.SUBMISSION_REJECTED:
        return MessageStatus.REJECTED
    if evidence_type == EvidenceType.RELAY_FAILED:
        return MessageStatus.FAILED
    if evidence_type == EvidenceType.NON_DELIVERY:
        return MessageStatus.EXPIRED if reason_code == ErrorCode.EXPIRED else MessageStatus.FAILED
    if evidence_type == EvidenceType.NON_RETRIEVAL:
        return MessageStatus.EXPIRED
    implied = _POSITIVE[evidence_type]
    return implied if _RANK[implied] > _RANK[current] else current


__all__ = ["FINAL_NEGATIVE", "MessageStatus", "status_after"]
