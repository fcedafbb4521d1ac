"""The content layer of Mutual Legal Assistance messages: what a message says, and when.

Pure pydantic, no I/O, no clock. Modules, from the bottom up:

* `values` — scalar types (language tags, country codes, local ids, dates)
  and `LocalizedText`;
* `common` — parties, offences, persons, procedures, attachments, grounds;
* `assistance` — the typed assistance items of a request;
* `request` — `MlaRequest` (UNTOC art. 18(15)) and `SupplementaryRequest`;
* `messages` — the payload of every other message type;
* `catalogue` — `MessageType` and `CONTENT_MODELS`;
* `document` — `MessageDocument`, `validate_document`, `document_json_schema`;
* `rules` — the legal rules, and `document_warnings` for those that only warn;
* `lifecycle` — the case state machine as a table, `CaseTracker`, `replay_case`;
* `schemas` — the JSON Schema files kept in `docs/schemas/`.

Unicode policy
--------------

* **Encoding.** Documents are UTF-8 JSON. Invalid UTF-8, lone surrogates, NUL
  and a byte order mark are refused by `protocol.encoding.parse_json_strict`
  before a document reaches this package.
* **Text is stored as sent.** Free text (`LocalizedText.value`, its
  translations, names, addresses, statutory excerpts) is never stripped,
  case-folded, re-encoded or Unicode-normalised. Arabic and Bengali, with
  their combining marks, ZWJ/ZWNJ, tatweel, bidi isolates (U+2066-U+2069)
  and native digits, pass byte for byte: the signed bytes, the payload
  digest and what each party reads must be the same, and a statute's text
  is evidence. NFC is recommended to senders and not enforced; search and
  display may normalise a *copy* (alef/hamza, ta marbuta, harakat...), never
  the record.
* **Every text names its language.** `LocalizedText` carries the BCP 47 tag
  of the original, and translations keyed by tag; names carry their script
  (ISO 15924) so native script and transliterations sit side by side.
* **Machine values are ASCII.** Ids, codes, language and country tags,
  dates (ISO 8601), amounts (decimal strings) and digests are checked by
  ASCII patterns, so a look-alike letter from another script is refused,
  not folded. Numbers are never parsed out of text.
* **Empty text is refused**; text made only of spaces is not (it is taken as
  sent; whether it says anything is for a person to judge).
"""

from protocol.mla.assistance import (
    ITEM_MODELS,
    AnyAssistanceItem,
    AssistanceItem,
    AssistanceItemBase,
    AssistanceType,
)
from protocol.mla.catalogue import CONTENT_MODELS, MessageType
from protocol.mla.common import (
    Address,
    Attachment,
    Authority,
    Channel,
    Classification,
    Condition,
    ConductingAuthority,
    Contact,
    Ground,
    GroundCode,
    ItemStatus,
    LegalBasis,
    MessageContent,
    Offence,
    Penalty,
    Person,
    Procedure,
    Role,
    Scope,
)
from protocol.mla.document import (
    SCHEMA_VERSION,
    Integrity,
    Languages,
    MessageDocument,
    Party,
    document_json_schema,
    validate_document,
)
from protocol.mla.lifecycle import (
    ITEM_TRANSITIONS,
    TRANSITIONS,
    CaseClocks,
    CaseState,
    CaseTracker,
    CaseView,
    Deadline,
    DeadlineKind,
    Transition,
    allowed_message_types,
    replay_case,
    transition_for,
)
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
    ExecutionResponse,
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
from protocol.mla.rules import Rule, RuleWarning, document_warnings
from protocol.mla.schemas import render_schemas, schema_file_name
from protocol.mla.values import LocalizedText, Money, Period

__all__ = [
    "CONTENT_MODELS",
    "ITEM_MODELS",
    "ITEM_TRANSITIONS",
    "SCHEMA_VERSION",
    "TRANSITIONS",
    "Acknowledgement",
    "AdditionalInformation",
    "Address",
    "AnyAssistanceItem",
    "AssistanceItem",
    "AssistanceItemBase",
    "AssistanceType",
    "Attachment",
    "Authority",
    "CaseClocks",
    "CaseState",
    "CaseTracker",
    "CaseView",
    "Channel",
    "Classification",
    "Closure",
    "Condition",
    "ConditionsResponse",
    "ConductingAuthority",
    "ConfidentialityNotice",
    "Consultation",
    "Contact",
    "Correspondence",
    "Deadline",
    "DeadlineKind",
    "DelayNotice",
    "ExculpatoryDisclosureNotice",
    "ExecutionDecision",
    "ExecutionResponse",
    "FinalExecution",
    "Ground",
    "GroundCode",
    "Integrity",
    "ItemStatus",
    "Languages",
    "LegalBasis",
    "LocalizedText",
    "MessageContent",
    "MessageDocument",
    "MessageType",
    "MlaRequest",
    "Money",
    "Note",
    "Offence",
    "PartialExecution",
    "Party",
    "Penalty",
    "Period",
    "Person",
    "Postponement",
    "Procedure",
    "Refusal",
    "RequestForAdditionalInformation",
    "Resumption",
    "ReturnOfMaterial",
    "Role",
    "Rule",
    "RuleWarning",
    "Scope",
    "StatusInquiry",
    "StatusReport",
    "SupplementaryRequest",
    "Transition",
    "UseConsentDecision",
    "UseConsentRequest",
    "Withdrawal",
    "allowed_message_types",
    "document_json_schema",
    "document_warnings",
    "render_schemas",
    "replay_case",
    "schema_file_name",
    "transition_for",
    "validate_document",
]
