"""Attack: one future waited on by several threads at once (a shared table of calls in
flight, a result several requests wait for).

The first get() took the answer from the reply pump and settled the future; the others kept
waiting for an answer that would not come again: for a direct call, their whole timeout,
then DropletTimeoutError on a future that was done; for a stored call, until their 2 s store
check. Now a waiting get() returns as soon as the future is settled by whichever thread.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

import droplet


@pytest.mark.parametrize("direct", [True, False])
def test_every_thread_waiting_on_one_future_gets_its_result(
        client: droplet.DropletClient, unique: str, direct: bool) -> None:
    slow = client.register(lambda lib, s: __import__("time").sleep(s) or s, unique)
    slow(0).get(timeout=20)
    future = slow.direct(1) if direct else slow(1)
    results: list[Any] = []

    def get() -> None:
        started = time.monotonic()
        try:
            results.append((future.get(timeout=8), time.monotonic() - started))
        except droplet.DropletError as exc:
            results.append((exc, time.monotonic() - started))

    threads = [threading.Thread(target=get) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(15)
    assert [r for r, _ in results] == [1, 1, 1, 1], results
    assert max(s for _, s in results) < 2.5, results
