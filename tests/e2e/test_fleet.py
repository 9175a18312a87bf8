"""The fleet under faults: killed workers and schedulers, with real processes (kill -9)."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest

import droplet
from droplet.broker_config.names import QueueNames
from droplet.cli.status import collect
from droplet.runtime import broker_factory
from tests.conftest import (
    Cluster,
    Services,
    client_fixture,
    cluster_fixture,
    purge_namespace,
    start_cluster,
)

pytestmark = [pytest.mark.e2e, pytest.mark.fault]


cluster = cluster_fixture(workers=3, scope="function", worker_lease_ttl_s=2,
                          status_interval_s=0.5)
fclient = client_fixture("cluster")


def _workers(cluster: Cluster) -> dict[str, dict[str, Any]]:
    return {w["id"]: w for w in collect(cluster.settings)["workers"]}


def _wait(condition: Any, timeout_s: float, what: str) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"{what} did not happen within {timeout_s}s")
        time.sleep(0.1)
    return time.monotonic() - started


def test_kill_9_a_worker_under_load_loses_no_call(cluster: Cluster, fclient: Any,
                                                  unique: str) -> None:
    slowish = fclient.register(lambda lib, x: (__import__("time").sleep(0.01), x * 2)[1], unique)
    futures = [slowish(i) for i in range(300)]
    time.sleep(0.3)
    victim = cluster.workers[0]
    os.kill(victim.pid, signal.SIGKILL)
    results = [f.get(timeout=60) for f in futures]
    assert results == [i * 2 for i in range(300)], "every call completed, each result correct"
    print(f"kill -9 under load: 300 calls in flight, 300 completed, victim pid {victim.pid}")


def test_a_dag_whose_worker_was_killed_answers_again(cluster: Cluster, fclient: Any,
                                                     unique: str) -> None:
    fclient.register(lambda lib, x: x + 1, unique + "-a")
    fclient.register(lambda lib, x: x * 10, unique + "-b")
    dag = unique + "-dag"
    assert fclient.register_dag(dag, [unique + "-a", unique + "-b"],
                                [(unique + "-a", unique + "-b")]) == (True, None)
    assert fclient.call_dag(dag, {unique + "-a": [1]}, direct_response=True, timeout=10) == 20
    holder = next(w for w in _workers(cluster).values() if w["pinned"] == f"{dag}/{unique}-b")
    os.kill(holder["pid"], signal.SIGKILL)

    gone_after = _wait(lambda: holder["id"] not in _workers(cluster), 20, "the worker vanishing")

    def answers() -> bool:
        try:
            return fclient.call_dag(dag, {unique + "-a": [2]}, direct_response=True,
                                    timeout=2) == 30
        except droplet.DropletError:
            return False

    healed_after = _wait(answers, 30, "the DAG answering again")
    pinned = {w["pinned"] for w in _workers(cluster).values()}
    assert f"{dag}/{unique}-b" in pinned, "the function is pinned on a live worker"
    print(f"worker vanished after {gone_after:.1f}s; DAG answered again "
          f"{healed_after:.1f}s later")


def test_an_in_flight_dag_call_on_a_killed_worker_completes_on_its_new_worker(
    cluster: Cluster, fclient: Any, unique: str
) -> None:
    """The step's trigger carries its whole schedule: the worker that dies mid-step leaves it
    unacked in its queue, a scheduler moves it to wherever the step is pinned next, and the
    call completes (the step runs again there) instead of failing or hanging."""
    fclient.register(lambda lib, x: x + 1, unique + "-a")
    fclient.register(lambda lib, x: (__import__("time").sleep(3), x * 10)[1], unique + "-slow")
    dag = unique + "-dag"
    assert fclient.register_dag(dag, [unique + "-a", unique + "-slow"],
                                [(unique + "-a", unique + "-slow")]) == (True, None)
    holder = next(w for w in _workers(cluster).values()
                  if w["pinned"] == f"{dag}/{unique}-slow")
    future = fclient.call_dag(dag, {unique + "-a": [1]})
    time.sleep(1.0)  # the slow function is running
    os.kill(holder["pid"], signal.SIGKILL)
    started = time.monotonic()
    assert future.get(timeout=40) == 20
    now_pinned = {w["id"] for w in _workers(cluster).values()
                  if w["pinned"] == f"{dag}/{unique}-slow"}
    assert now_pinned and holder["id"] not in now_pinned, "the step moved to a live worker"
    print(f"in-flight DAG call completed {time.monotonic() - started:.1f}s after its worker "
          "was killed")


def test_a_second_scheduler_adds_capacity_and_can_be_killed(cluster: Cluster, fclient: Any,
                                                            unique: str) -> None:
    cluster.start_scheduler()
    cluster.wait_ready(3)
    assert len(collect(cluster.settings)["schedulers"]) == 2
    double = fclient.register(lambda lib, x: 2 * x, unique)
    futures = [double(i) for i in range(400)]
    os.kill(cluster.schedulers[0].pid, signal.SIGKILL)
    more = [double(i) for i in range(400, 600)]
    assert [f.get(timeout=60) for f in futures + more] == [2 * i for i in range(600)]
    _wait(lambda: len(collect(cluster.settings)["schedulers"]) == 1, 20, "the dead scheduler "
          "leaving the fleet")


def test_a_call_longer_than_the_heartbeat_timeout_keeps_its_connection(
    services: Services, tmp_path: Any, unique: str
) -> None:
    """With 1 s heartbeats the broker drops a connection silent for ~2 s; a 5 s call must not
    let that happen (it would be redelivered and run twice)."""
    settings = services.settings(broker_heartbeat_s=1, worker_lease_ttl_s=3)
    cluster = start_cluster(settings, tmp_path, workers=1)
    try:
        with droplet.connect(settings=settings) as c:
            def slow(lib: Any, key: str) -> int:
                import time as t

                runs = (lib.get(key) or 0) + 1
                lib.put(key, runs)
                t.sleep(5)
                return runs

            c.register(slow, unique)
            assert c.call(unique, unique + "-runs").get(timeout=30) == 1
            time.sleep(1)
            assert c.get_object(unique + "-runs") == 1, "the call ran exactly once"
        log = (tmp_path / "worker-1.log").read_text()
        assert "connection lost" not in log
    finally:
        cluster.stop()
        purge_namespace(settings, cluster.worker_ids())


def test_a_long_call_is_acked_and_held_as_a_claim_and_settled_if_its_worker_dies(
    services: Services, tmp_path: Any, unique: str
) -> None:
    """Past long_call_s a call is acked (RabbitMQ's consumer timeout would otherwise cut it
    off) and held as a claim in etcd; the claim goes when it completes, and when its worker
    dies a scheduler places the call again."""
    settings = services.settings(long_call_s=1.0, worker_lease_ttl_s=2)
    cluster = start_cluster(settings, tmp_path, workers=2)
    try:
        with droplet.connect(settings=settings) as c:
            def slow(lib: Any, key: str, seconds: float) -> int:
                import time as t

                runs = (lib.get(key) or 0) + 1
                lib.put(key, runs)
                t.sleep(seconds)
                return runs

            c.register(slow, unique)
            claims = c.values.keys.claims
            assert c.call(unique, unique + "-a", 3.0).get(timeout=20) == 1
            _wait(lambda: c.kv.get_prefix(claims)[0] == {}, 5, "the claim going with the call")

            future = c.call(unique, unique + "-b", 6.0)
            deadline = time.monotonic() + 10
            while not c.kv.get_prefix(claims)[0]:
                assert time.monotonic() < deadline, "no claim appeared"
                time.sleep(0.1)
            [raw] = c.kv.get_prefix(claims)[0].values()
            from droplet.proto import pb

            holder = pb.Claim.FromString(raw).worker_id
            pid = next(w["pid"] for w in _workers(cluster).values() if w["id"] == holder)
            os.kill(pid, signal.SIGKILL)
            assert future.get(timeout=40) == 2, "placed again and run on the other worker"
            _wait(lambda: c.kv.get_prefix(claims)[0] == {}, 5, "the settled claim going")
    finally:
        cluster.stop()
        purge_namespace(settings, cluster.worker_ids())


def test_during_a_long_call_the_worker_takes_nothing_new_and_holds_nothing_unacked(
    services: Services, tmp_path: Any, unique: str
) -> None:
    """Past long_call_s the worker stops consuming: a call arriving meanwhile waits ready in
    the queue (for another worker, or for this one when it is done), never unacked behind a
    call that may run for an hour."""
    settings = services.settings(long_call_s=1.0, worker_lease_ttl_s=3)
    cluster = start_cluster(settings, tmp_path, workers=1)
    try:
        with droplet.connect(settings=settings) as c:
            c.register(lambda lib, s: (__import__("time").sleep(s), lib.getid())[1], unique)
            claims = c.values.keys.claims
            long_call = c.call(unique, 4.0)
            _wait(lambda: bool(c.kv.get_prefix(claims)[0]), 10, "the long call's claim")
            later = c.call(unique, 0.0)
            names = QueueNames(settings.namespace)
            conn = broker_factory(settings, "inspect")()
            try:
                _wait(lambda: conn.queue_depth(names.work) == 1, 5, "the call waiting, ready")
            finally:
                conn.close()
            assert long_call.get(timeout=20) == later.get(timeout=20)
            _wait(lambda: c.kv.get_prefix(claims)[0] == {}, 5, "the claim going")
    finally:
        cluster.stop()
        purge_namespace(settings, cluster.worker_ids())
