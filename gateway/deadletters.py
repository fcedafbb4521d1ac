"""Dead letters: what the broker gave up on, held by the gateway for its operator.

A quorum queue dead-letters a delivery into `mla.dead` once it was handed
back more often than the queue's delivery limit (reason `delivery_limit`),
or when a consumer rejects it without requeue (`rejected`). The broker keeps
its properties (`user_id`, `type`, `message_id`) and headers, and adds
`x-death` (and `x-first-death-*`, unless the publisher set them); only the
broker can write to `mla.dead`, so a dead letter's `user_id` is still the one
the broker checked at publication. That `user_id` and the gateway's own
records are all that is believed about a death (`establish_death`): an
agency's headers never name the queue, and only a copy the gateway itself
relayed, as its records show, is ever published again into an inbox.

`DeadLetters.take` records each one, once, in a single transaction:

1. a row in `dead_letters` (metadata, the sealed body for a re-drive, what
   was done) under an identity made of its queue, time of death and digest,
   so a redelivery from `mla.dead` adds nothing;
2. a `dead_letter` audit leaf (never content);
3. negative evidence where a sender can be named and nothing was promised yet:
   * a submission from `mla.gateway.ingress` the gateway had not accepted:
     `SUBMISSION_REJECTED` (`DELIVERY_LIMIT_EXCEEDED`) to its publisher, and the
     message is remembered as `dead_lettered` so that another copy of it is
     never relayed behind the sender's back (`IngressPipeline._resume`);
     one the gateway had accepted already is not refused: if it was not yet
     relayed to every recipient, the gateway finishes it through the pipeline
     (idempotent: relayed once, `RELAY_ACCEPTED` or `RELAY_FAILED`), so an
     acceptance is never left without an end, and the dead letter is marked
     `resumed`;
   * evidence from a recipient that died at the ingress: none is owed, but the
     gateway finishes it through the pipeline too (verify, log once, forward),
     or a delivered message would stay `relayed` at its sender; a dead batch
     of evidence is split there, statement by statement: the good ones are
     kept, each bad one refused alone (its own `rejected_input` leaf);
   * a message the gateway relayed that died in `mla.inbox.<AGENCY>`:
     `NON_DELIVERY` (`DELIVERY_LIMIT_EXCEEDED`) issued by the gateway, unless
     the recipient's evidence about it is already in;
   * evidence that died in an inbox (a sender's agent failing on it): none,
     held for the operator (a batch is re-driven whole, once every statement
     in it is checked again).

Finishing through the pipeline is tried once per dead letter; if it fails
with anything but a transient failure, the dead letter stays held (a poison
message must not loop through `mla.dead`, which has no delivery limit). For
the same reason a delivery that cannot be taken in at all is `parked`: kept
with the error, acknowledged, never handed back.

The operator (`GET /v1/ops/dead-letters`) sees metadata and reasons, never
content, and decides: `redrive` (a dead submission is processed again
through the pipeline; a dead inbox delivery is published again through
`mla.deliver` to its recipient, once it is checked again to be what the
gateway relayed there and still may) or `discard`. Each decision is an
`operator_action` leaf written before it takes effect, naming the account
that took it (`gateway.accounts`).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import structlog
from aiohttp import web

from gateway.api import ACCOUNT
from gateway.auditlog import AuditLog, AuditTransaction
from gateway.errors import OperationConflict
from gateway.issuing import GatewayIdentity, issue_gateway_evidence
from gateway.pipeline import IdentifiedPublisher, IngressDelivery, IngressPipeline, Publisher
from gateway.store import DeadLetterRecord, GatewayStore, MessageRecord, MessageState, RelayState
from gateway.transport import DeadDelivery
from protocol.auditlog import DeadLetterLeaf, OperatorActionLeaf, dead_letter_identity, evidence_leaf
from protocol.directory import Directory
from protocol.encoding import format_timestamp, sha256_hex
from protocol.envelope import AuthenticatedHeader, SealedMessage, authenticate_header
from protocol.errors import ErrorCode, MalformedInput, ProtocolError
from protocol.evidence import (
    EvidenceType,
    Reason,
    new_statement,
    parse_evidence_batch,
    parse_signed_evidence,
    verify_evidence,
)
from protocol.ids import AgencyId, MessageId, parse_agency_id, parse_message_id
from protocol.limits import Limits
from protocol.policy import exchange_agreement
from protocol.topology import (
    EVIDENCE_KINDS,
    INBOX_QUEUE_PREFIX,
    INGRESS_QUEUE,
    KIND_EVIDENCE,
    KIND_SEALED_MESSAGE,
)
from runtime.broker import ManagementAccess, queue_figures
from runtime.errors import ManagementUnavailable, RoutingFailed, TransientFailure
from runtime.http import Handler, problem

log = structlog.get_logger("rogatory.gateway.deadletters")

HELD: Final = "held"
PARKED: Final = "parked"
"""A delivery from `mla.dead` that could not be taken in (a bug met it): kept, acknowledged, never looped on."""
REDRIVING: Final = "redriving"
REDRIVEN: Final = "redriven"
DISCARDED: Final = "discarded"
RESUMED: Final = "resumed"
"""An accepted submission the gateway finished by itself; nothing for the operator to decide."""
STATES: Final = frozenset({HELD, PARKED, REDRIVING, REDRIVEN, DISCARDED, RESUMED})
MAX_PAGE: Final = 500


BROKER_REASONS: Final = frozenset({"delivery_limit", "rejected", "expired", "maxlen"})
"""The reasons RabbitMQ dead-letters for; any other word in a header is not the broker's."""
UNKNOWN_QUEUE: Final = "-"
"""Where a dead letter died when nothing the publisher could not forge says it."""


@dataclass(frozen=True, slots=True)
class Death:
    """Where and why one dead letter died, established from what its publisher cannot forge.

    `queue` follows from the broker-authenticated `user_id` (module docstring);
    `reason`, `died_at` and `count` are the broker's newest `x-death` entry for
    that queue, labels for the operator that decide nothing but the reason code
    of the negative evidence (`expired` or not).
    """

    queue: str
    reason: str
    died_at: str
    count: int
    by_gateway: bool
    """Published by the gateway's own broker user: only the broker wrote its headers."""


def establish_death(delivery: DeadDelivery, *, gateway_user: str) -> Death:
    """The death of one dead letter, from its authenticated publisher; never raises on any header.

    Agencies may write only `mla.submit`, which routes only to
    `mla.gateway.ingress`, and the gateway only `mla.deliver`, which routes
    only to inboxes; only the broker writes `mla.dead`. So a delivery not
    published by the gateway died in the ingress, whatever its headers say.
    One the gateway published carries no header of the gateway's making
    (`ConfirmedPublisher` sets none): its `x-death` is the broker's, and it
    names the inbox. The publisher's own `x-death` and `x-first-death-*` are
    never read: RabbitMQ 3.10 keeps both (it prepends its own `x-death`
    entry, or moves a matching one to the front, keeping its forged count
    and time, and leaves `x-first-death-*` as the client set them).
    """
    by_gateway = delivery.user_id is not None and delivery.user_id == gateway_user
    entry = _newest_death(delivery.headers)
    entry_queue = _text(entry.get("queue"))
    if by_gateway:
        queue = entry_queue if entry_queue is not None and _inbox_agency(entry_queue) is not None else UNKNOWN_QUEUE
    else:
        queue = INGRESS_QUEUE
    if entry_queue != queue:
        entry = {}
    reason = _text(entry.get("reason"))
    died = entry.get("time")
    count = entry.get("count")
    return Death(
        queue=queue,
        reason=reason if reason in BROKER_REASONS else "unknown",
        died_at=format_timestamp(died.astimezone(UTC)) if isinstance(died, datetime) else "-",
        count=count if isinstance(count, int) and not isinstance(count, bool) and 0 <= count < 2**31 else 0,
        by_gateway=by_gateway,
    )


def _newest_death(headers: Mapping[str, object]) -> Mapping[str, object]:
    """The first `x-death` entry: where RabbitMQ puts the death it is recording."""
    deaths = _as_list(headers.get("x-death"))
    first = deaths[0] if deaths else None
    return first if isinstance(first, Mapping) else {}


def _inbox_agency(queue: str) -> AgencyId | None:
    """The agency whose inbox `queue` is, if it is one."""
    if not queue.startswith(INBOX_QUEUE_PREFIX):
        return None
    try:
        return parse_agency_id(queue.removeprefix(INBOX_QUEUE_PREFIX))
    except MalformedInput:
        return None


def _as_list(value: object) -> list[object]:
    return list(value) if isinstance(value, list | tuple) else []


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    return value if isinstance(value, str) and len(value) <= 255 else None


@dataclass(frozen=True, slots=True)
class Taken:
    """What `take` did with one dead letter, for the summary log line."""

    dead_letter_id: int
    queue: str
    reason: str
    result: str
    evidence: str | None
    message_id: str | None
    sender: str | None


@dataclass(frozen=True, slots=True)
class _Attribution:
    """Who and what a dead letter is about, as far as it can be known."""

    publisher: AgencyId | None
    sender: str | None
    message_id: str | None
    recipient: str | None
    authenticated: AuthenticatedHeader | None
    digest: str


class DeadLetters:
    """Takes dead letters into the hold, and carries out the operator's decisions on them."""

    def __init__(
        self,
        *,
        identity: GatewayIdentity,
        directory: Callable[[], Directory],
        store: GatewayStore,
        audit: AuditLog,
        pipeline: IngressPipeline,
        publisher: Publisher,
        limits: Limits,
        clock: Callable[[], datetime],
        gateway_user: str,
        wake_relay: Callable[[], None] = lambda: None,
    ) -> None:
        """`gateway_user`: the gateway's own broker user, the `user_id` of everything it publishes."""
        self._identity = identity
        self._gateway_user = gateway_user
        self._directory = directory
        self._store = store
        self._audit = audit
        self._pipeline = pipeline
        self._publisher = publisher
        self._limits = limits
        self._clock = clock
        self._wake_relay = wake_relay

    # -- taking dead letters in -------------------------------------------------------------

    async def take(self, delivery: DeadDelivery) -> Taken:
        """Record one dead letter (once), with its leaf and negative evidence; raise only `TransientFailure`.

        A dead letter that cannot be recorded for any other reason is parked
        (`_park`) and acknowledged: `mla.dead` has no delivery limit, so
        handing it back would loop on it for ever.
        """
        try:
            return await self._take(delivery)
        except TransientFailure:
            raise
        except Exception as exc:
            log.exception("dead_letter_unreadable", user_id=(delivery.user_id or "")[:200], kind=delivery.kind)
            return await self._park(delivery, exc)

    async def _park(self, delivery: DeadDelivery, error: Exception) -> Taken:
        """Keep what cannot be taken in as `parked` (its body, the error), once per publisher and body."""
        digest = sha256_hex(delivery.body)
        publisher = (delivery.user_id or "")[:200] or None
        identity = f"parked/{sha256_hex((publisher or '-').encode('utf-8'))[:16]}/{digest}"
        known = await self._store.dead_letter_by_identity(identity)
        if known is None:
            at = format_timestamp(self._clock())
            async with self._store.transaction() as tx:
                if await tx.dead_letter_by_identity(identity) is None:
                    await tx.insert_dead_letter(
                        DeadLetterRecord(
                            dead_letter_id=0,
                            identity=identity,
                            queue=UNKNOWN_QUEUE,
                            reason="unreadable",
                            death_count=0,
                            died_at="-",
                            kind=(delivery.kind or "-")[:100],
                            publisher=publisher,
                            amqp_message_id=(delivery.amqp_message_id or "")[:100] or None,
                            sender=None,
                            message_id=None,
                            recipient=None,
                            body=delivery.body,
                            body_sha256=digest,
                            body_length=len(delivery.body),
                            evidence=None,
                            state=PARKED,
                            note=f"could not be taken in: {type(error).__name__}: {error}"[:500],
                            recorded_at=at,
                            updated_at=at,
                        )
                    )
            known = await self._store.dead_letter_by_identity(identity)
            assert known is not None  # committed above, or by an earlier attempt
        log.error("dead_letter_parked", dead_letter_id=known.dead_letter_id, publisher=publisher)
        return _taken(known, "parked")

    async def _take(self, delivery: DeadDelivery) -> Taken:
        now = self._clock()
        death = establish_death(delivery, gateway_user=self._gateway_user)
        digest = sha256_hex(delivery.body)
        identity = dead_letter_identity(death.queue, death.died_at, digest)
        known = await self._store.dead_letter_by_identity(identity)
        if known is not None:
            if known.state == HELD and await self._resumable(known):
                known = await self._resume(known, delivery)
            return _taken(known, "duplicate")
        attribution = self._attribute(delivery, death, now)
        async with self._audit.transaction() as atx:
            if await atx.tx.dead_letter_by_identity(identity) is None:
                await atx.append(
                    DeadLetterLeaf(
                        identity=identity,
                        at=now,
                        queue=death.queue,
                        reason=death.reason,
                        died_at=death.died_at,
                        death_count=death.count,
                        publisher=(delivery.user_id or "")[:200] or None,
                        input_kind=(delivery.kind or "-")[:100],
                        message_id=(delivery.amqp_message_id or "")[:100] or None,
                        body_sha256=digest,
                        body_length=len(delivery.body),
                    ),
                    at=now,
                    message_id=attribution.message_id,
                    agencies=tuple(a for a in (attribution.sender, attribution.recipient) if a),
                )
                evidence, note = await self._negative_evidence(atx, delivery, death, attribution, now)
                at = format_timestamp(now)
                await atx.tx.insert_dead_letter(
                    DeadLetterRecord(
                        dead_letter_id=0,
                        identity=identity,
                        queue=death.queue,
                        reason=death.reason,
                        death_count=death.count,
                        died_at=death.died_at,
                        kind=(delivery.kind or "-")[:100],
                        publisher=(delivery.user_id or "")[:200] or None,
                        amqp_message_id=(delivery.amqp_message_id or "")[:100] or None,
                        sender=attribution.sender,
                        message_id=attribution.message_id,
                        recipient=attribution.recipient,
                        body=delivery.body,
                        body_sha256=digest,
                        body_length=len(delivery.body),
                        evidence=evidence,
                        state=HELD,
                        note=note,
                        recorded_at=at,
                        updated_at=at,
                    )
                )
        self._wake_relay()
        recorded = await self._store.dead_letter_by_identity(identity)
        assert recorded is not None  # committed above, or by an earlier attempt
        if recorded.state == HELD and await self._resumable(recorded):
            recorded = await self._resume(recorded, delivery)
        log.warning(
            "dead_letter_held",
            dead_letter_id=recorded.dead_letter_id,
            queue=recorded.queue,
            reason=recorded.reason,
            evidence=recorded.evidence,
            message_id=recorded.message_id,
            sender=recorded.sender,
        )
        return _taken(recorded, "held")

    async def _resumable(self, record: DeadLetterRecord) -> bool:
        """Evidence that died at the ingress, or a submission the gateway had accepted and not relayed to all."""
        if record.queue != INGRESS_QUEUE:
            return False
        return record.kind in EVIDENCE_KINDS or await self._accepted_unrelayed(record)

    async def _accepted_unrelayed(self, record: DeadLetterRecord) -> bool:
        if record.kind != KIND_SEALED_MESSAGE or record.sender is None or record.message_id is None:
            return False
        try:
            digest = SealedMessage.from_bytes(record.body, self._limits).digest
        except ProtocolError:
            return False
        message = await self._store.message(record.sender, record.message_id)
        if message is None or message.state == MessageState.DEAD_LETTERED or message.digest != digest:
            return False
        for recipient in message.recipients:
            if await self._store.relay_state(message.sender, message.message_id, recipient) is None:
                return True
        return False

    async def _resume(self, record: DeadLetterRecord, delivery: DeadDelivery) -> DeadLetterRecord:
        """Finish it through the pipeline (idempotent), as its redelivery would have; hold it if that fails."""
        try:
            outcome = await self._pipeline.handle(_as_ingress(delivery))
        except TransientFailure:
            raise
        except Exception:
            # A bug that also made it die: leave it to the operator rather than loop on it.
            log.exception("dead_letter_resume_failed", dead_letter_id=record.dead_letter_id)
            return record
        note = f"finished through the pipeline: {outcome.kind} {outcome.result}" + (
            f" ({outcome.code})" if outcome.code else ""
        )
        async with self._store.transaction() as tx:
            await tx.set_dead_letter_state(record.dead_letter_id, RESUMED, note, format_timestamp(self._clock()))
        return await self._reread(record.dead_letter_id)

    def _attribute(self, delivery: DeadDelivery, death: Death, now: datetime) -> _Attribution:
        """Name the publisher, the message and its recipient, as far as the broker and the header vouch."""
        digest = sha256_hex(delivery.body)
        directory = self._directory()
        claimed = _claimed_message_id(delivery.amqp_message_id)
        # Only a copy the gateway published died in an inbox (`establish_death`).
        inbox = _inbox_agency(death.queue) if death.by_gateway else None
        recipient = None if inbox is None else str(inbox)
        identified: IdentifiedPublisher | None = None
        if death.queue == INGRESS_QUEUE:
            try:
                identified = self._pipeline.identify_publisher(_as_ingress(delivery), directory)
            except ProtocolError:
                identified = None
        publisher = None if identified is None else identified.agency
        authenticated: AuthenticatedHeader | None = None
        if delivery.kind == KIND_SEALED_MESSAGE:
            try:
                sealed = SealedMessage.from_bytes(delivery.body, self._limits)
                digest = sealed.digest
                if identified is not None:
                    authenticated = self._pipeline.authenticate_sender(sealed, identified, directory, now).authenticated
                elif recipient is not None:
                    authenticated = authenticate_header(sealed, directory, now=now)
            except ProtocolError:
                authenticated = None
        if authenticated is not None:
            header = authenticated.header
            return _Attribution(
                publisher=publisher,
                sender=header.sender,
                message_id=str(header.message_id),
                recipient=recipient,
                authenticated=authenticated,
                digest=authenticated.digest,
            )
        return _Attribution(
            publisher=publisher,
            sender=publisher,
            message_id=None if claimed is None else str(claimed),
            recipient=recipient,
            authenticated=None,
            digest=digest,
        )

    async def _negative_evidence(
        self, atx: AuditTransaction, delivery: DeadDelivery, death: Death, who: _Attribution, now: datetime
    ) -> tuple[str | None, str]:
        """Issue what the sender is owed (module docstring); return its type and a note for the operator."""
        reason = Reason(
            code=ErrorCode.EXPIRED if death.reason == "expired" else ErrorCode.DELIVERY_LIMIT_EXCEEDED,
            detail=f"dead-lettered from {death.queue} ({death.reason}) after {death.count} death(s)",
        )
        if delivery.kind != KIND_SEALED_MESSAGE:
            return None, f"{delivery.kind or 'unknown kind'} from {delivery.user_id or 'unknown'}: no evidence is owed"
        if death.queue == INGRESS_QUEUE:
            return await self._refuse_submission(atx, delivery, who, reason, now)
        if who.recipient is not None:
            return await self._report_non_delivery(atx, who, reason, now)
        return None, f"died in {death.queue}, which is neither the ingress nor an inbox"

    async def _refuse_submission(
        self, atx: AuditTransaction, delivery: DeadDelivery, who: _Attribution, reason: Reason, now: datetime
    ) -> tuple[str | None, str]:
        if who.publisher is None:
            return None, f"published by {delivery.user_id!r}, not an agency: no sender to tell"
        if who.message_id is not None:
            record = await atx.tx.message(who.publisher, who.message_id)
            if record is not None:
                if record.digest == who.digest:
                    return (
                        None,
                        f"the gateway had accepted it already (state {record.state}): it is finished, not refused",
                    )
                return None, "another envelope under a message id already used: nothing to refuse twice"
        statement = new_statement(
            EvidenceType.SUBMISSION_REJECTED,
            message_id=_claimed_message_id(who.message_id),
            message_digest=who.digest,
            sender=who.publisher,
            recipient=None,
            issuer=self._identity.gateway_id,
            at=now,
            reason=reason,
        )
        if who.authenticated is not None:
            header = who.authenticated.header
            await atx.tx.insert_message(
                MessageRecord(
                    sender=header.sender,
                    message_id=str(header.message_id),
                    digest=who.authenticated.digest,
                    message_type=header.message_type,
                    case_id=header.case_id,
                    recipients=header.recipient_agencies,
                    created_at=format_timestamp(header.created_at),
                    expires_at=format_timestamp(header.expires_at),
                    state=MessageState.DEAD_LETTERED,
                    received_at=format_timestamp(now),
                )
            )
        await issue_gateway_evidence(atx, self._identity, statement)
        return EvidenceType.SUBMISSION_REJECTED, "refused to its publisher: no copy of it will be relayed"

    async def _report_non_delivery(
        self, atx: AuditTransaction, who: _Attribution, reason: Reason, now: datetime
    ) -> tuple[str | None, str]:
        if who.authenticated is None or who.sender is None or who.message_id is None or who.recipient is None:
            return None, "a message the gateway cannot attribute: no evidence"
        record = await atx.tx.message(who.sender, who.message_id)
        if record is None or record.digest != who.digest or who.recipient not in record.recipients:
            return None, "not a message the gateway relayed to this recipient: no evidence"
        state = await atx.tx.relay_state(who.sender, who.message_id, who.recipient)
        if state != RelayState.RELAYED:
            return None, f"the copy for {who.recipient} is already {state}: no evidence"
        header = who.authenticated.header
        statement = new_statement(
            EvidenceType.NON_DELIVERY,
            message_id=header.message_id,
            message_digest=record.digest,
            sender=parse_agency_id(record.sender),
            recipient=parse_agency_id(who.recipient),
            message_type=record.message_type,
            case_id=record.case_id,
            issuer=self._identity.gateway_id,
            at=now,
            reason=reason,
        )
        await atx.tx.set_relay_state(
            who.sender, who.message_id, who.recipient, RelayState.NON_DELIVERY, format_timestamp(now)
        )
        await issue_gateway_evidence(atx, self._identity, statement)
        return EvidenceType.NON_DELIVERY, f"not delivered to {who.recipient}: the sender is told"

    # -- the operator's decisions ---------------------------------------------------------

    async def redrive(self, dead_letter_id: int, *, detail: str, operator: str) -> DeadLetterRecord:
        """Send a held dead letter on again (module docstring); the action is logged first, naming `operator`."""
        record = await self._held(dead_letter_id, "redrive")
        now = self._clock()
        if record.queue != INGRESS_QUEUE:
            self._check_relayed_by_the_gateway(record)
            await self._check_still_relayable(record, now)
        async with self._audit.transaction() as atx:
            await atx.append(
                _operator_leaf("redrive_dead_letter", record, detail, now, operator),
                at=now,
                message_id=record.message_id,
                agencies=tuple(a for a in (record.sender, record.recipient) if a),
            )
            if record.queue == INGRESS_QUEUE and record.sender is not None and record.message_id is not None:
                await atx.tx.delete_message_in_state(record.sender, record.message_id, MessageState.DEAD_LETTERED)
            await atx.tx.set_dead_letter_state(
                dead_letter_id, REDRIVING, f"re-drive ordered: {detail}"[:500], format_timestamp(now)
            )
        if record.queue == INGRESS_QUEUE:
            outcome = await self._pipeline.handle(
                IngressDelivery(
                    body=record.body, kind=record.kind, user_id=record.publisher, amqp_message_id=record.amqp_message_id
                )
            )
            note = f"re-driven through the pipeline: {outcome.result}" + (f" ({outcome.code})" if outcome.code else "")
        elif record.recipient is not None:
            await self._publisher.publish(
                routing_key=record.recipient,
                body=record.body,
                kind=record.kind,
                message_id=record.amqp_message_id or record.message_id or "-",
            )
            note = f"published again to {record.recipient}'s inbox"
        else:
            raise OperationConflict(f"dead letter {dead_letter_id} came from {record.queue}: nowhere to re-drive it")
        async with self._store.transaction() as tx:
            await tx.set_dead_letter_state(dead_letter_id, REDRIVEN, note, format_timestamp(self._clock()))
        log.info("dead_letter_redriven", dead_letter_id=dead_letter_id, note=note)
        return await self._reread(dead_letter_id)

    async def discard(self, dead_letter_id: int, *, detail: str, operator: str) -> DeadLetterRecord:
        """Drop a held dead letter for good; the action is logged, naming `operator`."""
        record = await self._held(dead_letter_id, "discard")
        now = self._clock()
        async with self._audit.transaction() as atx:
            await atx.append(
                _operator_leaf("discard_dead_letter", record, detail, now, operator),
                at=now,
                message_id=record.message_id,
                agencies=tuple(a for a in (record.sender, record.recipient) if a),
            )
            await atx.tx.set_dead_letter_state(
                dead_letter_id, DISCARDED, f"discarded: {detail}"[:500], format_timestamp(now)
            )
        log.info("dead_letter_discarded", dead_letter_id=dead_letter_id)
        return await self._reread(dead_letter_id)

    def _check_relayed_by_the_gateway(self, record: DeadLetterRecord) -> None:
        """Only a copy the gateway itself published (broker-checked `user_id`) goes back into an inbox."""
        inbox = _inbox_agency(record.queue)
        if record.publisher != self._gateway_user or inbox is None or record.recipient != inbox:
            raise OperationConflict(
                f"dead letter {record.dead_letter_id} from {record.queue[:100]} was published by "
                f"{str(record.publisher)[:100]!r}, not by the gateway into an inbox: nowhere to re-drive it"
            )

    async def _check_still_relayable(self, record: DeadLetterRecord, now: datetime) -> None:
        """What goes back into an inbox is, on the gateway's own records and today's directory, what it relayed.

        A sealed message: its header verifies, the gateway accepted exactly
        this envelope and relayed it to this recipient, and an agreement in
        force still allows it. Evidence: it verifies, it is in the audit log,
        and it is addressed to the inbox's agency (evidence goes to the sender
        of the message it is about).
        """
        recipient = record.recipient
        assert recipient is not None  # `_check_relayed_by_the_gateway`
        directory = self._directory()
        refused = f"dead letter {record.dead_letter_id} is not what the gateway relayed to {recipient}"
        try:
            if record.kind == KIND_SEALED_MESSAGE:
                header = authenticate_header(SealedMessage.from_bytes(record.body, self._limits), directory, now=now)
                message = await self._store.message(header.header.sender, str(header.header.message_id))
                relayed = (
                    message is not None
                    and message.digest == header.digest
                    and message.state != MessageState.DEAD_LETTERED
                    and recipient in message.recipients
                    and await self._store.relay_state(message.sender, message.message_id, recipient) is not None
                )
                if not relayed:
                    raise OperationConflict(f"{refused}: no record of relaying this envelope there")
                exchange_agreement(
                    directory, header.header.sender, parse_agency_id(recipient), header.header.message_type, now
                )
            elif record.kind in EVIDENCE_KINDS:
                statements = (
                    [record.body] if record.kind == KIND_EVIDENCE else parse_evidence_batch(record.body, self._limits)
                )
                for raw in statements:  # a batch goes back whole, so every statement in it must qualify
                    verified = verify_evidence(parse_signed_evidence(raw, self._limits), directory, now=now)
                    statement = verified.statement
                    logged = await self._store.leaf_by_identity(evidence_leaf(verified.signed, statement).identity)
                    if statement.sender != recipient or logged is None:
                        raise OperationConflict(f"{refused}: evidence not logged for this agency")
            else:
                raise OperationConflict(f"{refused}: kind {record.kind[:60]!r}")
        except ProtocolError as exc:
            raise OperationConflict(f"{refused}: {exc.code}: {exc.detail[:200]}") from exc

    async def _held(self, dead_letter_id: int, action: str) -> DeadLetterRecord:
        record = await self._store.dead_letter(dead_letter_id)
        if record is None:
            raise KeyError(dead_letter_id)
        if record.state not in {HELD, REDRIVING} and not (action == "discard" and record.state == PARKED):
            raise OperationConflict(f"dead letter {dead_letter_id} is {record.state}: it cannot be {action}d")
        return record

    async def _reread(self, dead_letter_id: int) -> DeadLetterRecord:
        record = await self._store.dead_letter(dead_letter_id)
        assert record is not None  # it was read a moment ago, and rows are never deleted
        return record


def _operator_leaf(
    action: str, record: DeadLetterRecord, detail: str, now: datetime, operator: str
) -> OperatorActionLeaf:
    """The leaf of one decision: `operator` is the account that took it (`gateway.accounts`)."""
    verb = action.removesuffix("_dead_letter")
    return OperatorActionLeaf(
        identity=f"operator/{verb}/dead-letter/{record.dead_letter_id}",
        at=now,
        operator=operator[:200],
        action=action,
        target=f"dead-letter/{record.dead_letter_id} ({record.identity})"[:300],
        detail=detail[:2000],
    )


def _taken(record: DeadLetterRecord, result: str) -> Taken:
    return Taken(
        dead_letter_id=record.dead_letter_id,
        queue=record.queue,
        reason=record.reason,
        result=result,
        evidence=record.evidence,
        message_id=record.message_id,
        sender=record.sender,
    )


def taken_summary(taken: Taken) -> Mapping[str, object]:
    """The fields of the `dead_letter_processed` log line."""
    return {
        "dead_letter_id": taken.dead_letter_id,
        "queue": taken.queue,
        "reason": taken.reason,
        "result": taken.result,
        "evidence": taken.evidence,
        "message_id": taken.message_id,
        "sender": taken.sender,
    }


def _as_ingress(delivery: DeadDelivery) -> IngressDelivery:
    return IngressDelivery(
        body=delivery.body, kind=delivery.kind, user_id=delivery.user_id, amqp_message_id=delivery.amqp_message_id
    )


def _claimed_message_id(raw: str | None) -> MessageId | None:
    try:
        return parse_message_id(raw)
    except MalformedInput:
        return None


def dead_letter_item(record: DeadLetterRecord) -> dict[str, Any]:
    """What the operator sees of a dead letter: metadata and reason, never content."""
    return {
        "id": record.dead_letter_id,
        "queue": record.queue,
        "reason": record.reason,
        "death_count": record.death_count,
        "died_at": record.died_at,
        "kind": record.kind,
        "publisher": record.publisher,
        "amqp_message_id": record.amqp_message_id,
        "sender": record.sender,
        "message_id": record.message_id,
        "recipient": record.recipient,
        "body_sha256": record.body_sha256,
        "body_length": record.body_length,
        "evidence": record.evidence,
        "state": record.state,
        "note": record.note,
        "recorded_at": record.recorded_at,
        "updated_at": record.updated_at,
    }


class OperationsApi:
    """The operator's endpoints: dead letters and queues (mounted by `gateway.api` for the operator role)."""

    def __init__(
        self,
        *,
        dead_letters: DeadLetters,
        store: GatewayStore,
        management: ManagementAccess | None,
        vhost: str,
    ) -> None:
        self._dead_letters = dead_letters
        self._store = store
        self._management = management
        self._vhost = vhost

    def routes(self) -> list[tuple[str, str, Handler]]:
        """(method, path, handler) of each endpoint."""
        return [
            ("GET", "/v1/ops/dead-letters", self.list_dead_letters),
            ("GET", "/v1/ops/dead-letters/{dead_letter_id}", self.show_dead_letter),
            ("POST", "/v1/ops/dead-letters/{dead_letter_id}/redrive", self.redrive),
            ("POST", "/v1/ops/dead-letters/{dead_letter_id}/discard", self.discard),
            ("GET", "/v1/ops/queues", self.queues),
        ]

    async def list_dead_letters(self, request: web.Request) -> web.Response:
        """`GET /v1/ops/dead-letters?state=&after=&limit=`: oldest first."""
        state = request.query.get("state")
        if state is not None and state not in STATES:
            raise MalformedInput(f"state must be one of {sorted(STATES)}", code=ErrorCode.INVALID_PARAMETER)
        after = _int_query(request, "after", default=0)
        limit = min(max(_int_query(request, "limit", default=100), 1), MAX_PAGE)
        records = await self._store.dead_letters(state=state, after=after, limit=limit)
        return web.json_response(
            {
                "dead_letters": [dead_letter_item(record) for record in records],
                "next": records[-1].dead_letter_id if len(records) == limit else None,
            }
        )

    async def show_dead_letter(self, request: web.Request) -> web.Response:
        """`GET /v1/ops/dead-letters/{id}`."""
        dead_letter_id = _id_of(request)
        record = await self._store.dead_letter(dead_letter_id)
        if record is None:
            return problem(404, ErrorCode.NOT_FOUND, "Unknown dead letter", f"no dead letter {dead_letter_id}")
        return web.json_response(dead_letter_item(record))

    async def redrive(self, request: web.Request) -> web.Response:
        """`POST /v1/ops/dead-letters/{id}/redrive`, body `{"reason": "..."}` (optional)."""
        return await self._decide(request, self._dead_letters.redrive)

    async def discard(self, request: web.Request) -> web.Response:
        """`POST /v1/ops/dead-letters/{id}/discard`, body `{"reason": "..."}` (optional)."""
        return await self._decide(request, self._dead_letters.discard)

    async def _decide(self, request: web.Request, decision: Callable[..., Awaitable[DeadLetterRecord]]) -> web.Response:
        dead_letter_id = _id_of(request)
        detail = await _reason_of(request)
        try:
            record = await decision(dead_letter_id, detail=detail, operator=request[ACCOUNT].name)
        except KeyError:
            return problem(404, ErrorCode.NOT_FOUND, "Unknown dead letter", f"no dead letter {dead_letter_id}")
        except OperationConflict as exc:
            return problem(409, ErrorCode.INVALID_PARAMETER, "Not possible in this state", str(exc))
        except RoutingFailed as exc:
            return problem(409, ErrorCode.ROUTING_FAILED, "No inbox for the recipient", str(exc))
        except TransientFailure as exc:
            response = problem(503, ErrorCode.SERVICE_UNAVAILABLE, "Unavailable", f"try again shortly: {exc}"[:300])
            response.headers["Retry-After"] = "5"
            return response
        return web.json_response(dead_letter_item(record))

    async def queues(self, _request: web.Request) -> web.Response:
        """`GET /v1/ops/queues`: per queue, messages ready and unacked, consumers, rates."""
        if self._management is None:
            return problem(
                503,
                ErrorCode.SERVICE_UNAVAILABLE,
                "Queue figures are not configured",
                "the gateway has no access to the broker's management API: set ROGATORY_MANAGEMENT_URL, "
                "ROGATORY_MANAGEMENT_USER and ROGATORY_MANAGEMENT_PASSWORD_FILE",
            )
        try:
            figures = await queue_figures(self._management, self._vhost)
        except ManagementUnavailable as exc:
            return problem(503, ErrorCode.SERVICE_UNAVAILABLE, "Broker management API unavailable", str(exc)[:300])
        return web.json_response({"vhost": self._vhost, "queues": figures})


def _id_of(request: web.Request) -> int:
    raw = request.match_info["dead_letter_id"]
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise MalformedInput("a dead letter id is a positive integer", code=ErrorCode.INVALID_PARAMETER)
    return int(raw)


def _int_query(request: web.Request, name: str, *, default: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise MalformedInput(
            f"query parameter {name!r} must be a non-negative integer", code=ErrorCode.INVALID_PARAMETER
        )
    return int(raw)


async def _reason_of(request: web.Request) -> str:
    """The operator's reason from an optional JSON body `{"reason": "..."}`."""
    body = await request.read()
    if not body:
        return "no reason given"
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise MalformedInput('the body must be JSON: {"reason": "..."}', code=ErrorCode.MALFORMED_JSON) from exc
    reason = document.get("reason") if isinstance(document, dict) else None
    if not isinstance(reason, str) or not reason.strip():
        raise MalformedInput('the body must be JSON: {"reason": "..."}', code=ErrorCode.INVALID_PARAMETER)
    return reason.strip()[:1000]


__all__ = [
    "DISCARDED",
    "HELD",
    "PARKED",
    "REDRIVEN",
    "REDRIVING",
    "RESUMED",
    "DeadLetters",
    "Death",
    "OperationsApi",
    "Taken",
    "dead_letter_item",
    "establish_death",
    "taken_summary",
]
