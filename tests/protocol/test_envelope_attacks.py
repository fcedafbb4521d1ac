"""The six properties of the envelope (DESIGN.md), each attacked and held.

1. only listed recipients read the content; 2. the content is signed by the
sender, provably to a third party; 3. the header is signed over its exact
bytes; 4. recipients, id, type, times and digests are bound into the
signatures; 5. a ciphertext opens to one plaintext only; 6. stale, expired,
future, unknown-key, revoked-key and oversized messages are refused.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import timedelta

import nacl.bindings
import pytest

from protocol.directory import PublishedSigningKey
from protocol.encoding import b64encode, canonical_json, pae, sha256_hex
from protocol.envelope import (
    ContentStatement,
    EnvelopeHeader,
    SealedMessage,
    WrappedKey,
    authenticate_header,
    check_freshness,
    key_commitment,
    open_sealed,
    verify_content_proof,
)
from protocol.errors import (
    AuthenticationFailed,
    ErrorCode,
    FreshnessViolation,
    KeyRejected,
    LimitExceeded,
    ProtocolError,
)
from protocol.ids import MessageId
from protocol.keys import EncryptionPrivateKey, SigningPrivateKey
from protocol.limits import Limits
from protocol.signing import PAYLOAD_TYPE_HEADER
from tests.support.network import BD, LY, LY_AGO, NOW, LocalNetwork, published

ARABIC_AND_BENGALI = json.dumps(
    {"ar": "السلطة المركزية للمساعدة القانونية المتبادلة", "bn": "জননিরাপত্তা বিভাগ, স্বরাষ্ট্র মন্ত্রণালয়"},
    ensure_ascii=False,
).encode()


@pytest.fixture
def net() -> LocalNetwork:
    return LocalNetwork()


def open_as(net: LocalNetwork, sealed: SealedMessage, agency=LY, now=NOW):
    return open_sealed(
        SealedMessage.from_bytes(sealed.to_bytes(), net.limits),
        net.directory(),
        recipient=agency,
        recipient_keys=net[agency].decryption_keys,
        now=now,
        limits=net.limits,
    )


def resign_header(
    net: LocalNetwork, sealed: SealedMessage, header: EnvelopeHeader, signer: SigningPrivateKey | None = None
) -> SealedMessage:
    """What a forger holding a signing key can build: a new header, validly signed."""
    key = signer or net[BD].signing
    header_bytes = header.canonical_bytes()
    return dataclasses.replace(
        sealed,
        signer_key_id=key.key_id,
        header_bytes=header_bytes,
        header_signature=key.sign(pae(PAYLOAD_TYPE_HEADER, header_bytes)),
    )


def header_of(sealed: SealedMessage) -> EnvelopeHeader:
    return EnvelopeHeader.model_validate_json(sealed.header_bytes)


def test_recipient_reads_exactly_what_was_sealed(net):
    """Round trip: the recipient gets the document byte for byte, Arabic and Bengali included."""
    opened = open_as(net, net.seal(ARABIC_AND_BENGALI))
    assert opened.document == ARABIC_AND_BENGALI


def test_sender_reads_its_own_archive_copy(net):
    """The sender can open what it sent, from its own archive key."""
    assert open_as(net, net.seal(ARABIC_AND_BENGALI), agency=BD).document == ARABIC_AND_BENGALI


# -- 1. confidentiality --------------------------------------------------------------


def test_another_agency_cannot_open_a_message_not_addressed_to_it(net):
    """Property 1: an agency that is not listed is refused before any decryption."""
    with pytest.raises(AuthenticationFailed) as refused:
        open_as(net, net.seal(), agency=LY_AGO)
    assert refused.value.code == ErrorCode.NOT_A_RECIPIENT


def test_another_agencys_key_never_unwraps_the_content_key(net):
    """Property 1: relabelling the wrapped key for another agency does not let its key open it."""
    sealed = net.seal()
    header = header_of(sealed)
    stolen = header.model_copy(
        update={
            "recipients": (
                WrappedKey(agency=LY_AGO, key_id=net[LY_AGO].encryption.key_id, wrapped=header.recipients[0].wrapped),
            )
        }
    )
    with pytest.raises(AuthenticationFailed) as refused:
        open_as(net, resign_header(net, sealed, stolen), agency=LY_AGO)
    assert refused.value.code == ErrorCode.KEY_UNWRAP_FAILED


def test_header_and_ciphertext_hold_no_plaintext(net):
    """Property 1: what the gateway and broker see contains none of the document's text."""
    document = json.dumps(
        {"marker": "SECRET-MARKER-7731", "text": ARABIC_AND_BENGALI.decode()}, ensure_ascii=False
    ).encode()
    wire = net.seal(document).to_bytes()
    for fragment in ("SECRET-MARKER-7731", "السلطة", "জননিরাপত্তা"):
        assert fragment.encode() not in wire


# -- 2. non-repudiation of content -------------------------------------------------------


def test_recipient_can_prove_the_content_to_a_third_party(net):
    """Property 2: statement, signature and document verify with nothing but the directory."""
    opened = open_as(net, net.seal(ARABIC_AND_BENGALI))
    statement = verify_content_proof(
        opened.content_statement,
        opened.content_signature,
        opened.document,
        net.directory(),
        signer_key_id=net[BD].signing.key_id,
        now=NOW,
    )
    assert statement.binding.sender == BD
    assert statement.document_sha256 == sha256_hex(ARABIC_AND_BENGALI)


def test_a_proof_with_an_altered_document_is_refused(net):
    """Property 2: the recipient cannot claim the sender said something else."""
    opened = open_as(net, net.seal(ARABIC_AND_BENGALI))
    with pytest.raises(AuthenticationFailed) as refused:
        verify_content_proof(
            opened.content_statement,
            opened.content_signature,
            b'{"forged":true}',
            net.directory(),
            signer_key_id=net[BD].signing.key_id,
            now=NOW,
        )
    assert refused.value.code == ErrorCode.DOCUMENT_DIGEST_MISMATCH


def test_content_signed_by_someone_else_is_refused(net):
    """Property 2: a content statement signed by another agency's key does not pass as the sender's."""
    opened = open_as(net, net.seal())
    forged = net[LY_AGO].signing.sign(pae("application/vnd.rogatory.content+json; version=1", opened.content_statement))
    with pytest.raises(AuthenticationFailed):
        verify_content_proof(
            opened.content_statement,
            forged,
            opened.document,
            net.directory(),
            signer_key_id=net[BD].signing.key_id,
            now=NOW,
        )


# -- 3. authenticated header -------------------------------------------------------------


def test_flipping_any_header_byte_is_caught(net):
    """Property 3: the signature covers the exact header bytes; no byte can change unseen."""
    sealed = net.seal()
    for position in range(len(sealed.header_bytes)):
        tampered = bytearray(sealed.header_bytes)
        tampered[position] ^= 0x01
        with pytest.raises(ProtocolError):
            authenticate_header(dataclasses.replace(sealed, header_bytes=bytes(tampered)), net.directory(), now=NOW)


def test_stripped_signature_is_refused(net):
    """Property 3: a header without its signature (zeros) does not authenticate."""
    sealed = dataclasses.replace(net.seal(), header_signature=bytes(64))
    with pytest.raises(AuthenticationFailed) as refused:
        authenticate_header(sealed, net.directory(), now=NOW)
    assert refused.value.code == ErrorCode.BAD_SIGNATURE


def test_signature_replaced_by_another_agencys_is_refused(net):
    """Property 3/4: another agency re-signing BD's header under its own key is a sender mismatch."""
    sealed = net.seal()
    forged = resign_header(net, sealed, header_of(sealed), signer=net[LY_AGO].signing)
    with pytest.raises(AuthenticationFailed) as refused:
        authenticate_header(forged, net.directory(), now=NOW)
    assert refused.value.code == ErrorCode.SENDER_MISMATCH


def test_header_signature_cannot_be_reused_as_another_kind_of_signature(net):
    """Property 3: signatures are domain-separated; a content signature does not sign a header."""
    sealed = net.seal()
    wrong_domain = net[BD].signing.sign(pae("application/vnd.rogatory.content+json; version=1", sealed.header_bytes))
    with pytest.raises(AuthenticationFailed):
        authenticate_header(dataclasses.replace(sealed, header_signature=wrong_domain), net.directory(), now=NOW)


def test_signed_header_with_a_duplicate_key_is_refused(net):
    """Property 3: signed bytes that two readers could read differently (first or last key wins) are refused."""
    sealed = net.seal()
    ambiguous = sealed.header_bytes[:-1] + b',"recipients":["' + str(LY_AGO).encode() + b'"]}'
    forged = dataclasses.replace(
        sealed, header_bytes=ambiguous, header_signature=net[BD].signing.sign(pae(PAYLOAD_TYPE_HEADER, ambiguous))
    )
    with pytest.raises(ProtocolError) as refused:
        authenticate_header(forged, net.directory(), now=NOW)
    assert refused.value.code == ErrorCode.DUPLICATE_KEY


def test_unknown_signing_key_is_refused(net):
    """Property 6: a key the directory does not list is refused before anything is parsed."""
    outsider = SigningPrivateKey.generate()
    sealed = net.seal()
    forged = resign_header(net, sealed, header_of(sealed), signer=outsider)
    with pytest.raises(KeyRejected) as refused:
        authenticate_header(forged, net.directory(), now=NOW)
    assert refused.value.code == ErrorCode.UNKNOWN_KEY


# -- 4. binding -------------------------------------------------------------------------------


def test_tampered_ciphertext_is_refused(net):
    """Property 4: the header commits to the ciphertext's digest and length."""
    sealed = net.seal()
    tampered = bytearray(sealed.ciphertext)
    tampered[10] ^= 0xFF
    with pytest.raises(AuthenticationFailed) as refused:
        open_as(net, dataclasses.replace(sealed, ciphertext=bytes(tampered)))
    assert refused.value.code == ErrorCode.CIPHERTEXT_MISMATCH


def test_truncated_ciphertext_is_refused(net):
    """Property 4: cutting the ciphertext short is caught by the committed length."""
    sealed = net.seal()
    with pytest.raises(AuthenticationFailed) as refused:
        open_as(net, dataclasses.replace(sealed, ciphertext=sealed.ciphertext[:-1]))
    assert refused.value.code == ErrorCode.CIPHERTEXT_MISMATCH


def test_swapped_recipient_is_refused_even_when_the_sender_re_signs(net):
    """Property 4: the sender's content statement names the recipients; a new header cannot change them."""
    sealed = net.seal(recipients=(LY,))
    header = header_of(sealed)
    # The sender (the only one who can sign BD headers) re-addresses LY's copy to LY-AGO by
    # rewrapping the same content key: the signed content statement still names LY.
    content_key = net[LY].encryption.unwrap(header.recipients[0].wrapped)
    rewrapped = WrappedKey(
        agency=LY_AGO, key_id=net[LY_AGO].encryption.key_id, wrapped=net[LY_AGO].encryption.public_key.wrap(content_key)
    )
    swapped = resign_header(net, sealed, header.model_copy(update={"recipients": (rewrapped,)}))
    with pytest.raises(AuthenticationFailed) as refused:
        open_as(net, swapped, agency=LY_AGO)
    assert refused.value.code == ErrorCode.DECRYPTION_FAILED  # the AEAD's associated data names LY


def test_surreptitious_forwarding_is_refused(net):
    """Property 4: LY forwards BD's signed content to LY-AGO; LY-AGO sees it was not sent to it by BD."""
    original = open_as(net, net.seal(ARABIC_AND_BENGALI))
    # LY's best forgery: BD's statement, signature and document, re-encrypted for LY-AGO in an
    # envelope LY signs as itself (it cannot sign as BD), with a binding that matches that envelope.
    content_key, nonce = bytes(range(32)), bytes(24)
    plaintext = (
        len(original.content_statement).to_bytes(4, "big")
        + original.content_statement
        + original.content_signature
        + original.document
    )
    forwarded = original.header.model_copy(
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
    ad = pae("application/vnd.rogatory.content-ad+json; version=1", forwarded.binding().canonical_bytes())
    ciphertext = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, ad, nonce, content_key)
    forwarded = forwarded.model_copy(
        update={"ciphertext_sha256": sha256_hex(ciphertext), "ciphertext_length": len(ciphertext)}
    )
    sealed = resign_header(
        net, SealedMessage(net[LY].signing.key_id, b"", b"", ciphertext), forwarded, signer=net[LY].signing
    )
    with pytest.raises(AuthenticationFailed) as refused:
        open_as(net, sealed, agency=LY_AGO)
    # BD's signature does not verify as LY's; were it accepted, the binding would still name LY.
    assert refused.value.code == ErrorCode.CONTENT_SIGNATURE_INVALID


def test_header_and_content_disagreeing_on_the_message_id_is_refused(net):
    """Property 4: the message id is in the AEAD binding; a header with another id does not decrypt."""
    sealed = net.seal()
    header = header_of(sealed)
    moved = resign_header(net, sealed, header.model_copy(update={"message_id": MessageId(uuid.uuid4())}))
    with pytest.raises(AuthenticationFailed) as refused:
        open_as(net, moved)
    assert refused.value.code == ErrorCode.DECRYPTION_FAILED


def test_tampered_wrapped_key_is_refused(net):
    """Property 4: a wrapped key changed in transit does not unwrap."""
    sealed = net.seal()
    header = header_of(sealed)
    wrapped = bytearray(header.recipients[0].wrapped)
    wrapped[-1] ^= 0x01
    changed = header.model_copy(
        update={"recipients": (header.recipients[0].model_copy(update={"wrapped": bytes(wrapped)}),)}
    )
    with pytest.raises(AuthenticationFailed) as refused:
        open_as(net, resign_header(net, sealed, changed))
    assert refused.value.code == ErrorCode.KEY_UNWRAP_FAILED


# -- 5. one plaintext per ciphertext -----------------------------------------------------------


def test_a_different_key_for_one_recipient_is_caught_by_the_commitment(net):
    """Property 5: a sender wrapping another content key for one recipient is detected by that recipient."""
    sealed = net.seal(recipients=(LY,))
    header = header_of(sealed)
    other_key = bytes(range(32))
    lying = header.model_copy(
        update={
            "recipients": (
                WrappedKey(
                    agency=LY, key_id=net[LY].encryption.key_id, wrapped=net[LY].encryption.public_key.wrap(other_key)
                ),
            )
        }
    )
    with pytest.raises(AuthenticationFailed) as refused:
        open_as(net, resign_header(net, sealed, lying))
    assert refused.value.code == ErrorCode.KEY_COMMITMENT_MISMATCH


# -- 6. freshness, keys, limits -------------------------------------------------------------------


def test_expired_message_is_refused(net):
    """Property 6: after `expires_at` nobody accepts the message."""
    with pytest.raises(FreshnessViolation) as refused:
        open_as(net, net.seal(ttl=timedelta(hours=1)), now=NOW + timedelta(hours=1, seconds=1))
    assert refused.value.code == ErrorCode.EXPIRED


def test_message_from_the_future_is_refused(net):
    """Property 6: a creation time beyond the allowed clock skew is refused."""
    sealed = net.seal(created_at=NOW + timedelta(minutes=10))
    with pytest.raises(FreshnessViolation) as refused:
        check_freshness(authenticate_header(sealed, net.directory(), now=NOW), now=NOW, limits=net.limits)
    assert refused.value.code == ErrorCode.NOT_YET_VALID


def test_message_asking_to_outlive_the_replay_window_is_refused(net):
    """Property 6: a lifetime longer than the replay window would let a replay go unnoticed."""
    sealed = net.seal(ttl=timedelta(days=8))
    with pytest.raises(FreshnessViolation) as refused:
        check_freshness(authenticate_header(sealed, net.directory(), now=NOW), now=NOW, limits=net.limits)
    assert refused.value.code == ErrorCode.INVALID_LIFETIME


def test_revoked_signing_key_is_refused(net):
    """Property 6: once the directory revokes the sender's key, its messages are refused."""
    sealed = net.seal()
    directory = net.directory()
    bd = directory.agency(BD)
    revoked = bd.model_copy(
        update={
            "signing_keys": (
                PublishedSigningKey.model_validate(published(net[BD].signing, revoked_at=NOW - timedelta(minutes=1))),
            )
        }
    )
    directory = directory.model_copy(
        update={"agencies": tuple(revoked if entry.agency_id == BD else entry for entry in directory.agencies)}
    )
    with pytest.raises(KeyRejected) as refused:
        authenticate_header(sealed, directory, now=NOW)
    assert refused.value.code == ErrorCode.KEY_REVOKED


def test_message_made_outside_the_keys_validity_is_refused(net):
    """Property 6: a key not yet valid when the message was made does not vouch for it."""
    sealed = net.seal()
    directory = net.directory()
    bd = directory.agency(BD)
    later = bd.model_copy(
        update={
            "signing_keys": (
                PublishedSigningKey.model_validate(published(net[BD].signing, valid_from=NOW + timedelta(hours=1))),
            )
        }
    )
    directory = directory.model_copy(
        update={"agencies": tuple(later if entry.agency_id == BD else entry for entry in directory.agencies)}
    )
    with pytest.raises(KeyRejected) as refused:
        authenticate_header(sealed, directory, now=NOW)
    assert refused.value.code == ErrorCode.KEY_NOT_VALID


def test_oversized_message_is_refused_before_parsing(net):
    """Property 6: anything over the size limit is refused at the frame."""
    sealed = net.seal(b'{"x":"' + b"a" * 5000 + b'"}')
    with pytest.raises(LimitExceeded) as refused:
        SealedMessage.from_bytes(sealed.to_bytes(), Limits(max_sealed_bytes=4096))
    assert refused.value.code == ErrorCode.TOO_LARGE


def test_oversized_document_is_refused_at_sealing(net):
    """Property 6: the sender's own agent will not seal a document over the limit."""
    net.limits = Limits(max_document_bytes=100)
    with pytest.raises(LimitExceeded):
        net.seal(b'{"x":"' + b"a" * 200 + b'"}')


def test_truncated_frame_is_refused(net):
    """A frame cut inside its header or signature is malformed, not a crash."""
    raw = net.seal().to_bytes()
    for cut in (0, 3, 10, 30, len(raw) // 3):
        with pytest.raises(ProtocolError):
            SealedMessage.from_bytes(raw[:cut], net.limits)


def test_recipient_listed_twice_is_refused():
    """A header may not list one recipient twice (two different keys for one agency)."""
    key = EncryptionPrivateKey.generate()
    wrapped = {"agency": LY, "key_id": key.key_id, "wrapped": b64encode(b"x" * 80)}
    header = {
        "format": "rogatory-envelope/1",
        "message_id": str(uuid.uuid4()),
        "sender": BD,
        "sender_key": "0" * 32,
        "recipients": [wrapped, wrapped],
        "message_type": "MLA_REQUEST",
        "case_id": "BD-LY-2025-0007",
        "created_at": "2026-11-29T10:00:00.000Z",
        "expires_at": "2026-11-30T10:00:00.000Z",
        "nonce": b64encode(bytes(24)),
        "ciphertext_sha256": "0" * 64,
        "ciphertext_length": 0,
        "key_commitment": "0" * 64,
    }
    with pytest.raises(ValueError, match="listed twice"):
        EnvelopeHeader.model_validate_json(canonical_json(header))


def test_content_statement_format_is_pinned(net):
    """The content statement has one format; another version string is refused."""
    opened = open_as(net, net.seal())
    statement = json.loads(opened.content_statement)
    statement["format"] = "rogatory-content/2"
    with pytest.raises(ValueError):
        ContentStatement.model_validate_json(canonical_json(statement))
