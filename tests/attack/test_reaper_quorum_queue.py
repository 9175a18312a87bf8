"""Attack (RabbitMQ, queue_type quorum, both transports): the reaper's delete of a dead
worker's queue "only if empty" (ae9ff83, scheduler/reaper.py `_drain`).

Found: RabbitMQ's quorum queues do not implement queue.delete's if-empty flag. The broker
answers any such delete, of an empty queue too, by closing the whole connection (540
NOT_IMPLEMENTED), not the channel. So under queue_type quorum the reaper's delete raised a
BrokerError on every pass: the dead worker's queue and inbox were never deleted, its fleet
entry stayed for ever, and every reconcile pass (2 s) opened a connection, drained, and had it
closed by the broker, with a warning each time (the worker queue's x-expires never ran out
either: the reaper's gets keep it in use). Under quorum the reaper now checks that the
queue is empty (and has no consumer) right after its last drain, and then deletes it plainly.
This is the same short window the plain delete had before ae9ff83, but only under quorum.
Run: .venv/bin/python -m pytest -q tests/attack/test_reaper_quorum_queue.py
"""

from __future__ import annotations

import pytest

from droplet.broker_config.names import QueueNames
from droplet.broker_config.topology import shared_topology, worker_topology
from droplet.runtime import broker_factory
from droplet.scheduler import reaper as reaper_module
from droplet.scheduler.reaper import Reaper
from droplet.scheduler.state import SchedulerState
from droplet.store.keys import StoreKeys
from droplet.store.memory import MemoryKV
from tests.broker_transports import transports
from tests.conftest import Services

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]


@transports
def test_a_dead_workers_quorum_queue_is_drained_and_deleted(
        services: Services, transport: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reaper_module, "_SETTLE_PAUSE_S", 0.0)
    settings = services.settings(queue_type="quorum", broker_transport=transport)
    names = QueueNames.of(settings)
    assert names.quorum
    connect = broker_factory(settings, "reaper-quorum")
    conn = connect()
    queue, inbox = names.worker("w1"), names.inbox("w1")
    try:
        conn.declare(shared_topology(names))
        conn.declare(worker_topology(names, "w1"))
        confirmed: list[bool] = []
        conn.publish(queue, b"left behind", on_confirm=confirmed.append)
        for _ in range(100):
            conn.poll(0.02)
            if confirmed:
                break
        assert confirmed == [True]
        kv = MemoryKV()
        keys = StoreKeys(settings.etcd_prefix)
        kv.put(keys.fleet_member("w1"), b"entry")
        reaper = Reaper(connect, names, SchedulerState(names, "s1"), kv, keys, lambda: None)
        assert reaper.dead_members() == {"w1": b"entry"}

        assert reaper.reap("w1", b"entry") == 1, "the message left behind is moved"
        assert conn.queue_info(queue) is None, "the dead worker's queue is deleted"
        assert conn.queue_info(inbox) is None, "and its inbox"
        assert reaper.dead_members() == {}, "its fleet entry is gone"
        moved = conn.get(names.calls)
        assert moved is not None and moved.body == b"left behind"
        conn.ack(moved.tag)
    finally:
        for name in (queue, inbox, *(q.name for q in shared_topology(names).queues)):
            if conn.is_open:
                conn.delete_queue(name)
        conn.close()
