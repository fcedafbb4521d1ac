"""Backdating: a signer's own clock does not decide whether its key still vouches, or when its evidence happened.

A header's `created_at` and evidence's `at` are what the signer claims. Keys
are judged against the receiver's clock as well (a key retired longer ago than
`Limits.retired_key_grace` vouches for nothing, whatever the claimed time),
and the gateway bounds evidence by its own record of the message and its clock.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TypeVar

import pytest

from agents.receiving import InboxDelivery
from gateway.auditlog import AuditLog
from gateway.pipeline import GatewayIdentity, IngressDelivery, IngressPipeline, Outcome
from gateway.store import GatewayStore
from protocol.auditlog import directory_leaf
from protocol.directory import AgencyEntry, Directory, PublishedKey, PublishedSigningKey, sign_directory
from protocol.envelope import Recipient, SealedMessage, seal
from protocol.errors import ErrorCode
from protocol.evidence import EvidenceType, issue_evidence, new_statement, verify_evidence
from protocol.ids import AgencyId, CaseId, MessageId
from protocol.keys import SigningPrivateKey
from protocol.signing import SignedStatement
from protocol.topology import KIND_EVIDENCE, KIND_SEALED_MESSAGE
from tests.agents.harness import GATEWAY_USER, start_agent
from tests.gateway.conftest import PREFIX, InMemoryBroker, StaticDirectory
from tests.security.attacks import header_of, valid_document
from tests.support.network import BD, LY, NOW, LocalNetwork, published

SKEW = LocalNetwork().limits.max_clock_skew
GRACE = LocalNetwork().limits.retired_key_grace
ROTATION = NOW - GRACE - timedelta(hours=1)
"""When the signing keys were rotated: longer ago than the grace a retired key keeps."""
PublishedKeyT = TypeVar("PublishedKeyT", bound=PublishedKey)


SINCE = NOW - timedelta(days=30)
"""When the network's keys and agreement took effect: well before ROTATION."""


def long_standing(net: LocalNetwork) -> Directory:
    """The network's directory with every key and agreement in force since SINCE."""
    directory = net.directory()

    def since(keys: tuple[PublishedKeyT, ...]) -> tuple[PublishedKeyT, ...]:
        return tuple(key.model_copy(update={"valid_from": SINCE}) for key in keys)

    gateway = directory.gateway
    return directory.model_copy(
        update={
            "agencies": tuple(
                entry.model_copy(
                    update={"signing_keys": since(entry.signing_keys), "encryption_keys": since(entry.encryption_keys)}
                )
                for entry in directory.agencies
            ),
            "gateway": gateway.model_copy(
                update={"evidence_keys": since(gateway.evidence_keys), "log_keys": since(gateway.log_keys)}
            ),
            "agreements": tuple(
                agreement.model_copy(update={"valid_from": SINCE}) for agreement in directory.agreements
            ),
        }
    )


def rotated(net: LocalNetwork, agency: AgencyId) -> tuple[Directory, SigningPrivateKey]:
    """The long-standing directory after `agency` rotated its signing key at ROTATION (not revoked), and the old key."""
    old = net[agency].signing
    net[agency].signing = SigningPrivateKey.generate()
    keys = (
        PublishedSigningKey.model_validate(published(old, valid_from=SINCE) | {"valid_until": ROTATION}),
        PublishedSigningKey.model_validate(published(net[agency].signing, valid_from=ROTATION)),
    )
    directory = long_standing(net)
    entries = tuple(
        AgencyEntry.model_validate(entry.model_dump() | {"signing_keys": keys}) if entry.agency_id == agency else entry
        for entry in directory.agencies
    )
    return directory.model_copy(update={"agencies": entries}), old


def sealed_by_bd(net: LocalNetwork, signing: SigningPrivateKey, *, created_at: datetime) -> SealedMessage:
    """A valid request BD -> LY signed with `signing`, claiming `created_at`, alive for the longest TTL."""
    message_id = MessageId(uuid.uuid4())
    return seal(
        valid_document(message_id),
        message_id=message_id,
        sender=BD,
        signing_key=signing,
        recipients=[Recipient(LY, net[LY].encryption.public_key)],
        archive_key=None,
        message_type="MLA_REQUEST",
        case_id=CaseId("BD-LY-2025-0007"),
        created_at=created_at,
        expires_at=created_at + net.limits.max_message_ttl,
        limits=net.limits,
    )


@dataclass
class Gateway:
    """A gateway pipeline on SQLite with an in-memory broker and a clock the test moves."""

    pipeline: IngressPipeline
    store: GatewayStore
    broker: InMemoryBroker
    clock: list[datetime]
    directory: Directory

    async def submit(self, sealed: SealedMessage) -> Outcome:
        return await self.pipeline.handle(
            IngressDelivery(sealed.to_bytes(), KIND_SEALED_MESSAGE, PREFIX + BD, amqp_message_id=None)
        )

    async def evidence(self, body: bytes) -> Outcome:
        return await self.pipeline.handle(IngressDelivery(body, KIND_EVIDENCE, PREFIX + LY, amqp_message_id=None))

    async def forwarded_to_bd(self) -> list[EvidenceType]:
        found = []
        for record in await self.store.pending_outgoing():
            statement = verify_evidence(
                SignedStatement.model_validate_json(record.body), self.directory, now=self.clock[0]
            ).statement
            if record.routing_key == BD and statement.issuer == LY:
                found.append(statement.evidence_type)
        return found


@pytest.fixture
async def gateway_for(tmp_path: Path) -> AsyncIterator[object]:
    """`gateway_for(net, directory)`: a gateway under that directory, its clock at NOW."""
    stores: list[GatewayStore] = []

    async def make(net: LocalNetwork, directory: Directory) -> Gateway:
        store = await GatewayStore.open(tmp_path / f"gateway-{len(stores)}.db")
        stores.append(store)
        audit = await AuditLog.load(store, origin="rogatory.test/audit-log", log_key=net.log_key)
        async with audit.transaction() as atx:
            await atx.append(directory_leaf(sign_directory(directory, net.authority), 1), at=SINCE)
        clock, broker = [NOW], InMemoryBroker()
        pipeline = IngressPipeline(
            identity=GatewayIdentity(
                gateway_id="gateway.test", evidence_key=net.evidence_key, broker_user_prefix=PREFIX
            ),
            directory=StaticDirectory(directory),
            store=store,
            audit=audit,
            publisher=broker,
            limits=net.limits,
            clock=lambda: clock[0],
            attachments=None,
        )
        return Gateway(pipeline, store, broker, clock, directory)

    yield make
    for store in stores:
        await store.close()


def delivery_evidence(net: LocalNetwork, sealed: SealedMessage, signing: SigningPrivateKey, *, at: datetime) -> bytes:
    """LY's signed DELIVERY of `sealed`, dated `at`."""
    statement = new_statement(
        EvidenceType.DELIVERY,
        message_id=header_of(sealed).message_id,
        message_digest=sealed.digest,
        sender=BD,
        recipient=LY,
        issuer=LY,
        at=at,
    )
    return issue_evidence(statement, signing).model_dump_json().encode()


# -- headers ------------------------------------------------------------------------------


async def test_a_rotated_out_key_signing_a_message_backdated_into_the_window_is_refused_by_the_gateway(gateway_for):
    """BD's key retired past the grace signs now, dated before its retirement: KEY_NOT_VALID, nothing relayed."""
    net = LocalNetwork()
    directory, old = rotated(net, BD)
    gateway = await gateway_for(net, directory)
    backdated = sealed_by_bd(net, old, created_at=ROTATION - timedelta(minutes=1))
    outcome = await gateway.submit(backdated)
    assert (outcome.result, outcome.code) == ("rejected", ErrorCode.KEY_NOT_VALID)
    assert gateway.broker.confirmed == []
    assert (await gateway.submit(sealed_by_bd(net, net[BD].signing, created_at=NOW))).result == "relayed"


async def test_a_rotated_out_key_signing_a_message_backdated_into_the_window_is_refused_by_the_recipient(tmp_path):
    """The same backdated message handed straight to LY: refused KEY_NOT_VALID with NON_DELIVERY, never stored."""
    net = LocalNetwork()
    directory, old = rotated(net, BD)
    agent = await start_agent(net, directory, LY, tmp_path)
    try:
        backdated = sealed_by_bd(net, old, created_at=ROTATION - timedelta(minutes=1))
        refused = await agent.receiver.handle(InboxDelivery(backdated.to_bytes(), KIND_SEALED_MESSAGE, GATEWAY_USER))
        assert (refused.result, refused.code) == ("refused", ErrorCode.KEY_NOT_VALID)
        assert await agent.store.inbox_after(0, 100) == []
        fresh = sealed_by_bd(net, net[BD].signing, created_at=NOW)
        delivered = await agent.receiver.handle(InboxDelivery(fresh.to_bytes(), KIND_SEALED_MESSAGE, GATEWAY_USER))
        assert delivered.result == "delivered", delivered
    finally:
        await agent.close()


async def test_a_message_sealed_before_rotation_and_delayed_within_the_grace_still_flows(gateway_for, tmp_path):
    """Honest mail in flight: sealed under the old key before rotation, it arrives within the grace and is delivered."""
    net = LocalNetwork()
    directory, old = rotated(net, BD)
    in_flight = sealed_by_bd(net, old, created_at=ROTATION - timedelta(hours=1))
    gateway = await gateway_for(net, directory)
    gateway.clock[0] = ROTATION + GRACE - timedelta(minutes=1)
    assert (await gateway.submit(in_flight)).result == "relayed"
    agent = await start_agent(net, directory, LY, tmp_path)
    try:
        agent.receiver._clock = lambda: ROTATION + GRACE - timedelta(seconds=1)
        received = await agent.receiver.handle(InboxDelivery(in_flight.to_bytes(), KIND_SEALED_MESSAGE, GATEWAY_USER))
        assert received.result == "delivered", received
    finally:
        await agent.close()


async def test_a_message_from_the_future_beyond_the_skew_is_refused_by_gateway_and_recipient(gateway_for, tmp_path):
    """Dated past now + the allowed skew: NOT_YET_VALID at both; just inside the skew it flows."""
    net = LocalNetwork()
    directory = net.directory()
    gateway = await gateway_for(net, directory)
    agent = await start_agent(net, directory, LY, tmp_path)
    try:
        ahead = sealed_by_bd(net, net[BD].signing, created_at=NOW + SKEW + timedelta(seconds=1))
        assert (await gateway.submit(ahead)).code == ErrorCode.NOT_YET_VALID
        refused = await agent.receiver.handle(InboxDelivery(ahead.to_bytes(), KIND_SEALED_MESSAGE, GATEWAY_USER))
        assert (refused.result, refused.code) == ("refused", ErrorCode.NOT_YET_VALID)
        within = sealed_by_bd(net, net[BD].signing, created_at=NOW + SKEW - timedelta(seconds=1))
        assert (await gateway.submit(within)).result == "relayed"
        delivered = await agent.receiver.handle(InboxDelivery(within.to_bytes(), KIND_SEALED_MESSAGE, GATEWAY_USER))
        assert delivered.result == "delivered", delivered
    finally:
        await agent.close()


# -- evidence ------------------------------------------------------------------------------


async def test_evidence_dated_before_its_message_was_accepted_is_refused(gateway_for):
    """LY's DELIVERY dated before the gateway accepted the message (beyond the skew): BACKDATED, not forwarded."""
    net = LocalNetwork()
    gateway = await gateway_for(net, net.directory())
    sealed = sealed_by_bd(net, net[BD].signing, created_at=NOW - timedelta(hours=1))
    assert (await gateway.submit(sealed)).result == "relayed"
    gateway.clock[0] = NOW + timedelta(minutes=1)
    early = delivery_evidence(net, sealed, net[LY].signing, at=NOW - SKEW - timedelta(seconds=1))
    outcome = await gateway.evidence(early)
    assert (outcome.result, outcome.code) == ("rejected", ErrorCode.BACKDATED)
    assert await gateway.forwarded_to_bd() == []
    honest = delivery_evidence(net, sealed, net[LY].signing, at=NOW + timedelta(seconds=30))
    assert (await gateway.evidence(honest)).result == "forwarded"
    assert await gateway.forwarded_to_bd() == [EvidenceType.DELIVERY]


async def test_evidence_dated_in_the_future_beyond_the_skew_is_refused(gateway_for):
    """LY's DELIVERY dated past the gateway's now + the allowed skew: NOT_YET_VALID, not forwarded."""
    net = LocalNetwork()
    gateway = await gateway_for(net, net.directory())
    sealed = sealed_by_bd(net, net[BD].signing, created_at=NOW)
    assert (await gateway.submit(sealed)).result == "relayed"
    ahead = delivery_evidence(net, sealed, net[LY].signing, at=NOW + SKEW + timedelta(seconds=1))
    outcome = await gateway.evidence(ahead)
    assert (outcome.result, outcome.code) == ("rejected", ErrorCode.NOT_YET_VALID)
    assert await gateway.forwarded_to_bd() == []
    within = delivery_evidence(net, sealed, net[LY].signing, at=NOW + SKEW - timedelta(seconds=1))
    assert (await gateway.evidence(within)).result == "forwarded"


async def test_evidence_by_a_rotated_out_key_backdated_into_its_validity_is_refused(gateway_for):
    """LY's key retired past the grace signs DELIVERY now, dated while it was valid: KEY_NOT_VALID, not forwarded."""
    net = LocalNetwork()
    directory, old = rotated(net, LY)
    gateway = await gateway_for(net, directory)
    gateway.clock[0] = ROTATION - timedelta(hours=2)
    sealed = sealed_by_bd(net, net[BD].signing, created_at=gateway.clock[0])
    assert (await gateway.submit(sealed)).result == "relayed"
    gateway.clock[0] = NOW
    backdated = delivery_evidence(net, sealed, old, at=ROTATION - timedelta(hours=1))
    outcome = await gateway.evidence(backdated)
    assert (outcome.result, outcome.code) == ("rejected", ErrorCode.KEY_NOT_VALID)
    assert await gateway.forwarded_to_bd() == []
    assert (await gateway.evidence(delivery_evidence(net, sealed, net[LY].signing, at=NOW))).result == "forwarded"
