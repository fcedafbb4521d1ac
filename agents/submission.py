"""The sending side: from a submitted document to a sealed message in the outbox.

`read_submission` parses the body strictly and takes the digest of the
request as the client sent it (what idempotency compares). Then, holding the
case's submission lock (`CaseBook.serialised`), `prepare_submission` runs, in
order: completion of the fields the agent fills in where absent
(`message_id`, `created_at`, `sequence` — the next number in the case,
`integrity`); validation against the content model of the message type; the
sender is this agency; an agreement allows the exchange; seal for the
recipient's current encryption key (and this agency's archive), with this
agent's latest witnessed checkpoint in the header (the log's lines only), so
that the recipient can compare the sender's view of the audit log with its own.
`record_in` then, in the same store transaction as the numbering (so the
case's rows are read once), returns the earlier
answer to a repeated submission, or admits the message to its case (an
illegal one raises `IllegalTransition`: 409) and records it in the outbox,
before anything is published, and wakes the outbox relay. `Submission`
holds the whole use case; the HTTP handler only checks what is HTTP's.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any

import structlog

from agents.cases import CaseBook, Direction
from agents.errors import Conflict
from agents.store import AgentStore, ContentProofRecord, OutboxRecord, Transaction
from protocol.attachments import AttachmentKey
from protocol.checkpoint import SignedCheckpoint
from protocol.directory import Directory, PublishedSigningKey
from protocol.document_signature import document_signature_block, sign_document, verify_document_signature
from protocol.encoding import canonical_json, format_timestamp, parse_json_strict, sha256_hex
from protocol.envelope import ContentProof, Recipient, SealedMessage, seal_with_content_proof
from protocol.errors import ContentInvalid, ErrorCode, FieldError, PolicyDenied, ProtocolError
from protocol.ids import AgencyId, CaseId, KeyId, MessageId, parse_case_id
from protocol.keys import EncryptionPublicKey, SigningPrivateKey
from protocol.limits import Limits
from protocol.mla import MessageDocument, validate_document

log = structlog.get_logger("rogatory.agent.submission")

STATUS_QUEUED = "queued"
INTEGRITY_CANONICALIZATION = "RFC 8785 (JCS)"


@dataclass(frozen=True, slots=True)
class SenderKeys:
    """What this agency seals with."""

    agency: AgencyId
    signing_key: SigningPrivateKey
    archive_key: EncryptionPublicKey


@dataclass(frozen=True, slots=True)
class PreparedSubmission:
    """A validated, completed, sealed submission, not yet recorded."""

    message_id: MessageId
    document: MessageDocument
    document_bytes: bytes
    request_sha256: str
    sealed: SealedMessage
    created_at: datetime
    expires_at: datetime
    content_proof: ContentProof
    """The content statement this agency signed inside the envelope, kept with the message (proof of origin)."""


@dataclass(frozen=True, slots=True)
class Submitted:
    """A submitted body, parsed strictly, before anything is filled in."""

    fields: Mapping[str, Any]
    request_sha256: str
    """SHA-256 of the RFC 8785 form of the request as the client sent it."""

    @property
    def case_id(self) -> str | None:
        """The case it names, if it names a well-formed one (validation reports the rest)."""
        try:
            return parse_case_id(self.fields.get("case_id"))
        except ProtocolError:
            return None

    @property
    def numbered(self) -> bool:
        """Whether the client gave the message its `sequence`."""
        return "sequence" in self.fields


def read_submission(body: bytes, *, limits: Limits) -> Submitted:
    """Parse a submitted body as strict JSON: one object, within the limits."""
    submitted = parse_json_strict(body, max_bytes=limits.max_document_bytes, max_depth=limits.max_json_depth)
    if not isinstance(submitted, dict):
        raise ContentInvalid("a message document is a JSON object", (FieldError((), "expected an object"),))
    return Submitted(MappingProxyType(submitted), sha256_hex(canonical_json(submitted)))


def complete_document(
    submitted: dict[str, Any],
    *,
    now: datetime,
    new_message_id: Callable[[], uuid.UUID],
    sequence: int | None = None,
) -> None:
    """Fill in, where absent, the fields the agent owns: message id, creation time, number in the case, digest."""
    submitted.setdefault("message_id", str(new_message_id()))
    submitted.setdefault("created_at", format_timestamp(now))
    if sequence is not None:
        submitted.setdefault("sequence", sequence)
    if "integrity" not in submitted and "payload" in submitted:
        submitted["integrity"] = {
            "payload_sha256": sha256_hex(canonical_json(submitted["payload"])),
            "canonicalization": INTEGRITY_CANONICALIZATION,
        }


def sign_or_check_document(document: dict[str, Any], *, sender: SenderKeys, directory: Directory) -> dict[str, Any]:
    """The document with its own signature (`protocol.document_signature`): made here, or checked if present.

    Absent: this agent signs the completed document with the agency's signing
    key. Present: it must be a JWS by this agency under a signing key the
    directory gives it, over this very document; a placeholder, another format
    or another signer is refused (422, `DOCUMENT_SIGNATURE_*`), never sent on
    as if it were a signature.
    """
    integrity = document.get("integrity")
    if document_signature_block(document) is None:
        if integrity is None or (isinstance(integrity, dict) and integrity.get("signature") is None):
            return sign_document(document, sender.agency, sender.signing_key)
        return document  # not an object where one is due: validation names the field

    def lookup(key_id: KeyId) -> tuple[str, PublishedSigningKey]:
        entry, key = directory.agency_signing_key(key_id)
        return entry.agency_id, key

    try:
        verify_document_signature(document, lookup, sender=sender.agency)
    except ProtocolError as exc:
        raise ContentInvalid(
            f"the document's own signature is refused: {exc.detail}",
            (FieldError(("integrity", "signature"), exc.detail),),
            code=exc.code,
        ) from exc
    return document


def prepare_submission(
    submitted: Submitted,
    *,
    sender: SenderKeys,
    directory: Directory,
    now: datetime,
    message_ttl: timedelta,
    limits: Limits,
    sequence: int | None = None,
    new_message_id: Callable[[], uuid.UUID] = uuid.uuid4,
    attachments: Sequence[AttachmentKey] = (),
    witnessed_note: str | None = None,
) -> PreparedSubmission:
    """Complete, validate and seal one submitted document (see the module docstring).

    `attachments` are the keys of the listed attachments whose bodies were
    uploaded (`agents.attachments`); the envelope commits to them.
    `witnessed_note` is the latest checkpoint this agent witnessed (None if none).
    """
    completed = dict(submitted.fields)
    complete_document(completed, now=now, new_message_id=new_message_id, sequence=sequence)
    completed = sign_or_check_document(completed, sender=sender, directory=directory)
    document_bytes = canonical_json(completed)
    document = validate_document(document_bytes, parsed=completed)
    if document.sender.authority_id != sender.agency:
        raise PolicyDenied(
            f"sender.authority_id is {document.sender.authority_id}, but this agent speaks for {sender.agency}",
            code=ErrorCode.SENDER_NOT_OWN_AGENCY,
        )
    recipient = document.recipient.authority_id
    directory.agreement_for(sender.agency, recipient, document.message_type, now)
    recipient_key = directory.agency(recipient).current_encryption_key(now)
    assert document.message_id is not None  # filled in by complete_document
    message_id = MessageId(document.message_id)
    expires_at = now + message_ttl
    sealed, content_proof = seal_with_content_proof(
        document_bytes,
        message_id=message_id,
        sender=sender.agency,
        signing_key=sender.signing_key,
        recipients=[Recipient(recipient, recipient_key.recipient_key)],
        archive_key=sender.archive_key,
        message_type=document.message_type,
        case_id=CaseId(document.case_id),
        created_at=now,
        expires_at=expires_at,
        limits=limits,
        attachments=attachments,
        log_checkpoint=None
        if witnessed_note is None
        else SignedCheckpoint.parse(witnessed_note).signed_only_by(directory.gateway.log_origin).to_text(),
    )
    return PreparedSubmission(
        message_id=message_id,
        document=document,
        document_bytes=document_bytes,
        request_sha256=submitted.request_sha256,
        sealed=sealed,
        created_at=now,
        expires_at=expires_at,
        content_proof=content_proof,
    )


@dataclass(frozen=True, slots=True)
class Accepted:
    """The answer to a submission: its message id and current status."""

    message_id: str
    status: str
    created: bool


async def record_submission(
    store: AgentStore,
    prepared: PreparedSubmission,
    *,
    cases: CaseBook,
    idempotency_key: str | None,
    now: datetime,
) -> Accepted:
    """`record_in` in a transaction of its own."""
    async with store.transaction() as tx:
        return await record_in(tx, prepared, cases=cases, idempotency_key=idempotency_key, now=now)


async def record_in(
    tx: Transaction,
    prepared: PreparedSubmission,
    *,
    cases: CaseBook,
    idempotency_key: str | None,
    now: datetime,
) -> Accepted:
    """In `tx`: put `prepared` in the outbox, or return the earlier submission it repeats.

    The same document under the same message id (or the same idempotency key)
    is the same submission; a different document under either is a `Conflict`.
    A new one must be allowed by its case (`CaseBook.admit`, in the same
    transaction as the insert, so two submissions cannot both pass against
    the same state), or `IllegalTransition` is raised and nothing is recorded.
    """
    message_id = str(prepared.message_id)
    at = format_timestamp(now)
    if idempotency_key is not None:
        earlier = await tx.idempotency(idempotency_key)
        if earlier is not None:
            earlier_digest, earlier_id = earlier
            if earlier_digest != prepared.request_sha256:
                raise Conflict(
                    f"Idempotency-Key was already used for another document (message {earlier_id})",
                    ErrorCode.IDEMPOTENCY_KEY_REUSED,
                )
            record = await tx.outbox(earlier_id)
            assert record is not None  # written in the same transaction as the key
            return Accepted(earlier_id, record.status, created=False)
    existing = await tx.outbox(message_id)
    if existing is not None:
        if existing.request_sha256 != prepared.request_sha256:
            raise Conflict(
                f"message id {message_id} was already used for another document", ErrorCode.MESSAGE_ID_CONFLICT
            )
        return Accepted(message_id, existing.status, created=False)
    document = prepared.document
    await cases.admit(tx, document, Direction.SENT)
    await tx.insert_outbox(
        OutboxRecord(
            message_id=message_id,
            recipient=document.recipient.authority_id,
            message_type=document.message_type,
            case_id=document.case_id,
            in_reply_to=None if document.in_reply_to is None else str(document.in_reply_to),
            document=prepared.document_bytes,
            request_sha256=prepared.request_sha256,
            sealed=prepared.sealed.to_bytes(),
            digest=prepared.sealed.digest,
            status=STATUS_QUEUED,
            status_reason=None,
            created_at=format_timestamp(prepared.created_at),
            expires_at=format_timestamp(prepared.expires_at),
            published_at=None,
            updated_at=at,
        )
    )
    await tx.insert_content_proof(
        ContentProofRecord(
            sender=document.sender.authority_id,
            message_id=message_id,
            direction="sent",
            statement=prepared.content_proof.statement,
            signature=prepared.content_proof.signature,
        ),
        at,
    )
    if idempotency_key is not None:
        await tx.insert_idempotency(idempotency_key, prepared.request_sha256, message_id, at)
    return Accepted(message_id, STATUS_QUEUED, created=True)


AttachmentBodies = Callable[[Mapping[str, Any]], Awaitable[Sequence[AttachmentKey]]]
"""The key of each listed attachment whose body was uploaded to this agent (`Attachments.keys_for`)."""


async def no_attachment_bodies(_fields: Mapping[str, Any]) -> Sequence[AttachmentKey]:
    """An agent without the gateway's blob store: every attachment travels as a description only."""
    return ()


@dataclass(frozen=True, slots=True)
class Submission:
    """The sending use case, whole: read, number in the case, prepare, record, wake the relay.

    The HTTP handler checks only what is HTTP's (media type, the
    `Idempotency-Key` header) and answers with what `submit` returns.
    """

    sender: SenderKeys
    store: AgentStore
    cases: CaseBook
    directory: Callable[[], Directory]
    limits: Limits
    message_ttl: timedelta
    clock: Callable[[], datetime]
    wake_relay: Callable[[], None]
    attachment_bodies: AttachmentBodies = no_attachment_bodies

    async def submit(self, body: bytes, *, idempotency_key: str | None) -> Accepted:
        """Queue the document of `body` for its recipient, or return the earlier submission it repeats."""
        submitted = read_submission(body, limits=self.limits)
        bodies = await self.attachment_bodies(submitted.fields)
        witnessed = await self.store.latest_witnessed()
        case_id = submitted.case_id
        # One transaction numbers, prepares and records: the case's rows are read once, and nothing
        # else writes in between (preparing is synchronous: it holds the writer only while it computes).
        async with self.cases.serialised(case_id), self.store.transaction() as tx:
            sequence = None
            if case_id is not None and not submitted.numbered:
                sequence = await self.cases.next_sequence(tx, case_id)
            now = self.clock()
            prepared = prepare_submission(
                submitted,
                sender=self.sender,
                directory=self.directory(),
                now=now,
                message_ttl=self.message_ttl,
                limits=self.limits,
                sequence=sequence,
                attachments=tuple(bodies),
                witnessed_note=None if witnessed is None else witnessed[2],
            )
            accepted = await record_in(tx, prepared, cases=self.cases, idempotency_key=idempotency_key, now=now)
        if accepted.created:
            self.wake_relay()
            log.info(
                "message_submitted",
                message_id=accepted.message_id,
                case_id=prepared.document.case_id,
                recipient=prepared.document.recipient.authority_id,
                message_type=prepared.document.message_type,
            )
        return accepted


__all__ = [
    "Accepted",
    "AttachmentBodies",
    "PreparedSubmission",
    "SenderKeys",
    "Submission",
    "Submitted",
    "complete_document",
    "no_attachment_bodies",
    "prepare_submission",
    "read_submission",
    "record_in",
    "record_submission",
]
