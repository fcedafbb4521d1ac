"""Each envelope attack is refused with its own code by the gateway, and again by the recipient.

The recipient never trusts the gateway: every attack is also handed straight
to the recipient agent's receiver, as a gateway that let it through would.
Attacks the gateway cannot see (it holds no content key) are marked so, and
must then be refused by the recipient with signed `NON_DELIVERY` evidence.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.receiving import InboxDelivery
from gateway.auditlog import AuditLog
from gateway.pipeline import GatewayIdentity, IngressDelivery, IngressPipeline, Outcome
from gateway.store import GatewayStore
from protocol.auditlog import directory_leaf
from protocol.directory import sign_directory
from protocol.evidence import EvidenceType, verify_evidence
from protocol.signing import SignedStatement
from protocol.topology import KIND_SEALED_MESSAGE
from tests.agents.harness import GATEWAY_USER, start_agent
from tests.gateway.conftest import PREFIX, InMemoryBroker, StaticDirectory
from tests.security.attacks import ATTACKS, everyone_may_talk
from tests.support.network import NOW, LocalNetwork

pytestmark = pytest.mark.asyncio


@pytest.mark.parametrize("name", sorted(ATTACKS))
async def test_attack_is_refused_by_the_gateway_with_its_code(name: str, tmp_path: Path) -> None:
    """The gateway refuses the attack with its code, logs the refusal and tells the publisher; nothing is relayed."""
    net = LocalNetwork()
    attack = ATTACKS[name](net)
    directory = attack.directory or everyone_may_talk(net)
    store = await GatewayStore.open(tmp_path / "gateway.db")
    try:
        audit = await AuditLog.load(store, origin="rogatory.test/audit-log", log_key=net.log_key)
        async with audit.transaction() as atx:
            await atx.append(directory_leaf(sign_directory(directory, net.authority), 1), at=NOW)
        broker = InMemoryBroker()
        pipeline = IngressPipeline(
            identity=GatewayIdentity(
                gateway_id="gateway.test", evidence_key=net.evidence_key, broker_user_prefix=PREFIX
            ),
            directory=StaticDirectory(directory),
            store=store,
            audit=audit,
            publisher=broker,
            limits=net.limits,
            clock=lambda: NOW,
            attachments=None,
        )

        async def submit(body: bytes) -> Outcome:
            return await pipeline.handle(
                IngressDelivery(
                    body=body, kind=KIND_SEALED_MESSAGE, user_id=PREFIX + attack.publisher, amqp_message_id=None
                )
            )

        for honest in attack.before:
            assert (await submit(honest)).result == "relayed"
        relayed_before = len(broker.confirmed)
        outcome = await submit(attack.wire)
        if attack.gateway_code is None:
            # The gateway cannot see inside: it relays, and the recipient must refuse (next test).
            assert outcome.result == "relayed"
            return
        assert (outcome.result, outcome.code) == ("rejected", attack.gateway_code)
        assert len(broker.confirmed) == relayed_before
        told = []
        for record in await store.pending_outgoing():
            statement = verify_evidence(SignedStatement.model_validate_json(record.body), directory, now=NOW).statement
            if statement.evidence_type == EvidenceType.SUBMISSION_REJECTED:
                told.append((record.routing_key, statement.reason.code if statement.reason else None))
        assert told == [(attack.publisher, attack.gateway_code)]
    finally:
        await store.close()


@pytest.mark.parametrize("name", sorted(ATTACKS))
async def test_attack_is_refused_again_by_the_recipient_with_its_code(name: str, tmp_path: Path) -> None:
    """The recipient refuses the attack itself, as if the gateway had let it through; nothing is stored."""
    net = LocalNetwork()
    attack = ATTACKS[name](net)
    directory = attack.directory or everyone_may_talk(net)
    agent = await start_agent(net, directory, attack.recipient, tmp_path)
    try:
        for honest in attack.before:
            delivered = await agent.receiver.handle(InboxDelivery(honest, KIND_SEALED_MESSAGE, GATEWAY_USER))
            assert delivered.result == "delivered", delivered
        inbox_before = len(await agent.store.inbox_after(0, 100))
        received = await agent.receiver.handle(InboxDelivery(attack.wire, KIND_SEALED_MESSAGE, GATEWAY_USER))
        assert received.result in {"refused", "dropped"}
        assert received.code == attack.recipient_code
        assert len(await agent.store.inbox_after(0, 100)) == inbox_before
        if received.result == "refused":
            # Attributable to an authenticated sender: answered with signed NON_DELIVERY and its reason.
            reasons = []
            for item in await agent.store.pending_evidence():
                statement = verify_evidence(
                    SignedStatement.model_validate_json(item.body), directory, now=NOW
                ).statement
                if statement.evidence_type == EvidenceType.NON_DELIVERY:
                    reasons.append(statement.reason.code if statement.reason else None)
            assert reasons == [attack.recipient_code]
    finally:
        await agent.close()
