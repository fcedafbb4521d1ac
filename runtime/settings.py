"""What both services' settings share: one frozen base, read from `ROGATORY_*` in one place, and its reference.

`ServiceSettings` holds the fields every service has (its broker identity,
HTTP listener, data, directory, keystore, logs, limits) and reads them, and
its subclass's own, from the environment: field `name` is variable
`ROGATORY_NAME`. Every field has a description; `reference_table` renders a
settings class as the Markdown table of `docs/CONFIGURATION.md`, which is
generated (`rogatory config-reference`), never written by hand.
"""

from __future__ import annotations

import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Final, Literal, Self, Union, get_args, get_origin
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from protocol.limits import DEFAULT_LIMITS, Limits
from runtime.errors import ConfigurationError

PREFIX: Final = "ROGATORY_"
"""Every variable Rogatory reads starts with this."""
SHOWN_DEFAULT: Final = "shown_default"
"""Key of a field's `json_schema_extra`: the default as the reference shows it, where the value alone misleads."""


class ServiceSettings(BaseModel):
    """The settings every Rogatory service has; each service's settings subclass this."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    service: ClassVar[str] = "service"
    """Who these settings are for, as error messages name it."""
    list_fields: ClassVar[frozenset[str]] = frozenset()
    """Fields given as comma-separated values (blank items dropped)."""
    not_from_environ: ClassVar[frozenset[str]] = frozenset({"limits"})
    """Fields no variable sets: they are passed in by code (tests, benchmarks)."""

    amqp_url: str = Field(
        min_length=1,
        description="the service's own broker identity (user, password, vhost) as an `amqp://` or `amqps://` URL; "
        "for a cluster, one URL per node, comma-separated, all of the same identity",
    )
    amqp_heartbeat_s: int = Field(
        default=10, ge=0, le=600, description="AMQP heartbeat in seconds; a peer silent ~3 heartbeats is dropped"
    )
    watchdog_s: float = Field(
        default=300.0,
        gt=0,
        description="seconds a broker consumer may stay down before the process exits for its supervisor",
    )
    http_host: str = Field(default="127.0.0.1", description="address the HTTP API listens on")
    http_port: int = Field(ge=0, le=65535, description="port the HTTP API listens on")
    """Each service gives its own default port."""
    http_tls_cert_file: Path | None = Field(
        default=None,
        description="PEM certificate (chain) the HTTP API presents: with the key file, it serves HTTPS (TLS 1.2+)",
        json_schema_extra={SHOWN_DEFAULT: "none (clear text, loopback only)"},
    )
    http_tls_key_file: Path | None = Field(default=None, description="PEM private key of that certificate")
    unsafe_plain_http: bool = Field(
        default=False,
        description="UNSAFE: serve clear-text HTTP on a non-loopback address (only behind a TLS-terminating "
        "proxy); logs a warning. Without it such a listener refuses to start",
    )
    data_dir: Path = Field(description="directory of the service's databases")
    directory_file: Path = Field(description="the signed directory of agencies (JSON)")
    directory_reload_s: float = Field(
        default=5.0,
        gt=0,
        le=60,
        description="seconds between looks at the directory file (and, at an agent, polls of the gateway's "
        "`GET /v1/directory`): a newer signed version takes effect within this, without a restart (a lower version, "
        "or another document under the version in force, is refused and logged); the gateway's push is immediate",
    )
    authority_key: str = Field(
        description="base64 Ed25519 public key of the directory authority: the directory must be signed by it"
    )
    keystore_file: Path = Field(description="the service's encrypted keystore")
    keystore_passphrase_file: Path = Field(description="file holding the keystore's passphrase")
    prefetch: int = Field(
        default=32, ge=1, le=10_000, description="deliveries of the service's queue held unacknowledged at once"
    )
    sqlite_synchronous: Literal["FULL", "NORMAL"] = Field(
        default="FULL", description="SQLite `synchronous` pragma: `NORMAL` may lose the last commits on power loss"
    )
    log_format: Literal["json", "console"] = Field(
        default="json", description="`json` lines for collectors, or `console` for people"
    )
    profile_dir: Path | None = Field(
        default=None,
        description="diagnostics: profile the process with cProfile and write `<service>-<pid>.prof` to this "
        "directory when it stops (read with `python -m pstats`); it slows the service, so leave it unset in "
        "production (`rogatory bench --profile-dir` sets it for the benchmark's services)",
        json_schema_extra={SHOWN_DEFAULT: "none (no profiling)"},
    )
    limits: Limits = Field(default=DEFAULT_LIMITS, description="sizes, counts and time windows of the exchange")

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

    @model_validator(mode="after")
    def _certificate_with_its_key(self) -> Self:
        """The HTTP certificate and its key come together or not at all."""
        if (self.http_tls_cert_file is None) != (self.http_tls_key_file is None):
            raise ValueError("ROGATORY_HTTP_TLS_CERT_FILE and ROGATORY_HTTP_TLS_KEY_FILE are given together")
        return self

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Self:
        """Read field `name` from `ROGATORY_NAME`; unset variables take the defaults (`docs/CONFIGURATION.md`).

        Raises `ConfigurationError` naming each variable that is missing or
        invalid and why, never its value (some are secrets' digests).
        """
        values: dict[str, object] = {}
        for name in cls.model_fields:
            raw = None if name in cls.not_from_environ else environ.get(variable_name(name))
            if raw is None:
                continue
            values[name] = tuple(v.strip() for v in raw.split(",") if v.strip()) if name in cls.list_fields else raw
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            problems = "; ".join(
                # A check across fields (a model validator) has no location: its message names the variables.
                f"{variable_name('.'.join(map(str, error['loc'])))}: {error['msg']}" if error["loc"] else error["msg"]
                for error in exc.errors()
            )
            raise ConfigurationError(f"{cls.service} settings are invalid: {problems}") from None


def variable_name(field: str) -> str:
    """The environment variable of a settings field."""
    return PREFIX + field.upper()


@dataclass(frozen=True, slots=True)
class Variable:
    """One row of the configuration reference."""

    name: str
    kind: str
    default: str
    description: str


def variables_of(settings: type[ServiceSettings]) -> tuple[Variable, ...]:
    """The variables a settings class reads, in field order."""
    return tuple(
        Variable(variable_name(name), _kind(field.annotation), _default(field), field.description or "")
        for name, field in settings.model_fields.items()
        if name not in settings.not_from_environ
    )


def reference_table(variables: Iterable[Variable]) -> str:
    """A Markdown table of variables: name, type, default, description."""
    rows = ["| variable | type | default | description |", "| --- | --- | --- | --- |"]
    rows.extend(f"| `{v.name}` | {_cell(v.kind)} | {_cell(v.default)} | {_cell(v.description)} |" for v in variables)
    return "\n".join(rows) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


_KINDS: Final[dict[object, str]] = {str: "string", int: "integer", float: "number", bool: "boolean", Path: "path"}


def _kind(annotation: object) -> str:
    origin = get_origin(annotation)
    if origin is Literal:
        return " or ".join(f"`{choice}`" for choice in get_args(annotation))
    if origin in {Union, types.UnionType}:
        kinds = [_kind(arg) for arg in get_args(annotation) if arg is not type(None)]
        return " or ".join(kinds) + " (optional)"
    if origin is tuple:
        return f"comma-separated {_kind(get_args(annotation)[0])}s"
    return _KINDS.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _default(field: FieldInfo) -> str:
    extra = field.json_schema_extra
    if isinstance(extra, dict) and isinstance(shown := extra.get(SHOWN_DEFAULT), str):
        return shown
    value: Any = field.default
    if value is PydanticUndefined:
        return "required"
    if value is None:
        return "none"
    if value in ("", ()):
        return "empty"
    if isinstance(value, float):
        return f"{value:g}" if value < 1e6 else str(int(value))
    return f"`{value}`" if isinstance(value, str) else str(value)


__all__ = [
    "PREFIX",
    "SHOWN_DEFAULT",
    "ServiceSettings",
    "Variable",
    "reference_table",
    "variable_name",
    "variables_of",
]
