"""Bytes in and bytes out: strict JSON, canonical JSON, base64, timestamps and PAE.

Two rules run through this module:

* Canonical JSON (RFC 8785) is for *producing* the bytes that get signed. A
  verifier checks the signature over the bytes it received and only then
  parses them; it never re-canonicalises.
* Parsing is strict: duplicate object keys, lone surrogates, `NaN` and
  nesting beyond a limit are refused instead of being resolved one way or
  another, so that two parties can never read the same bytes differently.
  So are numbers no double holds exactly: an integer beyond 2^53 - 1 (which
  canonical JSON cannot write, and which past Python's digit limit would
  otherwise escape as a bare `ValueError`) and a float that overflows to
  infinity (`1e400`), each with `NUMBER_OUT_OF_RANGE`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final

import rfc8785
from pydantic import AfterValidator, PlainSerializer, PlainValidator, WithJsonSchema

from protocol.errors import ErrorCode, LimitExceeded, MalformedInput

# -- canonical JSON ---------------------------------------------------------


_SAFE_INTEGER: Final = 2**53 - 1
"""RFC 8785 writes numbers as IEEE 754 doubles: integers beyond this are not exact there."""


def canonical_json(value: Any) -> bytes:  # noqa: ANN401 - any JSON value
    """Return the RFC 8785 (JCS) encoding of `value`: the bytes to sign or hash.

    The reference encoder (`rfc8785`) is pure Python, and canonicalising was
    among the largest costs of the whole path. For the values Rogatory signs
    (objects, arrays, strings, booleans, null and safe integers; no floats)
    Python's C JSON encoder writes the same bytes: the same string escapes
    (only the quote, the backslash and the controls below 0x20, in the same
    short or six-character forms), integers in decimal, and keys sorted by
    code point, which is RFC 8785's UTF-16 order as long as no key holds a character beyond the
    BMP. Any other value (a float, a big integer, such a key, a subclass)
    takes the reference encoder. `tests/protocol/test_canonical_json.py`
    holds the two to the same bytes.
    """
    if _written_alike_by_the_c_encoder(value):
        try:
            return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()
        except UnicodeEncodeError:
            pass  # a lone surrogate: the reference encoder refuses it in its own words
    try:
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise MalformedInput(f"value cannot be canonicalised: {exc}", code=ErrorCode.MALFORMED_JSON) from exc


def _written_alike_by_the_c_encoder(value: Any) -> bool:  # noqa: ANN401 - any JSON value
    """Whether `value` holds only what `json.dumps` writes exactly as RFC 8785 does (`canonical_json`)."""
    pending = [value]
    while pending:
        item = pending.pop()
        kind = type(item)
        if kind is str or kind is bool or item is None:
            continue
        if kind is int:
            if -_SAFE_INTEGER <= item <= _SAFE_INTEGER:
                continue
            return False
        if kind is dict:
            for key in item:
                if type(key) is not str or (not key.isascii() and max(key) > "\uffff"):
                    return False
            pending.extend(item.values())
        elif kind is list or kind is tuple:
            pending.extend(item)
        else:
            return False
    return True


def sha256_hex(data: bytes) -> str:
    """Lower-case hex SHA-256 of `data`."""
    return hashlib.sha256(data).hexdigest()


# -- strict JSON parsing ----------------------------------------------------


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise MalformedInput(f"duplicate object key {key[:64]!r}", code=ErrorCode.DUPLICATE_KEY)
        obj[key] = value
    return obj


_MAX_INTEGER_DIGITS: Final = len(str(_SAFE_INTEGER))
"""Longer digit strings are refused before `int()` sees them: no conversion cost, no digit-limit `ValueError`."""


def _safe_integer(text: str) -> int:
    """An integer within ±(2^53 - 1), the range canonical JSON (RFC 8785) writes exactly."""
    if len(text.lstrip("-")) > _MAX_INTEGER_DIGITS or not -_SAFE_INTEGER <= (value := int(text)) <= _SAFE_INTEGER:
        raise LimitExceeded(
            f"integer of {len(text.lstrip('-'))} digits is beyond ±(2^53 - 1)", code=ErrorCode.NUMBER_OUT_OF_RANGE
        )
    return value


def _finite_float(text: str) -> float:
    """A float that a double holds: `1e400` would silently become infinity."""
    value = float(text)
    if not math.isfinite(value):
        raise LimitExceeded(f"number {text[:40]} overflows a double", code=ErrorCode.NUMBER_OUT_OF_RANGE)
    return value


def _no_constants(name: str) -> object:
    raise MalformedInput(f"{name} is not JSON", code=ErrorCode.MALFORMED_JSON)


_STRICT_HOOKS: Final[dict[str, Any]] = {
    "object_pairs_hook": _no_duplicate_keys,
    "parse_constant": _no_constants,
    "parse_int": _safe_integer,
    "parse_float": _finite_float,
}
"""What `json.loads` is given wherever Rogatory reads JSON: each hook refuses with our error, not a `ValueError`."""


def refuse_ambiguous_json(raw: bytes | str) -> None:
    """Raise `MalformedInput` if `raw` repeats a key, holds `NaN`/`Infinity` or a number out of range.

    Text that is not JSON at all passes: the caller's own parser reports it.
    Run before pydantic's own JSON parser, which keeps the last of two keys
    and reads `Infinity` and `NaN` into any float or untyped field.
    """
    try:
        json.loads(raw, **_STRICT_HOOKS)
    except (ValueError, RecursionError):  # not JSON: MalformedInput is no ValueError, so it goes through
        return


def load_json(raw: bytes | str) -> Any:  # noqa: ANN401 - JSON is Any by nature
    """Parse JSON with the strict hooks, every failure a `MalformedInput`; the caller bounds size and depth."""
    try:
        return json.loads(raw, **_STRICT_HOOKS)
    except RecursionError as exc:
        raise LimitExceeded("nesting too deep to parse", code=ErrorCode.NESTING_TOO_DEEP) from exc
    except UnicodeDecodeError as exc:
        raise MalformedInput(f"not UTF-8 at byte {exc.start}", code=ErrorCode.INVALID_UNICODE) from exc
    except ValueError as exc:  # JSONDecodeError, or any conversion error a hook did not anticipate
        raise MalformedInput(f"not JSON: {str(exc)[:200]}", code=ErrorCode.MALFORMED_JSON) from exc


def _check_depth_and_text(value: object, max_depth: int, *, texts: bool = True) -> None:
    """Refuse nesting deeper than `max_depth` and (if `texts`) strings with lone surrogates or NUL."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            if depth > max_depth:
                raise LimitExceeded(f"nesting deeper than {max_depth}", code=ErrorCode.NESTING_TOO_DEEP)
            for key, child in item.items():
                if texts:
                    _check_text(key)
                if texts or isinstance(child, dict | list):
                    stack.append((child, depth + 1))
        elif isinstance(item, list):
            if depth > max_depth:
                raise LimitExceeded(f"nesting deeper than {max_depth}", code=ErrorCode.NESTING_TOO_DEEP)
            stack.extend((child, depth + 1) for child in item if texts or isinstance(child, dict | list))
        elif texts and isinstance(item, str):
            _check_text(item)


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise MalformedInput("string holds a lone surrogate escape", code=ErrorCode.INVALID_UNICODE) from exc
    if "\x00" in text:
        raise MalformedInput("string holds a NUL character", code=ErrorCode.INVALID_UNICODE)


_SUSPECT_ESCAPE: Final = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")
"""An escape that may be a NUL or a surrogate (`parse_json_strict` then checks every string)."""


def parse_json_strict(raw: bytes, *, max_bytes: int, max_depth: int) -> Any:  # noqa: ANN401 - JSON is Any by nature
    """Parse UTF-8 JSON bytes, refusing anything two parsers might read differently."""
    if len(raw) > max_bytes:
        raise LimitExceeded(f"JSON of {len(raw)} bytes is over the limit of {max_bytes}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedInput(f"not UTF-8 at byte {exc.start}", code=ErrorCode.INVALID_UNICODE) from exc
    if text.startswith("\ufeff"):
        raise MalformedInput("a byte order mark is not allowed", code=ErrorCode.MALFORMED_JSON)
    try:
        value = json.loads(text, **_STRICT_HOOKS)
    except RecursionError as exc:
        raise LimitExceeded(f"nesting deeper than {max_depth}", code=ErrorCode.NESTING_TOO_DEEP) from exc
    except json.JSONDecodeError as exc:
        raise MalformedInput(
            f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}", code=ErrorCode.MALFORMED_JSON
        ) from exc
    except ValueError as exc:  # a conversion error no hook anticipated: still a refusal, never a crash
        raise MalformedInput(f"not JSON: {str(exc)[:200]}", code=ErrorCode.MALFORMED_JSON) from exc
    # A lone surrogate or a NUL can only come from an escape (`\\ud800`, `\\u0000`): text decoded as UTF-8
    # holds no surrogate, and the parser refuses raw control characters in strings. Without such an escape
    # (`_SUSPECT_ESCAPE` may also match what is none, which only costs the walk), only the depth is walked.
    _check_depth_and_text(value, max_depth, texts=_SUSPECT_ESCAPE.search(text) is not None)
    return value


# -- base64 -----------------------------------------------------------------


def b64encode(data: bytes) -> str:
    """Standard base64 with padding."""
    return base64.b64encode(data).decode("ascii")


def b64decode(text: str) -> bytes:
    """Decode standard base64, refusing any encoding but the canonical one."""
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
        raise MalformedInput("not canonical base64") from exc
    if base64.b64encode(data).decode("ascii") != text:
        raise MalformedInput("not canonical base64")
    return data


def _b64_field(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if not isinstance(value, str):
        # ValueError, not TypeError: pydantic turns only ValueError into a ValidationError
        # (and so into our refusal); a TypeError would escape every parser as a crash.
        raise ValueError("expected a base64 string")  # noqa: TRY004
    try:
        return b64decode(value)
    except MalformedInput as exc:
        raise ValueError(exc.detail) from None


# Bytes that travel in JSON as canonical standard base64.
Base64Bytes = Annotated[
    bytes,
    PlainValidator(_b64_field),
    PlainSerializer(b64encode, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "contentEncoding": "base64"}),
]


# -- timestamps -------------------------------------------------------------


def format_timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC with milliseconds and `Z`: `2026-11-29T09:46:11.123Z`."""
    if moment.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").removesuffix("+00:00") + "Z"


def truncate_to_millis(moment: datetime) -> datetime:
    """`moment` in UTC with sub-millisecond digits dropped, as it will be encoded."""
    moment = moment.astimezone(UTC)
    return moment.replace(microsecond=(moment.microsecond // 1000) * 1000)


def parse_timestamp(text: str) -> datetime:
    """Parse a timezone-aware RFC 3339 timestamp into UTC."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise MalformedInput(f"not an RFC 3339 timestamp: {text[:40]!r}", code=ErrorCode.CONTENT_INVALID) from exc
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise MalformedInput(f"timestamp without a time zone: {text[:40]!r}", code=ErrorCode.CONTENT_INVALID)
    return moment.astimezone(UTC)


def _require_aware(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("timestamp must carry a time zone")
    return truncate_to_millis(moment)


# A UTC instant at millisecond precision, serialised as `format_timestamp` does.
UtcTimestamp = Annotated[
    datetime,
    AfterValidator(_require_aware),
    PlainSerializer(format_timestamp, return_type=str, when_used="json"),
]


def seconds(value: float) -> timedelta:
    """A `timedelta` of `value` seconds, for readable limits."""
    return timedelta(seconds=value)


# -- pre-authentication encoding ---------------------------------------------

PAE_PREFIX = b"ROGATORYv1"


def pae(payload_type: str, payload: bytes) -> bytes:
    """Pre-authentication encoding (as DSSE's PAE): what a signature covers.

    `"ROGATORYv1" SP len(type) SP type SP len(payload) SP payload`, lengths in
    ASCII decimal. The type string domain-separates every kind of signed
    object, so a signature over one kind can never be replayed as another.
    """
    type_bytes = payload_type.encode("utf-8")
    return b"%s %d %s %d %s" % (PAE_PREFIX, len(type_bytes), type_bytes, len(payload), payload)


__all__ = [
    "PAE_PREFIX",
    "Base64Bytes",
    "UtcTimestamp",
    "b64decode",
    "b64encode",
    "canonical_json",
    "format_timestamp",
    "load_json",
    "pae",
    "parse_json_strict",
    "parse_timestamp",
    "refuse_ambiguous_json",
    "seconds",
    "sha256_hex",
    "truncate_to_millis",
]
