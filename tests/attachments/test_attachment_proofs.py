"""Attachment commitments in the envelope, the audit log and signed blob requests: each attack refused."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest

from agents.attachments import Attachments, AttachmentStore, GatewayBlobClient, _encrypt_file, _verify_file
from agents.store import AgentStore
from deploy.client.samples import REQUEST_SAMPLE, sample
from protocol.attachments import (
    CIPHERTEXT_CHUNK_BYTES,
    HEADER_BYTES,
    AttachmentKey,
    StreamEncryptor,
    attachment_ad,
    ciphertext_length,
    sign_blob_request,
    verify_blob_request,
)
from protocol.auditlog import AttachmentsLeaf, decode_leaf, encode_leaf, verify_attachments_leaf
from protocol.encoding import canonical_json
from protocol.envelope import EnvelopeHeader, Recipient, SealedMessage, open_sealed, seal
from protocol.errors import AuthenticationFailed, ErrorCode, FreshnessViolation, ProtocolError
from protocol.evidence import EvidenceType, new_statement
from protocol.ids import CaseId, MessageId
from protocol.mla import validate_document
from protocol.storage import StorageKey
from tests.support.network import BD, LY, LY_AGO, NOW, LocalNetwork


def body_key(data: bytes, attachment_id: str = "A1") -> AttachmentKey:
    """The key a sending agent would make for `data`."""
    stream_id = uuid.uuid4().hex
    encryptor = StreamEncryptor.new(attachment_ad(BD, stream_id))
    encryptor.update(data)
    encryptor.finish()
    return AttachmentKey(
        attachment_id=attachment_id,
        stream_id=stream_id,
        key=encryptor.key,
        plaintext_sha256=hashlib.sha256(data).hexdigest(),
        plaintext_length=len(data),
        ciphertext_sha256=encryptor.ciphertext_sha256,
        ciphertext_length=encryptor.ciphertext_length,
    )


def deterministic() -> Iterator[bytes]:
    counter = 0
    while True:
        counter += 1
        yield hashlib.sha256(counter.to_bytes(8, "big")).digest()


def sealed_with(net: LocalNetwork, keys: list[AttachmentKey], *, message_id: MessageId | None = None) -> SealedMessage:
    stream = deterministic()
    return seal(
        b'{"hello":"world"}',
        message_id=message_id or MessageId(uuid.UUID(int=7)),
        sender=BD,
        signing_key=net[BD].signing,
        recipients=[Recipient(LY, net[LY].encryption.public_key)],
        archive_key=None,
        message_type="MLA_REQUEST",
        case_id=CaseId("BD-LY-2025-0007"),
        created_at=NOW,
        expires_at=NOW + timedelta(days=1),
        limits=net.limits,
        random_bytes=lambda n: next(stream)[:n],
        attachments=keys,
    )


def test_the_recipient_gets_each_body_key_and_the_header_commits_to_its_ciphertext():
    """Opened content carries the keys and plaintext digests; the signed header only ciphertext digests."""
    net = LocalNetwork()
    keys = [body_key(b"bank statement", "A1"), body_key(os.urandom(70_000), "A2")]
    sealed = sealed_with(net, keys)
    opened = open_sealed(
        sealed, net.directory(), recipient=LY, recipient_keys=net[LY].decryption_keys, now=NOW, limits=net.limits
    )
    assert opened.attachments == tuple(keys)
    header = EnvelopeHeader.model_validate_json(sealed.header_bytes)
    assert header.attachments == tuple(key.commitment() for key in keys)
    assert b"plaintext_sha256" not in sealed.header_bytes
    assert keys[0].plaintext_sha256.encode() not in sealed.header_bytes


def test_an_envelope_without_attachments_keeps_its_exact_header():
    """No `attachments` field at all when there are none: envelopes sealed before keep their bytes."""
    sealed = sealed_with(LocalNetwork(), [])
    assert b'"attachments"' not in sealed.header_bytes


def test_changing_an_attachment_digest_changes_the_evidence_identity():
    """Evidence names the header digest, which covers each body's ciphertext digest: another body is
    another piece of evidence, never a duplicate of the first."""
    net = LocalNetwork()
    first, second = body_key(b"the real file"), body_key(b"the real file")
    assert first.ciphertext_sha256 != second.ciphertext_sha256
    digests = [sealed_with(net, [key]).digest for key in (first, second)]
    assert digests[0] != digests[1]
    identities = {
        new_statement(
            EvidenceType.SUBMISSION_ACCEPTED,
            message_id=MessageId(uuid.UUID(int=7)),
            message_digest=digest,
            sender=BD,
            recipient=LY,
            issuer="gateway.test",
            at=NOW,
        ).identity
        for digest in digests
    }
    assert len(identities) == 2


def test_a_header_committing_to_other_bodies_than_the_signed_content_is_refused(monkeypatch):
    """A sender cannot show recipients one body in the content and the gateway another in the header."""
    net = LocalNetwork()
    key = body_key(b"evidence")
    liar = key.commitment().model_copy(update={"ciphertext_sha256": "0" * 64})
    monkeypatch.setattr(AttachmentKey, "commitment", lambda _self: liar)
    sealed = sealed_with(net, [key])
    monkeypatch.undo()
    with pytest.raises(AuthenticationFailed) as refused:
        open_sealed(
            sealed, net.directory(), recipient=LY, recipient_keys=net[LY].decryption_keys, now=NOW, limits=net.limits
        )
    assert refused.value.code == ErrorCode.ATTACHMENT_MISMATCH


def test_the_attachments_leaf_proves_which_files_travelled_and_any_change_is_caught():
    """The leaf verifies against the directory alone; a changed digest or length, a swapped header or
    a header signed by another agency is refused."""
    net = LocalNetwork()
    directory = net.directory()
    key = body_key(os.urandom(1000))
    sealed = sealed_with(net, [key])
    leaf = AttachmentsLeaf(
        identity="attachments/x",
        at=NOW,
        sender=BD,
        message_id=str(uuid.UUID(int=7)),
        message_digest=sealed.digest,
        signer_key_id=sealed.signer_key_id,
        header=sealed.header_bytes,
        header_signature=sealed.header_signature,
        attachments=(key.commitment(),),
    )
    assert decode_leaf(encode_leaf(leaf)) == leaf
    assert verify_attachments_leaf(leaf, directory, now=NOW).attachments == (key.commitment(),)

    changed = key.commitment().model_copy(update={"ciphertext_sha256": "f" * 64})
    longer = key.commitment().model_copy(update={"ciphertext_length": key.ciphertext_length + 1})
    other = sealed_with(net, [body_key(b"another file")], message_id=MessageId(uuid.UUID(int=8)))
    for tampered in (
        leaf.model_copy(update={"attachments": (changed,)}),
        leaf.model_copy(update={"attachments": (longer,)}),
        leaf.model_copy(update={"header": other.header_bytes}),
        leaf.model_copy(update={"message_digest": other.digest}),
        leaf.model_copy(update={"header_signature": net[LY].signing.sign(sealed.header_bytes)}),
        leaf.model_copy(update={"signer_key_id": net[LY].signing.key_id}),
    ):
        with pytest.raises(ProtocolError):
            verify_attachments_leaf(tampered, directory, now=NOW)


def test_a_signed_blob_request_names_its_agency_and_nothing_else():
    """Accepted for its own method and path, recently; refused for another path, method, a stale time,
    a claimed agency that is not the key's owner, or garbage."""
    net = LocalNetwork()
    directory = net.directory()
    path = "/v1/blobs/" + "a" * 64
    good = sign_blob_request(agency=BD, key=net[BD].signing, method="GET", path=path, now=NOW)
    assert verify_blob_request(good, method="GET", path=path, directory=directory, now=NOW).agency == BD
    refusals = [
        (good, "GET", "/v1/blobs/" + "b" * 64, NOW),
        (good, "PUT", path, NOW),
        (good, "GET", path, NOW + timedelta(minutes=6)),
        (sign_blob_request(agency=BD, key=net[LY_AGO].signing, method="GET", path=path, now=NOW), "GET", path, NOW),
        ("Bearer something", "GET", path, NOW),
        ("Rogatory-Signed a.b.c", "GET", path, NOW),
        (good[:-8] + "AAAAAAA=", "GET", path, NOW),
    ]
    for authorization, method, asked, now in refusals:
        with pytest.raises((AuthenticationFailed, FreshnessViolation, ProtocolError)):
            verify_blob_request(authorization, method=method, path=asked, directory=directory, now=now)


def encrypted_file(tmp_path: Path, data: bytes) -> tuple[Path, AttachmentKey]:
    part = tmp_path / "upload.part"
    part.write_bytes(data)
    blobs = tmp_path / "blobs"
    blobs.mkdir(exist_ok=True)
    upload = _encrypt_file(part, blobs, upload_id="u1", sender=BD, at="2026-11-29T10:00:00.000Z")
    assert not part.exists(), "the plaintext copy is removed once encrypted"
    return blobs / upload.ciphertext_sha256, upload.key_for("A1")


def test_a_received_body_round_trips_through_files(tmp_path):
    """File to file, in chunks: what the sender uploaded is what the recipient gets, digest-checked."""
    data = os.urandom(3 * 65536 + 123)
    blob, key = encrypted_file(tmp_path, data)
    out = tmp_path / "out.sealed"
    _verify_file(blob, out, key, BD)
    kept = out.read_bytes()
    assert data not in kept, "what is kept is the ciphertext"
    decryptor = key.decryptor(BD)
    assert decryptor.update(kept) + decryptor.finish() == data


@pytest.mark.parametrize("attack", ["truncated", "final_chunk_dropped", "reordered", "flipped", "another_sender"])
def test_each_attack_on_a_received_body_is_refused(tmp_path, attack):
    """A body cut short, without its final chunk, reordered, changed by one bit, or re-labelled as
    another sender's is refused, even when the attacker also controls the digest the key expects."""
    data = os.urandom(4 * 65536 + 10)
    blob, key = encrypted_file(tmp_path, data)
    stream = bytearray(blob.read_bytes())
    sender = BD
    if attack == "truncated":
        stream = stream[: len(stream) - 100]
    elif attack == "final_chunk_dropped":
        stream = stream[: HEADER_BYTES + 4 * CIPHERTEXT_CHUNK_BYTES]
    elif attack == "reordered":
        first = slice(HEADER_BYTES, HEADER_BYTES + CIPHERTEXT_CHUNK_BYTES)
        second = slice(HEADER_BYTES + CIPHERTEXT_CHUNK_BYTES, HEADER_BYTES + 2 * CIPHERTEXT_CHUNK_BYTES)
        stream[first], stream[second] = stream[second], stream[first]
    elif attack == "flipped":
        stream[len(stream) // 2] ^= 1
    else:
        sender = LY
    tampered = tmp_path / "tampered"
    tampered.write_bytes(bytes(stream))
    out = tmp_path / "out.body"
    # First line of defence: the digest and length the sender's signed header commits to.
    if attack != "another_sender":
        with pytest.raises(AuthenticationFailed) as refused:
            _verify_file(tampered, out, key, sender)
        assert refused.value.code == ErrorCode.ATTACHMENT_MISMATCH
    # Second: the stream itself, with an attacker who could also make the expected digest match.
    forged = key.model_copy(
        update={"ciphertext_sha256": hashlib.sha256(bytes(stream)).hexdigest(), "ciphertext_length": len(stream)}
    )
    with pytest.raises(AuthenticationFailed):
        _verify_file(tampered, out, forged, sender)
    assert not out.exists(), "nothing unverified is kept"


def test_the_committed_length_follows_from_the_plaintext_length():
    """A key whose ciphertext length does not follow from its plaintext length does not parse."""
    key = body_key(b"x" * 100)
    with pytest.raises(ValueError, match="ciphertext_length"):
        AttachmentKey.model_validate(key.model_dump() | {"ciphertext_length": ciphertext_length(100) + 1})


async def test_a_body_the_document_does_not_list_as_sent_refuses_the_message(tmp_path):
    """The recipient agent refuses (`ATTACHMENT_MISMATCH`) a message whose body keys name an entry the
    document lacks, or one with another plaintext digest or size; a matching one is recorded as pending."""
    net = LocalNetwork()
    data = b"interview video"
    key = body_key(data, "VIDEO")
    base = sample(REQUEST_SAMPLE)
    entry = {
        "attachment_id": "VIDEO",
        "title": {"lang": "en", "value": "Interview"},
        "doc_type": "evidence",
        "lang": "en",
        "media_type": "video/mp4",
        "sha256": key.plaintext_sha256,
        "size_bytes": len(data),
    }
    agent_store = await AgentStore.open(tmp_path / "agent.db", storage_key=StorageKey.generate())
    store = await AttachmentStore.open(tmp_path, storage_key=StorageKey.generate())
    async with aiohttp.ClientSession() as session:
        service = Attachments(
            agency=LY,
            store=store,
            agent_store=agent_store,
            gateway=GatewayBlobClient(
                session, "http://127.0.0.1:9", agency=LY, signing_key=net[LY].signing, clock=lambda: NOW
            ),
            limits=net.limits,
            clock=lambda: NOW,
        )
        cases = {
            "not listed": [],
            "another digest": [entry | {"sha256": "0" * 64}],
            "another size": [entry | {"size_bytes": len(data) + 1}],
            "listed": [entry],
        }
        for name, entries in cases.items():
            document = validate_document(
                canonical_json(base | {"attachments": [*base.get("attachments", []), *entries]})
            )
            sealed = sealed_with(net, [key], message_id=MessageId(uuid.uuid4()))
            opened = open_sealed(
                sealed,
                net.directory(),
                recipient=LY,
                recipient_keys=net[LY].decryption_keys,
                now=NOW,
                limits=net.limits,
            )
            if name == "listed":
                await service.accept_opened(opened, document)
                (recorded,) = await store.received_for(BD, str(opened.header.message_id))
                assert (recorded.attachment_id, recorded.state) == ("VIDEO", "pending")
            else:
                with pytest.raises(AuthenticationFailed) as refused:
                    await service.accept_opened(opened, document)
                assert refused.value.code == ErrorCode.ATTACHMENT_MISMATCH, name
    await store.close()
    await agent_store.close()
