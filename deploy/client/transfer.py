"""Attachment transfers with an agent: upload, download, and the document's entry for a file.

Every transfer streams in `CHUNK_BYTES` pieces and resumes: an upload asks
the agent how much of its `Upload-Id` it holds
(`HEAD /v1/attachments/uploads/{id}`) and continues from there; a download
continues a partial `OUT.part` file with `Range`. The attachment commands
(`deploy.cli.files`), the attachment benchmark and the tests use it.
"""

from __future__ import annotations

import asyncio
import hashlib
import mimetypes
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

import aiohttp

CHUNK_BYTES: Final = 1024 * 1024

Progress = Callable[[int], None]
"""Called with the number of bytes moved so far."""


class TransferError(Exception):
    """The agent refused a transfer, or answered something unexpected."""


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


def bearer(token: str) -> dict[str, str]:
    """The `Authorization` header of a call with `token`."""
    return {"Authorization": f"Bearer {token}"}


async def upload_offset(session: aiohttp.ClientSession, agent_url: str, token: str, upload_id: str) -> int:
    """Bytes of upload `upload_id` the agent holds (0 if none)."""
    url = f"{agent_url.rstrip('/')}/v1/attachments/uploads/{upload_id}"
    async with session.head(url, headers=bearer(token)) as response:
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
    headers = bearer(token) | {
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
    headers = bearer(token) | ({"Range": f"bytes={have}-"} if have else {})
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


__all__ = [
    "CHUNK_BYTES",
    "Progress",
    "TransferError",
    "attachment_entry",
    "bearer",
    "download_attachment",
    "file_sha256",
    "upload_file",
    "upload_offset",
]
