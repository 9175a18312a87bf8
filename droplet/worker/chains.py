"""The next DAG call of a chain (call_dag(..., continuation=...)), made when a DAG call ends.

Instead of delivering its outcome, the last step of a DAG call that has continuations sends
the scheduler the next DagCall: the same call id, reply address, output key, direct-response
setting and session, the next DAG's own arguments, the rest of the chain, and this call's
result as `chained_input` (each source of the next DAG gets it as its last argument). So the
caller's future, which waits on the call id, gets the outcome of the chain's last DAG call, or
the first failure of any of them (a failure is delivered as the call's outcome at once, and
nothing further runs).
"""

from __future__ import annotations

from collections.abc import Mapping

from droplet.outbox import Outgoing
from droplet.proto import pb
from droplet.worker.handlers import WorkerState


def next_call(schedule: pb.DagSchedule, value: pb.Value, observed_revision: int,
              state: WorkerState, trace_context: Mapping[str, str] | None = None) -> Outgoing:
    first = schedule.continuations[0]
    call = pb.DagCall(
        name=first.dag, consistency=schedule.consistency, output_key=schedule.output_key,
        client_id=schedule.client_id, response_address=schedule.response_address,
        call_id=schedule.call_id or schedule.id, direct_response=schedule.direct_response,
        min_revision=max(schedule.min_revision, observed_revision),
    )
    for function, args in first.function_args.items():
        call.function_args[function].CopyFrom(args)
    call.continuations.extend(schedule.continuations[1:])
    call.chained_input.CopyFrom(value)
    call.trace_context.update(trace_context or {})
    return Outgoing(state.names.calls, pb.Message(dag_call=call))
