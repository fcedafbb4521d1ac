"""`GET /v1/directory` and `GET /v1/directory/{version}`: the directory versions the gateway holds, for anyone.

No token: a signed directory is public material (agencies, their public
keys, revocations, agreements), it is what every agent needs to check what
it receives, and an agent that missed a push must be able to fetch it even
if its token was rotated or it was just enrolled. Nothing here is trusted
for coming from the gateway: the answer is the authority's signed statement
exactly as the audit leaf keeps it (the directory file's bytes when the
authority wrote it as `SignedStatement.model_dump_json()`), and its reader
verifies it against the authority's key it already holds.
`Rogatory-Directory-Version` says the version without parsing the payload.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

from gateway.directory import held_version, signed_version
from gateway.store import GatewayStore
from protocol.errors import ErrorCode
from runtime.http import Handler, problem

VERSION_HEADER: Final = "Rogatory-Directory-Version"
"""The version of the directory in an answer's body."""


class DirectoryApi:
    """Serves the signed directory versions from the audit log's leaves."""

    def __init__(self, store: GatewayStore) -> None:
        self._store = store

    def routes(self) -> list[tuple[str, str, Handler]]:
        """(method, path, handler) of each endpoint; none needs a token."""
        return [
            ("GET", "/v1/directory", self.current),
            ("GET", "/v1/directory/{version}", self.version),
        ]

    async def current(self, _request: web.Request) -> web.Response:
        """The version in force, as the authority signed it."""
        version = await held_version(self._store)
        if version is None:
            return problem(404, ErrorCode.NOT_FOUND, "Not found", "the gateway holds no directory yet")
        return await self._answer(version)

    async def version(self, request: web.Request) -> web.Response:
        """An older (or the current) version, as the authority signed it; 404 if the gateway never held it."""
        raw = request.match_info["version"]
        if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
            return problem(400, ErrorCode.INVALID_PARAMETER, "Bad request", "version: expected a positive integer")
        return await self._answer(int(raw))

    async def _answer(self, version: int) -> web.Response:
        signed = await signed_version(self._store, version)
        if signed is None:
            return problem(404, ErrorCode.NOT_FOUND, "Not found", f"directory version {version} was never held here")
        return web.Response(
            body=signed.model_dump_json().encode("utf-8"),
            content_type="application/json",
            headers={VERSION_HEADER: str(version), "Cache-Control": "no-cache"},
        )


__all__ = ["VERSION_HEADER", "DirectoryApi"]
