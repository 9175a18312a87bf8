"""Attack: one thread closes the client while others wait in get().

The closed reply pump's wait() returns at once, so a waiting get() spun a core: a direct
call's until its whole timeout ran out, then raised "no result ... within 8s" (the cause was
the close, not the worker); a stored call's for 2 s, until its store check read the outcome
through the closed client's etcd connection. The asyncio client already failed such calls at
once ("the client was closed before this call was answered"); the threaded one now does too.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

import droplet


def _waiter(future: droplet.DropletFuture, out: list[Any]) -> None:
    started, cpu = time.monotonic(), time.thread_time()
    try:
        future.get(timeout=8)
        out.append("answered")
    except droplet.DropletError as exc:
        out.append(exc)
    out.extend([time.monotonic() - started, time.thread_time() - cpu])


@pytest.mark.parametrize("direct", [True, False])
def test_a_get_waiting_when_the_client_closes_fails_at_once(
        client: droplet.DropletClient, unique: str, direct: bool) -> None:
    slow = client.register(lambda lib, s: __import__("time").sleep(s), unique)
    slow(0).get(timeout=20)  # a worker has it loaded
    future = slow.direct(3) if direct else slow(3)
    out: list[Any] = []
    thread = threading.Thread(target=_waiter, args=(future, out))
    thread.start()
    time.sleep(0.5)
    client.close()
    thread.join(10)
    error, wall_s, cpu_s = out
    assert isinstance(error, droplet.DropletError), error
    assert not isinstance(error, droplet.DropletTimeoutError), error
    assert "closed" in str(error)
    assert wall_s < 1.5, f"get() went on waiting {wall_s:.1f}s after close"
    assert cpu_s < 0.5, f"get() spun {cpu_s:.1f}s of CPU"
