"""Where an agent's directory versions come from besides its file: the gateway's push and its HTTP API.

The gateway pushes each new version to every inbox (`KIND_DIRECTORY`); the
receiver hands it to `DirectoryWatch.offer`. An agent that was away when the
push went out gets the version at its next poll of `GET /v1/directory`
(`gateway_directory_source`, one of the watch's `sources`, every
`ROGATORY_DIRECTORY_RELOAD_S`). Neither is trusted for where it came from:
the watch verifies each version against the authority's key and refuses
rollback, as it does the file's.
"""

from __future__ import annotations

import aiohttp

from protocol.limits import Limits
from runtime.directory import Source, max_signed_directory_bytes
from runtime.errors import TransientFailure


class DirectoryUnavailable(TransientFailure):
    """The gateway's `GET /v1/directory` did not answer with a directory (away, an error, too large)."""


async def _read_at_most(content: aiohttp.StreamReader, limit: int) -> bytes:
    """The whole body, or its first `limit` bytes if it is longer (one `read(n)` returns what has arrived)."""
    body = bytearray()
    while len(body) < limit:
        chunk = await content.read(limit - len(body))
        if not chunk:
            break
        body += chunk
    return bytes(body)


def gateway_directory_source(session: aiohttp.ClientSession, gateway_url: str, *, limits: Limits) -> Source:
    """Fetch the gateway's `GET /v1/directory` (no token: the directory is public, signed material)."""
    url = gateway_url.rstrip("/") + "/v1/directory"
    most = max_signed_directory_bytes(limits)

    async def fetch() -> bytes:
        try:
            async with session.get(url) as answer:
                if answer.status != 200:
                    raise DirectoryUnavailable(f"GET {url} answered {answer.status}")
                raw = await _read_at_most(answer.content, most + 1)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise DirectoryUnavailable(f"GET {url}: {type(exc).__name__}") from exc
        if len(raw) > most:
            raise DirectoryUnavailable(f"GET {url}: answer over {most} bytes")
        return raw

    return fetch


__all__ = ["DirectoryUnavailable", "gateway_directory_source"]
