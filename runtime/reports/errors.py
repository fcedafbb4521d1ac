"""Errors of the case report: rendering, signing and checking the signed PDF.

Tree::

    ServiceError (runtime.errors)
     +-- ReportError                  root; `code` is the stable code an API answers with
          +-- ReportFontsMissing      a script's font is not installed (REPORT_FONTS_MISSING)
          +-- ReportSigningUnavailable  no document-signing certificate (REPORT_SIGNING_UNAVAILABLE)
          +-- ReportProofInvalid      the PDF carries no proof, or one that does not parse (REPORT_PROOF_INVALID)
          +-- ReportSignatureInvalid  the signature does not verify under the network CA (REPORT_SIGNATURE_INVALID)
"""

from __future__ import annotations

from enum import StrEnum

from runtime.errors import ServiceError


class ReportErrorCode(StrEnum):
    """Stable codes of the report's refusals (what an API's problem+json carries)."""

    REPORT_FONTS_MISSING = "REPORT_FONTS_MISSING"
    REPORT_SIGNING_UNAVAILABLE = "REPORT_SIGNING_UNAVAILABLE"
    REPORT_PROOF_INVALID = "REPORT_PROOF_INVALID"
    REPORT_SIGNATURE_INVALID = "REPORT_SIGNATURE_INVALID"
    REPORT_NOT_PARTY = "REPORT_NOT_PARTY"
    REPORT_ALREADY_SIGNED = "REPORT_ALREADY_SIGNED"
    REPORT_EVIDENCE_UNKNOWN = "REPORT_EVIDENCE_UNKNOWN"


class ReportError(ServiceError):
    """A report could not be rendered, signed or verified; `code` says which way."""

    code: ReportErrorCode = ReportErrorCode.REPORT_PROOF_INVALID

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class ReportFontsMissing(ReportError):
    """A font the report needs (Latin, Arabic or Bengali) is not installed (`apt-get install fonts-noto-core`)."""

    code = ReportErrorCode.REPORT_FONTS_MISSING


class ReportSigningUnavailable(ReportError):
    """The gateway has no document-signing certificate and key configured, or they cannot be read."""

    code = ReportErrorCode.REPORT_SIGNING_UNAVAILABLE


class ReportProofInvalid(ReportError):
    """The PDF carries no machine-readable proof, or one that does not parse."""

    code = ReportErrorCode.REPORT_PROOF_INVALID


class ReportSignatureInvalid(ReportError):
    """The PDF's PAdES signature is missing, broken, or not the gateway's under the network CA."""

    code = ReportErrorCode.REPORT_SIGNATURE_INVALID


__all__ = [
    "ReportError",
    "ReportErrorCode",
    "ReportFontsMissing",
    "ReportProofInvalid",
    "ReportSignatureInvalid",
    "ReportSigningUnavailable",
]
