"""Batching functions: many calls, one invocation.

A function registered with `batching=True` (or listed in a DAG's `batching_functions`) takes a
list of argument tuples and returns a list of results, one per tuple, in order. The worker
gathers the calls of such a function that wait for it: those in the delivery in hand, those
the broker has handed it already, and whatever arrives within the function's
`batch_linger_s`, up to its `batch_size` (`BatchGatherer`, gatherer.py). It runs them in
one invocation *before* the message cycle takes the deliveries one by one; each call's
handler then finds its outcome in `WorkerState.batched` instead of running the function, and
its outcome is stored and answered like any other (write-once, under its call id). The
deliveries are acked only after that, so a worker killed mid-batch has every call of the batch
delivered again; one that had an outcome already answers with it.

What joins a batch: calls and single-upstream DAG steps (NORMAL consistency) that are not
copies which may have run already (redelivered, re-sent, moved from a dead worker): those run
alone, after their stored outcome is looked up. Everything else of a batching function
(MULTI steps, fan-ins, a cancelled call, a call whose arguments cannot be read) runs alone too
-- as a batch of one, so the function always sees a list.

The same call delivered twice (not marked as a copy that may have run) joins a batch once, and
both deliveries are answered with its one outcome (they all read WorkerState.batched, which is
emptied once the group of deliveries is done).

A batch that raises, or returns something that is not a list of the right length, fails
every call in it with EXECUTION_ERROR saying so. The function's time limit bounds the whole
invocation; a cancel of one call does not interrupt a batch (the call's outcome is CANCELLED
all the same, whichever is stored first).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from droplet.errors import DropletError, SnapshotExpired, StoreError
from droplet.graph import BEGIN, OUTPUT, upstreams
from droplet.proto import envelope, pb
from droplet.proto.replies import error_value
from droplet.resources import DEFAULT_BATCH_SIZE, DEFAULT_LINGER_S, MAX_BATCH_SIZE, MAX_LINGER_S
from droplet.signing import Signer
from droplet.store import serializer
from droplet.worker.executor import run_function
from droplet.worker.functions import LoadedFunction
from droplet.worker.library import RunContext, RunOutcome
from droplet.worker.tags import misplaced, trigger_misplaced

if TYPE_CHECKING:
    from droplet.worker.handlers import WorkerState


class BatchResultError(ValueError):
    """A batching function returned something other than one result per call."""


@dataclass
class BatchItem:
    """One call (or DAG step) of a batch: its key in WorkerState.batched, and its arguments."""

    key: tuple[str, str]  # (function, call id)
    arguments: Sequence[pb.Value]
    extra: list[Any] = field(default_factory=list)  # an upstream's result (DAG steps)


def is_batching(function: LoadedFunction | None, dag: pb.Dag | None = None) -> bool:
    if function is None:
        return False
    return function.spec.batching or (dag is not None and function.name in dag.batching_functions)


def batch_size(function: LoadedFunction) -> int:
    return min(MAX_BATCH_SIZE, function.spec.batch_size or DEFAULT_BATCH_SIZE)


def linger_s(function: LoadedFunction) -> float:
    """The registered linger, read within range: a record the client did not check (NaN,
    infinity, negative) would otherwise keep the worker gathering forever."""
    linger = function.spec.batch_linger_s
    if not linger > 0:  # 0 (not given), negative or NaN
        return DEFAULT_LINGER_S
    return min(linger, MAX_LINGER_S)


def one_at_a_time(run: Callable[..., Any]) -> Callable[..., Any]:
    """A batching function called for one call: a batch of one, its one result."""

    def single(lib: Any, *args: Any) -> Any:
        results = run(lib, [tuple(args)])
        return checked_results(results, 1)[0]

    return single


def checked_results(results: Any, expected: int) -> list[Any]:
    if not isinstance(results, (list, tuple)):
        raise BatchResultError(
            f"a batching function returns a list of results, not {type(results).__name__}")
    if len(results) != expected:
        raise BatchResultError(
            f"the batching function returned {len(results)} results for {expected} calls")
    return list(results)


def batch_item(message: pb.Message, state: WorkerState) -> BatchItem | None:
    """The message as a member of a batch, when it may join one (see the module's notes):
    a call, or a DAG trigger that lets its step run alone, of a batching function."""
    kind = message.WhichOneof("kind")
    if kind == "call":
        call = message.call
        if (call.maybe_done or not is_batching(_loaded(state, call.name))
                or misplaced(call, state) is not None):  # it goes back, it does not run here
            return None
        return BatchItem((call.name, call.call_id or call.response_key), call.arguments.values)
    if kind != "trigger" or not message.trigger.HasField("schedule"):
        return None
    trigger = message.trigger
    schedule = trigger.schedule
    target = trigger.target_function
    if (target == OUTPUT or trigger.aborted or trigger.rerouted_since
            or schedule.consistency != pb.NORMAL or schedule.client_id
            or [trigger.source] != (upstreams(schedule.dag, target) or [BEGIN])
            or not is_batching(_loaded(state, target), schedule.dag)
            or trigger_misplaced(trigger, state)):  # it goes back, it does not run here
        return None
    try:
        extra = [] if trigger.source == BEGIN else [serializer.load(trigger.result)]
    except Exception:
        return None  # the step finds out alone, and says so
    return BatchItem((target, schedule.call_id or schedule.id),
                     schedule.arguments[target].values, extra)


def _loaded(state: WorkerState, name: str) -> LoadedFunction | None:
    try:
        return state.functions.get(name)
    except StoreError:
        raise
    except DropletError:
        return None


def run_batch(state: WorkerState, name: str, items: Sequence[BatchItem]) -> int:
    """Runs the items in one invocation and leaves each one's outcome in state.batched;
    returns how many ran. An item left out (cancelled, arguments unreadable) runs alone."""
    from droplet.worker.handlers import resolve_arguments  # (handlers imports this module)

    function = _loaded(state, name)
    if function is None:
        return 0
    context = RunContext()
    lib = state.library.for_run(context)
    members: list[tuple[BatchItem, tuple[Any, ...]]] = []
    seen: set[tuple[str, str]] = set()
    for item in items:
        if item.key in seen or item.key in state.batched:
            continue  # a duplicate delivery of a call: it gets the outcome of the one run
        seen.add(item.key)
        if state.cancels.is_cancelled(item.key[1]):
            continue
        try:
            members.append((item, tuple(resolve_arguments(item.arguments, lib) + item.extra)))
        except StoreError:
            raise
        except (Exception, SnapshotExpired):
            continue  # it runs alone, and fails there as any call would
    if not members:
        return 0
    results: list[Any] = []

    def invoke(lib: Any) -> None:
        results.extend(checked_results(function.run(lib, [args for _, args in members]),
                                       len(members)))

    limit = function.spec.time_limit_s or state.default_time_limit_s
    state.calls_total += len(members)
    started = time.perf_counter()
    state.deadline = time.monotonic() + limit if limit > 0 else None
    try:
        failure, raised = run_function(invoke, lib, [], limit)
    finally:
        state.deadline = None
    each_s = (time.perf_counter() - started) / len(members)
    retryable = bool(raised) and any(n in set(function.spec.retry_on) for n in raised)
    for index, (item, _args) in enumerate(members):
        if failure.type == pb.ERROR:
            value = failure
        else:
            try:
                value = serializer.dump(results[index])
            except DropletError as exc:
                value = error_value(pb.EXECUTION_ERROR, f"the result cannot be serialized: {exc}")
        if value.type == pb.ERROR:
            state.errors_total += 1
        state.middleware.after_run(name, each_s, value)
        state.batched[item.key] = RunOutcome(value, context, retryable)
    return len(members)


_UNVERIFIED = Signer(None)


def batches(stored_function: bytes | None) -> bool:
    """Whether a function record read from etcd says it batches -- unverified, since it only
    tells the worker that deliveries are worth looking into for batches (the run itself uses
    the verified registration)."""
    try:
        return bool(stored_function) and pb.Function.FromString(
            _UNVERIFIED.open(stored_function or b"")).batching
    except Exception:
        return False


def items_of(body: bytes, signer: Signer, state: WorkerState,
             maybe_run: bool) -> dict[str, list[BatchItem]]:
    """The batch items of a delivery, by function (none when it may have run before, or does
    not verify: it then goes through the cycle as it is, and is refused there). The service
    looks into deliveries only once this worker knows of a batching function (state.batching)
    or the sender marked the delivery (BATCHING_HEADER): the others pay nothing."""
    if maybe_run:
        return {}
    try:
        messages = envelope.decode(body, signer)
    except DropletError:
        return {}
    found: dict[str, list[BatchItem]] = {}
    for message in messages:
        item = batch_item(message, state)
        if item is not None:
            found.setdefault(item.key[0], []).append(item)
    return found


class Gathering:
    """The batches a worker is gathering from the deliveries it took: full when every
    function has `batch_size` calls, over when the longest linger of them has passed."""

    def __init__(self, state: WorkerState, first: dict[str, list[BatchItem]]) -> None:
        self.state = state
        self.items = first
        self._sizes: dict[str, int] = {}
        linger = 0.0
        for name in first:
            function = _loaded(state, name)
            if function is not None:
                self._sizes[name] = batch_size(function)
                linger = max(linger, linger_s(function))
        self.deadline = time.monotonic() + linger

    def wants(self, more: dict[str, list[BatchItem]]) -> bool:
        """Whether a delivery with these items joins (it has calls of a function whose batch
        is not full yet)."""
        return any(name in self.items and len(self.items[name]) < self._sizes.get(name, 0)
                   for name in more)

    def add(self, more: dict[str, list[BatchItem]]) -> None:
        for name, items in more.items():
            self.items.setdefault(name, []).extend(items)

    def full(self) -> bool:
        return all(len(self.items[n]) >= size for n, size in self._sizes.items())

    def run(self) -> int:
        """Runs every batch (in invocations of at most batch_size); how many calls ran."""
        ran = 0
        for name, items in self.items.items():
            size = self._sizes.get(name, 0)
            for start in range(0, len(items), size or 1):
                ran += run_batch(self.state, name, items[start:start + (size or 1)])
        return ran
