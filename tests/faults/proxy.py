"""A TCP proxy between the services and RabbitMQ that cuts or freezes connections on command.

It runs its own event loop in a thread, so the test's loop (or a blocking
`rogatory dev down`) never stalls the traffic it forwards. Commands:

* `cut()`     closes every connection through it at once (RST): a broker restart,
              a NAT table flushed, seen from the client;
* `freeze()`  stops forwarding in both directions while keeping every socket
              open, and holds new connections the same way: a black hole (a
              cable pulled, a node paused); only heartbeats and timeouts can tell;
* `resume()`  forwards again (connections that gave up meanwhile stay closed).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Coroutine
from typing import Any


class FaultProxy:
    """Listens on 127.0.0.1:`port` and forwards to `target_host`:`target_port`."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.connections_seen = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._flowing: asyncio.Event | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def start(self) -> FaultProxy:
        """Start listening; `self.port` is set when this returns."""
        self._thread.start()
        self._call(self._start())
        return self

    def stop(self) -> None:
        """Close everything and end the thread."""
        self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def cut(self) -> int:
        """Reset every open connection; how many there were."""
        return int(self._call(self._cut()))

    def freeze(self) -> None:
        """Stop forwarding, keep the sockets open (a black hole)."""
        self._call(self._set_flowing(flowing=False))

    def resume(self) -> None:
        """Forward again."""
        self._call(self._set_flowing(flowing=True))

    @property
    def open_connections(self) -> int:
        """Client connections open through the proxy now."""
        return len(self._writers) // 2

    def _call(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=30)

    async def _start(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._cut()

    async def _set_flowing(self, *, flowing: bool) -> None:
        assert self._flowing is not None
        if flowing:
            self._flowing.set()
        else:
            self._flowing.clear()

    async def _cut(self) -> int:
        writers, self._writers = list(self._writers), set()
        for writer in writers:
            sock = writer.get_extra_info("socket")
            if sock is not None:
                # SO_LINGER 0: the close sends RST, as a crashed peer or a flushed NAT would.
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        return len(writers) // 2

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        assert self._flowing is not None
        self.connections_seen += 1
        await self._flowing.wait()
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.transport.abort()
            return
        self._writers |= {client_writer, upstream_writer}
        await asyncio.gather(
            self._pump(client_reader, upstream_writer, client_writer),
            self._pump(upstream_reader, client_writer, upstream_writer),
        )

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, other: asyncio.StreamWriter
    ) -> None:
        assert self._flowing is not None
        try:
            while True:
                await self._flowing.wait()
                data = await reader.read(65536)
                if not data:
                    break
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            self._writers.discard(other)
            writer.transport.abort()
            other.transport.abort()


__all__ = ["FaultProxy"]
