"""`rogatory backup` / `rogatory restore` on a real network of processes (real RabbitMQ, real PostgreSQL).

A backup taken while messages flow is consistent (every database passes
`PRAGMA integrity_check`, the audit log inside verifies, every body an
index names is in it); a data directory lost after a backup comes back
whole (agent and gateway on SQLite, gateway on PostgreSQL) and the network
carries on; a damaged, truncated, incomplete or foreign backup is refused,
as is a restore into the directory of a running service, and the target is
left as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from deploy.bench.scenarios import bench_case
from deploy.cli.backup import (
    EXIT_DAMAGED,
    EXIT_FOREIGN,
    EXIT_IN_USE,
    Progress,
    referenced_files,
    verify_archive,
)
from deploy.cli.commands import main
from deploy.client.samples import REQUEST_SAMPLE, sample
from protocol.audit_verify import LogEntry, verify_audit_log
from protocol.encoding import b64decode
from protocol.keys import SigningPublicKey
from tests.faults.conftest import SYSTEM_AMQP_URL, SYSTEM_MANAGEMENT_URL
from tests.faults.harness import RECIPIENT, SENDER, FaultNetwork, Traffic, settle
from tests.gateway.conftest import fresh_postgres_database

pytestmark = [pytest.mark.faults, pytest.mark.broker, pytest.mark.e2e]


NOTES = 80
NOTES_PER_SECOND = 10.0
"""The flow lasts about eight seconds; the backups, well under one each, are taken in its middle."""


def rogatory(*args: str) -> subprocess.CompletedProcess[str]:
    """The command line in a process of its own, as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "deploy", *args], capture_output=True, text=True, timeout=300, check=False
    )


async def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The same command line in this process (its `main`, in a thread): no interpreter start per call."""

    def run() -> subprocess.CompletedProcess[str]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main(list(args))
        return subprocess.CompletedProcess(list(args), status, out.getvalue(), err.getvalue())

    return await asyncio.to_thread(run)


def data_dir(network: FaultNetwork, service: str) -> Path:
    return network.paths.data(service)


def snapshot_of(directory: Path) -> dict[str, str]:
    """Every file under `directory` with its SHA-256: to show a refused restore changed nothing."""
    return {
        str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.rglob("*"))
        if path.is_file() and not path.name.endswith(("-wal", "-shm"))
    }


def extracted(archive: Path, into: Path) -> dict[str, Any]:
    """The backup verified and unpacked into `into` (members under `into/data`); its manifest."""
    into.mkdir()
    return verify_archive(archive, into, Progress("test", total_bytes=archive.stat().st_size))


def integrity(database: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(database)) as connection:
        return [row[0] for row in connection.execute("PRAGMA integrity_check")]


def audit_log_of(gateway_db: Path) -> tuple[list[LogEntry], list[str]]:
    """The entries and checkpoints (with their cosignatures) a gateway database holds, as the API serves them."""
    with contextlib.closing(sqlite3.connect(gateway_db)) as connection:
        entries = [
            LogEntry(bytes(leaf), bytes(receipt))
            for leaf, receipt in connection.execute("SELECT leaf, receipt FROM leaves ORDER BY leaf_index")
        ]
        notes = []
        for checkpoint_id, note in connection.execute("SELECT checkpoint_id, note FROM checkpoints ORDER BY 1"):
            lines = connection.execute(
                "SELECT signature_line FROM cosignatures WHERE checkpoint_id = ? ORDER BY witness", (checkpoint_id,)
            )
            notes.append(note + "".join(line for (line,) in lines))
    return entries, notes


def verified_size(network: FaultNetwork, entries: list[LogEntry], notes: list[str]) -> int:
    """The size of the latest checkpoint, once the log verifies against the network's authority."""
    authority = SigningPublicKey(b64decode(network.stack["network"]["authority_key"]))
    size = int(notes[-1].splitlines()[1])
    report = verify_audit_log(entries[:size], notes, authority=authority)
    assert report.consistent, report.problem
    return size


async def send_with_attachment(network: FaultNetwork, tmp_path: Path) -> tuple[str, bytes]:
    """An MLA request from the sender with a 2 MiB attachment, by `rogatory send --attach`: (message id, body)."""
    document = bench_case(sample(REQUEST_SAMPLE), f"BD-LY-2026-B{uuid.uuid4().hex[:6].upper()}")
    document["message_id"] = str(uuid.uuid4())
    path, body = tmp_path / f"{document['message_id']}.json", tmp_path / f"{document['message_id']}.bin"
    path.write_text(json.dumps(document))
    content = hashlib.sha256(document["message_id"].encode()).digest() * (2 * 1024 * 1024 // 32)
    body.write_bytes(content)
    sent = await cli("send", str(path), "--attach", str(body), "--state-dir", str(network.root), "--agency", SENDER)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    return document["message_id"], content


async def fetch_attachment(network: FaultNetwork, message_id: str, out: Path) -> bytes:
    fetched = await cli(
        "fetch", message_id, "ATT-1", "--out", str(out), "--state-dir", str(network.root), "--agency", RECIPIENT
    )
    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    return out.read_bytes()


async def audit_verifies(network: FaultNetwork, size: int) -> None:
    """`rogatory audit verify` against the running gateway: consistent, up to `size` entries (once the restarted
    gateway signed its checkpoint of them)."""
    gateway = network.stack["gateway"]
    for _ in range(60):
        verdict = await cli(
            "audit", "verify", "--gateway", gateway["url"], "--state-dir", str(network.root), "--no-state"
        )
        assert verdict.returncode == 0, verdict.stdout + verdict.stderr
        if f"the audit log of {size} entries verifies" in verdict.stdout:
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"the restored log never showed {size} entries: {verdict.stdout}")


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultNetwork]:
    """A dev network with the gateway on SQLite, for the whole module."""
    root = tmp_path_factory.mktemp("backup-net")
    started = asyncio.run(FaultNetwork.start(root, amqp_url=SYSTEM_AMQP_URL, management_url=SYSTEM_MANAGEMENT_URL))
    try:
        yield started
    finally:
        asyncio.run(started.destroy())


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as client_session:
        yield client_session


async def test_backup_taken_while_messages_flow_is_consistent_and_restores_a_lost_data_dir(
    network: FaultNetwork, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Backups of the gateway and both agents taken mid-flow verify inside; after the flow, a backup of each
    restores its lost data directory and the network goes on with every message, body and log entry."""
    message_id, body = await send_with_attachment(network, tmp_path)
    traffic = Traffic(network, session)
    await traffic.open_cases(1)
    flow = asyncio.create_task(traffic.send(traffic.notes(NOTES), per_second=NOTES_PER_SECOND))
    while len(traffic.accepted) < NOTES // 8:
        await asyncio.sleep(0.2)
    live: dict[str, Path] = {}
    for service in ("gateway", SENDER, RECIPIENT):  # while the notes flow
        live[service] = tmp_path / f"live-{service}.tar"
        made = await cli("backup", "--data-dir", str(data_dir(network, service)), "--out", str(live[service]))
        assert made.returncode == 0, made.stdout + made.stderr
        assert " members, " in made.stdout.splitlines()[-1]
        print(made.stdout.splitlines()[-1])
    assert not flow.done(), "the backups were taken while the notes were being sent"
    await flow
    await settle(network, session, traffic)

    for service, archive in live.items():
        unpacked = tmp_path / f"unpacked-{service}"
        manifest = extracted(archive, unpacked)
        assert manifest["kind"] == ("gateway" if service == "gateway" else "agent")
        assert manifest["identity"]["name"] != ""
        assert manifest["absent_at_source"] == []
        members = {member["name"] for member in manifest["members"]}
        databases = list((unpacked / "data").glob("*.db"))
        assert databases
        for database in databases:
            assert integrity(database) == ["ok"], database
        index = unpacked / "data" / ("blobs.db" if service == "gateway" else "attachments.db")
        named = referenced_files(manifest["kind"], index)
        assert {f"data/{name}" for name in named} <= members
        if service in ("gateway", SENDER):
            assert named, "the attachment's body is named by the index and in the backup"
    entries, notes = audit_log_of(tmp_path / "unpacked-gateway" / "data" / "gateway.db")
    mid_flow_size = verified_size(network, entries, notes)

    # After the flow: back up, lose the gateway's and the recipient's data directories, restore them.
    quiet: dict[str, Path] = {}
    for service in ("gateway", RECIPIENT):  # by the console script, in a process of its own
        quiet[service] = tmp_path / f"quiet-{service}.tar"
        made = rogatory("backup", "--data-dir", str(data_dir(network, service)), "--out", str(quiet[service]))
        assert made.returncode == 0, made.stdout + made.stderr
    await network.stop()
    with contextlib.closing(sqlite3.connect(data_dir(network, "gateway") / "gateway.db")) as connection:
        final_size = int(connection.execute("SELECT COUNT(*) FROM leaves").fetchone()[0])
    assert mid_flow_size < final_size, ("the log grew after the mid-flow backup", mid_flow_size, final_size)
    for service in ("gateway", RECIPIENT):
        shutil.rmtree(data_dir(network, service))
        restored = await cli("restore", str(quiet[service]), "--data-dir", str(data_dir(network, service)))
        assert restored.returncode == 0, restored.stdout + restored.stderr
        print(restored.stdout.splitlines()[-1])
    await network.restart()

    await audit_verifies(network, final_size)
    recipient = network.agent(session, RECIPIENT)
    for accepted in traffic.accepted:
        await recipient.wait_for_inbox(accepted)
    assert await fetch_attachment(network, message_id, tmp_path / "fetched.bin") == body
    after_id, _ = await send_with_attachment(network, tmp_path)  # and the restored network carries on
    await recipient.wait_for_inbox(after_id)


async def test_restore_into_a_running_service_directory_is_refused(
    network: FaultNetwork, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """The agent runs: its own backup is refused there (exit 5), and it goes on receiving."""
    await network.restart()
    archive = tmp_path / "recipient.tar"
    target = data_dir(network, RECIPIENT)
    made = await cli("backup", "--data-dir", str(target), "--out", str(archive))
    assert made.returncode == 0, made.stdout + made.stderr
    refused = await cli("restore", str(archive), "--data-dir", str(target))
    assert refused.returncode == EXIT_IN_USE, refused.stdout + refused.stderr
    assert "in use" in refused.stderr
    message_id, _ = await send_with_attachment(network, tmp_path)
    await network.agent(session, RECIPIENT).wait_for_inbox(message_id)


async def test_damaged_backup_is_refused_and_the_target_left_as_it_was(network: FaultNetwork, tmp_path: Path) -> None:
    """A flipped byte (in a body, in the manifest), a truncated archive or a missing member: exit 3, nothing
    touched."""
    archive = tmp_path / "agent.tar"
    made = await cli("backup", "--data-dir", str(data_dir(network, RECIPIENT)), "--out", str(archive))
    assert made.returncode == 0, made.stdout + made.stderr
    await network.terminate(RECIPIENT)
    target = data_dir(network, RECIPIENT)
    before = snapshot_of(target)
    raw = archive.read_bytes()
    with tarfile.open(archive) as tar:
        members = {info.name: info for info in tar.getmembers()}
    body = members["data/agent.db"]
    manifest = members["manifest.json"]

    def flipped(offset: int) -> bytes:
        return raw[:offset] + bytes([raw[offset] ^ 0x01]) + raw[offset + 1 :]

    without_member = io.BytesIO()
    with tarfile.open(archive) as source, tarfile.open(fileobj=without_member, mode="w") as copy:
        for info in source.getmembers():
            if info.name != "data/directory-held":
                copy.addfile(info, source.extractfile(info))
    damaged = {
        "a flipped byte in agent.db": flipped(body.offset_data + body.size // 2),
        "a flipped byte in the manifest": flipped(manifest.offset_data + manifest.size // 2),
        "truncated": raw[: len(raw) // 2],
        "a missing member": without_member.getvalue(),
    }
    for what, content in damaged.items():
        (tmp_path / "damaged.tar").write_bytes(content)
        refused = await cli("restore", str(tmp_path / "damaged.tar"), "--data-dir", str(target))
        assert refused.returncode == EXIT_DAMAGED, (what, refused.stdout, refused.stderr)
        assert "damaged" in refused.stderr, what
        assert snapshot_of(target) == before, what
    assert not [path for path in target.parent.iterdir() if ".restore-" in path.name or ".previous-" in path.name]


async def test_foreign_backup_is_refused(network: FaultNetwork, tmp_path: Path) -> None:
    """Another agency's backup, or an agent's into a gateway's directory: exit 4, nothing touched."""
    archive = tmp_path / "recipient.tar"
    made = await cli("backup", "--data-dir", str(data_dir(network, RECIPIENT)), "--out", str(archive))
    assert made.returncode == 0, made.stdout + made.stderr
    await network.terminate(SENDER)
    await network.terminate("gateway")
    for service, said in ((SENDER, f"belongs to agent {SENDER}"), ("gateway", "is a gateway's data directory")):
        target = data_dir(network, service)
        before = snapshot_of(target)
        refused = await cli("restore", str(archive), "--data-dir", str(target))
        assert refused.returncode == EXIT_FOREIGN, refused.stdout + refused.stderr
        assert said in refused.stderr
        assert snapshot_of(target) == before


async def test_gateway_on_postgresql_round_trip(
    tmp_path_factory: pytest.TempPathFactory, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """The gateway's records in PostgreSQL (pg_dump) and its bodies on disk: lost, restored, carrying on."""
    async with fresh_postgres_database() as database_url:
        root = tmp_path_factory.mktemp("backup-pg-net")
        network = await FaultNetwork.start(
            root,
            amqp_url=SYSTEM_AMQP_URL,
            management_url=SYSTEM_MANAGEMENT_URL,
            settings={"ROGATORY_DATABASE_URL": database_url},
        )
        try:
            message_id, body = await send_with_attachment(network, tmp_path)
            await network.agent(session, RECIPIENT).wait_for_inbox(message_id)
            archive = tmp_path / "gateway.tar"
            gateway_dir = data_dir(network, "gateway")
            assert not (gateway_dir / "gateway.db").exists()
            made = await cli(
                "backup", "--data-dir", str(gateway_dir), "--out", str(archive), "--database-url", database_url
            )
            assert made.returncode == 0, made.stdout + made.stderr
            print(made.stdout.splitlines()[-1])
            manifest = extracted(archive, tmp_path / "unpacked")
            assert manifest["database"] == "postgresql"
            assert "postgresql.dump" in {member["name"] for member in manifest["members"]}
            await network.terminate("gateway")
            connection = await asyncpg.connect(database_url)
            try:
                size = await connection.fetchval("SELECT COUNT(*) FROM leaves")
                await connection.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
            finally:
                await connection.close()
            shutil.rmtree(gateway_dir)
            without_url = await cli("restore", str(archive), "--data-dir", str(gateway_dir))
            assert without_url.returncode == 2, without_url.stdout + without_url.stderr
            restored = await cli(
                "restore", str(archive), "--data-dir", str(gateway_dir), "--database-url", database_url
            )
            assert restored.returncode == 0, restored.stdout + restored.stderr
            print(restored.stdout.splitlines()[-1])
            await network.restart()
            await audit_verifies(network, size)
            assert await fetch_attachment(network, message_id, tmp_path / "fetched.bin") == body
            after_id, _ = await send_with_attachment(network, tmp_path)
            await network.agent(session, RECIPIENT).wait_for_inbox(after_id)
        finally:
            await network.destroy()
