"""Attack (end to end, real RabbitMQ and etcd): SIGSTOP the worker of a DAG step while triggers
wait in its prefetch, past its lease; then SIGKILL it.

The reaper drains what is ready in its queue and deletes the queue (scheduler/reaper.py:
104-122). RabbitMQ discards the deliveries the stopped consumer held unacked with the queue, so
when the process is killed nothing comes back: the DAG calls whose step was in hand never
complete and never fail. (In-process: test_paused_worker_queue.py.)

README "The fleet heals itself ... DAG steps go on to the step's new worker: the DAG call
completes"; chaos history: workers "paused past their lease".
Run: .venv/bin/python -m pytest -q tests/attack/test_e2e_sigstop_worker.py
"""

from __future__ import annotations

import os
import signal
import time
from contextlib import closing
from pathlib import Path

import pytest

import droplet
from droplet.cli.cluster import LocalCluster
from droplet.cli.status import collect
from droplet.runtime import open_kv
from droplet.signing import Signer
from droplet.store.metadata import Metadata
from tests.conftest import Services, purge_namespace

pytestmark = [pytest.mark.e2e, pytest.mark.fault]


def test_calls_whose_step_a_paused_worker_held_complete_after_it_is_killed(
    services: Services, tmp_path: Path, unique: str
) -> None:
    ids = [f"{unique}-w{i}" for i in range(3)]
    settings = services.settings(worker_lease_ttl_s=3, status_interval_s=0.5)
    cluster = LocalCluster(settings, tmp_path)
    cluster.start_scheduler()
    for worker_id in ids:
        cluster.start_worker(worker_id)
    cluster.wait_ready(3, timeout_s=30)
    stopped = None
    try:
        with droplet.connect(settings=settings) as c:
            a, b = unique + "-a", unique + "-b"
            c.register(lambda lib, x: x + 1, a)
            c.register(lambda lib, x: x * 10, b)
            assert c.register_dag(unique, [a, b], [(a, b)]) == (True, None)
            assert c.call_dag(unique, {a: [0]}, direct_response=True, timeout=20) == 10
            with closing(open_kv(settings)) as kv:
                pins = Metadata(kv, settings, Signer(None)).pins()
            holder = next(p.worker_id for p in pins if p.function_name == b)
            pid = {w["id"]: w for w in collect(settings)["workers"]}[holder]["pid"]

            os.kill(pid, signal.SIGSTOP)
            stopped = pid
            futures = [c.call_dag(unique, {a: [i]}) for i in range(5)]
            time.sleep(10)  # lease 3 s; a scheduler reaps it within a couple of seconds
            os.kill(pid, signal.SIGKILL)
            stopped = None
            failed = []
            deadline = time.monotonic() + 40
            for i, future in enumerate(futures):
                try:
                    left = max(0.5, deadline - time.monotonic())
                    assert future.get(timeout=left) == (i + 1) * 10
                except droplet.DropletTimeoutError:
                    failed.append(i)
            assert not failed, f"{len(failed)} of 5 DAG calls never completed nor failed"
    finally:
        if stopped is not None:
            os.kill(stopped, signal.SIGKILL)
        cluster.stop()
        purge_namespace(settings, ids)
