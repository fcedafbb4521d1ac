"""The directory: who is in the network, with which keys, allowed to send what to whom.

A directory is signed by the network's directory authority (the trust anchor
every agent and the gateway is configured with), carries a version that only
grows and an expiry. `verify_directory` refuses an unsigned or badly signed
directory, one older than the version already held (rollback), and an
expired one. Each accepted version is an audit-log entry at the gateway.

Agreements turn an MOU between two states into policy: a rule lists senders,
recipients and message types. Nothing is allowed unless a rule in force says
so: an empty directory denies everything.

Keys have a validity period and may be revoked. A signing key verifies a
message created inside its validity period (so messages in flight when a
key is rotated out still verify), and nothing at all once revoked. A
created time is the signer's claim: `check_not_retired` also refuses a key
whose validity ended longer ago than a grace, on the receiver's clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Literal

from pydantic import Field, model_validator

from protocol.encoding import Base64Bytes, UtcTimestamp
from protocol.errors import DirectoryRejected, ErrorCode, KeyRejected, MalformedInput, PolicyDenied
from protocol.ids import AgencyId, AgencyIdField, GatewayIdField, KeyId, KeyIdField
from protocol.keys import (
    EncryptionPublicKey,
    SigningPrivateKey,
    SigningPublicKey,
)
from protocol.limits import Limits
from protocol.model import FrozenModel, parse_model
from protocol.signing import PAYLOAD_TYPE_DIRECTORY, SignedStatement, sign_statement, verify_statement

DIRECTORY_FORMAT: Final = "rogatory-directory/1"
ANY_MESSAGE_TYPE: Final = "*"


class PublishedKey(FrozenModel):
    """A public key with its validity period, as the directory publishes it."""

    key_id: KeyIdField
    public_key: Base64Bytes
    valid_from: UtcTimestamp
    valid_until: UtcTimestamp
    revoked_at: UtcTimestamp | None = None

    def check_usable(self, *, created_at: datetime, now: datetime, what: str) -> None:
        """Raise `KeyRejected` unless this key may vouch for something made at `created_at`."""
        if self.revoked_at is not None and now >= self.revoked_at:
            raise KeyRejected(
                f"{what} key {self.key_id} was revoked at {self.revoked_at.isoformat()}", code=ErrorCode.KEY_REVOKED
            )
        if not self.valid_from <= created_at <= self.valid_until:
            raise KeyRejected(
                f"{what} key {self.key_id} is valid from {self.valid_from.isoformat()} "
                f"until {self.valid_until.isoformat()}, not at {created_at.isoformat()}",
                code=ErrorCode.KEY_NOT_VALID,
            )

    def check_not_retired(self, *, now: datetime, grace: timedelta, what: str) -> None:
        """Raise `KeyRejected(KEY_NOT_VALID)` if this key's validity ended more than `grace` before `now`.

        `check_usable` judges a key at the time the signer claims; this bounds
        that claim by the receiver's clock, so a retired key cannot date new
        signatures back into its validity (`Limits.retired_key_grace`).
        """
        if now - self.valid_until > grace:
            raise KeyRejected(
                f"{what} key {self.key_id} retired at {self.valid_until.isoformat()}, "
                f"more than {grace} before now ({now.isoformat()})",
                code=ErrorCode.KEY_NOT_VALID,
            )


class PublishedSigningKey(PublishedKey):
    """An Ed25519 key that signs headers, content and evidence."""

    algorithm: Literal["ed25519"] = "ed25519"

    @model_validator(mode="after")
    def _key_id_matches(self) -> PublishedSigningKey:
        if SigningPublicKey(self.public_key).key_id != self.key_id:
            raise ValueError("key_id is not derived from public_key")
        return self

    @property
    def verifier(self) -> SigningPublicKey:
        """The key as a verifier."""
        return SigningPublicKey(self.public_key)


class PublishedEncryptionKey(PublishedKey):
    """An X25519 key to which content keys are wrapped."""

    algorithm: Literal["x25519"] = "x25519"

    @model_validator(mode="after")
    def _key_id_matches(self) -> PublishedEncryptionKey:
        if EncryptionPublicKey(self.public_key).key_id != self.key_id:
            raise ValueError("key_id is not derived from public_key")
        return self

    @property
    def recipient_key(self) -> EncryptionPublicKey:
        """The key as a wrapping target."""
        return EncryptionPublicKey(self.public_key)


class AgencyEntry(FrozenModel):
    """One agency: its name, state and keys."""

    agency_id: AgencyIdField
    name: str = Field(min_length=1, max_length=300)
    country: str = Field(pattern=r"^[A-Z]{2}$")
    signing_keys: tuple[PublishedSigningKey, ...] = Field(min_length=1)
    encryption_keys: tuple[PublishedEncryptionKey, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _country_matches(self) -> AgencyEntry:
        if not self.agency_id.startswith(self.country + "-"):
            raise ValueError("agency id must start with the agency's country code")
        return self

    def current_encryption_key(self, now: datetime) -> PublishedEncryptionKey:
        """The newest encryption key usable at `now`: the one senders wrap to."""
        usable = [
            key
            for key in self.encryption_keys
            if key.valid_from <= now <= key.valid_until and (key.revoked_at is None or now < key.revoked_at)
        ]
        if not usable:
            raise KeyRejected(f"agency {self.agency_id} has no encryption key valid now", code=ErrorCode.KEY_NOT_VALID)
        return max(usable, key=lambda key: key.valid_from)


class GatewayEntry(FrozenModel):
    """The gateway: its evidence keys and its log (checkpoint) keys, kept apart."""

    gateway_id: GatewayIdField
    evidence_keys: tuple[PublishedSigningKey, ...] = Field(min_length=1)
    log_keys: tuple[PublishedSigningKey, ...] = Field(min_length=1)
    log_origin: str = Field(min_length=1, max_length=200, pattern=r"^[\x21-\x7e][\x20-\x7e]*$")


class AgreementRule(FrozenModel):
    """Senders may send these message types to these recipients. `*` means any type."""

    senders: tuple[AgencyIdField, ...] = Field(min_length=1)
    recipients: tuple[AgencyIdField, ...] = Field(min_length=1)
    message_types: tuple[str, ...] = Field(min_length=1)

    def allows(self, sender: AgencyId, recipient: AgencyId, message_type: str) -> bool:
        """Whether this rule covers the exchange."""
        return (
            sender in self.senders
            and recipient in self.recipients
            and (message_type in self.message_types or ANY_MESSAGE_TYPE in self.message_types)
        )


class Agreement(FrozenModel):
    """An MOU between states, as policy: in force between two dates, a list of rules."""

    agreement_id: str = Field(min_length=1, max_length=100)
    title: str = Field(min_length=1, max_length=300)
    valid_from: UtcTimestamp
    valid_until: UtcTimestamp
    rules: tuple[AgreementRule, ...] = Field(min_length=1)


class TimestampAuthorityEntry(FrozenModel):
    """A time-stamp authority the network trusts for its checkpoints (RFC 3161), by its root certificate."""

    name: str = Field(min_length=1, max_length=200)
    root_certificate: Base64Bytes
    """DER of the root certificate its time-stamping certificates chain to."""


class Directory(FrozenModel):
    """One version of the directory. Build it with `verify_directory`, never from trust."""

    format: Literal["rogatory-directory/1"] = DIRECTORY_FORMAT
    network: str = Field(min_length=1, max_length=100)
    version: int = Field(ge=1)
    issued_at: UtcTimestamp
    expires_at: UtcTimestamp
    authority_key: KeyIdField
    agencies: tuple[AgencyEntry, ...]
    gateway: GatewayEntry
    agreements: tuple[Agreement, ...] = ()
    timestamp_authorities: tuple[TimestampAuthorityEntry, ...] | None = None
    """Time-stamp authorities whose tokens over checkpoints count (absent: none; left out of the signed
    bytes when absent, so directories without it read as before)."""

    @model_validator(mode="after")
    def _unique_ids(self) -> Directory:
        agencies = [entry.agency_id for entry in self.agencies]
        if len(set(agencies)) != len(agencies):
            raise ValueError("an agency is listed twice")
        key_ids = [key.key_id for entry in self.agencies for key in (*entry.signing_keys, *entry.encryption_keys)]
        key_ids += [key.key_id for key in (*self.gateway.evidence_keys, *self.gateway.log_keys)]
        if len(set(key_ids)) != len(key_ids):
            raise ValueError("a key is listed twice")
        return self

    # -- look-ups ------------------------------------------------------------

    def timestamp_roots(self) -> tuple[bytes, ...]:
        """The root certificates (DER) of the time-stamp authorities this version trusts."""
        return tuple(entry.root_certificate for entry in self.timestamp_authorities or ())

    def agency(self, agency_id: AgencyId) -> AgencyEntry:
        """The entry of `agency_id`, or `PolicyDenied(UNKNOWN_AGENCY)`."""
        for entry in self.agencies:
            if entry.agency_id == agency_id:
                return entry
        raise PolicyDenied(
            f"agency {agency_id} is not in directory version {self.version}", code=ErrorCode.UNKNOWN_AGENCY
        )

    def has_agency(self, agency_id: AgencyId) -> bool:
        """Whether `agency_id` is listed."""
        return any(entry.agency_id == agency_id for entry in self.agencies)

    def agency_signing_key(self, key_id: KeyId) -> tuple[AgencyEntry, PublishedSigningKey]:
        """The agency owning signing key `key_id`, and the key; `KeyRejected` if none does."""
        for entry in self.agencies:
            for key in entry.signing_keys:
                if key.key_id == key_id:
                    return entry, key
        raise KeyRejected(f"signing key {key_id} is not in directory version {self.version}")

    def gateway_evidence_key(self, key_id: KeyId) -> PublishedSigningKey:
        """The gateway's evidence key `key_id`; `KeyRejected` if it is not one."""
        for key in self.gateway.evidence_keys:
            if key.key_id == key_id:
                return key
        raise KeyRejected(f"key {key_id} is not an evidence key of the gateway")

    def gateway_log_key(self, key_id: KeyId) -> PublishedSigningKey:
        """The gateway's log key `key_id`; `KeyRejected` if it is not one."""
        for key in self.gateway.log_keys:
            if key.key_id == key_id:
                return key
        raise KeyRejected(f"key {key_id} is not a log key of the gateway")

    def encryption_key(self, agency_id: AgencyId, key_id: KeyId) -> PublishedEncryptionKey:
        """Encryption key `key_id` of `agency_id`; `KeyRejected` if the agency has no such key."""
        for key in self.agency(agency_id).encryption_keys:
            if key.key_id == key_id:
                return key
        raise KeyRejected(f"encryption key {key_id} does not belong to {agency_id}")

    # -- policy ----------------------------------------------------------------

    def agreement_for(self, sender: AgencyId, recipient: AgencyId, message_type: str, at: datetime) -> Agreement:
        """The agreement in force at `at` that allows the exchange, or `PolicyDenied`."""
        self.agency(sender)
        self.agency(recipient)
        for agreement in self.agreements:
            if agreement.valid_from <= at <= agreement.valid_until and any(
                rule.allows(sender, recipient, message_type) for rule in agreement.rules
            ):
                return agreement
        raise PolicyDenied(
            f"no agreement in force allows {sender} to send {message_type} to {recipient}",
            code=ErrorCode.POLICY_DENIED,
        )


@dataclass(frozen=True, slots=True)
class KeyExpiryWarning:
    """A key that expires (or expired) soon and has no successor valid after it."""

    owner: str
    purpose: str
    key_id: KeyId
    valid_until: datetime


def key_expiry_warnings(directory: Directory, *, now: datetime, within: timedelta) -> tuple[KeyExpiryWarning, ...]:
    """Unrevoked keys ending before `now + within`, where no key of the same owner and purpose outlasts that.

    A rotated key (its successor already listed) is not a warning: messages
    simply move to the successor. Operators run this on every directory
    version and well ahead of expiry (`rogatory dev up` says it).
    """
    horizon = now + within
    groups: list[tuple[str, str, tuple[PublishedKey, ...]]] = []
    for entry in directory.agencies:
        groups.append((entry.agency_id, "signing", entry.signing_keys))
        groups.append((entry.agency_id, "encryption", entry.encryption_keys))
    groups.append((directory.gateway.gateway_id, "evidence", directory.gateway.evidence_keys))
    groups.append((directory.gateway.gateway_id, "log", directory.gateway.log_keys))
    warnings = []
    for owner, purpose, keys in groups:
        live = [key for key in keys if key.revoked_at is None or key.revoked_at > now]
        if any(key.valid_until > horizon for key in live):
            continue
        warnings += [
            KeyExpiryWarning(owner=owner, purpose=purpose, key_id=key.key_id, valid_until=key.valid_until)
            for key in live
            if key.valid_until <= horizon
        ]
    return tuple(sorted(warnings, key=lambda warning: (warning.valid_until, warning.owner)))


def sign_directory(directory: Directory, authority: SigningPrivateKey) -> SignedStatement:
    """Sign `directory` with the directory authority's key."""
    if directory.authority_key != authority.key_id:
        raise MalformedInput("directory names another authority key than the one signing it")
    return sign_statement(PAYLOAD_TYPE_DIRECTORY, directory.canonical_bytes(), authority)


NOTHING_HELD: Final = 0
"""`held_version` of a caller that never accepted a directory before (its first start, an auditor's first look)."""


def verify_directory(
    signed: SignedStatement,
    authority: SigningPublicKey,
    *,
    now: datetime,
    held_version: int,
    limits: Limits,
) -> Directory:
    """Return the directory if signed by `authority`, not older than `held_version`, unexpired.

    `held_version` is the highest version the caller accepted before; a caller that never
    held one says so with `NOTHING_HELD`, never by leaving the argument out.
    """
    if len(signed.payload) > limits.max_directory_bytes:
        raise DirectoryRejected(f"directory of {len(signed.payload)} bytes is over the limit", code=ErrorCode.TOO_LARGE)
    payload = verify_statement(signed, PAYLOAD_TYPE_DIRECTORY, authority, code=ErrorCode.DIRECTORY_SIGNATURE_INVALID)
    directory = parse_model(Directory, payload, what="directory", code=ErrorCode.MALFORMED_DIRECTORY)
    if directory.authority_key != authority.key_id:
        raise DirectoryRejected("directory names another authority key than the one that signed it")
    if directory.version < held_version:
        raise DirectoryRejected(
            f"directory version {directory.version} is older than version {held_version} already held",
            code=ErrorCode.DIRECTORY_ROLLBACK,
        )
    if now >= directory.expires_at:
        raise DirectoryRejected(
            f"directory version {directory.version} expired at {directory.expires_at.isoformat()}",
            code=ErrorCode.DIRECTORY_EXPIRED,
        )
    return directory


__all__ = [
    "ANY_MESSAGE_TYPE",
    "DIRECTORY_FORMAT",
    "NOTHING_HELD",
    "AgencyEntry",
    "Agreement",
    "AgreementRule",
    "Directory",
    "GatewayEntry",
    "KeyExpiryWarning",
    "PublishedEncryptionKey",
    "PublishedKey",
    "PublishedSigningKey",
    "TimestampAuthorityEntry",
    "key_expiry_warnings",
    "sign_directory",
    "verify_directory",
]
