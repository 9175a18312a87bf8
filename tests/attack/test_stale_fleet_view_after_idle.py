"""Attack (real scheduler and worker, real RabbitMQ and etcd): a client idles while the last
worker leaves, then calls again.

Found: since the look at the fleet moved to a thread of its own (a0b1386), the call that finds
the last look old goes out with it however old it is (minutes, for a client that idled): the
view said one worker alive, so the call went to the shared queue, where no worker would ever
take it, and waited for its whole timeout, where before it read etcd itself and was answered
NO_RESOURCES at once, as the README promises ("When no worker is alive a call is answered
NO_RESOURCES at once"). A stream of calls keeps the view fresh through the thread; only a
view older than a few recheck intervals (nobody called meanwhile) is now read again by the
call itself, as before.
Run: .venv/bin/python -m pytest -q tests/attack/test_stale_fleet_view_after_idle.py
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

import droplet
from droplet.cli.cluster import purge_namespace
from tests.conftest import Services, start_cluster

pytestmark = [pytest.mark.e2e, pytest.mark.fault]


@pytest.mark.timeout(120)
def test_an_idle_clients_call_after_the_last_worker_left_answers_no_resources(
        services: Services, tmp_path: Path) -> None:
    settings = services.settings(worker_lease_ttl_s=3)
    cluster = start_cluster(settings, tmp_path, workers=1)
    name = f"u{uuid.uuid4().hex[:8]}"
    try:
        with droplet.connect(settings=settings) as client:
            client.register(lambda lib, x: x + 1, name)
            assert client.call(name, 1).get(timeout=30) == 2
            worker = cluster.workers[0]
            worker.terminate()
            worker.wait(30)
            deadline = time.monotonic() + 20
            while client.kv.get_prefix(client.metadata.keys.workers)[0]:
                assert time.monotonic() < deadline, "the worker's record stayed"
                time.sleep(0.1)
            time.sleep(3.0)  # the client idles: its last look at the fleet is old
            started = time.monotonic()
            with pytest.raises(droplet.NoResourcesError):
                client.call(name, 2).get(timeout=15)
            assert time.monotonic() - started < 5, "answered at once, not after a timeout"
    finally:
        cluster.stop()
        purge_namespace(settings, cluster.worker_ids())
