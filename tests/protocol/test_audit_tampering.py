"""The auditor's verdict: any single tampering of a stored log is detected, and named."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.audit_verify import FailureKind, VerifiedState, verify_audit_log
from protocol.checkpoint import Checkpoint, SignedCheckpoint, cosign_checkpoint, sign_checkpoint
from protocol.keys import SigningPrivateKey
from tests.support.auditlog import ORIGIN, build_log
from tests.support.network import LY_AGO

LOG = build_log(messages=3)
AUTHORITY = LOG.net.authority.public_key


def verify(entries=None, checkpoints=None, previous=None):
    return verify_audit_log(
        LOG.entries if entries is None else entries,
        LOG.checkpoints if checkpoints is None else checkpoints,
        authority=AUTHORITY,
        previous=previous,
    )


def test_untampered_log_is_consistent_and_published():
    """The log as written verifies: every entry, checkpoint and cosignature; published to its end."""
    report = verify()
    assert report.consistent, report.problem
    assert (report.leaves, report.evidence, report.directories, report.checkpoints) == (13, 12, 1, 4)
    assert report.published_size == 13
    assert report.cosignatures == 8


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_changing_any_byte_of_any_leaf_is_detected_and_located(data):
    """One changed byte anywhere in a stored leaf is found, at that leaf's index."""
    index = data.draw(st.integers(0, len(LOG.entries) - 1))
    leaf = LOG.entries[index].leaf
    position = data.draw(st.integers(0, len(leaf) - 1))
    mask = data.draw(st.integers(1, 255))
    changed = bytearray(leaf)
    changed[position] ^= mask
    entries = list(LOG.entries)
    entries[index] = dataclasses.replace(entries[index], leaf=bytes(changed))
    report = verify(entries)
    assert not report.consistent
    assert report.problem is not None
    assert report.problem.index == index


def test_changing_the_first_middle_and_last_byte_of_every_leaf_is_located():
    """Exhaustively over leaves: the change is found at the right index."""
    for index, entry in enumerate(LOG.entries):
        for position in (0, len(entry.leaf) // 2, len(entry.leaf) - 1):
            changed = bytearray(entry.leaf)
            changed[position] ^= 0x01
            entries = list(LOG.entries)
            entries[index] = dataclasses.replace(entry, leaf=bytes(changed))
            problem = verify(entries).problem
            assert problem is not None
            assert problem.index == index


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_changing_any_byte_of_any_checkpoint_is_detected_and_located(data):
    """One changed byte in a checkpoint or its cosignatures is found, naming that checkpoint."""
    number = data.draw(st.integers(0, len(LOG.checkpoints) - 1))
    note = LOG.checkpoints[number].encode()
    position = data.draw(st.integers(0, len(note) - 1))
    changed = bytearray(note)
    changed[position] ^= data.draw(st.integers(1, 127))
    checkpoints = list(LOG.checkpoints)
    checkpoints[number] = bytes(changed).decode("utf-8", errors="replace")
    report = verify(checkpoints=checkpoints)
    assert not report.consistent
    assert report.problem is not None
    assert report.problem.checkpoint == number


@pytest.mark.parametrize("index", range(1, 13))
def test_deleting_a_leaf_is_detected_at_its_index(index):
    """A deleted entry is named: the next one no longer carries a receipt for that index."""
    entries = LOG.entries[:index] + LOG.entries[index + 1 :]
    problem = verify(entries).problem
    assert problem is not None
    assert problem.index == index


@pytest.mark.parametrize("index", range(1, 13))
def test_inserting_a_leaf_is_detected_at_its_index(index):
    """An inserted copy of another entry (not one of its neighbours) is named where it was inserted."""
    entries = [*LOG.entries[:index], LOG.entries[(index + 2) % len(LOG.entries)], *LOG.entries[index:]]
    problem = verify(entries).problem
    assert problem is not None
    assert problem.index == index


@pytest.mark.parametrize(("first", "second"), [(1, 2), (3, 7), (5, 12), (11, 12)])
def test_reordering_leaves_is_detected_at_the_first_moved(first, second):
    """Two entries swapped: the first of them is named."""
    entries = list(LOG.entries)
    entries[first], entries[second] = entries[second], entries[first]
    problem = verify(entries).problem
    assert problem is not None
    assert problem.index == first


def test_dropping_the_tail_is_detected():
    """A log cut short no longer reaches its checkpoints."""
    problem = verify(LOG.entries[:-2]).problem
    assert problem is not None
    assert problem.kind == FailureKind.TREE_MISMATCH


def test_receipts_swapped_with_their_leaves_do_not_pass():
    """Moving an entry together with its receipt is still caught: the receipt names the old index."""
    entries = list(LOG.entries)
    entries[2], entries[3] = entries[3], entries[2]
    problem = verify(entries).problem
    assert problem is not None
    assert problem.kind == FailureKind.RECEIPT_INVALID
    assert problem.index == 2


def test_forked_checkpoints_are_detected():
    """Two signed checkpoints of one size with different roots prove a fork."""
    fork = sign_checkpoint(Checkpoint(ORIGIN, 5, bytes(32), ("time 1",)), ORIGIN, LOG.net.log_key).to_text()
    problem = verify(checkpoints=[*LOG.checkpoints, fork]).problem
    assert problem is not None
    assert problem.kind in {FailureKind.FORK_DETECTED, FailureKind.TREE_MISMATCH}
    assert problem.checkpoint == len(LOG.checkpoints)


def test_checkpoint_signed_by_another_key_is_refused():
    """Only the gateway's log key signs checkpoints."""
    impostor = SigningPrivateKey.generate()
    note = sign_checkpoint(Checkpoint(ORIGIN, 13, LOG.tree.root(), ()), ORIGIN, impostor).to_text()
    problem = verify(checkpoints=[note]).problem
    assert problem is not None
    assert problem.kind == FailureKind.CHECKPOINT_INVALID


def test_cosignature_by_a_non_agency_is_refused():
    """A cosignature line must be an agency of the directory, signing with its key."""
    signed = SignedCheckpoint.parse(LOG.checkpoints[-1])
    forged = signed.with_signature(cosign_checkpoint(signed, LY_AGO, SigningPrivateKey.generate(), 5))
    problem = verify(checkpoints=[*LOG.checkpoints[:-1], forged.to_text()]).problem
    assert problem is not None
    assert problem.kind == FailureKind.COSIGNATURE_INVALID


def test_rewritten_history_is_caught_against_what_was_verified_before():
    """The gateway rebuilds a different, internally valid log: the auditor's remembered root exposes it."""
    first = verify()
    assert first.state is not None
    rewritten = build_log(messages=3, net=LOG.net)
    report = verify_audit_log(rewritten.entries, rewritten.checkpoints, authority=AUTHORITY, previous=first.state)
    assert report.problem is not None
    assert report.problem.kind == FailureKind.INCONSISTENT_WITH_PREVIOUS


def test_the_remembered_state_of_the_same_log_passes():
    """Verifying the same log again against what was remembered is consistent."""
    first = verify()
    assert first.state is not None
    assert verify(previous=first.state).consistent
    assert verify(previous=VerifiedState(ORIGIN, 5, LOG.tree.root(5))).consistent


def test_an_empty_log_is_not_consistent():
    """No directory, no checkpoint: nothing to vouch for."""
    assert not verify(entries=[], checkpoints=[]).consistent
    assert not verify(checkpoints=[]).consistent
