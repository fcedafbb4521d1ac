"""TLS for the broker: a local CA, the broker's certificate, client certificates, the config.

The dev stack (and a small deployment) runs AMQP over TLS with a CA of its
own. `ensure_broker_tls` makes, once, in one directory:

| file             | what                                                    | mode            |
| ---------------- | ------------------------------------------------------- | --------------- |
| `ca.pem`         | the CA certificate clients verify the broker against     | 0644            |
| `ca-key.pem`     | the CA's private key (issues client certificates)        | 0600, root      |
| `server.pem`     | the broker's certificate: `localhost` and `127.0.0.1`    | 0644            |
| `server-key.pem` | the broker's private key                                  | 0640, broker    |

and leaves them alone on later runs unless one is missing, unreadable,
expiring within `RENEW_BEFORE`, or no longer issued by the CA beside it.
`merge_rabbitmq_conf` writes the TLS listener and `ssl_options` into
`rabbitmq.conf` between two marker lines, keeping every other line as it was.
Clients connect with `amqps://…@localhost:5671/vhost?cafile=…`: aiormq builds
a default SSL context from it, which verifies the chain *and* the host name.

Client certificates (`issue_client_certificate`) are for RabbitMQ's EXTERNAL
mechanism (plugin `rabbitmq_auth_mechanism_ssl`): the certificate's common
name is the broker user, so no password travels at all. An agency's own
certificate is better made without its key ever leaving its site:
`make_client_request` makes the key and a signing request there, and the
hub's `sign_client_request` certifies the request only if it names exactly
the broker user asked for. `ensure_ca` and
`issue_server_files` make a network's CA and the certificate of an HTTPS
listener (the gateway's) from it: `rogatory tls ca / server-cert /
client-cert / client-request / sign-client` (`deploy.cli.tls`) are their commands.

Command line (used by `deploy/ensure-rabbitmq.sh`, idempotent)::

    python -m deploy.provision.tls broker --dir DIR --config FILE [--owner USER]  # prints changed / unchanged
    python -m deploy.provision.tls listener-opts --dir DIR     # Erlang ssl options, for an online listener
    python -m deploy.provision.tls client-cert --dir DIR --user NAME --out DIR  # a client cert for EXTERNAL
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import pwd
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_TLS_DIR: Final = Path("/etc/rabbitmq/tls")
"""Where `ensure-rabbitmq.sh` keeps the broker's CA and certificate: stable across runs."""
TLS_PORT: Final = 5671
TLS_HOST: Final = "localhost"
"""The name clients connect to and verify: the broker's certificate is issued for it."""
CA_VALIDITY: Final = dt.timedelta(days=3650)
LEAF_VALIDITY: Final = dt.timedelta(days=825)
"""The longest lifetime browsers and most TLS stacks accept for a leaf certificate."""
RENEW_BEFORE: Final = dt.timedelta(days=30)
"""A certificate expiring sooner than this is issued anew by the next `ensure_broker_tls`."""
# The marker keeps the module's old path: `merge_rabbitmq_conf` finds its block by this exact line in
# configurations written before the module moved, and a new text would append a second block.
CONF_BEGIN: Final = "# BEGIN rogatory-tls (written by deploy/tls.py; edits inside are overwritten)"
CONF_END: Final = "# END rogatory-tls"
SERVER_NAMES: Final = ("localhost",)
SERVER_ADDRESSES: Final = ("127.0.0.1", "::1")


class TlsError(Exception):
    """The TLS material could not be made, read or written; the message says which file and why."""


@dataclass(frozen=True, slots=True)
class BrokerTlsFiles:
    """The files of a broker's TLS set-up in one directory."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        """The CA certificate, what clients trust."""
        return self.directory / "ca.pem"

    @property
    def ca_key(self) -> Path:
        """The CA's private key."""
        return self.directory / "ca-key.pem"

    @property
    def server_cert(self) -> Path:
        """The broker's certificate."""
        return self.directory / "server.pem"

    @property
    def server_key(self) -> Path:
        """The broker's private key."""
        return self.directory / "server-key.pem"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write(path: Path, data: bytes, mode: int, owner: str | None = None) -> None:
    """Write atomically with `mode` from the start (a key is never readable by others, even briefly)."""
    temporary = path.with_name(path.name + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(descriptor, data)
        os.fchmod(descriptor, mode)
        if owner is not None:
            os.fchown(descriptor, 0, pwd.getpwnam(owner).pw_gid)
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    temporary.replace(path)


def make_ca(common_name: str, *, now: dt.datetime | None = None) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed CA that may issue leaf certificates only (path length 0)."""
    now = now or _now()
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return certificate, key


def issue_certificate(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    common_name: str,
    *,
    server: bool,
    names: Sequence[str] = (),
    addresses: Sequence[str] = (),
    now: dt.datetime | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A leaf certificate: for a server (`names`/`addresses` in its SAN) or a client (CN = broker user)."""
    key = _new_key()
    certificate = _sign_leaf(
        ca_cert, ca_key, common_name, key.public_key(), server=server, names=names, addresses=addresses, now=now
    )
    return certificate, key


def _sign_leaf(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    common_name: str,
    public_key: ec.EllipticCurvePublicKey,
    *,
    server: bool,
    names: Sequence[str] = (),
    addresses: Sequence[str] = (),
    now: dt.datetime | None = None,
) -> x509.Certificate:
    """The CA's certificate of `public_key` under `common_name`: the one leaf profile, whoever made the key."""
    now = now or _now()
    alternative: list[x509.GeneralName] = [x509.DNSName(name) for name in names]
    alternative += [x509.IPAddress(ipaddress.ip_address(address)) for address in addresses]
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + LEAF_VALIDITY, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if alternative:
        builder = builder.add_extension(x509.SubjectAlternativeName(alternative), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


DOCUMENT_SIGNING: Final = x509.ObjectIdentifier("1.3.6.1.5.5.7.3.36")
"""id-kp-documentSigning (RFC 9336), the one extended key usage of the gateway's report-signing certificate."""


def issue_document_signing_certificate(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    common_name: str,
    *,
    organisation: str = "Rogatory",
    now: dt.datetime | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A certificate for signing documents (the gateway's PDF reports).

    Key usage digital signature and non-repudiation, extended key usage
    document signing only: never a TLS server or client.
    """
    now = now or _now()
    key = _new_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + LEAF_VALIDITY, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([DOCUMENT_SIGNING]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return certificate, key


def _load_certificate(path: Path) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey | None:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return None
    return key if isinstance(key, ec.EllipticCurvePrivateKey) else None


def _fresh(certificate: x509.Certificate | None, now: dt.datetime) -> bool:
    return certificate is not None and certificate.not_valid_after_utc - now > RENEW_BEFORE


def _issued_by(certificate: x509.Certificate, ca_cert: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _same_public_key(certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> bool:
    encoding, public_format = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return certificate.public_key().public_bytes(encoding, public_format) == key.public_key().public_bytes(
        encoding, public_format
    )


def ensure_broker_tls(directory: Path, *, owner: str | None = None, now: dt.datetime | None = None) -> bool:
    """Make the CA and the broker's certificate in `directory` where needed; True if a file changed.

    `owner` is the user the broker runs as: it gets to read its private key
    (group-readable, owned by root and the broker's group), nothing else.
    """
    now = now or _now()
    files = BrokerTlsFiles(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o755)
    except OSError as exc:
        raise TlsError(f"cannot make {directory}: {exc}") from exc
    changed = False
    ca_cert, ca_key = _load_certificate(files.ca_cert), _load_key(files.ca_key)
    if ca_cert is None or ca_key is None or not _fresh(ca_cert, now) or not _same_public_key(ca_cert, ca_key):
        ca_cert, ca_key = make_ca("Rogatory development broker CA", now=now)
        _write(files.ca_key, _key_pem(ca_key), 0o600)
        _write(files.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)
        changed = True
    server_cert, server_key = _load_certificate(files.server_cert), _load_key(files.server_key)
    if (
        changed
        or server_cert is None
        or server_key is None
        or not _fresh(server_cert, now)
        or not _issued_by(server_cert, ca_cert)
        or not _same_public_key(server_cert, server_key)
    ):
        server_cert, server_key = issue_certificate(
            ca_cert, ca_key, TLS_HOST, server=True, names=SERVER_NAMES, addresses=SERVER_ADDRESSES, now=now
        )
        _write(files.server_key, _key_pem(server_key), 0o640, owner)
        _write(files.server_cert, server_cert.public_bytes(serialization.Encoding.PEM), 0o644)
        changed = True
    return changed


def issue_client_certificate(directory: Path, user: str, out_dir: Path) -> tuple[Path, Path]:
    """A client certificate for broker user `user` (EXTERNAL auth), signed by the CA in `directory`."""
    ca_cert, ca_key = _load_ca(directory)
    certificate, key = issue_certificate(ca_cert, ca_key, user, server=False)
    out_dir.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = out_dir / CLIENT_CERTIFICATE_NAME, out_dir / CLIENT_KEY_NAME
    _write(key_path, _key_pem(key), 0o600)
    _write(cert_path, certificate.public_bytes(serialization.Encoding.PEM), 0o644)
    return cert_path, key_path


CLIENT_CERTIFICATE_NAME: Final = "client.pem"
CLIENT_KEY_NAME: Final = "client-key.pem"
CLIENT_REQUEST_NAME: Final = "client.csr"


@dataclass(frozen=True, slots=True)
class ClientRequestFiles:
    """What `make_client_request` leaves at the agency's site: the request (it travels) and the key (it stays)."""

    request: Path
    key: Path


def make_client_request(user: str, out_dir: Path) -> ClientRequestFiles:
    """A private key and a certificate signing request for broker user `user`, made where the key will be used.

    Only `client.csr` leaves the site (to the hub, for `sign_client_request`);
    `client-key.pem` (0600) never does. A key already in `out_dir` is kept and
    requested again (a renewal), so a running agent's key is never replaced
    before its new certificate is back.
    """
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TlsError(f"cannot make {out_dir}: {exc}") from exc
    files = ClientRequestFiles(out_dir / CLIENT_REQUEST_NAME, out_dir / CLIENT_KEY_NAME)
    key = _load_key(files.key) if files.key.exists() else None
    if files.key.exists() and key is None:
        raise TlsError(f"{files.key} is there but is not a usable EC private key: move it away first")
    if key is None:
        key = _new_key()
        _write(files.key, _key_pem(key), 0o600)
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, user)]))
        .sign(key, hashes.SHA256())
    )
    _write(files.request, request.public_bytes(serialization.Encoding.PEM), 0o644)
    return files


def sign_client_request(
    ca_dir: Path, request_path: Path, user: str, out_dir: Path, *, now: dt.datetime | None = None
) -> Path:
    """The CA's client certificate for the key of `request_path`, written as `<out_dir>/client.pem`.

    Refused (`TlsError`) unless the request is signed by its own key (an EC
    key) and its subject is exactly `CN=<user>`: the broker user the hub
    asked for, since with EXTERNAL that name is the login. Nothing else of the
    request is copied; the certificate has the profile of every client leaf.
    """
    ca_cert, ca_key = _load_ca(ca_dir)
    try:
        request = x509.load_pem_x509_csr(request_path.read_bytes())
    except OSError as exc:
        raise TlsError(f"cannot read the request {request_path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise TlsError(f"{request_path} is not a PEM certificate signing request") from exc
    if not request.is_signature_valid:
        raise TlsError(f"{request_path}: the request is not signed by the key it carries")
    expected = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, user)])
    if request.subject != expected:
        raise TlsError(
            f"{request_path} names {request.subject.rfc4514_string()!r}, expected exactly {expected.rfc4514_string()!r}"
        )
    public_key = request.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise TlsError(f"{request_path}: expected an EC key (as `rogatory tls client-request` makes)")
    certificate = _sign_leaf(ca_cert, ca_key, user, public_key, server=False, now=now)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TlsError(f"cannot make {out_dir}: {exc}") from exc
    path = out_dir / CLIENT_CERTIFICATE_NAME
    _write(path, certificate.public_bytes(serialization.Encoding.PEM), 0o644)
    return path


def ensure_ca(directory: Path, common_name: str, *, now: dt.datetime | None = None) -> bool:
    """The CA of `directory` (`ca.pem`, `ca-key.pem`), made if there is none; True if it was made.

    A CA that exists is never replaced here, even near its expiry: every
    certificate it issued would stop verifying. One that cannot be read is an
    error for the operator to look at (`TlsError`).
    """
    files = BrokerTlsFiles(directory)
    if files.ca_cert.exists() or files.ca_key.exists():
        _load_ca(directory)
        return False
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TlsError(f"cannot make {directory}: {exc}") from exc
    ca_cert, ca_key = make_ca(common_name, now=now)
    _write(files.ca_key, _key_pem(ca_key), 0o600)
    _write(files.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return True


def _load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    files = BrokerTlsFiles(directory)
    ca_cert, ca_key = _load_certificate(files.ca_cert), _load_key(files.ca_key)
    if ca_cert is None or ca_key is None or not _same_public_key(ca_cert, ca_key):
        raise TlsError(f"no usable CA in {directory}: expected ca.pem with its key ca-key.pem")
    return ca_cert, ca_key


@dataclass(frozen=True, slots=True)
class IssuedFiles:
    """A certificate and its private key, as written."""

    certificate: Path
    key: Path


def issue_server_files(
    ca_dir: Path, name: str, out_dir: Path, *, also: Sequence[str] = (), now: dt.datetime | None = None
) -> IssuedFiles:
    """A server certificate for `name` (and the host names or addresses `also`), from the CA in `ca_dir`.

    Written as `<out_dir>/<name>.pem` (0644) and `<name>-key.pem` (0600); each
    name that is an IP address goes into the certificate as an address.
    """
    ca_cert, ca_key = _load_ca(ca_dir)
    names, addresses = [], []
    for entry in dict.fromkeys((name, *also)):
        try:
            addresses.append(str(ipaddress.ip_address(entry)))
        except ValueError:
            names.append(entry)
    certificate, key = issue_certificate(ca_cert, ca_key, name, server=True, names=names, addresses=addresses, now=now)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TlsError(f"cannot make {out_dir}: {exc}") from exc
    issued = IssuedFiles(out_dir / f"{name}.pem", out_dir / f"{name}-key.pem")
    _write(issued.key, _key_pem(key), 0o600)
    _write(issued.certificate, certificate.public_bytes(serialization.Encoding.PEM), 0o644)
    return issued


def issue_document_signing_files(
    ca_dir: Path, name: str, out_dir: Path, *, now: dt.datetime | None = None
) -> IssuedFiles:
    """The gateway's document-signing certificate for `name` (its gateway id), from the CA in `ca_dir`.

    Written as `<out_dir>/<name>-documents.pem` (0644) and
    `<name>-documents-key.pem` (0600). The gateway signs the case reports
    (PAdES) with it; a PDF reader shows `name` as the signer, and a verifier
    holding the network CA's `ca.pem` checks the chain.
    """
    ca_cert, ca_key = _load_ca(ca_dir)
    certificate, key = issue_document_signing_certificate(ca_cert, ca_key, name, now=now)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TlsError(f"cannot make {out_dir}: {exc}") from exc
    issued = IssuedFiles(out_dir / f"{name}-documents.pem", out_dir / f"{name}-documents-key.pem")
    _write(issued.key, _key_pem(key), 0o600)
    _write(issued.certificate, certificate.public_bytes(serialization.Encoding.PEM), 0o644)
    return issued


def rabbitmq_conf_block(files: BrokerTlsFiles, *, port: int = TLS_PORT) -> list[str]:
    """The `rabbitmq.conf` lines of the TLS listener (clients may, not must, present a certificate)."""
    return [
        CONF_BEGIN,
        f"listeners.ssl.default = 127.0.0.1:{port}",
        f"ssl_options.cacertfile = {files.ca_cert}",
        f"ssl_options.certfile = {files.server_cert}",
        f"ssl_options.keyfile = {files.server_key}",
        "ssl_options.verify = verify_peer",
        "ssl_options.fail_if_no_peer_cert = false",
        "ssl_options.versions.1 = tlsv1.3",
        "ssl_options.versions.2 = tlsv1.2",
        CONF_END,
    ]


def merge_rabbitmq_conf(existing: str, block: Sequence[str]) -> str:
    """`existing` with our block replaced where it stands (or appended); every other line kept as it was.

    The block is known by its first and last lines (markers), so several blocks live side by side,
    each staying in its place.
    """
    begin, end = block[0], block[-1]
    kept: list[str] = []
    inside = placed = False
    for line in existing.splitlines():
        if line.strip() == begin:
            inside = True
            if not placed:
                kept.extend(block)
                placed = True
            continue
        if inside:
            inside = line.strip() != end
            continue
        kept.append(line)
    if not placed:
        while kept and not kept[-1].strip():
            kept.pop()
        kept.extend(block)
    return "\n".join(kept) + "\n"


def update_rabbitmq_conf(config: Path, block: Sequence[str]) -> bool:
    """Write `block` into `config` (created if missing); True if the file changed."""
    try:
        existing = config.read_text(encoding="utf-8") if config.exists() else ""
    except OSError as exc:
        raise TlsError(f"cannot read {config}: {exc}") from exc
    merged = merge_rabbitmq_conf(existing, block)
    if merged == existing:
        return False
    config.parent.mkdir(parents=True, exist_ok=True)
    _write(config, merged.encode("utf-8"), 0o644)
    return True


def erlang_listener_options(files: BrokerTlsFiles) -> str:
    """The same `ssl_options` as an Erlang term, to start a listener on a running node."""
    return (
        f'[{{cacertfile,"{files.ca_cert}"}},{{certfile,"{files.server_cert}"}},{{keyfile,"{files.server_key}"}},'
        "{verify,verify_peer},{fail_if_no_peer_cert,false},{versions,['tlsv1.3','tlsv1.2']}]"
    )


def tls_amqp_url(url: str, ca_file: Path, *, host: str = TLS_HOST, port: int = TLS_PORT) -> str:
    """`url` (one node) as `amqps://` to `host:port`, verifying the broker with `ca_file`."""
    parts = urlsplit(url)
    credentials = ""
    if parts.username is not None:
        credentials = quote(unquote(parts.username), safe="")
        if parts.password is not None:
            credentials += ":" + quote(unquote(parts.password), safe="")
        credentials += "@"
    query = [(name, value) for name, value in parse_qsl(parts.query) if name != "cafile"]
    query.append(("cafile", str(ca_file)))
    return urlunsplit(("amqps", f"{credentials}{host}:{port}", parts.path or "/", urlencode(query), ""))


MACHINE_BROKER_PLAIN_PORT: Final = 5672
_LOOPBACK: Final = frozenset({"127.0.0.1", "localhost", "::1"})


def machine_broker_tls(environ: Mapping[str, str]) -> Path | None:
    """The TLS directory of the machine's broker that services must use, or None when told not to.

    `ROGATORY_UNSAFE_PLAIN_AMQP=1` keeps plain AMQP (a weakening: the caller
    warns); otherwise the CA made by `ensure-rabbitmq.sh` must exist in
    `ROGATORY_BROKER_TLS_DIR` (default `/etc/rabbitmq/tls`), or `TlsError`.
    """
    if environ.get("ROGATORY_UNSAFE_PLAIN_AMQP", "") == "1":
        return None
    directory = Path(environ.get("ROGATORY_BROKER_TLS_DIR") or DEFAULT_TLS_DIR)
    if not BrokerTlsFiles(directory).ca_cert.is_file():
        raise TlsError(
            f"no broker CA at {BrokerTlsFiles(directory).ca_cert}: run deploy/ensure-rabbitmq.sh "
            "(or set ROGATORY_UNSAFE_PLAIN_AMQP=1 to run without TLS)"
        )
    return directory


def service_amqp_url(urls: str, tls_dir: Path | None) -> str:
    """Each node of `urls` that is the machine's broker (loopback, port 5672) as AMQPS with the CA of `tls_dir`.

    Other nodes (private test nodes, proxies) are left as they are: only the
    machine's broker has the listener `ensure-rabbitmq.sh` configures.
    """
    if tls_dir is None:
        return urls
    converted = []
    for url in (part.strip() for part in urls.split(",") if part.strip()):
        parts = urlsplit(url)
        machine_broker = (
            parts.scheme == "amqp"
            and parts.hostname in _LOOPBACK
            and (parts.port or MACHINE_BROKER_PLAIN_PORT) == MACHINE_BROKER_PLAIN_PORT
        )
        converted.append(tls_amqp_url(url, BrokerTlsFiles(tls_dir).ca_cert) if machine_broker else url)
    return ",".join(converted)


def _main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.provision.tls", description=__doc__.split("\n", 1)[0])
    commands = parser.add_subparsers(dest="command", required=True)
    broker = commands.add_parser("broker", help="make the CA and broker certificate; write rabbitmq.conf")
    broker.add_argument("--dir", type=Path, default=DEFAULT_TLS_DIR)
    broker.add_argument("--config", type=Path, required=True)
    broker.add_argument("--owner", default=None, help="the user the broker runs as (reads its key)")
    broker.add_argument("--port", type=int, default=TLS_PORT)
    options = commands.add_parser("listener-opts", help="print the Erlang ssl options of the listener")
    options.add_argument("--dir", type=Path, default=DEFAULT_TLS_DIR)
    client = commands.add_parser("client-cert", help="issue a client certificate for EXTERNAL auth")
    client.add_argument("--dir", type=Path, default=DEFAULT_TLS_DIR)
    client.add_argument("--user", required=True)
    client.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "broker":
            owner = args.owner if args.owner and _user_exists(args.owner) else None
            files_changed = ensure_broker_tls(args.dir, owner=owner)
            config_changed = update_rabbitmq_conf(
                args.config, rabbitmq_conf_block(BrokerTlsFiles(args.dir), port=args.port)
            )
            sys.stdout.write("changed\n" if files_changed or config_changed else "unchanged\n")
        elif args.command == "listener-opts":
            sys.stdout.write(erlang_listener_options(BrokerTlsFiles(args.dir)) + "\n")
        else:
            cert, key = issue_client_certificate(args.dir, args.user, args.out)
            sys.stdout.write(f"{cert}\n{key}\n")
    except TlsError as exc:
        sys.stderr.write(f"deploy.provision.tls: {exc}\n")
        return 1
    return 0


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


__all__ = [
    "DEFAULT_TLS_DIR",
    "DOCUMENT_SIGNING",
    "TLS_HOST",
    "TLS_PORT",
    "BrokerTlsFiles",
    "ClientRequestFiles",
    "IssuedFiles",
    "TlsError",
    "ensure_broker_tls",
    "ensure_ca",
    "erlang_listener_options",
    "issue_certificate",
    "issue_client_certificate",
    "issue_document_signing_certificate",
    "issue_document_signing_files",
    "issue_server_files",
    "machine_broker_tls",
    "make_ca",
    "make_client_request",
    "merge_rabbitmq_conf",
    "rabbitmq_conf_block",
    "service_amqp_url",
    "sign_client_request",
    "tls_amqp_url",
    "update_rabbitmq_conf",
]

if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
