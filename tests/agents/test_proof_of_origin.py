"""Proof of origin and document signatures, with two in-process agents.

The recipient keeps, with every message it received, the sender's signed
content statement beside the sealed header, and a third party checks who
sent exactly which document with the directory alone. A document's own
signature (`integrity.signature`) is made by the sending agent, or verified
and otherwise refused with a stable code; the recipient verifies it too.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from agents.bundles import BundleExporter, MessageRef, ProofsPending
from protocol.directory import PublishedSigningKey
from protocol.document_signature import sign_document, verify_document_signature
from protocol.encoding import canonical_json
from protocol.envelope import EnvelopeHeader, Recipient, SealedMessage, seal, verify_content_proof
from protocol.errors import AuthenticationFailed, ErrorCode
from protocol.ids import CaseId, KeyId, MessageId
from protocol.limits import DEFAULT_LIMITS
from protocol.mla import validate_document
from tests.agents.harness import InProcessAgent, carry
from tests.agents.test_auditing import InMemoryGateway
from tests.agents.test_cases import fresh, new_case, sample
from tests.support.network import BD, LY, NOW, LocalNetwork

Agents = tuple[InProcessAgent, InProcessAgent]
REQUEST = "BD-LY-2025-0011_01_MLA_REQUEST.json"


def placeholder(document: dict[str, Any], **signature: str) -> dict[str, Any]:
    """`document` with a signature block that is not a signature (as the samples once carried)."""
    block = {"format": "JWS", "signer": BD, "value": "detached-signature-placeholder"} | signature
    document["integrity"] = dict(document["integrity"]) | {"signature": block}
    return document


def keys_of(agent: InProcessAgent) -> Callable[[KeyId], tuple[str, PublishedSigningKey]]:
    """The signing keys of `agent`'s directory, as `verify_document_signature` looks them up."""

    def lookup(key_id: KeyId) -> tuple[str, PublishedSigningKey]:
        entry, key = agent.directory.agency_signing_key(key_id)
        return entry.agency_id, key

    return lookup


async def test_the_recipient_keeps_the_senders_signed_content_statement_that_proves_the_document(agents: Agents):
    """LY's store holds BD's content statement and signature; with the inbox document and the directory alone,
    a third party checks that BD said exactly this document, bound to the very header BD signed."""
    bd, ly = agents
    request = fresh(sample(REQUEST), new_case())
    assert (await bd.submit(request))[0] == 202
    assert [r.result for r in await carry(bd, ly)] == ["delivered"]
    [received] = await ly.store.inbox_by_message_id(request["message_id"])
    proof = await ly.store.content_proof(BD, request["message_id"])
    assert proof is not None
    assert proof.direction == "received"
    sealed = SealedMessage.from_bytes(received.sealed, DEFAULT_LIMITS)
    statement = verify_content_proof(
        proof.statement,
        proof.signature,
        received.document,
        ly.directory,
        signer_key_id=sealed.signer_key_id,
        now=NOW,
    )
    assert statement.binding.sender == BD
    assert statement.binding == EnvelopeHeader.model_validate_json(sealed.header_bytes).binding()
    sent = await bd.store.content_proof(BD, request["message_id"])
    assert sent is not None
    assert (sent.direction, sent.statement, sent.signature) == ("sent", proof.statement, proof.signature)


async def test_a_document_without_signature_is_signed_by_the_sending_agent_and_verified_by_the_recipient(
    agents: Agents,
):
    """The document as delivered carries a JWS by BD's signing key over the document itself."""
    bd, ly = agents
    request = fresh(sample(REQUEST), new_case())
    assert "signature" not in request["integrity"]
    assert (await bd.submit(request))[0] == 202
    await carry(bd, ly)
    [received] = await ly.store.inbox_by_message_id(request["message_id"])
    document = json.loads(received.document)
    signer = verify_document_signature(document, keys_of(ly), sender=BD)
    assert (signer.agency, signer.key_id) == (BD, bd.keys.signing.key_id)
    document["requesting_ref"] = "changed after signing"
    with pytest.raises(AuthenticationFailed) as refused:
        verify_document_signature(document, keys_of(ly), sender=BD)
    assert refused.value.code == ErrorCode.DOCUMENT_SIGNATURE_INVALID


async def test_a_placeholder_signature_is_refused_with_a_stable_code(agents: Agents):
    """A signature block that is not a signature is 422 DOCUMENT_SIGNATURE_INVALID, at integrity.signature."""
    bd, _ = agents
    status, answer = await bd.submit(placeholder(fresh(sample(REQUEST), new_case())))
    assert (status, answer["code"]) == (422, "DOCUMENT_SIGNATURE_INVALID")
    assert ["integrity", "signature"] in [error["loc"] for error in answer["errors"]]


async def test_a_signature_format_this_exchange_cannot_verify_is_refused(agents: Agents):
    """CAdES, XAdES, PAdES or `none` are not taken on trust: 422 DOCUMENT_SIGNATURE_UNSUPPORTED."""
    bd, _ = agents
    status, answer = await bd.submit(placeholder(fresh(sample(REQUEST), new_case()), format="CAdES"))
    assert (status, answer["code"]) == (422, "DOCUMENT_SIGNATURE_UNSUPPORTED")


async def test_a_document_signed_by_another_agency_is_refused(agents: Agents):
    """A valid JWS, but by LY's key, in a document BD's agent is to send: 422 DOCUMENT_SIGNATURE_INVALID."""
    bd, ly = agents
    signed = sign_document(fresh(sample(REQUEST), new_case()), LY, ly.keys.signing)
    status, answer = await bd.submit(signed)
    assert (status, answer["code"]) == (422, "DOCUMENT_SIGNATURE_INVALID")


async def test_a_document_the_agency_signed_itself_is_sent_as_signed(agents: Agents):
    """A valid JWS by BD's own key is verified and kept: the recipient gets that very signature."""
    bd, ly = agents
    signed = sign_document(fresh(sample(REQUEST), new_case()), BD, bd.keys.signing)
    assert (await bd.submit(signed))[0] == 202
    await carry(bd, ly)
    [received] = await ly.store.inbox_by_message_id(signed["message_id"])
    delivered = json.loads(received.document)
    assert delivered["integrity"]["signature"] == signed["integrity"]["signature"]


async def test_the_recipient_refuses_a_document_whose_signature_does_not_verify(agents: Agents):
    """Sealed by LY outside its agent with a placeholder signature: BD's agent refuses it (signed NON_DELIVERY,
    DOCUMENT_SIGNATURE_INVALID) and keeps nothing of it."""
    bd, ly = agents
    case_id = new_case()
    request = placeholder(fresh(sample("LY-BD-2025-0009_01_MLA_REQUEST.json"), case_id), signer=LY)
    document = validate_document(canonical_json(request))
    sealed = seal(
        canonical_json(request),
        message_id=MessageId(uuid.UUID(request["message_id"])),
        sender=LY,
        signing_key=ly.keys.signing,
        recipients=[Recipient(BD, ly.directory.agency(BD).current_encryption_key(NOW).recipient_key)],
        archive_key=None,
        message_type=document.message_type,
        case_id=CaseId(case_id),
        created_at=NOW,
        expires_at=NOW + timedelta(hours=1),
        limits=DEFAULT_LIMITS,
    )
    received = await bd.receiver.receive_message(sealed.to_bytes())
    assert (received.result, received.code) == ("refused", ErrorCode.DOCUMENT_SIGNATURE_INVALID)
    assert await bd.store.inbox_by_message_id(request["message_id"]) == []
    assert await bd.store.content_proof(LY, request["message_id"]) is None


async def test_an_evidence_bundle_needs_the_gateways_audit_api(agents: Agents):
    """Without the audit API configured the bundle endpoints answer 503, never a bundle without proofs."""
    bd, ly = agents
    request = fresh(sample(REQUEST), new_case())
    assert (await bd.submit(request))[0] == 202
    await carry(bd, ly)
    status, answer = await bd.call("GET", f"/v1/messages/{request['message_id']}/evidence-bundle")
    assert (status, answer["code"]) == (503, "SERVICE_UNAVAILABLE")
    status, answer = await ly.call("GET", f"/v1/inbox/{request['message_id']}/evidence-bundle")
    assert (status, answer["code"]) == (503, "SERVICE_UNAVAILABLE")
    status, answer = await bd.call("GET", f"/v1/cases/{request['case_id']}/evidence-bundle")
    assert (status, answer["code"]) == (503, "SERVICE_UNAVAILABLE")
    status, _ = await bd.call("GET", f"/v1/messages/{uuid.uuid4()}/evidence-bundle")
    assert status == 404


class UncosignedGateway(InMemoryGateway):
    """A gateway whose checkpoints no witness cosigned yet."""

    async def proofs_answer(self, identities: list[str], size: int) -> dict[str, Any]:
        return {"tree_size": size, "checkpoint": None, "proofs": await self.inclusion_proofs(identities, size)}


async def test_no_bundle_is_made_before_two_witnesses_cosigned_a_checkpoint(agents: Agents):
    """Proofs to a checkpoint nobody witnessed prove nothing to a court: 409 PROOFS_PENDING, ask again later."""
    bd, ly = agents
    request = fresh(sample(REQUEST), new_case())
    assert (await bd.submit(request))[0] == 202
    await carry(bd, ly)
    gateway = UncosignedGateway(LocalNetwork())
    gateway.add(b"a leaf")
    exporter = BundleExporter(
        agency=BD,
        signing_key=bd.keys.signing,
        store=bd.store,
        gateway=gateway,
        directory=lambda: bd.directory,
        limits=DEFAULT_LIMITS,
        clock=lambda: NOW,
    )
    with pytest.raises(ProofsPending) as pending:
        await exporter.export([MessageRef("sent", BD, request["message_id"])], scope="message", subject="x")
    assert pending.value.code == ErrorCode.PROOFS_PENDING
