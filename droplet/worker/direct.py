"""A DAG call's first trigger sent by a client straight to this worker (client/dagroutes.py).

The client built the schedule from its view of etcd, which may be up to a second old. So the
trigger runs here only while this worker holds the pin of its step (the pin it took, or read
back at start under the same id); otherwise (the pin moved, the DAG was deleted or re-created)
the call goes to the schedulers as the DagCall the client would have sent, and is scheduled
there as if it had never come here. A client's trigger is told apart by its reply-to: a
client publishes with its reply address, schedulers and workers publish without one. That
address is the call's (the client cannot know the broker's name for it before publishing).
"""

from __future__ import annotations

from droplet.outbox import Outbox, adopt_reply_address
from droplet.proto import pb
from droplet.worker.handlers import WorkerState


def pinned_here(trigger: pb.DagTrigger, reply_to: str | None, state: WorkerState,
                out: Outbox) -> bool:
    """False when the trigger is a client's and this worker no longer holds its step's pin:
    the call was handed to the schedulers instead. Takes a client's reply address in."""
    if not adopt_reply_address(trigger, reply_to):
        return True  # a scheduler's or a worker's trigger
    if state.pinned == (trigger.schedule.dag.name, trigger.target_function) and (
            _same_dag(trigger.schedule.dag, state)):
        return True
    out.send(state.names.calls, pb.Message(dag_call=dag_call_of(trigger)))
    return False


def dag_call_of(trigger: pb.DagTrigger) -> pb.DagCall:
    """The DagCall a client's trigger stands for (client/dagroutes.py begin_trigger)."""
    schedule = trigger.schedule
    call = pb.DagCall(
        name=schedule.dag.name, consistency=schedule.consistency,
        output_key=schedule.output_key, client_id=schedule.client_id,
        response_address=schedule.response_address, call_id=schedule.call_id,
        direct_response=schedule.direct_response, snapshot_revision=schedule.snapshot_revision,
        min_revision=schedule.min_revision, trace=trigger.trace,
        trace_context=trigger.trace_context,
    )
    for function, args in schedule.arguments.items():
        call.function_args[function].CopyFrom(args)
    return call


def _same_dag(dag: pb.Dag, state: WorkerState) -> bool:
    """Whether the client built its schedule from the DAG this worker is pinned for: one
    deleted and registered again under its name (the source on this worker again) is
    another, and the client's view may hold the old one for a second
    (tests/attack/test_dag_recreated_behind_a_lagging_client.py). Read once a pin."""
    if state.pinned_dag is None:
        record = state.dag_record(dag.name)
        if record is None:
            return False
        state.pinned_dag = record.dag
    return state.pinned_dag == dag
