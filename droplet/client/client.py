"""The user API: register functions and DAGs, call them, and read and write stored values."""

from __future__ import annotations

import builtins
import functools
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from droplet.broker.interface import ConnectionFactory
from droplet.broker_config.names import QueueNames
from droplet.client import dagspecs, forks
from droplet.client.admin import AdminRequests
from droplet.client.batcher import CallBatcher
from droplet.client.cancel import cancel_call
from droplet.client.checks import checked_key, checked_name, checked_prefix, checked_size
from droplet.client.dagcalls import build_dag_call, send_dag_call
from droplet.client.dagroutes import DagRoutes
from droplet.client.dagspecs import ContinuationStep, FunctionEntry, dag_functions, describe
from droplet.client.delays import delayed_call, send_delayed
from droplet.client.function import DropletFunction
from droplet.client.future import DropletFuture
from droplet.client.lifecycle import close_parts, close_soon, send_calls
from droplet.client.mapping import map_calls
from droplet.client.pump import ReplyPump
from droplet.client.registration import function_spec
from droplet.client.routing import CallRouter
from droplet.client.sessions import SessionFloors
from droplet.client.tagging import checked_needs, dag_options, registration_options
from droplet.client.traces import CallTraces
from droplet.errors import (
    DropletError,
    FunctionNotFoundError,
    InvalidArgumentError,
    RequestError,
    ValueTooLargeError,
    error_from_info,
)
from droplet.priority import checked_priority
from droplet.proto import pb
from droplet.resources import DEFAULT_BATCH_SIZE, DEFAULT_LINGER_S
from droplet.settings import Settings
from droplet.signing import Signer
from droplet.store import serializer
from droplet.store.commits import Committer
from droplet.store.kv import KV
from droplet.store.metadata import Metadata, function_too_large
from droplet.store.values import ValueStore
from droplet.tracing import Tracing

_name = checked_name
_key = checked_key


class DropletClient:
    def __init__(self, settings: Settings, kv: KV, connect: ConnectionFactory) -> None:
        self.settings = settings
        self.names = QueueNames.of(settings)
        self.signer = Signer(settings.signing_key)
        self.kv = kv
        self.values = ValueStore(kv, settings)
        self.metadata = Metadata(kv, settings, self.signer)
        self.pump = ReplyPump(connect, self.names, self.signer)
        self.admin = AdminRequests(self.pump, self.names, self.signer, settings)
        self.committer = Committer(self.values, settings.etcd_max_txn_ops)
        self.router = CallRouter(kv, self.metadata.keys, self.names, self.signer,
                                 self.pump.send, settings.max_message_bytes,
                                 self.pump.in_flight,
                                 transient_direct=not settings.broker_cluster)
        self.dag_routes = DagRoutes(self.metadata, max_message_bytes=settings.max_message_bytes)
        # What calls are sent through (the batcher, map, the asyncio client): bound to the
        # parts, not to the client, which the batcher's thread would keep alive.
        self._send_calls = functools.partial(send_calls, self.router, self.committer, self.pump)
        self.batcher = CallBatcher(self._send_calls, saturated=self.router.saturated)
        self.traces = CallTraces(Tracing(settings.tracing, "droplet-client"))
        if self.traces.enabled:
            self.pump.watcher = self.traces
        self._request_id = 0
        self.sessions = SessionFloors(kv.revision)
        self._closed = False
        self._forked = False  # a child's copy of the parent's client (client/forks.py)
        self._why_closed = "the client is closed: connect again (droplet.connect())"
        forks.track(self)
        # A client dropped unclosed (`droplet.connect().call("f", 1).get()`) kept its threads
        # and its broker and etcd connections for the life of the process: 4 sockets and 2
        # threads each. Nothing of it refers back to it (the batcher sends through its
        # parts), so it is collected, and then its parts are closed (on a thread of their
        # own: collection may happen wherever, inside a lock of theirs too), its batcher's
        # calls sent first. Not at exit: as before.
        parts = (self.batcher, self.router, self.dag_routes, self.pump, self.kv)
        self._closer = weakref.finalize(self, close_soon, parts)
        self._closer.atexit = False

    def ensure_open(self) -> None:
        """Requests that go to etcd alone (stored values, list, cancel, DAG admin) refuse a
        closed client as calls do: they used to open a new etcd connection, never closed."""
        if self._closed:
            raise DropletError(self._why_closed)

    def disown(self) -> None:
        """In a child forked after this client connected (client/forks.py): refuse every
        use, and leave the connections, which are the parent's, to the parent."""
        self._closed = self._forked = True
        self._why_closed = forks.FORKED
        self.pump.disown(forks.FORKED)
        self._closer.detach()

    def __enter__(self) -> DropletClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._forked:
            return  # nothing here is this process's to close (a close frame on the
            # parent's socket ended the parent's broker connection)
        self._closed = True
        self._closer.detach()
        close_parts(self.batcher, self.router, self.dag_routes, self.pump, self.kv)

    # -- functions -------------------------------------------------------------------------

    def register(
        self,
        function: Callable[..., Any] | type,
        name: str,
        *,
        init_args: Sequence[Any] = (),
        time_limit_s: float = 0.0,
        retries: int = 0,
        retry_on: Sequence[type[BaseException]] = (Exception,),
        retry_backoff_s: float = 1.0,
        direct_response: bool = False,
        priority: int = 0,
        resources: Mapping[str, float] | None = None,
        batching: bool = False,
        batch_size: int = DEFAULT_BATCH_SIZE,
        batch_linger_ms: float = DEFAULT_LINGER_S * 1000,
    ) -> DropletFunction:
        """Registers a function `f(lib, *args)`, or a class whose instances (built once per
        worker with `init_args`) are called through `run(self, lib, *args)`.

        `time_limit_s` stops a call that runs longer (TIMEOUT). With `retries`, a call that
        raises one of `retry_on` runs again, up to that many more times, after
        `retry_backoff_s`, then twice that, and so on; the caller sees only the last outcome.
        With `direct_response`, calls through the returned handle answer without storing
        their results (see call_direct). Calls through the handle carry `priority` (0 ..
        max_priority; see droplet/priority.py for what it promises).

        `resources` ({"gpu": 1}): only workers with at least these tags run its calls
        (NO_RESOURCES when no live worker has them). With `batching`, the function takes a
        list of argument tuples and returns a list of results: a worker runs up to
        `batch_size` waiting calls in one invocation, waiting `batch_linger_ms` for more
        (client/tagging.py, worker/batching.py).
        """
        needs, batch = registration_options(resources, batching, batch_size, batch_linger_ms)
        name = _name("function", name)
        checked_priority(priority, self.settings.max_priority)
        spec = function_spec(function, name, init_args, time_limit_s, retries, retry_on,
                             retry_backoff_s, needs, batch)
        if why := function_too_large(spec):  # (a scheduler refuses it too)
            raise ValueTooLargeError(why)
        self.admin.checked(pb.Message(function=spec))
        return DropletFunction(name, self, direct_response, priority, resources=needs,
                               batching=batching)

    def call(self, name: str, *args: Any) -> DropletFuture:
        """Calls a registered function by name; the future's get() returns its result."""
        return self.submit(name, args)

    def call_direct(self, name: str, *args: Any) -> DropletFuture:
        """Like call(), but the result is only answered, not stored: faster, and what it
        gives up is that a call run twice (a redelivery, a re-send after a reconnect) is not
        recognised, and a caller that loses its connection loses the result."""
        return self.submit(name, args, direct=True)

    def submit(self, name: str, args: Sequence[Any], *, direct: bool = False,
               traced: bool = False, priority: int = 0,
               resources: Mapping[str, float] | None = None,
               batching: bool = False) -> DropletFuture:
        """A call with its options spelled out; `traced` stamps every stage it goes through
        (the future's `trace` after get(); what `droplet bench --breakdown` reads);
        `resources`: tags its worker must have; `batching`: its function batches (both
        place it through a scheduler: client/tagging.py)."""
        call = self._function_call(name, args)
        call.direct_response = direct
        call.priority = checked_priority(priority, self.settings.max_priority)
        call.resources.update(checked_needs(resources))
        call.batching = batching
        if traced and not len(call.trace):
            call.trace.add(stage="client.send", at_s=time.time())
        future = DropletFuture(call.response_key, self, stored=not direct)
        weakref.finalize(future, self.pump.forget, call.response_key)
        self.batcher.add(call)
        return future

    def submit_delayed(self, name: str, args: Sequence[Any], *, delay_s: float | None = None,
                       at: datetime | float | None = None, priority: int = 0,
                       resources: Mapping[str, float] | None = None,
                       batching: bool = False) -> DropletFuture:
        """A call run after `delay_s` seconds, or at `at` (client/delays.py): it waits in
        the broker; its outcome is stored (never a direct response)."""
        call, due = delayed_call(self, name, args, delay_s, at, priority)
        call.resources.update(checked_needs(resources))
        call.batching = batching
        future = DropletFuture(call.response_key, self, due_at=due)
        weakref.finalize(future, self.pump.forget, call.response_key)
        send_delayed(self, call)
        return future

    def cancel(self, call_id: str) -> bool:
        """Cancels a call by its id (a future's `call_id`): queued, it never runs; running,
        it is interrupted; either way its outcome is CANCELLED. False when it finished first.
        See client/cancel.py for what decides a cancel racing a finish."""
        self.ensure_open()
        return cancel_call(self.committer, self.metadata.keys, call_id,
                           self.settings.cancel_keep_s)

    def exec_func(self, name: str, args: Sequence[Any]) -> str:
        """Calls a function; returns the key its result will be stored under (seed API),
        kept `result_ttl_s` for get_object."""
        call = self._function_call(name, args)
        call.keep_result = True
        self.batcher.add(call)
        self.batcher.flush()
        self.pump.release(call.response_key)  # in flight until answered: re-sent if lost
        return call.response_key

    def _function_call(self, name: str, args: Iterable[Any]) -> pb.FunctionCall:
        if self._closed:  # before the router reads etcd (a forked child's is the parent's)
            self.ensure_open()
        if isinstance(args, (str, bytes)) or not isinstance(args, Iterable):
            raise InvalidArgumentError("arguments are a sequence of values")
        self._request_id += 1
        call_id = uuid.uuid4().hex
        call = pb.FunctionCall(
            name=_name("function", name), request_id=self._request_id,
            response_key=call_id, call_id=call_id,
        )
        for arg in args:
            serializer.dump(arg, call.arguments.values.add())
        checked_size(call.arguments.ByteSize(), self.settings.max_message_bytes,
                     f"arguments of {name!r}")
        if self.traces.enabled:
            self.traces.begin(call_id, f"droplet.call {call.name}", call.trace,
                              call.trace_context)
        return call

    def map(
        self,
        function: DropletFunction | str,
        *iterables: Iterable[Any],
        chunk_size: int | None = None,
        window: int = 8192,
        timeout: float | None = None,
        progress: bool = False,
    ) -> Iterator[Any]:
        """Calls `function` on each item (or on zipped items of several iterables) and
        yields the results in order. Calls travel `chunk_size` to a message (128, or the
        window when smaller) and at most `window` are in flight, so an unbounded iterable
        streams; the first failed call raises its error when its turn to be yielded comes.
        Bad options raise here, not at the first result."""
        futures: Iterator[DropletFuture] = map_calls(self, function, iterables, chunk_size,
                                                     window, progress)
        return (future.get(timeout) for future in futures)

    def list(self, prefix: str | None = None) -> builtins.list[str]:
        """Names of the registered functions (those starting with prefix), sorted; DAGs are
        not listed (as in the original system)."""
        self.ensure_open()
        start = checked_prefix(prefix)
        return sorted(n for n in self.metadata.function_names() if n.startswith(start))

    def get_function(self, name: str) -> DropletFunction:
        """A handle on a function registered elsewhere (by another client or process);
        FunctionNotFoundError (FUNC_NOT_FOUND) when none is registered under that name."""
        self.ensure_open()
        name = _name("function", name)
        spec = self.metadata.get_function(name)
        if spec is None:
            raise FunctionNotFoundError(f"no function named {name!r} is registered")
        return DropletFunction(name, self, resources=dict(spec.resources),
                               batching=spec.batching)

    # -- stored values ---------------------------------------------------------------------

    def put_object(self, key: str, value: Any) -> None:
        self.ensure_open()
        self.values.put(_key(key), value)

    def get_object(self, key: str) -> Any:
        """The value under key, or None when there is none. A stored call error is raised."""
        self.ensure_open()
        value = self.values.get(_key(key))
        if isinstance(value, pb.ErrorInfo):
            raise error_from_info(value)
        return value

    def put_objects(self, values: Mapping[str, Any]) -> None:
        """Writes several values in one etcd transaction: readers see all of them or none."""
        self.ensure_open()
        if not isinstance(values, Mapping):
            raise InvalidArgumentError(f"put_objects() takes a mapping of keys to values, not "
                                       f"{type(values).__name__}")
        self.values.put_values({_key(k): serializer.dump(v) for k, v in values.items()})

    def get_objects(self, keys: Iterable[str]) -> dict[str, Any]:
        """One consistent read of several keys; missing keys map to None."""
        self.ensure_open()
        if isinstance(keys, (str, bytes)):  # (read as its letters: {"a": None, "b": None})
            raise InvalidArgumentError("get_objects() takes an iterable of keys, not one key "
                                       "(get_object(key) reads one)")
        wanted = [_key(k) for k in keys]
        found = self.values.get_values(wanted)
        return {k: serializer.load(found[k]) if k in found else None for k in wanted}

    def delete_object(self, key: str) -> None:
        self.ensure_open()
        self.values.delete(_key(key))

    # -- DAGs ------------------------------------------------------------------------------

    def register_dag(
        self, name: str, functions: Sequence[FunctionEntry],
        connections: Iterable[tuple[str, str]],
        gpu_functions: Iterable[str] = (), batching_functions: Iterable[str] = (),
        colocated: Sequence[Any] = (),
        resources: Mapping[str, Mapping[str, float]] | None = None,
    ) -> tuple[bool, int | None]:
        """Creates a DAG, pinning each function on its own worker: (True, None), or
        (False, error code) — FUNC_NOT_FOUND, DAG_ALREADY_EXISTS, NO_RESOURCES, INVALID_REQUEST.

        A function given as (name, invalid_results[, copies]) is speculative (see
        client/dagspecs.py). `gpu_functions` are pinned on workers tagged gpu >= 1,
        `resources` maps a function to the tags its worker needs; `batching_functions` run
        their steps in batches (a list of argument tuples in, a list of results out);
        `colocated` (a list of names, or of lists) are pinned on one host when possible
        (client/tagging.py)."""
        dag = pb.Dag(name=_name("DAG", name))
        names, speculative = dag_functions(functions, self.settings.speculative_copies)
        dag.functions.extend(names)
        dag.speculative.extend(speculative)
        for pair in connections:
            if not isinstance(pair, (tuple, builtins.list)) or len(pair) != 2:
                raise InvalidArgumentError(f"a connection is a (source, sink) pair, not {pair!r}")
            dag.connections.add(source=_name("function", pair[0]), sink=_name("function", pair[1]))
        dag_options(dag, gpu_functions, batching_functions, colocated, resources)
        dagspecs.checked_size(dag)
        registered = set(self.list())
        if any(f not in registered for f in dag.functions):
            return False, pb.FUNC_NOT_FOUND
        result = self.admin.result(pb.Message(dag=dag))
        self.dag_routes.forget(dag.name)  # the call after this one looks again
        return result

    def delete_dag(self, name: str) -> tuple[bool, int | None]:
        self.ensure_open()
        result = self.admin.result(pb.Message(delete_dag=pb.DeleteDag(name=_name("DAG", name))))
        self.dag_routes.forget(name)
        return result

    def call_dag(
        self,
        name: str,
        arg_map: Mapping[str, Sequence[Any]],
        direct_response: bool = False,
        consistency: int = pb.NORMAL,
        output_key: str | None = None,
        client_id: str | None = None,
        timeout: float | None = None,
        traced: bool = False,
        continuation: ContinuationStep | Sequence[ContinuationStep] | None = None,
        dry_run: bool = False,
    ) -> Any:
        """Runs a DAG. With direct_response the result is returned (waiting up to `timeout`);
        otherwise a DropletFuture for the result stored under output_key or the schedule id.
        `traced` stamps every stage (the future's `trace` after get(), as for `submit`); a
        traced call returns its future even with direct_response, for the trace.
        `continuation` chains DAG calls: each gets the result of the one before as the last
        argument of its sources, and the result (or first failure) is the last one's.
        `dry_run` sends nothing and returns the request as a dict (client/dagspecs.py)."""
        call = build_dag_call(self, name, arg_map, direct_response, consistency, output_key,
                              client_id, continuation)
        if dry_run:
            return describe(call, self.names.calls)
        if self.traces.enabled:
            self.traces.begin(call.call_id, f"droplet.dag {call.name}", call.trace,
                              call.trace_context)
        elif traced:
            call.trace.add(stage="client.send", at_s=time.time())
        session = call.client_id
        future = DropletFuture(
            call.output_key or call.call_id, self, call.call_id,
            on_revision=(lambda revision: self.sessions.saw(session, revision)) if session
            else None,
            stored=not direct_response,
        )
        weakref.finalize(future, self.pump.forget, call.call_id)
        send_dag_call(self, call)
        if direct_response and not traced:
            return future.get(timeout)
        return future


__all__ = ["DropletClient", "DropletError", "RequestError"]
