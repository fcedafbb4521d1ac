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


HTTP_OK = 200
HTTP_CONFLICT = 409
HTTP_SERVICE_UNAVAILABLE = 503
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

    async def evidence_bundle(self, path: str, *, query: str = "") -> bytes:
        """`GET {path}/evidence-bundle` (path: `/v1/messages/{id}`, `/v1/inbox/{id}`, `/v1/cases/{case_id}`)."""
        url = f"{self._base}{path}/evidence-bundle" + (f"?{query}" if query else "")
        async with self._session.get(url, headers=self._headers) as response:
            body = await response.read()
            if response.status != HTTP_OK:
                raise AgentApiError(response.status, json.loads(body) if body else {})
            return body

    async def wait_for_evidence_bundle(self, path: str, *, within_s: float = 60.0, query: str = "") -> bytes:
        """The evidence bundle of `path`, asked again while proofs are pending (409) or the gateway is away (503)."""

        async def probe() -> bytes | None:
            try:
                return await self.evidence_bundle(path, query=query)
            except AgentApiError as exc:
                if exc.status == HTTP_CONFLICT and exc.problem.get("code") == "PROOFS_PENDING":
                    return None
                if exc.status == HTTP_SERVICE_UNAVAILABLE:  # the gateway's audit API away a moment: ask again
                    return None
                raise

        return await poll(probe, within_s=within_s, what=f"the evidence bundle of {path}", interval=0.5)

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
