"""How the content models report cross-field rules and dispatch on a type tag.

Two needs that pydantic does not cover out of the box, solved once here:

* **Rule violations at the offending field.** A rule that looks at several
  fields (a refusal's grounds and its consultation, a request's facts and
  its items) raises `rule_violations(...)`: one `ValidationError` carrying
  every finding, each at its own `loc`. Raised inside a validator, pydantic
  prefixes the enclosing path, so a finding at `("facts_summary",)` of the
  payload surfaces as `("payload", "facts_summary")`.
* **Dispatch on a tag without a discriminated union.** A pydantic
  discriminated union inserts the tag into every error's `loc`
  (`("assistance_requested", 0, "search_and_seizure", "location")`). We
  choose the model ourselves (`validate_as`) so errors read
  `("assistance_requested", 0, "location")`. In JSON mode the chosen model
  validates the value in JSON mode too (re-encoded with `json.dumps`, which
  is lossless for what `json`/pydantic decoded), so strictness is the same
  as for the rest of the document: "5" is never an integer and "2025-06-30"
  is a date.
"""

import json
from collections.abc import Sequence
from typing import TypeVar

from pydantic import BaseModel, ValidationError, ValidationInfo
from pydantic_core import InitErrorDetails, PydanticCustomError

ModelT = TypeVar("ModelT", bound=BaseModel)

Loc = tuple[str | int, ...]
"""A path inside the value being validated, as pydantic writes it."""

RULE_ERROR_TYPE = "mla_rule"
"""The pydantic error type of every rule violation raised by the content models."""


def rule_error(loc: Loc, message: str, value: object = None) -> InitErrorDetails:
    """One rule violation at `loc`, its message kept verbatim (braces included)."""
    return InitErrorDetails(
        type=PydanticCustomError(RULE_ERROR_TYPE, "{detail}", {"detail": message}),
        loc=loc,
        input=value,
    )


def rule_violations(title: str, found: Sequence[InitErrorDetails]) -> ValidationError:
    """A `ValidationError` listing every finding of `found` at once."""
    return ValidationError.from_exception_data(title, list(found))


def validate_as(model: type[ModelT], value: object, info: ValidationInfo) -> ModelT:
    """Validate `value` with `model` in the mode of the enclosing validation.

    An instance of exactly `model` (built in Python) is returned as it is;
    anything else is validated, in JSON mode from its JSON text.
    """
    if type(value) is model:
        return value
    if info.mode == "json":
        return model.model_validate_json(json.dumps(value))
    return model.model_validate(value)


def tag_of(value: object, key: str) -> object:
    """The value of `key` in a JSON object or a model instance; `None` if absent."""
    if isinstance(value, dict):
        return value.get(key)
    return getattr(value, key, None)


def unknown_tag(title: str, key: str, value: object, allowed: Sequence[str]) -> ValidationError:
    """The error for a missing or unknown tag, at `(key,)`."""
    if value is None:
        message = f"Field required: one of {', '.join(allowed)}"
    else:
        message = f"Input should be one of {', '.join(allowed)}"
    return rule_violations(title, [rule_error((key,), message, value)])


def require_object(value: object, title: str) -> None:
    """Refuse a value that is neither a JSON object nor a model instance."""
    if not isinstance(value, dict | BaseModel):
        raise rule_violations(
            title,
            [
                InitErrorDetails(
                    type=PydanticCustomError("model_type", "Input should be an object"),
                    loc=(),
                    input=value,
                )
            ],
        )


__all__: list[str] = []
