"""`DeadlineWatcher`: negative evidence when a message's time runs out.

* `NON_DELIVERY` (reason `EXPIRED`) for a copy relayed to a recipient that was
  not delivered before the message expired, plus a grace period longer than
  the clock skew agents are allowed (a recipient refuses an expired message by
  its own clock, so its `DELIVERY` can only be stamped before expiry);
* `NON_RETRIEVAL` (reason `RETRIEVAL_DEADLINE_PASSED`) for a copy delivered but
  not taken by the recipient agency's system within the retrieval deadline.

Both are issued by the gateway (`time_out`, through the same
`gateway.issuing.issue_gateway_evidence` as the pipeline's evidence), logged,
and sent to the message's sender like any other evidence. Deadlines are
settings. The gateway sweeps every `ROGATORY_DEADLINE_SWEEP_S` in its leading
process only (`gateway.leadership`); a second sweeper would issue nothing
(each copy's state is checked again inside the transaction), only repeat
the queries.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Final

import structlog

from gateway.auditlog import AuditLog
from gateway.issuing import GatewayIdentity, issue_gateway_evidence
from gateway.store import GatewayStore, RelayRecord, RelayState
from protocol.encoding import format_timestamp
from protocol.errors import ErrorCode
from protocol.evidence import EvidenceType, Reason, new_statement
from protocol.ids import parse_agency_id, parse_message_id

log = structlog.get_logger("rogatory.gateway.deadlines")

RETRIEVAL_DEADLINE_PASSED = "RETRIEVAL_DEADLINE_PASSED"
_WAITING_IN: Final = {EvidenceType.NON_DELIVERY: RelayState.RELAYED, EvidenceType.NON_RETRIEVAL: RelayState.DELIVERY}
"""The state a copy must still be in for each deadline's negative evidence."""


class DeadlineWatcher:
    """Sweeps the relays for copies whose delivery or retrieval deadline passed."""

    def __init__(
        self,
        *,
        identity: GatewayIdentity,
        store: GatewayStore,
        audit: AuditLog,
        clock: Callable[[], datetime],
        delivery_grace: timedelta,
        retrieval_deadline: timedelta,
        wake_relay: Callable[[], None] = lambda: None,
    ) -> None:
        self._identity = identity
        self._store = store
        self._audit = audit
        self._clock = clock
        self._delivery_grace = delivery_grace
        self._retrieval_deadline = retrieval_deadline
        self._wake_relay = wake_relay

    async def sweep(self) -> int:
        """Issue every negative evidence now due; how many were issued."""
        now = self._clock()
        issued = 0
        for relay in await self._store.relays_in_state(
            RelayState.RELAYED, expires_before=format_timestamp(now - self._delivery_grace)
        ):
            reason = Reason(
                code=ErrorCode.EXPIRED,
                detail=f"not delivered to {relay.recipient} before {relay.expires_at} (grace {self._delivery_grace})",
            )
            issued += await self.time_out(relay, EvidenceType.NON_DELIVERY, reason)
        for relay in await self._store.relays_in_state(
            RelayState.DELIVERY, updated_before=format_timestamp(now - self._retrieval_deadline)
        ):
            reason = Reason(
                code=RETRIEVAL_DEADLINE_PASSED,
                detail=f"delivered at {relay.updated_at}, not retrieved within {self._retrieval_deadline}",
            )
            issued += await self.time_out(relay, EvidenceType.NON_RETRIEVAL, reason)
        return issued

    async def time_out(self, relay: RelayRecord, evidence_type: EvidenceType, reason: Reason) -> bool:
        """Log gateway-issued `NON_DELIVERY` or `NON_RETRIEVAL` for one copy whose deadline passed.

        Invariant: only for a copy still waiting in the state the deadline is about
        (checked again inside the transaction, so late evidence is never overtaken).
        """
        waiting_in = _WAITING_IN[evidence_type]
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
                relay.sender, relay.message_id, relay.recipient, RelayState.after(evidence_type), format_timestamp(now)
            )
            await issue_gateway_evidence(atx, self._identity, statement)
        self._wake_relay()
        log.info(
            "deadline_passed",
            evidence=str(evidence_type),
            message_id=relay.message_id,
            sender=relay.sender,
            recipient=relay.recipient,
        )
        return True


__all__ = ["RETRIEVAL_DEADLINE_PASSED", "DeadlineWatcher"]
