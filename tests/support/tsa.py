"""A real RFC 3161 time-stamp authority on loopback, for tests: its own root CA and TSA certificate.

The tokens are made by pyHanko's `DummyTimeStamper` (a complete TSA that
signs every request with the certificate it is given), served over HTTP by
aiohttp the way a TSA is (`application/timestamp-query` in,
`application/timestamp-reply` out). `down` makes it answer 503, to test that
checkpoints wait for it and are stamped once it is back.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from aiohttp import web
from asn1crypto import keys as asn1_keys
from asn1crypto import tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pyhanko.sign.timestamps.dummy_client import DummyTimeStamper


@dataclass(frozen=True, slots=True)
class TimestampAuthorityKeys:
    """A root CA and the TSA certificate it issued (critical time-stamping key usage), with the TSA's key."""

    root_der: bytes
    tsa_der: bytes
    tsa_key_der: bytes

    @classmethod
    def generate(cls, name: str = "Rogatory Test TSA") -> TimestampAuthorityKeys:
        """Fresh keys and certificates (RSA 2048, valid from yesterday for ten years)."""
        now = datetime.now(UTC) - timedelta(days=1)
        root_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} Root")])
        root = (
            x509.CertificateBuilder()
            .subject_name(root_name)
            .issuer_name(root_name)
            .public_key(root_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + timedelta(days=3650))
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
            .sign(root_key, hashes.SHA256())
        )
        tsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        tsa = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(root_name)
            .public_key(tsa_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + timedelta(days=3650))
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

    def stamper(self) -> DummyTimeStamper:
        """pyHanko's TSA signing with these keys, embedding the TSA certificate in each token."""
        return DummyTimeStamper(
            tsa_cert=asn1_x509.Certificate.load(self.tsa_der),
            tsa_key=asn1_keys.PrivateKeyInfo.load(self.tsa_key_der),
        )


@dataclass(slots=True)
class LocalTimestampAuthority:
    """A running TSA: `url` to post requests to, `root_der` to trust, `down` to make it fail."""

    keys: TimestampAuthorityKeys
    url: str = ""
    down: bool = False
    issued: int = 0
    refused: int = 0
    _stamper: DummyTimeStamper | None = field(default=None, repr=False)

    @property
    def root_der(self) -> bytes:
        """The root certificate (DER) a directory lists for this TSA."""
        return self.keys.root_der

    async def _handle(self, request: web.Request) -> web.Response:
        if self.down:
            self.refused += 1
            return web.Response(status=503, text="time-stamp authority down for the test")
        body = await request.read()
        stamper = self._stamper or self.keys.stamper()
        self._stamper = stamper
        answer = await stamper.async_request_tsa_response(tsp.TimeStampReq.load(body))
        self.issued += 1
        return web.Response(body=answer.dump(), content_type="application/timestamp-reply")


@asynccontextmanager
async def running_tsa(keys: TimestampAuthorityKeys | None = None) -> AsyncIterator[LocalTimestampAuthority]:
    """Serve a TSA on 127.0.0.1 (a free port) for the duration of the block."""
    authority = LocalTimestampAuthority(keys or TimestampAuthorityKeys.generate())
    app = web.Application()
    app.router.add_post("/", authority._handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    port = int(listener.getsockname()[1])
    await web.SockSite(runner, listener).start()
    authority.url = f"http://127.0.0.1:{port}/"
    try:
        yield authority
    finally:
        await runner.cleanup()


__all__ = ["LocalTimestampAuthority", "TimestampAuthorityKeys", "running_tsa"]
