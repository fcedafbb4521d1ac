"""`POST /v1/reports/signatures`: the gateway signs an agency's case report (PAdES), after checking it against its log.

The agency draws the report (only it holds the messages in clear,
`runtime.reports.render`); the gateway signs it under its document-signing
certificate, issued by the network CA, so a standard PDF reader shows the
gateway as the signer. The gateway signs only what it can vouch for:

1. the request is signed by the agency's directory key, for this endpoint
   and exactly this PDF, fresh and never seen before (`Rogatory-Signed`, as
   the blob store's requests: `protocol.attachments.verify_blob_request`);
2. the PDF carries the proof (`protocol.reports.ReportProof`) as an
   embedded file, drawn by that agency, and is not signed yet;
3. the agency is the sender or a recipient of every message the proof lists
   (the gateway's own record of each message: `REPORT_NOT_PARTY`, 403), each
   message is of the report's case, and every evidence statement listed is
   in the audit log for that message with exactly that signed payload
   (`REPORT_EVIDENCE_UNKNOWN`, 422).

Then it signs and appends a `report_signed` leaf (`protocol.auditlog.ReportSignedLeaf`)
in one transaction, before answering: a report the gateway signed is always
in its log. The answer is the signed PDF (`application/pdf`), with the leaf's
index in `Rogatory-Report-Leaf`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Callable
from datetime import datetime
from typing import Final

import structlog
from aiohttp import web
from cryptography.hazmat.primitives import hashes

from gateway.auditlog import AuditLog
from gateway.blobs import ReplayCache
from gateway.store import GatewayStore
from protocol.attachments import check_body_digest, verify_blob_request
from protocol.auditlog import EvidenceLeaf, ReportSignedLeaf, decode_leaf, report_leaf_identity
from protocol.directory import Directory
from protocol.errors import ErrorCode, ProtocolError
from protocol.evidence import EvidenceStatement
from protocol.model import parse_model
from protocol.reports import (
    REPORT_PROOF_NAME,
    ProvenStatement,
    ReportProof,
    signed_request_statement,
)
from runtime.http import Handler, problem
from runtime.reports.errors import ReportError, ReportErrorCode
from runtime.reports.pades import ReportSigner, embedded_files, report_proof, sign_report, signature_count

log = structlog.get_logger("rogatory.gateway.reports")

MAX_REPORT_BYTES: Final = 32 << 20
"""The largest PDF the gateway signs: a case of a thousand messages is a few megabytes."""
LEAF_HEADER: Final = "Rogatory-Report-Leaf"
_READ_CHUNK: Final = 1 << 16


class _Refused(Exception):
    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


def _refuse(status: int, code: str, title: str, detail: str) -> _Refused:
    return _Refused(problem(status, code, title, detail))


class ReportSigningApi:
    """The report-signing endpoint over the store, the log and the gateway's document signer (None: 503)."""

    def __init__(
        self,
        *,
        store: GatewayStore,
        audit: AuditLog,
        directory: Callable[[], Directory],
        clock: Callable[[], datetime],
        signer: ReportSigner | None,
        location: str = "",
        replay_cache: ReplayCache | None = None,
    ) -> None:
        self._store = store
        self._audit = audit
        self._directory = directory
        self._clock = clock
        self._signer = signer
        self._location = location
        self._replays = replay_cache or ReplayCache()

    def routes(self) -> list[tuple[str, str, Handler]]:
        """(method, path, handler): the request is signed by an agency, no token role."""
        return [("POST", "/v1/reports/signatures", self.sign)]  # REPORT_SIGNING_PATH, literal for the OpenAPI check

    async def sign(self, request: web.Request) -> web.StreamResponse:
        """`signReport`: check the report against the log, sign it, log the signature, answer the signed PDF."""
        try:
            return await self._sign(request)
        except _Refused as refused:
            return refused.response

    async def _sign(self, request: web.Request) -> web.StreamResponse:
        now = self._clock()
        try:
            signed = verify_blob_request(
                request.headers.get("Authorization", ""),
                method=request.method,
                path=request.path,
                directory=self._directory(),
                now=now,
            )
            self._replays.admit(signed, now)
        except ProtocolError as exc:
            code = ErrorCode.REPLAYED if exc.code == ErrorCode.REPLAYED else ErrorCode.UNAUTHORIZED
            response = problem(401, code, "Unauthorized", f"a request signed by an agency is required: {exc}")
            response.headers["WWW-Authenticate"] = "Rogatory-Signed"
            raise _Refused(response) from exc
        if self._signer is None:
            raise _refuse(
                503,
                ReportErrorCode.REPORT_SIGNING_UNAVAILABLE,
                "Report signing unavailable",
                "this gateway has no document-signing certificate (ROGATORY_REPORT_SIGNING_CERT_FILE)",
            )
        pdf = await _read_body(request)
        pdf_sha256 = hashlib.sha256(pdf).hexdigest()
        try:
            check_body_digest(signed, pdf_sha256)
        except ProtocolError as exc:
            raise _refuse(400, exc.code, "Body digest mismatch", exc.detail) from exc
        try:  # parsing an agency's PDF is CPU work: off the event loop the ingress pipeline shares
            signatures, proof, proof_bytes = await asyncio.to_thread(_read_report, pdf)
        except ReportError as exc:
            raise _refuse(422, exc.code, "Invalid report", exc.detail) from exc
        if signatures:
            raise _refuse(409, ReportErrorCode.REPORT_ALREADY_SIGNED, "Already signed", "the PDF is signed already")
        if proof.agency != signed.agency:
            raise _refuse(
                403,
                ReportErrorCode.REPORT_NOT_PARTY,
                "Not the report's agency",
                f"the report was drawn by {proof.agency}, the request is signed by {signed.agency}",
            )
        statements = await self._check_against_log(proof)
        try:
            signed_pdf = await asyncio.to_thread(
                sign_report,
                pdf,
                self._signer,
                reason=f"Rogatory gateway: the evidence of case {proof.case_id} listed in "
                f"{REPORT_PROOF_NAME} is in its audit log ({statements} statements)",
                location=self._location,
            )
        except ReportError as exc:
            raise _refuse(422, exc.code, "Cannot sign", exc.detail) from exc
        leaf = ReportSignedLeaf(
            identity=report_leaf_identity(str(signed.agency), pdf_sha256),
            at=now,
            agency=signed.agency,
            case_id=str(proof.case_id),
            pdf_sha256=pdf_sha256,
            proof_sha256=hashlib.sha256(proof_bytes).hexdigest(),
            messages=tuple(str(message.message_id) for message in proof.messages),
            statements=statements,
            signer_certificate_sha256=self._signer.certificate.fingerprint(hashes.SHA256()).hex(),
            request=signed_request_statement(request.headers["Authorization"]),
        )
        parties = sorted(
            {str(signed.agency)} | {str(agency) for m in proof.messages for agency in (m.sender, *m.recipients)}
        )
        async with self._audit.transaction() as atx:
            appended = await atx.append(leaf, at=now, agencies=parties)
        log.info(
            "report_signed",
            agency=str(signed.agency),
            case_id=str(proof.case_id),
            messages=len(proof.messages),
            leaf=appended.index,
            pdf_sha256=pdf_sha256,
        )
        return web.Response(body=signed_pdf, content_type="application/pdf", headers={LEAF_HEADER: str(appended.index)})

    async def _check_against_log(self, proof: ReportProof) -> int:
        """The agency is party to every message, each of the case, each statement in the log; how many statements."""
        agency = str(proof.agency)
        count = 0
        for message in proof.messages:
            record = await self._store.message(str(message.sender), str(message.message_id))
            if record is None or (agency != record.sender and agency not in record.recipients):
                raise _refuse(
                    403,
                    ReportErrorCode.REPORT_NOT_PARTY,
                    "Not party to a listed message",
                    f"{agency} is neither the sender nor a recipient of message {message.message_id} "
                    f"from {message.sender} (as this gateway recorded it)",
                )
            if record.case_id != str(proof.case_id):
                raise _refuse(
                    422,
                    ReportErrorCode.REPORT_EVIDENCE_UNKNOWN,
                    "Message of another case",
                    f"message {message.message_id} is of case {record.case_id}, the report is of {proof.case_id}",
                )
            if (
                set(map(str, message.recipients)) != set(record.recipients)
                or message.message_type != record.message_type
            ):
                raise _refuse(
                    422,
                    ReportErrorCode.REPORT_EVIDENCE_UNKNOWN,
                    "Message not as logged",
                    f"message {message.message_id} was a {record.message_type} to {', '.join(record.recipients)}, "
                    "the report says otherwise",
                )
            for proven in message.statements:
                await self._check_statement(str(message.sender), str(message.message_id), proven)
                count += 1
        return count

    async def _check_statement(self, sender: str, message_id: str, proven: ProvenStatement) -> None:
        identity = proven.identity
        unknown = _refuse(
            422,
            ReportErrorCode.REPORT_EVIDENCE_UNKNOWN,
            "Evidence not in the log",
            f"no evidence {identity[:120]!r} of message {message_id} with that payload is in the audit log",
        )
        record = await self._store.leaf_by_identity(identity)
        if record is None or record.message_id != message_id:
            raise unknown
        leaf = decode_leaf(record.leaf)
        if not isinstance(leaf, EvidenceLeaf):
            raise unknown
        digest = hashlib.sha256(leaf.evidence.payload).hexdigest()
        if not hmac.compare_digest(digest, proven.payload_sha256):
            raise unknown
        statement = parse_model(EvidenceStatement, leaf.evidence.payload, what="logged evidence")
        if statement.sender != sender or str(statement.message_id) != message_id:
            raise unknown


def _read_report(pdf: bytes) -> tuple[int, ReportProof, bytes]:
    """How many signatures the PDF carries, its proof and the proof's bytes (`ReportError` if unreadable)."""
    return signature_count(pdf), report_proof(pdf), embedded_files(pdf)[REPORT_PROOF_NAME]


async def _read_body(request: web.Request) -> bytes:
    """The request's PDF, refused (413) past `MAX_REPORT_BYTES` without reading further."""
    declared = request.content_length
    if declared is not None and declared > MAX_REPORT_BYTES:
        raise _refuse(413, ErrorCode.TOO_LARGE, "Too large", f"a report is at most {MAX_REPORT_BYTES} bytes")
    body = bytearray()
    while chunk := await request.content.read(_READ_CHUNK):
        body += chunk
        if len(body) > MAX_REPORT_BYTES:
            raise _refuse(413, ErrorCode.TOO_LARGE, "Too large", f"a report is at most {MAX_REPORT_BYTES} bytes")
    return bytes(body)


__all__ = ["LEAF_HEADER", "MAX_REPORT_BYTES", "ReportSigningApi"]
