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
from collections.abc import Mapping, Sequence
from typing import Final

from protocol.bundle import MAX_BUNDLE_BYTES, MAX_MEMBER_BYTES, MAX_MEMBERS
from protocol.bundle_verify import DEFAULT_CHECKS, ItemCheck, verify_bundle
from protocol.errors import ErrorCode, LimitExceeded, MalformedInput, ProtocolError
from protocol.evidence_account import BundleAccount
from protocol.keys import SigningPublicKey

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


def verify_bundle_file(
    raw: bytes, *, authority: SigningPublicKey, checks: Sequence[ItemCheck] = DEFAULT_CHECKS
) -> BundleAccount:
    """Unpack the bundle file `raw` and verify it (`protocol.bundle_verify.verify_bundle`); a bad file is its item."""
    try:
        members: dict[str, bytes] | ProtocolError = unpack_bundle(raw)
    except ProtocolError as exc:
        members = exc
    return verify_bundle(members, authority=authority, bundle_bytes=len(raw), checks=checks)


__all__ = ["pack_bundle", "unpack_bundle", "verify_bundle_file"]
