"""Checkpoints time-stamped by an RFC 3161 authority the directory lists; never by one it does not."""

from __future__ import annotations

from datetime import timedelta

from deploy.cli.auditor import EXIT_STATUS, LogSnapshot, describe, exit_status, verify_snapshot
from gateway.timestamping import CheckpointStamper, StampResult
from protocol.audit_verify import CheckpointStamp, FailureKind, LogEntry
from protocol.auditlog import directory_leaf
from protocol.directory import Directory, TimestampAuthorityEntry
from protocol.encoding import b64encode
from runtime.timestamps import TimestampClient, verify_timestamp
from tests.gateway.conftest import Harness
from tests.support.network import NOW
from tests.support.tsa import TimestampAuthorityKeys, running_tsa

INTERVAL = timedelta(seconds=60)


def listing(harness: Harness, *keys: TimestampAuthorityKeys) -> Directory:
    return harness.net.directory(
        timestamp_authorities=tuple(
            TimestampAuthorityEntry(name=f"TSA {n}", root_certificate=k.root_der) for n, k in enumerate(keys)
        )
    )


async def grow_and_checkpoint(
    harness: Harness, version: int, *, minutes: int, listed: tuple[TimestampAuthorityKeys, ...] = ()
) -> None:
    """Log directory `version` (listing the `listed` TSAs), then sign a checkpoint `minutes` after NOW."""
    entries = tuple(TimestampAuthorityEntry(name=f"TSA {n}", root_certificate=k.root_der) for n, k in enumerate(listed))
    signed = harness.net.signed_directory(version=version, timestamp_authorities=entries or None)
    async with harness.audit.transaction() as atx:
        await atx.append(directory_leaf(signed, version), at=NOW)
    await harness.audit.checkpoint_if_due(NOW + timedelta(minutes=minutes), idle_interval=timedelta(hours=1))


async def snapshot_of(harness: Harness) -> LogSnapshot:
    """What `rogatory audit export` reads from the gateway: entries, checkpoints and their tokens."""
    records = await harness.store.checkpoints()
    return LogSnapshot(
        checkpoints=tuple(record.note + "".join(record.cosignatures) for record in records),
        entries=tuple(LogEntry(leaf.leaf, leaf.receipt) for leaf in await harness.store.leaves(limit=1000)),
        stamps=tuple(
            CheckpointStamp(position, stamp.token)
            for position, record in enumerate(records)
            for stamp in record.timestamps
        ),
    )


async def stamp_newest(harness: Harness, keys: TimestampAuthorityKeys, *, roots_of: TimestampAuthorityKeys) -> None:
    async with running_tsa(keys) as tsa:
        client = TimestampClient(tsa.url, timeout_s=10)
        stamper = CheckpointStamper(harness.store, client, lambda: listing(harness, roots_of), interval=INTERVAL)
        attempt = await stamper.stamp_if_due(NOW)
        await client.close()
    assert attempt is not None
    assert attempt.result is StampResult.STAMPED


async def test_the_newest_checkpoint_is_stamped_and_the_token_verifies_over_its_signed_note(harness: Harness) -> None:
    keys = TimestampAuthorityKeys.generate("Rogatory Test TSA")
    await grow_and_checkpoint(harness, 2, minutes=0)
    async with running_tsa(keys) as tsa:
        client = TimestampClient(tsa.url, timeout_s=10)
        stamper = CheckpointStamper(harness.store, client, lambda: listing(harness, keys), interval=INTERVAL)
        attempt = await stamper.stamp_if_due(NOW)
        assert attempt is not None
        assert attempt.result is StampResult.STAMPED
        assert await stamper.stamp_if_due(NOW + timedelta(seconds=1)) is None  # stamped; interval not passed
        await grow_and_checkpoint(harness, 3, minutes=1)
        assert await stamper.stamp_if_due(NOW + timedelta(seconds=30)) is None  # within the interval
        later = await stamper.stamp_if_due(NOW + INTERVAL)
        assert later is not None
        assert later.result is StampResult.STAMPED
        await client.close()
    assert tsa.issued == 2
    stamped = [record for record in await harness.store.checkpoints() if record.timestamps]
    assert [record.checkpoint_id for record in stamped] == [attempt.checkpoint_id, later.checkpoint_id]
    for record in stamped:
        (stamp,) = record.timestamps
        trusted = verify_timestamp(stamp.token, record.note.encode(), [keys.root_der])
        assert stamp.authority == trusted.authority == "CN=Rogatory Test TSA"


async def test_a_tsa_that_is_away_holds_nothing_up_and_the_checkpoint_is_stamped_when_it_is_back(
    harness: Harness,
) -> None:
    keys = TimestampAuthorityKeys.generate("Rogatory Test TSA")
    await grow_and_checkpoint(harness, 2, minutes=0)
    async with running_tsa(keys) as tsa:
        client = TimestampClient(tsa.url, timeout_s=10)
        stamper = CheckpointStamper(harness.store, client, lambda: listing(harness, keys), interval=INTERVAL)
        tsa.down = True
        away = await stamper.stamp_if_due(NOW)
        assert away is not None
        assert away.result is StampResult.UNAVAILABLE
        assert (await harness.store.latest_checkpoint()).timestamps == ()  # type: ignore[union-attr]
        tsa.down = False
        back = await stamper.stamp_if_due(NOW + timedelta(seconds=1))
        assert back is not None
        assert back.result is StampResult.STAMPED
        await client.close()
    assert (tsa.refused, tsa.issued) == (1, 1)


async def test_a_token_from_a_tsa_the_directory_does_not_list_is_not_kept(harness: Harness) -> None:
    listed = TimestampAuthorityKeys.generate("Listed TSA")
    await grow_and_checkpoint(harness, 2, minutes=0)
    async with running_tsa() as impostor:  # answers with its own keys, not the listed ones
        client = TimestampClient(impostor.url, timeout_s=10)
        stamper = CheckpointStamper(harness.store, client, lambda: listing(harness, listed), interval=INTERVAL)
        attempt = await stamper.stamp_if_due(NOW)
        await client.close()
    assert attempt is not None
    assert attempt.result is StampResult.INVALID
    assert impostor.issued == 1
    assert all(record.timestamps == () for record in await harness.store.checkpoints())


async def test_without_a_listed_tsa_nothing_is_asked(harness: Harness) -> None:
    await grow_and_checkpoint(harness, 2, minutes=0)
    async with running_tsa() as tsa:
        client = TimestampClient(tsa.url, timeout_s=10)
        stamper = CheckpointStamper(harness.store, client, harness.net.directory, interval=INTERVAL)
        attempt = await stamper.stamp_if_due(NOW)
        await client.close()
    assert attempt is not None
    assert attempt.result is StampResult.UNTRUSTED
    assert tsa.issued == 0


async def test_an_auditor_verifies_the_tokens_of_an_export_under_the_directory_in_force(harness: Harness) -> None:
    keys = TimestampAuthorityKeys.generate("Rogatory Test TSA")
    await grow_and_checkpoint(harness, 2, minutes=0, listed=(keys,))
    await grow_and_checkpoint(harness, 3, minutes=1, listed=(keys,))
    await stamp_newest(harness, keys, roots_of=keys)
    snapshot = await snapshot_of(harness)
    assert [stamp.position for stamp in snapshot.stamps] == [1]
    authority = b64encode(harness.net.authority.public_key.raw)
    report = verify_snapshot(snapshot, authority)
    assert report.consistent, describe(report)
    assert report.timestamps == 1
    assert "1 RFC 3161 time-stamps over checkpoints verified" in describe(report)[1]

    (stamp,) = snapshot.stamps
    forged = bytearray(stamp.token)
    forged[len(forged) // 2] ^= 0x01
    tampered = LogSnapshot(snapshot.checkpoints, snapshot.entries, (CheckpointStamp(stamp.position, bytes(forged)),))
    refused = verify_snapshot(tampered, authority)
    assert refused.problem is not None
    assert refused.problem.kind is FailureKind.TIMESTAMP_INVALID
    assert exit_status(refused) == EXIT_STATUS[FailureKind.TIMESTAMP_INVALID]
    moved = LogSnapshot(snapshot.checkpoints, snapshot.entries, (CheckpointStamp(0, stamp.token),))
    assert verify_snapshot(moved, authority).problem is not None  # a token over another checkpoint's note


async def test_a_token_under_a_tsa_the_logged_directory_does_not_list_fails_the_audit(harness: Harness) -> None:
    listed, other = TimestampAuthorityKeys.generate("Listed TSA"), TimestampAuthorityKeys.generate("Other TSA")
    await grow_and_checkpoint(harness, 2, minutes=0, listed=(listed,))
    await stamp_newest(harness, other, roots_of=other)  # a gateway configured against its directory
    report = verify_snapshot(await snapshot_of(harness), b64encode(harness.net.authority.public_key.raw))
    assert report.problem is not None
    assert report.problem.kind is FailureKind.TIMESTAMP_INVALID


async def test_a_checkpoint_dated_after_its_time_stamp_is_reported_as_mis_dated(harness: Harness) -> None:
    keys = TimestampAuthorityKeys.generate("Rogatory Test TSA")
    await grow_and_checkpoint(harness, 2, minutes=60 * 24 * 60, listed=(keys,))  # the gateway's clock 60 days ahead
    await stamp_newest(harness, keys, roots_of=keys)
    report = verify_snapshot(await snapshot_of(harness), b64encode(harness.net.authority.public_key.raw))
    assert report.problem is not None
    assert report.problem.kind is FailureKind.TIMESTAMP_INVALID
    assert "before the time the checkpoint claims" in report.problem.detail
