"""A DAG call's first trigger goes from the client straight to its source's pinned worker
(client/dagroutes.py): real processes and RabbitMQ. Proved by pausing the scheduler (SIGSTOP):
a direct DAG call is still answered and leaves nothing in the scheduler queue. When the
worker's queue is gone the broker returns the trigger and the call goes through a scheduler;
after a pin moved the client follows it."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

import droplet
from droplet.broker_config.names import QueueNames
from droplet.cli.status import collect
from droplet.client.dagroutes import DagRoutes
from droplet.runtime import broker_factory
from tests.conftest import Cluster, client_fixture, cluster_fixture

pytestmark = [pytest.mark.e2e, pytest.mark.fault]

cluster = cluster_fixture(workers=3, scope="function", worker_lease_ttl_s=2,
                          status_interval_s=0.5)
dclient = client_fixture("cluster")


@contextlib.contextmanager
def _scheduler_paused(cluster: Cluster) -> Iterator[None]:
    pid = cluster.schedulers[0].pid
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def _dag(client: Any, unique: str) -> str:
    client.register(lambda lib, x: x + 1, unique + "-incr")
    client.register(lambda lib, x: x * x, unique + "-square")
    dag = unique + "-dag"
    assert client.register_dag(dag, [unique + "-incr", unique + "-square"],
                               [(unique + "-incr", unique + "-square")]) == (True, None)
    return dag


def _holder(cluster: Cluster, dag: str, function: str) -> dict[str, Any]:
    return next(w for w in collect(cluster.settings)["workers"]
                if w["pinned"] == f"{dag}/{function}")


def _wait(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout_s}s")
        time.sleep(0.1)


def test_a_direct_dag_call_needs_no_scheduler(cluster: Cluster, dclient: Any,
                                              unique: str) -> None:
    dag = _dag(dclient, unique)
    assert dclient.call_dag(dag, {unique + "-incr": [1]}, direct_response=True) == 4
    names = QueueNames.of(cluster.settings)
    conn = broker_factory(cluster.settings, "test-inspect")()
    try:
        with _scheduler_paused(cluster):
            for x in range(20):
                assert dclient.call_dag(dag, {unique + "-incr": [x]}, direct_response=True,
                                        timeout=10) == (x + 1) ** 2
            future = dclient.call_dag(dag, {unique + "-incr": [5]}, output_key=unique + "-out")
            assert future.get(timeout=10) == 36
            assert dclient.get_object(unique + "-out") == 36
            assert conn.queue_depth(names.calls) == 0, "nothing went to the schedulers"
    finally:
        conn.close()


def test_a_gone_worker_queue_falls_back_to_a_scheduler_and_a_moved_pin_is_followed(
    cluster: Cluster, dclient: Any, unique: str
) -> None:
    dag = _dag(dclient, unique)
    stale = droplet.connect(settings=cluster.settings)
    try:
        # This client's view of pins is read once and never again: it keeps sending to the
        # worker the DAG's source was pinned on.
        stale.dag_routes = DagRoutes(stale.metadata, recheck_s=3600)
        assert stale.call_dag(dag, {unique + "-incr": [1]}, direct_response=True) == 4
        holder = _holder(cluster, dag, unique + "-incr")
        os.kill(holder["pid"], signal.SIGKILL)
        names = QueueNames.of(cluster.settings)
        conn = broker_factory(cluster.settings, "test-inspect")()
        try:
            _wait(lambda: conn.queue_depth(names.worker(holder["id"])) is None, 30,
                  "the dead worker's queue being deleted")
        finally:
            conn.close()
        _wait(lambda: any(w["pinned"] == f"{dag}/{unique}-incr" and w["id"] != holder["id"]
                          for w in collect(cluster.settings)["workers"]), 30,
              "the pin moving to a live worker")
        # The trigger comes back unroutable; the call goes through the scheduler.
        assert stale.call_dag(dag, {unique + "-incr": [2]}, direct_response=True,
                              timeout=20) == 9
        # A client that looks again (at most a second later) follows the pin: it needs no
        # scheduler.
        time.sleep(1.2)
        assert dclient.call_dag(dag, {unique + "-incr": [3]}, direct_response=True,
                                timeout=20) == 16
        with _scheduler_paused(cluster):
            assert dclient.call_dag(dag, {unique + "-incr": [4]}, direct_response=True,
                                    timeout=10) == 25
    finally:
        stale.close()
