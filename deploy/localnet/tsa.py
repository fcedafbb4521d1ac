"""The dev network's RFC 3161 time-stamp authority (`python -m deploy.localnet.tsa`).

A real network uses a time-stamp authority it trusts (a national or
qualified TSA) and lists its root in the directory (`rogatory authority
add-tsa`). A dev network has its own: `rogatory dev up` makes a root
certificate and a time-stamping certificate (critical `timeStamping` key
usage) in `<state>/tsa/`, lists the root in the directory, and runs this
server on loopback for the gateway (`ROGATORY_TSA_URL`). The tokens are made
by pyHanko's `DummyTimeStamper`, a complete TSA that signs every request it
gets; the gateway and every verifier check them as they would any TSA's.

Settings: `ROGATORY_TSA_DIR` (the keys), `ROGATORY_HTTP_PORT`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from aiohttp import web
from asn1crypto import keys as asn1_keys
from asn1crypto import tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pyhanko.sign.timestamps.dummy_client import DummyTimeStamper

from deploy.provision.tls import make_ca
from runtime.private_files import write_private

ROOT_CERTIFICATE: Final = "root.pem"
TSA_CERTIFICATE: Final = "tsa.pem"
TSA_KEY: Final = "tsa-key.pem"
VALIDITY: Final = timedelta(days=3650)
MAX_REQUEST_BYTES: Final = 16 * 1024
"""A TimeStampReq is about a hundred bytes."""


@dataclass(frozen=True, slots=True)
class TimestampAuthorityKeys:
    """A root CA and the time-stamping certificate it issued, with the TSA's private key (all DER)."""

    root_der: bytes
    tsa_der: bytes
    tsa_key_der: bytes

    @classmethod
    def generate(cls, name: str = "Rogatory Dev TSA") -> TimestampAuthorityKeys:
        """Fresh keys and certificates: a root CA and the time-stamping certificate it issues.

        The root is `deploy.provision.tls.make_ca`'s; the time-stamping key is RSA 2048 (pyHanko's
        time-stamper signs with RSA), its certificate valid from yesterday for ten years.
        """
        start = datetime.now(UTC) - timedelta(days=1)
        root, root_key = make_ca(f"{name} Root")
        root_name = root.subject
        tsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        tsa = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(root_name)
            .public_key(tsa_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
            .sign(root_key, hashes.SHA256())
        )
        return cls(
            root_der=root.public_bytes(serialization.Encoding.DER),
            tsa_der=tsa.public_bytes(serialization.Encoding.DER),
            tsa_key_der=tsa_key.private_bytes(
                serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
        )

    def save(self, directory: Path) -> Path:
        """Write the certificates (PEM) and the key (PEM, 0600) into `directory`; return the root's path."""
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        pem = serialization.Encoding.PEM
        (directory / ROOT_CERTIFICATE).write_bytes(x509.load_der_x509_certificate(self.root_der).public_bytes(pem))
        (directory / TSA_CERTIFICATE).write_bytes(x509.load_der_x509_certificate(self.tsa_der).public_bytes(pem))
        key = serialization.load_der_private_key(self.tsa_key_der, password=None)
        write_private(
            directory / TSA_KEY,
            key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        )
        return directory / ROOT_CERTIFICATE

    @classmethod
    def load(cls, directory: Path) -> TimestampAuthorityKeys:
        """Read what `save` wrote."""
        der = serialization.Encoding.DER
        root = x509.load_pem_x509_certificate((directory / ROOT_CERTIFICATE).read_bytes())
        tsa = x509.load_pem_x509_certificate((directory / TSA_CERTIFICATE).read_bytes())
        key = serialization.load_pem_private_key((directory / TSA_KEY).read_bytes(), password=None)
        return cls(
            root_der=root.public_bytes(der),
            tsa_der=tsa.public_bytes(der),
            tsa_key_der=key.private_bytes(der, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        )

    def stamper(self) -> DummyTimeStamper:
        """PyHanko's TSA signing with these keys, embedding the TSA certificate in each token."""
        return DummyTimeStamper(
            tsa_cert=asn1_x509.Certificate.load(self.tsa_der),
            tsa_key=asn1_keys.PrivateKeyInfo.load(self.tsa_key_der),
        )


def timestamp_app(keys: TimestampAuthorityKeys) -> web.Application:
    """`POST /` (RFC 3161 over HTTP: a DER TimeStampReq in, a TimeStampResp out) and `GET /healthz`."""
    stamper = keys.stamper()

    async def stamp(request: web.Request) -> web.Response:
        body = await request.content.read(MAX_REQUEST_BYTES + 1)
        if len(body) > MAX_REQUEST_BYTES:
            return web.Response(status=413, text="a time-stamp request is a few hundred bytes")
        try:
            query = tsp.TimeStampReq.load(body)
            answer = await stamper.async_request_tsa_response(query)
        except (ValueError, TypeError, KeyError) as exc:
            return web.Response(status=400, text=f"not a time-stamp request: {exc}"[:200])
        return web.Response(body=answer.dump(), content_type="application/timestamp-reply")

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application(client_max_size=MAX_REQUEST_BYTES)
    app.router.add_post("/", stamp)
    app.router.add_get("/healthz", healthz)
    return app


async def _serve(keys: TimestampAuthorityKeys, port: int) -> None:
    runner = web.AppRunner(timestamp_app(keys), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    sys.stdout.write(f"dev time-stamp authority on http://127.0.0.1:{port}/\n")
    sys.stdout.flush()
    await stopping.wait()
    await runner.cleanup()


def main() -> None:
    """Entry point of `python -m deploy.localnet.tsa`."""
    try:
        keys = TimestampAuthorityKeys.load(Path(os.environ["ROGATORY_TSA_DIR"]))
        port = int(os.environ["ROGATORY_HTTP_PORT"])
    except (KeyError, OSError, ValueError) as exc:
        sys.stderr.write(f"deploy.localnet.tsa: cannot start: {exc!r}\n")
        sys.exit(2)
    asyncio.run(_serve(keys, port))


if __name__ == "__main__":
    main()


__all__ = ["TimestampAuthorityKeys", "main", "timestamp_app"]
