"""Identifiers that must never be confused with one another.

Each is a distinct type (`NewType`) over `str` or `UUID`, built only through a
`parse_*` function or the matching pydantic annotated type, so a value of the
type is always valid. Identifiers are ASCII only: a look-alike letter from
another script (Cyrillic A, U+0410, for Latin A) is refused, not normalised.
"""

from __future__ import annotations

import re
import uuid
from typing import Annotated, NewType

from pydantic import AfterValidator, PlainSerializer, PlainValidator, WithJsonSchema

from protocol.errors import ErrorCode, MalformedInput

AgencyId = NewType("AgencyId", str)
"""A country code and one to three authority codes: `BD-MOHA-PSD`, `LY-AGO`."""

GatewayId = NewType("GatewayId", str)
"""The name of a gateway, lower-case: `gateway.rogatory.test`."""

KeyId = NewType("KeyId", str)
"""32 lower-case hex digits derived from a public key (see `protocol.keys`)."""

MessageId = NewType("MessageId", uuid.UUID)
"""The UUID of one message, unique per sender."""

CaseId = NewType("CaseId", str)
"""The shared reference of one MLA case: `BD-LY-2025-0007`."""

_AGENCY_ID = re.compile(r"[A-Z]{2}(?:-[A-Z0-9]{2,16}){1,3}", re.ASCII)
_GATEWAY_ID = re.compile(r"[a-z0-9](?:[a-z0-9.-]{0,62}[a-z0-9])?", re.ASCII)
_KEY_ID = re.compile(r"[0-9a-f]{32}", re.ASCII)
_CASE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{2,63}", re.ASCII)

KEY_ID_BYTES = 16


def _fail(kind: str, value: object) -> MalformedInput:
    shown = repr(value)[:80]
    return MalformedInput(f"{kind}: expected {kind} syntax, found {shown}", code=ErrorCode.INVALID_IDENTIFIER)


def parse_agency_id(value: object) -> AgencyId:
    """Return `value` as an `AgencyId`, or raise `MalformedInput`."""
    if isinstance(value, str) and _AGENCY_ID.fullmatch(value):
        return AgencyId(value)
    raise _fail("agency id", value)


def parse_gateway_id(value: object) -> GatewayId:
    """Return `value` as a `GatewayId`, or raise `MalformedInput`."""
    if isinstance(value, str) and _GATEWAY_ID.fullmatch(value):
        return GatewayId(value)
    raise _fail("gateway id", value)


def parse_key_id(value: object) -> KeyId:
    """Return `value` as a `KeyId`, or raise `MalformedInput`."""
    if isinstance(value, str) and _KEY_ID.fullmatch(value):
        return KeyId(value)
    raise _fail("key id", value)


def parse_case_id(value: object) -> CaseId:
    """Return `value` as a `CaseId`, or raise `MalformedInput`."""
    if isinstance(value, str) and _CASE_ID.fullmatch(value):
        return CaseId(value)
    raise _fail("case id", value)


def parse_message_id(value: object) -> MessageId:
    """Return `value` (a UUID or its canonical lower-case text) as a `MessageId`."""
    if isinstance(value, uuid.UUID):
        return MessageId(value)
    if isinstance(value, str) and len(value) == 36:
        try:
            parsed = uuid.UUID(value)
        except ValueError:
            pass
        else:
            if str(parsed) == value:
                return MessageId(parsed)
    raise _fail("message id", value)


def _pydantic(parse: object) -> AfterValidator:
    def check(value: object) -> object:
        try:
            return parse(value)  # type: ignore[operator]
        except MalformedInput as exc:
            raise ValueError(exc.detail) from None

    return AfterValidator(check)


def _message_id_before(value: object) -> object:
    try:
        return parse_message_id(value)
    except MalformedInput as exc:
        raise ValueError(exc.detail) from None


AgencyIdField = Annotated[AgencyId, _pydantic(parse_agency_id)]
GatewayIdField = Annotated[GatewayId, _pydantic(parse_gateway_id)]
KeyIdField = Annotated[KeyId, _pydantic(parse_key_id)]
CaseIdField = Annotated[CaseId, _pydantic(parse_case_id)]
MessageIdField = Annotated[
    MessageId,
    PlainValidator(_message_id_before),
    PlainSerializer(str, return_type=str),
    WithJsonSchema({"type": "string", "format": "uuid", "pattern": "^[0-9a-f-]{36}$"}),
]

__all__ = [
    "KEY_ID_BYTES",
    "AgencyId",
    "AgencyIdField",
    "CaseId",
    "CaseIdField",
    "GatewayId",
    "GatewayIdField",
    "KeyId",
    "KeyIdField",
    "MessageId",
    "MessageIdField",
    "parse_agency_id",
    "parse_case_id",
    "parse_gateway_id",
    "parse_key_id",
    "parse_message_id",
]
