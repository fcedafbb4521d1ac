"""Case tracking in the agent: one order, one state on both sides, illegal messages refused at both ends."""

from __future__ import annotations

import asyncio
import copy
import json
import uuid
from collections import defaultdict
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from agents.cases import CaseBook, CasePosition, Direction
from protocol.encoding import canonical_json, sha256_hex
from protocol.envelope import Recipient, seal
from protocol.errors import ErrorCode, IllegalTransition
from protocol.evidence import EvidenceType, parse_signed_evidence, verify_evidence
from protocol.ids import CaseId, MessageId
from protocol.limits import DEFAULT_LIMITS
from protocol.mla import CaseState, replay_case, validate_document
from tests.agents.harness import InProcessAgent, carry, return_evidence
from tests.protocol.mla.mla_samples import FINAL_STATES, SAMPLES_DIR, read_json, sample_paths
from tests.support.network import BD, LY, NOW

Agents = tuple[InProcessAgent, InProcessAgent]


def sample(name: str) -> dict[str, Any]:
    document = read_json(SAMPLES_DIR / name)
    assert isinstance(document, dict)
    return document


def fresh(document: dict[str, Any], case_id: str, **changes: Any) -> dict[str, Any]:
    """A sample moved to `case_id` under a new message id, with `changes`; `None` removes a field."""
    copied = copy.deepcopy(document) | {"case_id": case_id, "message_id": str(uuid.uuid4())}
    for name, value in changes.items():
        if value is None:
            copied.pop(name, None)
        else:
            copied[name] = value
    if "payload" in changes and "integrity" in copied:
        copied["integrity"]["payload_sha256"] = sha256_hex(canonical_json(copied["payload"]))
    return copied


def new_case() -> str:
    return f"BD-LY-T-{uuid.uuid4().hex[:8].upper()}"


def sample_cases() -> dict[str, list[Path]]:
    grouped: dict[str, list[Path]] = defaultdict(list)
    for path in sample_paths():
        grouped[json.loads(path.read_bytes())["case_id"]].append(path)
    return dict(grouped)


def by_agency(agents: Agents) -> dict[str, InProcessAgent]:
    bd, ly = agents
    return {BD: bd, LY: ly}


async def open_case(agents: Agents, case_id: str) -> dict[str, Any]:
    """BD's request of case 0011 (three items), delivered to LY, under `case_id`."""
    bd, ly = agents
    request = fresh(sample("BD-LY-2025-0011_01_MLA_REQUEST.json"), case_id)
    assert (await bd.submit(request))[0] == 202
    assert [r.result for r in await carry(bd, ly)] == ["delivered"]
    return request


async def answer(agents: Agents, case_id: str, request: dict[str, Any], *names: str) -> list[dict[str, Any]]:
    """LY's samples of case 0011 in `case_id`, each submitted and delivered to BD."""
    bd, ly = agents
    sent = []
    for name in names:
        document = fresh(sample(name), case_id)
        if document.get("in_reply_to") is not None:
            document["in_reply_to"] = request["message_id"]
        status, body = await ly.submit(document)
        assert status == 202, body
        assert [r.result for r in await carry(ly, bd)] == ["delivered"]
        sent.append(document)
    return sent


def test_case_order_is_sequence_then_creation_time_then_message_id() -> None:
    """Sequence decides first (whatever the clocks say), then created_at, then message id and sender."""
    request = validate_document(json.dumps(sample("BD-LY-2025-0007_01_MLA_REQUEST.json")).encode())
    answer_ = validate_document(json.dumps(sample("BD-LY-2025-0007_02_ACKNOWLEDGEMENT.json")).encode())
    assert answer_.created_at is not None
    late_clock_request = request.model_copy(update={"created_at": answer_.created_at + timedelta(days=30)})
    assert CasePosition.of(late_clock_request) < CasePosition.of(answer_)
    same_number = answer_.model_copy(update={"sequence": 1})
    assert CasePosition.of(request) < CasePosition.of(same_number)
    twin = request.model_copy(update={"message_id": uuid.UUID(int=0)})
    assert CasePosition.of(twin) < CasePosition.of(request)
    unnumbered = answer_.model_copy(update={"sequence": None})
    assert CasePosition.of(unnumbered) < CasePosition.of(request)


@pytest.mark.parametrize("case_id", sorted(FINAL_STATES))
async def test_both_agents_agree_on_every_state_of_every_sample_case(agents: Agents, case_id: str) -> None:
    """Each sample, submitted by its sender and delivered, leaves both agents with the case replay_case gives."""
    agent = by_agency(agents)
    replayed = []
    for path in sample_cases()[case_id]:
        document = json.loads(path.read_bytes())
        sender, recipient = agent[document["sender"]["authority_id"]], agent[document["recipient"]["authority_id"]]
        status, accepted = await sender.submit(path.read_bytes())
        assert status == 202, accepted
        assert [r.result for r in await carry(sender, recipient)] == ["delivered"]
        await recipient.ack(document["message_id"])
        await return_evidence(recipient, sender)
        replayed.append(validate_document(path.read_bytes()))
        mine, theirs = await sender.case(case_id), await recipient.case(case_id)
        assert mine["state"] == theirs["state"] == replay_case(replayed).state, path.name
        assert [m["message_id"] for m in mine["messages"]] == [m["message_id"] for m in theirs["messages"]]
        assert mine["items"] == theirs["items"]
        assert mine["deadlines"] == theirs["deadlines"]
        assert all(m["applied"] for m in mine["messages"])
    assert mine["state"] == FINAL_STATES[case_id]
    assert {mine["role"], theirs["role"]} == {"requesting", "requested"}


async def test_final_execution_before_acknowledgement_is_409_naming_state_and_type(agents: Agents) -> None:
    """N5: Libya's FINAL_EXECUTION straight after the request is refused by its own agent, nothing queued."""
    bd, ly = agents
    case_id = new_case()
    first, final = read_json(SAMPLES_DIR / "negative" / "N5_final_before_ack.json")
    assert (await bd.submit(fresh(first, case_id)))[0] == 202
    await carry(bd, ly)
    status, problem = await ly.submit(fresh(final, case_id))
    assert (status, problem["code"]) == (409, "ILLEGAL_TRANSITION")
    assert "FINAL_EXECUTION" in problem["detail"]
    assert "SUBMITTED" in problem["detail"]
    assert await ly.store.queued() == []
    assert (await ly.case(case_id))["state"] == "SUBMITTED"


async def test_concurrent_submissions_to_one_case_cannot_both_pass(agents: Agents) -> None:
    """Two acknowledgements of one request submitted at once: one is accepted, the other is 409."""
    _, ly = agents
    case_id = new_case()
    request = await open_case(agents, case_id)
    ack = sample("BD-LY-2025-0011_02_ACKNOWLEDGEMENT.json") | {"in_reply_to": request["message_id"]}
    answers = await asyncio.gather(*(ly.submit(fresh(ack, case_id, sequence=None)) for _ in range(2)))
    assert sorted(status for status, _ in answers) == [202, 409]
    refused = next(problem for status, problem in answers if status == 409)
    assert refused["code"] == "ILLEGAL_TRANSITION"
    assert "ACKNOWLEDGEMENT" in refused["detail"]
    assert "ACKNOWLEDGED" in refused["detail"]


async def test_agent_numbers_each_message_after_the_highest_of_the_case(agents: Agents) -> None:
    """Without `sequence`, the request is 1 and the answer 2, counted across both directions."""
    bd, ly = agents
    case_id = new_case()
    request = fresh(sample("BD-LY-2025-0011_01_MLA_REQUEST.json"), case_id, sequence=None, created_at=None)
    await bd.submit(request)
    await carry(bd, ly)
    ack = fresh(sample("BD-LY-2025-0011_02_ACKNOWLEDGEMENT.json"), case_id, sequence=None, created_at=None)
    ack["in_reply_to"] = request["message_id"]
    await ly.submit(ack)
    await carry(ly, bd)
    numbered = [(m["message_type"], m["sequence"]) for m in (await bd.case(case_id))["messages"]]
    assert numbered == [("MLA_REQUEST", 1), ("ACKNOWLEDGEMENT", 2)]
    inbox = json.loads((await bd.store.inbox_after(0, 10))[0].document)
    assert inbox["sequence"] == 2


async def test_resubmission_stays_idempotent_when_the_agent_numbers_the_message(agents: Agents) -> None:
    """The same document under the same id, or under the same Idempotency-Key, gets the same answer."""
    bd, _ = agents
    request = fresh(sample("BD-LY-2025-0011_01_MLA_REQUEST.json"), new_case(), sequence=None, created_at=None)
    first = await bd.submit(request)
    assert first == await bd.submit(request)
    anonymous = fresh(request, new_case(), message_id=None)
    again = await bd.submit(anonymous, idempotency_key="k-1")
    assert again == await bd.submit(anonymous, idempotency_key="k-1")
    assert again[0] == 202


async def test_message_numbered_before_later_ones_it_would_undo_is_refused(agents: Agents) -> None:
    """A withdrawal numbered to come before Libya's acknowledgement, which it would make illegal, is 409."""
    bd, _ = agents
    case_id = new_case()
    request = await open_case(agents, case_id)
    await answer(agents, case_id, request, "BD-LY-2025-0011_02_ACKNOWLEDGEMENT.json")
    withdrawal = sample("BD-LY-2025-0011_04_WITHDRAWAL.json")
    whole = withdrawal["payload"] | {"scope": "whole_request", "item_refs": []}
    early = fresh(withdrawal, case_id, payload=whole, sequence=2, created_at="2025-05-03T10:00:00Z")
    status, problem = await bd.submit(early)
    assert (status, problem["code"]) == (409, "ILLEGAL_TRANSITION")
    assert "would undo ACKNOWLEDGEMENT" in problem["detail"]
    assert "WITHDRAWAL in state SUBMITTED" in problem["detail"]
    on_time = fresh(withdrawal, case_id, payload=whole, sequence=None, created_at=None)
    assert (await bd.submit(on_time))[0] == 202
    assert (await bd.case(case_id))["state"] == "WITHDRAWN"


async def test_message_that_slipped_through_is_refused_with_signed_non_delivery(agents: Agents) -> None:
    """A FINAL_EXECUTION sealed by Libya outside its agent, before any acknowledgement, is refused by Bangladesh's
    agent with NON_DELIVERY (ILLEGAL_TRANSITION) that it signs; nothing of it is kept."""
    bd, ly = agents
    case_id = new_case()
    await open_case(agents, case_id)
    final = fresh(sample("BD-LY-2025-0011_05_FINAL_EXECUTION.json"), case_id)
    document = validate_document(canonical_json(final))
    sealed = seal(
        canonical_json(final),
        message_id=MessageId(uuid.UUID(final["message_id"])),
        sender=LY,
        signing_key=ly.keys.signing,
        recipients=[Recipient(BD, ly.directory.agency(BD).current_encryption_key(NOW).recipient_key)],
        archive_key=None,
        message_type=document.message_type,
        case_id=CaseId(case_id),
        created_at=NOW,
        expires_at=NOW + timedelta(hours=1),
        limits=DEFAULT_LIMITS,
    )
    received = await bd.receiver.receive_message(sealed.to_bytes())
    assert (received.result, received.code) == ("refused", ErrorCode.ILLEGAL_TRANSITION)
    [pending] = await bd.store.pending_evidence()
    verified = verify_evidence(parse_signed_evidence(pending.body, DEFAULT_LIMITS), bd.directory, now=NOW)
    refused = verified.statement
    assert (refused.evidence_type, refused.issuer, refused.sender) == (EvidenceType.NON_DELIVERY, BD, LY)
    assert verified.issuer_key.key_id == bd.keys.signing.key_id
    assert refused.reason is not None
    assert refused.reason.code == "ILLEGAL_TRANSITION"
    assert "FINAL_EXECUTION" in refused.reason.detail
    assert "SUBMITTED" in refused.reason.detail
    assert await bd.store.inbox_by_message_id(final["message_id"]) == []
    assert [m["message_type"] for m in (await bd.case(case_id))["messages"]] == ["MLA_REQUEST"]


@pytest.mark.parametrize("bd_hears_first", [True, False])
async def test_crossing_messages_that_conflict_leave_both_sides_with_the_earlier(
    agents: Agents, bd_hears_first: bool
) -> None:
    """Bangladesh withdraws the whole request while Libya reports final execution, both numbered 4: the withdrawal,
    earlier in the case order, stands on both sides; the final execution is refused and ends `failed`."""
    bd, ly = agents
    case_id = new_case()
    request = await open_case(agents, case_id)
    await answer(
        agents,
        case_id,
        request,
        "BD-LY-2025-0011_02_ACKNOWLEDGEMENT.json",
        "BD-LY-2025-0011_03_EXECUTION_DECISION.json",
    )
    withdrawal = sample("BD-LY-2025-0011_04_WITHDRAWAL.json")
    whole = withdrawal["payload"] | {"scope": "whole_request", "item_refs": []}
    assert (await bd.submit(fresh(withdrawal, case_id, payload=whole, sequence=4)))[0] == 202
    final = sample("BD-LY-2025-0011_05_FINAL_EXECUTION.json")
    every_item = final["payload"] | {
        "items": [
            *final["payload"]["items"],
            {"item_id": "C2", "status": "executed", "result": {"lang": "en", "value": "Located."}},
        ]
    }
    final_execution = fresh(final, case_id, payload=every_item, sequence=4)
    assert (await ly.submit(final_execution))[0] == 202

    first, second = ((bd, ly), (ly, bd)) if bd_hears_first else ((ly, bd), (bd, ly))
    await carry(*reversed(first))
    await carry(*reversed(second))
    await return_evidence(bd, ly)
    await return_evidence(ly, bd)

    failed = await ly.message(final_execution["message_id"])
    assert (failed["status"], failed["status_reason"]) == ("failed", "ILLEGAL_TRANSITION")
    mine, theirs = await bd.case(case_id), await ly.case(case_id)
    assert mine["state"] == theirs["state"] == "WITHDRAWN"
    assert [m["message_type"] for m in mine["messages"]] == [m["message_type"] for m in theirs["messages"]]
    assert mine["messages"][-1]["message_type"] == "WITHDRAWAL"


async def test_sent_message_refused_on_the_way_leaves_the_case_but_a_delivered_one_stays(agents: Agents) -> None:
    """A sent message rejected before delivery is not part of the case; one delivered and then expired is."""
    _, ly = agents
    case_id = new_case()
    request = await open_case(agents, case_id)
    [ack] = await answer(agents, case_id, request, "BD-LY-2025-0011_02_ACKNOWLEDGEMENT.json")
    decision = fresh(sample("BD-LY-2025-0011_03_EXECUTION_DECISION.json"), case_id)
    assert (await ly.submit(decision))[0] == 202
    assert (await ly.case(case_id))["state"] == "IN_EXECUTION"
    async with ly.store.transaction() as tx:
        await tx.set_status(decision["message_id"], "rejected", "POLICY_DENIED", "2026-11-29T10:00:00.000Z")
        await tx.set_status(ack["message_id"], "expired", "NOT_RETRIEVED", "2026-11-29T10:00:00.000Z")
    case = await ly.case(case_id)
    assert case["state"] == "ACKNOWLEDGED"
    assert [m["message_type"] for m in case["messages"]] == ["MLA_REQUEST", "ACKNOWLEDGEMENT"]


async def test_case_answer_has_both_directions_in_order_deadlines_and_what_is_overdue(agents: Agents) -> None:
    """GET /v1/cases/{id} names the state, this side's role, each message with its direction, and the deadlines."""
    bd, ly = agents
    case_id = new_case()
    request = await open_case(agents, case_id)
    await ly.ack(request["message_id"])
    await return_evidence(ly, bd)
    await answer(agents, case_id, request, "BD-LY-2025-0011_02_ACKNOWLEDGEMENT.json")
    case = await bd.case(case_id)
    assert (case["case_id"], case["state"], case["role"]) == (case_id, "ACKNOWLEDGED", "requesting")
    assert (case["requesting"], case["requested"]) == (BD, LY)
    assert case["items"] == {"C1": "pending", "C2": "pending", "C3": "pending"}
    sent, received = case["messages"]
    assert (sent["direction"], sent["status"], sent["sender"], sent["recipient"]) == ("sent", "retrieved", BD, LY)
    assert (received["direction"], received["message_type"], received["sender"]) == ("received", "ACKNOWLEDGEMENT", LY)
    assert received["received_at"] == "2026-11-29T10:00:00.000Z"
    assert received["retrieved_at"] is None
    assert sent["created_at"] == "2025-05-03T10:00:00.000Z"
    assert case["deadlines"], "the request's deadlines are open"
    assert case["overdue"] == [d for d in case["deadlines"] if d["overdue"]]
    assert case["overdue"], "2025 dates are past at the test's clock"
    assert "EXECUTION_DECISION" not in case["may_send"]
    assert "WITHDRAWAL" in case["may_send"]
    assert (await ly.case(case_id))["role"] == "requested"


async def test_unknown_case_is_a_404_problem(agents: Agents) -> None:
    """A case of which the agent holds no message is 404 NOT_FOUND; a malformed case id is 400."""
    bd, _ = agents
    status, problem = await bd.call("GET", "/v1/cases/BD-LY-2099-0001")
    assert (status, problem["code"]) == (404, "NOT_FOUND")
    status, problem = await bd.call("GET", "/v1/cases/%20x")
    assert status == 400


async def test_case_ids_with_slashes_are_reachable(agents: Agents) -> None:
    """A case id may contain `/` (CASE_ID syntax); GET /v1/cases finds it, encoded or not."""
    bd, _ = agents
    case_id = "BD/LY/2025/77"
    await bd.submit(fresh(sample("BD-LY-2025-0011_01_MLA_REQUEST.json"), case_id))
    assert (await bd.case(case_id))["state"] == "SUBMITTED"
    assert (await bd.case("BD%2FLY%2F2025%2F77"))["state"] == "SUBMITTED"


async def test_case_book_folds_again_after_an_admission_that_was_rolled_back(agents: Agents) -> None:
    """An admission whose transaction rolls back leaves no trace: the next read folds the store as it is."""
    bd, _ = agents
    case_id = new_case()
    await open_case(agents, case_id)
    book = bd.cases
    withdrawal = fresh(sample("BD-LY-2025-0011_04_WITHDRAWAL.json"), case_id)
    document = validate_document(canonical_json(withdrawal))

    async def admit_then_fail_to_insert() -> None:
        async with bd.store.transaction() as tx:
            assert await book.admit(tx, document, Direction.SENT) is CaseState.SUBMITTED
            raise RuntimeError("the insert failed")

    with pytest.raises(RuntimeError, match="the insert failed"):
        await admit_then_fail_to_insert()
    async with bd.store.transaction() as tx:
        found = await book.case_file(tx, case_id)
    assert found is not None
    assert [m.document.message_type for m in found.messages] == ["MLA_REQUEST"]


async def test_a_fresh_case_book_computes_what_the_cached_one_does(agents: Agents) -> None:
    """The cache is only a cache: a new book over the same store gives the same case."""
    bd, _ = agents
    case_id = new_case()
    request = await open_case(agents, case_id)
    await answer(agents, case_id, request, "BD-LY-2025-0011_02_ACKNOWLEDGEMENT.json")
    async with bd.store.transaction() as tx:
        cached = await bd.cases.case_file(tx, case_id)
        fresh_book = await CaseBook(BD).case_file(tx, case_id)
    assert cached is not None
    assert fresh_book is not None
    assert (cached.state, cached.role, cached.view) == (fresh_book.state, fresh_book.role, fresh_book.view)


async def test_another_document_under_a_message_id_of_the_case_is_a_conflict(agents: Agents) -> None:
    """The same message id with other content in the same case is MESSAGE_ID_CONFLICT, not a second message."""
    bd, _ = agents
    case_id = new_case()
    request = await open_case(agents, case_id)
    changed = validate_document(canonical_json(request | {"requesting_ref": "PSD/MLA/OUT/2025/9999"}))
    async with bd.store.transaction() as tx:
        with pytest.raises(IllegalTransition) as caught:
            await bd.cases.admit(tx, changed, Direction.SENT)
    assert caught.value.code is ErrorCode.MESSAGE_ID_CONFLICT


async def test_the_case_cache_is_bounded_by_the_documents_it_holds_and_stays_exact(agents: Agents) -> None:
    """Long cases cannot grow the cache past its document bound, and a case folded again is the same case."""
    bd, _ = agents
    book = CaseBook(BD, cached_documents=3)
    cases = [new_case() for _ in range(3)]
    for case_id in cases:
        request = await open_case(agents, case_id)
        await answer(agents, case_id, request, "BD-LY-2025-0011_02_ACKNOWLEDGEMENT.json")
    files = {}
    for case_id in cases:
        async with bd.store.transaction() as tx:
            files[case_id] = await book.case_file(tx, case_id)
        assert book.cached_documents <= 3
    for case_id in cases:  # each folded again from the store after being forgotten
        async with bd.store.transaction() as tx:
            again = await book.case_file(tx, case_id)
        assert again is not None
        assert again.state is CaseState.ACKNOWLEDGED
        assert [m.position for m in again.messages] == [m.position for m in files[case_id].messages]  # type: ignore[union-attr]


class _RolledBack(Exception):
    """Ends a test transaction without keeping what it wrote."""


async def test_numbering_and_admitting_in_one_transaction_read_the_case_once(agents: Agents) -> None:
    """A submission's number and admission share one read of the case; in another transaction it is read again."""
    bd, _ = agents
    case_id = new_case()
    await open_case(agents, case_id)
    book = bd.cases
    document = validate_document(canonical_json(fresh(sample("BD-LY-2025-0011_04_WITHDRAWAL.json"), case_id)))
    reads: list[str] = []

    def counted(tx: Any) -> None:
        read = tx.case_entries

        async def case_entries(case: str, agency: str) -> Any:
            reads.append(case)
            return await read(case, agency)

        tx.case_entries = case_entries

    async def number_and_admit() -> None:
        async with bd.store.transaction() as tx:
            counted(tx)
            assert await book.next_sequence(tx, case_id) == 2
            assert await book.admit(tx, document, Direction.SENT) is not None
            raise _RolledBack

    async def admit_alone() -> None:
        async with bd.store.transaction() as tx:
            counted(tx)
            await book.admit(tx, document, Direction.SENT)
            raise _RolledBack

    with pytest.raises(_RolledBack):
        await number_and_admit()
    assert reads == [case_id]

    reads.clear()
    async with bd.store.transaction() as tx:
        counted(tx)
        await book.next_sequence(tx, case_id)
    with pytest.raises(_RolledBack):
        await admit_alone()
    assert reads == [case_id, case_id]
