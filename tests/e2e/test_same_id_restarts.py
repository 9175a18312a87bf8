"""Processes killed and restarted the way their supervisors do it: a worker killed mid-step
and started again at once under the same id (systemd's Restart=, inside the lease), and a
scheduler killed while it waits on pin replies during register_dag."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import droplet
from droplet.cli.cluster import LocalCluster
from droplet.cli.status import collect
from tests.conftest import Services, purge_namespace

pytestmark = [pytest.mark.e2e, pytest.mark.fault]


def _cluster(services: Services, tmp_path: Path, ids: list[str],
             **overrides: Any) -> LocalCluster:
    settings = services.settings(worker_lease_ttl_s=3, status_interval_s=0.5, **overrides)
    cluster = LocalCluster(settings, tmp_path)
    cluster.start_scheduler()
    for worker_id in ids:
        cluster.start_worker(worker_id)
    cluster.wait_ready(len(ids), timeout_s=30)
    return cluster


def _wait(condition: Any, what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen in {timeout_s}s"
        time.sleep(0.05)


def test_a_worker_killed_mid_step_and_restarted_under_its_id_loses_nothing(
    services: Services, tmp_path: Path, unique: str
) -> None:
    ids = [f"{unique}-w{i}" for i in range(3)]
    cluster = _cluster(services, tmp_path, ids)
    try:
        with droplet.connect(settings=cluster.settings) as c:
            c.register(lambda lib, x: x + 1, unique + "-a")

            def slow(lib: Any, key: str, x: int) -> int:
                import time as t

                lib.put(key, lib.getid())
                t.sleep(3)
                return x * 10

            c.register(slow, unique + "-slow")
            dag = unique + "-dag"
            assert c.register_dag(dag, [unique + "-a", unique + "-slow"],
                                  [(unique + "-a", unique + "-slow")]) == (True, None)
            started = unique + "-started"
            future = c.call_dag(dag, {unique + "-a": [0], unique + "-slow": [started]})
            _wait(lambda: c.get_object(started) is not None, "the slow step starting")
            holder = c.get_object(started)
            status = {w["id"]: w for w in collect(cluster.settings)["workers"]}[holder]
            os.kill(status["pid"], signal.SIGKILL)
            cluster.start_worker(holder)  # at once, inside the lease: as systemd would
            assert future.get(timeout=60) == 10, "the call completed on the restarted worker"
            assert c.call_dag(dag, {unique + "-a": [4], unique + "-slow": [started]},
                              direct_response=True, timeout=30) == 50
    finally:
        cluster.stop()
        purge_namespace(cluster.settings, ids)


def test_a_scheduler_killed_during_register_dag_leaves_one_answer_and_a_whole_dag(
    services: Services, tmp_path: Path, unique: str
) -> None:
    ids = [f"{unique}-w{i}" for i in range(2)]
    cluster = _cluster(services, tmp_path, ids, pin_timeout_s=15)
    try:
        with droplet.connect(settings=cluster.settings) as c:
            busy = c.register(lambda lib, s: __import__("time").sleep(s), unique + "-busy")
            c.register(lambda lib, x: x * 2, unique + "-f")
            hold = [busy(4) for _ in ids]  # every worker busy: pin requests wait
            time.sleep(0.5)
            answer: list[Any] = []
            thread = threading.Thread(target=lambda: answer.append(
                c.register_dag(unique + "-dag", [unique + "-f"], [])))
            thread.start()
            time.sleep(1.0)  # the scheduler is waiting on a pin reply
            os.kill(cluster.schedulers[0].pid, signal.SIGKILL)
            cluster.start_scheduler()
            thread.join(timeout=60)
            assert answer == [(True, None)], "one answer, and not DAG_ALREADY_EXISTS"
            for future in hold:
                future.get(timeout=30)
            time.sleep(cluster.settings.worker_lease_ttl_s + 2)  # the dead one's lease ran out
            record = c.metadata.get_dag(unique + "-dag")
            assert record is not None and record.ready, "the DAG did not vanish afterwards"
            assert c.call_dag(unique + "-dag", {unique + "-f": [21]}, direct_response=True,
                              timeout=30) == 42
    finally:
        cluster.stop()
        purge_namespace(cluster.settings, ids)
