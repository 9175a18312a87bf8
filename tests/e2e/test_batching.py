"""Batching functions end to end (real workers, RabbitMQ, etcd): waiting calls run in one
invocation, each call gets its own result, a bad batch fails each of its calls clearly, DAG
batching_functions batch their steps, and a worker killed mid-batch leaves every call of the
batch exactly one outcome."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from typing import Any

import pytest

import droplet
from droplet.cli.status import collect
from droplet.store import serializer
from tests.conftest import Cluster, client_fixture, cluster_fixture

pytestmark = [pytest.mark.e2e]

batch_cluster = cluster_fixture(workers=2, worker_lease_ttl_s=2, status_interval_s=0.5)
bclient = client_fixture("batch_cluster")
fault_cluster = cluster_fixture(workers=2, scope="function", worker_lease_ttl_s=2,
                                status_interval_s=0.5)
fclient = client_fixture("fault_cluster")


def _doubled(lib: Any, batch: list[tuple[int]]) -> list[tuple[int, str, int]]:
    """Each result says which invocation it ran in, and how many calls that one had."""
    import time as t
    import uuid

    invocation = uuid.uuid4().hex
    t.sleep(0.05)  # calls that come meanwhile wait for the next batch
    return [(x * 2, invocation, len(batch)) for (x,) in batch]


def test_waiting_calls_run_in_one_invocation_each_with_its_own_result(bclient: Any,
                                                                      unique: str) -> None:
    f = bclient.register(_doubled, unique, batching=True, batch_size=16, batch_linger_ms=20)
    results = [fut.get(timeout=60) for fut in [f(i) for i in range(200)]]
    assert [r[0] for r in results] == [i * 2 for i in range(200)], "each call its own result"
    per_invocation = Counter(r[1] for r in results)
    sizes = {r[1]: r[2] for r in results}
    assert per_invocation == sizes, "an invocation's calls are the batch it was handed"
    assert max(sizes.values()) <= 16, "never more than batch_size"
    assert len(per_invocation) < 100, f"{len(per_invocation)} invocations for 200 calls"
    print(f"200 calls in {len(per_invocation)} invocations; sizes "
          f"{sorted(Counter(sizes.values()).items())}")


def test_calls_of_one_batching_function_from_two_clients_share_batches(
        bclient: Any, batch_cluster: Cluster, unique: str) -> None:
    f = bclient.register(_doubled, unique, batching=True, batch_size=64, batch_linger_ms=50)
    with droplet.connect(settings=batch_cluster.settings) as other:
        g = other.submit
        mine = [f(i) for i in range(60)]
        theirs = [g(unique, [i], batching=True) for i in range(60, 120)]
        results = [fut.get(timeout=60) for fut in mine + theirs]
    assert [r[0] for r in results] == [i * 2 for i in range(120)]
    by_invocation: dict[str, set[bool]] = {}
    for index, r in enumerate(results):
        by_invocation.setdefault(r[1], set()).add(index < 60)
    assert any(len(who) == 2 for who in by_invocation.values()), \
        "some invocation held calls of both clients"


@pytest.mark.parametrize("body, says", [
    (lambda lib, batch: batch[1:], "results for"),
    (lambda lib, batch: 1 / 0, "ZeroDivisionError"),
])
def test_a_bad_batch_fails_each_of_its_calls_clearly(bclient: Any, unique: str, body: Any,
                                                     says: str) -> None:
    f = bclient.register(body, unique, batching=True, batch_size=8)
    futures = [f(i) for i in range(20)]
    for future in futures:
        with pytest.raises(droplet.ExecutionError, match=says):
            future.get(timeout=30)


def test_dag_batching_functions_run_their_steps_in_batches(bclient: Any, unique: str) -> None:
    bclient.register(lambda lib, x: x + 1, unique + "-a")

    def scale(lib: Any, batch: list[tuple[int]]) -> list[tuple[int, int]]:
        import time as t

        t.sleep(0.05)
        return [(up * 10, len(batch)) for (up,) in batch]

    bclient.register(scale, unique + "-b")  # not registered batching: the DAG says so
    assert bclient.register_dag(unique, [unique + "-a", unique + "-b"],
                                [(unique + "-a", unique + "-b")],
                                batching_functions=[unique + "-b"]) == (True, None)
    try:
        futures = [bclient.call_dag(unique, {unique + "-a": [i]}) for i in range(60)]
        results = [f.get(timeout=60) for f in futures]
    finally:
        bclient.delete_dag(unique)
    assert [r[0] for r in results] == [(i + 1) * 10 for i in range(60)]
    assert max(r[1] for r in results) > 1, "some steps ran together"
    print(f"60 DAG calls: batch sizes {sorted(Counter(r[1] for r in results).items())}")


def _slow_batch(lib: Any, batch: list[tuple[int]]) -> list[int]:
    """A batch of several marks itself started, then takes a while; a copy run alone (after
    its worker died) is quick."""
    import time as t

    if len(batch) > 1:
        lib.put(f"started-{lib.getid()}", len(batch))
        t.sleep(4)
    return [x * 2 for (x,) in batch]


@pytest.mark.fault
def test_a_worker_killed_mid_batch_leaves_every_call_one_outcome(
        fclient: Any, fault_cluster: Cluster, unique: str) -> None:
    f = fclient.register(_slow_batch, unique, batching=True, batch_size=64,
                         batch_linger_ms=100)
    futures = [f(i) for i in range(40)]
    fclient.batcher.flush()
    workers = {w["id"]: w["pid"] for w in collect(fault_cluster.settings)["workers"]}
    deadline = time.monotonic() + 30
    victim = None
    while victim is None:
        assert time.monotonic() < deadline, "no batch started"
        victim = next((w for w in workers if fclient.get_object(f"started-{w}")), None)
        time.sleep(0.05)
    in_batch = fclient.get_object(f"started-{victim}")
    os.kill(workers[victim], signal.SIGKILL)
    outcomes: dict[str, Any] = {}
    for i, future in enumerate(futures):
        try:
            outcomes[future.call_id] = future.get(timeout=60)
            assert outcomes[future.call_id] == i * 2
        except droplet.WorkerLostError as exc:  # allowed by the README; none expected here
            outcomes[future.call_id] = exc
    assert len(outcomes) == 40, "every call has an outcome"
    for call_id, answered in outcomes.items():
        stored = fclient.values.outcome(call_id)
        assert stored is not None, "each outcome is stored"
        if not isinstance(answered, Exception):
            assert serializer.load(stored) == answered, "the answer is the one stored outcome"
    lost = sum(isinstance(o, Exception) for o in outcomes.values())
    print(f"killed {victim} in a batch of {in_batch}: 40 calls, {40 - lost} results, "
          f"{lost} WORKER_LOST")
