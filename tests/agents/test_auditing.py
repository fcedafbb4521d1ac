"""Agents as witnesses and proof followers: a forked log is caught, proofs are verified, late ones alarm."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog

from agents.auditing import PROOFS_PER_REQUEST, GatewayUnreachable, ProofFollower, Witness
from agents.store import AgentStore, EvidenceRecord
from protocol.auditlog import encode_leaf, evidence_leaf
from protocol.checkpoint import Checkpoint, NoteSignature, SignedCheckpoint, sign_checkpoint, verify_cosignature
from protocol.encoding import b64encode, format_timestamp
from protocol.errors import ProofInvalid
from protocol.evidence import EvidenceType, issue_evidence, new_statement
from protocol.ids import MessageId
from protocol.keys import SigningPrivateKey
from protocol.merkle import MerkleTree, leaf_hash
from protocol.storage import StorageKey
from tests.support.network import BD, LY, NOW, LocalNetwork

ORIGIN = "rogatory.test/audit-log"


@dataclass
class InMemoryGateway:
    """The gateway's audit API as an agent sees it; `tree` is what it shows, and it can lie."""

    net: LocalNetwork
    tree: MerkleTree = field(default_factory=MerkleTree)
    identities: dict[str, int] = field(default_factory=dict)
    cosignatures: list[tuple[int, str]] = field(default_factory=list)
    checkpoint_id: int = 0
    signing_key: SigningPrivateKey | None = None
    max_identities: int | None = None
    """Refuse larger proofs requests, as a gateway refuses a body over its size limit."""

    def add(self, leaf: bytes, identity: str | None = None) -> None:
        if identity is not None:
            self.identities[identity] = self.tree.size
        self.tree.append(leaf_hash(leaf))
        self.checkpoint_id += 1

    async def latest_checkpoint(self) -> dict[str, Any]:
        key = self.signing_key or self.net.log_key
        note = sign_checkpoint(Checkpoint(ORIGIN, self.tree.size, self.tree.root(), ("time 1",)), ORIGIN, key)
        return {"checkpoint_id": self.checkpoint_id, "checkpoint": note.to_text(), "tree_size": self.tree.size}

    async def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        return self.tree.consistency_proof(old_size, new_size)

    async def cosign(self, checkpoint_id: int, line: str) -> None:
        self.cosignatures.append((checkpoint_id, line))

    async def inclusion_proofs(self, identities: list[str], size: int) -> dict[str, Any]:
        if self.max_identities is not None and len(identities) > self.max_identities:
            raise GatewayUnreachable(f"POST /v1/audit/proofs answered 413: {len(identities)} identities")
        return {
            identity: {"index": index, "proof": [b64encode(n) for n in self.tree.inclusion_proof(index, size)]}
            for identity in identities
            if (index := self.identities.get(identity, size)) < size
        }


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[AgentStore]:
    opened = await AgentStore.open(tmp_path / "agent.db", storage_key=StorageKey.generate())
    yield opened
    await opened.close()


@pytest.fixture
def net() -> LocalNetwork:
    return LocalNetwork()


def witness_of(net: LocalNetwork, store: AgentStore, gateway: InMemoryGateway) -> Witness:
    return Witness(
        agency=BD, signing_key=net[BD].signing, directory=net.directory, store=store, gateway=gateway, clock=lambda: NOW
    )


def filler(gateway: InMemoryGateway, count: int, salt: bytes = b"") -> None:
    for number in range(count):
        gateway.add(salt + b"leaf %d" % number)


async def test_witness_cosigns_a_valid_checkpoint_once(net, store):
    """A checkpoint signed by the log key is cosigned with the agency's key, and only once."""
    gateway = InMemoryGateway(net)
    filler(gateway, 3)
    witness = witness_of(net, store, gateway)
    assert await witness.observe() is not None
    assert await witness.observe() is None
    assert len(gateway.cosignatures) == 1
    note = (await gateway.latest_checkpoint())["checkpoint"]
    line = NoteSignature.from_line(gateway.cosignatures[0][1].rstrip("\n"))
    cosigned = SignedCheckpoint.parse(note).with_signature(line)
    assert verify_cosignature(cosigned, BD, net[BD].signing.public_key) == int(NOW.timestamp())


async def test_witness_follows_a_log_that_grows_consistently(net, store):
    """Growth proven by a consistency proof is cosigned at each new size."""
    gateway = InMemoryGateway(net)
    filler(gateway, 3)
    witness = witness_of(net, store, gateway)
    await witness.observe()
    filler(gateway, 5, b"more ")
    assert await witness.observe() is not None
    assert witness.forks_detected == 0
    assert len(gateway.cosignatures) == 2


async def test_a_gateway_showing_another_history_is_caught_as_a_fork(net, store):
    """The gateway shows this agent a history that does not extend what it witnessed: fork, no cosignature."""
    honest = InMemoryGateway(net)
    filler(honest, 4)
    witness = witness_of(net, store, honest)
    await witness.observe()
    forked = InMemoryGateway(net, checkpoint_id=99)
    filler(forked, 6, b"other ")
    witness._gateway = forked  # the same gateway, now showing this agent another history
    assert await witness.observe() is None
    assert witness.forks_detected == 1
    assert await store.fork_count() == 1
    assert forked.cosignatures == []


async def test_two_checkpoints_of_one_size_with_different_roots_are_a_fork(net, store):
    """Same size, another root: kept as proof of a fork."""
    first = InMemoryGateway(net)
    filler(first, 4)
    witness = witness_of(net, store, first)
    await witness.observe()
    second = InMemoryGateway(net, checkpoint_id=50)
    filler(second, 4, b"x")
    witness._gateway = second
    await witness.observe()
    assert witness.forks_detected == 1


async def test_a_log_that_shrinks_is_caught(net, store):
    """A checkpoint smaller than one already witnessed is a rollback."""
    big = InMemoryGateway(net)
    filler(big, 8)
    witness = witness_of(net, store, big)
    await witness.observe()
    small = InMemoryGateway(net, checkpoint_id=7)
    filler(small, 4)
    witness._gateway = small
    await witness.observe()
    assert witness.forks_detected == 1


async def test_a_checkpoint_not_signed_by_the_log_key_is_refused(net, store):
    """A checkpoint signed by another key is not cosigned."""
    gateway = InMemoryGateway(net, signing_key=SigningPrivateKey.generate())
    filler(gateway, 2)
    with pytest.raises(ProofInvalid):
        await witness_of(net, store, gateway).observe()
    assert gateway.cosignatures == []


async def keep_evidence(store: AgentStore, net: LocalNetwork, received_minutes_ago: int = 0) -> tuple[str, bytes]:
    statement = new_statement(
        EvidenceType.DELIVERY,
        message_id=MessageId(uuid.uuid4()),
        message_digest="ab" * 32,
        sender=BD,
        recipient=LY,
        issuer=LY,
        at=NOW,
    )
    signed = issue_evidence(statement, net[LY].signing)
    async with store.transaction() as tx:
        await tx.insert_evidence(
            EvidenceRecord(
                identity=statement.identity,
                message_id=str(statement.message_id),
                evidence_type=statement.evidence_type,
                at=format_timestamp(NOW),
                issuer=LY,
                recipient=LY,
                reason_code=None,
                reason_detail=None,
                signed=signed.model_dump_json().encode(),
                received_at=format_timestamp(NOW - timedelta(minutes=received_minutes_ago)),
                inclusion_proof=None,
            )
        )
    return statement.identity, encode_leaf(evidence_leaf(signed, statement))


async def test_inclusion_proofs_are_verified_and_kept_with_the_evidence(net, store):
    """Each piece of evidence gets its proof, verified over the leaf rebuilt from the evidence itself."""
    gateway = InMemoryGateway(net)
    filler(gateway, 3)
    identity, leaf = await keep_evidence(store, net)
    gateway.add(leaf, identity)
    filler(gateway, 2, b"after ")
    await witness_of(net, store, gateway).observe()
    follower = ProofFollower(store=store, gateway=gateway, clock=lambda: NOW, max_merge_delay=timedelta(minutes=1))
    assert await follower.follow() == 1
    assert await store.evidence_without_proof() == []


async def test_a_proof_for_another_leaf_is_refused(net, store):
    """A proof that does not lead from this evidence's own leaf to the witnessed root is not kept."""
    gateway = InMemoryGateway(net)
    identity, _ = await keep_evidence(store, net)
    gateway.add(b"something else entirely", identity)
    filler(gateway, 3)
    await witness_of(net, store, gateway).observe()
    follower = ProofFollower(store=store, gateway=gateway, clock=lambda: NOW, max_merge_delay=timedelta(minutes=1))
    assert await follower.follow() == 0
    assert len(await store.evidence_without_proof()) == 1


async def test_evidence_without_a_proof_after_the_merge_delay_raises_an_alarm(net, store):
    """Evidence the log has not included within the maximum merge delay is counted and reported."""
    gateway = InMemoryGateway(net)
    filler(gateway, 2)
    await keep_evidence(store, net, received_minutes_ago=5)
    await keep_evidence(store, net, received_minutes_ago=0)
    await witness_of(net, store, gateway).observe()
    follower = ProofFollower(store=store, gateway=gateway, clock=lambda: NOW, max_merge_delay=timedelta(minutes=1))
    await follower.follow()
    assert follower.overdue == 1


async def test_a_backlog_larger_than_one_request_is_followed_in_full(net, store):
    """Hundreds of pieces of evidence waiting for proofs all get them, in requests the gateway accepts."""
    gateway = InMemoryGateway(net, max_identities=PROOFS_PER_REQUEST)
    backlog = 2 * PROOFS_PER_REQUEST + 50
    for _ in range(backlog):
        identity, leaf = await keep_evidence(store, net)
        gateway.add(leaf, identity)
    await witness_of(net, store, gateway).observe()
    follower = ProofFollower(store=store, gateway=gateway, clock=lambda: NOW, max_merge_delay=timedelta(minutes=1))
    assert await follower.follow() == backlog
    assert await store.evidence_without_proof() == []


async def test_an_overdue_proof_alarms_once_and_is_forgotten_once_it_arrives(net, store):
    """The alarm is raised once per piece of evidence, and what got its proof is no longer held in memory."""
    gateway = InMemoryGateway(net)
    filler(gateway, 2)
    identity, leaf = await keep_evidence(store, net, received_minutes_ago=5)
    await witness_of(net, store, gateway).observe()
    follower = ProofFollower(store=store, gateway=gateway, clock=lambda: NOW, max_merge_delay=timedelta(minutes=1))
    with structlog.testing.capture_logs() as logs:
        await follower.follow()
        await follower.follow()
    assert [entry["identity"] for entry in logs if entry["event"] == "inclusion_proof_overdue"] == [identity]
    gateway.add(leaf, identity)
    await witness_of(net, store, gateway).observe()
    assert await follower.follow() == 1
    assert follower.overdue == 0
    assert follower._alarmed == set()  # the memory the guarantee is about
