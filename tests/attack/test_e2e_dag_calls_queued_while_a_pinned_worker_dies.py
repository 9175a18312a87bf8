"""Attack (end to end, real RabbitMQ and etcd): DAG calls wait in the scheduler's queue (the
scheduler was killed) while the worker pinned to one of their functions is killed too; the
scheduler comes back before a replacement worker does.

The scheduler answered each of them NO_RESOURCES ("no live worker holds functions [...]") the
moment it took them (scheduler/dags.py call_dag), although the fleet healed two seconds later:
calls sent while the whole DAG was healthy were lost to a transient fault. A whole fleet
killed and restarted under the same ids showed the same (the restarted scheduler took the
waiting calls before the pins were healed).

README, Guarantees, "DAG calls survive their workers ... When no live worker can take a step
for 60 s, the call fails with WORKER_LOST."
Run: DROPLET_TEST_SERVICES=local .venv/bin/python -m pytest -q \
    tests/attack/test_e2e_dag_calls_queued_while_a_pinned_worker_dies.py
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

import droplet
from droplet.cli.cluster import LocalCluster
from droplet.cli.status import collect
from tests.conftest import Services, purge_namespace

pytestmark = [pytest.mark.e2e, pytest.mark.fault]


def test_dag_calls_waiting_for_a_scheduler_survive_a_pinned_worker_replaced_later(
    services: Services, tmp_path: Path, unique: str
) -> None:
    ids = [f"{unique}-w{i}" for i in range(3)]
    settings = services.settings(worker_lease_ttl_s=3, status_interval_s=0.5)
    cluster = LocalCluster(settings, tmp_path, env={"TMPDIR": str(tmp_path)})
    cluster.start_scheduler()
    for worker_id in ids:
        cluster.start_worker(worker_id)
    cluster.wait_ready(3, timeout_s=30)
    try:
        with droplet.connect(settings=settings) as c:
            left, right, join = unique + "-l", unique + "-r", unique + "-j"
            c.register(lambda lib, x: x * 2, left)
            c.register(lambda lib, x: x + 7, right)
            c.register(lambda lib, x, y: x + y, join)
            # Two sources: every call of this DAG goes through a scheduler.
            assert c.register_dag(unique, [left, right, join],
                                  [(left, join), (right, join)]) == (True, None)
            assert c.call_dag(unique, {left: [1], right: [1]}).get(timeout=20) == 10

            cluster.schedulers[0].kill()
            cluster.schedulers[0].wait()
            futures = [c.call_dag(unique, {left: [i], right: [i]}) for i in range(10)]
            victim = next(w for w in collect(settings)["workers"]
                          if w["pinned"] == f"{unique}/{left}")
            os.kill(victim["pid"], signal.SIGKILL)
            time.sleep(settings.worker_lease_ttl_s + 2)  # its lease is gone
            cluster.replace_exited()  # the scheduler is back; the worker is not replaced
            time.sleep(2)
            ids.append(f"{unique}-new")
            cluster.start_worker(ids[-1])  # ... until two seconds later

            outcomes = []
            for i, future in enumerate(futures):
                try:
                    outcomes.append(future.get(timeout=60) == 3 * i + 7)
                except droplet.DropletError as exc:
                    outcomes.append(repr(exc))
            failed = [o for o in outcomes if o is not True]
            assert not failed, (f"{len(failed)} of 10 DAG calls sent before the worker died "
                                f"failed although the fleet healed: {failed[0]}")
    finally:
        cluster.stop()
        purge_namespace(settings, ids)
