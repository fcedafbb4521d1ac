"""`rogatory evidence export | verify`: one file that proves what happened to a message or a case.

`export` asks an agent for the evidence bundle of a sent message
(`--message`), a received one (`--inbox`) or a whole case (`--case`) and
writes it to `--out`, asking again while its proofs are pending.

`verify FILE` checks a bundle offline, with nothing but the directory
authority's public key (`--authority-key`, `ROGATORY_AUTHORITY_KEY`, or a dev
network's `--state-dir`): it never opens a connection. It prints a plain
account (who sent what, when it was accepted, relayed, delivered and
retrieved, who signed each step, which checkpoint and witnesses prove it),
then the verdict, naming the first item that does not verify.

Exit status: 0 every item verified (absent optional items aside); 1 an item
did not verify (named); 2 usage; 3 the agent could not be asked or the file
not read.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
from cryptography import x509

from protocol.encoding import b64decode
from protocol.errors import ProtocolError
from protocol.evidence_account import SENT, BundleAccount, ItemStatus
from protocol.keys import SigningPublicKey
from runtime.bundles import bundle_checks, verify_bundle_file

EXIT_VERIFIED = 0
EXIT_NOT_VERIFIED = 1
EXIT_USAGE = 2
EXIT_UNREADABLE = 3


def describe_account(account: BundleAccount, *, seconds: float | None = None) -> list[str]:
    """The account as plain lines for a reader: what happened, who signed it, what proves it, the verdict."""
    exported_at = account.exported_at.isoformat() if account.exported_at else "?"
    lines = [
        (
            f"Evidence bundle of {account.scope} {account.subject}: exported by {account.exported_by} at "
            f"{exported_at}, {account.bundle_bytes:,} bytes"
        ),
    ]
    if account.latest is not None:
        witnesses = ", ".join(account.latest.witnesses) or "none"
        lines.append(
            f"Audit log {account.log_origin}: latest checkpoint of {account.latest.tree_size} entries "
            f"(root {account.latest.root_hash_hex[:16]}...), cosigned by {witnesses}"
        )
    lines.append(f"Directory versions: {', '.join(str(v) for v in account.directory_versions) or 'none verified'}")
    for message in account.messages:
        lines += [
            "",
            (
                f"Message {message.message_id} ({message.direction}): {message.message_type} in case "
                f"{message.case_id}, from {message.sender} to {', '.join(message.recipients)}"
            ),
            (
                f"  document: {message.document_bytes:,} bytes, SHA-256 {message.document_sha256}, "
                f"languages {', '.join(message.languages) or '?'}"
            ),
            *(f"  {line}" for line in message.title_lines[1:]),
        ]
        for event in message.events:
            step = "sent (signed header and content statement)" if event.evidence_type == SENT else event.evidence_type
            proof = (
                ""
                if event.checkpoint is None
                else f"; in checkpoint {event.checkpoint.tree_size}, witnesses "
                f"{', '.join(event.checkpoint.witnesses) or 'none'}"
            )
            reason = f" ({event.reason})" if event.reason else ""
            lines.append(f"  {event.at.isoformat()}  {step}{reason} by {event.actor}, key {event.signer_key}{proof}")
    counts = {status: sum(1 for item in account.items if item.status == status) for status in ItemStatus}
    lines += [
        "",
        (
            f"Checks: {counts[ItemStatus.VERIFIED]} verified, {counts[ItemStatus.ABSENT]} absent (optional), "
            f"{counts[ItemStatus.UNCHECKED]} unchecked, {counts[ItemStatus.FAILED]} failed"
        ),
        *(f"  absent: {item.item}: {item.detail}" for item in account.items if item.status == ItemStatus.ABSENT),
        *(f"  unchecked: {item.item}: {item.detail}" for item in account.items if item.status == ItemStatus.UNCHECKED),
    ]
    failure = account.first_failure
    if failure is None:
        unchecked = counts[ItemStatus.UNCHECKED]
        lines.append(
            "VERIFIED: every item of the bundle verifies under the directory authority's key"
            + (f" ({unchecked} optional item(s) unchecked, listed above)" if unchecked else "")
        )
    else:
        lines.append(f"NOT VERIFIED: first failing item: {failure.item} ({failure.kind}): {failure.detail}")
    if seconds is not None:
        lines.append(f"Verification took {seconds:.3f} s")
    return lines


def _authority(args: argparse.Namespace) -> str | None:
    authority = args.authority_key or os.environ.get("ROGATORY_AUTHORITY_KEY")
    if authority or not args.state_dir:
        return authority
    from deploy.localnet.devstack import read_stack  # noqa: PLC0415 - only for dev networks

    stack = read_stack(Path(args.state_dir))
    return None if stack is None else str(stack["network"]["authority_key"])


def _network_ca(args: argparse.Namespace) -> x509.Certificate | None:
    """The CA the gateway's document-signing certificate chains to (`--network-ca`, or a dev network's)."""
    if args.network_ca:
        return x509.load_pem_x509_certificate(Path(args.network_ca).read_bytes())
    if args.state_dir:
        dev_ca = Path(args.state_dir) / "tls" / "ca" / "ca.pem"
        if dev_ca.is_file():
            return x509.load_pem_x509_certificate(dev_ca.read_bytes())
    return None


def _cmd_verify(args: argparse.Namespace) -> int:
    authority = _authority(args)
    if not authority:
        print(
            "the directory authority's public key is needed: --authority-key, ROGATORY_AUTHORITY_KEY or --state-dir",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        key = SigningPublicKey(b64decode(authority))
    except (ProtocolError, ValueError) as exc:
        print(f"not an authority key: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        raw = Path(args.file).read_bytes()
    except OSError as exc:
        print(f"cannot read {args.file}: {exc}", file=sys.stderr)
        return EXIT_UNREADABLE
    try:
        network_ca = _network_ca(args)
    except (OSError, ValueError) as exc:
        print(f"cannot read the network CA: {exc}", file=sys.stderr)
        return EXIT_USAGE
    started = time.perf_counter()
    account = verify_bundle_file(raw, authority=key, checks=bundle_checks(network_ca))
    seconds = time.perf_counter() - started
    for line in describe_account(account, seconds=seconds):
        print(line)
    if args.items:
        for item in account.items:
            print(f"  {item.status:<8} {item.item}: {item.detail}")
    return EXIT_VERIFIED if account.verified else EXIT_NOT_VERIFIED


def _agent(args: argparse.Namespace) -> tuple[str, str]:
    if args.state_dir:
        from deploy.localnet.devstack import read_stack  # noqa: PLC0415 - only for dev networks

        stack = read_stack(Path(args.state_dir))
        if stack is None or args.agency not in stack.get("agents", {}):
            raise LookupError(f"no agent {args.agency} in {args.state_dir}/stack.json")
        entry: dict[str, Any] = stack["agents"][args.agency]
        return str(entry["url"]), str(entry["token"])
    token = args.token or os.environ.get("ROGATORY_AGENT_TOKEN")
    if not args.agent or not token:
        raise LookupError("give --agent URL and --token (or ROGATORY_AGENT_TOKEN), or --state-dir and --agency")
    return str(args.agent), str(token)


def bundle_path(*, message: str | None, inbox: str | None, case: str | None, sender: str | None = None) -> str:
    """The agent API path whose `/evidence-bundle` is wanted."""
    if message:
        return f"/v1/messages/{quote(message, safe='')}"
    if inbox:
        return f"/v1/inbox/{quote(inbox, safe='')}" + (f"?sender={quote(sender, safe='')}" if sender else "")
    return f"/v1/cases/{quote(case or '', safe='')}"


async def _export(url: str, token: str, path: str, wait_s: float) -> bytes:
    from deploy.client.agent_api import AgentClient  # noqa: PLC0415 - keeps `rogatory --help` fast

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
        client = AgentClient(session, url, token)
        if "?" in path:
            base, _, query = path.partition("?")
            return await client.wait_for_evidence_bundle(base, within_s=wait_s, query=query)
        return await client.wait_for_evidence_bundle(path, within_s=wait_s)


def _cmd_export(args: argparse.Namespace) -> int:
    from deploy.client.agent_api import AgentApiError  # noqa: PLC0415 - keeps `rogatory --help` fast

    try:
        url, token = _agent(args)
    except LookupError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    path = bundle_path(message=args.message, inbox=args.inbox, case=args.case, sender=args.sender)
    try:
        raw = asyncio.run(_export(url, token, path, args.wait))
    except (AgentApiError, aiohttp.ClientError, TimeoutError, OSError) as exc:
        print(f"the agent did not give the bundle: {exc}", file=sys.stderr)
        return EXIT_UNREADABLE
    Path(args.out).write_bytes(raw)
    print(f"wrote {args.out}: {len(raw):,} bytes")
    return 0


def add_evidence_commands(commands: Any) -> None:  # noqa: ANN401 - argparse's private subparsers type
    """`rogatory evidence export | verify`."""
    evidence = commands.add_parser("evidence", help="export or verify an evidence bundle").add_subparsers(
        dest="evidence", required=True
    )
    export = evidence.add_parser("export", help="write the evidence bundle of a message or a case to a file")
    which = export.add_mutually_exclusive_group(required=True)
    which.add_argument("--message", help="a message this agency sent (its id)")
    which.add_argument("--inbox", help="a message this agency received (its id)")
    which.add_argument("--case", help="a case: every message of it, both ways")
    export.add_argument("--sender", help="with --inbox: the sender, when several used the id")
    export.add_argument("--out", required=True, help="the file to write")
    export.add_argument("--agent", help="the agent's URL")
    export.add_argument("--token", help="an agent API token with the read scope (default: ROGATORY_AGENT_TOKEN)")
    export.add_argument("--state-dir", help="a dev network's state directory (with --agency)")
    export.add_argument("--agency", help="with --state-dir: whose agent")
    export.add_argument("--wait", type=float, default=60.0, help="seconds to wait for pending proofs (default 60)")
    export.set_defaults(run=_cmd_export)
    verify = evidence.add_parser("verify", help="check a bundle offline; exit 0 only when everything verifies")
    verify.add_argument("file", help="the bundle (ZIP)")
    verify.add_argument("--authority-key", help="base64 public key of the directory authority you trust")
    verify.add_argument("--state-dir", help="a dev network's state directory: its authority key and network CA")
    verify.add_argument(
        "--network-ca",
        help="PEM of the network CA that issued the gateway's document-signing certificate: checks the signed "
        "report (PAdES) too; without it the report is listed unchecked",
    )
    verify.add_argument("--items", action="store_true", help="list every item check and its result")
    verify.set_defaults(run=_cmd_verify)


__all__ = ["add_evidence_commands", "bundle_path", "describe_account"]
