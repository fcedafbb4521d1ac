"""Attacks on the envelope, each built as the attacker would build it, for the gateway and the recipient.

Every attack is a wire message and the publisher it arrives from, with the
code the gateway must refuse it with (None where the gateway, which never
holds a content key, cannot see it) and the code the recipient must refuse
it with. `tests/security/test_attacks_everywhere.py` runs each through both.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import nacl.bindings

from protocol.directory import AgencyEntry, Agreement, AgreementRule, Directory, PublishedSigningKey
from protocol.encoding import pae, sha256_hex
from protocol.envelope import EnvelopeHeader, SealedMessage, WrappedKey, key_commitment
from protocol.errors import ErrorCode
from protocol.ids import AgencyId, MessageId
from protocol.keys import SigningPrivateKey
from protocol.signing import PAYLOAD_TYPE_HEADER
from tests.support.network import BD, BD_POLICE, LY, LY_AGO, NOW, LocalNetwork, published

SAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "samples" / "BD-LY-2025-0007_01_MLA_REQUEST.json"
_AD_TYPE = "application/vnd.rogatory.content-ad+json; version=1"


def everyone_may_talk(net: LocalNetwork) -> Directory:
    """The network's directory with one agreement letting every agency send anything to every other.

    Policy is not what these attacks test: with it out of the way, only the
    cryptographic checks can stop them.
    """
    everyone = tuple(net.agencies)
    return net.directory(
        agreements=(
            Agreement(
                agreement_id="ALL",
                title="all to all (test)",
                valid_from=NOW - timedelta(days=1),
                valid_until=NOW + timedelta(days=365),
                rules=(AgreementRule(senders=everyone, recipients=everyone, message_types=("*",)),),
            ),
        )
    )


def valid_document(message_id: MessageId, *, marker: str = "") -> bytes:
    """A valid MLA request from BD to LY in case BD-LY-2025-0007 (as `LocalNetwork.seal` addresses it)."""
    document = json.loads(SAMPLE.read_text(encoding="utf-8"))
    document = copy.deepcopy(document) | {"message_id": str(message_id)}
    if marker:
        document["requesting_ref"] = marker
    return json.dumps(document, ensure_ascii=False).encode("utf-8")


def header_of(sealed: SealedMessage) -> EnvelopeHeader:
    """The header as the sender signed it."""
    return EnvelopeHeader.model_validate_json(sealed.header_bytes)


def resign(sealed: SealedMessage, header: EnvelopeHeader, signer: SigningPrivateKey) -> SealedMessage:
    """What someone holding `signer` can build: a new header, validly signed by that key."""
    header_bytes = header.canonical_bytes()
    return dataclasses.replace(
        sealed,
        signer_key_id=signer.key_id,
        header_bytes=header_bytes,
        header_signature=signer.sign(pae(PAYLOAD_TYPE_HEADER, header_bytes)),
    )


def flip(raw: bytes, position: int) -> bytes:
    """`raw` with one bit of the byte at `position` flipped."""
    changed = bytearray(raw)
    changed[position] ^= 0x01
    return bytes(changed)


@dataclass(frozen=True)
class Attack:
    """One attack: what arrives, from whom, for whom, and the codes that must refuse it."""

    wire: bytes
    publisher: AgencyId
    recipient: AgencyId
    gateway_code: ErrorCode | None
    recipient_code: ErrorCode
    directory: Directory | None = None
    before: tuple[bytes, ...] = field(default=())
    """Honest messages delivered first (a replay needs its original)."""


def _forged_signature(net: LocalNetwork) -> Attack:
    sealed = net.seal(valid_document(MessageId(uuid.uuid4())))
    forged = dataclasses.replace(sealed, header_signature=bytes(64))
    return Attack(forged.to_bytes(), BD, LY, ErrorCode.BAD_SIGNATURE, ErrorCode.BAD_SIGNATURE)


def _stripped_signature(net: LocalNetwork) -> Attack:
    wire = net.seal(valid_document(MessageId(uuid.uuid4()))).to_bytes()
    sealed = SealedMessage.from_bytes(wire, net.limits)
    header_end = len(wire) - len(sealed.ciphertext) - 64
    stripped = wire[:header_end] + sealed.ciphertext
    return Attack(stripped, BD, LY, ErrorCode.BAD_SIGNATURE, ErrorCode.BAD_SIGNATURE)


def _replaced_signature(net: LocalNetwork) -> Attack:
    """LY signs BD's header with its own key, hoping to pass it off."""
    sealed = net.seal(valid_document(MessageId(uuid.uuid4())))
    replaced = resign(sealed, header_of(sealed), net[LY].signing)
    return Attack(replaced.to_bytes(), BD, LY, ErrorCode.SENDER_MISMATCH, ErrorCode.SENDER_MISMATCH)


def _swapped_recipient(net: LocalNetwork) -> Attack:
    """An outsider re-addresses LY's copy to LY-AGO (it cannot sign as BD)."""
    sealed = net.seal(valid_document(MessageId(uuid.uuid4())))
    header = header_of(sealed)
    moved = header.recipients[0].model_copy(update={"agency": LY_AGO, "key_id": net[LY_AGO].encryption.key_id})
    swapped = dataclasses.replace(
        sealed, header_bytes=header.model_copy(update={"recipients": (moved,)}).canonical_bytes()
    )
    return Attack(swapped.to_bytes(), BD, LY_AGO, ErrorCode.BAD_SIGNATURE, ErrorCode.BAD_SIGNATURE)


def _swapped_recipient_resigned_by_sender(net: LocalNetwork) -> Attack:
    """The sender itself re-wraps LY's content key for LY-AGO: what it signed inside still names LY."""
    sealed = net.seal(valid_document(MessageId(uuid.uuid4())))
    header = header_of(sealed)
    content_key = net[LY].encryption.unwrap(header.recipients[0].wrapped)
    rewrapped = WrappedKey(
        agency=LY_AGO, key_id=net[LY_AGO].encryption.key_id, wrapped=net[LY_AGO].encryption.public_key.wrap(content_key)
    )
    swapped = resign(sealed, header.model_copy(update={"recipients": (rewrapped,)}), net[BD].signing)
    return Attack(swapped.to_bytes(), BD, LY_AGO, None, ErrorCode.DECRYPTION_FAILED)


def _added_recipient(net: LocalNetwork) -> Attack:
    """An outsider adds BD-POLICE as a second recipient of a message (it cannot re-sign)."""
    sealed = net.seal(valid_document(MessageId(uuid.uuid4())))
    header = header_of(sealed)
    extra = WrappedKey(agency=BD_POLICE, key_id=net[BD_POLICE].encryption.key_id, wrapped=bytes(48))
    added = dataclasses.replace(
        sealed, header_bytes=header.model_copy(update={"recipients": (*header.recipients, extra)}).canonical_bytes()
    )
    return Attack(added.to_bytes(), BD, BD_POLICE, ErrorCode.BAD_SIGNATURE, ErrorCode.BAD_SIGNATURE)


def _forwarded_as_the_forwarder(net: LocalNetwork) -> Attack:
    """LY re-encrypts BD's signed content for LY-AGO in an envelope of its own (it cannot sign as BD)."""
    from protocol.envelope import open_sealed  # noqa: PLC0415 - only this attack opens a message first

    original = open_sealed(
        net.seal(valid_document(MessageId(uuid.uuid4()))),
        net.directory(),
        recipient=LY,
        recipient_keys=net[LY].decryption_keys,
        now=NOW,
        limits=net.limits,
    )
    content_key, nonce = bytes(range(32)), bytes(24)
    plaintext = (
        len(original.content_statement).to_bytes(4, "big")
        + original.content_statement
        + original.content_signature
        + original.document
    )
    header = original.header.model_copy(
        update={
            "sender": LY,
            "sender_key": net[LY].signing.key_id,
            "recipients": (
                WrappedKey(
                    agency=LY_AGO,
                    key_id=net[LY_AGO].encryption.key_id,
                    wrapped=net[LY_AGO].encryption.public_key.wrap(content_key),
                ),
            ),
            "archive": None,
            "nonce": nonce,
            "key_commitment": key_commitment(content_key),
        }
    )
    ad = pae(_AD_TYPE, header.binding().canonical_bytes())
    ciphertext = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, ad, nonce, content_key)
    header = header.model_copy(
        update={"ciphertext_sha256": sha256_hex(ciphertext), "ciphertext_length": len(ciphertext)}
    )
    forwarded = resign(SealedMessage(net[LY].signing.key_id, b"", b"", ciphertext), header, net[LY].signing)
    return Attack(forwarded.to_bytes(), LY, LY_AGO, None, ErrorCode.CONTENT_SIGNATURE_INVALID)


def _replayed_id(net: LocalNetwork) -> Attack:
    """The same message id again, with other content."""
    message_id = MessageId(uuid.uuid4())
    first = net.seal(valid_document(message_id), message_id=message_id)
    again = net.seal(valid_document(message_id, marker="PSD/MLA/OUT/2025/9999"), message_id=message_id)
    return Attack(again.to_bytes(), BD, LY, ErrorCode.REPLAYED, ErrorCode.REPLAYED, before=(first.to_bytes(),))


def _stale(net: LocalNetwork) -> Attack:
    """A message captured twelve hours ago, which expired six hours ago, sent again now."""
    sealed = net.seal(
        valid_document(MessageId(uuid.uuid4())), created_at=NOW - timedelta(hours=12), ttl=timedelta(hours=6)
    )
    return Attack(sealed.to_bytes(), BD, LY, ErrorCode.EXPIRED, ErrorCode.EXPIRED)


def _from_the_future(net: LocalNetwork) -> Attack:
    sealed = net.seal(valid_document(MessageId(uuid.uuid4())), created_at=NOW + timedelta(hours=1))
    return Attack(sealed.to_bytes(), BD, LY, ErrorCode.NOT_YET_VALID, ErrorCode.NOT_YET_VALID)


def _tampered_header(net: LocalNetwork) -> Attack:
    sealed = net.seal(valid_document(MessageId(uuid.uuid4())))
    tampered = dataclasses.replace(sealed, header_bytes=sealed.header_bytes.replace(b"MLA_REQUEST", b"MLA_REQUESU"))
    return Attack(tampered.to_bytes(), BD, LY, ErrorCode.BAD_SIGNATURE, ErrorCode.BAD_SIGNATURE)


def _tampered_ciphertext(net: LocalNetwork) -> Attack:
    sealed = net.seal(valid_document(MessageId(uuid.uuid4())))
    tampered = dataclasses.replace(sealed, ciphertext=flip(sealed.ciphertext, len(sealed.ciphertext) // 2))
    return Attack(tampered.to_bytes(), BD, LY, ErrorCode.CIPHERTEXT_MISMATCH, ErrorCode.CIPHERTEXT_MISMATCH)


def _tampered_wrapped_key(net: LocalNetwork) -> Attack:
    """A wrapped key changed in transit: the header signature covers it."""
    sealed = net.seal(valid_document(MessageId(uuid.uuid4())))
    header = header_of(sealed)
    wrapped = header.recipients[0].model_copy(update={"wrapped": flip(header.recipients[0].wrapped, 40)})
    tampered = dataclasses.replace(
        sealed, header_bytes=header.model_copy(update={"recipients": (wrapped,)}).canonical_bytes()
    )
    return Attack(tampered.to_bytes(), BD, LY, ErrorCode.BAD_SIGNATURE, ErrorCode.BAD_SIGNATURE)


def _garbage_wrapped_key_resigned_by_sender(net: LocalNetwork) -> Attack:
    """The sender signs a header whose wrapped key opens for nobody: the gateway cannot tell, LY can."""
    sealed = net.seal(valid_document(MessageId(uuid.uuid4())))
    header = header_of(sealed)
    wrapped = header.recipients[0].model_copy(update={"wrapped": flip(header.recipients[0].wrapped, 40)})
    bad = resign(sealed, header.model_copy(update={"recipients": (wrapped,)}), net[BD].signing)
    return Attack(bad.to_bytes(), BD, LY, None, ErrorCode.KEY_UNWRAP_FAILED)


def _two_plaintexts(net: LocalNetwork) -> Attack:
    """The sender wraps another content key for LY than the one it committed to (another plaintext for LY)."""
    sealed = net.seal(valid_document(MessageId(uuid.uuid4())))
    header = header_of(sealed)
    other = WrappedKey(
        agency=LY, key_id=net[LY].encryption.key_id, wrapped=net[LY].encryption.public_key.wrap(bytes(range(32)))
    )
    lying = resign(sealed, header.model_copy(update={"recipients": (other,)}), net[BD].signing)
    return Attack(lying.to_bytes(), BD, LY, None, ErrorCode.KEY_COMMITMENT_MISMATCH)


def _unknown_key(net: LocalNetwork) -> Attack:
    sealed = net.seal(valid_document(MessageId(uuid.uuid4())))
    stranger = SigningPrivateKey.generate()
    header = header_of(sealed).model_copy(update={"sender_key": stranger.key_id})
    return Attack(resign(sealed, header, stranger).to_bytes(), BD, LY, ErrorCode.UNKNOWN_KEY, ErrorCode.UNKNOWN_KEY)


def _with_bd_signing_key(net: LocalNetwork, **key: object) -> Directory:
    directory = everyone_may_talk(net)
    entries = []
    signing = PublishedSigningKey.model_validate(published(net[BD].signing) | key)
    for entry in directory.agencies:
        changed = entry.agency_id == BD
        entries.append(
            AgencyEntry.model_validate(entry.model_dump() | {"signing_keys": (signing,)}) if changed else entry
        )
    return directory.model_copy(update={"agencies": tuple(entries)})


def _expired_key(net: LocalNetwork) -> Attack:
    sealed = net.seal(valid_document(MessageId(uuid.uuid4())))
    directory = _with_bd_signing_key(net, valid_from=NOW - timedelta(days=30), valid_until=NOW - timedelta(days=1))
    return Attack(sealed.to_bytes(), BD, LY, ErrorCode.KEY_NOT_VALID, ErrorCode.KEY_NOT_VALID, directory=directory)


def _revoked_key(net: LocalNetwork) -> Attack:
    sealed = net.seal(valid_document(MessageId(uuid.uuid4())))
    directory = _with_bd_signing_key(net, revoked_at=NOW - timedelta(minutes=1))
    return Attack(sealed.to_bytes(), BD, LY, ErrorCode.KEY_REVOKED, ErrorCode.KEY_REVOKED, directory=directory)


def _over_size(net: LocalNetwork) -> Attack:
    wire = net.seal(valid_document(MessageId(uuid.uuid4()))).to_bytes()
    padded = wire + bytes(net.limits.max_sealed_bytes - len(wire) + 1)
    return Attack(padded, BD, LY, ErrorCode.TOO_LARGE, ErrorCode.TOO_LARGE)


def _truncated(net: LocalNetwork) -> Attack:
    wire = net.seal(valid_document(MessageId(uuid.uuid4()))).to_bytes()
    return Attack(wire[:40], BD, LY, ErrorCode.MALFORMED_ENVELOPE, ErrorCode.MALFORMED_ENVELOPE)


def _number_in_the_sealed_document(number: bytes, code: ErrorCode) -> Callable[[LocalNetwork], Attack]:
    """A document the sender seals with `number` in it: only the recipient, which decrypts, can refuse it."""

    def attack(net: LocalNetwork) -> Attack:
        document = valid_document(MessageId(uuid.uuid4()))
        with_number = document.replace(b'"payload": {', b'"payload": {"x-number": ' + number + b", ", 1)
        assert with_number != document
        return Attack(net.seal(with_number).to_bytes(), BD, LY, None, code)

    return attack


ATTACKS: dict[str, Callable[[LocalNetwork], Attack]] = {
    "forged_signature": _forged_signature,
    "stripped_signature": _stripped_signature,
    "replaced_signature": _replaced_signature,
    "swapped_recipient": _swapped_recipient,
    "swapped_recipient_resigned_by_sender": _swapped_recipient_resigned_by_sender,
    "added_recipient": _added_recipient,
    "forwarded_as_sent_by_the_forwarder": _forwarded_as_the_forwarder,
    "replayed_message_id": _replayed_id,
    "stale_message": _stale,
    "message_from_the_future": _from_the_future,
    "tampered_header": _tampered_header,
    "tampered_ciphertext": _tampered_ciphertext,
    "tampered_wrapped_key": _tampered_wrapped_key,
    "garbage_wrapped_key_signed_by_sender": _garbage_wrapped_key_resigned_by_sender,
    "two_plaintexts_for_two_recipients": _two_plaintexts,
    "unknown_signing_key": _unknown_key,
    "expired_signing_key": _expired_key,
    "revoked_signing_key": _revoked_key,
    "over_size": _over_size,
    "truncated_frame": _truncated,
    "huge_integer_in_the_sealed_document": _number_in_the_sealed_document(b"9" * 5000, ErrorCode.NUMBER_OUT_OF_RANGE),
    "overflowing_float_in_the_sealed_document": _number_in_the_sealed_document(b"1e400", ErrorCode.NUMBER_OUT_OF_RANGE),
    "infinity_in_the_sealed_document": _number_in_the_sealed_document(b"Infinity", ErrorCode.MALFORMED_JSON),
    "nan_in_the_sealed_document": _number_in_the_sealed_document(b"NaN", ErrorCode.MALFORMED_JSON),
}
