"""The receiving side: what an agent does with each delivery from its inbox queue.

A recipient never trusts the gateway. For a sealed message, in order, each
check returning a value only it can make, which is all the next one takes:

1. the delivery was published by the gateway's broker user (RabbitMQ vouches for `user_id`);
2. `authenticate_header`  -> AuthenticatedHeader  the sender's header signature under a key
                                                  the directory gives it (verify, then parse);
3. `check_freshness`      -> FreshHeader          not expired, not from the future, inside
                                                  the replay window;
3a. `check_agreement`     -> AllowedHeader        an agreement in force allows the sender to send
                                                  this type to this agency, the gateway's own
                                                  decision made again (`protocol.policy`);
4. `open_authenticated`   -> OpenedMessage        this agency listed as a recipient, key
                                                  commitment, decryption, the sender's content
                                                  signature and binding (the header is not
                                                  verified twice);
5. `validate`             -> ValidMessage         the document parses strictly, validates
                                                  against its content model, its own signature
                                                  (`integrity.signature`), if any, verifies as
                                                  the sender's (`protocol.document_signature`),
                                                  and it says what the
                                                  signed header says (id, type, case, sender,
                                                  recipient); then `on_opened` checks the
                                                  attachment bodies;
6. `check_replay`         -> UnseenMessage        a (sender, message id) is stored once: the same
                                                  envelope again only re-confirms;
7. `store_delivered`      UnseenMessage           in one transaction: the case as this agency
                                                  knows it allows the message (`CaseBook.admit`;
                                                  a message its sending agent should have
                                                  refused, but which slipped through, is refused
                                                  here with `ILLEGAL_TRANSITION`), then store the
                                                  message, the sender's signed content statement
                                                  (proof of origin, beside the sealed header) and
                                                  the `DELIVERY` evidence; then ack.

Once step 2 authenticated the sender, the view of the audit log its header
carries (`log_checkpoint`) goes to `on_log_view`, for the witness to compare
with this agency's own (`agents.auditing`); it never decides the delivery.

A refusal after step 2 authenticated the sender is answered with signed
`NON_DELIVERY` evidence and its reason, and nothing of the message is kept;
one before that cannot be attributed to anyone and is logged and dropped.

Evidence about our own messages is verified against the directory, matched
with the outbox (same message id and digest), kept, and moves the status.
It comes one statement a delivery (`KIND_EVIDENCE`) or several in a batch
(`KIND_EVIDENCE_BATCH`, what the gateway sends when more than one statement
for this agency waited): each statement of a batch takes the same steps on
its own, so a bad one is refused alone while the good ones are kept, and a
statement seen before (a redelivered batch, or the same statement in two
batches) adds nothing. A batch that is not one at all is refused whole.

A directory version the gateway pushed (`KIND_DIRECTORY`) goes to
`on_directory` (`DirectoryWatch.offer`), which trusts only the authority's
signature and refuses rollback: a gateway cannot make an agent hold a
version the authority did not sign, nor an older one.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Final

import structlog

from agents.cases import CaseBook, Direction
from agents.guard import marking_of
from agents.status import MessageStatus, status_after
from agents.store import AgentStore, ContentProofRecord, EvidenceRecord, InboxRecord, OutboxRecord
from agents.webhooks import EventType, emit, level_of
from protocol.connectivity import CONNECTIVITY_TEST
from protocol.directory import Agreement, Directory, PublishedSigningKey
from protocol.document_signature import document_signature_block, verify_document_signature
from protocol.encoding import format_timestamp, parse_json_strict
from protocol.envelope import (
    AuthenticatedHeader,
    FreshHeader,
    OpenedMessage,
    SealedMessage,
    authenticate_header,
    check_freshness,
    open_authenticated,
)
from protocol.errors import (
    AuthenticationFailed,
    ErrorCode,
    FreshnessViolation,
    IllegalTransition,
    PolicyDenied,
    ProtocolError,
)
from protocol.evidence import (
    EvidenceType,
    Reason,
    VerifiedEvidence,
    issue_evidence,
    new_statement,
    parse_evidence_batch,
    parse_signed_evidence,
    verify_evidence,
)
from protocol.ids import AgencyId, KeyId
from protocol.keys import EncryptionPrivateKey, SigningPrivateKey
from protocol.limits import Limits
from protocol.mla import MessageDocument, validate_document
from protocol.policy import decide_exchange
from protocol.steps import StepToken
from protocol.topology import KIND_DIRECTORY, KIND_EVIDENCE, KIND_EVIDENCE_BATCH, KIND_SEALED_MESSAGE
from runtime.broker import Handled
from runtime.directory import Offered
from runtime.errors import TransientFailure

log = structlog.get_logger("rogatory.agent.receiving")

MARKINGS_KEPT: Final = 4096
"""Sent messages whose classification is remembered for their evidence (each gets three or more statements)."""

_STEP: Final = StepToken("agents.receiving")
"""Only this module's checks hold it: `AllowedHeader`, `ValidMessage` and `UnseenMessage` are theirs alone."""


@dataclass(frozen=True, slots=True)
class InboxDelivery:
    """What the agent takes from one broker delivery; nothing in it is trusted yet."""

    body: bytes
    kind: str | None
    user_id: str | None


@dataclass(frozen=True, slots=True)
class ReceiverKeys:
    """This agency's identity and private keys."""

    agency: AgencyId
    signing_key: SigningPrivateKey
    encryption_keys: Mapping[KeyId, EncryptionPrivateKey]


class ReceivedResult(StrEnum):
    """Where `handle` left a delivery; the values are the metrics' and log lines' labels."""

    DELIVERED = "delivered"
    DUPLICATE = "duplicate"
    REFUSED = "refused"
    DROPPED = "dropped"
    KEPT = "kept"


@dataclass(frozen=True, slots=True)
class Received(Handled[ReceivedResult]):
    """What `handle` did, for the summary log line and the metrics."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AllowedHeader:
    """Step 3a: a fresh header whose exchange (sender -> this agency, its type) an agreement in force allows."""

    fresh: FreshHeader
    agreement: Agreement
    step: object = field(repr=False, compare=False)

    def __post_init__(self) -> None:
        _STEP.admit(self.step, AllowedHeader)


@dataclass(frozen=True, slots=True, kw_only=True)
class ValidMessage:
    """Step 5: an opened message whose document is valid and says what the signed header says."""

    opened: OpenedMessage
    document: MessageDocument
    step: object = field(repr=False, compare=False)

    def __post_init__(self) -> None:
        _STEP.admit(self.step, ValidMessage)


@dataclass(frozen=True, slots=True, kw_only=True)
class UnseenMessage:
    """Step 6: a valid message whose (sender, message id) this agency has not stored."""

    valid: ValidMessage
    sealed: SealedMessage
    step: object = field(repr=False, compare=False)

    def __post_init__(self) -> None:
        _STEP.admit(self.step, UnseenMessage)


class Receiver:
    """Handles deliveries from this agency's inbox queue."""

    def __init__(
        self,
        *,
        keys: ReceiverKeys,
        directory: Callable[[], Directory],
        store: AgentStore,
        gateway_broker_user: str,
        limits: Limits,
        clock: Callable[[], datetime],
        cases: CaseBook,
        on_opened: Callable[[OpenedMessage, MessageDocument], Awaitable[None]] | None,
        wake_relay: Callable[[], None] = lambda: None,
        on_log_view: Callable[[AgencyId, str], None] | None = None,
        on_directory: Callable[[bytes], Awaitable[Offered]] | None = None,
        on_probe: Callable[[OpenedMessage, datetime], Awaitable[bool]] | None = None,
    ) -> None:
        """`cases` is the book shared with the API; `on_opened` checks attachment bodies and may refuse.

        `on_opened` is None only for an agent that keeps no attachment bodies
        (its message is stored without them); it is never left out by default.
        `on_log_view` takes each authenticated sender's view of the audit log
        (`SenderViews.offer`); None for an agent without a witness.
        `on_directory` judges a pushed directory version (`DirectoryWatch.offer`);
        None drops pushed versions.
        `on_probe` takes a connectivity test's ping or pong once authenticated, allowed, fresh and
        opened (`Connectivity.receive`); None refuses them (`POLICY_DENIED`).
        """
        self._keys = keys
        self._cases = cases
        self._directory = directory
        self._store = store
        self._gateway_user = gateway_broker_user
        self._limits = limits
        self._clock = clock
        self._wake_relay = wake_relay
        self._on_opened = on_opened
        self._on_log_view = on_log_view
        self._on_directory = on_directory
        self._on_probe = on_probe
        self._markings: OrderedDict[tuple[str, str], object] = OrderedDict()

    async def handle(self, delivery: InboxDelivery) -> Received:
        """Process one delivery to a durable end state; raise only `TransientFailure`."""
        if delivery.user_id != self._gateway_user:
            log.warning("inbox_delivery_not_from_gateway", user_id=str(delivery.user_id)[:80])
            return Received(kind=str(delivery.kind), result=ReceivedResult.DROPPED, code=ErrorCode.BROKER_USER_MISMATCH)
        if delivery.kind == KIND_SEALED_MESSAGE:
            return await self.receive_message(delivery.body)
        if delivery.kind == KIND_EVIDENCE:
            return await self.receive_evidence(delivery.body)
        if delivery.kind == KIND_EVIDENCE_BATCH:
            return await self.receive_evidence_batch(delivery.body)
        if delivery.kind == KIND_DIRECTORY:
            return await self.receive_directory(delivery.body)
        log.warning("inbox_delivery_unknown_kind", kind=str(delivery.kind)[:80])
        return Received(kind=str(delivery.kind), result=ReceivedResult.DROPPED, code=ErrorCode.MALFORMED_ENVELOPE)

    # -- directory versions -------------------------------------------------------------

    async def receive_directory(self, body: bytes) -> Received:
        """A pushed directory version, judged as the file's are (signature, rollback, expiry; refusals logged)."""
        if self._on_directory is None:
            return Received(kind="directory", result=ReceivedResult.DROPPED)
        offered = await self._on_directory(body)
        if offered is Offered.POSTPONED:  # not durable yet: the delivery is retried in place
            raise TransientFailure("the pushed directory version could not be made durable yet")
        result = {
            Offered.ADOPTED: ReceivedResult.KEPT,
            Offered.IN_FORCE: ReceivedResult.DUPLICATE,
            Offered.REFUSED: ReceivedResult.REFUSED,
        }[offered]
        return Received(kind="directory", result=result)  # a refusal's code is in `directory_refused`

    # -- messages -----------------------------------------------------------------------

    async def receive_message(self, body: bytes) -> Received:
        """Steps 2-7 of the module docstring."""
        now = self._clock()
        try:
            authenticated = authenticate_header(
                SealedMessage.from_bytes(body, self._limits), self._directory(), now=now
            )
        except ProtocolError as exc:
            log.warning("inbox_message_unattributable", code=str(exc.code), detail=exc.detail[:300])
            return Received(kind="message", result=ReceivedResult.DROPPED, code=exc.code)
        header = authenticated.header
        if self._on_log_view is not None and header.log_checkpoint is not None:
            self._on_log_view(header.sender, header.log_checkpoint)
        try:
            allowed = self.check_agreement(check_freshness(authenticated, now=now, limits=self._limits), now)
            opened = open_authenticated(
                allowed.fresh,
                recipient=self._keys.agency,
                recipient_keys=self._keys.encryption_keys,
            )
            if header.message_type == CONNECTIVITY_TEST:  # a ping or a pong: never a case's, never the inbox's
                if self._on_probe is None:
                    raise PolicyDenied("this agent answers no connectivity tests", code=ErrorCode.POLICY_DENIED)
                taken = await self._on_probe(opened, now)
                return Received(
                    kind="probe",
                    result=ReceivedResult.DELIVERED if taken else ReceivedResult.DUPLICATE,
                    message_id=str(header.message_id),
                    sender=header.sender,
                )
            valid = self.validate(opened)
            if self._on_opened is not None:  # attachment bodies: checked against the document, then recorded
                await self._on_opened(valid.opened, valid.document)
            unseen = await self.check_replay(valid, authenticated.sealed)
            if unseen is None:
                return Received(
                    kind="message",
                    result=ReceivedResult.DUPLICATE,
                    message_id=str(header.message_id),
                    sender=header.sender,
                )
        except ProtocolError as exc:
            await self._refuse(authenticated, exc, now)
            return Received(
                kind="message",
                result=ReceivedResult.REFUSED,
                code=exc.code,
                message_id=str(header.message_id),
                sender=header.sender,
            )
        try:
            await self.store_delivered(unseen, now)
        except IllegalTransition as exc:
            await self._refuse(authenticated, exc, now)
            return Received(
                kind="message",
                result=ReceivedResult.REFUSED,
                code=exc.code,
                message_id=str(header.message_id),
                sender=header.sender,
            )
        return Received(
            kind="message", result=ReceivedResult.DELIVERED, message_id=str(header.message_id), sender=header.sender
        )

    def check_agreement(self, fresh: FreshHeader, now: datetime) -> AllowedHeader:
        """An agreement in force allows the sender to send this type to this agency: the gateway's decision, again."""
        agreement = decide_exchange(fresh.authenticated, self._keys.agency, self._directory(), now=now)
        return AllowedHeader(fresh=fresh, agreement=agreement, step=_STEP)

    def validate(self, opened: OpenedMessage) -> ValidMessage:
        """The document is strict JSON, valid for its type, and says what the signed header says."""
        header = opened.header
        parsed = parse_json_strict(
            opened.document, max_bytes=self._limits.max_document_bytes, max_depth=self._limits.max_json_depth
        )
        document = validate_document(opened.document, parsed=parsed)
        if isinstance(parsed, dict) and document_signature_block(parsed) is not None:
            directory = self._directory()

            def signing_key(key_id: KeyId) -> tuple[str, PublishedSigningKey]:
                entry, key = directory.agency_signing_key(key_id)
                key.check_usable(created_at=header.created_at, now=header.created_at, what="document signing")
                return entry.agency_id, key

            verify_document_signature(parsed, signing_key, sender=header.sender)
        mismatches = [
            name
            for name, document_value, header_value in (
                ("message_id", document.message_id, header.message_id),
                ("message_type", document.message_type, header.message_type),
                ("case_id", document.case_id, header.case_id),
                ("sender", document.sender.authority_id, header.sender),
                ("recipient", document.recipient.authority_id, self._keys.agency),
            )
            if str(document_value) != str(header_value)
        ]
        if mismatches:
            raise AuthenticationFailed(
                f"document and signed header disagree on {', '.join(mismatches)}",
                code=ErrorCode.HEADER_DOCUMENT_MISMATCH,
            )
        return ValidMessage(opened=opened, document=document, step=_STEP)

    async def check_replay(self, valid: ValidMessage, sealed: SealedMessage) -> UnseenMessage | None:
        """A stored (sender, message id) is a redelivery (None) if the envelope is the same, refused if it is not."""
        header = valid.opened.header
        earlier = await self._store.inbox_entry_of(header.sender, str(header.message_id))
        if earlier is None:
            return UnseenMessage(valid=valid, sealed=sealed, step=_STEP)
        if earlier.digest != valid.opened.digest:
            raise FreshnessViolation(
                f"message id {header.message_id} of {header.sender} was already used for another envelope",
                code=ErrorCode.REPLAYED,
            )
        return None

    async def store_delivered(self, unseen: UnseenMessage, now: datetime) -> None:
        """Admit the message to its case, store it and its `DELIVERY` in one transaction; or `IllegalTransition`."""
        opened = unseen.valid.opened
        document = unseen.valid.document
        header = opened.header
        statement = new_statement(
            EvidenceType.DELIVERY,
            message_id=header.message_id,
            message_digest=opened.digest,
            sender=header.sender,
            recipient=self._keys.agency,
            message_type=header.message_type,
            case_id=header.case_id,
            issuer=self._keys.agency,
            at=now,
        )
        signed = issue_evidence(statement, self._keys.signing_key)
        async with self._store.transaction() as tx:
            if await tx.inbox_entry(header.sender, str(header.message_id)) is not None:
                return
            await self._cases.admit(tx, document, Direction.RECEIVED)
            await tx.insert_inbox(
                InboxRecord(
                    seq=0,
                    sender=header.sender,
                    message_id=str(header.message_id),
                    digest=opened.digest,
                    message_type=header.message_type,
                    case_id=header.case_id,
                    in_reply_to=None if document.in_reply_to is None else str(document.in_reply_to),
                    document=opened.document,
                    sealed=unseen.sealed.to_bytes(),
                    received_at=format_timestamp(now),
                    retrieved_at=None,
                )
            )
            await tx.insert_content_proof(
                ContentProofRecord(
                    sender=header.sender,
                    message_id=str(header.message_id),
                    direction="received",
                    statement=opened.content_statement,
                    signature=opened.content_signature,
                ),
                format_timestamp(now),
            )
            await tx.enqueue_evidence(
                statement.identity,
                str(header.message_id),
                signed.model_dump_json().encode("utf-8"),
                format_timestamp(now),
            )
            await emit(
                tx,
                EventType.MESSAGE_RECEIVED,
                {
                    "message_id": str(header.message_id),
                    "sender": header.sender,
                    "recipient": self._keys.agency,
                    "message_type": header.message_type,
                    "case_id": header.case_id,
                    "in_reply_to": None if document.in_reply_to is None else str(document.in_reply_to),
                    "message_digest": opened.digest,
                    "received_at": format_timestamp(now),
                    "inbox_seq": await tx.inbox_seq(header.sender, str(header.message_id)),
                },
                level=level_of(document.classification),
                at=now,
            )
        self._wake_relay()

    async def _refuse(self, authenticated: AuthenticatedHeader, error: ProtocolError, now: datetime) -> None:
        header = authenticated.header
        statement = new_statement(
            EvidenceType.NON_DELIVERY,
            message_id=header.message_id,
            message_digest=authenticated.digest,
            sender=header.sender,
            recipient=self._keys.agency,
            message_type=header.message_type,
            case_id=header.case_id,
            issuer=self._keys.agency,
            at=now,
            reason=Reason(code=error.code, detail=error.detail[:1000]),
        )
        signed = issue_evidence(statement, self._keys.signing_key)
        async with self._store.transaction() as tx:
            await tx.enqueue_evidence(
                statement.identity,
                str(header.message_id),
                signed.model_dump_json().encode("utf-8"),
                format_timestamp(now),
            )
        log.warning(
            "inbox_message_refused", code=str(error.code), message_id=str(header.message_id), sender=header.sender
        )
        self._wake_relay()

    # -- evidence about our messages ---------------------------------------------------------

    async def receive_evidence(self, body: bytes) -> Received:
        """Verify evidence, match it with the outbox, keep it, move the status."""
        now = self._clock()
        try:
            verified = verify_evidence(parse_signed_evidence(body, self._limits), self._directory(), now=now)
            record = await self._match(verified)
        except ProtocolError as exc:
            log.warning("evidence_refused", code=str(exc.code), detail=exc.detail[:300])
            return Received(kind="evidence", result=ReceivedResult.REFUSED, code=exc.code)
        statement = verified.statement
        reason = statement.reason
        message_id = str(statement.message_id)
        async with self._store.transaction() as tx:
            added = await tx.insert_evidence(
                EvidenceRecord(
                    identity=statement.identity,
                    message_id=message_id,
                    evidence_type=statement.evidence_type,
                    at=format_timestamp(statement.at),
                    issuer=statement.issuer,
                    recipient=statement.recipient,
                    reason_code=None if reason is None else reason.code,
                    reason_detail=None if reason is None else reason.detail,
                    signed=verified.signed.model_dump_json().encode("utf-8"),
                    received_at=format_timestamp(now),
                    inclusion_proof=None,
                )
            )
            # The status is read again in the transaction that moves it; the rest of the row never changes.
            status = await tx.outbox_status(message_id)
            if added and status is not None:
                current = MessageStatus(status)
                new = status_after(current, statement.evidence_type, None if reason is None else reason.code)
                if new != current:
                    await tx.set_status(message_id, new, None if reason is None else reason.code, format_timestamp(now))
                await emit(
                    tx,
                    EventType.MESSAGE_STATUS_CHANGED,
                    {
                        "message_id": message_id,
                        "recipient": record.recipient,
                        "message_type": record.message_type,
                        "case_id": record.case_id,
                        "evidence_type": str(statement.evidence_type),
                        "evidence_identity": statement.identity,
                        "evidence_at": format_timestamp(statement.at),
                        "issuer": statement.issuer,
                        "reason_code": None if reason is None else str(reason.code),
                        "previous_status": str(current),
                        "status": str(new),
                    },
                    level=level_of(self._marking_of(record)),
                    at=now,
                )
        return Received(
            kind="evidence",
            result=ReceivedResult.KEPT if added else ReceivedResult.DUPLICATE,
            message_id=message_id,
            sender=statement.sender,
            code=statement.evidence_type,
        )

    async def receive_evidence_batch(self, body: bytes) -> Received:
        """Each statement of a batch as `receive_evidence` takes one: refused alone, kept once.

        The statements are taken concurrently (their writes share the store's
        group commit) and all are finished before anything is raised: a
        transient failure of one retries the whole delivery, in which the
        statements already kept are duplicates.
        """
        try:
            statements = parse_evidence_batch(body, self._limits)
        except ProtocolError as exc:
            log.warning("evidence_batch_refused", code=str(exc.code), detail=exc.detail[:300])
            return Received(kind="evidence-batch", result=ReceivedResult.REFUSED, code=exc.code)
        outcomes = await asyncio.gather(*(self.receive_evidence(raw) for raw in statements), return_exceptions=True)
        failure = next((outcome for outcome in outcomes if isinstance(outcome, BaseException)), None)
        if failure is not None:
            raise failure
        received = [outcome for outcome in outcomes if isinstance(outcome, Received)]
        counts = {result: sum(1 for r in received if r.result == result) for result in ReceivedResult}
        result = next((r for r in (ReceivedResult.KEPT, ReceivedResult.DUPLICATE) if counts[r]), ReceivedResult.REFUSED)
        return Received(  # its counts go on the delivery's one line (`message_processed`)
            kind="evidence-batch",
            result=result,
            batch={
                "statements": len(received),
                "kept": counts[ReceivedResult.KEPT],
                "duplicate": counts[ReceivedResult.DUPLICATE],
                "refused": counts[ReceivedResult.REFUSED],
            },
        )

    def _marking_of(self, record: OutboxRecord) -> object:
        """The classification of a sent message, read from its document once, not at each of its evidence."""
        key = (record.message_id, record.digest)
        if key in self._markings:
            self._markings.move_to_end(key)
            return self._markings[key]
        marking = marking_of(record.document)
        self._markings[key] = marking
        if len(self._markings) > MARKINGS_KEPT:
            self._markings.popitem(last=False)
        return marking

    async def _match(self, verified: VerifiedEvidence) -> OutboxRecord:
        """The outbox row of the message the evidence is about: one this agency sent, with the digest it sealed."""
        statement = verified.statement
        record = None if statement.message_id is None else await self._store.outbox(str(statement.message_id))
        if statement.sender != self._keys.agency or record is None or record.digest != statement.message_digest:
            raise AuthenticationFailed(
                f"evidence names message {statement.message_id} of {statement.sender} with a digest "
                "this agency did not seal",
                code=ErrorCode.EVIDENCE_MISMATCH,
            )
        return record


__all__ = [
    "AllowedHeader",
    "InboxDelivery",
    "Received",
    "ReceivedResult",
    "Receiver",
    "ReceiverKeys",
    "UnseenMessage",
    "ValidMessage",
]
