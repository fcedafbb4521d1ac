"""The directory: only a signed, current, not-older version is ever used; policy fails closed."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from protocol.directory import verify_directory
from protocol.encoding import b64decode, b64encode
from protocol.errors import (
    AuthenticationFailed,
    ContentInvalid,
    DirectoryRejected,
    ErrorCode,
    MalformedInput,
    PolicyDenied,
)
from protocol.ids import AgencyId
from protocol.keys import SigningPrivateKey
from protocol.limits import DEFAULT_LIMITS
from protocol.signing import PAYLOAD_TYPE_DIRECTORY, SignedStatement, sign_statement
from tests.support.network import BD, BD_POLICE, LY, LY_AGO, NOW, LocalNetwork


@pytest.fixture
def net() -> LocalNetwork:
    return LocalNetwork()


def verify(net: LocalNetwork, signed: SignedStatement, *, held: int = 0, now=NOW):
    return verify_directory(signed, net.authority.public_key, now=now, held_version=held, limits=DEFAULT_LIMITS)


def test_signed_directory_verifies_and_parses(net):
    """A directory signed by the authority is accepted as it was signed."""
    assert verify(net, net.signed_directory()) == net.directory()


def test_unsigned_directory_is_refused(net):
    """A directory whose signature is missing (zeros) is refused."""
    signed = net.signed_directory().model_copy(update={"signature": bytes(64)})
    with pytest.raises(AuthenticationFailed) as refused:
        verify(net, signed)
    assert refused.value.code == ErrorCode.DIRECTORY_SIGNATURE_INVALID


def test_directory_signed_by_another_key_is_refused(net):
    """Only the configured authority may sign the directory."""
    impostor = SigningPrivateKey.generate()
    signed = net.signed_directory()
    forged = signed.model_copy(update={"key_id": impostor.key_id, "signature": impostor.sign(signed.payload)})
    with pytest.raises(AuthenticationFailed):
        verify(net, forged)


def test_tampered_directory_is_refused(net):
    """Adding a key to a signed directory breaks its signature."""
    signed = net.signed_directory()
    document = json.loads(signed.payload)
    document["agencies"][0]["name"] = "Someone else"
    tampered = signed.model_copy(update={"payload": json.dumps(document).encode()})
    with pytest.raises(AuthenticationFailed):
        verify(net, tampered)


def test_directory_rollback_is_refused(net):
    """A version older than the one held is refused, even validly signed."""
    with pytest.raises(DirectoryRejected) as refused:
        verify(net, net.signed_directory(), held=2)
    assert refused.value.code == ErrorCode.DIRECTORY_ROLLBACK


def test_expired_directory_is_refused(net):
    """A directory past its expiry is refused."""
    with pytest.raises(DirectoryRejected) as refused:
        verify(net, net.signed_directory(), now=NOW + timedelta(days=31))
    assert refused.value.code == ErrorCode.DIRECTORY_EXPIRED


def test_directory_with_a_key_id_not_derived_from_its_key_is_refused(net):
    """A published key id must be derived from the key: no aliasing of keys."""
    directory = json.loads(net.directory().model_dump_json())
    directory["agencies"][0]["signing_keys"][0]["key_id"] = "0" * 32
    signed = sign_statement(PAYLOAD_TYPE_DIRECTORY, json.dumps(directory).encode(), net.authority)
    with pytest.raises(ContentInvalid) as refused:
        verify(net, signed)
    assert refused.value.code == ErrorCode.MALFORMED_DIRECTORY


def test_policy_allows_only_what_an_agreement_says(net):
    """Central authorities may exchange; anything else is denied (fail closed)."""
    directory = net.directory()
    assert directory.agreement_for(BD, LY, "MLA_REQUEST", NOW).agreement_id == "BD-LY"
    for sender, recipient in ((BD_POLICE, LY), (LY_AGO, BD), (BD, BD_POLICE)):
        with pytest.raises(PolicyDenied) as refused:
            directory.agreement_for(sender, recipient, "MLA_REQUEST", NOW)
        assert refused.value.code == ErrorCode.POLICY_DENIED


def test_empty_policy_denies_everything(net):
    """A directory without agreements allows no exchange at all."""
    directory = net.directory(agreements=())
    with pytest.raises(PolicyDenied):
        directory.agreement_for(BD, LY, "MLA_REQUEST", NOW)


def test_agreement_out_of_force_denies(net):
    """An agreement applies only between its dates."""
    with pytest.raises(PolicyDenied):
        net.directory().agreement_for(BD, LY, "MLA_REQUEST", NOW + timedelta(days=400))


def test_unknown_agency_is_named_as_such(net):
    """An agency absent from the directory is UNKNOWN_AGENCY, not a policy question."""
    with pytest.raises(PolicyDenied) as refused:
        net.directory().agreement_for(BD, AgencyId("LY-NOBODY"), "MLA_REQUEST", NOW)
    assert refused.value.code == ErrorCode.UNKNOWN_AGENCY


def test_base64_is_canonical_only():
    """Two encodings of one key are not accepted: only canonical base64 decodes."""
    assert b64decode(b64encode(b"\x00\x01")) == b"\x00\x01"
    for bad in ("AAE", "AAE==", "AA E=", "AAF=", "AAE=\n"):
        with pytest.raises(MalformedInput):
            b64decode(bad)
