"""The independent verifier of an evidence bundle: offline, with the directory authority's public key only.

`verify_bundle` runs a list of item checks (`DEFAULT_CHECKS`), in order, over
what `protocol.bundle.read_bundle` read; each reports one `ItemResult` per item
(verified, failed, or absent for an optional item) and the bundle holds only
when none failed. The order, each step relying only on what an earlier one
verified:

1. directories: each version signed by the authority, the version it says;
2. checkpoints: each signed by a log key of the gateway that a directory
   version gives, unrevoked at the checkpoint's time, for the log's origin;
   each cosignature line by an agency a version lists, under a key it gives
   that agency, verifying; the latest checkpoint cosigned by at least two
   agencies (`PUBLISHED_AFTER`);
3. consistency: each proving checkpoint is a prefix of the latest;
4. directory inclusion: every version is a leaf of the latest checkpoint;
5. each message: the header's signature under the sender key (a key a
   version gives the sender, usable when the message was made), then the
   header parses and names that sender and key; the content statement's
   signature under the same key and its binding equal to the header's; the
   document's digest is the one signed; the document's own signature
   (`protocol.document_signature`); each evidence statement signed by a key
   allowed to issue its type, about this message and header digest; each
   evidence's inclusion proof to a checkpoint of the bundle;
6. slots: time-stamp tokens per checkpoint and the PDF report (absent: said
   so; present: checked by the check installed for them, failed otherwise);
7. the manifest: signed by the exporting agency, listing exactly the members
   present, each with its digest and length.

Keys. A key counts if some authority-signed version in the bundle gives it
for its role and it is valid at the time of the signature; the earliest
revocation any version records for it wins (a later version may revoke a key
from before anyone knew, and none can lift a revocation), as in
`protocol.audit_verify`.

Then `verify_bundle` returns the account (`protocol.evidence_account`).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Final

from protocol.audit_verify import PUBLISHED_AFTER
from protocol.auditlog import directory_leaf, encode_leaf, evidence_leaf
from protocol.bundle import (
    BundleContents,
    BundleManifest,
    CheckpointItem,
    DirectoryItem,
    EvidenceItem,
    InclusionProof,
    MessageItem,
    read_bundle,
)
from protocol.checkpoint import (
    Checkpoint,
    NoteSignature,
    SignedCheckpoint,
    cosignature_key_hash,
    verify_checkpoint,
    verify_cosignature,
)
from protocol.directory import Directory, PublishedSigningKey
from protocol.document_signature import document_signature_block, verify_document_signature
from protocol.encoding import b64decode, load_json, pae, sha256_hex
from protocol.envelope import ContentStatement, EnvelopeHeader
from protocol.errors import ErrorCode, KeyRejected, ProtocolError
from protocol.evidence import VerifiedEvidence, verify_evidence_as_of_its_time
from protocol.evidence_account import (
    SENT,
    AccountEvent,
    BundleAccount,
    ItemKind,
    ItemResult,
    ItemStatus,
    MessageAccount,
    ProvingCheckpoint,
)
from protocol.ids import KeyId, parse_agency_id
from protocol.keys import SigningPublicKey
from protocol.merkle import leaf_hash, verify_consistency, verify_inclusion
from protocol.model import parse_model
from protocol.signing import (
    PAYLOAD_TYPE_BUNDLE_MANIFEST,
    PAYLOAD_TYPE_CONTENT,
    PAYLOAD_TYPE_DIRECTORY,
    PAYLOAD_TYPE_HEADER,
    SignedStatement,
    verify_statement,
)

_FAR_FUTURE: Final = datetime.max.replace(tzinfo=UTC)


@dataclass
class _VerifiedMessage:
    header: EnvelopeHeader | None = None
    statement: ContentStatement | None = None
    events: list[AccountEvent] = field(default_factory=list)


@dataclass
class BundleContext:
    """What the checks share: the bundle as read, and what earlier checks verified (for later ones)."""

    contents: BundleContents
    authority: SigningPublicKey
    directories: dict[int, Directory] = field(default_factory=dict)
    checkpoints: dict[int, Checkpoint] = field(default_factory=dict)
    witnesses: dict[int, tuple[str, ...]] = field(default_factory=dict)
    timestamped: set[int] = field(default_factory=set)
    messages: dict[str, _VerifiedMessage] = field(default_factory=dict)

    @property
    def manifest(self) -> BundleManifest:
        """The manifest as read (checked last, by its signature)."""
        return self.contents.manifest

    def member(self, path: str) -> bytes:
        """A member's bytes; `_Missing` names it if the bundle does not hold it."""
        data = self.contents.members.get(path)
        if data is None:
            raise _Missing(path)
        return data

    # -- keys, by the directory versions verified --------------------------------------------------------

    def revoked_at(self, key_id: KeyId) -> datetime:
        """The earliest revocation any verified version records for `key_id` (far future: none)."""
        earliest = _FAR_FUTURE
        for directory in self.directories.values():
            keys = [key for entry in directory.agencies for key in entry.signing_keys]
            keys += [*directory.gateway.evidence_keys, *directory.gateway.log_keys]
            for key in keys:
                if key.key_id == key_id and key.revoked_at is not None:
                    earliest = min(earliest, key.revoked_at)
        return earliest

    def usable(self, key: PublishedSigningKey, at: datetime, what: str) -> None:
        """Refuse `key` unless it was valid at `at` and no version revokes it from `at` or before."""
        key.check_usable(created_at=at, now=at, what=what)
        revoked = self.revoked_at(key.key_id)
        if at >= revoked:
            raise KeyRejected(
                f"{what} key {key.key_id} was revoked at {revoked.isoformat()}", code=ErrorCode.KEY_REVOKED
            )

    def agency_key(self, key_id: KeyId, at: datetime | None, what: str) -> tuple[str, PublishedSigningKey]:
        """The agency owning signing key `key_id` in some version, and the key, usable at `at` (None: any time)."""
        problems: list[str] = []
        for directory in self._newest_first():
            try:
                entry, key = directory.agency_signing_key(key_id)
                if at is not None:
                    self.usable(key, at, what)
            except ProtocolError as exc:
                problems.append(exc.detail)
                continue
            return entry.agency_id, key
        raise KeyRejected(f"{what} key {key_id}: " + ("; ".join(problems[:3]) or "no directory version gives it"))

    def log_keys(self) -> list[PublishedSigningKey]:
        """Every log key any verified version gives the gateway."""
        found: dict[KeyId, PublishedSigningKey] = {}
        for directory in self._newest_first():
            for key in directory.gateway.log_keys:
                found.setdefault(key.key_id, key)
        return list(found.values())

    def directory_with(self, key_id: KeyId) -> Directory:
        """The newest version that gives `key_id` to an agency or to the gateway."""
        for directory in self._newest_first():
            try:
                directory.gateway_evidence_key(key_id)
            except KeyRejected:
                try:
                    directory.agency_signing_key(key_id)
                except KeyRejected:
                    continue
            return directory
        raise KeyRejected(f"no directory version in the bundle gives key {key_id}")

    def _newest_first(self) -> list[Directory]:
        return [self.directories[version] for version in sorted(self.directories, reverse=True)]

    def proving(self, tree_size: int) -> ProvingCheckpoint | None:
        """The account's view of a verified checkpoint."""
        checkpoint = self.checkpoints.get(tree_size)
        if checkpoint is None:
            return None
        return ProvingCheckpoint(
            tree_size=tree_size,
            root_hash_hex=checkpoint.root_hash.hex(),
            witnesses=self.witnesses.get(tree_size, ()),
            timestamped=tree_size in self.timestamped,
        )


class _Missing(Exception):
    """A member the manifest names is not in the bundle."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path


ItemCheck = Callable[[BundleContext], Iterable[ItemResult]]
"""One kind of item check: its results, in order. Later checks read what earlier ones put in the context."""


def _run(item: str, kind: ItemKind, step: Callable[[], str | None]) -> ItemResult:
    """One item: VERIFIED (with the step's note), or FAILED with why."""
    try:
        note = step()
    except _Missing as missing:
        return ItemResult(item, kind, ItemStatus.FAILED, f"member {missing.path} is missing from the bundle")
    except ProtocolError as exc:
        return ItemResult(item, kind, ItemStatus.FAILED, f"{exc.code}: {exc.detail}")
    except (ValueError, KeyError, TypeError) as exc:
        return ItemResult(item, kind, ItemStatus.FAILED, f"malformed: {str(exc)[:300]}")
    return ItemResult(item, kind, ItemStatus.VERIFIED, note or "")


def _nodes(encoded: Sequence[str]) -> list[bytes]:
    return [b64decode(node) for node in encoded]


def _check_inclusion(context: BundleContext, leaf: bytes, proof: InclusionProof) -> str:
    checkpoint = context.checkpoints.get(proof.tree_size)
    if checkpoint is None:
        raise ValueError(f"the proof leads to a checkpoint of size {proof.tree_size} the bundle does not verify")
    verify_inclusion(leaf_hash(leaf), proof.leaf_index, proof.tree_size, _nodes(proof.nodes), checkpoint.root_hash)
    return f"leaf {proof.leaf_index} of checkpoint {proof.tree_size}"


# -- 1. directories ------------------------------------------------------------------------------------


def _directory_signed(context: BundleContext, item: DirectoryItem) -> str:
    signed = SignedStatement.from_json(context.member(item.path), code=ErrorCode.MALFORMED_DIRECTORY)
    payload = verify_statement(
        signed, PAYLOAD_TYPE_DIRECTORY, context.authority, code=ErrorCode.DIRECTORY_SIGNATURE_INVALID
    )
    directory = parse_model(Directory, payload, what="directory", code=ErrorCode.MALFORMED_DIRECTORY)
    if directory.version != item.version:
        raise ValueError(f"listed as version {item.version}, signed as version {directory.version}")
    context.directories[directory.version] = directory
    return f"network {directory.network}, issued {directory.issued_at.isoformat()}"


def check_directories(context: BundleContext) -> Iterable[ItemResult]:
    """Each directory version is signed by the authority and is the version it is listed as."""
    for item in context.manifest.directories:
        yield _run(f"directory v{item.version}", ItemKind.DIRECTORY, partial(_directory_signed, context, item))


# -- 2. checkpoints --------------------------------------------------------------------------------------


def _checkpoint_time(checkpoint: Checkpoint) -> datetime | None:
    for line in checkpoint.extensions:
        stated = line.removeprefix("time ")
        if stated != line and stated.isascii() and stated.isdigit():
            return datetime.fromtimestamp(int(stated), UTC)
    return None


def _log_signature(context: BundleContext, item: CheckpointItem) -> str:
    origin = context.manifest.log_origin
    note = context.member(item.path).decode("utf-8")
    failures: list[str] = []
    for key in context.log_keys():
        try:
            checkpoint = verify_checkpoint(note, origin, key.verifier, origin=origin)
        except ProtocolError as exc:
            failures.append(exc.detail)
            continue
        when = _checkpoint_time(checkpoint)
        if when is not None and when >= context.revoked_at(key.key_id):
            failures.append(f"log key {key.key_id} was revoked before this checkpoint")
            continue
        if checkpoint.size != item.tree_size:
            raise ValueError(f"listed as size {item.tree_size}, signed as size {checkpoint.size}")
        context.checkpoints[item.tree_size] = checkpoint
        return f"signed by log key {key.key_id}"
    raise ValueError("not signed by a log key of the gateway: " + "; ".join(failures[:3]))


def _cosignature(context: BundleContext, signed: SignedCheckpoint, line: NoteSignature) -> str:
    agency = parse_agency_id(line.key_name)
    for directory in sorted(context.directories.values(), key=lambda d: -d.version):
        if not directory.has_agency(agency):
            continue
        for key in directory.agency(agency).signing_keys:
            if cosignature_key_hash(agency, key.verifier) != line.key_hash:
                continue
            single = SignedCheckpoint(signed.checkpoint, (line,))
            cosigned_at = datetime.fromtimestamp(verify_cosignature(single, agency, key.verifier), UTC)
            if cosigned_at >= context.revoked_at(key.key_id):
                raise KeyRejected(f"witness key {key.key_id} was revoked before it cosigned")
            witnesses = context.witnesses.get(signed.checkpoint.size, ())
            if agency not in witnesses:
                context.witnesses[signed.checkpoint.size] = (*witnesses, agency)
            return f"by {agency} at {cosigned_at.isoformat()}"
    raise KeyRejected(f"no directory version gives {agency} a key with this key hash")


def _published(context: BundleContext) -> str:
    latest = context.manifest.latest_tree_size
    if latest not in context.checkpoints:
        raise ValueError(f"the latest checkpoint (size {latest}) is not among the verified ones")
    witnesses = context.witnesses.get(latest, ())
    if len(witnesses) < PUBLISHED_AFTER:
        raise ValueError(
            f"cosigned by {len(witnesses)} witness(es) ({', '.join(witnesses) or 'none'}); "
            f"published takes {PUBLISHED_AFTER}"
        )
    return f"published: cosigned by {', '.join(witnesses)}"


def check_checkpoints(context: BundleContext) -> Iterable[ItemResult]:
    """Each checkpoint signed by a log key of the gateway; each cosignature verifies; the latest is published."""
    for item in sorted(context.manifest.checkpoints, key=lambda c: c.tree_size):
        name = f"checkpoint {item.tree_size}"
        yield _run(name, ItemKind.CHECKPOINT, partial(_log_signature, context, item))
        if item.tree_size not in context.checkpoints:
            continue
        signed = SignedCheckpoint.parse(context.member(item.path))
        context.witnesses[item.tree_size] = ()
        for line in signed.signatures:
            if line.key_name != context.manifest.log_origin:
                yield _run(
                    f"{name} cosignature {line.key_name[:64]}",
                    ItemKind.COSIGNATURE,
                    partial(_cosignature, context, signed, line),
                )
    yield _run(
        f"checkpoint {context.manifest.latest_tree_size} witnesses", ItemKind.WITNESSES, partial(_published, context)
    )


# -- 3. consistency ------------------------------------------------------------------------------------------


def _consistent(context: BundleContext, size: int) -> str:
    latest = context.manifest.latest_tree_size
    proofs = {(item.from_size, item.to_size): item for item in context.manifest.consistency}
    item = proofs.get((size, latest))
    if item is None:
        raise ValueError(f"no consistency proof from size {size} to the latest ({latest})")
    old, new = context.checkpoints[size], context.checkpoints[latest]
    verify_consistency(size, latest, old.root_hash, new.root_hash, _nodes(item.nodes))
    return f"checkpoint {size} is a prefix of checkpoint {latest}"


def check_consistency(context: BundleContext) -> Iterable[ItemResult]:
    """Every proving checkpoint smaller than the latest comes with a valid consistency proof to it."""
    latest = context.manifest.latest_tree_size
    for size in sorted(context.checkpoints):
        if size != latest and latest in context.checkpoints:
            yield _run(f"consistency {size} -> {latest}", ItemKind.CONSISTENCY, partial(_consistent, context, size))


# -- 4. directory inclusion -------------------------------------------------------------------------------


def _directory_included(context: BundleContext, item: DirectoryItem) -> str:
    signed = SignedStatement.from_json(context.member(item.path), code=ErrorCode.MALFORMED_DIRECTORY)
    return _check_inclusion(context, encode_leaf(directory_leaf(signed, item.version)), item.inclusion)


def check_directory_inclusion(context: BundleContext) -> Iterable[ItemResult]:
    """Every directory version is a leaf of the log (so the gateway logged the very version the bundle holds)."""
    for item in context.manifest.directories:
        yield _run(
            f"directory v{item.version} inclusion proof",
            ItemKind.DIRECTORY_INCLUSION,
            partial(_directory_included, context, item),
        )


# -- 5. messages --------------------------------------------------------------------------------------------


def _header(context: BundleContext, message: MessageItem, verified: _VerifiedMessage) -> str:
    header_bytes = context.member(message.header)
    owner, key = context.agency_key(message.sender_key, None, "signing")
    key.verifier.verify(pae(PAYLOAD_TYPE_HEADER, header_bytes), context.member(message.header_signature))
    header = parse_model(EnvelopeHeader, header_bytes, what="envelope header", code=ErrorCode.MALFORMED_ENVELOPE)
    if header.sender != owner or header.sender_key != message.sender_key:
        raise ValueError(f"the header names sender {header.sender}, the key belongs to {owner}")
    context.agency_key(message.sender_key, header.created_at, "signing")
    if (
        header.message_id != message.message_id
        or header.sender != message.sender
        or header.recipient_agencies != message.recipients
        or header.message_type != message.message_type
        or header.case_id != message.case_id
    ):
        raise ValueError("the signed header is about another message than the manifest lists")
    verified.header = header
    verified.events.append(
        AccountEvent(
            actor=header.sender,
            at=header.created_at,
            evidence_type=SENT,
            signer_key=str(message.sender_key),
            recipient=", ".join(header.recipient_agencies),
            checkpoint=None,
        )
    )
    return f"signed by {owner} with key {key.key_id}"


def _content(context: BundleContext, message: MessageItem, verified: _VerifiedMessage) -> str:
    header = verified.header
    if header is None:
        raise ValueError("the header did not verify")
    statement_bytes = context.member(message.content_statement)
    _, key = context.agency_key(message.sender_key, header.created_at, "signing")
    key.verifier.verify(
        pae(PAYLOAD_TYPE_CONTENT, statement_bytes),
        context.member(message.content_signature),
        code=ErrorCode.CONTENT_SIGNATURE_INVALID,
    )
    statement = parse_model(
        ContentStatement, statement_bytes, what="content statement", code=ErrorCode.MALFORMED_ENVELOPE
    )
    if statement.binding != header.binding():
        raise ValueError("the signed content statement does not match the signed header")
    verified.statement = statement
    return f"document digest {statement.document_sha256[:16]}..."


def _document(context: BundleContext, message: MessageItem, verified: _VerifiedMessage) -> str:
    statement = verified.statement
    if statement is None:
        raise ValueError("the content statement did not verify")
    document = context.member(message.document)
    if not hmac.compare_digest(sha256_hex(document), statement.document_sha256):
        raise ValueError("the document is not the one the sender signed (digest differs)")
    return f"{len(document)} bytes, as signed"


def _evidence(
    context: BundleContext,
    message: MessageItem,
    verified: _VerifiedMessage,
    item: EvidenceItem,
    out: list[VerifiedEvidence],
) -> str:
    header = verified.header
    if header is None:
        raise ValueError("the header did not verify")
    signed = SignedStatement.from_json(context.member(item.path))
    checked = verify_evidence_as_of_its_time(signed, context.directory_with(signed.key_id))
    statement = checked.statement
    context.usable(checked.issuer_key, statement.at, "evidence")
    if statement.message_id != message.message_id or statement.message_digest != sha256_hex(
        context.member(message.header)
    ):
        raise ValueError("the evidence is about another message or another header than this one")
    if statement.sender != header.sender or statement.recipient not in (None, *header.recipient_agencies):
        raise ValueError("the evidence names another sender or recipient than the signed header")
    out.append(checked)
    return f"{statement.evidence_type} by {statement.issuer} at {statement.at.isoformat()}"


def _evidence_included(context: BundleContext, item: EvidenceItem, out: list[VerifiedEvidence]) -> str:
    if not out:
        raise ValueError("the evidence did not verify")
    return _check_inclusion(context, encode_leaf(evidence_leaf(out[0].signed, out[0].statement)), item.inclusion)


def _message_results(context: BundleContext, message: MessageItem) -> Iterable[ItemResult]:
    name = f"message {message.message_id}"
    verified = context.messages.setdefault(str(message.message_id), _VerifiedMessage())
    yield _run(f"{name} header", ItemKind.HEADER, partial(_header, context, message, verified))
    yield _run(f"{name} content statement", ItemKind.CONTENT_STATEMENT, partial(_content, context, message, verified))
    yield _run(f"{name} document", ItemKind.DOCUMENT, partial(_document, context, message, verified))
    yield _document_signature(context, message, verified, name)
    for position, item in enumerate(message.evidence, start=1):
        label = f"{name} evidence {position}"
        found: list[VerifiedEvidence] = []
        yield _run(label, ItemKind.EVIDENCE, partial(_evidence, context, message, verified, item, found))
        included = _run(
            f"{label} inclusion proof", ItemKind.INCLUSION, partial(_evidence_included, context, item, found)
        )
        yield included
        if found:
            statement, reason = found[0].statement, found[0].statement.reason
            verified.events.append(
                AccountEvent(
                    actor=statement.issuer,
                    at=statement.at,
                    evidence_type=statement.evidence_type,
                    signer_key=str(found[0].signed.key_id),
                    recipient=statement.recipient,
                    checkpoint=context.proving(item.inclusion.tree_size)
                    if included.status == ItemStatus.VERIFIED
                    else None,
                    reason=None if reason is None else f"{reason.code}: {reason.detail}",
                )
            )


def _document_signature(
    context: BundleContext, message: MessageItem, verified: _VerifiedMessage, name: str
) -> ItemResult:
    label = f"{name} document signature"
    try:
        document = load_json(context.member(message.document))
    except (_Missing, ProtocolError, ValueError):
        return ItemResult(label, ItemKind.DOCUMENT_SIGNATURE, ItemStatus.FAILED, "the document is not JSON")
    if not isinstance(document, dict) or document_signature_block(document) is None:
        return ItemResult(label, ItemKind.DOCUMENT_SIGNATURE, ItemStatus.ABSENT, "the document carries no signature")
    at = verified.header.created_at if verified.header is not None else None

    def lookup(key_id: KeyId) -> tuple[str, PublishedSigningKey]:
        return context.agency_key(key_id, at, "document signing")

    def step() -> str:
        signer = verify_document_signature(document, lookup, sender=message.sender)
        return f"JWS by {signer.agency} with key {signer.key_id}"

    return _run(label, ItemKind.DOCUMENT_SIGNATURE, step)


def check_messages(context: BundleContext) -> Iterable[ItemResult]:
    """Each message's header, content statement, document, document signature, evidence and inclusion proofs."""
    for message in context.manifest.messages:
        yield from _message_results(context, message)


# -- 6. slots --------------------------------------------------------------------------------------------------


def check_timestamps(context: BundleContext) -> Iterable[ItemResult]:
    """The slot for RFC 3161 time-stamp tokens per checkpoint: absent is said so; present needs a check installed."""
    for item in sorted(context.manifest.checkpoints, key=lambda c: c.tree_size):
        name = f"checkpoint {item.tree_size} time-stamp"
        if not item.timestamps:
            yield ItemResult(name, ItemKind.TIMESTAMP, ItemStatus.ABSENT, "no time-stamp token")
            continue
        for token in item.timestamps:
            yield ItemResult(
                f"{name} {token.path}",
                ItemKind.TIMESTAMP,
                ItemStatus.FAILED,
                "a time-stamp token is present but no time-stamp check is installed in this verifier",
            )


def check_report(context: BundleContext) -> Iterable[ItemResult]:
    """The slot for the signed PDF report: absent is said so; present needs a check installed."""
    report = context.manifest.report
    if report is None:
        yield ItemResult("report.pdf", ItemKind.REPORT, ItemStatus.ABSENT, "no report in this bundle")
        return
    yield ItemResult(
        report.path,
        ItemKind.REPORT,
        ItemStatus.FAILED,
        "a report is present but no report check is installed in this verifier",
    )


# -- 7. manifest -----------------------------------------------------------------------------------------------


def _scope(manifest: BundleManifest) -> str:
    """A message bundle holds that message only; a case bundle messages of that case only."""
    if manifest.scope == "message" and [str(m.message_id) for m in manifest.messages] != [manifest.subject]:
        raise ValueError(f"a message bundle of {manifest.subject} holds other messages")
    if manifest.scope == "case" and any(m.case_id != manifest.subject for m in manifest.messages):
        raise ValueError(f"a bundle of case {manifest.subject} holds a message of another case")
    return f"{len(manifest.messages)} message(s) of {manifest.scope} {manifest.subject}"


def check_manifest(context: BundleContext) -> Iterable[ItemResult]:
    """The exporting agency signed the manifest; it lists exactly the members present, each with its digest."""
    manifest = context.manifest

    def signature() -> str:
        signed = context.contents.signature
        owner, key = context.agency_key(signed.key_id, manifest.exported_at, "signing")
        payload = verify_statement(signed, PAYLOAD_TYPE_BUNDLE_MANIFEST, key.verifier)
        if payload != context.contents.manifest_bytes:
            raise ValueError("the signature is over another manifest than manifest.json")
        if owner != manifest.exported_by:
            raise ValueError(f"signed by {owner}, but names {manifest.exported_by} as exporter")
        return f"exported by {owner} at {manifest.exported_at.isoformat()}"

    yield _run("manifest", ItemKind.MANIFEST, signature)
    yield _run("manifest scope", ItemKind.MANIFEST, partial(_scope, manifest))
    listed = {member.path: member for member in manifest.members}
    for path in sorted(set(listed) | set(context.contents.members)):
        member = listed.get(path)
        data = context.contents.members.get(path)
        if member is None:
            yield ItemResult(f"member {path}", ItemKind.MEMBER, ItemStatus.FAILED, "present but not in the manifest")
        elif data is None:
            yield ItemResult(f"member {path}", ItemKind.MEMBER, ItemStatus.FAILED, "in the manifest but missing")
        elif len(data) != member.size or not hmac.compare_digest(sha256_hex(data), member.sha256):
            yield ItemResult(
                f"member {path}", ItemKind.MEMBER, ItemStatus.FAILED, "its digest is not the one the manifest lists"
            )


DEFAULT_CHECKS: Final[tuple[ItemCheck, ...]] = (
    check_directories,
    check_checkpoints,
    check_consistency,
    check_directory_inclusion,
    check_messages,
    check_timestamps,
    check_report,
    check_manifest,
)
"""The item checks, in order. The time-stamp and report slots are replaced by their own checks when installed."""


def _document_facts(document: bytes) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Languages and title lines of a document, read without trusting it (for the account only)."""
    try:
        parsed = load_json(document)
    except (ProtocolError, ValueError):
        return (), ()
    if not isinstance(parsed, dict):
        return (), ()
    languages_block = parsed.get("languages")
    languages: list[str] = []
    if isinstance(languages_block, dict):
        primary = languages_block.get("primary")
        if isinstance(primary, str):
            languages.append(primary)
        available = languages_block.get("available")
        if isinstance(available, list):
            languages += [str(tag) for tag in available if isinstance(tag, str) and tag not in languages]
    lines = [f"{parsed.get('message_type', '?')} in case {parsed.get('case_id', '?')}"]
    for side in ("sender", "recipient"):
        party = parsed.get(side)
        if isinstance(party, dict):
            label = party.get("name") or party.get("authority_name") or ""
            lines.append(f"{side}: {party.get('authority_id', '?')}{f' ({label})' if label else ''}")
    lines += [
        f"{reference}: {parsed[reference]}"
        for reference in ("requesting_ref", "requested_ref")
        if isinstance(parsed.get(reference), str)
    ]
    return tuple(languages), tuple(line[:200] for line in lines)


def _account(context: BundleContext, items: list[ItemResult], size: int) -> BundleAccount:
    manifest = context.manifest
    messages = []
    for message in manifest.messages:
        verified = context.messages.get(str(message.message_id), _VerifiedMessage())
        document = context.contents.members.get(message.document, b"")
        languages, title = _document_facts(document)
        messages.append(
            MessageAccount(
                message_id=str(message.message_id),
                direction=message.direction,
                sender=message.sender,
                recipients=tuple(message.recipients),
                message_type=message.message_type,
                case_id=message.case_id,
                document_sha256=sha256_hex(document),
                document_bytes=len(document),
                languages=languages,
                title_lines=title,
                events=tuple(sorted(verified.events, key=lambda event: event.at)),
            )
        )
    return BundleAccount(
        scope=manifest.scope,
        subject=manifest.subject,
        exported_by=manifest.exported_by,
        exported_at=manifest.exported_at,
        log_origin=manifest.log_origin,
        latest=context.proving(manifest.latest_tree_size),
        messages=tuple(messages),
        directory_versions=tuple(sorted(context.directories)),
        items=tuple(items),
        bundle_bytes=size,
    )


def verify_bundle(
    members: Mapping[str, bytes] | ProtocolError,
    *,
    authority: SigningPublicKey,
    bundle_bytes: int = 0,
    checks: Sequence[ItemCheck] = DEFAULT_CHECKS,
) -> BundleAccount:
    """Run every item check over a bundle's members with only the authority's key; the account of what was found.

    `members` is what `runtime.bundles.unpack_bundle` read, or the error it raised
    (reported as the `bundle` item); `bundle_bytes` is the file's size, for the account.
    """
    try:
        if isinstance(members, ProtocolError):
            raise members
        contents = read_bundle(members)
    except ProtocolError as exc:
        failed = ItemResult("bundle", ItemKind.BUNDLE, ItemStatus.FAILED, f"{exc.code}: {exc.detail}")
        return BundleAccount(
            scope="?",
            subject="?",
            exported_by="?",
            exported_at=None,
            log_origin="?",
            latest=None,
            messages=(),
            directory_versions=(),
            items=(failed,),
            bundle_bytes=bundle_bytes,
        )
    context = BundleContext(contents=contents, authority=authority)
    items: list[ItemResult] = []
    for check in checks:
        items.extend(check(context))
    return _account(context, items, bundle_bytes)


__all__ = [
    "DEFAULT_CHECKS",
    "BundleContext",
    "ItemCheck",
    "check_checkpoints",
    "check_consistency",
    "check_directories",
    "check_directory_inclusion",
    "check_manifest",
    "check_messages",
    "check_report",
    "check_timestamps",
    "verify_bundle",
]
