"""Calls of a function the workers find quick travel 64 to a message (client/routing.py): a
worker learns each function's run time (worker/pace.py) and its status record lists those
under 1 ms; the client reads the records once a second. A function that turns slow leaves
the list as its mean follows it."""

from __future__ import annotations

import time
from typing import Any

import pytest

from droplet.proto import pb
from droplet.store.etcd import EtcdKV
from droplet.store.keys import StoreKeys
from tests.conftest import Cluster

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def _listed_quick(cluster: Cluster) -> set[str]:
    kv = EtcdKV(cluster.settings)
    try:
        records = kv.get_prefix(StoreKeys(cluster.settings.etcd_prefix).workers)[0]
    finally:
        kv.close()
    return {name for raw in records.values() for name in pb.WorkerStatus.FromString(raw)
            .quick_functions}


def _until(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what} within {timeout_s} s"
        time.sleep(0.1)


def test_a_quick_function_is_listed_sent_in_big_envelopes_and_unlisted_once_slow(
        module_cluster: Cluster, client: Any, unique: str) -> None:
    def step(lib: Any, x: int) -> int:
        if x < 0:
            import time as t

            t.sleep(0.01)
        return x + 1

    fn = client.register(step, unique)
    assert [fn(i).get(timeout=10) for i in range(20)] == list(range(1, 21))
    _until(lambda: unique in _listed_quick(module_cluster), 10, "listed as quick")
    _until(lambda: unique in client.router.known_quick(), 5, "known quick to the client")
    futures = [fn(i) for i in range(500)]
    assert [f.get(timeout=60) for f in futures] == list(range(1, 501))

    assert [fn(-1).get(timeout=10) for _ in range(30)] == [0] * 30  # now 10 ms a run
    _until(lambda: unique not in _listed_quick(module_cluster), 10, "unlisted once slow")
