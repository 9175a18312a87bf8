"""Keeping the fleet whole: moving pins off dead workers, and settling what a dead worker
left behind in its queue.

Reconciliation is level-triggered and idempotent, so any number of schedulers can run it at
once: pins and DAG names change only through etcd transactions, and a queue is drained by
whichever scheduler claims it first.

What a dead worker leaves behind:
  * plain calls placed on it (for locality) are placed again, on live workers;
  * DAG schedules and triggers fail their call with WORKER_LOST: the partial state of those
    schedules on other workers cannot be trusted, and the caller can simply call again once
    the DAG is pinned anew (which happens within seconds). Nothing is left hanging.
"""

from __future__ import annotations

import random

from droplet.outbox import Outbox, call_ref, fail_call
from droplet.proto import pb
from droplet.scheduler import calls
from droplet.scheduler.dags import PinPort, is_alive_creator, pin_function, remove_dag
from droplet.scheduler.state import SchedulerState
from droplet.store.metadata import Metadata


def stale_pins(state: SchedulerState) -> list[pb.PinRecord]:
    """Pins held by workers that are no longer alive."""
    return [pin for worker, pin in state.pins.items() if worker not in state.workers]


def unplaced_functions(state: SchedulerState) -> list[tuple[str, str]]:
    """(dag, function) of ready DAGs that no live worker holds."""
    missing = []
    for name, record in sorted(state.dags.items()):
        if record.ready:
            placed = state.dag_locations(name)
            missing += [(name, f) for f in record.dag.functions if f not in placed]
    return missing


def heal_pins(
    state: SchedulerState, metadata: Metadata, pins: PinPort, rng: random.Random | None = None
) -> list[str]:
    """Releases pins of dead workers, pins unplaced functions on free workers, and clears
    DAGs half-created by a scheduler that died. Returns what it did, for the log."""
    rng = rng or random.Random()
    done = []
    for pin in stale_pins(state):
        if metadata.release_pin(pin):
            done.append(f"released {pin.dag_name}/{pin.function_name} of dead {pin.worker_id}")
        state.pins.pop(pin.worker_id, None)
    tried: set[str] = set()
    for dag_name, function in unplaced_functions(state):
        pinned = pin_function(dag_name, function, state, metadata, pins, tried, rng)
        if pinned is not None:
            done.append(f"pinned {dag_name}/{function} on {pinned.worker_id}")
    for name, dag_record in list(state.dags.items()):
        if not dag_record.ready and not is_alive_creator(dag_record, state):
            remove_dag(name, state, metadata, pins)
            done.append(f"cleared DAG {name} left half-created by {dag_record.creator}")
    return done


def handle_orphan(
    message: pb.Message, state: SchedulerState, out: Outbox, failed: set[str], worker_id: str
) -> None:
    """Settles one message found in a dead worker's queue (see the module docstring)."""
    kind = message.WhichOneof("kind")
    reason = f"worker {worker_id} died while holding part of this call"
    if kind == "call":
        calls.call_function(message.call, None, state, out)
    elif kind == "schedule":
        _fail_once(out, call_ref(message.schedule), reason, failed)
    elif kind == "trigger" and message.trigger.call.call_id:
        _fail_once(out, message.trigger.call, reason, failed)


def _fail_once(out: Outbox, ref: pb.CallRef, reason: str, failed: set[str]) -> None:
    if ref.call_id not in failed:
        failed.add(ref.call_id)
        fail_call(out, ref, pb.WORKER_LOST, reason)
