"""What operators see of an agent: Prometheus metrics and the canonical log line of each delivery."""

from __future__ import annotations

from datetime import timedelta

import pytest
import structlog

from agents.metrics import AgentMetrics
from agents.receiving import InboxDelivery, Received, ReceivedResult
from agents.store import AgentStore, EvidenceRecord
from protocol.encoding import format_timestamp
from protocol.storage import StorageKey
from runtime.logs import CANONICAL_EVENT, CANONICAL_FIELDS
from tests.support.network import NOW

AGENCY = "LY-MLA-CA"


@pytest.fixture
async def store(tmp_path):
    opened = await AgentStore.open(tmp_path / "agent.db", storage_key=StorageKey.generate())
    try:
        yield opened
    finally:
        await opened.close()


async def test_each_delivery_is_counted_timed_and_logged_once(store):
    """Outcomes are counted by kind and result, refusals by code, the receive stage timed, and each
    delivery ends in one `message_processed` line carrying message id, case, sender and recipient keys."""
    metrics = AgentMetrics()
    results = iter(
        [
            Received(
                kind="message",
                result=ReceivedResult.REFUSED,
                code="POLICY_DENIED",
                message_id=None,
                sender="BD-MOHA-PSD",
            ),
            Received(
                kind="evidence", result=ReceivedResult.DUPLICATE, code="DELIVERY", message_id="m-1", sender=AGENCY
            ),
        ]
    )

    async def handle(_delivery: InboxDelivery) -> Received:
        return next(results)

    measured = metrics.measured_handler(handle, store, lambda: NOW, agency=AGENCY)
    delivery = InboxDelivery(body=b"{}", kind="k", user_id="gateway")
    with structlog.testing.capture_logs() as lines:
        await measured(delivery)
        await measured(delivery)
    value = metrics.registry.get_sample_value
    assert value("rogatory_agent_deliveries_total", {"kind": "message", "result": "refused"}) == 1
    assert value("rogatory_agent_errors_total", {"code": "POLICY_DENIED"}) == 1
    assert value("rogatory_agent_errors_total", {"code": "DELIVERY"}) is None, "a duplicate is not an error"
    assert value("rogatory_agent_stage_seconds_count", {"stage": "receive"}) == 2
    canonical = [line for line in lines if line["event"] == CANONICAL_EVENT]
    assert len(canonical) == 2
    assert all(set(CANONICAL_FIELDS) <= set(line) for line in canonical)


async def test_scrape_reads_proof_delay_and_witness_figures(store):
    """At scrape time: evidence waiting for its inclusion proof and the age of the oldest (the proof delay),
    and the witness's figures from the health answer."""
    async with store.transaction() as tx:
        await tx.insert_evidence(
            EvidenceRecord(
                identity="evidence/1",
                message_id="m-1",
                evidence_type="DELIVERY",
                at=format_timestamp(NOW - timedelta(seconds=50)),
                issuer=AGENCY,
                recipient=AGENCY,
                reason_code=None,
                reason_detail=None,
                signed=b"{}",
                received_at=format_timestamp(NOW - timedelta(seconds=40)),
                inclusion_proof=None,
            )
        )
    metrics = AgentMetrics()
    await metrics.refresh(store, {"inbox_connected": True, "forks_detected": 1, "inclusion_proofs_overdue": 2}, NOW)
    value = metrics.registry.get_sample_value
    assert value("rogatory_agent_evidence_awaiting_proof") == 1
    assert value("rogatory_agent_oldest_unproven_evidence_age_seconds") == pytest.approx(40.0)
    assert value("rogatory_agent_forks_detected") == 1
    assert value("rogatory_agent_inclusion_proofs_overdue") == 2
    assert value("rogatory_agent_inbox_connected") == 1
