"""The gateway's blob store served in-process, with the local network's directory: for attacks on it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.blobs import BlobApi, BlobStore
from protocol.attachments import EMPTY_BODY_SHA256, sign_blob_request
from protocol.ids import AgencyId
from tests.support.network import NOW, LocalNetwork


@dataclass
class BlobGateway:
    """A running blob API, its store, and a clock the test moves."""

    net: LocalNetwork
    store: BlobStore
    url: str
    session: aiohttp.ClientSession
    now: datetime = NOW

    def sign(
        self,
        agency: AgencyId,
        method: str,
        path: str,
        *,
        body_sha256: str | None = None,
        upload_offset: int | None = None,
        upload_length: int | None = None,
    ) -> dict[str, str]:
        """Headers of one request signed by `agency` as its agent would sign it."""
        extra: dict[str, str] = {}
        if upload_offset is not None:
            extra["Upload-Offset"] = str(upload_offset)
        if upload_length is not None:
            extra["Upload-Length"] = str(upload_length)
        authorization = sign_blob_request(
            agency=agency,
            key=self.net[agency].signing,
            method=method,
            path=path,
            now=self.now,
            upload_offset=upload_offset,
            upload_length=upload_length,
            body_sha256=EMPTY_BODY_SHA256 if body_sha256 is None else body_sha256,
        )
        return {"Authorization": authorization, **extra}

    async def send(
        self, method: str, path: str, headers: dict[str, str], body: bytes = b""
    ) -> tuple[int, str, dict[str, str]]:
        """(status, problem code or "", headers) of one request."""
        async with self.session.request(method, self.url + path, headers=headers, data=body or None) as response:
            code = ""
            if response.content_type == "application/problem+json":
                code = str((await response.json(content_type=None)).get("code", ""))
            else:
                await response.read()
            return response.status, code, dict(response.headers)


@asynccontextmanager
async def blob_gateway(tmp_path: Path, *, quota_bytes: int = 1024**3) -> AsyncIterator[BlobGateway]:
    """A blob API over a fresh store under `tmp_path`, trusting the local network's directory."""
    net = LocalNetwork()
    directory = net.directory()
    store = await BlobStore.open(tmp_path)
    holder: list[BlobGateway] = []
    api = BlobApi(
        store,
        directory=lambda: directory,
        clock=lambda: holder[0].now,
        max_blob_bytes=64 * 1024**2,
        quota_bytes=quota_bytes,
    )
    app = web.Application()
    for method, path, handler in api.routes():
        app.router.add_route(method, path, handler)
    server = TestServer(app)
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            holder.append(BlobGateway(net, store, str(server.make_url("")).rstrip("/"), session))
            yield holder[0]
    finally:
        await server.close()
        await store.close()
