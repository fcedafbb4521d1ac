"""The message types of an MLA case, and the content model of each.

The type names are stable: they travel in every document's `message_type`,
in the JSON Schema file names (`docs/schemas/<TYPE>.schema.json`) and in
the case lifecycle table. The list is the draft schema's `MessageType`
enumeration (NOTES.md §3.1) plus `NOTE`, which the project asked for: a
free-text note threaded to a case, the same role as `CORRESPONDENCE`.
"""

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from protocol.mla.common import MessageContent
from protocol.mla.messages import (
    Acknowledgement,
    AdditionalInformation,
    Closure,
    ConditionsResponse,
    ConfidentialityNotice,
    Consultation,
    Correspondence,
    DelayNotice,
    ExculpatoryDisclosureNotice,
    ExecutionDecision,
    FinalExecution,
    Note,
    PartialExecution,
    Postponement,
    Refusal,
    RequestForAdditionalInformation,
    Resumption,
    ReturnOfMaterial,
    StatusInquiry,
    StatusReport,
    UseConsentDecision,
    UseConsentRequest,
    Withdrawal,
)
from protocol.mla.request import MlaRequest, SupplementaryRequest


class MessageType(StrEnum):
    """Every message type of an MLA case. The value is what travels."""

    MLA_REQUEST = "MLA_REQUEST"
    SUPPLEMENTARY_REQUEST = "SUPPLEMENTARY_REQUEST"
    ACKNOWLEDGEMENT = "ACKNOWLEDGEMENT"
    REQUEST_FOR_ADDITIONAL_INFORMATION = "REQUEST_FOR_ADDITIONAL_INFORMATION"
    ADDITIONAL_INFORMATION = "ADDITIONAL_INFORMATION"
    CONSULTATION = "CONSULTATION"
    CONDITIONS_RESPONSE = "CONDITIONS_RESPONSE"
    EXECUTION_DECISION = "EXECUTION_DECISION"
    POSTPONEMENT = "POSTPONEMENT"
    RESUMPTION = "RESUMPTION"
    DELAY_NOTICE = "DELAY_NOTICE"
    STATUS_INQUIRY = "STATUS_INQUIRY"
    STATUS_REPORT = "STATUS_REPORT"
    PARTIAL_EXECUTION = "PARTIAL_EXECUTION"
    FINAL_EXECUTION = "FINAL_EXECUTION"
    REFUSAL = "REFUSAL"
    WITHDRAWAL = "WITHDRAWAL"
    CONFIDENTIALITY_NOTICE = "CONFIDENTIALITY_NOTICE"
    CLOSURE = "CLOSURE"
    USE_CONSENT_REQUEST = "USE_CONSENT_REQUEST"
    USE_CONSENT_DECISION = "USE_CONSENT_DECISION"
    EXCULPATORY_DISCLOSURE_NOTICE = "EXCULPATORY_DISCLOSURE_NOTICE"
    RETURN_OF_MATERIAL = "RETURN_OF_MATERIAL"
    CORRESPONDENCE = "CORRESPONDENCE"
    NOTE = "NOTE"


CONTENT_MODELS: Final[Mapping[MessageType, type[MessageContent]]] = MappingProxyType(
    {
        MessageType.MLA_REQUEST: MlaRequest,
        MessageType.SUPPLEMENTARY_REQUEST: SupplementaryRequest,
        MessageType.ACKNOWLEDGEMENT: Acknowledgement,
        MessageType.REQUEST_FOR_ADDITIONAL_INFORMATION: RequestForAdditionalInformation,
        MessageType.ADDITIONAL_INFORMATION: AdditionalInformation,
        MessageType.CONSULTATION: Consultation,
        MessageType.CONDITIONS_RESPONSE: ConditionsResponse,
        MessageType.EXECUTION_DECISION: ExecutionDecision,
        MessageType.POSTPONEMENT: Postponement,
        MessageType.RESUMPTION: Resumption,
        MessageType.DELAY_NOTICE: DelayNotice,
        MessageType.STATUS_INQUIRY: StatusInquiry,
        MessageType.STATUS_REPORT: StatusReport,
        MessageType.PARTIAL_EXECUTION: PartialExecution,
        MessageType.FINAL_EXECUTION: FinalExecution,
        MessageType.REFUSAL: Refusal,
        MessageType.WITHDRAWAL: Withdrawal,
        MessageType.CONFIDENTIALITY_NOTICE: ConfidentialityNotice,
        MessageType.CLOSURE: Closure,
        MessageType.USE_CONSENT_REQUEST: UseConsentRequest,
        MessageType.USE_CONSENT_DECISION: UseConsentDecision,
        MessageType.EXCULPATORY_DISCLOSURE_NOTICE: ExculpatoryDisclosureNotice,
        MessageType.RETURN_OF_MATERIAL: ReturnOfMaterial,
        MessageType.CORRESPONDENCE: Correspondence,
        MessageType.NOTE: Note,
    }
)
"""The content model of each message type; each model serves exactly one type."""


__all__ = ["CONTENT_MODELS", "MessageType"]
