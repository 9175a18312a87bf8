"""Attack: clients made and dropped without close(), `droplet.connect().call("f", x).get()`
in a loop (a request handler, a script's helper).

Each kept its threads (the keepalive and the call batcher) and its broker and etcd sockets
for the life of the process: ten such calls left 20 threads and 40 sockets, and the broker
as many connections. The batcher's thread held the client through its sender; now nothing
of the client's own refers back to it, and a client collected unclosed closes its parts.
The asyncio client's I/O thread held its threaded client the same way (five one-liners: 15
threads, 20 sockets); a collected asyncio client now closes both.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import threading
import time

import droplet
import droplet.aio
from tests.conftest import Cluster


def _sockets() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # closed meanwhile
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return count


def test_a_client_dropped_unclosed_lets_go_of_its_threads_and_sockets(
        module_cluster: Cluster, unique: str) -> None:
    with droplet.connect(settings=module_cluster.settings) as client:
        client.register(lambda lib, x: x + 1, unique)
    gc.collect()
    time.sleep(0.5)
    threads, sockets = threading.active_count(), _sockets()
    for i in range(10):
        assert droplet.connect(settings=module_cluster.settings).call(unique, i).get(
            timeout=20) == i + 1
    _all_let_go(threads, sockets)


def test_an_asyncio_client_dropped_unclosed_lets_go_too(
        module_cluster: Cluster, unique: str) -> None:
    async def main() -> None:
        async with await droplet.aio.connect(settings=module_cluster.settings) as client:
            await client.register(lambda lib, x: x + 1, unique)
        gc.collect()
        await asyncio.sleep(0.5)
        threads, sockets = threading.active_count(), _sockets()
        for i in range(5):
            client = await droplet.aio.connect(settings=module_cluster.settings)
            assert await client.call(unique, i) == i + 1
            del client
        await asyncio.to_thread(_all_let_go, threads, sockets)

    asyncio.run(main())


def _all_let_go(threads: int, sockets: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        gc.collect()
        if threading.active_count() <= threads and _sockets() <= sockets:
            break
        time.sleep(0.2)
    assert threading.active_count() <= threads, [t.name for t in threading.enumerate()]
    assert _sockets() <= sockets


def test_a_call_sent_from_a_client_dropped_at_once_still_runs(
        module_cluster: Cluster, unique: str) -> None:
    """`droplet.connect().call("f", x)` as a statement, the future and the client dropped
    together: the call was still in the batcher (it waits up to 1 ms for company) when the
    client was collected, and must go out all the same."""
    with droplet.connect(settings=module_cluster.settings) as client:
        client.register(lambda lib, key: lib.put(key, "ran"), unique)
        client.call(unique, f"{unique}-warm").get(timeout=20)
        for i in range(5):
            droplet.connect(settings=module_cluster.settings).call(unique, f"{unique}-{i}")
        deadline = time.monotonic() + 20
        missing = [i for i in range(5)]
        while missing and time.monotonic() < deadline:
            missing = [i for i in missing if client.get_object(f"{unique}-{i}") != "ran"]
            time.sleep(0.2)
        assert missing == [], f"calls {missing} of dropped clients never ran"
