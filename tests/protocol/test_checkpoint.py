"""Checkpoints as C2SP signed notes: known answers, round trips, tampering and strict parsing.

Known answers come from `vectors/c2sp_signed_note.json` (Go's
golang.org/x/mod/sumdb/note tests, transparency-dev/formats tests and the
C2SP specifications' own examples; see its `_source` fields).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.checkpoint import (
    MAX_NOTE_BYTES,
    MAX_SIGNATURES,
    SIGNATURE_TYPE_COSIGNATURE_V1,
    SIGNATURE_TYPE_ED25519,
    Checkpoint,
    NoteSignature,
    NoteVerifier,
    SignedCheckpoint,
    SignedNote,
    cosign_checkpoint,
    cosignature_key_hash,
    cosignature_message,
    is_fork,
    note_key_hash,
    sign_checkpoint,
    sign_note,
    verify_checkpoint,
    verify_cosignature,
)
from protocol.errors import ErrorCode, LimitExceeded, ProofInvalid, ProtocolError
from protocol.keys import SigningPrivateKey, SigningPublicKey
from protocol.merkle import EMPTY_ROOT, leaf_hash

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parent / "vectors" / "c2sp_signed_note.json").read_text(encoding="utf-8")
)
GO_NOTE = VECTORS["go_sumdb_note"]
SUMDB = VECTORS["go_sumdb_checkpoint"]
SPEC = VECTORS["c2sp_examples"]

LOG_NAME = "rogatory.example/log"
LOG_KEY = SigningPrivateKey(bytes(range(32)))
WITNESS_NAME = "witness.example/w1"
WITNESS_KEY = SigningPrivateKey(bytes(range(32, 64)))
OTHER_KEY = SigningPrivateKey(bytes(range(64, 96)))
ROOT = leaf_hash(b"root")
CHECKPOINT = Checkpoint(LOG_NAME, 1234, ROOT)
TIMESTAMP = 1_700_000_000


def go_vkey(vkey: str) -> tuple[str, bytes, int, bytes]:
    """Name, key ID, signature type and public key of a Go verifier key."""
    name, key_id, encoded = vkey.split("+", 2)
    raw = base64.b64decode(encoded)
    return name, bytes.fromhex(key_id), raw[0], raw[1:]


def go_skey(skey: str) -> tuple[str, bytes, SigningPrivateKey]:
    """Name, key ID and Ed25519 key of a Go signer key."""
    private, key, name, key_id, encoded = skey.split("+", 4)
    assert (private, key) == ("PRIVATE", "KEY")
    raw = base64.b64decode(encoded)
    assert raw[0] == SIGNATURE_TYPE_ED25519
    return name, bytes.fromhex(key_id), SigningPrivateKey(raw[1:])


def go_verifier(vkey: str) -> NoteVerifier:
    name, _, signature_type, public_key = go_vkey(vkey)
    assert signature_type == SIGNATURE_TYPE_ED25519
    return NoteVerifier(name, SigningPublicKey(public_key))


def signed_text(checkpoint: Checkpoint = CHECKPOINT) -> str:
    return sign_checkpoint(checkpoint, LOG_NAME, LOG_KEY).to_text()


def assert_refused(text: bytes | str, code: ErrorCode = ErrorCode.CHECKPOINT_INVALID) -> None:
    with pytest.raises(ProtocolError) as caught:
        verify_checkpoint(text, LOG_NAME, LOG_KEY.public_key)
    assert caught.value.code is code, caught.value


# -- known answers -------------------------------------------------------------


def test_note_signature_reproduces_go_sumdb_note_byte_for_byte() -> None:
    """Signing Go's test text with Go's test key gives exactly Go's signed note (TestSign)."""
    name, key_id, key = go_skey(GO_NOTE["skey"])
    signature = sign_note(GO_NOTE["text"].encode(), name, key)
    assert signature.key_hash == key_id
    assert SignedNote(GO_NOTE["text"].encode(), (signature,)).to_text() == GO_NOTE["signed"]


def test_go_signed_note_verifies_under_go_verifier_key() -> None:
    """Go's signed note parses, and the note key from Go's vkey verifies it (TestOpen)."""
    note = SignedNote.parse(GO_NOTE["signed"])
    assert go_verifier(GO_NOTE["vkey"]).verify(note) == GO_NOTE["text"].encode()


def test_key_ids_follow_the_signed_note_recommendation() -> None:
    """Key ID = SHA-256(name || 0x0A || type || key)[:4], for every published key pair and vkey."""
    for skey, vkey in VECTORS["go_formats_keys"]["pairs"]:
        name, key_id, key = go_skey(skey)
        assert go_vkey(vkey) == (name, key_id, SIGNATURE_TYPE_ED25519, key.public_key.raw)
        assert note_key_hash(name, SIGNATURE_TYPE_ED25519, key.public_key.raw) == key_id
        assert NoteVerifier(name, key.public_key).key_hash == key_id
    for vkey in [GO_NOTE["vkey"], GO_NOTE["other_vkey"], SUMDB["log_vkey"], *SUMDB["extra_vkeys"]]:
        name, key_id, signature_type, public_key = go_vkey(vkey)
        assert note_key_hash(name, signature_type, public_key) == key_id, name


def test_cosignature_key_id_uses_signature_type_4() -> None:
    """A published Ed25519 cosignature/v1 vkey (type 0x04) carries the key ID we derive."""
    name, key_id, signature_type, public_key = go_vkey(VECTORS["cosignature_key_ids"]["vkeys"][0])
    assert signature_type == SIGNATURE_TYPE_COSIGNATURE_V1
    assert cosignature_key_hash(name, SigningPublicKey(public_key)) == key_id
    assert note_key_hash(name, SIGNATURE_TYPE_ED25519, public_key) != key_id
    name, key_id, signature_type, public_key = go_vkey(VECTORS["cosignature_key_ids"]["vkeys"][1])
    assert (signature_type, note_key_hash(name, signature_type, public_key)) == (1, key_id)


def test_real_sumdb_checkpoint_verifies_and_parses() -> None:
    """A real sum.golang.org checkpoint verifies under its published key and reads as published."""
    _, _, _, public_key = go_vkey(SUMDB["log_vkey"])
    checkpoint = verify_checkpoint(
        SUMDB["note"], "sum.golang.org", SigningPublicKey(public_key), origin=SUMDB["origin"]
    )
    assert checkpoint == Checkpoint(SUMDB["origin"], SUMDB["size"], base64.b64decode(SUMDB["root_hash_base64"]))
    assert SignedCheckpoint.parse(SUMDB["note"]).to_text() == SUMDB["note"]


def test_checkpoint_of_another_origin_is_refused() -> None:
    """A log key's valid signature over a checkpoint of another origin is refused when one is expected."""
    _, _, _, public_key = go_vkey(SUMDB["log_vkey"])
    with pytest.raises(ProofInvalid, match=r"checkpoint origin is 'go\.sum database tree'"):
        verify_checkpoint(SUMDB["note"], "sum.golang.org", SigningPublicKey(public_key), origin="other.example/log")


def test_other_signers_lines_are_ignored_but_do_not_stand_in_for_the_log() -> None:
    """With extra signatures on the sumdb checkpoint, each key verifies only its own line."""
    note = SUMDB["note"] + "".join(SUMDB["extra_signature_lines"])
    _, _, _, log_public = go_vkey(SUMDB["log_vkey"])
    assert verify_checkpoint(note, "sum.golang.org", SigningPublicKey(log_public)).size == SUMDB["size"]
    for vkey in SUMDB["extra_vkeys"]:
        verifier = go_verifier(vkey)
        assert verify_checkpoint(note, verifier.key_name, verifier.public_key).size == SUMDB["size"]
    witness = go_verifier(SUMDB["extra_vkeys"][2])
    # 'random1' carries the witness's signature bytes, under a name whose key ID differs.
    with pytest.raises(ProofInvalid, match="no signature by key 'random1'"):
        verify_checkpoint(note, "random1", witness.public_key)
    with pytest.raises(ProofInvalid, match=r"no signature by key 'sum\.golang\.org'"):
        verify_checkpoint(note, "sum.golang.org", witness.public_key)


def test_signature_by_another_key_is_ignored_but_not_accepted() -> None:
    """Go's two-signer note: each key verifies, and a key with no line of its own is refused."""
    note = SignedNote.parse(GO_NOTE["text"] + "\n" + GO_NOTE["other_signature_line"])
    assert go_verifier(GO_NOTE["other_vkey"]).verify(note) == GO_NOTE["text"].encode()
    with pytest.raises(ProofInvalid, match="no signature by key 'PeterNeumann'"):
        go_verifier(GO_NOTE["vkey"]).verify(note)
    both = SignedNote.parse(GO_NOTE["signed"] + GO_NOTE["other_signature_line"])
    assert go_verifier(GO_NOTE["vkey"]).verify(both) == GO_NOTE["text"].encode()
    impostor = NoteVerifier("EnochRoot", OTHER_KEY.public_key)
    with pytest.raises(ProofInvalid, match="no signature by key 'EnochRoot'"):
        impostor.verify(both)


def test_corrupt_lines_of_unknown_keys_do_not_matter() -> None:
    """Go's TestOpen: duplicated and corrupted lines of a key we do not trust are ignored."""
    peter = GO_NOTE["signed"].split("\n\n")[1]
    enoch = GO_NOTE["other_signature_line"]
    enoch_raw = enoch.encode()
    corrupt = (enoch_raw[:60] + b"ABCD" + enoch_raw[60:]).decode()
    note = SignedNote.parse(GO_NOTE["text"] + "\n" + peter + peter + enoch + enoch + corrupt)
    assert go_verifier(GO_NOTE["vkey"]).verify(note) == GO_NOTE["text"].encode()


def test_invalid_signature_of_the_trusted_key_rejects_the_note() -> None:
    """Go's TestOpen: a line of the trusted key that does not verify rejects the whole note."""
    peter_raw = GO_NOTE["signed"].split("\n\n")[1].encode()
    corrupt = (peter_raw[:60] + b"ABCD" + peter_raw[60:]).decode()
    note = SignedNote.parse(GO_NOTE["text"] + "\n" + GO_NOTE["signed"].split("\n\n")[1] + corrupt)
    with pytest.raises(ProofInvalid, match="does not verify"):
        go_verifier(GO_NOTE["vkey"]).verify(note)


def test_malformed_go_notes_are_refused() -> None:
    """Go's TestOpen bad messages: no signatures, no final newline, bad names, stray lines, bad bytes."""
    text = GO_NOTE["text"]
    bad = [(text + suffix).encode() for suffix in GO_NOTE["malformed_after_text"]]
    bad += [bytes.fromhex(prefix) + GO_NOTE["signed"].encode() for prefix in GO_NOTE["malformed_prefixes_hex"]]
    for message in bad:
        with pytest.raises(ProofInvalid) as caught:
            SignedNote.parse(message)
        assert caught.value.code is ErrorCode.CHECKPOINT_INVALID


def test_spec_example_checkpoint_and_cosignature_have_the_specified_layout() -> None:
    """The C2SP example parses; its cosignature line is key ID, 8-byte timestamp and 64-byte signature."""
    signed = SignedCheckpoint.parse(SPEC["checkpoint_note"])
    assert signed.checkpoint == Checkpoint(SPEC["origin"], SPEC["size"], base64.b64decode(SPEC["root_hash_base64"]))
    assert signed.to_text() == SPEC["checkpoint_note"]
    cosignature = signed.signatures[1]
    assert cosignature.key_name == SPEC["witness_name"]
    assert cosignature.key_hash.hex() == SPEC["witness_key_id"]
    assert len(cosignature.signature_bytes) == 8 + 64
    assert int.from_bytes(cosignature.signature_bytes[:8], "big") == SPEC["cosignature_timestamp"]


def test_cosigned_message_matches_the_spec_example() -> None:
    """The message a witness signs is byte for byte the one tlog-cosignature shows."""
    body = SignedCheckpoint.parse(SPEC["checkpoint_note"]).body
    message = cosignature_message(body, SPEC["cosignature_timestamp"])
    assert message == SPEC["cosigned_message"].encode()


# -- round trips ---------------------------------------------------------------


def test_signed_checkpoint_round_trips() -> None:
    """Sign, write, parse and verify give back the same checkpoint and the same text."""
    checkpoint = Checkpoint(LOG_NAME, 42, ROOT, ("extension one", "extension two"))
    text = sign_checkpoint(checkpoint, LOG_NAME, LOG_KEY).to_text()
    assert text.startswith(f"{LOG_NAME}\n42\n{base64.b64encode(ROOT).decode()}\nextension one\n")
    assert verify_checkpoint(text, LOG_NAME, LOG_KEY.public_key, origin=LOG_NAME) == checkpoint
    parsed = SignedCheckpoint.parse(text.encode())
    assert parsed.checkpoint == checkpoint
    assert parsed.to_text() == text
    assert parsed.body == checkpoint.body()


def test_empty_tree_checkpoint_round_trips() -> None:
    """A size-0 checkpoint with the empty-tree root is written as `0` and reads back."""
    checkpoint = Checkpoint(LOG_NAME, 0, EMPTY_ROOT)
    assert checkpoint.body().split(b"\n")[1] == b"0"
    assert verify_checkpoint(signed_text(checkpoint), LOG_NAME, LOG_KEY.public_key) == checkpoint


origin_text = st.text(alphabet=st.characters(min_codepoint=0x20, exclude_categories=["Cs"]), min_size=1, max_size=40)


@settings(max_examples=200, deadline=None)
@given(
    origin=origin_text,
    size=st.integers(1, 2**64 - 1),
    root=st.binary(min_size=32, max_size=32),
    extensions=st.lists(origin_text, max_size=3),
)
def test_any_checkpoint_round_trips_through_its_body_and_note(
    origin: str, size: int, root: bytes, extensions: list[str]
) -> None:
    """Every valid checkpoint's body parses back to it, and its signed note verifies to it."""
    checkpoint = Checkpoint(origin, size, root, tuple(extensions))
    assert Checkpoint.parse(checkpoint.body()) == checkpoint
    text = sign_checkpoint(checkpoint, LOG_NAME, LOG_KEY).to_text()
    assert verify_checkpoint(text, LOG_NAME, LOG_KEY.public_key) == checkpoint


# -- tampering -----------------------------------------------------------------


def test_changing_any_byte_of_a_signed_checkpoint_is_detected() -> None:
    """Flipping any bit of any byte of the note (text, blank line or signature line) is refused."""
    raw = signed_text(Checkpoint(LOG_NAME, 1234, ROOT, ("ext",))).encode()
    for position in range(len(raw)):
        for mask in (0x01, 0x20):
            tampered = raw[:position] + bytes([raw[position] ^ mask]) + raw[position + 1 :]
            with pytest.raises(ProtocolError):
                verify_checkpoint(tampered, LOG_NAME, LOG_KEY.public_key)


@settings(max_examples=200, deadline=None)
@given(position=st.integers(0, 63), mask=st.integers(1, 255))
def test_changing_any_byte_of_the_signature_is_detected(position: int, mask: int) -> None:
    """Any change to the Ed25519 signature bytes, re-encoded canonically, fails to verify."""
    signed = sign_checkpoint(CHECKPOINT, LOG_NAME, LOG_KEY)
    original = signed.signatures[0]
    wrong = bytearray(original.signature_bytes)
    wrong[position] ^= mask
    forged = NoteSignature(original.key_name, original.key_hash, bytes(wrong))
    tampered = SignedCheckpoint(CHECKPOINT, (forged,)).to_text()
    with pytest.raises(ProofInvalid, match="does not verify"):
        verify_checkpoint(tampered, LOG_NAME, LOG_KEY.public_key)


def test_signature_by_another_key_under_the_log_name_is_ignored() -> None:
    """A line with the log's name but another key's ID is not the log's: no log signature found."""
    forged = sign_checkpoint(CHECKPOINT, LOG_NAME, OTHER_KEY).to_text()
    with pytest.raises(ProofInvalid, match="no signature by key"):
        verify_checkpoint(forged, LOG_NAME, LOG_KEY.public_key)


def test_signature_is_checked_before_the_body_is_parsed() -> None:
    """Verify, then parse: an unsigned non-checkpoint fails on the signature; a signed one on the body."""
    body = b"if this is a valid checkpoint then I'll eat my hat\n"
    foreign = SignedNote(body, (sign_note(body, "someone", OTHER_KEY),)).to_text()
    with pytest.raises(ProofInvalid, match="no signature by key"):
        verify_checkpoint(foreign, LOG_NAME, LOG_KEY.public_key)
    signed = SignedNote(body, (sign_note(body, LOG_NAME, LOG_KEY),)).to_text()
    with pytest.raises(ProofInvalid, match="checkpoint needs origin, size and root lines"):
        verify_checkpoint(signed, LOG_NAME, LOG_KEY.public_key)


def test_log_signature_does_not_pass_as_cosignature_and_back() -> None:
    """Type 0x01 and type 0x04 lines of one key and name have different key IDs and messages."""
    signed = sign_checkpoint(CHECKPOINT, WITNESS_NAME, WITNESS_KEY)
    with pytest.raises(ProofInvalid, match="no cosignature by witness"):
        verify_cosignature(signed, WITNESS_NAME, WITNESS_KEY.public_key)
    cosignature = cosign_checkpoint(signed, WITNESS_NAME, WITNESS_KEY, TIMESTAMP)
    only_cosigned = SignedCheckpoint(CHECKPOINT, (cosignature,))
    with pytest.raises(ProofInvalid, match="no signature by key"):
        verify_checkpoint(only_cosigned.to_text(), WITNESS_NAME, WITNESS_KEY.public_key)


# -- cosignatures --------------------------------------------------------------


def cosigned() -> SignedCheckpoint:
    signed = sign_checkpoint(CHECKPOINT, LOG_NAME, LOG_KEY)
    return signed.with_signature(cosign_checkpoint(signed, WITNESS_NAME, WITNESS_KEY, TIMESTAMP))


def test_cosignature_round_trips_and_returns_its_timestamp() -> None:
    """A cosigned note written and parsed back yields the witness's timestamp and the log's checkpoint."""
    text = cosigned().to_text()
    parsed = SignedCheckpoint.parse(text)
    assert verify_cosignature(parsed, WITNESS_NAME, WITNESS_KEY.public_key) == TIMESTAMP
    assert verify_checkpoint(text, LOG_NAME, LOG_KEY.public_key) == CHECKPOINT
    line = text.split("\n\n")[1].split("\n")[1]
    raw = base64.b64decode(line.split(" ")[2])
    assert raw[:4] == cosignature_key_hash(WITNESS_NAME, WITNESS_KEY.public_key)
    assert raw[4:12] == TIMESTAMP.to_bytes(8, "big")
    WITNESS_KEY.public_key.verify(cosignature_message(CHECKPOINT.body(), TIMESTAMP), raw[12:])


def test_tampered_cosignature_is_refused() -> None:
    """Changing any bit of the cosignature line is refused, whether it breaks the line or the signature."""
    text = cosigned().to_text()
    start = text.encode().index(f"\u2014 {WITNESS_NAME} ".encode())
    raw = text.encode()
    for position in range(start, len(raw) - 1):
        tampered = raw[:position] + bytes([raw[position] ^ 0x01]) + raw[position + 1 :]
        with pytest.raises(ProtocolError):
            verify_cosignature(SignedCheckpoint.parse(tampered), WITNESS_NAME, WITNESS_KEY.public_key)


def test_cosignature_with_a_changed_timestamp_is_refused() -> None:
    """The timestamp is signed: moving it by one second breaks the cosignature."""
    cosignature = cosigned().signatures[1]
    moved = (TIMESTAMP + 1).to_bytes(8, "big") + cosignature.signature_bytes[8:]
    forged = NoteSignature(cosignature.key_name, cosignature.key_hash, moved)
    with pytest.raises(ProofInvalid, match="at time 1700000001 does not verify"):
        verify_cosignature(cosigned().with_signature(forged), WITNESS_NAME, WITNESS_KEY.public_key)


def test_cosignature_timestamp_beyond_2_63_is_refused() -> None:
    """tlog-cosignature: a timestamp must not exceed 2^63 - 1, to sign or to verify."""
    with pytest.raises(ProofInvalid, match=r"0\.\.2\^63-1"):
        cosign_checkpoint(cosigned(), WITNESS_NAME, WITNESS_KEY, 2**63)
    with pytest.raises(ProofInvalid, match=r"0\.\.2\^63-1"):
        cosign_checkpoint(cosigned(), WITNESS_NAME, WITNESS_KEY, -1)
    cosignature = cosigned().signatures[1]
    far = (2**63).to_bytes(8, "big") + cosignature.signature_bytes[8:]
    forged = NoteSignature(cosignature.key_name, cosignature.key_hash, far)
    with pytest.raises(ProofInvalid, match=r"0\.\.2\^63-1"):
        verify_cosignature(cosigned().with_signature(forged), WITNESS_NAME, WITNESS_KEY.public_key)


def test_cosignature_covers_extension_lines() -> None:
    """A cosignature over a checkpoint with extension lines fails once an extension changes."""
    checkpoint = Checkpoint(LOG_NAME, 7, ROOT, ("extension",))
    signed = sign_checkpoint(checkpoint, LOG_NAME, LOG_KEY)
    cosignature = cosign_checkpoint(signed, WITNESS_NAME, WITNESS_KEY, TIMESTAMP)
    changed = SignedCheckpoint(Checkpoint(LOG_NAME, 7, ROOT, ("extensioN",)), (cosignature,))
    with pytest.raises(ProofInvalid, match="does not verify"):
        verify_cosignature(changed, WITNESS_NAME, WITNESS_KEY.public_key)


def test_cosignature_of_another_witness_is_ignored_but_not_accepted() -> None:
    """Another key's cosignature under the same witness name is not this witness's cosignature."""
    signed = sign_checkpoint(CHECKPOINT, LOG_NAME, LOG_KEY)
    other = signed.with_signature(cosign_checkpoint(signed, WITNESS_NAME, OTHER_KEY, TIMESTAMP))
    with pytest.raises(ProofInvalid, match="no cosignature by witness"):
        verify_cosignature(other, WITNESS_NAME, WITNESS_KEY.public_key)
    both = other.with_signature(cosign_checkpoint(signed, WITNESS_NAME, WITNESS_KEY, TIMESTAMP + 5))
    assert verify_cosignature(both, WITNESS_NAME, WITNESS_KEY.public_key) == TIMESTAMP + 5


def test_cosigning_again_replaces_the_witness_line() -> None:
    """`with_signature` replaces a line of the same key instead of piling up lines."""
    again = cosign_checkpoint(cosigned(), WITNESS_NAME, WITNESS_KEY, TIMESTAMP + 60)
    updated = cosigned().with_signature(again)
    assert len(updated.signatures) == 2
    assert verify_cosignature(updated, WITNESS_NAME, WITNESS_KEY.public_key) == TIMESTAMP + 60


# -- forks -----------------------------------------------------------------------


def test_two_roots_for_one_size_are_recognised_as_a_fork() -> None:
    """Same origin and size with different roots is a fork; anything else is not."""
    other_root = leaf_hash(b"other")
    assert is_fork(CHECKPOINT, Checkpoint(LOG_NAME, 1234, other_root))
    assert not is_fork(CHECKPOINT, Checkpoint(LOG_NAME, 1234, ROOT))
    assert not is_fork(CHECKPOINT, Checkpoint(LOG_NAME, 1235, other_root))
    assert not is_fork(CHECKPOINT, Checkpoint("other.example/log", 1234, other_root))


# -- strict parsing --------------------------------------------------------------

ROOT_B64 = base64.b64encode(ROOT).decode()
URL_SAFE_ROOT = base64.urlsafe_b64encode(bytes([0xFB]) * 32).decode()
BAD_BODIES = {
    "two lines": f"{LOG_NAME}\n5\n",
    "empty origin": f"\n5\n{ROOT_B64}\n",
    "leading zero": f"{LOG_NAME}\n05\n{ROOT_B64}\n",
    "plus sign": f"{LOG_NAME}\n+5\n{ROOT_B64}\n",
    "minus sign": f"{LOG_NAME}\n-5\n{ROOT_B64}\n",
    "space in size": f"{LOG_NAME}\n 5\n{ROOT_B64}\n",
    "non-ASCII digits": f"{LOG_NAME}\n\u0665\n{ROOT_B64}\n",
    "underscore": f"{LOG_NAME}\n1_000\n{ROOT_B64}\n",
    "size 2^64": f"{LOG_NAME}\n18446744073709551616\n{ROOT_B64}\n",
    "huge size": f"{LOG_NAME}\n{'9' * 5000}\n{ROOT_B64}\n",
    "root missing padding": f"{LOG_NAME}\n5\n{ROOT_B64.rstrip('=')}\n",
    "root with stray bits": f"{LOG_NAME}\n5\n{ROOT_B64[:-2]}F=\n",
    "root of 31 bytes": f"{LOG_NAME}\n5\n{base64.b64encode(ROOT[:31]).decode()}\n",
    "root of 33 bytes": f"{LOG_NAME}\n5\n{base64.b64encode(ROOT + b'x').decode()}\n",
    "url-safe base64": f"{LOG_NAME}\n5\n{URL_SAFE_ROOT}\n",
    "empty extension": f"{LOG_NAME}\n5\n{ROOT_B64}\n\nextension\n",
    "no final newline": f"{LOG_NAME}\n5\n{ROOT_B64}",
    "CRLF lines": f"{LOG_NAME}\r\n5\r\n{ROOT_B64}\r\n",
    "tab in origin": f"rogatory\tlog\n5\n{ROOT_B64}\n",
    "empty tree with other root": f"{LOG_NAME}\n0\n{ROOT_B64}\n",
}


@pytest.mark.parametrize("body", BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_non_canonical_checkpoint_body_is_refused(body: str) -> None:
    """A body that is not exactly the canonical checkpoint text is refused, signed or not."""
    with pytest.raises(ProofInvalid) as caught:
        Checkpoint.parse(body.encode())
    assert caught.value.code is ErrorCode.CHECKPOINT_INVALID
    if "\n\n" not in body and body.endswith("\n") and "\r" not in body and "\t" not in body:
        note = SignedNote(body.encode(), (sign_note(body.encode(), LOG_NAME, LOG_KEY),))
        assert_refused(note.to_text())


def test_checkpoint_body_that_is_not_utf8_is_refused() -> None:
    """Bytes that are not UTF-8 are refused as a body and as a note."""
    body = LOG_NAME.encode() + b"\xff\n5\n" + ROOT_B64.encode() + b"\n"
    with pytest.raises(ProofInvalid, match="not UTF-8"):
        Checkpoint.parse(body)
    assert_refused(body + b"\n" + signed_text().encode().split(b"\n\n")[1])


def test_invalid_checkpoint_values_cannot_be_built() -> None:
    """The constructor refuses what the parser refuses: objects are valid once built."""
    bad: list[tuple[Any, ...]] = [
        ("", 1, ROOT),
        ("two\nlines", 1, ROOT),
        (LOG_NAME, -1, ROOT),
        (LOG_NAME, 2**64, ROOT),
        (LOG_NAME, True, ROOT),
        (LOG_NAME, 1, ROOT[:31]),
        (LOG_NAME, 0, ROOT),
        (LOG_NAME, 1, ROOT, ("",)),
        (LOG_NAME, 1, ROOT, ("a\nb",)),
        (LOG_NAME, 1, ROOT, ["list"]),
    ]
    for args in bad:
        with pytest.raises(ProofInvalid):
            Checkpoint(*args)


def test_note_without_blank_line_or_signatures_is_refused() -> None:
    """A note needs the blank line and at least one signature line after it."""
    body = CHECKPOINT.body().decode()
    line = signed_text().split("\n\n")[1]
    for text in [body, body + line, body + "\n", body + "\n\n" + line]:
        assert_refused(text)


def test_note_over_the_size_limit_is_refused() -> None:
    """A note larger than MAX_NOTE_BYTES is refused before it is decoded."""
    text = signed_text()
    padded = text.replace(LOG_NAME, LOG_NAME + "x" * MAX_NOTE_BYTES, 1)
    assert_refused(padded, ErrorCode.TOO_LARGE)
    with pytest.raises(LimitExceeded):
        Checkpoint.parse(b"x" * (MAX_NOTE_BYTES + 1))


def test_more_than_the_signature_limit_is_refused() -> None:
    """Up to MAX_SIGNATURES lines are read; one more is refused, as Go refuses 101."""
    text = signed_text()
    body, line = text.split("\n\n")
    assert verify_checkpoint(body + "\n\n" + line * MAX_SIGNATURES, LOG_NAME, LOG_KEY.public_key)
    assert_refused(body + "\n\n" + line * (MAX_SIGNATURES + 1), ErrorCode.TOO_MANY_ITEMS)
    signed = SignedCheckpoint.parse(text)
    for index in range(MAX_SIGNATURES - 1):
        key = SigningPrivateKey(index.to_bytes(32, "big"))
        signed = signed.with_signature(sign_note(signed.body, f"k{index}", key))
    with pytest.raises(LimitExceeded):
        signed.with_signature(sign_note(signed.body, "one-too-many", OTHER_KEY))


def test_malformed_signature_lines_are_refused() -> None:
    """Lines without the em dash, with bad key names, short or non-canonical signatures are refused."""
    text = signed_text()
    body, line = text.split("\n\n")
    encoded = line.split(" ")[2].rstrip("\n")
    bad_lines = [
        line.replace("\u2014 ", "-- ", 1),
        line.replace("\u2014 ", "\u2014", 1),
        line.replace(LOG_NAME, "rogatory+log", 1),
        line.replace(LOG_NAME, "rogatory\u00a0log", 1),
        line.replace(encoded, base64.b64encode(b"\x00\x01\x02\x03").decode()),
        line.replace(encoded, encoded.rstrip("=")),
        line.replace(" " + encoded, "  " + encoded),
        line.replace(" " + encoded, ""),
    ]
    for bad in bad_lines:
        assert_refused(body + "\n\n" + bad)


def test_key_names_that_signed_note_forbids_cannot_sign() -> None:
    """Empty names and names with spaces or plus signs are refused when signing."""
    for name in ["", "two words", "a+b", "tab\tname"]:
        with pytest.raises(ProofInvalid):
            sign_checkpoint(CHECKPOINT, name, LOG_KEY)
        with pytest.raises(ProofInvalid):
            cosign_checkpoint(cosigned(), name, WITNESS_KEY, TIMESTAMP)
