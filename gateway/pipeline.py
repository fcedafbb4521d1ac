"""The gateway's security argument: what happens to each input, in order.

A sealed message from an agency passes these steps; each is a function
below whose docstring states its invariant, and each returns a value that
only this module can make (`_STEP`), which is all the next step accepts:

1. `identify_publisher`  -> IdentifiedPublisher     the broker authenticated the connection and
                                                    vouches for `user_id`, a listed agency;
2. `authenticate_sender` -> AuthenticatedSubmission the header verifies under a key the directory
                                                    gives the signed sender, and that sender is
                                                    the publisher (verify, then parse);
3. `check_fresh`         -> FreshSubmission         not expired, not from the future, inside the
                                                    replay window;
4. `check_replay`        -> NewSubmission           a (sender, message id) is accepted once; the same
                            | Redelivery            envelope again is a `Redelivery`, other bytes
                                                    under a used id are refused;
5. `decide`              -> AllowedSubmission       an agreement in force allows sender -> each
                                                    recipient for this type, and each wrapped key
                                                    is a valid key of that recipient;
5a. `check_attachments`  -> CompleteSubmission      every attachment body the header commits to is
                                                    in the blob store, as long as committed,
                                                    uploaded by the sender (`gateway.blobs`);
6. `record_acceptance`   -> AcceptedSubmission      nothing is routed that is not first in the
                                                    audit log (the `attachments` leaf, then
                                                    `SUBMISSION_ACCEPTED`);
   `recall_acceptance`   Redelivery -> AcceptedSubmission | None: a redelivery routes only
                                                    under the acceptance on record;
7. `route`               AcceptedSubmission         a copy counts as relayed only once the broker
                                                    confirmed it;
8. `record_relay`        AcceptedSubmission         each recipient's outcome is logged and told
                                                    to the sender.

The delivery is acknowledged by the caller only after `handle` returns, that
is after every durable write. A refusal at steps 1-5 is permanent: it is
logged as `SUBMISSION_REJECTED` evidence (or, where no agency can be
addressed, a `rejected_input` leaf) and told to the publisher. A transient
failure (`TransientFailure`) leaves the delivery unacknowledged so that it
comes back; every step is idempotent, so coming back is safe.

Evidence published by a recipient agent (`DELIVERY`, `RETRIEVAL`, ...) takes
steps of its own: `identify_publisher`, `authenticate_evidence` ->
AuthenticatedEvidence (verified against the directory, issued by the
publisher), `match_evidence` -> MatchedEvidence (about a message relayed to
its issuer), `check_evidence_timely` -> TimelyEvidence (dated between the
message's acceptance and now, within the clock skew, by a key not retired
longer than the grace), then `forward_evidence` logs it and forwards it to
the message's sender. A batch of evidence (`KIND_EVIDENCE_BATCH`) is taken
statement by statement, each through the same steps as a single delivery
of it: a bad statement is refused alone (its own `rejected_input` leaf),
the good ones are kept, and a statement seen before adds nothing; a batch
that is not one at all is refused whole, as a malformed single evidence is.
Statements about different messages are taken concurrently, those about
one message in their order; an agent publishes all its evidence under one
AMQP message id, so the consumer takes its batches in the order published.
Recipient evidence of a copy whose relay is not logged yet (its write
failed after the broker confirmed it) logs `RELAY_ACCEPTED` first, so the
log never holds a `DELIVERY` before its relay.
Deadlines are not the pipeline's: `gateway.deadlines`.

The evidence a sender is owed is committed for the outgoing relay, which
sends what waits for one agency as one message: the relay is woken once
the relay outcome is logged, not at the acceptance, so that an exchange's
`SUBMISSION_ACCEPTED` and `RELAY_ACCEPTED` leave together.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Final, Protocol

import structlog

from gateway.auditlog import AuditLog, AuditTransaction
from gateway.blobs import AttachmentGate
from gateway.issuing import GatewayIdentity, issue_gateway_evidence
from gateway.store import GatewayStore, MessageRecord, MessageState, RelayState
from protocol.auditlog import RejectedInputLeaf, evidence_leaf
from protocol.directory import Directory
from protocol.encoding import format_timestamp, parse_timestamp, sha256_hex
from protocol.envelope import AuthenticatedHeader, EnvelopeHeader, SealedMessage, authenticate_header, check_freshness
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
    check_evidence_time,
    new_statement,
    parse_evidence_batch,
    parse_signed_evidence,
    verify_evidence,
)
from protocol.ids import AgencyId, MessageId, parse_agency_id, parse_message_id
from protocol.limits import Limits
from protocol.policy import decide_exchange
from protocol.steps import StepToken
from protocol.topology import KIND_EVIDENCE, KIND_EVIDENCE_BATCH, KIND_SEALED_MESSAGE
from runtime.broker import Handled
from runtime.errors import RoutingFailed
from runtime.supervision import KeyedLocks

log = structlog.get_logger("rogatory.gateway.pipeline")

_STEP: Final = StepToken("gateway.pipeline")
"""Only this module's steps hold it: every verified value below is made by its step and nowhere else."""


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


class OutcomeKind(StrEnum):
    """What a delivery turned out to carry."""

    MESSAGE = "message"
    EVIDENCE = "evidence"
    UNKNOWN = "unknown"


class OutcomeResult(StrEnum):
    """Where `handle` left a delivery; the values are the metrics' and log lines' labels."""

    RELAYED = "relayed"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"
    FORWARDED = "forwarded"


@dataclass(frozen=True, slots=True)
class Outcome(Handled[OutcomeResult]):
    """What `handle` did, for the caller's summary log line and metrics (`kind` is an `OutcomeKind`)."""


# -- what each step proves -----------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class _Verified:
    """A value only a step of this module makes (`_STEP`); anything else building one is refused."""

    step: object = field(repr=False, compare=False)

    def __post_init__(self) -> None:
        _STEP.admit(self.step, type(self))


@dataclass(frozen=True, slots=True, kw_only=True)
class IdentifiedPublisher(_Verified):
    """Step 1: the listed agency whose broker user published the delivery."""

    agency: AgencyId


@dataclass(frozen=True, slots=True, kw_only=True)
class _Submission(_Verified):
    authenticated: AuthenticatedHeader

    @property
    def header(self) -> EnvelopeHeader:
        """The authenticated header."""
        return self.authenticated.header

    @property
    def sealed(self) -> SealedMessage:
        """The sealed message, as the sender signed it."""
        return self.authenticated.sealed


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthenticatedSubmission(_Submission):
    """Step 2: signed by a key the directory gives its sender, and published by that sender."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FreshSubmission(_Submission):
    """Step 3: an authenticated submission inside its lifetime and the replay window."""


@dataclass(frozen=True, slots=True, kw_only=True)
class NewSubmission(_Submission):
    """Step 4: a fresh submission whose (sender, message id) the gateway has never accepted."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Redelivery(_Submission):
    """Step 4: a fresh submission whose exact envelope is on record (`record`): the broker delivered it again."""

    record: MessageRecord


@dataclass(frozen=True, slots=True, kw_only=True)
class AllowedSubmission(_Submission):
    """Step 5: a new submission an agreement in force allows for every recipient."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CompleteSubmission(_Submission):
    """Step 5a: an allowed submission whose every committed attachment body the gateway holds."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AcceptedSubmission(_Submission):
    """Step 6: a submission in the audit log as `SUBMISSION_ACCEPTED`: the only kind that is routed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthenticatedEvidence(_Verified):
    """Evidence verified under a key of its issuer, and published by that issuer."""

    verified: VerifiedEvidence


@dataclass(frozen=True, slots=True, kw_only=True)
class MatchedEvidence(_Verified):
    """Authenticated evidence about a message the gateway relayed to its issuer (`record`), with that digest."""

    verified: VerifiedEvidence
    record: MessageRecord


@dataclass(frozen=True, slots=True, kw_only=True)
class TimelyEvidence(_Verified):
    """Matched evidence dated after its message was accepted and not after now (within the skew)."""

    verified: VerifiedEvidence
    record: MessageRecord


_STAGE: Final = {
    RelayState.RELAYED: 0,
    RelayState.RELAY_FAILED: 0,
    RelayState.DELIVERY: 1,
    RelayState.NON_DELIVERY: 1,
    RelayState.RETRIEVAL: 2,
    RelayState.NON_RETRIEVAL: 2,
}
"""How far a copy got: its state never goes back to an earlier stage."""


def _went_back(current: RelayState | None, after: RelayState) -> bool:
    """Whether `after` is an earlier stage than `current`: the recipient's later evidence was logged first.

    Several gateway processes take a recipient's evidence concurrently (competing consumers of the
    ingress), so its `RETRIEVAL` may be logged before its `DELIVERY`: both are logged and forwarded,
    and the copy stays retrieved (else the deadline sweep would call a retrieved copy unretrieved).
    """
    return current is not None and _STAGE[after] < _STAGE[current]


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
        attachments: AttachmentGate | None,
        wake_relay: Callable[[], None] = lambda: None,
    ) -> None:
        """`attachments` is the blob store's gate; None: a gateway that keeps no bodies refuses every attachment."""
        self._attachments = attachments
        self._identity = identity
        self._directory = directory
        self._store = store
        self._audit = audit
        self._publisher = publisher
        self._limits = limits
        self._clock = clock
        self._wake_relay = wake_relay
        self._evidence_turns = KeyedLocks()

    async def handle(self, delivery: IngressDelivery) -> Outcome:
        """Process one delivery to a durable end state; raise only `TransientFailure`."""
        if delivery.kind == KIND_SEALED_MESSAGE:
            return await self._handle_sealed_message(delivery)
        if delivery.kind == KIND_EVIDENCE:
            return await self._handle_evidence(delivery)
        if delivery.kind == KIND_EVIDENCE_BATCH:
            return await self._handle_evidence_batch(delivery)
        await self._record_rejected_input(
            delivery,
            Reason(code=ErrorCode.MALFORMED_ENVELOPE, detail=f"unknown message kind {str(delivery.kind)[:60]!r}"),
        )
        return Outcome(kind=OutcomeKind.UNKNOWN, result=OutcomeResult.REJECTED, code=ErrorCode.MALFORMED_ENVELOPE)

    # -- sealed messages ---------------------------------------------------------------

    async def _handle_sealed_message(self, delivery: IngressDelivery) -> Outcome:
        now = self._clock()
        directory = self._directory.current
        try:
            publisher = self.identify_publisher(delivery, directory)
        except ProtocolError as exc:
            await self._record_rejected_input(delivery, Reason(code=exc.code, detail=exc.detail))
            return Outcome(kind=OutcomeKind.MESSAGE, result=OutcomeResult.REJECTED, code=exc.code)
        sealed: SealedMessage | None = None
        authenticated: AuthenticatedSubmission | None = None
        try:
            sealed = SealedMessage.from_bytes(delivery.body, self._limits)
            authenticated = self.authenticate_sender(sealed, publisher, directory, now)
            seen = await self.check_replay(self.check_fresh(authenticated, now))
            if isinstance(seen, Redelivery):
                return await self._resume(seen)
            complete = await self.check_attachments(self.decide(seen, directory, now))
        except ProtocolError as exc:
            await self._reject(
                delivery, publisher=publisher, sealed=sealed, authenticated=authenticated, error=exc, now=now
            )
            return Outcome(
                kind=OutcomeKind.MESSAGE, result=OutcomeResult.REJECTED, code=exc.code, sender=publisher.agency
            )
        accepted = await self.record_acceptance(complete, now)
        await self._route_and_record(accepted, just_accepted=True)
        header = accepted.header
        return Outcome(
            kind=OutcomeKind.MESSAGE,
            result=OutcomeResult.RELAYED,
            message_id=str(header.message_id),
            sender=header.sender,
        )

    def identify_publisher(self, delivery: IngressDelivery, directory: Directory) -> IdentifiedPublisher:
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
        return IdentifiedPublisher(agency=agency, step=_STEP)

    def authenticate_sender(
        self, sealed: SealedMessage, publisher: IdentifiedPublisher, directory: Directory, now: datetime
    ) -> AuthenticatedSubmission:
        """The header verifies under a key of the signed sender, and the sender is the publisher."""
        authenticated = authenticate_header(sealed, directory, now=now)
        if authenticated.header.sender != publisher.agency:
            raise AuthenticationFailed(
                f"header is signed by {authenticated.header.sender} but was published by {publisher.agency}",
                code=ErrorCode.BROKER_USER_MISMATCH,
            )
        return AuthenticatedSubmission(authenticated=authenticated, step=_STEP)

    def check_fresh(self, submission: AuthenticatedSubmission, now: datetime) -> FreshSubmission:
        """Not expired, not from the future, not older than the replay window."""
        check_freshness(submission.authenticated, now=now, limits=self._limits)
        return FreshSubmission(authenticated=submission.authenticated, step=_STEP)

    async def check_replay(self, submission: FreshSubmission) -> NewSubmission | Redelivery:
        """A used (sender, message id) is a redelivery if the envelope is the same, refused if it is not."""
        header = submission.header
        record = await self._store.message(header.sender, str(header.message_id))
        if record is None:
            return NewSubmission(authenticated=submission.authenticated, step=_STEP)
        if record.digest != submission.authenticated.digest:
            raise FreshnessViolation(
                f"message id {header.message_id} of {header.sender} was already used for another envelope",
                code=ErrorCode.REPLAYED,
            )
        return Redelivery(authenticated=submission.authenticated, record=record, step=_STEP)

    def decide(self, submission: NewSubmission, directory: Directory, now: datetime) -> AllowedSubmission:
        """Every recipient is allowed by an agreement in force and wrapped for one of its valid keys."""
        header = submission.header
        for recipient in header.recipient_agencies:
            decide_exchange(submission.authenticated, recipient, directory, now=now)
        if header.archive is not None:
            directory.encryption_key(header.sender, header.archive.key_id)
        return AllowedSubmission(authenticated=submission.authenticated, step=_STEP)

    async def check_attachments(self, submission: AllowedSubmission) -> CompleteSubmission:
        """Every body the header commits to is stored as committed; without a blob store, none may be."""
        if self._attachments is not None:
            await self._attachments.check(submission.authenticated)
        elif submission.header.attachments:
            raise PolicyDenied("this gateway keeps no attachment bodies", code=ErrorCode.ATTACHMENT_MISSING)
        return CompleteSubmission(authenticated=submission.authenticated, step=_STEP)

    async def record_acceptance(self, submission: CompleteSubmission, now: datetime) -> AcceptedSubmission:
        """Log the attachments and `SUBMISSION_ACCEPTED`, and remember the message, before anything is routed."""
        authenticated = submission.authenticated
        header = authenticated.header
        if self._attachments is not None:
            await self._attachments.record(self._audit, authenticated, authenticated.sealed, now)
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
                    state=MessageState.ACCEPTED,
                    received_at=format_timestamp(now),
                )
            )
            for recipient in header.recipient_agencies:
                statement = self._statement(EvidenceType.SUBMISSION_ACCEPTED, authenticated, recipient, now)
                await issue_gateway_evidence(atx, self._identity, statement)
        # The relay is woken once the relay outcome is logged (`record_relay`): both leave together.
        return AcceptedSubmission(authenticated=authenticated, step=_STEP)

    def recall_acceptance(self, redelivery: Redelivery) -> AcceptedSubmission | None:
        """A redelivery is routed under the acceptance on record; one refused as dead-lettered has none."""
        if redelivery.record.state == MessageState.DEAD_LETTERED:
            return None
        return AcceptedSubmission(authenticated=redelivery.authenticated, step=_STEP)

    async def route(self, accepted: AcceptedSubmission, recipient: AgencyId) -> Reason | None:
        """Publish the envelope unchanged to `recipient`'s inbox; None once the broker confirmed it."""
        try:
            await self._publisher.publish(
                routing_key=recipient,
                body=accepted.sealed.to_bytes(),
                kind=KIND_SEALED_MESSAGE,
                message_id=str(accepted.header.message_id),
            )
        except RoutingFailed as exc:
            return Reason(code=ErrorCode.ROUTING_FAILED, detail=str(exc)[:500])
        return None

    async def record_relay(
        self, accepted: AcceptedSubmission, recipient: AgencyId, failure: Reason | None, *, last: bool = False
    ) -> None:
        """Log `RELAY_ACCEPTED` or `RELAY_FAILED` for one recipient and tell the sender.

        A state the recipient's evidence already recorded is never moved back;
        with `last`, the message is marked relayed in the same transaction.
        """
        now = self._clock()
        header = accepted.header
        evidence_type = EvidenceType.RELAY_ACCEPTED if failure is None else EvidenceType.RELAY_FAILED
        async with self._audit.transaction() as atx:
            if await atx.tx.relay_state(header.sender, str(header.message_id), recipient) is None:
                await atx.tx.set_relay_state(
                    header.sender,
                    str(header.message_id),
                    recipient,
                    RelayState.RELAYED if failure is None else RelayState.RELAY_FAILED,
                    format_timestamp(now),
                    expires_at=format_timestamp(header.expires_at),
                )
            statement = self._statement(evidence_type, accepted.authenticated, recipient, now, failure)
            await issue_gateway_evidence(atx, self._identity, statement)
            if last:
                await atx.tx.set_message_state(header.sender, str(header.message_id), MessageState.RELAYED)
        self._wake_relay()

    async def _route_and_record(self, accepted: AcceptedSubmission, *, just_accepted: bool = False) -> None:
        """Route to each recipient not yet relayed to, and log each relay; `just_accepted`: none was.

        A message accepted by this very delivery has no relay on record (its
        deliveries take turns, and the replay check found none), so its
        recipients are not looked up; `record_relay` checks again in its write.
        """
        header = accepted.header
        pending = (
            list(header.recipient_agencies)
            if just_accepted
            else [
                recipient
                for recipient in header.recipient_agencies
                if await self._store.relay_state(header.sender, str(header.message_id), recipient) is None
            ]
        )
        for index, recipient in enumerate(pending):
            failure = await self.route(accepted, recipient)
            await self.record_relay(accepted, recipient, failure, last=index == len(pending) - 1)
        if not pending:
            # A redelivery after every copy was recorded: only the message's own state may be missing.
            async with self._store.transaction() as tx:
                await tx.set_message_state(header.sender, str(header.message_id), MessageState.RELAYED)

    async def _resume(self, redelivery: Redelivery) -> Outcome:
        """A redelivery: finish whatever the first attempt did not, add nothing twice."""
        header = redelivery.header
        accepted = self.recall_acceptance(redelivery)
        # Another copy of a submission already refused as dead is refused once, never relayed.
        if accepted is not None:
            await self._route_and_record(accepted)
        return Outcome(
            kind=OutcomeKind.MESSAGE,
            result=OutcomeResult.DUPLICATE,
            message_id=str(header.message_id),
            sender=header.sender,
        )

    async def _reject(
        self,
        delivery: IngressDelivery,
        *,
        publisher: IdentifiedPublisher,
        sealed: SealedMessage | None,
        authenticated: AuthenticatedSubmission | None,
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
            sender=publisher.agency,
            recipient=None,
            issuer=self._identity.gateway_id,
            at=now,
            reason=Reason(code=error.code, detail=error.detail[:1000]),
        )
        async with self._audit.transaction() as atx:
            await issue_gateway_evidence(atx, self._identity, statement)
        log.info("submission_rejected", publisher=publisher.agency, code=str(error.code), message_id=str(message_id))
        self._wake_relay()

    # -- evidence from recipients -----------------------------------------------------------

    async def _handle_evidence(self, delivery: IngressDelivery) -> Outcome:
        now = self._clock()
        directory = self._directory.current
        try:
            publisher = self.identify_publisher(delivery, directory)
            authenticated = self.authenticate_evidence(delivery, publisher, directory, now)
        except ProtocolError as exc:
            await self._record_rejected_input(delivery, Reason(code=exc.code, detail=exc.detail[:1000]))
            return Outcome(kind=OutcomeKind.EVIDENCE, result=OutcomeResult.REJECTED, code=exc.code)
        statement = authenticated.verified.statement
        # Statements about one message take turns in the order they came (nothing above waited): a
        # batch's RETRIEVAL is never logged before the DELIVERY ahead of it in the same batch.
        async with self._evidence_turns.hold(f"{statement.sender}/{statement.message_id}"):
            try:
                matched = await self.match_evidence(authenticated)
                timely = self.check_evidence_timely(matched, now)
            except ProtocolError as exc:
                await self._record_rejected_input(delivery, Reason(code=exc.code, detail=exc.detail[:1000]))
                return Outcome(kind=OutcomeKind.EVIDENCE, result=OutcomeResult.REJECTED, code=exc.code)
            added = await self.forward_evidence(timely, now)
        return Outcome(
            kind=OutcomeKind.EVIDENCE,
            result=OutcomeResult.FORWARDED if added else OutcomeResult.DUPLICATE,
            message_id=matched.record.message_id,
            sender=matched.verified.statement.sender,
        )

    async def _handle_evidence_batch(self, delivery: IngressDelivery) -> Outcome:
        """Each statement as a single delivery of it; all finished before anything is raised."""
        try:
            self.identify_publisher(delivery, self._directory.current)
            statements = parse_evidence_batch(delivery.body, self._limits)
        except ProtocolError as exc:
            await self._record_rejected_input(delivery, Reason(code=exc.code, detail=exc.detail[:1000]))
            return Outcome(kind=OutcomeKind.EVIDENCE, result=OutcomeResult.REJECTED, code=exc.code)
        singles = [
            IngressDelivery(body=raw, kind=KIND_EVIDENCE, user_id=delivery.user_id, amqp_message_id=None)
            for raw in statements
        ]
        outcomes = await asyncio.gather(*(self._handle_evidence(single) for single in singles), return_exceptions=True)
        failure = next((outcome for outcome in outcomes if isinstance(outcome, BaseException)), None)
        if failure is not None:
            raise failure
        results = [outcome.result for outcome in outcomes if isinstance(outcome, Outcome)]
        result = next(
            (r for r in (OutcomeResult.FORWARDED, OutcomeResult.DUPLICATE) if r in results), OutcomeResult.REJECTED
        )
        return Outcome(  # its counts go on the delivery's one line (`message_processed`, with the publisher)
            kind=OutcomeKind.EVIDENCE,
            result=result,
            batch={
                "statements": len(results),
                "forwarded": results.count(OutcomeResult.FORWARDED),
                "duplicate": results.count(OutcomeResult.DUPLICATE),
                "rejected": results.count(OutcomeResult.REJECTED),
            },
        )

    def authenticate_evidence(
        self, delivery: IngressDelivery, publisher: IdentifiedPublisher, directory: Directory, now: datetime
    ) -> AuthenticatedEvidence:
        """The evidence verifies under a key of its issuer, and the issuer is the publisher."""
        verified = verify_evidence(parse_signed_evidence(delivery.body, self._limits), directory, now=now)
        if verified.statement.issuer != publisher.agency:
            raise AuthenticationFailed(
                f"evidence issued by {verified.statement.issuer} was published by {publisher.agency}",
                code=ErrorCode.BROKER_USER_MISMATCH,
            )
        return AuthenticatedEvidence(verified=verified, step=_STEP)

    async def match_evidence(self, evidence: AuthenticatedEvidence) -> MatchedEvidence:
        """The evidence names a message the gateway relayed to its issuer, with the digest it relayed."""
        statement = evidence.verified.statement
        record = await self._store.message(statement.sender, str(statement.message_id))
        if record is None or record.digest != statement.message_digest or statement.recipient not in record.recipients:
            raise AuthenticationFailed(
                f"evidence names message {statement.message_id} of {statement.sender}, "
                "which the gateway did not relay to its issuer with that digest",
                code=ErrorCode.EVIDENCE_MISMATCH,
            )
        return MatchedEvidence(verified=evidence.verified, record=record, step=_STEP)

    def check_evidence_timely(self, matched: MatchedEvidence, now: datetime) -> TimelyEvidence:
        """Dated between the message's acceptance and now, within the skew, by a key not retired past the grace."""
        accepted_at = parse_timestamp(matched.record.received_at)
        check_evidence_time(matched.verified, accepted_at=accepted_at, now=now, limits=self._limits)
        return TimelyEvidence(verified=matched.verified, record=matched.record, step=_STEP)

    async def forward_evidence(self, matched: TimelyEvidence, now: datetime) -> bool:
        """Log the evidence, move the copy's state and forward it to the sender, once; whether it was new."""
        statement = matched.verified.statement
        record = matched.record
        async with self._audit.transaction() as atx:
            assert statement.recipient is not None  # checked by verify_evidence for recipient evidence
            current = await atx.tx.relay_state(record.sender, record.message_id, statement.recipient)
            if current is None:
                await self._relay_proven_by_recipient(atx, record, statement.recipient, now)
            appended = await atx.append(
                evidence_leaf(matched.verified.signed, statement),
                at=now,
                message_id=str(statement.message_id),
                agencies=(statement.sender, *((statement.recipient,) if statement.recipient else ())),
            )
            after = RelayState.after(statement.evidence_type)
            if appended.added and not _went_back(current, after):
                await atx.tx.set_relay_state(
                    record.sender, record.message_id, statement.recipient, after, format_timestamp(now)
                )
            if appended.added:
                await atx.tx.enqueue(
                    statement.sender,
                    KIND_EVIDENCE,
                    record.message_id,
                    matched.verified.signed.model_dump_json().encode("utf-8"),
                    format_timestamp(now),
                )
        self._wake_relay()
        return appended.added

    async def _relay_proven_by_recipient(
        self, atx: AuditTransaction, record: MessageRecord, recipient: AgencyId, now: datetime
    ) -> None:
        """Log `RELAY_ACCEPTED` for a copy whose recipient's signed evidence arrived before its relay was logged.

        The copy was published and confirmed, but the write that logs it
        failed (a disk full, a crash) and waits for the submission to come
        back; the recipient's statement, which only a copy the gateway
        published can produce, proves the relay. Logging it here keeps the
        log's order (no `DELIVERY` before `RELAY_ACCEPTED`); the relay's own
        write, when it comes, finds both on record and adds nothing.
        """
        statement = new_statement(
            EvidenceType.RELAY_ACCEPTED,
            message_id=parse_message_id(record.message_id),
            message_digest=record.digest,
            sender=parse_agency_id(record.sender),
            recipient=recipient,
            message_type=record.message_type,
            case_id=record.case_id,
            issuer=self._identity.gateway_id,
            at=now,
        )
        await issue_gateway_evidence(atx, self._identity, statement)
        await atx.tx.set_relay_state(
            record.sender,
            record.message_id,
            recipient,
            RelayState.RELAYED,
            format_timestamp(now),
            expires_at=record.expires_at,
        )
        log.warning("relay_logged_from_recipient_evidence", message_id=record.message_id, recipient=recipient)

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
    "AcceptedSubmission",
    "AllowedSubmission",
    "AuthenticatedEvidence",
    "AuthenticatedSubmission",
    "CompleteSubmission",
    "DirectorySource",
    "FreshSubmission",
    "GatewayIdentity",
    "IdentifiedPublisher",
    "IngressDelivery",
    "IngressPipeline",
    "MatchedEvidence",
    "NewSubmission",
    "Outcome",
    "OutcomeKind",
    "OutcomeResult",
    "Publisher",
    "Redelivery",
    "TimelyEvidence",
]
