"""Types shared by the payloads of many MLA messages: parties, offences, persons, grounds.

Each model follows NOTES.md §2.2-2.6 and the draft schema, with these
departures (each for a reason given in place):

* `Authority.authority_id`, when present, must belong to `Authority.country`
  (agency ids start with the country code: `LY-AGO` is Libyan).
* `Ground.reasons` is required for every ground, not only in refusals: a
  postponement or consultation without reasons tells the other side nothing
  (UNTOC 18(23), 18(25)-(26)). `BANK_SECRECY` and `FISCAL_OFFENCE_ONLY` stay
  in the code list only so that they can be refused by name (rules R1, R2).
* Lists that the draft leaves unbounded but that must identify something
  (`roles`, `names`, `penalties`) need at least one entry, as in the draft.
"""

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Annotated, Final

from pydantic import Field, ValidationInfo, field_validator

from protocol.mla.values import (
    AgencyIdText,
    CountryCode,
    LanguageTag,
    LocalId,
    LocalizedText,
    MediaType,
    Money,
    NonEmpty,
    PartialDate,
    ScriptCode,
    Sha256Hex,
    Text,
)
from protocol.model import FrozenModel

NonNegativeInt = Annotated[int, Field(ge=0)]
NonNegativeNumber = Annotated[float, Field(ge=0)]


class MessageContent(FrozenModel):
    """Base of every payload model: the content of one message type."""


# -- enumerations -----------------------------------------------------------


class Role(StrEnum):
    """The side of a case a party is on; the sender of the `MLA_REQUEST` is `REQUESTING`."""

    REQUESTING = "requesting"
    REQUESTED = "requested"


class Channel(StrEnum):
    """How a message travels between the States (UNTOC 18(13); BD MACMA s. 9(2))."""

    CENTRAL_AUTHORITY_DIRECT = "central_authority_direct"
    DIPLOMATIC = "diplomatic"
    INTERPOL = "interpol"
    DIRECT_JUDICIAL = "direct_judicial"
    LIAISON_OFFICER = "liaison_officer"
    NETWORK_24_7 = "network_24_7"


class Classification(StrEnum):
    """Protective marking of a message or attachment (UNTOC 18(20))."""

    UNCLASSIFIED = "UNCLASSIFIED"
    RESTRICTED = "RESTRICTED"
    CONFIDENTIAL = "CONFIDENTIAL"
    SECRET = "SECRET"  # noqa: S105 - a protective marking, not a password


class AuthorityType(StrEnum):
    """What kind of body an authority is."""

    CENTRAL_AUTHORITY = "central_authority"
    MINISTRY_OF_JUSTICE = "ministry_of_justice"
    MINISTRY_OF_INTERIOR = "ministry_of_interior"
    PROSECUTION_SERVICE = "prosecution_service"
    INVESTIGATING_JUDGE = "investigating_judge"
    COURT = "court"
    POLICE = "police"
    SPECIALISED_AGENCY = "specialised_agency"
    FIU = "fiu"
    OTHER = "other"


class ContactRole(StrEnum):
    """What a contact person does for the case."""

    CASE_OFFICER = "case_officer"
    PROSECUTOR = "prosecutor"
    INVESTIGATING_OFFICER = "investigating_officer"
    CENTRAL_AUTHORITY_DESK = "central_authority_desk"
    CONTACT_24_7 = "contact_24_7"
    INTERPRETER_COORDINATOR = "interpreter_coordinator"
    TECHNICAL_CONTACT = "technical_contact"
    LEGAL_ADVISER = "legal_adviser"


class LegalInstrument(StrEnum):
    """An instrument a request is based on (UNTOC 18(6)-(7))."""

    UNTOC = "UNTOC"
    UNTOC_TIP_PROTOCOL = "UNTOC_TIP_PROTOCOL"
    UNTOC_SOM_PROTOCOL = "UNTOC_SOM_PROTOCOL"
    UNTOC_FIREARMS_PROTOCOL = "UNTOC_FIREARMS_PROTOCOL"
    UNCAC = "UNCAC"
    UN_1988_DRUGS = "UN_1988_DRUGS"
    BILATERAL_MLAT = "BILATERAL_MLAT"
    REGIONAL_TREATY = "REGIONAL_TREATY"
    COE_ETS_30 = "COE_ETS_30"
    COE_CETS_182 = "COE_CETS_182"
    BUDAPEST_ETS_185 = "BUDAPEST_ETS_185"
    BUDAPEST_CETS_224 = "BUDAPEST_CETS_224"
    EU_EIO_2014_41 = "EU_EIO_2014_41"
    DOMESTIC_LAW = "DOMESTIC_LAW"
    RECIPROCITY = "RECIPROCITY"
    COMITY = "COMITY"
    OTHER = "OTHER"


class LegalBasisRole(StrEnum):
    """The part an instrument plays in the legal basis of a request."""

    PRIMARY = "primary"
    SUPPLEMENTARY = "supplementary"
    DOMESTIC_ENABLING = "domestic_enabling"
    ASSURANCE = "assurance"


class PenaltyKind(StrEnum):
    """A kind of penalty an offence carries."""

    DEATH = "death"
    LIFE_IMPRISONMENT = "life_imprisonment"
    IMPRISONMENT = "imprisonment"
    RIGOROUS_IMPRISONMENT = "rigorous_imprisonment"
    DETENTION_WITH_HARD_LABOUR = "detention_with_hard_labour"
    FINE = "fine"
    CONFISCATION = "confiscation"
    OTHER = "other"


class PenaltyBound(StrEnum):
    """Whether a penalty is a maximum, a minimum, fixed, or one of alternatives."""

    MAX = "max"
    MIN = "min"
    FIXED = "fixed"
    ALTERNATIVE = "alternative"


class OffenceCategory(StrEnum):
    """Categories that decide which instrument covers an offence (UNTOC arts. 5, 6, 8, 23)."""

    TRAFFICKING_IN_PERSONS = "trafficking_in_persons"
    SMUGGLING_OF_MIGRANTS = "smuggling_of_migrants"
    PARTICIPATION_IN_ORGANIZED_CRIMINAL_GROUP = "participation_in_organized_criminal_group"
    MONEY_LAUNDERING = "money_laundering"
    CORRUPTION = "corruption"
    OBSTRUCTION_OF_JUSTICE = "obstruction_of_justice"
    FORCED_LABOUR = "forced_labour"
    DOCUMENT_FRAUD = "document_fraud"
    KIDNAPPING_RANSOM = "kidnapping_ransom"
    HOMICIDE = "homicide"
    ILLEGAL_RECRUITMENT = "illegal_recruitment"
    OTHER = "other"


class PersonKind(StrEnum):
    """Natural or legal person (UNTOC 18(2))."""

    NATURAL = "natural"
    LEGAL = "legal"


class PersonRole(StrEnum):
    """The position of a person in the proceedings."""

    SUSPECT = "suspect"
    ACCUSED = "accused"
    DEFENDANT = "defendant"
    CONVICTED = "convicted"
    VICTIM = "victim"
    WITNESS = "witness"
    EXPERT = "expert"
    PERSON_TO_BE_SERVED = "person_to_be_served"
    HOLDER_OF_RECORDS = "holder_of_records"
    OWNER_OF_PROPERTY = "owner_of_property"
    PERSON_IN_CUSTODY = "person_in_custody"
    LEGAL_REPRESENTATIVE = "legal_representative"
    RELATIVE_OF_VICTIM = "relative_of_victim"
    OTHER = "other"


class PersonNameType(StrEnum):
    """Which form of a name this is."""

    PRIMARY = "primary"
    NATIVE_SCRIPT = "native_script"
    TRANSLITERATION = "transliteration"
    ALIAS = "alias"
    PASSPORT_MRZ = "passport_mrz"
    NICKNAME = "nickname"


class Sex(StrEnum):
    """Sex as recorded in the requesting State's file."""

    MALE = "male"
    FEMALE = "female"
    OTHER = "other"
    UNKNOWN = "unknown"


class IdentityDocumentType(StrEnum):
    """A kind of identity or registration document."""

    PASSPORT = "passport"
    NATIONAL_ID = "national_id"
    BIRTH_REGISTRATION = "birth_registration"
    RESIDENCE_PERMIT = "residence_permit"
    DRIVING_LICENCE = "driving_licence"
    SEAMAN_BOOK = "seaman_book"
    COMPANY_REGISTRATION = "company_registration"
    TRADE_LICENCE = "trade_licence"
    RECRUITING_LICENCE = "recruiting_licence"
    OTHER = "other"


class ProcedureCode(StrEnum):
    """A formality the requesting State asks to be followed (UNTOC 18(17))."""

    OATH_OR_AFFIRMATION = "oath_or_affirmation"
    CAUTION_RIGHTS_OF_SUSPECT = "caution_rights_of_suspect"
    VERBATIM_TRANSCRIPT = "verbatim_transcript"
    AUDIO_VIDEO_RECORDING = "audio_video_recording"
    INTERPRETER = "interpreter"
    SIGNATURE_OF_DEPONENT = "signature_of_deponent"
    CERTIFICATION_OF_RECORDS = "certification_of_records"
    BUSINESS_RECORDS_CERTIFICATE = "business_records_certificate"
    CHAIN_OF_CUSTODY = "chain_of_custody"
    PRESENCE_OF_REQUESTING_OFFICIALS = "presence_of_requesting_officials"
    QUESTIONS_BY_REQUESTING_OFFICIALS = "questions_by_requesting_officials"
    PRESENCE_OF_DEFENCE_COUNSEL = "presence_of_defence_counsel"
    NOTIFY_DATE_AND_PLACE = "notify_date_and_place"
    ORIGINALS_REQUIRED = "originals_required"
    CERTIFIED_COPIES_SUFFICIENT = "certified_copies_sufficient"
    JUDICIAL_OFFICER_TO_TAKE_STATEMENT = "judicial_officer_to_take_statement"
    CHILD_OR_TRAUMA_SENSITIVE_INTERVIEW = "child_or_trauma_sensitive_interview"
    SAME_SEX_INTERVIEWER = "same_sex_interviewer"
    NO_NOTICE_TO_SUBJECT = "no_notice_to_subject"
    PROOF_OF_SERVICE = "proof_of_service"
    SPECIAL_MANNER_OF_SERVICE = "special_manner_of_service"
    OTHER = "other"


class AttachmentType(StrEnum):
    """What an attached document is."""

    STATUTORY_EXTRACT = "statutory_extract"
    COURT_ORDER = "court_order"
    WARRANT = "warrant"
    FREEZING_ORDER = "freezing_order"
    CONFISCATION_ORDER = "confiscation_order"
    SUMMONS = "summons"
    DOCUMENT_TO_BE_SERVED = "document_to_be_served"
    LIST_OF_QUESTIONS = "list_of_questions"
    PHOTOGRAPH = "photograph"
    IDENTITY_DOCUMENT_COPY = "identity_document_copy"
    CONSENT_FORM = "consent_form"
    CERTIFICATE = "certificate"
    TRANSLATION = "translation"
    EVIDENCE = "evidence"
    STATEMENT = "statement"
    RECORD = "record"
    MINUTES = "minutes"
    OTHER = "other"


class GroundCode(StrEnum):
    """Grounds for refusing, postponing or consulting (NOTES.md §2.6)."""

    NON_CONFORMING_REQUEST = "NON_CONFORMING_REQUEST"
    ESSENTIAL_INTERESTS = "ESSENTIAL_INTERESTS"
    DOMESTIC_LAW_PROHIBITS_ACTION = "DOMESTIC_LAW_PROHIBITS_ACTION"
    CONTRARY_TO_MLA_LEGAL_SYSTEM = "CONTRARY_TO_MLA_LEGAL_SYSTEM"
    NO_DUAL_CRIMINALITY = "NO_DUAL_CRIMINALITY"
    POLITICAL_OFFENCE = "POLITICAL_OFFENCE"
    NE_BIS_IN_IDEM = "NE_BIS_IN_IDEM"
    IMMUNITY_OR_PRIVILEGE = "IMMUNITY_OR_PRIVILEGE"
    FUNDAMENTAL_RIGHTS = "FUNDAMENTAL_RIGHTS"
    DISCRIMINATORY_PURPOSE = "DISCRIMINATORY_PURPOSE"
    DE_MINIMIS = "DE_MINIMIS"
    DEATH_PENALTY_ASSURANCE = "DEATH_PENALTY_ASSURANCE"
    OFFENCE_OUTSIDE_SCOPE = "OFFENCE_OUTSIDE_SCOPE"
    INTERFERES_WITH_ONGOING_PROCEEDINGS = "INTERFERES_WITH_ONGOING_PROCEEDINGS"
    MATERIAL_IN_DOMESTIC_USE = "MATERIAL_IN_DOMESTIC_USE"
    CONDITIONS_PENDING = "CONDITIONS_PENDING"
    BANK_SECRECY = "BANK_SECRECY"
    FISCAL_OFFENCE_ONLY = "FISCAL_OFFENCE_ONLY"
    OTHER = "OTHER"


IMPERMISSIBLE_GROUNDS: Final[Mapping[GroundCode, str]] = MappingProxyType(
    {
        GroundCode.BANK_SECRECY: (
            "R1: bank secrecy is not a ground for declining assistance (UNTOC art. 18(8), UNCAC art. 46(8))"
        ),
        GroundCode.FISCAL_OFFENCE_ONLY: (
            "R2: an offence involving fiscal matters is not a ground for refusal (UNTOC art. 18(22), UNCAC art. 46(22))"
        ),
    }
)
"""Ground codes that no message may give, with the rule that says so."""


class ItemStatus(StrEnum):
    """Where one assistance item stands (NOTES.md §3.1, item statuses)."""

    PENDING = "pending"
    IN_EXECUTION = "in_execution"
    PARTIALLY_EXECUTED = "partially_executed"
    EXECUTED = "executed"
    POSTPONED = "postponed"
    REFUSED = "refused"
    IMPOSSIBLE = "impossible"
    WITHDRAWN = "withdrawn"


TERMINAL_ITEM_STATUSES = frozenset(
    {
        ItemStatus.EXECUTED,
        ItemStatus.PARTIALLY_EXECUTED,
        ItemStatus.REFUSED,
        ItemStatus.IMPOSSIBLE,
        ItemStatus.WITHDRAWN,
    }
)
"""Statuses after which nothing more is owed on an item."""


class Scope(StrEnum):
    """Whether a refusal, postponement or withdrawal covers the request or some items."""

    WHOLE_REQUEST = "whole_request"
    ITEMS = "items"


# -- places and people who act ----------------------------------------------


class GeoPoint(FrozenModel):
    """WGS 84 coordinates."""

    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)


class Address(FrozenModel):
    """A place; address lines in any script go in `text`."""

    country: CountryCode
    text: LocalizedText | None = None
    locality: Text | None = None
    district: Text | None = None
    region: Text | None = None
    geo: GeoPoint | None = None


class Contact(FrozenModel):
    """A person or desk to contact about the case."""

    role: ContactRole
    name: Text
    title: Text | None = None
    organisation: Text | None = None
    phone: Text | None = None
    email: Text | None = None
    languages: tuple[LanguageTag, ...] = ()
    availability: Text | None = None


class Authority(FrozenModel):
    """A public authority: who it is, where, and whom to call."""

    authority_id: AgencyIdText | None = None
    name: LocalizedText
    type: AuthorityType
    country: CountryCode
    functions: LocalizedText | None = None
    address: Address | None = None
    contacts: tuple[Contact, ...] = ()

    @field_validator("country", mode="after")
    @classmethod
    def _agency_id_belongs_to_country(cls, country: str, info: ValidationInfo) -> str:
        authority_id = info.data.get("authority_id")
        if authority_id is not None and not authority_id.startswith(f"{country}-"):
            raise ValueError(f"authority {authority_id} is not an authority of {country}")
        return country


class ConductingAuthority(Authority):
    """The authority conducting the investigation, prosecution or proceeding.

    UNTOC 18(15)(b) asks for its name *and functions*, so `functions` is
    required here (the draft left it optional).
    """

    functions: LocalizedText


# -- law --------------------------------------------------------------------


class LegalBasis(FrozenModel):
    """One instrument the request relies on."""

    instrument: LegalInstrument
    citation: Text | None = None
    articles: tuple[Text, ...] = ()
    role: LegalBasisRole | None = None
    notes: LocalizedText | None = None


class Penalty(FrozenModel):
    """One penalty an offence carries, as the statute states it."""

    kind: PenaltyKind
    bound: PenaltyBound | None = None
    years: NonNegativeNumber | None = None
    months: NonNegativeNumber | None = None
    fine: Money | None = None
    text: LocalizedText | None = None


class MaxDeprivationOfLiberty(FrozenModel):
    """The longest deprivation of liberty an offence carries, for UNTOC art. 2(b)."""

    years: NonNegativeNumber | None = None
    life: bool | None = None
    death_penalty_available: bool | None = None


class Offence(FrozenModel):
    """An offence under investigation, with its statute, text and penalties."""

    offence_id: LocalId
    title: LocalizedText
    jurisdiction: CountryCode
    statute: Text
    provision: Text
    statutory_text: LocalizedText | None = None
    statutory_text_attachment: LocalId | None = None
    penalties: NonEmpty[Penalty]
    max_deprivation_of_liberty: MaxDeprivationOfLiberty | None = None
    categories: tuple[OffenceCategory, ...] = ()
    penalty_verified: bool | None = None
    alleged_against: tuple[LocalId, ...] = ()


# -- persons ----------------------------------------------------------------


class PersonName(FrozenModel):
    """One form of a person's name, in one script."""

    full: Text
    given: Text | None = None
    family: Text | None = None
    lang: LanguageTag | None = None
    script: ScriptCode | None = None
    type: PersonNameType | None = None


class IdentityDocument(FrozenModel):
    """A passport, identity card or registration."""

    type: IdentityDocumentType
    number: Text
    issuing_country: CountryCode | None = None
    expiry_date: PartialDate | None = None
    note: Text | None = None


class Custody(FrozenModel):
    """Whether and where a person is detained (UNTOC 18(10))."""

    in_custody: bool
    facility: Text | None = None
    state: CountryCode | None = None


class Vulnerability(FrozenModel):
    """What protects a person (TIP Protocol arts. 3(d), 6; SOM Protocol arts. 5, 16)."""

    minor: bool | None = None
    trafficking_victim: bool | None = None
    smuggled_migrant: bool | None = None
    needs_interpreter: bool | None = None
    protection_measures_requested: bool | None = None
    notes: LocalizedText | None = None


class LegalEntity(FrozenModel):
    """Registration details of a legal person."""

    legal_form: Text | None = None
    registration_number: Text | None = None
    seat: Address | None = None
    representatives: tuple[LocalId, ...] = ()


class Person(FrozenModel):
    """A person concerned by the request (UNTOC 18(15)(e)).

    A protected victim appears in narrative text only by `pseudonym`; the
    identity block is marked `identity_restricted` (TIP Protocol art. 6(1),
    rule R8).
    """

    person_id: LocalId
    kind: PersonKind
    roles: NonEmpty[PersonRole]
    names: NonEmpty[PersonName]
    pseudonym: Text | None = None
    identity_restricted: bool | None = None
    sex: Sex | None = None
    date_of_birth: PartialDate | None = None
    place_of_birth: Address | None = None
    nationalities: tuple[CountryCode, ...] = ()
    identity_documents: tuple[IdentityDocument, ...] = ()
    addresses: tuple[Address, ...] = ()
    location_known_in_requested_state: bool | None = None
    phone_numbers: tuple[Text, ...] = ()
    languages: tuple[LanguageTag, ...] = ()
    custody: Custody | None = None
    vulnerability: Vulnerability | None = None
    relationship_to_proceedings: LocalizedText | None = None
    legal_entity: LegalEntity | None = None


# -- procedures, attachments, grounds, conditions ---------------------------


class Procedure(FrozenModel):
    """A formality asked for, and the items it applies to (UNTOC 18(17)).

    `mandatory` means needed for admissibility under the requesting State's
    law; a reason is expected then (a warning, rule R13, when missing).
    """

    procedure_id: LocalId
    code: ProcedureCode
    mandatory: bool | None = None
    reason: LocalizedText | None = None
    applies_to_items: tuple[LocalId, ...] = ()


class Attachment(FrozenModel):
    """A document that travels with (or is described by) a message, bound by its digest."""

    attachment_id: LocalId
    title: LocalizedText
    doc_type: AttachmentType
    lang: LanguageTag
    media_type: MediaType
    sha256: Sha256Hex
    size_bytes: NonNegativeInt | None = None
    classification: Classification | None = None
    translation_of: LocalId | None = None
    certified_translation: bool | None = None
    signed: bool | None = None
    restricted_to_need_to_know: bool | None = None


class Ground(FrozenModel):
    """A ground for refusing, postponing or consulting, with its reasons (UNTOC 18(23))."""

    code: GroundCode
    legal_source: Text | None = None
    reasons: LocalizedText

    @field_validator("code", mode="after")
    @classmethod
    def _permissible(cls, code: GroundCode) -> GroundCode:
        """R1, R2: bank secrecy and fiscal matters are never grounds.

        A single message does not carry the case's legal basis; every basis
        this exchange supports for BD-LY (UNTOC, its Protocols, UNCAC)
        excludes both, so they are refused wherever they appear.
        """
        if code in IMPERMISSIBLE_GROUNDS:
            raise ValueError(IMPERMISSIBLE_GROUNDS[code])
        return code


class Condition(FrozenModel):
    """A condition proposed or imposed on execution or use (UNTOC 18(19), 18(26))."""

    condition_id: LocalId
    text: LocalizedText
    item_refs: tuple[LocalId, ...] = ()


__all__ = [
    "IMPERMISSIBLE_GROUNDS",
    "TERMINAL_ITEM_STATUSES",
    "Address",
    "Attachment",
    "AttachmentType",
    "Authority",
    "AuthorityType",
    "Channel",
    "Classification",
    "Condition",
    "ConductingAuthority",
    "Contact",
    "ContactRole",
    "Custody",
    "GeoPoint",
    "Ground",
    "GroundCode",
    "IdentityDocument",
    "IdentityDocumentType",
    "ItemStatus",
    "LegalBasis",
    "LegalBasisRole",
    "LegalEntity",
    "LegalInstrument",
    "MaxDeprivationOfLiberty",
    "MessageContent",
    "Offence",
    "OffenceCategory",
    "Penalty",
    "PenaltyBound",
    "PenaltyKind",
    "Person",
    "PersonKind",
    "PersonName",
    "PersonNameType",
    "PersonRole",
    "Procedure",
    "ProcedureCode",
    "Role",
    "Scope",
    "Sex",
    "Vulnerability",
]
