"""Attachment streams: byte-identical round trips; truncation, reordering, a missing final chunk refused."""

from __future__ import annotations

import hashlib
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.attachments import (
    CHUNK_BYTES,
    CIPHERTEXT_CHUNK_BYTES,
    HEADER_BYTES,
    StreamDecryptor,
    StreamEncryptor,
    attachment_ad,
    ciphertext_length,
)
from protocol.errors import AuthenticationFailed

AD = attachment_ad("b5c71fe6-1c43-5d56-bb4e-ad1ce59233df", "ATT-1")


def encrypt(data: bytes, piece: int = 10_000) -> tuple[bytes, bytes, StreamEncryptor]:
    encryptor = StreamEncryptor.new(AD)
    out = bytearray(encryptor.header)
    for start in range(0, len(data), piece):
        out += encryptor.update(data[start : start + piece])
    out += encryptor.finish()
    return bytes(out), encryptor.key, encryptor


def decrypt(stream: bytes, key: bytes, ad: bytes = AD, piece: int = 7_777) -> bytes:
    decryptor = StreamDecryptor(key, ad)
    out = bytearray()
    for start in range(0, len(stream), piece):
        out += decryptor.update(stream[start : start + piece])
    out += decryptor.finish()
    return bytes(out)


@pytest.mark.parametrize("size", [0, 1, CHUNK_BYTES - 1, CHUNK_BYTES, CHUNK_BYTES + 1, 3 * CHUNK_BYTES, 1_000_003])
def test_round_trip_is_byte_identical_at_every_chunk_boundary(size):
    """Empty, one byte, chunk edges and a megabyte all come back exactly, with the committed length and digest."""
    data = os.urandom(size)
    stream, key, encryptor = encrypt(data)
    assert len(stream) == ciphertext_length(size) == encryptor.ciphertext_length
    assert hashlib.sha256(stream).hexdigest() == encryptor.ciphertext_sha256
    assert decrypt(stream, key) == data
    assert encryptor.plaintext_hash.hexdigest() == hashlib.sha256(data).hexdigest()


@settings(max_examples=30, deadline=None)
@given(data=st.binary(max_size=3 * CHUNK_BYTES + 10), feed=st.integers(1, 100_000), take=st.integers(1, 100_000))
def test_any_feeding_pattern_round_trips(data, feed, take):
    """However the bytes are cut into pieces on either side, the plaintext is the same."""
    stream, key, _ = encrypt(data, piece=feed)
    assert decrypt(stream, key, piece=take) == data


def test_truncated_stream_is_refused():
    """A stream cut anywhere, including exactly before its final chunk, is refused."""
    stream, key, _ = encrypt(os.urandom(3 * CHUNK_BYTES + 100))
    for cut in (
        1,
        HEADER_BYTES,
        HEADER_BYTES + 10,
        HEADER_BYTES + CIPHERTEXT_CHUNK_BYTES,
        HEADER_BYTES + 3 * CIPHERTEXT_CHUNK_BYTES,
        len(stream) - 1,
    ):
        with pytest.raises(AuthenticationFailed):
            decrypt(stream[:cut], key)


def test_missing_final_chunk_is_refused():
    """Dropping the whole final chunk (a clean chunk boundary) is still refused."""
    stream, key, _ = encrypt(os.urandom(2 * CHUNK_BYTES + 5))
    with pytest.raises(AuthenticationFailed, match="final"):
        decrypt(stream[: HEADER_BYTES + 2 * CIPHERTEXT_CHUNK_BYTES], key)


def test_reordered_chunks_are_refused():
    """Swapping two chunks breaks the chain."""
    stream, key, _ = encrypt(os.urandom(3 * CHUNK_BYTES + 5))
    header, body = stream[:HEADER_BYTES], stream[HEADER_BYTES:]
    chunks = [body[i : i + CIPHERTEXT_CHUNK_BYTES] for i in range(0, len(body), CIPHERTEXT_CHUNK_BYTES)]
    chunks[0], chunks[1] = chunks[1], chunks[0]
    with pytest.raises(AuthenticationFailed):
        decrypt(header + b"".join(chunks), key)


def test_repeated_chunk_is_refused():
    """Replaying a chunk inside the stream is refused."""
    stream, key, _ = encrypt(os.urandom(2 * CHUNK_BYTES + 5))
    first = stream[HEADER_BYTES : HEADER_BYTES + CIPHERTEXT_CHUNK_BYTES]
    with pytest.raises(AuthenticationFailed):
        decrypt(stream[:HEADER_BYTES] + first + first + stream[HEADER_BYTES + CIPHERTEXT_CHUNK_BYTES :], key)


def test_data_after_the_final_chunk_is_refused():
    """Nothing may follow the FINAL tag."""
    stream, key, _ = encrypt(os.urandom(CHUNK_BYTES))
    with pytest.raises(AuthenticationFailed):
        decrypt(stream + b"x", key)
    short, key2, _ = encrypt(b"short")
    with pytest.raises(AuthenticationFailed):
        decrypt(short + b"more", key2)


@settings(max_examples=60, deadline=None)
@given(position=st.integers(0, ciphertext_length(CHUNK_BYTES + 50) - 1))
def test_flipping_any_byte_is_refused(position):
    """A single changed byte anywhere in the stream fails."""
    stream, key, _ = encrypt(b"\x5a" * (CHUNK_BYTES + 50))
    changed = bytearray(stream)
    changed[position] ^= 0x01
    with pytest.raises(AuthenticationFailed):
        decrypt(bytes(changed), key)


def test_a_stream_moved_to_another_attachment_is_refused():
    """The chunks are bound to their message and attachment id."""
    stream, key, _ = encrypt(b"bank statement")
    with pytest.raises(AuthenticationFailed):
        decrypt(stream, key, ad=attachment_ad("b5c71fe6-1c43-5d56-bb4e-ad1ce59233df", "ATT-2"))


def test_another_key_never_opens_it():
    """Only the key carried in the sealed document opens the stream."""
    stream, _, _ = encrypt(b"passport scan")
    with pytest.raises(AuthenticationFailed):
        decrypt(stream, os.urandom(32))
