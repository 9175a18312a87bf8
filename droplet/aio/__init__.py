"""Droplet for asyncio: `client = await droplet.aio.connect()`, then `await f(x)`.

    import droplet.aio

    async with await droplet.aio.connect() as client:
        incr = await client.register(lambda lib, x: x + 1, "incr")
        assert await incr(1) == 2
        results = [r async for r in client.map(incr, range(100))]

One background I/O thread per client drives the broker connection and settles the futures on
the event loop (droplet/aio/bridge.py); no thread per call.
"""

from __future__ import annotations

import asyncio
from typing import Any

from droplet.aio.client import AsyncDropletClient, AsyncFunction, AsyncFuture
from droplet.settings import Settings


async def connect(broker_url: str | None = None, etcd: str | None = None, *,
                  namespace: str | None = None, settings: Settings | None = None,
                  **overrides: Any) -> AsyncDropletClient:
    """Connects like droplet.connect (same arguments), without blocking the event loop."""
    from droplet.client import connect as connect_sync

    loop = asyncio.get_running_loop()
    sync = await asyncio.to_thread(connect_sync, broker_url, etcd, namespace=namespace,
                                   settings=settings, **overrides)
    return AsyncDropletClient(sync, loop)


__all__ = ["AsyncDropletClient", "AsyncFunction", "AsyncFuture", "connect"]
