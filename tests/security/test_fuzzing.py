"""Property-based fuzzing (Hypothesis) of the envelope and evidence parsers and of the agent API.

The parsers may only ever refuse with a `ProtocolError` (a stable code):
any other exception would escape the services' refusal paths as a crash.
The API may only ever answer below 500 to whatever JSON it is sent.
"""

from __future__ import annotations

import asyncio
import io
import json
import tempfile
import uuid
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.encoding import pae, parse_json_strict
from protocol.envelope import MAGIC, SealedMessage, authenticate_header, open_sealed
from protocol.errors import ProtocolError
from protocol.evidence import parse_signed_evidence, verify_evidence
from protocol.mla import validate_document
from protocol.signing import PAYLOAD_TYPE_HEADER
from tests.agents.harness import start_agent
from tests.security.attacks import valid_document
from tests.support.network import BD, LY, NOW, LocalNetwork

NET = LocalNetwork()
DIRECTORY = NET.directory()
HONEST = NET.seal(valid_document(uuid.uuid4())).to_bytes()  # type: ignore[arg-type]

RAW_NUMBERS = {
    "\ue000huge": "9" * 5000,  # past Python's digit limit: `int()` raises a bare ValueError
    "\ue000-huge": "-" + "9" * 5000,
    "\ue000beyond-2-53": str(2**53),
    "\ue000overflow": "1e400",  # `float()` reads it as infinity
}
"""Placeholders that `dumps` writes as numbers `json.dumps` cannot produce (digit limit) or would not choose."""

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # NaN, Infinity and -Infinity included: json.dumps writes them as bare constants
    | st.sampled_from(sorted(RAW_NUMBERS))
    | st.text(max_size=40),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=6),
    max_leaves=25,
)


def dumps(value: Any) -> bytes:
    """`value` as JSON bytes, each `RAW_NUMBERS` placeholder written as its number."""
    text = json.dumps(value)
    for placeholder, number in RAW_NUMBERS.items():
        text = text.replace(json.dumps(placeholder), number)
    return text.encode("utf-8")


HEADER_FIELDS = (
    *("format", "message_id", "sender", "sender_key", "recipients", "archive", "message_type", "case_id"),
    *("created_at", "expires_at", "nonce", "ciphertext_sha256", "ciphertext_length", "key_commitment"),
)
header_like = st.fixed_dictionaries({}, optional=dict.fromkeys(HEADER_FIELDS, json_values))


def refuses_cleanly(wire: bytes) -> None:
    """Parse, authenticate and open as LY: a refusal must be a `ProtocolError`."""
    try:
        sealed = SealedMessage.from_bytes(wire, NET.limits)
        authenticate_header(sealed, DIRECTORY, now=NOW)
        open_sealed(sealed, DIRECTORY, recipient=LY, recipient_keys=NET[LY].decryption_keys, now=NOW, limits=NET.limits)
    except ProtocolError:
        return


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=2048))
def test_any_bytes_are_refused_with_a_protocol_error(raw: bytes) -> None:
    """Arbitrary bytes, with or without the magic prefix, never crash the envelope parser."""
    refuses_cleanly(raw)
    refuses_cleanly(MAGIC + raw)


@settings(max_examples=150, deadline=None)
@given(st.integers(min_value=0, max_value=len(HONEST)), st.integers(min_value=0, max_value=64), st.binary(max_size=64))
def test_spliced_real_messages_are_refused_or_open_unchanged(start: int, length: int, insert: bytes) -> None:
    """Cutting and splicing a real sealed message never crashes it and never opens to other content."""
    spliced = HONEST[:start] + insert + HONEST[start + length :]
    if spliced == HONEST:
        return
    refuses_cleanly(spliced)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(header_like)
def test_validly_signed_headers_of_any_shape_are_refused_with_a_protocol_error(header: dict[str, Any]) -> None:
    """Behind a valid signature (a compromised agency), any JSON header still only ever gets a clean refusal."""
    header_bytes = dumps(header)
    key = NET[BD].signing
    wire = (
        MAGIC
        + bytes.fromhex(key.key_id)
        + len(header_bytes).to_bytes(4, "big")
        + header_bytes
        + key.sign(pae(PAYLOAD_TYPE_HEADER, header_bytes))
        + b"ciphertext"
    )
    refuses_cleanly(wire)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.sampled_from(["payload_type", "payload", "signatures", "x"]), json_values, max_size=4))
def test_evidence_of_any_shape_is_refused_with_a_protocol_error(statement: dict[str, Any]) -> None:
    """Evidence bodies of any JSON shape are refused as `ProtocolError` (a wrong type once crashed the gateway)."""
    try:
        verify_evidence(parse_signed_evidence(dumps(statement), NET.limits), DIRECTORY, now=NOW)
    except ProtocolError:
        return


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_documents_of_any_json_are_refused_with_a_protocol_error(value: Any) -> None:
    """What a recipient decrypts, of any JSON (huge numbers, `NaN`, `Infinity`), is refused only as `ProtocolError`."""
    try:
        parse_json_strict(dumps(value), max_bytes=NET.limits.max_document_bytes, max_depth=NET.limits.max_json_depth)
        validate_document(dumps(value))
    except ProtocolError:
        return


def test_the_api_answers_any_json_below_500() -> None:
    """Whatever JSON is posted as a message, or whatever path is asked for, the agent answers 4xx, never 5xx."""
    loop = asyncio.new_event_loop()
    with tempfile.TemporaryDirectory() as directory:
        agent = loop.run_until_complete(start_agent(NET, DIRECTORY, BD, Path(directory)))
        try:
            headers = {"Authorization": "Bearer agent-test-token", "Content-Type": "application/json"}

            async def post(body: bytes) -> int:
                async with agent.http.post("/v1/messages", data=io.BytesIO(body), headers=headers) as response:
                    await response.read()
                    return response.status

            async def get(path: str) -> int:
                async with agent.http.get(path, headers=headers) as response:
                    await response.read()
                    return response.status

            @settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
            @given(json_values)
            def post_any(value: Any) -> None:
                status = loop.run_until_complete(post(dumps(value)))
                assert 400 <= status < 500, (status, value)

            @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
            @given(
                st.sampled_from(["/v1/messages/", "/v1/inbox?limit=", "/v1/cases/", "/v1/schema/", "/v1/inbox?after="]),
                st.text(st.characters(codec="utf-8", exclude_characters="#?"), max_size=60),
            )
            def get_any(prefix: str, tail: str) -> None:
                status = loop.run_until_complete(get(prefix + tail.replace("\\", "")))
                assert status < 500, (status, prefix, tail)

            post_any()
            get_any()
        finally:
            loop.run_until_complete(agent.close())
            loop.close()
