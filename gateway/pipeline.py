"""The gateway's security argument: what happens to each input, in order.

A sealed message from an agency passes these steps; each is a function
below whose docstring states its invariant:

1. `identify_publisher`  the broker authenticated the connection and vouches for `user_id`;
2. `authenticate_sender` the header verifies under a key the directory gives the signed
                         sender, and that sender is the publisher (verify, then parse);
3. `check_fresh`         not expired, not from the future, inside the replay window;
4. `check_replay`        a (sender, message id) is accepted once;
5. `decide`              an agreement in force allows sender -> each recipient for this
                         type, and each wrapped key is a valid key of that recipient;
5a. `check_attachments`  every attachment body the header commits to is in the blob store,
                         as long as committed, uploaded by the sender (`gateway.blobs`),
                         and is logged (`attachments` leaf) before acceptance;
6. `record_acceptance`   nothing is routed that is not first in the audit log;
7. `route`               a copy counts as relayed only once the broker confirmed it;
8. `record_relay`        each recipient's outcome is logged and told to the sender.

The delivery is acknowledged by the caller only after `handle` returns, that
is after every durable write. A refusal at steps 1-5 is permanent: it is
logged as `SUBMISSION_REJECTED` evidence (or, where no agency can be
addressed, a `rejected_input` leaf) and told to the publisher. A transient
failure (`TransientFailure`) leaves the delivery unacknowledged so that it
comes back; every step is idempotent, so coming back is safe.

Evidence published by a recipient agent (`DELIVERY`, `RETRIEVAL`, ...) is
verified against the directory, matched with the message it names, logged
and forwarded to the message's sender.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import structlog

from gateway.auditlog import AuditLog, AuditTransaction
from gateway.blobs import AttachmentGate
from gateway.store import GatewayStore, MessageRecord, RelayRecord
from protocol.auditlog import RejectedInputLeaf, evidence_leaf
from protocol.directory import Directory
from protocol.encoding import format_timestamp, sha256_hex
from protocol.envelope import AuthenticatedHeader, SealedMessage, authenticate_header, check_freshness
from protocol.errors import (
    AuthenticationFailed,
    ErrorCode,
    FreshnessViolation,
    MalformedInput,
    PolicyDenied,
    ProtocolError,
)
from protocol.evidence import (
    EvidenceStatement,
    EvidenceType,
    Reason,
    VerifiedEvidence,
    issue_evidence,
    new_statement,
    parse_signed_evidence,
    verify_evidence,
)
from protocol.ids import AgencyId, MessageId, parse_agency_id, parse_message_id
from protocol.keys import SigningPrivateKey
from protocol.limits import Limits
from protocol.topology import KIND_EVIDENCE, KIND_SEALED_MESSAGE
from runtime.errors import RoutingFailed

log = structlog.get_logger("rogatory.gateway.pipeline")

STATE_ACCEPTED = "accepted"
STATE_RELAYED = "relayed"
STATE_DEAD_LETTERED = "dead_lettered"
"""A submission the broker dead-lettered and `gateway.deadletters` refused: only an operator's re-drive relays it."""
RELAY_RELAYED = "relayed"
RELAY_FAILED = "relay_failed"


@dataclass(frozen=True, slots=True)
class IngressDelivery:
    """What the gateway takes from one broker delivery; nothing in it is trusted yet."""

    body: bytes
    kind: str | None
    user_id: str | None
    amqp_message_id: str | None


class Publisher(Protocol):
    """Publishes to `mla.deliver` with confirms; raises `RoutingFailed` or `BrokerUnavailable`."""

    async def publish(self, *, routing_key: str, body: bytes, kind: str, message_id: str) -> None:
        """Publish one persistent, mandatory message and wait for the broker's confirm."""


class DirectorySource(Protocol):
    """Where the directory in force comes from."""

    @property
    def current(self) -> Directory:
        """The directory version in force."""


@dataclass(frozen=True, slots=True)
class GatewayIdentity:
    """Who the gateway is and the key it signs evidence with."""

    gateway_id: str
    evidence_key: SigningPrivateKey
    broker_user_prefix: str


@dataclass(frozen=True, slots=True)
class Outcome:
    """What `handle` did, for the caller's summary log line and metrics."""

    kind: str
    result: str
    code: str | None = None
    message_id: str | None = None
    sender: str | None = None


class IngressPipeline:
    """Takes one ingress delivery through the steps of the module docstring."""

    def __init__(
        self,
        *,
        identity: GatewayIdentity,
        directory: DirectorySource,
        store: GatewayStore,
        audit: AuditLog,
        publisher: Publisher,
        limits: Limits,
        clock: Callable[[], datetime],
        on_outgoing: Callable[[], None] = lambda: None,
        attachments: AttachmentGate | None = None,
    ) -> None:
        self._attachments = attachments
        self._identity = identity
        self._directory = directory
        self._store = store
        self._audit = audit
        self._publisher = publisher
        self._limits = limits
        self._clock = clock
        self._on_outgoing = on_outgoing

    async def handle(self, delivery: IngressDelivery) -> Outcome:
        """Process one delivery to a durable end state; raise only `TransientFailure`."""
        if delivery.kind == KIND_SEALED_MESSAGE:
            return await self._handle_sealed_message(delivery)
        if delivery.kind == KIND_EVIDENCE:
            return await self._handle_evidence(delivery)
        await self._record_rejected_input(
            delivery,
            Reason(code=ErrorCode.MALFORMED_ENVELOPE, detail=f"unknown message kind {str(delivery.kind)[:60]!r}"),
        )
        return Outcome(kind="unknown", result="rejected", code=ErrorCode.MALFORMED_ENVELOPE)

    # -- sealed messages ---------------------------------------------------------------

    async def _handle_sealed_message(self, delivery: IngressDelivery) -> Outcome:
        now = self._clock()
        directory = self._directory.current
        try:
            publisher = self.identify_publisher(delivery, directory)
        except ProtocolError as exc:
            await self._record_rejected_input(delivery, Reason(code=exc.code, detail=exc.detail))
            return Outcome(kind="message", result="rejected", code=exc.code)
        sealed: SealedMessage | None = None
        authenticated: AuthenticatedHeader | None = None
        try:
            sealed = SealedMessage.from_bytes(delivery.body, self._limits)
            authenticated = self.authenticate_sender(sealed, publisher, directory, now)
            self.check_fresh(authenticated, now)
            if await self.check_replay(authenticated):
                return await self._resume(authenticated, sealed)
            self.decide(authenticated, directory, now)
            await self.check_attachments(authenticated)
        except ProtocolError as exc:
            await self._reject(
                delivery, publisher=publisher, sealed=sealed, authenticated=authenticated, error=exc, now=now
            )
            return Outcome(kind="message", result="rejected", code=exc.code, sender=publisher)
        if self._attachments is not None:
            await self._attachments.record(self._audit, authenticated, sealed, now)
        await self.record_acceptance(authenticated, now)
        await self._route_and_record(authenticated, sealed)
        header = authenticated.header
        return Outcome(kind="message", result="relayed", message_id=str(header.message_id), sender=header.sender)

    def identify_publisher(self, delivery: IngressDelivery, directory: Directory) -> AgencyId:
        """The broker validated `user_id` against the connection's login; it names a listed agency."""
        user = delivery.user_id
        prefix = self._identity.broker_user_prefix
        if not user or not user.startswith(prefix):
            raise AuthenticationFailed(
                f"publisher {str(user)[:80]!r} is not an agency's broker user", code=ErrorCode.BROKER_USER_MISMATCH
            )
        try:
            agency = parse_agency_id(user.removeprefix(prefix))
        except MalformedInput as exc:
            raise AuthenticationFailed(
                f"publisher {user[:80]!r} is not an agency's broker user", code=ErrorCode.BROKER_USER_MISMATCH
            ) from exc
        directory.agency(agency)
        return agency

    def authenticate_sender(
        self, sealed: SealedMessage, publisher: AgencyId, directory: Directory, now: datetime
    ) -> AuthenticatedHeader:
        """The header verifies under a key of the signed sender, and the sender is the publisher."""
        authenticated = authenticate_header(sealed, directory, now=now)
        if authenticated.header.sender != publisher:
            raise AuthenticationFailed(
                f"header is signed by {authenticated.header.sender} but was published by {publisher}",
                code=ErrorCode.BROKER_USER_MISMATCH,
            )
        return authenticated

    def check_fresh(self, authenticated: AuthenticatedHeader, now: datetime) -> None:
        """Not expired, not from the future, not older than the replay window."""
        check_freshness(authenticated.header, now=now, limits=self._limits)

    async def check_replay(self, authenticated: AuthenticatedHeader) -> bool:
        """True if this exact envelope was seen before (a redelivery); refuse other bytes under a used id."""
        header = authenticated.header
        record = await self._store.message(header.sender, str(header.message_id))
        if record is None:
            return False
        if record.digest != authenticated.digest:
            raise FreshnessViolation(
                f"message id {header.message_id} of {header.sender} was already used for another envelope",
                code=ErrorCode.REPLAYED,
            )
        return True

    def decide(self, authenticated: AuthenticatedHeader, directory: Directory, now: datetime) -> None:
        """Every recipient is allowed by an agreement in force and wrapped for one of its valid keys."""
        header = authenticated.header
        for wrapped in header.recipients:
            directory.agreement_for(header.sender, wrapped.agency, header.message_type, now)
            directory.encryption_key(wrapped.agency, wrapped.key_id).check_usable(
                created_at=header.created_at, now=now, what="encryption"
            )
        if header.archive is not None:
            directory.encryption_key(header.sender, header.archive.key_id)

    async def check_attachments(self, authenticated: AuthenticatedHeader) -> None:
        """Every body the header commits to is stored as committed; without a blob store, none may be."""
        if self._attachments is not None:
            await self._attachments.check(authenticated)
        elif authenticated.header.attachments:
            raise PolicyDenied("this gateway keeps no attachment bodies", code=ErrorCode.ATTACHMENT_MISSING)

    async def record_acceptance(self, authenticated: AuthenticatedHeader, now: datetime) -> None:
        """Log `SUBMISSION_ACCEPTED` and remember the message before anything is routed."""
        header = authenticated.header
        async with self._audit.transaction() as atx:
            await atx.tx.insert_message(
                MessageRecord(
                    sender=header.sender,
                    message_id=str(header.message_id),
                    digest=authenticated.digest,
                    message_type=header.message_type,
                    case_id=header.case_id,
                    recipients=header.recipient_agencies,
                    created_at=format_timestamp(header.created_at),
                    expires_at=format_timestamp(header.expires_at),
                    state=STATE_ACCEPTED,
                    received_at=format_timestamp(now),
                )
            )
            for recipient in header.recipient_agencies:
                await self._issue(atx, self._statement(EvidenceType.SUBMISSION_ACCEPTED, authenticated, recipient, now))
        self._on_outgoing()

    async def route(
        self, authenticated: AuthenticatedHeader, sealed: SealedMessage, recipient: AgencyId
    ) -> Reason | None:
        """Publish the envelope unchanged to `recipient`'s inbox; None once the broker confirmed it."""
        try:
            await self._publisher.publish(
                routing_key=recipient,
                body=sealed.to_bytes(),
                kind=KIND_SEALED_MESSAGE,
                message_id=str(authenticated.header.message_id),
            )
        except RoutingFailed as exc:
            return Reason(code=ErrorCode.ROUTING_FAILED, detail=str(exc)[:500])
        return None

    async def record_relay(
        self, authenticated: AuthenticatedHeader, recipient: AgencyId, failure: Reason | None, *, last: bool = False
    ) -> None:
        """Log `RELAY_ACCEPTED` or `RELAY_FAILED` for one recipient and tell the sender.

        A state the recipient's evidence already recorded is never moved back;
        with `last`, the message is marked relayed in the same transaction.
        """
        now = self._clock()
        header = authenticated.header
        evidence_type = EvidenceType.RELAY_ACCEPTED if failure is None else EvidenceType.RELAY_FAILED
        async with self._audit.transaction() as atx:
            if await atx.tx.relay_state(header.sender, str(header.message_id), recipient) is None:
                await atx.tx.set_relay_state(
                    header.sender,
                    str(header.message_id),
                    recipient,
                    RELAY_RELAYED if failure is None else RELAY_FAILED,
                    format_timestamp(now),
                    expires_at=format_timestamp(header.expires_at),
                )
            await self._issue(atx, self._statement(evidence_type, authenticated, recipient, now, failure))
            if last:
                await atx.tx.set_message_state(header.sender, str(header.message_id), STATE_RELAYED)
        self._on_outgoing()

    async def time_out(self, relay: RelayRecord, evidence_type: EvidenceType, reason: Reason) -> bool:
        """Log gateway-issued `NON_DELIVERY` or `NON_RETRIEVAL` for one copy whose deadline passed.

        Invariant: only for a copy still waiting in the state the deadline is about
        (checked again inside the transaction, so late evidence is never overtaken).
        """
        waiting_in = {EvidenceType.NON_DELIVERY: RELAY_RELAYED, EvidenceType.NON_RETRIEVAL: "delivery"}[evidence_type]
        record = await self._store.message(relay.sender, relay.message_id)
        if record is None:
            return False
        now = self._clock()
        statement = new_statement(
            evidence_type,
            message_id=parse_message_id(record.message_id),
            message_digest=record.digest,
            sender=parse_agency_id(record.sender),
            recipient=parse_agency_id(relay.recipient),
            message_type=record.message_type,
            case_id=record.case_id,
            issuer=self._identity.gateway_id,
            at=now,
            reason=reason,
        )
        async with self._audit.transaction() as atx:
            if await atx.tx.relay_state(relay.sender, relay.message_id, relay.recipient) != waiting_in:
                return False
            await atx.tx.set_relay_state(
                relay.sender, relay.message_id, relay.recipient, evidence_type.lower(), format_timestamp(now)
            )
            await self._issue(atx, statement)
        self._on_outgoing()
        log.info(
            "deadline_passed",
            evidence=str(evidence_type),
            message_id=relay.message_id,
            sender=relay.sender,
            recipient=relay.recipient,
        )
        return True

    async def _route_and_record(self, authenticated: AuthenticatedHeader, sealed: SealedMessage) -> None:
        header = authenticated.header
        pending = [
            recipient
            for recipient in header.recipient_agencies
            if await self._store.relay_state(header.sender, str(header.message_id), recipient) is None
        ]
        for index, recipient in enumerate(pending):
            failure = await self.route(authenticated, sealed, recipient)
            await self.record_relay(authenticated, recipient, failure, last=index == len(pending) - 1)
        if not pending:
            # A redelivery after every copy was recorded: only the message's own state may be missing.
            async with self._store.transaction() as tx:
                await tx.set_message_state(header.sender, str(header.message_id), STATE_RELAYED)

    async def _resume(self, authenticated: AuthenticatedHeader, sealed: SealedMessage) -> Outcome:
        """A redelivery: finish whatever the first attempt did not, add nothing twice."""
        header = authenticated.header
        record = await self._store.message(header.sender, str(header.message_id))
        if record is not None and record.state == STATE_DEAD_LETTERED:
            # Another copy of a submission already refused as dead: refused once, never relayed.
            return Outcome(kind="message", result="duplicate", message_id=str(header.message_id), sender=header.sender)
        await self._route_and_record(authenticated, sealed)
        return Outcome(kind="message", result="duplicate", message_id=str(header.message_id), sender=header.sender)

    async def _reject(
        self,
        delivery: IngressDelivery,
        *,
        publisher: AgencyId,
        sealed: SealedMessage | None,
        authenticated: AuthenticatedHeader | None,
        error: ProtocolError,
        now: datetime,
    ) -> None:
        """Log `SUBMISSION_REJECTED` and tell the publisher, naming the message as far as it is known."""
        message_id = authenticated.header.message_id if authenticated is not None else _claimed_message_id(delivery)
        digest = sealed.digest if sealed is not None else sha256_hex(delivery.body)
        statement = new_statement(
            EvidenceType.SUBMISSION_REJECTED,
            message_id=message_id,
            message_digest=digest,
            sender=publisher,
            recipient=None,
            issuer=self._identity.gateway_id,
            at=now,
            reason=Reason(code=error.code, detail=error.detail[:1000]),
        )
        async with self._audit.transaction() as atx:
            await self._issue(atx, statement)
        log.info("submission_rejected", publisher=publisher, code=str(error.code), message_id=str(message_id))
        self._on_outgoing()

    # -- evidence from recipients -----------------------------------------------------------

    async def _handle_evidence(self, delivery: IngressDelivery) -> Outcome:
        now = self._clock()
        directory = self._directory.current
        try:
            publisher = self.identify_publisher(delivery, directory)
            verified = self.authenticate_evidence(delivery, publisher, directory, now)
            record = await self.match_evidence(verified)
        except ProtocolError as exc:
            await self._record_rejected_input(delivery, Reason(code=exc.code, detail=exc.detail[:1000]))
            return Outcome(kind="evidence", result="rejected", code=exc.code)
        statement = verified.statement
        async with self._audit.transaction() as atx:
            appended = await atx.append(
                evidence_leaf(verified.signed, statement),
                at=now,
                message_id=str(statement.message_id),
                agencies=(statement.sender, *((statement.recipient,) if statement.recipient else ())),
            )
            if appended.added:
                assert statement.recipient is not None  # checked by verify_evidence for recipient evidence
                await atx.tx.set_relay_state(
                    record.sender,
                    record.message_id,
                    statement.recipient,
                    statement.evidence_type.lower(),
                    format_timestamp(now),
                )
                await atx.tx.enqueue(
                    statement.sender,
                    KIND_EVIDENCE,
                    record.message_id,
                    verified.signed.model_dump_json().encode("utf-8"),
                    format_timestamp(now),
                )
        self._on_outgoing()
        return Outcome(
            kind="evidence",
            result="forwarded" if appended.added else "duplicate",
            message_id=record.message_id,
            sender=statement.sender,
        )

    def authenticate_evidence(
        self, delivery: IngressDelivery, publisher: AgencyId, directory: Directory, now: datetime
    ) -> VerifiedEvidence:
        """The evidence verifies under a key of its issuer, and the issuer is the publisher."""
        verified = verify_evidence(parse_signed_evidence(delivery.body, self._limits), directory, now=now)
        if verified.statement.issuer != publisher:
            raise AuthenticationFailed(
                f"evidence issued by {verified.statement.issuer} was published by {publisher}",
                code=ErrorCode.BROKER_USER_MISMATCH,
            )
        return verified

    async def match_evidence(self, verified: VerifiedEvidence) -> MessageRecord:
        """The evidence names a message the gateway relayed to its issuer, with the digest it relayed."""
        statement = verified.statement
        record = await self._store.message(statement.sender, str(statement.message_id))
        if record is None or record.digest != statement.message_digest or statement.recipient not in record.recipients:
            raise AuthenticationFailed(
                f"evidence names message {statement.message_id} of {statement.sender}, "
                "which the gateway did not relay to its issuer with that digest",
                code=ErrorCode.EVIDENCE_MISMATCH,
            )
        return record

    # -- shared ------------------------------------------------------------------------------

    def _statement(
        self,
        evidence_type: EvidenceType,
        authenticated: AuthenticatedHeader,
        recipient: AgencyId,
        now: datetime,
        reason: Reason | None = None,
    ) -> EvidenceStatement:
        header = authenticated.header
        return new_statement(
            evidence_type,
            message_id=header.message_id,
            message_digest=authenticated.digest,
            sender=header.sender,
            recipient=recipient,
            message_type=header.message_type,
            case_id=header.case_id,
            issuer=self._identity.gateway_id,
            at=now,
            reason=reason,
        )

    async def _issue(self, atx: AuditTransaction, statement: EvidenceStatement) -> None:
        """Sign `statement`, log it and commit it for publication to the message's sender."""
        signed = issue_evidence(statement, self._identity.evidence_key)
        agencies = (statement.sender, *((statement.recipient,) if statement.recipient else ()))
        appended = await atx.append(
            evidence_leaf(signed, statement),
            at=statement.at,
            message_id=None if statement.message_id is None else str(statement.message_id),
            agencies=agencies,
        )
        if appended.added:
            await atx.tx.enqueue(
                statement.sender,
                KIND_EVIDENCE,
                str(statement.message_id),
                signed.model_dump_json().encode("utf-8"),
                format_timestamp(statement.at),
            )

    async def _record_rejected_input(self, delivery: IngressDelivery, reason: Reason) -> None:
        now = self._clock()
        digest = sha256_hex(delivery.body)
        publisher = (delivery.user_id or "")[:200] or None
        leaf = RejectedInputLeaf(
            identity=f"rejected/{publisher or '-'}/{digest}",
            at=now,
            publisher=publisher,
            input_kind=(delivery.kind or "-")[:100],
            body_sha256=digest,
            body_length=len(delivery.body),
            reason=reason,
        )
        async with self._audit.transaction() as atx:
            await atx.append(leaf, at=now)
        log.warning("input_rejected", publisher=publisher, code=reason.code, kind=delivery.kind)


def _claimed_message_id(delivery: IngressDelivery) -> MessageId | None:
    """The message id the publisher claims (AMQP property): only to let it match the rejection."""
    try:
        return parse_message_id(delivery.amqp_message_id)
    except MalformedInput:
        return None


__all__ = [
    "DirectorySource",
    "GatewayIdentity",
    "IngressDelivery",
    "IngressPipeline",
    "Outcome",
    "Publisher",
]
