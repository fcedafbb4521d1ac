"""TLS of the services' HTTP: the listener's server context, clients' verifying context, the clear-text rule.

A service serves HTTPS when both `ROGATORY_HTTP_TLS_CERT_FILE` and
`ROGATORY_HTTP_TLS_KEY_FILE` are given (TLS 1.2 at least). Without them it
serves clear text only on a loopback address (development, or a TLS proxy on
the same host): on any other address it refuses to start unless
`ROGATORY_UNSAFE_PLAIN_HTTP=1`, and then says so in a warning. Clients of a
service (an agent calling the gateway) verify its certificate and host name
against a CA file, or the system's store when none is given.
"""

from __future__ import annotations

import ipaddress
import ssl
from pathlib import Path
from typing import Final

import structlog

from runtime.errors import ConfigurationError
from runtime.settings import ServiceSettings

log = structlog.get_logger("rogatory.tls")

MINIMUM_TLS_VERSION: Final = ssl.TLSVersion.TLSv1_2
"""TLS 1.0 and 1.1 are deprecated (RFC 8996): neither side accepts them."""


def is_loopback(host: str) -> bool:
    """Whether `host` (an address or `localhost`) stays on this machine; `""` and `0.0.0.0` listen everywhere."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything


def server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """A server-side context presenting the certificate (chain) of `cert_file` with its key, TLS 1.2 or later."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = MINIMUM_TLS_VERSION
    try:
        context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(f"cannot load the HTTP certificate {cert_file} with key {key_file}: {exc}") from exc
    return context


def client_context(ca_file: Path | None) -> ssl.SSLContext:
    """A client context verifying the server's chain and host name against `ca_file` (None: the system's store)."""
    try:
        context = ssl.create_default_context(cafile=None if ca_file is None else str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(f"cannot load the CA file {ca_file}: {exc}") from exc
    context.minimum_version = MINIMUM_TLS_VERSION
    return context


def listener_context(settings: ServiceSettings) -> ssl.SSLContext | None:
    """The HTTP listener's TLS context, or None for clear text where that is allowed (`ConfigurationError` if not)."""
    if settings.http_tls_cert_file is not None and settings.http_tls_key_file is not None:
        return server_context(settings.http_tls_cert_file, settings.http_tls_key_file)
    if is_loopback(settings.http_host):
        return None
    if not settings.unsafe_plain_http:
        raise ConfigurationError(
            f"refusing to serve clear-text HTTP on {settings.http_host!r}, which is not a loopback address: "
            "set ROGATORY_HTTP_TLS_CERT_FILE and ROGATORY_HTTP_TLS_KEY_FILE "
            "(or ROGATORY_UNSAFE_PLAIN_HTTP=1 behind a TLS-terminating proxy)"
        )
    log.warning("plain_http_unsafe", http_host=settings.http_host, setting="ROGATORY_UNSAFE_PLAIN_HTTP")
    return None


__all__ = ["MINIMUM_TLS_VERSION", "client_context", "is_loopback", "listener_context", "server_context"]
