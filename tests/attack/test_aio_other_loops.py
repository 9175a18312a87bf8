"""Attack: an asyncio client outliving its event loop, or used from another one.

- Connected in one asyncio.run() and used in the next (a notebook, a test helper): awaiting a
  call raised asyncio's "ValueError: The future belongs to a different loop than the one
  specified as the loop argument", which says nothing of the client. Now a DropletError says
  the client belongs to the loop it was connected on.
- Its loop closed with calls in flight: the I/O thread logged "the asyncio client's I/O thread
  hit an error" with a RuntimeError traceback for each answer that came; nobody can await
  those any more, and now they are dropped quietly.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

import droplet
import droplet.aio
from tests.conftest import Cluster


def test_a_client_used_on_another_loop_says_so(module_cluster: Cluster, unique: str) -> None:
    async def connect() -> tuple[Any, Any]:
        client = await droplet.aio.connect(settings=module_cluster.settings)
        incr = await client.register(lambda lib, x: x + 1, unique)
        assert await incr(1) == 2
        return client, incr

    client, incr = asyncio.run(connect())
    pending = incr(3)  # made outside any loop: refused when awaited on another one

    async def elsewhere() -> None:
        with pytest.raises(droplet.DropletError, match="event loop it was connected on"):
            incr(2)
        with pytest.raises(droplet.DropletError, match="event loop it was connected on"):
            await pending
        await client.close()

    asyncio.run(elsewhere())


def test_answers_for_a_closed_loop_are_dropped_quietly(
        module_cluster: Cluster, unique: str, caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.new_event_loop()

    async def start() -> Any:
        client = await droplet.aio.connect(settings=module_cluster.settings)
        slow = await client.register(lambda lib, s: __import__("time").sleep(s), unique)
        await slow(0)
        for _ in range(3):
            slow(0.5)  # left in flight
        return client

    client = loop.run_until_complete(start())
    loop.close()
    with caplog.at_level(logging.WARNING, logger="droplet.aio.bridge"):
        time.sleep(2.5)  # their answers come meanwhile
    asyncio.run(client.close())
    assert not [r for r in caplog.records if r.name == "droplet.aio.bridge"], caplog.text
