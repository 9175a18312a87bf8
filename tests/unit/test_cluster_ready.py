"""A local cluster is ready only when its schedulers see the workers etcd lists: a scheduler
learns of workers through its watch, a moment after etcd lists them, and a call it takes
before then is answered NO_RESOURCES. Over MemoryKV and the stub broker: no services."""

from __future__ import annotations

import os
import socket

import pytest

from droplet.broker.stub import StubBroker
from droplet.cli import cluster as cluster_module
from droplet.cli.cluster import LocalCluster
from droplet.errors import DropletError
from droplet.proto import pb
from droplet.scheduler.service import SchedulerService
from droplet.settings import Settings
from droplet.store.keys import StoreKeys
from droplet.store.memory import MemoryKV
from tests.unit.helpers import wait_for, workers_seen

pytestmark = pytest.mark.timeout(30)

SETTINGS = Settings(namespace="ready", worker_lease_ttl_s=30, status_interval_s=60)
KEYS = StoreKeys(SETTINGS.etcd_prefix)


class _Child:
    """A child process that is running, as far as wait_ready asks (pid and poll)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def poll(self) -> int | None:
        return None


def _put_worker(kv: MemoryKV, worker_id: str) -> None:
    kv.put(KEYS.worker(worker_id), pb.WorkerStatus(id=worker_id).SerializeToString())


def _put_scheduler(kv: MemoryKV, pid: int, workers_seen: int) -> None:
    status = pb.SchedulerStatus(id=f"s-{pid}", host=socket.gethostname(), pid=pid,
                                workers_seen=workers_seen)
    kv.put(KEYS.scheduler(status.id), status.SerializeToString())


@pytest.fixture
def kv(monkeypatch: pytest.MonkeyPatch) -> MemoryKV:
    store = MemoryKV()
    monkeypatch.setattr(cluster_module, "open_kv", lambda settings: store)
    return store


def _cluster(scheduler_pids: list[int], workers: int) -> LocalCluster:
    cluster = LocalCluster(SETTINGS)
    cluster.schedulers.extend(_Child(pid) for pid in scheduler_pids)  # type: ignore[misc]
    cluster.workers.extend(_Child(90000 + i) for i in range(workers))  # type: ignore[misc]
    return cluster


def test_not_ready_while_a_scheduler_does_not_see_the_listed_workers(kv: MemoryKV) -> None:
    _put_worker(kv, "w1")
    _put_worker(kv, "w2")
    _put_scheduler(kv, 4242, workers_seen=2)
    _put_scheduler(kv, 4343, workers_seen=1)  # its watch has not brought w2 yet
    cluster = _cluster([4242, 4343], workers=2)

    with pytest.raises(DropletError, match="not ready"):
        cluster.wait_ready(2, timeout_s=0.3)

    _put_scheduler(kv, 4343, workers_seen=2)
    cluster.wait_ready(2, timeout_s=5)


def test_not_ready_before_each_scheduler_of_ours_is_listed(kv: MemoryKV) -> None:
    _put_worker(kv, "w1")
    _put_scheduler(kv, 5151, workers_seen=1)  # someone else's scheduler: not one of ours
    cluster = _cluster([4242], workers=1)

    with pytest.raises(DropletError, match="not ready"):
        cluster.wait_ready(1, timeout_s=0.3)

    _put_scheduler(kv, 4242, workers_seen=1)
    cluster.wait_ready(1, timeout_s=5)


def test_a_foreign_scheduler_blind_to_the_workers_is_not_waited_on(kv: MemoryKV) -> None:
    _put_worker(kv, "w1")
    _put_scheduler(kv, 4242, workers_seen=1)
    _put_scheduler(kv, 5151, workers_seen=0)  # an old record of another run
    _cluster([4242], workers=1).wait_ready(1, timeout_s=5)



def test_a_scheduler_publishes_how_many_workers_it_sees_when_that_changes() -> None:
    """Well before its next keepalive round (10 s at this lease): a cluster's start-up
    would otherwise wait that long on every scheduler."""
    kv = MemoryKV()
    scheduler = SchedulerService(SETTINGS, kv, StubBroker().connect, "sched")
    scheduler.start()
    try:
        def seen() -> int | None:
            return workers_seen(kv, KEYS, "sched")

        assert seen() == 0
        assert pb.SchedulerStatus.FromString(kv.get(KEYS.scheduler("sched")) or b"").pid \
            == os.getpid()
        _put_worker(kv, "w1")
        _put_worker(kv, "w2")
        wait_for(lambda: seen() == 2, 3, "the record says it sees both workers")
        _put_worker(kv, "w2")  # a status update of a worker it knows: no new count
        kv.delete(KEYS.worker("w1"))
        wait_for(lambda: seen() == 1, 3, "the record says one worker left")
    finally:
        scheduler.stop()
