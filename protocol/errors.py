"""Errors of the protocol core, each with a stable machine code.

The codes are public: agency systems, operators and auditors match on them,
they appear in problem+json answers, in negative evidence and in audit
entries. Add codes freely; never rename or reuse one.

Tree::

    ProtocolError                      every refusal the core can raise
     +-- MalformedInput                bytes that are not what they claim to be
     |    +-- LimitExceeded            over a size, count or depth limit
     +-- ContentInvalid                a document that fails its content model
     +-- AuthenticationFailed          signatures, keys, key wrapping, commitments
     |    +-- KeyRejected              unknown, not yet valid, expired or revoked key
     +-- FreshnessViolation            expired, stale or from the future
     +-- PolicyDenied                  no agreement allows it, or unknown party
     +-- DirectoryRejected             unsigned, older or expired directory
     +-- IllegalTransition             a message the case state does not allow
     +-- ProofInvalid                  a Merkle proof or checkpoint that does not verify

Messages say what was checked, what was expected and what was found; they
never contain key material or message content.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ErrorCode(StrEnum):
    """Stable machine codes. The value is what travels."""

    # Input that does not parse
    MALFORMED_JSON = "MALFORMED_JSON"
    DUPLICATE_KEY = "DUPLICATE_KEY"
    INVALID_UNICODE = "INVALID_UNICODE"
    MALFORMED_ENVELOPE = "MALFORMED_ENVELOPE"
    MALFORMED_EVIDENCE = "MALFORMED_EVIDENCE"
    MALFORMED_DIRECTORY = "MALFORMED_DIRECTORY"
    MALFORMED_BUNDLE = "MALFORMED_BUNDLE"
    UNSUPPORTED_VERSION = "UNSUPPORTED_VERSION"
    # Limits
    TOO_LARGE = "TOO_LARGE"
    NESTING_TOO_DEEP = "NESTING_TOO_DEEP"
    NUMBER_OUT_OF_RANGE = "NUMBER_OUT_OF_RANGE"
    TOO_MANY_ITEMS = "TOO_MANY_ITEMS"
    # Content
    CONTENT_INVALID = "CONTENT_INVALID"
    INVALID_IDENTIFIER = "INVALID_IDENTIFIER"
    PAYLOAD_DIGEST_MISMATCH = "PAYLOAD_DIGEST_MISMATCH"
    # Authentication of the sender and the envelope
    UNKNOWN_KEY = "UNKNOWN_KEY"
    KEY_NOT_VALID = "KEY_NOT_VALID"
    KEY_REVOKED = "KEY_REVOKED"
    BAD_SIGNATURE = "BAD_SIGNATURE"
    SENDER_MISMATCH = "SENDER_MISMATCH"
    BROKER_USER_MISMATCH = "BROKER_USER_MISMATCH"
    CIPHERTEXT_MISMATCH = "CIPHERTEXT_MISMATCH"
    NOT_A_RECIPIENT = "NOT_A_RECIPIENT"
    RECIPIENT_KEY_MISMATCH = "RECIPIENT_KEY_MISMATCH"
    KEY_UNWRAP_FAILED = "KEY_UNWRAP_FAILED"
    KEY_COMMITMENT_MISMATCH = "KEY_COMMITMENT_MISMATCH"
    DECRYPTION_FAILED = "DECRYPTION_FAILED"
    CONTENT_SIGNATURE_INVALID = "CONTENT_SIGNATURE_INVALID"
    BINDING_MISMATCH = "BINDING_MISMATCH"
    DOCUMENT_DIGEST_MISMATCH = "DOCUMENT_DIGEST_MISMATCH"
    HEADER_DOCUMENT_MISMATCH = "HEADER_DOCUMENT_MISMATCH"
    DOCUMENT_SIGNATURE_MISSING = "DOCUMENT_SIGNATURE_MISSING"
    DOCUMENT_SIGNATURE_UNSUPPORTED = "DOCUMENT_SIGNATURE_UNSUPPORTED"
    DOCUMENT_SIGNATURE_INVALID = "DOCUMENT_SIGNATURE_INVALID"
    EVIDENCE_SIGNATURE_INVALID = "EVIDENCE_SIGNATURE_INVALID"
    EVIDENCE_ISSUER_NOT_ALLOWED = "EVIDENCE_ISSUER_NOT_ALLOWED"
    EVIDENCE_MISMATCH = "EVIDENCE_MISMATCH"
    # Time and replay
    EXPIRED = "EXPIRED"
    NOT_YET_VALID = "NOT_YET_VALID"
    STALE = "STALE"
    INVALID_LIFETIME = "INVALID_LIFETIME"
    REPLAYED = "REPLAYED"
    BACKDATED = "BACKDATED"
    # Policy
    POLICY_DENIED = "POLICY_DENIED"
    UNKNOWN_AGENCY = "UNKNOWN_AGENCY"
    # Directory
    DIRECTORY_SIGNATURE_INVALID = "DIRECTORY_SIGNATURE_INVALID"
    DIRECTORY_ROLLBACK = "DIRECTORY_ROLLBACK"
    DIRECTORY_EXPIRED = "DIRECTORY_EXPIRED"
    # Case lifecycle
    ILLEGAL_TRANSITION = "ILLEGAL_TRANSITION"
    # Audit log
    PROOF_INVALID = "PROOF_INVALID"
    CHECKPOINT_INVALID = "CHECKPOINT_INVALID"
    TIMESTAMP_INVALID = "TIMESTAMP_INVALID"
    # Delivery outcomes decided by services (named here so every code lives in one list)
    ROUTING_FAILED = "ROUTING_FAILED"
    DELIVERY_LIMIT_EXCEEDED = "DELIVERY_LIMIT_EXCEEDED"
    TIMED_OUT = "TIMED_OUT"
    """A connectivity test whose pong did not come back before its deadline."""
    # HTTP API of the agent
    UNAUTHORIZED = "UNAUTHORIZED"
    FORBIDDEN = "FORBIDDEN"
    NOT_FOUND = "NOT_FOUND"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"
    MESSAGE_ID_CONFLICT = "MESSAGE_ID_CONFLICT"
    IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"
    INVALID_PARAMETER = "INVALID_PARAMETER"
    INVALID_CURSOR = "INVALID_CURSOR"
    SENDER_NOT_OWN_AGENCY = "SENDER_NOT_OWN_AGENCY"
    AMBIGUOUS_MESSAGE_ID = "AMBIGUOUS_MESSAGE_ID"
    PROOFS_PENDING = "PROOFS_PENDING"
    CONTENT_PROOF_MISSING = "CONTENT_PROOF_MISSING"
    RATE_LIMITED = "RATE_LIMITED"
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
    CONTENT_PURGED = "CONTENT_PURGED"
    LOG_RECOVERING = "LOG_RECOVERING"
    # attachments
    ATTACHMENT_MISSING = "ATTACHMENT_MISSING"
    ATTACHMENT_MISMATCH = "ATTACHMENT_MISMATCH"
    ATTACHMENT_NOT_READY = "ATTACHMENT_NOT_READY"
    UPLOAD_OFFSET_MISMATCH = "UPLOAD_OFFSET_MISMATCH"
    BODY_DIGEST_MISMATCH = "BODY_DIGEST_MISMATCH"
    QUOTA_EXCEEDED = "QUOTA_EXCEEDED"
    # webhooks
    WEBHOOK_URL_REFUSED = "WEBHOOK_URL_REFUSED"
    TOO_MANY_SUBSCRIPTIONS = "TOO_MANY_SUBSCRIPTIONS"


@dataclass(frozen=True, slots=True)
class FieldError:
    """One problem at one place of a document: `loc` is the path from its root."""

    loc: tuple[str | int, ...]
    msg: str


class ProtocolError(Exception):
    """Root of every refusal raised by `protocol`."""

    default_code: ErrorCode = ErrorCode.MALFORMED_ENVELOPE

    def __init__(self, detail: str, *, code: ErrorCode | None = None) -> None:
        super().__init__(detail)
        self.code: ErrorCode = code or self.default_code
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.code}: {self.detail}"


class MalformedInput(ProtocolError):
    """Bytes that do not parse as what they claim to be."""

    default_code = ErrorCode.MALFORMED_ENVELOPE


class LimitExceeded(MalformedInput):
    """Input over a size, count or depth limit."""

    default_code = ErrorCode.TOO_LARGE


class ContentInvalid(ProtocolError):
    """A document that fails its content model; `errors` names every field at once."""

    default_code = ErrorCode.CONTENT_INVALID

    def __init__(
        self,
        detail: str,
        errors: tuple[FieldError, ...] = (),
        *,
        code: ErrorCode | None = None,
    ) -> None:
        super().__init__(detail, code=code)
        self.errors = errors


class AuthenticationFailed(ProtocolError):
    """A signature, key, key wrap, commitment or binding that does not hold."""

    default_code = ErrorCode.BAD_SIGNATURE


class KeyRejected(AuthenticationFailed):
    """A key that is unknown, outside its validity period, or revoked."""

    default_code = ErrorCode.UNKNOWN_KEY


class FreshnessViolation(ProtocolError):
    """A message that is expired, too old to be checked for replay, or from the future."""

    default_code = ErrorCode.EXPIRED


class PolicyDenied(ProtocolError):
    """No agreement of the directory allows this exchange, or a party is unknown."""

    default_code = ErrorCode.POLICY_DENIED


class DirectoryRejected(ProtocolError):
    """A directory that is unsigned, badly signed, older than the one held, or expired."""

    default_code = ErrorCode.DIRECTORY_SIGNATURE_INVALID


class IllegalTransition(ProtocolError):
    """A message type that the case's current state does not allow."""

    default_code = ErrorCode.ILLEGAL_TRANSITION


class ProofInvalid(ProtocolError):
    """A Merkle proof, checkpoint or cosignature that does not verify."""

    default_code = ErrorCode.PROOF_INVALID


__all__ = [
    "AuthenticationFailed",
    "ContentInvalid",
    "DirectoryRejected",
    "ErrorCode",
    "FieldError",
    "FreshnessViolation",
    "IllegalTransition",
    "KeyRejected",
    "LimitExceeded",
    "MalformedInput",
    "PolicyDenied",
    "ProofInvalid",
    "ProtocolError",
]
