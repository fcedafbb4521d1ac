"""The pure core of Rogatory: bytes, keys and `now` in; verified values out, or a refusal.

No I/O, no clock, no environment, no logging (a test reads the imports).
Modules, from the bottom up:

* `errors`     every refusal, each with a stable machine code;
* `ids`        agency, key, message and case identifiers as distinct types;
* `encoding`   strict JSON, canonical JSON (RFC 8785), base64, timestamps, PAE;
* `keys`       Ed25519 signing keys and X25519 encryption keys, never mixed;
* `signing`    signed statements (DSSE-like), domain-separated by payload type;
* `keystore`   private keys at rest under a passphrase (Argon2id);
* `storage`    what an agent keeps decrypted, sealed at rest under its storage key;
* `limits`     every size and time limit, with its reason;
* `directory`  the signed directory of agencies, keys and agreements (policy);
* `envelope`   seal / open: the security argument of the exchange, in one module;
* `policy`     the agreement decision, made by the gateway and again by each recipient;
* `evidence`   signed evidence of each step of a message;
* `mla`        the content of MLA messages and the case lifecycle;
* `topology`   the names of the broker topology;
* `merkle`, `checkpoint`, `auditlog`, `audit_verify`   the transparency log.
"""

from protocol.directory import Directory, verify_directory
from protocol.envelope import OpenedMessage, SealedMessage, authenticate_header, check_freshness, open_sealed, seal
from protocol.errors import ErrorCode, ProtocolError
from protocol.evidence import EvidenceStatement, EvidenceType, issue_evidence, verify_evidence
from protocol.ids import AgencyId, CaseId, KeyId, MessageId
from protocol.limits import DEFAULT_LIMITS, Limits

__all__ = [
    "DEFAULT_LIMITS",
    "AgencyId",
    "CaseId",
    "Directory",
    "ErrorCode",
    "EvidenceStatement",
    "EvidenceType",
    "KeyId",
    "Limits",
    "MessageId",
    "OpenedMessage",
    "ProtocolError",
    "SealedMessage",
    "authenticate_header",
    "check_freshness",
    "issue_evidence",
    "open_sealed",
    "seal",
    "verify_directory",
    "verify_evidence",
]
