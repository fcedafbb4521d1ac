"""The gateway's one way of issuing evidence: sign, log, commit for the sender.

Used by every part that issues gateway evidence (the ingress pipeline, the
deadline watcher, the dead-letter hold), so a statement is signed, logged and
queued for publication in exactly one way.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.auditlog import AuditTransaction
from protocol.auditlog import evidence_leaf
from protocol.encoding import format_timestamp
from protocol.evidence import EvidenceStatement, issue_evidence
from protocol.keys import SigningPrivateKey
from protocol.topology import KIND_EVIDENCE


@dataclass(frozen=True, slots=True)
class GatewayIdentity:
    """Who the gateway is and the key it signs evidence with."""

    gateway_id: str
    evidence_key: SigningPrivateKey
    broker_user_prefix: str


async def issue_gateway_evidence(
    atx: AuditTransaction, identity: GatewayIdentity, statement: EvidenceStatement
) -> None:
    """Sign `statement`, log it, and commit it for publication to the message's sender (once per identity)."""
    signed = issue_evidence(statement, identity.evidence_key)
    appended = await atx.append(
        evidence_leaf(signed, statement),
        at=statement.at,
        message_id=None if statement.message_id is None else str(statement.message_id),
        agencies=(statement.sender, *((statement.recipient,) if statement.recipient else ())),
    )
    if appended.added:
        await atx.tx.enqueue(
            statement.sender,
            KIND_EVIDENCE,
            str(statement.message_id),
            signed.model_dump_json().encode("utf-8"),
            format_timestamp(statement.at),
        )


__all__ = ["GatewayIdentity", "issue_gateway_evidence"]
