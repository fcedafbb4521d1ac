"""Checkpoints time-stamped by an RFC 3161 authority, when one is configured (`ROGATORY_TSA_URL`).

At most once every `ROGATORY_TSA_INTERVAL_S`, the newest checkpoint not yet
stamped is sent (its signed note, as the API serves it) to the time-stamp
authority; the answer is verified against the roots the directory in force
lists (`timestamp_authorities`) and kept beside the checkpoint. A stamp over
checkpoint N bounds the time of every leaf below N: with the consistency
proofs of the log, a leaf in an earlier checkpoint existed before that
stamp's `genTime`, whatever the gateway's clock said.

Stamping never holds up the log: checkpoints are signed on their own
schedule, and an authority that is away (`timestamp_unavailable`) or answers
with a token that does not verify (`timestamp_invalid`, nothing kept) is
tried again at the next interval on the then newest checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

import structlog

from gateway.store import CheckpointTimestamp, GatewayStore
from protocol.directory import Directory
from protocol.encoding import format_timestamp, parse_timestamp
from protocol.errors import ProofInvalid
from runtime.timestamps import TimestampClient, TimestampUnavailable

log = structlog.get_logger("rogatory.gateway.timestamping")


class StampResult(StrEnum):
    """What one look at the newest checkpoint did; the values label `rogatory_gateway_checkpoint_timestamps_total`."""

    STAMPED = "stamped"
    UNAVAILABLE = "unavailable"
    INVALID = "invalid"
    UNTRUSTED = "untrusted"
    """The directory in force lists no time-stamp authority: nothing can be verified, nothing is asked."""


@dataclass(frozen=True, slots=True)
class StampAttempt:
    """One attempt at stamping checkpoint `checkpoint_id`."""

    checkpoint_id: int
    result: StampResult


class CheckpointStamper:
    """Stamps the newest checkpoint when `interval` has passed since the last stamp."""

    def __init__(
        self,
        store: GatewayStore,
        client: TimestampClient,
        directory: Callable[[], Directory],
        *,
        interval: timedelta,
        on_attempt: Callable[[StampAttempt], None] = lambda _attempt: None,
    ) -> None:
        self._store = store
        self._client = client
        self._directory = directory
        self._interval = interval
        self._on_attempt = on_attempt
        self._last_stamp_at: datetime | None = None
        self._loaded = False

    async def stamp_if_due(self, now: datetime) -> StampAttempt | None:
        """Stamp the newest checkpoint if it has none and the interval passed; None when nothing was due."""
        if not self._loaded:
            last = await self._store.last_timestamp()
            self._last_stamp_at = None if last is None else parse_timestamp(last[1])
            self._loaded = True
        if self._last_stamp_at is not None and now - self._last_stamp_at < self._interval:
            return None
        latest = await self._store.latest_checkpoint()
        if latest is None or latest.timestamps:
            return None
        attempt = await self._stamp(latest.checkpoint_id, latest.note, now)
        self._on_attempt(attempt)
        return attempt

    async def _stamp(self, checkpoint_id: int, note: str, now: datetime) -> StampAttempt:
        roots = self._directory().timestamp_roots()
        if not roots:
            log.warning("timestamp_authority_not_listed", checkpoint_id=checkpoint_id, tsa=self._client.url)
            return StampAttempt(checkpoint_id, StampResult.UNTRUSTED)
        try:
            token, trusted = await self._client.stamp(note.encode(), roots)
        except TimestampUnavailable as exc:
            log.warning("timestamp_unavailable", checkpoint_id=checkpoint_id, error=str(exc)[:300])
            return StampAttempt(checkpoint_id, StampResult.UNAVAILABLE)
        except ProofInvalid as exc:
            log.error("timestamp_invalid", checkpoint_id=checkpoint_id, error=exc.detail[:300])
            return StampAttempt(checkpoint_id, StampResult.INVALID)
        stamp = CheckpointTimestamp(
            token=token, stamped_time=format_timestamp(trusted.time), authority=trusted.authority
        )
        async with self._store.transaction() as tx:
            await tx.insert_checkpoint_timestamp(checkpoint_id, stamp, format_timestamp(now))
        self._last_stamp_at = now
        log.info(
            "checkpoint_timestamped",
            checkpoint_id=checkpoint_id,
            stamped_time=stamp.stamped_time,
            authority=trusted.authority,
            serial_number=str(trusted.serial_number),
        )
        return StampAttempt(checkpoint_id, StampResult.STAMPED)


__all__ = ["CheckpointStamper", "StampAttempt", "StampResult"]
