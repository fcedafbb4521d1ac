"""A gateway restored from a backup: its log held behind the witnesses' checkpoint, then brought back, never forked.

`lost` is the log as it was when its disk was lost (size M, a checkpoint of M
witnessed); `restored` is its last backup (size N < M). Leaves go back only
when they rebuild the witnessed root.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from gateway.auditlog import AuditLog
from gateway.recovery import HOLD_SETTING, LogRecovery, OfferedLeaf, hold_value
from gateway.store import GatewayStore
from protocol.auditlog import EvidenceLeaf, OperatorActionLeaf, decode_leaf, encode_leaf, evidence_leaf
from protocol.checkpoint import Checkpoint, SignedCheckpoint, cosign_checkpoint, sign_checkpoint
from protocol.errors import ProofInvalid
from protocol.evidence import EvidenceStatement, issue_evidence
from protocol.ids import AgencyId, MessageId
from protocol.keys import SigningPrivateKey
from runtime.errors import TransientFailure
from tests.gateway.conftest import Harness
from tests.support.network import BD, NOW

HOUR = timedelta(hours=1)


@dataclass
class Restored:
    store: GatewayStore
    audit: AuditLog
    recovery: LogRecovery
    witnessed: str
    """The note of the checkpoint of the lost log (size M) that witnesses cosigned."""
    lost: list[bytes]
    """The leaves the restored log lacks up to the witnessed size, in order."""
    beyond: list[bytes]
    """The leaves appended after the witnessed checkpoint (a third message): never cosigned."""
    witnessed_size: int


async def _restored(harness: Harness, path: Path, *, hold: bool = True) -> Restored:
    await harness.pipeline.handle(harness.delivery(harness.net.seal().to_bytes(), publisher=BD))
    backup_size = harness.audit.size
    await harness.pipeline.handle(harness.delivery(harness.net.seal().to_bytes(), publisher=BD))
    witnessed = await harness.audit.checkpoint_if_due(NOW, idle_interval=HOUR)
    assert witnessed is not None
    witnessed_size = harness.audit.size
    await harness.pipeline.handle(harness.delivery(harness.net.seal().to_bytes(), publisher=BD))
    leaves = [record.leaf for record in await harness.store.leaves(limit=1000)]
    store = await GatewayStore.open(path / "restored.db")
    audit = AuditLog(store, origin=harness.audit.origin, log_key=harness.net.log_key)
    await audit.import_leaves(0, leaves[:backup_size], at=NOW)
    if hold:
        async with store.transaction() as tx:
            await tx.set_setting(HOLD_SETTING, hold_value(backup_size, NOW))
    recovery = await LogRecovery.load(store, audit, directory=harness.net.directory, clock=lambda: NOW)
    return Restored(
        store, audit, recovery, witnessed, leaves[backup_size:witnessed_size], leaves[witnessed_size:], witnessed_size
    )


@pytest.fixture
async def restored(harness: Harness, tmp_path: Path) -> AsyncIterator[Restored]:
    held = await _restored(harness, tmp_path)
    yield held
    await held.store.close()


def _line(harness: Harness, note: str, agency: AgencyId = BD) -> str:
    return cosign_checkpoint(SignedCheckpoint.parse(note), agency, harness.net[agency].signing, 1_800_000_000).to_line()


async def _present_all(harness: Harness, restored: Restored) -> None:
    for agency in harness.net.directory().agencies:
        await restored.recovery.present(restored.witnessed, _line(harness, restored.witnessed, agency.agency_id))


async def test_a_restored_log_is_held_appends_nothing_and_signs_no_checkpoint(harness: Harness, restored: Restored):
    """Marked restored, the log signs no checkpoint and refuses to append (the delivery waits) before any witness."""
    assert restored.recovery.recovering
    assert await restored.audit.checkpoint_if_due(NOW, idle_interval=timedelta(0)) is None
    with pytest.raises(TransientFailure):
        async with restored.audit.transaction() as atx:
            await atx.append(_operator_leaf(), at=NOW)
    assert restored.audit.size + len(restored.lost) == restored.witnessed_size


async def test_the_lost_leaves_given_back_rebuild_the_witnessed_root_and_release_the_log(
    harness: Harness, restored: Restored
):
    """Every witness presents the checkpoint of size M; the leaves come back with their indexes; the log is M again,
    with the witnessed root, and its next checkpoint is that one's size, never below."""
    await _present_all(harness, restored)
    status = restored.recovery.status()
    assert status["recovering"]
    assert status["witnessed_size"] == restored.witnessed_size
    start = restored.audit.size
    await restored.recovery.offer([OfferedLeaf(start + i, leaf) for i, leaf in enumerate(restored.lost)])
    assert not restored.recovery.recovering
    assert restored.audit.size == restored.witnessed_size
    assert await restored.audit.root() == await harness.audit.root(restored.witnessed_size)
    latest = await restored.store.latest_checkpoint()
    assert latest is not None
    assert latest.tree_size == restored.witnessed_size


async def test_the_records_of_messages_accepted_after_the_backup_are_rebuilt_from_the_leaves(
    harness: Harness, restored: Restored
):
    """The message accepted after the backup is known again (replay record, its copy relayed), so the recipient's
    evidence about it is matched when it comes; the report names nothing the gateway has no record of."""
    await _present_all(harness, restored)
    start = restored.audit.size
    await restored.recovery.offer([OfferedLeaf(start + i, leaf) for i, leaf in enumerate(restored.lost)])
    assert restored.recovery.recovered is not None
    assert restored.recovery.recovered["messages_rebuilt"] == 1
    assert await restored.recovery.unrecorded_messages() == []
    (lost_message,) = {
        r.message_id
        for r in await harness.store.leaves(start=start, limit=100)
        if r.message_id and r.index < restored.witnessed_size
    }
    assert lost_message is not None
    original = await harness.store.message(BD, lost_message)
    rebuilt = await restored.store.message(BD, lost_message)
    assert original is not None
    assert rebuilt is not None
    assert (rebuilt.digest, rebuilt.recipients, rebuilt.state) == (original.digest, original.recipients, original.state)
    for recipient in original.recipients:
        assert await restored.store.relay_state(BD, lost_message, recipient) == await harness.store.relay_state(
            BD, lost_message, recipient
        )


async def test_leaves_without_an_index_are_placed_by_their_time_and_kept_only_if_the_root_comes_out(
    harness: Harness, restored: Restored
):
    """Leaves whose proof never came are placed in the order of their statements' times: the root decides."""
    await _present_all(harness, restored)
    await restored.recovery.offer([OfferedLeaf(None, leaf) for leaf in reversed(restored.lost)])
    assert not restored.recovery.recovering
    assert await restored.audit.root(restored.witnessed_size) == await harness.audit.root(restored.witnessed_size)


async def test_evidence_past_the_witnessed_size_is_appended_anew_once_verified(harness: Harness, restored: Restored):
    """Evidence agents hold from after the last witnessed checkpoint (no root vouches for it) is appended after the
    witnessed size once its signature verifies, and its message is known again; an unsigned one is refused."""
    await _present_all(harness, restored)
    start = restored.audit.size
    evidence = [leaf for leaf in restored.beyond if decode_leaf(leaf).kind == "evidence"]
    assert evidence
    forged = _forged_evidence(evidence[0], harness)
    offered = [OfferedLeaf(start + i, leaf) for i, leaf in enumerate(restored.lost)]
    await restored.recovery.offer([*offered, *(OfferedLeaf(None, leaf) for leaf in [*evidence, forged])])
    assert not restored.recovery.recovering
    assert restored.audit.size == restored.witnessed_size + len(evidence)
    for leaf in evidence:
        assert await restored.store.leaf_by_identity(decode_leaf(leaf).identity) is not None
    assert await restored.store.leaf_by_identity(decode_leaf(forged).identity) is None
    assert restored.recovery.recovered is not None
    assert restored.recovery.recovered["unwitnessed_appended"] == len(evidence)
    assert restored.recovery.recovered["messages_rebuilt"] == 2


def _forged_evidence(leaf: bytes, harness: Harness) -> bytes:
    """The same statement under another message id, signed by a key the directory does not know."""
    original = decode_leaf(leaf)
    assert isinstance(original, EvidenceLeaf)
    statement = EvidenceStatement.model_validate_json(original.evidence.payload)
    forged = statement.model_copy(update={"message_id": MessageId(uuid.uuid4())})
    signed = issue_evidence(forged, SigningPrivateKey.generate())
    return encode_leaf(evidence_leaf(signed, forged))


async def test_a_forged_leaf_at_a_lost_index_is_never_put_back(harness: Harness, restored: Restored):
    """A leaf that is not the lost one, offered at its index, does not rebuild the witnessed root: the log stays held
    and nothing is appended."""
    await _present_all(harness, restored)
    start = restored.audit.size
    forged = [encode_leaf(_operator_leaf()), *restored.lost[1:]]
    await restored.recovery.offer([OfferedLeaf(start + i, leaf) for i, leaf in enumerate(forged)])
    assert restored.recovery.recovering
    assert restored.audit.size == start
    assert restored.recovery.status()["root_mismatch"]


async def test_a_checkpoint_the_log_key_did_not_sign_cannot_hold_the_log(harness: Harness, restored: Restored):
    """Nobody can push the gateway to a size it never signed: the presented note must bear a log key's signature."""
    fake = sign_checkpoint(
        Checkpoint(restored.audit.origin, 1000, b"\x01" * 32, ("time 1",)),
        restored.audit.origin,
        SigningPrivateKey.generate(),
    ).to_text()
    with pytest.raises(ProofInvalid):
        await restored.recovery.present(fake, _line(harness, fake))
    stranger = cosign_checkpoint(SignedCheckpoint.parse(restored.witnessed), BD, SigningPrivateKey.generate(), 1)
    with pytest.raises(ProofInvalid):  # nor can a non-witness present a true one
        await restored.recovery.present(restored.witnessed, stranger.to_line())
    assert restored.recovery.floor is None


async def test_a_witness_ahead_of_an_unmarked_restored_log_holds_it(harness: Harness, tmp_path: Path):
    """An operator forgot `log-recovery hold`: the first witness presenting a larger checkpoint holds the log."""
    unmarked = await _restored(harness, tmp_path, hold=False)
    try:
        assert not unmarked.recovery.recovering
        await unmarked.recovery.present(unmarked.witnessed, _line(harness, unmarked.witnessed))
        assert unmarked.recovery.status()["recovering"]
        assert await unmarked.audit.checkpoint_if_due(NOW, idle_interval=timedelta(0)) is None
    finally:
        await unmarked.store.close()


async def test_a_witness_holding_another_root_at_a_size_the_log_has_keeps_it_held(harness: Harness, tmp_path: Path):
    """A restored log that was appended to before it was held (another root at a witnessed size) is a fork: it stays
    held, whatever is offered."""
    unmarked = await _restored(harness, tmp_path, hold=False)
    try:
        async with unmarked.audit.transaction() as atx:
            for _ in unmarked.lost:  # as many new leaves as were lost: the size witnessed, another root
                await atx.append(_operator_leaf(), at=NOW)
        await unmarked.recovery.present(unmarked.witnessed, _line(harness, unmarked.witnessed))
        assert unmarked.recovery.recovering
        assert "fork" in str(unmarked.recovery.status()["reason"])
    finally:
        await unmarked.store.close()


def _operator_leaf() -> OperatorActionLeaf:
    return OperatorActionLeaf(
        identity=f"operator/{secrets.token_hex(8)}", at=NOW, operator="drill", action="restore", target="-", detail="-"
    )
