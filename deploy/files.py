"""Attachment files from the command line: upload, send, list, fetch, and the benchmark's plain copy.

Used by `rogatory send --attach FILE`, `rogatory inbox`, `rogatory fetch`
and `rogatory bench-attachments`, and by the tests. Every transfer streams in
`CHUNK_BYTES` pieces and resumes: an upload asks the agent how much of its
`Upload-Id` it holds (`HEAD /v1/attachments/uploads/{id}`) and continues
from there; a download continues a partial `OUT.part` file with `Range`.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import mimetypes
import os
import shutil
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TextIO
from urllib.parse import quote

import aiohttp

CHUNK_BYTES: Final = 1024 * 1024

Progress = Callable[[int], None]
"""Called with the number of bytes moved so far."""


class TransferError(Exception):
    """The agent refused a transfer, or answered something unexpected."""


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


def file_sha256(path: Path) -> tuple[str, int]:
    """(SHA-256 hex, size) of a file, read in chunks."""
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as source:
        while chunk := source.read(CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


async def _chunks(path: Path, offset: int, progress: Progress | None) -> AsyncIterator[bytes]:
    sent = offset
    with path.open("rb") as source:
        source.seek(offset)
        while chunk := await asyncio.to_thread(source.read, CHUNK_BYTES):
            yield chunk
            sent += len(chunk)
            if progress is not None:
                progress(sent)


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def upload_offset(session: aiohttp.ClientSession, agent_url: str, token: str, upload_id: str) -> int:
    """Bytes of upload `upload_id` the agent holds (0 if none)."""
    url = f"{agent_url.rstrip('/')}/v1/attachments/uploads/{upload_id}"
    async with session.head(url, headers=_auth(token)) as response:
        if response.status == 404:
            return 0
        if response.status != 200:
            raise TransferError(f"HEAD {url}: HTTP {response.status}")
        return int(response.headers.get("Upload-Offset", "0"))


async def upload_file(
    session: aiohttp.ClientSession,
    agent_url: str,
    token: str,
    path: Path,
    *,
    upload_id: str | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """`POST /v1/attachments` with the file's bytes, continuing what the agent holds of `upload_id`."""
    stat = await asyncio.to_thread(path.stat)
    size = stat.st_size
    upload_id = upload_id or hashlib.sha256(f"{path}:{size}:{stat.st_mtime_ns}".encode()).hexdigest()[:32]
    offset = await upload_offset(session, agent_url, token, upload_id)
    headers = _auth(token) | {
        "Content-Type": "application/octet-stream",
        "Upload-Id": upload_id,
        "Upload-Offset": str(min(offset, size)),
        "Upload-Length": str(size),
    }
    async with session.post(
        f"{agent_url.rstrip('/')}/v1/attachments", data=_chunks(path, min(offset, size), progress), headers=headers
    ) as response:
        answer: dict[str, Any] = await response.json(content_type=None)
        if response.status != 201:
            raise TransferError(f"upload of {path}: HTTP {response.status}: {answer.get('detail', answer)}")
        return answer


async def download_attachment(
    session: aiohttp.ClientSession,
    agent_url: str,
    token: str,
    *,
    message_id: str,
    attachment_id: str,
    out: Path,
    sender: str | None = None,
    progress: Progress | None = None,
) -> tuple[str, int]:
    """Download a received attachment to `out` (via `out.part`, resumed with `Range`); (SHA-256, size)."""
    partial = out.with_name(out.name + ".part")
    have = await asyncio.to_thread(_size, partial)
    url = f"{agent_url.rstrip('/')}/v1/inbox/{message_id}/attachments/{quote(attachment_id, safe='')}"
    if sender is not None:
        url += f"?sender={sender}"
    headers = _auth(token) | ({"Range": f"bytes={have}-"} if have else {})
    async with session.get(url, headers=headers) as response:
        if response.status == 416 and have:
            await asyncio.to_thread(partial.replace, out)
            return await asyncio.to_thread(file_sha256, out)
        if response.status not in (200, 206):
            text = await response.text()
            raise TransferError(f"GET {url}: HTTP {response.status}: {text[:300]}")
        if response.status == 200:
            have = 0
        with partial.open("r+b" if have else "wb") as sink:
            sink.truncate(have)
            sink.seek(have)
            async for chunk in response.content.iter_chunked(CHUNK_BYTES):
                await asyncio.to_thread(sink.write, chunk)
                have += len(chunk)
                if progress is not None:
                    progress(have)
    await asyncio.to_thread(partial.replace, out)
    return await asyncio.to_thread(file_sha256, out)


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def attachment_entry(path: Path, sha256: str, size: int, attachment_id: str) -> dict[str, Any]:
    """The document's `attachments` entry for a file sent with `--attach`."""
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return {
        "attachment_id": attachment_id,
        "title": {"lang": "en", "value": path.name[:200] or attachment_id},
        "doc_type": "evidence",
        "lang": "en",
        "media_type": media_type,
        "sha256": sha256,
        "size_bytes": size,
    }


def plain_copy(source: Path, target: Path) -> float:
    """Copy a file with the standard library and fsync it; seconds taken (the benchmark's baseline)."""
    started = time.monotonic()
    with source.open("rb") as reader, target.open("wb") as writer:
        shutil.copyfileobj(reader, writer, CHUNK_BYTES)
        writer.flush()
        os.fsync(writer.fileno())
    return time.monotonic() - started


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
        headers = _auth(token) | {"Content-Type": "application/json"}
        body = json.dumps(document, ensure_ascii=False).encode("utf-8")
        async with session.post(f"{url.rstrip('/')}/v1/messages", data=body, headers=headers) as response:
            answer: dict[str, Any] = await response.json(content_type=None)
            if response.status != 202:
                raise TransferError(f"submission refused: HTTP {response.status}: {json.dumps(answer)[:500]}")
            return answer


async def _inbox(args: argparse.Namespace) -> list[dict[str, Any]]:
    url, token = _agent_of(args)
    cursor = str(getattr(args, "after", 0))
    items: list[dict[str, Any]] = []
    async with _session() as session:
        while True:
            async with session.get(
                f"{url.rstrip('/')}/v1/inbox", params={"after": cursor, "limit": "500"}, headers=_auth(token)
            ) as response:
                answer = await response.json(content_type=None)
                if response.status != 200:
                    raise TransferError(f"inbox: HTTP {response.status}: {json.dumps(answer)[:300]}")
            if not answer["messages"]:
                return items
            items += [
                {
                    "message_id": item["message_id"],
                    "sender": item["sender"],
                    "message_type": item["message_type"],
                    "case_id": item["case_id"],
                    "received_at": item["received_at"],
                    "attachments": item.get("attachments", []),
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
        f"{url.rstrip('/')}/v1/inbox/{message_id}/attachments/{quote(name, safe='')}{query}", headers=_auth(token)
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
    from deploy.attachment_bench import run_attachment_bench  # noqa: PLC0415 - keeps `rogatory --help` fast
    from deploy.localnet.devstack import DEFAULT_AMQP_URL  # noqa: PLC0415

    return run_attachment_bench(
        amqp_url=os.environ.get("AMQP_URL", DEFAULT_AMQP_URL),
        management_url=os.environ.get("RABBITMQ_MANAGEMENT_URL"),
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


__all__ = [
    "CHUNK_BYTES",
    "ProgressBar",
    "TransferError",
    "add_commands",
    "attachment_entry",
    "download_attachment",
    "file_sha256",
    "plain_copy",
    "upload_file",
    "upload_offset",
]
