"""Trusted time: RFC 3161 time-stamps over the gateway's checkpoints, asked for and checked.

A checkpoint carries the gateway's own clock (its `time` line): the gateway
operator could back-date it. A time-stamp authority (TSA) that the network's
authority lists in the signed directory (`timestamp_authorities`) vouches
instead that the signed checkpoint existed no later than its `genTime`; every
leaf the checkpoint covers existed then too. Whoever holds the authority's
key can check that, offline, years later: the directory names the TSA's root
certificate, the token carries the TSA's certificate and signature.

Two halves:

* `verify_timestamp` (pure computation): a TimeStampResp (DER) over `data`,
  signed by a certificate chaining to one of `roots`, with the time-stamping
  key usage; returns the `TrustedTime` or raises `ProofInvalid`
  (`TIMESTAMP_INVALID`). The gateway runs it on every answer before keeping
  it, the offline verifier on every token in an evidence bundle.
* `TimestampClient` (I/O): posts a request (SHA-256 imprint, a fresh nonce,
  the TSA's certificate asked for) to the TSA's URL and checks the answer
  with the nonce it sent.

The cryptography is rfc3161-client's (and `cryptography`'s X.509); nothing
here is a primitive of our own.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

import aiohttp
import rfc3161_client
from cryptography import x509

from protocol.errors import ErrorCode, ProofInvalid
from runtime.errors import TransientFailure

TIMESTAMP_QUERY_TYPE: Final = "application/timestamp-query"
TIMESTAMP_REPLY_TYPE: Final = "application/timestamp-reply"
MAX_REPLY_BYTES: Final = 64 * 1024
"""A time-stamp answer with its certificate chain is a few KiB; more is not one."""


class TimestampUnavailable(TransientFailure):
    """The time-stamp authority did not answer, or answered with an error status: try again later."""


@dataclass(frozen=True, slots=True)
class TrustedTime:
    """What a verified time-stamp says: `data` existed no later than `time`, per `authority`."""

    time: datetime
    authority: str
    """The TSA certificate's subject (RFC 4514)."""
    serial_number: int
    root: str
    """The subject of the trusted root it chains to (RFC 4514)."""


def load_certificate(der: bytes) -> x509.Certificate:
    """An X.509 certificate from DER (or PEM) bytes; `ProofInvalid` if it does not parse."""
    try:
        if der.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(der)
        return x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise ProofInvalid(f"not an X.509 certificate: {exc}", code=ErrorCode.TIMESTAMP_INVALID) from exc


def verify_timestamp(response: bytes, data: bytes, roots: Sequence[bytes], *, nonce: int | None = None) -> TrustedTime:
    """Check that `response` (a DER TimeStampResp) time-stamps `data` under a TSA chaining to one of `roots`.

    `roots` are DER certificates (the directory's `timestamp_authorities`). The
    TSA's own certificate must travel in the token. Raises `ProofInvalid` with
    `TIMESTAMP_INVALID`, naming what failed.
    """
    if not roots:
        raise ProofInvalid("no time-stamp authority is trusted", code=ErrorCode.TIMESTAMP_INVALID)
    try:
        decoded = rfc3161_client.decode_timestamp_response(response)
    except (ValueError, rfc3161_client.VerificationError) as exc:
        raise ProofInvalid(f"time-stamp does not parse: {exc}", code=ErrorCode.TIMESTAMP_INVALID) from exc
    if decoded.status != rfc3161_client.PKIStatus.GRANTED:
        raise ProofInvalid(f"time-stamp status is {decoded.status!r}", code=ErrorCode.TIMESTAMP_INVALID)
    trusted = [load_certificate(root) for root in roots]
    failures: list[str] = []
    for root in trusted:
        builder = rfc3161_client.VerifierBuilder(roots=[root])
        if nonce is not None:
            builder = builder.nonce(nonce)
        try:
            builder.build().verify_message(decoded, data)
        except (rfc3161_client.VerificationError, ValueError) as exc:
            failures.append(f"{root.subject.rfc4514_string()}: {exc}")
            continue
        info = decoded.tst_info
        return TrustedTime(
            time=_as_utc(info.gen_time),
            authority=_signer_subject(decoded),
            serial_number=int(info.serial_number),
            root=root.subject.rfc4514_string(),
        )
    raise ProofInvalid(f"time-stamp does not verify: {'; '.join(failures)}", code=ErrorCode.TIMESTAMP_INVALID)


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _signer_subject(response: rfc3161_client.TimeStampResponse) -> str:
    """The subject of the certificate that signed the token (the first embedded leaf, else the TSA name)."""
    for der in response.signed_data.certificates:
        certificate = x509.load_der_x509_certificate(der)
        if _is_time_stamping(certificate):
            return certificate.subject.rfc4514_string()
    name = response.tst_info.name
    return str(name) if name is not None else "unnamed time-stamp authority"


def _is_time_stamping(certificate: x509.Certificate) -> bool:
    try:
        usage = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return x509.oid.ExtendedKeyUsageOID.TIME_STAMPING in usage


def timestamp_request(data: bytes) -> tuple[bytes, int]:
    """A DER TimeStampReq over SHA-256(`data`), asking for the TSA's certificate, and its nonce."""
    request = (
        rfc3161_client.TimestampRequestBuilder()
        .data(data)
        .hash_algorithm(rfc3161_client.HashAlgorithm.SHA256)
        .nonce(nonce=True)
        .cert_request(cert_request=True)
        .build()
    )
    assert request.nonce is not None  # asked for above
    return request.as_bytes(), int(request.nonce)


class TimestampClient:
    """Asks one TSA (`url`) for time-stamps and checks each answer against `roots` before returning it."""

    def __init__(self, url: str, *, timeout_s: float, session: aiohttp.ClientSession | None = None) -> None:
        self._url = url
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session = session
        self._owned: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        """The TSA's URL."""
        return self._url

    async def stamp(self, data: bytes, roots: Sequence[bytes]) -> tuple[bytes, TrustedTime]:
        """The TSA's answer over `data` (DER) and what it says; `TimestampUnavailable` or `ProofInvalid`."""
        request, nonce = timestamp_request(data)
        session = self._session or await self._own_session()
        try:
            async with session.post(
                self._url,
                data=request,
                headers={"Content-Type": TIMESTAMP_QUERY_TYPE, "Accept": TIMESTAMP_REPLY_TYPE},
                timeout=self._timeout,
                allow_redirects=False,
            ) as answer:
                if answer.status != 200:
                    raise TimestampUnavailable(f"time-stamp authority answered HTTP {answer.status}")
                body = await answer.content.read(MAX_REPLY_BYTES + 1)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise TimestampUnavailable(f"time-stamp authority unreachable: {exc!r}"[:300]) from exc
        if len(body) > MAX_REPLY_BYTES:
            raise ProofInvalid("time-stamp answer is over its size limit", code=ErrorCode.TIMESTAMP_INVALID)
        try:
            status = rfc3161_client.decode_timestamp_response(body).status
        except ValueError as exc:
            raise ProofInvalid(f"time-stamp answer does not parse: {exc}", code=ErrorCode.TIMESTAMP_INVALID) from exc
        if status != rfc3161_client.PKIStatus.GRANTED:
            raise TimestampUnavailable(f"time-stamp authority refused the request (status {status!r})")
        return body, verify_timestamp(body, data, roots, nonce=nonce)

    async def _own_session(self) -> aiohttp.ClientSession:
        if self._owned is None:
            self._owned = aiohttp.ClientSession()
        return self._owned

    async def close(self) -> None:
        """Close the session this client opened (not one it was given)."""
        if self._owned is not None:
            await self._owned.close()
            self._owned = None


def imprint(data: bytes) -> str:
    """The SHA-256 (hex) a time-stamp over `data` carries: what an auditor compares by hand."""
    return hashlib.sha256(data).hexdigest()


__all__ = [
    "TimestampClient",
    "TimestampUnavailable",
    "TrustedTime",
    "imprint",
    "load_certificate",
    "timestamp_request",
    "verify_timestamp",
]
