"""Attack: a DAG call older than a minute whose step's worker dies fails at once.

`reroute` measures the 60 s it waits for a live worker from the call's start
(scheduler/dags.py:273-278, `schedule.start_time`), not from the moment the step lost its
worker. A call whose earlier steps took more than a minute fails with WORKER_LOST the first
time one of its triggers finds its step unplaced, although the fleet moves the pin within
seconds (and retries every second for this purpose).

README "When no live worker can take a step for 60 s, the call fails with WORKER_LOST."
"""

from __future__ import annotations

import time

from droplet.outbox import Outbox
from droplet.proto import pb
from droplet.scheduler import dags
from droplet.scheduler.state import SchedulerState
from tests.unit.inprocess import Fleet


def test_a_trigger_of_an_old_call_waits_for_its_step_to_get_a_worker() -> None:
    fleet = Fleet()
    dag = pb.Dag(name="d", functions=["slow", "next"])
    dag.connections.add(source="slow", sink="next")
    state = SchedulerState(fleet.names)
    state.dags["d"] = pb.DagRecord(dag=dag, ready=True)
    state.workers["w1"] = pb.WorkerStatus(id="w1")
    state.pins["w1"] = pb.PinRecord(dag_name="d", function_name="slow", worker_id="w1")
    # `next`'s worker died a moment ago; its pin has not moved yet.
    schedule = pb.DagSchedule(id="s", call_id="c", start_time=time.time() - 90,
                              response_address="stub.reply.1")  # `slow` ran 90 s
    schedule.dag.CopyFrom(dag)
    trigger = pb.DagTrigger(id="s", source="slow", target_function="next")
    trigger.schedule.CopyFrom(schedule)
    out = Outbox()
    dags.reroute(trigger, state, out)

    failed = [o.commit.outcome for o in out.durable if o.commit.outcome is not None]
    assert not failed, (
        "the call failed with WORKER_LOST the moment its step lost its worker: "
        f"{[pb.ErrorInfo.FromString(f.value.body).message for f in failed]}")
    assert out.messages_to(fleet.names.retry(dags.REROUTE_DELAY_MS)), "tried again later"
