"""Attack: the two last triggers of a fan-in handled at the same time by two workers.

A trigger that does not complete its join is stored as a partial with a plain Put, guarded
by nothing (worker/dags.py:61-71: read the join, then `out.store(Commit(records=...))`).
Two workers that read the join before either stored its partial both store one, and neither
runs the step: the join is complete in etcd but nobody will ever look at it again, and the
call hangs. Two workers handle triggers of one step when the step's pin moved while the old
worker was still running (its lease lapsed: SIGSTOP/SIGCONT, etcd cut off from it for
worker_lease_ttl_s): triggers sent on the old schedule reach the old worker, rerouted ones the
new worker (scheduler/dags.py:254-271).

README "DAG calls survive their workers ... a fan-in counts each trigger once".
"""

from __future__ import annotations

from typing import Any

from droplet.errors import StoreError
from droplet.outbox import Outbox
from droplet.proto import pb
from droplet.store import serializer
from droplet.worker import dags
from tests.unit.inprocess import Fleet


def add(lib: Any, x: int, y: int) -> int:
    return x + y


def test_two_workers_completing_one_join_at_once_run_the_step() -> None:
    fleet = Fleet()
    old, new = fleet.start_worker("old"), fleet.start_worker("new")
    fleet.register("add", add)
    dag = pb.Dag(name="j", functions=["x", "y", "add"])
    dag.connections.add(source="x", sink="add")
    dag.connections.add(source="y", sink="add")
    schedule = pb.DagSchedule(id="s1", call_id="call-j", response_address=fleet.reply_to)
    schedule.dag.CopyFrom(dag)
    schedule.locations.update({"x": "old", "y": "old", "add": "old"})

    def trigger(source: str, value: int) -> pb.DagTrigger:
        t = pb.DagTrigger(id="s1", source=source, target_function="add")
        t.schedule.CopyFrom(schedule)
        serializer.dump(value, t.result)
        return t

    # x's trigger reaches the old worker of `add`, y's (rerouted) the new one; each reads
    # the join before the other stored its partial.
    from_x, from_y = Outbox(), Outbox()
    dags.on_trigger(trigger("x", 40), old.service.state, from_x)
    dags.on_trigger(trigger("y", 2), new.service.state, from_y)
    old.cycle.commit(from_x)
    try:
        new.cycle.commit(from_y)
    except StoreError:  # its commit sees the other partial landed: the cycle requeues it,
        again = Outbox()  # and the redelivery reads the join afresh
        dags.on_trigger(trigger("y", 2), new.service.state, again)
        new.cycle.commit(again)
    fleet.run_until_quiet()

    parts, _ = fleet.kv.get_prefix(old.service.keys.join("s1", "add"))
    assert fleet.stored("call-j") == 42, (
        f"the step never ran; the join holds {sorted(k.rsplit('/', 1)[-1] for k in parts)}")
