"""An agency's broker certificate made at its own site: `rogatory tls client-request` there, `sign-client` at the hub.

Only the signing request goes to the hub and only the certificate comes
back; the private key is made and stays at the agency. The hub certifies a
request only for exactly the broker user it was asked to.
"""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from deploy.cli.commands import main

AGENCY = "BD-MOHA-PSD"
PREFIX = "mla-bd-ly."
USER = f"{PREFIX}{AGENCY}"


def _hub_ca(root: Path) -> Path:
    ca_dir = root / "hub" / "ca"
    assert main(["tls", "ca", "--ca-dir", str(ca_dir)]) == 0
    return ca_dir


def _request_at_agency(root: Path, *who: str) -> Path:
    site = root / "dhaka" / "broker-tls"
    assert main(["tls", "client-request", *who, "--out-dir", str(site)]) == 0
    return site


def _sign_at_hub(root: Path, request: Path, *who: str) -> int:
    hub_copy = root / "hub" / "requests" / "client.csr"
    hub_copy.parent.mkdir(parents=True, exist_ok=True)
    hub_copy.write_bytes(request.read_bytes())
    ca_dir = root / "hub" / "ca"
    return main(["tls", "sign-client", "--request", str(hub_copy), *who, "--ca-dir", str(ca_dir),
                 "--out-dir", str(root / "hub" / "issued")])  # fmt: skip


def _foreign_request(path: Path, common_name: str, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> Path:
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .sign(key, hashes.SHA256())
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(request.public_bytes(serialization.Encoding.PEM))
    return path


def test_an_agencys_broker_key_stays_at_its_site_and_its_certificate_is_for_its_broker_user(tmp_path: Path):
    """The key is made at the agency; the hub's certificate names `<prefix><agency>` and certifies that very key."""
    ca_dir = _hub_ca(tmp_path)
    site = _request_at_agency(tmp_path, "--agency", AGENCY, "--user-prefix", PREFIX)
    key_pem = (site / "client-key.pem").read_bytes()
    assert (site / "client-key.pem").stat().st_mode & 0o077 == 0, "the agency's broker key is readable by others"
    assert b"PRIVATE KEY" not in (site / "client.csr").read_bytes()

    assert _sign_at_hub(tmp_path, site / "client.csr", "--agency", AGENCY, "--user-prefix", PREFIX) == 0
    certificate = x509.load_pem_x509_certificate((tmp_path / "hub" / "issued" / "client.pem").read_bytes())
    certificate.verify_directly_issued_by(x509.load_pem_x509_certificate((ca_dir / "ca.pem").read_bytes()))
    assert certificate.subject.rfc4514_string() == f"CN={USER}"
    usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    key = serialization.load_pem_private_key(key_pem, password=None)
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    assert certificate.public_key().public_bytes(*spki) == key.public_key().public_bytes(*spki)
    hub_files = [path for path in (tmp_path / "hub").rglob("*") if path.is_file()]
    assert not any(key_pem in path.read_bytes() for path in hub_files), "the agency's broker key reached the hub"


def test_a_renewed_request_keeps_the_key_in_use(tmp_path: Path):
    """A second `client-request` asks again for the key already there: a running agent's key is never replaced."""
    site = _request_at_agency(tmp_path, "--user", USER)
    key_pem = (site / "client-key.pem").read_bytes()
    _request_at_agency(tmp_path, "--user", USER)
    assert (site / "client-key.pem").read_bytes() == key_pem
    request = x509.load_pem_x509_csr((site / "client.csr").read_bytes())
    own = serialization.load_pem_private_key(key_pem, password=None).public_key()
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    assert request.public_key().public_bytes(*spki) == own.public_bytes(*spki)


def test_a_request_for_another_broker_user_than_asked_is_refused(tmp_path: Path, capsys):
    """An agency asking for the gateway's user (or another agency's) gets no certificate: the CN is the login."""
    _hub_ca(tmp_path)
    site = _request_at_agency(tmp_path, "--user", f"{PREFIX}gateway")
    assert _sign_at_hub(tmp_path, site / "client.csr", "--agency", AGENCY, "--user-prefix", PREFIX) == 1
    assert f"expected exactly 'CN={USER}'" in capsys.readouterr().err
    assert not (tmp_path / "hub" / "issued" / "client.pem").exists()


def test_a_request_naming_the_user_among_other_attributes_is_refused(tmp_path: Path):
    """The subject must be exactly `CN=<user>`: an extra attribute could change whose login it is elsewhere."""
    _hub_ca(tmp_path)
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(
            x509.Name(
                [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "x"), x509.NameAttribute(NameOID.COMMON_NAME, USER)]
            )
        )
        .sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
    )
    path = tmp_path / "dhaka" / "client.csr"
    path.parent.mkdir(parents=True)
    path.write_bytes(request.public_bytes(serialization.Encoding.PEM))
    assert _sign_at_hub(tmp_path, path, "--user", USER) == 1


def test_a_request_whose_signature_does_not_verify_is_refused(tmp_path: Path):
    """A request altered after signing proves no possession of its key: refused."""
    _hub_ca(tmp_path)
    site = _request_at_agency(tmp_path, "--user", USER)
    genuine = x509.load_pem_x509_csr((site / "client.csr").read_bytes())
    der = bytearray(genuine.public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01  # the last byte of the ECDSA signature's `s`: still DER, no longer a signature of the body
    tampered = tmp_path / "tampered.csr"
    tampered.write_bytes(x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM))
    assert _sign_at_hub(tmp_path, tampered, "--user", USER) == 1
    assert not (tmp_path / "hub" / "issued" / "client.pem").exists()


def test_a_request_with_a_key_of_another_kind_is_refused(tmp_path: Path):
    """Only the EC keys `client-request` makes are certified (fail closed on anything else)."""
    _hub_ca(tmp_path)
    path = _foreign_request(tmp_path / "rsa.csr", USER, rsa.generate_private_key(public_exponent=65537, key_size=2048))
    assert _sign_at_hub(tmp_path, path, "--user", USER) == 1
