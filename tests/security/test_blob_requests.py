"""Signed blob requests are bound to what they carry and good once (SECURITY.md, finding 9)."""

from __future__ import annotations

import hashlib
import os
from datetime import timedelta

import pytest

from gateway.blobs import ReplayCache
from protocol.attachments import BLOB_REQUEST_WINDOW, sign_blob_request, verify_blob_request
from protocol.errors import AuthenticationFailed, ErrorCode, FreshnessViolation, ProtocolError
from tests.security.blob_gateway import blob_gateway
from tests.support.network import BD, LY, NOW, LocalNetwork


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def test_a_captured_upload_request_replayed_is_refused(tmp_path):
    """A `PUT` captured on the way and sent again is refused (`REPLAYED`) before it touches the upload;
    the next good request still completes the body."""
    body = os.urandom(300_000)
    path = f"/v1/blobs/{sha(body)}"
    async with blob_gateway(tmp_path) as gateway:
        first = body[:100_000]
        captured = gateway.sign(BD, "PUT", path, body_sha256=sha(first), upload_offset=0, upload_length=len(body))
        assert (await gateway.send("PUT", path, captured, first))[0] == 200
        status, code, _ = await gateway.send("PUT", path, captured, first)
        assert (status, code) == (401, "REPLAYED")
        assert gateway.store.received_bytes(BD, sha(body)) == len(first)

        rest = body[len(first) :]
        good = gateway.sign(BD, "PUT", path, body_sha256=sha(rest), upload_offset=len(first), upload_length=len(body))
        assert (await gateway.send("PUT", path, good, rest))[0] == 201


async def test_junk_appended_under_a_captured_signature_is_refused(tmp_path):
    """Bytes other than the signed chunk — junk appended to it, or junk alone — are refused
    (`BODY_DIGEST_MISMATCH`) and nothing they carried stays in the partial upload; a signature for other
    offsets does not verify; the next good request completes the body."""
    body = os.urandom(200_000)
    path = f"/v1/blobs/{sha(body)}"
    junk = os.urandom(50_000)
    async with blob_gateway(tmp_path) as gateway:
        first = body[:100_000]
        assert (
            await gateway.send(
                "PUT",
                path,
                gateway.sign(BD, "PUT", path, body_sha256=sha(first), upload_offset=0, upload_length=len(body)),
                first,
            )
        )[0] == 200
        rest = body[len(first) :]
        for sent in (rest + junk, junk, rest[:-1] + b"\0"):
            signed = gateway.sign(
                BD, "PUT", path, body_sha256=sha(rest), upload_offset=len(first), upload_length=len(body)
            )
            status, code, _ = await gateway.send("PUT", path, signed, sent)
            assert (status, code) == (400, "BODY_DIGEST_MISMATCH") or (status, code) == (422, "ATTACHMENT_MISMATCH")
            assert gateway.store.received_bytes(BD, sha(body)) == len(first), "nothing unsigned is kept"
        other_offsets = gateway.sign(BD, "PUT", path, body_sha256=sha(rest), upload_offset=0, upload_length=len(body))
        other_offsets["Upload-Offset"] = str(len(first))
        assert (await gateway.send("PUT", path, other_offsets, rest))[:2] == (401, "UNAUTHORIZED")

        good = gateway.sign(BD, "PUT", path, body_sha256=sha(rest), upload_offset=len(first), upload_length=len(body))
        assert (await gateway.send("PUT", path, good, rest))[0] == 201
        assert gateway.store.object_path(sha(body)).read_bytes() == body


async def test_a_replayed_retrieval_mark_is_refused(tmp_path):
    """A recipient's `POST .../retrieved` sent again is refused (`REPLAYED`), and so is one carrying a body
    it was not signed for; the next good mark is accepted."""
    body = os.urandom(1000)
    path = f"/v1/blobs/{sha(body)}"
    async with blob_gateway(tmp_path) as gateway:
        upload = gateway.sign(BD, "PUT", path, body_sha256=sha(body), upload_offset=0, upload_length=len(body))
        assert (await gateway.send("PUT", path, upload, body))[0] == 201
        await gateway.store.grant(
            sha(body), sender=BD, message_id="m-1", recipient=LY, expires_at="2026-12-01T00:00:00.000Z"
        )
        mark = gateway.sign(LY, "POST", path + "/retrieved")
        assert (await gateway.send("POST", path + "/retrieved", mark))[0] == 200
        assert (await gateway.send("POST", path + "/retrieved", mark))[:2] == (401, "REPLAYED")
        with_body = gateway.sign(LY, "POST", path + "/retrieved")
        assert (await gateway.send("POST", path + "/retrieved", with_body, b"x"))[:2] == (
            400,
            "BODY_DIGEST_MISMATCH",
        )
        assert (await gateway.send("POST", path + "/retrieved", gateway.sign(LY, "POST", path + "/retrieved")))[
            0
        ] == 200
        download = gateway.sign(LY, "GET", path)
        assert (await gateway.send("GET", path, download))[0] == 200
        assert (await gateway.send("GET", path, download))[:2] == (401, "REPLAYED")


def test_a_blob_request_signature_covers_offsets_body_and_nonce():
    """The signed statement names the offsets, the body digest and a fresh nonce: another offset or
    length does not verify, two signatures of one request differ, and the statement cannot pass for
    another kind of signature (its own payload type)."""
    net = LocalNetwork()
    directory = net.directory()
    path = "/v1/blobs/" + "a" * 64
    signed = sign_blob_request(
        agency=BD,
        key=net[BD].signing,
        method="PUT",
        path=path,
        now=NOW,
        body_sha256="b" * 64,
        upload_offset=5,
        upload_length=9,
    )
    request = verify_blob_request(
        signed, method="PUT", path=path, upload_offset=5, upload_length=9, directory=directory, now=NOW
    )
    assert (request.body_sha256, request.upload_offset, request.upload_length) == ("b" * 64, 5, 9)
    again = sign_blob_request(
        agency=BD,
        key=net[BD].signing,
        method="PUT",
        path=path,
        now=NOW,
        body_sha256="b" * 64,
        upload_offset=5,
        upload_length=9,
    )
    assert again != signed
    for offset, length in ((0, 9), (5, 10), (None, 9), (5, None)):
        with pytest.raises(AuthenticationFailed):
            verify_blob_request(
                signed,
                method="PUT",
                path=path,
                upload_offset=offset,
                upload_length=length,
                directory=directory,
                now=NOW,
            )


def test_the_replay_cache_forgets_expired_nonces_and_is_bounded_per_agency():
    """A nonce is refused while its request could verify and forgotten after; one agency filling its share
    is told to slow down (`RATE_LIMITED`) while another agency is not."""
    net = LocalNetwork()
    directory = net.directory()
    cache = ReplayCache(per_agency=3)

    def request(agency, at):
        path = "/v1/blobs/" + "a" * 64
        signed = sign_blob_request(agency=agency, key=net[agency].signing, method="GET", path=path, now=at)
        return verify_blob_request(signed, method="GET", path=path, directory=directory, now=at)

    first = request(BD, NOW)
    cache.admit(first, NOW)
    with pytest.raises(FreshnessViolation) as replayed:
        cache.admit(first, NOW + BLOB_REQUEST_WINDOW)
    assert replayed.value.code == ErrorCode.REPLAYED
    cache.admit(request(BD, NOW), NOW)
    cache.admit(request(BD, NOW), NOW)
    with pytest.raises(ProtocolError) as limited:
        cache.admit(request(BD, NOW), NOW)
    assert limited.value.code == ErrorCode.RATE_LIMITED
    cache.admit(request(LY, NOW), NOW)
    later = NOW + BLOB_REQUEST_WINDOW + timedelta(seconds=1)
    cache.admit(request(BD, later), later)
    assert len(cache) == 2, "the expired nonces of BD were forgotten"
