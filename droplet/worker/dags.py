"""Worker handlers for DAG schedules and triggers.

A function runs when its schedule and all its triggers are in (see joins.py), with its own
arguments first and then its upstreams' results in connection order. Its result travels as a
DagTrigger to each downstream function's worker; a sink delivers the DAG's result, or, when the
DAG has several sinks, sends it to the first sink's worker, which joins them into
{sink: result}. A failure is delivered at once by the worker where it happened, and "aborted"
triggers flow downstream so that nothing else runs and every join is freed.

Consistency travels with the triggers too. In a MULTI call every function reads the snapshot
taken when the call started, plus the writes of the functions upstream (carried in the
triggers); nothing is written until the call ends, when the sink (or the joining worker)
commits all its writes in one transaction. A client_id session carries the newest revision
it has seen, so that no function of a later call reads anything older.
"""

from __future__ import annotations

from droplet.graph import BEGIN, OUTPUT, downstreams, sinks
from droplet.outbox import Outbox, call_ref, deliver_call_outcome
from droplet.proto import pb
from droplet.store import serializer
from droplet.worker.handlers import WorkerState, execute
from droplet.worker.joins import Join
from droplet.worker.library import CallContext


def on_schedule(schedule: pb.DagSchedule, state: WorkerState, out: Outbox) -> None:
    join = state.schedules.add_schedule(schedule)
    if join is not None:
        _run(join, state, out)


def on_trigger(trigger: pb.DagTrigger, state: WorkerState, out: Outbox) -> None:
    join = state.schedules.add_trigger(trigger)
    if join is not None:
        _run(join, state, out)


def context_of(join: Join) -> CallContext:
    """The reads-and-writes context of a join: its schedule's mode, its upstreams' writes
    (later connections win) and the newest revision any of them saw."""
    schedule = join.schedule
    assert schedule is not None
    multi = schedule.consistency == pb.MULTI
    context = CallContext(
        snapshot_revision=schedule.snapshot_revision if multi else 0,
        writes={} if multi else None,
        min_revision=schedule.min_revision,
    )
    for source in join.expected():
        trigger = join.triggers.get(source)
        if trigger is None:
            continue
        if context.writes is not None:
            context.writes.update(trigger.writes)
            context.deletes.difference_update(trigger.writes)
            context.deletes.update(trigger.deletes)
        context.min_revision = max(context.min_revision, trigger.observed_revision)
    context.observed_revision = context.min_revision
    return context


def _run(join: Join, state: WorkerState, out: Outbox) -> None:
    schedule = join.schedule
    if join.aborted:
        if schedule is not None and join.key[1] != OUTPUT:
            _forward(schedule, join.key[1], None, CallContext(), state, out)
        return
    assert schedule is not None
    context = context_of(join)
    if join.key[1] == OUTPUT:
        results = {name: serializer.load(join.triggers[name].result) for name in join.expected()}
        _finish(schedule, serializer.dump(results), context, out)
        return
    target = schedule.target_function
    upstream_results = [
        serializer.load(join.triggers[source].result)
        for source in schedule.triggers
        if source != BEGIN
    ]
    value = execute(state, target, schedule.arguments[target].values, upstream_results, context)
    if value.type == pb.ERROR:
        deliver_call_outcome(out, call_ref(schedule), value)  # a MULTI call writes nothing
        _forward(schedule, target, None, context, state, out)
    else:
        _forward(schedule, target, value, context, state, out)


def _forward(
    schedule: pb.DagSchedule,
    source: str,
    value: pb.Value | None,
    context: CallContext,
    state: WorkerState,
    out: Outbox,
) -> None:
    """Sends `source`'s result (or an abort, when value is None) to whoever waits for it."""
    dag = schedule.dag
    targets = downstreams(dag, source)
    all_sinks = sinks(dag)
    if not targets and len(all_sinks) > 1:
        targets = [OUTPUT]
    elif not targets:
        if value is not None:
            _finish(schedule, value, context, out)
        return
    for target in targets:
        trigger = pb.DagTrigger(
            id=schedule.id, source=source, target_function=target, aborted=value is None,
            call=call_ref(schedule), observed_revision=context.observed_revision,
        )
        if value is not None:
            trigger.result.CopyFrom(value)
            for key, written in (context.writes or {}).items():
                trigger.writes[key].CopyFrom(written)
            trigger.deletes.extend(sorted(context.deletes))
        worker = schedule.locations[all_sinks[0] if target == OUTPUT else target]
        out.send(state.names.worker(worker), pb.Message(trigger=trigger))
    if OUTPUT in targets and source == all_sinks[0]:
        # This worker hosts the first sink: it is the one that joins all sinks' results.
        output = pb.DagSchedule()
        output.CopyFrom(schedule)
        output.target_function = OUTPUT
        on_schedule(output, state, out)


def _finish(schedule: pb.DagSchedule, value: pb.Value, context: CallContext, out: Outbox) -> None:
    """The call's end: a MULTI call's writes become visible together, then the result goes."""
    if context.writes is not None:
        out.commit(context.writes, context.deletes)
    deliver_call_outcome(out, call_ref(schedule), value, context.observed_revision)
