"""`rogatory agency init|rotate-key` and `rogatory gateway init`: keys made where they are used.

Each writes, in its site's directory:

    SITE/keystore.json     the private keys, encrypted under the passphrase (0600; never leaves the site)
    SITE/enrolment.json    the enrolment request (public: carried to the directory authority)

An agency's keystore is the agent's (`agents.service._load_keys`): `signing`,
`encryption` and `storage`; the gateway's holds `evidence` and `log`. The
request is signed by every signing key it enrols (`protocol.enrolment`). A
rotation (`agency rotate-key`) keeps the keys it replaces in the keystore
(`protocol.keystore.rotate_key`: messages in flight still open) and writes
`rotation.json`, signed by the new signing key and the one it replaces.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from deploy.site.secrets import SiteError, read_passphrase, refuse_existing, write_public, write_secret
from protocol.encoding import truncate_to_millis
from protocol.enrolment import (
    AgencyEnrolment,
    EnrolledKey,
    EnrolmentRequest,
    GatewayEnrolment,
    sign_enrolment,
)
from protocol.errors import ProtocolError
from protocol.ids import parse_agency_id, parse_gateway_id
from protocol.keys import EncryptionPrivateKey, SigningPrivateKey
from protocol.keystore import lock_keystore, rotate_key, unlock_keystore
from protocol.storage import STORAGE_KEY_NAME, StorageKey

KEYSTORE_NAME: Final = "keystore.json"
ENROLMENT_NAME: Final = "enrolment.json"
ROTATION_NAME: Final = "rotation.json"


@dataclass(frozen=True, slots=True)
class SiteFiles:
    """The files of one agency's or the gateway's site directory."""

    root: Path

    @property
    def keystore(self) -> Path:
        """The encrypted keystore."""
        return self.root / KEYSTORE_NAME

    @property
    def enrolment(self) -> Path:
        """The enrolment request."""
        return self.root / ENROLMENT_NAME

    @property
    def rotation(self) -> Path:
        """The request of the last key rotation."""
        return self.root / ROTATION_NAME


def _key(*, raw: bytes, key_id: str) -> EnrolledKey:
    return EnrolledKey.model_validate({"key_id": key_id, "public_key": raw})


def _now() -> datetime:
    return truncate_to_millis(datetime.now(UTC))


def _agency_enrolment(
    agency: str, name: str, country: str, signing: SigningPrivateKey, encryption: EncryptionPrivateKey
) -> AgencyEnrolment:
    return AgencyEnrolment(
        agency_id=parse_agency_id(agency),
        name=name,
        country=country,
        created_at=_now(),
        signing_key=_key(raw=signing.public_key.raw, key_id=signing.key_id),
        encryption_key=_key(raw=encryption.public_key.raw, key_id=encryption.key_id),
    )


def init_agency(root: Path, *, agency: str, name: str, country: str, passphrase: bytes) -> EnrolmentRequest:
    """Make an agency's keys in `root/keystore.json` and its signed request in `root/enrolment.json`."""
    files = SiteFiles(root)
    refuse_existing(files.keystore, "keystore")
    signing, encryption = SigningPrivateKey.generate(), EncryptionPrivateKey.generate()
    try:
        enrolment = _agency_enrolment(agency, name, country, signing, encryption)
        keystore = lock_keystore(
            {"signing": signing.seed, "encryption": encryption.raw, STORAGE_KEY_NAME: StorageKey.generate().raw},
            passphrase,
        )
    except (ProtocolError, ValueError) as exc:
        raise SiteError(f"agency init: {exc}") from exc
    request = sign_enrolment(enrolment, (signing,))
    write_secret(files.keystore, keystore)
    write_public(files.enrolment, request.model_dump_json(indent=2).encode("utf-8"))
    return request


def rotate_agency_keys(root: Path, *, passphrase: bytes) -> EnrolmentRequest:
    """New signing and encryption keys, the old ones kept; `root/rotation.json` signed by the new and old key."""
    files = SiteFiles(root)
    try:
        keys = unlock_keystore(files.keystore.read_bytes(), passphrase)
        enrolled = AgencyEnrolment.model_validate_json(
            EnrolmentRequest.model_validate_json(files.enrolment.read_bytes()).payload
        )
        old = SigningPrivateKey(keys["signing"])
        signing, encryption = SigningPrivateKey.generate(), EncryptionPrivateKey.generate()
        rotated = rotate_key(rotate_key(keys, "signing", signing.seed), "encryption", encryption.raw)
        enrolment = _agency_enrolment(enrolled.agency_id, enrolled.name, enrolled.country, signing, encryption)
        keystore = lock_keystore(rotated, passphrase)
    except (OSError, KeyError, ProtocolError, ValueError) as exc:
        raise SiteError(f"agency rotate-key: {exc}") from exc
    request = sign_enrolment(enrolment, (signing, old))
    write_secret(files.keystore, keystore)
    write_public(files.rotation, request.model_dump_json(indent=2).encode("utf-8"))
    return request


def init_gateway(root: Path, *, gateway_id: str, log_origin: str, passphrase: bytes) -> EnrolmentRequest:
    """Make the gateway's evidence and log keys in `root/keystore.json` and its request in `root/enrolment.json`."""
    files = SiteFiles(root)
    refuse_existing(files.keystore, "keystore")
    evidence, log = SigningPrivateKey.generate(), SigningPrivateKey.generate()
    try:
        enrolment = GatewayEnrolment(
            gateway_id=parse_gateway_id(gateway_id),
            log_origin=log_origin,
            created_at=_now(),
            evidence_key=_key(raw=evidence.public_key.raw, key_id=evidence.key_id),
            log_key=_key(raw=log.public_key.raw, key_id=log.key_id),
        )
        keystore = lock_keystore({"evidence": evidence.seed, "log": log.seed}, passphrase)
    except (ProtocolError, ValueError) as exc:
        raise SiteError(f"gateway init: {exc}") from exc
    request = sign_enrolment(enrolment, (evidence, log))
    write_secret(files.keystore, keystore)
    write_public(files.enrolment, request.model_dump_json(indent=2).encode("utf-8"))
    return request


def _say_request(request: EnrolmentRequest, path: Path) -> None:
    print(f"wrote {path}: carry it to the directory authority")
    print(f"request fingerprint (read it to the authority by another channel): {request.fingerprint}")


def _run(action: str, args: argparse.Namespace) -> int:
    root = Path(args.dir)
    try:
        if action == "agency-init":
            passphrase = read_passphrase(args.passphrase_file, confirm=True)
            request = init_agency(root, agency=args.agency, name=args.name, country=args.country, passphrase=passphrase)
            _say_request(request, SiteFiles(root).enrolment)
        elif action == "agency-rotate":
            request = rotate_agency_keys(root, passphrase=read_passphrase(args.passphrase_file, confirm=False))
            _say_request(request, SiteFiles(root).rotation)
        else:
            passphrase = read_passphrase(args.passphrase_file, confirm=True)
            request = init_gateway(root, gateway_id=args.gateway_id, log_origin=args.log_origin, passphrase=passphrase)
            _say_request(request, SiteFiles(root).enrolment)
    except SiteError as exc:
        print(f"rogatory: {exc}", file=sys.stderr)
        return 1
    return 0


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `rogatory agency ...` and `rogatory gateway init`."""
    agency = commands.add_parser("agency", help="an agency's keys and enrolment, at its own site").add_subparsers(
        dest="agency_command", required=True
    )
    init = agency.add_parser("init", help="make the agency's keystore and enrolment request")
    init.add_argument("--agency", required=True, help="the agency id, e.g. BD-MOHA-PSD")
    init.add_argument("--name", required=True, help="the agency's name as the directory will list it")
    init.add_argument("--country", required=True, help="ISO 3166 alpha-2 code, e.g. BD")
    init.add_argument("--dir", required=True, help="the site directory (keystore.json, enrolment.json)")
    init.add_argument("--passphrase-file", help="the keystore passphrase (default: ROGATORY_PASSPHRASE or a prompt)")
    init.set_defaults(run=lambda args: _run("agency-init", args))
    rotate = agency.add_parser("rotate-key", help="new signing and encryption keys; rotation.json for the authority")
    rotate.add_argument("--dir", required=True)
    rotate.add_argument("--passphrase-file")
    rotate.set_defaults(run=lambda args: _run("agency-rotate", args))

    gateway = commands.add_parser("gateway", help="the gateway's keys and enrolment, at the hub").add_subparsers(
        dest="gateway_command", required=True
    )
    ginit = gateway.add_parser("init", help="make the gateway's keystore (evidence, log keys) and enrolment request")
    ginit.add_argument("--gateway-id", required=True, help="the gateway's name, e.g. gateway.mla.example.org")
    ginit.add_argument("--log-origin", required=True, help="the audit log's origin line, e.g. mla.example.org/log")
    ginit.add_argument("--dir", required=True)
    ginit.add_argument("--passphrase-file")
    ginit.set_defaults(run=lambda args: _run("gateway-init", args))


__all__ = [
    "ENROLMENT_NAME",
    "KEYSTORE_NAME",
    "ROTATION_NAME",
    "SiteFiles",
    "add_commands",
    "init_agency",
    "init_gateway",
    "rotate_agency_keys",
]
