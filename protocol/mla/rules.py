"""The legal rules over MLA content: which refuse a document, which only warn, and where.

NOTES.md §2.7 numbers the business rules R1-R12 (R3 is not assigned there);
R13 and R14 are ours. The schema-level "shall" rules of UNTOC art. 18 are
listed with them because they are the same kind of argument:

Each entry: the check; its source; its severity; where it is enforced.

* 18(15): every mandatory element of a request, all named at once. UNTOC
  18(15). Error: the required fields of `request.MlaRequest`.
* 18(15)(c): a facts summary unless every item is service of documents.
  Error: `MlaRequest.facts_summary`.
* 18(23): every ground (of a refusal, postponement or consultation) gives
  reasons. Error: `common.Ground.reasons`.
* 18(24): a requested deadline gives reasons, for the request and for an
  item. Error: `request.Urgency`, `assistance.AssistanceItemBase`.
* 18(26): a refusal or postponement follows a consultation or records why
  there was none. Error: `messages.Refusal`, `messages.Postponement`; the
  case tracker checks that the reference names a consultation of the case.
* R1: no bank-secrecy ground. UNTOC 18(8), UNCAC 46(8). Error:
  `common.Ground.code`.
* R2: no fiscal-matters ground. UNTOC 18(22), UNCAC 46(22). Error: idem.
* R4: a postponement references a consultation. UNTOC 18(26). Error (a
  warning in NOTES.md; the Convention says "shall"): `messages.Postponement`.
* R5: under UNTOC, some offence is a serious crime, a Convention offence or
  an offence of a cited Protocol, and the facts assert an organised group.
  UNTOC 2(b), 3(1); Protocols art. 1(3). Warning: here.
* R6: the request is in a language the requested State accepts, or fully
  translated into one. UNTOC 18(14). Warning, because the registry below is
  an unverified assumption (NOTES.md §6.1): here.
* R7: references to persons, procedures, items and assets resolve. Error:
  `MlaRequest`; `offences[].alleged_against` only warns, here (the samples
  name persons of a related request there).
* R8: protected victims have a pseudonym and a restricted identity, and the
  facts do not name them. TIP Protocol 6(1). Error: `MlaRequest`.
* R9: an oral request is confirmed in writing within 3 days. UNTOC 18(14)
  "forthwith". Warning: here.
* R10: no deadline falls before the request's date. Error: `MlaRequest`.
* R11: a penalty is not verified. Warning: here.
* R12: an offence carries the death penalty and no undertaking is given on
  the use of evidence. Practice. Warning: here.
* R13 (ours): a mandatory procedure gives its reason. UNTOC 18(17).
  Warning: here.
* R14 (ours): a request to Bangladesh travels by the diplomatic channel.
  BD MACMA s. 9(2). Warning, as UNTOC may count as the "agreement" of
  s. 9(1) (NOTES.md §6.3): here.

Errors make `validate_document` refuse; warnings are returned by
`document_warnings` for the agency system to show its drafter, like the
UNODC MLA Request Writer Tool's "prompt if missing".
"""

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from protocol.mla.common import (
    Channel,
    LegalInstrument,
    Offence,
    OffenceCategory,
    PenaltyKind,
)
from protocol.mla.document import MessageDocument
from protocol.mla.request import MlaRequest, RequestRelation, TranslationScope, Undertaking


class Rule(StrEnum):
    """The numbered rules that can produce a warning."""

    R5_SERIOUS_CRIME = "R5"
    R6_LANGUAGE = "R6"
    R7_REFERENCES = "R7"
    R9_ORAL_REQUEST_CONFIRMED = "R9"
    R11_PENALTY_UNVERIFIED = "R11"
    R12_DEATH_PENALTY = "R12"
    R13_PROCEDURE_REASON = "R13"
    R14_CHANNEL = "R14"


@dataclass(frozen=True, slots=True)
class RuleWarning:
    """A rule that a document does not meet but that does not make it invalid."""

    rule: Rule
    loc: tuple[str | int, ...]
    msg: str


ACCEPTED_LANGUAGES: Final[Mapping[str, frozenset[str]]] = MappingProxyType(
    {"BD": frozenset({"en", "bn"}), "LY": frozenset({"ar"})}
)
"""Languages each State accepts under UNTOC 18(14) — an ASSUMPTION of the
research notes (NOTES.md §6.1), to be checked against the notifications to the
UN Secretary-General before production."""

SERIOUS_CRIME_YEARS: Final = 4
"""UNTOC art. 2(b): a serious crime carries at least four years' deprivation of liberty."""

ORAL_CONFIRMATION_DAYS: Final = 3
"""UNTOC 18(14) "forthwith", as the default of NOTES.md §3.3 (72 hours)."""

CONVENTION_OFFENCES: Final = frozenset(
    {
        OffenceCategory.PARTICIPATION_IN_ORGANIZED_CRIMINAL_GROUP,
        OffenceCategory.MONEY_LAUNDERING,
        OffenceCategory.CORRUPTION,
        OffenceCategory.OBSTRUCTION_OF_JUSTICE,
    }
)
"""Offences UNTOC itself establishes (arts. 5, 6, 8, 23)."""

PROTOCOL_OFFENCES: Final[Mapping[OffenceCategory, LegalInstrument]] = MappingProxyType(
    {
        OffenceCategory.TRAFFICKING_IN_PERSONS: LegalInstrument.UNTOC_TIP_PROTOCOL,
        OffenceCategory.SMUGGLING_OF_MIGRANTS: LegalInstrument.UNTOC_SOM_PROTOCOL,
    }
)
"""Protocol offences count as Convention offences only where the Protocol is cited (art. 1(3))."""

_CUSTODIAL = frozenset(
    {
        PenaltyKind.IMPRISONMENT,
        PenaltyKind.RIGOROUS_IMPRISONMENT,
        PenaltyKind.DETENTION_WITH_HARD_LABOUR,
    }
)


def _is_serious(offence: Offence) -> bool:
    ceiling = offence.max_deprivation_of_liberty
    if ceiling is not None and (
        ceiling.life or ceiling.death_penalty_available or (ceiling.years or 0) >= SERIOUS_CRIME_YEARS
    ):
        return True
    return any(
        penalty.kind in {PenaltyKind.DEATH, PenaltyKind.LIFE_IMPRISONMENT}
        or (penalty.kind in _CUSTODIAL and (penalty.years or 0) >= SERIOUS_CRIME_YEARS)
        for penalty in offence.penalties
    )


def _death_penalty(offence: Offence) -> bool:
    ceiling = offence.max_deprivation_of_liberty
    return bool(ceiling is not None and ceiling.death_penalty_available) or any(
        penalty.kind is PenaltyKind.DEATH for penalty in offence.penalties
    )


def _serious_crime(request: MlaRequest) -> list[RuleWarning]:
    """R5: under UNTOC, the offences must be within the Convention's scope."""
    cited = {basis.instrument for basis in request.legal_basis}
    if LegalInstrument.UNTOC not in cited:
        return []
    found: list[RuleWarning] = []
    covered = any(
        _is_serious(offence)
        or any(category in CONVENTION_OFFENCES for category in offence.categories)
        or any(PROTOCOL_OFFENCES.get(category) in cited for category in offence.categories)
        for offence in request.offences
    )
    if not covered:
        found.append(
            RuleWarning(
                Rule.R5_SERIOUS_CRIME,
                ("payload", "offences"),
                "R5: UNTOC is cited but no offence is a serious crime (at least "
                f"{SERIOUS_CRIME_YEARS} years), a Convention offence, or an offence of a cited "
                "Protocol (UNTOC arts. 2(b), 3(1); Protocols art. 1(3))",
            )
        )
    facts = request.facts_summary
    if facts is not None and facts.organized_criminal_group is not True:
        found.append(
            RuleWarning(
                Rule.R5_SERIOUS_CRIME,
                ("payload", "facts_summary", "organized_criminal_group"),
                "R5: UNTOC is cited but the facts do not assert an organised criminal group (UNTOC art. 3(1))",
            )
        )
    return found


def _language(request: MlaRequest) -> list[RuleWarning]:
    """R6: the requested State can read the request, or a full translation."""
    accepted = ACCEPTED_LANGUAGES.get(request.requested_state)
    if accepted is None:
        return []
    language = request.language
    readable = {language.request_language} | {
        t.lang for t in language.translations_provided if t.scope is TranslationScope.FULL
    }
    if {tag.split("-")[0] for tag in readable} & accepted:
        return []
    return [
        RuleWarning(
            Rule.R6_LANGUAGE,
            ("payload", "language", "request_language"),
            f"R6: {request.requested_state} is assumed to accept {sorted(accepted)}; the request "
            "is neither in one of them nor fully translated into one (UNTOC art. 18(14))",
        )
    ]


def _alleged_against(request: MlaRequest) -> list[RuleWarning]:
    """R7 (warning part): suspects named by offences are persons of this request."""
    persons = {person.person_id for person in request.persons}
    return [
        RuleWarning(
            Rule.R7_REFERENCES,
            ("payload", "offences", index, "alleged_against", position),
            f"R7: {ref!r} is not a person of this request (a related request's person?)",
        )
        for index, offence in enumerate(request.offences)
        for position, ref in enumerate(offence.alleged_against)
        if ref not in persons
    ]


def _oral_request_confirmed(request: MlaRequest) -> list[RuleWarning]:
    """R9: written confirmation of an oral request follows "forthwith"."""
    limit = dt.timedelta(days=ORAL_CONFIRMATION_DAYS)
    return [
        RuleWarning(
            Rule.R9_ORAL_REQUEST_CONFIRMED,
            ("payload", "related_requests", index, "date"),
            f"R9: the oral request of {related.date} is confirmed more than "
            f"{ORAL_CONFIRMATION_DAYS} days later (UNTOC art. 18(14): forthwith)",
        )
        for index, related in enumerate(request.related_requests)
        if related.relation is RequestRelation.CONFIRMS_ORAL_REQUEST
        and related.date is not None
        and request.signature.date - related.date > limit
    ]


def _penalties(request: MlaRequest) -> list[RuleWarning]:
    """R11 and R12: unverified penalties; death penalty without an undertaking."""
    found: list[RuleWarning] = []
    undertaken = Undertaking.NO_DEATH_PENALTY_BASED_ON_EVIDENCE in request.undertakings
    for index, offence in enumerate(request.offences):
        if offence.penalty_verified is False:
            found.append(
                RuleWarning(
                    Rule.R11_PENALTY_UNVERIFIED,
                    ("payload", "offences", index, "penalty_verified"),
                    f"R11: the penalties of offence {offence.offence_id} are not verified",
                )
            )
        if _death_penalty(offence) and not undertaken:
            found.append(
                RuleWarning(
                    Rule.R12_DEATH_PENALTY,
                    ("payload", "offences", index),
                    f"R12: offence {offence.offence_id} carries the death penalty and the request "
                    "gives no undertaking on the use of evidence; some States require one",
                )
            )
    return found


def _procedure_reasons(request: MlaRequest) -> list[RuleWarning]:
    """R13: a procedure needed for admissibility says why."""
    return [
        RuleWarning(
            Rule.R13_PROCEDURE_REASON,
            ("payload", "procedures", index, "reason"),
            f"R13: procedure {procedure.procedure_id} is mandatory but gives no reason",
        )
        for index, procedure in enumerate(request.procedures)
        if procedure.mandatory and procedure.reason is None
    ]


def _channel(document: MessageDocument, request: MlaRequest) -> list[RuleWarning]:
    """R14: Bangladesh takes requests from States without an agreement diplomatically."""
    if request.requested_state != "BD" or document.channel is Channel.DIPLOMATIC:
        return []
    return [
        RuleWarning(
            Rule.R14_CHANNEL,
            ("channel",),
            "R14: Bangladesh's MACMA 2012 s. 9(2) asks States without an agreement to send "
            "requests through the diplomatic channel",
        )
    ]


def document_warnings(document: MessageDocument) -> tuple[RuleWarning, ...]:
    """Every warning rule the document does not meet; it is valid all the same."""
    request = document.payload
    if not isinstance(request, MlaRequest):
        return ()
    return (
        *_serious_crime(request),
        *_language(request),
        *_alleged_against(request),
        *_oral_request_confirmed(request),
        *_penalties(request),
        *_procedure_reasons(request),
        *_channel(document, request),
    )


__all__ = [
    "ACCEPTED_LANGUAGES",
    "CONVENTION_OFFENCES",
    "ORAL_CONFIRMATION_DAYS",
    "PROTOCOL_OFFENCES",
    "SERIOUS_CRIME_YEARS",
    "Rule",
    "RuleWarning",
    "document_warnings",
]
