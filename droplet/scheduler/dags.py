"""Handlers for DAGs: create (pin each function on its own worker), delete, call, re-route.

The pin protocol follows the seed system: ask a free worker to pin a function; it accepts when
it holds nothing pinned, rejects otherwise; when free workers run out, everything pinned for
the DAG is unpinned again and the request answers NO_RESOURCES with metadata as before. Pins
are claimed in etcd (a transaction) before the worker is asked, so two schedulers never pin
two functions on one worker, nor one function twice.

A create is idempotent by request id: the half-made DAG is recorded with the request id under
the creating scheduler's lease, so a redelivered request (its scheduler died while pinning)
waits for that DAG to become ready or to vanish with the lease, then answers as one request;
every failure path unpins what it pinned before answering.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Protocol

from droplet.graph import BEGIN, OUTPUT, call_error, shape_error, sinks, sources, upstreams
from droplet.outbox import Outbox, deliver_call_outcome
from droplet.proto import pb
from droplet.proto.replies import call_ref, error_response, error_value, stamp
from droplet.resources import describe
from droplet.scheduler.chains import extend_schedule, oversized
from droplet.scheduler.state import SchedulerState
from droplet.scheduler.tagged import (
    colocated_hosts,
    function_needs,
    pinning_order,
    preferred_workers,
    tags_error,
)
from droplet.speculation import destinations
from droplet.store.metadata import Answer, Metadata

# A trigger whose step has no live worker is tried again this often, for this long, while
# the fleet heals (a dead worker's pin moves within seconds).
REROUTE_DELAY_MS = 1000
REROUTE_DEADLINE_S = 60.0


class PinPort(Protocol):
    """Asks workers to pin and unpin; the service implements it over the broker."""

    def pin(self, worker_id: str, dag_name: str, function_name: str) -> bool: ...

    def unpin(self, worker_id: str, dag_name: str, function_name: str) -> None: ...

    def wait(self, seconds: float) -> None:
        """Lets time pass (the service keeps its connection serviced meanwhile)."""
        ...


def create_dag(
    dag: pb.Dag,
    state: SchedulerState,
    metadata: Metadata,
    pins: PinPort,
    function_exists: Callable[[str], bool],
    request_id: str = "",
    lease: int | None = None,
    wait_s: float = 0.0,
    rng: random.Random | None = None,
) -> pb.GenericResponse:
    rng = rng or random.Random()
    request_id = request_id or uuid.uuid4().hex
    problem = shape_error(dag) or tags_error(dag)
    if problem:
        return error_response(dag.name, pb.INVALID_REQUEST, problem)
    missing = [f for f in dag.functions if not function_exists(f)]
    if missing:
        return error_response(dag.name, pb.FUNC_NOT_FOUND, f"unregistered functions: {missing}")
    needs = {f: function_needs(dag, f, metadata) for f in dag.functions}
    for function, need in needs.items():  # kept in the DAG: its speculative copies read them
        if need:
            dag.function_resources[function].amounts.update(need)
    pending = _claim_name(dag, state, metadata, pins, request_id, lease, wait_s)
    if isinstance(pending, pb.GenericResponse):
        return pending
    _unpin_all(dag.name, state, metadata, pins)  # left by an attempt whose scheduler died
    pinned: list[pb.PinRecord] = []
    done = pb.GenericResponse(success=True, response_id=dag.name)
    try:
        tried: set[str] = set()
        for function in pinning_order(dag, needs):
            near = colocated_hosts(state, dag, function, {p.function_name: p.worker_id
                                                          for p in pinned})
            record = pin_function(dag.name, function, state, metadata, pins, tried, rng,
                                  needs[function], near)
            if record is None:
                _roll_back(dag.name, pinned, state, metadata, pins, pending)
                wanted = f" with the resources {describe(needs[function])} for " \
                         f"{function!r}" if needs[function] else ""
                return error_response(
                    dag.name, pb.NO_RESOURCES,
                    f"not enough free workers{wanted} to pin {len(dag.functions)} functions",
                )
            pinned.append(record)
        if not metadata.mark_dag_ready(dag, pending, Answer(request_id, done, lease=None)):
            _roll_back(dag.name, pinned, state, metadata, pins, None)
            return error_response(dag.name, pb.INVALID_REQUEST,
                                  f"DAG {dag.name!r} was deleted while it was being created")
    except BaseException:
        _roll_back(dag.name, pinned, state, metadata, pins, pending)
        raise
    state.dags[dag.name] = pb.DagRecord(dag=dag, ready=True, request_id=request_id)
    return done


def _claim_name(dag: pb.Dag, state: SchedulerState, metadata: Metadata, pins: PinPort,
                request_id: str, lease: int | None,
                wait_s: float) -> bytes | pb.GenericResponse:
    """The pending record of a DAG this request may now create, or the answer to give."""
    deadline = time.monotonic() + wait_s
    while True:
        pending = metadata.create_dag(dag, state.scheduler_id, request_id, lease)
        if pending is not None:
            return pending
        existing = metadata.get_dag(dag.name)
        if existing is None:
            continue  # vanished between the two reads: claim again
        if existing.request_id != request_id:
            return error_response(dag.name, pb.DAG_ALREADY_EXISTS, f"DAG {dag.name!r} exists")
        if existing.ready:
            return pb.GenericResponse(success=True, response_id=dag.name)
        # This very request is being created by a scheduler that got it before (and may have
        # died): wait for its DAG to become ready, or to vanish with its creator's lease.
        if time.monotonic() > deadline:
            return error_response(dag.name, pb.NO_RESOURCES,
                                  f"DAG {dag.name!r} is still being created; try again")
        pins.wait(0.2)


def _roll_back(name: str, pinned: list[pb.PinRecord], state: SchedulerState,
               metadata: Metadata, pins: PinPort, pending: bytes | None) -> None:
    for done in pinned:
        pins.unpin(done.worker_id, done.dag_name, done.function_name)
        metadata.release_pin(done)
        state.pins.pop(done.worker_id, None)
    if pending is not None:
        metadata.delete_pending_dag(name, pending)


def pin_function(
    dag_name: str,
    function: str,
    state: SchedulerState,
    metadata: Metadata,
    pins: PinPort,
    tried: set[str],
    rng: random.Random,
    needs: Mapping[str, float] | None = None,
    hosts: set[str] | None = None,
) -> pb.PinRecord | None:
    """Pins `function` on some free worker not tried yet whose tags satisfy `needs`
    (preferring `hosts`: colocation; see tagged.py); None when none accepts."""
    while True:
        candidates = preferred_workers(state, [w for w in state.free_workers() if w not in tried],
                                       needs or {}, hosts or set())
        if not candidates:
            return None
        worker_id = rng.choice(candidates)
        # Either way this worker is used up for this DAG: it now holds our function or
        # rejected because it holds another one.
        tried.add(worker_id)
        if not metadata.claim_pin(worker_id, dag_name, function):
            continue  # another scheduler pinned it (or this function) a moment ago
        record = pb.PinRecord(dag_name=dag_name, function_name=function, worker_id=worker_id)
        try:
            accepted = pins.pin(worker_id, dag_name, function)
        except BaseException:
            metadata.release_pin(record)
            raise
        if accepted:
            state.pins[worker_id] = record
            return record
        metadata.release_pin(record)


def delete_dag(
    name: str, state: SchedulerState, metadata: Metadata, pins: PinPort, request_id: str = "",
) -> pb.GenericResponse:
    record = metadata.get_dag(name)
    if record is None:
        state.dags.pop(name, None)
        return error_response(name, pb.NO_SUCH_DAG, f"no DAG named {name!r}")
    done = pb.GenericResponse(success=True, response_id=name)
    remove_dag(name, state, metadata, pins, Answer(request_id, done) if request_id else None)
    return done


def remove_dag(name: str, state: SchedulerState, metadata: Metadata, pins: PinPort,
               answer: Answer | None = None) -> None:
    """Unpins every function of a DAG and deletes it and its pins from etcd; the record goes
    last, so a delete cut short is completed by the next attempt."""
    _unpin_all(name, state, metadata, pins)
    metadata.delete_dag(name, answer)
    state.dags.pop(name, None)


def _unpin_all(name: str, state: SchedulerState, metadata: Metadata, pins: PinPort) -> None:
    for pin in metadata.pins():
        if pin.dag_name == name:
            pins.unpin(pin.worker_id, pin.dag_name, pin.function_name)
            metadata.release_pin(pin)
            state.pins.pop(pin.worker_id, None)


def call_dag(
    dag_call: pb.DagCall,
    reply_to: str | None,
    state: SchedulerState,
    out: Outbox,
    now: float | None = None,
) -> pb.GenericResponse:
    """Sends each source a BEGIN trigger, which carries the whole schedule (and each extra
    worker of a speculative copy a DagSchedule, notice of what is coming).

    Every scheduling gets a fresh schedule id, even for a re-sent call, so that joins left by
    an earlier attempt never mix with this one; the call id ties attempts together (replies,
    and the write-once outcome).
    """
    schedule_id = str(uuid.uuid4())
    call_id = dag_call.call_id or schedule_id
    response_id = dag_call.output_key or call_id
    address = reply_to or dag_call.response_address
    ref = pb.CallRef(call_id=call_id, response_address=address or "",
                     output_key=dag_call.output_key, direct_response=dag_call.direct_response,
                     once=dag_call.consistency == pb.MULTI)
    record = state.dags.get(dag_call.name)
    failure = None
    if record is None or not record.ready:
        failure = (pb.NO_SUCH_DAG, f"no DAG named {dag_call.name!r}")
    else:
        locations = state.dag_locations(dag_call.name)
        lost = [f for f in record.dag.functions if f not in locations]
        if lost and _wait_for_pins(dag_call, call_id, address, state, out, now):
            return pb.GenericResponse(success=True, response_id=response_id, call_id=call_id)
        if lost:
            failure = (pb.NO_RESOURCES, f"no live worker holds functions {lost}")
        elif problem := call_error(dag_call, record.dag):
            failure = (pb.INVALID_REQUEST, problem)
    if failure is not None:
        deliver_call_outcome(out, ref, error_value(*failure))
        return error_response(response_id, failure[0], failure[1], call_id=call_id)
    assert record is not None
    dag = record.dag
    snapshot = 0
    if dag_call.consistency == pb.MULTI:
        fresh = state.fresh_revision() if dag_call.attempt else 0
        snapshot = dag_call.snapshot_revision or fresh or state.revision
    schedule = pb.DagSchedule(
        id=schedule_id, call_id=call_id, start_time=time.time() if now is None else now,
        consistency=dag_call.consistency, output_key=dag_call.output_key,
        response_address=address or "", client_id=dag_call.client_id,
        direct_response=dag_call.direct_response, snapshot_revision=snapshot,
        min_revision=dag_call.min_revision, attempt=dag_call.attempt,
    )
    schedule.dag.CopyFrom(dag)
    for function in dag.functions:
        schedule.locations[function] = locations[function]
        if function in dag_call.function_args:
            schedule.arguments[function].CopyFrom(dag_call.function_args[function])
    extend_schedule(dag_call, schedule, state)
    if too_big := oversized(dag_call, schedule, state):
        deliver_call_outcome(out, ref, error_value(pb.INVALID_REQUEST, too_big))
        return error_response(response_id, pb.INVALID_REQUEST, too_big, call_id=call_id)
    for function in dag.functions:
        # A pinned worker loaded its function when it took the pin: a notice would cost it a
        # delivery per step and call for nothing. A speculative copy's extra worker may
        # never have run the function: its notice loads it before the trigger arrives.
        extra = [worker for worker, copy in destinations(schedule, function) if copy]
        if not extra:
            continue
        one = pb.DagSchedule()
        one.CopyFrom(schedule)
        one.target_function = function
        one.triggers.extend(upstreams(dag, function) or [BEGIN])
        for worker in extra:
            out.send(state.names.worker(worker), pb.Message(schedule=one))
    stamp(dag_call.trace, "scheduler")
    for source in sources(dag):
        for worker, copy in destinations(schedule, source):
            trigger = pb.DagTrigger(id=schedule_id, source=BEGIN, target_function=source,
                                    call=call_ref(schedule), trace=dag_call.trace,
                                    trace_context=dag_call.trace_context, copy=copy)
            trigger.schedule.CopyFrom(schedule)
            out.send(state.names.worker(worker), pb.Message(trigger=trigger))
    return pb.GenericResponse(success=True, response_id=response_id, call_id=call_id)


def _wait_for_pins(dag_call: pb.DagCall, call_id: str, address: str | None,
                   state: SchedulerState, out: Outbox, now: float | None) -> bool:
    """Parks a call of a ready DAG one of whose functions no live worker holds for now (its
    worker died a moment ago and the fleet has not moved the pin yet, or a scheduler that
    just started has not heard of the workers yet) in a delay queue, to be scheduled again
    in REROUTE_DELAY_MS; False once it has waited REROUTE_DEADLINE_S, as long as a trigger
    waits for its step (reroute): calls sent while the DAG was whole are not failed by a
    fault the fleet heals within seconds."""
    now = time.time() if now is None else now
    since = dag_call.unplaced_since
    if not 0 < since <= now:  # unset; or NaN, infinite, ahead (a raw publisher's, a clock
        since = now  # far ahead): never REROUTE_DEADLINE_S past, it went round for ever
    if now - since >= REROUTE_DEADLINE_S:
        return False
    waiting = pb.DagCall()
    waiting.CopyFrom(dag_call)
    waiting.unplaced_since = since
    waiting.call_id = call_id  # (a call without one keeps the id its first answer named)
    waiting.response_address = address or ""  # a delay queue hands it back without reply_to
    out.send(state.names.retry(REROUTE_DELAY_MS), pb.Message(dag_call=waiting))
    return True


def reroute(trigger: pb.DagTrigger, state: SchedulerState, out: Outbox,
            now: float | None = None) -> None:
    """A trigger whose worker queue is gone (the worker died): sent on to wherever the step
    is pinned now; while no live worker holds it, tried again a little later, and once it
    has waited REROUTE_DEADLINE_S the call fails with WORKER_LOST."""
    schedule = trigger.schedule
    dag = schedule.dag
    now = time.time() if now is None else now
    record = state.dags.get(dag.name)
    locations = state.dag_locations(dag.name) if record is not None and record.ready else {}
    missing = [f for f in dag.functions if f not in locations]
    if not missing:
        moved = pb.DagTrigger()
        moved.CopyFrom(trigger)
        moved.rerouted_since = moved.rerouted_since or now  # it may have run: poison counts
        for function, worker in locations.items():
            moved.schedule.locations[function] = worker
        target = trigger.target_function
        worker = locations[sinks(dag)[0] if target == OUTPUT else target]
        out.send(state.names.worker(worker), pb.Message(trigger=moved))
        return
    waiting = pb.DagTrigger()
    waiting.CopyFrom(trigger)
    if not waiting.rerouted_since:
        waiting.rerouted_since = now
    if record is not None and now - waiting.rerouted_since < REROUTE_DEADLINE_S:
        out.send(state.names.retry(REROUTE_DELAY_MS), pb.Message(trigger=waiting))
        return
    deliver_call_outcome(out, call_ref(schedule), error_value(
        pb.WORKER_LOST, f"no live worker holds {missing} of DAG {dag.name!r}"))
