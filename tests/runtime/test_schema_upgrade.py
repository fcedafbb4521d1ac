"""Upgrading stores written by release 504c590 (tests/fixtures/release-504c590): nothing lost, the log still verifies.

Each test copies the fixture to a temporary directory first: the committed
files are never migrated in place. The figures (rows per table before and
after) are printed for the report (`pytest -s`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
from aiohttp import test_utils

from agents.api import AgentApi, ApiContext
from agents.attachments import ATTACHMENT_SCHEMA
from agents.cases import CaseBook
from agents.store import AGENT_SCHEMA, AgentStore
from agents.submission import SenderKeys
from deploy.cli.auditor import LogSnapshot, exit_status, read_export, verify_snapshot
from deploy.cli.commands import main
from gateway.blobs import BLOB_SCHEMA
from gateway.store import GATEWAY_SCHEMA, GatewayStore
from protocol.audit_verify import LogEntry
from protocol.keystore import unlock_keystore
from protocol.limits import DEFAULT_LIMITS
from protocol.merkle import MerkleTree, root_from_nodes
from protocol.storage import STORAGE_KEY_NAME, StorageKey
from runtime.errors import ConfigurationError, StoreUnavailable
from runtime.runner import EXIT_CONFIGURATION
from runtime.schema import (
    VERSION_TABLE,
    Migration,
    Schema,
    SchemaTooNew,
    migrate_sqlite,
    sqlite_status,
)
from tests.agents.harness import TOKEN
from tests.gateway.conftest import fresh_postgres_database
from tests.support.network import BD, NOW, LocalNetwork

RELEASE = Path(__file__).parents[1] / "fixtures" / "release-504c590"
AGENCIES = ("BD-MOHA-PSD", "LY-MLA-CA")
SCHEMAS = {
    "agent.db": AGENT_SCHEMA,
    "attachments.db": ATTACHMENT_SCHEMA,
    "gateway.db": GATEWAY_SCHEMA,
    "blobs.db": BLOB_SCHEMA,
}


def _copy_release(tmp_path: Path) -> Path:
    target = tmp_path / "release-504c590"
    shutil.copytree(RELEASE / "sqlite", target)
    return target


def _sqlite_rows(path: Path, columns: dict[str, list[str]] | None = None) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table (but SQLite's and the version table), in a stable order; only `columns` if given."""
    connection = sqlite3.connect(path)
    try:
        tables = [
            str(row[0])
            for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            if row[0] not in ("sqlite_sequence", VERSION_TABLE)
        ]
        found = {}
        for table in tables:
            names = (columns or {}).get(table) or [str(c[1]) for c in connection.execute(f"PRAGMA table_info({table})")]
            rows = connection.execute(f"SELECT {', '.join(names)} FROM {table}").fetchall()  # noqa: S608
            found[table] = sorted(rows, key=repr)
        return found
    finally:
        connection.close()


def _assert_the_tree_of(leaf_hashes: list[bytes], node_rows: Sequence[Sequence[Any]]) -> None:
    """`tree_nodes` rows (level, node_index, hash) are exactly the complete subtrees of level >= 1 of these leaves."""
    count = len(leaf_hashes)
    assert count > 2
    nodes = {(int(level), int(index)): bytes(value) for level, index, value in node_rows}
    assert len(nodes) == len(node_rows) == count - count.bit_count()  # n - popcount(n) complete subtrees above 0
    for (level, index), value in nodes.items():
        assert value == MerkleTree.from_leaf_hashes(leaf_hashes[index << level : (index + 1) << level]).root()
    assert root_from_nodes(count, {(0, i): h for i, h in enumerate(leaf_hashes)} | nodes) == (
        MerkleTree.from_leaf_hashes(leaf_hashes).root()
    )


def _columns(path: Path) -> dict[str, list[str]]:
    connection = sqlite3.connect(path)
    try:
        tables = [str(r[0]) for r in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {t: [str(c[1]) for c in connection.execute(f"PRAGMA table_info({t})")] for t in tables}
    finally:
        connection.close()


async def _cli(*arguments: str) -> int:
    """`rogatory ...` from a test running on an event loop (the command runs one of its own)."""
    return await asyncio.to_thread(main, list(arguments))


def _storage_key(service_dir: Path) -> StorageKey:
    keys = unlock_keystore(
        (service_dir / "keystore.json").read_bytes(), (service_dir / "passphrase").read_bytes().strip()
    )
    return StorageKey(keys[STORAGE_KEY_NAME])


def test_every_sqlite_store_of_release_504c590_is_adopted_and_migrated_without_losing_a_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _copy_release(tmp_path)
    databases = sorted(root.glob("*/*.db"))
    assert len(databases) == 6
    before = {path: (_columns(path), _sqlite_rows(path)) for path in databases}
    for path in databases:
        status = sqlite_status(path, SCHEMAS[path.name])
        assert status.unversioned
        assert status.version == 1

    for service in ("gateway", *AGENCIES):
        assert main(["db", "migrate", "--data-dir", str(root / service)]) == 0
    migrated = capsys.readouterr().out
    assert migrated.count("(adopted: made before versioning)") == 6

    figures = []
    for path in databases:
        columns, rows = before[path]
        migrated_rows = _sqlite_rows(path, columns)
        added = set(migrated_rows) - set(rows)
        numbered = {"outbox_order", "case_index"}  # step 4 numbers the sent messages and cases already held
        computed = {"tree_nodes"}  # the gateway's step 3 computes the tree of the leaves already logged
        assert all(not migrated_rows[table] for table in added - numbered - computed)  # other tables added: empty
        if "leaves" in rows:
            leaves = sorted(rows["leaves"], key=lambda row: row[columns["leaves"].index("leaf_index")])
            hashes = [bytes(row[columns["leaves"].index("leaf_hash")]) for row in leaves]
            _assert_the_tree_of(hashes, migrated_rows["tree_nodes"])
        if "outbox" in rows:
            assert len(migrated_rows["outbox_order"]) == len(rows["outbox"])
            cases = {row[columns["outbox"].index("case_id")] for row in rows["outbox"]}
            cases |= {row[columns["inbox"].index("case_id")] for row in rows["inbox"]}
            assert len(migrated_rows["case_index"]) == len(cases)
        after = {table: migrated_rows[table] for table in rows}
        assert after == rows, f"{path}: rows changed by the migration"
        schema = SCHEMAS[path.name]
        status = sqlite_status(path, schema)
        assert (status.version, status.pending, status.unversioned) == (schema.latest, (), False)
        assert status.applied[0].adopted
        assert [step.version for step in status.applied] == list(range(1, schema.latest + 1))
        figures += [
            f"{path.parent.name}/{path.name} {table}: {len(rows[table])} -> {len(after[table])}"
            for table in sorted(rows)
        ]
    with capsys.disabled():
        print("\nrows before -> after migration, release 504c590 SQLite fixtures:\n  " + "\n  ".join(figures))
    assert sum(len(rows) for _, tables in before.values() for rows in tables.values()) > 100

    # Migrating again finds nothing to do.
    assert main(["db", "migrate", "--data-dir", str(root / "gateway")]) == 0
    assert "nothing to do" in capsys.readouterr().out


async def test_a_migrated_agent_store_opens_the_documents_the_release_sealed(tmp_path: Path) -> None:
    root = _copy_release(tmp_path)
    for agency in AGENCIES:
        before = _sqlite_rows(root / agency / "agent.db")
        store = await AgentStore.open(root / agency / "agent.db", storage_key=_storage_key(root / agency))
        try:
            received = await store.inbox_after(0, 100)
            assert len(received) == len(before["inbox"]) == 4
            cases = {json.loads(record.document)["case_id"] for record in received}
            assert cases == {"BD-LY-2025-0011", "BD-LY-2025-0007"}
            for row in before["outbox"]:
                sent = await store.outbox(str(row[0]))
                assert sent is not None
                assert json.loads(sent.document)["message_id"] == sent.message_id
                evidence = await store.evidence_for(sent.message_id)
                assert {"SUBMISSION_ACCEPTED", "DELIVERY", "RETRIEVAL"} <= {item.evidence_type for item in evidence}
        finally:
            await store.close()


def _snapshot(entries: list[tuple[bytes, bytes]], checkpoints: list[str]) -> LogSnapshot:
    size = int(checkpoints[-1].splitlines()[1])
    return LogSnapshot(tuple(checkpoints), tuple(LogEntry(leaf, receipt) for leaf, receipt in entries[:size]))


async def _store_snapshot(store: GatewayStore) -> LogSnapshot:
    leaves = await store.leaves(start=0, limit=100_000)
    checkpoints = [record.note + "".join(record.cosignatures) for record in await store.checkpoints()]
    return _snapshot([(leaf.leaf, leaf.receipt) for leaf in leaves], checkpoints)


async def test_the_audit_log_of_a_migrated_gateway_verifies_as_the_release_exported_it(tmp_path: Path) -> None:
    root = _copy_release(tmp_path)
    store = await GatewayStore.open(root / "gateway" / "gateway.db")
    try:
        snapshot = await _store_snapshot(store)
    finally:
        await store.close()
    exported = read_export(RELEASE / "sqlite" / "audit-export.json")
    assert snapshot.entries[: len(exported.entries)] == exported.entries
    report = verify_snapshot(snapshot, (RELEASE / "sqlite" / "authority_key").read_text().strip())
    assert report.problem is None, report.problem
    assert exit_status(report) == 0
    assert report.leaves == len(snapshot.entries) > 0


def _too_new(path: Path, schema: Schema) -> int:
    """Record a step this release does not know, as a newer release would."""
    newer = schema.latest + 1
    connection = sqlite3.connect(path)
    with connection:
        connection.execute(
            f"INSERT INTO {VERSION_TABLE} (version, name, applied_at) VALUES (?, 'from the future', '2031-01-01')",  # noqa: S608
            (newer,),
        )
    connection.close()
    return newer


async def test_a_database_migrated_by_a_newer_release_is_refused_naming_both_versions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _copy_release(tmp_path)
    agent_db = root / "BD-MOHA-PSD" / "agent.db"
    assert await _cli("db", "migrate", "--data-dir", str(root / "BD-MOHA-PSD")) == 0
    newer = _too_new(agent_db, AGENT_SCHEMA)
    rows = _sqlite_rows(agent_db)

    with pytest.raises(SchemaTooNew) as refused:
        await AgentStore.open(agent_db, storage_key=_storage_key(root / "BD-MOHA-PSD"))
    assert isinstance(refused.value, ConfigurationError)  # the service exits with EXIT_CONFIGURATION
    assert refused.value.code == "SCHEMA_TOO_NEW"
    message = str(refused.value)
    assert f"version {newer}" in message
    assert f"version {AGENT_SCHEMA.latest}" in message
    assert "backup" in message
    assert _sqlite_rows(agent_db) == rows  # nothing written

    capsys.readouterr()
    assert await _cli("db", "migrate", "--data-dir", str(root / "BD-MOHA-PSD")) == EXIT_CONFIGURATION
    assert await _cli("db", "status", "--data-dir", str(root / "BD-MOHA-PSD")) == EXIT_CONFIGURATION
    assert "SCHEMA_TOO_NEW" in capsys.readouterr().err

    gateway_db = root / "gateway" / "gateway.db"
    await (await GatewayStore.open(gateway_db)).close()
    _too_new(gateway_db, GATEWAY_SCHEMA)
    with pytest.raises(SchemaTooNew):
        await GatewayStore.open(gateway_db)


def test_an_agent_refusing_a_newer_database_exits_with_the_configuration_status(tmp_path: Path) -> None:
    root = _copy_release(tmp_path)
    agent_db = root / "BD-MOHA-PSD" / "agent.db"
    migrate_sqlite(agent_db, AGENT_SCHEMA)
    _too_new(agent_db, AGENT_SCHEMA)
    script = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from agents.store import AgentStore\n"
        "from agents.settings import AgentSettings\n"
        "from protocol.storage import StorageKey\n"
        "from runtime.runner import service_main\n"
        "async def run(settings):\n"
        "    await AgentStore.open(Path(sys.argv[1]), storage_key=StorageKey(bytes(32)))\n"
        "service_main('agent', read_settings=lambda env: AgentSettings.model_construct(log_format='json'), run=run)\n"
    )
    environment = {key: value for key, value in os.environ.items() if not key.startswith("ROGATORY_")}
    finished = subprocess.run(
        [sys.executable, "-c", script, str(agent_db)],
        capture_output=True,
        text=True,
        check=False,
        env=environment,
        cwd=Path(__file__).parents[2],
    )
    assert finished.returncode == EXIT_CONFIGURATION, finished.stderr
    assert "SCHEMA_TOO_NEW" in finished.stdout + finished.stderr


def test_a_failing_step_leaves_the_database_at_its_version_with_nothing_of_the_step(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    first = Schema("test", (Migration(1, "one", "CREATE TABLE kept (a TEXT); INSERT INTO kept VALUES ('row')"),))
    migrate_sqlite(path, first)
    failing = Schema(
        "test",
        (
            *first.migrations,
            Migration(2, "two", "CREATE TABLE half (b TEXT); ALTER TABLE kept ADD COLUMN c TEXT"),
            Migration(3, "three", "INSERT INTO nowhere VALUES (1)"),
        ),
    )
    with pytest.raises(StoreUnavailable):
        migrate_sqlite(path, failing)
    status = sqlite_status(path, failing)
    assert status.version == 1
    assert [step.version for step in status.pending] == [2, 3]
    assert _sqlite_rows(path) == {"kept": [("row",)]}  # neither `half` nor the column of step 2


def _psql(url: str, *arguments: str) -> None:
    parts = urlsplit(url)
    environment = dict(os.environ, PGPASSWORD=parts.password or "")
    subprocess.run(
        [
            shutil.which("psql") or "psql",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            parts.hostname or "127.0.0.1",
            "-p",
            str(parts.port or 5432),
            "-U",
            parts.username or "rogatory",
            "-d",
            parts.path.lstrip("/"),
            *arguments,
        ],
        check=True,
        env=environment,
        capture_output=True,
    )


async def _postgres_rows(url: str) -> dict[str, int]:
    connection = await asyncpg.connect(url)
    try:
        tables = [
            str(row[0])
            for row in await connection.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename != $1 ORDER BY 1",
                VERSION_TABLE,
            )
        ]
        return {table: int(await connection.fetchval(f"SELECT count(*) FROM {table}")) for table in tables}  # noqa: S608
    finally:
        await connection.close()


async def test_a_postgresql_gateway_database_of_release_504c590_migrates_and_its_log_verifies(tmp_path: Path) -> None:
    async with fresh_postgres_database() as url:
        await asyncio.to_thread(_psql, url, "-f", str(RELEASE / "postgresql" / "gateway-postgresql.sql"))
        before = await _postgres_rows(url)
        connection = await asyncpg.connect(url)
        try:
            leaves_before = [tuple(r) for r in await connection.fetch("SELECT * FROM leaves ORDER BY leaf_index")]
        finally:
            await connection.close()

        store = await GatewayStore.open_postgres(url)
        try:
            snapshot = await _store_snapshot(store)
        finally:
            await store.close()
        after = await _postgres_rows(url)
        print(
            "\nrows before -> after migration, release 504c590 PostgreSQL dump:\n  "
            + "\n  ".join(f"{table}: {before[table]} -> {after[table]}" for table in sorted(before))
        )
        assert {table: after[table] for table in before} == before
        assert all(not after[table] for table in set(after) - set(before) - {"tree_nodes"})  # tables added: empty
        assert before["leaves"] > 0
        connection = await asyncpg.connect(url)
        try:
            _assert_the_tree_of(
                [bytes(row[0]) for row in await connection.fetch("SELECT leaf_hash FROM leaves ORDER BY leaf_index")],
                await connection.fetch("SELECT level, node_index, hash FROM tree_nodes"),
            )
            assert [
                tuple(r) for r in await connection.fetch("SELECT * FROM leaves ORDER BY leaf_index")
            ] == leaves_before
            recorded = await connection.fetch(f"SELECT version, adopted FROM {VERSION_TABLE} ORDER BY version")  # noqa: S608
            assert (recorded[0][0], bool(recorded[0][1])) == (1, True)
            assert len(recorded) == GATEWAY_SCHEMA.latest
            await connection.execute(
                f"INSERT INTO {VERSION_TABLE} (version, name, applied_at) VALUES ($1, 'from the future', 'x')",  # noqa: S608
                GATEWAY_SCHEMA.latest + 1,
            )
        finally:
            await connection.close()

        exported = read_export(RELEASE / "postgresql" / "audit-export.json")
        assert snapshot.entries[: len(exported.entries)] == exported.entries
        report = verify_snapshot(snapshot, (RELEASE / "postgresql" / "authority_key").read_text().strip())
        assert report.problem is None, report.problem

        with pytest.raises(SchemaTooNew):
            await GatewayStore.open_postgres(url)
        assert await _cli("db", "status", "--data-dir", str(tmp_path), "--database-url", url) == EXIT_CONFIGURATION


async def test_an_agent_api_serves_the_migrated_release_database_as_before(tmp_path: Path) -> None:
    """The agent's own API over the migrated `agent.db`: the closed case folds again, the evidence is there."""
    root = _copy_release(tmp_path)
    net = LocalNetwork()
    store = await AgentStore.open(root / "BD-MOHA-PSD" / "agent.db", storage_key=_storage_key(root / "BD-MOHA-PSD"))
    context = ApiContext(
        agency=BD,
        sender=SenderKeys(agency=BD, signing_key=net[BD].signing, archive_key=net[BD].encryption.public_key),
        store=store,
        directory=net.directory,
        limits=DEFAULT_LIMITS,
        message_ttl=timedelta(days=1),
        token_hashes=(hashlib.sha256(TOKEN.encode()).hexdigest(),),
        clock=lambda: NOW,
        wake_relay=lambda: None,
        health=lambda: {"status": "ok"},
        cases=CaseBook(BD),
    )
    http: test_utils.TestClient[Any, Any] = test_utils.TestClient(test_utils.TestServer(AgentApi(context).app()))
    await http.start_server()
    headers = {"Authorization": f"Bearer {TOKEN}"}
    try:
        async with http.get("/v1/cases/BD-LY-2025-0011", headers=headers) as response:
            assert response.status == 200
            case = await response.json()
        assert case["state"] == "CLOSED"
        assert len(case["messages"]) == 6
        sent = [message for message in case["messages"] if message["direction"] == "sent"]
        for message in sent:
            async with http.get(f"/v1/messages/{message['message_id']}", headers=headers) as response:
                answer = await response.json()
            assert (answer["status"], answer["content_purged_at"]) == ("retrieved", None)
            assert all(item["inclusion_proof"] is not None for item in answer["evidence"])
        async with http.get("/v1/inbox?after=0", headers=headers) as response:
            inbox = await response.json()
        assert len(inbox["messages"]) == 4
        assert all(item["document"]["case_id"] == item["case_id"] for item in inbox["messages"])
    finally:
        await http.close()
        await store.close()
