"""The base of every protocol value, and the one place pydantic errors become ours.

Values are frozen, refuse unknown fields and are strict about types (no
"5" for 5). They are built from JSON bytes with `parse_model`, which turns a
pydantic `ValidationError` into `ContentInvalid` listing every field at once.
"""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from protocol.encoding import canonical_json, refuse_ambiguous_json
from protocol.errors import ContentInvalid, ErrorCode, FieldError


class FrozenModel(BaseModel):
    """Immutable, strict, closed: the base of every protocol value."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    def canonical_bytes(self) -> bytes:
        """RFC 8785 bytes of this value in its JSON form: what gets signed."""
        return canonical_json(self.model_dump(mode="json", exclude_none=True))


ModelT = TypeVar("ModelT", bound=BaseModel)


def field_errors(exc: ValidationError) -> tuple[FieldError, ...]:
    """Every error of `exc` as a `FieldError`, in the order pydantic found them."""
    found: list[FieldError] = []
    for error in exc.errors(include_url=False, include_input=False):
        message = error["msg"]
        if message.startswith("Value error, "):
            message = message.removeprefix("Value error, ")
        found.append(FieldError(loc=tuple(error["loc"]), msg=message))
    return tuple(found)


def parse_model(
    model: type[ModelT],
    raw: bytes | str,
    *,
    what: str,
    code: ErrorCode = ErrorCode.CONTENT_INVALID,
) -> ModelT:
    """Build `model` from JSON bytes, or raise `ContentInvalid` naming every bad field.

    A duplicate object key is refused first (`DUPLICATE_KEY`): pydantic would
    keep the last value where another reader of the same signed bytes (an
    auditor's tool, another language) may keep the first. So are `NaN`,
    `Infinity` (`MALFORMED_JSON`) and numbers no double holds
    (`NUMBER_OUT_OF_RANGE`), which pydantic would read into a float field.
    """
    refuse_ambiguous_json(raw)
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        errors = field_errors(exc)
        raise ContentInvalid(f"{what} is invalid: {len(errors)} error(s)", errors, code=code) from None


__all__ = ["FrozenModel", "field_errors", "parse_model"]
