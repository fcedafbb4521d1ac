"""The TLS certificates a service watches for operators: what each is, and when it expires.

A pure core, `parse_pem_certificates`, turns PEM bytes into `CertificateFacts`
(subject and issuer common names, validity) or raises `UnreadableCertificate`;
`read_watched` is the thin shell that reads the watched files (the gateway's
`ROGATORY_WATCHED_CERTIFICATES`) and keeps, for each, its facts or why it could
not be read. The gateway's console overview, each agent's `/healthz`, and
both services' `/metrics` show the result, and flag what expires within
`CERTIFICATE_WARNING`; a certificate is data about the deployment, never
content. `amqps_tls_files` finds the TLS files an AMQP URL names, which each
service watches by default.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.x509.oid import NameOID

from protocol.encoding import format_timestamp
from runtime.errors import UnreadableCertificate

MAX_CERTIFICATE_FILE_BYTES: Final = 1024 * 1024
"""A PEM bundle of a few hundred CAs is ~250 KiB; anything larger is not a certificate file."""
SECONDS_PER_DAY: Final = 86400
CERTIFICATE_WARNING: Final = timedelta(days=30)
"""A certificate expiring within this is flagged (console, `/healthz`, the Prometheus rule's `30 * 86400`);
`deploy/provision/tls.py` renews its own at 30 days too."""


@dataclass(frozen=True, slots=True)
class CertificateFacts:
    """What an operator needs to know of one certificate: whose, by whom, valid until when."""

    subject: str
    issuer: str
    not_before: datetime
    not_after: datetime

    @classmethod
    def from_x509(cls, certificate: x509.Certificate) -> CertificateFacts:
        """The facts of a parsed certificate (names as their common name, else the RFC 4514 string)."""
        return cls(
            subject=_common_name(certificate.subject),
            issuer=_common_name(certificate.issuer),
            not_before=certificate.not_valid_before_utc,
            not_after=certificate.not_valid_after_utc,
        )


@dataclass(frozen=True, slots=True)
class WatchedCertificate:
    """One certificate of a watched file, or the file itself when it could not be read (`facts` None)."""

    path: Path
    facts: CertificateFacts | None
    problem: str | None = None

    def view(self, now: datetime) -> dict[str, Any]:
        """As the console's overview shows it: days left rounded down, so "0 days" means expiring today."""
        if self.facts is None:
            return {
                "path": str(self.path),
                "readable": False,
                "problem": self.problem,
                "subject": None,
                "issuer": None,
                "not_after": None,
                "expires_in_s": None,
                "days_left": None,
            }
        left = (self.facts.not_after - now).total_seconds()
        return {
            "path": str(self.path),
            "readable": True,
            "problem": None,
            "subject": self.facts.subject,
            "issuer": self.facts.issuer,
            "not_after": format_timestamp(self.facts.not_after),
            "expires_in_s": left,
            "days_left": int(left // SECONDS_PER_DAY),
        }

    def expiring(self, now: datetime, within: timedelta = CERTIFICATE_WARNING) -> bool:
        """Whether it is readable and ends within `within` of `now` (or has ended)."""
        return self.facts is not None and self.facts.not_after - now < within

    def alarm(self, now: datetime, within: timedelta = CERTIFICATE_WARNING) -> str | None:
        """A health alarm when the file is unreadable, or the certificate ends within `within` (or has ended)."""
        if self.facts is None:
            return f"the watched certificate file {self.path} is unreadable: {self.problem}"
        if not self.expiring(now, within):
            return None
        facts, until = self.facts, format_timestamp(self.facts.not_after)
        if facts.not_after <= now:
            return f"certificate {facts.subject} ({self.path}) expired at {until}: clients refuse it; renew it"
        days = int((facts.not_after - now).total_seconds() // SECONDS_PER_DAY)
        left = f"{days} day{'' if days == 1 else 's'}"
        return f"certificate {facts.subject} ({self.path}) expires in {left}, at {until}: renew it"


@dataclass(frozen=True, slots=True)
class AmqpsTlsFiles:
    """The TLS files one `amqps://` URL names: the CA of the broker's certificate, and a client certificate."""

    cafiles: tuple[Path, ...]
    certfiles: tuple[Path, ...]


def parse_pem_certificates(pem: bytes) -> tuple[CertificateFacts, ...]:
    """Every certificate in a PEM file (a bundle may hold several), or `UnreadableCertificate`."""
    try:
        certificates = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:  # no PEM block, a bad encoding, or DER that is not a certificate
        raise UnreadableCertificate("expected one or more PEM certificates; found none that parse") from exc
    return tuple(CertificateFacts.from_x509(certificate) for certificate in certificates)


def read_watched(paths: Iterable[Path]) -> list[WatchedCertificate]:
    """Read and parse each watched file; a file that cannot be is kept, with the reason, for an alert."""
    watched: list[WatchedCertificate] = []
    for path in paths:
        try:
            watched.extend(WatchedCertificate(path, facts) for facts in parse_pem_certificates(_read(path)))
        except OSError as exc:
            watched.append(
                WatchedCertificate(path, None, f"cannot read the file: {exc.strerror or type(exc).__name__}")
            )
        except UnreadableCertificate as exc:
            watched.append(WatchedCertificate(path, None, str(exc)))
    return watched


def amqps_tls_files(amqp_urls: str) -> tuple[AmqpsTlsFiles, ...]:
    """The `cafile` and `certfile` query parameters of each `amqps://` URL of a comma-separated list."""
    found = []
    for url in (part.strip() for part in amqp_urls.split(",") if part.strip()):
        parts = urlsplit(url)
        if parts.scheme != "amqps":  # clear text names no TLS files
            continue
        query = parse_qs(parts.query)
        found.append(
            AmqpsTlsFiles(
                cafiles=tuple(Path(ca) for ca in query.get("cafile", [])),
                certfiles=tuple(Path(certificate) for certificate in query.get("certfile", [])),
            )
        )
    return tuple(found)


def certificate_health(
    watched: Iterable[WatchedCertificate], now: datetime, within: timedelta = CERTIFICATE_WARNING
) -> dict[str, Any]:
    """What `/healthz` says of a service's own certificates: each one's view, `expiring` flagged, and the alarms."""
    watched = tuple(watched)
    answer: dict[str, Any] = {
        "certificates": [
            certificate.view(now) | {"expiring": certificate.expiring(now, within)} for certificate in watched
        ]
    }
    alarms = [alarm for certificate in watched if (alarm := certificate.alarm(now, within)) is not None]
    if alarms:
        answer["alarms"] = alarms
    return answer


def _read(path: Path) -> bytes:
    with path.open("rb") as file:
        pem = file.read(MAX_CERTIFICATE_FILE_BYTES + 1)
    if len(pem) > MAX_CERTIFICATE_FILE_BYTES:
        raise UnreadableCertificate(f"larger than {MAX_CERTIFICATE_FILE_BYTES} bytes")
    return pem


def _common_name(name: x509.Name) -> str:
    common = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    if common and isinstance(common[0].value, str):
        return common[0].value
    return name.rfc4514_string()


__all__ = [
    "CERTIFICATE_WARNING",
    "AmqpsTlsFiles",
    "CertificateFacts",
    "WatchedCertificate",
    "amqps_tls_files",
    "certificate_health",
    "parse_pem_certificates",
    "read_watched",
]
