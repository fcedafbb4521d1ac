"""An agent's data at rest is its own: private files, and decrypted content sealed under its storage key
(SECURITY.md, finding 10)."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import sqlite3
import stat
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from agents.attachments import Attachments, AttachmentStore, GatewayBlobClient, _encrypt_file
from agents.held_directory import remember_directory
from agents.storage_key import storage_key
from agents.store import AgentStore
from deploy.client.samples import REQUEST_SAMPLE, sample
from protocol.encoding import canonical_json
from protocol.errors import AuthenticationFailed, ErrorCode
from protocol.keystore import lock_keystore, unlock_keystore
from protocol.storage import STORAGE_KEY_NAME, StorageKey
from tests.agents.harness import InProcessAgent, carry, start_agent
from tests.support.network import BD, LY, NOW, LocalNetwork

BENGALI = "মানব পাচার অপরাধ সংঘটনকারী"
"""Words of the sample request (its quotation of Bangladesh's trafficking law): must never lie on disk in plain."""
ARABIC = "السلطة المركزية للمساعدة القانونية المتبادلة"
"""Words of the sample request (the recipient authority's name)."""


@contextmanager
def umask(mask: int) -> Iterator[None]:
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def the_request() -> dict[str, Any]:
    """The sample MLA request (Bengali and Arabic text) under a fresh message id and case."""
    document = copy.deepcopy(sample(REQUEST_SAMPLE))
    document["message_id"] = str(uuid.uuid4())
    document["case_id"] = f"BD-LY-REST-{uuid.uuid4().hex[:12].upper()}"
    return document


@asynccontextmanager
async def agents(tmp_path: Path) -> AsyncIterator[tuple[InProcessAgent, InProcessAgent]]:
    """BD's and LY's agents, each in a data directory of its own made world-readable beforehand."""
    net = LocalNetwork()
    directory = net.directory()
    started = []
    for agency in (BD, LY):
        data = tmp_path / agency
        data.mkdir(mode=0o755)
        data.chmod(0o755)
        remember_directory(data, directory)
        started.append(await start_agent(net, directory, agency, data))
    try:
        yield started[0], started[1]
    finally:
        for agent in started:
            await agent.close()


async def exchange(bd: InProcessAgent, ly: InProcessAgent) -> dict[str, Any]:
    """BD sends the sample request to LY, which stores it: both hold the document."""
    request = the_request()
    status, answer = await bd.submit(request)
    assert status == 202, answer
    await carry(bd, ly)
    return request


@asynccontextmanager
async def blob_server(bodies: dict[str, bytes]) -> AsyncIterator[str]:
    """A stand-in for the gateway's blob store that serves `bodies` by SHA-256 and takes confirmations."""

    async def get(request: web.Request) -> web.Response:
        return web.Response(body=bodies[request.match_info["sha256"]])

    async def retrieved(request: web.Request) -> web.Response:
        return web.Response()

    app = web.Application()
    app.router.add_get("/v1/blobs/{sha256}", get)
    app.router.add_post("/v1/blobs/{sha256}/retrieved", retrieved)
    server = TestServer(app)
    await server.start_server()
    try:
        yield str(server.make_url(""))
    finally:
        await server.close()


class _Stored:
    """An agent store in which every message is stored (what the attachment fetcher asks)."""

    async def inbox_entry_of(self, sender: str, message_id: str) -> object:
        return (sender, message_id)


async def attachments_at_work(tmp_path: Path, data: Path, body: bytes) -> None:
    """The agent's attachment service in `data`: one body uploaded whole, one partly, one received and fetched."""
    net = LocalNetwork()
    sender_store = await AttachmentStore.open(data, storage_key=StorageKey.generate())
    async with aiohttp.ClientSession() as session:
        sender = Attachments(
            agency=BD,
            store=sender_store,
            agent_store=cast("AgentStore", _Stored()),
            gateway=GatewayBlobClient(
                session, "http://127.0.0.1:9", agency=BD, signing_key=net[BD].signing, clock=lambda: NOW
            ),
            limits=net.limits,
            clock=lambda: NOW,
        )
        app = web.Application()
        for method, path, handler in sender.routes():
            app.router.add_route(method, path, handler)
        api = TestServer(app)
        await api.start_server()
        try:
            headers = {"Content-Type": "application/octet-stream"}
            async with session.post(api.make_url("/v1/attachments"), data=body, headers=headers) as response:
                assert response.status == 201, await response.text()
            partial = headers | {"Upload-Id": "partial", "Upload-Length": str(2 * len(body))}
            async with session.post(api.make_url("/v1/attachments"), data=body, headers=partial) as response:
                assert response.status == 200, await response.text()
        finally:
            await api.close()
        upload = await sender_store.upload_of(hashlib.sha256(body).hexdigest())
        assert upload is not None
        ciphertext = sender_store.blob_path(upload.ciphertext_sha256).read_bytes()
        async with blob_server({upload.ciphertext_sha256: ciphertext}) as url:
            recipient = Attachments(
                agency=LY,
                store=sender_store,
                agent_store=cast("AgentStore", _Stored()),
                gateway=GatewayBlobClient(session, url, agency=LY, signing_key=net[LY].signing, clock=lambda: NOW),
                limits=net.limits,
                clock=lambda: NOW,
            )
            await sender_store.record_received(BD, "m-1", [upload.key_for("A1")], "2026-11-29T10:00:00.000Z")
            assert await recipient.fetch_pending() == 1
    await sender_store.close()


def modes_under(root: Path) -> dict[str, int]:
    """The permission bits of `root` and of everything under it, by path relative to `root`'s parent."""
    found = {root.name: stat.S_IMODE(root.stat().st_mode)}
    for path in root.rglob("*"):
        found[str(path.relative_to(root.parent))] = stat.S_IMODE(path.lstat().st_mode)
    return found


async def test_under_umask_022_every_file_the_agent_writes_is_0600_and_every_directory_0700(tmp_path):
    """Under umask 022, in a data directory made world-readable before: agent.db with its WAL and SHM, the
    attachment index, bodies uploaded, partly uploaded and received, and the held directory are 0600 files
    in 0700 directories."""
    with umask(0o022):
        async with agents(tmp_path) as (bd, ly):
            await exchange(bd, ly)
            await attachments_at_work(tmp_path, tmp_path / LY, os.urandom(200_000))
            written = {**modes_under(tmp_path / BD), **modes_under(tmp_path / LY)}
    names = set(written)
    for expected in (f"{LY}/{LY}.db", f"{LY}/{LY}.db-wal", f"{LY}/{LY}.db-shm", f"{LY}/attachments.db"):
        assert expected in names, sorted(names)
    assert any(name.startswith(f"{LY}/attachments/received/") for name in names), sorted(names)
    assert any(name.startswith(f"{LY}/attachments/uploads/") for name in names), sorted(names)
    assert any(name.startswith(f"{LY}/attachments/blobs/") for name in names), sorted(names)
    assert f"{LY}/directory-held" in names
    wider = {
        name: oct(mode) for name, mode in written.items() if mode != (0o700 if (tmp_path / name).is_dir() else 0o600)
    }
    assert wider == {}


def raw_bytes(database: Path) -> bytes:
    """The bytes of a database file and of its WAL, as they lie on disk."""
    wal = database.with_name(database.name + "-wal")
    return database.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


def in_plain(raw: bytes) -> list[str]:
    """Which of the sample's distinctive words `raw` holds in plain (UTF-8)."""
    return [words for words in (BENGALI, ARABIC) if words.encode("utf-8") in raw]


async def test_agent_db_and_its_wal_hold_no_word_of_a_document_sent_or_received(tmp_path):
    """After BD sent the sample request (Bengali and Arabic text) and LY received it, neither agent's
    database nor its WAL holds those words; the API still shows the documents, the inbox and the case."""
    async with agents(tmp_path) as (bd, ly):
        request = await exchange(bd, ly)
        for agent in (bd, ly):
            assert in_plain(raw_bytes(tmp_path / agent.agency / f"{agent.agency}.db")) == [], agent.agency
        assert (await bd.message(request["message_id"]))["status"] == "delivered"
        status, inbox = await ly.call("GET", "/v1/inbox")
        assert status == 200, inbox
        (item,) = [item for item in inbox["messages"] if item["message_id"] == request["message_id"]]
        assert in_plain(json.dumps(item["document"], ensure_ascii=False).encode("utf-8")) == [BENGALI, ARABIC]
        for agent in (bd, ly):
            case = await agent.case(request["case_id"])
            assert [entry["message_id"] for entry in case["messages"]] == [request["message_id"]]


async def test_a_document_copied_into_another_row_is_refused_when_read(tmp_path):
    """One message's sealed document copied into another's row (outbox or inbox) does not open there:
    the read is refused (`DECRYPTION_FAILED`) instead of showing one message's content as another's."""
    async with agents(tmp_path) as (bd, ly):
        first, second = await exchange(bd, ly), await exchange(bd, ly)
        for agent, table in ((bd, "outbox"), (ly, "inbox")):
            with sqlite3.connect(tmp_path / agent.agency / f"{agent.agency}.db") as db:
                db.execute(
                    f"UPDATE {table} SET document = (SELECT document FROM {table} WHERE message_id = ?) "  # noqa: S608
                    "WHERE message_id = ?",
                    (first["message_id"], second["message_id"]),
                )
        with pytest.raises(AuthenticationFailed) as refused:
            await bd.store.outbox(second["message_id"])
        assert refused.value.code == ErrorCode.DECRYPTION_FAILED
        with pytest.raises(AuthenticationFailed) as refused:
            await ly.store.inbox_entry_of(BD, second["message_id"])
        assert refused.value.code == ErrorCode.DECRYPTION_FAILED
        assert (await ly.store.inbox_entry_of(BD, first["message_id"])) is not None, "the row left alone still reads"


async def test_a_database_written_in_plain_before_is_sealed_in_place_on_open_and_still_reads(tmp_path):
    """Documents a database from before holds in plain are sealed when the store opens it: they read as
    before, and no word of them is left in the file or its WAL."""
    key = StorageKey.generate()
    path = tmp_path / "agent.db"
    request = await written_in_plain(path, key)
    store = await AgentStore.open(path, storage_key=key)
    try:
        assert in_plain(raw_bytes(path)) == []
        (record,) = await store.inbox_by_message_id(request["message_id"])
        assert json.loads(record.document) == request
        outbox = await store.outbox(request["message_id"])
        assert outbox is not None
        assert json.loads(outbox.document) == request
    finally:
        await store.close()


async def test_a_storage_key_other_than_the_rows_were_sealed_under_stops_the_store_opening(tmp_path):
    """A keystore whose storage key is not the one the rows were sealed under (restored from before, say)
    stops the agent at start (`DECRYPTION_FAILED`) rather than at the first read."""
    key = StorageKey.generate()
    path = tmp_path / "agent.db"
    await written_in_plain(path, key)
    await (await AgentStore.open(path, storage_key=key)).close()
    with pytest.raises(AuthenticationFailed) as refused:
        await AgentStore.open(path, storage_key=StorageKey.generate())
    assert refused.value.code == ErrorCode.DECRYPTION_FAILED


LATER = ("0" * 64, "submitted", None, "t", "t", None, "t")
"""The outbox columns after `sealed`: digest, status, reason, created, expires, published, updated."""


async def written_in_plain(path: Path, key: StorageKey) -> dict[str, Any]:
    """A database with one sent and one received message whose documents lie in plain, as before sealing."""
    request = the_request()
    document = canonical_json(request)
    store = await AgentStore.open(path, storage_key=key)
    await store.close()
    with sqlite3.connect(path) as db:
        db.execute(
            "INSERT INTO outbox VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",  # the last: content_purged_at (step 2)
            (
                request["message_id"],
                LY,
                "MLA_REQUEST",
                request["case_id"],
                None,
                document,
                "0" * 64,
                b"sealed",
                *LATER,
                None,
            ),
        )
        db.execute(
            "INSERT INTO inbox (sender, message_id, digest, message_type, case_id, in_reply_to, document, sealed, "
            "received_at, retrieved_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (BD, request["message_id"], "0" * 64, "MLA_REQUEST", request["case_id"], None, document, b"s", "t", None),
        )
    assert in_plain(raw_bytes(path)) == [BENGALI, ARABIC]
    return request


def test_an_agent_adds_a_storage_key_to_a_keystore_without_one(tmp_path):
    """A keystore made before the storage key existed gets one at the agent's first start: the other keys
    unchanged, still 0600 and under the same passphrase; the next start reads the same key."""
    keys = {"signing": os.urandom(32), "encryption": os.urandom(32)}
    passphrase = b"correct horse battery staple"
    keystore, passphrase_file = tmp_path / "keystore.json", tmp_path / "passphrase"
    keystore.write_bytes(lock_keystore(keys, passphrase, opslimit=1, memlimit=8192))
    passphrase_file.write_bytes(passphrase)
    first = storage_key(keys, keystore, passphrase_file)
    held = unlock_keystore(keystore.read_bytes(), passphrase)
    assert held == keys | {STORAGE_KEY_NAME: first.raw}
    assert stat.S_IMODE(keystore.stat().st_mode) == 0o600
    assert storage_key(held, keystore, passphrase_file).raw == first.raw
    assert first.raw.hex() not in repr(first)


class _Received:
    """An agent store whose inbox holds message `m-1` from BD (what the download handler looks up)."""

    async def inbox_entry_of(self, sender: str, message_id: str) -> object:
        return (sender, message_id)

    async def inbox_by_message_id(self, message_id: str) -> list[Any]:
        return [
            SimpleNamespace(
                sender=BD,
                message_id=message_id,
                document=b'{"classification": "UNCLASSIFIED"}',
                content_purged_at=None,
                retrieved_at=None,
            )
        ]


async def test_a_received_attachment_body_and_its_key_lie_on_disk_encrypted_and_are_served_in_plain(tmp_path):
    """A body the agent received is kept only as ciphertext and its key only sealed: no file under the data
    directory holds the body's words or its key (raw or base64); the API still serves it, whole and by
    `Range`; its key row copied into another row is refused."""
    net = LocalNetwork()
    body = (BENGALI + " " + ARABIC + " ").encode("utf-8") * 3000 + os.urandom(1000)
    part = tmp_path / "sender.part"
    part.write_bytes(body)
    (tmp_path / "sender-blobs").mkdir()
    upload = _encrypt_file(part, tmp_path / "sender-blobs", upload_id="u1", sender=BD, at="2026-11-29T10:00:00.000Z")
    ciphertext = (tmp_path / "sender-blobs" / upload.ciphertext_sha256).read_bytes()
    data = tmp_path / "recipient"
    store = await AttachmentStore.open(data, storage_key=StorageKey.generate())
    try:
        async with aiohttp.ClientSession() as session, blob_server({upload.ciphertext_sha256: ciphertext}) as url:
            service = Attachments(
                agency=LY,
                store=store,
                agent_store=cast("AgentStore", _Received()),
                gateway=GatewayBlobClient(session, url, agency=LY, signing_key=net[LY].signing, clock=lambda: NOW),
                limits=net.limits,
                clock=lambda: NOW,
            )
            keys = [upload.key_for("A1"), upload.key_for("A2")]
            await store.record_received(BD, "m-1", keys, "2026-11-29T10:00:00.000Z")
            assert await service.fetch_pending() == 2
            for path in data.rglob("*"):
                if path.is_file():
                    raw = path.read_bytes()
                    assert in_plain(raw) == [], path
                    assert upload.key not in raw, path
                    assert base64.b64encode(upload.key) not in raw, path
            app = web.Application()
            for method, route, handler in service.routes():
                app.router.add_route(method, route, handler)
            api = TestServer(app)
            await api.start_server()
            try:
                async with session.get(api.make_url("/v1/inbox/m-1/attachments/A1")) as response:
                    assert (response.status, await response.read()) == (200, body)
                ranged = {"Range": "bytes=100000-100099"}
                async with session.get(api.make_url("/v1/inbox/m-1/attachments/A2"), headers=ranged) as response:
                    assert (response.status, await response.read()) == (206, body[100_000:100_100])
            finally:
                await api.close()
        with sqlite3.connect(data / "attachments.db") as db:
            db.execute(
                "UPDATE received SET key_json = (SELECT key_json FROM received WHERE attachment_id = 'A1') "
                "WHERE attachment_id = 'A2'"
            )
        with pytest.raises(AuthenticationFailed) as refused:
            await store.received_for(BD, "m-1")
        assert refused.value.code == ErrorCode.DECRYPTION_FAILED
    finally:
        await store.close()
