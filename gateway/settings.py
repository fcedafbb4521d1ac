"""The gateway's settings: one frozen value, read from the environment in one place.

| variable                              | meaning                                                   | default          |
| ------------------------------------- | --------------------------------------------------------- | ---------------- |
| `ROGATORY_AMQP_URL`                   | the gateway's own broker identity (user, password, vhost) | required         |
|                                       | for a cluster: one URL per node, comma-separated          |                  |
| `ROGATORY_AMQP_HEARTBEAT_S`           | AMQP heartbeat; a peer silent ~3 heartbeats is dropped    | 10               |
| `ROGATORY_WATCHDOG_S`                 | a consumer down this long: exit for the supervisor        | 300              |
| `ROGATORY_MANAGEMENT_URL`             | broker management API, for `GET /v1/ops/queues`           | none (503)       |
| `ROGATORY_MANAGEMENT_USER`            | a management user that may list the vhost's queues        | none             |
| `ROGATORY_MANAGEMENT_PASSWORD_FILE`   | file holding that user's password                         | none             |
| `ROGATORY_HTTP_HOST` / `_PORT`        | where the audit and operator API listens                  | 127.0.0.1 / 8700 |
| `ROGATORY_DATA_DIR`                   | database directory                                        | required         |
| `ROGATORY_DIRECTORY_FILE`             | the signed directory (JSON)                               | required         |
| `ROGATORY_AUTHORITY_KEY`              | base64 Ed25519 public key of the directory authority      | required         |
| `ROGATORY_KEYSTORE_FILE`              | encrypted evidence and log keys                           | required         |
| `ROGATORY_KEYSTORE_PASSPHRASE_FILE`   | file holding the keystore passphrase                      | required         |
| `ROGATORY_BROKER_USER_PREFIX`         | agency broker users are `<prefix><AGENCY-ID>`             | empty            |
| `ROGATORY_OPERATOR_TOKEN_SHA256`      | SHA-256 (hex) of the operator's bearer token              | required         |
| `ROGATORY_AUDITOR_TOKEN_SHA256`       | SHA-256 (hex) of the auditor's bearer token               | required         |
| `ROGATORY_READER_TOKENS_SHA256`       | comma-separated SHA-256 of tokens that may read proofs    | empty            |
| `ROGATORY_METRICS_TOKENS_SHA256`      | comma-separated SHA-256 of tokens that may scrape metrics | empty            |
| `ROGATORY_CHECKPOINT_INTERVAL_S`      | seconds between checkpoints while the log grows           | 1.0              |
| `ROGATORY_PREFETCH`                   | ingress deliveries held unacknowledged at once            | 32               |
| `ROGATORY_SQLITE_SYNCHRONOUS`         | `FULL` (default) or `NORMAL`                              | FULL             |
| `ROGATORY_LOG_FORMAT`                 | `json` or `console`                                       | json             |
| `ROGATORY_DATABASE_URL`               | `postgresql://...` to keep records in PostgreSQL          | SQLite in data   |
| `ROGATORY_DELIVERY_GRACE_S`           | after a message expired undelivered: `NON_DELIVERY`       | 300              |
| `ROGATORY_RETRIEVAL_DEADLINE_S`       | after delivery without retrieval: `NON_RETRIEVAL`         | 604800 (7 days)  |
| `ROGATORY_DEADLINE_SWEEP_S`           | seconds between two sweeps for passed deadlines           | 5.0              |
| `ROGATORY_BLOB_RETENTION_S`           | attachment bodies kept after retrieval (or expiry)        | 604800 (7 days)  |
| `ROGATORY_BLOB_UNREFERENCED_S`        | a body no accepted message commits to: deleted after      | 86400 (1 day)    |
| `ROGATORY_BLOB_SWEEP_S`               | seconds between two sweeps for bodies to delete           | 60               |
| `ROGATORY_MAX_BLOB_BYTES`             | the largest attachment body accepted                      | 68719476736      |
| `ROGATORY_WATCHED_CERTIFICATES`       | comma-separated PEM files whose expiry the console shows  | see below        |

`ROGATORY_WATCHED_CERTIFICATES` unset watches the `cafile` (and `certfile`) of
each `amqps://` URL, and the broker's `server.pem` where it lies beside that
CA (the layout of `deploy/tls.py`); set to an empty value, it watches nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import parse_qs, urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from protocol.limits import DEFAULT_LIMITS, Limits
from runtime.errors import ConfigurationError

_PREFIX = "ROGATORY_"
_LISTS: Final = frozenset({"reader_tokens_sha256", "metrics_tokens_sha256", "watched_certificates"})
"""Settings given as comma-separated values."""
BROKER_CERTIFICATE_NAME: Final = "server.pem"
"""The broker's certificate beside its CA, as `deploy.tls.BrokerTlsFiles` lays them out."""


class GatewaySettings(BaseModel):
    """Everything the gateway needs to start, passed down explicitly."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    amqp_url: str = Field(min_length=1)
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8700, ge=0, le=65535)
    amqp_heartbeat_s: int = Field(default=10, ge=0, le=600)
    watchdog_s: float = Field(default=300.0, gt=0)
    management_url: str | None = Field(default=None, pattern=r"^https?://")
    management_user: str | None = None
    management_password_file: Path | None = None
    data_dir: Path
    directory_file: Path
    authority_key: str
    keystore_file: Path
    keystore_passphrase_file: Path
    broker_user_prefix: str = ""
    operator_token_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    auditor_token_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    reader_tokens_sha256: tuple[str, ...] = ()
    metrics_tokens_sha256: tuple[str, ...] = Field(
        default=(),
        description="SHA-256 (hex) of each token that may scrape `/metrics` and nothing else (as operators may)",
    )
    checkpoint_interval_s: float = Field(default=1.0, gt=0)
    idle_checkpoint_interval_s: float = Field(default=3600.0, gt=0)
    prefetch: int = Field(default=32, ge=1, le=10_000)
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"
    log_format: Literal["json", "console"] = "json"
    database_url: str | None = Field(default=None, pattern=r"^postgres(ql)?://")
    delivery_grace_s: float = Field(default=300.0, ge=0)
    retrieval_deadline_s: float = Field(default=7 * 24 * 3600.0, gt=0)
    deadline_sweep_s: float = Field(default=5.0, gt=0)
    blob_retention_s: float = Field(default=7 * 24 * 3600.0, ge=0)
    blob_unreferenced_s: float = Field(default=24 * 3600.0, ge=0)
    blob_sweep_s: float = Field(default=60.0, gt=0)
    max_blob_bytes: int = Field(default=64 * 1024**3, ge=0)
    watched_certificates: tuple[Path, ...] = ()
    limits: Limits = DEFAULT_LIMITS

    @model_validator(mode="before")
    @classmethod
    def _watch_the_broker_certificates_by_default(cls, values: Any) -> Any:  # noqa: ANN401 - pydantic's raw input
        """Unset `watched_certificates`: the TLS files the AMQP URLs name, and the broker's beside the CA."""
        if not isinstance(values, dict) or "watched_certificates" in values:
            return values
        return values | {"watched_certificates": tls_files_of(str(values.get("amqp_url", "")))}

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
    def from_environ(cls, environ: Mapping[str, str]) -> GatewaySettings:
        """Read `ROGATORY_*` variables (see the module docstring)."""
        values: dict[str, object] = {}
        for name in cls.model_fields:
            if name == "limits":
                continue
            raw = environ.get(_PREFIX + name.upper())
            if raw is None:
                continue
            values[name] = tuple(v.strip() for v in raw.split(",") if v.strip()) if name in _LISTS else raw
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            problems = "; ".join(f"{_PREFIX}{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors())
            raise ConfigurationError(f"gateway settings are invalid: {problems}") from None


def tls_files_of(amqp_urls: str) -> tuple[Path, ...]:
    """The `cafile` and `certfile` of each `amqps://` URL, and an existing `server.pem` beside each CA."""
    files: list[Path] = []
    for url in (part.strip() for part in amqp_urls.split(",") if part.strip()):
        parts = urlsplit(url)
        if parts.scheme != "amqps":
            continue
        query = parse_qs(parts.query)
        for ca in query.get("cafile", []):
            files.append(Path(ca))
            broker = Path(ca).parent / BROKER_CERTIFICATE_NAME
            if broker.is_file():  # a CA from elsewhere has no broker certificate beside it: nothing to watch
                files.append(broker)
        files.extend(Path(certificate) for certificate in query.get("certfile", []))
    return tuple(dict.fromkeys(files))


__all__ = ["GatewaySettings", "tls_files_of"]
