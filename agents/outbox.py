"""`OutboxRelay`: publishes queued submissions and issued evidence until the broker confirms them.

A submission leaves the outbox as `queued` only once the broker confirmed
it; until then it is published again, with the same bytes and message id,
which the gateway recognises (a lost confirm costs a duplicate the gateway
drops, never a loss). A submission whose lifetime ended before it could be
published is marked `EXPIRED` and never sent. Evidence this agency issued
as a recipient (`DELIVERY`, `RETRIEVAL`) travels the same way and is
forgotten once confirmed; what is pending when the relay drains leaves as
one batch (`runtime.broker.batch_outgoing`: alone as `KIND_EVIDENCE` when
it is one statement, as `KIND_EVIDENCE_BATCH` when several waited). The loop itself, its backoff and its last drain at
shutdown are `runtime.broker.Relay`'s.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Protocol

import structlog

from agents.guard import marking_of
from agents.status import MessageStatus
from agents.store import AgentStore, OutboxRecord, PendingEvidence
from agents.webhooks import EventType, emit, level_of
from protocol.encoding import format_timestamp, parse_timestamp
from protocol.limits import DEFAULT_LIMITS, Limits
from protocol.topology import KIND_EVIDENCE, KIND_SEALED_MESSAGE
from runtime.broker import Outgoing, Relay, batch_outgoing, publish_window

log = structlog.get_logger("rogatory.agent.outbox")


class OutboxPublisher(Protocol):
    """Where the outbox goes: `agents.transport.SubmitPublisher`, or one that pushes attachment bodies first."""

    async def publish(self, *, body: bytes, kind: str, message_id: str) -> None:
        """Publish one message and return once the broker confirmed it (`TransientFailure` otherwise)."""


class OutboxRelay(Relay):
    """Publishes queued submissions and issued evidence until the broker confirms them."""

    name = "outbox"

    def __init__(
        self,
        store: AgentStore,
        publisher: OutboxPublisher,
        *,
        clock: Callable[[], datetime],
        agency: str,
        poll_interval: float = 1.0,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        """A relay for `agency`'s outbox.

        All of this agency's evidence travels under one AMQP message id,
        `evidence/<agency>`, so that the gateway takes it in the order it was
        published (its consumer takes deliveries of one message id in turn).
        """
        super().__init__(poll_interval=poll_interval)
        self._evidence_id = f"evidence/{agency}"
        self._store = store
        self._publisher = publisher
        self._clock = clock
        self._limits = limits

    async def drain(self) -> None:
        """Publish everything pending; raise `TransientFailure` if the broker is away.

        Each drain is one confirm window: every publish in flight at once, each
        awaited for its own confirm; what was confirmed is then marked (or
        deleted) in one transaction. A submission is marked published only
        after its own confirm; the pending evidence leaves in batches
        (`batch_outgoing`), all to the gateway.
        """
        while True:
            queued = await self._store.queued()
            evidence = await self._store.pending_evidence()
            if not queued and not evidence:
                return
            sendable = await self._expire(queued)
            window: list[OutboxRecord | PendingEvidence] = [*sendable, *evidence]
            messages = batch_outgoing(
                window,
                destination=lambda _item: "gateway",
                kind=lambda item: KIND_SEALED_MESSAGE if isinstance(item, OutboxRecord) else KIND_EVIDENCE,
                body=lambda item: item.sealed if isinstance(item, OutboxRecord) else item.body,
                message_id=lambda item: item.message_id if isinstance(item, OutboxRecord) else self._evidence_id,
                batch_id=lambda _destination: self._evidence_id,
                limits=self._limits,
            )
            confirmed, failure = await publish_window(messages, self._publish)
            items = [item for message in confirmed for item in message.items]
            await self._settle(
                [item for item in items if isinstance(item, OutboxRecord)],
                [item.evidence_out_id for item in items if isinstance(item, PendingEvidence)],
            )
            if failure is not None:
                raise failure

    def _publish(self, message: Outgoing[OutboxRecord | PendingEvidence]) -> Awaitable[None]:
        return self._publisher.publish(body=message.body, kind=message.kind, message_id=message.message_id)

    async def _expire(self, queued: list[OutboxRecord]) -> list[OutboxRecord]:
        """Mark the submissions that expired unsent; the others, still to be published."""
        now = self._clock()
        expired = [record for record in queued if now >= parse_timestamp(record.expires_at)]
        if expired:
            async with self._store.transaction() as tx:
                for record in expired:
                    await tx.set_status(record.message_id, MessageStatus.EXPIRED, "EXPIRED", format_timestamp(now))
                    await emit(
                        tx,
                        EventType.MESSAGE_STATUS_CHANGED,
                        {
                            "message_id": record.message_id,
                            "recipient": record.recipient,
                            "message_type": record.message_type,
                            "case_id": record.case_id,
                            "evidence_type": None,
                            "evidence_identity": None,
                            "evidence_at": None,
                            "issuer": None,
                            "reason_code": "EXPIRED",
                            "previous_status": record.status,
                            "status": str(MessageStatus.EXPIRED),
                        },
                        level=level_of(marking_of(record.document)),
                        at=now,
                    )
            for record in expired:
                log.warning("outbox_expired_unsent", message_id=record.message_id)
        return [record for record in queued if now < parse_timestamp(record.expires_at)]

    async def _settle(self, published: list[OutboxRecord], sent_evidence: list[int]) -> None:
        """Mark the confirmed submissions published and forget the confirmed evidence, in one transaction."""
        if published or sent_evidence:
            async with self._store.transaction() as tx:
                at = format_timestamp(self._clock())
                for record in published:
                    await tx.mark_published(record.message_id, at)
                await tx.delete_pending_evidence(sent_evidence)


__all__ = ["OutboxPublisher", "OutboxRelay"]
