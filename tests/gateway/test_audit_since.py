"""`GET /v1/audit/entries?since=` compares instants, not text: a time with any offset finds the same entries.

Before, the log's UTC times (`...Z`) were compared with `since` as text, so a Dhaka time (`+06:00`) hid
the entries appended in the six hours after it, and a time in another form compared by its characters.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from datetime import timedelta, timezone

import aiohttp
import pytest
from aiohttp import test_utils

from gateway.api import GatewayApi, Role, TokenTable
from protocol.auditlog import directory_leaf
from tests.gateway.conftest import Harness
from tests.support.network import NOW

AUDITOR_TOKEN = "auditor-token-for-the-since-test"
DHAKA = timezone(timedelta(hours=6))
TRIPOLI = timezone(timedelta(hours=2))


@pytest.fixture
async def entries_of(harness: Harness) -> AsyncIterator[aiohttp.ClientSession]:
    """The log holds the directory leaf at NOW, then one leaf at NOW+1h, NOW+2h and NOW+3h; an auditor's session."""
    for hours in (1, 2, 3):
        async with harness.audit.transaction() as atx:
            await atx.append(directory_leaf(harness.net.signed_directory(), hours + 1), at=NOW + timedelta(hours=hours))
    api = GatewayApi(
        store=harness.store,
        audit=harness.audit,
        tokens=TokenTable(((hashlib.sha256(AUDITOR_TOKEN.encode()).hexdigest(), Role.AUDITOR),)),
        health=lambda: {"status": "ok"},
        directory=harness.net.directory,
        clock=lambda: NOW,
        authority=harness.net.authority.public_key,
    )
    server = test_utils.TestServer(api.app())
    await server.start_server()
    headers = {"Authorization": f"Bearer {AUDITOR_TOKEN}"}
    async with aiohttp.ClientSession(base_url=server.make_url(""), headers=headers) as session:
        yield session
    await server.close()


async def indexes_since(session: aiohttp.ClientSession, since: str) -> list[int]:
    async with session.get("/v1/audit/entries", params={"since": since}) as response:
        assert response.status == 200, await response.text()
        return [entry["index"] for entry in (await response.json())["entries"]]


@pytest.mark.parametrize(
    "since",
    [
        (NOW + timedelta(hours=2)).astimezone(DHAKA).isoformat(),  # 2026-11-29T18:00:00+06:00
        (NOW + timedelta(hours=2)).astimezone(TRIPOLI).isoformat(),
        (NOW + timedelta(hours=2)).isoformat(),  # +00:00 rather than Z
        "2026-11-29T12:00:00Z",
        "2026-11-29T11:59:59.999500Z",  # under a millisecond before: rounded up, the 12:00 entry still in
    ],
    ids=["dhaka", "tripoli", "plus_zero", "zulu", "sub_millisecond"],
)
async def test_since_finds_the_same_entries_whatever_the_offset(entries_of, since):
    assert await indexes_since(entries_of, since) == [2, 3]


async def test_since_just_after_an_entry_leaves_it_out(entries_of):
    assert await indexes_since(entries_of, "2026-11-29T18:00:00.001+06:00") == [3]


async def test_since_without_an_offset_is_refused(entries_of):
    async with entries_of.get("/v1/audit/entries", params={"since": "2026-11-29T12:00:00"}) as response:
        assert response.status == 400
        assert (await response.json())["code"] == "CONTENT_INVALID"
