"""Keeping the fleet's pins whole: moving pins off dead workers and clearing orphans.

Reconciliation is level-triggered and idempotent, so any number of schedulers can run it at
once: pins, placements and DAG names change only through etcd transactions (a function is
placed on one worker only, whoever tries first), and an orphan is confirmed in etcd before
anything is released.

* a pin held by a dead worker is released, and every function of a ready DAG that no live
  worker holds is pinned on a free one (DAG steps in flight follow it: see reaper.py);
* a pin whose DAG no longer exists (deleted, or half-made by a scheduler that died: such a DAG
  vanishes with its creator's lease) is unpinned and released.
"""

from __future__ import annotations

import random

from droplet.proto import pb
from droplet.scheduler.dags import PinPort, pin_function
from droplet.scheduler.state import SchedulerState
from droplet.scheduler.tagged import colocated_hosts, function_needs
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
    """Releases pins of dead workers and of DAGs that are gone, and pins unplaced functions
    on free workers. Returns what it did, for the log."""
    rng = rng or random.Random()
    done = []
    for pin in stale_pins(state):
        if metadata.release_pin(pin):
            done.append(f"released {pin.dag_name}/{pin.function_name} of dead {pin.worker_id}")
        state.pins.pop(pin.worker_id, None)
    for worker, pin in list(state.pins.items()):
        if pin.dag_name not in state.dags and metadata.get_dag(pin.dag_name) is None:
            pins.unpin(worker, pin.dag_name, pin.function_name)
            if metadata.release_pin(pin):
                done.append(f"released {pin.dag_name}/{pin.function_name} of a DAG that is gone")
            state.pins.pop(worker, None)
    tried: set[str] = set()
    for dag_name, function in unplaced_functions(state):
        dag = state.dags[dag_name].dag
        near = colocated_hosts(state, dag, function, state.dag_locations(dag_name))
        pinned = pin_function(dag_name, function, state, metadata, pins, tried, rng,
                              function_needs(dag, function, metadata), near)
        if pinned is not None:
            done.append(f"pinned {dag_name}/{function} on {pinned.worker_id}")
    return done
