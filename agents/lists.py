"""The agent's listings, for an agency system reconciling after a restart (docs/GUIDE.md, "Reconciling").

* `GET /v1/messages`  what this agency sent: by status, case, type, creation time;
* `GET /v1/cases`     the cases it takes part in: by state, counterpart, deadline due or overdue;
* `GET /v1/inbox`     what it received: not yet acknowledged, by type, by case (`agents.api` serves it,
                      with the cursor and filters of this module).

Paging is a keyset on a sequence that only grows (`agents.store.LIST_TABLES_DDL`), read on a connection
that sees committed rows only. Every row committed after a page was read is numbered after every row
that page could have shown, so walking the pages while messages arrive skips none and repeats none;
what arrives behind the walk is on a later page. The cursor is opaque (`c1.` and base64url of the list's
name and the position), bound to its list: a cursor of another list, or one that does not decode, is
`400 INVALID_CURSOR`; a filter that does not parse is `400 INVALID_PARAMETER`. A page always carries
`next_cursor` (where the walk goes on, also when the page is empty: poll from there) and `has_more`
(the page was full: ask again at once).

A token sees what it may read (`agents.guard`): a message marked above its clearance is left out of a
page as if it were not there (the page may hold fewer than `limit`); a case holding such a message is
left out whole, as `GET /v1/cases/{id}` withholds it.

The case list filters on a summary of each case's fold (`case_index`), written when the list is read
for every case a stored message marked stale: the list shows the fold as it is, never an older one.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, TypeVar
from urllib.parse import urlencode

from aiohttp import web

from agents.cases import CaseBook
from agents.guard import CLEARANCE, Clearance, readable
from agents.status import MessageStatus
from agents.store import AgentStore, CaseFilter, CaseSummary, OutboxRecord, SentFilter
from protocol.encoding import format_timestamp
from protocol.errors import ErrorCode, MalformedInput, ProtocolError
from protocol.ids import parse_agency_id, parse_case_id
from protocol.mla import CaseState, MessageType
from runtime.http import json_answer

MAX_PAGE: Final = 500
DEFAULT_PAGE: Final = 100
STALE_BATCH: Final = 200
"""Stale case summaries folded per round before the case list is read."""
MAX_CURSOR_POSITION: Final = 2**62
_CURSOR_PREFIX: Final = "c1."
_Named = TypeVar("_Named", bound=StrEnum)


class Listing(StrEnum):
    """The lists a cursor may belong to."""

    MESSAGES = "messages"
    INBOX = "inbox"
    CASES = "cases"


class InvalidCursor(MalformedInput):
    """A cursor that is not one this agent gave for this list."""

    default_code = ErrorCode.INVALID_CURSOR


def encode_cursor(listing: Listing, position: int) -> str:
    """The opaque cursor of `position` in `listing`."""
    raw = f"{listing}:{position}".encode("ascii")
    return _CURSOR_PREFIX + base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(listing: Listing, cursor: str) -> int:
    """The position a cursor of `listing` stands for, or `InvalidCursor`."""
    if not cursor.startswith(_CURSOR_PREFIX) or len(cursor) > 100 or not cursor.isascii():
        raise InvalidCursor("the cursor is not one this agent gave")
    body = cursor.removeprefix(_CURSOR_PREFIX)
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode("ascii")
    except (binascii.Error, ValueError):
        raise InvalidCursor("the cursor is not one this agent gave") from None
    name, _, position = raw.partition(":")
    if name != listing:
        raise InvalidCursor(f"the cursor is not one of the {listing} list")
    if not position.isdigit() or len(position) > 19 or int(position) > MAX_CURSOR_POSITION:
        raise InvalidCursor("the cursor is not one this agent gave")
    return int(position)


def invalid(detail: str) -> MalformedInput:
    """A filter or page size that does not parse: `400 INVALID_PARAMETER`."""
    return MalformedInput(detail, code=ErrorCode.INVALID_PARAMETER)


def page_size(request: web.Request) -> int:
    """`limit`: 1 to `MAX_PAGE`, `DEFAULT_PAGE` when absent."""
    raw = request.query.get("limit")
    if raw is None:
        return DEFAULT_PAGE
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw[:6]) <= MAX_PAGE:
        raise invalid(f"query parameter 'limit' must be an integer from 1 to {MAX_PAGE}")
    return int(raw)


def start_of(request: web.Request, listing: Listing) -> int:
    """Where the page starts: after the `cursor`'s position, or at the beginning."""
    cursor = request.query.get("cursor")
    return 0 if cursor is None else decode_cursor(listing, cursor)


def one_of(request: web.Request, name: str, kind: type[_Named]) -> tuple[_Named, ...]:
    """A filter naming values of `kind`, comma-separated (or the parameter repeated); () when absent."""
    values = [part for raw in request.query.getall(name, []) for part in raw.split(",") if part]
    chosen = []
    for value in values:
        try:
            chosen.append(kind(value))
        except ValueError:
            allowed = ", ".join(member.value for member in kind)
            raise invalid(f"query parameter {name!r} must be among: {allowed}") from None
    return tuple(dict.fromkeys(chosen))


def single(request: web.Request, name: str) -> str | None:
    """A filter given at most once."""
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise invalid(f"query parameter {name!r} may be given once")
    return values[0] if values else None


def case_filter_value(request: web.Request) -> str | None:
    """`case_id`, a case id."""
    value = single(request, "case_id")
    return None if value is None else _parsed(parse_case_id, value, "case_id")


def message_type_filter(request: web.Request) -> str | None:
    """`message_type`, one message type of the catalogue."""
    value = single(request, "message_type")
    if value is None:
        return None
    if value not in MessageType.__members__:
        raise invalid("query parameter 'message_type' must be a message type of the catalogue (GET /v1/schema)")
    return value


def flag(request: web.Request, name: str) -> bool:
    """A boolean filter: `true` or `false`, false when absent."""
    value = single(request, name)
    if value is None or value == "false":
        return False
    if value == "true":
        return True
    raise invalid(f"query parameter {name!r} must be true or false")


def instant(request: web.Request, name: str) -> str | None:
    """An RFC 3339 instant with a time zone, as the store writes instants (`format_timestamp`)."""
    value = single(request, name)
    if value is None:
        return None
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise invalid(f"query parameter {name!r} must be an RFC 3339 instant with a time zone") from None
    if moment.tzinfo is None:
        raise invalid(f"query parameter {name!r} must be an RFC 3339 instant with a time zone")
    return format_timestamp(moment)


def day(request: web.Request, name: str) -> str | None:
    """A calendar day, `YYYY-MM-DD`."""
    value = single(request, name)
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value).isoformat() if len(value) == 10 else _bad_day(name)
    except ValueError:
        return _bad_day(name)


def _bad_day(name: str) -> str:
    raise invalid(f"query parameter {name!r} must be a day, YYYY-MM-DD")


def _parsed(parse: Callable[[str], str], value: str, name: str) -> str:
    try:
        return parse(value)
    except ProtocolError:
        raise invalid(f"query parameter {name!r} is not a valid identifier") from None


def page_answer(
    request: web.Request, listing: Listing, key: str, items: list[dict[str, Any]], *, last: int, full: bool
) -> dict[str, Any]:
    """A page: its items under `key`, where the walk goes on, whether it was full, and the link to the next page."""
    cursor = encode_cursor(listing, last)
    query = [(name, value) for name, value in request.query.items() if name not in {"cursor", "after"}]
    return {
        key: items,
        "next_cursor": cursor,
        "has_more": full,
        "links": {"next": f"{request.path}?{urlencode([*query, ('cursor', cursor)])}"},
    }


@dataclass(frozen=True, slots=True)
class Lists:
    """`GET /v1/messages` and `GET /v1/cases` of one agent."""

    store: AgentStore
    cases: CaseBook
    clock: Callable[[], dt.datetime]

    def routes(self) -> list[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]]:
        """(method, path, handler) of the listings."""
        return [("GET", "/v1/messages", self.sent_messages), ("GET", "/v1/cases", self.case_list)]

    async def sent_messages(self, request: web.Request) -> web.Response:
        """`GET /v1/messages`: the messages this agency sent, in the order it submitted them."""
        after, limit = start_of(request, Listing.MESSAGES), page_size(request)
        wanted = SentFilter(
            statuses=tuple(str(status) for status in one_of(request, "status", MessageStatus)),
            case_id=case_filter_value(request),
            message_type=message_type_filter(request),
            created_from=instant(request, "created_from"),
            created_before=instant(request, "created_before"),
        )
        fetched = await self.store.sent_page(after, limit, wanted)
        items = [
            _sent_item(record)
            for _, record in fetched
            if readable(request, record.document, message_id=record.message_id)
        ]
        last = fetched[-1][0] if fetched else after
        return json_answer(
            page_answer(request, Listing.MESSAGES, "messages", items, last=last, full=len(fetched) == limit)
        )

    async def case_list(self, request: web.Request) -> web.Response:
        """`GET /v1/cases`: the cases this agency holds messages of, in the order it first held one."""
        after, limit = start_of(request, Listing.CASES), page_size(request)
        today = self.clock().astimezone(dt.UTC).date()
        wanted = CaseFilter(
            max_marking=int(request.get(CLEARANCE, Clearance.UNCLASSIFIED)),
            states=tuple(str(state) for state in one_of(request, "state", CaseState)),
            counterpart=_counterpart(request),
            due_by=day(request, "due_by"),
            overdue_on=today.isoformat() if flag(request, "overdue") else None,
        )
        await refresh_case_index(self.store, self.cases, self.clock)
        found = await self.store.case_page(after, limit, wanted)
        items = [_case_item(summary, today) for summary in found]
        last = found[-1].seq if found else after
        return json_answer(page_answer(request, Listing.CASES, "cases", items, last=last, full=len(found) == limit))


def _counterpart(request: web.Request) -> str | None:
    value = single(request, "counterpart")
    return None if value is None else _parsed(parse_agency_id, value, "counterpart")


async def refresh_case_index(store: AgentStore, cases: CaseBook, clock: Callable[[], dt.datetime]) -> int:
    """Fold every case marked stale and write its summary; returns how many were folded."""
    folded = 0
    while stale := await store.stale_cases(STALE_BATCH):
        for case_id in stale:
            async with store.transaction() as tx:
                found = await cases.case_file(tx, case_id)
                view = None if found is None else found.view
                dues = [] if view is None else [deadline.due for deadline in view.deadlines]
                marking = max(
                    (_rank(message.document.classification) for message in found.messages) if found else (),
                    default=int(Clearance.SECRET),
                )
                await tx.set_case_summary(
                    case_id,
                    held=found is not None,
                    state=None if found is None or found.state is None else str(found.state),
                    role=None if found is None or found.role is None else str(found.role),
                    marking=marking,
                    next_due=min(dues).isoformat() if dues else None,
                    at=format_timestamp(clock()),
                )
            folded += 1
    return folded


def _rank(marking: object) -> int:
    """The `Clearance` rank a token needs for a message marked `marking` (unknown: `SECRET`, as `cleared_for`)."""
    return int(Clearance.__members__.get(str(marking), Clearance.SECRET))


def _sent_item(record: OutboxRecord) -> dict[str, Any]:
    return {
        "message_id": record.message_id,
        "status": record.status,
        "status_reason": record.status_reason,
        "recipient": record.recipient,
        "message_type": record.message_type,
        "case_id": record.case_id,
        "in_reply_to": record.in_reply_to,
        "message_digest": record.digest,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "expires_at": record.expires_at,
    }


def _case_item(summary: CaseSummary, today: dt.date) -> dict[str, Any]:
    return {
        "case_id": summary.case_id,
        "state": summary.state,
        "role": summary.role,
        "counterpart": summary.counterpart,
        "next_due": summary.next_due,
        "overdue": summary.next_due is not None and summary.next_due < today.isoformat(),
        "updated_at": summary.updated_at,
    }


__all__ = [
    "DEFAULT_PAGE",
    "MAX_PAGE",
    "InvalidCursor",
    "Listing",
    "Lists",
    "decode_cursor",
    "encode_cursor",
    "refresh_case_index",
]
