"""Worker handlers for DAG schedules and triggers.

Every trigger carries the whole schedule of its call, so a worker keeps no DAG state in memory:
a step runs when its trigger arrives (one upstream) or when the last of its upstreams' triggers
arrives (fan-in, see joins.py for the durable partials). The step gets its own arguments first
and then its upstreams' results in connection order; its result travels on as a trigger to each
downstream function's worker. The last step delivers the DAG's outcome, or, when the DAG has
several sinks, each sink sends its result to the first sink's worker, which joins them into
{sink: result}. A failure is delivered at once by the worker where it happened, and "aborted"
triggers flow downstream so that nothing else runs. The `DagSchedule` a worker receives ahead
of its triggers is only notice: it warms the function up.

Consistency travels with the triggers too. In a MULTI call every function reads the snapshot
taken when the call started, plus the writes of the functions upstream, and remembers what it
read; nothing is written until the call ends, when the last step commits all the writes in the
transaction that stores the outcome, and only if nothing read or written changed since the
snapshot. A call that loses that race runs again on a fresh snapshot (up to
`multi_max_attempts` runs), then fails with CONFLICT. A client_id session carries the newest
revision it has seen, so that no function of a later call reads anything older.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Mapping, Sequence

from droplet.errors import DropletError
from droplet.graph import BEGIN, OUTPUT, downstreams, sinks, upstreams
from droplet.outbox import Outbox, Outgoing, deliver, deliver_call_outcome
from droplet.proto import pb
from droplet.proto.envelope import MESSAGE_ROOM_BYTES
from droplet.proto.replies import call_ref, error_value, stamp
from droplet.speculation import destinations
from droplet.store import serializer
from droplet.store.commits import Commit, MultiWrites
from droplet.worker.chains import next_call
from droplet.worker.copies import (
    Race,
    decide_again,
    is_elided,
    is_valid,
    lost,
    race_of,
    stop_losers,
    won,
)
from droplet.worker.handlers import WorkerState, run
from droplet.worker.library import RunContext
from droplet.worker.tags import trigger_misplaced

_RETRY_BASE_MS = 10.0


def on_schedule(schedule: pb.DagSchedule, state: WorkerState, out: Outbox) -> None:
    """Notice of a step to come: load the function now, not when its trigger arrives."""
    with contextlib.suppress(DropletError):  # the trigger will find out, and tell the caller
        state.functions.get(schedule.target_function)


def expected_sources(dag: pb.Dag, target: str) -> list[str]:
    return sinks(dag) if target == OUTPUT else (upstreams(dag, target) or [BEGIN])


def on_trigger(trigger: pb.DagTrigger, state: WorkerState, out: Outbox) -> None:
    if not trigger.HasField("schedule"):
        raise DropletError("a DAG trigger without its schedule")
    if trigger_misplaced(trigger, state):  # needs tags this worker lacks: sent on by a
        out.send(state.names.calls, pb.Message(trigger=trigger))  # scheduler (worker/tags.py)
        return
    schedule = trigger.schedule
    target = trigger.target_function
    expected = expected_sources(schedule.dag, target)
    if trigger.source not in expected:
        raise DropletError(f"{target!r} does not wait for {trigger.source!r}")
    if len(expected) == 1:
        race = race_of(schedule, target, state)
        if race is not None:
            _copy_step(trigger, race, state, out)
            return
        _step(schedule, target, {trigger.source: trigger}, state, out, joined=False,
              trace=trigger.trace, trace_context=trigger.trace_context)
        return
    join = state.joins.read(schedule.id, target)
    if join.done is not None:
        _send_on(schedule, target, join.done, state, out)
        return
    parts = dict(join.parts)
    parts.setdefault(trigger.source, trigger)
    complete = all(s in parts for s in expected)
    started = schedule.start_time or time.time()  # 0: not known, not expired
    if not complete and time.time() - started > state.schedule_ttl_s:
        # Partials older than schedule_ttl_s are gone with their lease: this join can never
        # complete, and the caller is told instead of left waiting.
        deliver_call_outcome(out, call_ref(schedule), error_value(
            pb.TIMEOUT, f"a branch of this DAG call took longer than schedule_ttl_s "
            f"({state.schedule_ttl_s:g}s) to reach {target!r}"))
        return
    if not complete and not any(p.aborted for p in parts.values()):
        key = state.keys.join_part(schedule.id, target, trigger.source)
        version = state.joins.version_key(schedule.id, target)
        out.store(Commit(records={key: state.joins.seal(key, trigger), version: b""},
                         guards=[state.joins.unchanged_since(schedule.id, target, join)]))
        return
    _step(schedule, target, parts, state, out, joined=True, trace=trigger.trace,
          trace_context=trigger.trace_context)


def context_of(schedule: pb.DagSchedule, parts: dict[str, pb.DagTrigger],
               expected: list[str]) -> RunContext:
    """The reads-and-writes context of a step: its schedule's mode, its upstreams' writes and
    reads (later connections win) and the newest revision any of them saw."""
    multi = schedule.consistency == pb.MULTI
    context = RunContext(
        snapshot_revision=schedule.snapshot_revision if multi else 0,
        writes={} if multi else None,
        min_revision=schedule.min_revision,
    )
    for source in expected:
        trigger = parts.get(source)
        if trigger is None:
            continue
        if context.writes is not None:
            context.writes.update(trigger.writes)
            context.deletes.difference_update(trigger.writes)
            context.deletes.update(trigger.deletes)
            context.reads.update(trigger.reads)
        context.min_revision = max(context.min_revision, trigger.observed_revision)
    context.observed_revision = context.min_revision
    return context


def _step(schedule: pb.DagSchedule, target: str, parts: dict[str, pb.DagTrigger],
          state: WorkerState, out: Outbox, joined: bool, trace: Sequence[pb.Stamp] = (),
          trace_context: Mapping[str, str] | None = None) -> None:
    """Runs one step; a traced call's stamps (those of the trigger that let the step run)
    gain the step's start and end, and travel on with its result."""
    stamps = pb.DagTrigger(trace=trace)
    stamp(stamps.trace, f"{target}.start")
    value, context = _run_step(schedule, target, parts, state, trace_context)
    stamp(stamps.trace, f"{target}.end")
    done = _done_record(schedule, target, value, context)
    done.trace.extend(stamps.trace)
    done.trace_context.update(trace_context or {})
    join = _join_commit(schedule, target, done, state) if joined else None
    _conclude(schedule, target, value, context, done, join, state, out)


def _run_step(schedule: pb.DagSchedule, target: str, parts: dict[str, pb.DagTrigger],
              state: WorkerState, trace_context: Mapping[str, str] | None, race_id: str = ""
              ) -> tuple[pb.Value | None, RunContext]:
    """The step's result (None: an upstream failed, nothing runs) and its context."""
    dag = schedule.dag
    expected = expected_sources(dag, target)
    context = context_of(schedule, parts, expected)
    value: pb.Value | None = None
    if not any(p.aborted for p in parts.values()):
        try:
            if target == OUTPUT:
                loaded = {name: serializer.load(parts[name].result) for name in expected}
                value = serializer.dump(loaded)
            else:
                upstream = [serializer.load(parts[s].result) for s in upstreams(dag, target)]
        except Exception as exc:  # an upstream result that cannot be loaded here
            value = error_value(pb.EXECUTION_ERROR, f"cannot load an upstream result: {exc}")
        else:
            if target != OUTPUT:
                outcome = run(state, target, schedule.arguments[target].values, upstream,
                              context, trace_context, call_id=schedule.call_id or schedule.id,
                              race_id=race_id,
                              batching=target in dag.batching_functions)
                value, context = outcome.value, outcome.context
    # A result goes on in a message: a trigger to the next step, or (the end of a DAG call
    # with continuations, OUTPUT's join of the sinks too) the chain's next DagCall.
    goes_on = not _is_final(dag, target) or bool(schedule.continuations)
    if value is not None and goes_on and (
            why := _too_large(schedule, value, context, state)):
        value = error_value(pb.INVALID_REQUEST, f"the result of {target!r} {why}")
    return value, context


def _too_large(schedule: pb.DagSchedule, value: pb.Value, context: RunContext,
               state: WorkerState) -> str | None:
    """Why a step's result cannot travel on in a trigger (with what a MULTI call's steps
    wrote so far, and the schedule each trigger carries): over max_message_bytes, the broker
    refuses the message by closing the worker's channel after the step was acked, on every
    run of it. None when it fits. Sizes are added up, not measured on a built trigger: this
    runs for every step."""
    if value.type == pb.ERROR:
        return None
    result = value.ByteSize()
    writes = sum(len(k) + v.ByteSize() for k, v in (context.writes or {}).items())
    # a read key travels with its revision (a varint, at most 10 bytes)
    named = sum(len(k) for k in context.deletes) + sum(len(k) + 10 for k in context.reads)
    size = result + writes + named + schedule.ByteSize() + MESSAGE_ROOM_BYTES
    if size <= state.max_message_bytes:
        return None
    return (f"takes {result} bytes"
            + (f" (and the call's writes so far {writes} bytes)" if writes else "")
            + f", too many to send to the next step in one message (max_message_bytes: "
            f"{state.max_message_bytes}): pass large values between functions by reference "
            "(store them, return the key)")


def _is_final(dag: pb.Dag, target: str) -> bool:
    return target == OUTPUT or (not downstreams(dag, target) and len(sinks(dag)) == 1)


def _conclude(schedule: pb.DagSchedule, target: str, value: pb.Value | None,
              context: RunContext, done: pb.DagTrigger, join: Commit | None,
              state: WorkerState, out: Outbox, ref: pb.CallRef | None = None) -> None:
    """What a step's result leads to: the call's end, its failure, or triggers downstream;
    all of it conditional on `join` (a fan-in's or a speculative race's commit) when given."""
    if value is not None and value.type != pb.ERROR and _is_final(schedule.dag, target):
        _finish(schedule, value, context, state, out, join, done.trace, done.trace_context,
                ref)
        return
    if value is not None and _snapshot_gone(value) and (again := _run_again(schedule, state)):
        out.sent.extend(again)  # compacted away under a long MULTI call: a fresh snapshot
        return
    forwards = _forwards(schedule, target, done, state)
    if value is not None and value.type == pb.ERROR:
        # The failure is the call's outcome; nothing downstream runs (a MULTI call writes
        # nothing).
        deliver_call_outcome(out, ref or call_ref(schedule), value, then=forwards, join=join,
                             trace=done.trace)
    elif join is not None:
        out.store(join, then=forwards)
    else:
        out.sent.extend(forwards)


def _copy_step(trigger: pb.DagTrigger, race: Race, state: WorkerState, out: Outbox) -> None:
    """One copy of a speculative step (worker/copies.py): runs unless the race is decided,
    then commits its win or its loss; only the winner's commit sends anything on."""
    schedule, target, copy = trigger.schedule, trigger.target_function, trigger.copy
    decided = race.seen.done
    parts = {trigger.source: trigger}
    if decided is not None:
        if decided.copy == copy and is_elided(decided):  # its result is not in the record
            if trigger.HasField("copy_result"):  # a loss sent to decide again carries no
                return  # upstream result to run on: this copy's winning trigger sent it on
            rerun, rerun_context = _run_step(schedule, target, parts, state,
                                             trigger.trace_context)
            _conclude(schedule, target, rerun, rerun_context,
                      _done_record(schedule, target, rerun, rerun_context), None, state, out,
                      _once(schedule))
        elif decided.copy == copy:  # this copy's trigger again: what it sent may be lost
            _send_on(schedule, target, decided, state, out)
        return
    stamps = pb.DagTrigger(trace=trigger.trace)
    stamp(stamps.trace, f"{target}.start")
    recorded = race.seen.parts.get(str(copy))
    lost_already = trigger.HasField("copy_result") or recorded is not None
    if lost_already:
        value: pb.Value | None = (trigger.copy_result if trigger.HasField("copy_result")
                                  else recorded.result if recorded is not None else None)
        context = context_of(schedule, parts, [trigger.source])
    else:
        value, context = _run_step(schedule, target, parts, state, trigger.trace_context,
                                   race.stop_id if race.copies > 1 else "")
    stamp(stamps.trace, f"{target}.end")
    if value is None:  # an upstream failed (the call has its outcome): abort onwards, once
        if copy == 0:
            aborted = _done_record(schedule, target, None, context)
            out.sent.extend(_forwards(schedule, target, aborted, state))
        return
    ref = _once(schedule)
    if not lost_already and is_valid(race.spec, value):
        done = _done_record(schedule, target, value, context)
        done.trace.extend(stamps.trace)
        done.trace_context.update(trigger.trace_context)
        _conclude(schedule, target, value, context, done, won(race, done, copy, state), state,
                  out, ref)
        if race.copies > 1:
            out.store(stop_losers(race, state))
        return
    commit, failure = lost(race, value, copy, state)
    again = [decide_again(trigger, value, state)]
    if failure is None:
        out.store(commit, on_conflict=again)
        return
    if _snapshot_gone(failure) and (fresh := _run_again(schedule, state)):
        out.store(commit, then=fresh, on_conflict=again)  # MULTI: again on a fresh snapshot
        return
    aborted = _done_record(schedule, target, None, context)
    deliver_call_outcome(out, ref, failure, then=_forwards(schedule, target, aborted, state),
                         join=commit, on_conflict=again, trace=stamps.trace)


def _once(schedule: pb.DagSchedule) -> pb.CallRef:
    ref = call_ref(schedule)
    ref.once = True  # even a direct answer of a speculative step: the one stored outcome
    return ref


def _snapshot_gone(value: pb.Value) -> bool:
    if value.type != pb.ERROR:
        return False
    return pb.ErrorInfo.FromString(value.body).code == pb.CONFLICT


def _done_record(schedule: pb.DagSchedule, target: str, value: pb.Value | None,
                 context: RunContext) -> pb.DagTrigger:
    """What a step produced, as its downstream triggers carry it (without routing)."""
    done = pb.DagTrigger(id=schedule.id, source=target, aborted=value is None,
                         observed_revision=context.observed_revision)
    if value is not None and value.type == pb.ERROR:
        done.aborted = True
    elif value is not None:
        done.result.CopyFrom(value)
        for key, written in (context.writes or {}).items():
            done.writes[key].CopyFrom(written)
        done.deletes.extend(sorted(context.deletes))
        for key, revision in context.reads.items():
            done.reads[key] = revision
    return done


def _join_commit(schedule: pb.DagSchedule, target: str, done: pb.DagTrigger,
                 state: WorkerState) -> Commit:
    """Completes a fan-in: the partials go, `done` records the step, once only."""
    key = state.keys.join_done(schedule.id, target)
    return Commit(records={key: state.joins.seal(key, done)},
                  clears=[state.joins.parts_prefix(schedule.id, target)], absent=key)


def _forwards(schedule: pb.DagSchedule, source: str, done: pb.DagTrigger,
              state: WorkerState) -> list[Outgoing]:
    """Triggers carrying `source`'s result (or an abort) to whoever waits for it."""
    dag = schedule.dag
    all_sinks = sinks(dag)
    targets = downstreams(dag, source) if source != OUTPUT else []
    if not targets and len(all_sinks) > 1 and source != OUTPUT:
        targets = [OUTPUT]
    sent = []
    for target in targets:
        places = ([(schedule.locations[all_sinks[0]], 0)] if target == OUTPUT
                  else destinations(schedule, target))
        for worker, copy in places:  # every copy of a speculative target
            trigger = pb.DagTrigger()
            trigger.CopyFrom(done)
            trigger.target_function = target
            trigger.copy = copy
            trigger.schedule.CopyFrom(schedule)
            sent.append(Outgoing(state.names.worker(worker), pb.Message(trigger=trigger)))
    return sent


def _send_on(schedule: pb.DagSchedule, target: str, done: pb.DagTrigger, state: WorkerState,
             out: Outbox) -> None:
    """A trigger for a step that already ran: send its result on again (the first run may
    have died before its messages were confirmed); the final step answers again."""
    if not _is_final(schedule.dag, target) or done.aborted:
        out.sent.extend(_forwards(schedule, target, done, state))
        return
    if schedule.continuations:
        out.sent.append(next_call(schedule, done.result, done.observed_revision, state,
                                  done.trace_context))
        return
    ref = call_ref(schedule)
    stored = (state.stored_outcome(ref.call_id)
              if not ref.direct_response or ref.once else None)
    deliver(out, call_id=ref.call_id, response_id=ref.output_key or ref.call_id,
            value=stored or done.result, address=ref.response_address, store=False,
            revision=done.observed_revision)


def _finish(schedule: pb.DagSchedule, value: pb.Value, context: RunContext, state: WorkerState,
            out: Outbox, join: Commit | None, trace: Sequence[pb.Stamp] = (),
            trace_context: Mapping[str, str] | None = None,
            ref: pb.CallRef | None = None) -> None:
    """The call's end: its outcome is stored (with a MULTI call's writes) and answered; or,
    when a chain goes on, the next DAG call is made with the result (worker/chains.py)."""
    if schedule.continuations:
        following = next_call(schedule, value, context.observed_revision, state, trace_context)
        if join is not None:
            out.store(join, then=[following])
        else:
            out.sent.append(following)
        return
    multi = None
    retry: list[Outgoing] = []
    if context.writes is not None:
        multi = MultiWrites(dict(context.writes), set(context.deletes), dict(context.reads),
                            schedule.snapshot_revision)
        retry = _run_again(schedule, state)
    deliver_call_outcome(out, ref or call_ref(schedule), value, context.observed_revision,
                         multi=multi, on_conflict=retry, join=join, trace=trace)


def _run_again(schedule: pb.DagSchedule, state: WorkerState) -> list[Outgoing]:
    """The DagCall that runs a MULTI call again after it lost its commit, after a jittered
    back-off; none once the attempts are spent."""
    if schedule.attempt + 1 >= state.multi_max_attempts:
        return []
    call = pb.DagCall(
        name=schedule.dag.name, consistency=pb.MULTI, output_key=schedule.output_key,
        client_id=schedule.client_id, response_address=schedule.response_address,
        call_id=schedule.call_id, direct_response=schedule.direct_response,
        min_revision=schedule.min_revision, attempt=schedule.attempt + 1,
    )
    for function, args in schedule.arguments.items():
        call.function_args[function].CopyFrom(args)
    delay_ms = _RETRY_BASE_MS * 2 ** min(schedule.attempt, 8) * random.uniform(0.5, 1.5)
    return [Outgoing(state.names.retry(int(delay_ms)), pb.Message(dag_call=call))]
