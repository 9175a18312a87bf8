"""Handlers for DAGs: create (pin each function on its own worker), delete, and call.

The pin protocol follows the seed system: ask a free worker to pin a function; it accepts when
it holds nothing pinned, rejects otherwise; when free workers run out, everything pinned for
the DAG is unpinned again and the request answers NO_RESOURCES with metadata as before. Pins
are claimed in etcd (a transaction) before the worker is asked, so two schedulers never pin
two functions on one worker.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from typing import Protocol

from droplet.graph import BEGIN, shape_error, sources, upstreams
from droplet.outbox import Outbox, call_ref, error_response
from droplet.proto import pb
from droplet.scheduler.state import SchedulerState
from droplet.store.metadata import Metadata
from droplet.store.values import ResultWrite


class PinPort(Protocol):
    """Asks workers to pin and unpin; the service implements it over the broker."""

    def pin(self, worker_id: str, dag_name: str, function_name: str) -> bool: ...

    def unpin(self, worker_id: str, dag_name: str, function_name: str) -> None: ...


def create_dag(
    dag: pb.Dag,
    state: SchedulerState,
    metadata: Metadata,
    pins: PinPort,
    function_exists: Callable[[str], bool],
    rng: random.Random | None = None,
) -> pb.GenericResponse:
    rng = rng or random.Random()
    problem = shape_error(dag)
    if problem:
        return error_response(dag.name, pb.INVALID_REQUEST, problem)
    missing = [f for f in dag.functions if not function_exists(f)]
    if missing:
        return error_response(dag.name, pb.FUNC_NOT_FOUND, f"unregistered functions: {missing}")
    if not _claim_name(dag, state, metadata, pins):
        return error_response(dag.name, pb.DAG_ALREADY_EXISTS, f"DAG {dag.name!r} exists")

    pinned: list[pb.PinRecord] = []
    tried: set[str] = set()
    for function in dag.functions:
        record = pin_function(dag.name, function, state, metadata, pins, tried, rng)
        if record is None:
            for done in pinned:
                pins.unpin(done.worker_id, done.dag_name, done.function_name)
                metadata.release_pin(done)
                state.pins.pop(done.worker_id, None)
            metadata.delete_dag(dag.name)
            return error_response(
                dag.name, pb.NO_RESOURCES,
                f"not enough free workers to pin {len(dag.functions)} functions",
            )
        pinned.append(record)
    metadata.mark_dag_ready(dag)
    state.dags[dag.name] = pb.DagRecord(dag=dag, ready=True)
    return pb.GenericResponse(success=True, response_id=dag.name)


def _claim_name(dag: pb.Dag, state: SchedulerState, metadata: Metadata, pins: PinPort) -> bool:
    """Claims the DAG's name in etcd. A half-created DAG whose creating scheduler died is
    cleared first (its request was redelivered here)."""
    if dag.name in state.dags and state.dags[dag.name].ready:
        return False
    if metadata.create_dag(dag, state.scheduler_id):
        return True
    existing = metadata.get_dag(dag.name)
    if existing is None or existing.ready or is_alive_creator(existing, state):
        return False
    remove_dag(dag.name, state, metadata, pins)
    return metadata.create_dag(dag, state.scheduler_id)


def is_alive_creator(record: pb.DagRecord, state: SchedulerState) -> bool:
    return record.creator == state.scheduler_id or record.creator in state.schedulers


def pin_function(
    dag_name: str,
    function: str,
    state: SchedulerState,
    metadata: Metadata,
    pins: PinPort,
    tried: set[str],
    rng: random.Random,
) -> pb.PinRecord | None:
    """Pins `function` on some free worker not tried yet; None when none accepts."""
    while True:
        candidates = [w for w in state.free_workers() if w not in tried]
        if not candidates:
            return None
        worker_id = rng.choice(candidates)
        # Either way this worker is used up for this DAG: it now holds our function or
        # rejected because it holds another one.
        tried.add(worker_id)
        if not metadata.claim_pin(worker_id, dag_name, function):
            continue  # another scheduler pinned it a moment ago
        record = pb.PinRecord(dag_name=dag_name, function_name=function, worker_id=worker_id)
        if pins.pin(worker_id, dag_name, function):
            state.pins[worker_id] = record
            return record
        metadata.release_pin(record)


def delete_dag(
    name: str, state: SchedulerState, metadata: Metadata, pins: PinPort
) -> pb.GenericResponse:
    record = state.dags.get(name) or metadata.get_dag(name)
    if record is None:
        return error_response(name, pb.NO_SUCH_DAG, f"no DAG named {name!r}")
    remove_dag(name, state, metadata, pins)
    return pb.GenericResponse(success=True, response_id=name)


def remove_dag(name: str, state: SchedulerState, metadata: Metadata, pins: PinPort) -> None:
    """Unpins every function of a DAG and deletes it and its pins from etcd."""
    for pin in metadata.pins():
        if pin.dag_name == name:
            pins.unpin(pin.worker_id, pin.dag_name, pin.function_name)
            metadata.release_pin(pin)
            state.pins.pop(pin.worker_id, None)
    metadata.delete_dag(name)
    state.dags.pop(name, None)


def call_dag(
    dag_call: pb.DagCall,
    reply_to: str | None,
    state: SchedulerState,
    out: Outbox,
    now: float | None = None,
) -> pb.GenericResponse:
    """Sends each function's worker a DagSchedule and each source a BEGIN trigger.

    Every scheduling gets a fresh schedule id, even for a re-sent call, so that joins left by
    an earlier attempt never mix with this one; the call id ties attempts together (replies,
    and the write-once result).
    """
    schedule_id = str(uuid.uuid4())
    call_id = dag_call.call_id or schedule_id
    response_id = dag_call.output_key or call_id
    address = reply_to or dag_call.response_address
    record = state.dags.get(dag_call.name)
    failure = None
    if record is None or not record.ready:
        failure = error_response(
            response_id, pb.NO_SUCH_DAG, f"no DAG named {dag_call.name!r}", call_id=call_id
        )
    else:
        locations = state.dag_locations(dag_call.name)
        lost = [f for f in record.dag.functions if f not in locations]
        if lost:
            failure = error_response(
                response_id, pb.NO_RESOURCES, f"no live worker holds functions {lost}",
                call_id=call_id,
            )
    if failure is not None:
        out.reply(address, failure)
        if not dag_call.direct_response:
            out.store_result(
                ResultWrite(response_id, failure.value, call_id, not dag_call.output_key)
            )
        return failure

    assert record is not None
    dag = record.dag
    schedule = pb.DagSchedule(
        id=schedule_id,
        call_id=call_id,
        start_time=time.time() if now is None else now,
        consistency=dag_call.consistency,
        output_key=dag_call.output_key,
        response_address=address or "",
        client_id=dag_call.client_id,
        direct_response=dag_call.direct_response,
        snapshot_revision=(dag_call.snapshot_revision or state.revision)
        if dag_call.consistency == pb.MULTI else 0,
        min_revision=dag_call.min_revision,
    )
    schedule.dag.CopyFrom(dag)
    for function in dag.functions:
        schedule.locations[function] = locations[function]
        if function in dag_call.function_args:
            schedule.arguments[function].CopyFrom(dag_call.function_args[function])
    for function in dag.functions:
        one = pb.DagSchedule()
        one.CopyFrom(schedule)
        one.target_function = function
        one.triggers.extend(upstreams(dag, function) or [BEGIN])
        out.send(state.names.worker(locations[function]), pb.Message(schedule=one))
    ref = call_ref(schedule)
    for source in sources(dag):
        trigger = pb.DagTrigger(id=schedule_id, source=BEGIN, target_function=source, call=ref)
        out.send(state.names.worker(locations[source]), pb.Message(trigger=trigger))
    return pb.GenericResponse(success=True, response_id=response_id, call_id=call_id)
