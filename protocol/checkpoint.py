r"""Log checkpoints as C2SP signed notes: signed by the log, cosigned by witnesses.

Three C2SP specifications fix the bytes, and this module follows them to the
letter:

* c2sp.org/signed-note, §Format: a note is a text ending in a newline, a blank
  line, then one or more lines `— <key name> <base64(key ID || signature)>`
  (em dash U+2014, space). Notes are UTF-8 without ASCII control characters
  other than newline; the text ends at the *last* blank line. Key names are
  non-empty and hold neither spaces nor `+`. §Signatures: the key ID is
  SHA-256(key name || 0x0A || signature type || public key)[:4]; verifiers
  ignore signatures from unknown (name, key ID) pairs and must verify those of
  a known key; a known key's failing signature rejects the note (we take the
  SHOULD as a MUST). §Ed25519 signatures: type 0x01, Ed25519 over the text.
* c2sp.org/tlog-checkpoint, §Note text: origin, tree size (ASCII decimal, no
  leading zeros), base64 root hash, then optional non-empty extension lines.
  §Signatures: clients ignore unknown signatures (key rotation, witnesses).
* c2sp.org/tlog-cosignature, §Format and §Ed25519 signed message: type 0x04;
  the signature line holds key ID || u64 big-endian timestamp || Ed25519
  signature over `cosignature/v1\ntime <timestamp>\n` followed by the whole
  checkpoint text, extension lines included. Timestamps are POSIX seconds and
  must not exceed 2^63 - 1.

Verify, then parse: `verify_checkpoint` finds the log's signature line,
verifies it over the exact text bytes received and only then reads them as a
checkpoint. `SignedCheckpoint.parse` reads a note without verifying anything,
for witnesses and tools that verify next.

Parsing is strict: anything but the canonical encoding (leading zeros, signs,
non-canonical base64, a root that is not 32 bytes, empty lines, control
characters, bad UTF-8) is refused, so that no two parties read one note two
ways. A size-0 checkpoint must carry the empty-tree root.

Errors::

    LimitExceeded (TOO_LARGE)        a note over MAX_NOTE_BYTES
    LimitExceeded (TOO_MANY_ITEMS)   more than MAX_SIGNATURES signature lines
    ProofInvalid (CHECKPOINT_INVALID)  every other malformed note or checkpoint,
                                     a missing or failing signature or cosignature
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from protocol.encoding import b64decode, b64encode
from protocol.errors import (
    AuthenticationFailed,
    ErrorCode,
    LimitExceeded,
    MalformedInput,
    ProofInvalid,
)
from protocol.keys import SigningPrivateKey, SigningPublicKey
from protocol.merkle import EMPTY_ROOT, HASH_BYTES, verify_consistency

MAX_NOTE_BYTES: Final = 1024 * 1024
"""A whole signed note in bytes: a checkpoint with a hundred Ed25519 lines is
under 16 KiB; 1 MiB leaves room for post-quantum signatures (about 5 kB each)."""

MAX_SIGNATURES: Final = 100
"""Signature lines in one note: the spec asks verifiers to accept at least 16;
100 is the limit of Go's golang.org/x/mod/sumdb/note, which logs interoperate with."""

SIGNATURE_TYPE_ED25519: Final = 0x01
SIGNATURE_TYPE_COSIGNATURE_V1: Final = 0x04
KEY_HASH_BYTES: Final = 4
TIMESTAMP_BYTES: Final = 8
ED25519_SIGNATURE_BYTES: Final = 64
MAX_TIMESTAMP: Final = 2**63 - 1
MAX_TREE_SIZE: Final = 2**64 - 1
SIGNATURE_LINE_PREFIX: Final = "\u2014 "
COSIGNATURE_HEADER: Final = b"cosignature/v1\n"

_CANONICAL_DECIMAL = re.compile(r"0|[1-9][0-9]{0,19}")
_CONTROL_CHARACTER = re.compile(r"[\x00-\x09\x0b-\x1f]")


def _refuse(detail: str) -> ProofInvalid:
    return ProofInvalid(detail, code=ErrorCode.CHECKPOINT_INVALID)


def _first_control_character(text: str) -> int | None:
    """The position of the first ASCII control character other than newline, if any."""
    found = _CONTROL_CHARACTER.search(text)
    return None if found is None else found.start()


def _check_line(text: str, what: str) -> None:
    """Refuse an empty line, a newline, a control character or a lone surrogate in `text`."""
    if not text:
        raise _refuse(f"{what} is empty")
    if "\n" in text:
        raise _refuse(f"{what} holds a newline")
    position = _first_control_character(text)
    if position is not None:
        raise _refuse(f"{what} holds control character {ord(text[position]):#04x} at {position}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _refuse(f"{what} is not encodable as UTF-8") from exc


def _check_key_name(key_name: str) -> None:
    """Refuse a key name that signed-note §Format does not allow."""
    if not isinstance(key_name, str):
        raise _refuse(f"key name must be text, found {type(key_name).__name__}")
    _check_line(key_name, "key name")
    if "+" in key_name or any(char.isspace() for char in key_name):
        raise _refuse(f"key name {key_name[:64]!r} holds a space or a plus sign")


def note_key_hash(key_name: str, signature_type: int, public_key: bytes) -> bytes:
    """The 4-byte key ID: SHA-256(key name || 0x0A || signature type || public key)[:4]."""
    _check_key_name(key_name)
    material = key_name.encode("utf-8") + b"\n" + bytes([signature_type]) + public_key
    return hashlib.sha256(material).digest()[:KEY_HASH_BYTES]


@dataclass(frozen=True, slots=True)
class NoteSignature:
    """One signature line of a note: who signed (name and key ID) and the signature bytes."""

    key_name: str
    key_hash: bytes
    signature_bytes: bytes

    def __post_init__(self) -> None:
        _check_key_name(self.key_name)
        if len(self.key_hash) != KEY_HASH_BYTES:
            raise _refuse(f"key ID must be {KEY_HASH_BYTES} bytes, found {len(self.key_hash)}")
        if not self.signature_bytes:
            raise _refuse(f"signature by {self.key_name[:64]!r} is empty")

    def to_line(self) -> str:
        """The signature line, newline included."""
        encoded = b64encode(self.key_hash + self.signature_bytes)
        return f"{SIGNATURE_LINE_PREFIX}{self.key_name} {encoded}\n"

    @classmethod
    def from_line(cls, line: str) -> NoteSignature:
        """Parse one signature line, without its newline."""
        if not line.startswith(SIGNATURE_LINE_PREFIX):
            raise _refuse(f"signature line does not start with an em dash and a space: {line[:64]!r}")
        key_name, separator, encoded = line[len(SIGNATURE_LINE_PREFIX) :].partition(" ")
        if not separator or not encoded:
            raise _refuse(f"signature line has no signature: {line[:64]!r}")
        try:
            raw = b64decode(encoded)
        except MalformedInput as exc:
            raise _refuse(f"signature of {key_name[:64]!r} is not canonical base64") from exc
        if len(raw) <= KEY_HASH_BYTES:
            raise _refuse(f"signature of {key_name[:64]!r} is {len(raw)} bytes, too short")
        return cls(key_name, raw[:KEY_HASH_BYTES], raw[KEY_HASH_BYTES:])


def _check_note_text(body: bytes) -> None:
    """Refuse note text that is not UTF-8, holds control characters or lacks its final newline."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _refuse(f"note text is not UTF-8 at byte {exc.start}") from exc
    if not text.endswith("\n"):
        raise _refuse("note text must end with a newline")
    position = _first_control_character(text)
    if position is not None:
        raise _refuse(f"note text holds control character {ord(text[position]):#04x}")


def _check_signature_count(count: int) -> None:
    if count == 0:
        raise _refuse("a signed note needs at least one signature line")
    if count > MAX_SIGNATURES:
        raise LimitExceeded(
            f"note has {count} signature lines, over the limit of {MAX_SIGNATURES}",
            code=ErrorCode.TOO_MANY_ITEMS,
        )


def _with_signature(signatures: tuple[NoteSignature, ...], signature: NoteSignature) -> tuple[NoteSignature, ...]:
    """`signatures` with `signature` replacing one by the same key, or added at the end."""
    same_key = [s.key_name == signature.key_name and s.key_hash == signature.key_hash for s in signatures]
    if any(same_key):
        return tuple(signature if same else s for s, same in zip(signatures, same_key, strict=True))
    _check_signature_count(len(signatures) + 1)
    return (*signatures, signature)


@dataclass(frozen=True, slots=True)
class SignedNote:
    """A signed note as received: the exact text bytes and its (unverified) signatures."""

    body: bytes
    signatures: tuple[NoteSignature, ...]

    def __post_init__(self) -> None:
        _check_note_text(self.body)
        _check_signature_count(len(self.signatures))

    @classmethod
    def parse(cls, text: bytes | str) -> SignedNote:
        """Split a note into its text and signature lines (signed-note §Format); verify nothing."""
        raw = _note_bytes(text)
        try:
            decoded = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _refuse(f"note is not UTF-8 at byte {exc.start}") from exc
        position = _first_control_character(decoded)
        if position is not None:
            raise _refuse(f"note holds control character {ord(decoded[position]):#04x}")
        split = decoded.rfind("\n\n")
        if split < 0:
            raise _refuse("note has no blank line before its signatures")
        body, signature_block = decoded[: split + 1], decoded[split + 2 :]
        if not signature_block:
            raise _refuse("note has no signature lines after its blank line")
        if not signature_block.endswith("\n"):
            raise _refuse("note does not end with a newline after its signature lines")
        lines = signature_block[:-1].split("\n")
        _check_signature_count(len(lines))
        return cls(body.encode("utf-8"), tuple(NoteSignature.from_line(line) for line in lines))

    def to_text(self) -> str:
        """The note as it travels: text, blank line, signature lines."""
        return self.body.decode("utf-8") + "\n" + "".join(s.to_line() for s in self.signatures)

    def with_signature(self, signature: NoteSignature) -> SignedNote:
        """This note with `signature` added, replacing an earlier one by the same key."""
        return SignedNote(self.body, _with_signature(self.signatures, signature))


def _note_bytes(text: bytes | str) -> bytes:
    """The note as bytes, within the size limit."""
    if isinstance(text, str):
        try:
            raw = text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise _refuse("note holds a lone surrogate") from exc
    else:
        raw = bytes(text)
    if len(raw) > MAX_NOTE_BYTES:
        raise LimitExceeded(f"note of {len(raw)} bytes is over the limit of {MAX_NOTE_BYTES}")
    return raw


def _matching(signatures: tuple[NoteSignature, ...], key_name: str, key_hash: bytes) -> list[NoteSignature]:
    """The signatures that name this exact key; all others are ignored, as §Signatures says."""
    return [s for s in signatures if s.key_name == key_name and s.key_hash == key_hash]


@dataclass(frozen=True, slots=True)
class NoteVerifier:
    """A trusted Ed25519 note key (type 0x01): its name and public key."""

    key_name: str
    public_key: SigningPublicKey

    def __post_init__(self) -> None:
        _check_key_name(self.key_name)

    @property
    def key_hash(self) -> bytes:
        """The key ID this key's signature lines carry."""
        return note_key_hash(self.key_name, SIGNATURE_TYPE_ED25519, self.public_key.raw)

    def verify(self, note: SignedNote) -> bytes:
        """The note's text, once every signature line of this key verifies over it."""
        candidates = _matching(note.signatures, self.key_name, self.key_hash)
        if not candidates:
            raise _refuse(f"note has no signature by key {self.key_name[:64]!r} with ID {self.key_hash.hex()}")
        for candidate in candidates:
            try:
                self.public_key.verify(note.body, candidate.signature_bytes)
            except AuthenticationFailed as exc:
                raise _refuse(
                    f"signature by key {self.key_name[:64]!r} with ID {self.key_hash.hex()} "
                    "does not verify over the note text"
                ) from exc
        return note.body


def sign_note(body: bytes, key_name: str, key: SigningPrivateKey) -> NoteSignature:
    """An Ed25519 note signature (type 0x01) over the note text `body`."""
    _check_note_text(body)
    key_hash = note_key_hash(key_name, SIGNATURE_TYPE_ED25519, key.public_key.raw)
    return NoteSignature(key_name, key_hash, key.sign(body))


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A log's tree head: origin, tree size, root hash, and optional extension lines."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.origin, str):
            raise _refuse(f"origin must be text, found {type(self.origin).__name__}")
        _check_line(self.origin, "origin")
        if isinstance(self.size, bool) or not isinstance(self.size, int):
            raise _refuse(f"tree size must be an integer, found {type(self.size).__name__}")
        if not 0 <= self.size <= MAX_TREE_SIZE:
            raise _refuse(f"tree size must be in 0..2^64-1, found {self.size}")
        if not isinstance(self.root_hash, bytes) or len(self.root_hash) != HASH_BYTES:
            raise _refuse(f"root hash must be {HASH_BYTES} bytes")
        if self.size == 0 and self.root_hash != EMPTY_ROOT:
            raise _refuse(f"a tree of size 0 has root {EMPTY_ROOT.hex()}, found {self.root_hash.hex()}")
        if not isinstance(self.extensions, tuple):
            raise _refuse("extension lines must be a tuple")
        for position, line in enumerate(self.extensions):
            if not isinstance(line, str):
                raise _refuse(f"extension line {position} must be text")
            _check_line(line, f"extension line {position}")

    def body(self) -> bytes:
        """The note text (tlog-checkpoint §Note text): the bytes that are signed."""
        lines = [self.origin, str(self.size), b64encode(self.root_hash), *self.extensions]
        return "".join(line + "\n" for line in lines).encode("utf-8")

    @classmethod
    def parse(cls, body: bytes) -> Checkpoint:
        """Read a checkpoint from its note text, refusing all but the canonical encoding."""
        if len(body) > MAX_NOTE_BYTES:
            raise LimitExceeded(f"checkpoint of {len(body)} bytes is over the limit of {MAX_NOTE_BYTES}")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _refuse(f"checkpoint is not UTF-8 at byte {exc.start}") from exc
        if not text.endswith("\n"):
            raise _refuse("checkpoint text must end with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise _refuse(f"checkpoint needs origin, size and root lines, found {len(lines)} lines")
        origin, size_line, root_line, *extensions = lines
        if not _CANONICAL_DECIMAL.fullmatch(size_line):
            raise _refuse(f"tree size is not canonical ASCII decimal: {size_line[:32]!r}")
        try:
            root_hash = b64decode(root_line)
        except MalformedInput as exc:
            raise _refuse(f"root hash is not canonical base64: {root_line[:64]!r}") from exc
        checkpoint = cls(origin, int(size_line), root_hash, tuple(extensions))
        if checkpoint.body() != body:  # parse is the exact inverse of body(), byte for byte
            raise _refuse("checkpoint text is not in canonical form")
        return checkpoint


@dataclass(frozen=True, slots=True)
class SignedCheckpoint:
    """A checkpoint, its note text and its signature lines (verified by whoever holds the keys)."""

    checkpoint: Checkpoint
    signatures: tuple[NoteSignature, ...]
    body: bytes = field(init=False)

    def __post_init__(self) -> None:
        _check_signature_count(len(self.signatures))
        object.__setattr__(self, "body", self.checkpoint.body())

    @classmethod
    def parse(cls, text: bytes | str) -> SignedCheckpoint:
        """Read a checkpoint note without verifying any signature; see `verify_checkpoint`.

        Text notes are remembered (`_parsed_note`): every message a sender seals
        between two checkpoints carries the same note, read at each hop.
        """
        if isinstance(text, str) and len(text) <= REMEMBERED_NOTE_CHARS:
            return _parsed_note(text)
        note = SignedNote.parse(text)
        return cls(Checkpoint.parse(note.body), note.signatures)

    @property
    def note(self) -> SignedNote:
        """The same note, as a generic signed note."""
        return SignedNote(self.body, self.signatures)

    def to_text(self) -> str:
        """The checkpoint note as it travels."""
        return self.note.to_text()

    def with_signature(self, signature: NoteSignature) -> SignedCheckpoint:
        """This checkpoint with `signature` (a cosignature, say) added, or replacing its key's."""
        return SignedCheckpoint(self.checkpoint, _with_signature(self.signatures, signature))

    def signed_only_by(self, key_name: str) -> SignedCheckpoint:
        """This checkpoint with only the signature lines named `key_name` (the log's: what a message header carries)."""
        return SignedCheckpoint(self.checkpoint, tuple(s for s in self.signatures if s.key_name == key_name))


PARSED_NOTES_KEPT: Final = 64
"""Checkpoint notes whose parse is remembered: a value is immutable, so it is the same however often it is read."""
REMEMBERED_NOTE_CHARS: Final = 16 * 1024
"""Only notes up to this long are remembered (a header's note is at most as long): at most 1 MiB of them."""


@functools.lru_cache(maxsize=PARSED_NOTES_KEPT)
def _parsed_note(text: str) -> SignedCheckpoint:
    """`SignedCheckpoint.parse` of a text note (a refused one raises each time: errors are not remembered)."""
    note = SignedNote.parse(text)
    return SignedCheckpoint(Checkpoint.parse(note.body), note.signatures)


def sign_checkpoint(checkpoint: Checkpoint, key_name: str, key: SigningPrivateKey) -> SignedCheckpoint:
    """The log's Ed25519 note signature over `checkpoint` (key name should be the origin)."""
    return SignedCheckpoint(checkpoint, (sign_note(checkpoint.body(), key_name, key),))


def verify_checkpoint(
    note_text: bytes | str,
    log_key_name: str,
    log_key: SigningPublicKey,
    *,
    origin: str | None = None,
) -> Checkpoint:
    """The checkpoint in `note_text`, once the log key's signature verifies over its exact text.

    Signatures by other keys are ignored. Pass `origin` when the log is known:
    a checkpoint of any other origin is then refused.
    """
    note = SignedNote.parse(note_text)
    body = NoteVerifier(log_key_name, log_key).verify(note)
    checkpoint = Checkpoint.parse(body)
    if origin is not None and checkpoint.origin != origin:
        raise _refuse(f"checkpoint origin is {checkpoint.origin[:64]!r}, expected {origin[:64]!r}")
    return checkpoint


def cosignature_message(body: bytes, timestamp: int) -> bytes:
    """What a witness signs (tlog-cosignature §Ed25519 signed message)."""
    _check_timestamp(timestamp)
    return COSIGNATURE_HEADER + b"time %d\n" % timestamp + body


def _check_timestamp(timestamp: int) -> None:
    if isinstance(timestamp, bool) or not isinstance(timestamp, int):
        raise _refuse(f"cosignature timestamp must be an integer, found {type(timestamp).__name__}")
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise _refuse(f"cosignature timestamp must be in 0..2^63-1, found {timestamp}")


def cosignature_key_hash(witness_name: str, witness_public_key: SigningPublicKey) -> bytes:
    """The key ID of a witness's Ed25519 cosignature lines (type 0x04)."""
    return note_key_hash(witness_name, SIGNATURE_TYPE_COSIGNATURE_V1, witness_public_key.raw)


def cosign_checkpoint(
    signed_checkpoint: SignedCheckpoint,
    witness_name: str,
    witness_key: SigningPrivateKey,
    timestamp: int,
) -> NoteSignature:
    """A witness's cosignature/v1 line for the checkpoint, at `timestamp` (POSIX seconds).

    The witness must have verified the log's signature and the checkpoint's
    consistency with what it saw before first.
    """
    message = cosignature_message(signed_checkpoint.body, timestamp)
    signature = timestamp.to_bytes(TIMESTAMP_BYTES, "big") + witness_key.sign(message)
    key_hash = cosignature_key_hash(witness_name, witness_key.public_key)
    return NoteSignature(witness_name, key_hash, signature)


def verify_cosignature(
    signed_checkpoint: SignedCheckpoint,
    witness_name: str,
    witness_public_key: SigningPublicKey,
) -> int:
    """The timestamp of the witness's cosignature, once every line of that witness verifies.

    With several lines of the same witness, all must verify and the latest
    timestamp is returned. Whether it is recent enough is the caller's call.
    """
    key_hash = cosignature_key_hash(witness_name, witness_public_key)
    candidates = _matching(signed_checkpoint.signatures, witness_name, key_hash)
    if not candidates:
        raise _refuse(f"no cosignature by witness {witness_name[:64]!r} with ID {key_hash.hex()}")
    latest = 0
    for candidate in candidates:
        raw = candidate.signature_bytes
        if len(raw) != TIMESTAMP_BYTES + ED25519_SIGNATURE_BYTES:
            raise _refuse(
                f"cosignature by {witness_name[:64]!r} must be "
                f"{TIMESTAMP_BYTES + ED25519_SIGNATURE_BYTES} bytes, found {len(raw)}"
            )
        timestamp = int.from_bytes(raw[:TIMESTAMP_BYTES], "big")
        message = cosignature_message(signed_checkpoint.body, timestamp)
        try:
            witness_public_key.verify(message, raw[TIMESTAMP_BYTES:])
        except AuthenticationFailed as exc:
            raise _refuse(f"cosignature by witness {witness_name[:64]!r} at time {timestamp} does not verify") from exc
        latest = max(latest, timestamp)
    return latest


def check_one_history(ours: Checkpoint, theirs: Checkpoint, proof: Sequence[bytes]) -> None:
    """Raise `ProofInvalid` unless two checkpoints of one log are views of one append-only history.

    Equal sizes need equal roots (`proof` is ignored); otherwise `proof` must
    be the consistency proof (RFC 9162 2.1.4) from the smaller tree to the
    larger, verified against both roots. Checkpoints of two origins are not
    views of one log and are refused too.
    """
    if ours.origin != theirs.origin:
        raise _refuse(f"checkpoints of two logs: {ours.origin[:64]!r} and {theirs.origin[:64]!r}")
    if ours.size == theirs.size:
        if ours.root_hash != theirs.root_hash:
            raise _refuse(f"two checkpoints of size {ours.size} with different roots")
        return
    old, new = (ours, theirs) if ours.size < theirs.size else (theirs, ours)
    try:
        verify_consistency(old.size, new.size, old.root_hash, new.root_hash, proof)
    except ProofInvalid as exc:
        raise _refuse(f"no valid consistency proof from size {old.size} to {new.size}: {exc.detail}") from exc


def is_fork(a: Checkpoint, b: Checkpoint) -> bool:
    """Whether two checkpoints of one log prove a split view: same origin and size, other root."""
    return a.origin == b.origin and a.size == b.size and a.root_hash != b.root_hash


__all__ = [
    "COSIGNATURE_HEADER",
    "KEY_HASH_BYTES",
    "MAX_NOTE_BYTES",
    "MAX_SIGNATURES",
    "MAX_TIMESTAMP",
    "MAX_TREE_SIZE",
    "SIGNATURE_LINE_PREFIX",
    "SIGNATURE_TYPE_COSIGNATURE_V1",
    "SIGNATURE_TYPE_ED25519",
    "Checkpoint",
    "NoteSignature",
    "NoteVerifier",
    "SignedCheckpoint",
    "SignedNote",
    "check_one_history",
    "cosign_checkpoint",
    "cosignature_key_hash",
    "cosignature_message",
    "is_fork",
    "note_key_hash",
    "sign_checkpoint",
    "sign_note",
    "verify_checkpoint",
    "verify_cosignature",
]
