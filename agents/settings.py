"""An agent's settings: one frozen value, read from the environment in one place.

| variable                            | meaning                                                    | default          |
| ----------------------------------- | ---------------------------------------------------------- | ---------------- |
| `ROGATORY_AGENCY`                   | the agency this agent speaks for (`BD-MOHA-PSD`)           | required         |
| `ROGATORY_AMQP_URL`                 | the agency's own broker identity (user, password, vhost)   | required         |
|                                     | for a cluster: one URL per node, comma-separated           |                  |
| `ROGATORY_AMQP_HEARTBEAT_S`         | AMQP heartbeat; a peer silent ~3 heartbeats is dropped     | 10               |
| `ROGATORY_WATCHDOG_S`               | the inbox consumer down this long: exit for the supervisor | 300              |
| `ROGATORY_HTTP_HOST` / `_PORT`      | where the agent API listens                                | 127.0.0.1 / 8710 |
| `ROGATORY_DATA_DIR`                 | database directory                                         | required         |
| `ROGATORY_DIRECTORY_FILE`           | the signed directory (JSON)                                | required         |
| `ROGATORY_AUTHORITY_KEY`            | base64 Ed25519 public key of the directory authority       | required         |
| `ROGATORY_KEYSTORE_FILE`            | the agency's encrypted signing and encryption keys         | required         |
| `ROGATORY_KEYSTORE_PASSPHRASE_FILE` | file holding the keystore passphrase                       | required         |
| `ROGATORY_API_TOKENS_SHA256`        | comma-separated SHA-256 (hex) of accepted bearer tokens,   | required         |
|                                     | each `HEX` (every scope) or `HEX:submit+read+ack`, with    |                  |
|                                     | an optional clearance `@RESTRICTED` (default: `@SECRET`)   |                  |
| `ROGATORY_API_TOKENS_REVOKED_FILE`  | SHA-256 of revoked tokens, one a line, read on each change | none             |
| `ROGATORY_API_RATE_PER_S` / `_BURST`| each API client's token bucket: 429 past it                | 500 / 5000       |
| `ROGATORY_GATEWAY_BROKER_USER`      | the broker user the gateway publishes as                   | required         |
| `ROGATORY_MESSAGE_TTL_S`            | lifetime of a sealed message (at most the replay window)   | 259200 (3 days)  |
| `ROGATORY_PREFETCH`                 | inbox deliveries held unacknowledged at once               | 32               |
| `ROGATORY_SQLITE_SYNCHRONOUS`       | `FULL` (default) or `NORMAL`                               | FULL             |
| `ROGATORY_LOG_FORMAT`               | `json` or `console`                                        | json             |
| `ROGATORY_GATEWAY_URL`              | the gateway's audit API, for witnessing and proofs         | none (disabled)  |
| `ROGATORY_GATEWAY_TOKEN_FILE`       | file holding this agent's reader token for that API        | none             |
| `ROGATORY_WITNESS_INTERVAL_S`       | seconds between two looks at the gateway's checkpoint      | 2.0              |
| `ROGATORY_MAX_MERGE_DELAY_S`        | evidence without an inclusion proof after this: alarm      | 60               |
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agents.guard import parse_token_specs
from protocol.limits import DEFAULT_LIMITS, Limits
from runtime.errors import ConfigurationError

_PREFIX = "ROGATORY_"


class AgentSettings(BaseModel):
    """Everything an agent needs to start, passed down explicitly."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    agency: str = Field(pattern=r"^[A-Z]{2}(-[A-Z0-9]{2,16}){1,3}$")
    amqp_url: str = Field(min_length=1)
    amqp_heartbeat_s: int = Field(default=10, ge=0, le=600)
    watchdog_s: float = Field(default=300.0, gt=0)
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8710, ge=0, le=65535)
    data_dir: Path
    directory_file: Path
    authority_key: str
    keystore_file: Path
    keystore_passphrase_file: Path
    api_tokens_sha256: tuple[str, ...] = Field(min_length=1)
    api_tokens_revoked_file: Path | None = None
    api_rate_per_s: float = Field(default=500.0, gt=0)
    api_rate_burst: int = Field(default=5000, ge=1)
    gateway_broker_user: str = Field(min_length=1)
    message_ttl_s: float = Field(default=3 * 24 * 3600, gt=0)
    prefetch: int = Field(default=32, ge=1, le=10_000)
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"
    log_format: Literal["json", "console"] = "json"
    gateway_url: str | None = None
    gateway_token_file: Path | None = None
    witness_interval_s: float = Field(default=2.0, gt=0)
    max_merge_delay_s: float = Field(default=60.0, gt=0)
    limits: Limits = DEFAULT_LIMITS

    @field_validator("api_tokens_sha256")
    @classmethod
    def _token_entries(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        """Each entry is `HEX` or `HEX:scope+scope`, optionally `@CLEARANCE` (`agents.guard`)."""
        parse_token_specs(value)
        return value

    @field_validator("amqp_url")
    @classmethod
    def _one_identity_per_node(cls, value: str) -> str:
        """Every URL of the list is an AMQP URL of the same user, password and vhost."""
        identities = set()
        for url in (part.strip() for part in value.split(",") if part.strip()):
            parts = urlsplit(url)
            if parts.scheme not in {"amqp", "amqps"} or not parts.hostname:
                raise ValueError("expected amqp:// or amqps:// URLs with a host, comma-separated")
            identities.add((parts.username, parts.password, parts.path))
        if len(identities) != 1:
            raise ValueError("expected one or more URLs of the same user, password and vhost")
        return value

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> AgentSettings:
        """Read `ROGATORY_*` variables (see the module docstring)."""
        values: dict[str, object] = {}
        for name in cls.model_fields:
            if name == "limits":
                continue
            raw = environ.get(_PREFIX + name.upper())
            if raw is None:
                continue
            values[name] = tuple(v for v in raw.split(",") if v) if name == "api_tokens_sha256" else raw
        try:
            settings = cls.model_validate(values)
        except ValidationError as exc:
            problems = "; ".join(f"{_PREFIX}{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors())
            raise ConfigurationError(f"agent settings are invalid: {problems}") from None
        if settings.message_ttl_s > settings.limits.max_message_ttl.total_seconds():
            raise ConfigurationError("ROGATORY_MESSAGE_TTL_S exceeds the longest lifetime the exchange accepts")
        return settings


__all__ = ["AgentSettings"]
