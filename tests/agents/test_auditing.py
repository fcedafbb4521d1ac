"""Agents as witnesses and proof followers: a forked log is caught, at a witness or by the recipient of a
message carrying its sender's view; forged cosignatures alarm; proofs are verified, late ones alarm."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog

from agents.auditing import PROOFS_PER_REQUEST, Auditing, GatewayUnreachable, ProofFollower, SenderViews, Witness
from agents.receiving import ReceivedResult
from agents.store import AgentStore, EvidenceRecord
from protocol.auditlog import encode_leaf, evidence_leaf
from protocol.checkpoint import (
    Checkpoint,
    NoteSignature,
    SignedCheckpoint,
    cosign_checkpoint,
    sign_checkpoint,
    verify_cosignature,
)
from protocol.encoding import b64encode, format_timestamp
from protocol.envelope import EnvelopeHeader, SealedMessage
from protocol.errors import ProofInvalid
from protocol.evidence import EvidenceType, issue_evidence, new_statement
from protocol.ids import AgencyId, MessageId
from protocol.keys import SigningPrivateKey
from protocol.limits import DEFAULT_LIMITS
from protocol.merkle import MerkleTree, leaf_hash
from protocol.storage import StorageKey
from tests.agents.harness import InProcessAgent, carry, start_agent
from tests.agents.test_cases import fresh, new_case, sample
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
    presented: list[tuple[str, str]] = field(default_factory=list)
    offered: list[dict[str, Any]] = field(default_factory=list)

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

    async def present_witnessed(self, note: str, line: str) -> dict[str, Any]:
        self.presented.append((note, line))
        return {"recovering": False, "tree_size": self.tree.size}

    async def offer_leaves(self, leaves: list[dict[str, Any]]) -> dict[str, Any]:
        self.offered.extend(leaves)
        return {"recovering": False, "tree_size": self.tree.size}

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


def witness_of(
    net: LocalNetwork,
    store: AgentStore,
    gateway: InMemoryGateway,
    *,
    agency: AgencyId = BD,
    sender_views: SenderViews | None = None,
) -> Witness:
    return Witness(
        agency=agency,
        signing_key=net[agency].signing,
        directory=net.directory,
        store=store,
        gateway=gateway,
        clock=lambda: NOW,
        sender_views=sender_views,
    )


def health_of(witness: Witness, store: AgentStore) -> dict[str, Any]:
    """What the agent's `/healthz` says of the audit log."""
    proofs = ProofFollower(
        store=store, gateway=InMemoryGateway(LocalNetwork()), clock=lambda: NOW, max_merge_delay=timedelta(minutes=1)
    )
    return Auditing(session=None, witness=witness, proofs=proofs).health()  # type: ignore[arg-type]  # no HTTP here


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


# -- split views: what one agency's witness cannot see alone (finding 3) --------------------------------


@dataclass
class TwoAgencies:
    """BD's and LY's agents, each with its own witness on its own store, and LY's senders' views."""

    net: LocalNetwork
    bd: InProcessAgent
    ly: InProcessAgent
    bd_witness: Witness
    ly_witness: Witness


@pytest.fixture
async def two_agencies(tmp_path: Path) -> AsyncIterator[TwoAgencies]:
    net = LocalNetwork()
    directory = net.directory()
    views = SenderViews()
    bd = await start_agent(net, directory, BD, tmp_path)
    ly = await start_agent(net, directory, LY, tmp_path, sender_views=views)
    bd_witness = witness_of(net, bd.store, InMemoryGateway(net))
    ly_witness = witness_of(net, ly.store, InMemoryGateway(net), agency=LY, sender_views=views)
    try:
        yield TwoAgencies(net, bd, ly, bd_witness, ly_witness)
    finally:
        await bd.close()
        await ly.close()


async def send_request(agencies: TwoAgencies) -> None:
    """BD submits a request through its API; it reaches LY's receiver and is delivered."""
    document = fresh(sample("BD-LY-2025-0011_01_MLA_REQUEST.json"), new_case())
    assert (await agencies.bd.submit(document))[0] == 202
    assert [received.result for received in await carry(agencies.bd, agencies.ly)] == [ReceivedResult.DELIVERED]


async def test_a_gateway_showing_two_agencies_two_histories_is_detected_by_the_recipient(two_agencies):
    """Each agency's witness sees a consistent log of its own; the recipient of BD's message finds the fork."""
    shown_to_bd, shown_to_ly = InMemoryGateway(two_agencies.net), InMemoryGateway(two_agencies.net)
    filler(shown_to_bd, 4)
    filler(shown_to_bd, 3, b"only BD sees ")
    filler(shown_to_ly, 4)
    filler(shown_to_ly, 5, b"only LY sees ")
    two_agencies.bd_witness._gateway = shown_to_bd
    two_agencies.ly_witness._gateway = shown_to_ly
    assert await two_agencies.bd_witness.observe() is not None
    assert await two_agencies.ly_witness.observe() is not None  # alone, neither witness can tell
    await send_request(two_agencies)  # delivered: the sender's view is evidence, not a reason to refuse its mail
    with structlog.testing.capture_logs() as logs:
        assert await two_agencies.ly_witness.compare_sender_views() == 1
    assert two_agencies.ly_witness.forks_detected == 1
    assert await two_agencies.ly.store.fork_count() == 1
    assert [(entry["event"], entry["seen_by"]) for entry in logs if entry["log_level"] == "error"] == [
        ("audit_log_fork_detected", BD)
    ]
    assert "the gateway's audit log is forked" in health_of(two_agencies.ly_witness, two_agencies.ly.store)["alarms"]
    assert await two_agencies.ly_witness.compare_sender_views() == 0  # the same view is recorded once


async def test_a_split_view_of_one_size_is_detected_by_the_recipient(two_agencies):
    """Two checkpoints of the same size with different roots, one per agency: caught without any proof."""
    shown_to_bd, shown_to_ly = InMemoryGateway(two_agencies.net), InMemoryGateway(two_agencies.net)
    filler(shown_to_bd, 6, b"BD ")
    filler(shown_to_ly, 6, b"LY ")
    two_agencies.bd_witness._gateway = shown_to_bd
    two_agencies.ly_witness._gateway = shown_to_ly
    await two_agencies.bd_witness.observe()
    await two_agencies.ly_witness.observe()
    await send_request(two_agencies)
    assert await two_agencies.ly_witness.compare_sender_views() == 1


@pytest.mark.parametrize("sender_ahead", [True, False], ids=["sender ahead", "recipient ahead"])
async def test_an_honest_history_raises_no_alarm_at_the_recipient(two_agencies, sender_ahead):
    """Both agencies see one log, at different sizes: the recipient's comparison finds it consistent."""
    gateway = InMemoryGateway(two_agencies.net)
    two_agencies.bd_witness._gateway = two_agencies.ly_witness._gateway = gateway
    first, second = (
        (two_agencies.ly_witness, two_agencies.bd_witness)
        if sender_ahead
        else (two_agencies.bd_witness, two_agencies.ly_witness)
    )
    filler(gateway, 3)
    await first.observe()
    filler(gateway, 4, b"more ")
    await second.observe()
    await send_request(two_agencies)
    with structlog.testing.capture_logs() as logs:
        assert await two_agencies.ly_witness.compare_sender_views() == 0
    assert two_agencies.ly_witness.forks_detected == 0
    assert [entry for entry in logs if entry["log_level"] in {"error", "warning"}] == []
    assert "alarms" not in health_of(two_agencies.ly_witness, two_agencies.ly.store)


async def test_the_message_header_carries_the_senders_latest_witnessed_checkpoint(two_agencies):
    """What BD sends names the checkpoint its witness cosigned, with the log's signature and no cosignature."""
    gateway = InMemoryGateway(two_agencies.net)
    filler(gateway, 5)
    two_agencies.bd_witness._gateway = gateway
    witnessed = await two_agencies.bd_witness.observe()
    assert witnessed is not None
    document = fresh(sample("BD-LY-2025-0011_01_MLA_REQUEST.json"), new_case())
    assert (await two_agencies.bd.submit(document))[0] == 202
    (record,) = await two_agencies.bd.store.queued()
    header = SealedMessage.from_bytes(record.sealed, DEFAULT_LIMITS)
    note = EnvelopeHeader.model_validate_json(header.header_bytes).log_checkpoint
    assert note is not None
    assert SignedCheckpoint.parse(note).checkpoint == witnessed.checkpoint
    assert {line.key_name for line in SignedCheckpoint.parse(note).signatures} == {ORIGIN}


class CosignedGateway(InMemoryGateway):
    """A gateway that serves its checkpoints with cosignature lines of its choosing."""

    lines: list[NoteSignature]

    async def latest_checkpoint(self) -> dict[str, Any]:
        answer = await super().latest_checkpoint()
        signed = SignedCheckpoint.parse(answer["checkpoint"])
        for line in self.lines:
            signed = signed.with_signature(line)
        return answer | {"checkpoint": signed.to_text()}


def cosigned_gateway(net: LocalNetwork, *, by: SigningPrivateKey, name: str = LY) -> CosignedGateway:
    gateway = CosignedGateway(net)
    filler(gateway, 3)
    body = Checkpoint(ORIGIN, gateway.tree.size, gateway.tree.root(), ("time 1",))
    gateway.lines = [cosign_checkpoint(sign_checkpoint(body, ORIGIN, net.log_key), name, by, 1_800_000_000)]
    return gateway


async def test_a_forged_cosignature_on_a_fetched_checkpoint_raises_an_alarm(net, store):
    """A line in LY's name under a key the directory does not give LY is counted, logged and shown in health."""
    witness = witness_of(net, store, cosigned_gateway(net, by=SigningPrivateKey.generate()))
    with structlog.testing.capture_logs() as logs:
        await witness.observe()
        await witness.observe()
    assert witness.forged_cosignatures == 1  # once per line, however often it is served
    assert [entry["witness"] for entry in logs if entry["event"] == "audit_log_cosignature_forged"] == [LY]
    health = health_of(witness, store)
    assert health["cosignatures_forged"] == 1
    assert "a cosignature on the gateway's checkpoint does not verify" in health["alarms"]


async def test_a_cosignature_altered_under_a_real_witness_key_raises_an_alarm(net, store):
    """A line that names LY's real key but whose signature does not verify is a forgery too."""
    gateway = cosigned_gateway(net, by=net[LY].signing)
    line = gateway.lines[0]
    gateway.lines = [NoteSignature(line.key_name, line.key_hash, line.signature_bytes[:-1] + b"\x00")]
    witness = witness_of(net, store, gateway)
    await witness.observe()
    assert witness.forged_cosignatures == 1


async def test_honest_cosignatures_of_other_witnesses_raise_no_alarm(net, store):
    """LY's real cosignature on the checkpoint BD fetches verifies: nothing is counted."""
    witness = witness_of(net, store, cosigned_gateway(net, by=net[LY].signing))
    assert await witness.observe() is not None
    assert witness.forged_cosignatures == 0


@dataclass
class RestoredGateway(InMemoryGateway):
    """A gateway restored from a backup of `restored_size` leaves: it answers `recovering` to what is presented."""

    restored_size: int = 0

    async def present_witnessed(self, note: str, line: str) -> dict[str, Any]:
        self.presented.append((note, line))
        size = SignedCheckpoint.parse(note).checkpoint.size
        return {"recovering": True, "tree_size": self.restored_size, "witnessed_size": size, "reason": "restored"}


async def test_a_witness_gives_its_evidence_back_to_a_restored_gateway_and_neither_cosigns_nor_cries_fork(net, store):
    """Presented with a gateway whose log is behind the witnessed checkpoint, the witness gives back the leaf it holds,
    with the index its proof names, and records no fork: the restored log's old checkpoint is never judged."""
    gateway = InMemoryGateway(net)
    filler(gateway, 3)
    identity, leaf = await keep_evidence(store, net)
    gateway.add(leaf, identity)
    witness = witness_of(net, store, gateway)
    await witness.observe()
    follower = ProofFollower(store=store, gateway=gateway, clock=lambda: NOW, max_merge_delay=timedelta(minutes=1))
    assert await follower.follow() == 1
    restored = RestoredGateway(net, restored_size=3)
    filler(restored, 3)
    witness._gateway = restored
    assert await witness.observe() is None
    assert len(restored.presented) == 1
    (note, line) = restored.presented[0]
    assert SignedCheckpoint.parse(note).checkpoint.size == 4
    assert NoteSignature.from_line(line.rstrip("\n")).key_name == BD
    assert restored.offered == [{"index": 3, "leaf": b64encode(leaf)}]
    assert restored.cosignatures == []
    assert witness.forks_detected == 0
    assert witness.gateway_recovering
    await witness.observe()  # the next round: presented again, the same leaves not given again so soon
    assert len(restored.presented) == 2
    assert len(restored.offered) == 1
