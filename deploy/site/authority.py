"""`rogatory authority ...`: the offline directory authority, its draft and every version it signed.

The authority's directory (kept offline; only the signed versions leave it):

    AUTH/keystore.json         the authority's Ed25519 key, encrypted under the passphrase (0600)
    AUTH/authority.json        the network's name and the authority's public key (public)
    AUTH/draft.json            the working state: agencies, gateway, agreements (edited by the commands below)
    AUTH/versions/<N>.json     every signed version (public), N the version

Agencies and the gateway enter only from an enrolment request whose
signatures verify under the keys it enrols (`protocol.enrolment`); a
rotation request must also be signed by a signing key the draft lists for
that agency. `sign` makes the next version: one more than the highest ever
signed here, never lower (and never lower than the one already at `--out`).
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives import serialization
from pydantic import BaseModel, ConfigDict, ValidationError

from deploy.site.secrets import SiteError, read_passphrase, refuse_existing, write_public, write_secret
from protocol.directory import (
    AgencyEntry,
    Agreement,
    AgreementRule,
    Directory,
    GatewayEntry,
    PublishedEncryptionKey,
    PublishedKey,
    PublishedSigningKey,
    TimestampAuthorityEntry,
    sign_directory,
)
from protocol.encoding import b64decode, b64encode, truncate_to_millis
from protocol.enrolment import AgencyEnrolment, EnrolledKey, GatewayEnrolment, read_enrolment, verify_enrolment
from protocol.errors import ProofInvalid, ProtocolError
from protocol.ids import KeyId, parse_agency_id
from protocol.keys import SigningPrivateKey, SigningPublicKey
from protocol.keystore import lock_keystore, unlock_keystore
from protocol.model import parse_model
from protocol.signing import PAYLOAD_TYPE_DIRECTORY, SignedStatement, verify_statement
from runtime.timestamps import load_certificate

KEY_VALIDITY: Final = timedelta(days=365)
"""How long an enrolled key is listed as valid, unless `--key-validity-days` says otherwise."""
DIRECTORY_VALIDITY: Final = timedelta(days=90)
"""How long a signed version is in force, unless `sign --valid-days` says otherwise: sign again before."""
AGREEMENT_VALIDITY: Final = timedelta(days=3650)
ROTATION_OVERLAP: Final = timedelta(days=30)
"""After a rotation the replaced keys stay valid this long, so messages in flight still verify and open."""
BACKDATE: Final = timedelta(minutes=5)
"""Keys are valid from a little before they are listed: clocks of the sites differ."""


class Draft(BaseModel):
    """The authority's working state: the next version, less its number and dates."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    network: str
    authority_key: KeyId
    agencies: tuple[AgencyEntry, ...] = ()
    gateway: GatewayEntry | None = None
    agreements: tuple[Agreement, ...] = ()
    timestamp_authorities: tuple[TimestampAuthorityEntry, ...] = ()


class AuthorityInfo(BaseModel):
    """`authority.json`: public, handed to every site as its trust anchor."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    network: str
    authority_key: str
    """Base64 Ed25519 public key: `ROGATORY_AUTHORITY_KEY` of every service."""
    key_id: str


@dataclass(frozen=True, slots=True)
class AuthorityFiles:
    """The files of the authority's directory."""

    root: Path

    @property
    def keystore(self) -> Path:
        """The encrypted authority key."""
        return self.root / "keystore.json"

    @property
    def info(self) -> Path:
        """`authority.json`."""
        return self.root / "authority.json"

    @property
    def draft(self) -> Path:
        """`draft.json`."""
        return self.root / "draft.json"

    def version(self, number: int) -> Path:
        """A signed version."""
        return self.root / "versions" / f"{number}.json"

    def versions(self) -> list[int]:
        """The numbers of the signed versions, in order."""
        folder = self.root / "versions"
        if not folder.is_dir():
            return []
        return sorted(int(path.stem) for path in folder.glob("*.json") if path.stem.isdigit())


def _now() -> datetime:
    return truncate_to_millis(datetime.now(UTC))


# --- State ---------------------------------------------------------------------------------------


def init_authority(root: Path, *, network: str, passphrase: bytes) -> AuthorityInfo:
    """Make the authority's key (encrypted), `authority.json` and an empty draft."""
    files = AuthorityFiles(root)
    refuse_existing(files.keystore, "authority keystore")
    key = SigningPrivateKey.generate()
    try:
        keystore = lock_keystore({"signing": key.seed}, passphrase)
    except ValueError as exc:
        raise SiteError(f"authority init: {exc}") from exc
    info = AuthorityInfo(network=network, authority_key=b64encode(key.public_key.raw), key_id=key.key_id)
    write_secret(files.keystore, keystore)
    write_public(files.info, info.model_dump_json(indent=2).encode("utf-8"))
    _save_draft(files, Draft(network=network, authority_key=key.key_id))
    return info


def load_info(files: AuthorityFiles) -> AuthorityInfo:
    """`authority.json`."""
    try:
        return AuthorityInfo.model_validate_json(files.info.read_bytes())
    except (OSError, ValidationError) as exc:
        raise SiteError(f"{files.info} is not an authority's: run `rogatory authority init` first ({exc})") from exc


def load_draft(files: AuthorityFiles) -> Draft:
    """The draft."""
    try:
        return Draft.model_validate_json(files.draft.read_bytes())
    except (OSError, ValidationError) as exc:
        raise SiteError(f"cannot read the draft {files.draft}: {exc}") from exc


def _save_draft(files: AuthorityFiles, draft: Draft) -> None:
    # Public material only, but the authority's working state: kept with its keystore.
    write_secret(files.draft, draft.model_dump_json(indent=2).encode("utf-8"))


def authority_public_key(files: AuthorityFiles) -> SigningPublicKey:
    """The authority's public key from `authority.json`."""
    return SigningPublicKey(b64decode(load_info(files).authority_key))


def read_version(files: AuthorityFiles, number: int) -> Directory:
    """A signed version, its signature checked (its expiry not: old versions are history)."""
    try:
        signed = SignedStatement.from_json(files.version(number).read_bytes())
        payload = verify_statement(signed, PAYLOAD_TYPE_DIRECTORY, authority_public_key(files))
        return parse_model(Directory, payload, what="directory")
    except OSError as exc:
        raise SiteError(f"no signed version {number} in {files.root}: {exc.strerror}") from exc
    except ProtocolError as exc:
        raise SiteError(f"version {number} in {files.root} does not verify: {exc}") from exc


# --- Editing the draft ----------------------------------------------------------------------------


def _published(key: EnrolledKey, now: datetime, validity: timedelta) -> dict[str, object]:
    return {
        "key_id": key.key_id,
        "public_key": key.public_key,
        "valid_from": now - BACKDATE,
        "valid_until": now + validity,
    }


def _verified_request(path: Path, *, also_by: tuple[SigningPublicKey, ...] = ()) -> AgencyEnrolment | GatewayEnrolment:
    try:
        return verify_enrolment(read_enrolment(path.read_bytes()), also_by=also_by)
    except OSError as exc:
        raise SiteError(f"cannot read the enrolment request {path}: {exc.strerror}") from exc
    except ProtocolError as exc:
        raise SiteError(f"enrolment request {path} refused: {exc}") from exc


def add_agency(root: Path, request: Path, *, now: datetime, key_validity: timedelta = KEY_VALIDITY) -> AgencyEntry:
    """List the agency of a verified enrolment request in the draft."""
    files = AuthorityFiles(root)
    draft = load_draft(files)
    enrolment = _verified_request(request)
    if not isinstance(enrolment, AgencyEnrolment):
        raise SiteError(f"{request} enrols a gateway: use `rogatory authority add-gateway`")
    if any(entry.agency_id == enrolment.agency_id for entry in draft.agencies):
        raise SiteError(f"agency {enrolment.agency_id} is listed already: use `rogatory authority rotate-key`")
    entry = AgencyEntry.model_validate(
        {
            "agency_id": enrolment.agency_id,
            "name": enrolment.name,
            "country": enrolment.country,
            "signing_keys": (PublishedSigningKey.model_validate(_published(enrolment.signing_key, now, key_validity)),),
            "encryption_keys": (
                PublishedEncryptionKey.model_validate(_published(enrolment.encryption_key, now, key_validity)),
            ),
        }
    )
    _save_draft(files, draft.model_copy(update={"agencies": (*draft.agencies, entry)}))
    return entry


def add_gateway(root: Path, request: Path, *, now: datetime, key_validity: timedelta = KEY_VALIDITY) -> GatewayEntry:
    """List the gateway of a verified enrolment request (replacing none: one gateway per network)."""
    files = AuthorityFiles(root)
    draft = load_draft(files)
    enrolment = _verified_request(request)
    if not isinstance(enrolment, GatewayEnrolment):
        raise SiteError(f"{request} enrols an agency: use `rogatory authority add-agency`")
    if draft.gateway is not None:
        raise SiteError(f"the draft lists gateway {draft.gateway.gateway_id} already")
    entry = GatewayEntry(
        gateway_id=enrolment.gateway_id,
        evidence_keys=(PublishedSigningKey.model_validate(_published(enrolment.evidence_key, now, key_validity)),),
        log_keys=(PublishedSigningKey.model_validate(_published(enrolment.log_key, now, key_validity)),),
        log_origin=enrolment.log_origin,
    )
    _save_draft(files, draft.model_copy(update={"gateway": entry}))
    return entry


def add_timestamp_authority(root: Path, name: str, root_certificate: Path) -> TimestampAuthorityEntry:
    """List a time-stamp authority (by its root certificate, PEM or DER) whose tokens over checkpoints count."""
    files = AuthorityFiles(root)
    draft = load_draft(files)
    try:
        raw = root_certificate.read_bytes()
        certificate = load_certificate(raw)
    except OSError as exc:
        raise SiteError(f"cannot read {root_certificate}: {exc}") from exc
    except ProofInvalid as exc:
        raise SiteError(f"{root_certificate}: {exc.detail}") from exc
    entry = TimestampAuthorityEntry(name=name, root_certificate=certificate.public_bytes(serialization.Encoding.DER))
    if any(known.name == name for known in draft.timestamp_authorities):
        raise SiteError(f"a time-stamp authority named {name!r} is already listed")
    _save_draft(files, draft.model_copy(update={"timestamp_authorities": (*draft.timestamp_authorities, entry)}))
    return entry


def remove_timestamp_authority(root: Path, name: str) -> None:
    """Stop trusting a time-stamp authority's future tokens (those already verified stay in bundles)."""
    files = AuthorityFiles(root)
    draft = load_draft(files)
    kept = tuple(entry for entry in draft.timestamp_authorities if entry.name != name)
    if len(kept) == len(draft.timestamp_authorities):
        raise SiteError(f"no time-stamp authority named {name!r} is listed")
    _save_draft(files, draft.model_copy(update={"timestamp_authorities": kept}))


def remove_agency(root: Path, agency: str) -> None:
    """Drop an agency from the draft, and from every agreement rule (a rule left empty goes, then its agreement)."""
    files = AuthorityFiles(root)
    draft = load_draft(files)
    gone = parse_agency_id(agency)
    if not any(entry.agency_id == gone for entry in draft.agencies):
        raise SiteError(f"agency {gone} is not in the draft")
    agreements = []
    for agreement in draft.agreements:
        rules = []
        for rule in agreement.rules:
            senders = tuple(a for a in rule.senders if a != gone)
            recipients = tuple(a for a in rule.recipients if a != gone)
            if senders and recipients:
                rules.append(rule.model_copy(update={"senders": senders, "recipients": recipients}))
        if rules:
            agreements.append(agreement.model_copy(update={"rules": tuple(rules)}))
    _save_draft(
        files,
        draft.model_copy(
            update={
                "agencies": tuple(entry for entry in draft.agencies if entry.agency_id != gone),
                "agreements": tuple(agreements),
            }
        ),
    )


def add_agreement(
    root: Path,
    *,
    agreement_id: str,
    title: str,
    senders: tuple[str, ...],
    recipients: tuple[str, ...],
    message_types: tuple[str, ...],
    both_ways: bool,
    now: datetime,
    validity: timedelta = AGREEMENT_VALIDITY,
) -> Agreement:
    """Add an agreement between agencies the draft lists."""
    files = AuthorityFiles(root)
    draft = load_draft(files)
    listed = {entry.agency_id for entry in draft.agencies}
    try:
        named = [parse_agency_id(agency) for agency in (*senders, *recipients)]
    except ProtocolError as exc:
        raise SiteError(f"add-agreement: {exc}") from exc
    unknown = sorted(set(named) - listed)
    if unknown:
        raise SiteError(f"add-agreement: agencies {unknown} are not in the draft: add them first")
    if any(existing.agreement_id == agreement_id for existing in draft.agreements):
        raise SiteError(f"add-agreement: agreement {agreement_id} exists already")
    try:
        rules = [
            AgreementRule.model_validate({"senders": senders, "recipients": recipients, "message_types": message_types})
        ]
        if both_ways:
            rules.append(
                AgreementRule.model_validate(
                    {"senders": recipients, "recipients": senders, "message_types": message_types}
                )
            )
        agreement = Agreement.model_validate(
            {
                "agreement_id": agreement_id,
                "title": title,
                "valid_from": now - BACKDATE,
                "valid_until": now + validity,
                "rules": tuple(rules),
            }
        )
    except ValidationError as exc:
        raise SiteError(f"add-agreement: {exc}") from exc
    _save_draft(files, draft.model_copy(update={"agreements": (*draft.agreements, agreement)}))
    return agreement


def rotate_agency_key(
    root: Path,
    request: Path,
    *,
    now: datetime,
    key_validity: timedelta = KEY_VALIDITY,
    overlap: timedelta = ROTATION_OVERLAP,
) -> AgencyEntry:
    """Add an agency's new keys from a rotation request signed by the new key and one listed for it.

    The keys it replaces stay listed until `now + overlap` (or their own end, if sooner).
    """
    files = AuthorityFiles(root)
    draft = load_draft(files)
    try:
        unverified = AgencyEnrolment.model_validate_json(read_enrolment(request.read_bytes()).payload)
    except (OSError, ProtocolError, ValidationError) as exc:
        raise SiteError(f"rotation request {request} refused: {exc}") from exc
    entry = next((e for e in draft.agencies if e.agency_id == unverified.agency_id), None)
    if entry is None:
        raise SiteError(f"agency {unverified.agency_id} is not in the draft: use `rogatory authority add-agency`")
    listed = [k for k in entry.signing_keys if k.revoked_at is None]
    request_keys = {signature.key_id for signature in read_enrolment(request.read_bytes()).signatures}
    vouching = [k for k in listed if k.key_id in request_keys]
    if not vouching:
        raise SiteError(
            f"rotation request {request} refused: "
            f"expected a signature by a key listed for {entry.agency_id}, found none"
        )
    enrolment = _verified_request(request, also_by=(vouching[0].verifier,))
    if not isinstance(enrolment, AgencyEnrolment):
        raise SiteError(f"rotation request {request} refused: it does not enrol an agency")

    def retire(keys: tuple[PublishedKey, ...]) -> list[dict[str, object]]:
        return [key.model_dump() | {"valid_until": min(key.valid_until, now + overlap)} for key in keys]

    updated = AgencyEntry.model_validate(
        {
            "agency_id": entry.agency_id,
            "name": entry.name,
            "country": entry.country,
            "signing_keys": (
                *(PublishedSigningKey.model_validate(k) for k in retire(entry.signing_keys)),
                PublishedSigningKey.model_validate(_published(enrolment.signing_key, now, key_validity)),
            ),
            "encryption_keys": (
                *(PublishedEncryptionKey.model_validate(k) for k in retire(entry.encryption_keys)),
                PublishedEncryptionKey.model_validate(_published(enrolment.encryption_key, now, key_validity)),
            ),
        }
    )
    agencies = tuple(updated if e.agency_id == entry.agency_id else e for e in draft.agencies)
    _save_draft(files, draft.model_copy(update={"agencies": agencies}))
    return updated


def revoke_key(root: Path, key_id: str, *, at: datetime) -> str:
    """Mark key `key_id` revoked from `at`, wherever the draft lists it; returns its owner."""
    files = AuthorityFiles(root)
    draft = load_draft(files)
    found: list[str] = []

    def revoked(keys: tuple[PublishedKey, ...], owner: str) -> tuple[dict[str, object], ...]:
        out = []
        for key in keys:
            dumped = key.model_dump()
            if key.key_id == key_id:
                found.append(owner)
                dumped["revoked_at"] = at if key.revoked_at is None else min(key.revoked_at, at)
            out.append(dumped)
        return tuple(out)

    agencies = tuple(
        AgencyEntry.model_validate(
            entry.model_dump()
            | {
                "signing_keys": revoked(entry.signing_keys, entry.agency_id),
                "encryption_keys": revoked(entry.encryption_keys, entry.agency_id),
            }
        )
        for entry in draft.agencies
    )
    gateway = draft.gateway
    if gateway is not None:
        gateway = GatewayEntry.model_validate(
            gateway.model_dump()
            | {
                "evidence_keys": revoked(gateway.evidence_keys, gateway.gateway_id),
                "log_keys": revoked(gateway.log_keys, gateway.gateway_id),
            }
        )
    if not found:
        raise SiteError(f"revoke-key: no key {key_id} in the draft")
    _save_draft(files, draft.model_copy(update={"agencies": agencies, "gateway": gateway}))
    return found[0]


# --- Signing ---------------------------------------------------------------------------------------


def _held_version(out: Path, authority: SigningPublicKey) -> int:
    """The version of the directory already at `out` (0 if none); one that does not verify is refused."""
    if not out.exists():
        return 0
    try:
        signed = SignedStatement.from_json(out.read_bytes())
        payload = verify_statement(signed, PAYLOAD_TYPE_DIRECTORY, authority)
        return parse_model(Directory, payload, what="directory").version
    except (OSError, ProtocolError) as exc:
        raise SiteError(f"{out} holds something this authority did not sign: refusing to replace it ({exc})") from exc


def sign_version(
    root: Path,
    *,
    out: Path,
    passphrase: bytes,
    now: datetime,
    validity: timedelta = DIRECTORY_VALIDITY,
    version: int | None = None,
) -> Directory:
    """Sign the draft as the next version; write it to `versions/<N>.json` and to `out`.

    The version is one more than any signed here or found at `out`; an
    explicit `version` not above that is refused: a version only grows.
    """
    files = AuthorityFiles(root)
    draft = load_draft(files)
    authority = authority_public_key(files)
    highest = max([0, *files.versions(), _held_version(out, authority)])
    number = highest + 1 if version is None else version
    if number <= highest:
        raise SiteError(f"sign: version {number} is not above version {highest} already signed: a version only grows")
    if draft.gateway is None:
        raise SiteError("sign: the draft lists no gateway: `rogatory authority add-gateway` first")
    try:
        keys = unlock_keystore(files.keystore.read_bytes(), passphrase)
        key = SigningPrivateKey(keys["signing"])
    except (OSError, KeyError, ProtocolError) as exc:
        raise SiteError(f"sign: cannot unlock the authority keystore {files.keystore}: {exc}") from exc
    if key.key_id != authority.key_id:
        raise SiteError("sign: the keystore's key is not the one authority.json publishes")
    try:
        directory = Directory(
            network=draft.network,
            version=number,
            issued_at=now,
            expires_at=now + validity,
            authority_key=draft.authority_key,
            agencies=draft.agencies,
            gateway=draft.gateway,
            agreements=draft.agreements,
            timestamp_authorities=draft.timestamp_authorities or None,
        )
    except ValidationError as exc:
        raise SiteError(f"sign: the draft is not a valid directory: {exc}") from exc
    signed = sign_directory(directory, key).model_dump_json().encode("utf-8")
    write_public(files.version(number), signed)
    write_public(out, signed)
    return directory


# --- Reading ---------------------------------------------------------------------------------------


def _describe_keys(what: str, keys: tuple[PublishedKey, ...]) -> list[str]:
    lines = []
    for key in keys:
        state = f"revoked at {key.revoked_at.isoformat()}" if key.revoked_at else f"until {key.valid_until.isoformat()}"
        lines.append(f"    {what:<10} {key.key_id}  {state}")
    return lines


def describe(directory: Directory | Draft) -> list[str]:
    """The lines `show` prints."""
    if isinstance(directory, Directory):
        head = [
            f"network {directory.network}  version {directory.version}",
            f"issued {directory.issued_at.isoformat()}  expires {directory.expires_at.isoformat()}",
        ]
    else:
        head = [f"network {directory.network}  draft (not signed)"]
    lines = [*head, f"authority key {directory.authority_key}", "agencies:"]
    for entry in directory.agencies:
        lines.append(f"  {entry.agency_id}  {entry.name} ({entry.country})")
        lines += _describe_keys("signing", entry.signing_keys) + _describe_keys("encryption", entry.encryption_keys)
    if directory.gateway is not None:
        lines.append(f"gateway {directory.gateway.gateway_id}  log origin {directory.gateway.log_origin}")
        lines += _describe_keys("evidence", directory.gateway.evidence_keys)
        lines += _describe_keys("log", directory.gateway.log_keys)
    for authority in directory.timestamp_authorities or ():
        subject = load_certificate(authority.root_certificate).subject.rfc4514_string()
        lines.append(f"time-stamp authority {authority.name}  root {subject}")
    lines.append("agreements:")
    for agreement in directory.agreements:
        lines.append(f"  {agreement.agreement_id}  {agreement.title}  until {agreement.valid_until.isoformat()}")
        lines += [
            f"    {','.join(rule.senders)} -> {','.join(rule.recipients)}: {','.join(rule.message_types)}"
            for rule in agreement.rules
        ]
    return lines


def _pick(files: AuthorityFiles, which: str) -> Directory | Draft:
    if which == "draft":
        return load_draft(files)
    if not which.isdigit():
        raise SiteError(f"expected a version number or 'draft', found {which!r}")
    return read_version(files, int(which))


def diff(files: AuthorityFiles, first: str, second: str) -> list[str]:
    """A unified diff of two versions (or a version and the draft), as indented JSON."""

    def text(which: str) -> list[str]:
        value = _pick(files, which).model_dump(mode="json", exclude_none=True)
        return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False).splitlines()

    return list(difflib.unified_diff(text(first), text(second), fromfile=first, tofile=second, lineterm=""))


# --- The commands ----------------------------------------------------------------------------------


def _days(value: str) -> timedelta:
    return timedelta(days=float(value))


def _split(values: list[str]) -> tuple[str, ...]:
    return tuple(part.strip() for value in values for part in value.split(",") if part.strip())


def _run(args: argparse.Namespace) -> int:  # noqa: C901, PLR0912 - one dispatch of the verbs
    root = Path(args.dir)
    files = AuthorityFiles(root)
    now = _now()
    verb = args.authority_command
    try:
        if verb == "init":
            info = init_authority(
                root, network=args.network, passphrase=read_passphrase(args.passphrase_file, confirm=True)
            )
            print(f"authority key (ROGATORY_AUTHORITY_KEY of every service): {info.authority_key}")
            print(f"key id {info.key_id}; public: {files.info}")
        elif verb == "add-agency":
            entry = add_agency(root, Path(args.request), now=now, key_validity=args.key_validity_days)
            print(f"added {entry.agency_id} to the draft (signing key {entry.signing_keys[0].key_id})")
        elif verb == "add-gateway":
            gateway = add_gateway(root, Path(args.request), now=now, key_validity=args.key_validity_days)
            print(f"added gateway {gateway.gateway_id} to the draft")
        elif verb == "add-tsa":
            listed = add_timestamp_authority(root, args.name, Path(args.root_certificate))
            print(f"listed time-stamp authority {listed.name} in the draft")
        elif verb == "remove-tsa":
            remove_timestamp_authority(root, args.name)
            print(f"removed time-stamp authority {args.name} from the draft")
        elif verb == "remove-agency":
            remove_agency(root, args.agency)
            print(f"removed {args.agency} from the draft and its agreements")
        elif verb == "add-agreement":
            agreement = add_agreement(
                root,
                agreement_id=args.id,
                title=args.title or args.id,
                senders=_split(args.senders),
                recipients=_split(args.recipients),
                message_types=_split(args.types),
                both_ways=args.both_ways,
                now=now,
                validity=args.valid_days,
            )
            print(f"added agreement {agreement.agreement_id} ({len(agreement.rules)} rule(s)) to the draft")
        elif verb == "rotate-key":
            entry = rotate_agency_key(root, Path(args.request), now=now, overlap=args.overlap_days)
            print(
                f"added new keys of {entry.agency_id}; the replaced ones end by {(now + args.overlap_days).isoformat()}"
            )
        elif verb == "revoke-key":
            at = datetime.fromisoformat(args.at) if args.at else now
            owner = revoke_key(root, args.key_id, at=at)
            print(f"key {args.key_id} of {owner} revoked from {at.isoformat()} in the draft")
        elif verb == "show":
            for line in describe(_pick(files, args.version)):
                print(line)
        elif verb == "diff":
            for line in diff(files, args.first, args.second):
                print(line)
        elif verb == "sign":
            directory = sign_version(
                root,
                out=Path(args.out),
                passphrase=read_passphrase(args.passphrase_file, confirm=False),
                now=now,
                validity=args.valid_days,
                version=args.version,
            )
            print(f"signed version {directory.version}, in force until {directory.expires_at.isoformat()}: {args.out}")
    except SiteError as exc:
        print(f"rogatory: {exc}", file=sys.stderr)
        return 1
    return 0


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `rogatory authority ...`."""
    verbs = commands.add_parser("authority", help="the offline directory authority").add_subparsers(
        dest="authority_command", required=True
    )

    def verb(name: str, help_text: str) -> argparse.ArgumentParser:
        parser = verbs.add_parser(name, help=help_text)
        parser.add_argument("--dir", required=True, help="the authority's directory (keystore, draft, versions)")
        parser.set_defaults(run=_run)
        return parser

    init = verb("init", "make the authority's key (encrypted) and print its public key")
    init.add_argument("--network", required=True, help="the network's name, as every directory version states it")
    init.add_argument("--passphrase-file", help="the keystore passphrase (default: ROGATORY_PASSPHRASE or a prompt)")
    for name, what in (("add-agency", "an agency"), ("add-gateway", "the gateway")):
        parser = verb(name, f"list {what} from its verified enrolment request")
        parser.add_argument("request", help="the enrolment.json it sent")
        parser.add_argument("--key-validity-days", type=_days, default=KEY_VALIDITY)
    remove = verb("remove-agency", "drop an agency (and it from every agreement)")
    remove.add_argument("agency")
    tsa = verb("add-tsa", "trust an RFC 3161 time-stamp authority for checkpoints (ROGATORY_TSA_URL of the gateway)")
    tsa.add_argument("--name", required=True, help="what the directory calls it, e.g. 'National TSA'")
    tsa.add_argument("root_certificate", help="its root certificate (PEM or DER)")
    untrust = verb("remove-tsa", "stop trusting a time-stamp authority")
    untrust.add_argument("--name", required=True)
    agreement = verb("add-agreement", "allow agencies to send message types to others")
    agreement.add_argument("--id", required=True, help="e.g. BD-LY-UNTOC-2025")
    agreement.add_argument("--title")
    agreement.add_argument("--from", dest="senders", action="append", required=True, help="sender(s), comma-separated")
    agreement.add_argument("--to", dest="recipients", action="append", required=True, help="recipient(s)")
    agreement.add_argument("--types", action="append", required=True, help="message types, comma-separated, or '*'")
    agreement.add_argument("--both-ways", action="store_true", help="also from the recipients to the senders")
    agreement.add_argument("--valid-days", type=_days, default=AGREEMENT_VALIDITY)
    rotate = verb("rotate-key", "add an agency's new keys from its rotation.json (signed by a listed key)")
    rotate.add_argument("request")
    rotate.add_argument("--overlap-days", type=_days, default=ROTATION_OVERLAP)
    revoke = verb("revoke-key", "mark a key revoked (from now, or --at)")
    revoke.add_argument("key_id")
    revoke.add_argument("--at", help="ISO 8601 time with offset (default: now)")
    show = verb("show", "print a signed version or the draft")
    show.add_argument("version", nargs="?", default="draft", help="a version number, or 'draft' (the default)")
    compare = verb("diff", "what changed between two versions (or a version and 'draft')")
    compare.add_argument("first")
    compare.add_argument("second")
    sign = verb("sign", "sign the draft as the next version")
    sign.add_argument("--out", required=True, help="where to write the signed directory.json (public)")
    sign.add_argument("--valid-days", type=_days, default=DIRECTORY_VALIDITY)
    sign.add_argument("--version", type=int, help="the version number (default: one more than the highest signed)")
    sign.add_argument("--passphrase-file")


__all__ = [
    "AuthorityFiles",
    "AuthorityInfo",
    "Draft",
    "add_agency",
    "add_agreement",
    "add_commands",
    "add_gateway",
    "add_timestamp_authority",
    "describe",
    "diff",
    "init_authority",
    "read_version",
    "remove_agency",
    "remove_timestamp_authority",
    "revoke_key",
    "rotate_agency_key",
    "sign_version",
]
