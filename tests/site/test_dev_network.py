"""The dev network (`rogatory dev up`) is made by the site commands' own functions, as operators run them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from deploy.localnet.network import DEV_AGENCIES, NetworkPaths, bench_agencies, create_network, renew_directory_if_due
from deploy.site.authority import AuthorityFiles, load_draft, read_version
from protocol.encoding import b64decode
from protocol.enrolment import AgencyEnrolment, GatewayEnrolment, read_enrolment, verify_enrolment
from protocol.errors import AuthenticationFailed
from protocol.keys import EncryptionPrivateKey, SigningPrivateKey, SigningPublicKey
from protocol.keystore import unlock_keystore

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"  # create_network only records it: no broker is reached


def test_dev_network_directory_is_made_by_the_site_commands(tmp_path):
    """Each dev agency enrols from its own site, the authority lists just those requests, `sign` made the directory."""
    description = create_network(tmp_path / "net", amqp_url=AMQP_URL, now=datetime.now(UTC), bench_pairs=1)
    paths = NetworkPaths(tmp_path / "net")
    authority = AuthorityFiles(paths.authority)

    assert paths.directory.read_bytes() == authority.version(1).read_bytes()
    directory = read_version(authority, 1)
    assert directory.authority_key == SigningPublicKey(b64decode(description.authority_key)).key_id
    agencies = set(DEV_AGENCIES) | set(bench_agencies(1))
    assert {entry.agency_id for entry in load_draft(authority).agencies} == agencies == set(description.agents)
    assert {entry.agency_id for entry in directory.agencies} == agencies

    for entry in directory.agencies:
        enrolment = verify_enrolment(read_enrolment(paths.enrolment(entry.agency_id).read_bytes()))
        assert isinstance(enrolment, AgencyEnrolment)
        assert enrolment.agency_id == entry.agency_id
        assert [key.key_id for key in entry.signing_keys] == [enrolment.signing_key.key_id]
        assert [key.key_id for key in entry.encryption_keys] == [enrolment.encryption_key.key_id]
        keys = unlock_keystore(
            paths.keystore(entry.agency_id).read_bytes(), paths.passphrase(entry.agency_id).read_bytes().strip()
        )
        assert SigningPrivateKey(keys["signing"]).key_id == enrolment.signing_key.key_id
        assert EncryptionPrivateKey(keys["encryption"]).key_id == enrolment.encryption_key.key_id

    gateway = verify_enrolment(read_enrolment(paths.enrolment("gateway").read_bytes()))
    assert isinstance(gateway, GatewayEnrolment)
    assert directory.gateway.gateway_id == gateway.gateway_id
    assert [key.key_id for key in directory.gateway.evidence_keys] == [gateway.evidence_key.key_id]
    assert [key.key_id for key in directory.gateway.log_keys] == [gateway.log_key.key_id]

    authority_keystore = paths.authority_keystore.read_bytes()
    for site in ("gateway", *description.agents):
        held = [path for path in paths.service_dir(site).rglob("*") if path.is_file()]
        assert authority_keystore not in [path.read_bytes() for path in held]
        with pytest.raises(AuthenticationFailed):
            unlock_keystore(paths.keystore(site).read_bytes(), description.authority_passphrase.encode())


def test_dev_directory_renewal_is_the_authoritys_next_signed_version(tmp_path):
    """`dev up` renews a directory near its end by the authority's `sign`: the next version, same content."""
    now = datetime.now(UTC)
    description = create_network(tmp_path / "net", amqp_url=AMQP_URL, now=now)
    paths = NetworkPaths(tmp_path / "net")
    authority = AuthorityFiles(paths.authority)

    assert renew_directory_if_due(paths.root, description, now=now) is None
    assert renew_directory_if_due(paths.root, description, now=now + timedelta(days=61)) == 2
    assert paths.directory.read_bytes() == authority.version(2).read_bytes()
    first, second = read_version(authority, 1), read_version(authority, 2)
    assert second.expires_at > first.expires_at
    assert (second.agencies, second.gateway, second.agreements) == (first.agencies, first.gateway, first.agreements)
