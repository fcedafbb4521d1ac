"""Connectivity tests in the agent: `POST /v1/connectivity-tests` sends a ping, the peer's agent answers a pong.

Both travel the whole path as any message does (`protocol.connectivity`): sealed
and signed here, queued in the outbox and published by the relay, checked,
logged and relayed by the gateway with its evidence, verified by the
recipient's agent step by step (`agents.receiving`, which hands a probe here
once it is authenticated, allowed, fresh and opened). Neither enters a case or
the inbox; neither is listed by `GET /v1/messages`.

The recipient answers at once, in the transaction that records the ping: it
signs `DELIVERY` and `RETRIEVAL` for the ping (its agent is the system that
takes it, so the gateway's retrieval deadline never runs out on it) and queues
the pong. When the pong comes back, this agent signs `DELIVERY` and
`RETRIEVAL` for it too and keeps both statements with the test: the ping's
evidence chain is the gateway's and the peer's statements about the ping (as
for any sent message); the pong's is what this agency signed on taking it.

A test's state, read at `GET /v1/connectivity-tests/{test_id}`:

* `pending`    the ping is on its way or waiting for the peer (its agent down, say);
* `completed`  the pong arrived before the deadline (`timeout_s` after the start);
* `failed`     the ping was refused on the way (`rejected`, `failed`: the reason's code);
* `timed_out`  the deadline passed without a pong (`TIMED_OUT`). The ping's envelope expires
               at the deadline, so a peer that comes back later refuses it as expired rather
               than answering a test that is over.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

import structlog
from aiohttp import web

from agents.evidence_view import evidence_item, lifecycle_order
from agents.status import MessageStatus
from agents.store import AgentStore, ConnectivityTest, OutboxRecord, Transaction
from agents.submission import SenderKeys
from protocol.connectivity import CONNECTIVITY_TEST, LinkProbe, linked_agreement, parse_probe, probe_case_id
from protocol.directory import Directory
from protocol.encoding import format_timestamp, parse_json_strict, parse_timestamp, sha256_hex
from protocol.envelope import OpenedMessage, Recipient, seal
from protocol.errors import (
    AuthenticationFailed,
    ContentInvalid,
    ErrorCode,
    FieldError,
    FreshnessViolation,
    ProtocolError,
)
from protocol.evidence import EvidenceType, issue_evidence, new_statement
from protocol.ids import AgencyId, MessageId, parse_agency_id
from protocol.limits import Limits
from runtime.http import json_answer, problem

log = structlog.get_logger("rogatory.agent.connectivity")

DEFAULT_TIMEOUT_S: Final = 120
MIN_TIMEOUT_S: Final = 5
MAX_TIMEOUT_S: Final = 3600
MAX_REQUEST_BYTES: Final = 1024


@dataclass(frozen=True, slots=True)
class Connectivity:
    """Starts connectivity tests, answers the peers' pings, records their pongs, shows each test."""

    sender: SenderKeys
    store: AgentStore
    directory: Callable[[], Directory]
    limits: Limits
    clock: Callable[[], datetime]
    wake_relay: Callable[[], None]

    def routes(self) -> list[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]]:
        """(method, path, handler) of the connectivity tests."""
        return [
            ("POST", "/v1/connectivity-tests", self.start_handler),
            ("GET", "/v1/connectivity-tests/{test_id}", self.show_handler),
        ]

    # -- the API -----------------------------------------------------------------------------

    async def start_handler(self, request: web.Request) -> web.Response:
        """`POST /v1/connectivity-tests {"to": AGENCY, "timeout_s": N}`: send a ping; `201` with the test."""
        if request.content_type != "application/json":
            return problem(415, ErrorCode.UNSUPPORTED_MEDIA_TYPE, "Unsupported media type", "expected application/json")
        raw = await request.content.read(MAX_REQUEST_BYTES + 1)
        to, timeout_s = _start_request(raw)
        test = await self.start(to, timedelta(seconds=timeout_s))
        answer = await self.describe(test)
        response = json_answer(answer, status=201)
        response.headers["Location"] = f"/v1/connectivity-tests/{test.test_id}"
        return response

    async def show_handler(self, request: web.Request) -> web.Response:
        """`GET /v1/connectivity-tests/{test_id}`: the state, timings and both legs' evidence."""
        raw = request.match_info["test_id"]
        try:
            test_id = str(uuid.UUID(raw))
        except ValueError:
            return problem(400, ErrorCode.INVALID_IDENTIFIER, "Malformed request", "a test id is a UUID")
        test = await self.store.connectivity_test(test_id)
        if test is None:
            return problem(404, ErrorCode.NOT_FOUND, "Unknown connectivity test", f"no connectivity test {test_id}")
        return json_answer(await self.describe(test))

    # -- sending a ping ----------------------------------------------------------------------

    async def start(self, to: AgencyId, within: timedelta) -> ConnectivityTest:
        """Seal a ping to `to` and queue it; `PolicyDenied` (unknown agency, no agreement) before anything is kept."""
        now = self.clock()
        directory = self.directory()
        if to == self.sender.agency:
            raise ContentInvalid(
                "a connectivity test goes to another agency",
                (FieldError(("to",), "this agency's own id"),),
                code=ErrorCode.CONTENT_INVALID,
            )
        linked_agreement(directory, self.sender.agency, to, now)
        test_id, ping_id = uuid.uuid4(), MessageId(uuid.uuid4())
        probe = LinkProbe(
            kind="ping", test_id=test_id, message_id=ping_id, sender=self.sender.agency, recipient=to, sent_at=now
        )
        deadline = now + within
        record = self._outbox_record(probe, directory, now, deadline)
        test = ConnectivityTest(
            test_id=str(test_id),
            peer=to,
            ping_id=str(ping_id),
            started_at=format_timestamp(now),
            deadline=format_timestamp(deadline),
        )
        async with self.store.transaction() as tx:
            await tx.insert_outbox(record)
            await tx.insert_connectivity_test(test)
        self.wake_relay()
        log.info("connectivity_test_started", test_id=test.test_id, peer=to, ping_id=test.ping_id)
        return test

    def _outbox_record(self, probe: LinkProbe, directory: Directory, now: datetime, expires: datetime) -> OutboxRecord:
        """`probe` sealed to its recipient, as an outbox row (status `queued`)."""
        document = probe.to_bytes()
        key = directory.agency(probe.recipient).current_encryption_key(now)
        sealed = seal(
            document,
            message_id=probe.message_id,
            sender=self.sender.agency,
            signing_key=self.sender.signing_key,
            recipients=[Recipient(probe.recipient, key.recipient_key)],
            archive_key=self.sender.archive_key,
            message_type=CONNECTIVITY_TEST,
            case_id=probe_case_id(probe.test_id),
            created_at=now,
            expires_at=expires,
            limits=self.limits,
        )
        at = format_timestamp(now)
        return OutboxRecord(
            message_id=str(probe.message_id),
            recipient=probe.recipient,
            message_type=CONNECTIVITY_TEST,
            case_id=probe_case_id(probe.test_id),
            in_reply_to=None if probe.answers is None else str(probe.answers),
            document=document,
            request_sha256=sha256_hex(document),
            sealed=sealed.to_bytes(),
            digest=sealed.digest,
            status=MessageStatus.QUEUED,
            status_reason=None,
            created_at=at,
            expires_at=format_timestamp(expires),
            published_at=None,
            updated_at=at,
        )

    # -- receiving a probe -------------------------------------------------------------------

    async def receive(self, opened: OpenedMessage, now: datetime) -> bool:
        """A probe `agents.receiving` authenticated, allowed and opened: answer a ping, record a pong.

        Returns False for a redelivery of a probe already taken. Raises a `ProtocolError` to refuse it
        (the receiver answers `NON_DELIVERY` with its code).
        """
        header = opened.header
        probe = parse_probe(opened.document, self.limits)
        mismatches = [
            name
            for name, in_document, in_header in (
                ("message_id", str(probe.message_id), str(header.message_id)),
                ("case_id", probe_case_id(probe.test_id), header.case_id),
                ("sender", probe.sender, header.sender),
                ("recipient", probe.recipient, self.sender.agency),
            )
            if in_document != str(in_header)
        ]
        if mismatches:
            raise AuthenticationFailed(
                f"document and signed header disagree on {', '.join(mismatches)}",
                code=ErrorCode.HEADER_DOCUMENT_MISMATCH,
            )
        message_id = str(header.message_id)
        async with self.store.transaction() as tx:
            earlier = await tx.connectivity_received(header.sender, message_id)
            if earlier is not None:
                if earlier != opened.digest:
                    raise FreshnessViolation(
                        f"message id {message_id} of {header.sender} was already used for another envelope",
                        code=ErrorCode.REPLAYED,
                    )
                return False
            test = None
            if probe.kind == "pong":
                test = None if probe.answers is None else await tx.connectivity_test_of_ping(str(probe.answers))
                if test is None or test.peer != header.sender or test.test_id != str(probe.test_id):
                    raise ContentInvalid(
                        "a pong that answers no ping this agency sent to its sender",
                        (FieldError(("answers",), "no such ping"),),
                        code=ErrorCode.CONTENT_INVALID,
                    )
            at = format_timestamp(now)
            await tx.insert_connectivity_received(
                header.sender, message_id, digest=opened.digest, kind=probe.kind, test_id=str(probe.test_id), at=at
            )
            taken = await self._take(tx, opened, now)
            if test is not None:
                await tx.record_pong(
                    test.test_id,
                    pong_id=message_id,
                    digest=opened.digest,
                    sent_at=format_timestamp(probe.sent_at),
                    received_at=at,
                    evidence=json.dumps(taken).encode("utf-8"),
                )
            else:
                pong = LinkProbe(
                    kind="pong",
                    test_id=probe.test_id,
                    message_id=MessageId(uuid.uuid4()),
                    sender=self.sender.agency,
                    recipient=header.sender,
                    sent_at=now,
                    answers=probe.message_id,
                )
                await tx.insert_outbox(self._outbox_record(pong, self.directory(), now, header.expires_at))
        self.wake_relay()
        log.info("connectivity_probe_received", kind=probe.kind, test_id=str(probe.test_id), sender=header.sender)
        return True

    async def _take(self, tx: Transaction, opened: OpenedMessage, now: datetime) -> list[dict[str, Any]]:
        """Sign `DELIVERY` and `RETRIEVAL` for a probe and queue them to its sender; the statements, as JSON."""
        header = opened.header
        signed_statements = []
        for evidence_type in (EvidenceType.DELIVERY, EvidenceType.RETRIEVAL):
            statement = new_statement(
                evidence_type,
                message_id=header.message_id,
                message_digest=opened.digest,
                sender=header.sender,
                recipient=self.sender.agency,
                message_type=header.message_type,
                case_id=header.case_id,
                issuer=self.sender.agency,
                at=now,
            )
            body = issue_evidence(statement, self.sender.signing_key).model_dump_json().encode("utf-8")
            await tx.enqueue_evidence(statement.identity, str(header.message_id), body, format_timestamp(now))
            signed_statements.append(json.loads(body))
        return signed_statements

    # -- showing a test ------------------------------------------------------------------------

    async def describe(self, test: ConnectivityTest) -> dict[str, Any]:
        """The test's answer: state, failure, timings, the ping's and the pong's evidence."""
        now = self.clock()
        ping = await self.store.outbox(test.ping_id)
        evidence = sorted(await self.store.evidence_for(test.ping_id), key=lifecycle_order)
        started, deadline = parse_timestamp(test.started_at), parse_timestamp(test.deadline)
        received = None if test.pong_received_at is None else parse_timestamp(test.pong_received_at)
        status = None if ping is None else MessageStatus(ping.status)
        state, failure = "pending", None
        if received is not None and received <= deadline:
            state = "completed"
        elif status in {MessageStatus.REJECTED, MessageStatus.FAILED}:
            state = "failed"
            failure = {"code": (ping.status_reason if ping else None) or ErrorCode.ROUTING_FAILED, "detail": None}
        elif now > deadline:
            state = "timed_out"
            failure = {"code": ErrorCode.TIMED_OUT, "detail": f"no pong from {test.peer} by {test.deadline}"}
        delivered = next((item for item in evidence if item.evidence_type == EvidenceType.DELIVERY), None)
        return {
            "test_id": test.test_id,
            "to": test.peer,
            "state": state,
            "failure": failure,
            "started_at": test.started_at,
            "deadline": test.deadline,
            "timings": {
                "round_trip_ms": None if received is None else _ms(received - started),
                "ping_delivered_ms": None if delivered is None else _ms(parse_timestamp(delivered.at) - started),
                "pong_delivered_ms": None
                if received is None or test.pong_sent_at is None
                else _ms(received - parse_timestamp(test.pong_sent_at)),
            },
            "ping": {
                "message_id": test.ping_id,
                "status": None if ping is None else ping.status,
                "status_reason": None if ping is None else ping.status_reason,
                "message_digest": None if ping is None else ping.digest,
                "evidence": [evidence_item(item) for item in evidence],
            },
            "pong": None
            if test.pong_id is None
            else {
                "message_id": test.pong_id,
                "message_digest": test.pong_digest,
                "sent_at": test.pong_sent_at,
                "received_at": test.pong_received_at,
                "evidence": [] if test.pong_evidence is None else json.loads(test.pong_evidence),
            },
        }


def _ms(delta: timedelta) -> int:
    return round(delta.total_seconds() * 1000)


def _start_request(raw: bytes) -> tuple[AgencyId, int]:
    """`{"to": AGENCY, "timeout_s": N}` (strict JSON, nothing else), or `ContentInvalid`/`MalformedInput`."""
    if len(raw) > MAX_REQUEST_BYTES:
        raise ContentInvalid(
            "the request is over 1 KiB", (FieldError((), "too large"),), code=ErrorCode.CONTENT_INVALID
        )
    body = parse_json_strict(raw, max_bytes=MAX_REQUEST_BYTES, max_depth=2)
    errors: list[FieldError] = []
    if not isinstance(body, dict):
        raise ContentInvalid("expected a JSON object", (FieldError((), "not an object"),))
    extra = sorted(set(body) - {"to", "timeout_s"})
    errors.extend(FieldError((name,), "unknown field") for name in extra)
    to = body.get("to")
    agency = None
    try:
        agency = parse_agency_id(to)
    except ProtocolError:
        errors.append(FieldError(("to",), "an agency id, such as LY-MLA-CA"))
    timeout_s = body.get("timeout_s", DEFAULT_TIMEOUT_S)
    if type(timeout_s) is not int or not MIN_TIMEOUT_S <= timeout_s <= MAX_TIMEOUT_S:
        errors.append(FieldError(("timeout_s",), f"an integer from {MIN_TIMEOUT_S} to {MAX_TIMEOUT_S}"))
    if errors or agency is None:
        raise ContentInvalid("invalid connectivity test request", tuple(errors), code=ErrorCode.CONTENT_INVALID)
    return agency, timeout_s


__all__ = ["DEFAULT_TIMEOUT_S", "MAX_TIMEOUT_S", "MIN_TIMEOUT_S", "Connectivity"]
