"""A signed report inside an evidence bundle: signed by the gateway, and describing exactly this bundle's evidence.

`verify_report_in_bundle` is what the bundle verifier's report check runs on
`report.pdf`: the PAdES check of `runtime.reports.pades.verify_report` (one
signature over the whole file by the gateway's document-signing certificate
under the network CA, the proof embedded), then that the proof is about the
bundle it travels in: the same case (or message), every message it lists is
one of the bundle's, and every evidence statement it names is one of that
message's statements in the bundle, with the same signed payload. A report
lifted from another bundle, or listing a step the bundle does not prove, is
refused (`ReportProofInvalid`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

from cryptography import x509

from protocol.signing import SignedStatement
from runtime.reports.errors import ReportProofInvalid
from runtime.reports.pades import VerifiedReport, verify_report, verify_report_async


def _check_against(verified: VerifiedReport, subject: str, statements: Mapping[str, Sequence[SignedStatement]]) -> None:
    proof = verified.proof
    listed = {str(message.message_id) for message in proof.messages}
    if subject != str(proof.case_id) and subject not in listed:
        raise ReportProofInvalid(f"the report is of case {proof.case_id}, the bundle of {subject}")
    for message in proof.messages:
        held = statements.get(str(message.message_id))
        if held is None:
            raise ReportProofInvalid(f"the report lists message {message.message_id}, which the bundle does not hold")
        digests = {hashlib.sha256(statement.payload).hexdigest() for statement in held}
        for proven in message.statements:
            if proven.payload_sha256 not in digests:
                raise ReportProofInvalid(
                    f"the report names evidence {proven.identity[:120]} of message {message.message_id} "
                    "that is not among the bundle's statements for it"
                )


def verify_report_in_bundle(
    pdf: bytes, network_ca: x509.Certificate, *, subject: str, statements: Mapping[str, Sequence[SignedStatement]]
) -> VerifiedReport:
    """The report verified (`verify_report`) and found to describe the bundle it travels in.

    `subject` is the bundle's case or message id, `statements` each message
    id's signed evidence statements as the bundle holds them.
    """
    verified = verify_report(pdf, network_ca)
    _check_against(verified, subject, statements)
    return verified


async def verify_report_in_bundle_async(
    pdf: bytes, network_ca: x509.Certificate, *, subject: str, statements: Mapping[str, Sequence[SignedStatement]]
) -> VerifiedReport:
    """`verify_report_in_bundle` for callers inside an event loop (an agent, a service)."""
    verified = await verify_report_async(pdf, network_ca)
    _check_against(verified, subject, statements)
    return verified


__all__ = ["verify_report_in_bundle", "verify_report_in_bundle_async"]
