"""Strict JSON: whatever two parsers could read differently is refused, with a stable code."""

from __future__ import annotations

import pytest

from protocol.encoding import load_json, parse_json_strict
from protocol.envelope import EnvelopeHeader
from protocol.errors import ErrorCode, ProtocolError
from protocol.mla import validate_document
from protocol.model import parse_model


def parse(raw: bytes):
    return parse_json_strict(raw, max_bytes=1024, max_depth=8)


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b'{"a": 1, "a": 2}', ErrorCode.DUPLICATE_KEY),
        (b'{"a": "\\ud800"}', ErrorCode.INVALID_UNICODE),
        (b'{"a": "\\u0000"}', ErrorCode.INVALID_UNICODE),
        (b'{"\\uDC00": 1}', ErrorCode.INVALID_UNICODE),
        (b'{"a": [{"b": ["x", "\\uDBFF"]}]}', ErrorCode.INVALID_UNICODE),
        (b'{"a": "\\ud83d\\ude00", "b": "\\ud83d"}', ErrorCode.INVALID_UNICODE),
        (b'{"a": [{"b": [[[[[[[[1]]]]]]]]}]}', ErrorCode.NESTING_TOO_DEEP),
        (b"\xff\xfe{}", ErrorCode.INVALID_UNICODE),
        (b'{"a": NaN}', ErrorCode.MALFORMED_JSON),
        (b'{"a": Infinity}', ErrorCode.MALFORMED_JSON),
        (b'{"a": 1', ErrorCode.MALFORMED_JSON),
        (b"\xef\xbb\xbf{}", ErrorCode.MALFORMED_JSON),
        (b"[" * 9 + b"]" * 9, ErrorCode.NESTING_TOO_DEEP),
        (b"[" * 1000, ErrorCode.NESTING_TOO_DEEP),
        (b'"' + b"a" * 2000 + b'"', ErrorCode.TOO_LARGE),
        (b"9" * 1000, ErrorCode.NUMBER_OUT_OF_RANGE),
        (b"-9007199254740992", ErrorCode.NUMBER_OUT_OF_RANGE),
        (b"[1e400]", ErrorCode.NUMBER_OUT_OF_RANGE),
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


def test_escaped_text_that_is_neither_a_nul_nor_a_lone_surrogate_is_kept():
    """Escapes of ordinary characters and of a surrogate pair parse to the characters they name."""
    assert parse(b'{"\\u0627": "\\ud83d\\ude00\\u09ac\\u00e9\\\\ud800"}') == {"\u0627": "\U0001f600\u09ac\u00e9\\ud800"}


def test_huge_integers_and_infinities_are_refused_by_every_protocol_parser():
    """An integer past Python's digit limit, `Infinity`, `NaN` or `1e400` is refused with a code, not a ValueError."""
    huge = b"9" * 5000
    for raw, code in [
        (b'{"a": ' + huge + b"}", ErrorCode.NUMBER_OUT_OF_RANGE),
        (b'{"a": 1e400}', ErrorCode.NUMBER_OUT_OF_RANGE),
        (b'{"a": Infinity}', ErrorCode.MALFORMED_JSON),
        (b'{"a": NaN}', ErrorCode.MALFORMED_JSON),
    ]:
        for parser in (
            lambda raw: parse_json_strict(raw, max_bytes=1 << 20, max_depth=8),
            load_json,
            validate_document,
            lambda raw: parse_model(EnvelopeHeader, raw, what="header"),
        ):
            with pytest.raises(ProtocolError) as refused:
                parser(raw)
            assert refused.value.code == code, (raw[:20], parser)
    assert parse_json_strict(b"[9007199254740991, -1.5e300]", max_bytes=64, max_depth=2) == [2**53 - 1, -1.5e300]
