"""The payloads of every message of a case other than the request itself.

Each message type has its own model (NOTES.md §3.1), even where the draft
reused one generic `Note`, so that each can grow on its own and the JSON
Schema of each type names what it is. The legal "shall" rules live here:

* reasons for any refusal: every `Ground` has `reasons` (UNTOC 18(23));
* consult before refusing or postponing: a `Refusal` or `Postponement`
  gives `consultation_ref` (the CONSULTATION message) or a recorded
  `consultation_waived_reason` (UNTOC 18(26)). NOTES.md rule R4 only warned
  for postponements; the Convention's "shall consult" covers both, so both
  are errors here. The case tracker checks that the reference names a
  consultation of the same case;
* a scope of `items` names its items, and a whole-request scope names none;
* an execution response reports only results (executed, partially executed,
  impossible) and an impossible item says why (CETS 182 art. 7(3)): a
  refusal or postponement must travel as its own message, with its reasons
  and consultation, not as a status inside a result;
* accepting "with conditions" states the conditions.

Departures from the draft: `Resumption`, `ConfidentialityNotice`,
`UseConsentRequest`, `ExculpatoryDisclosureNotice`, `ReturnOfMaterial`,
`Correspondence` and `Note` share the draft's `Note` fields but are distinct
models; `UseConsentDecision` states its decision (granted, with conditions,
refused) instead of free text only; `Postponement` accepts a recorded
waiver of consultation like `Refusal`; `ProcedureNotPossible` requires its
procedure and reason.
"""

import datetime as dt
from enum import StrEnum

from pydantic import AwareDatetime, Field, ValidationInfo, field_validator, model_validator

from protocol.ids import MessageId, MessageIdField
from protocol.mla._validation import rule_error, rule_violations
from protocol.mla.common import (
    Authority,
    Condition,
    Ground,
    ItemStatus,
    MessageContent,
    Scope,
)
from protocol.mla.values import LocalId, LocalizedText, NonEmpty, Text
from protocol.model import FrozenModel


def _scope_names_items(refs: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
    scope = info.data.get("scope")
    if scope is Scope.ITEMS and not refs:
        raise ValueError("a scope of items needs item_refs")
    if scope is Scope.WHOLE_REQUEST and refs:
        raise ValueError("a whole-request scope takes no item_refs; use scope items")
    return refs


def _consulted_or_waived(ref: MessageId | None, info: ValidationInfo, what: str) -> None:
    if ref is None and info.data.get("consultation_waived_reason") is None:
        raise ValueError(
            f"a {what} must follow a consultation: give consultation_ref, or "
            "consultation_waived_reason to record why there was none (UNTOC art. 18(26))"
        )


def _unique(model: str, field: str, key: str, ids: list[str]) -> None:
    seen: set[str] = set()
    found = []
    for index, one in enumerate(ids):
        if one in seen:
            found.append(rule_error((field, index, key), f"{key} {one!r} is used more than once"))
        seen.add(one)
    if found:
        raise rule_violations(model, found)


class FormalCheck(StrEnum):
    """The outcome of the requested State's first look at the request."""

    COMPLETE = "complete"
    INCOMPLETE_RFI_FOLLOWS = "incomplete_rfi_follows"
    NOT_YET_ASSESSED = "not_yet_assessed"


class Acknowledgement(MessageContent):
    """Business acknowledgement of a request (EIO art. 16(1), Annex B; ETS 30 art. 18).

    Not a transport receipt: only this message moves the case to ACKNOWLEDGED.
    `received_at` keeps the offset the author wrote (a business time, not an
    envelope time).
    """

    received_at: AwareDatetime
    requested_ref: Text
    received_by: Authority
    transmitted_to: Authority | None = None
    transmitted_at: AwareDatetime | None = None
    formal_check: FormalCheck | None = None
    note: LocalizedText | None = None


class NeededBecause(StrEnum):
    """Why additional information is needed (UNTOC 18(16); EIO 16(2))."""

    REQUIRED_BY_DOMESTIC_LAW = "required_by_domestic_law"
    FACILITATES_EXECUTION = "facilitates_execution"
    FORM_INCOMPLETE_OR_INCORRECT = "form_incomplete_or_incorrect"
    ADDITIONAL_MEASURE_SUGGESTED = "additional_measure_suggested"


class Question(FrozenModel):
    """One question of the requested State, about some items."""

    question_id: LocalId
    text: LocalizedText
    item_refs: tuple[LocalId, ...] = ()
    needed_because: NeededBecause | None = None


class RequestForAdditionalInformation(MessageContent):
    """Questions the requested State needs answered (UNTOC 18(16))."""

    questions: NonEmpty[Question]
    reply_requested_by: dt.date | None = None
    execution_suspended_pending_reply: bool | None = None

    @model_validator(mode="after")
    def _unique_questions(self) -> "RequestForAdditionalInformation":
        _unique(
            "RequestForAdditionalInformation",
            "questions",
            "question_id",
            [q.question_id for q in self.questions],
        )
        return self


class Answer(FrozenModel):
    """The answer to one question."""

    question_id: LocalId
    text: LocalizedText
    attachment_refs: tuple[LocalId, ...] = ()


class AdditionalInformation(MessageContent):
    """Answers of the requesting State (UNTOC 18(16))."""

    answers: NonEmpty[Answer]

    @model_validator(mode="after")
    def _unique_answers(self) -> "AdditionalInformation":
        _unique(
            "AdditionalInformation",
            "answers",
            "question_id",
            [a.question_id for a in self.answers],
        )
        return self


class IntendedAction(StrEnum):
    """What the requested State intends, on which it consults."""

    REFUSE = "refuse"
    POSTPONE = "postpone"
    EXECUTE_PARTIALLY = "execute_partially"


class Consultation(MessageContent):
    """Consultation before refusing or postponing (UNTOC 18(26); BD MACMA s. 10(2))."""

    intended_action: IntendedAction
    item_refs: tuple[LocalId, ...] = ()
    grounds: NonEmpty[Ground]
    proposed_conditions: tuple[Condition, ...]
    reply_requested_by: dt.date | None = None

    @model_validator(mode="after")
    def _unique_conditions(self) -> "Consultation":
        _unique(
            "Consultation",
            "proposed_conditions",
            "condition_id",
            [c.condition_id for c in self.proposed_conditions],
        )
        return self


class ConditionsResponse(MessageContent):
    """The requesting State's answer to proposed conditions; binding if accepted (18(26))."""

    consultation_ref: MessageIdField
    accepted: bool
    accepted_condition_ids: tuple[LocalId, ...] = ()
    comment: LocalizedText | None = None


class DecisionOutcome(StrEnum):
    """The requested State's decision to execute."""

    ACCEPTED = "accepted"
    ACCEPTED_WITH_CONDITIONS = "accepted_with_conditions"
    ACCEPTED_PARTIALLY = "accepted_partially"


class ExecutingAuthority(FrozenModel):
    """The authority that executes some items (BD MACMA s. 11)."""

    authority: Authority
    item_refs: tuple[LocalId, ...] = ()


class ProcedureNotPossible(FrozenModel):
    """A requested procedure that cannot be followed, and why (UNTOC 18(17))."""

    procedure_id: LocalId
    reason: LocalizedText


class ExecutionDecision(MessageContent):
    """The decision to execute, by whom and on what conditions (UNTOC 18(13), 18(17)).

    Items named in `executing_authorities` go into execution; when none are
    named, every pending item does.
    """

    decision: DecisionOutcome
    executing_authorities: tuple[ExecutingAuthority, ...] = ()
    conditions: tuple[Condition, ...] = Field(default=(), validate_default=True)
    procedures_not_possible: tuple[ProcedureNotPossible, ...] = ()
    confidentiality_can_be_met: bool | None = None
    expected_completion: dt.date | None = None

    @field_validator("conditions", mode="after")
    @classmethod
    def _conditions_stated(cls, conditions: tuple[Condition, ...], info: ValidationInfo) -> tuple[Condition, ...]:
        if not conditions and info.data.get("decision") is DecisionOutcome.ACCEPTED_WITH_CONDITIONS:
            raise ValueError("accepting with conditions needs the conditions")
        return conditions


class Postponement(MessageContent):
    """Postponement of the whole request or of items (UNTOC 18(25)-(26))."""

    scope: Scope
    item_refs: tuple[LocalId, ...] = Field(default=(), validate_default=True)
    grounds: NonEmpty[Ground]
    expected_duration_days: int | None = Field(default=None, ge=1)
    consultation_waived_reason: LocalizedText | None = None
    consultation_ref: MessageIdField | None = Field(default=None, validate_default=True)
    interim_measures_taken: LocalizedText | None = None

    @field_validator("item_refs", mode="after")
    @classmethod
    def _scope(cls, refs: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        return _scope_names_items(refs, info)

    @field_validator("consultation_ref", mode="after")
    @classmethod
    def _consulted(cls, ref: MessageId | None, info: ValidationInfo) -> MessageId | None:
        _consulted_or_waived(ref, info, "postponement")
        return ref


class DelayNotice(MessageContent):
    """Notice of a significant delay, with reasons (CETS 182 art. 7(3); EIO 12(5)-(6))."""

    reasons: LocalizedText
    item_refs: tuple[LocalId, ...] = ()
    new_expected_date: dt.date | None = None


class StatusInquiry(MessageContent):
    """A request for information on progress (UNTOC 18(24); UNCAC 46(24))."""

    text: LocalizedText
    item_refs: tuple[LocalId, ...] = ()
    reason: LocalizedText | None = None


class ItemStatusEntry(FrozenModel):
    """The status of one item as the requested State reports it."""

    item_id: LocalId
    status: ItemStatus
    note: LocalizedText | None = None
    expected_date: dt.date | None = None


class StatusReport(MessageContent):
    """Per-item progress (UNTOC 18(24)); informative, it moves no item."""

    items: tuple[ItemStatusEntry, ...] = ()
    summary: LocalizedText | None = None


class ResultStatus(StrEnum):
    """What an execution response may report for an item."""

    EXECUTED = "executed"
    PARTIALLY_EXECUTED = "partially_executed"
    IMPOSSIBLE = "impossible"


class ProcedureNotFollowed(FrozenModel):
    """A requested procedure that was not followed, and why."""

    procedure_id: LocalId
    reason: LocalizedText


class ItemResult(FrozenModel):
    """The result of executing one item; an impossible item says why."""

    item_id: LocalId
    status: ResultStatus
    result: LocalizedText | None = None
    evidence_refs: tuple[LocalId, ...] = ()
    impossibility_reason: LocalizedText | None = Field(default=None, validate_default=True)
    procedures_followed: tuple[LocalId, ...] = ()
    procedures_not_followed: tuple[ProcedureNotFollowed, ...] = ()

    @field_validator("impossibility_reason", mode="after")
    @classmethod
    def _impossible_says_why(cls, reason: LocalizedText | None, info: ValidationInfo) -> LocalizedText | None:
        if reason is None and info.data.get("status") is ResultStatus.IMPOSSIBLE:
            raise ValueError("an impossible item needs its impossibility_reason")
        return reason


class ExecutionResponse(MessageContent):
    """Results of execution, evidence and use conditions (Budapest 27(7); ETS 30 art. 6)."""

    items: NonEmpty[ItemResult]
    use_conditions: tuple[Condition, ...] = ()
    return_of_originals_required: bool | None = None
    physical_transfer: LocalizedText | None = None

    @model_validator(mode="after")
    def _one_result_per_item(self) -> "ExecutionResponse":
        _unique(type(self).__name__, "items", "item_id", [i.item_id for i in self.items])
        return self


class PartialExecution(ExecutionResponse):
    """Results for some items; more are to come."""


class FinalExecution(ExecutionResponse):
    """The last results: afterwards no item of the case may remain open."""


class Refusal(MessageContent):
    """Refusal of the whole request or of items, with reasons (UNTOC 18(21), 18(23), 18(26))."""

    scope: Scope
    item_refs: tuple[LocalId, ...] = Field(default=(), validate_default=True)
    grounds: NonEmpty[Ground]
    consultation_waived_reason: LocalizedText | None = None
    consultation_ref: MessageIdField | None = Field(default=None, validate_default=True)

    @field_validator("item_refs", mode="after")
    @classmethod
    def _scope(cls, refs: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        return _scope_names_items(refs, info)

    @field_validator("consultation_ref", mode="after")
    @classmethod
    def _consulted(cls, ref: MessageId | None, info: ValidationInfo) -> MessageId | None:
        _consulted_or_waived(ref, info, "refusal")
        return ref


class Withdrawal(MessageContent):
    """Withdrawal of the request or of items, e.g. no longer required (UNTOC 18(24))."""

    scope: Scope
    item_refs: tuple[LocalId, ...] = Field(default=(), validate_default=True)
    reason: LocalizedText
    no_longer_required: bool | None = None

    @field_validator("item_refs", mode="after")
    @classmethod
    def _scope(cls, refs: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        return _scope_names_items(refs, info)


class ClosureStatus(StrEnum):
    """How a case ended."""

    EXECUTED = "executed"
    PARTIALLY_EXECUTED = "partially_executed"
    REFUSED = "refused"
    WITHDRAWN = "withdrawn"
    LAPSED = "lapsed"


class SurvivingObligation(StrEnum):
    """Obligations that still bind after closure (UNTOC 18(19)-(20); NOTES.md §4.2)."""

    USE_LIMITATION = "use_limitation"
    CONFIDENTIALITY = "confidentiality"
    RETURN_OF_ORIGINALS = "return_of_originals"
    DATA_PROTECTION = "data_protection"
    REPORT_ON_USE = "report_on_use"


class Closure(MessageContent):
    """Closure of the case, with what still binds both sides."""

    final_status: ClosureStatus
    note: LocalizedText | None = None
    surviving_obligations: tuple[SurvivingObligation, ...] = ()


class NoteContent(MessageContent):
    """Free text threaded to a case, about some items and attachments (the draft's `Note`)."""

    text: LocalizedText
    item_refs: tuple[LocalId, ...] = ()
    attachment_refs: tuple[LocalId, ...] = ()


class Resumption(NoteContent):
    """The grounds for a postponement have ceased (EIO 15(2)); no items named: all resume."""


class ConfidentialityNotice(NoteContent):
    """The requested State cannot keep the request confidential (UNTOC 18(20))."""


class UseConsentRequest(NoteContent):
    """A request for consent to use evidence in other proceedings (UNTOC 18(19))."""


class DisclosureTiming(StrEnum):
    """Whether exculpatory disclosure is notified before or, exceptionally, after."""

    PRIOR = "prior"
    SUBSEQUENT = "subsequent"


class ExculpatoryDisclosureNotice(NoteContent):
    """Notice of disclosure of exculpatory material (UNTOC 18(19))."""

    timing: DisclosureTiming | None = None


class ReturnOfMaterial(NoteContent):
    """Return of originals or property, or a waiver of return (ETS 30 art. 6(2))."""


class Correspondence(NoteContent):
    """Free correspondence about the case (ETSI TS 104 144 "correspondence")."""


class Note(NoteContent):
    """A note threaded to the case; the same role as `Correspondence`."""


class ConsentOutcome(StrEnum):
    """The requested State's answer to a use-consent request."""

    GRANTED = "granted"
    GRANTED_WITH_CONDITIONS = "granted_with_conditions"
    REFUSED = "refused"


class UseConsentDecision(MessageContent):
    """Consent, or not, to use evidence in other proceedings (UNTOC 18(19); BD MACMA s. 34)."""

    decision: ConsentOutcome
    text: LocalizedText
    request_ref: MessageIdField | None = None
    conditions: tuple[Condition, ...] = Field(default=(), validate_default=True)
    attachment_refs: tuple[LocalId, ...] = ()

    @field_validator("conditions", mode="after")
    @classmethod
    def _conditions_stated(cls, conditions: tuple[Condition, ...], info: ValidationInfo) -> tuple[Condition, ...]:
        if not conditions and info.data.get("decision") is ConsentOutcome.GRANTED_WITH_CONDITIONS:
            raise ValueError("consent with conditions needs the conditions")
        return conditions


__all__ = [
    "Acknowledgement",
    "AdditionalInformation",
    "Answer",
    "Closure",
    "ClosureStatus",
    "ConditionsResponse",
    "ConfidentialityNotice",
    "ConsentOutcome",
    "Consultation",
    "Correspondence",
    "DecisionOutcome",
    "DelayNotice",
    "DisclosureTiming",
    "ExculpatoryDisclosureNotice",
    "ExecutingAuthority",
    "ExecutionDecision",
    "ExecutionResponse",
    "FinalExecution",
    "FormalCheck",
    "IntendedAction",
    "ItemResult",
    "ItemStatusEntry",
    "NeededBecause",
    "Note",
    "NoteContent",
    "PartialExecution",
    "Postponement",
    "ProcedureNotFollowed",
    "ProcedureNotPossible",
    "Question",
    "Refusal",
    "RequestForAdditionalInformation",
    "ResultStatus",
    "Resumption",
    "ReturnOfMaterial",
    "StatusInquiry",
    "StatusReport",
    "SurvivingObligation",
    "UseConsentDecision",
    "UseConsentRequest",
    "Withdrawal",
]
