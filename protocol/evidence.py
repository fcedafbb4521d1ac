"""Evidence: signed statements of what happened to one message, for one recipient.

| evidence                                      | issued by                                   |
| --------------------------------------------- | ------------------------------------------- |
| SUBMISSION_ACCEPTED / SUBMISSION_REJECTED      | gateway, after verification and policy      |
| RELAY_ACCEPTED / RELAY_FAILED                  | gateway, after the broker confirmed the copy |
| DELIVERY / NON_DELIVERY                        | recipient agent (gateway on time-out)        |
| RETRIEVAL / NON_RETRIEVAL                      | recipient agent (gateway on time-out)        |

Each names the message id and `message_digest`, the SHA-256 of the exact
header bytes the sender signed; negative evidence carries a reason code.
`verify_evidence` checks the signature under a key the directory gives the
issuer, and that the issuer is allowed to issue that type of evidence;
`check_evidence_time` bounds its `at`, the issuer's claim, by the receiver's
record of the message and its clock.

Evidence travels one statement a message (`KIND_EVIDENCE`: the signed
statement's bytes) or several for one destination together
(`KIND_EVIDENCE_BATCH`: `encode_evidence_batch`), each statement in a batch
exactly the bytes it would travel as alone. A batch carries no signature of
its own: each statement is signed and verified on its own, the broker vouches
for who published the batch (`user_id`), and nothing is claimed of the batch
as a whole (which statements travel together is the relay's accident), so a
signature over it would prove nothing a receiver uses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Final, Literal

from pydantic import Field, model_validator

from protocol.directory import Directory, PublishedSigningKey
from protocol.encoding import UtcTimestamp, parse_json_strict, truncate_to_millis
from protocol.errors import AuthenticationFailed, ErrorCode, FreshnessViolation, KeyRejected, MalformedInput
from protocol.ids import AgencyId, AgencyIdField, MessageId, MessageIdField
from protocol.keys import SigningPrivateKey
from protocol.limits import Limits
from protocol.model import FrozenModel, parse_model
from protocol.signing import PAYLOAD_TYPE_EVIDENCE, SignedStatement, sign_statement, verify_statement

EVIDENCE_FORMAT: Final = "rogatory-evidence/1"


class EvidenceType(StrEnum):
    """The evidence names of DESIGN.md."""

    SUBMISSION_ACCEPTED = "SUBMISSION_ACCEPTED"
    SUBMISSION_REJECTED = "SUBMISSION_REJECTED"
    RELAY_ACCEPTED = "RELAY_ACCEPTED"
    RELAY_FAILED = "RELAY_FAILED"
    DELIVERY = "DELIVERY"
    NON_DELIVERY = "NON_DELIVERY"
    RETRIEVAL = "RETRIEVAL"
    NON_RETRIEVAL = "NON_RETRIEVAL"


NEGATIVE_EVIDENCE: Final = frozenset(
    {
        EvidenceType.SUBMISSION_REJECTED,
        EvidenceType.RELAY_FAILED,
        EvidenceType.NON_DELIVERY,
        EvidenceType.NON_RETRIEVAL,
    }
)
GATEWAY_EVIDENCE: Final = frozenset(
    {
        EvidenceType.SUBMISSION_ACCEPTED,
        EvidenceType.SUBMISSION_REJECTED,
        EvidenceType.RELAY_ACCEPTED,
        EvidenceType.RELAY_FAILED,
        EvidenceType.NON_DELIVERY,
        EvidenceType.NON_RETRIEVAL,
    }
)
RECIPIENT_EVIDENCE: Final = frozenset(
    {EvidenceType.DELIVERY, EvidenceType.NON_DELIVERY, EvidenceType.RETRIEVAL, EvidenceType.NON_RETRIEVAL}
)


class Reason(FrozenModel):
    """Why negative evidence was issued: a stable code and a short explanation."""

    code: str = Field(pattern=r"^[A-Z][A-Z_]{1,63}$")
    detail: str = Field(max_length=1000)


class EvidenceStatement(FrozenModel):
    """What an issuer states about one message and one recipient at one time."""

    format: Literal["rogatory-evidence/1"] = EVIDENCE_FORMAT
    evidence_type: EvidenceType
    message_id: MessageIdField | None = None
    message_digest: str = Field(pattern=r"^[0-9a-f]{64}$")
    sender: AgencyIdField
    recipient: AgencyIdField | None = None
    message_type: str | None = Field(default=None, pattern=r"^[A-Z][A-Z_]{1,63}$")
    case_id: str | None = Field(default=None, max_length=64)
    issuer: str = Field(min_length=1, max_length=100)
    at: UtcTimestamp
    reason: Reason | None = None

    @model_validator(mode="after")
    def _reason_iff_negative(self) -> EvidenceStatement:
        negative = self.evidence_type in NEGATIVE_EVIDENCE
        if negative and self.reason is None:
            raise ValueError(f"{self.evidence_type} requires a reason")
        if not negative and self.reason is not None:
            raise ValueError(f"{self.evidence_type} carries no reason")
        if self.evidence_type in RECIPIENT_EVIDENCE and self.recipient is None:
            raise ValueError(f"{self.evidence_type} names the recipient")
        if self.message_id is None and self.evidence_type != EvidenceType.SUBMISSION_REJECTED:
            raise ValueError("only a rejected submission may lack a message id")
        return self

    @property
    def is_negative(self) -> bool:
        """Whether this is negative evidence."""
        return self.evidence_type in NEGATIVE_EVIDENCE

    @property
    def identity(self) -> str:
        """One event, one identity: what makes a redelivered statement a duplicate."""
        message = str(self.message_id) if self.message_id is not None else "-"
        return f"evidence/{self.evidence_type}/{self.sender}/{message}/{self.recipient or '-'}/{self.message_digest}"


@dataclass(frozen=True, slots=True)
class VerifiedEvidence:
    """Evidence whose signature verified under a key the directory gives its issuer."""

    statement: EvidenceStatement
    signed: SignedStatement
    issuer_key: PublishedSigningKey


def new_statement(
    evidence_type: EvidenceType,
    *,
    message_id: MessageId | None,
    message_digest: str,
    sender: AgencyId,
    recipient: AgencyId | None,
    issuer: str,
    at: datetime,
    message_type: str | None = None,
    case_id: str | None = None,
    reason: Reason | None = None,
) -> EvidenceStatement:
    """Build a statement, timestamps truncated as they will be encoded."""
    return EvidenceStatement(
        evidence_type=evidence_type,
        message_id=message_id,
        message_digest=message_digest,
        sender=sender,
        recipient=recipient,
        message_type=message_type,
        case_id=case_id,
        issuer=issuer,
        at=truncate_to_millis(at),
        reason=reason,
    )


def issue_evidence(statement: EvidenceStatement, key: SigningPrivateKey) -> SignedStatement:
    """Sign `statement` with the issuer's key."""
    return sign_statement(PAYLOAD_TYPE_EVIDENCE, statement.canonical_bytes(), key)


def parse_signed_evidence(raw: bytes, limits: Limits) -> SignedStatement:
    """Parse the signed wrapper of evidence as it travels (the statement stays unverified)."""
    if len(raw) > limits.max_evidence_bytes:
        raise MalformedInput(f"evidence of {len(raw)} bytes is over the limit", code=ErrorCode.TOO_LARGE)
    parse_json_strict(raw, max_bytes=limits.max_evidence_bytes, max_depth=4)
    return SignedStatement.from_json(raw)


EVIDENCE_BATCH_FORMAT: Final = "rogatory-evidence-batch/1"


def encode_evidence_batch(statements: list[bytes]) -> bytes:
    """One batch of signed statements (each as `parse_signed_evidence` takes it), in order.

    `{"format": "rogatory-evidence-batch/1", "statements": ["<signed statement>", ...]}`:
    each statement is a JSON string holding its exact bytes, so a receiver
    checks the very bytes a single delivery would carry.
    """
    return json.dumps(
        {"format": EVIDENCE_BATCH_FORMAT, "statements": [raw.decode("utf-8") for raw in statements]},
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode("utf-8")


def parse_evidence_batch(raw: bytes, limits: Limits) -> list[bytes]:
    """The statements of a batch, unparsed and unverified (each is then taken as a single delivery's body).

    Refuses the batch as a whole (`MalformedInput`) only when it is not a
    batch at all: over its size or count, not strict JSON, another format,
    or an entry that is not a string. A statement that is bad on its own is
    the receiver's to refuse alone.
    """
    if len(raw) > limits.max_evidence_batch_bytes:
        raise MalformedInput(f"evidence batch of {len(raw)} bytes is over the limit", code=ErrorCode.TOO_LARGE)
    document = parse_json_strict(raw, max_bytes=limits.max_evidence_batch_bytes, max_depth=3)
    if not isinstance(document, dict) or set(document) != {"format", "statements"}:
        raise MalformedInput("an evidence batch is an object of `format` and `statements`")
    if document["format"] != EVIDENCE_BATCH_FORMAT:
        raise MalformedInput(f"evidence batch format {str(document['format'])[:60]!r} is not {EVIDENCE_BATCH_FORMAT}")
    statements = document["statements"]
    if not isinstance(statements, list) or not statements:
        raise MalformedInput("an evidence batch holds a non-empty list of statements")
    if len(statements) > limits.max_evidence_batch_statements:
        raise MalformedInput(
            f"evidence batch of {len(statements)} statements is over the limit", code=ErrorCode.TOO_LARGE
        )
    if not all(isinstance(statement, str) for statement in statements):
        raise MalformedInput("each statement of an evidence batch is a string")
    try:
        return [statement.encode("utf-8") for statement in statements]
    except UnicodeEncodeError as exc:
        raise MalformedInput("a statement of an evidence batch is not valid text") from exc


def verify_evidence(signed: SignedStatement, directory: Directory, *, now: datetime) -> VerifiedEvidence:
    """Verify `signed` and check its issuer may issue its type of evidence, as of `now`.

    The gateway's evidence keys may sign every type the gateway issues; an
    agency's signing keys may sign only recipient evidence about messages
    addressed to that agency. `now` is the time of the check: a key revoked
    before it is refused.
    """
    return _verify_evidence(signed, directory, now=now)


def verify_evidence_as_of_its_time(signed: SignedStatement, directory: Directory) -> VerifiedEvidence:
    """Verify `signed` as `verify_evidence` does, judging the key as of the statement's own time (`at`).

    What an auditor checking history runs: a key revoked after the statement
    was issued does not undo it. Services take `verify_evidence` with their
    clock instead.
    """
    return _verify_evidence(signed, directory, now=None)


def check_evidence_time(verified: VerifiedEvidence, *, accepted_at: datetime, now: datetime, limits: Limits) -> None:
    """Refuse evidence dated outside [`accepted_at`, `now`] by more than the clock skew, or by a long-retired key.

    `accepted_at` is when the receiver accepted the message the evidence is
    about: nothing happened to it before. `at` is the issuer's claim, so the
    issuer's key is also judged on the receiver's clock (`check_not_retired`).
    """
    at = verified.statement.at
    if at > now + limits.max_clock_skew:
        raise FreshnessViolation(
            f"evidence dated {at.isoformat()}, more than {limits.max_clock_skew} after now ({now.isoformat()})",
            code=ErrorCode.NOT_YET_VALID,
        )
    if at < accepted_at - limits.max_clock_skew:
        raise FreshnessViolation(
            f"evidence dated {at.isoformat()}, more than {limits.max_clock_skew} before its message "
            f"was accepted ({accepted_at.isoformat()})",
            code=ErrorCode.BACKDATED,
        )
    verified.issuer_key.check_not_retired(now=now, grace=limits.retired_key_grace, what="evidence")


def _verify_evidence(signed: SignedStatement, directory: Directory, *, now: datetime | None) -> VerifiedEvidence:
    try:
        issuer_key = directory.gateway_evidence_key(signed.key_id)
        issuer_agency: AgencyId | None = None
    except KeyRejected:
        agency, issuer_key = directory.agency_signing_key(signed.key_id)
        issuer_agency = agency.agency_id
    payload = verify_statement(
        signed, PAYLOAD_TYPE_EVIDENCE, issuer_key.verifier, code=ErrorCode.EVIDENCE_SIGNATURE_INVALID
    )
    statement = parse_model(EvidenceStatement, payload, what="evidence statement", code=ErrorCode.MALFORMED_EVIDENCE)
    issuer_key.check_usable(created_at=statement.at, now=statement.at if now is None else now, what="evidence")
    if issuer_agency is None:
        if statement.issuer != directory.gateway.gateway_id or statement.evidence_type not in GATEWAY_EVIDENCE:
            raise AuthenticationFailed(
                f"gateway key signed {statement.evidence_type} as issuer {statement.issuer!r}",
                code=ErrorCode.EVIDENCE_ISSUER_NOT_ALLOWED,
            )
    elif (
        statement.issuer != issuer_agency
        or statement.recipient != issuer_agency
        or statement.evidence_type not in RECIPIENT_EVIDENCE
    ):
        raise AuthenticationFailed(
            f"key of {issuer_agency} signed {statement.evidence_type} as issuer {statement.issuer!r} "
            f"about recipient {statement.recipient}",
            code=ErrorCode.EVIDENCE_ISSUER_NOT_ALLOWED,
        )
    return VerifiedEvidence(statement=statement, signed=signed, issuer_key=issuer_key)


__all__ = [
    "EVIDENCE_BATCH_FORMAT",
    "EVIDENCE_FORMAT",
    "GATEWAY_EVIDENCE",
    "NEGATIVE_EVIDENCE",
    "RECIPIENT_EVIDENCE",
    "EvidenceStatement",
    "EvidenceType",
    "Reason",
    "VerifiedEvidence",
    "check_evidence_time",
    "encode_evidence_batch",
    "issue_evidence",
    "new_statement",
    "parse_evidence_batch",
    "parse_signed_evidence",
    "verify_evidence",
    "verify_evidence_as_of_its_time",
]
