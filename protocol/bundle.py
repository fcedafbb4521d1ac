"""The evidence bundle: one ZIP file that proves what happened to one message, or to every message of a case.

One definition for the writer (the agent, `agents.bundles`) and the verifier
(`protocol.bundle_verify`). A bundle holds, for each message:

* the document, exactly the bytes the sender sealed;
* the sealed header, exactly the bytes the sender signed, and its signature;
* the sender's content statement (binding and document digest), exactly the
  bytes the sender signed, and its signature;
* every evidence statement held about it, as signed, each with its inclusion
  proof to a checkpoint of the gateway's audit log;

and once for the whole bundle:

* each checkpoint a proof leads to, as a C2SP signed note with the log's
  signature and the witnesses' cosignatures;
* a consistency proof from each of them to the latest checkpoint;
* every directory version (as the authority signed it, with its inclusion
  proof to the latest checkpoint), so that each key is judged by the versions
  that published it;
* optional slots: a signed PDF report (`report.pdf`) and RFC 3161 time-stamp
  tokens per checkpoint (absent is reported as absent, not as a failure).

Encoding. The file is a ZIP (`runtime.bundles` packs and unpacks it; this
module stays pure and works on the members by name).
`manifest.json` is the RFC 8785 canonical JSON of `BundleManifest`;
`manifest.sig` is the exporting agency's `SignedStatement` over exactly those
bytes (payload type `PAYLOAD_TYPE_BUNDLE_MANIFEST`). The manifest lists every
other member with its SHA-256 and length; members are stored in a fixed order
(manifest, signature, then by name) with a fixed time, so one set of members
gives one file. Signatures are stored raw (64 bytes); the signed note and
statements exactly as signed. Nothing in a bundle is trusted because it is in
the bundle: the verifier checks each item against the authority's key only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

from pydantic import Field

from protocol.encoding import UtcTimestamp, sha256_hex
from protocol.errors import ErrorCode, LimitExceeded, MalformedInput
from protocol.ids import AgencyIdField, KeyIdField, MessageIdField
from protocol.keys import SigningPrivateKey
from protocol.model import FrozenModel, parse_model
from protocol.signing import PAYLOAD_TYPE_BUNDLE_MANIFEST, SignedStatement, sign_statement

BUNDLE_FORMAT: Final = "rogatory-evidence-bundle/1"
MEDIA_TYPE: Final = "application/zip"
MANIFEST: Final = "manifest.json"
MANIFEST_SIGNATURE: Final = "manifest.sig"
REPORT: Final = "report.pdf"
"""The optional PAdES-signed PDF report's member name (made by the report writer, checked by its own item check)."""

MAX_MEMBERS: Final = 50_000
"""Members in one bundle: a case of 1,000 messages with 10 evidence each is about 15,000."""
MAX_MEMBER_BYTES: Final = 64 << 20
MAX_BUNDLE_BYTES: Final = 2 << 30
"""Uncompressed bytes of all members together: read from the ZIP directory before anything is inflated."""


class MemberDigest(FrozenModel):
    """One member of the bundle other than the manifest and its signature: name, SHA-256 and length."""

    path: str = Field(min_length=1, max_length=300)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)


class InclusionProof(FrozenModel):
    """A leaf's place in the tree of `tree_size` leaves (RFC 9162 2.1.3), nodes in base64."""

    leaf_index: int = Field(ge=0)
    tree_size: int = Field(ge=1)
    nodes: tuple[str, ...] = ()


class EvidenceItem(FrozenModel):
    """One signed evidence statement (a member) and its inclusion proof."""

    path: str
    inclusion: InclusionProof


class MessageItem(FrozenModel):
    """One message: who sent it to whom, the members holding its bytes, its evidence."""

    message_id: MessageIdField
    direction: Literal["sent", "received"]
    """As the exporting agency sees it."""
    sender: AgencyIdField
    sender_key: KeyIdField
    """The key the header and content statement are signed with (verify, then parse: the key comes first)."""
    recipients: tuple[AgencyIdField, ...] = Field(min_length=1)
    message_type: str
    case_id: str
    document: str
    header: str
    header_signature: str
    content_statement: str
    content_signature: str
    evidence: tuple[EvidenceItem, ...] = ()


class DirectoryItem(FrozenModel):
    """One directory version as the authority signed it (a member), and its inclusion proof."""

    version: int = Field(ge=1)
    path: str
    inclusion: InclusionProof


class TimestampItem(FrozenModel):
    """An RFC 3161 time-stamp token over a checkpoint note (a member); checked by the time-stamp item check."""

    path: str
    authority: str | None = Field(default=None, max_length=200)


class CheckpointItem(FrozenModel):
    """A checkpoint note with its cosignatures (a member), and the time-stamp tokens over it."""

    tree_size: int = Field(ge=1)
    path: str
    timestamps: tuple[TimestampItem, ...] = ()


class ConsistencyItem(FrozenModel):
    """A consistency proof (RFC 9162 2.1.4) from one checkpoint to a larger one, nodes in base64."""

    from_size: int = Field(ge=1)
    to_size: int = Field(ge=1)
    nodes: tuple[str, ...] = ()


class ReportItem(FrozenModel):
    """The optional signed PDF report (a member), and who signed it."""

    path: Literal["report.pdf"] = REPORT
    signer: str | None = Field(default=None, max_length=200)


class BundleManifest(FrozenModel):
    """What the bundle holds and where: the one index both the writer and the verifier read."""

    format: Literal["rogatory-evidence-bundle/1"] = BUNDLE_FORMAT
    scope: Literal["message", "case"]
    subject: str = Field(min_length=1, max_length=100)
    """The message id (scope `message`) or the case id (scope `case`)."""
    exported_by: AgencyIdField
    exported_at: UtcTimestamp
    log_origin: str = Field(min_length=1, max_length=200)
    messages: tuple[MessageItem, ...] = Field(min_length=1)
    directories: tuple[DirectoryItem, ...] = Field(min_length=1)
    checkpoints: tuple[CheckpointItem, ...] = Field(min_length=1)
    latest_tree_size: int = Field(ge=1)
    consistency: tuple[ConsistencyItem, ...] = ()
    report: ReportItem | None = None
    members: tuple[MemberDigest, ...] = ()


def message_prefix(sender: str, message_id: str) -> str:
    """The folder of one message's members."""
    return f"messages/{sender}/{message_id}/"


def checkpoint_path(tree_size: int) -> str:
    """The member of the checkpoint of `tree_size` leaves."""
    return f"checkpoints/{tree_size}.note"


def directory_path(version: int) -> str:
    """The member of a directory version."""
    return f"directories/{version}.json"


@dataclass(frozen=True, slots=True)
class BundleContents:
    """A bundle's parts as read (nothing verified): the manifest's bytes and value, its signature, the members."""

    manifest_bytes: bytes
    manifest: BundleManifest
    signature: SignedStatement
    members: Mapping[str, bytes]


def sign_bundle(
    manifest: BundleManifest,
    members: Mapping[str, bytes],
    signer: SigningPrivateKey,
) -> dict[str, bytes]:
    """Every member of the bundle in its order: the manifest (listing each of `members`), its signature, the rest.

    `runtime.bundles.pack_bundle` writes them as the ZIP file.
    """
    if len(members) > MAX_MEMBERS:
        raise LimitExceeded(f"{len(members)} members, over the limit of {MAX_MEMBERS}", code=ErrorCode.TOO_MANY_ITEMS)
    listed = tuple(
        MemberDigest(path=path, sha256=sha256_hex(data), size=len(data)) for path, data in sorted(members.items())
    )
    manifest_bytes = manifest.model_copy(update={"members": listed}).canonical_bytes()
    signature = sign_statement(PAYLOAD_TYPE_BUNDLE_MANIFEST, manifest_bytes, signer)
    return {
        MANIFEST: manifest_bytes,
        MANIFEST_SIGNATURE: signature.model_dump_json().encode("utf-8"),
        **dict(sorted(members.items())),
    }


@dataclass(frozen=True, slots=True)
class EvidencePart:
    """One signed evidence statement as held (its JSON bytes) and its inclusion proof."""

    signed: bytes
    evidence_type: str
    recipient: str | None
    inclusion: InclusionProof


@dataclass(frozen=True, slots=True)
class MessagePart:
    """Everything a bundle holds about one message, as bytes held by the exporting agency."""

    message_id: str
    direction: Literal["sent", "received"]
    sender: str
    sender_key: str
    recipients: tuple[str, ...]
    message_type: str
    case_id: str
    document: bytes
    header: bytes
    header_signature: bytes
    content_statement: bytes
    content_signature: bytes
    evidence: tuple[EvidencePart, ...]


@dataclass(frozen=True, slots=True)
class DirectoryPart:
    """A directory version as the authority signed it (JSON bytes) and its inclusion proof."""

    version: int
    signed: bytes
    inclusion: InclusionProof


@dataclass(frozen=True, slots=True)
class CheckpointPart:
    """A checkpoint note with its cosignatures, and time-stamp tokens over it (the time-stamp slot)."""

    tree_size: int
    note: str
    timestamps: tuple[tuple[str, bytes], ...] = ()
    """(authority name, DER token) pairs."""


@dataclass(frozen=True, slots=True)
class BundleParts:
    """What `assemble_bundle` writes: the messages, the log's proofs and the directory versions."""

    scope: Literal["message", "case"]
    subject: str
    exported_by: str
    exported_at: datetime
    log_origin: str
    messages: tuple[MessagePart, ...]
    directories: tuple[DirectoryPart, ...]
    checkpoints: tuple[CheckpointPart, ...]
    latest_tree_size: int
    consistency: tuple[ConsistencyItem, ...] = ()
    report: bytes | None = None
    """The signed PDF report (the report slot), if one was made."""


def assemble_bundle(parts: BundleParts, signer: SigningPrivateKey) -> dict[str, bytes]:
    """Lay `parts` out as members, list them in the manifest, sign it with `signer`: the members in order."""
    members: dict[str, bytes] = {}
    messages: list[MessageItem] = []
    for message in parts.messages:
        prefix = message_prefix(message.sender, message.message_id)
        members[prefix + "document.json"] = message.document
        members[prefix + "header.json"] = message.header
        members[prefix + "header.sig"] = message.header_signature
        members[prefix + "content.json"] = message.content_statement
        members[prefix + "content.sig"] = message.content_signature
        evidence: list[EvidenceItem] = []
        for position, part in enumerate(message.evidence, start=1):
            path = f"{prefix}evidence/{position:02d}-{part.evidence_type}-{part.recipient or '-'}.json"
            members[path] = part.signed
            evidence.append(EvidenceItem(path=path, inclusion=part.inclusion))
        messages.append(
            MessageItem.model_validate(
                {
                    "message_id": message.message_id,
                    "direction": message.direction,
                    "sender": message.sender,
                    "sender_key": message.sender_key,
                    "recipients": message.recipients,
                    "message_type": message.message_type,
                    "case_id": message.case_id,
                    "document": prefix + "document.json",
                    "header": prefix + "header.json",
                    "header_signature": prefix + "header.sig",
                    "content_statement": prefix + "content.json",
                    "content_signature": prefix + "content.sig",
                    "evidence": tuple(evidence),
                },
                strict=False,
            )
        )
    directories = []
    for directory in parts.directories:
        members[directory_path(directory.version)] = directory.signed
        directories.append(
            DirectoryItem(
                version=directory.version, path=directory_path(directory.version), inclusion=directory.inclusion
            )
        )
    checkpoints = []
    for checkpoint in parts.checkpoints:
        members[checkpoint_path(checkpoint.tree_size)] = checkpoint.note.encode("utf-8")
        tokens = []
        for number, (authority, token) in enumerate(checkpoint.timestamps, start=1):
            path = f"timestamps/{checkpoint.tree_size}-{number}.tsr"
            members[path] = token
            tokens.append(TimestampItem(path=path, authority=authority))
        checkpoints.append(
            CheckpointItem(
                tree_size=checkpoint.tree_size, path=checkpoint_path(checkpoint.tree_size), timestamps=tuple(tokens)
            )
        )
    if parts.report is not None:
        members[REPORT] = parts.report
    manifest = BundleManifest.model_validate(
        {
            "scope": parts.scope,
            "subject": parts.subject,
            "exported_by": parts.exported_by,
            "exported_at": parts.exported_at,
            "log_origin": parts.log_origin,
            "messages": tuple(messages),
            "directories": tuple(directories),
            "checkpoints": tuple(checkpoints),
            "latest_tree_size": parts.latest_tree_size,
            "consistency": parts.consistency,
            "report": None if parts.report is None else ReportItem(),
        },
        strict=False,
    )
    return sign_bundle(manifest, members, signer)


def read_bundle(members: Mapping[str, bytes]) -> BundleContents:
    """Split a bundle's members (as `runtime.bundles.unpack_bundle` read them) into its parts. Verifies nothing."""
    rest = dict(members)
    manifest_bytes = rest.pop(MANIFEST, None)
    signature_bytes = rest.pop(MANIFEST_SIGNATURE, None)
    if manifest_bytes is None or signature_bytes is None:
        raise MalformedInput(
            f"a bundle holds {MANIFEST} and {MANIFEST_SIGNATURE}; this one does not", code=ErrorCode.MALFORMED_BUNDLE
        )
    manifest = parse_model(BundleManifest, manifest_bytes, what="bundle manifest", code=ErrorCode.MALFORMED_BUNDLE)
    signature = SignedStatement.from_json(signature_bytes, code=ErrorCode.MALFORMED_BUNDLE)
    return BundleContents(manifest_bytes=manifest_bytes, manifest=manifest, signature=signature, members=rest)


def bundle_name(manifest_scope: str, subject: str, exported_at: datetime) -> str:
    """A file name for a bundle: what it is about and when it was made."""
    safe = "".join(character if character.isalnum() or character in "-_." else "_" for character in subject)
    return f"evidence-{manifest_scope}-{safe}-{exported_at.strftime('%Y%m%dT%H%M%SZ')}.zip"


__all__ = [
    "BUNDLE_FORMAT",
    "MANIFEST",
    "MANIFEST_SIGNATURE",
    "MAX_BUNDLE_BYTES",
    "MAX_MEMBERS",
    "MAX_MEMBER_BYTES",
    "MEDIA_TYPE",
    "REPORT",
    "BundleContents",
    "BundleManifest",
    "BundleParts",
    "CheckpointItem",
    "CheckpointPart",
    "ConsistencyItem",
    "DirectoryItem",
    "DirectoryPart",
    "EvidenceItem",
    "EvidencePart",
    "InclusionProof",
    "MemberDigest",
    "MessageItem",
    "MessagePart",
    "ReportItem",
    "TimestampItem",
    "assemble_bundle",
    "bundle_name",
    "checkpoint_path",
    "directory_path",
    "message_prefix",
    "read_bundle",
    "sign_bundle",
]
