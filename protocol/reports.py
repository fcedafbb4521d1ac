"""The case report's machine-readable proof, and an agency's request that the gateway sign a report.

A report (`runtime.reports`) is a PDF an agency draws from the messages it
holds in clear. It carries, as an embedded file named `REPORT_PROOF_NAME`,
a `ReportProof`: the case, the agency that drew it, and for every message
the report lists, the signed evidence statements of its steps, named by
their log identity and the SHA-256 of their signed payload. The gateway
signs a report (PAdES) only if every one of those statements is in its
audit log with that payload, and the asking agency is the sender or a
recipient of each message (`gateway.reports`). The same proof lets anyone
holding the PDF look each statement up in the log.

The request is signed by the agency's directory key as every request to
the blob store is (`protocol.attachments.sign_blob_request`: method, path,
the SHA-256 of the PDF sent, a nonce, a time); `signed_request_statement`
turns its `Authorization` value into the `SignedStatement` the audit leaf
keeps, so an auditor can check who asked for which PDF.
"""

from __future__ import annotations

from typing import Final, Literal

from pydantic import Field

from protocol.attachments import BLOB_AUTH_SCHEME, PAYLOAD_TYPE_BLOB_REQUEST
from protocol.encoding import UtcTimestamp, b64decode
from protocol.errors import ErrorCode, MalformedInput
from protocol.ids import AgencyIdField, CaseIdField, MessageIdField, parse_key_id
from protocol.model import FrozenModel
from protocol.signing import SignedStatement

REPORT_PROOF_FORMAT: Final = "rogatory-report-proof/1"
REPORT_PROOF_NAME: Final = "rogatory-report-proof.json"
"""The embedded file of every report: the proof the gateway checks before it signs."""
REPORT_SIGNING_PATH: Final = "/v1/reports/signatures"
"""The gateway's endpoint that signs a report; the path every signing request is signed for."""
MAX_REPORT_MESSAGES: Final = 2000
MAX_STATEMENTS_PER_MESSAGE: Final = 64


class ProvenStatement(FrozenModel):
    """One signed evidence statement: its identity in the audit log and the SHA-256 of its signed payload."""

    identity: str = Field(min_length=1, max_length=300)
    payload_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class ProvenMessage(FrozenModel):
    """One message the report lists, with the evidence of its steps."""

    message_id: MessageIdField
    sender: AgencyIdField
    recipients: tuple[AgencyIdField, ...] = Field(min_length=1)
    message_type: str = Field(pattern=r"^[A-Z][A-Z_]{1,63}$")
    statements: tuple[ProvenStatement, ...] = Field(min_length=1, max_length=MAX_STATEMENTS_PER_MESSAGE)


class ReportProof(FrozenModel):
    """What a report proves, embedded in its PDF: the case, who drew it, each message and its evidence."""

    format: Literal["rogatory-report-proof/1"] = REPORT_PROOF_FORMAT
    case_id: CaseIdField
    agency: AgencyIdField
    drawn_at: UtcTimestamp
    log_origin: str = Field(min_length=1, max_length=200)
    messages: tuple[ProvenMessage, ...] = Field(min_length=1, max_length=MAX_REPORT_MESSAGES)


def signed_request_statement(authorization: str) -> SignedStatement:
    """The `Rogatory-Signed` authorization of a request as a `SignedStatement` (not verified here)."""
    scheme, _, credentials = authorization.partition(" ")
    parts = credentials.strip().split(".")
    if scheme != BLOB_AUTH_SCHEME or len(parts) != 3:
        raise MalformedInput(f"expected a {BLOB_AUTH_SCHEME} authorization", code=ErrorCode.UNAUTHORIZED)
    return SignedStatement(
        payload_type=PAYLOAD_TYPE_BLOB_REQUEST,
        payload=b64decode(parts[1]),
        key_id=parse_key_id(parts[0]),
        signature=b64decode(parts[2]),
    )


__all__ = [
    "MAX_REPORT_MESSAGES",
    "REPORT_PROOF_FORMAT",
    "REPORT_PROOF_NAME",
    "REPORT_SIGNING_PATH",
    "ProvenMessage",
    "ProvenStatement",
    "ReportProof",
    "signed_request_statement",
]
