"""Signed statements: a payload, its type, the signer's key id and a signature.

The shape follows DSSE: the signature covers `pae(payload_type, payload)`, so
it binds the exact payload bytes and their kind. A verifier checks the
signature over the received bytes and returns them; only then may they be
parsed. Directories, evidence, content statements and enrolment requests all travel
this way.
"""

from __future__ import annotations

from typing import Final

from pydantic import BaseModel, ConfigDict

from protocol.encoding import Base64Bytes, pae
from protocol.errors import AuthenticationFailed, ErrorCode, MalformedInput
from protocol.ids import KeyIdField
from protocol.keys import SigningPrivateKey, SigningPublicKey

PAYLOAD_TYPE_DIRECTORY: Final = "application/vnd.rogatory.directory+json; version=1"
PAYLOAD_TYPE_EVIDENCE: Final = "application/vnd.rogatory.evidence+json; version=1"
PAYLOAD_TYPE_CONTENT: Final = "application/vnd.rogatory.content+json; version=1"
PAYLOAD_TYPE_HEADER: Final = "application/vnd.rogatory.envelope-header+json; version=1"
PAYLOAD_TYPE_AUDIT_LEAF: Final = "application/vnd.rogatory.audit-leaf+json; version=1"
PAYLOAD_TYPE_ENROLMENT: Final = "application/vnd.rogatory.enrolment+json; version=1"
PAYLOAD_TYPE_BUNDLE_MANIFEST: Final = "application/vnd.rogatory.evidence-bundle-manifest+json; version=1"


class SignedStatement(BaseModel):
    """A payload signed by one key. `key_id` is a hint for finding the key, checked after."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    payload_type: str
    payload: Base64Bytes
    key_id: KeyIdField
    signature: Base64Bytes

    @classmethod
    def from_json(cls, raw: bytes | str, *, code: ErrorCode = ErrorCode.MALFORMED_EVIDENCE) -> SignedStatement:
        """Parse the JSON wrapper (not the payload, which stays unverified bytes)."""
        try:
            return cls.model_validate_json(raw)
        except ValueError as exc:
            raise MalformedInput(f"not a signed statement: {_first_error(exc)}", code=code) from exc


def _first_error(exc: ValueError) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


def sign_statement(payload_type: str, payload: bytes, key: SigningPrivateKey) -> SignedStatement:
    """Sign `payload` as `payload_type` with `key`."""
    return SignedStatement(
        payload_type=payload_type,
        payload=payload,
        key_id=key.key_id,
        signature=key.sign(pae(payload_type, payload)),
    )


def verify_statement(
    statement: SignedStatement,
    payload_type: str,
    key: SigningPublicKey,
    *,
    code: ErrorCode = ErrorCode.BAD_SIGNATURE,
) -> bytes:
    """Return the payload bytes if `statement` is a valid signature by `key` over `payload_type`."""
    if statement.payload_type != payload_type:
        raise AuthenticationFailed(
            f"payload type: expected {payload_type!r}, found {statement.payload_type[:80]!r}", code=code
        )
    if statement.key_id != key.key_id:
        raise AuthenticationFailed(f"key id: expected {key.key_id}, found {statement.key_id}", code=code)
    key.verify(pae(payload_type, statement.payload), statement.signature, code=code)
    return statement.payload


__all__ = [
    "PAYLOAD_TYPE_AUDIT_LEAF",
    "PAYLOAD_TYPE_BUNDLE_MANIFEST",
    "PAYLOAD_TYPE_CONTENT",
    "PAYLOAD_TYPE_DIRECTORY",
    "PAYLOAD_TYPE_ENROLMENT",
    "PAYLOAD_TYPE_EVIDENCE",
    "PAYLOAD_TYPE_HEADER",
    "SignedStatement",
    "sign_statement",
    "verify_statement",
]
