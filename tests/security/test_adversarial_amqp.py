"""Adversarial input over AMQP: bad bytes and bad properties published to `mla.submit` as an agency.

Each input is refused by the gateway with a stable code and an audit-log
entry (a `SUBMISSION_REJECTED` evidence told to the publisher, or a
`rejected_input` leaf where no message can be named); the gateway stays up
and the next good message flows. Several inputs are signed with the
agency's real key, as a compromised agency system would: the parser behind
the signature is attacked too.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import aio_pika
import aiohttp
import pytest

from deploy.client.agent_api import poll
from deploy.localnet.network import NetworkPaths
from protocol.auditlog import EvidenceLeaf, RejectedInputLeaf, decode_leaf
from protocol.directory import Directory
from protocol.encoding import b64decode, pae
from protocol.envelope import MAGIC, SealedMessage
from protocol.errors import ErrorCode, ProtocolError
from protocol.evidence import verify_evidence
from protocol.keys import SigningPrivateKey
from protocol.keystore import unlock_keystore
from protocol.limits import DEFAULT_LIMITS
from protocol.signing import PAYLOAD_TYPE_HEADER
from protocol.topology import KIND_EVIDENCE, KIND_SEALED_MESSAGE, SUBMIT_EXCHANGE
from tests.security.conftest import BD, good_message_flows

pytestmark = [pytest.mark.e2e, pytest.mark.broker]
_U32 = struct.Struct(">I")
MALFORMED = ErrorCode.MALFORMED_ENVELOPE


@dataclass(frozen=True)
class BadInput:
    """One input: its body, AMQP properties, and the code the gateway must refuse it with."""

    name: str
    body: bytes
    code: ErrorCode
    kind: str | None = KIND_SEALED_MESSAGE
    own_user_id: bool = True
    headers: dict[str, Any] = field(default_factory=dict)
    content_type: str = "application/octet-stream"
    message_id: str | None = None

    @property
    def digest(self) -> str:
        """What the audit entry names: the signed header's digest if the frame splits, else the body's."""
        try:
            return SealedMessage.from_bytes(self.body, DEFAULT_LIMITS).digest
        except ProtocolError:
            return hashlib.sha256(self.body).hexdigest()


def frame(key_id: str, header: bytes, signature: bytes, ciphertext: bytes = b"") -> bytes:
    """A sealed-message frame around any header bytes."""
    return MAGIC + bytes.fromhex(key_id) + _U32.pack(len(header)) + header + signature + ciphertext


def signed(key: SigningPrivateKey, header: bytes) -> bytes:
    """A frame whose header, whatever it holds, is validly signed by `key`."""
    return frame(key.key_id, header, key.sign(pae(PAYLOAD_TYPE_HEADER, header)), secrets.token_bytes(16))


def header_json(**fields: object) -> bytes:
    """An envelope header with `fields` changed from a plausible one."""
    header: dict[str, object] = {
        "format": "rogatory-envelope/1",
        "message_id": str(uuid.uuid4()),
        "sender": BD,
        "sender_key": "00" * 16,
        "recipients": [{"agency": "LY-MLA-CA", "key_id": "11" * 16, "wrapped": "AAAA"}],
        "message_type": "MLA_REQUEST",
        "case_id": "BD-LY-2025-0007",
        "created_at": datetime.now(UTC).isoformat(),
        "expires_at": datetime.now(UTC).isoformat(),
        "nonce": "A" * 32,
        "ciphertext_sha256": "0" * 64,
        "ciphertext_length": 16,
        "key_commitment": "0" * 64,
    }
    header.update(fields)
    return json.dumps(header, ensure_ascii=False).encode("utf-8")


def corpus(key: SigningPrivateKey) -> list[BadInput]:
    """At least 30 bad inputs, each with a unique body (the audit log names bodies by digest)."""
    nonce: Callable[[], bytes] = lambda: secrets.token_hex(8).encode()  # noqa: E731 - a one-line helper
    stranger = SigningPrivateKey.generate()
    return [
        BadInput("empty_body", b"", MALFORMED),
        BadInput("plain_text", b"hello gateway " + nonce(), MALFORMED),
        BadInput("truncated_json", b'{"message_id": "' + nonce(), MALFORMED),
        BadInput("empty_json_object", b'{"n":"' + nonce() + b'"}', MALFORMED),
        BadInput("deeply_nested_json", b"[" * 100_000 + nonce(), MALFORMED),
        BadInput("over_the_size_limit", nonce() + b"A" * (DEFAULT_LIMITS.max_sealed_bytes + 1), ErrorCode.TOO_LARGE),
        BadInput("huge_json_array", b"[" + b"1," * 500_000 + nonce() + b"]", MALFORMED),
        BadInput("invalid_utf8", b"\xff\xfe\xc3\x28\xa0\xa1" + nonce(), MALFORMED),
        BadInput("null_bytes", b"\x00" * 4096 + nonce(), MALFORMED),
        BadInput("magic_only", MAGIC, MALFORMED),
        BadInput("absurd_header_length", MAGIC + bytes(16) + b"\xff" * 4 + nonce() * 20, ErrorCode.TOO_LARGE),
        BadInput("header_length_past_the_end", MAGIC + bytes(16) + _U32.pack(60_000) + b"{}" + nonce(), MALFORMED),
        BadInput("unknown_signing_key", signed(stranger, header_json()), ErrorCode.UNKNOWN_KEY),
        BadInput("forged_signature", frame(key.key_id, header_json(), bytes(64), nonce()), ErrorCode.BAD_SIGNATURE),
        BadInput("signed_header_not_json", signed(key, b"not json " + nonce()), MALFORMED),
        BadInput("signed_header_truncated_json", signed(key, header_json()[:-20]), MALFORMED),
        BadInput(
            "signed_header_wrong_types", signed(key, header_json(recipients="LY", ciphertext_length="16")), MALFORMED
        ),
        BadInput("signed_header_lookalike_sender", signed(key, header_json(sender="\u0412D-MOHA-PSD")), MALFORMED),
        BadInput("signed_header_null_byte_in_case", signed(key, header_json(case_id="BD-LY-2025\x00-0007")), MALFORMED),
        BadInput(
            "signed_header_deep_nesting",
            signed(key, header_json(case_id=[[[[[[[[[[[[[[[["x"]]]]]]]]]]]]]]]])),
            MALFORMED,
        ),
        BadInput("signed_header_huge_string", signed(key, header_json(case_id="C" * 60_000)), MALFORMED),
        BadInput(
            "signed_header_duplicate_key",
            # Signed bytes two readers could read differently (first or last "sender" wins) are refused.
            signed(key, header_json()[:-1] + b', "sender": "LY-MLA-CA"}'),
            ErrorCode.DUPLICATE_KEY,
        ),
        # Numbers no parser may let through: past Python's digit limit (a bare ValueError once), past 2^53,
        # overflowing a double, and the non-JSON constants; behind the agency's valid signature and in evidence.
        BadInput(
            "signed_header_huge_integer",
            signed(key, header_json().replace(b'"ciphertext_length": 16', b'"ciphertext_length": ' + b"9" * 5000)),
            ErrorCode.NUMBER_OUT_OF_RANGE,
        ),
        BadInput(
            "signed_header_infinity",
            signed(key, header_json().replace(b'"ciphertext_length": 16', b'"ciphertext_length": Infinity')),
            ErrorCode.MALFORMED_JSON,
        ),
        BadInput(
            "signed_header_nan",
            signed(key, header_json().replace(b'"ciphertext_length": 16', b'"ciphertext_length": NaN')),
            ErrorCode.MALFORMED_JSON,
        ),
        BadInput(
            "evidence_huge_integer",
            b'{"payload_type": "x", "n": "' + nonce() + b'", "size": ' + b"9" * 5000 + b"}",
            ErrorCode.NUMBER_OUT_OF_RANGE,
            kind=KIND_EVIDENCE,
        ),
        BadInput(
            "evidence_overflowing_float",
            b'{"payload_type": "x", "n": "' + nonce() + b'", "size": 1e400}',
            ErrorCode.NUMBER_OUT_OF_RANGE,
            kind=KIND_EVIDENCE,
        ),
        BadInput(
            "evidence_infinity",
            b'{"payload_type": "x", "n": "' + nonce() + b'", "size": -Infinity}',
            ErrorCode.MALFORMED_JSON,
            kind=KIND_EVIDENCE,
        ),
        BadInput("no_kind", b"no kind " + nonce(), MALFORMED, kind=None),
        BadInput("lookalike_kind", b"lookalike kind " + nonce(), MALFORMED, kind="rogatory.sealed-m\u0435ssage.v1"),
        BadInput("null_bytes_kind", b"null kind " + nonce(), MALFORMED, kind="\x00" * 100),
        BadInput("evidence_not_utf8", b"\x80evidence " + nonce(), ErrorCode.INVALID_UNICODE, kind=KIND_EVIDENCE),
        BadInput(
            "evidence_wrong_types",
            b'{"payload_type": 5, "payload": [1], "signatures": "x", "n": "' + nonce() + b'"}',
            ErrorCode.MALFORMED_EVIDENCE,
            kind=KIND_EVIDENCE,
        ),
        BadInput("no_user_id", b"anonymous " + nonce(), ErrorCode.BROKER_USER_MISMATCH, own_user_id=False),
        BadInput(
            "absurd_headers",
            b"absurd headers " + nonce(),
            MALFORMED,
            headers={f"x-junk-{index}": "\u202e" * 40 + "\x00" * 10 for index in range(300)},
        ),
        BadInput("wrong_content_type", b'{"json": "' + nonce() + b'"}', MALFORMED, content_type="text/html"),
        BadInput("junk_message_id", b"junk id " + nonce(), MALFORMED, message_id="\u0430" * 60 + "../../etc"),
        # Headers only the broker should write: the gateway reads nothing from them (SECURITY.md, finding 1).
        BadInput(
            "forged_x_death_into_an_inbox",
            b"forged x-death " + nonce(),
            MALFORMED,
            headers={"x-death": [{"queue": "mla.inbox.LY-MLA-CA", "reason": "delivery_limit", "count": 10**12}]},
        ),
        BadInput(
            "forged_first_death_overlong_queue",
            b"forged first death " + nonce(),
            MALFORMED,
            headers={"x-first-death-queue": "mla.inbox." + "Q" * 10_000, "x-first-death-reason": "Not A Reason!"},
        ),
        BadInput("forged_x_death_not_a_list", b"x-death junk " + nonce(), MALFORMED, headers={"x-death": "junk"}),
        BadInput(
            "forged_last_death_and_delivery_count",
            b"forged last death " + nonce(),
            MALFORMED,
            headers={"x-last-death-queue": "mla.dead", "x-delivery-count": -1},
        ),
        BadInput("cc_to_another_inbox", b"cc " + nonce(), MALFORMED, headers={"CC": ["LY-MLA-CA", "#"]}),
        BadInput("bcc_to_another_inbox", b"bcc " + nonce(), MALFORMED, headers={"BCC": ["LY-MLA-CA"]}),
        BadInput(
            "forged_death_without_user_id",
            b"anonymous forged death " + nonce(),
            ErrorCode.BROKER_USER_MISMATCH,
            own_user_id=False,
            headers={"x-first-death-queue": "mla.inbox.LY-MLA-CA", "x-first-death-reason": "delivery_limit"},
        ),
    ]


async def audit_entries(gateway: dict[str, Any], session: aiohttp.ClientSession, start: int) -> list[dict[str, Any]]:
    """Every audit-log entry from index `start` on."""
    entries: list[dict[str, Any]] = []
    headers = {"Authorization": f"Bearer {gateway['auditor_token']}"}
    next_start: int | None = start
    while next_start is not None:
        async with session.get(
            f"{gateway['url']}/v1/audit/entries", params={"start": str(next_start), "limit": "1000"}, headers=headers
        ) as got:
            assert got.status == 200, await got.text()
            page = await got.json()
        entries += page["entries"]
        next_start = page["next_start"]
    return entries


def refusals(entries: list[dict[str, Any]], directory: Directory) -> dict[str, str]:
    """Audited refusals by the digest they name: rejected inputs and `SUBMISSION_REJECTED` evidence."""
    found: dict[str, str] = {}
    for entry in entries:
        leaf = decode_leaf(b64decode(entry["leaf"]))
        if isinstance(leaf, RejectedInputLeaf):
            found[leaf.body_sha256] = leaf.reason.code
        elif isinstance(leaf, EvidenceLeaf):
            statement = verify_evidence(leaf.evidence, directory, now=datetime.now(UTC)).statement
            if statement.evidence_type == "SUBMISSION_REJECTED" and statement.reason is not None:
                found[statement.message_digest] = statement.reason.code
    return found


def agency_key(stack: dict[str, Any], agency: str) -> SigningPrivateKey:
    """The agency's signing key, unlocked from its keystore (the attacker is that agency's own system)."""
    paths = NetworkPaths(Path(stack["network"]["state_dir"]))
    keys = unlock_keystore(paths.keystore(agency).read_bytes(), paths.passphrase(agency).read_bytes().strip())
    return SigningPrivateKey(keys["signing"])


async def test_bad_amqp_inputs_are_each_refused_audited_and_the_next_good_message_flows(
    security_stack: dict[str, Any], security_directory: Directory, session: aiohttp.ClientSession
) -> None:
    """30+ bad inputs over AMQP: each gets its stable code in an audit entry; the gateway stays up; good mail flows."""
    inputs = corpus(agency_key(security_stack, BD))
    assert len(inputs) >= 30
    assert len({item.digest for item in inputs}) == len(inputs)
    gateway = security_stack["gateway"]
    start = len(await audit_entries(gateway, session, 0))
    amqp_url = security_stack["agents"][BD]["amqp_url"]
    assert amqp_url.startswith("amqps://")
    connection = await aio_pika.connect(amqp_url, timeout=15)
    try:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        exchange = await channel.get_exchange(SUBMIT_EXCHANGE, ensure=False)
        for item in inputs:
            message = aio_pika.Message(
                item.body,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                type=item.kind,
                message_id=item.message_id or str(uuid.uuid4()),
                user_id=unquote(urlsplit(amqp_url).username or "") if item.own_user_id else None,
                content_type=item.content_type,
                headers=item.headers,
            )
            await exchange.publish(message, routing_key=BD, mandatory=True, timeout=15)
    finally:
        await connection.close()

    async def all_audited() -> dict[str, str] | None:
        found = refusals(await audit_entries(gateway, session, start), security_directory)
        return found if all(item.digest in found for item in inputs) else None

    try:
        found = await poll(all_audited, within_s=60, what="an audit entry for every bad input", interval=0.5)
    except TimeoutError:
        found = refusals(await audit_entries(gateway, session, start), security_directory)
        missing = [item.name for item in inputs if item.digest not in found]
        pytest.fail(f"no audit entry for {missing}")
    codes = {item.name: found[item.digest] for item in inputs}
    assert codes == {item.name: item.code for item in inputs}
    async with session.get(f"{gateway['url']}/healthz") as health:
        assert health.status == 200
    await good_message_flows(security_stack, session)
