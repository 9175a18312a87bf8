"""A worker's side of resource tags: a call that needs tags this worker lacks is not run here.

Calls that need tags are placed by a scheduler on a worker that has them; but a call made by
name (`client.call("f")` of a function registered elsewhere with `resources=...`) travels the
shared work queue like any plain call, since the client does not know what its function needs.
The worker that takes such a call reads the function's needs from its registration, and sends
the call back to the schedulers with those needs spelled out (one more hop): a scheduler then
places it on a worker that has them, or answers NO_RESOURCES when no live worker does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from droplet import resources
from droplet.errors import DropletError, StoreError
from droplet.proto import pb

if TYPE_CHECKING:
    from droplet.worker.handlers import WorkerState


def misplaced(call: pb.FunctionCall, state: WorkerState) -> pb.FunctionCall | None:
    """The call with its needs spelled out, when this worker's tags do not satisfy them
    (None: run it here)."""
    try:
        function = state.functions.get(call.name)
    except StoreError:
        raise  # etcd is away: the call waits in its queue
    except DropletError:
        function = None  # the run says what is wrong with it
    registered = function.spec.resources if function is not None else {}
    needs = resources.merged(call.resources, registered)
    if resources.satisfies(state.resources, needs):
        return None
    again = pb.FunctionCall()
    again.CopyFrom(call)
    again.resources.clear()
    again.resources.update(needs)
    return again
