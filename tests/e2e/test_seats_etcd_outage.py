"""Seats at the shared queue (worker/seats.py) through an etcd outage: 6 workers sharing one
seat, etcd killed for 3 s with calls in flight; every call completes, one worker consumes
the shared queue afterwards."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

import droplet
from droplet.cli.cluster import purge_namespace
from droplet.cli.etcd_local import LocalEtcd
from tests.conftest import Services, start_cluster
from tests.e2e.test_seats import _consumers, _until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]


@pytest.fixture
def private_etcd(tmp_path: Any) -> Iterator[LocalEtcd]:
    etcd = LocalEtcd(tmp_path / "etcd-data").start()
    yield etcd
    etcd.stop()


def _triple(lib: Any, x: int) -> int:
    import time as t

    t.sleep(0.01)
    return x * 3


def test_an_etcd_outage_with_one_seat_loses_no_call(
        services: Services, private_etcd: LocalEtcd, tmp_path: Any, unique: str) -> None:
    settings = services.settings(worker_lease_ttl_s=3, run_slots=1).with_(
        etcd_endpoints=(private_etcd.endpoint,))
    cluster = start_cluster(settings, tmp_path, workers=6)
    try:
        with droplet.connect(settings=settings) as client:
            client.register(_triple, unique)
            futures = [client.call(unique, i) for i in range(150)]
            time.sleep(0.2)
            private_etcd.kill()
            time.sleep(3)
            private_etcd.start()
            start = time.monotonic()
            results = [f.get(timeout=60) for f in futures]
            print(f"etcd down 3 s, 6 workers, 1 seat: 150 calls done "
                  f"{time.monotonic() - start:.1f} s after it came back")
            assert results == [i * 3 for i in range(150)]
            assert client.call(unique, 7).get(timeout=30) == 21
            assert _until(lambda: _consumers(settings) == 1, 10.0), "one worker at the queue"
    finally:
        cluster.stop()
        purge_namespace(settings, cluster.worker_ids())
