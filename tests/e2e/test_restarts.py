"""RabbitMQ and etcd restarting under load: everything reconnects and nothing is lost.

These restart a service, so they run where the test owns it: etcd is always a private one
here; RabbitMQ only in `local` mode, where `rabbitmqctl` can restart the broker the tests use.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import droplet
from droplet.cli.etcd_local import LocalEtcd
from tests.conftest import Services, purge_namespace, start_cluster
from tests.e2e.run_marks import count_runs, register_recording
from tests.private_rabbit import PrivateRabbit

pytestmark = [pytest.mark.e2e, pytest.mark.fault]


@pytest.fixture
def private_etcd(tmp_path: Any) -> Iterator[LocalEtcd]:
    etcd = LocalEtcd(tmp_path / "etcd-data").start()
    yield etcd
    etcd.stop()


def _survives(settings: Any, tmp_path: Any, calls: int, restart: Callable[[], None],
              what: str) -> None:
    """Submits `calls` calls, runs `restart` while they are in flight, and checks that every
    call completed correctly and the fleet is whole again; prints the figures."""
    cluster = start_cluster(settings, tmp_path, workers=2)
    name = f"u{uuid.uuid4().hex[:8]}"
    try:
        with droplet.connect(settings=settings) as c:
            register_recording(c, name)
            futures = [c.call(name, i) for i in range(calls)]
            time.sleep(0.3)
            down_at = time.monotonic()
            restart()
            results = [f.get(timeout=90) for f in futures]
            recovered_s = time.monotonic() - down_at
            assert results == [i * 3 for i in range(calls)]
            runs = count_runs(c, name)
            assert set(runs) == set(range(calls)), "every call ran"
            extra = sum(runs.values()) - calls
            # The fleet is whole again: new calls and new registrations work.
            assert c.call(name, 1000).get(timeout=30) == 3000
            c.register(lambda lib: "after", name + "-after")
            assert c.call(name + "-after").get(timeout=30) == "after"
        print(f"{what}: {calls} calls in flight, {calls} completed, {extra} re-runs, "
              f"all results {recovered_s:.1f}s after it began")
    finally:
        cluster.stop()
        purge_namespace(settings, cluster.worker_ids())


def test_etcd_restart_with_calls_in_flight(
    services: Services, private_etcd: LocalEtcd, tmp_path: Any
) -> None:
    settings = services.settings(worker_lease_ttl_s=3).with_(
        etcd_endpoints=(private_etcd.endpoint,)
    )

    def restart() -> None:
        private_etcd.kill()
        time.sleep(3)
        private_etcd.start()

    _survives(settings, tmp_path, 100, restart, "etcd down for 3 s")


@pytest.mark.skipif(shutil.which("rabbitmq-server") is None, reason="needs rabbitmq-server")
def test_rabbitmq_restart_with_calls_in_flight(services: Services, tmp_path: Any) -> None:
    """On a node of its own: the machine's broker is shared with other test runs."""
    rabbit = PrivateRabbit(tmp_path / "rabbit", label="restart").start()
    try:
        def restart() -> None:
            rabbit.ctl("stop_app")
            rabbit.ctl("start_app")

        settings = services.settings(worker_lease_ttl_s=3).with_(broker_url=rabbit.url)
        _survives(settings, tmp_path, 200, restart, "RabbitMQ restart")
    finally:
        rabbit.stop()
