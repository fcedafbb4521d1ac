"""Enrolment requests: a party's new public keys and details, signed by every new signing key.

An agency (or the gateway) makes its keys at its own site and sends the
directory authority only this request. The payload names the party and its
public keys; it is signed, with domain separation (`protocol.signing`), by
each signing key it enrols, so whoever holds the request can check that the
keys' owner asked for exactly these details and keys, and that nothing was
swapped on the way (an X25519 key cannot sign: it is bound by the signing
key's signature over it). The authority checks the fingerprint of the
request out of band with the party before adding it.

A request that rotates a party's keys is also signed by a signing key the
directory already lists for it (`verify_enrolment(..., also_by=...)`).
"""

from __future__ import annotations

from typing import Final, Literal

from pydantic import ConfigDict, Field, model_validator

from protocol.encoding import Base64Bytes, UtcTimestamp, sha256_hex
from protocol.errors import AuthenticationFailed, ErrorCode, MalformedInput
from protocol.ids import AgencyIdField, GatewayIdField, KeyId, KeyIdField
from protocol.keys import EncryptionPublicKey, SigningPrivateKey, SigningPublicKey
from protocol.model import FrozenModel, parse_model
from protocol.signing import PAYLOAD_TYPE_ENROLMENT, SignedStatement, sign_statement, verify_statement

ENROLMENT_FORMAT: Final = "rogatory-enrolment/1"
MAX_ENROLMENT_BYTES: Final = 16 * 1024
"""An enrolment request is a few public keys and names: 16 KiB is generous and bounds what the authority parses."""


class EnrolledKey(FrozenModel):
    """A public key as a request enrols it."""

    key_id: KeyIdField
    public_key: Base64Bytes


class AgencyEnrolment(FrozenModel):
    """What an agency asks the authority to list."""

    format: Literal["rogatory-enrolment/1"] = ENROLMENT_FORMAT
    kind: Literal["agency"] = "agency"
    agency_id: AgencyIdField
    name: str = Field(min_length=1, max_length=300)
    country: str = Field(pattern=r"^[A-Z]{2}$")
    created_at: UtcTimestamp
    signing_key: EnrolledKey
    encryption_key: EnrolledKey

    @model_validator(mode="after")
    def _consistent(self) -> AgencyEnrolment:
        if not self.agency_id.startswith(self.country + "-"):
            raise ValueError("agency id must start with the agency's country code")
        if SigningPublicKey(self.signing_key.public_key).key_id != self.signing_key.key_id:
            raise ValueError("signing key_id is not derived from public_key")
        if EncryptionPublicKey(self.encryption_key.public_key).key_id != self.encryption_key.key_id:
            raise ValueError("encryption key_id is not derived from public_key")
        return self

    @property
    def signing_keys(self) -> tuple[EnrolledKey, ...]:
        """The keys that must each sign the request."""
        return (self.signing_key,)


class GatewayEnrolment(FrozenModel):
    """What the gateway asks the authority to list: its evidence and log keys."""

    format: Literal["rogatory-enrolment/1"] = ENROLMENT_FORMAT
    kind: Literal["gateway"] = "gateway"
    gateway_id: GatewayIdField
    log_origin: str = Field(min_length=1, max_length=200, pattern=r"^[\x21-\x7e][\x20-\x7e]*$")
    created_at: UtcTimestamp
    evidence_key: EnrolledKey
    log_key: EnrolledKey

    @model_validator(mode="after")
    def _consistent(self) -> GatewayEnrolment:
        for key in (self.evidence_key, self.log_key):
            if SigningPublicKey(key.public_key).key_id != key.key_id:
                raise ValueError("key_id is not derived from public_key")
        if self.evidence_key.key_id == self.log_key.key_id:
            raise ValueError("the evidence key and the log key must differ")
        return self

    @property
    def signing_keys(self) -> tuple[EnrolledKey, ...]:
        """The keys that must each sign the request."""
        return (self.evidence_key, self.log_key)


class EnrolmentSignature(FrozenModel):
    """One signature over the request's payload."""

    key_id: KeyIdField
    signature: Base64Bytes


class EnrolmentRequest(FrozenModel):
    """The file that travels: the payload bytes and their signatures (DSSE with several signers)."""

    payload_type: Literal["application/vnd.rogatory.enrolment+json; version=1"] = PAYLOAD_TYPE_ENROLMENT
    payload: Base64Bytes
    signatures: tuple[EnrolmentSignature, ...] = Field(min_length=1, max_length=4)

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the payload: what the authority reads back to the party to confirm the request."""
        return sha256_hex(self.payload)


def sign_enrolment(
    enrolment: AgencyEnrolment | GatewayEnrolment,
    keys: tuple[SigningPrivateKey, ...],
) -> EnrolmentRequest:
    """The request for `enrolment`, signed by `keys` (its new signing keys, and for a rotation a listed one)."""
    payload = enrolment.canonical_bytes()
    signatures = tuple(
        EnrolmentSignature(key_id=signed.key_id, signature=signed.signature)
        for signed in (sign_statement(PAYLOAD_TYPE_ENROLMENT, payload, key) for key in keys)
    )
    return EnrolmentRequest(payload=payload, signatures=signatures)


def read_enrolment(raw: bytes) -> EnrolmentRequest:
    """The request's wrapper from its file's bytes (the payload stays unverified)."""
    if len(raw) > MAX_ENROLMENT_BYTES:
        raise MalformedInput(
            f"enrolment request of {len(raw)} bytes is over {MAX_ENROLMENT_BYTES}", code=ErrorCode.TOO_LARGE
        )
    return parse_model(EnrolmentRequest, raw, what="enrolment request", code=ErrorCode.MALFORMED_JSON)


def _signature_by(request: EnrolmentRequest, key: SigningPublicKey) -> None:
    found = [entry for entry in request.signatures if entry.key_id == key.key_id]
    if not found:
        raise AuthenticationFailed(f"enrolment request: expected a signature by key {key.key_id}, found none")
    statement = SignedStatement(
        payload_type=request.payload_type,
        payload=request.payload,
        key_id=found[0].key_id,
        signature=found[0].signature,
    )
    verify_statement(statement, PAYLOAD_TYPE_ENROLMENT, key)


def verify_enrolment(
    request: EnrolmentRequest,
    *,
    also_by: tuple[SigningPublicKey, ...] = (),
) -> AgencyEnrolment | GatewayEnrolment:
    """The enrolment, once every signing key it enrols (and each of `also_by`) signed its exact bytes.

    Verify, then parse: the payload names the keys, so it is parsed to learn
    them, but nothing of it is returned unless each of them verifies.
    """
    kind = parse_model(_Kind, request.payload, what="enrolment request", code=ErrorCode.MALFORMED_JSON).kind
    model: type[AgencyEnrolment | GatewayEnrolment] = AgencyEnrolment if kind == "agency" else GatewayEnrolment
    enrolment = parse_model(model, request.payload, what="enrolment request", code=ErrorCode.MALFORMED_JSON)
    required = [SigningPublicKey(key.public_key) for key in enrolment.signing_keys] + list(also_by)
    for key in required:
        _signature_by(request, key)
    expected = {key.key_id for key in required}
    extra = sorted({entry.key_id for entry in request.signatures} - expected)
    if extra:
        raise AuthenticationFailed(f"enrolment request: signed by keys it does not enrol: {extra}")
    return enrolment


def enrolled_key_ids(enrolment: AgencyEnrolment | GatewayEnrolment) -> tuple[KeyId, ...]:
    """Every key id the enrolment asks to list."""
    if isinstance(enrolment, AgencyEnrolment):
        return (enrolment.signing_key.key_id, enrolment.encryption_key.key_id)
    return (enrolment.evidence_key.key_id, enrolment.log_key.key_id)


class _Kind(FrozenModel):
    model_config = ConfigDict(frozen=True, extra="ignore", strict=True)

    kind: Literal["agency", "gateway"]


__all__ = [
    "ENROLMENT_FORMAT",
    "MAX_ENROLMENT_BYTES",
    "AgencyEnrolment",
    "EnrolledKey",
    "EnrolmentRequest",
    "EnrolmentSignature",
    "GatewayEnrolment",
    "enrolled_key_ids",
    "read_enrolment",
    "sign_enrolment",
    "verify_enrolment",
]
