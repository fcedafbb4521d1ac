"""The envelope: how one message document travels, sealed by its sender.

This module is the security argument of the exchange. Six properties, each
tested by an attack in `tests/protocol/test_envelope_attacks.py`:

1. **Confidentiality.** The document is encrypted with a fresh 32-byte content
   key (XChaCha20-Poly1305, IETF AEAD); the key is wrapped with a sealed box
   for each recipient's X25519 key (and for the sender's own archive). The
   gateway and the broker see only the header.
2. **Non-repudiation of content.** Inside the ciphertext, a *content statement*
   (the binding below plus the SHA-256 of the document) is signed by the
   sender's Ed25519 key. A recipient can show statement, signature and
   document to a third party, who needs nothing but the directory.
3. **Authenticated header.** The header is canonical JSON signed over its exact
   bytes under its own payload type (`pae`), so the gateway authenticates the
   sender and audits the message without decrypting: verify, then parse.
4. **Binding.** Message id, sender, sender key, recipients (and their keys),
   type, case, times go into the *binding*, which is both the AEAD's associated
   data and part of the signed content statement; the header signature also
   covers ciphertext digest and length, wrapped keys and key commitment. A
   recipient checks that it is listed in what the sender signed, so a
   recipient cannot forward the content to a third party as if it had been
   sent to them (no surreptitious forwarding), and no signature can be
   stripped or replaced.
5. **One plaintext per ciphertext.** The header commits to the content key
   (`key_commitment` = BLAKE2b-256 keyed with the content key), and each
   recipient checks the key it unwrapped against it. AEAD is not committing on
   its own: without this a sender could wrap different keys for different
   recipients that open the same ciphertext to different documents.
6. **Freshness.** `check_freshness` refuses what is expired, too far in the
   future, or older than the replay window; replay of a message id inside the
   window is refused by the services, which remember ids (`REPLAYED`).

The checks, in order, each returning a value that only it can make, taken by
the next (so no path opens a message that skipped one):

    authenticate_header  SealedMessage       -> AuthenticatedHeader
    check_freshness      AuthenticatedHeader -> FreshHeader
    open_authenticated   FreshHeader         -> OpenedMessage

`open_sealed` runs all three for a caller with nothing to do between them.

Wire format of a sealed message (all integers big-endian)::

    "RGTY" 0x01 | signer key id (16 bytes) | header length (u32) | header
               | header signature (64) | ciphertext

Plaintext inside the ciphertext::

    statement length (u32) | content statement | statement signature (64) | document

`SealedMessage.digest` (SHA-256 of the header bytes) is "the digest of exactly
what the sender signed" that every evidence statement names.

Attachment bodies travel out of band, each encrypted as its own stream
(`protocol.attachments`): the header commits to each body's ciphertext digest
and length (`attachments`, absent when there are none, so that envelopes
without attachments keep their exact bytes), and the signed content statement
carries each body's key and plaintext digest; a recipient checks that both
lists agree. Evidence names the header digest, so it covers the attachments.

The sender's view of the audit log travels in the header too, so that a
gateway showing two agencies two histories is caught by the recipient of any
message between them: `log_checkpoint` is the latest checkpoint the sending
agent witnessed, as a C2SP signed note with only the log's signature lines
(`SignedCheckpoint.signed_only_by`). The header signature binds it to the
sender; the log's signature makes a disagreement proof against the gateway,
not the sender's word. It is optional and absent when the sender witnessed
nothing, so a header without it — every header made before it existed —
keeps its exact bytes, still parses and still verifies (the format stays
`rogatory-envelope/1`; the known answer in `tests/protocol/vectors/envelope.json`
is such a header). Here it is only parsed (strictly, within
`MAX_LOG_CHECKPOINT_CHARS`); the recipient's agent verifies the log's
signature and compares it with its own view (`agents.auditing`).
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, Literal

import nacl.bindings
import nacl.encoding
import nacl.exceptions
import nacl.hash
import nacl.utils
from pydantic import Field, model_validator

from protocol.attachments import AttachmentCommitment, AttachmentKey, check_attachment_ids
from protocol.checkpoint import SignedCheckpoint
from protocol.directory import AgencyEntry, Directory, PublishedSigningKey
from protocol.encoding import Base64Bytes, UtcTimestamp, pae, sha256_hex, truncate_to_millis
from protocol.errors import (
    AuthenticationFailed,
    ErrorCode,
    FreshnessViolation,
    LimitExceeded,
    MalformedInput,
    ProtocolError,
)
from protocol.ids import (
    KEY_ID_BYTES,
    AgencyId,
    AgencyIdField,
    CaseId,
    CaseIdField,
    KeyId,
    KeyIdField,
    MessageId,
    MessageIdField,
    parse_key_id,
)
from protocol.keys import SIGNATURE_BYTES, EncryptionPrivateKey, EncryptionPublicKey, SigningPrivateKey
from protocol.limits import Limits
from protocol.model import FrozenModel, parse_model
from protocol.signing import PAYLOAD_TYPE_CONTENT, PAYLOAD_TYPE_HEADER
from protocol.steps import StepToken

ENVELOPE_FORMAT: Final = "rogatory-envelope/1"
CONTENT_FORMAT: Final = "rogatory-content/1"
MAGIC: Final = b"RGTY\x01"
CONTENT_KEY_BYTES: Final = 32
NONCE_BYTES: Final = 24
_U32 = struct.Struct(">I")
_PREFIX_BYTES = len(MAGIC) + KEY_ID_BYTES + _U32.size
_COMMITMENT_PERSON = b"rgty-key-commit"  # BLAKE2b personalisation, at most 16 bytes
_AD_TYPE = "application/vnd.rogatory.content-ad+json; version=1"
MAX_LOG_CHECKPOINT_CHARS: Final = 16 * 1024
"""Characters of the sender's checkpoint note in a header: one Ed25519 log signature makes it under 1 KiB;
16 KiB leaves room for a long origin and a post-quantum log signature (about 5 kB): a quarter of the header limit."""

RandomBytes = Callable[[int], bytes]


# -- values -------------------------------------------------------------------


class WrappedKey(FrozenModel):
    """The content key, sealed for one agency's encryption key."""

    agency: AgencyIdField
    key_id: KeyIdField
    wrapped: Base64Bytes


class ContentBinding(FrozenModel):
    """What both the AEAD and the content signature bind the document to."""

    message_id: MessageIdField
    sender: AgencyIdField
    sender_key: KeyIdField
    recipients: tuple[AgencyIdField, ...]
    recipient_keys: tuple[KeyIdField, ...]
    message_type: str = Field(pattern=r"^[A-Z][A-Z_]{1,63}$")
    case_id: CaseIdField
    created_at: UtcTimestamp
    expires_at: UtcTimestamp


class EnvelopeHeader(FrozenModel):
    """The signed, cleartext part: everything the gateway may see."""

    format: Literal["rogatory-envelope/1"]
    message_id: MessageIdField
    sender: AgencyIdField
    sender_key: KeyIdField
    recipients: tuple[WrappedKey, ...] = Field(min_length=1)
    archive: WrappedKey | None = None
    message_type: str = Field(pattern=r"^[A-Z][A-Z_]{1,63}$")
    case_id: CaseIdField
    created_at: UtcTimestamp
    expires_at: UtcTimestamp
    nonce: Base64Bytes
    ciphertext_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    ciphertext_length: int = Field(ge=0)
    key_commitment: str = Field(pattern=r"^[0-9a-f]{64}$")
    attachments: tuple[AttachmentCommitment, ...] | None = Field(default=None, min_length=1)
    log_checkpoint: str | None = Field(default=None, min_length=1, max_length=MAX_LOG_CHECKPOINT_CHARS)
    """The latest audit-log checkpoint the sender witnessed (a signed note, the log's lines only); absent if none."""

    @model_validator(mode="after")
    def _well_formed(self) -> EnvelopeHeader:
        check_attachment_ids([attachment.attachment_id for attachment in self.attachments or ()])
        if self.log_checkpoint is not None:
            try:
                SignedCheckpoint.parse(self.log_checkpoint)
            except ProtocolError as exc:
                raise ValueError(f"log_checkpoint is not a checkpoint note: {exc.detail}") from exc
        agencies = [wrapped.agency for wrapped in self.recipients]
        if len(set(agencies)) != len(agencies):
            raise ValueError("a recipient is listed twice")
        if self.archive is not None and self.archive.agency != self.sender:
            raise ValueError("the archive copy must be wrapped for the sender")
        if len(self.nonce) != NONCE_BYTES:
            raise ValueError(f"nonce must be {NONCE_BYTES} bytes")
        return self

    @property
    def recipient_agencies(self) -> tuple[AgencyId, ...]:
        """The listed recipients, in order."""
        return tuple(wrapped.agency for wrapped in self.recipients)

    def binding(self) -> ContentBinding:
        """The binding fields of this header."""
        return ContentBinding(
            message_id=self.message_id,
            sender=self.sender,
            sender_key=self.sender_key,
            recipients=self.recipient_agencies,
            recipient_keys=tuple(wrapped.key_id for wrapped in self.recipients),
            message_type=self.message_type,
            case_id=self.case_id,
            created_at=self.created_at,
            expires_at=self.expires_at,
        )


class ContentStatement(FrozenModel):
    """What the sender signs about the content: the binding and the document's digest."""

    format: Literal["rogatory-content/1"]
    binding: ContentBinding
    document_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    attachments: tuple[AttachmentKey, ...] | None = Field(default=None, min_length=1)


@dataclass(frozen=True, slots=True)
class ContentProof:
    """The sender's signed content statement, exactly as signed: what proves who said which document.

    The sender gets it from `seal_with_content_proof`, a recipient from
    `OpenedMessage`; both keep it with the message (it holds the attachment
    keys: as confidential as the document). `verify_content_proof` checks it.
    """

    statement: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class SealedMessage:
    """A sealed message as framed bytes; nothing in it is trusted until authenticated."""

    signer_key_id: KeyId
    header_bytes: bytes
    header_signature: bytes
    ciphertext: bytes

    def to_bytes(self) -> bytes:
        """The wire form."""
        return b"".join(
            (
                MAGIC,
                bytes.fromhex(self.signer_key_id),
                _U32.pack(len(self.header_bytes)),
                self.header_bytes,
                self.header_signature,
                self.ciphertext,
            )
        )

    @classmethod
    def from_bytes(cls, raw: bytes, limits: Limits) -> SealedMessage:
        """Split the wire form into its parts. Checks framing and sizes only."""
        if len(raw) > limits.max_sealed_bytes:
            raise LimitExceeded(f"sealed message of {len(raw)} bytes is over the limit of {limits.max_sealed_bytes}")
        if len(raw) < _PREFIX_BYTES + SIGNATURE_BYTES or not raw.startswith(MAGIC):
            raise MalformedInput("not a Rogatory sealed message (bad magic or too short)")
        signer_key_id = parse_key_id(raw[len(MAGIC) : len(MAGIC) + KEY_ID_BYTES].hex())
        (header_length,) = _U32.unpack_from(raw, len(MAGIC) + KEY_ID_BYTES)
        if header_length > limits.max_header_bytes:
            raise LimitExceeded(f"header of {header_length} bytes is over the limit of {limits.max_header_bytes}")
        header_end = _PREFIX_BYTES + header_length
        if len(raw) < header_end + SIGNATURE_BYTES:
            raise MalformedInput("sealed message is truncated inside its header or signature")
        return cls(
            signer_key_id=signer_key_id,
            header_bytes=raw[_PREFIX_BYTES:header_end],
            header_signature=raw[header_end : header_end + SIGNATURE_BYTES],
            ciphertext=raw[header_end + SIGNATURE_BYTES :],
        )

    @property
    def digest(self) -> str:
        """SHA-256 (hex) of the header bytes the sender signed."""
        return sha256_hex(self.header_bytes)


_STEP: Final = StepToken("protocol.envelope")
"""Only this module's checks hold it: `AuthenticatedHeader`, `FreshHeader` and `OpenedMessage` are theirs alone."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthenticatedHeader:
    """A header whose signature verified under a key the directory gives its sender; made by `authenticate_header`."""

    header: EnvelopeHeader
    sender: AgencyEntry
    sender_key: PublishedSigningKey
    digest: str
    sealed: SealedMessage
    """The sealed message the header came with: its ciphertext is the one the header commits to."""
    step: object = field(repr=False, compare=False)

    def __post_init__(self) -> None:
        _STEP.admit(self.step, AuthenticatedHeader)


@dataclass(frozen=True, slots=True, kw_only=True)
class FreshHeader:
    """An authenticated header inside its lifetime and the replay window; made by `check_freshness`."""

    authenticated: AuthenticatedHeader
    step: object = field(repr=False, compare=False)

    def __post_init__(self) -> None:
        _STEP.admit(self.step, FreshHeader)

    @property
    def header(self) -> EnvelopeHeader:
        """The header, authenticated and fresh."""
        return self.authenticated.header


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenedMessage:
    """A message a recipient has authenticated and decrypted; made by `open_authenticated`."""

    header: EnvelopeHeader
    digest: str
    document: bytes
    content_statement: bytes
    content_signature: bytes
    attachments: tuple[AttachmentKey, ...] = ()
    """The key and digests of each attachment body the sender committed to."""
    step: object = field(repr=False, compare=False)

    def __post_init__(self) -> None:
        _STEP.admit(self.step, OpenedMessage)


@dataclass(frozen=True, slots=True)
class Recipient:
    """An agency and the encryption key the sender wraps the content key to."""

    agency: AgencyId
    key: EncryptionPublicKey


# -- sealing --------------------------------------------------------------------


def key_commitment(content_key: bytes) -> str:
    """BLAKE2b-256 keyed with the content key over a fixed label: commits to the key."""
    return nacl.hash.blake2b(
        b"rogatory key commitment v1",
        key=content_key,
        digest_size=32,
        person=_COMMITMENT_PERSON,
        encoder=nacl.encoding.HexEncoder,
    ).decode("ascii")


def _associated_data(binding: ContentBinding) -> bytes:
    return pae(_AD_TYPE, binding.canonical_bytes())


def seal(
    document: bytes,
    *,
    message_id: MessageId,
    sender: AgencyId,
    signing_key: SigningPrivateKey,
    recipients: Sequence[Recipient],
    archive_key: EncryptionPublicKey | None,
    message_type: str,
    case_id: CaseId,
    created_at: datetime,
    expires_at: datetime,
    limits: Limits,
    random_bytes: RandomBytes = nacl.utils.random,
    attachments: Sequence[AttachmentKey] = (),
    log_checkpoint: str | None = None,
) -> SealedMessage:
    """Encrypt and sign `document` for `recipients` (see `seal_with_content_proof`)."""
    sealed, _ = seal_with_content_proof(
        document,
        message_id=message_id,
        sender=sender,
        signing_key=signing_key,
        recipients=recipients,
        archive_key=archive_key,
        message_type=message_type,
        case_id=case_id,
        created_at=created_at,
        expires_at=expires_at,
        limits=limits,
        random_bytes=random_bytes,
        attachments=attachments,
        log_checkpoint=log_checkpoint,
    )
    return sealed


def seal_with_content_proof(
    document: bytes,
    *,
    message_id: MessageId,
    sender: AgencyId,
    signing_key: SigningPrivateKey,
    recipients: Sequence[Recipient],
    archive_key: EncryptionPublicKey | None,
    message_type: str,
    case_id: CaseId,
    created_at: datetime,
    expires_at: datetime,
    limits: Limits,
    random_bytes: RandomBytes = nacl.utils.random,
    attachments: Sequence[AttachmentKey] = (),
    log_checkpoint: str | None = None,
) -> tuple[SealedMessage, ContentProof]:
    """Encrypt and sign `document` for `recipients` (see the module docstring).

    `log_checkpoint` is the sender's latest witnessed checkpoint note, carried
    in the header as the sender's signed view of the audit log.

    In order: `_check_seal_inputs`, wrap a fresh content key for each
    recipient, `_encrypt_content` under the binding, `_sealed_header` over the
    result, and sign its exact bytes.
    """
    _check_seal_inputs(document, recipients, attachments, limits)
    if log_checkpoint is not None:
        _check_log_checkpoint(log_checkpoint)
    content_key = random_bytes(CONTENT_KEY_BYTES)
    nonce = random_bytes(NONCE_BYTES)
    wrapped = tuple(
        WrappedKey(agency=recipient.agency, key_id=recipient.key.key_id, wrapped=recipient.key.wrap(content_key))
        for recipient in recipients
    )
    binding = ContentBinding(
        message_id=message_id,
        sender=sender,
        sender_key=signing_key.key_id,
        recipients=tuple(w.agency for w in wrapped),
        recipient_keys=tuple(w.key_id for w in wrapped),
        message_type=message_type,
        case_id=case_id,
        created_at=truncate_to_millis(created_at),
        expires_at=truncate_to_millis(expires_at),
    )
    ciphertext, proof = _encrypt_content(
        document, binding, attachments, signing_key, nonce=nonce, content_key=content_key
    )
    archive = (
        None
        if archive_key is None
        else WrappedKey(agency=sender, key_id=archive_key.key_id, wrapped=archive_key.wrap(content_key))
    )
    header_bytes = _sealed_header(
        binding,
        wrapped,
        archive,
        attachments,
        nonce=nonce,
        ciphertext=ciphertext,
        content_key=content_key,
        log_checkpoint=log_checkpoint,
    ).canonical_bytes()
    if len(header_bytes) > limits.max_header_bytes:
        raise LimitExceeded(f"header of {len(header_bytes)} bytes is over the limit of {limits.max_header_bytes}")
    sealed = SealedMessage(
        signer_key_id=signing_key.key_id,
        header_bytes=header_bytes,
        header_signature=signing_key.sign(pae(PAYLOAD_TYPE_HEADER, header_bytes)),
        ciphertext=ciphertext,
    )
    return sealed, proof


def _check_seal_inputs(
    document: bytes, recipients: Sequence[Recipient], attachments: Sequence[AttachmentKey], limits: Limits
) -> None:
    """Refuse to seal what no recipient would accept: duplicate attachment ids, too many recipients, too big."""
    try:
        check_attachment_ids([attachment.attachment_id for attachment in attachments])
    except ValueError as exc:
        raise LimitExceeded(str(exc), code=ErrorCode.TOO_MANY_ITEMS) from exc
    if not recipients or len(recipients) > limits.max_recipients:
        raise LimitExceeded(
            f"between 1 and {limits.max_recipients} recipients are allowed, found {len(recipients)}",
            code=ErrorCode.TOO_MANY_ITEMS,
        )
    if len(document) > limits.max_document_bytes:
        raise LimitExceeded(f"document of {len(document)} bytes is over the limit of {limits.max_document_bytes}")


def _check_log_checkpoint(note: str) -> None:
    """Refuse to seal a view of the log no recipient would read: too large, or not a checkpoint note."""
    if len(note) > MAX_LOG_CHECKPOINT_CHARS:
        raise LimitExceeded(f"log checkpoint of {len(note)} characters is over the limit of {MAX_LOG_CHECKPOINT_CHARS}")
    SignedCheckpoint.parse(note)


def _encrypt_content(
    document: bytes,
    binding: ContentBinding,
    attachments: Sequence[AttachmentKey],
    signing_key: SigningPrivateKey,
    *,
    nonce: bytes,
    content_key: bytes,
) -> tuple[bytes, ContentProof]:
    """Sign the content statement (binding, document digest, attachment keys) and encrypt it with the document."""
    statement = ContentStatement(
        format=CONTENT_FORMAT,
        binding=binding,
        document_sha256=sha256_hex(document),
        attachments=tuple(attachments) or None,
    )
    statement_bytes = statement.canonical_bytes()
    signature = signing_key.sign(pae(PAYLOAD_TYPE_CONTENT, statement_bytes))
    plaintext = b"".join((_U32.pack(len(statement_bytes)), statement_bytes, signature, document))
    ciphertext = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        plaintext, _associated_data(binding), nonce, content_key
    )
    return ciphertext, ContentProof(statement=statement_bytes, signature=signature)


def _sealed_header(
    binding: ContentBinding,
    wrapped: tuple[WrappedKey, ...],
    archive: WrappedKey | None,
    attachments: Sequence[AttachmentKey],
    *,
    nonce: bytes,
    ciphertext: bytes,
    content_key: bytes,
    log_checkpoint: str | None,
) -> EnvelopeHeader:
    """The header that commits to the ciphertext, the content key and each attachment body, with the sender's view."""
    return EnvelopeHeader(
        format=ENVELOPE_FORMAT,
        message_id=binding.message_id,
        sender=binding.sender,
        sender_key=binding.sender_key,
        recipients=wrapped,
        archive=archive,
        message_type=binding.message_type,
        case_id=binding.case_id,
        created_at=binding.created_at,
        expires_at=binding.expires_at,
        nonce=nonce,
        ciphertext_sha256=sha256_hex(ciphertext),
        ciphertext_length=len(ciphertext),
        key_commitment=key_commitment(content_key),
        attachments=tuple(attachment.commitment() for attachment in attachments) or None,
        log_checkpoint=log_checkpoint,
    )


# -- authenticating and opening ----------------------------------------------------


def authenticate_header(sealed: SealedMessage, directory: Directory, *, now: datetime) -> AuthenticatedHeader:
    """Verify the header signature, then parse the header and check it against the key's owner.

    Checks, in order: the signer key is in the directory; the signature over
    the exact header bytes verifies; the header parses; the header names the
    key's owner and the key itself; the key was valid when the message was
    created and is not revoked; the ciphertext is the one the header commits to.
    """
    sender, sender_key = directory.agency_signing_key(sealed.signer_key_id)
    sender_key.verifier.verify(pae(PAYLOAD_TYPE_HEADER, sealed.header_bytes), sealed.header_signature)
    header = parse_model(EnvelopeHeader, sealed.header_bytes, what="envelope header", code=ErrorCode.MALFORMED_ENVELOPE)
    if header.sender != sender.agency_id or header.sender_key != sender_key.key_id:
        raise AuthenticationFailed(
            f"header names sender {header.sender} with key {header.sender_key}, "
            f"but key {sender_key.key_id} belongs to {sender.agency_id}",
            code=ErrorCode.SENDER_MISMATCH,
        )
    sender_key.check_usable(created_at=header.created_at, now=now, what="signing")
    if len(sealed.ciphertext) != header.ciphertext_length or not hmac.compare_digest(
        hashlib.sha256(sealed.ciphertext).hexdigest(), header.ciphertext_sha256
    ):
        raise AuthenticationFailed(
            "ciphertext does not match the digest and length in the signed header", code=ErrorCode.CIPHERTEXT_MISMATCH
        )
    return AuthenticatedHeader(
        header=header, sender=sender, sender_key=sender_key, digest=sealed.digest, sealed=sealed, step=_STEP
    )


def check_freshness(authenticated: AuthenticatedHeader, *, now: datetime, limits: Limits) -> FreshHeader:
    """Refuse an envelope from the future, expired, older than the replay window, or too long-lived.

    Also refuse one whose signing key retired longer than `Limits.retired_key_grace`
    ago: `created_at` is the sender's claim, so a rotated-out key could otherwise
    sign new messages dated back into its validity for the whole replay window.
    """
    header = authenticated.header
    if header.expires_at <= header.created_at or header.expires_at - header.created_at > limits.max_message_ttl:
        raise FreshnessViolation(
            f"lifetime from {header.created_at.isoformat()} to {header.expires_at.isoformat()} "
            f"is not within (0, {limits.max_message_ttl}]",
            code=ErrorCode.INVALID_LIFETIME,
        )
    if header.created_at > now + limits.max_clock_skew:
        raise FreshnessViolation(
            f"created at {header.created_at.isoformat()}, more than {limits.max_clock_skew} after now",
            code=ErrorCode.NOT_YET_VALID,
        )
    if now >= header.expires_at:
        raise FreshnessViolation(f"expired at {header.expires_at.isoformat()}", code=ErrorCode.EXPIRED)
    if now - header.created_at > limits.replay_window:
        raise FreshnessViolation(
            f"created at {header.created_at.isoformat()}, older than the replay window of {limits.replay_window}",
            code=ErrorCode.STALE,
        )
    authenticated.sender_key.check_not_retired(now=now, grace=limits.retired_key_grace, what="signing")
    return FreshHeader(authenticated=authenticated, step=_STEP)


def open_sealed(
    sealed: SealedMessage,
    directory: Directory,
    *,
    recipient: AgencyId,
    recipient_keys: Mapping[KeyId, EncryptionPrivateKey],
    now: datetime,
    limits: Limits,
) -> OpenedMessage:
    """Every check of a recipient in one call: `authenticate_header`, `check_freshness`, `open_authenticated`.

    `recipient_keys` are the recipient's private keys by key id (more than one
    while a key is being rotated). `recipient` may be the sender itself,
    opening its archive copy.
    """
    authenticated = authenticate_header(sealed, directory, now=now)
    fresh = check_freshness(authenticated, now=now, limits=limits)
    return open_authenticated(fresh, recipient=recipient, recipient_keys=recipient_keys)


def open_authenticated(
    fresh: FreshHeader, *, recipient: AgencyId, recipient_keys: Mapping[KeyId, EncryptionPrivateKey]
) -> OpenedMessage:
    """Unwrap, check the key commitment, decrypt, verify the content signature and its binding to the header.

    The header is taken as authenticated and fresh (the only way to hold a
    `FreshHeader`); it is not verified again.
    """
    authenticated = fresh.authenticated
    header = authenticated.header
    wrapped = _wrapped_key_for(header, recipient, recipient_keys.keys())
    content_key = recipient_keys[wrapped.key_id].unwrap(wrapped.wrapped)
    if len(content_key) != CONTENT_KEY_BYTES or not hmac.compare_digest(
        key_commitment(content_key), header.key_commitment
    ):
        raise AuthenticationFailed(
            "unwrapped key does not match the header's key commitment", code=ErrorCode.KEY_COMMITMENT_MISMATCH
        )
    binding = header.binding()
    try:
        plaintext = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
            authenticated.sealed.ciphertext, _associated_data(binding), header.nonce, content_key
        )
    except nacl.exceptions.CryptoError as exc:
        raise AuthenticationFailed(
            "ciphertext does not decrypt under the committed key and binding", code=ErrorCode.DECRYPTION_FAILED
        ) from exc
    statement_bytes, signature, document = _split_plaintext(plaintext)
    authenticated.sender_key.verifier.verify(
        pae(PAYLOAD_TYPE_CONTENT, statement_bytes), signature, code=ErrorCode.CONTENT_SIGNATURE_INVALID
    )
    statement = parse_model(
        ContentStatement, statement_bytes, what="content statement", code=ErrorCode.MALFORMED_ENVELOPE
    )
    if statement.binding != binding:
        raise AuthenticationFailed(
            "the signed content statement does not match the header", code=ErrorCode.BINDING_MISMATCH
        )
    if not hmac.compare_digest(sha256_hex(document), statement.document_sha256):
        raise AuthenticationFailed(
            "document does not match the digest the sender signed", code=ErrorCode.DOCUMENT_DIGEST_MISMATCH
        )
    keys = statement.attachments or ()
    if tuple(key.commitment() for key in keys) != (header.attachments or ()):
        raise AuthenticationFailed(
            "the attachment bodies in the content statement are not the ones the header commits to",
            code=ErrorCode.ATTACHMENT_MISMATCH,
        )
    return OpenedMessage(
        header=header,
        digest=authenticated.digest,
        document=document,
        content_statement=statement_bytes,
        content_signature=signature,
        attachments=keys,
        step=_STEP,
    )


def _wrapped_key_for(header: EnvelopeHeader, agency: AgencyId, key_ids: Collection[KeyId]) -> WrappedKey:
    candidates = list(header.recipients)
    if header.archive is not None and agency == header.sender:
        candidates.append(header.archive)
    mine = [wrapped for wrapped in candidates if wrapped.agency == agency]
    if not mine:
        raise AuthenticationFailed(
            f"{agency} is not a recipient of message {header.message_id}", code=ErrorCode.NOT_A_RECIPIENT
        )
    for wrapped in mine:
        if wrapped.key_id in key_ids:
            return wrapped
    raise AuthenticationFailed(
        f"message {header.message_id} is wrapped for key {mine[0].key_id}, which this recipient does not hold",
        code=ErrorCode.RECIPIENT_KEY_MISMATCH,
    )


def _split_plaintext(plaintext: bytes) -> tuple[bytes, bytes, bytes]:
    if len(plaintext) < _U32.size:
        raise AuthenticationFailed("plaintext is truncated", code=ErrorCode.MALFORMED_ENVELOPE)
    (statement_length,) = _U32.unpack_from(plaintext, 0)
    statement_end = _U32.size + statement_length
    if len(plaintext) < statement_end + SIGNATURE_BYTES:
        raise AuthenticationFailed("plaintext is truncated", code=ErrorCode.MALFORMED_ENVELOPE)
    return (
        plaintext[_U32.size : statement_end],
        plaintext[statement_end : statement_end + SIGNATURE_BYTES],
        plaintext[statement_end + SIGNATURE_BYTES :],
    )


# -- proof to a third party ------------------------------------------------------------


def verify_content_proof(
    statement_bytes: bytes,
    signature: bytes,
    document: bytes,
    directory: Directory,
    *,
    signer_key_id: KeyId,
    now: datetime,
) -> ContentStatement:
    """What a third party runs to check that the sender said `document` (property 2).

    Verifies the signature under `signer_key_id`, then parses the statement and
    checks that it names the key's owner and the document's digest.
    """
    sender, key = directory.agency_signing_key(signer_key_id)
    key.verifier.verify(pae(PAYLOAD_TYPE_CONTENT, statement_bytes), signature, code=ErrorCode.CONTENT_SIGNATURE_INVALID)
    statement = parse_model(
        ContentStatement, statement_bytes, what="content statement", code=ErrorCode.MALFORMED_ENVELOPE
    )
    if statement.binding.sender != sender.agency_id or statement.binding.sender_key != signer_key_id:
        raise AuthenticationFailed(
            "statement names a sender or key other than the signer", code=ErrorCode.SENDER_MISMATCH
        )
    key.check_usable(created_at=statement.binding.created_at, now=now, what="signing")
    if not hmac.compare_digest(sha256_hex(document), statement.document_sha256):
        raise AuthenticationFailed("document does not match the signed digest", code=ErrorCode.DOCUMENT_DIGEST_MISMATCH)
    return statement


__all__ = [
    "CONTENT_FORMAT",
    "ENVELOPE_FORMAT",
    "MAX_LOG_CHECKPOINT_CHARS",
    "AuthenticatedHeader",
    "ContentBinding",
    "ContentProof",
    "ContentStatement",
    "EnvelopeHeader",
    "FreshHeader",
    "OpenedMessage",
    "Recipient",
    "SealedMessage",
    "WrappedKey",
    "authenticate_header",
    "check_freshness",
    "key_commitment",
    "open_authenticated",
    "open_sealed",
    "seal",
    "seal_with_content_proof",
    "verify_content_proof",
]
