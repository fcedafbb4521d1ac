"""Strict JSON: whatever two parsers could read differently is refused, with a stable code."""

from __future__ import annotations

import pytest

from protocol.encoding import parse_json_strict
from protocol.errors import ErrorCode, ProtocolError


def parse(raw: bytes):
    return parse_json_strict(raw, max_bytes=1024, max_depth=8)


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b'{"a": 1, "a": 2}', ErrorCode.DUPLICATE_KEY),
        (b'{"a": "\\ud800"}', ErrorCode.INVALID_UNICODE),
        (b'{"a": "\\u0000"}', ErrorCode.INVALID_UNICODE),
        (b"\xff\xfe{}", ErrorCode.INVALID_UNICODE),
        (b'{"a": NaN}', ErrorCode.MALFORMED_JSON),
        (b'{"a": Infinity}', ErrorCode.MALFORMED_JSON),
        (b'{"a": 1', ErrorCode.MALFORMED_JSON),
        (b"\xef\xbb\xbf{}", ErrorCode.MALFORMED_JSON),
        (b"[" * 9 + b"]" * 9, ErrorCode.NESTING_TOO_DEEP),
        (b"[" * 1000, ErrorCode.NESTING_TOO_DEEP),
        (b'"' + b"a" * 2000 + b'"', ErrorCode.TOO_LARGE),
    ],
)
def test_ambiguous_or_oversized_json_is_refused_with_its_code(raw, code):
    """Each kind of bad JSON gets its own stable code."""
    with pytest.raises(ProtocolError) as refused:
        parse(raw)
    assert refused.value.code == code


def test_arabic_and_bengali_parse_unchanged():
    """Text outside ASCII is kept exactly, not normalised."""
    text = "\u0627\u0644\u0633\u0644\u0637\u0629 \u09ac\u09be\u0982\u09b2\u09be e\u0301"
    assert parse(f'{{"t": "{text}"}}'.encode())["t"] == text
