"""scheduler/fleet.py + service.py: a scheduler's record says how many workers it sees
(workers_seen), re-written soon after that changes; LocalCluster.wait_ready waits on it.
Workers can also enter the view through FleetView.refresh() (a DAG registered while the watch
lags a worker that just joined): the watch's event that follows then finds the worker known
and tells nobody, so the record said the old count until the next keepalive round (ttl/3: 10 s
here, 3.3 s by default), and a cluster's start-up waited that long."""

from __future__ import annotations

from typing import Any

import pytest

from droplet.broker.stub import StubBroker
from droplet.proto import pb
from droplet.scheduler.service import SchedulerService
from droplet.settings import Settings
from droplet.store.keys import StoreKeys
from droplet.store.memory import MemoryKV
from tests.unit.helpers import wait_for, workers_seen

pytestmark = pytest.mark.timeout(30)

SETTINGS = Settings(namespace="refresh", worker_lease_ttl_s=30, status_interval_s=60)
KEYS = StoreKeys(SETTINGS.etcd_prefix)


class LaggingKV(MemoryKV):
    """A MemoryKV whose watches can be held back (a watch that lags the writes)."""

    def __init__(self) -> None:
        super().__init__()
        self.lagging = False
        self._held: list[Any] = []

    def _notify(self, events: list[Any]) -> None:
        if self.lagging:
            self._held.append(events)
        else:
            super()._notify(events)

    def catch_up(self) -> None:
        self.lagging = False
        for events in self._held:
            super()._notify(events)
        self._held.clear()



def test_workers_found_by_a_refresh_are_counted_in_the_record_soon() -> None:
    kv = LaggingKV()
    scheduler = SchedulerService(SETTINGS, kv, StubBroker().connect, "sched")
    scheduler.start()
    try:
        def seen() -> int | None:
            return workers_seen(kv, KEYS, "sched")

        assert seen() == 0
        kv.lagging = True
        for worker in ("w1", "w2"):
            kv.put(KEYS.worker(worker), pb.WorkerStatus(id=worker).SerializeToString())
        scheduler.fleet.refresh()  # as a DAG's registration does when workers seem too few
        assert len(scheduler.state.workers) == 2
        kv.catch_up()
        wait_for(lambda: seen() == 2, 3, "the record still says it sees no worker")
    finally:
        scheduler.stop()
