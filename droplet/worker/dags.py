"""Worker handlers for DAG schedules and triggers.

A function runs when its schedule and all its triggers are in (see joins.py), with its own
arguments first and then its upstreams' results in connection order. Its result travels as a
DagTrigger to each downstream function's worker; a sink delivers the DAG's result, or, when the
DAG has several sinks, sends it to the first sink's worker, which joins them into
{sink: result}. A failure is delivered at once by the worker where it happened, and "aborted"
triggers flow downstream so that nothing else runs and every join is freed.
"""

from __future__ import annotations

from droplet.graph import BEGIN, OUTPUT, downstreams, sinks
from droplet.outbox import Outbox, call_ref, deliver_call_outcome
from droplet.proto import pb
from droplet.store import serializer
from droplet.worker.handlers import WorkerState, execute
from droplet.worker.joins import Join


def on_schedule(schedule: pb.DagSchedule, state: WorkerState, out: Outbox) -> None:
    join = state.schedules.add_schedule(schedule)
    if join is not None:
        _run(join, state, out)


def on_trigger(trigger: pb.DagTrigger, state: WorkerState, out: Outbox) -> None:
    join = state.schedules.add_trigger(trigger)
    if join is not None:
        _run(join, state, out)


def _run(join: Join, state: WorkerState, out: Outbox) -> None:
    schedule = join.schedule
    if join.aborted:
        if schedule is not None and join.key[1] != OUTPUT:
            _forward(schedule, join.key[1], None, state, out)
        return
    assert schedule is not None
    if join.key[1] == OUTPUT:
        results = {name: serializer.load(join.triggers[name].result) for name in join.expected()}
        _deliver(schedule, serializer.dump(results), out)
        return
    target = schedule.target_function
    upstream_results = [
        serializer.load(join.triggers[source].result)
        for source in schedule.triggers
        if source != BEGIN
    ]
    value = execute(state, target, schedule.arguments[target].values, upstream_results)
    if value.type == pb.ERROR:
        _deliver(schedule, value, out)
        _forward(schedule, target, None, state, out)
    else:
        _forward(schedule, target, value, state, out)


def _forward(
    schedule: pb.DagSchedule,
    source: str,
    value: pb.Value | None,
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
            _deliver(schedule, value, out)
        return
    for target in targets:
        trigger = pb.DagTrigger(
            id=schedule.id, source=source, target_function=target, aborted=value is None,
            call=call_ref(schedule),
        )
        if value is not None:
            trigger.result.CopyFrom(value)
        worker = schedule.locations[all_sinks[0] if target == OUTPUT else target]
        out.send(state.names.worker(worker), pb.Message(trigger=trigger))
    if OUTPUT in targets and source == all_sinks[0]:
        # This worker hosts the first sink: it is the one that joins all sinks' results.
        output = pb.DagSchedule()
        output.CopyFrom(schedule)
        output.target_function = OUTPUT
        on_schedule(output, state, out)


def _deliver(schedule: pb.DagSchedule, value: pb.Value, out: Outbox) -> None:
    deliver_call_outcome(out, call_ref(schedule), value)
