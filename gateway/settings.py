"""The gateway's settings: one frozen value, read from the environment in one place.

Field `name` is variable `ROGATORY_NAME`; what each means, its type and its
default are in `docs/CONFIGURATION.md`, generated from the descriptions below
(`rogatory config-reference --out docs/CONFIGURATION.md`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Final

from pydantic import Field, model_validator

from runtime.certificates import amqps_tls_files
from runtime.settings import SHOWN_DEFAULT, ServiceSettings

BROKER_CERTIFICATE_NAME: Final = "server.pem"
"""The broker's certificate beside its CA, as `deploy.provision.tls.BrokerTlsFiles` lays them out."""
_SHA256_HEX: Final = r"^[0-9a-f]{64}$"


class GatewaySettings(ServiceSettings):
    """Everything the gateway needs to start, passed down explicitly."""

    service: ClassVar[str] = "gateway"
    list_fields: ClassVar[frozenset[str]] = frozenset(
        {"reader_tokens_sha256", "metrics_tokens_sha256", "watched_certificates"}
    )

    http_port: int = Field(default=8700, ge=0, le=65535, description="port the audit and operator API listens on")
    management_url: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="the broker's management API, for the operator's queue and dead-letter views",
        json_schema_extra={SHOWN_DEFAULT: "none (those views answer 503)"},
    )
    management_user: str | None = Field(
        default=None, description="a management user that may list and read the vhost's queues"
    )
    management_password_file: Path | None = Field(default=None, description="file holding that user's password")
    broker_user_prefix: str = Field(default="", description="agency broker users are `<prefix><AGENCY-ID>`")
    accounts_file: Path | None = Field(
        default=None,
        description="the named operators and auditors: lines of `name role sha256-of-token` (or `revoked`), "
        "written by `rogatory accounts`; read again when it changes, so a revocation holds from the next request",
        json_schema_extra={SHOWN_DEFAULT: "none (only the single-token settings below)"},
    )
    operator_token_sha256: str | None = Field(
        default=None,
        pattern=_SHA256_HEX,
        description="SHA-256 (hex) of the shared operator token, the account named `operator`; "
        "required without an accounts file",
    )
    auditor_token_sha256: str | None = Field(
        default=None,
        pattern=_SHA256_HEX,
        description="SHA-256 (hex) of the shared auditor token, the account named `auditor`; "
        "required without an accounts file",
    )
    reader_tokens_sha256: tuple[str, ...] = Field(
        default=(), description="SHA-256 (hex) of the tokens that may read checkpoints and proofs (agents)"
    )
    metrics_tokens_sha256: tuple[str, ...] = Field(
        default=(),
        description="SHA-256 (hex) of each token that may scrape `/metrics` and nothing else (as operators may)",
    )
    checkpoint_interval_s: float = Field(
        default=1.0, gt=0, description="seconds between two checkpoints while the log grows"
    )
    idle_checkpoint_interval_s: float = Field(
        default=3600.0, gt=0, description="seconds between two checkpoints while the log stands still"
    )
    tsa_url: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="an RFC 3161 time-stamp authority: checkpoints are time-stamped by it, and the tokens kept "
        "and served with them; its root certificate must be listed in the directory (`rogatory authority add-tsa`)",
        json_schema_extra={SHOWN_DEFAULT: "none (checkpoints carry only the gateway's own clock)"},
    )
    tsa_interval_s: float = Field(
        default=60.0, ge=0, description="seconds between two time-stamps (the newest checkpoint is stamped)"
    )
    tsa_timeout_s: float = Field(default=10.0, gt=0, description="seconds to wait for the time-stamp authority")
    database_url: str | None = Field(
        default=None,
        pattern=r"^postgres(ql)?://",
        description="`postgresql://…` to keep the records in PostgreSQL",
        json_schema_extra={SHOWN_DEFAULT: "none (SQLite in the data directory)"},
    )
    delivery_grace_s: float = Field(
        default=300.0, ge=0, description="seconds after a message expired undelivered before `NON_DELIVERY`"
    )
    retrieval_deadline_s: float = Field(
        default=7 * 24 * 3600.0, gt=0, description="seconds after delivery without retrieval before `NON_RETRIEVAL`"
    )
    deadline_sweep_s: float = Field(default=5.0, gt=0, description="seconds between two sweeps for passed deadlines")
    blob_retention_s: float = Field(
        default=7 * 24 * 3600.0, ge=0, description="seconds attachment bodies are kept after retrieval (or expiry)"
    )
    blob_unreferenced_s: float = Field(
        default=24 * 3600.0, ge=0, description="seconds before a body no accepted message commits to is deleted"
    )
    blob_sweep_s: float = Field(default=60.0, gt=0, description="seconds between two sweeps for bodies to delete")
    max_blob_bytes: int = Field(default=64 * 1024**3, ge=0, description="the largest attachment body accepted (bytes)")
    blob_quota_bytes: int = Field(
        default=128 * 1024**3, ge=0, description="stored and partial body bytes one agency may hold (bytes)"
    )
    blob_partial_expiry_s: float = Field(
        default=24 * 3600.0, gt=0, description="seconds before a partial upload nobody continued is removed"
    )
    blob_dir: Path | None = Field(
        default=None,
        description=(
            "directory of the attachment bodies and their index; several gateway processes sharing one "
            "PostgreSQL database must share it (one machine's disk: the index is SQLite)"
        ),
        json_schema_extra={SHOWN_DEFAULT: "the data directory"},
    )
    leader_retry_s: float = Field(
        default=2.0,
        gt=0,
        description=(
            "seconds between two tries to lead (the checkpoint signer among processes sharing PostgreSQL), "
            "and between two checks of the leader's connection"
        ),
    )
    report_signing_cert_file: Path | None = Field(
        default=None,
        description="the gateway's document-signing certificate (PEM, issued by the network CA: "
        "`rogatory tls document-cert`), with which it signs agencies' case reports (PAdES)",
        json_schema_extra={SHOWN_DEFAULT: "none (`POST /v1/reports/signatures` answers 503)"},
    )
    report_signing_key_file: Path | None = Field(
        default=None, description="the private key of that certificate (PEM, unencrypted, mode 0600)"
    )
    report_signing_ca_file: Path | None = Field(
        default=None,
        description="the network CA's certificate (`ca.pem`), put into each signature as the signer's chain",
    )
    watched_certificates: tuple[Path, ...] = Field(
        default=(),
        description="PEM files whose expiry the operator console shows. Unset: the gateway's own HTTPS "
        "certificate (`ROGATORY_HTTP_TLS_CERT_FILE`), the `cafile` (and `certfile`) of each `amqps://` URL, and "
        "the broker's `server.pem` where it lies beside that CA (the layout of `deploy/provision/tls.py`), "
        "and the document-signing certificate (`ROGATORY_REPORT_SIGNING_CERT_FILE`); "
        "set but empty: none",
        json_schema_extra={SHOWN_DEFAULT: "the HTTPS and broker TLS files"},
    )

    @model_validator(mode="after")
    def _someone_may_sign_in(self) -> GatewaySettings:
        """Without an accounts file, the operator's and the auditor's tokens are required, as they always were."""
        if self.accounts_file is None and (self.operator_token_sha256 is None or self.auditor_token_sha256 is None):
            raise ValueError(
                "set ROGATORY_ACCOUNTS_FILE, or both ROGATORY_OPERATOR_TOKEN_SHA256 and ROGATORY_AUDITOR_TOKEN_SHA256"
            )
        return self

    @model_validator(mode="after")
    def _report_signing_all_or_nothing(self) -> GatewaySettings:
        """The document-signing certificate, its key and the CA are set together, or none of them."""
        given = (self.report_signing_cert_file, self.report_signing_key_file, self.report_signing_ca_file)
        if any(value is not None for value in given) and any(value is None for value in given):
            raise ValueError(
                "set ROGATORY_REPORT_SIGNING_CERT_FILE, ROGATORY_REPORT_SIGNING_KEY_FILE and "
                "ROGATORY_REPORT_SIGNING_CA_FILE together"
            )
        return self

    @model_validator(mode="before")
    @classmethod
    def _watch_the_broker_certificates_by_default(cls, values: Any) -> Any:  # noqa: ANN401 - pydantic's raw input
        """Unset `watched_certificates`: the HTTPS certificate, the AMQP URLs' TLS files, the broker's beside the CA."""
        if not isinstance(values, dict) or "watched_certificates" in values:
            return values
        own = tuple(
            Path(str(values[name])) for name in ("http_tls_cert_file", "report_signing_cert_file") if values.get(name)
        )
        broker = tls_files_of(str(values.get("amqp_url", "")))
        return values | {"watched_certificates": tuple(dict.fromkeys(own + broker))}


def tls_files_of(amqp_urls: str) -> tuple[Path, ...]:
    """The `cafile` and `certfile` of each `amqps://` URL, and an existing `server.pem` beside each CA."""
    files: list[Path] = []
    for named in amqps_tls_files(amqp_urls):
        for ca in named.cafiles:
            files.append(ca)
            broker = ca.parent / BROKER_CERTIFICATE_NAME
            if broker.is_file():  # a CA from elsewhere has no broker certificate beside it: nothing to watch
                files.append(broker)
        files.extend(named.certfiles)
    return tuple(dict.fromkeys(files))


__all__ = ["GatewaySettings", "tls_files_of"]
