"""Connectivity tests between two in-process agents: ping, automatic pong, evidence on both legs, no case, no inbox;
the refusals (unknown agency, no agreement, malformed request) and the timeout. The real path (gateway, broker,
processes) is tests/e2e/test_connectivity.py."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from protocol.connectivity import CONNECTIVITY_TEST, linked_agreement
from protocol.directory import Agreement, AgreementRule
from protocol.errors import PolicyDenied
from protocol.evidence import parse_signed_evidence, verify_evidence
from protocol.limits import DEFAULT_LIMITS
from protocol.policy import exchange_agreement
from tests.agents.harness import InProcessAgent, carry, start_agent
from tests.support.network import BD, LY, LY_AGO, NOW, LocalNetwork


@dataclass
class Clock:
    now: datetime = NOW

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Pair:
    bd: InProcessAgent
    ly: InProcessAgent
    clock: Clock
    net: LocalNetwork


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[Pair]:
    net, clock = LocalNetwork(), Clock()
    directory = net.directory()
    bd = await start_agent(net, directory, BD, tmp_path, clock=clock)
    ly = await start_agent(net, directory, LY, tmp_path, clock=clock)
    try:
        yield Pair(bd, ly, clock, net)
    finally:
        await bd.close()
        await ly.close()


async def ping(agent: InProcessAgent, body: Any) -> tuple[int, dict[str, Any]]:
    status, answer = await agent.call("POST", "/v1/connectivity-tests", body)
    return status, answer


async def test_ping_and_pong_travel_with_evidence_on_both_legs_and_leave_no_case(pair: Pair) -> None:
    """The ping is delivered and taken by LY's agent (its DELIVERY and RETRIEVAL back at BD), the pong comes back
    and BD signs for it; no case, no inbox entry, no sent message listed, on either side."""
    bd, ly = pair.bd, pair.ly
    status, started = await ping(bd, {"to": LY, "timeout_s": 60})
    assert status == 201, started
    assert (started["state"], started["to"], started["pong"]) == ("pending", LY, None)
    assert [r.result for r in await carry(bd, ly)] == ["delivered"]
    pair.clock.now = NOW + timedelta(seconds=2)
    assert [r.result for r in await carry(ly, bd)] == ["delivered"]
    status, test = await bd.call("GET", f"/v1/connectivity-tests/{started['test_id']}")
    assert status == 200, test
    assert (test["state"], test["failure"]) == ("completed", None)
    assert test["ping"]["status"] == "retrieved"
    assert {(item["type"], item["signed_by"]) for item in test["ping"]["evidence"]} == {
        ("DELIVERY", LY),
        ("RETRIEVAL", LY),
    }
    directory = pair.net.directory()
    pong_evidence = test["pong"]["evidence"]
    verified = [
        verify_evidence(
            parse_signed_evidence(json.dumps(item).encode(), DEFAULT_LIMITS), directory, now=pair.clock.now
        ).statement
        for item in pong_evidence
    ]
    assert [(s.evidence_type, s.issuer, s.sender, str(s.message_id)) for s in verified] == [
        ("DELIVERY", BD, LY, test["pong"]["message_id"]),
        ("RETRIEVAL", BD, LY, test["pong"]["message_id"]),
    ]
    assert all(
        s.message_type == CONNECTIVITY_TEST and s.message_digest == test["pong"]["message_digest"] for s in verified
    )
    assert test["timings"]["round_trip_ms"] == 2000
    for agent in (bd, ly):
        for path, key in (("/v1/cases", "cases"), ("/v1/inbox", "messages"), ("/v1/messages", "messages")):
            status, page = await agent.call("GET", path)
            assert (status, page[key]) == (200, []), (agent.agency, path)
    status, missing = await bd.call("GET", f"/v1/cases/LINK-{started['test_id'].replace('-', '')}")
    assert (status, missing["code"]) == (404, "NOT_FOUND")
    await carry(bd, ly)  # BD's evidence about the pong reaches LY: the pong, too, ends retrieved
    status, pong = await ly.call("GET", f"/v1/messages/{test['pong']['message_id']}")
    assert (status, pong["status"]) == (200, "retrieved")


async def test_a_redelivered_probe_is_taken_once(pair: Pair) -> None:
    """The same ping twice (a broker redelivery): one pong, the second copy a duplicate."""
    bd, ly = pair.bd, pair.ly
    assert (await ping(bd, {"to": LY}))[0] == 201
    (record,) = await bd.store.queued()
    assert (await ly.receiver.receive_message(record.sealed)).result == "delivered"
    assert (await ly.receiver.receive_message(record.sealed)).result == "duplicate"
    assert len(await ly.store.queued()) == 1


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"to": LY_AGO}, 403, "POLICY_DENIED"),
        ({"to": "ZZ-NOBODY"}, 422, "UNKNOWN_AGENCY"),
        ({"to": BD}, 422, "CONTENT_INVALID"),
        ({"to": "not an agency"}, 422, "CONTENT_INVALID"),
        ({"to": LY, "timeout_s": 0}, 422, "CONTENT_INVALID"),
        ({"to": LY, "timeout_s": 3601}, 422, "CONTENT_INVALID"),
        ({"to": LY, "timeout_s": "60"}, 422, "CONTENT_INVALID"),
        ({"to": LY, "case_id": "X"}, 422, "CONTENT_INVALID"),
        (b'{"to": "LY-MLA-CA", "to": "LY-AGO"}', 400, "DUPLICATE_KEY"),
    ],
)
async def test_a_test_that_cannot_go_is_refused_with_a_stable_code_and_nothing_queued(
    pair: Pair, body: Any, status: int, code: str
) -> None:
    """No agreement, an unknown or own agency, a bad timeout or field: refused before anything is kept."""
    answer_status, answer = await ping(pair.bd, body)
    assert (answer_status, answer["code"]) == (status, code), answer
    assert await pair.bd.store.queued() == []


async def test_no_pong_before_the_deadline_is_timed_out_and_a_late_peer_refuses_the_expired_ping(pair: Pair) -> None:
    """Peer down: pending while the deadline runs, `timed_out` (`TIMED_OUT`) after; the peer, back, refuses it."""
    bd, ly = pair.bd, pair.ly
    status, started = await ping(bd, {"to": LY, "timeout_s": 30})
    assert status == 201
    path = f"/v1/connectivity-tests/{started['test_id']}"
    pair.clock.now = NOW + timedelta(seconds=29)
    assert (await bd.call("GET", path))[1]["state"] == "pending"
    pair.clock.now = NOW + timedelta(seconds=31)
    test = (await bd.call("GET", path))[1]
    assert (test["state"], test["failure"]["code"]) == ("timed_out", "TIMED_OUT")
    assert [(r.result, r.code) for r in await carry(bd, ly)] == [("refused", "EXPIRED")]
    assert await ly.store.queued() == []
    test = (await bd.call("GET", path))[1]
    assert (test["state"], test["ping"]["status"]) == ("timed_out", "expired")


async def test_unknown_and_malformed_test_ids(pair: Pair) -> None:
    status, answer = await pair.bd.call("GET", "/v1/connectivity-tests/00000000-0000-4000-8000-000000000000")
    assert (status, answer["code"]) == (404, "NOT_FOUND")
    status, answer = await pair.bd.call("GET", "/v1/connectivity-tests/nope")
    assert (status, answer["code"]) == (400, "INVALID_IDENTIFIER")


def test_the_policy_allows_a_connectivity_test_between_linked_agencies_either_way_and_nothing_else() -> None:
    """An agreement BD -> LY (requests only) links BD and LY both ways for connectivity tests, not LY and LY-AGO;
    it still does not let LY send BD an MLA_REQUEST."""
    net = LocalNetwork()
    one_way = Agreement(
        agreement_id="ONE-WAY",
        title="one way",
        valid_from=NOW - timedelta(days=1),
        valid_until=NOW + timedelta(days=1),
        rules=(AgreementRule(senders=(BD,), recipients=(LY,), message_types=("MLA_REQUEST",)),),
    )
    directory = net.directory(agreements=(one_way,))
    for sender, recipient in ((BD, LY), (LY, BD)):
        assert exchange_agreement(directory, sender, recipient, CONNECTIVITY_TEST, NOW).agreement_id == "ONE-WAY"
    for sender, recipient, message_type in ((LY, LY_AGO, CONNECTIVITY_TEST), (LY, BD, "MLA_REQUEST")):
        with pytest.raises(PolicyDenied):
            exchange_agreement(directory, sender, recipient, message_type, NOW)
    with pytest.raises(PolicyDenied):
        linked_agreement(directory, BD, LY, NOW + timedelta(days=2))
