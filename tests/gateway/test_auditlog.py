"""The gateway's log: receipts on every leaf, checkpoints while growing and when idle, cosignatures verified."""

from __future__ import annotations

from datetime import timedelta

import pytest

from gateway.api import PUBLISHED_AFTER_COSIGNATURES
from protocol.auditlog import verify_leaf_receipt
from protocol.checkpoint import SignedCheckpoint, cosign_checkpoint
from protocol.errors import ProofInvalid
from protocol.keys import SigningPrivateKey
from tests.gateway.conftest import Harness
from tests.support.network import BD, LY, NOW

HOUR = timedelta(hours=1)


async def test_every_leaf_carries_the_logs_receipt_for_its_index(harness: Harness):
    """Each stored leaf has a receipt that verifies for its own index and hash, and for no other index."""
    await harness.pipeline.handle(harness.delivery(harness.net.seal().to_bytes(), publisher=BD))
    records = await harness.store.leaves(limit=100)
    assert len(records) == 3
    for record in records:
        verify_leaf_receipt(
            harness.audit.origin, record.index, record.leaf_hash, record.receipt, harness.net.log_key.public_key
        )
        with pytest.raises(ProofInvalid):
            verify_leaf_receipt(
                harness.audit.origin, record.index + 1, record.leaf_hash, record.receipt, harness.net.log_key.public_key
            )


async def test_checkpoints_while_growing_and_at_least_hourly_when_idle(harness: Harness):
    """A new checkpoint when the log grew; none while idle until the idle interval passed, then one."""
    assert await harness.audit.checkpoint_if_due(NOW, idle_interval=HOUR) is not None
    assert await harness.audit.checkpoint_if_due(NOW + timedelta(minutes=1), idle_interval=HOUR) is None
    await harness.pipeline.handle(harness.delivery(harness.net.seal().to_bytes(), publisher=BD))
    grown = await harness.audit.checkpoint_if_due(NOW + timedelta(minutes=2), idle_interval=HOUR)
    assert grown is not None
    assert SignedCheckpoint.parse(grown).checkpoint.size == 3
    assert await harness.audit.checkpoint_if_due(NOW + timedelta(minutes=30), idle_interval=HOUR) is None
    idle = await harness.audit.checkpoint_if_due(NOW + timedelta(minutes=2) + HOUR, idle_interval=HOUR)
    assert idle is not None
    assert idle != grown
    assert SignedCheckpoint.parse(idle).checkpoint.extensions == (
        f"time {int((NOW + timedelta(minutes=2) + HOUR).timestamp())}",
    )


async def test_cosignatures_are_verified_kept_once_and_publish_the_checkpoint(harness: Harness):
    """Agencies' cosignatures are kept after verification; two make the checkpoint published."""
    await harness.audit.checkpoint_if_due(NOW, idle_interval=HOUR)
    record = await harness.store.latest_checkpoint()
    assert record is not None
    signed = SignedCheckpoint.parse(record.note)
    directory = harness.net.directory()
    for witness in (BD, LY):
        line = cosign_checkpoint(signed, witness, harness.net[witness].signing, 1_800_000_000).to_line()
        assert await harness.audit.add_cosignature(record.checkpoint_id, line, directory, now=NOW)
        assert not await harness.audit.add_cosignature(record.checkpoint_id, line, directory, now=NOW)
    cosigned = await harness.store.latest_checkpoint()
    assert cosigned is not None
    assert len(cosigned.cosignatures) == PUBLISHED_AFTER_COSIGNATURES


async def test_a_forged_or_foreign_cosignature_is_refused(harness: Harness):
    """A cosignature by a key the directory does not give the named agency, or by a non-agency, is refused."""
    await harness.audit.checkpoint_if_due(NOW, idle_interval=HOUR)
    record = await harness.store.latest_checkpoint()
    assert record is not None
    signed = SignedCheckpoint.parse(record.note)
    directory = harness.net.directory()
    forged = cosign_checkpoint(signed, BD, SigningPrivateKey.generate(), 1).to_line()
    with pytest.raises(ProofInvalid):
        await harness.audit.add_cosignature(record.checkpoint_id, forged, directory, now=NOW)
    stranger = cosign_checkpoint(signed, "someone", harness.net[BD].signing, 1).to_line()
    with pytest.raises(ProofInvalid):
        await harness.audit.add_cosignature(record.checkpoint_id, stranger, directory, now=NOW)
    with pytest.raises(ProofInvalid):
        await harness.audit.add_cosignature(record.checkpoint_id + 100, forged, directory, now=NOW)
