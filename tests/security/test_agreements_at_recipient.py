"""Recipients re-check the agreements: what no agreement allows is refused even when a gateway delivers it.

The gateway is not trusted: a compromised one, or a forged re-drive of a dead
letter, can put any validly sealed message into an agency's inbox queue. These
tests hand such messages straight to the recipient's receiver, as that gateway
would.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from agents.receiving import InboxDelivery
from protocol.envelope import Recipient, SealedMessage, seal
from protocol.errors import ErrorCode
from protocol.evidence import EvidenceType, verify_evidence
from protocol.ids import AgencyId, CaseId, MessageId
from protocol.signing import SignedStatement
from protocol.topology import KIND_SEALED_MESSAGE
from tests.agents.harness import GATEWAY_USER, InProcessAgent, start_agent
from tests.security.attacks import valid_document
from tests.support.network import BD, BD_POLICE, LY, NOW, LocalNetwork

CASE = CaseId("BD-LY-2025-0007")


def sealed_by(net: LocalNetwork, sender: AgencyId) -> SealedMessage:
    """A valid MLA request to LY, correctly sealed and signed by `sender` under its own key."""
    message_id = MessageId(uuid.uuid4())
    document = json.loads(valid_document(message_id))
    document["sender"] = document["sender"] | {"state": sender[:2], "authority_id": sender}
    return seal(
        json.dumps(document, ensure_ascii=False).encode("utf-8"),
        message_id=message_id,
        sender=sender,
        signing_key=net[sender].signing,
        recipients=[Recipient(LY, net[LY].encryption.public_key)],
        archive_key=None,
        message_type="MLA_REQUEST",
        case_id=CASE,
        created_at=NOW,
        expires_at=NOW + net.limits.max_message_ttl,
        limits=net.limits,
    )


async def non_delivery_reasons(agent: InProcessAgent) -> list[str | None]:
    """The reason codes of the signed `NON_DELIVERY` evidence the agent queued for the senders."""
    reasons = []
    for item in await agent.store.pending_evidence():
        statement = verify_evidence(SignedStatement.model_validate_json(item.body), agent.directory, now=NOW).statement
        if statement.evidence_type == EvidenceType.NON_DELIVERY:
            reasons.append(statement.reason.code if statement.reason else None)
    return reasons


async def test_a_message_no_agreement_allows_delivered_by_the_gateway_is_refused_by_the_recipient(
    tmp_path: Path,
) -> None:
    """BD-POLICE -> LY, which no agreement allows, injected past the gateway: refused, never in the inbox."""
    net = LocalNetwork()
    directory = net.directory()  # one agreement: BD <-> LY; BD-POLICE is listed but may send to no one
    agent = await start_agent(net, directory, LY, tmp_path)
    try:
        refused = await agent.receiver.handle(
            InboxDelivery(sealed_by(net, BD_POLICE).to_bytes(), KIND_SEALED_MESSAGE, GATEWAY_USER)
        )
        assert (refused.result, refused.code, refused.sender) == ("refused", ErrorCode.POLICY_DENIED, BD_POLICE)
        assert await agent.store.inbox_after(0, 100) == []
        assert await non_delivery_reasons(agent) == [ErrorCode.POLICY_DENIED]

        allowed = await agent.receiver.handle(
            InboxDelivery(sealed_by(net, BD).to_bytes(), KIND_SEALED_MESSAGE, GATEWAY_USER)
        )
        assert allowed.result == "delivered", allowed
        assert [entry.sender for entry in await agent.store.inbox_after(0, 100)] == [BD]
    finally:
        await agent.close()
