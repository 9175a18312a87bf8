"""Attack: a worker paused past its lease (SIGSTOP, a VM freeze, a long GC) holding
prefetched deliveries of its own queue.

The reaper drains only what is *ready* in the dead worker's queue, then deletes the queue
(scheduler/reaper.py:104-122). Deliveries the paused worker had been handed but not acked
(own_queue_prefetch is 64) are part of that queue: deleting it discards them, so when the
worker is then killed (or its connection times out) nothing comes back. The DAG call never
completes and never fails: its client waits until its own timeout.

README "The fleet heals itself": "Schedulers then ... move what was left in its queue ...
the DAG call completes"; deploy/README: "whatever it had not acked is redelivered".
"""

from __future__ import annotations

import itertools
from typing import Any

from droplet.proto import pb
from droplet.store.metadata import Metadata
from tests.unit.inprocess import Fleet


def first(lib: Any, x: int) -> int:
    return x + 1


def second(lib: Any, x: int) -> int:
    return x * 10


def test_a_worker_paused_past_its_lease_then_killed_loses_no_dag_step() -> None:
    fleet = Fleet()
    for w in ("w1", "w2"):
        fleet.start_worker(w)
    scheduler = fleet.start_scheduler()
    fleet.register("first", first)
    fleet.register("second", second)
    dag = pb.Dag(name="d", functions=["first", "second"])
    for a, b in itertools.pairwise(dag.functions):
        dag.connections.add(source=a, sink=b)
    fleet.pin(dag, {"first": "w1", "second": "w2"})

    call_id = fleet.call_dag("d", {"first": [1]})
    fleet.schedule()  # the scheduler sends first's trigger to w1
    fleet.step("w1")  # first runs; its trigger goes to w2's queue
    fleet.settle("w1")

    # w2 is handed the trigger (prefetch), and then freezes before running it.
    w2 = fleet.workers["w2"]
    in_hand = w2.conn.poll(0.05)
    assert in_hand and all(d.queue == fleet.names.worker("w2") for d in in_hand)

    # Its lease runs out; a scheduler reaps it: drains what is ready, deletes its queue.
    w2.service.membership.leave()
    reaper = scheduler.reconciler._reaper
    dead = reaper.dead_members()
    assert "w2" in dead
    reaper.reap("w2", dead["w2"])

    # The frozen process is then killed: what it held unacked goes back to ... nowhere.
    fleet.crash("w2")

    # The fleet heals: second's pin moves to a fresh worker w3.
    fleet.start_worker("w3")
    metadata = Metadata(fleet.kv, fleet.settings, fleet.signer)
    metadata.release_pin(pb.PinRecord(dag_name="d", function_name="second", worker_id="w2"))
    assert metadata.claim_pin("w3", "d", "second")
    fleet.workers["w3"].service.state.pinned = ("d", "second")
    dead = reaper.dead_members()  # the next reconciliation: w2 is listed still
    assert "w2" in dead, "its queue was kept, so it stays listed to be settled"
    reaper.reap("w2", dead["w2"])
    fleet.run_until_quiet()

    assert fleet.stored(call_id) == 20, "the DAG step w2 held unacked was lost with its queue"
