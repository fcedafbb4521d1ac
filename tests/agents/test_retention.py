"""Retention: a closed case past the agency's period loses its content, never its evidence; nothing else is touched."""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agents.attachments import PURGED, AttachmentStore
from agents.cases import CaseBook
from agents.retention import Retention
from agents.store import AgentStore
from deploy.cli.commands import main
from protocol.directory import NOTHING_HELD, verify_directory
from protocol.encoding import b64decode, parse_timestamp
from protocol.errors import ErrorCode
from protocol.evidence import parse_signed_evidence, verify_evidence, verify_evidence_as_of_its_time
from protocol.keys import SigningPublicKey
from protocol.keystore import unlock_keystore
from protocol.limits import DEFAULT_LIMITS
from protocol.signing import SignedStatement
from protocol.storage import STORAGE_KEY_NAME, StorageKey
from runtime.runner import utc_now
from tests.agents.harness import InProcessAgent, carry, return_evidence
from tests.protocol.mla.mla_samples import SAMPLES_DIR
from tests.support.network import BD, LY, NOW

Agents = tuple[InProcessAgent, InProcessAgent]
CLOSED, OPEN = "BD-LY-2025-0011", "BD-LY-2025-0007"
RELEASE = Path(__file__).parents[1] / "fixtures" / "release-504c590" / "sqlite"


async def _play(agents: Agents, names: list[str]) -> list[dict[str, Any]]:
    """Each sample submitted by its sender, delivered, retrieved, its evidence brought back."""
    by_agency = {BD: agents[0], LY: agents[1]}
    played = []
    for name in names:
        raw = (SAMPLES_DIR / name).read_bytes()
        document = json.loads(raw)
        sender = by_agency[document["sender"]["authority_id"]]
        recipient = by_agency[document["recipient"]["authority_id"]]
        status, accepted = await sender.submit(raw)
        assert status == 202, accepted
        assert [r.result for r in await carry(sender, recipient)] == ["delivered"]
        await recipient.ack(document["message_id"])
        await return_evidence(recipient, sender)
        played.append(document)
    return played


def _closed_case() -> list[str]:
    return sorted(path.name for path in SAMPLES_DIR.glob(f"{CLOSED}_*.json"))


def _retention(agent: InProcessAgent, *, days: int | None, at: datetime) -> Retention:
    return Retention(
        agency=agent.agency,
        store=agent.store,
        cases=agent.cases,
        attachments=None,
        after_close_days=days,
        clock=lambda: at,
    )


def _file_bytes(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in (path, path.with_name(path.name + "-wal")) if p.exists())


async def test_a_closed_case_past_its_retention_loses_its_content_and_keeps_a_verifying_evidence_chain(
    agents: Agents, tmp_path: Path
) -> None:
    bd, ly = agents
    closed = await _play(agents, _closed_case())
    opened = await _play(agents, [f"{OPEN}_01_MLA_REQUEST.json"])
    assert (await bd.case(CLOSED))["state"] == "CLOSED"
    sealed_before = {}
    for agent in agents:
        database = sqlite3.connect(tmp_path / f"{agent.agency}.db")
        sealed_before[agent.agency] = [
            bytes(row[0])
            for row in database.execute(
                "SELECT document FROM outbox WHERE case_id = ? UNION ALL SELECT sealed FROM inbox WHERE case_id = ?",
                (CLOSED, CLOSED),
            )
        ]
        database.close()

    later = NOW + timedelta(days=31)
    assert await _retention(bd, days=30, at=NOW + timedelta(days=29)).due() == []
    for agent in agents:
        due = await _retention(agent, days=30, at=later).due()
        assert [case.case_id for case in due] == [CLOSED]
        assert len(due[0].messages) == len(closed)
        purged = await _retention(agent, days=30, at=later).purge()
        assert sorted(record.message_id for record in purged) == sorted(d["message_id"] for d in closed)
        assert all(parse_timestamp(record.purged_at) == later for record in purged)
        # Gone from the file, and from its WAL: the bytes that were there are not any more.
        on_disk = _file_bytes(tmp_path / f"{agent.agency}.db")
        assert all(value and value not in on_disk for value in sealed_before[agent.agency])
        # The trail: one row per message, with the policy and the date the period ran from.
        trail = await agent.store.purges()
        assert [record.message_id for record in trail] == [record.message_id for record in purged]
        assert {(record.case_id, record.retention_days) for record in trail} == {(CLOSED, 30)}
        markings = {d["message_id"]: d["classification"] for d in closed}
        assert {record.message_id: record.classification for record in trail} == markings
        # A second run finds nothing more.
        assert await _retention(agent, days=30, at=later).purge() == []

    status, answer = await bd.call("GET", f"/v1/cases/{CLOSED}")
    assert (status, answer["code"]) == (410, ErrorCode.CONTENT_PURGED)
    assert answer["content_purged_at"]
    assert (await bd.case(OPEN))["state"] == "SUBMITTED"

    sent_by_bd = [d["message_id"] for d in closed if d["sender"]["authority_id"] == BD]
    for message_id in sent_by_bd:
        status_answer = await bd.message(message_id)
        assert status_answer["content_purged_at"] is not None
        assert status_answer["status"] == "retrieved"
        assert status_answer["message_digest"]
        types = {item["type"] for item in status_answer["evidence"]}
        assert {"DELIVERY", "RETRIEVAL"} <= types
        for item in await bd.store.evidence_for(message_id):
            verified = verify_evidence(parse_signed_evidence(item.signed, DEFAULT_LIMITS), bd.directory, now=NOW)
            assert str(verified.statement.message_id) == message_id
            assert verified.statement.message_digest == status_answer["message_digest"]
    assert (await bd.message(opened[0]["message_id"]))["content_purged_at"] is None

    status, inbox = await ly.call("GET", "/v1/inbox?after=0&limit=100")
    assert status == 200
    by_id = {item["message_id"]: item for item in inbox["messages"]}
    for document in closed:
        if document["recipient"]["authority_id"] == LY:
            item = by_id[document["message_id"]]
            assert item["document"] is None
            assert item["content_purged_at"] is not None
            assert item["message_digest"]
    kept = by_id[opened[0]["message_id"]]
    assert kept["document"]["message_id"] == opened[0]["message_id"]
    assert kept["content_purged_at"] is None

    # The purged case takes no more messages: its state cannot be folded without its documents.
    use_consent = json.loads((SAMPLES_DIR / f"{OPEN}_15_USE_CONSENT_REQUEST.json").read_bytes())
    use_consent |= {"case_id": CLOSED, "message_id": "0b0c0d0e-0000-4000-8000-000000000015"}
    use_consent.pop("in_reply_to", None)
    status, refused = await bd.submit(use_consent)
    assert (status, refused["code"]) == (409, ErrorCode.CONTENT_PURGED)


async def test_an_open_case_or_a_closed_one_within_its_period_or_no_policy_keeps_everything(agents: Agents) -> None:
    bd, _ = agents
    await _play(agents, _closed_case())
    await _play(agents, [f"{OPEN}_01_MLA_REQUEST.json"])
    for days, at in ((None, NOW + timedelta(days=3650)), (30, NOW + timedelta(days=29)), (0, NOW - timedelta(days=1))):
        retention = _retention(bd, days=days, at=at)
        assert await retention.due() == []
        assert await retention.purge() == []
    assert await bd.store.purges() == []
    assert (await bd.case(CLOSED))["state"] == "CLOSED"
    # Zero days: due as soon as the case is closed; the open case never.
    assert [case.case_id for case in await _retention(bd, days=0, at=NOW).due()] == [CLOSED]


def _storage_key(service_dir: Path) -> StorageKey:
    keys = unlock_keystore(
        (service_dir / "keystore.json").read_bytes(), (service_dir / "passphrase").read_bytes().strip()
    )
    return StorageKey(keys[STORAGE_KEY_NAME])


async def test_the_release_504c590_databases_migrate_then_purge_their_closed_case_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(RELEASE, tmp_path / "release")
    root = tmp_path / "release"
    signed = SignedStatement.from_json((root / "directory.json").read_bytes())
    authority = SigningPublicKey(b64decode((root / "authority_key").read_text().strip()))
    for agency in (BD, LY):
        data = root / agency
        key = _storage_key(data)
        store = await AgentStore.open(data / "agent.db", storage_key=key)  # migrates to the latest version
        attachments = await AttachmentStore.open(data, storage_key=key)
        try:
            evidence_before = {
                row.message_id: await store.evidence_for(row.message_id) for row in await store.inbox_after(0, 100)
            }
            retention = Retention(
                agency=agency,
                store=store,
                cases=CaseBook(agency),
                attachments=attachments,
                after_close_days=0,
                clock=utc_now,
            )
            purged = await retention.purge()
            assert {record.case_id for record in purged} == {CLOSED}
            assert len(purged) == 6
            for row in await store.inbox_after(0, 100):
                assert (row.content_purged_at is not None) == (row.case_id == CLOSED)
            for record in purged:
                held = await store.evidence_for(record.message_id)
                if record.message_id in evidence_before:
                    assert held == evidence_before[record.message_id]
                for item in held:
                    statement = parse_signed_evidence(item.signed, DEFAULT_LIMITS)
                    at = parse_timestamp(item.at)
                    directory = verify_directory(
                        signed, authority, now=at, held_version=NOTHING_HELD, limits=DEFAULT_LIMITS
                    )
                    verify_evidence_as_of_its_time(statement, directory)
                    assert item.inclusion_proof is not None  # the gateway's proof, kept
            received = list((data / "attachments" / "received").glob("*")) if agency == LY else []
            assert len(received) == (1 if agency == LY else 0)  # the open case's body stays
        finally:
            await attachments.close()
            await store.close()

    # The operator's view: nothing more is due, the trail says what went.
    arguments = [
        "--data-dir",
        str(root / LY),
        "--keystore-file",
        str(root / LY / "keystore.json"),
        "--passphrase-file",
        str(root / LY / "passphrase"),
        "--agency",
        LY,
        "--after-close-days",
        "0",
    ]
    capsys.readouterr()
    assert await _cli("retention", "show", *arguments) == 0
    assert "0 case(s) due (retention 0 days after closure); 6 message(s) purged before" in capsys.readouterr().out
    assert await _cli("retention", "purge", *arguments) == 0
    assert "0 message(s) purged" in capsys.readouterr().out


async def test_purging_a_received_body_removes_the_file_and_its_key(tmp_path: Path) -> None:
    shutil.copytree(RELEASE / LY, tmp_path / LY)
    data = tmp_path / LY
    attachments = await AttachmentStore.open(data, storage_key=_storage_key(data))
    try:
        database = sqlite3.connect(data / "attachments.db")
        sender, message_id = database.execute("SELECT sender, message_id FROM received").fetchone()
        database.close()
        assert len(await attachments.received_for(sender, message_id)) == 1
        assert await attachments.purge_received(sender, message_id, "2031-01-01T00:00:00Z") == 1
        await attachments.forget_purged_bytes()
        assert await attachments.received_for(sender, message_id) == []
        assert not any((data / "attachments" / "received").iterdir())
    finally:
        await attachments.close()
    database = sqlite3.connect(data / "attachments.db")
    assert database.execute("SELECT state, length(key_json) FROM received").fetchall() == [(PURGED, 0)]
    database.close()


async def _cli(*arguments: str) -> int:
    return await asyncio.to_thread(main, list(arguments))


async def test_purging_a_sent_body_removes_its_encrypted_copy_and_its_key(tmp_path: Path) -> None:
    """The release's sender-side upload (the open case's annex): its ciphertext file and key go, others stay."""
    shutil.copytree(RELEASE / BD, tmp_path / BD)
    data = tmp_path / BD
    attachments = await AttachmentStore.open(data, storage_key=_storage_key(data))
    try:
        database = sqlite3.connect(data / "attachments.db")
        plaintext, ciphertext = database.execute("SELECT plaintext_sha256, ciphertext_sha256 FROM uploads").fetchone()
        database.close()
        attachments.blob_path(ciphertext).write_bytes(b"ciphertext as the release kept it")
        other = attachments.blob_path("0" * 64)
        other.write_bytes(b"another body")
        assert await attachments.purge_uploads(["f" * 64]) == 0
        assert await attachments.purge_uploads([plaintext]) == 1
        assert not attachments.blob_path(ciphertext).exists()
        assert other.exists()
        assert await attachments.upload_of(plaintext) is None
    finally:
        await attachments.close()


async def test_the_agent_task_purges_what_falls_due_and_stops_when_told(agents: Agents) -> None:
    bd, _ = agents
    await _play(agents, _closed_case())
    stopping = asyncio.Event()
    task = asyncio.create_task(_retention(bd, days=30, at=NOW + timedelta(days=30)).run(stopping, interval=0.01))
    try:
        for _ in range(500):
            if await bd.store.purges():
                break
            await asyncio.sleep(0.01)
        assert {record.case_id for record in await bd.store.purges()} == {CLOSED}
    finally:
        stopping.set()
        await task
    assert task.done()
