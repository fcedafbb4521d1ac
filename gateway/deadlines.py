"""`DeadlineWatcher`: negative evidence when a message's time runs out.

* `NON_DELIVERY` (reason `EXPIRED`) for a copy relayed to a recipient that was
  not delivered before the message expired, plus a grace period longer than
  the clock skew agents are allowed (a recipient refuses an expired message by
  its own clock, so its `DELIVERY` can only be stamped before expiry);
* `NON_RETRIEVAL` (reason `RETRIEVAL_DEADLINE_PASSED`) for a copy delivered but
  not taken by the recipient agency's system within the retrieval deadline.

Both are issued by the gateway through `IngressPipeline.time_out`, logged,
and sent to the message's sender like any other evidence. Deadlines are
settings.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime, timedelta

import structlog

from gateway.pipeline import RELAY_RELAYED, IngressPipeline
from gateway.store import GatewayStore
from protocol.encoding import format_timestamp
from protocol.errors import ErrorCode
from protocol.evidence import EvidenceType, Reason
from runtime.errors import TransientFailure

log = structlog.get_logger("rogatory.gateway.deadlines")

RETRIEVAL_DEADLINE_PASSED = "RETRIEVAL_DEADLINE_PASSED"
_DELIVERED = "delivery"


class DeadlineWatcher:
    """Sweeps the relays for copies whose delivery or retrieval deadline passed."""

    def __init__(
        self,
        *,
        pipeline: IngressPipeline,
        store: GatewayStore,
        clock: Callable[[], datetime],
        delivery_grace: timedelta,
        retrieval_deadline: timedelta,
    ) -> None:
        self._pipeline = pipeline
        self._store = store
        self._clock = clock
        self._delivery_grace = delivery_grace
        self._retrieval_deadline = retrieval_deadline

    async def sweep(self) -> int:
        """Issue every negative evidence now due; how many were issued."""
        now = self._clock()
        issued = 0
        for relay in await self._store.relays_in_state(
            RELAY_RELAYED, expires_before=format_timestamp(now - self._delivery_grace)
        ):
            reason = Reason(
                code=ErrorCode.EXPIRED,
                detail=f"not delivered to {relay.recipient} before {relay.expires_at} (grace {self._delivery_grace})",
            )
            issued += await self._pipeline.time_out(relay, EvidenceType.NON_DELIVERY, reason)
        for relay in await self._store.relays_in_state(
            _DELIVERED, updated_before=format_timestamp(now - self._retrieval_deadline)
        ):
            reason = Reason(
                code=RETRIEVAL_DEADLINE_PASSED,
                detail=f"delivered at {relay.updated_at}, not retrieved within {self._retrieval_deadline}",
            )
            issued += await self._pipeline.time_out(relay, EvidenceType.NON_RETRIEVAL, reason)
        return issued

    async def run(self, stopping: asyncio.Event, *, interval: float) -> None:
        """Sweep every `interval` seconds until `stopping` is set."""
        while not stopping.is_set():
            try:
                await self.sweep()
            except TransientFailure as exc:
                log.warning("deadline_sweep_failed", error=str(exc)[:300])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=interval)


__all__ = ["RETRIEVAL_DEADLINE_PASSED", "DeadlineWatcher"]
