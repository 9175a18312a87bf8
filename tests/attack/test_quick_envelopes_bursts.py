"""Envelopes of 64 for quick functions (client/routing.py, worker/pace.py), attacked: bursts of
calls with 30 KB results (64 outcomes do not fit one etcd transaction), a worker killed -9 in
the middle of 64-call envelopes, direct calls and client.map of a function known quick."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest

from droplet.client import routing
from tests.conftest import Cluster, client_fixture, cluster_fixture

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

quick_cluster = cluster_fixture(workers=2, worker_lease_ttl_s=2, status_interval_s=0.3)
qclient = client_fixture("quick_cluster")


def _known_quick(client: Any, fn: Any, name: str) -> None:
    """Runs fn until the workers list it as quick and the client has read their records."""
    deadline = time.monotonic() + 20
    while name not in client.router.known_quick():
        assert time.monotonic() < deadline, f"{name} never known quick"
        [f.get(timeout=10) for f in [fn(i) for i in range(50)]]
        time.sleep(0.2)


def _big(lib: Any, x: int) -> bytes:
    return x.to_bytes(4, "big") * 7500  # 30 000 bytes, made in well under 1 ms


def test_bursts_of_calls_with_30_kb_results_in_envelopes_of_64(
        qclient: Any, unique: str, monkeypatch: pytest.MonkeyPatch) -> None:
    sizes: list[int] = []
    publish = qclient.router._publish

    def spy(queue: str, calls: Any, most: int = 256, max_bytes: int | None = None) -> None:
        sizes.append(most)
        publish(queue, calls, most, max_bytes)

    monkeypatch.setattr(qclient.router, "_publish", spy)
    fn = qclient.register(_big, unique)
    _known_quick(qclient, fn, unique)
    for _ in range(3):
        sizes.clear()
        futures = [fn(i) for i in range(640)]
        results = [f.get(timeout=30) for f in futures]
        assert [r == i.to_bytes(4, "big") * 7500 for i, r in enumerate(results)] == [True] * 640
        assert 64 in sizes, f"the burst went in envelopes of {sizes}"


def test_direct_calls_and_map_of_a_quick_function(qclient: Any, unique: str) -> None:
    fn = qclient.register(lambda lib, x: x * 3, unique)
    _known_quick(qclient, fn, unique)
    futures = [qclient.call_direct(unique, i) for i in range(1000)]
    assert [f.get(timeout=30) for f in futures] == [i * 3 for i in range(1000)]
    assert list(qclient.map(unique, range(3000), timeout=60)) == [i * 3 for i in range(3000)]


def test_a_worker_killed_amid_envelopes_of_64_loses_no_call(
        quick_cluster: Cluster, qclient: Any, unique: str) -> None:
    def step(lib: Any, x: int) -> int:
        return x + 1

    fn = qclient.register(step, unique)
    _known_quick(qclient, fn, unique)
    assert routing._QUICK_PER_ENVELOPE == 64
    victim = quick_cluster.workers[0]
    futures = [fn(i) for i in range(6000)]
    time.sleep(0.05)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(10)
    quick_cluster.start_worker()
    assert [f.get(timeout=60) for f in futures] == [i + 1 for i in range(6000)]
