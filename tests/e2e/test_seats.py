"""Seats at the shared queue (worker/seats.py), on real worker processes sharing one seat:
one of three workers consumes the shared queue at a time, and takes a burst alone; slow calls
still spread over all three; a seated worker killed hands its seat on."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import pytest

from droplet.broker import amqp
from droplet.broker_config.names import QueueNames
from tests.conftest import client_fixture, cluster_fixture
from tests.unit.test_seats import _until

pytestmark = [pytest.mark.e2e]

one_seat = cluster_fixture(workers=3, run_slots=1)
one_seat_client = client_fixture("one_seat")


def _pid(lib: Any, x: int) -> int:
    import os as o

    return o.getpid()


def _nap(lib: Any, x: int) -> int:
    import os as o
    import time as t

    t.sleep(0.5)
    return o.getpid()


def _consumers(settings: Any) -> int:
    conn = amqp.connect(settings, "seats-test", confirms=False)
    try:
        info = conn.queue_info(QueueNames.of(settings).work)
        assert info is not None
        return info[1]
    finally:
        conn.close()


def test_one_seat_one_consumer_and_a_burst_taken_by_one_worker(
        one_seat: Any, one_seat_client: Any, unique: str) -> None:
    settings = one_seat.settings
    assert _until(lambda: _consumers(settings) == 1, 10.0), "one worker at the queue"
    one_seat_client.register(_pid, unique)
    [f.get(timeout=30) for f in [one_seat_client.call(unique, i) for i in range(50)]]
    seen: list[int] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            seen.append(_consumers(settings))

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        pids = [f.get(timeout=30) for f in [one_seat_client.call(unique, i) for i in range(600)]]
    finally:
        done.set()
        sampler.join(10)
    assert seen and max(seen) == 1, f"consumers seen during the burst: {sorted(set(seen))}"
    top = max(pids.count(pid) for pid in set(pids))
    assert top >= 0.9 * len(pids), f"the burst spread over workers: {sorted(set(pids))}"


def test_slow_calls_spread_over_every_worker_with_one_seat(
        one_seat: Any, one_seat_client: Any, unique: str) -> None:
    """Each run that goes on long gives its seat to a waiting worker, and hands the calls of
    its envelope it has not started back for it (handback.py)."""
    one_seat_client.register(_nap, unique)
    start = time.monotonic()
    pids = [f.get(timeout=60) for f in [one_seat_client.call(unique, i) for i in range(8)]]
    took = time.monotonic() - start
    assert len(set(pids)) == 3, f"8 naps ran on {len(set(pids))} workers"
    assert took < 3.6, f"8 naps of 0.5 s on 3 workers took {took:.1f} s"


def test_a_seated_worker_killed_hands_its_seat_on(
        one_seat: Any, one_seat_client: Any, unique: str) -> None:
    one_seat_client.register(_pid, unique)
    seated = one_seat_client.call(unique, 0).get(timeout=30)
    assert seated in [p.pid for p in one_seat.workers]
    in_flight = [one_seat_client.call(unique, i) for i in range(200)]
    os.kill(seated, signal.SIGKILL)
    answered = [f.get(timeout=30) for f in in_flight]
    assert len(answered) == 200
    after = [f.get(timeout=30) for f in [one_seat_client.call(unique, i) for i in range(50)]]
    assert seated not in after, "a dead worker answered"
    assert _until(lambda: _consumers(one_seat.settings) == 1, 10.0), "one worker at the queue"
