"""A case system's webhook endpoint: a real aiohttp server on loopback that records and checks what it receives.

The signature is checked here as the Standard Webhooks specification says,
written from the specification and not with the agent's code: the secret's
base64 after `whsec_` is the key, the signed content is
`{webhook-id}.{webhook-timestamp}.{body}`, the header lists `v1,<base64>`
signatures separated by spaces.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


def standard_signature_valid(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """Whether one of the `v1` signatures of `webhook-signature` is HMAC-SHA256 of id.timestamp.body under `secret`."""
    assert secret.startswith("whsec_")
    key = base64.b64decode(secret[len("whsec_") :])
    content = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
    given = [item.split(",", 1) for item in headers["webhook-signature"].split(" ")]
    return any(version == "v1" and hmac.compare_digest(signature, expected) for version, signature in given)


@dataclass(frozen=True, slots=True)
class Hook:
    """One request the endpoint received."""

    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        """The JSON body."""
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed

    @property
    def event_id(self) -> str:
        """`webhook-id`."""
        return self.headers["webhook-id"]


@dataclass
class WebhookReceiver:
    """A webhook endpoint on 127.0.0.1 that can be taken down and brought back on the same port."""

    answer_status: int = 204
    answers: list[int] = field(default_factory=list)
    """Statuses to answer first, one per request, before `answer_status`."""
    redirect_to: str | None = None
    hooks: list[Hook] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        """Where to subscribe."""
        return f"http://127.0.0.1:{self.port}/hooks"

    async def start(self) -> WebhookReceiver:
        """Listen (on the port it had before, if any)."""
        app = web.Application()
        app.router.add_post("/hooks", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        server = site._server  # the port the kernel chose
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        return self

    async def stop(self) -> None:
        """Stop listening: connections are refused until `start` again."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.hooks.append(Hook({k.lower(): v for k, v in request.headers.items()}, await request.read()))
        self._arrived.set()
        if self.redirect_to is not None:
            raise web.HTTPTemporaryRedirect(self.redirect_to)
        return web.Response(status=self.answers.pop(0) if self.answers else self.answer_status)

    def events(self, event_type: str | None = None) -> list[dict[str, Any]]:
        """The bodies received (of one type), in order, duplicates included."""
        return [hook.event for hook in self.hooks if event_type is None or hook.event["type"] == event_type]


__all__ = ["Hook", "WebhookReceiver", "standard_signature_valid"]
