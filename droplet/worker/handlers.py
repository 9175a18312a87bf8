"""Worker handlers for function calls and for the pin protocol.

Plain functions of (message, WorkerState, Outbox): the outcome of a call is handed to the
outbox (stored write-once under the call id, and answered) and the message cycle makes it
happen. A call that may have run already (redelivered, re-sent, placed again) first looks up
its stored outcome and, when there is one, only answers with it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from droplet.broker_config.names import QueueNames
from droplet.errors import DropletError, SnapshotExpired, StoreError
from droplet.middleware import Chain, Middleware
from droplet.outbox import Outbox, deliver
from droplet.proto import pb
from droplet.proto.replies import error_value, stamp
from droplet.settings import MAX_MESSAGE_BYTES
from droplet.store import serializer
from droplet.store.blobs import Damaged
from droplet.store.keys import StoreKeys
from droplet.tracing import NO_TRACING, Tracing
from droplet.worker.batching import one_at_a_time
from droplet.worker.cancel import Cancellations, cancelled_value
from droplet.worker.executor import run_function
from droplet.worker.functions import FunctionCache, LoadedFunction
from droplet.worker.joins import JoinRecords
from droplet.worker.library import Library, RunContext, RunOutcome, UserLibrary
from droplet.worker.tags import misplaced


@dataclass
class WorkerState:
    worker_id: str
    names: QueueNames
    keys: StoreKeys
    functions: FunctionCache
    library: Library
    joins: JoinRecords
    # The stored outcome of a call id (None: none yet): what a duplicate run answers with.
    stored_outcome: Callable[[str], pb.Value | None]
    # The pin record in etcd for this worker, read when a pin request arrives.
    pin_record: Callable[[], pb.PinRecord | None]
    default_time_limit_s: float = 0.0
    multi_max_attempts: int = 10
    schedule_ttl_s: float = 86400.0  # fan-in partials live this long
    max_message_bytes: int = MAX_MESSAGE_BYTES  # what one message may carry (a step's trigger)
    pinned: tuple[str, str] | None = None  # (dag, function)
    # The pinned DAG's definition, read at the first client trigger after a pin was taken
    # (worker/direct.py): a DAG deleted and registered again under its name is told apart.
    dag_record: Callable[[str], pb.DagRecord | None] = lambda _name: None
    pinned_dag: pb.Dag | None = None
    calls_total: int = 0
    errors_total: int = 0
    # When the function running now must be stopped, hard (see keeper.py); None: no limit.
    deadline: float | None = None
    middleware: Middleware = field(default_factory=Chain)
    tracing: Tracing = NO_TRACING  # spans of runs whose call carries a trace context
    # Calls cancelled (a mirror of cancels/) and the interruption of the running one.
    cancels: Cancellations = field(default_factory=Cancellations)
    # This worker's resource tags (droplet/resources.py), published in its status record.
    resources: dict[str, float] = field(default_factory=dict)
    # Outcomes of calls run already in a batch (worker/batching.py), by (function, call id):
    # the handler of each call takes its outcome from here instead of running it.
    batched: dict[tuple[str, str], RunOutcome] = field(default_factory=dict)
    # Functions known to batch (registered so, or listed so by a DAG a step of which ran here):
    # only while there are any does the worker look into deliveries for batches.
    batching: set[str] = field(default_factory=set)


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


def run(state: WorkerState, name: str, arguments: Any, extra: list[Any],
        context: RunContext | None = None,
        trace_context: Mapping[str, str] | None = None, call_id: str = "",
        race_id: str = "", batching: bool = False) -> RunOutcome:
    """Runs a registered function; every failure comes back as an ERROR value. A call
    (call_id: the plain call's, or the DAG call's for a step) cancelled already does not run;
    one cancelled while it runs is interrupted (worker/cancel.py), and so is a speculative
    copy whose race (race_id) another copy won. A batching function (`batching`: listed so
    by its DAG) that ran no batch here runs as a batch of one."""
    context = context or RunContext()
    if state.cancels.is_cancelled(call_id):
        return RunOutcome(cancelled_value(), context)
    ran = state.batched.get((name, call_id))
    if ran is not None:  # ran in a batch already (worker/batching.py); kept (not popped) so
        return ran  # that a duplicate delivery in the same group answers the same
    function, failure = lookup(state, name)
    if function is None:
        assert failure is not None
        return RunOutcome(failure, context)
    lib = state.library.for_run(context)
    try:
        args = resolve_arguments(arguments, lib) + extra
    except Damaged as exc:  # never readable (a chunk rewritten): fails as a bad signature does
        return RunOutcome(error_value(pb.UNAUTHORIZED, f"cannot resolve arguments: {exc}"),
                          context)
    except StoreError:
        raise
    except DropletError as exc:
        return RunOutcome(error_value(pb.EXECUTION_ERROR, f"cannot resolve arguments: {exc}"),
                          context)
    except SnapshotExpired as exc:
        return RunOutcome(error_value(pb.CONFLICT, f"the call's snapshot is gone: {exc}"),
                          context)
    limit = function.spec.time_limit_s or state.default_time_limit_s
    if batching or function.spec.batching:
        state.batching.add(name)
    state.calls_total += 1
    state.middleware.before_run(name)
    started = time.perf_counter()
    state.deadline = time.monotonic() + limit if limit > 0 else None
    body = one_at_a_time(function.run) if batching or function.spec.batching else function.run
    interrupt = state.cancels.interruptible(call_id, race_id) if call_id else None
    try:
        if not (state.tracing.enabled and trace_context):  # untraced: no span to enter
            value, raised = run_function(body, lib, args, limit, interrupt)
        else:
            with state.tracing.run(name, trace_context) as span:
                value, raised = run_function(body, lib, args, limit, interrupt)
                if span is not None and value.type == pb.ERROR:
                    state.tracing.failed(span, pb.ErrorInfo.FromString(value.body).message)
    finally:
        state.deadline = None
        state.cancels.settle()
    if value.type == pb.ERROR:
        state.errors_total += 1
    state.middleware.after_run(name, time.perf_counter() - started, value)
    retry_on = set(function.spec.retry_on)
    return RunOutcome(value, context, bool(raised) and any(n in retry_on for n in raised))


def retry_delay_s(spec: pb.Function, attempt: int) -> float:
    """Exponential back-off: retry_backoff_s, then twice that, and so on."""
    backoff_s = float(spec.retry_backoff_s or 1.0)
    return backoff_s * float(2**attempt)


def exec_function(
    call: pb.FunctionCall, state: WorkerState, out: Outbox, redelivered: bool = False
) -> pb.Value:
    """Runs a call, unless it has an outcome already (then it is only answered again)."""
    call_id = call.call_id or call.response_key
    if (redelivered or call.maybe_done) and not call.direct_response:
        done = state.stored_outcome(call_id)
        if done is not None:
            _answer(call, call_id, done, out, store=False)
            return done
    elsewhere = misplaced(call, state)
    if elsewhere is not None:  # needs tags this worker lacks: a scheduler places it
        out.send(state.names.calls, pb.Message(call=elsewhere))
        return pb.Value()
    traced = len(call.trace)  # stamps only on a traced call (checked here: no call each)
    if traced:
        stamp(call.trace, "worker.start")
    outcome = run(state, call.name, call.arguments.values, [],
                  trace_context=call.trace_context, call_id=call_id)
    if traced:
        stamp(call.trace, "worker.end")
    function = state.functions.get(call.name) if outcome.retryable else None
    if function is not None and call.attempt < function.spec.max_retries:
        again = pb.FunctionCall()
        again.CopyFrom(call)
        again.attempt = call.attempt + 1
        again.maybe_done = False
        delay_ms = int(retry_delay_s(function.spec, call.attempt) * 1000)
        out.send(state.names.retry(delay_ms), pb.Message(call=again))
        return outcome.value
    _answer(call, call_id, outcome.value, out, store=not call.direct_response)
    return outcome.value


def _answer(call: pb.FunctionCall, call_id: str, value: pb.Value, out: Outbox,
            store: bool) -> None:
    deliver(out, call_id=call_id, response_id=call.response_key or call_id, value=value,
            address=call.response_address, store=store, keep=call.keep_result,
            trace=call.trace)


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
        state.pinned_dag = None  # read again: this may be a new DAG of the same name
    response = pb.GenericResponse(success=accepted, response_id=request.function_name,
                                  call_id=correlation_id or "")
    if not accepted:
        response.error = pb.NO_RESOURCES
    out.reply(reply_to, response, correlation_id=correlation_id)
    return accepted


def _may_pin(request: pb.PinRequest, state: WorkerState) -> bool:
    wanted = (request.dag_name, request.function_name)
    record = state.pin_record()
    if record is None or (record.dag_name, record.function_name) != wanted:
        return False
    if state.pinned is not None and state.pinned != wanted:
        return False
    function, _ = lookup(state, request.function_name)
    return function is not None


def unpin(request: pb.UnpinRequest, state: WorkerState) -> bool:
    if state.pinned == (request.dag_name, request.function_name):
        state.pinned = None
        state.pinned_dag = None
        return True
    return False
