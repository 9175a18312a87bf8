"""A worker's side of resource tags: a call that needs tags this worker lacks is not run here.

Calls that need tags are placed by a scheduler on a worker that has them; but a call made by
name (`client.call("f")` of a function registered elsewhere with `resources=...`) travels the
shared work queue like any plain call, since the client does not know what its function needs.
The worker that takes such a call reads the function's needs from its registration, and sends
the call back to the schedulers with those needs spelled out (one more hop): a scheduler then
places it on a worker that has them, or answers NO_RESOURCES when no live worker does.

A worker restarted under the same id with other tags finds its old pin and the DAG triggers
left in its queue: a pin whose function needs tags it no longer has is given up (the
schedulers pin the function again on a worker that qualifies), and such a trigger goes back to
the schedulers, which send it on to wherever the step is pinned now (scheduler/dags.py
reroute) instead of running a gpu step on a worker without a gpu.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from droplet import resources
from droplet.errors import DropletError, StoreError
from droplet.graph import OUTPUT
from droplet.proto import pb
from droplet.speculation import speculative_spec

if TYPE_CHECKING:
    from droplet.worker.handlers import WorkerState


def _registered(state: WorkerState, name: str) -> Mapping[str, float]:
    """What the function was registered needing ({} when it cannot be loaded: the run says
    what is wrong with it)."""
    try:
        function = state.functions.get(name)
    except StoreError:
        raise  # etcd is away: the message waits in its queue
    except DropletError:
        function = None
    return function.spec.resources if function is not None else {}


def misplaced(call: pb.FunctionCall, state: WorkerState) -> pb.FunctionCall | None:
    """The call with its needs spelled out, when this worker's tags do not satisfy them
    (None: run it here)."""
    registered = _registered(state, call.name)
    if not registered and not call.resources:
        return None  # needs nothing (most calls): no needs to merge and compare
    needs = resources.merged(call.resources, registered)
    if resources.satisfies(state.resources, needs):
        return None
    again = pb.FunctionCall()
    again.CopyFrom(call)
    again.resources.clear()
    again.resources.update(needs)
    return again


def fits(dag: pb.Dag, function: str, state: WorkerState) -> bool:
    """Whether this worker's tags satisfy what a DAG's function needs."""
    needs = resources.dag_function_needs(dag, function, _registered(state, function))
    return resources.satisfies(state.resources, needs)


def trigger_misplaced(trigger: pb.DagTrigger, state: WorkerState) -> bool:
    """A DAG step that must not run here: its function needs tags this worker lacks and it is
    not pinned here (a pin it holds is kept, so a trigger never bounces between this worker
    and the schedulers). Speculative steps are left to their races, whose copies go only to
    workers with the tags (droplet/speculation.py)."""
    target = trigger.target_function
    if target == OUTPUT or not trigger.HasField("schedule"):
        return False
    dag = trigger.schedule.dag
    if speculative_spec(dag, target) is not None:
        return False
    return state.pinned != (dag.name, target) and not fits(dag, target, state)
