"""Worker handlers for function calls and for the pin protocol.

Plain functions of (message, WorkerState, Outbox): the outcome of a call is handed to the
outbox (reply to the caller, result for the store) and the service loop makes it happen.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from droplet.broker_config.names import QueueNames
from droplet.errors import DropletError, StoreError
from droplet.outbox import INLINE_REPLY_BYTES, Outbox, deliver_outcome
from droplet.proto import pb
from droplet.store import serializer
from droplet.worker.executor import error_value, run_function
from droplet.worker.functions import FunctionCache, LoadedFunction
from droplet.worker.joins import ScheduleTable
from droplet.worker.library import CallContext, UserLibrary


@dataclass
class WorkerState:
    worker_id: str
    names: QueueNames
    functions: FunctionCache
    library: UserLibrary
    schedules: ScheduleTable
    # The pin record in etcd for this worker, read when a pin request arrives.
    pin_record: Callable[[], pb.PinRecord | None]
    default_time_limit_s: float = 0.0
    pinned: tuple[str, str] | None = None  # (dag, function)
    calls_total: int = 0
    errors_total: int = 0
    # When the function running now must be stopped, hard (see keeper.py); None: no limit.
    deadline: float | None = None
    # Told of every run: (function, seconds, outcome); the service feeds its metrics with it.
    observe: Callable[[str, float, pb.Value], None] | None = None


def resolve_arguments(values: Any, lib: UserLibrary) -> list[Any]:
    """Deserializes arguments, replacing each DropletReference with its stored value."""
    args: list[Any] = []
    for value in values:
        if value.type == pb.REFERENCE:
            args.append(lib.get(value.body.decode()))
        elif value.type == pb.RAW_REFERENCE:
            args.append(lib.get_raw(value.body.decode()))
        else:
            args.append(serializer.load(value))
    return args


def lookup(state: WorkerState, name: str) -> tuple[LoadedFunction | None, pb.Value | None]:
    """The loaded function, or the ERROR value that a call of it must answer with."""
    try:
        function = state.functions.get(name)
    except StoreError:
        raise  # etcd is away: the call waits in its queue rather than fail
    except DropletError as exc:
        return None, error_value(exc.code or pb.EXECUTION_ERROR, str(exc))
    if function is None:
        return None, error_value(pb.FUNC_NOT_FOUND, f"no function named {name!r}")
    return function, None


def execute(
    state: WorkerState, name: str, arguments: Any, extra: list[Any],
    context: CallContext | None = None,
) -> pb.Value:
    """Runs a registered function; every failure comes back as an ERROR value."""
    return run(state, name, arguments, extra, context)[0]


def run(
    state: WorkerState, name: str, arguments: Any, extra: list[Any],
    context: CallContext | None = None,
) -> tuple[pb.Value, bool]:
    """The outcome, and whether the function's retry policy asks for another attempt."""
    state.library.begin(context or CallContext())
    function, failure = lookup(state, name)
    if function is None:
        assert failure is not None
        return failure, False
    try:
        args = resolve_arguments(arguments, state.library) + extra
    except DropletError as exc:
        return error_value(pb.EXECUTION_ERROR, f"cannot resolve arguments: {exc}"), False
    limit = function.spec.time_limit_s or state.default_time_limit_s
    state.calls_total += 1
    started = time.perf_counter()
    state.deadline = time.monotonic() + limit if limit > 0 else None
    try:
        value, raised = run_function(function.run, state.library, args, limit)
    finally:
        state.deadline = None
    if value.type == pb.ERROR:
        state.errors_total += 1
    if state.observe is not None:
        state.observe(name, time.perf_counter() - started, value)
    retry_on = set(function.spec.retry_on)
    return value, bool(raised) and any(n in retry_on for n in raised)


def retry_delay_s(spec: pb.Function, attempt: int) -> float:
    """Exponential back-off: retry_backoff_s, then twice that, and so on."""
    backoff_s = float(spec.retry_backoff_s or 1.0)
    return backoff_s * float(2**attempt)


def exec_function(
    call: pb.FunctionCall, state: WorkerState, out: Outbox, redelivered: bool = False
) -> pb.Value:
    """Runs a call. One that may have run already (redelivered by the broker, or sent again
    by its client after a reconnect) first looks for its stored result: found, it is only
    delivered again, not run twice."""
    if (redelivered or call.maybe_done) and not call.direct_response:
        done = state.library.stored_result(call.response_key)
        if done is not None:
            _deliver_call(call, done, out, store=False)
            return done
    value, retryable = run(state, call.name, call.arguments.values, [])
    function = state.functions.get(call.name) if retryable else None
    if function is not None and call.attempt < function.spec.max_retries:
        again = pb.FunctionCall()
        again.CopyFrom(call)
        again.attempt = call.attempt + 1
        delay_ms = int(retry_delay_s(function.spec, call.attempt) * 1000)
        out.send(state.names.retry(delay_ms), pb.Message(call=again))
        return value
    _deliver_call(call, value, out, store=not call.direct_response)
    return value


def _deliver_call(call: pb.FunctionCall, value: pb.Value, out: Outbox, store: bool) -> None:
    deliver_outcome(
        out,
        response_id=call.response_key,
        value=value,
        call_id=call.call_id or call.response_key,
        response_address=call.response_address,
        store=store,
        expires=True,
        inline_limit_bytes=INLINE_REPLY_BYTES,
    )


def pin(
    request: pb.PinRequest,
    reply_to: str | None,
    correlation_id: str | None,
    state: WorkerState,
    out: Outbox,
) -> bool:
    """Accepts a pin when nothing is pinned here and etcd records this very pin."""
    accepted = _may_pin(request, state)
    if accepted:
        state.pinned = (request.dag_name, request.function_name)
    response = pb.GenericResponse(success=accepted, response_id=request.function_name)
    if not accepted:
        response.error = pb.NO_RESOURCES
    out.reply(reply_to, response, correlation_id=correlation_id)
    return accepted


def _may_pin(request: pb.PinRequest, state: WorkerState) -> bool:
    if state.pinned is not None:
        return False
    record = state.pin_record()
    if record is None or (record.dag_name, record.function_name) != (
        request.dag_name, request.function_name,
    ):
        return False
    function, _ = lookup(state, request.function_name)
    return function is not None


def unpin(request: pb.UnpinRequest, state: WorkerState) -> bool:
    if state.pinned == (request.dag_name, request.function_name):
        state.pinned = None
        return True
    return False
