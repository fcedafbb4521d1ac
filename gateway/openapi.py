"""The OpenAPI 3.1 document of the gateway's HTTP API, served at `/openapi.json`.

Every operation has an `operationId`, and every answer its schema: JSON
objects, the console's static files, the Prometheus text, blob bytes, and
RFC 9457 problems for every refusal.
"""

from __future__ import annotations

from typing import Any, Final

from runtime.openapi import BEARER_SCHEME, shared_schemas

_PROBLEM: Final[dict[str, Any]] = {
    "description": "An RFC 9457 problem with a stable machine `code`",
    "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
}


_OBJECT: Final[dict[str, Any]] = {"type": "object"}
_BYTES: Final[dict[str, Any]] = {"type": "string", "format": "binary"}
_SHA256: Final[dict[str, Any]] = {
    "type": "string",
    "pattern": "^[0-9a-f]{64}$",
    "description": "hex SHA-256 of a ciphertext",
}


def _json(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema or _OBJECT}}}


def _get(
    operation_id: str,
    summary: str,
    parameters: list[dict[str, Any]] | None = None,
    roles: str = "",
    answer: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "get": {
            "operationId": operation_id,
            "summary": summary,
            "description": f"Roles: {roles}." if roles else "No authentication.",
            "parameters": parameters or [],
            "security": [{"bearer": []}] if roles else [],
            "responses": {
                "200": answer or _json("OK"),
                "400": _PROBLEM,
                "401": _PROBLEM,
                "403": _PROBLEM,
                "404": _PROBLEM,
                "503": _PROBLEM,
            },
        }
    }


def _post(operation_id: str, summary: str, roles: str) -> dict[str, Any]:
    return {
        "post": {
            "operationId": operation_id,
            "summary": summary,
            "description": f"Roles: {roles}. Logged as an `operator_action` leaf before it takes effect.",
            "parameters": [{"name": "dead_letter_id", "in": "path", "required": True, "schema": {"type": "integer"}}],
            "security": [{"bearer": []}],
            "requestBody": {
                "required": False,
                "content": {
                    "application/json": {"schema": {"type": "object", "properties": {"reason": {"type": "string"}}}}
                },
            },
            "responses": {
                "200": _json("The dead letter, in its new state"),
                "400": _PROBLEM,
                "401": _PROBLEM,
                "403": _PROBLEM,
                "404": _PROBLEM,
                "409": _PROBLEM,
                "503": _PROBLEM,
            },
        }
    }


_BLOB: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["sha256", "size_bytes"],
    "properties": {"sha256": {"type": "string"}, "size_bytes": {"type": "integer"}, "complete": {"type": "boolean"}},
}

_LOG_RECOVERY: Final[dict[str, Any]] = {
    "type": "object",
    "description": "The audit log's recovery after a lost disk (gateway.recovery).",
    "properties": {
        "recovering": {"type": "boolean", "description": "the log is held: no append, no checkpoint"},
        "reason": {"type": ["string", "null"]},
        "tree_size": {"type": "integer"},
        "witnessed_size": {"type": ["integer", "null"], "description": "the largest size a witness presented"},
        "restored_size": {"type": ["integer", "null"], "description": "the log's size when it was held at restore"},
        "held_at": {"type": ["string", "null"]},
        "witnesses_heard": {"type": "array", "items": {"type": "string"}},
        "missing_leaves": {"type": "integer"},
        "root_mismatch": {"type": "boolean", "description": "the last full set of candidates did not rebuild the root"},
        "candidate_leaves": {"type": "integer"},
        "recovered": {"type": ["object", "null"]},
        "unrecorded_messages": {"type": "array", "items": {"type": "object"}},
    },
    "required": ["recovering", "tree_size"],
}


def _query(name: str, description: str, schema_type: str = "integer", required: bool = False) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": {"type": schema_type},
    }


OPENAPI: Final[dict[str, Any]] = {
    "openapi": "3.1.0",
    "info": {
        "title": "Rogatory gateway",
        "version": "1.0.0",
        "description": "Audit log, proofs and operations of the Rogatory gateway. The gateway holds no content.",
    },
    "components": {
        "securitySchemes": BEARER_SCHEME,
        "schemas": shared_schemas() | {"LogRecovery": _LOG_RECOVERY},
    },
    "paths": {
        "/healthz": _get("getHealth", "Liveness and readiness"),
        "/openapi.json": _get("getOpenApiDocument", "This document"),
        "/v1/directory": _get(
            "getDirectory",
            "The directory version in force, as its authority signed it (a signed statement; verify it against "
            "the authority's key). Header `Rogatory-Directory-Version`. Public material: no token",
        ),
        "/v1/directory/{version}": _get(
            "getDirectoryVersion",
            "A directory version the gateway held, as its authority signed it, from its audit leaf; 404 if never "
            "held. Public material: no token",
            [{"name": "version", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}}],
        ),
        "/v1/audit/checkpoint": _get(
            "getLatestCheckpoint", "The latest signed checkpoint (C2SP signed note)", roles="operator, auditor, reader"
        ),
        "/v1/audit/entries": _get(
            "listAuditEntries",
            "Audit log entries with their indexes, oldest first",
            [
                _query("start", "first leaf index"),
                _query("limit", "at most this many entries (1-1000)"),
                _query("message_id", "only entries about this message", "string"),
                _query("agency", "only entries naming this agency", "string"),
                _query("since", "only entries appended at or after this RFC 3339 time", "string"),
            ],
            roles="operator, auditor",
        ),
        "/v1/audit/proof/inclusion": _get(
            "getInclusionProof",
            "Inclusion proof of one leaf (RFC 9162 2.1.3)",
            [_query("index", "leaf index", required=True), _query("size", "tree size", required=True)],
            roles="operator, auditor, reader",
        ),
        "/v1/audit/proof/consistency": _get(
            "getConsistencyProof",
            "Consistency proof between two tree sizes (RFC 9162 2.1.4)",
            [_query("from", "older tree size", required=True), _query("to", "newer tree size", required=True)],
            roles="operator, auditor, reader",
        ),
        "/v1/ops/dead-letters": _get(
            "listDeadLetters",
            "Dead letters held by the gateway, oldest first: metadata and reason, never content",
            [
                _query("state", "held, redriving, redriven or discarded", "string"),
                _query("after", "only ids above this one"),
                _query("limit", "at most this many (1-500)"),
            ],
            roles="operator",
        ),
        "/v1/ops/dead-letters/{dead_letter_id}": _get(
            "getDeadLetter",
            "One dead letter",
            [{"name": "dead_letter_id", "in": "path", "required": True, "schema": {"type": "integer"}}],
            roles="operator",
        ),
        "/v1/ops/dead-letters/{dead_letter_id}/redrive": _post(
            "redriveDeadLetter",
            "Send a held dead letter on again (a submission through the pipeline, a delivery to its inbox)",
            roles="operator",
        ),
        "/v1/ops/dead-letters/{dead_letter_id}/discard": _post(
            "discardDeadLetter", "Drop a held dead letter for good", roles="operator"
        ),
        "/v1/audit/checkpoints": _get(
            "listCheckpoints",
            "Every checkpoint the log published, oldest first, with the witnesses' cosignatures and, where a "
            "time-stamp authority is configured, its RFC 3161 tokens over the signed note (`timestamps`); "
            "`next_after` continues a full page",
            [_query("after", "only checkpoints above this id"), _query("limit", "at most this many (1-1000)")],
            roles="operator, auditor",
        ),
        "/v1/audit/cosignatures": {
            "post": {
                "summary": "A witness (an agency's agent) cosigns a checkpoint it verified as consistent",
                "description": "Roles: operator, auditor, reader. Body: {checkpoint_id, cosignature}, "
                "the witness's C2SP cosignature line over that checkpoint.",
                "operationId": "cosignCheckpoint",
                "security": [{"bearer": []}],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["checkpoint_id", "cosignature"],
                                "properties": {"checkpoint_id": {"type": "integer"}, "cosignature": {"type": "string"}},
                            }
                        }
                    },
                },
                "responses": {
                    "200": _json("Already held: the checkpoint with its cosignatures"),
                    "201": _json("Recorded: the checkpoint with its cosignatures"),
                    "400": _PROBLEM,
                    "401": _PROBLEM,
                    "403": _PROBLEM,
                    "404": _PROBLEM,
                    "409": _PROBLEM,
                    "422": _PROBLEM,
                    "503": _PROBLEM,
                },
            }
        },
        "/v1/audit/proofs": {
            "post": {
                "summary": "Inclusion proofs of many leaves, by index or identity, against one tree size",
                "description": "Roles: operator, auditor, reader. The proof of an evidence or directory leaf also "
                "carries the leaf's bytes (`leaf`, base64): whoever can name it by identity may hold it (the "
                "evidence bundle's source for evidence about a message received).",
                "operationId": "getInclusionProofs",
                "security": [{"bearer": []}],
                "requestBody": {"required": True, "content": {"application/json": {"schema": _OBJECT}}},
                "responses": {
                    "200": _json("The proofs"),
                    "400": _PROBLEM,
                    "401": _PROBLEM,
                    "403": _PROBLEM,
                    "413": _PROBLEM,
                    "503": _PROBLEM,
                },
            }
        },
        "/v1/audit/witnessed": {
            "post": {
                "operationId": "presentWitnessedCheckpoint",
                "summary": "A witness presents its latest witnessed checkpoint; the log checks itself against it",
                "description": "Roles: operator, auditor, reader. Body: {checkpoint, cosignature}: the note as the "
                "witness holds it (signed by a log key) and the witness's fresh C2SP cosignature line over it, which "
                "names the presenting agency. A checkpoint beyond this log holds the log (no append, no checkpoint) "
                "until the lost leaves are back (SECURITY.md, Lost disk).",
                "security": [{"bearer": []}],
                "responses": {
                    "200": {
                        "description": "Where the log's recovery stands",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/LogRecovery"}}},
                    },
                    "400": _PROBLEM,
                    "401": _PROBLEM,
                    "422": _PROBLEM,
                },
            }
        },
        "/v1/audit/recovery/leaves": {
            "post": {
                "operationId": "offerRecoveryLeaves",
                "summary": "A witness gives back leaves the held log lost (evidence it received, with its index)",
                "description": "Roles: operator, auditor, reader. Body: {leaves: [{index: int | null, leaf: base64}]}, "
                "at most 100. Kept as candidates; put back only once they rebuild the witnessed, cosigned root.",
                "security": [{"bearer": []}],
                "responses": {
                    "200": {
                        "description": "Where the log's recovery stands",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/LogRecovery"}}},
                    },
                    "400": _PROBLEM,
                    "401": _PROBLEM,
                },
            }
        },
        "/v1/audit/recovery": {
            "get": {
                "operationId": "getLogRecovery",
                "summary": "Where the log's recovery after a lost disk stands, and the messages the gateway lost",
                "description": "Roles: operator, auditor. `unrecorded_messages`: messages the log names after the "
                "restored size that the gateway has no record of.",
                "security": [{"bearer": []}],
                "responses": {
                    "200": {
                        "description": "The recovery and the report",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/LogRecovery"}}},
                    },
                    "401": _PROBLEM,
                    "403": _PROBLEM,
                },
            }
        },
        "/v1/audit/verification": _get(
            "getLogVerification",
            "The gateway's own verification of its whole log (an auditor verifies offline too)",
            roles="operator, auditor",
        ),
        "/v1/blobs/{sha256}": {
            "parameters": [
                {"name": "sha256", "in": "path", "required": True, "schema": _SHA256},
            ],
            "put": {
                "summary": "Upload an attachment's ciphertext (resumable: Upload-Offset, Upload-Length)",
                "operationId": "putBlob",
                "description": "Signed by the uploading agency (`Rogatory-Signed`); content-addressed.",
                "requestBody": {"required": True, "content": {"application/octet-stream": {"schema": _BYTES}}},
                "responses": {
                    "200": _json("Already whole, or part stored (`complete: false`)", _BLOB),
                    "201": _json("Stored whole", _BLOB),
                    "400": _PROBLEM,
                    "401": _PROBLEM,
                    "403": _PROBLEM,
                    "409": _PROBLEM,
                    "413": _PROBLEM,
                    "429": _PROBLEM,
                    "503": _PROBLEM,
                },
            },
            "head": {
                "summary": "How much of a blob is stored (Upload-Offset)",
                "operationId": "getBlobOffset",
                "description": "Signed by the uploader or an agency the blob is addressed to."
                " A HEAD answer has no body.",
                "responses": {
                    "200": {"description": "Whole: `Upload-Offset` is its length, `Upload-Complete: ?1`"},
                    "400": {"description": "Not the hex SHA-256 of a ciphertext"},
                    "401": {"description": "Not signed by an agency that may see it"},
                    "429": {"description": "Too many signed requests of this agency: wait `Retry-After` seconds"},
                    "404": {"description": "Not whole: `Upload-Offset` says how much is stored"},
                },
            },
            "get": {
                "summary": "Download a blob's ciphertext (Range supported)",
                "operationId": "getBlob",
                "description": "Signed by the uploader or an agency an accepted message addressed it to.",
                "responses": {
                    "200": {
                        "description": "The ciphertext",
                        "content": {"application/octet-stream": {"schema": _BYTES}},
                    },
                    "206": {
                        "description": "A range of it",
                        "content": {"application/octet-stream": {"schema": _BYTES}},
                    },
                    "400": _PROBLEM,
                    "401": _PROBLEM,
                    "404": _PROBLEM,
                    "416": _PROBLEM,
                    "429": _PROBLEM,
                },
            },
        },
        "/v1/blobs/{sha256}/retrieved": {
            "parameters": [{"name": "sha256", "in": "path", "required": True, "schema": _SHA256}],
            "post": {
                "summary": "A recipient verified its copy: the retention period before deletion starts",
                "operationId": "markBlobRetrieved",
                "description": "Signed by an agency the blob is addressed to.",
                "responses": {
                    "200": _json(
                        "Recorded",
                        {
                            "type": "object",
                            "required": ["sha256", "retrieved"],
                            "properties": {"sha256": {"type": "string"}, "retrieved": {"type": "boolean"}},
                        },
                    ),
                    "400": _PROBLEM,
                    "401": _PROBLEM,
                    "404": _PROBLEM,
                    "429": _PROBLEM,
                },
            },
        },
        "/v1/reports/signatures": {
            "post": {
                "operationId": "signReport",
                "summary": "Sign an agency's case report (PAdES) after checking its embedded proof against the log",
                "description": "Signed by the agency that drew the report (`Rogatory-Signed`, for this path and the "
                "SHA-256 of the PDF sent). The PDF embeds `rogatory-report-proof.json`; the gateway signs only if "
                "the agency is the sender or a recipient of every message listed (`REPORT_NOT_PARTY`), each is of "
                "the report's case and each evidence statement listed is in its log with that payload "
                "(`REPORT_EVIDENCE_UNKNOWN`). Each signature is a `report_signed` audit leaf, whose index is in "
                "`Rogatory-Report-Leaf`. 503 `REPORT_SIGNING_UNAVAILABLE` without a document-signing certificate.",
                "requestBody": {
                    "required": True,
                    "content": {"application/pdf": {"schema": {"type": "string", "format": "binary"}}},
                },
                "responses": {
                    "200": {
                        "description": "The PDF with the gateway's signature appended (an incremental update)",
                        "headers": {
                            "Rogatory-Report-Leaf": {
                                "description": "The index of the `report_signed` leaf in the audit log",
                                "schema": {"type": "integer"},
                            }
                        },
                        "content": {"application/pdf": {"schema": {"type": "string", "format": "binary"}}},
                    },
                    "400": _PROBLEM,
                    "401": _PROBLEM,
                    "403": _PROBLEM,
                    "409": _PROBLEM,
                    "413": _PROBLEM,
                    "422": _PROBLEM,
                    "503": _PROBLEM,
                },
            }
        },
        "/": _get(
            "getConsole",
            "The operator and auditor console (static page; it asks for a token)",
            answer={"description": "The page", "content": {"text/html": {"schema": {"type": "string"}}}},
        ),
        "/console/{asset}": _get(
            "getConsoleAsset",
            "One static file of the console (HTML, JavaScript, CSS)",
            [{"name": "asset", "in": "path", "required": True, "schema": {"type": "string"}}],
            answer={
                "description": "The file",
                "content": {
                    media: {"schema": {"type": "string"}} for media in ("text/html", "text/javascript", "text/css")
                },
            },
        ),
        "/metrics": _get(
            "getMetrics",
            "Prometheus metrics (text exposition format), refreshed at most every 5 s",
            roles="metrics, operator, auditor",
            answer={"description": "The metrics", "content": {"text/plain": {"schema": {"type": "string"}}}},
        ),
        "/v1/console/whoami": _get(
            "getConsoleAccount", "The name and role of the account signed in", roles="operator, auditor, reader"
        ),
        "/v1/console/overview": _get(
            "getConsoleOverview", "Agencies, queues, log, dead letters and alerts", roles="operator"
        ),
        "/v1/console/track": _get(
            "trackMessages",
            "Messages by id or case, each with its evidence chain as a timeline",
            [_query("message_id", "a message id", "string"), _query("case_id", "a case id", "string")],
            roles="operator, auditor",
        ),
        "/v1/console/keys": _get(
            "getConsoleKeys", "The log's origin and public keys, from the directory", roles="operator, auditor"
        ),
        "/v1/ops/queues": _get(
            "listQueues",
            "Per queue: messages ready and unacknowledged, consumers, publish and deliver rates (503 when the "
            "broker's management API is not configured)",
            roles="operator",
        ),
    },
}

__all__ = ["OPENAPI"]
