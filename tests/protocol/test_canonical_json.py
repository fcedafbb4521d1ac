"""Canonical JSON: the fast path writes exactly the bytes of the RFC 8785 reference encoder, or refuses alike."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.encoding import canonical_json, format_timestamp, parse_timestamp
from protocol.errors import MalformedInput

# Text meant to reach every branch: controls, quotes, backslashes, BMP characters above the surrogates
# (U+E000..U+FFFF sort differently in UTF-16 than in code points against astral ones), astral characters,
# and lone surrogates (not UTF-8: refused).
_TRICKY = st.sampled_from(["\x00", "\x1f", '"', "\\", "\x7f", "\u2028", "\ue000", "\uffff", "\U0001f600", "\ud800"])
_TEXT = st.lists(st.one_of(st.characters(), _TRICKY), max_size=8).map("".join)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**60), max_value=2**60),
    st.floats(allow_nan=True, allow_infinity=True),
    _TEXT,
)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(_TEXT, inner, max_size=5)),
    max_leaves=30,
)


def _reference(value: Any) -> bytes | type[Exception]:
    try:
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, TypeError, ValueError):
        return MalformedInput


def _ours(value: Any) -> bytes | type[Exception]:
    try:
        return canonical_json(value)
    except MalformedInput:
        return MalformedInput


@settings(max_examples=1500, deadline=None)
@given(_JSON)
def test_canonical_json_is_the_reference_encoding_of_any_value(value: Any) -> None:
    """Whatever the value, the bytes (or the refusal) are the RFC 8785 reference encoder's."""
    assert _ours(value) == _reference(value)


@pytest.mark.parametrize(
    "value",
    [
        {"\ue000": 1, "\U0001f600": 2},  # UTF-16 puts the astral key first, code points put it last
        {"n": 2**53},  # beyond the safe integers
        {"n": 1.5},
        {"s": "\ud800"},  # a lone surrogate
        {"k": [True, None, -(2**53) + 1, 'é\n\t"\\']},
    ],
)
def test_values_off_the_fast_path_are_still_encoded_as_rfc_8785_says(value: Any) -> None:
    """The cases where Python's encoder would differ go to the reference encoder."""
    assert _ours(value) == _reference(value)


_SINCE_YEAR_1000 = datetime(1000, 1, 2)  # noqa: DTZ001 - hypothesis takes naive bounds and adds the zone


@given(st.datetimes(min_value=_SINCE_YEAR_1000, timezones=st.just(UTC)), st.integers(-14 * 60, 14 * 60))
def test_timestamps_are_written_in_utc_with_milliseconds_and_read_back(moment: datetime, offset_min: int) -> None:
    """`format_timestamp` writes RFC 3339 UTC with milliseconds and `Z`, whatever the zone it was given in."""
    local = moment.astimezone(timezone(timedelta(minutes=offset_min)))
    text = format_timestamp(local)
    assert text == moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    assert parse_timestamp(text) == moment.replace(microsecond=moment.microsecond // 1000 * 1000)
