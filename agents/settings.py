"""An agent's settings: one frozen value, read from the environment in one place.

Field `name` is variable `ROGATORY_NAME`; what each means, its type and its
default are in `docs/CONFIGURATION.md`, generated from the descriptions below
(`rogatory config-reference --out docs/CONFIGURATION.md`).
"""

from __future__ import annotations

import ipaddress
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
    list_fields: ClassVar[frozenset[str]] = frozenset({"api_tokens_sha256", "webhook_allowed_networks"})

    agency: str = Field(
        pattern=r"^[A-Z]{2}(-[A-Z0-9]{2,16}){1,3}$", description="the agency this agent speaks for (`BD-MOHA-PSD`)"
    )
    http_port: int = Field(default=8710, ge=0, le=65535, description="port the agent API listens on")
    api_tokens_sha256: tuple[str, ...] = Field(
        min_length=1,
        description="SHA-256 (hex) of each accepted bearer token, each `HEX` (every scope) "
        "or `HEX:submit+read+ack+webhooks` (those scopes), with an optional clearance `@RESTRICTED` "
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

    webhook_allowed_networks: tuple[str, ...] = Field(
        default=(),
        description="networks (CIDR, comma-separated) webhook subscriptions may point into (the case systems'); "
        "a URL resolving to any other address is refused (against a token holder making the agent call "
        "internal services)",
        json_schema_extra={SHOWN_DEFAULT: "none (no webhooks, unless public addresses are allowed)"},
    )
    webhook_allow_public_addresses: bool = Field(
        default=False,
        description="allow webhook URLs resolving to public (globally routable) addresses too",
    )
    webhook_allow_plain_http: bool = Field(
        default=False,
        description="allow `http://` webhook URLs beyond loopback (events are signed but travel in clear text)",
    )
    webhook_ca_file: Path | None = Field(
        default=None,
        description="PEM CA certificate(s) a webhook receiver's HTTPS certificate must chain to",
        json_schema_extra={SHOWN_DEFAULT: "none (the system's store)"},
    )
    webhook_timeout_s: float = Field(
        default=10.0, gt=0, le=300, description="seconds one webhook attempt (connect, send, answer) may take"
    )
    webhook_retry_base_s: float = Field(
        default=2.0, gt=0, description="seconds before the first retry of a failing subscription, doubled per failure"
    )
    webhook_retry_max_s: float = Field(
        default=900.0, gt=0, description="the longest wait between two attempts to a failing subscription (seconds)"
    )
    webhook_suspend_after_failures: int = Field(
        default=10, ge=1, description="consecutive failed attempts before a subscription can be suspended"
    )
    webhook_suspend_after_s: float = Field(
        default=24 * 3600.0,
        ge=0,
        description="seconds a subscription must have been failing (no success) before it is suspended",
    )
    webhook_max_pending_events: int = Field(
        default=10_000,
        ge=1,
        description="events kept for one subscription (suspended or failing); beyond, the oldest are dropped "
        "and counted",
    )
    webhook_max_subscriptions: int = Field(default=100, ge=0, description="webhook subscriptions this agent accepts")
    webhook_poll_s: float = Field(
        default=1.0, gt=0, description="seconds between two looks for webhook events to deliver"
    )
    webhook_deadline_scan_s: float = Field(
        default=300.0, gt=0, description="seconds between two scans of the case deadlines for webhook events"
    )
    retention_after_close_days: int | None = Field(
        default=None,
        ge=0,
        description="days the content of a closed case is kept after its last message (documents, sealed "
        "envelopes, attachment bodies, sent and received), then purged; metadata and evidence stay",
        json_schema_extra={SHOWN_DEFAULT: "none (keep everything)"},
    )
    retention_interval_s: float = Field(
        default=3600.0, gt=0, description="seconds between two looks for closed cases past their retention"
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

    @field_validator("webhook_allowed_networks")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        """Each entry is a network in CIDR notation (`10.20.0.0/16`, `127.0.0.1/32`, `fd00::/8`)."""
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry[:60]!r} is not a network in CIDR notation") from None
        return value

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
