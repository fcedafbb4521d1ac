"""Connections the broker must refuse, without leaving aio-pika's clean-up for after the test's event loop."""

from __future__ import annotations

import asyncio
import gc

import aio_pika


async def refused_connection(url: str, *, timeout: float) -> BaseException:
    """Try to connect to `url` and return the error it failed with (it must fail).

    A failed `aio_pika.connect` leaves a half-made connection whose `__del__`
    schedules its `close()` on the running loop. Collected later, after the
    test's loop stopped, that coroutine is never awaited and pytest reports it
    against whichever test is tearing down. Collected here, it runs here.
    """
    try:
        connection = await aio_pika.connect(url, timeout=timeout)
    except Exception as exc:
        refusal: BaseException = exc
    else:
        await connection.close()
        raise AssertionError(f"the broker accepted a connection to {url} that it must refuse")
    chain: list[BaseException] = [refusal]
    while chain:  # the tracebacks' frames hold the half-made connection (the chain may loop back on itself)
        link = chain.pop()
        if link.__traceback__ is not None:
            link.__traceback__ = None
            chain.extend(other for other in (link.__cause__, link.__context__) if other is not None)
    gc.collect()
    for _ in range(3):
        await asyncio.sleep(0)  # let the close() that the collection scheduled run on this loop
    return refusal
