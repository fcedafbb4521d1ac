"""The case lifecycle: the table refuses what it does not list; the samples reach their states."""

import datetime as dt
import itertools
import json
import uuid
from typing import Any

import pytest

from protocol.errors import ErrorCode, IllegalTransition
from protocol.mla import (
    TRANSITIONS,
    CaseState,
    CaseTracker,
    ItemStatus,
    MessageDocument,
    MessageType,
    Role,
    allowed_message_types,
    replay_case,
    transition_for,
    validate_document,
)
from protocol.mla.lifecycle import ITEM_TRANSITIONS, DeadlineKind, ItemEvent
from tests.protocol.mla.mla_samples import FINAL_STATES, cases, encode, load_sample, read_json, sample_paths

STATES: list[CaseState | None] = [None, *CaseState]


def case_0007() -> list[MessageDocument]:
    return cases()["BD-LY-2025-0007"]


def test_every_illegal_transition_is_refused() -> None:
    """For every state and side, every message type the table does not list raises."""
    listed = {(state, role, row.message_type) for row in TRANSITIONS for state in row.sources for role in row.senders}
    checked = 0
    for state, role, message_type in itertools.product(STATES, Role, MessageType):
        if (state, role, message_type) in listed:
            assert transition_for(state, role, message_type).message_type is message_type
            continue
        with pytest.raises(IllegalTransition) as caught:
            transition_for(state, role, message_type)
        assert caught.value.code is ErrorCode.ILLEGAL_TRANSITION
        assert str(message_type) in caught.value.detail
        assert (str(state) if state is not None else "no case yet") in caught.value.detail
        checked += 1
    assert checked > len(listed)


def test_allowed_message_types_is_the_table() -> None:
    """allowed_message_types(state, role) lists exactly the table's rows for that state and side."""
    for state, role in itertools.product(STATES, Role):
        expected = {row.message_type for row in TRANSITIONS if state in row.sources and role in row.senders}
        assert allowed_message_types(state, role) == expected


def test_only_a_request_opens_a_case_and_closed_cases_stay_closed() -> None:
    """Before a case only MLA_REQUEST may be sent; after closure only post-closure messages."""
    assert allowed_message_types(None, Role.REQUESTING) == {MessageType.MLA_REQUEST}
    assert allowed_message_types(None, Role.REQUESTED) == set()
    after_closure = allowed_message_types(CaseState.CLOSED, Role.REQUESTING)
    assert MessageType.USE_CONSENT_REQUEST in after_closure
    assert MessageType.SUPPLEMENTARY_REQUEST not in after_closure
    assert MessageType.WITHDRAWAL not in after_closure


def test_the_table_follows_the_notes_for_refusal_from_submitted() -> None:
    """A refusal straight from SUBMITTED is illegal: a business acknowledgement comes first."""
    with pytest.raises(IllegalTransition, match="REFUSAL"):
        transition_for(CaseState.SUBMITTED, Role.REQUESTED, MessageType.REFUSAL)


@pytest.mark.parametrize(("case_id", "final"), sorted(FINAL_STATES.items()))
def test_sample_cases_reach_their_final_state(case_id: str, final: str) -> None:
    """Each sample case ends in the state NOTES.md §5 gives it."""
    assert replay_case(cases()[case_id]).state == CaseState(final)


def test_sample_case_0007_follows_the_worked_trace() -> None:
    """Case 0007 steps through the states of NOTES.md §3.5, message by message."""
    tracker = CaseTracker()
    states = [tracker.apply(one) for one in case_0007()]
    assert states == [
        CaseState.SUBMITTED,
        CaseState.ACKNOWLEDGED,
        CaseState.INFO_REQUESTED,
        CaseState.ACKNOWLEDGED,
        CaseState.CONSULTATION,
        CaseState.CONSULTATION,
        CaseState.IN_EXECUTION,
        CaseState.IN_EXECUTION,
        CaseState.IN_EXECUTION,
        CaseState.IN_EXECUTION,
        CaseState.PARTIALLY_EXECUTED,
        CaseState.PARTIALLY_EXECUTED,
        CaseState.EXECUTED,
        CaseState.CLOSED,
        CaseState.CLOSED,
    ]
    view = tracker.view()
    assert dict(view.items) == {
        "A1": ItemStatus.EXECUTED,
        "A2": ItemStatus.PARTIALLY_EXECUTED,
        "A3": ItemStatus.EXECUTED,
        "A4": ItemStatus.EXECUTED,
        "A5": ItemStatus.EXECUTED,
    }
    assert view.accepted_conditions == {"K1", "K2"}


def test_item_statuses_follow_postponement_withdrawal_and_refusal() -> None:
    """Items move one by one: A5 postponed then resumed, C2 withdrawn, D3 refused."""
    tracker = CaseTracker()
    for one in case_0007()[:8]:
        tracker.apply(one)
    assert tracker.view().items["A5"] is ItemStatus.POSTPONED
    assert replay_case(cases()["BD-LY-2025-0011"]).items["C2"] is ItemStatus.WITHDRAWN
    view_0014 = replay_case(cases()["BD-LY-2025-0014"])
    assert dict(view_0014.items) == {
        "D1": ItemStatus.IN_EXECUTION,
        "D2": ItemStatus.IN_EXECUTION,
        "D3": ItemStatus.REFUSED,
    }


def test_final_execution_before_acknowledgement_is_refused(negative_dir: Any) -> None:
    """N5: FINAL_EXECUTION straight after the request is an illegal transition."""
    sequence = read_json(negative_dir / "N5_final_before_ack.json")
    documents = [validate_document(encode(one, reseal=False)) for one in sequence]
    with pytest.raises(IllegalTransition) as caught:
        replay_case(documents)
    assert caught.value.code is ErrorCode.ILLEGAL_TRANSITION
    assert "FINAL_EXECUTION" in caught.value.detail
    assert "SUBMITTED" in caught.value.detail


def test_both_sides_compute_the_same_state() -> None:
    """Each side, parsing its own copy of the bytes, computes the same view of every case."""
    for case_id, documents in cases().items():
        copies = [
            validate_document(json.dumps(one.model_dump(mode="json", exclude_unset=True)).encode()) for one in documents
        ]
        mine, theirs = replay_case(documents), replay_case(copies)
        assert (mine.state, dict(mine.items), mine.deadlines) == (theirs.state, dict(theirs.items), theirs.deadlines)
        assert mine.requesting != mine.requested, case_id


def test_roles_come_from_the_request() -> None:
    """The sender of the request is the requesting side, whichever State it is."""
    view = replay_case(cases()["LY-BD-2025-0003"])
    assert (view.requesting, view.requested) == ("LY-MLA-CA", "BD-MOHA-PSD")
    tracker = CaseTracker()
    tracker.apply(cases()["LY-BD-2025-0003"][0])
    acknowledgement = cases()["LY-BD-2025-0003"][1]
    assert tracker.role_of(acknowledgement.sender) is Role.REQUESTED


def test_message_from_the_wrong_side_is_refused() -> None:
    """An acknowledgement sent by the requesting side is illegal in SUBMITTED."""
    request = cases()["BD-LY-2025-0014"][0]
    ack = cases()["BD-LY-2025-0014"][1]
    swapped = ack.model_copy(update={"sender": ack.recipient, "recipient": ack.sender})
    tracker = CaseTracker()
    tracker.apply(request)
    with pytest.raises(IllegalTransition, match="ACKNOWLEDGEMENT from the requesting side"):
        tracker.apply(swapped)


def test_message_of_another_case_is_refused() -> None:
    """A message carrying another case id cannot move this case."""
    tracker = CaseTracker()
    tracker.apply(cases()["BD-LY-2025-0014"][0])
    with pytest.raises(IllegalTransition, match="case"):
        tracker.apply(cases()["BD-LY-2025-0011"][1])


def test_refusal_must_reference_a_consultation_of_the_case() -> None:
    """A refusal citing a consultation that the case never had is refused (UNTOC 18(26))."""
    documents = cases()["BD-LY-2025-0014"]
    refusal = load_sample("BD-LY-2025-0014_05_REFUSAL.json")
    refusal["payload"]["consultation_ref"] = str(uuid.UUID(int=7))
    tracker = CaseTracker()
    for one in documents[:4]:
        tracker.apply(one)
    with pytest.raises(IllegalTransition, match="consultation_ref"):
        tracker.apply(validate_document(encode(refusal)))


def test_conditions_accepted_must_have_been_proposed() -> None:
    """Accepting a condition the consultation did not propose is refused."""
    response = load_sample("BD-LY-2025-0014_04_CONDITIONS_RESPONSE.json")
    response["payload"]["accepted_condition_ids"] = ["K3", "K9"]
    tracker = CaseTracker()
    for one in cases()["BD-LY-2025-0014"][:3]:
        tracker.apply(one)
    with pytest.raises(IllegalTransition, match="K9"):
        tracker.apply(validate_document(encode(response)))


def test_final_execution_with_open_items_is_refused() -> None:
    """FINAL_EXECUTION leaving an item open is refused, and the tracker is left unchanged."""
    documents = cases()["BD-LY-2025-0011"]
    tracker = CaseTracker()
    for one in documents[:3]:  # request, acknowledgement, decision: C2 is still in execution
        tracker.apply(one)
    before = tracker.view()
    with pytest.raises(IllegalTransition, match="C2"):
        tracker.apply(documents[4])
    after = tracker.view()
    assert (after.state, dict(after.items), after.messages) == (before.state, dict(before.items), before.messages)


def test_executing_a_postponed_item_needs_a_resumption() -> None:
    """Reporting a result on a postponed item without resuming it first is refused."""
    documents = case_0007()
    tracker = CaseTracker()
    for one in documents[:11]:
        tracker.apply(one)
    with pytest.raises(IllegalTransition, match="A5 is postponed"):
        tracker.apply(documents[12])  # the final execution, skipping the resumption


def test_unknown_item_is_refused() -> None:
    """A message naming an item the case does not have is refused."""
    withdrawal = load_sample("BD-LY-2025-0011_04_WITHDRAWAL.json")
    withdrawal["payload"]["item_refs"] = ["C9"]
    tracker = CaseTracker()
    for one in cases()["BD-LY-2025-0011"][:3]:
        tracker.apply(one)
    with pytest.raises(IllegalTransition, match="C9"):
        tracker.apply(validate_document(encode(withdrawal)))


def test_closure_must_match_how_the_case_ended() -> None:
    """A closure saying "refused" for an executed case is refused."""
    closure = load_sample("BD-LY-2025-0011_06_CLOSURE.json")
    closure["payload"]["final_status"] = "refused"
    tracker = CaseTracker()
    for one in cases()["BD-LY-2025-0011"][:5]:
        tracker.apply(one)
    with pytest.raises(IllegalTransition, match="final_status"):
        tracker.apply(validate_document(encode(closure)))


def test_whole_request_withdrawal_ends_the_case() -> None:
    """A whole-request withdrawal moves the case to WITHDRAWN and every open item with it."""
    withdrawal = load_sample("BD-LY-2025-0011_04_WITHDRAWAL.json")
    withdrawal["payload"]["scope"] = "whole_request"
    del withdrawal["payload"]["item_refs"]
    documents = [*cases()["BD-LY-2025-0011"][:3], validate_document(encode(withdrawal))]
    view = replay_case(documents)
    assert view.state is CaseState.WITHDRAWN
    assert set(view.items.values()) == {ItemStatus.WITHDRAWN}


def test_duplicate_message_is_ignored_and_conflicting_one_refused() -> None:
    """The same message twice changes nothing; another message under a used id is refused."""
    documents = cases()["BD-LY-2025-0014"]
    tracker = CaseTracker()
    tracker.apply(documents[0])
    tracker.apply(documents[1])
    assert tracker.apply(documents[1]) is CaseState.ACKNOWLEDGED
    assert len(tracker.view().messages) == 2
    impostor = documents[2].model_copy(update={"message_id": documents[1].message_id})
    with pytest.raises(IllegalTransition) as caught:
        tracker.apply(impostor)
    assert caught.value.code is ErrorCode.MESSAGE_ID_CONFLICT


def test_deadlines_come_from_the_documents_and_now_is_a_parameter() -> None:
    """Open deadlines are computed from the documents' dates; overdue depends only on `now`."""
    view = replay_case(cases()["LY-BD-2025-0009"])
    kinds = {deadline.kind: deadline for deadline in view.deadlines}
    assert kinds[DeadlineKind.ACKNOWLEDGEMENT].due == dt.date(2025, 9, 8)
    assert kinds[DeadlineKind.REQUESTED_DEADLINE].due == dt.date(2025, 10, 16)
    assert view.overdue(dt.datetime(2025, 9, 2, tzinfo=dt.UTC)) == ()
    assert {d.kind for d in view.overdue(dt.datetime(2025, 9, 9, tzinfo=dt.UTC))} == {DeadlineKind.ACKNOWLEDGEMENT}
    assert len(view.overdue(dt.datetime(2025, 12, 1, tzinfo=dt.UTC))) == 2
    with pytest.raises(ValueError, match="timezone"):
        view.overdue(dt.datetime(2025, 12, 1))  # noqa: DTZ001 - a naive instant is what is refused


def test_deadlines_close_when_they_are_met() -> None:
    """The acknowledgement and reply deadlines close with their answers; ended cases owe nothing."""
    documents = case_0007()
    tracker = CaseTracker()
    tracker.apply(documents[0])
    assert DeadlineKind.ACKNOWLEDGEMENT in {d.kind for d in tracker.view().deadlines}
    tracker.apply(documents[1])
    tracker.apply(documents[2])
    open_kinds = {d.kind for d in tracker.view().deadlines}
    assert DeadlineKind.ACKNOWLEDGEMENT not in open_kinds
    assert DeadlineKind.REPLY_TO_QUESTIONS in open_kinds
    tracker.apply(documents[3])
    assert DeadlineKind.REPLY_TO_QUESTIONS not in {d.kind for d in tracker.view().deadlines}
    assert replay_case(documents).deadlines == ()


def test_empty_sequence_is_no_case() -> None:
    """Replaying nothing is refused: a case starts with its request."""
    with pytest.raises(IllegalTransition, match="MLA_REQUEST"):
        replay_case([])


def test_item_table_has_no_way_out_of_settled_items_but_completion() -> None:
    """Executed, refused, impossible and withdrawn items never move; a partial one may complete."""
    for status, event in ITEM_TRANSITIONS:
        assert status not in {ItemStatus.EXECUTED, ItemStatus.REFUSED, ItemStatus.IMPOSSIBLE, ItemStatus.WITHDRAWN}
        if status is ItemStatus.PARTIALLY_EXECUTED:
            assert event in {ItemEvent.REPORT_EXECUTED, ItemEvent.REPORT_PARTIALLY_EXECUTED}


def test_every_sample_document_is_part_of_a_replayed_case() -> None:
    """Replaying all cases uses all 30 sample documents."""
    assert sum(len(replay_case(documents).messages) for documents in cases().values()) == len(sample_paths())


def test_marked_role_must_match_the_side() -> None:
    """A message whose sender claims the other side's role is refused."""
    ack = load_sample("BD-LY-2025-0014_02_ACKNOWLEDGEMENT.json")
    ack["sender"]["role"] = "requesting"
    ack["recipient"]["role"] = "requested"
    tracker = CaseTracker()
    tracker.apply(cases()["BD-LY-2025-0014"][0])
    with pytest.raises(IllegalTransition, match="marked requesting"):
        tracker.apply(validate_document(encode(ack)))


def test_supplementary_items_join_the_case_and_can_be_decided() -> None:
    """A supplementary request adds pending items that a later execution decision starts."""
    supplementary = {
        **load_sample("BD-LY-2025-0011_04_WITHDRAWAL.json"),
        "message_type": "SUPPLEMENTARY_REQUEST",
        "message_id": str(uuid.UUID(int=11)),
        "payload": {
            "supplements": "PSD/MLA/OUT/2025/0011",
            "assistance_requested": [
                {
                    "item_id": "C4",
                    "type": "criminal_record_extract",
                    "description": {"lang": "en", "value": "Criminal record of the captors, once identified"},
                }
            ],
        },
    }
    decision = load_sample("BD-LY-2025-0011_03_EXECUTION_DECISION.json")
    decision["message_id"] = str(uuid.UUID(int=12))
    decision["payload"]["executing_authorities"][0]["item_refs"] = ["C4"]
    documents = [
        *cases()["BD-LY-2025-0011"][:3],
        validate_document(encode(supplementary)),
        validate_document(encode(decision)),
    ]
    view = replay_case(documents)
    assert view.state is CaseState.IN_EXECUTION
    assert view.items["C4"] is ItemStatus.IN_EXECUTION
