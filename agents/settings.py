"""An agent's settings: one frozen value, read from the environment in one place.

Field `name` is variable `ROGATORY_NAME`; what each means, its type and its
default are in `docs/CONFIGURATION.md`, generated from the descriptions below
(`rogatory config-reference --out docs/CONFIGURATION.md`).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Self
from urllib.parse import urlsplit

from pydantic import Field, ValidationInfo, field_validator, model_validator

from agents.guard import parse_token_specs
from protocol.limits import DEFAULT_LIMITS, Limits
from runtime.certificates import amqps_tls_files
from runtime.reports.fonts import DEFAULT_FONT_DIR
from runtime.settings import SHOWN_DEFAULT, ServiceSettings
from runtime.tls import is_loopback


class AgentSettings(ServiceSettings):
    """Everything an agent needs to start, passed down explicitly."""

    service: ClassVar[str] = "agent"
    list_fields: ClassVar[frozenset[str]] = frozenset({"api_tokens_sha256"})

    agency: str = Field(
        pattern=r"^[A-Z]{2}(-[A-Z0-9]{2,16}){1,3}$", description="the agency this agent speaks for (`BD-MOHA-PSD`)"
    )
    http_port: int = Field(default=8710, ge=0, le=65535, description="port the agent API listens on")
    api_tokens_sha256: tuple[str, ...] = Field(
        min_length=1,
        description="SHA-256 (hex) of each accepted bearer token, each `HEX` (every scope) "
        "or `HEX:submit+read+ack` (those scopes), with an optional clearance `@RESTRICTED` "
        "(the highest handling code it may read; default `@SECRET`)",
    )
    api_tokens_revoked_file: Path | None = Field(
        default=None, description="SHA-256 of revoked tokens, one a line, read again on each change"
    )
    api_rate_per_s: float = Field(
        default=500.0, gt=0, description="requests per second of each API client's token bucket: 429 past it"
    )
    api_rate_burst: int = Field(default=5000, ge=1, description="size of each API client's token bucket")
    gateway_broker_user: str = Field(min_length=1, description="the broker user the gateway publishes as")
    message_ttl_s: float = Field(
        default=3 * 24 * 3600,
        gt=0,
        description="lifetime of a sealed message in seconds (3 days), at most the longest the exchange accepts",
    )
    gateway_url: str | None = Field(
        default=None,
        description="the gateway's audit API, for witnessing checkpoints and fetching proofs",
        json_schema_extra={SHOWN_DEFAULT: "none (witnessing disabled)"},
    )
    gateway_ca_file: Path | None = Field(
        default=None,
        description="PEM CA certificate(s) the gateway's HTTPS certificate must chain to (the network's CA)",
        json_schema_extra={SHOWN_DEFAULT: "none (the system's store)"},
    )
    gateway_token_file: Path | None = Field(
        default=None, description="file holding this agent's reader token for the gateway's audit API"
    )
    report_font_dir: Path = Field(
        default=DEFAULT_FONT_DIR,
        description="where the case report's fonts are (Noto Sans, Noto Naskh Arabic, Noto Sans Bengali: Debian's "
        "fonts-noto-core); a missing one is REPORT_FONTS_MISSING, never a report with boxes for letters",
    )
    witness_interval_s: float = Field(
        default=2.0, gt=0, description="seconds between two looks at the gateway's checkpoint"
    )
    max_merge_delay_s: float = Field(
        default=60.0, gt=0, description="seconds evidence may wait for its inclusion proof before an alarm"
    )
    max_received_body_bytes: int = Field(
        default=16 * 1024**3,
        ge=0,
        description="the largest attachment body this agent downloads for a received message (bytes); "
        "a larger one is refused unread",
    )

    @property
    def watched_certificates(self) -> tuple[Path, ...]:
        """The certificates whose expiry `/healthz` and `/metrics` show, those set.

        The agent API's HTTPS certificate, the CA it trusts for the gateway,
        and the client certificate (`certfile`) of each `amqps://` URL.
        """
        own = (self.http_tls_cert_file, self.gateway_ca_file)
        broker = tuple(certificate for named in amqps_tls_files(self.amqp_url) for certificate in named.certfiles)
        return tuple(dict.fromkeys(path for path in (*own, *broker) if path is not None))

    @field_validator("api_tokens_sha256")
    @classmethod
    def _token_entries(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        """Each entry is `HEX` or `HEX:scope+scope`, optionally `@CLEARANCE` (`agents.guard`)."""
        parse_token_specs(value)
        return value

    @model_validator(mode="after")
    def _gateway_over_tls_unless_local(self) -> Self:
        """A gateway beyond this machine is reached over HTTPS: tokens and bodies never cross in clear text."""
        if self.gateway_url is None or self.unsafe_plain_http:
            return self
        parts = urlsplit(self.gateway_url)
        if parts.scheme == "http" and not is_loopback(parts.hostname or ""):
            raise ValueError(
                "ROGATORY_GATEWAY_URL: an http:// gateway must be on a loopback address; use https:// "
                "(or ROGATORY_UNSAFE_PLAIN_HTTP=1)"
            )
        return self

    @field_validator("message_ttl_s")
    @classmethod
    def _within_the_exchange_lifetime(cls, value: float, info: ValidationInfo) -> float:
        """A message may not outlive what the exchange accepts (`Limits.max_message_ttl`)."""
        limits = info.data.get("limits", DEFAULT_LIMITS)
        longest = limits.max_message_ttl.total_seconds() if isinstance(limits, Limits) else 0.0
        if value > longest:
            raise ValueError(f"exceeds the longest lifetime the exchange accepts ({longest:g} s)")
        return value


__all__ = ["AgentSettings"]
