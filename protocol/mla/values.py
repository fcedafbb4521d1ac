"""Scalar value types of MLA content, and text that says which language it is in.

Machine values are ASCII and checked by pattern: language tags (BCP 47),
country codes (ISO 3166-1 alpha-2), currency codes (ISO 4217), script codes
(ISO 15924), local ids (`A1`, `S2`, `ATT-VLIST`), amounts as decimal strings,
SHA-256 digests, media types, dates (ISO 8601). A look-alike letter from
another script is refused, never folded. Text is anything else: it is kept
exactly as sent (see the package docstring for the Unicode policy).

`LocalizedText` is the one shape of free text: the language of the original,
the original, and translations keyed by language tag. Keeping the original
and naming its language is what lets a court later tell the authentic text
from a courtesy translation (NOTES.md §2.1 principle 3).
"""

import datetime as dt
from collections.abc import Mapping
from typing import Annotated, TypeVar

from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)

from protocol.ids import AgencyIdField, CaseIdField
from protocol.model import FrozenModel

AGENCY_ID_PATTERN = r"^[A-Z]{2}(-[A-Z0-9]{2,16}){1,3}$"
"""`protocol.ids` agency id syntax as a JSON Schema pattern (a test keeps them equal)."""

CASE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._/-]{2,63}$"
"""`protocol.ids` case id syntax as a JSON Schema pattern (a test keeps them equal)."""

AgencyIdText = Annotated[AgencyIdField, WithJsonSchema({"type": "string", "pattern": AGENCY_ID_PATTERN})]
"""An agency id (`protocol.ids.AgencyId`) whose JSON Schema states its syntax."""

CaseIdText = Annotated[CaseIdField, WithJsonSchema({"type": "string", "pattern": CASE_ID_PATTERN})]
"""A case id (`protocol.ids.CaseId`) whose JSON Schema states its syntax."""

LanguageTag = Annotated[str, StringConstraints(pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")]
"""A BCP 47 language tag, lower-case primary subtag: `en`, `ar`, `bn`, `ar-LY`."""

CountryCode = Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")]
"""An ISO 3166-1 alpha-2 country code: `BD`, `LY`."""

CurrencyCode = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
"""An ISO 4217 currency code: `BDT`, `LYD`."""

ScriptCode = Annotated[str, StringConstraints(pattern=r"^[A-Z][a-z]{3}$")]
"""An ISO 15924 script code: `Latn`, `Arab`, `Beng`."""

LocalId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,63}$")]
"""An id that one document gives to one of its parts (an item, a person, an
attachment, a question) so that later messages can refer to it: `A1`, `V10`."""

DecimalAmount = Annotated[str, StringConstraints(pattern=r"^[0-9]+(\.[0-9]+)?$")]
"""A non-negative decimal amount as a string, so no float rounds it: `"250000"`."""

Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
"""Lower-case hex SHA-256."""

MediaType = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*$")]
"""An IANA media type without parameters: `application/pdf`."""

Text = Annotated[str, StringConstraints(min_length=1)]
"""Free text, kept exactly as sent: never stripped, folded or normalised."""

EntryT = TypeVar("EntryT")


def _at_least_one(entries: tuple[object, ...]) -> tuple[object, ...]:
    if not entries:
        raise ValueError("at least one entry is required")
    return entries


NonEmpty = Annotated[tuple[EntryT, ...], AfterValidator(_at_least_one), Field(json_schema_extra={"minItems": 1})]
"""A tuple of at least one entry. Checked after the entries, so a list whose
entries are all invalid is reported once per entry, not also as empty."""


def _check_partial_date(text: str) -> str:
    year, month, day, *_ = [int(part) for part in text.split("-")] + [1, 1]
    try:
        dt.date(year, month, day)
    except ValueError:
        raise ValueError(f"not a calendar date: {text}") from None
    return text


PartialDate = Annotated[
    str,
    StringConstraints(pattern=r"^[0-9]{4}(-[0-9]{2}(-[0-9]{2})?)?$"),
    AfterValidator(_check_partial_date),
]
"""A date known to the year, the month or the day: `1986`, `2024-03`, `2025-02-14`."""


class LocalizedText(FrozenModel):
    """Free text in the language of its original, with translations keyed by language tag.

    `value` is authentic; `translations` are courtesy translations unless the
    request's `language.prevailing_language` says otherwise. A translation
    into the language of the original itself is refused: there would be two
    authentic texts.
    """

    lang: LanguageTag
    value: Text
    translations: Mapping[LanguageTag, Text] = Field(default_factory=dict)

    @field_validator("translations", mode="after")
    @classmethod
    def _no_translation_into_the_original(
        cls, translations: Mapping[str, str], info: ValidationInfo
    ) -> Mapping[str, str]:
        lang = info.data.get("lang")
        if lang is not None and lang in translations:
            raise ValueError(f"a translation into the original language {lang!r} is not allowed")
        return translations


class Money(FrozenModel):
    """An amount in a currency, the amount a decimal string."""

    amount: DecimalAmount
    currency: CurrencyCode


class Period(FrozenModel):
    """A span of time given to the year, month or day; either end may be open."""

    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True, serialize_by_alias=True)

    from_: PartialDate | None = Field(default=None, alias="from")
    to: PartialDate | None = None


__all__ = [
    "AGENCY_ID_PATTERN",
    "CASE_ID_PATTERN",
    "AgencyIdText",
    "CaseIdText",
    "CountryCode",
    "CurrencyCode",
    "DecimalAmount",
    "LanguageTag",
    "LocalId",
    "LocalizedText",
    "MediaType",
    "Money",
    "NonEmpty",
    "PartialDate",
    "Period",
    "ScriptCode",
    "Sha256Hex",
    "Text",
]
