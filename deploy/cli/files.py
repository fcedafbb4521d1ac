"""Attachment files from the command line: send with attachments, list the inbox, fetch, bench.

`rogatory send --attach FILE`, `rogatory inbox`, `rogatory fetch` and
`rogatory bench-attachments`. The transfers themselves (streamed, resumed)
are `deploy.client.transfer`'s; this module adds the commands' arguments,
the agent they talk to, a progress bar and their JSON output.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote

import aiohttp

from deploy.client.agent_api import AgentApiError, AgentClient
from deploy.client.transfer import TransferError, attachment_entry, bearer, download_attachment, upload_file


@dataclass
class ProgressBar:
    """A one-line progress bar, redrawn in place (`--quiet` turns it off)."""

    label: str
    total: int
    stream: TextIO = sys.stderr
    _started: float = 0.0
    _last: float = 0.0

    def __call__(self, done: int) -> None:
        """Redraw, at most ten times a second and once at the end."""
        now = time.monotonic()
        if not self._started:
            self._started = now
        if done < self.total and now - self._last < 0.1:
            return
        self._last = now
        fraction = 1.0 if self.total == 0 else min(1.0, done / self.total)
        filled = int(fraction * 30)
        rate = done / max(now - self._started, 1e-6) / 2**20
        line = f"\r{self.label[:30]:<30} [{'#' * filled}{'.' * (30 - filled)}] {fraction:6.1%} {rate:8.1f} MiB/s"
        self.stream.write(line + ("\n" if done >= self.total else ""))
        self.stream.flush()


# -- the commands -------------------------------------------------------------------------------

EXIT_FAILED = 1
EXIT_USAGE = 2


def _agent_of(args: argparse.Namespace) -> tuple[str, str]:
    """(URL, token) of the agent named by `--agent`/`--token`, or by `--state-dir`/`--agency`."""
    if args.state_dir:
        from deploy.localnet.devstack import read_stack  # noqa: PLC0415 - only for dev networks

        stack = read_stack(Path(args.state_dir))
        if stack is None or args.agency not in stack.get("agents", {}):
            raise TransferError(f"no agent {args.agency} in {args.state_dir}/stack.json")
        entry = stack["agents"][args.agency]
        return str(entry["url"]), str(entry["token"])
    token = args.token or os.environ.get("ROGATORY_AGENT_TOKEN")
    if not args.agent or not token:
        raise TransferError("give --agent URL and --token (or ROGATORY_AGENT_TOKEN), or --state-dir and --agency")
    return str(args.agent), str(token)


def _session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=600))


async def _send(args: argparse.Namespace) -> dict[str, Any]:
    url, token = _agent_of(args)
    document: dict[str, Any] = json.loads(Path(args.document).read_text(encoding="utf-8"))
    entries: list[dict[str, Any]] = list(document.get("attachments") or [])
    listed = {entry.get("sha256") for entry in entries if isinstance(entry, dict)}
    async with _session() as session:
        for number, name in enumerate(args.attach or [], start=1):
            path = Path(name)
            size = path.stat().st_size
            bar = ProgressBar(path.name, size) if not args.quiet else None
            uploaded = await upload_file(session, url, token, path, progress=bar)
            if bar is not None and size == 0:
                bar(0)
            if uploaded["sha256"] not in listed:
                entries.append(attachment_entry(path, uploaded["sha256"], uploaded["size_bytes"], f"ATT-{number}"))
                listed.add(uploaded["sha256"])
        if entries:
            document["attachments"] = entries
        try:
            accepted = await AgentClient(session, url, token).submit(document)
        except AgentApiError as refused:
            raise TransferError(
                f"submission refused: HTTP {refused.status}: {json.dumps(refused.problem)[:500]}"
            ) from None
        return dict(accepted)


async def _inbox(args: argparse.Namespace) -> list[dict[str, Any]]:
    url, token = _agent_of(args)
    cursor = str(getattr(args, "after", 0))
    items: list[dict[str, Any]] = []
    async with _session() as session:
        client = AgentClient(session, url, token)
        while True:
            try:
                answer = await client.inbox(after=cursor, limit=500)
            except AgentApiError as refused:
                raise TransferError(f"inbox: HTTP {refused.status}: {json.dumps(refused.problem)[:300]}") from None
            if not answer["messages"]:
                return items
            items += [
                {
                    "message_id": item["message_id"],
                    "sender": item["sender"],
                    "message_type": item["message_type"],
                    "case_id": item["case_id"],
                    "received_at": item["received_at"],
                    "attachments": list(item.get("attachments", [])),
                }
                for item in answer["messages"]
            ]
            cursor = answer["next"]


async def _fetch(args: argparse.Namespace) -> list[dict[str, Any]]:
    url, token = _agent_of(args)
    out = Path(args.out)
    wanted = args.attachment_id
    fetched = []
    async with _session() as session:
        if wanted:
            names = [wanted]
        else:
            items = [item for item in await _inbox(args) if item["message_id"] == args.message_id]
            if not items:
                raise TransferError(f"no message {args.message_id} in the inbox")
            names = [entry["attachment_id"] for entry in items[0]["attachments"] if entry["state"] == "available"]
            out.mkdir(parents=True, exist_ok=True)
        for name in names:
            target = out / name.replace("/", "_") if out.is_dir() else out
            bar = None if args.quiet else ProgressBar(name, 0)
            if bar is not None:
                bar.total = await _length(
                    session, url, token, message_id=args.message_id, name=name, sender=args.sender
                )
            sha256, size = await download_attachment(
                session,
                url,
                token,
                message_id=args.message_id,
                attachment_id=name,
                out=target,
                sender=args.sender,
                progress=bar,
            )
            fetched.append({"attachment_id": name, "path": str(target), "sha256": sha256, "size_bytes": size})
    return fetched


async def _length(
    session: aiohttp.ClientSession, url: str, token: str, *, message_id: str, name: str, sender: str | None
) -> int:
    query = f"?sender={sender}" if sender else ""
    async with session.head(
        f"{url.rstrip('/')}/v1/inbox/{message_id}/attachments/{quote(name, safe='')}{query}", headers=bearer(token)
    ) as response:
        return int(response.headers.get("Content-Length", "0"))


def _run(coroutine: Any) -> int:  # noqa: ANN401 - any coroutine printing JSON
    try:
        result = asyncio.run(coroutine)
    except (TransferError, OSError, aiohttp.ClientError, ValueError) as exc:
        sys.stderr.write(f"rogatory: {exc}\n")
        return EXIT_FAILED
    sys.stdout.write(json.dumps(result, ensure_ascii=False, indent=2) + "\n")
    return 0


def _cmd_send(args: argparse.Namespace) -> int:
    return _run(_send(args))


def _cmd_inbox(args: argparse.Namespace) -> int:
    return _run(_inbox(args))


def _cmd_fetch(args: argparse.Namespace) -> int:
    return _run(_fetch(args))


def _cmd_bench_attachments(args: argparse.Namespace) -> int:
    from deploy.bench.attachments import run_attachment_bench  # noqa: PLC0415 - keeps `rogatory --help` fast
    from deploy.configuration import system_amqp_url, system_management_url  # noqa: PLC0415

    return run_attachment_bench(
        amqp_url=system_amqp_url(os.environ),
        management_url=system_management_url(os.environ),
        mib=args.mib,
        state_dir=Path(args.state_dir) if args.state_dir else None,
        json_out=Path(args.json) if args.json else None,
    )


def _agent_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--agent", help="the agent's URL")
    parser.add_argument("--token", help="the agent's bearer token (default: ROGATORY_AGENT_TOKEN)")
    parser.add_argument("--state-dir", help="a dev network's state directory: URL and token from its stack.json")
    parser.add_argument("--agency", default="BD-MOHA-PSD", help="with --state-dir: which agency's agent")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def add_commands(commands: Any) -> None:  # noqa: ANN401 - argparse's private subparsers action
    """Register `send`, `inbox`, `fetch` and `bench-attachments` on the `rogatory` parser."""
    send = commands.add_parser("send", help="upload attachments and submit a message document to an agent")
    send.add_argument("document", help="the message document (JSON)")
    send.add_argument("--attach", action="append", metavar="FILE", help="a file to send with it (repeatable)")
    _agent_arguments(send)
    send.set_defaults(run=_cmd_send)
    inbox = commands.add_parser("inbox", help="list received messages and the state of their attachments")
    inbox.add_argument("--after", type=int, default=0, help="inbox cursor")
    _agent_arguments(inbox)
    inbox.set_defaults(run=_cmd_inbox)
    fetch = commands.add_parser("fetch", help="download a received message's attachments (resumable)")
    fetch.add_argument("message_id")
    fetch.add_argument("attachment_id", nargs="?", help="one attachment (default: every available one)")
    fetch.add_argument("--out", required=True, help="a file (one attachment) or a directory")
    fetch.add_argument("--sender", help="the sender, when several used this message id")
    _agent_arguments(fetch)
    fetch.set_defaults(run=_cmd_fetch)
    bench = commands.add_parser(
        "bench-attachments", help="one large file through the whole path vs. a plain copy, with peak memory"
    )
    bench.add_argument("--mib", type=int, default=256, help="size of the file in MiB")
    bench.add_argument("--state-dir", help="use (or start) the network there instead of a fresh one")
    bench.add_argument("--json", help="write the figures to this file")
    bench.set_defaults(run=_cmd_bench_attachments)


__all__ = ["ProgressBar", "add_commands"]
