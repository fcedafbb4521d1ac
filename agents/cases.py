"""Case tracking in the agent: every message of an MLA case, both directions, folded into its state.

`CaseBook` is the role. Over the store's records of one case it decides which
messages count and in which order, and folds them with the lifecycle of
`protocol.mla` (`CaseTracker`, the fold of `replay_case`): the state machine
lives there and nowhere else. Both agencies fold the same signed documents in
the same order, so both compute the same state.

Which messages count
--------------------
Every message received (it was verified, stored, and `DELIVERY` signed for
it) and every message sent, except one that ended `rejected`, `failed` or
`expired` before the recipient signed `DELIVERY` for it: the recipient never
stored it, so it is not part of the recipient's case either. A message
delivered and then not retrieved in time (`NON_RETRIEVAL`, `expired`) counts.

The case order
--------------
Both sides must decide from the signed documents alone, so the order is read
from them, field by field (`CasePosition`):

1. `sequence`: the message's number in its case, both directions together
   (NOTES.md §2.3, "ordering"; the samples number each case 1, 2, 3... whoever
   sends). Where a client leaves it out the agent fills in one more than the
   highest number of the case as this agency holds it, a Lamport clock: an
   answer comes after the message it answers, however far apart the two
   agencies' clocks are. A document without one counts as 0.
2. `created_at` (UTC): between messages the two sides numbered alike because
   they wrote at the same time. A document without one counts as the
   earliest instant.
3. `message_id`, then the sender's agency id: together unique, so the order
   is total.

Why not `created_at` first: it is whichever clock stamped it, a client's
business date (the samples carry dates of 2025) or, when absent, the sending
agent's clock at sealing. Two agencies' clocks differ, and an answer stamped
by a clock behind the asker's would sort before its question. The order of
arrival differs by side (each sees its own messages first), and the
gateway's audit order reaches an agency only later, through evidence.

Admitting a new message
-----------------------
`admit` takes a message about to be stored (submitted here, or received) and
raises `IllegalTransition` unless it applies at its place in the order and
every message that applied before still does. Normally the new message is
last and this is one `CaseTracker.apply`. When the two agencies send at once
and their messages conflict (a `WITHDRAWAL` crossing a `FINAL_EXECUTION`),
the one earlier in the order wins on both sides: a received message may
displace this agency's own sent message that the other side has not
acknowledged with `DELIVERY`, because the other side, holding the earlier
message, refuses the later one when it arrives. A submitted message may
displace nothing.

A stored message that does not apply is listed with the reason and skipped by
the fold. That happens only to this agency's own sent messages: displaced as
above, or left behind when an earlier one it depended on was refused on the
way. The other side refuses them when they arrive, so both sides still agree.

Caching
-------
Folding is a pure function of the ordered documents, so the book keeps the
fold of recently used cases (documents parsed once, the tracker after them),
as many as `CACHED_CASES` holding at most `CACHED_DOCUMENTS` together.
Each call re-reads the case's rows without their bytes; if they are the
fold's messages, the fold stands as it is; if the fold's messages are a
prefix of the stored ones it folds the rest, else it folds again from the
start. The store is the truth; the cache is trusted no
further than that check. Every call runs inside a store transaction, which
also serialises them. A submission numbers its message (`next_sequence`) and
admits it (`admit`) in one transaction: the rows read for the number stand
for the admission, as nothing else can write between the two.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from agents.errors import ContentPurged
from agents.status import FINAL_NEGATIVE, MessageStatus
from agents.store import CaseEntry, Transaction
from protocol.errors import ErrorCode, IllegalTransition
from protocol.ids import AgencyId
from protocol.mla import (
    CaseClocks,
    CaseState,
    CaseTracker,
    CaseView,
    MessageDocument,
    MessageType,
    Role,
    allowed_message_types,
    validate_document,
)
from protocol.mla.lifecycle import DEFAULT_CLOCKS
from runtime.supervision import KeyedLocks

CACHED_CASES: Final = 256
"""Cases whose fold is kept in memory; a case not among them is folded again from the store."""
CACHED_DOCUMENTS: Final = 8192
"""Parsed documents the kept folds may hold together (about 9 KB each for a note of 2 KB, 70 MB in all): the
cache is bounded by what it holds, not only by how many cases, so long cases cannot grow it without end."""

_EARLIEST: Final = datetime.min.replace(tzinfo=UTC)


class Direction(StrEnum):
    """Whether this agency sent a message of the case or received it."""

    SENT = "sent"
    RECEIVED = "received"


Identity = tuple[str, str]
"""(sender agency id, message id): what names one message of a case."""


@dataclass(frozen=True, slots=True, order=True)
class CasePosition:
    """Where a message stands in its case; compared field by field (module docstring)."""

    sequence: int
    created_at: datetime
    message_id: str
    sender: str

    @property
    def identity(self) -> Identity:
        """The message this position is of."""
        return (self.sender, self.message_id)

    @classmethod
    def of(cls, document: MessageDocument, stored_as: Identity | None = None) -> CasePosition:
        """The position of `document`, read from its own signed fields (named as the store names it, if given)."""
        sender, message_id = stored_as or (
            document.sender.authority_id,
            "" if document.message_id is None else str(document.message_id),
        )
        return cls(
            sequence=document.sequence or 0,
            created_at=document.created_at or _EARLIEST,
            message_id=message_id,
            sender=sender,
        )


@dataclass(frozen=True, slots=True)
class CaseMessage:
    """One message of a case as this agency holds it, at its place in the case order."""

    direction: Direction
    entry: CaseEntry
    document: MessageDocument
    position: CasePosition
    not_applied: str | None
    """Why the lifecycle did not apply it; `None` when it did."""


@dataclass(frozen=True, slots=True)
class CaseFile:
    """A case as this agency knows it: its messages in order, and what the lifecycle makes of them."""

    case_id: str
    agency: AgencyId
    messages: tuple[CaseMessage, ...]
    view: CaseView | None
    """`None` while no request of the case is in force."""
    role: Role | None
    """The side this agency is on; `None` without a request."""

    @property
    def state(self) -> CaseState | None:
        """The case state, or `None` without a request."""
        return None if self.view is None else self.view.state

    def may_send(self) -> frozenset[MessageType]:
        """What this agency may send next in this case."""
        if self.view is None or self.role is None:
            return frozenset()
        return allowed_message_types(self.view.state, self.role)


@dataclass(slots=True)
class _Fold:
    """One case folded so far: positions in order, their documents, what did not apply, the tracker after them."""

    tracker: CaseTracker
    positions: list[CasePosition] = field(default_factory=list)
    documents: dict[Identity, MessageDocument] = field(default_factory=dict)
    not_applied: dict[CasePosition, str] = field(default_factory=dict)
    state_before: dict[CasePosition, CaseState | None] = field(default_factory=dict)

    def add(self, position: CasePosition, document: MessageDocument) -> None:
        """Fold one more message (the last in order); one that does not apply is kept, marked."""
        self.state_before[position] = self.tracker.state
        try:
            self.tracker.apply(document)
        except IllegalTransition as exc:
            self.not_applied[position] = exc.detail
        self.positions.append(position)
        self.documents[position.identity] = document

    def append_applied(self, position: CasePosition, document: MessageDocument) -> None:
        """Fold one more message (the last in order) that must apply, or raise and change nothing."""
        before = self.tracker.state
        self.tracker.apply(document)
        self.state_before[position] = before
        self.positions.append(position)
        self.documents[position.identity] = document


def counts_in_case(entry: CaseEntry) -> bool:
    """Whether a stored message is part of the case (module docstring, "Which messages count")."""
    if Direction(entry.direction) is Direction.RECEIVED:
        return True
    return entry.delivered or entry.status is None or MessageStatus(entry.status) not in FINAL_NEGATIVE


class CaseBook:
    """Folds each case this agency takes part in, and admits new messages only where the lifecycle allows."""

    def __init__(
        self,
        agency: AgencyId,
        *,
        clocks: CaseClocks = DEFAULT_CLOCKS,
        cached_cases: int = CACHED_CASES,
        cached_documents: int = CACHED_DOCUMENTS,
    ) -> None:
        self._agency = agency
        self._clocks = clocks
        self._cached_cases = cached_cases
        self._cached_documents = cached_documents
        self._folds: OrderedDict[str, _Fold] = OrderedDict()
        self._locks = KeyedLocks()
        self._read_in: tuple[Transaction, str, Mapping[Identity, CaseEntry]] | None = None
        """The transaction and case `next_sequence` last brought up to date with the store, and its rows."""

    @contextlib.asynccontextmanager
    async def serialised(self, case_id: str | None) -> AsyncIterator[None]:
        """Hold the case's submission lock, so this agency numbers its own messages one after another."""
        async with self._locks.hold(case_id):
            yield

    async def next_sequence(self, tx: Transaction, case_id: str) -> int:
        """The number the next message of the case gets: one more than the highest held."""
        fold, entries = await self._fold(tx, case_id)
        self._read_in = (tx, case_id, entries)
        return max((position.sequence for position in fold.positions), default=0) + 1

    async def admit(self, tx: Transaction, document: MessageDocument, direction: Direction) -> CaseState | None:
        """Fold `document` into its case or raise `IllegalTransition` (module docstring, "Admitting").

        Call it in the transaction that then stores the message: if that
        transaction rolls back, the next call sees the store without it and
        folds again. If `next_sequence` read the case in this same transaction,
        the case's rows are not read again: the transaction holds the store's
        only writer, so they are as they were (module docstring, "Caching").
        """
        try:
            fold, entries = await self._fold(tx, document.case_id, reuse_read=True)
        except ContentPurged as exc:
            raise IllegalTransition(
                f"{document.message_type}: case {document.case_id} is closed and its content was purged "
                f"({exc.purged_at}); it takes no more messages",
                code=ErrorCode.CONTENT_PURGED,
            ) from exc
        position = CasePosition.of(document)
        held = fold.documents.get(position.identity)
        if held is not None:
            if held == document:
                return fold.tracker.state
            raise IllegalTransition(
                f"{document.message_type} in state {fold.tracker.state or 'none'}: message id "
                f"{position.message_id} of {position.sender} is already used by another message of the case",
                code=ErrorCode.MESSAGE_ID_CONFLICT,
            )
        if not fold.positions or position > fold.positions[-1]:
            fold.append_applied(position, document)
            return fold.tracker.state
        trial = self._refold(fold, position, document)
        later = sum(1 for other in fold.positions if other > position)
        placed = f"placed by its sequence {position.sequence} before {later} message(s) already in the case"
        if position in trial.not_applied:
            raise IllegalTransition(f"{trial.not_applied[position]} ({placed})")
        undone = [
            other
            for other in trial.positions
            if other in trial.not_applied
            and other not in fold.not_applied
            and not _may_yield(entries[other.identity], direction)
        ]
        if undone:
            first = fold.documents[undone[0].identity]
            raise IllegalTransition(
                f"{document.message_type} in state {trial.state_before[position] or 'none'}, {placed}, would "
                f"undo {first.message_type} {undone[0].message_id} of {undone[0].sender}"
            )
        self._remember(document.case_id, trial)
        return trial.tracker.state

    async def case_file(self, tx: Transaction, case_id: str) -> CaseFile | None:
        """The case as this agency knows it, or `None` if it holds no message of it.

        `ContentPurged` if retention purged it: its documents, which the state is folded from, are gone.
        """
        fold, entries = await self._fold(tx, case_id)
        if not fold.positions:
            return None
        messages = tuple(
            CaseMessage(
                direction=Direction(entries[position.identity].direction),
                entry=entries[position.identity],
                document=fold.documents[position.identity],
                position=position,
                not_applied=fold.not_applied.get(position),
            )
            for position in fold.positions
        )
        tracker = fold.tracker
        view = None if tracker.state is None else tracker.view()
        role = None
        if view is not None:
            own = messages[0].document
            party = own.sender if messages[0].direction is Direction.SENT else own.recipient
            role = tracker.role_of(party)
        return CaseFile(case_id=case_id, agency=self._agency, messages=messages, view=view, role=role)

    # -- the fold -------------------------------------------------------------------------

    async def _fold(
        self, tx: Transaction, case_id: str, *, reuse_read: bool = False
    ) -> tuple[_Fold, Mapping[Identity, CaseEntry]]:
        """The case's fold brought up to date with the store, and its rows by message.

        With `reuse_read`, the rows `next_sequence` read in this very transaction stand for the store's (once).
        """
        read_in, self._read_in = self._read_in, None
        fold = self._folds.get(case_id)
        if reuse_read and read_in is not None and read_in[0] is tx and read_in[1] == case_id and fold is not None:
            self._remember(case_id, fold)
            return fold, read_in[2]
        held = await tx.case_entries(case_id, self._agency)
        purged = [entry.content_purged_at for entry in held if entry.content_purged_at is not None]
        if purged:
            self._folds.pop(case_id, None)
            raise ContentPurged(f"the content of case {case_id} was purged (retention)", purged_at=max(purged))
        entries = {(entry.sender, entry.message_id): entry for entry in held if counts_in_case(entry)}
        if fold is not None and entries.keys() == fold.documents.keys():
            # The same messages as folded: the fold is the store's (positions come from the documents alone).
            self._remember(case_id, fold)
            return fold, MappingProxyType(entries)
        known = {} if fold is None else fold.documents
        documents: dict[Identity, MessageDocument] = {}
        for identity, entry in entries.items():
            document = known.get(identity)
            if document is None:
                document = validate_document(await tx.case_document(entry))
            documents[identity] = document
        ordered = sorted(CasePosition.of(document, identity) for identity, document in documents.items())
        if fold is None or fold.positions != ordered[: len(fold.positions)]:
            fold = _Fold(CaseTracker(clocks=self._clocks))
        for position in ordered[len(fold.positions) :]:
            fold.add(position, documents[position.identity])
        self._remember(case_id, fold)
        return fold, MappingProxyType(entries)

    def _refold(self, fold: _Fold, position: CasePosition, document: MessageDocument) -> _Fold:
        """The fold of the case with `document` put at its place among the others."""
        trial = _Fold(CaseTracker(clocks=self._clocks))
        for other in sorted([*fold.positions, position]):
            trial.add(other, document if other == position else fold.documents[other.identity])
        return trial

    def _remember(self, case_id: str, fold: _Fold) -> None:
        """Keep `fold` as the case used last; forget the least recently used beyond both bounds (never this one)."""
        self._folds[case_id] = fold
        self._folds.move_to_end(case_id)
        held = self.cached_documents
        while len(self._folds) > 1 and (len(self._folds) > self._cached_cases or held > self._cached_documents):
            _, forgotten = self._folds.popitem(last=False)
            held -= len(forgotten.documents)

    def forget(self, case_id: str) -> None:
        """Drop the case's fold, and the documents it holds in memory (retention purged them)."""
        self._folds.pop(case_id, None)

    @property
    def cached_documents(self) -> int:
        """Documents the kept folds hold now."""
        return sum(len(kept.documents) for kept in self._folds.values())


def _may_yield(entry: CaseEntry, arriving: Direction) -> bool:
    """Whether an arriving message may displace `entry`: only ours, on its way, the other side not holding it."""
    return arriving is Direction.RECEIVED and Direction(entry.direction) is Direction.SENT and not entry.delivered


__all__ = [
    "CACHED_CASES",
    "CACHED_DOCUMENTS",
    "CaseBook",
    "CaseFile",
    "CaseMessage",
    "CasePosition",
    "Direction",
    "counts_in_case",
]
