"""The gateway's log: receipts on every leaf, checkpoints while growing and when idle, cosignatures verified."""

from __future__ import annotations

from datetime import timedelta

import pytest

from gateway.api import PUBLISHED_AFTER_COSIGNATURES
from protocol.audit_verify import LogEntry, verify_audit_log
from protocol.auditlog import directory_leaf, verify_leaf_receipt
from protocol.checkpoint import NoteSignature, SignedCheckpoint, cosign_checkpoint
from protocol.errors import ProofInvalid
from protocol.keys import SigningPrivateKey
from tests.gateway.conftest import Harness
from tests.support.network import BD, LY, NOW, AgencyKeys

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


async def test_a_key_rotated_in_after_a_checkpoint_cannot_cosign_it_as_the_verifier_would_refuse(harness: Harness):
    """Cosignatures are judged by the directory in force at the checkpoint's size, as the offline verifier judges
    them: a witness key rotated in later is refused on the older checkpoint, the key of its time is kept, and the
    log with what was kept verifies."""
    await harness.audit.checkpoint_if_due(NOW, idle_interval=HOUR)
    first = await harness.store.latest_checkpoint()
    assert first is not None
    before = harness.net[BD]
    harness.net.agencies[BD] = AgencyKeys(BD, encryption=before.encryption)  # BD's signing key rotated
    harness.net.version = 2
    async with harness.audit.transaction() as atx:
        await atx.append(directory_leaf(harness.net.signed_directory(), 2), at=NOW)
    now_in_force = harness.net.directory()
    signed = SignedCheckpoint.parse(first.note)
    rotated_in = cosign_checkpoint(signed, BD, harness.net[BD].signing, 1_800_000_000).to_line()
    with pytest.raises(ProofInvalid):
        await harness.audit.add_cosignature(first.checkpoint_id, rotated_in, now_in_force, now=NOW)
    of_its_time = cosign_checkpoint(signed, BD, before.signing, 1_800_000_000).to_line()
    assert await harness.audit.add_cosignature(first.checkpoint_id, of_its_time, now_in_force, now=NOW)
    await harness.audit.checkpoint_if_due(NOW, idle_interval=HOUR)
    second = await harness.store.latest_checkpoint()
    assert second is not None
    assert second.tree_size == 2
    later = cosign_checkpoint(SignedCheckpoint.parse(second.note), BD, harness.net[BD].signing, 1_800_000_001)
    assert await harness.audit.add_cosignature(second.checkpoint_id, later.to_line(), now_in_force, now=NOW)
    entries = [LogEntry(record.leaf, record.receipt) for record in await harness.store.leaves(limit=1000)]
    notes = []
    for record in (
        await harness.store.checkpoint(first.checkpoint_id),
        await harness.store.checkpoint(second.checkpoint_id),
    ):
        assert record is not None
        kept = SignedCheckpoint.parse(record.note)
        for line in record.cosignatures:
            kept = kept.with_signature(NoteSignature.from_line(line.rstrip("\n")))
        notes.append(kept.to_text())
    report = verify_audit_log(entries, notes, authority=harness.net.authority.public_key)
    assert report.consistent, report.problem
