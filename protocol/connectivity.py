"""Connectivity tests: a ping to another agency and its automatic pong, through the whole path, outside any case.

An agency checks its link to another one (docs/GUIDE.md, "Checking your link")
with a message of its own type, `CONNECTIVITY_TEST`, sealed, signed and
encrypted like any other: the gateway authenticates it, applies its policy,
logs it and relays it with evidence; the recipient's agent verifies it step by
step as it verifies every message, then answers with a pong by the same road.
Neither is an MLA message: the document is a `LinkProbe`, never admitted to a
case, never in the inbox.

Policy: a connectivity test may go between two agencies an agreement in
force links, in either direction, whatever message types it lists
(`linked_agreement`): whoever may exchange MLA messages may check that they
can, and the pong goes back on the agreement the ping came on. Between
agencies no agreement links, it is `POLICY_DENIED` at the sending agent, at
the gateway and at the recipient, as any other message.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Final, Literal

from pydantic import Field

from protocol.directory import Agreement, Directory
from protocol.encoding import UtcTimestamp, parse_json_strict
from protocol.errors import ErrorCode, PolicyDenied
from protocol.ids import AgencyId, AgencyIdField, CaseId, MessageIdField
from protocol.limits import Limits
from protocol.model import FrozenModel, parse_model

CONNECTIVITY_TEST: Final = "CONNECTIVITY_TEST"
"""The message type of pings and pongs, in the signed header (never an MLA `MessageType`)."""
PROBE_SCHEMA: Final = "rogatory-connectivity/1"
MAX_PROBE_BYTES: Final = 4096


class LinkProbe(FrozenModel):
    """The document of a ping or a pong (what is sealed; the header says the same sender, recipient, ids)."""

    schema_: Literal["rogatory-connectivity/1"] = Field(default=PROBE_SCHEMA, alias="schema")
    kind: Literal["ping", "pong"]
    test_id: uuid.UUID
    message_id: MessageIdField
    sender: AgencyIdField
    recipient: AgencyIdField
    sent_at: UtcTimestamp
    answers: MessageIdField | None = None
    """A pong: the message id of the ping it answers."""

    model_config = FrozenModel.model_config | {"populate_by_name": True}

    def to_bytes(self) -> bytes:
        """The document as it is sealed."""
        return self.model_dump_json(by_alias=True).encode("utf-8")


def probe_case_id(test_id: uuid.UUID) -> CaseId:
    """The `case_id` a probe's header carries: names the test, matches no MLA case (the header requires one)."""
    return CaseId(f"LINK-{test_id.hex}")


def parse_probe(document: bytes, limits: Limits) -> LinkProbe:
    """A probe document: strict JSON, small, exactly the model (`ContentInvalid` otherwise)."""
    parse_json_strict(document, max_bytes=min(MAX_PROBE_BYTES, limits.max_document_bytes), max_depth=4)
    return parse_model(LinkProbe, document, what="connectivity test document")


def linked_agreement(directory: Directory, sender: AgencyId, recipient: AgencyId, at: datetime) -> Agreement:
    """The agreement in force at `at` linking the two agencies (either direction, any type), or `PolicyDenied`."""
    directory.agency(sender)
    directory.agency(recipient)
    for agreement in directory.agreements:
        if agreement.valid_from <= at <= agreement.valid_until and any(
            (sender in rule.senders and recipient in rule.recipients)
            or (recipient in rule.senders and sender in rule.recipients)
            for rule in agreement.rules
        ):
            return agreement
    raise PolicyDenied(
        f"no agreement in force links {sender} and {recipient}: no connectivity test between them",
        code=ErrorCode.POLICY_DENIED,
    )


__all__ = [
    "CONNECTIVITY_TEST",
    "MAX_PROBE_BYTES",
    "PROBE_SCHEMA",
    "LinkProbe",
    "linked_agreement",
    "parse_probe",
    "probe_case_id",
]
