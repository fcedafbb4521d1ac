"""The OpenAPI 3.1 document of the agent's HTTP API, served at `/openapi.json`.

Message documents are described per type by `GET /v1/schema/{message_type}`
(JSON Schema generated from the content models); the enumeration of types
here comes from the same models, so the two cannot disagree.

Every operation has an `operationId` (the names `deploy.client.agent_api`
calls) and every answer, error or not, its schema. Each refusal lists the
stable codes it can carry in `x-error-codes`: `AGENT_ERROR_CODES` is their
union, which docs/GUIDE.md's error table is tested against.
"""

from __future__ import annotations

from typing import Any, Final

from agents.webhooks import EventType
from protocol.errors import ErrorCode
from protocol.mla import CaseState, DeadlineKind, MessageType, Role
from runtime.openapi import BEARER_SCHEME, error_codes, json_response, refusal, shared_schemas

_E = ErrorCode


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


_AUTHENTICATED: Final[dict[str, Any]] = {
    "401": refusal("Missing or invalid bearer token", _E.UNAUTHORIZED),
    "403": refusal("The token lacks the scope this operation needs", _E.FORBIDDEN),
    "429": refusal("This client is over its rate limit: wait `Retry-After` seconds", _E.RATE_LIMITED),
    "503": refusal(
        "Something the agent depends on is away for a moment, or its directory expired: retry after "
        "`Retry-After` seconds",
        _E.SERVICE_UNAVAILABLE,
        _E.DIRECTORY_EXPIRED,
    ),
}
"""The refusals every operation behind a token can answer."""

_BAD_ID: Final = refusal("Not a message id, case id or agency id", _E.INVALID_IDENTIFIER, _E.INVALID_PARAMETER)

_MESSAGE_ID: Final = {
    "name": "message_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "format": "uuid"},
}
_SENDER: Final = {
    "name": "sender",
    "in": "query",
    "required": False,
    "description": "The sending agency, when several senders used the same message id",
    "schema": {"type": "string"},
}
_NULLABLE_STRING: Final = {"type": ["string", "null"]}
_NULLABLE_TIME: Final = {"type": ["string", "null"], "format": "date-time"}
_BINARY: Final = {"type": "string", "format": "binary"}


_SUBSCRIPTION_ID: Final = {
    "name": "subscription_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^sub_[0-9a-f]{32}$"},
}
_EVENT_HEADERS: Final = {
    "webhook-id": {"schema": {"type": "string"}, "description": "the event's id, the same on every attempt: dedupe"},
    "webhook-timestamp": {"schema": {"type": "integer"}, "description": "Unix seconds of this attempt"},
    "webhook-signature": {
        "schema": {"type": "string"},
        "description": "`v1,` + base64(HMAC-SHA256(base64-decoded secret after `whsec_`, "
        '"{webhook-id}.{webhook-timestamp}.{body}"))',
    },
}


def _event(event_type: str, summary: str, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "post": {
            "operationId": "on" + "".join(part.capitalize() for part in event_type.replace(".", "_").split("_")),
            "summary": summary,
            "parameters": [
                {"name": name, "in": "header", "required": True, **spec} for name, spec in _EVENT_HEADERS.items()
            ],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["type", "timestamp", "data"],
                            "properties": {
                                "type": {"const": event_type},
                                "timestamp": {"type": "string", "format": "date-time"},
                                "data": {"type": "object", "properties": data},
                            },
                        }
                    }
                },
            },
            "responses": {"2XX": {"description": "Received; any other answer (or none) is retried later"}},
        }
    }


_STRING: Final = {"type": "string"}
_NULLABLE: Final = {"type": ["string", "null"]}
_SENT_STATUS_DATA: Final = {
    "message_id": _STRING,
    "recipient": _STRING,
    "message_type": _STRING,
    "case_id": _STRING,
    "evidence_type": {**_NULLABLE, "description": "null when the message expired unsent"},
    "evidence_identity": _NULLABLE,
    "evidence_at": _NULLABLE,
    "issuer": _NULLABLE,
    "reason_code": _NULLABLE,
    "previous_status": {"$ref": "#/components/schemas/Status"},
    "status": {"$ref": "#/components/schemas/Status"},
}
_DEADLINE_DATA: Final = {
    "case_id": _STRING,
    "kind": {"type": "string", "enum": [kind.value for kind in DeadlineKind]},
    "due": {"type": "string", "format": "date"},
    "owed_by": {"type": "string", "enum": [role.value for role in Role]},
    "owed_by_this_agency": {"type": "boolean"},
    "set_by": _NULLABLE,
    "item_id": _NULLABLE,
}


_LIST_ERRORS: Final = {
    "400": refusal(
        "A cursor this agent did not give for this list, or a filter or `limit` that does not parse",
        _E.INVALID_CURSOR,
        _E.INVALID_PARAMETER,
    )
}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


_CURSOR: Final = _query(
    "cursor", {"type": "string", "maxLength": 100}, "Opaque: the `next_cursor` of the previous page of this list"
)
_LIMIT: Final = _query("limit", {"type": "integer", "minimum": 1, "maximum": 500, "default": 100}, "Page size")
_CASE_ID_FILTER: Final = _query("case_id", {"type": "string"}, "Only messages of this case")
_TYPE_FILTER: Final = _query("message_type", {"$ref": "#/components/schemas/MessageType"}, "Only messages of this type")


def _page(key: str, item: dict[str, Any]) -> dict[str, Any]:
    """A page of a list: its items, where the walk goes on, whether the page was full, the next page's link."""
    return {
        "type": "object",
        "required": [key, "next_cursor", "has_more", "links"],
        "properties": {
            key: {"type": "array", "items": item},
            "next_cursor": {
                "type": "string",
                "description": "Where the walk goes on, also after an empty page: poll from there",
            },
            "has_more": {"type": "boolean", "description": "The page was full: ask for the next one at once"},
            "links": {
                "type": "object",
                "required": ["next"],
                "properties": {"next": {"type": "string", "description": "This list, same filters, `cursor` set"}},
            },
        },
    }


_PURGED_AT: Final[dict[str, Any]] = {
    "type": ["string", "null"],
    "format": "date-time",
    "description": "When retention purged the content (decrypted document, sealed envelope, attachment bodies); "
    "null while it is held. Metadata, digest and evidence stay.",
}
_PURGED: Final = refusal(
    "Retention purged the content of this closed case (`content_purged_at` says when)", _E.CONTENT_PURGED
)


_BUNDLE_DESCRIPTION = (
    "One file (application/zip, format `rogatory-evidence-bundle/1`, see docs/AUDIT.md): the document, the "
    "sender's signed header and content statement, every evidence statement with its inclusion proof to a "
    "checkpoint of the audit log, the checkpoints with their witnesses' cosignatures, consistency proofs to "
    "the latest, and the directory versions; its manifest signed by this agency. `rogatory evidence verify` "
    "checks it with the directory authority's key alone. 409 `PROOFS_PENDING` while something is not yet in a "
    "checkpoint two witnesses cosigned: ask again after the next checkpoint."
)
_BUNDLE_RESPONSES: dict[str, Any] = {
    "200": {
        "description": "The bundle",
        "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}},
    },
    **_AUTHENTICATED,
    "400": _BAD_ID,
    "404": refusal("No such message or case held here", _E.NOT_FOUND),
    "409": refusal(
        "Proofs pending: ask again after the next cosigned checkpoint; or a message stored before proof of origin "
        "was kept",
        _E.PROOFS_PENDING,
        _E.CONTENT_PROOF_MISSING,
    ),
    "503": refusal(
        "The gateway's audit API is not configured or not reachable, or the agent is away for a moment",
        _E.SERVICE_UNAVAILABLE,
        _E.DIRECTORY_EXPIRED,
    ),
}

OPENAPI: Final[dict[str, Any]] = {
    "openapi": "3.1.0",
    "info": {
        "title": "Rogatory agent",
        "version": "1.0.0",
        "description": (
            "The HTTP API an agency's systems use to submit MLA messages, read their inbox and follow "
            "each message's evidence chain. Errors are RFC 9457 problems with a stable `code`."
        ),
    },
    "security": [{"bearer": []}],
    "components": {
        "securitySchemes": BEARER_SCHEME,
        "schemas": {
            "MessageType": {"type": "string", "enum": [t.value for t in MessageType]},
            "EventType": {"type": "string", "enum": [t.value for t in EventType]},
            "SubscriptionRequest": {
                "type": "object",
                "required": ["url", "event_types"],
                "additionalProperties": False,
                "properties": {
                    "url": {"type": "string", "format": "uri", "maxLength": 2000},
                    "event_types": {
                        "type": "array",
                        "minItems": 1,
                        "items": {"$ref": "#/components/schemas/EventType"},
                    },
                    "description": {"type": "string", "maxLength": 200},
                },
            },
            "Subscription": {
                "type": "object",
                "required": ["subscription_id", "url", "event_types", "state", "pending_events"],
                "properties": {
                    "subscription_id": {"type": "string"},
                    "url": {"type": "string"},
                    "event_types": {"type": "array", "items": {"$ref": "#/components/schemas/EventType"}},
                    "description": {"type": ["string", "null"]},
                    "created_at": {"type": "string", "format": "date-time"},
                    "state": {"type": "string", "enum": ["active", "suspended"]},
                    "state_reason": {
                        "type": ["string", "null"],
                        "description": "`failing`, `owner_token_withdrawn` (suspended) or `resumed`",
                    },
                    "state_changed_at": {"type": ["string", "null"], "format": "date-time"},
                    "pending_events": {"type": "integer", "description": "events kept, not yet delivered"},
                    "delivered_events": {"type": "integer"},
                    "failed_attempts": {"type": "integer"},
                    "dropped_events": {
                        "type": "integer",
                        "description": "events dropped because more were owed than the agent keeps",
                    },
                    "consecutive_failures": {"type": "integer"},
                    "failing_since": {"type": ["string", "null"], "format": "date-time"},
                    "next_attempt_at": {"type": ["string", "null"], "format": "date-time"},
                    "last_error": {"type": ["string", "null"]},
                    "last_success_at": {"type": ["string", "null"], "format": "date-time"},
                },
            },
            **shared_schemas(),
            "MessageDocument": {
                "type": "object",
                "description": (
                    'One MLA message document (`"schema": "mla-exchange/1.0"`); its full JSON Schema, per '
                    "message type, is served at `/v1/schema/{message_type}`. `message_id`, `created_at`, "
                    "`sequence` (the next number in the case) and `integrity` are filled in by the agent where "
                    "absent."
                ),
                "required": ["schema", "message_type", "case_id", "sender", "recipient", "payload"],
                "properties": {"message_type": {"$ref": "#/components/schemas/MessageType"}},
            },
            "Status": {
                "type": "string",
                "enum": ["queued", "submitted", "relayed", "delivered", "retrieved", "rejected", "failed", "expired"],
            },
            "Evidence": {
                "type": "object",
                "required": [
                    "type",
                    "at",
                    "signed_by",
                    "recipient",
                    "reason",
                    "statement",
                    "received_at",
                    "inclusion_proof",
                ],
                "properties": {
                    "type": {
                        "type": "string",
                        "enum": [
                            "SUBMISSION_ACCEPTED",
                            "SUBMISSION_REJECTED",
                            "RELAY_ACCEPTED",
                            "RELAY_FAILED",
                            "DELIVERY",
                            "NON_DELIVERY",
                            "RETRIEVAL",
                            "NON_RETRIEVAL",
                        ],
                    },
                    "at": {"type": "string", "format": "date-time"},
                    "signed_by": {"type": "string"},
                    "recipient": {"type": ["string", "null"]},
                    "reason": {
                        "type": ["object", "null"],
                        "required": ["code"],
                        "properties": {"code": {"type": "string"}, "detail": {"type": ["string", "null"]}},
                        "description": "Why, for negative evidence: a stable code and a detail for people",
                    },
                    "received_at": {"type": "string", "format": "date-time"},
                    "statement": {
                        "type": "object",
                        "description": "The signed statement: payload_type, payload (base64), key_id, signature",
                    },
                    "inclusion_proof": {"type": ["object", "null"]},
                },
            },
            "CaseState": {"type": "string", "enum": [state.value for state in CaseState]},
            "Deadline": {
                "type": "object",
                "required": ["kind", "due", "owed_by", "overdue"],
                "properties": {
                    "kind": {"type": "string", "enum": [kind.value for kind in DeadlineKind]},
                    "due": {"type": "string", "format": "date"},
                    "owed_by": {"type": "string", "enum": [role.value for role in Role]},
                    "set_by": {"type": ["string", "null"], "format": "uuid"},
                    "item_id": {"type": ["string", "null"]},
                    "overdue": {"type": "boolean"},
                },
            },
            "CaseMessage": {
                "type": "object",
                "required": ["message_id", "direction", "message_type", "sender", "recipient", "applied"],
                "properties": {
                    "message_id": {"type": "string", "format": "uuid"},
                    "direction": {"type": "string", "enum": ["sent", "received"]},
                    "message_type": {"$ref": "#/components/schemas/MessageType"},
                    "sender": {"type": "string"},
                    "recipient": {"type": "string"},
                    "sequence": {"type": ["integer", "null"]},
                    "created_at": {"type": ["string", "null"], "format": "date-time"},
                    "in_reply_to": {"type": ["string", "null"]},
                    "applied": {
                        "type": "boolean",
                        "description": "False for a sent message the case no longer allows (see `not_applied`)",
                    },
                    "not_applied": {"type": "string"},
                    "status": {"$ref": "#/components/schemas/Status"},
                    "status_reason": {"type": ["string", "null"]},
                    "received_at": {"type": "string", "format": "date-time"},
                    "retrieved_at": {"type": ["string", "null"], "format": "date-time"},
                },
            },
            "SentMessage": {
                "type": "object",
                "required": ["message_id", "status", "recipient", "message_type", "case_id", "created_at"],
                "properties": {
                    "message_id": {"type": "string", "format": "uuid"},
                    "status": {"$ref": "#/components/schemas/Status"},
                    "status_reason": {"type": ["string", "null"]},
                    "recipient": {"type": "string"},
                    "message_type": {"$ref": "#/components/schemas/MessageType"},
                    "case_id": {"type": "string"},
                    "in_reply_to": {"type": ["string", "null"]},
                    "message_digest": {"type": "string"},
                    "created_at": {"type": "string", "format": "date-time"},
                    "updated_at": {"type": "string", "format": "date-time"},
                    "expires_at": {"type": "string", "format": "date-time"},
                },
            },
            "ConnectivityTest": {
                "type": "object",
                "required": ["test_id", "to", "state", "failure", "started_at", "deadline", "timings", "ping", "pong"],
                "properties": {
                    "test_id": {"type": "string", "format": "uuid"},
                    "to": {"type": "string", "description": "The agency pinged"},
                    "state": {"type": "string", "enum": ["pending", "completed", "failed", "timed_out"]},
                    "failure": {
                        "type": ["object", "null"],
                        "description": "`TIMED_OUT`, or the code the ping was refused with on the way",
                        "properties": {"code": {"type": "string"}, "detail": {"type": ["string", "null"]}},
                    },
                    "started_at": {"type": "string", "format": "date-time"},
                    "deadline": {"type": "string", "format": "date-time"},
                    "timings": {
                        "type": "object",
                        "properties": {
                            "round_trip_ms": {"type": ["integer", "null"], "description": "This agent's clock"},
                            "ping_delivered_ms": {
                                "type": ["integer", "null"],
                                "description": "Start to the peer's DELIVERY (the peer's clock)",
                            },
                            "pong_delivered_ms": {
                                "type": ["integer", "null"],
                                "description": "The pong's signed sending time (the peer's clock) to its arrival here",
                            },
                        },
                    },
                    "ping": {
                        "type": "object",
                        "required": ["message_id", "status", "evidence"],
                        "properties": {
                            "message_id": {"type": "string", "format": "uuid"},
                            "status": {"$ref": "#/components/schemas/Status"},
                            "status_reason": {"type": ["string", "null"]},
                            "message_digest": {"type": ["string", "null"]},
                            "evidence": {"type": "array", "items": {"$ref": "#/components/schemas/Evidence"}},
                        },
                    },
                    "pong": {
                        "type": ["object", "null"],
                        "properties": {
                            "message_id": {"type": "string", "format": "uuid"},
                            "message_digest": {"type": "string"},
                            "sent_at": {"type": "string", "format": "date-time"},
                            "received_at": {"type": "string", "format": "date-time"},
                            "evidence": {
                                "type": "array",
                                "description": "The DELIVERY and RETRIEVAL statements this agency signed for the pong",
                                "items": {"type": "object"},
                            },
                        },
                    },
                },
            },
            "CaseSummary": {
                "type": "object",
                "required": ["case_id", "state", "role", "counterpart", "next_due", "overdue"],
                "properties": {
                    "case_id": {"type": "string"},
                    "state": {"type": ["string", "null"], "enum": [*(s.value for s in CaseState), None]},
                    "role": {"type": ["string", "null"], "enum": [*(r.value for r in Role), None]},
                    "counterpart": {"type": "string", "description": "The other agency of the case"},
                    "next_due": {
                        "type": ["string", "null"],
                        "format": "date",
                        "description": "The earliest open deadline (UTC day)",
                    },
                    "overdue": {"type": "boolean"},
                    "updated_at": {"type": ["string", "null"], "format": "date-time"},
                },
            },
            "Case": {
                "type": "object",
                "required": ["case_id", "state", "role", "items", "messages", "deadlines", "overdue"],
                "properties": {
                    "case_id": {"type": "string"},
                    "state": {
                        "oneOf": [{"$ref": "#/components/schemas/CaseState"}, {"type": "null"}],
                        "description": "null only while no request of the case is in force",
                    },
                    "role": {"type": ["string", "null"], "enum": [*(role.value for role in Role), None]},
                    "requesting": {"type": ["string", "null"]},
                    "requested": {"type": ["string", "null"]},
                    "items": {
                        "type": "object",
                        "additionalProperties": {"type": "string"},
                        "description": "Status of each assistance item by item_id",
                    },
                    "may_send": {
                        "type": "array",
                        "items": {"$ref": "#/components/schemas/MessageType"},
                        "description": "The message types this agency may send in the current state",
                    },
                    "messages": {"type": "array", "items": {"$ref": "#/components/schemas/CaseMessage"}},
                    "deadlines": {"type": "array", "items": {"$ref": "#/components/schemas/Deadline"}},
                    "overdue": {"type": "array", "items": {"$ref": "#/components/schemas/Deadline"}},
                    "as_of": {"type": "string", "format": "date-time"},
                },
            },
            "InboxMessage": {
                "type": "object",
                "required": ["message_id", "sender", "message_type", "case_id", "received_at", "document"],
                "properties": {
                    "message_id": {"type": "string", "format": "uuid"},
                    "sender": {"type": "string"},
                    "message_type": {"$ref": "#/components/schemas/MessageType"},
                    "case_id": {"type": "string"},
                    "in_reply_to": {"type": ["string", "null"]},
                    "received_at": {"type": "string", "format": "date-time"},
                    "retrieved_at": {"type": ["string", "null"], "format": "date-time"},
                    "message_digest": {"type": "string"},
                    "document_sha256": {
                        "type": ["string", "null"],
                        "description": "SHA-256 of the document bytes as sealed (RFC 8785 form of `document`); "
                        "null once purged",
                    },
                    "document": {
                        "oneOf": [{"$ref": "#/components/schemas/MessageDocument"}, {"type": "null"}],
                        "description": "null once retention purged the content (`content_purged_at`)",
                    },
                    "content_purged_at": _PURGED_AT,
                    "attachments": {
                        "type": "array",
                        "description": "Each `attachments` entry of the document and the state of its body",
                        "items": {"$ref": "#/components/schemas/AttachmentState"},
                    },
                },
            },
            "AttachmentState": {
                "type": "object",
                "required": ["attachment_id", "sha256", "state"],
                "properties": {
                    "attachment_id": {"type": "string"},
                    "sha256": {"type": "string", "description": "SHA-256 of the file, as the document lists it"},
                    "size_bytes": {"type": ["integer", "null"]},
                    "state": {
                        "type": "string",
                        "enum": ["description_only", "pending", "available", "failed", "orphaned"],
                        "description": (
                            "`description_only`: no body travelled (an original sent by another channel); "
                            "`pending`: being downloaded from the gateway and verified; `available`: verified, "
                            "download it; `failed`: the body did not verify (see `detail`)"
                        ),
                    },
                    "detail": {"type": "string"},
                },
            },
            "Uploaded": {
                "type": "object",
                "required": ["sha256", "size_bytes"],
                "properties": {
                    "sha256": {"type": "string", "description": "SHA-256 (hex) of the file: list it in `attachments`"},
                    "size_bytes": {"type": "integer"},
                    "upload_id": {"type": "string"},
                },
            },
            "UploadProgress": {
                "type": "object",
                "required": ["upload_id", "offset", "complete"],
                "properties": {
                    "upload_id": {"type": "string"},
                    "offset": {"type": "integer", "description": "Bytes held: send the rest from here"},
                    "complete": {"type": "boolean", "const": False},
                },
            },
            "Accepted": {
                "type": "object",
                "required": ["message_id", "status"],
                "properties": {
                    "message_id": {"type": "string", "format": "uuid"},
                    "status": _ref("Status"),
                },
            },
            "MessageStatus": {
                "type": "object",
                "required": [
                    "message_id",
                    "status",
                    "status_reason",
                    "recipient",
                    "message_type",
                    "case_id",
                    "message_digest",
                    "sealed_bytes",
                    "created_at",
                    "expires_at",
                    "evidence",
                ],
                "properties": {
                    "message_id": {"type": "string", "format": "uuid"},
                    "status": _ref("Status"),
                    "status_reason": {
                        **_NULLABLE_STRING,
                        "description": "Why a message ended `rejected`, `failed` or `expired` (a stable code first)",
                    },
                    "recipient": {"type": "string"},
                    "message_type": _ref("MessageType"),
                    "case_id": {"type": "string"},
                    "message_digest": {"type": "string", "description": "SHA-256 of the sealed message (hex)"},
                    "sealed_bytes": {"type": "integer", "minimum": 0},
                    "created_at": {"type": "string", "format": "date-time"},
                    "expires_at": {
                        "type": "string",
                        "format": "date-time",
                        "description": "Not delivered by then, the message ends `expired`",
                    },
                    "evidence": {
                        "type": "array",
                        "items": _ref("Evidence"),
                        "description": "Signed evidence of each step, in the order of the message's life",
                    },
                    "content_purged_at": _PURGED_AT,
                },
            },
            "InboxPage": {
                "type": "object",
                "required": ["messages", "next_cursor", "has_more", "links", "next"],
                "properties": {
                    **_page("messages", _ref("InboxMessage"))["properties"],
                    "next": {"type": "string", "description": "Pass it as `after` on the next call (older clients)"},
                },
            },
            "Retrieved": {
                "type": "object",
                "required": ["message_id", "sender", "retrieved_at"],
                "properties": {
                    "message_id": {"type": "string", "format": "uuid"},
                    "sender": {"type": "string"},
                    "retrieved_at": {"type": "string", "format": "date-time"},
                },
            },
            "Health": {
                "type": "object",
                "required": ["status"],
                "properties": {
                    "status": {"type": "string", "enum": ["ok", "degraded"]},
                    "service": {"type": "string", "const": "agent"},
                    "agency": {"type": "string"},
                    "inbox_connected": {"type": "boolean"},
                    "alarms": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
    "paths": {
        "/v1/attachments": {
            "post": {
                "operationId": "uploadAttachment",
                "summary": "Upload one attachment body as a stream (resumable)",
                "description": (
                    "The request body is the file's bytes, streamed (never base64 in JSON). A message document "
                    "listing an attachment with this `sha256` then carries the body, encrypted under its own key; "
                    "one listed without an uploaded body travels as a description only. To resume after an "
                    "interruption, name the upload with `Upload-Id`, give the file's `Upload-Length`, ask "
                    "`HEAD /v1/attachments/uploads/{upload_id}` how much arrived, and send the rest with "
                    "`Upload-Offset`."
                ),
                "parameters": [
                    {
                        "name": "Upload-Id",
                        "in": "header",
                        "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
                    },
                    {"name": "Upload-Offset", "in": "header", "schema": {"type": "integer", "minimum": 0}},
                    {"name": "Upload-Length", "in": "header", "schema": {"type": "integer", "minimum": 0}},
                ],
                "requestBody": {"required": True, "content": {"application/octet-stream": {"schema": _BINARY}}},
                "responses": {
                    "201": json_response("The body is whole and encrypted", _ref("Uploaded")),
                    "200": json_response(
                        "Part of the body arrived (fewer bytes than `Upload-Length`); send the rest",
                        _ref("UploadProgress"),
                    ),
                    "400": refusal("An `Upload-*` header that is not what it should be", _E.INVALID_PARAMETER),
                    **_AUTHENTICATED,
                    "409": refusal(
                        "`Upload-Offset` is not what is held, or the same upload is in progress",
                        _E.UPLOAD_OFFSET_MISMATCH,
                    ),
                    "413": refusal("Over the largest body accepted", _E.TOO_LARGE),
                    "415": refusal("Not `application/octet-stream`", _E.UNSUPPORTED_MEDIA_TYPE),
                    "422": refusal("The body is longer than `Upload-Length` announced", _E.CONTENT_INVALID),
                },
            }
        },
        "/v1/attachments/uploads/{upload_id}": {
            "head": {
                "operationId": "getUploadOffset",
                "summary": "How much of an upload arrived",
                "parameters": [{"name": "upload_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {
                    "200": {
                        "description": "`Upload-Offset`: bytes held; `Upload-Complete: ?1` once whole",
                        "headers": {
                            "Upload-Offset": {"schema": {"type": "integer"}},
                            "Upload-Complete": {"schema": {"type": "string", "enum": ["?0", "?1"]}},
                        },
                    },
                    "404": {"description": "Nothing of this upload is held (a HEAD answer has no body)"},
                    **_AUTHENTICATED,
                },
            }
        },
        "/v1/inbox/{message_id}/attachments/{attachment_id}": {
            "get": {
                "operationId": "downloadAttachment",
                "summary": "Download a received attachment body as a stream",
                "description": (
                    "The verified plaintext (ciphertext digest checked against the sender's signed header, stream "
                    "authenticated chunk by chunk, plaintext digest checked against the signed content). `Range` "
                    "is honoured, so an interrupted download resumes. `Repr-Digest` gives its SHA-256."
                ),
                "parameters": [
                    _MESSAGE_ID,
                    {"name": "attachment_id", "in": "path", "required": True, "schema": {"type": "string"}},
                    _SENDER,
                    {"name": "Range", "in": "header", "schema": {"type": "string"}},
                ],
                "responses": {
                    "200": {
                        "description": "The whole body",
                        "content": {"application/octet-stream": {"schema": _BINARY}},
                    },
                    "206": {
                        "description": "The range asked for",
                        "content": {"application/octet-stream": {"schema": _BINARY}},
                    },
                    **_AUTHENTICATED,
                    "404": refusal("No such message, or the attachment travelled as a description only", _E.NOT_FOUND),
                    "409": refusal(
                        "The body did not verify, or several senders used this message id (add `?sender=`)",
                        _E.ATTACHMENT_MISMATCH,
                        _E.AMBIGUOUS_MESSAGE_ID,
                    ),
                    "410": _PURGED,
                    "416": refusal("`Range` outside the body", _E.INVALID_PARAMETER),
                    "503": refusal(
                        "Still being fetched and verified, or the agent is away for a moment: retry after "
                        "`Retry-After` seconds",
                        _E.ATTACHMENT_NOT_READY,
                        _E.SERVICE_UNAVAILABLE,
                        _E.DIRECTORY_EXPIRED,
                    ),
                },
            }
        },
        "/v1/messages": {
            "get": {
                "operationId": "listSentMessages",
                "summary": "The messages this agency sent, in the order it submitted them, filtered",
                "description": (
                    "For reconciling after a restart: what was sent and where each message stands. Keyset paging "
                    "on a sequence that only grows: walking the pages while messages are submitted skips none and "
                    "repeats none. Messages above the token's clearance are left out."
                ),
                "parameters": [
                    _query(
                        "status",
                        {"type": "string"},
                        "Only these statuses (comma-separated, or the parameter repeated): "
                        "queued, submitted, relayed, delivered, retrieved, rejected, failed, expired",
                    ),
                    _CASE_ID_FILTER,
                    _TYPE_FILTER,
                    _query("created_from", {"type": "string", "format": "date-time"}, "Created at or after"),
                    _query("created_before", {"type": "string", "format": "date-time"}, "Created before"),
                    _CURSOR,
                    _LIMIT,
                ],
                "responses": {
                    "200": json_response(
                        "A page of sent messages", _page("messages", {"$ref": "#/components/schemas/SentMessage"})
                    ),
                    **_LIST_ERRORS,
                    **_AUTHENTICATED,
                },
            },
            "post": {
                "operationId": "submitMessage",
                "summary": "Submit one message document",
                "parameters": [
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": "^[ -~]+$"},
                        "description": (
                            "Your own key for this one message (never for the case: each message of a case needs "
                            "its own). Same key and same document: the same answer; another document: 409"
                        ),
                    }
                ],
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("MessageDocument")}}},
                "responses": {
                    "202": json_response("Accepted for delivery", _ref("Accepted")),
                    "400": refusal(
                        "The bytes are not strict JSON in UTF-8, a number is out of range, or the "
                        "`Idempotency-Key` is not 1 to 200 printable ASCII characters",
                        _E.MALFORMED_JSON,
                        _E.DUPLICATE_KEY,
                        _E.INVALID_UNICODE,
                        _E.NUMBER_OUT_OF_RANGE,
                        _E.NESTING_TOO_DEEP,
                        _E.TOO_MANY_ITEMS,
                        _E.INVALID_PARAMETER,
                        _E.INVALID_IDENTIFIER,
                    ),
                    **_AUTHENTICATED,
                    "403": refusal(
                        "The token lacks the `submit` scope, the sender is not this agency, or no agreement allows "
                        "the exchange",
                        _E.FORBIDDEN,
                        _E.SENDER_NOT_OWN_AGENCY,
                        _E.POLICY_DENIED,
                    ),
                    "409": refusal(
                        "Message id or Idempotency-Key reused for another document, the case's state does not "
                        "allow this message type from this side (`detail` names the state and the type), or the "
                        "case was closed and its content purged",
                        _E.MESSAGE_ID_CONFLICT,
                        _E.IDEMPOTENCY_KEY_REUSED,
                        _E.ILLEGAL_TRANSITION,
                        _E.CONTENT_PURGED,
                    ),
                    "413": refusal("Document over the size limit", _E.TOO_LARGE),
                    "415": refusal("Not application/json", _E.UNSUPPORTED_MEDIA_TYPE),
                    "422": refusal(
                        "Invalid document (every field error in `errors`), an unknown recipient, no usable key, or a "
                        "document signature (`integrity.signature`) that is not this agency's JWS over the document",
                        _E.CONTENT_INVALID,
                        _E.DOCUMENT_SIGNATURE_INVALID,
                        _E.DOCUMENT_SIGNATURE_UNSUPPORTED,
                        _E.PAYLOAD_DIGEST_MISMATCH,
                        _E.UNSUPPORTED_VERSION,
                        _E.UNKNOWN_AGENCY,
                        _E.UNKNOWN_KEY,
                        _E.KEY_NOT_VALID,
                        _E.KEY_REVOKED,
                    ),
                },
            },
        },
        "/v1/messages/{message_id}": {
            "get": {
                "operationId": "getMessageStatus",
                "summary": "Status and evidence chain of a sent message",
                "parameters": [_MESSAGE_ID],
                "responses": {
                    "200": json_response("The message's status and evidence", _ref("MessageStatus")),
                    "400": _BAD_ID,
                    **_AUTHENTICATED,
                    "404": refusal("No such sent message", _E.NOT_FOUND),
                },
            }
        },
        "/v1/inbox": {
            "get": {
                "operationId": "listInbox",
                "summary": "Received, verified, decrypted messages, oldest first",
                "parameters": [
                    _query(
                        "after",
                        {"type": "string"},
                        "The `next` of the previous page (kept for older clients; or use `cursor`, not both)",
                    ),
                    _CURSOR,
                    _query("unacknowledged", {"type": "boolean"}, "Only messages not yet acknowledged (`ack`)"),
                    _TYPE_FILTER,
                    _CASE_ID_FILTER,
                    _LIMIT,
                ],
                "responses": {
                    "200": json_response("A page of the inbox", _ref("InboxPage")),
                    "400": refusal(
                        "A cursor this agent did not give for this list, or a filter, `after` or `limit` that does "
                        "not parse",
                        _E.INVALID_CURSOR,
                        _E.INVALID_PARAMETER,
                    ),
                    **_AUTHENTICATED,
                },
            }
        },
        "/v1/inbox/{message_id}/ack": {
            "post": {
                "operationId": "acknowledgeMessage",
                "summary": "The agency system took the message (issues RETRIEVAL evidence)",
                "parameters": [_MESSAGE_ID, _SENDER],
                "responses": {
                    "200": json_response("Retrieved (again: the first time's answer)", _ref("Retrieved")),
                    "400": _BAD_ID,
                    **_AUTHENTICATED,
                    "404": refusal("No such received message", _E.NOT_FOUND),
                    "409": refusal("Several senders used this id: add `?sender=`", _E.AMBIGUOUS_MESSAGE_ID),
                    "410": _PURGED,
                },
            }
        },
        "/v1/cases": {
            "get": {
                "operationId": "listCases",
                "summary": "The cases this agency holds messages of, in the order it first held one, filtered",
                "description": (
                    "State, role and deadlines are those of `GET /v1/cases/{case_id}`, folded afresh for every "
                    "case that changed. A case holding a message above the token's clearance is left out whole."
                ),
                "parameters": [
                    _query(
                        "state",
                        {"type": "string"},
                        "Only these states (comma-separated, or repeated): " + ", ".join(s.value for s in CaseState),
                    ),
                    _query("counterpart", {"type": "string"}, "Only cases with this agency"),
                    _query("due_by", {"type": "string", "format": "date"}, "An open deadline due on or before"),
                    _query("overdue", {"type": "boolean"}, "Only cases with an open deadline past (UTC day)"),
                    _CURSOR,
                    _LIMIT,
                ],
                "responses": {
                    "200": json_response(
                        "A page of cases", _page("cases", {"$ref": "#/components/schemas/CaseSummary"})
                    ),
                    **_LIST_ERRORS,
                    **_AUTHENTICATED,
                },
            }
        },
        "/v1/connectivity-tests": {
            "post": {
                "operationId": "startConnectivityTest",
                "summary": "Ping another agency through the whole path; its agent answers a pong the same way",
                "description": (
                    "Outside any case: neither the ping nor the pong enters a case, the inbox or the sent list. "
                    "Allowed between agencies an agreement in force links (either direction). Needs `submit`."
                ),
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["to"],
                                "additionalProperties": False,
                                "properties": {
                                    "to": {"type": "string", "description": "The agency id to ping"},
                                    "timeout_s": {"type": "integer", "minimum": 5, "maximum": 3600, "default": 120},
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "201": json_response("Ping queued", {"$ref": "#/components/schemas/ConnectivityTest"}),
                    "400": refusal("Not strict JSON", _E.MALFORMED_JSON, _E.DUPLICATE_KEY),
                    **_AUTHENTICATED,
                    "403": refusal(
                        "No agreement links the two agencies, or the token lacks the `submit` scope",
                        _E.POLICY_DENIED,
                        _E.FORBIDDEN,
                    ),
                    "415": refusal("Not application/json", _E.UNSUPPORTED_MEDIA_TYPE),
                    "422": refusal(
                        "Unknown agency; own agency, bad `to` or `timeout_s`", _E.UNKNOWN_AGENCY, _E.CONTENT_INVALID
                    ),
                },
            }
        },
        "/v1/connectivity-tests/{test_id}": {
            "get": {
                "operationId": "getConnectivityTest",
                "summary": "A connectivity test: state, round-trip timings, the evidence of both legs",
                "parameters": [
                    {"name": "test_id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}
                ],
                "responses": {
                    "200": json_response("The test", {"$ref": "#/components/schemas/ConnectivityTest"}),
                    "400": refusal("Not a test id", _E.INVALID_IDENTIFIER),
                    **_AUTHENTICATED,
                    "404": refusal("No such test started here", _E.NOT_FOUND),
                },
            }
        },
        "/v1/messages/{message_id}/evidence-bundle": {
            "get": {
                "operationId": "getSentMessageEvidenceBundle",
                "summary": "The evidence bundle of a sent message (a ZIP any third party verifies offline)",
                "description": _BUNDLE_DESCRIPTION,
                "parameters": [_MESSAGE_ID],
                "responses": _BUNDLE_RESPONSES,
            }
        },
        "/v1/inbox/{message_id}/evidence-bundle": {
            "get": {
                "operationId": "getReceivedMessageEvidenceBundle",
                "summary": "The evidence bundle of a received message (a ZIP any third party verifies offline)",
                "description": _BUNDLE_DESCRIPTION,
                "parameters": [
                    _MESSAGE_ID,
                    {"name": "sender", "in": "query", "required": False, "schema": {"type": "string"}},
                ],
                "responses": {
                    **_BUNDLE_RESPONSES,
                    "409": refusal(
                        "Proofs pending, a message stored before proof of origin was kept, or several senders used "
                        "this id: add `?sender=`",
                        _E.PROOFS_PENDING,
                        _E.CONTENT_PROOF_MISSING,
                        _E.AMBIGUOUS_MESSAGE_ID,
                    ),
                },
            }
        },
        "/v1/cases/{case_id}/evidence-bundle": {
            "get": {
                "operationId": "getCaseEvidenceBundle",
                "summary": "The evidence bundle of a case: every message of it, both ways, in one ZIP",
                "description": _BUNDLE_DESCRIPTION,
                "parameters": [{"name": "case_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": _BUNDLE_RESPONSES,
            }
        },
        "/v1/cases/{case_id}": {
            "get": {
                "operationId": "getCase",
                "summary": "One MLA case: its state, its messages both ways in case order, deadlines, what is overdue",
                "description": (
                    "The messages are ordered by `sequence`, then `created_at`, then `message_id` and sender, "
                    "which both agencies read from the same signed documents, so both compute the same state. "
                    "Sent messages that were refused on the way (`rejected`, `failed`, `expired` before delivery) "
                    "are not part of the case."
                ),
                "parameters": [{"name": "case_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {
                    "200": json_response("The case as this agency knows it", _ref("Case")),
                    "400": refusal("Not a case id", _E.INVALID_IDENTIFIER),
                    **_AUTHENTICATED,
                    "404": refusal("No message of this case is held here", _E.NOT_FOUND),
                    "410": _PURGED,
                },
            }
        },
        "/v1/subscriptions": {
            "post": {
                "operationId": "createSubscription",
                "summary": "Subscribe a URL to webhook events (Standard Webhooks); the signing secret is shown once",
                "description": (
                    "Needs a token with the `webhooks` and `read` scopes; the subscription belongs to that token "
                    "and receives only events about what it could read through this API (its clearance). The "
                    "URL is `https://` (or `http://` on loopback, or where the operator allows), without "
                    "credentials, resolving only to public addresses or networks the operator allows."
                ),
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SubscriptionRequest"}}},
                },
                "responses": {
                    "201": json_response(
                        "Subscribed; `secret` (`whsec_...`) is never shown again",
                        {
                            "allOf": [
                                {"$ref": "#/components/schemas/Subscription"},
                                {
                                    "type": "object",
                                    "required": ["secret"],
                                    "properties": {"secret": {"type": "string", "pattern": "^whsec_"}},
                                },
                            ]
                        },
                    ),
                    "400": refusal(
                        "A URL the agent may not call, an unknown event type, or a request that does not parse",
                        _E.WEBHOOK_URL_REFUSED,
                        _E.INVALID_PARAMETER,
                        _E.MALFORMED_JSON,
                        _E.DUPLICATE_KEY,
                    ),
                    **_AUTHENTICATED,
                    "403": refusal("The token lacks the `webhooks` or `read` scope", _E.FORBIDDEN),
                    "409": refusal("The agent holds its most subscriptions", _E.TOO_MANY_SUBSCRIPTIONS),
                    "415": refusal("Not application/json", _E.UNSUPPORTED_MEDIA_TYPE),
                },
            },
            "get": {
                "operationId": "listSubscriptions",
                "summary": "This token's subscriptions and their delivery state (suspended ones included)",
                "responses": {
                    "200": json_response(
                        "The subscriptions",
                        {
                            "type": "object",
                            "properties": {
                                "subscriptions": {
                                    "type": "array",
                                    "items": {"$ref": "#/components/schemas/Subscription"},
                                }
                            },
                        },
                    ),
                    **_AUTHENTICATED,
                    "403": refusal("The token lacks the `webhooks` scope", _E.FORBIDDEN),
                },
            },
        },
        "/v1/subscriptions/{subscription_id}": {
            "get": {
                "operationId": "getSubscription",
                "summary": "One subscription of this token",
                "parameters": [_SUBSCRIPTION_ID],
                "responses": {
                    "200": json_response("The subscription", {"$ref": "#/components/schemas/Subscription"}),
                    **_AUTHENTICATED,
                    "404": refusal("No such subscription of this token", _E.NOT_FOUND),
                },
            },
            "delete": {
                "operationId": "deleteSubscription",
                "summary": "Unsubscribe: the subscription and the events still owed to it are forgotten",
                "parameters": [_SUBSCRIPTION_ID],
                "responses": {
                    "204": {"description": "Deleted"},
                    **_AUTHENTICATED,
                    "404": refusal("No such subscription of this token", _E.NOT_FOUND),
                },
            },
        },
        "/v1/subscriptions/{subscription_id}/resume": {
            "post": {
                "operationId": "resumeSubscription",
                "summary": "Make a suspended subscription active again: its kept events are delivered, in order",
                "parameters": [_SUBSCRIPTION_ID],
                "responses": {
                    "200": json_response("Active again", {"$ref": "#/components/schemas/Subscription"}),
                    **_AUTHENTICATED,
                    "404": refusal("No such subscription of this token", _E.NOT_FOUND),
                },
            }
        },
        "/v1/schema/{message_type}": {
            "get": {
                "operationId": "getMessageSchema",
                "summary": "The JSON Schema of one message type",
                "parameters": [{"name": "message_type", "in": "path", "required": True, "schema": _ref("MessageType")}],
                "responses": {
                    "200": json_response("JSON Schema 2020-12", {"type": "object"}),
                    **_AUTHENTICATED,
                    "404": refusal("No such message type", _E.NOT_FOUND),
                },
            }
        },
        "/healthz": {
            "get": {
                "operationId": "getHealth",
                "summary": "Liveness and readiness",
                "security": [],
                "responses": {
                    "200": json_response("Ready", _ref("Health")),
                    "503": json_response(
                        "Degraded: not connected to the broker, or the directory expired", _ref("Health")
                    ),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "getOpenApiDocument",
                "summary": "This document",
                "security": [],
                "responses": {
                    "200": json_response("OpenAPI 3.1", {"type": "object", "required": ["openapi", "paths"]})
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "getMetrics",
                "summary": "Prometheus metrics (text exposition format); needs a token with the `read` scope",
                "responses": {
                    "200": {"description": "The metrics", "content": {"text/plain": {"schema": {"type": "string"}}}},
                    **_AUTHENTICATED,
                },
            }
        },
    },
    "webhooks": {
        EventType.MESSAGE_RECEIVED.value: _event(
            EventType.MESSAGE_RECEIVED.value,
            "A message for this agency was verified, stored and signed for: read it with GET /v1/inbox",
            {
                "message_id": _STRING,
                "sender": _STRING,
                "recipient": _STRING,
                "message_type": _STRING,
                "case_id": _STRING,
                "in_reply_to": _NULLABLE,
                "message_digest": _STRING,
                "received_at": {"type": "string", "format": "date-time"},
                "inbox_seq": {"type": "integer", "description": "GET /v1/inbox?after=inbox_seq-1&limit=1 reads it"},
            },
        ),
        EventType.MESSAGE_STATUS_CHANGED.value: _event(
            EventType.MESSAGE_STATUS_CHANGED.value,
            "New evidence about a message this agency sent (or its expiry unsent): GET /v1/messages/{message_id}",
            _SENT_STATUS_DATA,
        ),
        EventType.CASE_DEADLINE_DUE.value: _event(
            EventType.CASE_DEADLINE_DUE.value, "A deadline of a case falls today (UTC), announced once", _DEADLINE_DATA
        ),
        EventType.CASE_DEADLINE_OVERDUE.value: _event(
            EventType.CASE_DEADLINE_OVERDUE.value, "A deadline of a case has passed, announced once", _DEADLINE_DATA
        ),
    },
}


AGENT_ERROR_CODES: Final = error_codes(OPENAPI)
"""Every stable code an answer of the agent API can carry."""

__all__ = ["AGENT_ERROR_CODES", "OPENAPI"]
