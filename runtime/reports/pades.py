"""The report's PAdES signature (pyHanko): the gateway signs, anyone with the network CA verifies, offline.

`sign_report` adds one PAdES baseline B-B signature (CMS, `ETSI.CAdES.detached`,
SHA-256) to a PDF, under the gateway's document-signing certificate, with
the network CA in the signature so a standard reader shows who signed and
the chain to a CA it may be told to trust. RFC 3161 time-stamps (B-T) are
for later: the signing time in the signature is the gateway's own claim.

`verify_report` is what an offline verifier runs on a report: exactly one
signature, covering the whole file (nothing appended after it), intact,
valid, its signer's certificate issued by the network CA (the only trust
root given) for document signing, and the embedded proof present and
parseable. Anything else is `ReportSignatureInvalid` or `ReportProofInvalid`
with what was found.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final

from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier
from pyhanko.pdf_utils.generic import ArrayObject, DictionaryObject, StreamObject
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.misc import PdfError
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign import fields, signers
from pyhanko.sign.general import SigningError
from pyhanko.sign.validation import async_validate_pdf_signature
from pyhanko.sign.validation.settings import KeyUsageConstraints
from pyhanko.sign.validation.status import SignatureCoverageLevel
from pyhanko_certvalidator import ValidationContext
from pyhanko_certvalidator.registry import SimpleCertificateStore

from protocol.errors import ProtocolError
from protocol.model import parse_model
from protocol.reports import REPORT_PROOF_NAME, ReportProof
from runtime.reports.errors import ReportProofInvalid, ReportSignatureInvalid, ReportSigningUnavailable

DOCUMENT_SIGNING: Final = ObjectIdentifier("1.3.6.1.5.5.7.3.36")
"""id-kp-documentSigning (RFC 9336): the extended key usage of the gateway's report-signing certificate."""
SIGNATURE_FIELD: Final = "RogatoryGateway"
MAX_PROOF_BYTES: Final = 8 << 20


@dataclass(frozen=True, slots=True)
class ReportSigner:
    """The gateway's document-signing certificate and key, and the network CA that issued it."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    ca: x509.Certificate

    @property
    def name(self) -> str:
        """The signer's common name, as a PDF reader shows it."""
        return self.certificate.subject.rfc4514_string()


@dataclass(frozen=True, slots=True)
class VerifiedReport:
    """What `verify_report` established."""

    signer: str
    """The signing certificate's subject (RFC 4514)."""
    signer_sha256: str
    """SHA-256 of the signing certificate (DER), hex."""
    signed_at: datetime | None
    """The signing time the signer claimed (no time-stamp yet)."""
    proof: ReportProof
    embedded: tuple[str, ...]
    """The names of every embedded file."""
    drawn_sha256: str
    """SHA-256 of the PDF as drawn, before the signature: the audit leaf `report/<agency>/<this>` records it."""


def _pem_certificate(path: Path, what: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ReportSigningUnavailable(f"cannot read the {what} {path}: {exc}") from exc


def load_report_signer(certificate: Path, key: Path, ca: Path) -> ReportSigner:
    """The gateway's signer from its PEM files; `ReportSigningUnavailable` if one cannot be read or they disagree."""
    cert = _pem_certificate(certificate, "document-signing certificate")
    authority = _pem_certificate(ca, "network CA certificate")
    try:
        private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ReportSigningUnavailable(f"cannot read the document-signing key {key}: {exc}") from exc
    if not isinstance(private, ec.EllipticCurvePrivateKey):
        raise ReportSigningUnavailable(f"{key}: expected an EC key")
    der = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if cert.public_key().public_bytes(*der) != private.public_key().public_bytes(*der):
        raise ReportSigningUnavailable(f"{key} is not the key of {certificate}")
    try:
        cert.verify_directly_issued_by(authority)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise ReportSigningUnavailable(f"{certificate} is not issued by the CA {ca}") from exc
    return ReportSigner(cert, private, authority)


def _asn1(certificate: x509.Certificate) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(certificate.public_bytes(serialization.Encoding.DER))


def sign_report(pdf: bytes, signer: ReportSigner, *, reason: str, location: str = "") -> bytes:
    """`sign_report_async` for callers without an event loop (a command line)."""
    return asyncio.run(sign_report_async(pdf, signer, reason=reason, location=location))


async def sign_report_async(pdf: bytes, signer: ReportSigner, *, reason: str, location: str = "") -> bytes:
    """`pdf` with one PAdES B-B signature by `signer` appended (an incremental update: the drawn bytes stay)."""
    key_der = signer.key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    cms_signer = signers.SimpleSigner(
        signing_cert=_asn1(signer.certificate),
        signing_key=asn1_keys.PrivateKeyInfo.load(key_der),
        cert_registry=SimpleCertificateStore.from_certs([_asn1(signer.ca)]),  # type: ignore[no-untyped-call]
    )
    metadata = signers.PdfSignatureMetadata(
        field_name=SIGNATURE_FIELD,
        md_algorithm="sha256",
        subfilter=fields.SigSeedSubFilter.PADES,
        reason=reason[:200],
        location=location[:200] or None,
        name=signer.certificate.subject.rfc4514_string(),
    )
    try:
        writer = IncrementalPdfFileWriter(io.BytesIO(pdf), strict=False)
        out = await signers.async_sign_pdf(writer, metadata, signer=cms_signer)
    except (PdfError, SigningError, ValueError) as exc:
        raise ReportSignatureInvalid(f"the PDF could not be signed: {exc}") from exc
    return bytes(out.getvalue())


def _embedded_files(reader: PdfFileReader) -> dict[str, bytes]:
    """Every file in the document's EmbeddedFiles name tree (a flat `Names` array, as fpdf2 writes it)."""
    found: dict[str, bytes] = {}
    names = reader.root["/Names"] if "/Names" in reader.root else None  # noqa: SIM401 - [] resolves references
    tree = names["/EmbeddedFiles"] if isinstance(names, DictionaryObject) and "/EmbeddedFiles" in names else None
    flat = tree["/Names"] if isinstance(tree, DictionaryObject) and "/Names" in tree else None
    if not isinstance(flat, ArrayObject):
        return found
    for index in range(0, len(flat) - 1, 2):
        spec = flat[index + 1]
        files = spec["/EF"] if isinstance(spec, DictionaryObject) and "/EF" in spec else None
        stream = files["/F"] if isinstance(files, DictionaryObject) and "/F" in files else None
        if isinstance(stream, StreamObject):
            found[str(flat[index])] = stream.data
    return found


def embedded_files(pdf: bytes) -> dict[str, bytes]:
    """The files embedded in `pdf`, by name (`ReportProofInvalid` if it is not a PDF)."""
    try:
        return _embedded_files(PdfFileReader(io.BytesIO(pdf), strict=False))
    except (PdfError, ValueError, KeyError, TypeError) as exc:
        raise ReportProofInvalid(f"not a readable PDF: {exc}") from exc


def report_proof(pdf: bytes) -> ReportProof:
    """The `ReportProof` embedded in `pdf`; `ReportProofInvalid` if absent, too large or not one."""
    raw = embedded_files(pdf).get(REPORT_PROOF_NAME)
    if raw is None:
        raise ReportProofInvalid(f"the PDF carries no embedded {REPORT_PROOF_NAME}")
    if len(raw) > MAX_PROOF_BYTES:
        raise ReportProofInvalid(f"the embedded proof is {len(raw)} bytes, over {MAX_PROOF_BYTES}")
    try:
        return parse_model(ReportProof, raw, what="report proof")
    except ProtocolError as exc:
        raise ReportProofInvalid(f"the embedded proof is not a report proof: {exc}") from exc


def signature_count(pdf: bytes) -> int:
    """How many signatures `pdf` carries (`ReportProofInvalid` if it is not a readable PDF)."""
    try:
        return len(PdfFileReader(io.BytesIO(pdf), strict=False).embedded_signatures)
    except (PdfError, ValueError, KeyError, TypeError) as exc:
        raise ReportProofInvalid(f"not a readable PDF: {exc}") from exc


def drawn_revision(pdf: bytes) -> bytes:
    """The PDF as it was before any incremental update (the report as the agency drew it, before signing)."""
    try:
        reader = PdfFileReader(io.BytesIO(pdf), strict=False)
        end = reader.xrefs.get_xref_container_info(0).end_location
    except (PdfError, ValueError, KeyError, TypeError) as exc:
        raise ReportProofInvalid(f"not a readable PDF: {exc}") from exc
    if end is None:
        raise ReportProofInvalid("the PDF's first revision has no end")
    marker = pdf.find(b"%%EOF", end)
    if marker < 0:
        raise ReportProofInvalid("the PDF's first revision has no end marker")
    stop = marker + len(b"%%EOF")
    while stop < len(pdf) and pdf[stop : stop + 1] in {b"\r", b"\n"}:
        stop += 1
    return pdf[:stop]


def verify_report(pdf: bytes, network_ca: x509.Certificate) -> VerifiedReport:
    """`verify_report_async` for callers without an event loop (the offline verifier's command line)."""
    return asyncio.run(verify_report_async(pdf, network_ca))


async def verify_report_async(pdf: bytes, network_ca: x509.Certificate) -> VerifiedReport:
    """Check a signed report offline against the network CA (see the module docstring); what it found."""
    try:
        reader = PdfFileReader(io.BytesIO(pdf), strict=False)
        signatures = reader.embedded_signatures
    except (PdfError, ValueError, KeyError, TypeError) as exc:
        raise ReportSignatureInvalid(f"not a readable PDF: {exc}") from exc
    if len(signatures) != 1:
        raise ReportSignatureInvalid(f"expected one signature, found {len(signatures)}")
    signature = signatures[0]
    context = ValidationContext(trust_roots=[_asn1(network_ca)], allow_fetching=False)
    try:
        status = await async_validate_pdf_signature(
            signature,
            signer_validation_context=context,
            key_usage_settings=KeyUsageConstraints(
                key_usage={"digital_signature"}, extd_key_usage={DOCUMENT_SIGNING.dotted_string}
            ),
        )
    except (PdfError, SigningError, ValueError) as exc:
        raise ReportSignatureInvalid(f"the signature could not be validated: {exc}") from exc
    if not status.intact or not status.valid:
        raise ReportSignatureInvalid("the signature does not cover the PDF as it is: it was changed after signing")
    if not status.trusted:
        raise ReportSignatureInvalid(
            f"the signer {status.signing_cert.subject.human_friendly} is not certified by the network CA "
            f"{network_ca.subject.rfc4514_string()} for document signing"
        )
    if status.coverage != SignatureCoverageLevel.ENTIRE_FILE:
        raise ReportSignatureInvalid("the signature does not cover the whole file: something was added after it")
    signer_cert = x509.load_der_x509_certificate(status.signing_cert.dump())
    usage = signer_cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    if DOCUMENT_SIGNING not in usage or ExtendedKeyUsageOID.SERVER_AUTH in usage:
        raise ReportSignatureInvalid("the signing certificate is not a document-signing certificate")
    files = _embedded_files(reader)
    proof = report_proof(pdf)
    return VerifiedReport(
        signer=signer_cert.subject.rfc4514_string(),
        signer_sha256=signer_cert.fingerprint(hashes.SHA256()).hex(),
        signed_at=status.signer_reported_dt,
        proof=proof,
        embedded=tuple(files),
        drawn_sha256=hashlib.sha256(drawn_revision(pdf)).hexdigest(),
    )


__all__ = [
    "DOCUMENT_SIGNING",
    "ReportSigner",
    "VerifiedReport",
    "drawn_revision",
    "embedded_files",
    "load_report_signer",
    "report_proof",
    "sign_report",
    "sign_report_async",
    "signature_count",
    "verify_report",
    "verify_report_async",
]
