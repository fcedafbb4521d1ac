"""Properties of sealing, checked over generated documents and every byte position."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.envelope import SealedMessage, open_sealed
from protocol.errors import ProtocolError
from protocol.keys import EncryptionPrivateKey
from tests.support.network import LY, LY_AGO, NOW, LocalNetwork

NETWORK = LocalNetwork()
SEALED = NETWORK.seal('{"text":"مرحبا নমস্কার hello"}'.encode())
WIRE = SEALED.to_bytes()


def open_wire(wire: bytes, agency=LY, keys=None):
    return open_sealed(
        SealedMessage.from_bytes(wire, NETWORK.limits),
        NETWORK.directory(),
        recipient=agency,
        recipient_keys=keys or NETWORK[agency].decryption_keys,
        now=NOW,
        limits=NETWORK.limits,
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=st.binary(min_size=0, max_size=4096))
def test_any_document_round_trips_byte_for_byte(document):
    """Whatever bytes are sealed are exactly the bytes the recipient opens."""
    assert open_wire(NETWORK.seal(document).to_bytes()).document == document


@settings(max_examples=300, deadline=None)
@given(position=st.integers(min_value=0, max_value=len(WIRE) - 1), mask=st.integers(min_value=1, max_value=255))
def test_flipping_any_byte_of_a_sealed_message_is_caught(position, mask):
    """No single changed byte anywhere on the wire goes unnoticed."""
    tampered = bytearray(WIRE)
    tampered[position] ^= mask
    with pytest.raises(ProtocolError):
        open_wire(bytes(tampered))


def test_flipping_every_byte_is_caught():
    """Exhaustively: each position, one bit, is refused (not only the sampled ones)."""
    for position in range(len(WIRE)):
        tampered = bytearray(WIRE)
        tampered[position] ^= 0x80
        with pytest.raises(ProtocolError):
            open_wire(bytes(tampered))


@settings(max_examples=25, deadline=None)
@given(seed=st.binary(min_size=32, max_size=32))
def test_another_recipients_key_never_opens_it(seed):
    """No key but the recipient's opens the message, even presented as the recipient's."""
    stranger = EncryptionPrivateKey(seed)
    listed_id = NETWORK[LY].encryption.key_id
    with pytest.raises(ProtocolError):
        open_wire(WIRE, keys={listed_id: stranger})
    with pytest.raises(ProtocolError):
        open_wire(WIRE, agency=LY_AGO, keys={stranger.key_id: stranger})


def test_truncating_at_every_length_is_caught():
    """Every prefix of the wire form is refused."""
    for length in range(0, len(WIRE), 7):
        with pytest.raises(ProtocolError):
            open_wire(WIRE[:length])
