"""The message document: what an agency system submits and receives (`mla-exchange/1.0`).

A document is an envelope of case metadata (type, case, parties, channel,
classification, languages, attachments, integrity) around a `payload`
validated by the content model of its `message_type`. `validate_document`
is the one way in from bytes: it validates in pydantic's strict JSON mode
and reports every problem at once, envelope, payload and rules together,
each `FieldError.loc` pointing at the offending field (payload errors start
with `"payload"`). It also recomputes `integrity.payload_sha256` as the
SHA-256 of the RFC 8785 canonical form of the payload *as sent*.

Departures from the draft envelope: `message_id`, `created_at`, `sequence`
and `integrity` are optional (an agent fills them in when a client omits
them, see docs/API.md); `created_at` is normalised to UTC (`UtcTimestamp`), the
author's offset being business detail carried by the payload's own dates;
a party's `authority_id` must belong to its `state`; sender and recipient
differ; a request's `requesting_state`/`requested_state` match its sender
and recipient; attachment ids are unique. The field `schema` is exposed as
`schema_version` in Python (`schema` would shadow a pydantic method).

Rules that merely warn (R5, R6, R9, R11-R14) are not refusals; see
`protocol.mla.rules.document_warnings`.
"""

import functools
from enum import StrEnum
from typing import Any, Final, Literal

from pydantic import (
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails

from protocol.encoding import UtcTimestamp, canonical_json, load_json, sha256_hex
from protocol.errors import ContentInvalid, ErrorCode, FieldError, MalformedInput
from protocol.ids import MessageIdField
from protocol.mla._validation import require_object, rule_error, rule_violations, validate_as
from protocol.mla.catalogue import CONTENT_MODELS, MessageType
from protocol.mla.common import Attachment, Channel, Classification, MessageContent, Role
from protocol.mla.request import MlaRequest
from protocol.mla.values import (
    AgencyIdText,
    CaseIdText,
    CountryCode,
    LanguageTag,
    LocalizedText,
    Sha256Hex,
    Text,
)
from protocol.model import FrozenModel, field_errors

SCHEMA_VERSION: Final = "mla-exchange/1.0"
"""The value of every document's `schema` field that this code understands."""

JSON_SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"


class Party(FrozenModel):
    """The sending or receiving authority of a message (UNTOC 18(13): central authorities)."""

    state: CountryCode
    authority_id: AgencyIdText
    role: Role | None = None
    name: LocalizedText | None = None

    @field_validator("authority_id", mode="after")
    @classmethod
    def _belongs_to_state(cls, authority_id: str, info: ValidationInfo) -> str:
        state = info.data.get("state")
        if state is not None and not authority_id.startswith(f"{state}-"):
            raise ValueError(f"agency {authority_id} is not an authority of {state}")
        return authority_id


class Languages(FrozenModel):
    """The language the document is written in and those it is available in."""

    primary: LanguageTag
    available: tuple[LanguageTag, ...] = ()


class SignatureFormat(StrEnum):
    """Format of a signature carried inside the document; only JWS is verified, and so accepted, by the agents."""

    JWS = "JWS"
    CADES = "CAdES"
    XADES = "XAdES"
    PADES = "PAdES"
    NONE = "none"


class DocumentSignature(FrozenModel):
    """The document's own signature: a JWS by the sending agency's key, made or verified by its agent."""

    format: SignatureFormat
    signer: Text
    certificate_ref: Text | None = None
    value: Text | None = None


class Integrity(FrozenModel):
    """The payload digest: SHA-256 of the RFC 8785 canonical JSON of the payload as sent."""

    payload_sha256: Sha256Hex
    canonicalization: Text | None = None
    signature: DocumentSignature | None = None


class _Envelope(FrozenModel):
    """The fields of a document other than its payload, in the order they are checked."""

    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True, serialize_by_alias=True)

    schema_version: Literal["mla-exchange/1.0"] = Field(alias="schema")
    test_data: bool | None = None
    message_id: MessageIdField | None = None
    message_type: MessageType
    case_id: CaseIdText
    requesting_ref: Text | None = None
    requested_ref: Text | None = None
    in_reply_to: MessageIdField | None = None
    sequence: int | None = Field(default=None, ge=1)
    created_at: UtcTimestamp | None = None
    sender: Party
    recipient: Party
    channel: Channel
    classification: Classification
    languages: Languages | None = None
    attachments: tuple[Attachment, ...] = ()
    integrity: Integrity | None = None


class MessageDocument(_Envelope):
    """One MLA message as agency systems submit it: envelope fields plus a typed payload.

    `payload` is an instance of `CONTENT_MODELS[message_type]`.
    """

    payload: SerializeAsAny[MessageContent]

    @field_validator("payload", mode="plain")
    @classmethod
    def _payload_of_its_type(cls, value: object, info: ValidationInfo) -> MessageContent:
        message_type = info.data.get("message_type")
        if not isinstance(message_type, MessageType):
            # pydantic reports ValueError as a field error; TypeError would escape validation
            raise ValueError("not checked: message_type is missing or unknown")  # noqa: TRY004
        require_object(value, "payload")
        return validate_as(CONTENT_MODELS[message_type], value, info)

    @model_validator(mode="after")
    def _consistent(self) -> "MessageDocument":
        found = [*self._parties_differ(), *self._request_matches_parties()]
        seen: set[str] = set()
        for index, attachment in enumerate(self.attachments):
            if attachment.attachment_id in seen:
                found.append(
                    rule_error(
                        ("attachments", index, "attachment_id"),
                        f"attachment_id {attachment.attachment_id!r} is used more than once",
                    )
                )
            seen.add(attachment.attachment_id)
        if found:
            raise rule_violations("MessageDocument", found)
        return self

    def _parties_differ(self) -> list[InitErrorDetails]:
        found: list[InitErrorDetails] = []
        if self.sender.authority_id == self.recipient.authority_id:
            found.append(
                rule_error(
                    ("recipient", "authority_id"),
                    "a message goes from one authority to another, not to its sender",
                    self.recipient.authority_id,
                )
            )
        if self.sender.role is not None and self.sender.role == self.recipient.role:
            found.append(
                rule_error(
                    ("recipient", "role"),
                    f"sender and recipient cannot both be on the {self.sender.role} side",
                    self.recipient.role,
                )
            )
        return found

    def _request_matches_parties(self) -> list[InitErrorDetails]:
        if not isinstance(self.payload, MlaRequest):
            return []
        found: list[InitErrorDetails] = []
        for field, state, party in (
            ("requesting_state", self.payload.requesting_state, self.sender),
            ("requested_state", self.payload.requested_state, self.recipient),
        ):
            if state != party.state:
                found.append(
                    rule_error(
                        ("payload", field),
                        f"{field} is {state} but the document's party is of {party.state}",
                        state,
                    )
                )
        if self.sender.role is Role.REQUESTED:
            found.append(
                rule_error(
                    ("sender", "role"),
                    "the sender of an MLA_REQUEST is the requesting side",
                    self.sender.role,
                )
            )
        return found


# -- bytes in ---------------------------------------------------------------


def _digest_errors(document: object) -> list[FieldError]:
    """The payload digest check, on the payload exactly as sent (not as re-serialised)."""
    if not isinstance(document, dict):
        return []
    integrity = document.get("integrity")
    claimed = integrity.get("payload_sha256") if isinstance(integrity, dict) else None
    if not isinstance(claimed, str) or "payload" not in document:
        return []
    loc: tuple[str | int, ...] = ("integrity", "payload_sha256")
    try:
        actual = sha256_hex(canonical_json(document["payload"]))
    except MalformedInput as exc:
        return [FieldError(loc=loc, msg=f"the payload cannot be canonicalised: {exc.detail}")]
    if actual != claimed:
        return [
            FieldError(
                loc=loc,
                msg=(
                    "payload_sha256 does not match the SHA-256 of the RFC 8785 canonical payload: "
                    f"expected {actual}, found {claimed}"
                ),
            )
        ]
    return []


def _code_for(errors: tuple[FieldError, ...]) -> ErrorCode:
    if any(error.loc == ("schema",) for error in errors):
        return ErrorCode.UNSUPPORTED_VERSION
    if all(error.loc == ("integrity", "payload_sha256") for error in errors):
        return ErrorCode.PAYLOAD_DIGEST_MISMATCH
    return ErrorCode.CONTENT_INVALID


def validate_document(raw: bytes, *, parsed: Any = None) -> MessageDocument:  # noqa: ANN401 - JSON is Any
    """Validate a message document, or raise `ContentInvalid` listing every problem.

    `raw` is UTF-8 JSON that the caller has already passed through
    `protocol.encoding.parse_json_strict` (size, depth, duplicate keys);
    `parsed` is what that returned, if the caller kept it (a value equal to
    it: the JSON is then not parsed again for the digest check).
    Validation is strict JSON mode: `"5"` is not `5`, unknown fields are
    refused, text is taken as it is. Envelope errors, payload errors (their
    `loc` starting with `"payload"`), rule violations and a wrong
    `integrity.payload_sha256` are all reported together.
    """
    if parsed is None:
        parsed = load_json(raw)
    errors: list[FieldError] = []
    document: MessageDocument | None = None
    try:
        document = MessageDocument.model_validate_json(raw)
    except ValidationError as exc:
        errors.extend(field_errors(exc))
    errors.extend(_digest_errors(parsed))
    if errors or document is None:
        found = tuple(errors)
        raise ContentInvalid(f"message document is invalid: {len(found)} error(s)", found, code=_code_for(found))
    return document


# -- JSON Schema ------------------------------------------------------------


@functools.cache
def _schema_model(message_type: MessageType) -> type[_Envelope]:
    content = CONTENT_MODELS[message_type]
    model: type[_Envelope] = create_model(
        f"{content.__name__}Document",
        __base__=_Envelope,
        __doc__=f"A {message_type} message document ({SCHEMA_VERSION}).",
        payload=(content, Field(description=content.__doc__)),
    )
    return model


def document_json_schema(message_type: MessageType) -> dict[str, Any]:
    """The JSON Schema (2020-12) of a whole `message_type` document, generated from the models."""
    generated = _schema_model(message_type).model_json_schema(mode="validation")
    properties = generated["properties"]
    properties["message_type"] = {"const": message_type.value, "title": "Message Type"}
    definitions = generated.get("$defs", {})
    definitions.pop("MessageType", None)
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": f"urn:rogatory:{SCHEMA_VERSION}:{message_type.value}",
        **generated,
        "title": f"{message_type.value} message document ({SCHEMA_VERSION})",
    }


__all__ = [
    "JSON_SCHEMA_DIALECT",
    "SCHEMA_VERSION",
    "DocumentSignature",
    "Integrity",
    "Languages",
    "MessageDocument",
    "Party",
    "SignatureFormat",
    "document_json_schema",
    "validate_document",
]
