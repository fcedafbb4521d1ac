"""The broker's management HTTP API, read-only: queue statistics for operators' views and metrics.

Only the figures are read (never users or permissions: those are provisioned
by `rogatory`, not by a running service).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp

from runtime.errors import ManagementUnavailable


@dataclass(frozen=True, slots=True)
class ManagementAccess:
    """Read access to the broker's management HTTP API (only for the operator's queue view)."""

    base_url: str
    username: str
    password: str = field(repr=False)


async def queue_figures(access: ManagementAccess, vhost: str, *, timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """Per queue of `vhost`: messages ready and unacknowledged, consumers, publish and deliver rates."""
    url = f"{access.base_url.rstrip('/')}/api/queues/{quote(vhost, safe='')}"
    # Built here: aiohttp.BasicAuth is deprecated since aiohttp 3.13.
    token = base64.b64encode(f"{access.username}:{access.password}".encode()).decode("ascii")
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session,
            session.get(url, headers={"Authorization": f"Basic {token}"}) as response,
        ):
            if response.status != 200:
                raise ManagementUnavailable(f"the management API answered {response.status} for the queues")
            answer = await response.json()
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise ManagementUnavailable(f"the management API did not answer: {exc!r}"[:300]) from exc
    if not isinstance(answer, list):
        raise ManagementUnavailable("the management API answered something other than a list of queues")
    return sorted((queue_figure(item) for item in answer if isinstance(item, dict)), key=lambda q: str(q["name"]))


def queue_figure(item: Mapping[str, Any]) -> dict[str, Any]:
    """One queue of the management API's answer, as the figures Rogatory shows (None where a figure is missing)."""
    stats = item.get("message_stats")
    stats = stats if isinstance(stats, dict) else {}

    def rate(name: str) -> float | None:
        details = stats.get(name)
        value = details.get("rate") if isinstance(details, dict) else None
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

    def count(name: str) -> int | None:
        value = item.get(name)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    return {
        "name": str(item.get("name")),
        "type": item.get("type") if isinstance(item.get("type"), str) else None,
        "messages_ready": count("messages_ready"),
        "messages_unacknowledged": count("messages_unacknowledged"),
        "consumers": count("consumers"),
        "publish_rate": rate("publish_details"),
        "deliver_rate": rate("deliver_get_details"),
    }


__all__ = ["ManagementAccess", "queue_figure", "queue_figures"]
