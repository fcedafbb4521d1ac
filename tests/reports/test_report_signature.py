"""The gateway's PAdES signature on a report: a standard reader sees who signed; the offline check holds only for
the PDF as signed, by the gateway's document-signing certificate from the network CA, with its proof inside."""

from __future__ import annotations

import hashlib
import io

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from fpdf import FPDF
from pyhanko.pdf_utils.reader import PdfFileReader

from deploy.cli import main
from deploy.provision.tls import ensure_ca, issue_server_files
from runtime.reports.errors import ReportErrorCode, ReportProofInvalid, ReportSignatureInvalid, ReportSigningUnavailable
from runtime.reports.pades import load_report_signer, sign_report, verify_report
from runtime.reports.render import render_report
from tests.reports.conftest import GATEWAY, make_authority, sample_case_report


def _ca(authority) -> x509.Certificate:
    return x509.load_pem_x509_certificate((authority.ca_dir / "ca.pem").read_bytes())


@pytest.fixture(scope="module")
def drawn(fonts) -> bytes:
    report, proof = sample_case_report()
    return render_report(report, fonts, proof).pdf


@pytest.fixture(scope="module")
def signed(drawn, authority) -> bytes:
    return sign_report(drawn, authority.signer, reason="test")


def test_a_signed_report_verifies_under_the_network_ca_and_names_the_gateway(drawn, signed, authority):
    verified = verify_report(signed, _ca(authority))
    assert verified.signer == f"O=Rogatory,CN={GATEWAY}"
    assert verified.signer_sha256 == authority.signer.certificate.fingerprint(hashes.SHA256()).hex()
    assert verified.proof == sample_case_report()[1]
    assert verified.drawn_sha256 == hashlib.sha256(drawn).hexdigest()
    assert signed.startswith(drawn)  # an incremental update: the report as drawn is untouched
    # What a PDF reader shows: a PAdES signature field, signed by the gateway's certificate with its chain.
    signature = PdfFileReader(io.BytesIO(signed)).embedded_signatures[0]
    assert signature.sig_object["/SubFilter"] == "/ETSI.CAdES.detached"
    assert signature.signer_cert.subject.native["common_name"] == GATEWAY


def test_one_changed_byte_breaks_the_signature(signed, authority):
    reader = PdfFileReader(io.BytesIO(signed))
    byte_range = reader.embedded_signatures[0].byte_range
    start, length = int(byte_range[0]), int(byte_range[1])
    assert start == 0
    changed = bytearray(signed)
    position = signed.index(b"/Title")  # one letter of the document's title, inside the signed range
    assert position < length
    changed[position + 2] ^= 0x20
    with pytest.raises(ReportSignatureInvalid) as refused:
        verify_report(bytes(changed), _ca(authority))
    assert refused.value.code == ReportErrorCode.REPORT_SIGNATURE_INVALID


def test_a_report_signed_under_another_ca_is_refused(drawn, signed, authority, tmp_path):
    other = make_authority(tmp_path, name="Another CA")
    forged = sign_report(drawn, other.signer, reason="test")
    with pytest.raises(ReportSignatureInvalid, match="not certified by the network CA"):
        verify_report(forged, _ca(authority))
    verify_report(forged, _ca(other))  # the same check holds under its own CA: it is the CA that differs
    with pytest.raises(ReportSignatureInvalid):
        verify_report(signed, _ca(other))


def test_a_tls_certificate_of_the_network_ca_cannot_sign_reports(drawn, authority, tmp_path):
    issued = issue_server_files(authority.ca_dir, "localhost", tmp_path)
    https = load_report_signer(issued.certificate, issued.key, authority.ca_dir / "ca.pem")
    with pytest.raises(ReportSignatureInvalid):
        verify_report(sign_report(drawn, https, reason="test"), _ca(authority))


def test_a_second_revision_after_the_signature_is_refused(signed, authority):
    appended = signed + b"\n% appended after signing\n"
    with pytest.raises(ReportSignatureInvalid):
        verify_report(appended, _ca(authority))


def test_an_unsigned_report_is_refused(drawn, authority):
    with pytest.raises(ReportSignatureInvalid, match="expected one signature, found 0"):
        verify_report(drawn, _ca(authority))


def test_a_signed_pdf_without_its_proof_is_refused(fonts, authority):
    plain = FPDF()
    plain.add_page()
    plain.set_font("helvetica", size=12)
    plain.cell(text="no proof here")
    with pytest.raises(ReportProofInvalid):
        verify_report(sign_report(bytes(plain.output()), authority.signer, reason="test"), _ca(authority))


def test_a_signer_whose_certificate_another_ca_issued_is_refused_at_start_up(authority, tmp_path):
    other_ca = tmp_path / "other"
    ensure_ca(other_ca, "Another CA")
    with pytest.raises(ReportSigningUnavailable, match="not issued by the CA"):
        load_report_signer(
            authority.ca_dir.parent / "gateway" / f"{GATEWAY}-documents.pem",
            authority.ca_dir.parent / "gateway" / f"{GATEWAY}-documents-key.pem",
            other_ca / "ca.pem",
        )


def test_the_document_cert_command_issues_the_gateway_a_certificate_the_verifier_accepts(drawn, tmp_path):
    """`rogatory tls ca` then `rogatory tls document-cert`: the gateway's signer at site set-up, key private."""
    ca_dir, out = tmp_path / "ca", tmp_path / "gateway"
    assert main(["tls", "ca", "--ca-dir", str(ca_dir)]) == 0
    assert (
        main(["tls", "document-cert", "--name", "gateway.example", "--ca-dir", str(ca_dir), "--out-dir", str(out)]) == 0
    )
    key = out / "gateway.example-documents-key.pem"
    assert key.stat().st_mode & 0o077 == 0
    signer = load_report_signer(out / "gateway.example-documents.pem", key, ca_dir / "ca.pem")
    verified = verify_report(
        sign_report(drawn, signer, reason="test"), x509.load_pem_x509_certificate((ca_dir / "ca.pem").read_bytes())
    )
    assert verified.signer == "O=Rogatory,CN=gateway.example"


def test_report_verify_command_says_who_signed_and_which_leaf_and_refuses_a_changed_report(
    drawn, signed, authority, tmp_path, capsys
):
    report, out = tmp_path / "report.pdf", tmp_path / "extracted"
    report.write_bytes(signed)
    ca_file = str(authority.ca_dir / "ca.pem")
    assert main(["report", "verify", str(report), "--ca-file", ca_file, "--extract", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("VERIFIED report of case BD-LY-2025-0007, drawn by BD-MOHA-PSD")
    assert f"CN={GATEWAY}" in printed
    assert f"report/BD-MOHA-PSD/{hashlib.sha256(drawn).hexdigest()}" in printed
    assert printed.count("evidence statements") == 15
    assert (out / "rogatory-report-proof.json").read_bytes() == sample_case_report()[1].canonical_bytes()
    report.write_bytes(signed.replace(b"/Title (", b"/Title (X", 1)[: len(signed)])
    assert main(["report", "verify", str(report), "--ca-file", ca_file]) == 1
    assert capsys.readouterr().out.startswith("NOT VERIFIED REPORT_SIGNATURE_INVALID")
