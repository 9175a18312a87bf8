"""What a scheduler adds to a DAG call's schedule for chains and speculative functions.

* Chains (call_dag(..., continuation=...)): the DAG calls still to make travel in the schedule,
  and a call made with the previous DAG's result (`chained_input`) passes it to each source
  function of its DAG as the last argument, after that function's own arguments.
* Speculative functions (droplet/speculation.py): each gets up to `copies - 1` extra workers
  besides its pinned one, distinct live workers taken unpinned first (they have nothing else
  to run), then the others, at random within each group; workers that report themselves
  overloaded (backoff) are left out, so a call may get fewer copies than asked.
"""

from __future__ import annotations

import random

from droplet.graph import sources
from droplet.proto import pb
from droplet.scheduler.state import SchedulerState


def chain_error(dag_call: pb.DagCall) -> str | None:
    if dag_call.continuations and dag_call.consistency == pb.MULTI:
        return "a MULTI DAG call cannot have a continuation (its writes commit at its end)"
    return None


def extend_schedule(dag_call: pb.DagCall, schedule: pb.DagSchedule, state: SchedulerState,
                    rng: random.Random | None = None) -> None:
    schedule.continuations.extend(dag_call.continuations)
    if dag_call.HasField("chained_input"):
        for source in sources(schedule.dag):
            schedule.arguments[source].values.append(dag_call.chained_input)
    place_copies(schedule, state, rng or random.Random())


def place_copies(schedule: pb.DagSchedule, state: SchedulerState, rng: random.Random) -> None:
    for spec in schedule.dag.speculative:
        pinned = schedule.locations[spec.function]
        others = [w for w in sorted(state.workers) if w != pinned and w not in state.backoff]
        free = [w for w in others if w not in state.pins]
        busy = [w for w in others if w in state.pins]
        rng.shuffle(free)
        rng.shuffle(busy)
        chosen = (free + busy)[:max(0, spec.copies - 1)]
        if chosen:
            schedule.copy_places[spec.function].workers.extend(chosen)
