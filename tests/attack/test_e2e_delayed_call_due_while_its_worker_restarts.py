"""Attack (end to end, real RabbitMQ and etcd): delayed calls come due while the only worker
that can run them is being restarted (killed, its lease run out, started again a few seconds
later).

The scheduler placed each call as it came due, found no live worker, and answered it
NO_RESOURCES for good (scheduler/delays.py, then calls.call_function), although it had been
accepted while the worker was up and a worker was back seconds later. Seen first with a whole
fleet killed and restarted under the same ids: 37 of 50 calls due just after failed.

README, Delayed calls: "The queues are durable and the messages persistent, so a delayed call
survives restarts of RabbitMQ, schedulers and workers."
Run: DROPLET_TEST_SERVICES=local .venv/bin/python -m pytest -q \
    tests/attack/test_e2e_delayed_call_due_while_its_worker_restarts.py
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import droplet
from droplet.cli.cluster import LocalCluster
from tests.conftest import Services, purge_namespace

pytestmark = [pytest.mark.e2e, pytest.mark.fault]


@pytest.mark.parametrize("tagged", [False, True], ids=["plain", "tagged"])
def test_delayed_calls_due_while_their_worker_restarts_run_once_it_is_back(
    services: Services, tmp_path: Path, unique: str, tagged: bool
) -> None:
    worker_id = f"{unique}-w"
    settings = services.settings(worker_lease_ttl_s=3, status_interval_s=0.5)
    cluster = LocalCluster(settings, tmp_path, env={"TMPDIR": str(tmp_path)})
    cluster.start_scheduler()
    tags = "gpu=1" if tagged else None
    cluster.start_worker(worker_id, resources=tags)
    cluster.wait_ready(1, timeout_s=30)
    try:
        with droplet.connect(settings=settings) as c:
            incr = c.register(lambda lib, x: x + 1, unique,
                              resources={"gpu": 1} if tagged else None)
            assert incr(0).get(timeout=20) == 1
            futures = [incr.call_later(settings.worker_lease_ttl_s + 3 + 0.1 * i, i)
                       for i in range(10)]
            cluster.workers[0].kill()
            cluster.workers[0].wait()
            time.sleep(settings.worker_lease_ttl_s + 5)  # the calls come due meanwhile
            cluster.start_worker(worker_id, resources=tags)

            outcomes = []
            for i, future in enumerate(futures):
                try:
                    outcomes.append(future.get(timeout=60) == i + 1)
                except droplet.DropletError as exc:
                    outcomes.append(repr(exc))
            failed = [o for o in outcomes if o is not True]
            assert not failed, (f"{len(failed)} of 10 delayed calls failed although their "
                                f"worker was back seconds later: {failed[0]}")
    finally:
        cluster.stop()
        purge_namespace(settings, [worker_id])
