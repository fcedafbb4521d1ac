"""A data directory is held by one process at a time, says whose it is, and a backup reads its schema version."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest

from deploy.cli.backup import schema_version
from runtime.data_dir import (
    ServiceIdentity,
    claim_data_dir,
    data_dir_in_use,
    hold_data_dir,
    identity_of,
    read_identity,
)
from runtime.errors import ConfigurationError

AGENCY = identity_of("agent", "BD-MOHA-PSD", [b"\x01" * 32, b"\x02" * 32])


def test_a_second_service_on_a_claimed_data_dir_refuses_to_start(tmp_path: Path) -> None:
    claim = claim_data_dir(tmp_path, AGENCY)
    try:
        assert data_dir_in_use(tmp_path)
        assert hold_data_dir(tmp_path) is None
        with pytest.raises(ConfigurationError, match="in use by another process"):
            claim_data_dir(tmp_path, AGENCY, wait_s=0)
    finally:
        claim.release()
    assert not data_dir_in_use(tmp_path)
    claim_data_dir(tmp_path, AGENCY, wait_s=0).release()


def test_the_claim_records_who_the_data_belongs_to(tmp_path: Path) -> None:
    claim_data_dir(tmp_path, AGENCY).release()
    assert read_identity(tmp_path) == AGENCY
    assert read_identity(tmp_path / "elsewhere") is None


def test_a_rotated_key_keeps_the_owner_and_another_agency_or_kind_does_not() -> None:
    rotated = identity_of("agent", "BD-MOHA-PSD", [b"\x03" * 32, b"\x01" * 32])
    assert AGENCY.same_owner(rotated)
    assert not AGENCY.same_owner(identity_of("agent", "BD-MOHA-PSD", [b"\x04" * 32]))
    assert not AGENCY.same_owner(identity_of("agent", "LY-MLA-CA", [b"\x01" * 32]))
    assert not AGENCY.same_owner(identity_of("gateway", "BD-MOHA-PSD", [b"\x01" * 32]))
    assert ServiceIdentity.from_json({"kind": "broker", "name": "x", "signing_keys": []}) is None


def test_schema_version_is_the_highest_recorded_step_or_none(tmp_path: Path) -> None:
    database = tmp_path / "store.db"
    with contextlib.closing(sqlite3.connect(database)) as connection:
        connection.execute("CREATE TABLE outbox (message_id TEXT)")
        connection.commit()
    assert schema_version(database) is None
    with contextlib.closing(sqlite3.connect(database)) as connection:
        connection.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT)")
        connection.executemany("INSERT INTO schema_migrations VALUES (?, ?)", [(1, "initial"), (2, "webhooks")])
        connection.commit()
    assert schema_version(database) == 2
