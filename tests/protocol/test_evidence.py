"""Evidence: signed by whom the table says, about the digest the sender signed, and nothing else."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest

from protocol.errors import AuthenticationFailed, ContentInvalid, ErrorCode, KeyRejected
from protocol.evidence import (
    EvidenceType,
    Reason,
    issue_evidence,
    new_statement,
    parse_signed_evidence,
    verify_evidence,
)
from protocol.ids import MessageId
from protocol.limits import DEFAULT_LIMITS
from tests.support.network import BD, LY, LY_AGO, NOW, LocalNetwork

NET = LocalNetwork()
MESSAGE = MessageId(uuid.uuid4())
DIGEST = "ab" * 32


def statement(evidence_type=EvidenceType.DELIVERY, *, issuer=LY, recipient=LY, reason=None):
    return new_statement(
        evidence_type,
        message_id=MESSAGE,
        message_digest=DIGEST,
        sender=BD,
        recipient=recipient,
        issuer=issuer,
        at=NOW,
        reason=reason,
    )


def test_recipient_delivery_evidence_verifies():
    """DELIVERY signed by the recipient verifies and names the digest."""
    verified = verify_evidence(issue_evidence(statement(), NET[LY].signing), NET.directory(), now=NOW)
    assert verified.statement.message_digest == DIGEST
    assert verified.statement.evidence_type == EvidenceType.DELIVERY


def test_gateway_evidence_verifies():
    """SUBMISSION_ACCEPTED signed by the gateway's evidence key verifies."""
    signed = issue_evidence(statement(EvidenceType.SUBMISSION_ACCEPTED, issuer="gateway.test"), NET.evidence_key)
    assert verify_evidence(signed, NET.directory(), now=NOW).statement.issuer == "gateway.test"


def test_an_agency_cannot_issue_delivery_for_another_recipient():
    """LY-AGO cannot claim delivery of a message addressed to LY."""
    signed = issue_evidence(statement(issuer=LY_AGO, recipient=LY), NET[LY_AGO].signing)
    with pytest.raises(AuthenticationFailed) as refused:
        verify_evidence(signed, NET.directory(), now=NOW)
    assert refused.value.code == ErrorCode.EVIDENCE_ISSUER_NOT_ALLOWED


def test_an_agency_cannot_issue_gateway_evidence():
    """An agency signing RELAY_ACCEPTED is refused: only the gateway relays."""
    signed = issue_evidence(statement(EvidenceType.RELAY_ACCEPTED, issuer=LY), NET[LY].signing)
    with pytest.raises(AuthenticationFailed) as refused:
        verify_evidence(signed, NET.directory(), now=NOW)
    assert refused.value.code == ErrorCode.EVIDENCE_ISSUER_NOT_ALLOWED


def test_gateway_cannot_issue_retrieval():
    """RETRIEVAL is the recipient's statement; the gateway's key cannot make it."""
    signed = issue_evidence(statement(EvidenceType.RETRIEVAL, issuer="gateway.test"), NET.evidence_key)
    with pytest.raises(AuthenticationFailed):
        verify_evidence(signed, NET.directory(), now=NOW)


def test_log_key_cannot_sign_evidence():
    """The gateway's log key and evidence key are kept apart."""
    signed = issue_evidence(statement(EvidenceType.SUBMISSION_ACCEPTED, issuer="gateway.test"), NET.log_key)
    with pytest.raises(KeyRejected):
        verify_evidence(signed, NET.directory(), now=NOW)


def test_tampered_evidence_is_refused():
    """Changing the digest inside signed evidence breaks the signature."""
    signed = issue_evidence(statement(), NET[LY].signing)
    payload = json.loads(signed.payload)
    payload["message_digest"] = "cd" * 32
    tampered = signed.model_copy(update={"payload": json.dumps(payload).encode()})
    with pytest.raises(AuthenticationFailed) as refused:
        verify_evidence(tampered, NET.directory(), now=NOW)
    assert refused.value.code == ErrorCode.EVIDENCE_SIGNATURE_INVALID


def test_negative_evidence_requires_a_reason():
    """NON_DELIVERY without a reason cannot even be built."""
    with pytest.raises(ValueError, match="requires a reason"):
        statement(EvidenceType.NON_DELIVERY)
    with_reason = statement(EvidenceType.NON_DELIVERY, reason=Reason(code="EXPIRED", detail="expired"))
    assert with_reason.is_negative


def test_evidence_wire_form_round_trips_and_is_size_limited():
    """Signed evidence parses from its JSON wire form; oversized or malformed input is refused."""
    wire = issue_evidence(statement(), NET[LY].signing).model_dump_json().encode()
    assert parse_signed_evidence(wire, DEFAULT_LIMITS).payload
    with pytest.raises(Exception) as refused:
        parse_signed_evidence(wire + b" " * DEFAULT_LIMITS.max_evidence_bytes, DEFAULT_LIMITS)
    assert getattr(refused.value, "code", None) == ErrorCode.TOO_LARGE
    with pytest.raises(ContentInvalid.__mro__[1]):
        parse_signed_evidence(b'{"payload_type": 1}', DEFAULT_LIMITS)


def test_identity_is_stable_and_distinguishes_digests():
    """One event, one identity; the same claim about other bytes is another event."""
    first = statement()
    assert first.identity == statement().identity
    other = new_statement(
        EvidenceType.DELIVERY,
        message_id=MESSAGE,
        message_digest="cd" * 32,
        sender=BD,
        recipient=LY,
        issuer=LY,
        at=NOW + timedelta(seconds=1),
    )
    assert first.identity != other.identity
