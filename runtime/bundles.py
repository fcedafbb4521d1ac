"""The evidence bundle as a file: its members (`protocol.bundle`) packed in, and read out of, a ZIP.

Packing is deterministic: members in the order given (manifest, signature,
then by name), one fixed time, one compression, so one set of members gives
one file. Unpacking reads the ZIP's directory first and refuses, before
inflating anything, more members or more bytes than `protocol.bundle` allows
(a ZIP bomb), a name twice, or anything that is not a ZIP. Names are only ever
compared with the manifest's, never used as paths.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

from cryptography import x509

from protocol.bundle import MAX_BUNDLE_BYTES, MAX_MEMBER_BYTES, MAX_MEMBERS, REPORT, checkpoint_path
from protocol.bundle_verify import (
    DEFAULT_CHECKS,
    BundleContext,
    ItemCheck,
    check_checkpoints,
    check_report,
    check_timestamps,
    verify_bundle,
)
from protocol.checkpoint import SignedCheckpoint
from protocol.errors import ErrorCode, LimitExceeded, MalformedInput, ProtocolError
from protocol.evidence_account import BundleAccount, ItemKind, ItemResult, ItemStatus
from protocol.keys import SigningPublicKey
from protocol.signing import SignedStatement
from runtime.reports.bundle import verify_report_in_bundle
from runtime.reports.errors import ReportError
from runtime.timestamps import verify_timestamp

_FIXED_TIME: Final = (1980, 1, 1, 0, 0, 0)


def pack_bundle(members: Mapping[str, bytes]) -> bytes:
    """The ZIP file of `members`, in their order."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path, data in members.items():
            info = zipfile.ZipInfo(path, date_time=_FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return out.getvalue()


def unpack_bundle(raw: bytes) -> dict[str, bytes]:
    """Every member of the ZIP file `raw`, by name, within the limits; `MalformedInput` if it is not one."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(raw))
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise MalformedInput(f"not a ZIP file: {exc}", code=ErrorCode.MALFORMED_BUNDLE) from exc
    with archive:
        infos = [info for info in archive.infolist() if not info.is_dir()]
        if len(infos) > MAX_MEMBERS + 2:
            raise LimitExceeded(f"{len(infos)} members, over the limit", code=ErrorCode.TOO_MANY_ITEMS)
        if sum(info.file_size for info in infos) > MAX_BUNDLE_BYTES or any(
            info.file_size > MAX_MEMBER_BYTES for info in infos
        ):
            raise LimitExceeded("a member or the whole bundle is over the size limit")
        members: dict[str, bytes] = {}
        for info in infos:
            if info.filename in members:
                raise MalformedInput(f"member {info.filename[:100]!r} twice", code=ErrorCode.MALFORMED_BUNDLE)
            try:
                with archive.open(info) as member:
                    data = member.read(MAX_MEMBER_BYTES + 1)
            except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, EOFError) as exc:
                raise MalformedInput(
                    f"member {info.filename[:100]!r} does not read: {exc}", code=ErrorCode.MALFORMED_BUNDLE
                ) from exc
            if len(data) > MAX_MEMBER_BYTES:
                raise LimitExceeded(f"member {info.filename[:100]!r} is over the size limit")
            members[info.filename] = data
    return members


def check_timestamp_tokens(context: BundleContext) -> Iterable[ItemResult]:
    """The time-stamp slot, filled: each RFC 3161 token over a checkpoint must verify.

    Over its signed note (the note without cosignatures), under a time-stamp authority a directory version of
    the bundle lists; a checkpoint without a token is said so (absent, not failed).
    """
    roots = tuple(dict.fromkeys(root for d in context.directories.values() for root in d.timestamp_roots()))
    origin = context.manifest.log_origin
    for item in sorted(context.manifest.checkpoints, key=lambda c: c.tree_size):
        name = f"checkpoint {item.tree_size} time-stamp"
        if not item.timestamps:
            yield ItemResult(name, ItemKind.TIMESTAMP, ItemStatus.ABSENT, "no time-stamp token")
            continue
        members = context.contents.members
        note, stamped = members.get(checkpoint_path(item.tree_size)), None
        for token in item.timestamps:
            stamped = members.get(token.path)
            if note is None or stamped is None:
                yield ItemResult(token.path, ItemKind.TIMESTAMP, ItemStatus.FAILED, "member missing from the bundle")
                continue
            try:
                data = SignedCheckpoint.parse(note.decode()).signed_only_by(origin).to_text().encode()
                trusted = verify_timestamp(stamped, data, roots)
            except ProtocolError as exc:
                yield ItemResult(token.path, ItemKind.TIMESTAMP, ItemStatus.FAILED, f"{exc.code}: {exc.detail}")
                continue
            except UnicodeDecodeError as exc:
                yield ItemResult(token.path, ItemKind.TIMESTAMP, ItemStatus.FAILED, f"unreadable note: {exc}")
                continue
            context.timestamped.add(item.tree_size)
            yield ItemResult(
                token.path,
                ItemKind.TIMESTAMP,
                ItemStatus.VERIFIED,
                f"checkpoint {item.tree_size} existed by {trusted.time.isoformat()} ({trusted.authority})",
            )


def report_check(network_ca: x509.Certificate | None) -> ItemCheck:
    """The report slot, filled: `report.pdf` must be the gateway's signed report of this very bundle.

    One PAdES signature over the whole file by a document-signing certificate `network_ca` issued, and an
    embedded proof listing only this bundle's messages and evidence (`runtime.reports.bundle`). Without the
    network CA a present report is reported unchecked.
    """

    def check_signed_report(context: BundleContext) -> Iterable[ItemResult]:
        report = context.manifest.report
        if report is None:
            yield ItemResult(REPORT, ItemKind.REPORT, ItemStatus.ABSENT, "no report in this bundle")
            return
        if network_ca is None:
            detail = "a signed report is present; give the network CA (--network-ca) to check its signature"
            yield ItemResult(report.path, ItemKind.REPORT, ItemStatus.UNCHECKED, detail)
            return
        members = context.contents.members
        pdf = members.get(report.path)
        if pdf is None:
            yield ItemResult(report.path, ItemKind.REPORT, ItemStatus.FAILED, "member missing from the bundle")
            return
        statements = {
            str(message.message_id): [SignedStatement.from_json(members[item.path]) for item in message.evidence]
            for message in context.manifest.messages
        }
        try:
            verified = verify_report_in_bundle(pdf, network_ca, subject=context.manifest.subject, statements=statements)
        except ReportError as exc:
            yield ItemResult(report.path, ItemKind.REPORT, ItemStatus.FAILED, f"{exc.code}: {exc}"[:300])
            return
        yield ItemResult(
            report.path,
            ItemKind.REPORT,
            ItemStatus.VERIFIED,
            f"signed by {verified.signer} (PAdES), its proof lists {len(verified.proof.messages)} message(s) of this "
            "bundle",
        )

    return check_signed_report


def bundle_checks(network_ca: x509.Certificate | None = None) -> tuple[ItemCheck, ...]:
    """The protocol's checks with both slots filled: RFC 3161 tokens and the signed report."""
    with_tokens = _with_timestamp_tokens(DEFAULT_CHECKS)
    return tuple(report_check(network_ca) if check is check_report else check for check in with_tokens)


def _with_timestamp_tokens(checks: Sequence[ItemCheck]) -> tuple[ItemCheck, ...]:
    """`checks` with the RFC 3161 check in the time-stamp slot.

    It runs right after the checkpoints' check, so that the account marks the checkpoints a trusted time vouches for.
    """
    out: list[ItemCheck] = []
    for check in checks:
        if check is check_timestamps:
            continue
        out.append(check)
        if check is check_checkpoints:
            out.append(check_timestamp_tokens)
    return tuple(out)


BUNDLE_CHECKS: Final[tuple[ItemCheck, ...]] = bundle_checks()
"""The protocol's checks, with the RFC 3161 tokens verified (`runtime.timestamps`) and a signed report listed
unchecked (checking it needs the network CA: `bundle_checks(network_ca)`)."""


def verify_bundle_file(
    raw: bytes, *, authority: SigningPublicKey, checks: Sequence[ItemCheck] = BUNDLE_CHECKS
) -> BundleAccount:
    """Unpack the bundle file `raw` and verify it (`protocol.bundle_verify.verify_bundle`); a bad file is its item."""
    try:
        members: dict[str, bytes] | ProtocolError = unpack_bundle(raw)
    except ProtocolError as exc:
        members = exc
    return verify_bundle(members, authority=authority, bundle_bytes=len(raw), checks=checks)


__all__ = [
    "BUNDLE_CHECKS",
    "bundle_checks",
    "check_timestamp_tokens",
    "pack_bundle",
    "report_check",
    "unpack_bundle",
    "verify_bundle_file",
]
