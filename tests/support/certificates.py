"""PEM certificates with chosen names and validity, for tests of what services say about certificate expiry."""

from __future__ import annotations

from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.network import NOW


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def pem_certificate(
    subject: str, issuer: str, not_after: datetime, not_before: datetime = NOW - timedelta(days=1)
) -> bytes:
    """A PEM certificate with these names, valid from `not_before` until `not_after` (self-signed: the
    services read names and dates, they do not verify chains)."""
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


__all__ = ["pem_certificate"]
