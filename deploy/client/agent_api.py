"""A small HTTP client of the agent API, for the demo, the benchmark and the tests."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Collection
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp

T = TypeVar("T")


HTTP_TOO_MANY_REQUESTS = 429
MAX_RATE_LIMITED_WAIT_S = 60.0
"""How long a call keeps waiting out `429 RATE_LIMITED` answers before it gives up with the last one."""


def _retry_after_s(response: aiohttp.ClientResponse) -> float:
    """The pause a `429` asks for (`Retry-After` in seconds; 1 s when absent or unreadable)."""
    try:
        return min(max(float(response.headers.get("Retry-After", "1")), 0.1), MAX_RATE_LIMITED_WAIT_S)
    except ValueError:
        return 1.0


class AgentApiError(Exception):
    """The agent answered with an error; `status` and `problem` say which."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        super().__init__(f"HTTP {status}: {problem.get('code')}: {problem.get('detail')}")
        self.status = status
        self.problem = problem


class AgentClient:
    """Calls one agent's API with its bearer token.

    A `429` is the agent asking the client to slow down (its request was
    refused before anything was done): the call waits `Retry-After` seconds
    and asks again, for up to `MAX_RATE_LIMITED_WAIT_S` in all.
    """

    def __init__(self, session: aiohttp.ClientSession, base_url: str, token: str) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        expect: int = 200,
    ) -> dict[str, Any]:
        waited = 0.0
        while True:
            async with self._session.request(
                method, self._base + path, data=body, headers=self._headers | (headers or {})
            ) as response:
                text = await response.text()
                answer: dict[str, Any] = json.loads(text) if text else {}
                if response.status == expect:
                    return answer
                pause = _retry_after_s(response) if response.status == HTTP_TOO_MANY_REQUESTS else None
                if pause is None or waited + pause > MAX_RATE_LIMITED_WAIT_S:
                    raise AgentApiError(response.status, answer)
            await asyncio.sleep(pause)
            waited += pause

    async def submit(self, document: dict[str, Any] | bytes, *, idempotency_key: str | None = None) -> dict[str, Any]:
        """`POST /v1/messages`."""
        body = document if isinstance(document, bytes) else json.dumps(document, ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json"}
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        return await self._call("POST", "/v1/messages", body=body, headers=headers, expect=202)

    async def message(self, message_id: str) -> dict[str, Any]:
        """`GET /v1/messages/{id}`."""
        return await self._call("GET", f"/v1/messages/{message_id}")

    async def inbox(self, after: str = "0", limit: int = 100) -> dict[str, Any]:
        """`GET /v1/inbox`."""
        return await self._call("GET", f"/v1/inbox?after={after}&limit={limit}")

    async def ack(self, message_id: str) -> dict[str, Any]:
        """`POST /v1/inbox/{id}/ack`."""
        return await self._call("POST", f"/v1/inbox/{message_id}/ack")

    async def case(self, case_id: str) -> dict[str, Any]:
        """`GET /v1/cases/{case_id}`."""
        return await self._call("GET", f"/v1/cases/{quote(case_id, safe='')}")

    async def subscribe(self, url: str, event_types: Collection[str], description: str | None = None) -> dict[str, Any]:
        """`POST /v1/subscriptions`: the subscription, with its `secret` (shown this once)."""
        request: dict[str, Any] = {"url": url, "event_types": list(event_types)}
        if description is not None:
            request["description"] = description
        body = json.dumps(request).encode()
        headers = {"Content-Type": "application/json"}
        return await self._call("POST", "/v1/subscriptions", body=body, headers=headers, expect=201)

    async def subscriptions(self) -> list[dict[str, Any]]:
        """`GET /v1/subscriptions`: this token's subscriptions and their delivery state."""
        found: list[dict[str, Any]] = (await self._call("GET", "/v1/subscriptions"))["subscriptions"]
        return found

    async def resume_subscription(self, subscription_id: str) -> dict[str, Any]:
        """`POST /v1/subscriptions/{id}/resume`."""
        return await self._call("POST", f"/v1/subscriptions/{quote(subscription_id, safe='')}/resume")

    async def unsubscribe(self, subscription_id: str) -> None:
        """`DELETE /v1/subscriptions/{id}`."""
        await self._call("DELETE", f"/v1/subscriptions/{quote(subscription_id, safe='')}", expect=204)

    async def start_connectivity_test(self, to: str, *, timeout_s: int | None = None) -> dict[str, Any]:
        """`POST /v1/connectivity-tests`: ping `to` through the whole path."""
        request: dict[str, Any] = {"to": to} | ({} if timeout_s is None else {"timeout_s": timeout_s})
        body = json.dumps(request).encode()
        return await self._call(
            "POST", "/v1/connectivity-tests", body=body, headers={"Content-Type": "application/json"}, expect=201
        )

    async def connectivity_test(self, test_id: str) -> dict[str, Any]:
        """`GET /v1/connectivity-tests/{test_id}`."""
        return await self._call("GET", f"/v1/connectivity-tests/{quote(test_id, safe='')}")

    async def list_page(self, path: str) -> dict[str, Any]:
        """One page of a listing (`GET /v1/messages`, `/v1/cases`, `/v1/inbox`, with filters and `cursor`)."""
        return await self._call("GET", path)

    async def wait_for_status(
        self, message_id: str, wanted: Collection[str], *, within_s: float = 30.0
    ) -> dict[str, Any]:
        """Poll the message until its status is one of `wanted`."""

        async def probe() -> dict[str, Any] | None:
            answer = await self.message(message_id)
            return answer if answer["status"] in wanted else None

        return await poll(probe, within_s=within_s, what=f"message {message_id} to reach {sorted(wanted)}")

    async def wait_for_inbox(self, message_id: str, *, within_s: float = 30.0) -> dict[str, Any]:
        """Poll the inbox until `message_id` is in it."""

        async def probe() -> dict[str, Any] | None:
            cursor = "0"
            while True:
                page = await self.inbox(after=cursor, limit=500)
                for item in page["messages"]:
                    if item["message_id"] == message_id:
                        found: dict[str, Any] = item
                        return found
                if not page["messages"]:
                    return None
                cursor = page["next"]

        return await poll(probe, within_s=within_s, what=f"message {message_id} in the inbox")


async def poll(probe: Callable[[], Awaitable[T | None]], *, within_s: float, what: str, interval: float = 0.1) -> T:
    """Call `probe` until it returns something, or raise `TimeoutError` naming `what`."""
    deadline = time.monotonic() + within_s
    while True:
        found = await probe()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {within_s:.0f} s waiting for {what}")
        await asyncio.sleep(interval)


__all__ = ["AgentApiError", "AgentClient", "poll"]
