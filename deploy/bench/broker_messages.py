"""How many broker messages one exchange costs, as the broker itself counts them.

The management API keeps, per vhost, the messages published into it
(`message_stats.publish`) and the messages it handed to consumers
(`message_stats.deliver_get`). A scenario reads both before it sends and
after its last `DELIVERY`, and divides the difference by its messages: every
AMQP message of the exchange counts, whoever published it (the sender's
submission, the gateway's relay and evidence, the recipient's evidence, a
directory push). The raw baseline costs exactly one of each.

The broker refreshes these statistics every `collect_statistics_interval`
(5 s by default): a reading is taken once nothing has been published for
longer than that, and again until two such reads agree. Each costs a few
seconds, so only the scenarios that judge the target count (the 2 KB pair at
saturation, the MLA requests, many agencies); the others have the same path.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Final

from deploy.provision.broker import BrokerAdminError, ManagementClient, management_url_from_amqp

SETTLE_READS_APART_S: Final = 5.5
"""Longer than RabbitMQ's default `collect_statistics_interval` (5 s): a read this long after the last publish
includes it."""
SETTLE_TIMEOUT_S: Final = 30.0


@dataclass(frozen=True, slots=True)
class BrokerCounts:
    """The vhost's message counters at one moment."""

    published: int
    delivered: int

    def minus(self, earlier: BrokerCounts) -> BrokerCounts:
        """What was counted since `earlier`."""
        return BrokerCounts(self.published - earlier.published, self.delivered - earlier.delivered)


async def vhost_counts(admin: ManagementClient, vhost: str) -> BrokerCounts:
    """The counters now (0 before the vhost saw any message)."""
    answer = await admin.get_json(("vhosts", vhost), action=f"read the message statistics of vhost {vhost}")
    stats = answer.get("message_stats", {}) if isinstance(answer, dict) else {}
    return BrokerCounts(published=int(stats.get("publish", 0)), delivered=int(stats.get("deliver_get", 0)))


async def settled_counts(amqp_url: str, management_url: str | None, vhost: str) -> BrokerCounts | None:
    """The counters once they stand still (None when the management API cannot be read)."""
    endpoint = management_url_from_amqp(amqp_url, base_url=management_url)
    try:
        async with ManagementClient.from_endpoint(endpoint) as admin:
            deadline = time.monotonic() + SETTLE_TIMEOUT_S
            await asyncio.sleep(SETTLE_READS_APART_S)
            last = await vhost_counts(admin, vhost)
            while time.monotonic() < deadline:
                await asyncio.sleep(SETTLE_READS_APART_S)
                now = await vhost_counts(admin, vhost)
                if now == last:
                    return now
                last = now
            return last
    except BrokerAdminError:
        return None


__all__ = ["BrokerCounts", "settled_counts", "vhost_counts"]
