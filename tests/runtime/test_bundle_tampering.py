"""The offline verifier of an evidence bundle file catches and names every kind of tampering.

One valid bundle (`tests.support.bundles`), built once in memory; each test
changes one item and checks that the bundle no longer verifies and that the
first item named is the one changed.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
from cryptography import x509

from deploy.cli.commands import main
from deploy.localnet.tsa import TimestampAuthorityKeys
from protocol.bundle import MANIFEST, REPORT, read_bundle
from protocol.bundle_verify import DEFAULT_CHECKS, BundleContext, check_report
from protocol.checkpoint import NoteSignature, SignedCheckpoint
from protocol.encoding import b64decode, b64encode
from protocol.evidence_account import SENT, BundleAccount, ItemKind, ItemResult, ItemStatus
from protocol.keys import SigningPrivateKey
from protocol.signing import SignedStatement
from runtime.bundles import bundle_checks, unpack_bundle, verify_bundle_file
from tests.support.bundles import BuiltBundle, build_bundle, stamp
from tests.support.network import BD, LY


@pytest.fixture(scope="module")
def built() -> BuiltBundle:
    """The valid bundle every test tampers with."""
    return build_bundle()


def members_of(raw: bytes) -> dict[str, bytes]:
    """Every member, manifest and signature included, by name."""
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def rezip(members: dict[str, bytes]) -> bytes:
    """A ZIP of `members`, in their order."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


def tampered(built: BuiltBundle, change: Callable[[dict[str, bytes]], None]) -> BundleAccount:
    """The verifier's account of the bundle after `change` edited its members."""
    members = members_of(built.raw)
    change(members)
    return verify_bundle_file(rezip(members), authority=built.authority)


def first_failure(account: BundleAccount) -> ItemResult:
    assert not account.verified
    failure = account.first_failure
    assert failure is not None
    return failure


def flip(data: bytes, at: int = -3) -> bytes:
    """`data` with one byte changed (at `at`)."""
    position = at % len(data)
    return data[:position] + bytes([data[position] ^ 0x01]) + data[position + 1 :]


def edit_manifest(members: dict[str, bytes], edit: Callable[[dict[str, object]], None]) -> None:
    manifest = json.loads(members[MANIFEST])
    edit(manifest)
    members[MANIFEST] = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()


def message_member(built: BuiltBundle, name: str, message: int = 0) -> str:
    """The member `name` of message number `message` of the bundle."""
    manifest = read_bundle(unpack_bundle(built.raw)).manifest
    item = manifest.messages[message]
    return str(getattr(item, name))


def test_the_untouched_bundle_verifies_and_tells_who_did_what(built: BuiltBundle):
    """Every item verifies; the account names the sender, each step's signer, checkpoint and witnesses."""
    account = verify_bundle_file(built.raw, authority=built.authority)
    assert account.verified, account.first_failure
    assert {item.status for item in account.items} == {ItemStatus.VERIFIED, ItemStatus.ABSENT}
    absent = [item.kind for item in account.items if item.status == ItemStatus.ABSENT]
    assert set(absent) == {ItemKind.TIMESTAMP, ItemKind.REPORT}
    first = account.messages[0]
    assert [event.evidence_type for event in first.events] == [
        SENT,
        "SUBMISSION_ACCEPTED",
        "RELAY_ACCEPTED",
        "DELIVERY",
        "RETRIEVAL",
    ]
    assert first.events[0].actor == BD
    assert first.events[3].actor == LY
    assert first.events[3].signer_key == built.net[LY].signing.key_id
    assert first.events[1].checkpoint is not None
    assert set(first.events[1].checkpoint.witnesses) == {BD, LY}
    assert first.languages == ("en", "bn")
    assert first.title_lines[0] == "MLA_REQUEST in case BD-LY-2025-0007"
    assert account.latest is not None
    assert account.latest.tree_size == 9


def test_only_the_authority_key_is_trusted(built: BuiltBundle):
    """Under another authority key, the first directory version is named, and nothing after is believed."""
    account = verify_bundle_file(built.raw, authority=SigningPrivateKey.generate().public_key)
    failure = first_failure(account)
    assert (failure.kind, failure.item) == (ItemKind.DIRECTORY, "directory v1")


@pytest.mark.parametrize(
    ("member", "kind", "item_suffix"),
    [
        ("document", ItemKind.DOCUMENT, "document"),
        ("content_statement", ItemKind.CONTENT_STATEMENT, "content statement"),
        ("content_signature", ItemKind.CONTENT_STATEMENT, "content statement"),
        ("header", ItemKind.HEADER, "header"),
        ("header_signature", ItemKind.HEADER, "header"),
    ],
)
def test_a_changed_message_member_is_named(built: BuiltBundle, member: str, kind: ItemKind, item_suffix: str):
    """A byte changed in the document, the content statement, the header or a signature is caught there."""
    path = message_member(built, member)

    def change(members: dict[str, bytes]) -> None:
        members[path] = flip(members[path])

    failure = first_failure(tampered(built, change))
    assert failure.kind == kind
    assert failure.item == f"message {built.message_ids[0]} {item_suffix}"


@pytest.mark.parametrize("message", [0, 1])
@pytest.mark.parametrize("position", [1, 2, 3, 4])
def test_each_changed_evidence_statement_is_named(built: BuiltBundle, message: int, position: int):
    """Each evidence statement, re-signed by nobody but changed in its payload, is caught and named."""
    item = read_bundle(unpack_bundle(built.raw)).manifest.messages[message].evidence[position - 1]

    def change(members: dict[str, bytes]) -> None:
        signed = SignedStatement.from_json(members[item.path])
        payload = signed.payload.replace(b'"at":"2026-11-29T10:', b'"at":"2026-11-29T11:')
        members[item.path] = signed.model_copy(update={"payload": payload}).model_dump_json().encode()

    failure = first_failure(tampered(built, change))
    assert failure.kind == ItemKind.EVIDENCE
    assert failure.item == f"message {built.message_ids[message]} evidence {position}"


def test_evidence_of_another_message_put_in_place_is_named(built: BuiltBundle):
    """A valid statement about the other message, under this one's name, is caught: it names another header."""
    manifest = read_bundle(unpack_bundle(built.raw)).manifest
    mine, theirs = manifest.messages[0].evidence[0].path, manifest.messages[1].evidence[0].path

    def change(members: dict[str, bytes]) -> None:
        members[mine] = members[theirs]

    failure = first_failure(tampered(built, change))
    assert (failure.kind, failure.item) == (ItemKind.EVIDENCE, f"message {built.message_ids[0]} evidence 1")


def test_a_changed_inclusion_proof_is_named(built: BuiltBundle):
    """A node of an evidence's inclusion proof changed in the manifest: that proof is named, before the manifest."""

    def edit(manifest: dict[str, object]) -> None:
        proof = manifest["messages"][0]["evidence"][2]["inclusion"]  # type: ignore[index]
        proof["nodes"][0] = b64encode(flip(b64decode(proof["nodes"][0])))

    failure = first_failure(tampered(built, lambda members: edit_manifest(members, edit)))
    assert (failure.kind, failure.item) == (
        ItemKind.INCLUSION,
        f"message {built.message_ids[0]} evidence 3 inclusion proof",
    )


def test_a_changed_checkpoint_is_named(built: BuiltBundle):
    """A checkpoint whose root was changed no longer carries the log's signature."""

    def change(members: dict[str, bytes]) -> None:
        note = members["checkpoints/5.note"].decode()
        lines = note.split("\n")
        lines[2] = b64encode(bytes(32))
        members["checkpoints/5.note"] = "\n".join(lines).encode()

    failure = first_failure(tampered(built, change))
    assert (failure.kind, failure.item) == (ItemKind.CHECKPOINT, "checkpoint 5")


def test_a_changed_cosignature_is_named(built: BuiltBundle):
    """A witness's cosignature with one bit changed is caught, naming the checkpoint and the witness."""

    def change(members: dict[str, bytes]) -> None:
        signed = SignedCheckpoint.parse(members["checkpoints/9.note"])
        lines = [
            line
            if line.key_name != LY
            else NoteSignature(line.key_name, line.key_hash, flip(line.signature_bytes, at=20))
            for line in signed.signatures
        ]
        members["checkpoints/9.note"] = SignedCheckpoint(signed.checkpoint, tuple(lines)).to_text().encode()

    failure = first_failure(tampered(built, change))
    assert (failure.kind, failure.item) == (ItemKind.COSIGNATURE, f"checkpoint 9 cosignature {LY}")


def test_a_checkpoint_stripped_of_a_witness_is_not_published(built: BuiltBundle):
    """The latest checkpoint with one witness's line removed: the witnesses item fails (two are needed)."""

    def change(members: dict[str, bytes]) -> None:
        signed = SignedCheckpoint.parse(members["checkpoints/9.note"])
        lines = tuple(line for line in signed.signatures if line.key_name != LY)
        members["checkpoints/9.note"] = SignedCheckpoint(signed.checkpoint, lines).to_text().encode()

    failure = first_failure(tampered(built, change))
    assert (failure.kind, failure.item) == (ItemKind.WITNESSES, "checkpoint 9 witnesses")


def test_a_changed_consistency_proof_is_named(built: BuiltBundle):
    """A node of the consistency proof from the first checkpoint to the latest changed."""

    def edit(manifest: dict[str, object]) -> None:
        proof = manifest["consistency"][0]  # type: ignore[index]
        proof["nodes"][0] = b64encode(flip(b64decode(proof["nodes"][0])))

    failure = first_failure(tampered(built, lambda members: edit_manifest(members, edit)))
    assert (failure.kind, failure.item) == (ItemKind.CONSISTENCY, "consistency 5 -> 9")


def test_a_changed_directory_version_is_named(built: BuiltBundle):
    """A directory version changed after the authority signed it (a key swapped in, say) is caught first."""

    def change(members: dict[str, bytes]) -> None:
        signed = SignedStatement.from_json(members["directories/1.json"])
        payload = signed.payload.replace(b'"network":"test"', b'"network":"evil"')
        members["directories/1.json"] = signed.model_copy(update={"payload": payload}).model_dump_json().encode()

    failure = first_failure(tampered(built, change))
    assert (failure.kind, failure.item) == (ItemKind.DIRECTORY, "directory v1")


def test_a_changed_manifest_is_named(built: BuiltBundle):
    """The manifest changed where no other item looks (the export time): its signature no longer holds."""

    def edit(manifest: dict[str, object]) -> None:
        manifest["exported_at"] = "2027-01-01T00:00:00.000Z"

    failure = first_failure(tampered(built, lambda members: edit_manifest(members, edit)))
    assert (failure.kind, failure.item) == (ItemKind.MANIFEST, "manifest")


def test_an_added_member_is_named(built: BuiltBundle):
    """A member the manifest does not list is named."""

    def change(members: dict[str, bytes]) -> None:
        members["messages/extra.json"] = b"{}"

    failure = first_failure(tampered(built, change))
    assert (failure.kind, failure.item) == (ItemKind.MEMBER, "member messages/extra.json")


def test_a_removed_member_is_named(built: BuiltBundle):
    """A member taken out: the item that needs it names it as missing."""
    path = message_member(built, "content_signature", message=1)

    def change(members: dict[str, bytes]) -> None:
        del members[path]

    failure = first_failure(tampered(built, change))
    assert (failure.kind, failure.item) == (
        ItemKind.CONTENT_STATEMENT,
        f"message {built.message_ids[1]} content statement",
    )
    assert path in failure.detail


def test_something_that_is_not_a_bundle_is_refused(built: BuiltBundle):
    """Truncated bytes: the bundle itself is named."""
    failure = first_failure(verify_bundle_file(built.raw[: len(built.raw) // 2], authority=built.authority))
    assert failure.kind == ItemKind.BUNDLE


def test_a_present_report_fails_without_its_check_and_passes_with_one(built: BuiltBundle):
    """The report slot: absent is ABSENT; present and no check installed fails (the pure protocol), unchecked
    without the network CA (the runtime's checks), decided by the installed check."""

    def add_report(members: dict[str, bytes]) -> None:
        members[REPORT] = b"%PDF-1.7 test"

        def edit(manifest: dict[str, object]) -> None:
            manifest["report"] = {"path": REPORT}

        edit_manifest(members, edit)

    members = members_of(built.raw)
    add_report(members)
    protocol_alone = verify_bundle_file(rezip(members), authority=built.authority, checks=DEFAULT_CHECKS)
    failure = first_failure(protocol_alone)
    assert (failure.kind, failure.item) == (ItemKind.REPORT, REPORT)
    # The runtime's checks: without the network CA the report is listed unchecked; with one, this is no report.
    unchecked = tampered(built, add_report)
    assert next(item for item in unchecked.items if item.kind == ItemKind.REPORT).status == ItemStatus.UNCHECKED
    some_ca = x509.load_der_x509_certificate(TimestampAuthorityKeys.generate("Some CA").root_der)
    with_ca = verify_bundle_file(rezip(members), authority=built.authority, checks=bundle_checks(some_ca))
    assert next(item for item in with_ca.items if item.kind == ItemKind.REPORT).status == ItemStatus.FAILED

    def report_check(context: BundleContext) -> Iterable[ItemResult]:
        data = context.member(REPORT)
        status = ItemStatus.VERIFIED if data.startswith(b"%PDF") else ItemStatus.FAILED
        yield ItemResult(REPORT, ItemKind.REPORT, status)

    members = members_of(built.raw)
    add_report(members)
    checks = tuple(report_check if check is check_report else check for check in DEFAULT_CHECKS)
    account = verify_bundle_file(rezip(members), authority=built.authority, checks=checks)
    report = next(item for item in account.items if item.kind == ItemKind.REPORT)
    assert report.status == ItemStatus.VERIFIED
    # the manifest changed without a new signature: still caught, as the manifest
    assert first_failure(account).kind == ItemKind.MANIFEST


def test_the_command_line_exits_0_on_a_good_bundle_and_1_naming_the_first_bad_item(
    built: BuiltBundle, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    """`rogatory evidence verify FILE --authority-key K`: 0 and VERIFIED; after one evidence statement changed,
    1 and the item named; without a key, 2."""
    monkeypatch.delenv("ROGATORY_AUTHORITY_KEY", raising=False)
    key = b64encode(built.authority.raw)
    good = tmp_path / "good.zip"
    good.write_bytes(built.raw)
    assert main(["evidence", "verify", str(good), "--authority-key", key]) == 0
    assert "VERIFIED: every item" in capsys.readouterr().out
    members = members_of(built.raw)
    item = read_bundle(unpack_bundle(built.raw)).manifest.messages[1].evidence[2]
    members[item.path] = flip(members[item.path], at=40)
    bad = tmp_path / "bad.zip"
    bad.write_bytes(rezip(members))
    assert main(["evidence", "verify", str(bad), "--authority-key", key]) == 1
    out = capsys.readouterr().out
    assert f"NOT VERIFIED: first failing item: message {built.message_ids[1]} evidence 3" in out
    assert main(["evidence", "verify", str(good)]) == 2


def test_negative_evidence_verifies_and_is_told_with_its_reason():
    """A message the recipient refused: its signed NON_DELIVERY, with the reason, is in the account."""
    built = build_bundle(refused=True)
    account = verify_bundle_file(built.raw, authority=built.authority)
    assert account.verified, account.first_failure
    refused = account.messages[1]
    assert [event.evidence_type for event in refused.events] == [
        SENT,
        "SUBMISSION_ACCEPTED",
        "RELAY_ACCEPTED",
        "NON_DELIVERY",
    ]
    assert refused.events[-1].actor == BD
    assert refused.events[-1].reason == "ILLEGAL_TRANSITION: refused in the test"


def note_of(token_path: str) -> str:
    """The checkpoint member a token (`timestamps/<size>-<n>.tsr`) is over."""
    size = token_path.removeprefix("timestamps/").split("-", 1)[0]
    return f"checkpoints/{size}.note"


@pytest.fixture(scope="module")
def stamped() -> tuple[BuiltBundle, TimestampAuthorityKeys]:
    """The same bundle, its latest checkpoint time-stamped by a TSA its directory lists."""
    tsa = TimestampAuthorityKeys.generate("Rogatory Test TSA")
    return build_bundle(tsa=tsa), tsa


def test_a_time_stamp_by_a_listed_authority_verifies_and_marks_its_checkpoint(stamped):
    built, _ = stamped
    account = verify_bundle_file(built.raw, authority=built.authority)
    assert account.verified, account.first_failure
    (token,) = [
        item for item in account.items if item.kind is ItemKind.TIMESTAMP and item.status is ItemStatus.VERIFIED
    ]
    assert "existed by" in token.detail
    assert any(
        event.checkpoint is not None and event.checkpoint.timestamped for m in account.messages for event in m.events
    )


def test_a_time_stamp_token_changed_or_moved_to_another_checkpoint_is_caught(stamped):
    built, _ = stamped
    members = members_of(built.raw)
    (path,) = [name for name in members if name.startswith("timestamps/")]

    def flip(changed: dict[str, bytes]) -> None:
        token = bytearray(changed[path])
        token[len(token) // 2] ^= 0x01
        changed[path] = bytes(token)

    failure = first_failure(tampered(built, flip))
    assert (failure.item, failure.kind) == (path, ItemKind.TIMESTAMP)

    def other_note(changed: dict[str, bytes]) -> None:  # the token stays, the checkpoint it vouches for changes
        stamped_note = note_of(path)
        other = next(name for name in changed if name.startswith("checkpoints/") and name != stamped_note)
        changed[stamped_note] = changed[other]

    assert not tampered(built, other_note).verified


def test_a_time_stamp_by_an_authority_no_directory_lists_is_refused():
    listed, stranger = TimestampAuthorityKeys.generate("Listed TSA"), TimestampAuthorityKeys.generate("Other TSA")
    built = build_bundle(tsa=listed)
    members = members_of(built.raw)
    (path,) = [name for name in members if name.startswith("timestamps/")]
    members[path] = stamp(stranger, members[note_of(path)].decode())
    failure = first_failure(verify_bundle_file(rezip(members), authority=built.authority))
    assert (failure.item, failure.kind) == (path, ItemKind.TIMESTAMP)
    assert "TIMESTAMP_INVALID" in failure.detail
