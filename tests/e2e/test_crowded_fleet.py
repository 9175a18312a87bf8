"""More workers than cores (issue 13): envelopes then carry calls by the cores the workers
share, but slow calls still run side by side, one to a worker, not one after another in an
envelope (client/routing.py, handback.py)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.conftest import client_fixture, cluster_fixture

pytestmark = [pytest.mark.e2e]

crowd = cluster_fixture(workers=32)
crowd_client = client_fixture("crowd")


def test_32_slow_calls_on_32_workers_run_side_by_side(crowd_client: Any, unique: str) -> None:
    def nap(lib: Any, x: int) -> str:
        import time as t

        t.sleep(0.5)
        return str(lib.getid())

    crowd_client.register(nap, unique)
    start = time.monotonic()
    futures = [crowd_client.call(unique, i) for i in range(32)]
    ran_on = [f.get(timeout=60) for f in futures]
    took = time.monotonic() - start
    # In envelopes of 16 kept whole, two workers would run them in 8 s; by counts, at least
    # 16 workers took part (one to a worker, a few handed on after 20 ms: slow calls spread).
    assert len(set(ran_on)) >= 16, sorted(set(ran_on))
    assert took < 6.0, f"32 naps of 0.5 s took {took:.1f} s: serialised in envelopes"


slotted = cluster_fixture(workers=3, run_slots=1, queue_seats=0)  # (seats: test_seats.py)
slotted_client = client_fixture("slotted")


def _overlaps(runs: list[tuple[int, float, float]]) -> int:
    """Pairs of runs on different workers that were going on at the same time."""
    ordered = sorted(runs, key=lambda run: run[1])
    return sum(1 for i, (pid, _, end) in enumerate(ordered)
               for other, start, _ in ordered[i + 1:] if other != pid and start < end)


def _spin(lib: Any, x: int) -> tuple[int, float, float]:
    import os
    import time as t

    start = t.time()
    until = t.thread_time() + 0.0005
    while t.thread_time() < until:
        pass
    return os.getpid(), start, t.time()


def assert_quick_calls_run_one_at_a_time(client: Any, name: str) -> None:
    """With one run slot: a burst of quick calls reaches several workers, and no two of its
    runs overlap (once every worker knows the function is quick: an unknown one runs
    slotless)."""
    client.register(_spin, name)
    for _ in range(3):
        [f.get(timeout=60) for f in [client.call(name, i) for i in range(60)]]
    runs = [tuple(f.get(timeout=60)) for f in [client.call(name, i) for i in range(300)]]
    assert len({pid for pid, _, _ in runs}) >= 2, "the burst reached several workers"
    assert _overlaps(runs) == 0, f"{_overlaps(runs)} pairs of runs overlapped"


def test_with_one_run_slot_quick_calls_on_three_workers_never_run_at_once(
        slotted_client: Any, unique: str) -> None:
    """run_slots=1: once each worker knows the function is quick, its deliveries take the
    host's one slot in turn (worker/slots.py), so no two runs overlap, whichever worker."""
    assert_quick_calls_run_one_at_a_time(slotted_client, unique)
