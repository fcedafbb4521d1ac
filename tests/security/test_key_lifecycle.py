"""Keys: made by the tool, encrypted at rest, rotated without downtime, revoked from a time on, warned before expiry."""

from __future__ import annotations

import base64
import stat
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agents.receiving import InboxDelivery
from agents.service import _load_keys
from agents.settings import AgentSettings
from deploy.localnet.devstack import key_warnings
from deploy.localnet.network import NetworkPaths
from protocol.directory import (
    AgencyEntry,
    PublishedEncryptionKey,
    PublishedSigningKey,
    key_expiry_warnings,
)
from protocol.envelope import Recipient, open_sealed, seal
from protocol.errors import AuthenticationFailed, ErrorCode, KeyRejected
from protocol.ids import CaseId, MessageId
from protocol.keys import EncryptionPrivateKey, SigningPrivateKey
from protocol.keystore import lock_keystore, previous_keys, rotate_key, unlock_keystore
from protocol.topology import KIND_SEALED_MESSAGE
from tests.agents.harness import GATEWAY_USER, start_agent
from tests.security.attacks import valid_document
from tests.support.network import BD, LY, NOW, LocalNetwork, published

ROTATION = NOW - timedelta(hours=6)
"""When BD and LY rotated their keys: the directory lists old and new from then on."""


def rotated_directory(net: LocalNetwork, old_signing: SigningPrivateKey, old_encryption: EncryptionPrivateKey):
    """The directory after rotation: BD's old signing key valid until ROTATION, LY's old encryption key too."""
    directory = net.directory()
    entries = []
    for entry in directory.agencies:
        if entry.agency_id == BD:
            old = PublishedSigningKey.model_validate(
                published(old_signing, valid_from=NOW - timedelta(days=30)) | {"valid_until": ROTATION}
            )
            new = PublishedSigningKey.model_validate(published(net[BD].signing, valid_from=ROTATION))
            entry = AgencyEntry.model_validate(entry.model_dump() | {"signing_keys": (old, new)})  # noqa: PLW2901
        if entry.agency_id == LY:
            old_e = PublishedEncryptionKey.model_validate(
                published(old_encryption, valid_from=NOW - timedelta(days=30)) | {"valid_until": ROTATION}
            )
            new_e = PublishedEncryptionKey.model_validate(published(net[LY].encryption, valid_from=ROTATION))
            entry = AgencyEntry.model_validate(entry.model_dump() | {"encryption_keys": (old_e, new_e)})  # noqa: PLW2901
        entries.append(entry)
    return directory.model_copy(update={"agencies": tuple(entries), "version": 2})


def seal_with(net: LocalNetwork, signing: SigningPrivateKey, recipient_key, *, created_at: datetime):
    message_id = MessageId(uuid.uuid4())
    return seal(
        valid_document(message_id),
        message_id=message_id,
        sender=BD,
        signing_key=signing,
        recipients=[Recipient(LY, recipient_key)],
        archive_key=None,
        message_type="MLA_REQUEST",
        case_id=CaseId("BD-LY-2025-0007"),
        created_at=created_at,
        expires_at=created_at + timedelta(days=1),
        limits=net.limits,
    )


async def test_message_in_flight_under_the_old_keys_is_delivered_after_rotation(tmp_path: Path) -> None:
    """Sealed before rotation with BD's old signing key for LY's old encryption key, it is delivered after it."""
    net = LocalNetwork()
    old_signing, old_encryption = net[BD].signing, net[LY].encryption
    net[BD].signing, net[LY].encryption = SigningPrivateKey.generate(), EncryptionPrivateKey.generate()
    directory = rotated_directory(net, old_signing, old_encryption)
    assert directory.agency(LY).current_encryption_key(NOW).key_id == net[LY].encryption.key_id
    in_flight = seal_with(net, old_signing, old_encryption.public_key, created_at=ROTATION - timedelta(hours=1))
    agent = await start_agent(net, directory, LY, tmp_path)
    try:
        # LY's agent holds both encryption keys while mail wrapped to the old one may be in flight.
        agent.receiver._keys = agent.receiver._keys.__class__(
            agency=LY,
            signing_key=net[LY].signing,
            encryption_keys={key.key_id: key for key in (old_encryption, net[LY].encryption)},
        )
        received = await agent.receiver.handle(InboxDelivery(in_flight.to_bytes(), KIND_SEALED_MESSAGE, GATEWAY_USER))
        assert received.result == "delivered", received
    finally:
        await agent.close()


def test_old_signing_key_is_refused_for_messages_made_after_rotation() -> None:
    """After rotation the old key no longer vouches for new messages (KEY_NOT_VALID); the new one does."""
    net = LocalNetwork()
    old_signing, old_encryption = net[BD].signing, net[LY].encryption
    net[BD].signing, net[LY].encryption = SigningPrivateKey.generate(), EncryptionPrivateKey.generate()
    directory = rotated_directory(net, old_signing, old_encryption)
    late = seal_with(net, old_signing, net[LY].encryption.public_key, created_at=NOW)
    with pytest.raises(KeyRejected) as refused:
        open_sealed(late, directory, recipient=LY, recipient_keys=net[LY].decryption_keys, now=NOW, limits=net.limits)
    assert refused.value.code == ErrorCode.KEY_NOT_VALID
    fresh = seal_with(net, net[BD].signing, net[LY].encryption.public_key, created_at=NOW)
    opened = open_sealed(
        fresh, directory, recipient=LY, recipient_keys=net[LY].decryption_keys, now=NOW, limits=net.limits
    )
    assert opened.header.sender_key == net[BD].signing.key_id


def test_revocation_holds_from_its_time_on_even_for_older_messages() -> None:
    """A key revoked at T verifies before T and nothing from T on, whatever the message's own date says."""
    net = LocalNetwork()
    revoked_at = NOW + timedelta(minutes=10)
    entries = []
    for entry in net.directory().agencies:
        if entry.agency_id == BD:
            key = PublishedSigningKey.model_validate(published(net[BD].signing, revoked_at=revoked_at))
            entry = AgencyEntry.model_validate(entry.model_dump() | {"signing_keys": (key,)})  # noqa: PLW2901
        entries.append(entry)
    directory = net.directory().model_copy(update={"agencies": tuple(entries)})
    sealed = net.seal(created_at=NOW - timedelta(hours=1))
    keys = net[LY].decryption_keys
    open_sealed(
        sealed, directory, recipient=LY, recipient_keys=keys, now=revoked_at - timedelta(seconds=1), limits=net.limits
    )
    with pytest.raises(KeyRejected) as refused:
        open_sealed(sealed, directory, recipient=LY, recipient_keys=keys, now=revoked_at, limits=net.limits)
    assert refused.value.code == ErrorCode.KEY_REVOKED


def test_keys_expiring_without_a_successor_are_warned_about_and_rotated_ones_are_not() -> None:
    """Expiry warnings name each key ending inside the window with no successor; a listed successor silences it."""
    net = LocalNetwork()
    directory = net.directory()
    assert key_expiry_warnings(directory, now=NOW, within=timedelta(days=30)) == ()
    soon = key_expiry_warnings(directory, now=NOW + timedelta(days=340), within=timedelta(days=30))
    owners = {(warning.owner, warning.purpose) for warning in soon}
    assert (BD, "signing") in owners
    assert ("gateway.test", "log") in owners
    assert len(soon) == 4 * 2 + 2
    old_signing, old_encryption = net[BD].signing, net[LY].encryption
    net[BD].signing, net[LY].encryption = SigningPrivateKey.generate(), EncryptionPrivateKey.generate()
    rotated = rotated_directory(net, old_signing, old_encryption)
    near_rotation = key_expiry_warnings(rotated, now=ROTATION - timedelta(days=1), within=timedelta(days=30))
    assert (BD, "signing") not in {(warning.owner, warning.purpose) for warning in near_rotation}


def test_agent_holds_rotated_encryption_keys_from_its_keystore(tmp_path: Path) -> None:
    """After `rotate_key`, the agent unlocks the new key and the retired one, so mail in flight still opens."""
    signing, first, second = (
        SigningPrivateKey.generate(),
        EncryptionPrivateKey.generate(),
        EncryptionPrivateKey.generate(),
    )
    keys = rotate_key({"signing": signing.seed, "encryption": first.raw}, "encryption", second.raw)
    assert previous_keys(keys, "encryption") == (first.raw,)
    passphrase = b"correct horse battery staple"
    (tmp_path / "keystore.json").write_bytes(lock_keystore(keys, passphrase, opslimit=1, memlimit=8192))
    (tmp_path / "passphrase").write_bytes(passphrase)
    settings = AgentSettings.model_validate(
        {
            "agency": LY,
            "amqp_url": "amqps://u:p@localhost:5671/v",
            "data_dir": tmp_path,
            "directory_file": tmp_path / "directory.json",
            "authority_key": "unused",
            "keystore_file": tmp_path / "keystore.json",
            "keystore_passphrase_file": tmp_path / "passphrase",
            "api_tokens_sha256": ("0" * 64,),
            "gateway_broker_user": "gateway",
        }
    )
    loaded_signing, current, retired, _, identity = _load_keys(settings)
    assert (loaded_signing.key_id, current.key_id, [key.key_id for key in retired]) == (
        signing.key_id,
        second.key_id,
        [first.key_id],
    )
    assert identity.name == LY
    assert len(identity.signing_keys) == 1  # only the encryption key was rotated here


def test_dev_stack_keys_were_made_by_the_tool_and_lie_encrypted_and_private(security_stack: dict[str, Any]) -> None:
    """Every keystore of the dev network is 0600, holds no key in any plain encoding, opens only with its passphrase."""
    paths = NetworkPaths(Path(security_stack["network"]["state_dir"]))
    for agency in security_stack["agents"]:
        raw = paths.keystore(agency).read_bytes()
        assert stat.S_IMODE(paths.keystore(agency).stat().st_mode) == 0o600
        keys = unlock_keystore(raw, paths.passphrase(agency).read_bytes().strip())
        for secret in keys.values():
            for encoded in (secret, secret.hex().encode(), base64.b64encode(secret), base64.urlsafe_b64encode(secret)):
                assert encoded not in raw
        with pytest.raises(AuthenticationFailed) as refused:
            unlock_keystore(raw, b"a wrong passphrase of enough length")
        assert refused.value.code == ErrorCode.KEY_UNWRAP_FAILED


def test_dev_stack_warns_of_keys_near_expiry(security_stack: dict[str, Any]) -> None:
    """`rogatory dev up` names the keys of its network that expire within 30 days without a successor."""
    root = Path(security_stack["network"]["state_dir"])
    assert key_warnings(root, now=datetime.now(UTC)) == ()
    later = key_warnings(root, now=datetime.now(UTC) + timedelta(days=350))
    assert {warning.owner for warning in later} >= set(security_stack["agents"])
