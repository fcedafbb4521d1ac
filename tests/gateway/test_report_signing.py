"""`POST /v1/reports/signatures`: the gateway signs an agency's report only for messages that agency is party to,
whose listed evidence is in its log as listed; each signature is a `report_signed` leaf the auditor's verifier
accepts; the agent's client gets back a PDF the offline check accepts."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography import x509

from agents.reports import ReportSigningRefused, draw_and_sign_report, request_report_signature
from gateway.reports import ReportSigningApi
from protocol.audit_verify import LogEntry, verify_audit_log
from protocol.auditlog import EvidenceLeaf, ReportSignedLeaf, decode_leaf, report_leaf_identity, verify_report_leaf
from protocol.envelope import SealedMessage
from protocol.errors import ProofInvalid
from protocol.ids import AgencyId
from protocol.keys import SigningPrivateKey
from protocol.reports import ProvenMessage, ProvenStatement, ReportProof
from runtime.http import error_middleware
from runtime.reports.account import CaseReport, ReportEvent, ReportMessage
from runtime.reports.bundle import verify_report_in_bundle_async
from runtime.reports.errors import ReportProofInvalid
from runtime.reports.fonts import find_fonts
from runtime.reports.pades import verify_report_async
from runtime.reports.render import render_report
from tests.gateway.conftest import Harness
from tests.reports.conftest import make_authority
from tests.support.network import BD, BD_POLICE, LY, LY_AGO, NOW

CASE = "BD-LY-2025-0007"


async def _accepted(harness: Harness, count: int = 2) -> list[str]:
    """`count` messages from BD to LY through the pipeline: message records and evidence leaves in the log."""
    ids = []
    for _ in range(count):
        sealed: SealedMessage = harness.net.seal(b'{"summary":"x"}')
        await harness.pipeline.handle(harness.delivery(sealed.to_bytes(), publisher=BD))
        record = (await harness.store.leaves(limit=1000))[-1]
        assert record.message_id is not None
        ids.append(record.message_id)
    return ids


async def _proof(harness: Harness, agency: AgencyId, message_ids: list[str]) -> ReportProof:
    messages = []
    for message_id in message_ids:
        statements = []
        for record in await harness.store.leaves(message_id=message_id, limit=100):
            leaf = decode_leaf(record.leaf)
            if isinstance(leaf, EvidenceLeaf):
                digest = hashlib.sha256(leaf.evidence.payload).hexdigest()
                statements.append(ProvenStatement(identity=leaf.identity, payload_sha256=digest))
        messages.append(
            ProvenMessage.model_validate(
                {
                    "message_id": message_id,
                    "sender": BD,
                    "recipients": (LY,),
                    "message_type": "MLA_REQUEST",
                    "statements": tuple(statements),
                },
                strict=False,
            )
        )
    return ReportProof.model_validate(
        {"case_id": CASE, "agency": agency, "drawn_at": NOW, "log_origin": "x", "messages": tuple(messages)},
        strict=False,
    )


def _report(proof: ReportProof) -> CaseReport:
    return CaseReport(
        case_id=CASE,
        agency=str(proof.agency),
        drawn_at=NOW,
        log_origin=proof.log_origin,
        languages=("en", "ar", "bn"),
        title_lines=("جريمة الاتجار بالبشر", "মানব পাচার অপরাধ"),
        messages=tuple(
            ReportMessage(
                message_id=str(message.message_id),
                sender=str(message.sender),
                recipients=tuple(map(str, message.recipients)),
                message_type=message.message_type,
                sequence=None,
                created_at=NOW,
                lines=("Public Security Division",),
                events=(
                    ReportEvent(actor="gateway.test", at=NOW, evidence_type="SUBMISSION_ACCEPTED", signer_key="k"),
                ),
            )
            for message in proof.messages
        ),
    )


@pytest.fixture
async def gateway(harness: Harness, tmp_path):
    authority = make_authority(tmp_path)
    api = ReportSigningApi(
        store=harness.store,
        audit=harness.audit,
        directory=harness.net.directory,
        clock=lambda: harness.clock[0],
        signer=authority.signer,
    )
    app = web.Application(middlewares=[error_middleware()])
    for method, path, handler in api.routes():
        app.router.add_route(method, path, handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    async with aiohttp.ClientSession() as session:
        yield (
            session,
            str(server.make_url("/")),
            x509.load_pem_x509_certificate((authority.ca_dir / "ca.pem").read_bytes()),
        )
    await server.close()


async def test_the_gateway_signs_a_report_of_its_parties_messages_and_logs_it(harness, gateway):
    session, url, ca = gateway
    messages = await _accepted(harness)
    proof = await _proof(harness, BD, messages)
    before = len(await harness.store.leaves(limit=1000))
    signed = await draw_and_sign_report(
        session,
        url,
        report=_report(proof),
        proof=proof,
        fonts=find_fonts(),
        key=harness.net[BD].signing,
        clock=lambda: NOW,
    )
    verified = await verify_report_async(signed.pdf, ca)
    assert verified.proof == proof
    with pytest.raises(ReportSigningRefused) as refused:  # signed once: a second signature is not added
        await request_report_signature(session, url, agency=BD, key=harness.net[BD].signing, pdf=signed.pdf, now=NOW)
    assert (refused.value.status, refused.value.refusal) == (409, "REPORT_ALREADY_SIGNED")
    assert verified.drawn_sha256 == signed.drawn_sha256
    record = await harness.store.leaf_by_identity(report_leaf_identity(BD, signed.drawn_sha256))
    assert record is not None
    assert record.index == signed.leaf_index == before
    leaf = decode_leaf(record.leaf)
    assert isinstance(leaf, ReportSignedLeaf)
    assert leaf.messages == tuple(messages)
    assert leaf.statements == sum(len(message.statements) for message in proof.messages) == 4
    assert verify_report_leaf(leaf, harness.net.directory()).agency == BD
    other_pdf = "0" * 64  # a leaf claiming the agency asked for another PDF than it signed a request for
    forged = leaf.model_copy(update={"pdf_sha256": other_pdf, "identity": report_leaf_identity(BD, other_pdf)})
    with pytest.raises(ProofInvalid):
        verify_report_leaf(forged, harness.net.directory())
    held = {
        message_id: [
            leaf.evidence
            for leaf in [decode_leaf(r.leaf) for r in await harness.store.leaves(message_id=message_id, limit=100)]
            if isinstance(leaf, EvidenceLeaf)
        ]
        for message_id in messages
    }
    in_bundle = await verify_report_in_bundle_async(signed.pdf, ca, subject=CASE, statements=held)
    assert in_bundle.proof == proof
    with pytest.raises(ReportProofInvalid, match="does not hold"):  # a bundle of one message only
        await verify_report_in_bundle_async(signed.pdf, ca, subject=CASE, statements={messages[0]: held[messages[0]]})
    with pytest.raises(ReportProofInvalid, match="not among"):  # a bundle missing one step of a listed message
        await verify_report_in_bundle_async(signed.pdf, ca, subject=CASE, statements=held | {messages[1]: []})
    with pytest.raises(ReportProofInvalid, match="the bundle of"):
        await verify_report_in_bundle_async(signed.pdf, ca, subject="BD-LY-2025-0011", statements=held)
    entries = [LogEntry(r.leaf, r.receipt) for r in await harness.store.leaves(limit=1000)]
    await harness.audit.checkpoint_if_due(NOW, idle_interval=timedelta(0))
    checkpoint = await harness.store.latest_checkpoint()
    assert checkpoint is not None
    audit = verify_audit_log(entries, [checkpoint.note], authority=harness.net.authority.public_key)
    assert audit.consistent, audit.problem


async def test_a_recipient_may_have_its_report_signed_too(harness, gateway):
    session, url, ca = gateway
    proof = await _proof(harness, LY, await _accepted(harness, 1))
    pdf = render_report(_report(proof), find_fonts(), proof).pdf
    signed = await request_report_signature(session, url, agency=LY, key=harness.net[LY].signing, pdf=pdf, now=NOW)
    assert (await verify_report_async(signed.pdf, ca)).proof.agency == LY


async def test_a_report_listing_another_agencys_message_is_refused_and_not_logged(harness, gateway):
    session, url, _ = gateway
    proof = await _proof(harness, BD_POLICE, await _accepted(harness, 1))
    pdf = render_report(_report(proof), find_fonts(), proof).pdf
    leaves = len(await harness.store.leaves(limit=1000))
    with pytest.raises(ReportSigningRefused) as refused:
        await request_report_signature(
            session, url, agency=BD_POLICE, key=harness.net[BD_POLICE].signing, pdf=pdf, now=NOW
        )
    assert (refused.value.status, refused.value.refusal) == (403, "REPORT_NOT_PARTY")
    assert len(await harness.store.leaves(limit=1000)) == leaves


async def test_evidence_not_in_the_log_as_listed_is_refused(harness, gateway):
    session, url, _ = gateway
    proof = await _proof(harness, BD, await _accepted(harness, 1))
    message = proof.messages[0]
    forged = message.statements[0].model_copy(update={"payload_sha256": "0" * 64})
    altered = proof.model_copy(update={"messages": (message.model_copy(update={"statements": (forged,)}),)})
    pdf = render_report(_report(altered), find_fonts(), altered).pdf
    with pytest.raises(ReportSigningRefused) as refused:
        await request_report_signature(session, url, agency=BD, key=harness.net[BD].signing, pdf=pdf, now=NOW)
    assert (refused.value.status, refused.value.refusal) == (422, "REPORT_EVIDENCE_UNKNOWN")
    # A message listed as sent to another agency than the gateway recorded: refused the same way.
    misaddressed = proof.model_copy(update={"messages": (message.model_copy(update={"recipients": (LY_AGO,)}),)})
    pdf = render_report(_report(misaddressed), find_fonts(), misaddressed).pdf
    with pytest.raises(ReportSigningRefused) as refused:
        await request_report_signature(session, url, agency=BD, key=harness.net[BD].signing, pdf=pdf, now=NOW)
    assert (refused.value.status, refused.value.refusal) == (422, "REPORT_EVIDENCE_UNKNOWN")


async def test_a_report_drawn_by_one_agency_cannot_be_sent_for_signing_by_another(harness, gateway):
    session, url, _ = gateway
    proof = await _proof(harness, BD, await _accepted(harness, 1))
    pdf = render_report(_report(proof), find_fonts(), proof).pdf
    with pytest.raises(ReportSigningRefused) as refused:
        await request_report_signature(session, url, agency=LY, key=harness.net[LY].signing, pdf=pdf, now=NOW)
    assert (refused.value.status, refused.value.refusal) == (403, "REPORT_NOT_PARTY")


async def test_a_request_signed_for_another_pdf_or_by_a_stranger_is_unauthorized(harness, gateway):
    session, url, _ = gateway
    proof = await _proof(harness, BD, await _accepted(harness, 1))
    pdf = render_report(_report(proof), find_fonts(), proof).pdf
    stranger = SigningPrivateKey.generate()
    with pytest.raises(ReportSigningRefused) as refused:
        await request_report_signature(session, url, agency=BD, key=stranger, pdf=pdf, now=NOW)
    assert refused.value.status == 401
    async with session.post(
        url.rstrip("/") + "/v1/reports/signatures", data=pdf, headers={"Content-Type": "application/pdf"}
    ) as answer:
        assert answer.status == 401
        assert json.loads(await answer.read())["code"] == "UNAUTHORIZED"
