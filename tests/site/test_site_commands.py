"""The provisioning commands of each site, run as an operator runs them (`rogatory ...`)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from agents.service import _check_keys_listed as agent_check_keys_listed
from deploy.cli.commands import main
from gateway.service import _check_keys_listed as gateway_check_keys_listed
from protocol.directory import NOTHING_HELD, verify_directory
from protocol.encoding import b64decode, b64encode
from protocol.enrolment import EnrolmentRequest
from protocol.ids import AgencyId
from protocol.keys import EncryptionPrivateKey, SigningPrivateKey, SigningPublicKey
from protocol.keystore import unlock_keystore
from protocol.limits import DEFAULT_LIMITS
from protocol.signing import SignedStatement
from runtime.runner import read_directory
from tests.site.conftest import AGENCIES, PASSPHRASE, Sites


def _authority_key(sites: Sites) -> SigningPublicKey:
    info = json.loads((sites.authority / "authority.json").read_text())
    return SigningPublicKey(b64decode(info["authority_key"]))


def _keys(keystore: Path) -> dict[str, bytes]:
    return unlock_keystore(keystore.read_bytes(), PASSPHRASE.encode())


def _version(sites: Sites) -> int:
    signed = SignedStatement.from_json(sites.directory.read_bytes())
    return verify_directory(
        signed, _authority_key(sites), now=datetime.now(UTC), held_version=NOTHING_HELD, limits=DEFAULT_LIMITS
    ).version


def test_the_whole_sequence_makes_a_directory_the_agents_and_gateway_start_with(sites):
    """Authority, agency and gateway commands alone make a directory that verifies and lists each site's own keys."""
    authority = _authority_key(sites)
    directory = read_directory(sites.directory, authority, now=datetime.now(UTC), limits=DEFAULT_LIMITS)
    assert directory.version == 1
    assert {entry.agency_id for entry in directory.agencies} == set(AGENCIES)
    for agency in AGENCIES:
        keys = _keys(sites.agency(agency) / "keystore.json")
        assert set(keys) == {"signing", "encryption", "storage"}
        agent_check_keys_listed(
            directory, AgencyId(agency), SigningPrivateKey(keys["signing"]), EncryptionPrivateKey(keys["encryption"])
        )
    gateway_keys = _keys(sites.gateway / "keystore.json")
    gateway_check_keys_listed(
        directory, SigningPrivateKey(gateway_keys["evidence"]), SigningPrivateKey(gateway_keys["log"])
    )
    agreement = directory.agreement_for(
        AgencyId("LY-MLA-CA"), AgencyId("BD-MOHA-PSD"), "MLA_REQUEST", datetime.now(UTC)
    )
    assert agreement.agreement_id == "BD-LY-UNTOC"


def _swap_signing_key(request_file: Path) -> None:
    request = EnrolmentRequest.model_validate_json(request_file.read_bytes())
    payload = json.loads(request.payload)
    other = SigningPrivateKey.generate()
    payload["signing_key"] = {"key_id": other.key_id, "public_key": b64encode(other.public_key.raw)}
    document = json.loads(request_file.read_bytes())
    document["payload"] = b64encode(json.dumps(payload).encode())
    request_file.write_text(json.dumps(document))


def test_an_enrolment_request_with_its_key_swapped_is_refused(tmp_path, capsys):
    """A request whose enrolled key was swapped on the way does not verify under that key: nothing is added."""
    from tests.site.conftest import make_sites  # noqa: PLC0415

    sites = make_sites(tmp_path)
    secret = ("--passphrase-file", str(sites.passphrase_file))
    site = tmp_path / "LY-AGO"
    assert (
        main(["agency", "init", "--agency", "LY-AGO", "--name", "AGO", "--country", "LY", "--dir", str(site), *secret])
        == 0
    )
    _swap_signing_key(site / "enrolment.json")
    draft_before = (sites.authority / "draft.json").read_bytes()
    capsys.readouterr()
    assert main(["authority", "add-agency", str(site / "enrolment.json"), "--dir", str(sites.authority)]) == 1
    assert "refused" in capsys.readouterr().err
    assert (sites.authority / "draft.json").read_bytes() == draft_before


def test_a_gateway_request_cannot_enrol_an_agency_nor_an_agency_twice(sites):
    """add-agency takes only an agency's request, and an agency already listed only through rotate-key."""
    auth = str(sites.authority)
    assert main(["authority", "add-agency", str(sites.gateway / "enrolment.json"), "--dir", auth]) == 1
    assert main(["authority", "add-agency", str(sites.agency("BD-MOHA-PSD") / "enrolment.json"), "--dir", auth]) == 1


def test_signing_never_lowers_the_version(sites):
    """Each signing is one above the highest signed; a lower or equal version is refused, history lost or not."""
    assert sites.sign() == 0
    assert _version(sites) == 2
    assert sites.sign("--version", "2") == 1
    assert sites.sign("--version", "1") == 1
    assert _version(sites) == 2
    # The authority's history lost (a restored backup): the published version still bounds the next.
    for old in (sites.authority / "versions").iterdir():
        old.unlink()
    assert sites.sign("--version", "2") == 1
    assert sites.sign() == 0
    assert _version(sites) == 3


def test_no_private_key_leaves_the_site_that_made_it(sites):
    """Every file outside a site holds none of its private keys; public files hold no private key at all."""
    private: dict[Path, list[bytes]] = {
        sites.authority: list(_keys(sites.authority / "keystore.json").values()),
        sites.gateway: list(_keys(sites.gateway / "keystore.json").values()),
    }
    for agency in AGENCIES:
        private[sites.agency(agency)] = list(_keys(sites.agency(agency) / "keystore.json").values())
    files = [path for path in sites.root.rglob("*") if path.is_file()]
    for site, secrets in private.items():
        forms = [form for secret in secrets for form in (secret, b64encode(secret).encode(), secret.hex().encode())]
        for path in files:
            if site in path.parents and path.name == "keystore.json":
                continue  # the one place it lives, encrypted
            content = path.read_bytes()
            assert not any(form in content for form in forms), f"{path} holds a private key of {site.name}"
    for site in private:
        if site.name != "authority":
            assert not (site / "authority.json").exists()
        assert (site / "keystore.json").stat().st_mode & 0o077 == 0


def test_a_rotation_is_accepted_only_when_signed_by_a_key_already_listed(sites, tmp_path):
    """A fresh enrolment for a listed agency cannot replace its keys; its rotation.json can, keeping the old ones."""
    secret = ("--passphrase-file", str(sites.passphrase_file))
    auth = str(sites.authority)
    impostor = tmp_path / "impostor"
    assert (
        main(
            [
                "agency",
                "init",
                "--agency",
                "LY-MLA-CA",
                "--name",
                "X",
                "--country",
                "LY",
                "--dir",
                str(impostor),
                *secret,
            ]
        )
        == 0
    )
    assert main(["authority", "rotate-key", str(impostor / "enrolment.json"), "--dir", auth]) == 1

    site = sites.agency("LY-MLA-CA")
    old = _keys(site / "keystore.json")
    assert main(["agency", "rotate-key", "--dir", str(site), *secret]) == 0
    assert main(["authority", "rotate-key", str(site / "rotation.json"), "--dir", auth]) == 0
    assert sites.sign() == 0
    directory = read_directory(sites.directory, _authority_key(sites), now=datetime.now(UTC), limits=DEFAULT_LIMITS)
    new = _keys(site / "keystore.json")
    agent_check_keys_listed(
        directory, AgencyId("LY-MLA-CA"), SigningPrivateKey(new["signing"]), EncryptionPrivateKey(new["encryption"])
    )
    listed = {key.key_id for key in directory.agency(AgencyId("LY-MLA-CA")).encryption_keys}
    assert EncryptionPrivateKey(old["encryption"]).key_id in listed
    assert new["encryption.previous.1"] == old["encryption"]


def test_revoke_show_and_diff_name_what_changed(sites, capsys):
    """A revoked key shows as revoked in the next version, and diff names the change between versions."""
    auth = str(sites.authority)
    key_id = SigningPrivateKey(_keys(sites.agency("BD-MOHA-PSD") / "keystore.json")["signing"]).key_id
    assert main(["authority", "revoke-key", key_id, "--dir", auth]) == 0
    assert sites.sign() == 0
    capsys.readouterr()
    assert main(["authority", "show", "2", "--dir", auth]) == 0
    shown = capsys.readouterr().out
    assert "version 2" in shown
    assert f"{key_id}  revoked at" in shown
    assert main(["authority", "diff", "1", "2", "--dir", auth]) == 0
    changes = capsys.readouterr().out
    assert '+      "revoked_at"' in changes or "revoked_at" in changes
    assert '-  "version": 1' in changes


def test_removing_an_agency_drops_it_from_the_agreements(sites):
    """An agency removed from the draft is absent from the next version and from every rule naming it."""
    assert main(["authority", "remove-agency", "LY-MLA-CA", "--dir", str(sites.authority)]) == 0
    assert sites.sign() == 0
    directory = read_directory(sites.directory, _authority_key(sites), now=datetime.now(UTC), limits=DEFAULT_LIMITS)
    assert [entry.agency_id for entry in directory.agencies] == ["BD-MOHA-PSD"]
    assert directory.agreements == ()


def test_a_listed_time_stamp_authority_travels_in_the_signed_directory_and_can_be_removed(sites, tmp_path, capsys):
    """`add-tsa` lists a TSA's root (PEM in, DER signed); `remove-tsa` drops it; a non-certificate is refused."""
    from cryptography import x509  # noqa: PLC0415 - only this test reads certificates

    from tests.support.tsa import TimestampAuthorityKeys  # noqa: PLC0415

    keys = TimestampAuthorityKeys.generate("National TSA")
    pem = tmp_path / "tsa-root.pem"
    pem.write_bytes(x509.load_der_x509_certificate(keys.root_der).public_bytes(serialization.Encoding.PEM))
    auth = str(sites.authority)
    assert main(["authority", "add-tsa", "--name", "National TSA", str(pem), "--dir", auth]) == 0
    assert main(["authority", "add-tsa", "--name", "National TSA", str(pem), "--dir", auth]) == 1
    (tmp_path / "junk.pem").write_text("not a certificate")
    assert main(["authority", "add-tsa", "--name", "Junk", str(tmp_path / "junk.pem"), "--dir", auth]) == 1
    assert sites.sign() == 0
    signed = SignedStatement.from_json(sites.directory.read_bytes())
    directory = verify_directory(
        signed, _authority_key(sites), now=datetime.now(UTC), held_version=NOTHING_HELD, limits=DEFAULT_LIMITS
    )
    assert directory.timestamp_roots() == (keys.root_der,)
    capsys.readouterr()
    assert main(["authority", "show", "--dir", auth]) == 0
    assert "time-stamp authority National TSA  root CN=National TSA Root" in capsys.readouterr().out
    assert main(["authority", "remove-tsa", "--name", "National TSA", "--dir", auth]) == 0
    assert main(["authority", "remove-tsa", "--name", "National TSA", "--dir", auth]) == 1
    assert sites.sign() == 0
    later = verify_directory(
        SignedStatement.from_json(sites.directory.read_bytes()),
        _authority_key(sites),
        now=datetime.now(UTC),
        held_version=directory.version,
        limits=DEFAULT_LIMITS,
    )
    assert later.timestamp_roots() == ()
