"""A real RFC 3161 time-stamp authority on loopback, for tests: the dev network's, with a switch to fail.

The keys and the token-making are the dev network's TSA (`deploy.localnet.tsa`,
on pyHanko's `DummyTimeStamper`); this wrapper counts what it issued and,
while `down` is set, answers 503, to test that checkpoints wait for it and
are stamped once it is back.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiohttp import web

from deploy.localnet.tsa import TimestampAuthorityKeys, timestamp_app
from runtime.http import Handler


@dataclass(slots=True)
class LocalTimestampAuthority:
    """A running TSA: `url` to post requests to, `root_der` to trust, `down` to make it fail."""

    keys: TimestampAuthorityKeys
    url: str = ""
    down: bool = False
    issued: int = 0
    refused: int = 0

    @property
    def root_der(self) -> bytes:
        """The root certificate (DER) a directory lists for this TSA."""
        return self.keys.root_der


@asynccontextmanager
async def running_tsa(keys: TimestampAuthorityKeys | None = None) -> AsyncIterator[LocalTimestampAuthority]:
    """Serve a TSA on 127.0.0.1 (a free port) for the duration of the block."""
    authority = LocalTimestampAuthority(keys or TimestampAuthorityKeys.generate("Rogatory Test TSA"))

    @web.middleware
    async def switch(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method == "POST" and authority.down:
            authority.refused += 1
            return web.Response(status=503, text="time-stamp authority down for the test")
        answer: web.StreamResponse = await handler(request)
        if request.method == "POST" and answer.status == 200:
            authority.issued += 1
        return answer

    app = timestamp_app(authority.keys)
    app.middlewares.append(switch)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    port = int(listener.getsockname()[1])
    await web.SockSite(runner, listener).start()
    authority.url = f"http://127.0.0.1:{port}/"
    try:
        yield authority
    finally:
        await runner.cleanup()


__all__ = ["LocalTimestampAuthority", "TimestampAuthorityKeys", "running_tsa"]
