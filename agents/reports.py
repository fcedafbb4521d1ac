"""The agency's side of a case report: draw it from what the agent holds in clear, have the gateway sign it.

Only the agent holds the messages' text, so it draws the PDF
(`runtime.reports.render_report`, fonts from `ROGATORY_REPORT_FONT_DIR`); the
gateway, which holds the audit log, checks the embedded proof against it
and signs (`POST /v1/reports/signatures`, `gateway.reports`). The request is
signed by the agency's directory key for exactly this PDF
(`protocol.attachments.sign_blob_request`), so no token names the agency.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import aiohttp

from agents.settings import AgentSettings
from protocol.attachments import sign_blob_request
from protocol.ids import AgencyId
from protocol.keys import SigningPrivateKey
from protocol.reports import REPORT_SIGNING_PATH, ReportProof
from runtime.reports.account import CaseReport
from runtime.reports.errors import ReportError, ReportErrorCode
from runtime.reports.fonts import ReportFonts, find_fonts
from runtime.reports.render import render_report

LEAF_HEADER: Final = "Rogatory-Report-Leaf"
MAX_ERROR_CHARS: Final = 500


class ReportSigningRefused(ReportError):
    """The gateway did not sign the report; `status` and `code` are its answer's."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"the gateway answered {status} {code}: {detail}")
        self.status = status
        self.refusal = code


@dataclass(frozen=True, slots=True)
class SignedReport:
    """A report as the gateway signed it, and the index of the audit leaf that records the signature."""

    pdf: bytes
    drawn_sha256: str
    leaf_index: int


async def request_report_signature(
    session: aiohttp.ClientSession,
    gateway_url: str,
    *,
    agency: AgencyId,
    key: SigningPrivateKey,
    pdf: bytes,
    now: datetime,
) -> SignedReport:
    """Ask the gateway to sign `pdf` (drawn by `agency`); the signed PDF, or `ReportSigningRefused`."""
    digest = hashlib.sha256(pdf).hexdigest()
    authorization = sign_blob_request(
        agency=agency, key=key, method="POST", path=REPORT_SIGNING_PATH, now=now, body_sha256=digest
    )
    url = gateway_url.rstrip("/") + REPORT_SIGNING_PATH
    headers = {"Authorization": authorization, "Content-Type": "application/pdf"}
    try:
        async with session.post(url, data=pdf, headers=headers) as answer:
            body = await answer.read()
            if answer.status != 200:
                code, detail = _problem(body)
                raise ReportSigningRefused(answer.status, code, detail)
            leaf = answer.headers.get(LEAF_HEADER, "")
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise ReportSigningRefused(0, "GATEWAY_UNREACHABLE", repr(exc)[:MAX_ERROR_CHARS]) from exc
    if not leaf.isdigit() or not body.startswith(b"%PDF-") or not body.startswith(pdf[:64]):
        raise ReportSigningRefused(200, "MALFORMED_ANSWER", "the gateway's answer is not the signed report")
    return SignedReport(body, digest, int(leaf))


def _problem(body: bytes) -> tuple[str, str]:
    try:
        answer = json.loads(body)
    except ValueError:
        return "UNKNOWN", body[:MAX_ERROR_CHARS].decode("utf-8", "replace")
    if not isinstance(answer, dict):
        return "UNKNOWN", ""
    return str(answer.get("code", "UNKNOWN")), str(answer.get("detail", ""))[:MAX_ERROR_CHARS]


def report_fonts(settings: AgentSettings) -> ReportFonts:
    """The fonts this agent draws reports with (`ROGATORY_REPORT_FONT_DIR`); `ReportFontsMissing` if one is absent."""
    return find_fonts(settings.report_font_dir)


async def draw_and_sign_report(
    session: aiohttp.ClientSession,
    gateway_url: str,
    *,
    report: CaseReport,
    proof: ReportProof,
    fonts: ReportFonts,
    key: SigningPrivateKey,
    clock: Callable[[], datetime],
    attachments: Mapping[str, bytes] | None = None,
) -> SignedReport:
    """Draw `report` with `proof` (and `attachments`) embedded, and have the gateway sign it."""
    if str(proof.agency) != report.agency or str(proof.case_id) != report.case_id:
        raise ReportSigningRefused(0, ReportErrorCode.REPORT_PROOF_INVALID, "the proof is of another agency or case")
    rendered = render_report(report, fonts, proof, attachments)
    return await request_report_signature(
        session, gateway_url, agency=proof.agency, key=key, pdf=rendered.pdf, now=clock()
    )


__all__ = [
    "ReportSigningRefused",
    "SignedReport",
    "draw_and_sign_report",
    "report_fonts",
    "request_report_signature",
]
