"""Attachment bodies through a live local network: byte-identical, proven in the log, private, resumable."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import socket
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from agents.attachments import GatewayBlobClient
from deploy.client.agent_api import AgentClient, InboxMessage, poll
from deploy.client.transfer import attachment_entry, download_attachment, file_sha256, upload_file, upload_offset
from protocol.attachments import (
    CHUNK_BYTES,
    AttachmentKey,
    StreamEncryptor,
    attachment_ad,
    ciphertext_length,
    sign_blob_request,
)
from protocol.auditlog import AttachmentsLeaf, BlobDeletedLeaf, EvidenceLeaf, decode_leaf, verify_attachments_leaf
from protocol.encoding import b64decode
from protocol.envelope import Recipient, seal
from protocol.evidence import verify_evidence
from protocol.ids import AgencyId, CaseId, MessageId
from protocol.limits import DEFAULT_LIMITS
from protocol.signing import SignedStatement
from tests.attachments.conftest import BD, BD_POLICE, LY, LY_AGO, RETENTION_S, Network, request_with
from tests.e2e.test_sample_cases import publish_as

pytestmark = [pytest.mark.e2e, pytest.mark.broker]

SIZES = [0, 1, CHUNK_BYTES - 1, CHUNK_BYTES, CHUNK_BYTES + 1, 3 * 1024 * 1024 + 7, 24 * 1024 * 1024]
"""From empty to tens of MiB, with every edge of a secretstream chunk."""


def make_file(path: Path, size: int) -> tuple[str, int]:
    """A file of `size` random bytes; its (SHA-256, size)."""
    with path.open("wb") as sink:
        left = size
        while left:
            piece = os.urandom(min(left, 1 << 20))
            sink.write(piece)
            left -= len(piece)
    return file_sha256(path)


async def wait_for_bodies(ly: AgentClient, message_id: str, *, within_s: float = 90.0) -> InboxMessage:
    """The inbox item once no body of it is pending any more."""

    async def probe() -> InboxMessage | None:
        item = await ly.wait_for_inbox(message_id, within_s=within_s)
        return None if any(entry["state"] == "pending" for entry in item["attachments"]) else item

    return await poll(probe, within_s=within_s, what=f"the bodies of {message_id}", interval=0.3)


async def audit_entries(session: aiohttp.ClientSession, network: Network, message_id: str) -> list[dict[str, Any]]:
    gateway = network.stack["gateway"]
    async with session.get(
        f"{gateway['url']}/v1/audit/entries?message_id={message_id}&limit=100",
        headers={"Authorization": f"Bearer {gateway['auditor_token']}"},
    ) as response:
        assert response.status == 200, await response.text()
        answer: dict[str, Any] = await response.json()
    return list(answer["entries"])


async def all_leaves(session: aiohttp.ClientSession, network: Network) -> list[Any]:
    gateway = network.stack["gateway"]
    leaves: list[Any] = []
    start = 0
    while True:
        async with session.get(
            f"{gateway['url']}/v1/audit/entries?start={start}&limit=1000",
            headers={"Authorization": f"Bearer {gateway['auditor_token']}"},
        ) as response:
            page = (await response.json())["entries"]
        if not page:
            return leaves
        leaves += [decode_leaf(b64decode(entry["leaf"])) for entry in page]
        start = page[-1]["index"] + 1


async def test_files_from_empty_to_tens_of_mib_arrive_byte_identical(network, session, tmp_path):
    """Every size, chunk edges included, arrives byte-identical and digest-checked; an entry without an
    uploaded body travels as a description only, and the inbox says which is which."""
    bd_url, bd_token = network.agent(BD)
    ly_url, ly_token = network.agent(LY)
    entries, files = [], {}
    for index, size in enumerate(SIZES):
        path = tmp_path / f"file-{index}.bin"
        sha256, length = make_file(path, size)
        answer = await upload_file(session, bd_url, bd_token, path)
        assert (answer["sha256"], answer["size_bytes"]) == (sha256, length)
        entries.append(attachment_entry(path, sha256, length, f"ATT-{index}"))
        files[f"ATT-{index}"] = (path, sha256)
    document = request_with(entries)
    bd, ly = AgentClient(session, bd_url, bd_token), AgentClient(session, ly_url, ly_token)
    await bd.submit(document)

    item = await wait_for_bodies(ly, document["message_id"])
    states = {entry["attachment_id"]: entry["state"] for entry in item["attachments"]}
    assert {states[name] for name in files} == {"available"}
    described_only = [name for name in states if name not in files]
    assert described_only, "the sample's own attachments were listed without bodies"
    assert {states[name] for name in described_only} == {"description_only"}

    for name, (path, sha256) in files.items():
        out = tmp_path / f"{name}.out"
        got_sha, got_size = await download_attachment(
            session, ly_url, ly_token, message_id=document["message_id"], attachment_id=name, out=out
        )
        assert got_sha == sha256
        assert got_size == path.stat().st_size
        assert out.read_bytes() == path.read_bytes()
    async with session.get(
        f"{ly_url}/v1/inbox/{document['message_id']}/attachments/{described_only[0]}",
        headers={"Authorization": f"Bearer {ly_token}"},
    ) as response:
        assert response.status == 404
        assert "description only" in (await response.json())["detail"]


async def test_a_range_request_gets_exactly_those_bytes(network, session, tmp_path):
    """A recipient resumes a download with `Range`: the agent serves exactly the bytes asked for."""
    bd_url, bd_token = network.agent(BD)
    ly_url, ly_token = network.agent(LY)
    path = tmp_path / "ranged.bin"
    sha256, size = make_file(path, 2 * 1024 * 1024 + 3)
    await upload_file(session, bd_url, bd_token, path)
    document = request_with([attachment_entry(path, sha256, size, "RANGED")])
    await AgentClient(session, bd_url, bd_token).submit(document)
    await wait_for_bodies(AgentClient(session, ly_url, ly_token), document["message_id"])
    out = tmp_path / "ranged.out"
    (tmp_path / "ranged.out.part").write_bytes(path.read_bytes()[:1_000_001])
    got_sha, got_size = await download_attachment(
        session, ly_url, ly_token, message_id=document["message_id"], attachment_id="RANGED", out=out
    )
    assert (got_sha, got_size) == (sha256, size)


async def test_the_audit_log_and_the_evidence_cover_the_attachment_digests(network, session, tmp_path):
    """The log holds the sender's signed header with each body's ciphertext digest and length, which
    verifies against the directory; every evidence statement names that header's digest; after
    retrieval plus the retention period the body is deleted and the deletion is logged."""
    bd_url, bd_token = network.agent(BD)
    ly_url, ly_token = network.agent(LY)
    path = tmp_path / "statement.bin"
    sha256, size = make_file(path, 300_000)
    await upload_file(session, bd_url, bd_token, path)
    document = request_with([attachment_entry(path, sha256, size, "BANK-STATEMENT")])
    bd, ly = AgentClient(session, bd_url, bd_token), AgentClient(session, ly_url, ly_token)
    await bd.submit(document)
    await wait_for_bodies(ly, document["message_id"])
    await ly.ack(document["message_id"])
    status = await bd.wait_for_status(document["message_id"], {"retrieved"})

    directory = network.directory()
    leaves = [
        decode_leaf(b64decode(entry["leaf"])) for entry in await audit_entries(session, network, document["message_id"])
    ]
    proven = [leaf for leaf in leaves if isinstance(leaf, AttachmentsLeaf)]
    assert len(proven) == 1
    header = verify_attachments_leaf(proven[0], directory, now=datetime.now(UTC))
    assert header.attachments is not None
    (commitment,) = header.attachments
    assert commitment.attachment_id == "BANK-STATEMENT"
    assert proven[0].message_digest == status["message_digest"]
    for item in status["evidence"]:
        verified = verify_evidence(
            SignedStatement.model_validate(item["statement"]),
            directory,
            now=datetime.now(UTC),
        )
        assert verified.statement.message_digest == proven[0].message_digest

    async def deleted() -> BlobDeletedLeaf | None:
        for leaf in await all_leaves(session, network):
            if isinstance(leaf, BlobDeletedLeaf) and leaf.ciphertext_sha256 == commitment.ciphertext_sha256:
                return leaf
        return None

    deletion = await poll(deleted, within_s=30 + RETENTION_S, what="the blob_deleted leaf", interval=0.5)
    assert deletion.reason == "retrieved"
    assert deletion.retrieved_by == (AgencyId(LY),)
    assert document["message_id"] in deletion.messages
    stored = network.root / "gateway"
    assert not list(stored.rglob(commitment.ciphertext_sha256)), "the body is gone from the gateway's disk"


async def _signed(
    session: aiohttp.ClientSession, network: Network, method: str, sha256: str, *, agency: str, path: str | None = None
) -> tuple[int, dict[str, str]]:
    """Status and headers of a request to the gateway's blob store, signed by `agency` (for `path` if given)."""
    url_path = f"/v1/blobs/{sha256}"
    authorization = sign_blob_request(
        agency=AgencyId(agency),
        key=network.signing_key(agency),
        method=method,
        path=path or url_path,
        now=datetime.now(UTC),
    )
    async with session.request(
        method, network.gateway_url + url_path, headers={"Authorization": authorization}
    ) as response:
        await response.read()
        return response.status, dict(response.headers)


async def test_an_agency_cannot_fetch_a_body_not_addressed_to_it(network, session, tmp_path):
    """Only the uploader and the recipients of an accepted message read a body; another agency, an
    unsigned request, or one signed for another path gets nothing."""
    bd_url, bd_token = network.agent(BD)
    ly_url, ly_token = network.agent(LY)
    path = tmp_path / "passport.bin"
    sha256, size = make_file(path, 100_000)
    await upload_file(session, bd_url, bd_token, path)
    document = request_with([attachment_entry(path, sha256, size, "PASSPORT")])
    await AgentClient(session, bd_url, bd_token).submit(document)
    await wait_for_bodies(AgentClient(session, ly_url, ly_token), document["message_id"])
    leaves = [
        decode_leaf(b64decode(entry["leaf"])) for entry in await audit_entries(session, network, document["message_id"])
    ]
    (proven,) = [leaf for leaf in leaves if isinstance(leaf, AttachmentsLeaf)]
    ciphertext = proven.attachments[0].ciphertext_sha256

    assert (await _signed(session, network, "GET", ciphertext, agency=BD))[0] == 200
    assert (await _signed(session, network, "GET", ciphertext, agency=LY))[0] == 200
    for outsider in (LY_AGO, BD_POLICE):
        assert (await _signed(session, network, "GET", ciphertext, agency=outsider))[0] == 404
        assert (await _signed(session, network, "HEAD", ciphertext, agency=outsider))[0] == 404
    assert (await _signed(session, network, "GET", ciphertext, agency=LY, path="/v1/blobs/" + "0" * 64))[0] == 401
    async with session.get(f"{network.gateway_url}/v1/blobs/{ciphertext}") as response:
        assert response.status == 401
    stack_token = network.stack["gateway"]["operator_token"]
    async with session.get(
        f"{network.gateway_url}/v1/blobs/{ciphertext}", headers={"Authorization": f"Bearer {stack_token}"}
    ) as response:
        assert response.status == 401, "no gateway token opens the blob store: only agencies, by signed requests"


async def test_an_interrupted_upload_to_the_agent_resumes(network, session, tmp_path):
    """A connection cut in the middle of an upload leaves what arrived; the client asks how much and
    sends only the rest; the body is whole and its digest right."""
    bd_url, bd_token = network.agent(BD)
    path = tmp_path / "video.bin"
    sha256, size = make_file(path, 6 * 1024 * 1024 + 5)
    data = path.read_bytes()
    upload_id = "resume-" + sha256[:16]
    cut = 3 * 1024 * 1024
    parts = urlsplit(bd_url)
    head = (
        f"POST /v1/attachments HTTP/1.1\r\nHost: {parts.netloc}\r\nAuthorization: Bearer {bd_token}\r\n"
        f"Content-Type: application/octet-stream\r\nUpload-Id: {upload_id}\r\nUpload-Length: {size}\r\n"
        f"Content-Length: {size}\r\n\r\n"
    ).encode()
    with socket.create_connection((parts.hostname, parts.port)) as raw:
        raw.sendall(head + data[:cut])
        time.sleep(0.5)
    # The agent keeps what reached its disk; ask until it has settled.
    held = await poll(
        lambda: _settled(session, bd_url, bd_token, upload_id), within_s=10, what="the partial upload", interval=0.2
    )
    assert 0 < held <= cut
    answer = await upload_file(session, bd_url, bd_token, path, upload_id=upload_id)
    assert (answer["sha256"], answer["size_bytes"]) == (sha256, size)


_last_offsets: dict[str, int] = {}


async def _settled(session: aiohttp.ClientSession, url: str, token: str, upload_id: str) -> int | None:
    offset = await upload_offset(session, url, token, upload_id)
    previous = _last_offsets.get(upload_id)
    _last_offsets[upload_id] = offset
    return offset if offset and offset == previous else None


async def test_an_interrupted_upload_to_the_gateway_resumes(network, session, tmp_path):
    """The gateway keeps a partial upload of its uploader, says how much it holds, continues from there,
    and stores the body only once its digest is its address; a wrong offset is refused."""
    body = os.urandom(3 * 1024 * 1024 + 11)
    sha256 = hashlib.sha256(body).hexdigest()
    url_path = f"/v1/blobs/{sha256}"
    key = network.signing_key(BD)

    def headers(method: str, offset: int, sent: bytes) -> dict[str, str]:
        return {
            "Authorization": sign_blob_request(
                agency=AgencyId(BD),
                key=key,
                method=method,
                path=url_path,
                now=datetime.now(UTC),
                body_sha256=hashlib.sha256(sent).hexdigest(),
                upload_offset=offset,
                upload_length=len(body),
            ),
            "Upload-Offset": str(offset),
            "Upload-Length": str(len(body)),
        }

    half = len(body) // 2
    async with session.put(
        network.gateway_url + url_path, data=io.BytesIO(body[:half]), headers=headers("PUT", 0, body[:half])
    ) as response:
        assert response.status == 200
        assert (await response.json())["complete"] is False
    status, answer = await _signed(session, network, "HEAD", sha256, agency=BD)
    assert (status, answer["Upload-Offset"]) == (404, str(half))
    async with session.put(
        network.gateway_url + url_path, data=io.BytesIO(body[10:]), headers=headers("PUT", 10, body[10:])
    ) as response:
        assert response.status == 409
        assert response.headers["Upload-Offset"] == str(half)
    async with session.put(
        network.gateway_url + url_path, data=io.BytesIO(body[half:]), headers=headers("PUT", half, body[half:])
    ) as response:
        assert response.status == 201
    status, answer = await _signed(session, network, "HEAD", sha256, agency=BD)
    assert (status, answer["Upload-Offset"]) == (200, str(len(body)))

    # A download cut short continues from what reached the disk, with `Range`.
    client = GatewayBlobClient(
        session, network.gateway_url, agency=AgencyId(BD), signing_key=key, clock=lambda: datetime.now(UTC)
    )
    partial = tmp_path / "download.part"
    partial.write_bytes(body[:1_234_567])
    await client.download(sha256, partial, len(body))
    assert partial.read_bytes() == body

    wrong = os.urandom(1000)
    wrong_path = f"/v1/blobs/{'ab' * 32}"
    async with session.put(
        network.gateway_url + wrong_path,
        data=wrong,
        headers={
            "Authorization": sign_blob_request(
                agency=AgencyId(BD),
                key=key,
                method="PUT",
                path=wrong_path,
                now=datetime.now(UTC),
                body_sha256=hashlib.sha256(wrong).hexdigest(),
                upload_length=len(wrong),
            ),
            "Upload-Length": str(len(wrong)),
        },
    ) as response:
        assert response.status == 422
        assert (await response.json())["code"] == "ATTACHMENT_MISMATCH"


async def test_an_envelope_whose_body_is_missing_is_refused_with_negative_evidence(network, session):
    """An envelope committing to a body the gateway does not hold (never uploaded, or uploaded with another
    length) is refused: `SUBMISSION_REJECTED` with `ATTACHMENT_MISSING` / `ATTACHMENT_MISMATCH`, logged."""
    directory = network.directory()
    now = datetime.now(UTC)
    key = network.signing_key(BD)
    recipient = directory.agency(AgencyId(LY)).current_encryption_key(now).recipient_key
    stored = os.urandom(1000)
    stored_key = StreamEncryptor.new(attachment_ad(BD, "0" * 32))
    stored_cipher = stored_key.header + stored_key.update(stored) + stored_key.finish()
    stored_sha = hashlib.sha256(stored_cipher).hexdigest()
    url_path = f"/v1/blobs/{stored_sha}"
    async with session.put(
        network.gateway_url + url_path,
        data=stored_cipher,
        headers={
            "Authorization": sign_blob_request(
                agency=AgencyId(BD),
                key=key,
                method="PUT",
                path=url_path,
                now=now,
                body_sha256=stored_sha,
                upload_length=len(stored_cipher),
            ),
            "Upload-Length": str(len(stored_cipher)),
        },
    ) as response:
        assert response.status == 201

    def body_key(ciphertext_sha256: str, plaintext_length: int) -> AttachmentKey:
        return AttachmentKey(
            attachment_id="A1",
            stream_id="0" * 32,
            key=stored_key.key,
            plaintext_sha256="1" * 64,
            plaintext_length=plaintext_length,
            ciphertext_sha256=ciphertext_sha256,
            ciphertext_length=ciphertext_length(plaintext_length),
        )

    for attachment, code in (
        (body_key("f" * 64, 1000), "ATTACHMENT_MISSING"),
        (body_key(stored_sha, 999), "ATTACHMENT_MISMATCH"),
    ):
        message_id = MessageId(uuid.uuid4())
        sealed = seal(
            b'{"not":"checked by the gateway"}',
            message_id=message_id,
            sender=AgencyId(BD),
            signing_key=key,
            recipients=[Recipient(AgencyId(LY), recipient)],
            archive_key=None,
            message_type="MLA_REQUEST",
            case_id=CaseId("BD-LY-ATT-MISSING"),
            created_at=now,
            expires_at=now + timedelta(hours=1),
            limits=DEFAULT_LIMITS,
            attachments=[attachment],
        )
        await publish_as(network.stack, BD, sealed.to_bytes(), str(message_id))

        async def rejected(message_id: MessageId = message_id) -> EvidenceLeaf | None:
            for entry in await audit_entries(session, network, str(message_id)):
                leaf = decode_leaf(b64decode(entry["leaf"]))
                if isinstance(leaf, EvidenceLeaf) and "SUBMISSION_REJECTED" in leaf.identity:
                    return leaf
            return None

        leaf = await poll(rejected, within_s=30, what=f"the rejection of {message_id}", interval=0.3)
        statement = verify_evidence(leaf.evidence, directory, now=datetime.now(UTC)).statement
        assert statement.reason is not None
        assert statement.reason.code == code
        assert statement.message_digest == sealed.digest


async def test_the_auditor_verifies_a_log_holding_attachment_and_deletion_leaves(network, session):
    """`rogatory audit verify` accepts the log with its `attachments` and `blob_deleted` leaves (exit 0)."""
    kinds = {type(leaf) for leaf in await all_leaves(session, network)}
    assert {AttachmentsLeaf, BlobDeletedLeaf} <= kinds, "earlier tests of this module logged both kinds"
    verified = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "deploy",
            "audit",
            "verify",
            "--gateway",
            network.gateway_url,
            "--state-dir",
            str(network.root),
            "--no-state",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
