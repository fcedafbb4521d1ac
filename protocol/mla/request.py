"""The request for mutual legal assistance, and the supplementary request.

`MlaRequest` carries the six elements UNTOC art. 18(15) makes mandatory
(UNCAC art. 46(15) is word for word the same), each a required field, so a
request missing several is refused with every one of them named at once:

* (a) identity of the requesting authority: `requesting_authority`;
* (b) subject matter and nature of the proceeding, and the name and
  functions of the authority conducting it: `proceeding`,
  `conducting_authority` (its `functions` required);
* (c) a summary of the relevant facts, except for service of documents:
  `facts_summary`, unless every item is `service_of_documents`;
* (d) the assistance sought and any particular procedure:
  `assistance_requested` (at least one item), `procedures`;
* (e) where possible, identity, location and nationality of the persons
  concerned: `persons` (may be empty: "where possible");
* (f) the purpose: `purpose`.

Other rules checked here: a requested deadline needs its reasons (UNTOC
18(24)), an emergency needs its reasons; once the request is well formed,
its internal references resolve (R7), protected victims are pseudonymised
and not named in the facts (R8), deadlines do not precede the request's own
date (R10), ids are unique, and the parties sit in the States they claim.

Departures from the draft: `persons` is optional (18(15)(e) says "where
possible"; the draft required the key); `conducting_authority.functions` is
required (18(15)(b)); the draft's `if/then/else` for the facts summary also
let through a request without any `assistance_requested`, here the facts
are required unless items exist and all serve documents.
"""

import datetime as dt
from collections.abc import Iterable
from enum import StrEnum

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_core import InitErrorDetails

from protocol.mla._validation import Loc, rule_error, rule_violations
from protocol.mla.assistance import (
    Asset,
    AssistanceItem,
    AssistanceType,
    ConfiscationItem,
    FreezeSeizeAssetsItem,
    Interpretation,
)
from protocol.mla.common import (
    Address,
    Authority,
    Channel,
    ConductingAuthority,
    Contact,
    LegalBasis,
    MessageContent,
    Offence,
    Person,
    PersonRole,
    Procedure,
)
from protocol.mla.values import (
    CountryCode,
    LanguageTag,
    LocalId,
    LocalizedText,
    NonEmpty,
    Period,
    Text,
)
from protocol.model import FrozenModel


class RequestRelation(StrEnum):
    """How an earlier request relates to this one."""

    SUPPLEMENTS = "supplements"
    REPLACES = "replaces"
    RELATED_TO = "related_to"
    CONFIRMS_ORAL_REQUEST = "confirms_oral_request"


class RelatedRequest(FrozenModel):
    """An earlier request, or the oral request this one confirms (UNTOC 18(14))."""

    ref: Text
    relation: RequestRelation
    date: dt.date | None = None
    channel: Channel | None = None


class ProceedingType(StrEnum):
    """The kind of proceeding the assistance is for (UNTOC 18(1), 18(15)(b))."""

    INVESTIGATION = "investigation"
    PROSECUTION = "prosecution"
    TRIAL = "trial"
    APPEAL = "appeal"
    CONFISCATION_PROCEEDINGS = "confiscation_proceedings"
    ENFORCEMENT = "enforcement"
    ADMINISTRATIVE_WITH_CRIMINAL_APPEAL = "administrative_with_criminal_appeal"


class Proceeding(FrozenModel):
    """Subject matter and nature of the proceeding (UNTOC 18(15)(b))."""

    type: ProceedingType
    subject_matter: LocalizedText
    domestic_case_numbers: tuple[Text, ...] = ()
    court_or_forum: LocalizedText | None = None
    next_hearing_date: dt.date | None = None
    limitation_notes: LocalizedText | None = None


class TransnationalElement(StrEnum):
    """Why the offence is transnational (UNTOC art. 3(2)(a)-(d))."""

    COMMITTED_IN_MORE_THAN_ONE_STATE = "committed_in_more_than_one_state"
    PREPARED_OR_DIRECTED_IN_ANOTHER_STATE = "prepared_or_directed_in_another_state"
    ORGANIZED_GROUP_ACTIVE_IN_MORE_THAN_ONE_STATE = "organized_group_active_in_more_than_one_state"
    SUBSTANTIAL_EFFECTS_IN_ANOTHER_STATE = "substantial_effects_in_another_state"


class FactsSummary(FrozenModel):
    """Summary of the relevant facts (UNTOC 18(15)(c))."""

    text: LocalizedText
    period: Period | None = None
    places: tuple[Address, ...] = ()
    transnational_elements: tuple[TransnationalElement, ...] = ()
    organized_criminal_group: bool | None = None
    link_to_requested_state: LocalizedText | None = None


class PurposeCode(StrEnum):
    """What the assistance is for, as a machine value."""

    EVIDENCE_FOR_TRIAL = "evidence_for_trial"
    INVESTIGATIVE_LEAD = "investigative_lead"
    IDENTIFY_OR_LOCATE_OFFENDERS = "identify_or_locate_offenders"
    ASSET_RECOVERY = "asset_recovery"
    VICTIM_IDENTIFICATION_OR_PROTECTION = "victim_identification_or_protection"
    SERVICE_FOR_PROCEEDINGS = "service_for_proceedings"
    OTHER = "other"


class Purpose(FrozenModel):
    """The purpose for which the assistance is sought (UNTOC 18(15)(f))."""

    text: LocalizedText
    codes: tuple[PurposeCode, ...] = ()


class UrgencyLevel(StrEnum):
    """How urgent the request is."""

    ROUTINE = "routine"
    URGENT = "urgent"
    EMERGENCY = "emergency"


class UrgencyReason(StrEnum):
    """Why a request is urgent."""

    RISK_TO_LIFE_OR_SAFETY = "risk_to_life_or_safety"
    EVIDENCE_AT_RISK = "evidence_at_risk"
    ASSET_DISSIPATION_RISK = "asset_dissipation_risk"
    PERSON_IN_CUSTODY_TIME_LIMIT = "person_in_custody_time_limit"
    IMMINENT_TRIAL_OR_HEARING = "imminent_trial_or_hearing"
    STATUTE_OF_LIMITATIONS = "statute_of_limitations"
    SUSPECT_FLIGHT_RISK = "suspect_flight_risk"
    OTHER = "other"


class Urgency(FrozenModel):
    """Urgency and deadlines; a deadline comes with its reasons (UNTOC 18(24))."""

    level: UrgencyLevel
    reasons: tuple[UrgencyReason, ...] = Field(default=(), validate_default=True)
    requested_deadline: dt.date | None = None
    deadline_reason: LocalizedText | None = Field(default=None, validate_default=True)
    specific_execution_date: dt.date | None = None

    @field_validator("reasons", mode="after")
    @classmethod
    def _emergency_has_reasons(
        cls, reasons: tuple[UrgencyReason, ...], info: ValidationInfo
    ) -> tuple[UrgencyReason, ...]:
        if not reasons and info.data.get("level") is UrgencyLevel.EMERGENCY:
            raise ValueError("an emergency needs its reasons")
        return reasons

    @field_validator("deadline_reason", mode="after")
    @classmethod
    def _deadline_has_reasons(cls, reason: LocalizedText | None, info: ValidationInfo) -> LocalizedText | None:
        if reason is None and info.data.get("requested_deadline") is not None:
            raise ValueError(
                "a requested deadline needs its reasons: deadline_reason is required "
                "with requested_deadline (UNTOC art. 18(24))"
            )
        return reason


class Confidentiality(FrozenModel):
    """Confidentiality of the fact and substance of the request (UNTOC 18(20))."""

    keep_fact_and_substance_confidential: bool
    reasons: LocalizedText | None = None
    do_not_notify_subject: bool | None = None
    do_not_notify_until: dt.date | None = None
    victim_identity_protection: bool | None = None
    witness_protection_measures: LocalizedText | None = None
    handling_caveats: tuple[Text, ...] = ()


class UseLimitation(FrozenModel):
    """The uses the requesting State intends (UNTOC 18(19); BD MACMA s. 34)."""

    intended_uses: tuple[Text, ...] = ()
    acknowledges_speciality: bool | None = None
    further_use_requires_consent: bool | None = None


class Undertaking(StrEnum):
    """Undertakings the requesting State gives."""

    USE_LIMITATION = "use_limitation"
    CONFIDENTIALITY = "confidentiality"
    RETURN_OF_ORIGINALS = "return_of_originals"
    SAFE_CONDUCT = "safe_conduct"
    RECIPROCITY = "reciprocity"
    COMPLY_WITH_CONDITIONS = "comply_with_conditions"
    BEAR_EXTRAORDINARY_COSTS = "bear_extraordinary_costs"
    NO_DEATH_PENALTY_BASED_ON_EVIDENCE = "no_death_penalty_based_on_evidence"


class Costs(FrozenModel):
    """Costs, and whether extraordinary ones are expected (UNTOC 18(28))."""

    extraordinary_costs_expected: bool | None = None
    notes: LocalizedText | None = None
    witness_allowances: LocalizedText | None = None


class TranslationScope(StrEnum):
    """How much of the request a translation covers."""

    FULL = "full"
    SUMMARY = "summary"
    ATTACHMENTS_ONLY = "attachments_only"


class TranslationProvided(FrozenModel):
    """A translation sent with the request, and who made it."""

    lang: LanguageTag
    scope: TranslationScope
    certified: bool
    translator: Text | None = None


class InterpretationNeed(Interpretation):
    """Interpretation needed for some items (CETS 182 art. 9(5)(d))."""

    for_items: tuple[LocalId, ...] = ()


class LanguageArrangements(FrozenModel):
    """Language of the request and its translations (UNTOC 18(14))."""

    request_language: LanguageTag
    translations_provided: tuple[TranslationProvided, ...] = ()
    prevailing_language: LanguageTag | None = None
    interpretation_needed: tuple[InterpretationNeed, ...] = ()


class SpecialCategory(StrEnum):
    """Special categories of personal data in the request."""

    HEALTH = "health"
    GENETIC = "genetic"
    BIOMETRIC = "biometric"
    SEX_LIFE = "sex_life"
    CHILD_DATA = "child_data"
    CRIMINAL_OFFENCE_DATA = "criminal_offence_data"
    ETHNIC_ORIGIN = "ethnic_origin"
    RELIGION = "religion"


class OnwardTransfer(StrEnum):
    """Whether personal data may be passed on (CETS 182 art. 26)."""

    PROHIBITED_WITHOUT_CONSENT = "prohibited_without_consent"
    PERMITTED_TO_LISTED_BODIES = "permitted_to_listed_bodies"


class DataProtection(FrozenModel):
    """Data-protection terms of the personal data in the request."""

    special_categories: tuple[SpecialCategory, ...] = ()
    retention: Text | None = None
    onward_transfer: OnwardTransfer | None = None


class RequestSignature(FrozenModel):
    """Who signed the request, and when: the request's own date."""

    signed_by: Text
    title: Text
    date: dt.date
    place: Text | None = None
    seal: bool | None = None


def _duplicates(ids: Iterable[str]) -> set[str]:
    seen: set[str] = set()
    repeated: set[str] = set()
    for one in ids:
        (repeated if one in seen else seen).add(one)
    return repeated


def _unique_ids(field: str, key: str, ids: list[str]) -> list[InitErrorDetails]:
    repeated = _duplicates(ids)
    return [
        rule_error((field, index, key), f"{key} {one!r} is used more than once", one)
        for index, one in enumerate(ids)
        if one in repeated
    ]


def _unknown_refs(loc: Loc, refs: Iterable[str], known: set[str], what: str) -> list[InitErrorDetails]:
    return [
        rule_error((*loc, index), f"R7: {ref!r} is not the id of any {what} of this request", ref)
        for index, ref in enumerate(refs)
        if ref not in known
    ]


class MlaRequest(MessageContent):
    """A request for mutual legal assistance (UNTOC art. 18(13)-(15); NOTES.md §2.4)."""

    requesting_state: CountryCode
    requested_state: CountryCode
    requesting_authority: Authority
    conducting_authority: ConductingAuthority
    addressed_to: Authority | None = None
    related_requests: tuple[RelatedRequest, ...] = ()
    legal_basis: NonEmpty[LegalBasis]
    reciprocity_assurance: LocalizedText | None = None
    proceeding: Proceeding
    offences: NonEmpty[Offence]
    dual_criminality_statement: LocalizedText | None = None
    persons: tuple[Person, ...] = ()
    procedures: tuple[Procedure, ...] = ()
    assistance_requested: NonEmpty[AssistanceItem]
    facts_summary: FactsSummary | None = Field(default=None, validate_default=True)
    purpose: Purpose
    urgency: Urgency
    confidentiality: Confidentiality
    use_limitation: UseLimitation | None = None
    undertakings: tuple[Undertaking, ...] = ()
    costs: Costs | None = None
    language: LanguageArrangements
    contacts: NonEmpty[Contact]
    data_protection: DataProtection | None = None
    signature: RequestSignature

    @field_validator("facts_summary", mode="after")
    @classmethod
    def _facts_unless_service_only(cls, facts: FactsSummary | None, info: ValidationInfo) -> FactsSummary | None:
        """UNTOC 18(15)(c): facts are required unless the request only serves documents.

        When the items themselves are invalid it cannot be shown that they
        all serve documents, so the facts are then required too.
        """
        if facts is not None:
            return facts
        items = info.data.get("assistance_requested")
        if items and all(item.type is AssistanceType.SERVICE_OF_DOCUMENTS for item in items):
            return None
        raise ValueError(
            "a summary of the relevant facts is required unless every item is service of "
            "documents (UNTOC art. 18(15)(c))"
        )

    @model_validator(mode="after")
    def _consistent(self) -> "MlaRequest":
        """Rules over the whole request, all reported together (R7, R8, R10, unique ids)."""
        found = [
            *self._parties_in_their_states(),
            *self._ids_are_unique(),
            *self._references_resolve(),
            *self._victims_are_protected(),
            *self._deadlines_follow_the_request(),
        ]
        if found:
            raise rule_violations("MlaRequest", found)
        return self

    def _parties_in_their_states(self) -> list[InitErrorDetails]:
        found: list[InitErrorDetails] = []
        if self.requested_state == self.requesting_state:
            found.append(
                rule_error(
                    ("requested_state",),
                    "the requested State must differ from the requesting State",
                    self.requested_state,
                )
            )
        for field, authority, state in (
            ("requesting_authority", self.requesting_authority, self.requesting_state),
            ("conducting_authority", self.conducting_authority, self.requesting_state),
            ("addressed_to", self.addressed_to, self.requested_state),
        ):
            if authority is not None and authority.country != state:
                found.append(
                    rule_error(
                        (field, "country"),
                        f"{field} must be an authority of {state}, found {authority.country}",
                        authority.country,
                    )
                )
        return found

    def _ids_are_unique(self) -> list[InitErrorDetails]:
        return [
            *_unique_ids("persons", "person_id", [p.person_id for p in self.persons]),
            *_unique_ids("offences", "offence_id", [o.offence_id for o in self.offences]),
            *_unique_ids("procedures", "procedure_id", [p.procedure_id for p in self.procedures]),
            *_unique_ids("assistance_requested", "item_id", [i.item_id for i in self.assistance_requested]),
        ]

    def _references_resolve(self) -> list[InitErrorDetails]:
        """R7: references to persons, procedures, items and assets resolve inside the request.

        `offences[].alleged_against` is left to a warning: the samples name
        suspects of a related request there.
        """
        persons = {p.person_id for p in self.persons}
        procedures = {p.procedure_id for p in self.procedures}
        items = {i.item_id for i in self.assistance_requested}
        assets = {
            asset.asset_id
            for item in self.assistance_requested
            if isinstance(item, FreezeSeizeAssetsItem)
            for asset in item.details.assets
        }
        found: list[InitErrorDetails] = []
        for index, item in enumerate(self.assistance_requested):
            loc: Loc = ("assistance_requested", index)
            found += _unknown_refs((*loc, "person_refs"), item.person_refs, persons, "person")
            found += _unknown_refs((*loc, "procedure_refs"), item.procedure_refs, procedures, "procedure")
            if isinstance(item, ConfiscationItem):
                found += [
                    rule_error(
                        (*loc, "details", "assets", position),
                        f"R7: {asset!r} is not the asset_id of an asset of a freezing item",
                        asset,
                    )
                    for position, asset in enumerate(item.details.assets)
                    if not isinstance(asset, Asset) and asset not in assets
                ]
        for index, procedure in enumerate(self.procedures):
            found += _unknown_refs(("procedures", index, "applies_to_items"), procedure.applies_to_items, items, "item")
        for index, need in enumerate(self.language.interpretation_needed):
            found += _unknown_refs(
                ("language", "interpretation_needed", index, "for_items"),
                need.for_items,
                items,
                "item",
            )
        for index, person in enumerate(self.persons):
            if person.legal_entity is not None:
                found += _unknown_refs(
                    ("persons", index, "legal_entity", "representatives"),
                    person.legal_entity.representatives,
                    persons,
                    "person",
                )
        return found

    def _victims_are_protected(self) -> list[InitErrorDetails]:
        """R8: with victim identity protection, victims appear only by pseudonym (TIP 6(1))."""
        if not self.confidentiality.victim_identity_protection:
            return []
        found: list[InitErrorDetails] = []
        narrative = self._facts_texts()
        for index, person in enumerate(self.persons):
            if PersonRole.VICTIM not in person.roles:
                continue
            if person.pseudonym is None:
                found.append(
                    rule_error(
                        ("persons", index, "pseudonym"),
                        "R8: a protected victim needs a pseudonym (TIP Protocol art. 6(1))",
                    )
                )
            if person.identity_restricted is not True:
                found.append(
                    rule_error(
                        ("persons", index, "identity_restricted"),
                        "R8: a protected victim's identity must be marked identity_restricted",
                        person.identity_restricted,
                    )
                )
            named = [n.full for n in person.names if any(n.full in text for text in narrative)]
            if named:
                found.append(
                    rule_error(
                        ("facts_summary", "text"),
                        f"R8: the facts name protected victim {person.person_id}; use the pseudonym instead",
                    )
                )
        return found

    def _facts_texts(self) -> list[str]:
        if self.facts_summary is None:
            return []
        text = self.facts_summary.text
        return [text.value, *text.translations.values()]

    def _deadlines_follow_the_request(self) -> list[InitErrorDetails]:
        """R10: no deadline falls before the request's own date (its signature date)."""
        signed = self.signature.date
        found: list[InitErrorDetails] = []
        deadline = self.urgency.requested_deadline
        if deadline is not None and deadline < signed:
            found.append(
                rule_error(
                    ("urgency", "requested_deadline"),
                    f"R10: the deadline {deadline} is before the request's date {signed}",
                    deadline.isoformat(),
                )
            )
        for index, item in enumerate(self.assistance_requested):
            if item.deadline is not None and item.deadline < signed:
                found.append(
                    rule_error(
                        ("assistance_requested", index, "deadline"),
                        f"R10: the deadline {item.deadline} is before the request's date {signed}",
                        item.deadline.isoformat(),
                    )
                )
        return found


class SupplementaryRequest(MessageContent):
    """New items, persons or offences for the same case (EIO Annex A §D; EIO 16(2)(b)).

    Its references may point into the original request, so they are resolved
    against the whole case by the case tracker, not here.
    """

    supplements: Text
    reason: LocalizedText | None = None
    assistance_requested: NonEmpty[AssistanceItem]
    persons: tuple[Person, ...] = ()
    offences: tuple[Offence, ...] = ()
    procedures: tuple[Procedure, ...] = ()

    @model_validator(mode="after")
    def _ids_are_unique(self) -> "SupplementaryRequest":
        found = [
            *_unique_ids("persons", "person_id", [p.person_id for p in self.persons]),
            *_unique_ids("offences", "offence_id", [o.offence_id for o in self.offences]),
            *_unique_ids("procedures", "procedure_id", [p.procedure_id for p in self.procedures]),
            *_unique_ids("assistance_requested", "item_id", [i.item_id for i in self.assistance_requested]),
        ]
        if found:
            raise rule_violations("SupplementaryRequest", found)
        return self


__all__ = [
    "Confidentiality",
    "Costs",
    "DataProtection",
    "FactsSummary",
    "InterpretationNeed",
    "LanguageArrangements",
    "MlaRequest",
    "OnwardTransfer",
    "Proceeding",
    "ProceedingType",
    "Purpose",
    "PurposeCode",
    "RelatedRequest",
    "RequestRelation",
    "RequestSignature",
    "SpecialCategory",
    "SupplementaryRequest",
    "TranslationProvided",
    "TranslationScope",
    "TransnationalElement",
    "Undertaking",
    "Urgency",
    "UrgencyLevel",
    "UrgencyReason",
]
