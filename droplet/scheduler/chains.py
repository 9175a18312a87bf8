"""What a scheduler adds to a DAG call's schedule for chains and speculative functions.

* Chains (call_dag(..., continuation=...)): the DAG calls still to make travel in the schedule,
  and a call made with the previous DAG's result (`chained_input`) passes it to each source
  function of its DAG as the last argument, after that function's own arguments.
* Speculative functions (droplet/speculation.py): each gets up to `copies - 1` extra workers
  besides its pinned one: distinct live workers, taken unpinned first (they have nothing else
  to run), then pinned ones, then those that report themselves overloaded (a copy would
  wait behind their work), at random within each group; only workers with the tags the
  function needs (its DAG's resources, registered ones included) run a copy. With fewer
  live workers than copies asked, every live worker runs one.
"""

from __future__ import annotations

import random

from droplet import resources
from droplet.graph import sources
from droplet.proto import pb
from droplet.proto.envelope import SCHEDULE_ROOM_BYTES
from droplet.scheduler.state import SchedulerState


def oversized(dag_call: pb.DagCall, schedule: pb.DagSchedule, state: SchedulerState
              ) -> str | None:
    """Why a call's schedule is too large to send. The client checks what it sends against
    max_message_bytes, but the schedule carries more (the DAG, the locations) and, for a
    chained call, the previous DAG's result, once per source: every trigger and notice of the
    call carries it. Sent anyway, a broker with a max_message_size refuses every one of them
    by closing the session that sent it, and the call is scheduled again and again without
    ever being answered."""
    size = schedule.ByteSize()
    if size + SCHEDULE_ROOM_BYTES <= state.max_message_bytes:
        return None
    if not dag_call.HasField("chained_input"):
        return (f"the arguments of DAG {schedule.dag.name!r} make messages of {size} bytes, "
                f"over max_message_bytes ({state.max_message_bytes}) less "
                f"{SCHEDULE_ROOM_BYTES} bytes for the rest of each message: store large "
                "values with put_object() and pass a DropletReference to them instead")
    return (f"the previous DAG's result ({dag_call.chained_input.ByteSize()} bytes), passed to "
            f"each of the {len(sources(schedule.dag))} sources of DAG {schedule.dag.name!r}, "
            f"makes messages of {size} bytes, over max_message_bytes "
            f"({state.max_message_bytes}): have the previous DAG return a reference to a "
            "stored value (lib.put) instead")


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
        needs = resources.dag_function_needs(schedule.dag, spec.function)
        others = [w for w in sorted(state.workers) if w != pinned
                  and resources.satisfies(state.workers[w].resources, needs)]
        groups: list[list[str]] = [[], [], []]
        for worker in others:
            groups[2 if worker in state.backoff else 1 if worker in state.pins else 0].append(
                worker)
        for group in groups:
            rng.shuffle(group)
        chosen = [w for group in groups for w in group][:max(0, spec.copies - 1)]
        if chosen:
            schedule.copy_places[spec.function].workers.extend(chosen)
