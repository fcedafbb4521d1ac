"""Connections to the broker: which nodes, and a connector that fails over between them.

The broker is one node or the nodes of a cluster (`ROGATORY_AMQP_URL` lists
them, comma-separated). `FailoverConnector` tries them in order from the one
after the last used, so a reconnect moves away from a node that just failed.
AMQP heartbeats are on, so a connection that froze (a cable pulled, a node
paused) is detected and dropped instead of waiting forever. Each broker role
(publisher, each consumer) holds a connection of its own: RabbitMQ's advice,
since flow control on a publishing connection must not stall consumption.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote, urlsplit

import aio_pika
import aio_pika.abc
import aio_pika.exceptions
import structlog

from runtime.errors import BrokerUnavailable, ConfigurationError

log = structlog.get_logger("rogatory.broker")

BROKER_ERRORS: Final = (
    aio_pika.exceptions.AMQPError,
    ConnectionError,
    OSError,
    RuntimeError,
    asyncio.TimeoutError,
)
"""What aio-pika and aiormq raise when the broker, the connection or the channel goes away."""

CLOSE_TIMEOUT_S: Final = 5.0
"""How long closing a consumer or a connection may take before it is abandoned (a frozen peer)."""


def cancelled_by_the_library() -> bool:
    """Whether a `CancelledError` came from aiormq, not from a cancellation of the running task.

    aiormq cancels the futures of a connection it drops (a stuck one, say): that must count as a lost
    connection. A cancellation of the running task (shutdown) must go on propagating.
    """
    task = asyncio.current_task()
    return task is not None and task.cancelling() == 0


@dataclass(frozen=True, slots=True)
class BrokerEndpoints:
    """The broker nodes one identity may connect to, and how connections are kept alive.

    `urls` are AMQP URLs with the same user, password and vhost (the nodes of
    one cluster, or one broker). `heartbeat_s` is the AMQP heartbeat: a peer
    silent for about three heartbeats is dropped (0 disables heartbeats).
    """

    urls: tuple[str, ...]
    heartbeat_s: int = 10
    connect_timeout_s: float = 15.0

    def __post_init__(self) -> None:
        if not self.urls:
            raise ValueError("at least one AMQP URL is needed")

    @property
    def broker_user(self) -> str:
        """The user name every URL logs in as: what RabbitMQ checks `user_id` against."""
        return unquote(urlsplit(self.urls[0]).username or "")

    @property
    def vhost(self) -> str:
        """The vhost of the URLs (`/` when they name none)."""
        path = urlsplit(self.urls[0]).path
        return unquote(path[1:]) if len(path) > 1 else "/"


def node_of(url: str) -> str:
    """`host:port` of an AMQP URL, for logs (never the credentials)."""
    parts = urlsplit(url)
    default = 5671 if parts.scheme == "amqps" else 5672
    return f"{parts.hostname}:{parts.port or default}"


def split_amqp_urls(amqp_url: str) -> tuple[str, ...]:
    """The URLs of a comma-separated list, blanks dropped."""
    return tuple(part.strip() for part in amqp_url.split(",") if part.strip())


def endpoints_from_setting(amqp_url: str, *, heartbeat_s: int) -> BrokerEndpoints:
    """The endpoints of `ROGATORY_AMQP_URL` (one URL, or several separated by commas)."""
    return BrokerEndpoints(urls=split_amqp_urls(amqp_url), heartbeat_s=heartbeat_s)


def service_endpoints(amqp_url: str, *, heartbeat_s: int) -> BrokerEndpoints:
    """A service's endpoints: they must name its broker user, which RabbitMQ checks every `user_id` against."""
    endpoints = endpoints_from_setting(amqp_url, heartbeat_s=heartbeat_s)
    if not endpoints.broker_user:
        raise ConfigurationError("ROGATORY_AMQP_URL must name the service's broker user")
    return endpoints


class FailoverConnector:
    """Opens connections to the first node that answers, starting after the node used last."""

    def __init__(self, endpoints: BrokerEndpoints, *, service: str) -> None:
        self._endpoints = endpoints
        self._service = service
        self._next = 0

    @property
    def endpoints(self) -> BrokerEndpoints:
        """The nodes and settings this connector uses."""
        return self._endpoints

    async def connect(self, role: str) -> aio_pika.abc.AbstractConnection:
        """A new connection for `role` (named in the broker's connection list); `BrokerUnavailable` if none answered."""
        urls = self._endpoints.urls
        failures: list[str] = []
        for offset in range(len(urls)):
            index = (self._next + offset) % len(urls)
            try:
                connection = await aio_pika.connect(
                    urls[index],
                    timeout=self._endpoints.connect_timeout_s,
                    heartbeat=self._endpoints.heartbeat_s,
                    client_properties={"connection_name": f"rogatory {self._service} {role}"},
                )
            except BROKER_ERRORS as exc:
                failures.append(f"{node_of(urls[index])}: {exc!r}"[:200])
                continue
            except asyncio.CancelledError:
                if not cancelled_by_the_library():
                    raise
                failures.append(f"{node_of(urls[index])}: connection dropped while opening")
                continue
            self._next = (index + 1) % len(urls)
            log.info("broker_connected", role=role, node=node_of(urls[index]))
            return connection
        self._next = (self._next + 1) % len(urls)
        raise BrokerUnavailable(f"no broker node answered: {'; '.join(failures)}")


__all__ = [
    "BROKER_ERRORS",
    "CLOSE_TIMEOUT_S",
    "BrokerEndpoints",
    "FailoverConnector",
    "cancelled_by_the_library",
    "endpoints_from_setting",
    "node_of",
    "service_endpoints",
    "split_amqp_urls",
]
