"""The listings a case system reconciles with after its own crash: what it sent and its status, what it has not
acknowledged, which cases stand where and which are overdue; every filter, the cursor's refusals, and paging
that neither skips nor repeats while messages keep arriving. Real exchanges between two in-process agents."""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.cases import CaseBook
from agents.lists import InvalidCursor, Listing, decode_cursor, encode_cursor, refresh_case_index
from agents.store import AgentStore, CaseFilter, SentFilter
from protocol.encoding import format_timestamp
from tests.agents.harness import InProcessAgent, carry, start_agent
from tests.agents.test_cases import fresh, new_case, sample
from tests.support.network import BD, LY, NOW, LocalNetwork


@dataclass
class Clock:
    """The agents' clock, moved by the test."""

    now: datetime = NOW

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Desk:
    """BD's and LY's agents on one clock."""

    bd: InProcessAgent
    ly: InProcessAgent
    clock: Clock
    sent: dict[str, str] = field(default_factory=dict)
    """Name -> message id of what the scenario sent."""
    cases: dict[str, str] = field(default_factory=dict)


async def start_desk(data_dir: Path) -> Desk:
    net, clock = LocalNetwork(), Clock()
    directory = net.directory()
    bd = await start_agent(net, directory, BD, data_dir, clock=clock)
    ly = await start_agent(net, directory, LY, data_dir, clock=clock)
    return Desk(bd, ly, clock)


@pytest.fixture
async def desk(tmp_path: Path) -> AsyncIterator[Desk]:
    started = await start_desk(tmp_path)
    try:
        yield started
    finally:
        await started.bd.close()
        await started.ly.close()


async def get(agent: InProcessAgent, path: str) -> dict[str, Any]:
    status, answer = await agent.call("GET", path)
    assert status == 200, answer
    found: dict[str, Any] = answer
    return found


async def ids(agent: InProcessAgent, path: str, key: str = "messages", name: str = "message_id") -> list[str]:
    """Every item's id of a listing, walked page by page (two items a page) to its end."""
    found: list[str] = []
    page = await get(agent, f"{path}{'&' if '?' in path else '?'}limit=2")
    while True:
        found.extend(item[name] for item in page[key])
        if not page["has_more"]:
            return found
        page = await get(agent, page["links"]["next"])


async def scenario(desk: Desk) -> Desk:
    """BD asks in case A (delivered, acknowledged by LY, then withdrawn by BD) and in case B (delivered, not
    acknowledged), one day apart; then asks in case C, which stays queued."""
    bd, ly = desk.bd, desk.ly
    desk.cases = {"A": new_case(), "B": new_case(), "C": new_case()}
    request_a = fresh(sample("BD-LY-2025-0011_01_MLA_REQUEST.json"), desk.cases["A"])
    assert (await bd.submit(request_a))[0] == 202
    await carry(bd, ly)
    ack = fresh(sample("BD-LY-2025-0011_02_ACKNOWLEDGEMENT.json"), desk.cases["A"], in_reply_to=request_a["message_id"])
    assert (await ly.submit(ack))[0] == 202
    await carry(ly, bd)
    await ly.ack(request_a["message_id"])
    desk.clock.now = NOW + timedelta(days=1)
    request_b = fresh(sample("BD-LY-2025-0011_01_MLA_REQUEST.json"), desk.cases["B"])
    assert (await bd.submit(request_b))[0] == 202
    withdrawal = fresh(sample("BD-LY-2025-0011_04_WITHDRAWAL.json"), desk.cases["A"])
    assert (await bd.submit(withdrawal))[0] == 202
    await carry(bd, ly)
    desk.clock.now = NOW + timedelta(days=2)
    request_c = fresh(sample("BD-LY-2025-0011_01_MLA_REQUEST.json"), desk.cases["C"])
    assert (await bd.submit(request_c))[0] == 202
    desk.sent = {
        "request_a": request_a["message_id"],
        "ack": ack["message_id"],
        "request_b": request_b["message_id"],
        "withdrawal": withdrawal["message_id"],
        "request_c": request_c["message_id"],
    }
    return desk


async def test_sent_messages_filter_by_status_case_type_and_creation_time(desk: Desk) -> None:
    """What did I send and where is it: each filter alone and together, in the order of submission."""
    sent = (await scenario(desk)).sent
    bd = desk.bd
    assert await ids(bd, "/v1/messages") == [
        sent["request_a"],
        sent["request_b"],
        sent["withdrawal"],
        sent["request_c"],
    ]
    assert await ids(bd, "/v1/messages?status=retrieved") == [sent["request_a"]]
    assert await ids(bd, "/v1/messages?status=delivered") == [sent["request_b"], sent["withdrawal"]]
    assert await ids(bd, "/v1/messages?status=queued") == [sent["request_c"]]
    assert await ids(bd, "/v1/messages?status=queued,delivered&status=retrieved") == await ids(bd, "/v1/messages")
    assert await ids(bd, f"/v1/messages?case_id={desk.cases['A']}") == [sent["request_a"], sent["withdrawal"]]
    assert await ids(bd, "/v1/messages?message_type=WITHDRAWAL") == [sent["withdrawal"]]
    day_one = quote(format_timestamp(NOW + timedelta(days=1)))
    day_two = quote(format_timestamp(NOW + timedelta(days=2)))
    assert await ids(bd, f"/v1/messages?created_from={day_one}") == [
        sent["request_b"],
        sent["withdrawal"],
        sent["request_c"],
    ]
    assert await ids(bd, f"/v1/messages?created_from={day_one}&created_before={day_two}") == [
        sent["request_b"],
        sent["withdrawal"],
    ]
    assert await ids(bd, f"/v1/messages?case_id={desk.cases['A']}&message_type=MLA_REQUEST&status=retrieved") == [
        sent["request_a"]
    ]
    assert await ids(desk.ly, "/v1/messages") == [sent["ack"]]
    item = (await get(bd, f"/v1/messages?case_id={desk.cases['C']}"))["messages"][0]
    assert (item["status"], item["recipient"], item["created_at"]) == (
        "queued",
        LY,
        format_timestamp(NOW + timedelta(days=2)),
    )


async def test_inbox_filters_what_is_not_acknowledged_by_type_and_case(desk: Desk) -> None:
    """Which received messages did I not acknowledge: the filters, and the old `after`/`next` still walk it."""
    sent = (await scenario(desk)).sent
    ly = desk.ly
    everything = [sent["request_a"], sent["request_b"], sent["withdrawal"]]
    assert await ids(ly, "/v1/inbox") == everything
    assert await ids(ly, "/v1/inbox?unacknowledged=true") == [sent["request_b"], sent["withdrawal"]]
    assert await ids(ly, "/v1/inbox?unacknowledged=false") == everything
    assert await ids(ly, "/v1/inbox?message_type=MLA_REQUEST") == [sent["request_a"], sent["request_b"]]
    assert await ids(ly, f"/v1/inbox?case_id={desk.cases['A']}") == [sent["request_a"], sent["withdrawal"]]
    assert await ids(ly, f"/v1/inbox?case_id={desk.cases['A']}&unacknowledged=true") == [sent["withdrawal"]]
    await ly.ack(sent["withdrawal"])
    assert await ids(ly, "/v1/inbox?unacknowledged=true") == [sent["request_b"]]
    first = await get(ly, "/v1/inbox?limit=1")
    second = await get(ly, f"/v1/inbox?limit=5&after={first['next']}")
    assert [m["message_id"] for m in first["messages"] + second["messages"]] == everything
    assert second["has_more"] is False
    again = await get(ly, f"/v1/inbox?cursor={second['next_cursor']}")
    assert (again["messages"], again["next_cursor"]) == ([], second["next_cursor"])


async def test_cases_filter_by_state_counterpart_and_deadline_due_or_overdue(desk: Desk) -> None:
    """Which cases stand where, with whom, and which are overdue; a case whose only message failed leaves it."""
    cases = (await scenario(desk)).cases
    bd, ly = desk.bd, desk.ly
    assert await ids(bd, "/v1/cases", "cases", "case_id") == [cases["A"], cases["B"], cases["C"]]
    assert await ids(ly, "/v1/cases", "cases", "case_id") == [cases["A"], cases["B"]]
    state_a = (await bd.case(cases["A"]))["state"]
    state_b = (await bd.case(cases["B"]))["state"]
    assert state_a != state_b
    assert await ids(bd, f"/v1/cases?state={state_a}", "cases", "case_id") == [cases["A"]]
    assert await ids(bd, f"/v1/cases?state={state_b}", "cases", "case_id") == [cases["B"], cases["C"]]
    assert await ids(bd, f"/v1/cases?counterpart={LY}", "cases", "case_id") == [cases["A"], cases["B"], cases["C"]]
    assert await ids(bd, f"/v1/cases?counterpart={BD}", "cases", "case_id") == []
    assert await ids(ly, f"/v1/cases?counterpart={BD}&state={state_b}", "cases", "case_id") == [cases["B"]]

    listed = {item["case_id"]: item for item in (await get(bd, "/v1/cases"))["cases"]}
    for name in ("A", "B", "C"):
        held = await bd.case(cases[name])
        dues = sorted(deadline["due"] for deadline in held["deadlines"])
        assert listed[cases[name]]["next_due"] == (dues[0] if dues else None)
        assert (listed[cases[name]]["state"], listed[cases[name]]["role"]) == (held["state"], held["role"])
    due_b = listed[cases["B"]]["next_due"]
    assert due_b is not None, "the request of case B sets a deadline"
    day_before = (datetime.fromisoformat(due_b) - timedelta(days=1)).date().isoformat()
    assert cases["B"] in await ids(bd, f"/v1/cases?due_by={due_b}", "cases", "case_id")
    assert cases["B"] not in await ids(bd, f"/v1/cases?due_by={day_before}", "cases", "case_id")
    midnight_of_due = datetime.fromisoformat(due_b).replace(tzinfo=NOW.tzinfo)
    for now, expected in ((midnight_of_due + timedelta(hours=23), False), (midnight_of_due + timedelta(days=1), True)):
        desk.clock.now = now
        overdue = await ids(bd, "/v1/cases?overdue=true", "cases", "case_id")
        assert (cases["B"] in overdue) is expected
        shown = [name for name in ("A", "B", "C") if (await bd.case(cases[name]))["overdue"]]
        assert overdue == [cases[name] for name in shown], "the list and each case agree on what is overdue"
        assert all(item["overdue"] for item in (await get(bd, "/v1/cases?overdue=true"))["cases"])

    async with bd.store.transaction() as tx:
        await tx.set_status(desk.sent["request_c"], "failed", "ROUTING_FAILED", format_timestamp(desk.clock.now))
    assert cases["C"] not in await ids(bd, "/v1/cases", "cases", "case_id")
    assert (await bd.call("GET", f"/v1/cases/{cases['C']}"))[0] == 404


async def test_a_database_from_before_the_lists_is_numbered_when_opened(tmp_path: Path) -> None:
    """Sent messages and cases stored before `outbox_order` and `case_index` existed (a database at schema step 3)
    are numbered by step 4 at the next start, in the order they were created, and listed as before."""
    desk = await start_desk(tmp_path)
    await scenario(desk)
    before = {
        name: await ids(agent, path, key, item)
        for name, agent, path, key, item in (
            ("sent", desk.bd, "/v1/messages", "messages", "message_id"),
            ("bd cases", desk.bd, "/v1/cases", "cases", "case_id"),
        )
    }
    key = desk.bd.store.storage_key
    await desk.bd.close()
    await desk.ly.close()
    with sqlite3.connect(tmp_path / f"{BD}.db") as db:
        db.execute("DROP TABLE outbox_order")
        db.execute("DROP TABLE case_index")
        db.execute("DROP TABLE connectivity_tests")
        db.execute("DROP TABLE connectivity_received")
        db.execute("DROP TABLE content_proofs")
        db.execute("DELETE FROM schema_migrations WHERE version >= 4")  # a database at step 3
    reopened = await AgentStore.open(tmp_path / f"{BD}.db", storage_key=key, synchronous="NORMAL")
    try:
        sent = await reopened.sent_page(0, 100, SentFilter())
        assert [record.message_id for _, record in sent] == before["sent"]
        assert await refresh_case_index(reopened, CaseBook(BD), lambda: NOW) == 3
        cases = await reopened.case_page(0, 100, CaseFilter(max_marking=3))
        assert [summary.case_id for summary in cases] == before["bd cases"]
        assert {summary.counterpart for summary in cases} == {LY}
    finally:
        await reopened.close()


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/v1/messages?cursor=garbage", "INVALID_CURSOR"),
        ("/v1/messages?cursor=c1.%%%", "INVALID_CURSOR"),
        (f"/v1/messages?cursor={encode_cursor(Listing.CASES, 3)}", "INVALID_CURSOR"),
        (f"/v1/cases?cursor={encode_cursor(Listing.INBOX, 3)}", "INVALID_CURSOR"),
        (f"/v1/inbox?cursor={encode_cursor(Listing.MESSAGES, 3)}", "INVALID_CURSOR"),
        ("/v1/inbox?cursor=c1.aW5ib3g6LTE", "INVALID_CURSOR"),
        (f"/v1/inbox?after=1&cursor={encode_cursor(Listing.INBOX, 3)}", "INVALID_PARAMETER"),
        ("/v1/messages?status=lost", "INVALID_PARAMETER"),
        ("/v1/messages?message_type=PING", "INVALID_PARAMETER"),
        ("/v1/messages?case_id=%20", "INVALID_PARAMETER"),
        ("/v1/messages?created_from=yesterday", "INVALID_PARAMETER"),
        ("/v1/messages?created_from=2026-11-29T10:00:00", "INVALID_PARAMETER"),
        ("/v1/messages?limit=0", "INVALID_PARAMETER"),
        ("/v1/messages?limit=501", "INVALID_PARAMETER"),
        ("/v1/cases?state=OPEN", "INVALID_PARAMETER"),
        ("/v1/cases?counterpart=nobody%20at%20all", "INVALID_PARAMETER"),
        ("/v1/cases?due_by=2026-13-01", "INVALID_PARAMETER"),
        ("/v1/cases?overdue=yes", "INVALID_PARAMETER"),
        ("/v1/inbox?unacknowledged=1", "INVALID_PARAMETER"),
        ("/v1/inbox?case_id=A&case_id=B", "INVALID_PARAMETER"),
    ],
)
async def test_a_bad_cursor_or_filter_is_400_with_a_stable_code(desk: Desk, path: str, code: str) -> None:
    """A cursor not given for this list, or a filter that does not parse, is refused, never read as something else."""
    status, answer = await desk.bd.call("GET", path)
    assert (status, answer["code"]) == (400, code), answer


def test_a_cursor_names_its_list_and_position_and_nothing_else_decodes() -> None:
    """Round trip for each list; a cursor of one list is refused by another."""
    for listing in Listing:
        assert decode_cursor(listing, encode_cursor(listing, 2**40 + 7)) == 2**40 + 7
    with pytest.raises(InvalidCursor, match="not one of the cases list"):
        decode_cursor(Listing.CASES, encode_cursor(Listing.MESSAGES, 1))


# -- paging while messages arrive -------------------------------------------------------------

LISTS = (("bd", "/v1/messages", "messages", "message_id"), ("ly", "/v1/inbox", "messages", "message_id"))
CASE_LISTS = (("bd", "/v1/cases", "cases", "case_id"), ("ly", "/v1/cases", "cases", "case_id"))


async def send_requests(desk: Desk, count: int) -> None:
    """`count` new cases opened by BD and delivered to LY."""
    for _ in range(count):
        assert (await desk.bd.submit(fresh(sample("BD-LY-2025-0011_01_MLA_REQUEST.json"), new_case())))[0] == 202
        await carry(desk.bd, desk.ly)


async def walk_while_sending(desk: Desk, steps: list[tuple[int, int]]) -> None:
    """Each step sends some requests while each list reads its next page; then the walks go to their end."""
    walks: dict[tuple[str, str], list[str]] = {}
    cursors: dict[tuple[str, str], str | None] = {}
    for agent, path, _, _ in LISTS + CASE_LISTS:
        walks[(agent, path)], cursors[(agent, path)] = [], None

    async def next_page(agent: str, path: str, key: str, name: str, size: int) -> bool:
        cursor = cursors[(agent, path)]
        query = f"?limit={size}" + ("" if cursor is None else f"&cursor={cursor}")
        page = await get(getattr(desk, agent), path + query)
        walks[(agent, path)].extend(item[name] for item in page[key])
        cursors[(agent, path)] = page["next_cursor"]
        return bool(page["has_more"])

    for sending, size in steps:
        await asyncio.gather(send_requests(desk, sending), *(next_page(*spec, size) for spec in LISTS + CASE_LISTS))
    for spec in LISTS + CASE_LISTS:
        while await next_page(*spec, 3):
            pass
    for agent, path, key, name in LISTS + CASE_LISTS:
        walked = walks[(agent, path)]
        assert len(walked) == len(set(walked)), f"{agent} {path} repeated an item"
        assert walked == [item[name] for item in (await get(getattr(desk, agent), f"{path}?limit=500"))[key]]
    assert len(walks[("bd", "/v1/messages")]) == sum(sending for sending, _ in steps)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(st.tuples(st.integers(0, 3), st.integers(1, 3)), min_size=1, max_size=5))
def test_walking_the_pages_while_messages_arrive_skips_none_and_repeats_none(steps: list[tuple[int, int]]) -> None:
    """Sent messages, inbox and cases, each read page by page while new ones commit between and during the reads:
    the walk is exactly the list as it stands at the end, in order."""

    async def run() -> None:
        with tempfile.TemporaryDirectory(prefix="rogatory-lists-") as data_dir:
            desk = await start_desk(Path(data_dir))
            try:
                await walk_while_sending(desk, steps)
            finally:
                await desk.bd.close()
                await desk.ly.close()

    asyncio.run(run())
