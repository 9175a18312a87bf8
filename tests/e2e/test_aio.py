"""The asyncio client end to end (plain asyncio.run in each test, bounded by pytest-timeout):
awaitable calls, DAGs, map, errors, cancel, delays, and no thread per call."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

import droplet
import droplet.aio
from tests.conftest import Cluster, cluster_fixture

pytestmark = [pytest.mark.e2e]

cluster = cluster_fixture(workers=2, worker_lease_ttl_s=2, status_interval_s=0.5)


def _run(cluster: Cluster, body: Any) -> Any:
    async def main() -> Any:
        async with await droplet.aio.connect(settings=cluster.settings) as client:
            return await asyncio.wait_for(body(client), 60)

    return asyncio.run(main())


def test_await_calls_dags_and_map(cluster: Cluster, unique: str) -> None:
    async def body(client: Any) -> None:
        incr = await client.register(lambda lib, x: x + 1, unique + "-incr")
        square = await client.register(lambda lib, x: x * x, unique + "-sq")
        assert await incr(1) == 2
        assert await client.call(unique + "-incr", 41) == 42
        assert await incr.direct(2) == 3
        assert await asyncio.gather(*[incr(i) for i in range(200)]) == list(range(1, 201))
        assert [r async for r in client.map(incr, range(1000), chunk_size=64, window=256)] \
            == list(range(1, 1001))
        ok, error = await client.register_dag(unique, [incr.name, square.name],
                                              [(incr.name, square.name)])
        assert ok, error
        assert await client.call_dag(unique, {incr.name: [2]}) == 9
        assert await client.call_dag(unique, {incr.name: [3]}, direct_response=True) == 16
        assert await client.call_dag(unique, {incr.name: [1]}, output_key=unique + "-o") == 4
        assert await client.get_object(unique + "-o") == 4
        assert await client.delete_dag(unique) == (True, None)

    _run(cluster, body)


def test_errors_timeouts_cancel_and_delays(cluster: Cluster, unique: str) -> None:
    async def body(client: Any) -> None:
        def boom(lib: Any) -> None:
            raise ValueError("nope")

        failing = await client.register(boom, unique + "-boom")
        with pytest.raises(droplet.ExecutionError, match="nope"):
            await failing()
        sleepy = await client.register(lambda lib, s: __import__("time").sleep(s) or s,
                                       unique + "-sleep")
        slow = sleepy(0.5)
        with pytest.raises(droplet.DropletTimeoutError):
            await slow.get(timeout=0.05)
        assert await slow == 0.5, "a wait that timed out can be awaited again"
        long = sleepy(30)
        await asyncio.sleep(0.5)
        assert await long.cancel() is True and long.cancelled()
        with pytest.raises(droplet.CancelledError):
            await long
        started = time.time()
        assert await sleepy.call_later(1.0, 0) == 0
        assert time.time() - started >= 1.0
        with pytest.raises(droplet.InvalidArgumentError):
            sleepy.call_later(-5, 0)
        urgent = sleepy.with_priority(9)
        assert await urgent(0) == 0

    _run(cluster, body)


def test_many_calls_in_flight_use_no_thread_per_call(cluster: Cluster, unique: str) -> None:
    async def body(client: Any) -> tuple[int, int]:
        sleepy = await client.register(lambda lib, x: __import__("time").sleep(0.001) or x,
                                       unique)
        await sleepy(0)
        before = threading.active_count()
        futures = [sleepy(i) for i in range(2000)]
        peak = threading.active_count()
        results = await asyncio.gather(*futures)
        assert results == list(range(2000))
        return before, max(peak, threading.active_count())

    before, peak = _run(cluster, body)
    print(f"2000 calls in flight: {before} threads before, {peak} at most")
    assert peak <= before + 1


def test_closing_the_client_fails_what_still_waits(cluster: Cluster, unique: str) -> None:
    async def main() -> None:
        client = await droplet.aio.connect(settings=cluster.settings)
        sleepy = await client.register(lambda lib, s: __import__("time").sleep(s), unique)
        pending = sleepy(5)
        await asyncio.sleep(0.2)
        await client.close()
        with pytest.raises(droplet.DropletError, match="closed"):
            await pending.get(timeout=5)

    asyncio.run(asyncio.wait_for(main(), 30))
