"""The leaves of the audit log: what is recorded, never content.

Every leaf is the RFC 8785 encoding of one of these objects, hashed into the
Merkle tree with RFC 9162's leaf prefix (`protocol.merkle.leaf_hash`):

* `evidence`: one signed evidence statement, as issued; identity: the statement's `identity`.
* `directory`: one signed directory version, as the authority signed it; identity `directory/<version>`.
* `rejected_input`: what the gateway refused without anyone to address evidence to (who
  published it, its digest and length, the reason); identity `rejected/<publisher>/<digest>`.
* `operator_action`: an operator's re-drive, discard or configuration change; identity
  `operator/<action id>`.
* `dead_letter`: a delivery the broker dead-lettered (over the delivery limit, rejected),
  as the gateway took it into its hold (queue, reason, publisher, digest and length, never
  content); identity `dead/<queue>/<time of death>/<digest>`.
* `attachments`: the attachment bodies an accepted message carries: the signed header
  (exact bytes and the sender's signature) and the digest and length of each body's
  ciphertext it commits to; identity `attachments/<sender>/<message id>`. An auditor
  checks it with `verify_attachments_leaf`: which files travelled, without seeing them.
* `report_signed`: the gateway signed (PAdES) an agency's case report: the agency's signed
  request (which agency, the SHA-256 of the PDF as drawn), the case, the messages it lists and
  the digest of the embedded proof, the signing certificate's digest; identity
  `report/<agency>/<pdf sha256>`. An auditor checks it with `verify_report_leaf`.
* `blob_deleted`: the gateway deleted an attachment body it held (after its recipients
  retrieved it and the retention period passed, or when nobody could retrieve it any
  more); identity `blob_deleted/<ciphertext digest>/<stored at>`.

The identity makes appending idempotent: a broker redelivery of the same
event finds its identity already logged and adds no second leaf.

Each leaf also gets a *receipt*: the log key's signature over the log's
origin, the leaf's index and its hash (domain-separated). Checkpoints prove
the whole; receipts let an auditor name the first entry that was changed,
deleted, inserted or moved in a stored copy of the log, which a root alone
cannot locate.
"""

from __future__ import annotations

import hmac
from datetime import datetime
from typing import Annotated, Final, Literal

from pydantic import Field, TypeAdapter, ValidationError

from protocol.attachments import PAYLOAD_TYPE_BLOB_REQUEST, AttachmentCommitment, BlobRequest
from protocol.directory import Directory
from protocol.encoding import Base64Bytes, UtcTimestamp, b64encode, canonical_json, pae, sha256_hex
from protocol.envelope import EnvelopeHeader
from protocol.errors import ContentInvalid, ErrorCode, ProofInvalid, ProtocolError
from protocol.evidence import EvidenceStatement, Reason
from protocol.ids import AgencyIdField, KeyIdField
from protocol.keys import SigningPrivateKey, SigningPublicKey
from protocol.model import FrozenModel, field_errors, parse_model
from protocol.reports import REPORT_SIGNING_PATH
from protocol.signing import PAYLOAD_TYPE_HEADER, SignedStatement, verify_statement

LEAF_FORMAT: Final = "rogatory-leaf/1"
PAYLOAD_TYPE_LEAF_RECEIPT: Final = "application/vnd.rogatory.leaf-receipt+json; version=1"


class EvidenceLeaf(FrozenModel):
    """A signed evidence statement, verbatim."""

    format: Literal["rogatory-leaf/1"] = LEAF_FORMAT
    kind: Literal["evidence"] = "evidence"
    identity: str = Field(max_length=300)
    evidence: SignedStatement


class DirectoryLeaf(FrozenModel):
    """A directory version, verbatim as signed by the directory authority."""

    format: Literal["rogatory-leaf/1"] = LEAF_FORMAT
    kind: Literal["directory"] = "directory"
    identity: str = Field(max_length=300)
    version: int = Field(ge=1)
    directory: SignedStatement


class RejectedInputLeaf(FrozenModel):
    """Input the gateway refused where no evidence could be addressed, or that was not evidence."""

    format: Literal["rogatory-leaf/1"] = LEAF_FORMAT
    kind: Literal["rejected_input"] = "rejected_input"
    identity: str = Field(max_length=300)
    at: UtcTimestamp
    publisher: str | None = Field(default=None, max_length=200)
    input_kind: str = Field(max_length=100)
    body_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    body_length: int = Field(ge=0)
    reason: Reason


class OperatorActionLeaf(FrozenModel):
    """An operator's action on the exchange: who, what, on which target, why."""

    format: Literal["rogatory-leaf/1"] = LEAF_FORMAT
    kind: Literal["operator_action"] = "operator_action"
    identity: str = Field(max_length=300)
    at: UtcTimestamp
    operator: str = Field(max_length=200)
    action: str = Field(pattern=r"^[a-z][a-z_]{1,63}$")
    target: str = Field(max_length=300)
    detail: str = Field(max_length=2000)


class DeadLetterLeaf(FrozenModel):
    """A delivery the broker dead-lettered, taken into the gateway's hold for the operator."""

    format: Literal["rogatory-leaf/1"] = LEAF_FORMAT
    kind: Literal["dead_letter"] = "dead_letter"
    identity: str = Field(max_length=300)
    at: UtcTimestamp
    queue: str = Field(max_length=255)
    reason: str = Field(pattern=r"^[a-z][a-z_]{1,63}$")
    died_at: str = Field(max_length=40)
    death_count: int = Field(ge=0)
    publisher: str | None = Field(default=None, max_length=200)
    input_kind: str = Field(max_length=100)
    message_id: str | None = Field(default=None, max_length=100)
    body_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    body_length: int = Field(ge=0)


class AttachmentsLeaf(FrozenModel):
    """The attachment bodies of one accepted message, proven by the sender's signed header."""

    format: Literal["rogatory-leaf/1"] = LEAF_FORMAT
    kind: Literal["attachments"] = "attachments"
    identity: str = Field(max_length=300)
    at: UtcTimestamp
    sender: AgencyIdField
    message_id: str = Field(max_length=100)
    message_digest: str = Field(pattern=r"^[0-9a-f]{64}$")
    signer_key_id: KeyIdField
    header: Base64Bytes
    header_signature: Base64Bytes
    attachments: tuple[AttachmentCommitment, ...] = Field(min_length=1)


class BlobDeletedLeaf(FrozenModel):
    """The gateway deleted an attachment body: which, why, and who had retrieved it."""

    format: Literal["rogatory-leaf/1"] = LEAF_FORMAT
    kind: Literal["blob_deleted"] = "blob_deleted"
    identity: str = Field(max_length=300)
    at: UtcTimestamp
    ciphertext_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    ciphertext_length: int = Field(ge=0)
    uploader: AgencyIdField
    stored_at: UtcTimestamp
    reason: Literal["retrieved", "expired", "unreferenced"]
    messages: tuple[str, ...] = ()
    retrieved_by: tuple[AgencyIdField, ...] = ()


class ReportSignedLeaf(FrozenModel):
    """The gateway signed an agency's case report, having checked its proof against this log."""

    format: Literal["rogatory-leaf/1"] = LEAF_FORMAT
    kind: Literal["report_signed"] = "report_signed"
    identity: str = Field(max_length=300)
    at: UtcTimestamp
    agency: AgencyIdField
    case_id: str = Field(max_length=64)
    pdf_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    proof_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    messages: tuple[str, ...] = Field(min_length=1)
    statements: int = Field(ge=1)
    signer_certificate_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    request: SignedStatement


def report_leaf_identity(agency: str, pdf_sha256: str) -> str:
    """The identity of the leaf recording the signature of the report `pdf_sha256` drawn by `agency`."""
    return f"report/{agency}/{pdf_sha256}"


def verify_report_leaf(leaf: ReportSignedLeaf, directory: Directory) -> BlobRequest:
    """The leaf's request is signed by its agency's key, for the report endpoint and its PDF; its identity follows.

    Returns the verified request. `ProofInvalid` (or the signature's refusal) otherwise.
    """
    owner, key = directory.agency_signing_key(leaf.request.key_id)
    payload = verify_statement(leaf.request, PAYLOAD_TYPE_BLOB_REQUEST, key.verifier)
    request = parse_model(BlobRequest, payload, what="report signing request", code=ErrorCode.PROOF_INVALID)
    if owner.agency_id != request.agency or request.agency != leaf.agency:
        raise ProofInvalid("the report request is signed by another agency than the one it and the leaf name")
    if request.method != "POST" or request.path != REPORT_SIGNING_PATH or request.body_sha256 != leaf.pdf_sha256:
        raise ProofInvalid("the agency's signed request is for another endpoint or PDF than the leaf names")
    if leaf.identity != report_leaf_identity(leaf.agency, leaf.pdf_sha256):
        raise ProofInvalid("the leaf's identity is not the one its content implies")
    return request


def verify_attachments_leaf(leaf: AttachmentsLeaf, directory: Directory, *, now: datetime) -> EnvelopeHeader:
    """The header in `leaf` is signed by its sender, has the digest evidence names, and commits to the bodies listed.

    Returns the verified header. What an auditor runs to prove which files
    travelled with a message: the ciphertext digests in the leaf are the ones
    the sender signed, and every evidence statement naming `message_digest`
    covers them.
    """
    owner, key = directory.agency_signing_key(leaf.signer_key_id)
    key.verifier.verify(pae(PAYLOAD_TYPE_HEADER, leaf.header), leaf.header_signature)
    header = parse_model(EnvelopeHeader, leaf.header, what="envelope header", code=ErrorCode.MALFORMED_ENVELOPE)
    if not hmac.compare_digest(sha256_hex(leaf.header), leaf.message_digest):
        raise ProofInvalid("the leaf's message digest is not the digest of its header")
    if header.sender != owner.agency_id or header.sender != leaf.sender or str(header.message_id) != leaf.message_id:
        raise ProofInvalid("the leaf names another sender or message than its signed header")
    if (header.attachments or ()) != leaf.attachments:
        raise ProofInvalid("the leaf lists other attachment bodies than its signed header commits to")
    key.check_usable(created_at=header.created_at, now=now, what="signing")
    return header


def dead_letter_identity(queue: str, died_at: str, body_sha256: str) -> str:
    """The identity of the dead-letter leaf for one death of one delivery."""
    return f"dead/{queue}/{died_at}/{body_sha256}"


AuditLeaf = Annotated[
    EvidenceLeaf
    | DirectoryLeaf
    | RejectedInputLeaf
    | OperatorActionLeaf
    | DeadLetterLeaf
    | AttachmentsLeaf
    | BlobDeletedLeaf
    | ReportSignedLeaf,
    Field(discriminator="kind"),
]
_LEAF_ADAPTER: TypeAdapter[AuditLeaf] = TypeAdapter(AuditLeaf)


def evidence_leaf(signed: SignedStatement, statement: EvidenceStatement) -> EvidenceLeaf:
    """The leaf recording `signed`, whose verified content is `statement`."""
    return EvidenceLeaf(identity=statement.identity, evidence=signed)


def directory_leaf(signed: SignedStatement, version: int) -> DirectoryLeaf:
    """The leaf recording one directory version."""
    return DirectoryLeaf(identity=f"directory/{version}", version=version, directory=signed)


def encode_leaf(leaf: AuditLeaf) -> bytes:
    """The leaf's bytes: what is hashed into the tree."""
    return leaf.canonical_bytes()


def decode_leaf(raw: bytes) -> AuditLeaf:
    """Parse leaf bytes, refusing anything that is not exactly one known kind."""
    try:
        return _LEAF_ADAPTER.validate_json(raw, strict=True)
    except ValidationError as exc:
        errors = field_errors(exc)
        raise ContentInvalid(
            f"audit leaf is invalid: {len(errors)} error(s)", errors, code=ErrorCode.PROOF_INVALID
        ) from None


def _receipt_message(origin: str, index: int, leaf_hash: bytes) -> bytes:
    statement = canonical_json({"origin": origin, "index": index, "leaf_hash": b64encode(leaf_hash)})
    return pae(PAYLOAD_TYPE_LEAF_RECEIPT, statement)


def sign_leaf_receipt(origin: str, index: int, leaf_hash: bytes, log_key: SigningPrivateKey) -> bytes:
    """The log's signature that the leaf with `leaf_hash` sits at `index` of the log `origin`."""
    return log_key.sign(_receipt_message(origin, index, leaf_hash))


def verify_leaf_receipt(origin: str, index: int, leaf_hash: bytes, receipt: bytes, log_key: SigningPublicKey) -> None:
    """Raise `ProofInvalid` unless `receipt` is the log's signature for this leaf at this index."""
    try:
        log_key.verify(_receipt_message(origin, index, leaf_hash), receipt, code=ErrorCode.PROOF_INVALID)
    except ProtocolError as exc:
        raise ProofInvalid(f"the log's receipt does not match a leaf with this hash at index {index}") from exc


__all__ = [
    "LEAF_FORMAT",
    "PAYLOAD_TYPE_LEAF_RECEIPT",
    "AttachmentsLeaf",
    "AuditLeaf",
    "BlobDeletedLeaf",
    "DeadLetterLeaf",
    "DirectoryLeaf",
    "EvidenceLeaf",
    "OperatorActionLeaf",
    "RejectedInputLeaf",
    "ReportSignedLeaf",
    "dead_letter_identity",
    "decode_leaf",
    "directory_leaf",
    "encode_leaf",
    "evidence_leaf",
    "report_leaf_identity",
    "sign_leaf_receipt",
    "verify_attachments_leaf",
    "verify_leaf_receipt",
    "verify_report_leaf",
]
