"""The OpenAPI 3.1 document of the agent's HTTP API, served at `/openapi.json`.

Message documents are described per type by `GET /v1/schema/{message_type}`
(JSON Schema generated from the content models); the enumeration of types
here comes from the same models, so the two cannot disagree.
"""

from __future__ import annotations

from typing import Any, Final

from protocol.mla import CaseState, DeadlineKind, MessageType, Role
from runtime.openapi import BEARER_SCHEME, json_response, problem_response, shared_schemas

_AUTH_ERRORS: Final = {"401": problem_response("Missing or invalid bearer token (`UNAUTHORIZED`)")}
_MESSAGE_ID: Final = {
    "name": "message_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "format": "uuid"},
}


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
    **_AUTH_ERRORS,
    "404": problem_response("No such message or case held here"),
    "409": problem_response("Proofs pending (`PROOFS_PENDING`): ask again shortly"),
    "503": problem_response("The gateway's audit API is not configured or not reachable"),
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
                "required": ["type", "at", "signed_by", "statement"],
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
                    "reason": {"type": ["object", "null"]},
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
                        "type": "string",
                        "description": "SHA-256 of the document bytes as sealed (RFC 8785 form of `document`)",
                    },
                    "document": {"$ref": "#/components/schemas/MessageDocument"},
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
        },
    },
    "paths": {
        "/v1/attachments": {
            "post": {
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
                "requestBody": {
                    "required": True,
                    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
                },
                "responses": {
                    "201": json_response("The body is whole and encrypted", {"$ref": "#/components/schemas/Uploaded"}),
                    "200": json_response(
                        "Part of the body arrived (fewer bytes than `Upload-Length`); send the rest",
                        {
                            "type": "object",
                            "properties": {"upload_id": {"type": "string"}, "offset": {"type": "integer"}},
                        },
                    ),
                    **_AUTH_ERRORS,
                    "409": problem_response("`Upload-Offset` is not what is held (`UPLOAD_OFFSET_MISMATCH`)"),
                    "413": problem_response("Over the largest body accepted (`TOO_LARGE`)"),
                    "415": problem_response("Not `application/octet-stream`"),
                },
            }
        },
        "/v1/attachments/uploads/{upload_id}": {
            "head": {
                "summary": "How much of an upload arrived",
                "parameters": [{"name": "upload_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {
                    "200": {
                        "description": "`Upload-Offset`: bytes held; `Upload-Complete: ?1` once whole",
                        "headers": {"Upload-Offset": {"schema": {"type": "integer"}}},
                    },
                    "404": {"description": "Nothing of this upload is held"},
                },
            }
        },
        "/v1/inbox/{message_id}/attachments/{attachment_id}": {
            "get": {
                "summary": "Download a received attachment body as a stream",
                "description": (
                    "The verified plaintext (ciphertext digest checked against the sender's signed header, stream "
                    "authenticated chunk by chunk, plaintext digest checked against the signed content). `Range` "
                    "is honoured, so an interrupted download resumes. `Repr-Digest` gives its SHA-256."
                ),
                "parameters": [
                    _MESSAGE_ID,
                    {"name": "attachment_id", "in": "path", "required": True, "schema": {"type": "string"}},
                    {"name": "sender", "in": "query", "schema": {"type": "string"}},
                    {"name": "Range", "in": "header", "schema": {"type": "string"}},
                ],
                "responses": {
                    "200": {
                        "description": "The whole body",
                        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
                    },
                    "206": {"description": "The range asked for"},
                    **_AUTH_ERRORS,
                    "404": problem_response("No such message, or the attachment travelled as a description only"),
                    "409": problem_response("The body did not verify (`ATTACHMENT_MISMATCH`)"),
                    "503": problem_response(
                        "Still being fetched and verified (`ATTACHMENT_NOT_READY`); see `Retry-After`"
                    ),
                },
            }
        },
        "/v1/messages": {
            "post": {
                "summary": "Submit one message document",
                "parameters": [
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string", "maxLength": 200},
                        "description": "Same key and same document: the same answer; another document: 409",
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/MessageDocument"}}},
                },
                "responses": {
                    "202": json_response(
                        "Accepted for delivery",
                        {
                            "type": "object",
                            "properties": {
                                "message_id": {"type": "string"},
                                "status": {"$ref": "#/components/schemas/Status"},
                            },
                        },
                    ),
                    "400": problem_response("Malformed JSON, duplicate keys, invalid Unicode"),
                    **_AUTH_ERRORS,
                    "403": problem_response("Sender is not this agency, or no agreement allows the exchange"),
                    "409": problem_response(
                        "Message id or Idempotency-Key reused for another document (`MESSAGE_ID_CONFLICT`, "
                        "`IDEMPOTENCY_KEY_REUSED`), or the case's state does not allow this message type from "
                        "this side (`ILLEGAL_TRANSITION`; `detail` names the state and the type)"
                    ),
                    "413": problem_response("Document over the size limit"),
                    "415": problem_response("Not application/json"),
                    "422": problem_response("Invalid document: every field error in `errors`"),
                },
            }
        },
        "/v1/messages/{message_id}": {
            "get": {
                "summary": "Status and evidence chain of a sent message",
                "parameters": [_MESSAGE_ID],
                "responses": {
                    "200": json_response(
                        "The message's status and evidence",
                        {
                            "type": "object",
                            "properties": {
                                "message_id": {"type": "string"},
                                "status": {"$ref": "#/components/schemas/Status"},
                                "evidence": {"type": "array", "items": {"$ref": "#/components/schemas/Evidence"}},
                            },
                        },
                    ),
                    **_AUTH_ERRORS,
                    "404": problem_response("No such sent message"),
                },
            }
        },
        "/v1/inbox": {
            "get": {
                "summary": "Received, verified, decrypted messages, oldest first",
                "parameters": [
                    {"name": "after", "in": "query", "schema": {"type": "string"}, "description": "cursor"},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
                ],
                "responses": {
                    "200": json_response(
                        "A page of the inbox",
                        {
                            "type": "object",
                            "properties": {
                                "messages": {
                                    "type": "array",
                                    "items": {"$ref": "#/components/schemas/InboxMessage"},
                                },
                                "next": {"type": "string"},
                            },
                        },
                    ),
                    **_AUTH_ERRORS,
                },
            }
        },
        "/v1/inbox/{message_id}/ack": {
            "post": {
                "summary": "The agency system took the message (issues RETRIEVAL evidence)",
                "parameters": [
                    _MESSAGE_ID,
                    {"name": "sender", "in": "query", "required": False, "schema": {"type": "string"}},
                ],
                "responses": {
                    "200": json_response("Retrieved", {"type": "object"}),
                    **_AUTH_ERRORS,
                    "404": problem_response("No such received message"),
                    "409": problem_response("Several senders used this id: add ?sender="),
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
                    "409": problem_response(
                        "Proofs pending (`PROOFS_PENDING`), or several senders used this id: add ?sender="
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
                "summary": "One MLA case: its state, its messages both ways in case order, deadlines, what is overdue",
                "description": (
                    "The messages are ordered by `sequence`, then `created_at`, then `message_id` and sender, "
                    "which both agencies read from the same signed documents, so both compute the same state. "
                    "Sent messages that were refused on the way (`rejected`, `failed`, `expired` before delivery) "
                    "are not part of the case."
                ),
                "parameters": [{"name": "case_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {
                    "200": json_response("The case as this agency knows it", {"$ref": "#/components/schemas/Case"}),
                    "400": problem_response("Not a case id (`INVALID_IDENTIFIER`)"),
                    **_AUTH_ERRORS,
                    "404": problem_response("No message of this case is held here"),
                },
            }
        },
        "/v1/schema/{message_type}": {
            "get": {
                "summary": "The JSON Schema of one message type",
                "parameters": [
                    {
                        "name": "message_type",
                        "in": "path",
                        "required": True,
                        "schema": {"$ref": "#/components/schemas/MessageType"},
                    }
                ],
                "responses": {"200": json_response("JSON Schema 2020-12", {"type": "object"}), **_AUTH_ERRORS},
            }
        },
        "/healthz": {
            "get": {
                "summary": "Liveness and readiness",
                "security": [],
                "responses": {"200": {"description": "ready"}, "503": {"description": "not connected to the broker"}},
            }
        },
        "/openapi.json": {
            "get": {"summary": "This document", "security": [], "responses": {"200": {"description": "OpenAPI 3.1"}}}
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics (text exposition format); needs a token with the `read` scope",
                "responses": {"200": {"description": "the metrics"}, "401": problem_response("no valid token")},
            }
        },
    },
}

__all__ = ["OPENAPI"]
