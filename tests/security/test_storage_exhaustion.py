"""What an agency can make the gateway or a recipient store, download or buffer is bounded (SECURITY.md, finding 7)."""

from __future__ import annotations

import hashlib
import os
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from agents.attachments import Attachments, AttachmentStore, GatewayBlobClient, _encrypt_file
from agents.store import AgentStore
from gateway.auditlog import AuditLog
from gateway.blobs import BlobSweeper
from protocol.attachments import AttachmentKey
from protocol.errors import AuthenticationFailed, ErrorCode
from protocol.storage import StorageKey
from runtime.supervision import TryLocks
from tests.security.blob_gateway import BlobGateway, blob_gateway
from tests.support.network import BD, LY, NOW, LocalNetwork


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def put(gateway: BlobGateway, agency: Any, body: bytes, *, length: int | None = None) -> tuple[int, str]:
    """Upload `body` (or its first part, announcing `length`) as `agency`: (status, code)."""
    path = f"/v1/blobs/{sha(body)}"
    total = len(body) if length is None else length
    headers = gateway.sign(agency, "PUT", path, body_sha256=sha(body), upload_offset=0, upload_length=total)
    status, code, _ = await gateway.send("PUT", path, headers, body)
    return status, code


async def test_an_agency_over_its_quota_is_refused_with_413_and_others_are_not(tmp_path):
    """Stored bodies and partial uploads (at their announced length) count against the uploader's quota;
    past it an upload is refused up front (`413 QUOTA_EXCEEDED`) and another agency is not affected."""
    async with blob_gateway(tmp_path, quota_bytes=10_000) as gateway:
        assert await put(gateway, BD, os.urandom(6_000)) == (201, "")
        partial = os.urandom(1_000)
        assert (await put(gateway, BD, partial, length=3_000))[0] == 200, "a partial upload of 3000 announced bytes"
        assert await put(gateway, BD, os.urandom(2_000)) == (413, "QUOTA_EXCEEDED")
        assert await put(gateway, BD, os.urandom(1_000)) == (201, "")
        assert await put(gateway, LY, os.urandom(9_000)) == (201, "")
        assert await gateway.store.usage(BD) == 6_000 + 3_000 + 1_000


async def test_a_partial_upload_left_alone_is_swept_after_its_expiry(tmp_path):
    """A partial upload nobody continued for the partial expiry is removed from disk and from the quota;
    one continued recently is kept."""
    async with blob_gateway(tmp_path, quota_bytes=10_000) as gateway:
        stale, fresh = os.urandom(1_000), os.urandom(1_000)
        assert (await put(gateway, BD, stale, length=4_000))[0] == 200
        gateway.now = NOW + timedelta(hours=20)
        assert (await put(gateway, BD, fresh, length=4_000))[0] == 200
        assert await put(gateway, BD, os.urandom(3_000)) == (413, "QUOTA_EXCEEDED")
        gateway.now = NOW + timedelta(hours=25)
        sweeper = BlobSweeper(
            gateway.store,
            cast("AuditLog", None),  # nothing is due for deletion: the audit log is not touched
            clock=lambda: gateway.now,
            retention=timedelta(days=7),
            unreferenced=timedelta(days=1),
            partial_expiry=timedelta(days=1),
        )
        assert await sweeper.sweep() == 0
        assert not gateway.store.partial_path(BD, sha(stale)).exists()
        assert gateway.store.received_bytes(BD, sha(fresh)) == 1_000
        assert await gateway.store.usage(BD) == 4_000
        assert await put(gateway, BD, os.urandom(3_000)) == (201, "")


async def test_upload_locks_are_forgotten_once_uploads_end(tmp_path):
    """Uploads that finish, are refused or break off leave no lock behind at the gateway, nor at the agent."""
    async with blob_gateway(tmp_path, quota_bytes=10_000) as gateway:
        for _ in range(20):
            await put(gateway, BD, os.urandom(100), length=200)
            await put(gateway, BD, os.urandom(100))
            await put(gateway, BD, os.urandom(20_000))
        assert len(gateway.store.uploads) == 0

    agent_store = await AgentStore.open(tmp_path / "agent.db", storage_key=StorageKey.generate())
    store = await AttachmentStore.open(tmp_path / "agent", storage_key=StorageKey.generate())
    net = LocalNetwork()
    async with aiohttp.ClientSession() as session:
        service = Attachments(
            agency=BD,
            store=store,
            agent_store=agent_store,
            gateway=GatewayBlobClient(
                session, "http://127.0.0.1:9", agency=BD, signing_key=net[BD].signing, clock=lambda: NOW
            ),
            limits=net.limits,
            clock=lambda: NOW,
        )
        app = web.Application()
        for method, path, handler in service.routes():
            app.router.add_route(method, path, handler)
        server = TestServer(app)
        await server.start_server()
        try:
            for index in range(20):
                headers = {"Content-Type": "application/octet-stream", "Upload-Id": f"u{index}", "Upload-Length": "10"}
                async with session.post(server.make_url("/v1/attachments"), data=b"x" * 4, headers=headers) as response:
                    assert response.status == 200
                async with session.post(
                    server.make_url("/v1/attachments"), data=b"x" * 6, headers=headers | {"Upload-Offset": "1"}
                ) as response:
                    assert response.status == 409
            assert len(service._uploads) == 0
        finally:
            await server.close()
    await store.close()
    await agent_store.close()


def test_a_try_lock_turns_a_second_user_away_and_forgets_a_released_key():
    """`TryLocks` holds a key once, says no to a second holder, and keeps nothing once released."""
    locks = TryLocks()
    with locks.try_hold("a") as first:
        assert first
        with locks.try_hold("a") as second:
            assert not second
        assert "a" in locks
    assert len(locks) == 0


class _CountingGateway(GatewayBlobClient):
    """The gateway's blob store, in memory: counts downloads and confirmations."""

    def __init__(self, bodies: dict[str, bytes]) -> None:
        self.bodies = bodies
        self.downloads: list[str] = []
        self.confirmed: list[str] = []

    async def download(self, sha256: str, sink_path: Path, length: int) -> None:
        assert length == len(self.bodies[sha256])
        self.downloads.append(sha256)
        sink_path.write_bytes(self.bodies[sha256])

    async def confirm(self, sha256: str) -> None:
        self.confirmed.append(sha256)


class _Inbox:
    """An agent store in which every message is stored."""

    async def inbox_entry_of(self, sender: str, message_id: str) -> object:
        return (sender, message_id)


async def _recipient(tmp_path: Path, gateway: _CountingGateway, *, cap: int) -> tuple[Attachments, AttachmentStore]:
    store = await AttachmentStore.open(tmp_path / "recipient", storage_key=StorageKey.generate())
    service = Attachments(
        agency=LY,
        store=store,
        agent_store=cast("AgentStore", _Inbox()),
        gateway=gateway,
        limits=LocalNetwork().limits,
        clock=lambda: NOW,
        max_received_body_bytes=cap,
    )
    return service, store


def _sent_body(tmp_path: Path, data: bytes) -> tuple[AttachmentKey, bytes]:
    part = tmp_path / f"{uuid.uuid4().hex}.part"
    part.write_bytes(data)
    blobs = tmp_path / "sender-blobs"
    blobs.mkdir(exist_ok=True)
    upload = _encrypt_file(part, blobs, upload_id="u1", sender=BD, at="2026-11-29T10:00:00.000Z")
    return upload.key_for("A0"), (blobs / upload.ciphertext_sha256).read_bytes()


async def test_a_recipient_refuses_a_body_over_its_cap_without_downloading(tmp_path):
    """A body larger than the recipient's own cap is refused (`TOO_LARGE`) unread, whatever the sender
    committed to; a body within it arrives."""
    small, small_cipher = _sent_body(tmp_path, os.urandom(1_000))
    big, big_cipher = _sent_body(tmp_path, os.urandom(5_000))
    gateway = _CountingGateway({small.ciphertext_sha256: small_cipher, big.ciphertext_sha256: big_cipher})
    service, store = await _recipient(tmp_path, gateway, cap=4_000)
    try:
        keys = [small.model_copy(update={"attachment_id": "SMALL"}), big.model_copy(update={"attachment_id": "BIG"})]
        await store.record_received(BD, "m-1", keys, "2026-11-29T10:00:00.000Z")
        assert await service.fetch_pending() == 1
        states = {body.attachment_id: (body.state, body.detail) for body in await store.received_for(BD, "m-1")}
        assert states["SMALL"] == ("available", None)
        assert states["BIG"][0] == "failed"
        assert (states["BIG"][1] or "").startswith("TOO_LARGE")
        assert gateway.downloads == [small.ciphertext_sha256]
    finally:
        await store.close()


async def test_a_body_named_many_times_in_one_message_is_downloaded_once(tmp_path):
    """One body listed under 64 attachment ids is downloaded and confirmed once, and each id serves it;
    the same ciphertext named under another key is refused."""
    key, cipher = _sent_body(tmp_path, os.urandom(3_000))
    gateway = _CountingGateway({key.ciphertext_sha256: cipher})
    service, store = await _recipient(tmp_path, gateway, cap=10_000)
    try:
        keys = [key.model_copy(update={"attachment_id": f"A{index}"}) for index in range(64)]
        forged = key.model_copy(update={"attachment_id": "OTHER_KEY", "key": bytes(32)})
        await store.record_received(BD, "m-2", [*keys, forged], "2026-11-29T10:00:00.000Z")
        assert await service.fetch_pending() + await service.fetch_pending() == 64, "in batches of 50"
        assert gateway.downloads == [key.ciphertext_sha256]
        assert gateway.confirmed == [key.ciphertext_sha256]
        bodies = await store.received_for(BD, "m-2")
        kept = {store.received_paths(body)[1].read_bytes() for body in bodies if body.state == "available"}
        assert len(kept) == 1
        (refused,) = [body for body in bodies if body.attachment_id == "OTHER_KEY"]
        assert refused.state == "failed"
        assert (refused.detail or "").startswith("ATTACHMENT_MISMATCH")
    finally:
        await store.close()


async def test_a_gateway_sending_more_than_the_committed_length_is_cut_off(tmp_path):
    """A download stops at the committed length: more bytes from the gateway are refused, not stored."""
    committed = os.urandom(1_000)

    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(64):
            await response.write(os.urandom(64 * 1024))
        return response

    app = web.Application()
    app.router.add_get("/v1/blobs/{sha256}", endless)
    server = TestServer(app)
    await server.start_server()
    net = LocalNetwork()
    try:
        async with aiohttp.ClientSession() as session:
            client = GatewayBlobClient(
                session, str(server.make_url("")).rstrip("/"), agency=LY, signing_key=net[LY].signing, clock=lambda: NOW
            )
            sink = tmp_path / "download"
            with pytest.raises(AuthenticationFailed) as refused:
                await client.download(sha(committed), sink, len(committed))
            assert refused.value.code == ErrorCode.ATTACHMENT_MISMATCH
            assert sink.stat().st_size <= len(committed)
    finally:
        await server.close()
