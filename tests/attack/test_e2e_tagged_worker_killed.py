"""Attack (end to end, real RabbitMQ and etcd): kill -9 the only worker with the tags calls
need while calls wait on its own queue, and restart it under the same id with other tags.

Every call must get exactly one outcome within a bounded time: the one that ran (or was in
hand) and those waiting are moved to the schedulers and answered NO_RESOURCES (no live worker
has the tags), or run on a worker that qualifies; none may hang until the client's timeout.
README "Resource tags" (`NO_RESOURCES` at once when no live worker qualifies; a worker without
the tags sends a call back to the schedulers).
Run: .venv/bin/python -m pytest -q tests/attack/test_e2e_tagged_worker_killed.py
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

import droplet
from droplet.cli.cluster import LocalCluster
from droplet.cli.status import collect
from tests.conftest import Services, purge_namespace

pytestmark = [pytest.mark.e2e, pytest.mark.fault]


def _slow(lib: Any, x: int) -> str:
    import time as t

    t.sleep(0.5)
    return f"{lib.getid()}:{x}"


def _worker(settings: Any, worker_id: str) -> dict[str, Any]:
    return {w["id"]: w for w in collect(settings)["workers"]}.get(worker_id, {})


def _outcomes(futures: list[Any], deadline_s: float) -> list[Any]:
    """Each future's outcome: its result, or the name of the error it raised ("HUNG")."""
    out: list[Any] = []
    deadline = time.monotonic() + deadline_s
    for future in futures:
        try:
            out.append(future.get(timeout=max(0.5, deadline - time.monotonic())))
        except droplet.DropletTimeoutError:
            out.append("HUNG")
        except droplet.DropletError as exc:
            out.append(type(exc).__name__)
    return out


def _slow_batch(lib: Any, batch: list[tuple[int]]) -> list[str]:
    import time as t

    t.sleep(0.5)
    return [f"{lib.getid()}:{x}" for (x,) in batch]


@pytest.mark.parametrize(("restart_tags", "batches"),
                         [(None, False), ("mem=4", False), (None, True), ("mem=4", True)])
def test_calls_queued_on_a_killed_tagged_worker_each_get_one_outcome(
        services: Services, tmp_path: Path, unique: str, restart_tags: str | None,
        batches: bool) -> None:
    plain, gpu = f"{unique}-plain", f"{unique}-gpu"
    settings = services.settings(worker_lease_ttl_s=3, status_interval_s=0.5)
    cluster = LocalCluster(settings, tmp_path)
    cluster.start_scheduler()
    cluster.start_worker(plain)
    cluster.start_worker(gpu, resources="gpu=1")
    try:
        cluster.wait_ready(2, timeout_s=30)
        with droplet.connect(settings=settings) as client:
            if batches:  # killed mid-batch: the batch and the calls behind it
                f = client.register(_slow_batch, unique, resources={"gpu": 1}, batching=True,
                                    batch_size=3, batch_linger_ms=50)
            else:
                f = client.register(_slow, unique, resources={"gpu": 1})
            assert f(-1).get(timeout=30) == f"{gpu}:-1"
            futures = [f(i) for i in range(8)]
            client.batcher.flush()
            deadline = time.monotonic() + 20
            while not _worker(settings, gpu).get("queue_depth"):
                assert time.monotonic() < deadline, "the tagged worker never took a call"
                time.sleep(0.05)
            os.kill(_worker(settings, gpu)["pid"], signal.SIGKILL)
            if restart_tags is not None:  # the same id, at once, with other tags
                cluster.start_worker(gpu, resources=restart_tags)
            outcomes = _outcomes(futures, 60)
        ran = [o for o in outcomes if o.startswith(gpu + ":")]
        refused = [o for o in outcomes if o == "NoResourcesError"]
        assert len(ran) + len(refused) == 8, f"lost, hung or unclear outcomes: {outcomes}"
        print(f"restart with {restart_tags}: {len(ran)} ran before the kill, "
              f"{len(refused)} NO_RESOURCES")
    finally:
        cluster.stop()
        purge_namespace(settings, [plain, gpu])


def test_calls_placed_on_a_paused_tagged_worker_complete_after_it_resumes(
        services: Services, tmp_path: Path, unique: str) -> None:
    """SIGSTOP one of two gpu workers (its status still shows it idle, so calls are placed on
    its queue), past its lease, then SIGCONT: every call gets one result."""
    ids = [f"{unique}-g{i}" for i in range(2)]
    settings = services.settings(worker_lease_ttl_s=3, status_interval_s=0.5)
    cluster = LocalCluster(settings, tmp_path)
    cluster.start_scheduler()
    for worker_id in ids:
        cluster.start_worker(worker_id, resources="gpu=1")
    stopped = None
    try:
        cluster.wait_ready(2, timeout_s=30)
        with droplet.connect(settings=settings) as client:
            f = client.register(_slow, unique, resources={"gpu": 1})
            assert f(-1).get(timeout=30).split(":")[0] in ids
            pid = _worker(settings, ids[0])["pid"]
            os.kill(pid, signal.SIGSTOP)
            stopped = pid
            futures = [f(i) for i in range(10)]
            client.batcher.flush()
            time.sleep(8)  # lease 3 s: the schedulers find it dead and move its queue
            os.kill(pid, signal.SIGCONT)
            stopped = None
            outcomes = _outcomes(futures, 60)
        assert all(o.split(":")[0] in ids and o.endswith(f":{i}")
                   for i, o in enumerate(outcomes)), f"lost, hung or failed: {outcomes}"
        print("ran on", sorted(o.split(":")[0][-2:] for o in outcomes))
    finally:
        if stopped is not None:
            os.kill(stopped, signal.SIGCONT)
        cluster.stop()
        purge_namespace(settings, ids)


def _tripled(lib: Any, batch: list[tuple[int]]) -> list[int]:
    return [x * 3 for (x,) in batch]


def test_a_scheduler_killed_while_placing_tagged_batching_calls_loses_none(
        services: Services, tmp_path: Path, unique: str) -> None:
    """Two schedulers place a burst of calls that need gpu and batch; one is killed -9 in the
    middle: its unacked calls go to the other, and every call gets its one result."""
    ids = [f"{unique}-g{i}" for i in range(2)]
    settings = services.settings(worker_lease_ttl_s=3, status_interval_s=0.5)
    cluster = LocalCluster(settings, tmp_path)
    victim = cluster.start_scheduler()
    cluster.start_scheduler()
    for worker_id in ids:
        cluster.start_worker(worker_id, resources="gpu=1")
    try:
        cluster.wait_ready(2, timeout_s=30)
        with droplet.connect(settings=settings) as client:
            f = client.register(_tripled, unique, resources={"gpu": 1}, batching=True,
                                batch_size=16, batch_linger_ms=20)
            assert f(1).get(timeout=30) == 3
            futures = []
            for i in range(300):
                futures.append(f(i))
                if i == 150:
                    client.batcher.flush()
                    victim.kill()
            outcomes = _outcomes(futures, 90)
        wrong = [(i, o) for i, o in enumerate(outcomes) if o != i * 3]
        assert not wrong, f"{len(wrong)} of 300 lost, hung or wrong: {wrong[:10]}"
    finally:
        cluster.stop()
        purge_namespace(settings, ids)


def _pid(lib: Any, x: int) -> str:
    import os as o

    return f"{lib.getid()}:{o.getpid()}:{x}"


def test_a_gpu_step_never_runs_on_its_worker_restarted_without_gpu(
        services: Services, tmp_path: Path, unique: str) -> None:
    """The worker pinned on a gpu DAG function is killed -9 and restarted at once under the
    same id without tags: the pin moves to the other gpu worker, and no step (queued before
    or sent after) runs on the restarted process."""
    from contextlib import closing

    from droplet.runtime import open_kv
    from droplet.signing import Signer
    from droplet.store.metadata import Metadata

    ids = [f"{unique}-g{i}" for i in range(2)]
    settings = services.settings(worker_lease_ttl_s=3, status_interval_s=0.5)
    cluster = LocalCluster(settings, tmp_path)
    cluster.start_scheduler()
    for worker_id in ids:
        cluster.start_worker(worker_id, resources="gpu=1")
    try:
        cluster.wait_ready(2, timeout_s=30)
        with droplet.connect(settings=settings) as client:
            client.register(_pid, unique + "-f")
            assert client.register_dag(unique, [unique + "-f"], [],
                                       gpu_functions=[unique + "-f"]) == (True, None)
            with closing(open_kv(settings)) as kv:
                [pin] = [p for p in Metadata(kv, settings, Signer(None)).pins()
                         if p.dag_name == unique]
            holder = pin.worker_id
            other = next(w for w in ids if w != holder)
            futures = [client.call_dag(unique, {unique + "-f": [i]}) for i in range(6)]
            os.kill(_worker(settings, holder)["pid"], signal.SIGKILL)
            restarted = cluster.start_worker(holder)  # the same id, no tags
            futures += [client.call_dag(unique, {unique + "-f": [i]}) for i in range(6, 12)]
            outcomes = _outcomes(futures, 90)
        on_restarted = [o for o in outcomes if str(o).startswith(f"{holder}:{restarted.pid}:")]
        assert not on_restarted, f"gpu steps ran on the worker without gpu: {on_restarted}"
        after = outcomes[6:]
        assert all(str(o).startswith(other + ":") for o in after), \
            f"steps sent after the restart did not all run on {other}: {after}"
    finally:
        cluster.stop()
        purge_namespace(settings, ids)


def _slow_tripled(lib: Any, batch: list[tuple[int]]) -> list[int]:
    import time as t

    t.sleep(1.0)
    return [x * 3 for (x,) in batch]


def test_a_worker_paused_mid_batch_past_its_lease_leaves_every_call_its_result(
        services: Services, tmp_path: Path, unique: str) -> None:
    """SIGSTOP the worker running a batch, past its lease, then SIGCONT: the batch's calls
    (moved on as claims, run elsewhere) and those behind it all complete, none hangs."""
    ids = [f"{unique}-g{i}" for i in range(2)]
    settings = services.settings(worker_lease_ttl_s=3, status_interval_s=0.5)
    cluster = LocalCluster(settings, tmp_path)
    cluster.start_scheduler()
    for worker_id in ids:
        cluster.start_worker(worker_id, resources="gpu=1")
    stopped = None
    try:
        cluster.wait_ready(2, timeout_s=30)
        with droplet.connect(settings=settings) as client:
            f = client.register(_slow_tripled, unique, resources={"gpu": 1}, batching=True,
                                batch_size=4, batch_linger_ms=50)
            assert f(1).get(timeout=30) == 3
            futures = [f(i) for i in range(16)]
            client.batcher.flush()
            deadline = time.monotonic() + 20
            while not (busy := [w for w in ids if _worker(settings, w).get("queue_depth")]):
                assert time.monotonic() < deadline, "no worker took a batch"
                time.sleep(0.05)
            pid = _worker(settings, busy[0])["pid"]
            os.kill(pid, signal.SIGSTOP)
            stopped = pid
            time.sleep(8)  # lease 3 s: its claims and queue are moved on
            os.kill(pid, signal.SIGCONT)
            stopped = None
            outcomes = _outcomes(futures, 90)
        assert outcomes == [i * 3 for i in range(16)], f"lost, hung or failed: {outcomes}"
    finally:
        if stopped is not None:
            os.kill(stopped, signal.SIGCONT)
        cluster.stop()
        purge_namespace(settings, ids)


def test_a_call_cancelled_in_a_running_batch_is_cancelled_and_the_rest_complete(
        services: Services, tmp_path: Path, unique: str) -> None:
    gpu = f"{unique}-g"
    settings = services.settings(worker_lease_ttl_s=3, status_interval_s=0.5)
    cluster = LocalCluster(settings, tmp_path)
    cluster.start_scheduler()
    cluster.start_worker(gpu, resources="gpu=1")
    try:
        cluster.wait_ready(1, timeout_s=30)
        with droplet.connect(settings=settings) as client:
            f = client.register(_slow_tripled, unique, resources={"gpu": 1}, batching=True,
                                batch_size=8, batch_linger_ms=200)
            assert f(1).get(timeout=30) == 3
            futures = [f(i) for i in range(8)]
            client.batcher.flush()
            deadline = time.monotonic() + 20
            while not _worker(settings, gpu).get("queue_depth"):
                assert time.monotonic() < deadline, "the worker never took the batch"
                time.sleep(0.05)
            assert client.cancel(futures[3].call_id)
            outcomes = _outcomes(futures, 60)
        assert outcomes[3] == "CancelledError", outcomes
        assert [o for i, o in enumerate(outcomes) if i != 3] == \
            [i * 3 for i in range(8) if i != 3], outcomes
    finally:
        cluster.stop()
        purge_namespace(settings, [gpu])
